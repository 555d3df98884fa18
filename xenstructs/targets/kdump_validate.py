"""Check a kdump-compressed file against everything libkdumpfile trusts, before it sees the file.

libkdumpfile (0.5.1, Debian bookworm) maps the file and reads what the header says without bounds:
a sub-header, note area, bitmap, descriptor table or page beyond the end of the file is a SIGBUS,
a compressed page larger than the page size overflows its buffer, a ``PAGESIZE`` in VMCOREINFO
(or a ``.note.Xen`` header) replaces the block size, a long VMCOREINFO key is copied onto the stack
(docs/libkdumpfile-crashes.md). :func:`validate_kdump` checks, in the order libkdumpfile reads:

1. the header layout libkdumpfile will pick (:func:`~xenstructs.formats.kdump.libkdumpfile_layout`),
   its ``header_version``, ``block_size`` (the x86 page size), ``sub_hdr_size``, ``bitmap_blocks``
   (positive, even: two bitmaps) and ``max_mapnr`` against the bitmap size;
2. the sub-header: ``max_mapnr_64`` (version 6), the split range, every area (VMCOREINFO, notes,
   eraseinfo) inside the file and at most :data:`MAX_AREA` bytes;
3. the note area and VMCOREINFO as libkdumpfile walks them;
4. the 2nd bitmap (counted in chunks) and every page descriptor (numpy, :data:`DESC_CHUNK` at a
   time): size 1..block size, a known compression flag, uncompressed pages exactly one block, data
   after the descriptor table and inside the file.

Time and memory are proportional to the file (the bitmap and descriptors must lie in it), not to
what its header claims. A dump whose header status says ``DUMP_DH_COMPRESSED_INCOMPLETE``
(makedumpfile ran out of space) keeps the pages before the first descriptor whose data is missing
(:attr:`KdumpLayout.pfn_limit`); any other inconsistency is one :class:`BadDump` line naming the
field.
"""

import os
import re
import struct
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import BadDump
from ..formats import kdump as fmt

X86_PAGE_SIZE = 4096
MAX_AREA = 64 << 20             # notes, VMCOREINFO, eraseinfo: a few KiB per CPU in real dumps
MAX_KEY = 1024                  # VMCOREINFO key bytes (libkdumpfile alloca()s each key)
BITMAP_CHUNK = 1 << 20          # bitmap bytes read at a time
DESC_CHUNK = 1 << 18            # page descriptors read at a time (6 MiB)
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_STRTOUL = re.compile(rb"\s*([+-]?)(\d*)")


@dataclass
class KdumpLayout:
    """What :func:`validate_kdump` found: the header layout (``bits`` 32/64), parsed ``header`` and
    ``sub`` (None before version 1), the file ``size``, ``max_pfn``, ``data_offset`` (the descriptor
    table), ``descriptors`` (dumped pages), the areas as ``(offset, size)`` or None, and for an
    incomplete dump ``pfn_limit`` (pages from this pfn on are missing)."""
    bits: int
    header: object
    sub: Optional[object]
    size: int
    max_pfn: int
    data_offset: int
    descriptors: int
    notes: Optional[tuple] = None
    vmcoreinfo: Optional[tuple] = None
    incomplete: bool = False
    pfn_limit: Optional[int] = None

    @property
    def machine(self):
        return fmt.uts_machine(self.header)


class _File:
    """pread() of an open file that turns short reads into one truncation line."""

    def __init__(self, fd, path):
        self.fd = fd
        self.path = path
        self.size = os.fstat(fd).st_size

    def fail(self, text):
        raise BadDump(f"{self.path}: {text}")

    def read(self, off, size, what):
        if off > self.size or size > self.size - off:
            self.fail(f"truncated: {what} needs bytes {off}..{off + size}, the file has {self.size}")
        try:
            data = os.pread(self.fd, size, off)
        except OSError as e:
            self.fail(f"cannot read {what}: {e.strerror or e}")
        if len(data) != size:
            self.fail(f"truncated: {what} needs bytes {off}..{off + size}, read {len(data)}")
        return data


