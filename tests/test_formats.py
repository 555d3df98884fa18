"""ELF core and kdump-compressed hosts against independently laid-out bytes (tests/elfbytes.py)."""

import os
import shutil
import struct
import subprocess

import pytest

import elfbytes as B
from xenstructs.errors import NotInDump, XenscopeError
from xenstructs.formats.vmcoreinfo import parse_vmcoreinfo
from xenstructs.targets import open_dump
from xenstructs.targets.elfcore import ElfCoreTarget

PAGE = 4096
MAKEDUMPFILE = shutil.which("makedumpfile") or "/usr/sbin/makedumpfile"


def pattern(seed, n):
    return bytes((seed + i * 7) & 0xFF for i in range(n))


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


QREGS = {"rax": 0x1111, "rbx": 0x2222, "rip": 0xffffffff81000010, "rsp": 0xffffc90000001000,
         "rflags": 0x246, "cs": 0x10, "ss": 0x18, "fs_base": 0x7f0000001000,
         "gs_base": 0xffff888007a00000, "cr0": 0x80050033, "cr2": 0x7ffd0000, "cr3": 0x1234000,
         "cr4": 0x3606f0, "kernel_gs_base": 0x7f00aa, "gdt_base": 0xfffffe0000001000}


@pytest.fixture
def core64(tmp_path):
    segs = [(0x0, pattern(1, 2 * PAGE)),
            (0x2000, pattern(2, PAGE)),                       # adjacent to the first
            (0x100000, pattern(3, PAGE), 3 * PAGE),           # memsz > filesz
            (0x200000, pattern(4, PAGE))]
    notes = (B.note("CORE", B.NT_PRSTATUS, B.prstatus64(QREGS)) +
             B.note("CORE", B.NT_PRSTATUS, B.prstatus64(dict(QREGS, rip=0x42))) +
             B.note("QEMU", 0, B.qemu_cpu_state(QREGS)) +
             B.note("QEMU", 0, B.qemu_cpu_state(dict(QREGS, cr3=0x5555000), with_kgs=False)) +
             B.note("VMCOREINFO", 0, B.vmcoreinfo_text().encode() + b"\0" * 100))
    return write(tmp_path, "core64", B.elf_core(segs, notes)), segs


def test_reads_by_paddr(core64):
    path, segs = core64
    t = open_dump(path)
    assert isinstance(t, ElfCoreTarget)
    assert t.read_phys(0, 16) == segs[0][1][:16]
    assert t.read_phys(0x1ff8, 8) == segs[0][1][0x1ff8:0x2000]
    assert t.read_phys(0x2000, PAGE) == segs[1][1]
    assert t.read_u64(0x200008) == struct.unpack("<Q", segs[3][1][8:16])[0]
    assert isinstance(t.read_phys(0x200000, 8), bytes)
    t.close()


def test_cross_segment_read(core64):
    path, segs = core64
    t = open_dump(path)
    assert t.read_phys(0x1ff0, 32) == segs[0][1][-16:] + segs[1][1][:16]
    assert t.phys_ranges() == [(0, 0x3000), (0x100000, 0x103000), (0x200000, 0x201000)]


def test_memsz_beyond_filesz_reads_zeros(core64):
    path, segs = core64
    t = open_dump(path)
    assert t.read_phys(0x100ff8, 16) == segs[2][1][-8:] + bytes(8)
    assert t.read_phys(0x102000, PAGE) == bytes(PAGE)


@pytest.mark.parametrize("addr,size", [(0x3000, 8), (0x2ff8, 16), (0x103000, 1), (0x50000, 8),
                                       (1 << 40, 8), (0x1fffff, 2)])
def test_hole_is_not_in_dump(core64, addr, size):
    path, _ = core64
    t = open_dump(path)
    with pytest.raises(NotInDump):
        t.read_phys(addr, size)


