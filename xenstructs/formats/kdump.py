"""kdump-compressed (``KDUMP   ``) and diskdump (``DISKDUMP``) layouts, little-endian x86.

Sources: makedumpfile ``diskdump_mod.h`` and ``IMPLEMENTATION``; libkdumpfile 0.5.1
``src/kdumpfile/diskdump.c`` (which layout it picks and which fields it trusts); crash ``diskdump.h``.

File: block 0 ``disk_dump_header``; blocks 1..``sub_hdr_size`` the ``kdump_sub_header`` (and, inside
those blocks, VMCOREINFO and the ELF notes); ``bitmap_blocks`` blocks holding two bitmaps of the same
size (1st: pfns that exist, 2nd: pfns dumped); at ``data_offset = (1 + sub_hdr_size + bitmap_blocks)
* block_size`` one ``page_desc_t`` per set bit of the 2nd bitmap, in pfn order; then page data.
Fields after the utsname differ between 32- and 64-bit writers: ``struct timeval`` is 8 or 16 bytes,
``unsigned long`` in the sub-header 4 or 8 (``off_t`` is always 8, packed on 4 bytes for i386).

>>> DiskDumpHeader64.sizeof(), DiskDumpHeader32.sizeof(), SubHeader64.sizeof(), SubHeader32.sizeof()
(464, 452, 104, 80)
>>> PageDesc.sizeof(), PAGE_DESC.itemsize
(24, 24)
"""

import construct as C
import numpy as np

SIGNATURES = (b"KDUMP   ", b"DISKDUMP")
# makedumpfile wrote header versions 1 to 6 over its history (6 since max_mapnr_64, 1.5.0) and
# refuses to read a version below 1; QEMU writes 6. Old diskdump files may say 0 (no sub-header).
HEADER_VERSIONS = {b"KDUMP   ": range(1, 7), b"DISKDUMP": range(0, 7)}

DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED_LZO = 0x2
DUMP_DH_COMPRESSED_SNAPPY = 0x4
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8     # header status only: makedumpfile ran out of space
DUMP_DH_EXCLUDED_VMEMMAP = 0x10         # header status only
DUMP_DH_COMPRESSED_ZSTD = 0x20
COMPRESSED = (DUMP_DH_COMPRESSED_ZLIB | DUMP_DH_COMPRESSED_LZO | DUMP_DH_COMPRESSED_SNAPPY
              | DUMP_DH_COMPRESSED_ZSTD)
PAGE_FLAGS = (0, DUMP_DH_COMPRESSED_ZLIB, DUMP_DH_COMPRESSED_LZO, DUMP_DH_COMPRESSED_SNAPPY,
              DUMP_DH_COMPRESSED_ZSTD)  # what makedumpfile and QEMU put in page_desc.flags

UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
NewUtsname = C.Struct(*[name / C.Bytes(65) for name in UTS_FIELDS])


def _disk_dump_header(timeval, pad):
    return C.Struct(
        "signature" / C.Bytes(8),
        "header_version" / C.Int32sl,
        "utsname" / NewUtsname,
        C.Padding(pad),
        "tv_sec" / timeval, "tv_usec" / timeval,
        "status" / C.Int32ul,
        "block_size" / C.Int32sl,
        "sub_hdr_size" / C.Int32sl,         # blocks
        "bitmap_blocks" / C.Int32ul,
        "max_mapnr" / C.Int32ul,            # obsolete from version 6: max_mapnr_64
        "total_ram_blocks" / C.Int32ul,
        "device_blocks" / C.Int32ul,
        "written_blocks" / C.Int32ul,
        "current_cpu" / C.Int32ul,
        "nr_cpus" / C.Int32sl,
    )


DiskDumpHeader64 = _disk_dump_header(C.Int64sl, 6)     # status at 424
DiskDumpHeader32 = _disk_dump_header(C.Int32sl, 2)     # status at 412
HEADER_PROBE = DiskDumpHeader64.sizeof()                # what libkdumpfile reads first, always