def validate_kdump(fd, path):
    """Check the kdump-compressed file open as ``fd``; return its :class:`KdumpLayout`.

    :raises BadDump: one line naming the field that is wrong (or the part that is cut off).
    """
    f = _File(fd, path)
    head = os.pread(fd, fmt.HEADER_PROBE, 0)
    if head[:8] not in fmt.SIGNATURES:
        f.fail(f"not a kdump-compressed file (starts with {head[:8]!r})")
    if len(head) < fmt.HEADER_PROBE:
        f.fail(f"truncated kdump header: the file has {f.size} bytes, the header needs "
               f"{fmt.HEADER_PROBE}")
    choice = fmt.libkdumpfile_layout(head)
    if choice not in (None, (64, "little")):
        _refuse_misread(f, head, choice)
    bits = choice[0] if choice else fmt.likely_layout(head)
    header = fmt.HEADERS[bits].parse(head)
    _check_header(f, header)
    sub = _read_sub_header(f, header, bits)
    max_pfn = sub.max_mapnr_64 if sub is not None and header.header_version >= 6 else header.max_mapnr
    pfns = _split_range(f, header, sub, max_pfn)
    lay = KdumpLayout(bits, header, sub, f.size, max_pfn, 0, 0,
                      incomplete=bool(header.status & fmt.DUMP_DH_COMPRESSED_INCOMPLETE))
    if sub is not None:
        lay.vmcoreinfo, lay.notes = _check_areas(f, header, sub)
        _check_notes(f, lay)
    _check_pages(f, lay, pfns)
    return lay


def _refuse_misread(f, head, choice):
    """libkdumpfile tries the 32-bit layouts first: a 64-bit header whose timestamp (``tv_usec``)
    reads as a block size there (256, 512, 1024 or a power of two from 4096 to 262144) is misread.
    Say so when the 64-bit reading is sound; refuse a big-endian header either way."""
    bits, endian = choice
    sound = fmt.DiskDumpHeader64.parse(head)
    try:
        _check_header(f, sound)
    except BadDump:
        if endian == "big":
            f.fail(f"kdump header is big-endian ({bits}-bit layout): xenscope reads x86 dumps")
        return
    f.fail(f"libkdumpfile would misread this kdump header as the {bits}-bit {endian}-endian "
           f"layout (the timestamp's tv_usec {sound.tv_usec} reads as a block size there): "
           "not opened")


def _check_header(f, h):
    def bad(text):
        f.fail(f"corrupt kdump header: {text}")
    versions = fmt.HEADER_VERSIONS[bytes(h.signature)]
    if h.header_version not in versions:
        bad(f"header_version {h.header_version} (makedumpfile and QEMU write "
            f"{versions.start}..{versions.stop - 1})")
    bs = h.block_size
    if bs <= 0 or bs & (bs - 1) or not 512 <= bs <= 1 << 20:
        bad(f"block_size {bs} is not a power of two from 512 bytes to 1 MiB")
    if bs != X86_PAGE_SIZE:
        f.fail(f"kdump header: block_size {bs} is not the x86 page size ({X86_PAGE_SIZE}): "
               "xenscope reads x86 dumps")
    least = 1 if h.header_version >= 1 else 0
    if h.sub_hdr_size < least:
        bad(f"sub_hdr_size {h.sub_hdr_size} blocks (the sub-header needs at least {least})")
    if (1 + h.sub_hdr_size) * bs > f.size:
        bad(f"sub_hdr_size {h.sub_hdr_size} blocks end at byte {(1 + h.sub_hdr_size) * bs}, "
            f"beyond the end of the file ({f.size} bytes): corrupt or truncated")
    bb = h.bitmap_blocks
    if bb == 0 or bb % 2:
        bad(f"bitmap_blocks {bb} (two bitmaps of the same size: a positive even number of blocks)")
    end = (1 + h.sub_hdr_size + bb) * bs
    if end > f.size:
        bad(f"bitmap_blocks {bb}: the bitmaps end at byte {end}, beyond the end of the file "
            f"({f.size} bytes): corrupt or truncated")
    capacity = bb // 2 * bs * 8
    if h.max_mapnr > capacity:
        bad(f"max_mapnr {h.max_mapnr:#x} pfns do not fit the bitmaps ({bb} blocks: {capacity:#x} "
            "pfns each)")