def test_qemu_notes_elf64(core64):
    path, _ = core64
    t = open_dump(path)
    assert t.kind == "ELF vmcore (QEMU dump-guest-memory)"
    assert t.facts["machine"] == "x86_64" and t.facts["elfclass"] == 64 and t.facts["qemu_notes"]
    c0, c1 = t.cpus()
    assert c0.regs["cr3"] == 0x1234000 and c0.source["cr3"] == "QEMU CPU note"
    assert (c0.regs["cr0"], c0.regs["cr4"], c0.regs["cr2"]) == (0x80050033, 0x3606f0, 0x7ffd0000)
    assert c0.regs["rip"] == 0xffffffff81000010 and c0.source["rip"] == "NT_PRSTATUS"
    assert c0.regs["kernel_gs_base"] == 0x7f00aa
    assert c0.regs["gs_base"] == 0xffff888007a00000 and c0.regs["gdtr_base"] == 0xfffffe0000001000
    assert c1.regs["rip"] == 0x42 and c1.regs["cr3"] == 0x5555000
    assert "kernel_gs_base" not in c1.regs                   # 432-byte (older QEMU) note
    assert "efer" not in c0.regs


def test_prstatus_regs_without_qemu(tmp_path):
    regs = {n: 0x1000 + i for i, n in enumerate(B.GREGS64)}
    notes = B.note("CORE", B.NT_PRSTATUS, B.prstatus64(regs)) + \
        B.note("VMCOREINFO", 0, B.vmcoreinfo_text().encode())
    t = open_dump(write(tmp_path, "c", B.elf_core([(0, bytes(PAGE))], notes)))
    assert t.kind == "ELF vmcore (kdump)"
    (c,) = t.cpus()
    for n in B.GREGS64:
        assert c.regs[n] == regs[n], n
        assert c.source[n] == "NT_PRSTATUS"
    assert "cr3" not in c.regs


def test_vmcoreinfo_symbols(core64):
    path, _ = core64
    t = open_dump(path)
    vi = t.facts["vmcoreinfo"]
    assert t.symbol("init_top_pgt") == 0xffffffff82a0a000
    assert t.symbol("nonexistent") is None
    assert vi.number("phys_base") == -1073741824
    assert vi.size("page") == 64 and vi.offset("page", "flags") == 0
    assert vi.length("zone.free_area") == 11 and vi.kerneloffset == 0
    assert vi.osrelease == "6.1.0-test" and vi.pagesize == 4096 and vi.crashtime == 1700000000


def test_vmcoreinfo_junk_tolerated():
    vi = parse_vmcoreinfo(b"garbage line\n\nSYMBOL(a)=zz\nSYMBOL(b)=10\n=x\nNUMBER(h)=0x10\n"
                          b"OSRELEASE=5.10\0\0SYMBOL(c)=1")
    assert vi.symbol("a") is None and vi.symbol("b") == 16 and vi.number("h") == 16
    assert vi.symbol("c") is None and vi.osrelease == "5.10"
    assert parse_vmcoreinfo(b"").symbol("x") is None


def test_elf32_qemu_and_prstatus(tmp_path):
    regs32 = {"eax": 1, "ebx": 2, "ecx": 3, "eip": 0xc1000000, "esp": 0xc0001000,
              "eflags": 0x202, "cs": 0x60, "ss": 0x68}
    q = {"rax": 1, "rip": 0xc1000000, "cr0": 0x80000011, "cr3": 0x1a3f000, "cr4": 0x6d0}
    notes = B.note("CORE", B.NT_PRSTATUS, B.prstatus32(regs32)) + \
        B.note("QEMU", 0, B.qemu_cpu_state(q))
    segs = [(0x0, pattern(9, PAGE)), (0x1000, pattern(10, PAGE))]
    t = open_dump(write(tmp_path, "c32", B.elf_core(segs, notes, elfclass=32, machine=B.EM_386)))
    assert t.facts["machine"] == "i386" and t.facts["elfclass"] == 32
    assert t.kind == "ELF vmcore (QEMU dump-guest-memory)"
    (c,) = t.cpus()
    assert c.regs["eip"] == c.regs["rip"] == 0xc1000000
    assert c.regs["esp"] == c.regs["rsp"] == 0xc0001000 and c.regs["rflags"] == 0x202
    assert c.regs["eax"] == 1 and c.regs["ebx"] == 2 and c.source["eax"] == "NT_PRSTATUS"
    assert (c.regs["cr0"], c.regs["cr3"], c.regs["cr4"]) == (0x80000011, 0x1a3f000, 0x6d0)
    assert c.source["cr3"] == "QEMU CPU note"
    assert t.read_phys(0xff8, 16) == segs[0][1][-8:] + segs[1][1][:8]