def _sub_header(ulong):
    return C.Struct(
        "phys_base" / ulong,
        "dump_level" / C.Int32sl,           # version 1 and later
        "split" / C.Int32sl,                # version 2 and later
        "start_pfn" / ulong,
        "end_pfn" / ulong,
        "offset_vmcoreinfo" / C.Int64ul,    # version 3 and later
        "size_vmcoreinfo" / ulong,
        "offset_note" / C.Int64ul,          # version 4 and later
        "size_note" / ulong,
        "offset_eraseinfo" / C.Int64ul,     # version 5 and later
        "size_eraseinfo" / ulong,
        "start_pfn_64" / C.Int64ul,         # version 6 and later
        "end_pfn_64" / C.Int64ul,
        "max_mapnr_64" / C.Int64ul,
    )


SubHeader64 = _sub_header(C.Int64ul)
SubHeader32 = _sub_header(C.Int32ul)
HEADERS = {64: DiskDumpHeader64, 32: DiskDumpHeader32}
SUB_HEADERS = {64: SubHeader64, 32: SubHeader32}
# (name of the offset field, name of the size field, first header version holding them)
AREAS = (("offset_vmcoreinfo", "size_vmcoreinfo", 3), ("offset_note", "size_note", 4),
         ("offset_eraseinfo", "size_eraseinfo", 5))

PageDesc = C.Struct("offset" / C.Int64ul, "size" / C.Int32ul, "flags" / C.Int32ul,
                    "page_flags" / C.Int64ul)
PAGE_DESC = np.dtype([("offset", "<u8"), ("size", "<u4"), ("flags", "<u4"), ("page_flags", "<u8")])

# libkdumpfile 0.5.1 (kdumpfile-priv.h MIN_PAGE_SIZE/MAX_PAGE_SIZE): try_header()'s bounds.
LIBKDUMPFILE_PAGE_SIZES = (1 << 12, 1 << 18)


def _word(head, off, endian):
    return int.from_bytes(head[off:off + 4], endian, signed=False)


def _sword(head, off, endian):
    return int.from_bytes(head[off:off + 4], endian, signed=True)


def libkdumpfile_layout(head):
    """``(bits, endian)`` of the header layout libkdumpfile 0.5.1 would use, or ``None``.

    It tries the 32-bit layout first, little- then big-endian, then the 64-bit one; a layout is
    taken when ``block_size`` is a power of two in 4 KiB..256 KiB and the bitmap blocks hold
    ``max_mapnr`` bits (``try_header`` and the ``arch.page_size`` hook). ``head`` holds at least
    :data:`HEADER_PROBE` bytes.
    """
    low, high = LIBKDUMPFILE_PAGE_SIZES
    for bits in (32, 64):
        status_at = 412 if bits == 32 else 424
        for endian in ("little", "big"):
            block_size = _sword(head, status_at + 4, endian)
            bitmap_blocks = _word(head, status_at + 12, endian)
            max_mapnr = _word(head, status_at + 16, endian)
            if low <= block_size <= high and not block_size & (block_size - 1) \
                    and 8 * bitmap_blocks * block_size >= max_mapnr:
                return bits, endian
    return None


def likely_layout(head):
    """32 or 64: the layout whose fields look most like a real header (ties: 64), to name the
    field that is wrong when libkdumpfile would take neither."""
    def score(bits):
        h = HEADERS[bits].parse(head)
        return sum((h.block_size == 4096, 1 <= h.sub_hdr_size <= 1024,
                    h.bitmap_blocks > 0 and h.bitmap_blocks % 2 == 0, h.status & ~0x3f == 0,
                    0 < h.nr_cpus <= 1 << 16))
    return 32 if score(32) > score(64) else 64


def uts_machine(header):
    """``utsname.machine`` of a parsed header, as text (latin-1, cut at the first NUL)."""
    return bytes(header.utsname.machine).split(b"\0", 1)[0].decode("latin-1")