def _read_sub_header(f, h, bits):
    if h.header_version < 1:
        return None
    con = fmt.SUB_HEADERS[bits]
    sub = con.parse(f.read(h.block_size, con.sizeof(), "the kdump sub-header"))
    capacity = h.bitmap_blocks // 2 * h.block_size * 8
    if h.header_version >= 6 and sub.max_mapnr_64 > capacity:
        f.fail(f"corrupt kdump sub-header: max_mapnr_64 {sub.max_mapnr_64:#x} pfns do not fit the "
               f"bitmaps ({h.bitmap_blocks} blocks: {capacity:#x} pfns each)")
    return sub


def _split_range(f, h, sub, max_pfn):
    """``[first, end)`` pfns whose descriptors this file holds (a part of a split dump: its range)."""
    if sub is None or h.header_version < 2 or not sub.split:
        return 0, max_pfn
    if h.header_version >= 6:
        first, end, names = sub.start_pfn_64, sub.end_pfn_64, "start_pfn_64/end_pfn_64"
    else:
        first, end, names = sub.start_pfn, sub.end_pfn, "start_pfn/end_pfn"
    if first > end or end > max_pfn:
        f.fail(f"corrupt kdump sub-header: split range {names} {first:#x}..{end:#x} is not "
               f"inside max_mapnr {max_pfn:#x}")
    return first, end


def _check_areas(f, h, sub):
    """``(vmcoreinfo, notes)`` as ``(offset, size)`` or None; every area the version has is checked."""
    found = {}
    for off_name, size_name, since in fmt.AREAS:
        if h.header_version < since:
            continue
        off, size = sub[off_name], sub[size_name]
        if off == 0 and size == 0:
            continue
        if size > MAX_AREA:
            f.fail(f"corrupt kdump sub-header: {size_name} {size} bytes (more than the "
                   f"{MAX_AREA >> 20} MiB such an area can need)")
        if off > f.size or size > f.size - off:
            f.fail(f"corrupt kdump sub-header: {off_name} {off:#x} + {size_name} {size:#x} ends "
                   f"beyond the end of the file ({f.size} bytes)")
        found[off_name] = (off, size) if size else None
    return found.get("offset_vmcoreinfo"), found.get("offset_note")


def iter_raw_notes(buf):
    """``(name bytes, type, desc)`` as libkdumpfile walks a note area: 12-byte headers, name and
    desc padded to 4 bytes, stopping silently at the first note that does not fit."""
    off, end = 0, len(buf)
    while end - off >= 12:
        namesz, descsz, ntype = struct.unpack_from("<III", buf, off)
        desc_at = 12 + ((namesz + 3) & ~3)
        if end - off < desc_at + descsz:
            return
        yield (bytes(buf[off + 12:off + 12 + namesz]).rstrip(b"\0"), ntype,
               buf[off + desc_at:off + desc_at + descsz])
        off += desc_at + ((descsz + 3) & ~3)