def test_xen_crash_regs(tmp_path):
    regs = {"rip": 0xffff82d040200000, "cr0": 0x8005003b, "cr2": 0, "cr3": 0x7b4d4000,
            "cr4": 0x3526e0}
    info = struct.pack("<10Q", 4, 17, 0x1000, 0x1010, 0x1020, 0x1030, 0x1040, 0, 0x7b000000,
                       0x1234)
    notes = (B.note("CORE", B.NT_PRSTATUS, B.prstatus64(regs)) +
             B.note("Xen", B.XEN_ELFNOTE_CRASH_REGS, B.xen_crash_regs(regs)) +
             B.note("Xen", B.XEN_ELFNOTE_CRASH_INFO, info) +
             B.note("CORE", B.NT_PRSTATUS, B.prstatus64(dict(regs, rip=1))) +
             B.note("Xen", B.XEN_ELFNOTE_CRASH_REGS, B.xen_crash_regs(dict(regs, cr3=0x1000))) +
             B.note("VMCOREINFO_XEN", 0, b"SYMBOL(frame_table)=ffff82e000000000\n".ljust(4096,
                                                                                    b"\0")))
    t = open_dump(write(tmp_path, "xen", B.elf_core([(0, bytes(PAGE))], notes)))
    assert t.kind == "Xen hypervisor ELF vmcore" and t.facts["xen_notes"]
    c0, c1 = t.cpus()
    assert (c0.regs["cr0"], c0.regs["cr3"], c0.regs["cr4"]) == (0x8005003b, 0x7b4d4000, 0x3526e0)
    assert c0.source["cr3"] == "Xen crash notes" and c1.regs["cr3"] == 0x1000
    assert c0.regs["rip"] == 0xffff82d040200000 and c1.regs["rip"] == 1
    ci = t.facts["xen_crash_info"]
    assert (ci["xen_major_version"], ci["xen_minor_version"], ci["xen_phys_start"]) == \
        (4, 17, 0x7b000000)
    assert t.symbol("frame_table") == 0xffff82e000000000


def test_alias_segment_is_not_an_overlap(tmp_path):
    """kdump's kernel-text PT_LOAD lies inside a RAM PT_LOAD: same memory, accepted."""
    ram = pattern(5, 4 * PAGE)
    t = open_dump(write(tmp_path, "a", B.elf_core([(0, ram), (0x1000, ram[0x1000:0x2000])])))
    assert t.read_phys(0, 4 * PAGE) == ram and t.facts["aliased_segments"] == [1]
    assert t.phys_ranges() == [(0, 4 * PAGE)]


def test_elf_core_without_notes(tmp_path):
    t = open_dump(write(tmp_path, "plain", B.elf_core([(0x5000, pattern(3, 100))])))
    assert t.kind == "ELF core" and t.cpus() == [] and t.symbol("x") is None
    assert t.read_phys(0x5000 + 99, 1) == pattern(3, 100)[-1:]
    with pytest.raises(NotInDump):
        t.read_phys(0x5000 + 100, 1)


def test_pn_xnum_phnum(tmp_path):
    """e_phnum = 0xffff: the real count is section header 0's sh_info."""
    img = bytearray(B.elf_core([(0, pattern(1, PAGE))]))
    shoff = len(img)
    img += struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 1, 0, 0)
    struct.pack_into("<Q", img, 0x28, shoff)         # e_shoff
    struct.pack_into("<HHH", img, 0x38, 0xFFFF, 64, 1)  # e_phnum, e_shentsize, e_shnum
    t = open_dump(write(tmp_path, "xnum", bytes(img)))
    assert t.read_phys(0, 8) == pattern(1, 8)


# -- kdump-compressed through makedumpfile and libkdumpfile -------------------------------------

def _makedumpfile(args, **kw):
    assert os.path.exists(MAKEDUMPFILE), "makedumpfile is not installed: ./setup.sh installs it"
    kw.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([MAKEDUMPFILE] + args, stderr=subprocess.PIPE, timeout=120, **kw)


