"""Xen's embedded symbol table (xenstructs/xen/symbols.py), on tables built here from the format that
xen/tools/symbols.c writes (the real images are checked in tests/realsys/test_xen_symbols.py)."""
import struct

import pytest

from xenstructs.errors import XenscopeError
from xenstructs.xen.image import XenImage, build_id, version_from_code
from xenstructs.xen.symbols import find_table

ORIGIN = 0xFFFF82D040000000
BASE = ORIGIN + 0x361000            # where the test's "rodata" starts

SYMBOLS = [(ORIGIN + 0x200000 + 0x10 * i, "T" if i % 3 else "t",
            ("common/sched/core.c#" if i % 3 == 0 else "") + f"xen_page_function_{i}") for i in range(600)]
SYMBOLS += [(ORIGIN + 0x380000, "D", "symbols_offsets"), (ORIGIN + 0x470000, "B", "max_page"),
            (ORIGIN + 0x470008, "b", "drivers/char/console.c#conring")]
TOKENS = {0x80: "xen_", 0x81: "page_", 0x82: "function_", 0x83: "common/sched/core.c#"}


def _align(buf, n):
    buf += b"\0" * (-len(buf) % n)


def _compress(text):
    """Token codes for ``text``: the longest token first, else the character itself."""
    out, i = bytearray(), 0
    while i < len(text):
        for code, tok in sorted(TOKENS.items(), key=lambda kv: -len(kv[1])):
            if text.startswith(tok, i):
                out.append(code)
                i += len(tok)
                break
        else:
            out.append(ord(text[i]))
            i += 1
    return bytes(out)


def build(symbols=SYMBOLS, by_name=True, junk=b"\x07rodata before the table\0"):
    """A .rodata piece holding ``junk`` then the table of ``symbols`` (sorted by address)."""
    syms = sorted(symbols)
    buf = bytearray(junk)
    _align(buf, 4)
    buf += struct.pack(f"<{len(syms)}I", *(va - ORIGIN for va, _, _ in syms))
    count_at = len(buf)
    buf += struct.pack("<I", len(syms))
    names_at, markers, offsets = len(buf), [], []
    for i, (_, kind, name) in enumerate(syms):
        if i % 256 == 0:
            markers.append(len(buf) - names_at)
        offsets.append(len(buf) - names_at)
        codes = _compress(kind + name)
        buf += bytes([len(codes)]) + codes
    _align(buf, 4)
    markers_at = len(buf)
    buf += struct.pack(f"<{len(markers)}I", *markers)
    index, table = [], bytearray()
    used = {b for _, k, n in syms for b in (k + n).encode()}
    for code in range(256):
        index.append(len(table))
        tok = TOKENS.get(code, chr(code) if code in used else "")
        table += tok.encode("latin-1") + b"\0"
    buf += table
    _align(buf, 4)
    index_at = len(buf)
    buf += struct.pack("<256H", *index)
    if by_name:
        order = sorted(range(len(syms)), key=lambda i: (syms[i][2], syms[i][1]))
        buf += b"".join(struct.pack("<II", offsets[i], i) for i in order)
    buf += b"\x04\0\0\0\x14\0\0\0\x03\0\0\0GNU\0" + bytes(range(20))         # a build-id note
    return bytes(buf), {"index": index_at, "markers": markers_at, "count": count_at}


def image_of(data):
    img = XenImage(ORIGIN, 0x1F800000, [(BASE, BASE + len(data), True)], "test")
    img.va, img.data, img.mapped = BASE, data, [(BASE, BASE + len(data))]
    return img


def test_every_symbol_decoded():
    data, at = build()
    table = find_table(image_of(data))
    assert table.entries == sorted(SYMBOLS)
    assert table.va == BASE + at["index"] and table.sorted_by_name and table.all_symbols
    names = table.addresses()
    assert names["max_page"] == ORIGIN + 0x470000
    assert names["conring"] == names["drivers/char/console.c#conring"] == ORIGIN + 0x470008
    assert names["xen_page_function_0"] == names["common/sched/core.c#xen_page_function_0"]


def test_text_only_table_and_no_sorted_offsets():
    text = [s for s in SYMBOLS if s[1] in "Tt"]
    table = find_table(image_of(build(text, by_name=False)[0]))
    assert table.entries == sorted(text) and not table.all_symbols and not table.sorted_by_name


def test_build_id_note():
    got = build_id(image_of(build()[0]))
    assert got and got[0] == bytes(range(20)).hex()


@pytest.mark.parametrize("damage", ["markers", "count", "tokens", "truncated", "nothing"])
def test_a_damaged_table_is_refused_in_one_line(damage):
    data, at = build()
    data = bytearray(data)
    if damage == "markers":                      # the second marker no longer at record 256
        struct.pack_into("<I", data, at["markers"] + 4, struct.unpack_from("<I", data, at["markers"] + 4)[0] + 1)
    elif damage == "count":                      # more symbols than the markers allow
        struct.pack_into("<I", data, at["count"], 5000)
    elif damage == "tokens":                     # a token offset past the token table
        struct.pack_into("<H", data, at["index"] + 2 * 200, 0xFFFF)
    elif damage == "truncated":
        data = data[:at["index"] + 100]
    else:
        data = bytearray(8192)
    with pytest.raises(XenscopeError, match="no symbol table of Xen's shape"):
        find_table(image_of(bytes(data)))


def test_version_from_the_image_functions():
    code = {0x1000: b"\xf3\x0f\x1e\xfa\xb8\x04\x00\x00\x00\xe9\0\0\0\0\x90\x90",     # endbr64; mov $4
            0x1010: b"\xb8\x11\x00\x00\x00\xc3" + b"\x90" * 10,                      # mov $17; ret
            0x1020: b"\x48\x8d\x05" + struct.pack("<i", 0x2000 - 0x1027) + b"\xc3" + b"\x90" * 8}
    mem = {0x2000: b".7\0<denied>\0".ljust(64, b"\0")}
    mem.update(code)

    def read(va, size):
        for base, raw in mem.items():
            if base <= va - ORIGIN < base + len(raw):
                off = va - ORIGIN - base
                return raw[off:off + size].ljust(size, b"\0")
        raise XenscopeError("unmapped")
    syms = {"xen_major_version": ORIGIN + 0x1000, "xen_minor_version": ORIGIN + 0x1010,
            "xen_extra_version": ORIGIN + 0x1020}
    assert version_from_code(read, syms)[0] == "4.17.7"
    assert version_from_code(read, dict(syms, xen_minor_version=ORIGIN + 0x1020)) is None
    assert version_from_code(read, {}) is None