def _check_notes(f, lay):
    bs = lay.header.block_size
    if lay.vmcoreinfo and lay.header.header_version == 3:
        off, size = lay.vmcoreinfo
        check_vmcoreinfo(f, f.read(off, size, "VMCOREINFO"), bs, "VMCOREINFO", linux=True)
    if not lay.notes:
        return
    off, size = lay.notes
    for name, ntype, desc in iter_raw_notes(f.read(off, size, "the note area")):
        if name in (b"VMCOREINFO", b"VMCOREINFO_XEN"):
            check_vmcoreinfo(f, desc, bs, f"{name.decode()} note", linux=name == b"VMCOREINFO")
        elif name == b".note.Xen" and ntype == 0x2000001:          # XEN_ELFNOTE_DUMPCORE_HEADER
            if len(desc) < 32:
                f.fail(f"corrupt kdump note area: a .note.Xen dumpcore header of {len(desc)} "
                       "bytes (it has 32)")
            page_size = struct.unpack_from("<Q", desc, 24)[0]
            if page_size != bs:
                f.fail(f"corrupt kdump note area: a .note.Xen dumpcore header gives page size "
                       f"{page_size}, the dump's block size is {bs}")
        elif name == b".note.Xen" and ntype == 0x2000003 and len(desc) < 8:
            f.fail(f"corrupt kdump note area: a .note.Xen format version note of {len(desc)} bytes")


def check_vmcoreinfo(f, text, block_size, where, linux):
    """Refuse VMCOREINFO that libkdumpfile would act on unsafely: a key longer than :data:`MAX_KEY`
    (copied onto its stack), and for Linux's a ``PAGESIZE`` that strtoul() reads as anything but the
    block size (it replaces the page size, and with it the size of the decompression buffer)."""
    for number, line in enumerate(bytes(text).split(b"\n"), 1):
        key, eq, value = line.partition(b"=")
        key = key.split(b"\0", 1)[0]
        if len(key) > MAX_KEY:
            f.fail(f"corrupt {where}: line {number} has a {len(key)}-byte key (at most {MAX_KEY})")
        if linux and eq and key == b"PAGESIZE":
            m = _STRTOUL.fullmatch(value.split(b"\0", 1)[0])
            if m and not (m.group(1) != b"-" and m.group(2) and int(m.group(2)) == block_size):
                f.fail(f"corrupt {where}: PAGESIZE={value[:32].decode('latin-1')!r} is not the "
                       f"dump's block size {block_size}")


def _bitmap_bits(f, at, first, end):
    """Yield ``(first pfn, bytes)`` chunks of the bitmap at ``at`` covering pfns ``first..end``."""
    lo, hi = first // 8, (end + 7) // 8
    for start in range(lo, hi, BITMAP_CHUNK):
        n = min(BITMAP_CHUNK, hi - start)
        yield start * 8, np.frombuffer(f.read(at + start, n, "the 2nd bitmap"), dtype=np.uint8)


def _masked(chunk, pfn0, first, end):
    """``chunk`` (bytes from pfn ``pfn0``) with the bits outside ``first..end`` cleared."""
    bits = np.unpackbits(chunk, bitorder="little")
    pfns = pfn0 + np.arange(bits.size)
    bits[(pfns < first) | (pfns >= end)] = 0
    return bits


def count_dumped(f, at, first, end):
    """Set bits of the bitmap at ``at`` for pfns ``first..end`` (whole bytes by table, edges exactly)."""
    total = 0
    for pfn0, chunk in _bitmap_bits(f, at, first, end):
        if pfn0 >= first and pfn0 + 8 * chunk.size <= end:
            total += int(_POPCOUNT[chunk].sum(dtype=np.int64))
            continue
        inner = chunk[1:-1] if chunk.size > 2 else chunk[:0]
        total += int(_POPCOUNT[inner].sum(dtype=np.int64))
        for i in {0, chunk.size - 1}:
            total += int(_masked(chunk[i:i + 1], pfn0 + 8 * i, first, end).sum())
    return total


