"""Corrupted kdump-compressed files made from real ones (a test helper; it never imports xenstructs).

Bases, each a real writer's output (:func:`bases`):

* ``mdf64``: makedumpfile 1.7 ``-c -d 1`` of :func:`elfbytes.makedumpfile_input` (64-bit header
  layout, version 6, VMCOREINFO and notes); ``mdf64-flat``: the same with ``-F`` (flattened).
* ``qemu``: QEMU ``dump-guest-memory -z`` of a paused (prelaunch) 2 MiB guest (RAM and the BIOS
  ROM that ends at 4 GiB, hence ELFCLASS64 and the 64-bit header layout, with i386 ``NT_PRSTATUS``
  notes: the CPU is not in long mode); QEMU 7.2 writes the flattened form, turned back with
  ``makedumpfile -R``. Cached in ``~/.cache/xenscope/kdump-bases/<qemu version>/`` (built in a
  temporary directory, renamed when complete).
* ``mdf32``: ``mdf64`` with its header and sub-header re-laid in the i386 layout (what a 32-bit
  makedumpfile writes; neither writer here makes one), the rest of the file unchanged.
 Field offsets come from makedumpfile's ``diskdump_mod.h``
(x86_64: ``status`` at 424, i386: 412; ``kdump_sub_header`` at block 1), written out here again.

:func:`corpus` returns :class:`Case` objects: ``name``, ``klass`` (the corruption class), ``data``
(bytes) or ``sparse`` (a file written with a hole), and ``read`` (a physical address whose page a
reader must fetch to meet the corruption, e.g. the page of a corrupted descriptor).
"""

import hashlib
import os
import random
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field

import numpy as np

import elfbytes

PAGE = 4096
MAKEDUMPFILE = shutil.which("makedumpfile") or "/usr/sbin/makedumpfile"
QEMU = shutil.which("qemu-system-x86_64")
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "xenscope", "kdump-bases")

# diskdump_mod.h, computed for x86_64 (timeval 16 bytes) and i386 (8 bytes)
STATUS = {64: 424, 32: 412}
SUB = {64: {"phys_base": (0, 8), "offset_vmcoreinfo": (32, 8), "size_vmcoreinfo": (40, 8),
            "offset_note": (48, 8), "size_note": (56, 8), "offset_eraseinfo": (64, 8),
            "size_eraseinfo": (72, 8), "max_mapnr_64": (96, 8)},
       32: {"phys_base": (0, 4), "offset_vmcoreinfo": (20, 8), "size_vmcoreinfo": (28, 4),
            "offset_note": (32, 8), "size_note": (40, 4), "offset_eraseinfo": (44, 8),
            "size_eraseinfo": (52, 4), "max_mapnr_64": (72, 8)}}


@dataclass
class Case:
    name: str
    klass: str
    data: bytes = None
    sparse: tuple = None            # (head bytes, hole size, tail bytes)
    read: int = 0                   # a physical address to read
    note: str = ""

    def write(self, directory):
        path = os.path.join(directory, self.name)
        with open(path, "wb") as f:
            if self.data is not None:
                f.write(self.data)
            else:
                head, hole, tail = self.sparse
                f.write(head)
                f.seek(hole, os.SEEK_CUR)
                f.write(tail)
        return path