@pytest.fixture(scope="module")
def kdumps(tmp_path_factory):
    import kdumpfile  # noqa: F401  (./setup.sh installs python3-libkdumpfile)
    d = tmp_path_factory.mktemp("kdump")
    img, mem = B.makedumpfile_input(cpus=(QREGS, dict(QREGS, cr3=0x7000, rip=7)))
    src = d / "in.elf"
    src.write_bytes(img)
    out = d / "out.kdump"
    r = _makedumpfile(["-c", "-d", "9", str(src), str(out)])
    assert r.returncode == 0, r.stderr.decode()[-500:]
    flat = d / "out.flat"
    with open(flat, "wb") as f:
        r = _makedumpfile(["-c", "-d", "9", "-F", str(src)], stdout=f)
    assert r.returncode == 0, r.stderr.decode()[-500:]
    back = d / "back.kdump"
    with open(flat, "rb") as f:
        r = _makedumpfile(["-R", str(back)], stdin=f)
    assert r.returncode == 0 and back.read_bytes() == out.read_bytes()
    return {"elf": str(src), "kdump": str(out), "flat": str(flat), "mem": mem}


@pytest.mark.parametrize("which", ["kdump", "flat"])
def test_kdump_pages_match_source(kdumps, which, monkeypatch, tmp_path):
    monkeypatch.setenv("XENSCOPE_TMPDIR", str(tmp_path))
    t = open_dump(kdumps[which])
    assert t.kind == ("kdump-compressed (libkdumpfile)" if which == "kdump" else
                      "kdump-compressed, flattened (libkdumpfile)")
    excluded = []
    for base, data in kdumps["mem"].items():
        for off in range(0, len(data), PAGE):
            page = data[off:off + PAGE]
            try:
                got = t.read_phys(base + off, PAGE)
            except NotInDump as e:
                assert e.addr == base + off
                excluded.append((base + off) // PAGE)
                continue
            assert got == page, f"page {base + off:#x} differs"
    assert excluded == [0x20, 0x22, 0x23, 0x101, 0x104]   # -d 8: anonymous pages; zero pages kept
    with pytest.raises(NotInDump) as e:
        t.read_phys(0x21ff8, 0x2000)                          # starts readable, runs into 0x22
    assert e.value.addr == 0x22000
    for hole in (0x80000, 0x0ff000, 0x180000, 1 << 40):
        with pytest.raises(NotInDump):
            t.read_phys(hole, 8)
    assert t.read_phys(0x1ff8, 16) == kdumps["mem"][0][0x1ff8:0x2008]   # across pages
    assert t.phys_ranges() == [(0, 0x20000), (0x21000, 0x22000), (0x24000, 0x80000),
                               (0x100000, 0x101000), (0x102000, 0x104000), (0x105000, 0x180000)]
    t.close()


def test_kdump_registers_and_vmcoreinfo(kdumps):
    t = open_dump(kdumps["kdump"])
    assert t.facts["machine"] == "x86_64" and t.facts["qemu_notes"]
    c0, c1 = t.cpus()
    assert c0.regs["cr3"] == 0x1234000 and c0.source["cr3"] == "QEMU CPU note"
    assert c0.regs["rip"] == 0xffffffff81000010 and c1.regs["rip"] == 7
    assert c1.regs["cr3"] == 0x7000 and c0.regs["cr4"] == 0x3606f0
    assert t.symbol("init_top_pgt") == 0xffffffff80002000
    assert t.facts["vmcoreinfo"].osrelease == "6.1.0-test"


def test_kdump_without_qemu_notes_uses_prstatus(tmp_path):
    import kdumpfile  # noqa: F401  (./setup.sh installs python3-libkdumpfile)
    img, mem = B.makedumpfile_input(qemu=False)
    src = write(tmp_path, "in.elf", img)
    r = _makedumpfile(["-c", "-d", "0", src, str(tmp_path / "o")])
    assert r.returncode == 0, r.stderr.decode()[-500:]
    t = open_dump(str(tmp_path / "o"))
    (c,) = t.cpus()
    assert c.regs["rip"] == 0xffffffff81000123 and c.source["rip"] == "NT_PRSTATUS"
    assert "cr3" not in c.regs
    assert t.read_phys(0, 0x80000) == mem[0]            # -d 0 keeps zero pages


def test_missing_kdumpfile_message(monkeypatch, tmp_path):
    import builtins
    real = builtins.__import__

    def fake(name, *a, **kw):
        if name == "kdumpfile":
            raise ImportError("no")
        return real(name, *a, **kw)
    monkeypatch.setattr(builtins, "__import__", fake)
    p = write(tmp_path, "k", b"KDUMP   " + bytes(4096))
    with pytest.raises(XenscopeError, match="apt-get install python3-libkdumpfile"):
        open_dump(p)