def nth_dumped_pfn(f, at, first, end, rank):
    """The pfn of the ``rank``-th (0-based) set bit for pfns ``first..end``, or ``end``."""
    seen = 0
    for pfn0, chunk in _bitmap_bits(f, at, first, end):
        bits = _masked(chunk, pfn0, first, end)
        n = int(bits.sum())
        if seen + n > rank:
            return pfn0 + int(np.flatnonzero(bits)[rank - seen])
        seen += n
    return end


def _check_pages(f, lay, pfns):
    h = lay.header
    bs, half = h.block_size, h.bitmap_blocks // 2
    bitmap2 = (1 + h.sub_hdr_size + half) * bs
    lay.data_offset = (1 + h.sub_hdr_size + h.bitmap_blocks) * bs
    first, end = pfns[0], min(pfns[1], lay.max_pfn)
    count = count_dumped(f, bitmap2, first, end)
    table_end = lay.data_offset + 24 * count
    lay.descriptors = count
    usable = count
    if table_end > f.size:
        if not lay.incomplete:
            f.fail(f"truncated: {count} page descriptors (one per dumped page) need bytes "
                   f"{lay.data_offset}..{table_end}, the file has {f.size}")
        usable = max(0, (f.size - lay.data_offset) // 24)
    missing = _check_descriptors(f, lay, usable, table_end, bitmap2, pfns)
    if missing < count:
        lay.pfn_limit = nth_dumped_pfn(f, bitmap2, first, end, missing)


def _check_descriptors(f, lay, usable, table_end, bitmap2, pfns):
    """Check descriptors ``0..usable``; return the index of the first whose data is missing (an
    incomplete dump), else the descriptor count."""
    bs = lay.header.block_size
    for start in range(0, usable, DESC_CHUNK):
        n = min(DESC_CHUNK, usable - start)
        d = np.frombuffer(f.read(lay.data_offset + 24 * start, 24 * n, "the page descriptors"),
                          dtype=fmt.PAGE_DESC)
        off, size, flags = d["offset"], d["size"].astype(np.int64), d["flags"]
        inside = off <= np.uint64(f.size)
        off_i = np.where(inside, off, 0).astype(np.int64)
        beyond = ~inside | (off_i + size > f.size)
        if lay.incomplete:
            beyond |= (off == 0) & (size == 0) & (flags == 0)
        bad = (~np.isin(flags, fmt.PAGE_FLAGS) | (size == 0) | (size > bs)
               | ((flags == 0) & (size != bs)) | (inside & (off_i < table_end)))
        cut = int(np.argmax(beyond)) if beyond.any() and lay.incomplete else n
        wrong = np.flatnonzero((bad | (beyond & (not lay.incomplete)))[:cut])
        if wrong.size:
            _refuse_descriptor(f, lay, start + int(wrong[0]), d[int(wrong[0])], table_end,
                               bitmap2, pfns)
        if cut < n:
            return start + cut
    return lay.descriptors if usable == lay.descriptors else usable


def _refuse_descriptor(f, lay, index, desc, table_end, bitmap2, pfns):
    bs = lay.header.block_size
    pfn = nth_dumped_pfn(f, bitmap2, pfns[0], min(pfns[1], lay.max_pfn), index)
    off, size, flags = int(desc["offset"]), int(desc["size"]), int(desc["flags"])
    if flags not in fmt.PAGE_FLAGS:
        why = f"flags {flags:#x} are not a compression makedumpfile or QEMU writes"
    elif size == 0 or size > bs:
        why = f"size {size} is not 1..{bs} (the block size)"
    elif flags == 0 and size != bs:
        why = f"size {size}, uncompressed: a page is {bs} bytes"
    elif off < table_end:
        why = f"data offset {off:#x} lies before the end of the descriptor table ({table_end:#x})"
    else:
        why = f"data {off:#x}+{size} ends beyond the end of the file ({f.size} bytes): truncated"
    f.fail(f"corrupt kdump page descriptor {index} (pfn {pfn:#x}): {why}")