@dataclass
class Base:
    """A kdump-compressed image and what the helper reads of its header to corrupt it."""
    name: str
    data: bytes
    bits: int
    fields: dict = field(default_factory=dict)

    def __post_init__(self):
        at = STATUS[self.bits]
        names = ("status", "block_size", "sub_hdr_size", "bitmap_blocks", "max_mapnr")
        self.fields.update(zip(names, struct.unpack_from("<IiiII", self.data, at)))
        self.fields["header_version"] = struct.unpack_from("<i", self.data, 8)[0]
        for name, (off, width) in SUB[self.bits].items():
            self.fields[name] = int.from_bytes(self.data[PAGE + off:PAGE + off + width], "little")

    def offset(self, name):
        """File offset and width of a header or sub-header field."""
        plain = {"header_version": (8, 4), "status": (STATUS[self.bits], 4)}
        after = ("block_size", "sub_hdr_size", "bitmap_blocks", "max_mapnr")
        if name in plain:
            return plain[name]
        if name in after:
            return STATUS[self.bits] + 4 + 4 * after.index(name), 4
        off, width = SUB[self.bits][name]
        return PAGE + off, width

    def with_field(self, name, value):
        off, width = self.offset(name)
        img = bytearray(self.data)
        img[off:off + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
        return bytes(img)

    @property
    def data_offset(self):
        f = self.fields
        return (1 + f["sub_hdr_size"] + f["bitmap_blocks"]) * PAGE

    def dumped_pfns(self):
        """pfns with a descriptor, in descriptor order (set bits of the 2nd bitmap)."""
        f = self.fields
        half = f["bitmap_blocks"] // 2 * PAGE
        at = (1 + f["sub_hdr_size"]) * PAGE + half
        bits = np.unpackbits(np.frombuffer(self.data[at:at + half], np.uint8), bitorder="little")
        limit = f["max_mapnr_64"] if f["header_version"] >= 6 else f["max_mapnr"]
        return np.flatnonzero(bits[:limit])

    def with_descriptor(self, index, offset=None, size=None, flags=None):
        at = self.data_offset + 24 * index
        img = bytearray(self.data)
        old = struct.unpack_from("<QII", img, at)
        new = [old[0] if offset is None else offset, old[1] if size is None else size,
               old[2] if flags is None else flags]
        struct.pack_into("<QII", img, at, *new)
        return bytes(img)

    def with_notes(self, notes):
        """The image with ``notes`` appended and the sub-header's note area pointing at them."""
        img = self.data + notes
        base = Base(self.name, img, self.bits)
        img = base.with_field("offset_note", len(self.data))
        return Base(self.name, img, self.bits).with_field("size_note", len(notes))


# ---------------------------------------------------------------------------------------------
# Bases
# ---------------------------------------------------------------------------------------------

def _run(argv, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, **kw)
    assert r.returncode == 0, f"{argv[0]} failed: {r.stderr.decode(errors='replace')[-400:]}"
    return r


def _makedumpfile_bases(work):
    work = tempfile.mkdtemp(dir=work, prefix="mdf-")
    img, _ = elfbytes.makedumpfile_input()
    src = os.path.join(work, "in.elf")
    with open(src, "wb") as f:
        f.write(img)
    out = os.path.join(work, "mdf64.kdump")
    _run([MAKEDUMPFILE, "-c", "-d", "1", src, out])
    with open(os.path.join(work, "mdf64.flat"), "wb") as f:
        subprocess.run([MAKEDUMPFILE, "-c", "-d", "1", "-F", src], stdout=f,
                       stderr=subprocess.PIPE, timeout=120, check=True)
    with open(out, "rb") as f, open(os.path.join(work, "mdf64.flat"), "rb") as g:
        return f.read(), g.read()


def qemu_version():
    out = subprocess.run([QEMU, "--version"], capture_output=True, text=True, timeout=60).stdout
    return out.split("\n", 1)[0].split("version", 1)[-1].strip().split()[0]


def _qemu_dump(work, name, machine):
    """A paused guest's ``dump-guest-memory -z`` (flattened), through the human monitor on stdin."""
    flat = os.path.join(work, name + ".flat")
    script = f"dump-guest-memory -z {flat}\nquit\n"
    subprocess.run([QEMU, "-M", machine, "-m", "2M", "-nographic", "-nodefaults", "-S",
                    "-accel", "tcg", "-monitor", "stdio"], input=script.encode(),
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert os.path.getsize(flat) > 0, "QEMU wrote no dump"
    out = os.path.join(work, name + ".kdump")
    with open(flat, "rb") as f:
        _run([MAKEDUMPFILE, "-R", out], stdin=f)
    return out


def _qemu_bases():
    """``{"qemu": bytes}``, cached per QEMU version."""
    assert QEMU, "qemu-system-x86_64 is not installed (./setup.sh installs qemu-system-x86)"
    assert os.path.exists(MAKEDUMPFILE), "makedumpfile is not installed: ./setup.sh installs it"
    final = os.path.join(CACHE, qemu_version())
    if not os.path.isdir(final):
        os.makedirs(CACHE, exist_ok=True)
        work = tempfile.mkdtemp(dir=CACHE, prefix=".build-")
        try:
            _qemu_dump(work, "qemu", "pc")
            try:
                os.rename(work, final)
            except OSError:                 # built meanwhile by another session
                pass
        finally:
            shutil.rmtree(work, ignore_errors=True)
    out = {}
    for name in ("qemu",):
        with open(os.path.join(final, name + ".kdump"), "rb") as f:
            out[name] = f.read()
    return out


def bases(work):
    """``{name: Base}`` of every base plus ``"mdf64-flat"`` as raw bytes under key ``flat``."""
    mdf, flat = _makedumpfile_bases(work)
    out = {"mdf64": Base("mdf64", mdf, 64), "mdf32": Base("mdf32", to_i386_layout(mdf), 32)}
    for name, data in _qemu_bases().items():
        out[name] = Base(name, data, 64)
    out["flat"] = flat
    return out


def to_i386_layout(data):
    """A 64-bit-layout kdump file with its header and sub-header in the i386 layout."""
    head = bytearray(PAGE)
    head[:402] = data[:402]                                    # signature, version, utsname
    sec, usec = struct.unpack_from("<qq", data, 408)
    struct.pack_into("<ii", head, 404, sec, usec)
    head[412:452] = data[424:464]                              # status .. nr_cpus
    sub = dict(zip(("phys_base", "dump_level", "split", "start_pfn", "end_pfn", "offset_vmcoreinfo",
                    "size_vmcoreinfo", "offset_note", "size_note", "offset_eraseinfo",
                    "size_eraseinfo", "start_pfn_64", "end_pfn_64", "max_mapnr_64"),
                   struct.unpack_from("<QiiQQQQQQQQQQQ", data, PAGE)))
    packed = struct.pack("<IiiIIQIQIQIQQQ", *(v & 0xFFFFFFFF if k in ("phys_base", "start_pfn",
                                                                     "end_pfn") else v
                                               for k, v in sub.items()))
    img = bytearray(data)
    img[:PAGE] = head
    img[PAGE:PAGE + 104] = packed.ljust(104, b"\0")
    return bytes(img)


def digest(data):
    return hashlib.sha256(data).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------

def _header_cases(base):
    b, f = base, base.fields
    yield "header_version", [("m1", -1), ("min", -(1 << 31)), ("7", 7), ("max", (1 << 31) - 1)], \
        lambda v: b.with_field("header_version", v)
    yield "block_size", [("0", 0), ("m4096", -4096), ("3000", 3000), ("4095", 4095),
                         ("8192", 8192), ("1MiB", 1 << 20), ("1GiB", 1 << 30)], \
        lambda v: b.with_field("block_size", v)
    yield "bitmap_blocks", [("0", 0), ("m1", -1), ("2p31", 1 << 31), ("odd", f["bitmap_blocks"] - 1),
                            ("x1000", f["bitmap_blocks"] * 1000)], \
        lambda v: b.with_field("bitmap_blocks", v)
    yield "sub_hdr_size", [("0", 0), ("m1", -1), ("max", (1 << 31) - 1)], \
        lambda v: b.with_field("sub_hdr_size", v)
    yield "max_mapnr", [("ffffffff", 0xFFFFFFFF)], lambda v: b.with_field("max_mapnr", v)
    if f["header_version"] >= 6:
        yield "max_mapnr", [("64-2p40", 1 << 40), ("64-max", (1 << 64) - 1)], \
            lambda v: b.with_field("max_mapnr_64", v)


def _area_cases(base):
    b, size = base, len(base.data)
    width = SUB[base.bits]["size_note"][1]
    big = [("64MiB", 64 << 20), ("1TiB", 1 << 40)] if width == 8 else [("64MiB", 64 << 20),
                                                                        ("4GiB", 0xFFFFFFFF)]
    yield "size_note", big, lambda v: b.with_field("size_note", v)
    yield "offset_note", [("max", (1 << 64) - 1), ("eof", size), ("2p63", 1 << 63)], \
        lambda v: b.with_field("offset_note", v)
    v3 = Base(b.name, b.with_field("header_version", 3), b.bits)
    yield "vmcoreinfo_area", [("off-max", ("offset_vmcoreinfo", (1 << 64) - 1)),
                              ("size-64MiB", ("size_vmcoreinfo", 64 << 20)),
                              ("off-eof", ("offset_vmcoreinfo", size))], \
        lambda v: Base(b.name, v3.with_field("size_vmcoreinfo", 64), b.bits).with_field(*v) \
        if v[0] == "offset_vmcoreinfo" else v3.with_field(*v)
    yield "eraseinfo", [("off-max", (1 << 64) - 1)], \
        lambda v: Base(b.name, b.with_field("size_eraseinfo", 16), b.bits).with_field(
            "offset_eraseinfo", v)


def _note_cases(base):
    note = elfbytes.note

    def vmci(text):
        return base.with_notes(note("VMCOREINFO", 0, text))
    yield "vmcoreinfo", [("pagesize-1", b"OSRELEASE=6.1.0\nPAGESIZE=1\n"),
                         ("pagesize-empty", b"OSRELEASE=6.1.0\nPAGESIZE=\n"),
                         ("pagesize-64k", b"PAGESIZE=65536\n"),
                         ("key-9MiB", b"A" * (9 << 20) + b"=1\n")], vmci
    header = struct.pack("<QQQQ", 0xF00FEBED, 1, 16, 1)
    yield "note_xen", [("pagesize-1", note(".note.Xen", 0x2000001, header)),
                       ("short", note(".note.Xen", 0x2000001, b"\1")),
                       ("version-short", note(".note.Xen", 0x2000003, b""))], base.with_notes


def _descriptor_cases(base):
    pfns = base.dumped_pfns()
    i = len(pfns) // 2
    at = int(pfns[i]) * PAGE
    d = base.with_descriptor
    cases = [("size-64k", d(i, size=65536, flags=1)), ("size-4097", d(i, size=4097, flags=1)),
             ("size-max", d(i, size=0xFFFFFFFF, flags=1)), ("size-0", d(i, size=0)),
             ("raw-100", d(i, size=100, flags=0)), ("flags-40", d(i, flags=0x40)),
             ("off-max", d(i, offset=(1 << 64) - 1)), ("off-eof", d(i, offset=len(base.data))),
             ("off-0", d(i, offset=0))]
    return [(name, data, at) for name, data in cases]


def _truncations(base):
    f = base.fields
    cuts = [("8", 8), ("100", 100), ("463", 463), ("464", 464), ("sub", PAGE + 50),
            ("bitmap", (1 + f["sub_hdr_size"]) * PAGE + 100), ("desc", base.data_offset + 30),
            ("data", len(base.data) - 10)]
    return [(name, base.data[:n]) for name, n in cuts]


def _random_cases(base, seeds=4):
    for seed in range(seeds):
        rng = random.Random(seed)
        head = bytes(rng.getrandbits(8) for _ in range(PAGE - 8))
        yield f"header-{seed}", base.data[:8] + head + base.data[PAGE:]
    rng = random.Random(99)
    yield "all", base.data[:8] + bytes(rng.getrandbits(8) for _ in range(len(base.data) - 8))


def _big_endian(base):
    """block_size, bitmap_blocks and max_mapnr byte-swapped: only the big-endian reading fits."""
    img = base.data
    for name in ("block_size", "bitmap_blocks", "max_mapnr"):
        off, width = base.offset(name)
        img = img[:off] + img[off:off + width][::-1] + img[off + width:]
    return img


def _misread(base):
    """A sound 64-bit header whose timestamp libkdumpfile takes for a 32-bit block size."""
    for usec in (8192, 1024):
        img = bytearray(base.data)
        struct.pack_into("<q", img, 416, usec)
        yield f"usec-{usec}", bytes(img)


def _flat_record(off, data):
    return struct.pack(">qq", off, len(data)) + data


def _flat_cases(flat, bad_kdump):
    head = flat[:PAGE]
    end = struct.pack(">qq", -1, -1)
    body = flat[PAGE:-16]
    yield "empty-4GiB", None, (head, 4 << 30, end)
    yield "empty-many", head + bytes(16 * 100000) + body + end, None
    yield "negative", head + struct.pack(">qq", 0, -5) + body + end, None
    yield "offset-2p62", head + _flat_record(1 << 62, b"x" * 64) + body + end, None
    yield "extent-1PiB", head + _flat_record((1 << 50) - 64, b"x" * 64) + body + end, None
    yield "no-end", flat[:-16], None
    yield "cut", flat[:len(flat) // 2], None
    yield "bad-kdump", head + _flat_record(0, bad_kdump) + end, None


def corpus(work):
    """Every :class:`Case` made from :func:`bases` (``work``: a scratch directory)."""
    all_bases = bases(work)
    flat = all_bases.pop("flat")
    cases = []
    for base in all_bases.values():
        for klass, variants, make in list(_header_cases(base)) + list(_area_cases(base)):
            for tag, value in variants:
                cases.append(Case(f"{base.name}-{klass}-{tag}", klass, make(value)))
        for klass, variants, make in _note_cases(base):
            for tag, value in variants:
                cases.append(Case(f"{base.name}-{klass}-{tag}", klass, make(value)))
        for tag, data, at in _descriptor_cases(base):
            cases.append(Case(f"{base.name}-descriptor-{tag}", "descriptor", data, read=at))
        for tag, data in _truncations(base):
            cases.append(Case(f"{base.name}-truncated-{tag}", "truncated", data))
        for tag, data in _random_cases(base):
            cases.append(Case(f"{base.name}-random-{tag}", "random", data))
        cases.append(Case(f"{base.name}-big-endian", "big_endian", _big_endian(base)))
        if base.bits == 64:
            for tag, data in _misread(base):
                cases.append(Case(f"{base.name}-layout-{tag}", "layout", data))
    bad = all_bases["mdf64"].with_field("block_size", 0)
    for tag, data, sparse in _flat_cases(flat, bad):
        cases.append(Case(f"flat-{tag}", "flattened", data, sparse))
    return cases


def good(work):
    """``{name: bytes}`` of the uncorrupted bases (and the flattened one)."""
    all_bases = bases(work)
    flat = all_bases.pop("flat")
    out = {name: base.data for name, base in all_bases.items()}
    out["mdf64-flat"] = flat
    return out
