"""Bad dump files: each gives one XenscopeError subclass with a one-line message, nothing else."""

import os
import random
import shutil
import struct
import subprocess

import pytest

import elfbytes as B
from xenstructs.errors import BadDump, Unsupported, XenscopeError
from xenstructs.targets import open_dump

PAGE = 4096
MAKEDUMPFILE = shutil.which("makedumpfile") or "/usr/sbin/makedumpfile"


def write(tmp_path, data, name="bad"):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def refused(path, cls=BadDump, match=None):
    with pytest.raises(XenscopeError) as e:
        t = open_dump(path)
        for a, _ in t.phys_ranges():           # force reads too, in case opening is lazy
            t.read_phys(a, 8)
    assert type(e.value) is cls or isinstance(e.value, cls), repr(e.value)
    msg = str(e.value)
    assert msg and "\n" not in msg
    if match:
        assert match in msg, msg
    return msg


GOOD = B.elf_core([(0, bytes(range(256)) * 16), (0x10000, b"\1" * PAGE)],
                  B.note("CORE", 1, B.prstatus64({"rip": 1})))


def test_missing_file(tmp_path):
    refused(str(tmp_path / "nope"), match="cannot open")


def test_directory(tmp_path):
    refused(str(tmp_path), match="directory")


def test_empty_file(tmp_path):
    refused(write(tmp_path, b""), match="empty")


def test_unreadable_file(tmp_path, monkeypatch):
    # root reads through permission bits, so make open() refuse as it would for a normal user
    import builtins
    p = write(tmp_path, GOOD)
    real_open = builtins.open

    def deny(path, *a, **kw):
        if str(path) == str(p):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **kw)
    monkeypatch.setattr(builtins, "open", deny)
    real_os_open = os.open

    def deny_os(path, *a, **kw):            # xenstructs.inputs.open_regular opens with os.open
        if str(path) == str(p):
            raise PermissionError(13, "Permission denied", str(path))
        return real_os_open(path, *a, **kw)
    monkeypatch.setattr(os, "open", deny_os)
    refused(p, match="cannot open")


@pytest.mark.parametrize("data", [b"hello world, not a dump", b"\x00" * 64, b"ab", b"MZ\x90\x00"])
def test_not_a_dump(tmp_path, data):
    msg = refused(write(tmp_path, data))
    assert "bad" in msg                        # names the file


@pytest.mark.parametrize("n", [4, 16, 30, 63])
def test_truncated_header(tmp_path, n):
    refused(write(tmp_path, GOOD[:n]))


def test_truncated_segment(tmp_path):
    msg = refused(write(tmp_path, GOOD[:-100]), match="truncated: segment")
    assert "file has" in msg


def test_phdr_table_beyond_eof(tmp_path):
    img = bytearray(GOOD)
    struct.pack_into("<Q", img, 0x20, len(GOOD) + 8)          # e_phoff
    refused(write(tmp_path, bytes(img)), match="program header table")


@pytest.mark.parametrize("field,value", [(0x38, 0xFFFE), (0x38, 0x8000), (0x36, 7), (0x36, 0),
                                         (0x38, 0xFFFF)])
def test_absurd_phnum_phentsize(tmp_path, field, value):
    img = bytearray(GOOD)
    struct.pack_into("<H", img, field, value)
    refused(write(tmp_path, bytes(img)))


def test_overlapping_segments(tmp_path):
    img = B.elf_core([(0, b"a" * 2 * PAGE), (PAGE, b"b" * 2 * PAGE)])
    refused(write(tmp_path, img), match="overlap")


def test_filesz_beyond_memsz(tmp_path):
    refused(write(tmp_path, B.elf_core([(0, b"a" * PAGE, 16)])), match="p_filesz")


def test_wrong_machine(tmp_path):
    refused(write(tmp_path, B.elf_core([(0, b"a" * 16)], machine=183)), match="unsupported machine")


def test_big_endian(tmp_path):
    refused(write(tmp_path, B.elf_core([(0, b"a" * 16)], endian=">")), match="byte order")


def test_bad_class(tmp_path):
    img = bytearray(GOOD)
    img[4] = 3
    refused(write(tmp_path, bytes(img)), match="class")


def test_no_load_segments(tmp_path):
    refused(write(tmp_path, B.elf_core([], B.note("CORE", 1, B.prstatus64({})))),
            match="no PT_LOAD")


def test_xl_dump_core_without_prstatus_is_refused(tmp_path):
    """ELFCLASS64, e_phnum 0, a .note.Xen section but no other xc_core section: the xc_core
    reader takes it and refuses it in one line."""
    shstr = b"\0.shstrtab\0.note.Xen\0"
    note = B.note("Xen", 0x2000001, struct.pack("<4Q", 0xF00FEBED, 1, 1, 4096))
    shoff = 64
    data_off = shoff + 3 * 64
    eh = (b"\x7fELF\x02\x01\x01\x00" + bytes(8) +
          struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 0, shoff, 0, 64, 56, 0, 64, 3, 1))
    sh = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    sh += struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, data_off, len(shstr), 0, 0, 1, 0)
    sh += struct.pack("<IIQQQQIIQQ", 11, 7, 0, 0, data_off + len(shstr), len(note), 0, 0, 4, 0)
    refused(write(tmp_path, eh + sh + shstr + note), BadDump, match="xl dump-core")


def test_note_past_end(tmp_path):
    bad_note = struct.pack("<III", 5, 4000, 1) + b"CORE\0\0\0\0" + b"x" * 16
    refused(write(tmp_path, B.elf_core([(0, b"a" * 16)], bad_note)), match="runs past the end")


@pytest.mark.parametrize("name,ntype,desc", [("CORE", 1, b"x" * 10), ("QEMU", 0, b"x" * 100),
                                             ("QEMU", 0, struct.pack("<II", 1, 9999) + bytes(432)),
                                             ("Xen", 0x1000002, b"x" * 8)])
def test_short_register_notes(tmp_path, name, ntype, desc):
    refused(write(tmp_path, B.elf_core([(0, b"a" * 16)], B.note(name, ntype, desc))))


def test_fuzzed_headers_only_raise_xenscope_errors(tmp_path):
    rng = random.Random(1234)
    base = B.elf_core([(0, b"a" * PAGE), (0x2000, b"b" * 64, 128)],
                      B.note("CORE", 1, B.prstatus64({"rip": 1})) +
                      B.note("QEMU", 0, B.qemu_cpu_state({"cr3": 0x1000})) +
                      B.note("VMCOREINFO", 0, B.vmcoreinfo_text().encode()))
    hdr_end = base.index(b"a" * 64)
    for i in range(400):
        img = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            img[rng.randrange(hdr_end)] = rng.randrange(256)
        if rng.random() < 0.2:
            img = img[:rng.randrange(len(img))]
        p = write(tmp_path, bytes(img), f"f{i}")
        try:
            t = open_dump(p)
            t.cpus()
            for a, e in t.phys_ranges():
                t.read_phys(a, min(e - a, 64))
            t.close()
        except XenscopeError as e:
            assert "\n" not in str(e)


# -- flattened and kdump-compressed ---------------------------------------------------------

def flat(records, end=True, header_type=1):
    out = b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", header_type, 1)
    out = out.ljust(4096, b"\0")
    for off, data in records:
        out += struct.pack(">qq", off, len(data)) + data
    if end:
        out += struct.pack(">qq", -1, -1)
    return out


@pytest.mark.parametrize("data,match", [
    (flat([(0, b"KDUMP   " + bytes(100))])[:-40], "truncated"),
    (flat([(0, b"x" * 100)], end=False), "no end marker"),
    (flat([])[:100], "truncated flattened header"),
    (flat([(0, b"x")], header_type=7), "bad flattened header"),
    (flat([]), "does not hold a kdump"),
    (flat([(0, b"garbage garbage")]), "does not hold a kdump"),
])
def test_bad_flattened(tmp_path, data, match):
    import kdumpfile  # noqa: F401  (./setup.sh installs python3-libkdumpfile)
    refused(write(tmp_path, data), match=match)


@pytest.mark.parametrize("off,size", [(0, -5), (-4096, 8), (1 << 62, 8), (0, 1 << 40)])
def test_flattened_bad_record(tmp_path, off, size):
    import kdumpfile  # noqa: F401  (./setup.sh installs python3-libkdumpfile)
    data = flat([]).rsplit(struct.pack(">qq", -1, -1), 1)[0]
    data += struct.pack(">qq", off, size) + b"x" * 64 + struct.pack(">qq", -1, -1)
    refused(write(tmp_path, data))


@pytest.mark.parametrize("data", [b"KDUMP   " + bytes(range(256)) * 20, b"DISKDUMP" + bytes(8000),
                                  b"KDUMP   ", b"KDUMP   \x06\0\0\0" + b"\xff" * 5000])
def test_kdump_header_garbage(tmp_path, data):
    import kdumpfile  # noqa: F401  (./setup.sh installs python3-libkdumpfile)
    refused(write(tmp_path, data))


@pytest.fixture(scope="module")
def real_kdump(tmp_path_factory):
    import kdumpfile  # noqa: F401  (./setup.sh installs python3-libkdumpfile)
    assert os.path.exists(MAKEDUMPFILE), "makedumpfile is not installed: ./setup.sh installs it"
    d = tmp_path_factory.mktemp("kd")
    img, _ = B.makedumpfile_input()
    (d / "in.elf").write_bytes(img)
    r = subprocess.run([MAKEDUMPFILE, "-c", "-d", "0", str(d / "in.elf"), str(d / "o")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-300:]
    return (d / "o").read_bytes()


def test_truncated_kdump(tmp_path, real_kdump):
    for cut in (100, 5000, 9000):                   # header, sub-header or bitmaps cut off
        refused(write(tmp_path, real_kdump[:cut], f"cut{cut}"), match="truncated")


@pytest.mark.parametrize("lost", [10, 3000])
def test_kdump_truncated_page_data(tmp_path, real_kdump, lost):
    """Page data cut off in a dump not flagged incomplete: refused when opened (libkdumpfile would
    map the missing bytes: SIGBUS), naming the descriptor whose data is gone."""
    msg = refused(write(tmp_path, real_kdump[:-lost]), match="truncated")
    assert "page descriptor" in msg and "ends beyond the end of the file" in msg


def test_corrupt_kdump_page_data(tmp_path, real_kdump):
    img = bytearray(real_kdump)
    start = len(img) - 12000
    img[start:start + 4000] = b"\xAA" * 4000        # smash compressed page data
    refused(write(tmp_path, bytes(img)))
