"""Debian's Xen 4.17 with a PV dom0 under QEMU (TCG): the harness in realsys.xenhost works.

One boot for the module: Xen's banner, dom0's shell, Xen's ``q`` debug key parsed (domain 0's
totals and its XenPage caf/taf lines), page_info of dom0's L4 read from Xen's frame table and
decoded as Xen 4.17 does, and a paused ELF dump of guest-physical memory that covers RAM and holds
the same bytes QEMU shows for that L4. Nothing here uses xenscope's own decoders.
"""
import os
import re
import struct
import time

import pytest

from realsys.xenhost import boot_xen_host, decode_page, parse_q

MEM_MB = 512
BUDGET = 240          # seconds for boot + checks + dump; a boot takes ~8-20 s here


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    t0 = time.time()
    h = boot_xen_host(workdir=str(tmp_path_factory.mktemp("xen")), timeout=180, mem=MEM_MB)
    h.t0 = t0
    yield h
    h.close()


@pytest.fixture(scope="module")
def facts(host):
    return host.collect()


@pytest.fixture(scope="module")
def dumped(host, facts):
    path = os.path.join(host.vm.dir, "xen.elf")
    t = time.time()
    host.dump(path)
    host.dump_seconds = time.time() - t
    return path


def test_banner_is_xen_417(host):
    v = host.xen_version
    assert v["banner"] and v["banner"].startswith("4.17."), v
    assert v["debian"] in v["banner_line"], v       # "(Debian 4.17.7+13-...)"


def test_xen_files(host):
    assert os.path.getsize(host.files["xen"]) > 500_000
    assert host.xen_map and "T start" in open(host.xen_map).read()
    if host.xen_syms is None:
        # Debian's -dbg xen-syms carries .symtab only: say so, keep the symbols-only ELF
        assert "no DWARF" in host.xen_syms_reason, host.xen_syms_reason
        assert host.xen_syms_symtab and os.path.getsize(host.xen_syms_symtab) > 1_000_000


def test_dom0_shell_round_trip(host):
    assert host.dom0_shell("echo round-$((20+3))-trip") == "round-23-trip\n"
    assert host.dom0_shell("uname -m").strip() == "x86_64"


def test_dom0_sees_xen(host, facts):
    hv = dict(line.split("=", 1) for line in facts["sys_hypervisor"].splitlines() if "=" in line)
    assert hv["type"] == "xen" and hv["guest_type"] == "PV", hv
    assert (hv["version/major"], hv["version/minor"]) == ("4", "17"), hv
    assert "." + host.xen_version["banner"].split(".", 2)[2] == hv["version/extra"], hv
    assert facts["proc_xen_capabilities"] == "control_d"


def test_q_parses(host, facts):
    q = parse_q(facts["key_q"])
    assert 0 in q["domains"], facts["key_q"]
    d0 = q["domains"][0]
    # dom0_mem=256M: 65536 pages; Xen 4.17 lists DomPage lines only for domains of < 10 pages
    assert d0["nr_pages"] == d0["max_pages"] == 65536, d0
    assert d0["too_long"] and d0["pages"] == [], d0
    assert d0["dying"] == 0 and d0["refcnt"] >= 1
    # the xenheap pages shared with dom0 (shared_info, ...): one XenPage line each
    assert len(d0["xen_pages"]) == d0["xenheap_pages"] >= 1, d0
    for p in d0["xen_pages"]:
        f = decode_page(p["caf"], p["taf"])
        assert f["allocated"] and f["xen_heap"] and f["type"] == "writable" \
            and f["validated"], (hex(p["caf"]), hex(p["taf"]))
        # the frame table (read over QEMU's monitor) holds what Xen printed
        assert host.page_info(p["mfn"]) == (p["caf"], p["taf"])
    assert q["xen_pages"] and all(p["domid"] == 0 for p in q["xen_pages"])


def test_dom0_l4_page_info(host, facts):
    cr3 = facts["dom0_cr3"]
    assert cr3, facts["key_0"]
    caf, taf = host.page_info(cr3 >> 12)
    f = decode_page(caf, taf)
    assert taf >> 60 == 0x8, hex(taf)                          # PGT_l4_page_table in the top bits
    assert f["type"] == "l4" and f["validated"] and f["pinned"], (hex(caf), hex(taf))
    assert f["allocated"] and not f["xen_heap"] and f["count"] >= 1, hex(caf)


def elf_loads(path):
    with open(path, "rb") as fh:
        ehdr = fh.read(64)
        assert ehdr[:4] == b"\x7fELF" and ehdr[4] == 2, ehdr[:8]   # ELF64
        assert struct.unpack_from("<H", ehdr, 16)[0] == 4            # ET_CORE
        phoff, = struct.unpack_from("<Q", ehdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
        fh.seek(phoff)
        loads = []
        for _ in range(phnum):
            p_type, _, off, _, paddr, filesz, memsz, _ = struct.unpack("<IIQQQQQQ",
                                                                     fh.read(phentsize)[:56])
            if p_type == 1:
                loads.append((paddr, memsz, off, filesz))
    return loads


def read_phys(path, loads, pa, n):
    for paddr, _, off, filesz in loads:
        if paddr <= pa and pa + n <= paddr + filesz:
            with open(path, "rb") as fh:
                fh.seek(off + pa - paddr)
                return fh.read(n)
    raise AssertionError(f"{pa:#x} not in the dump")


def test_dump_is_elf_covering_ram(host, facts, dumped):
    loads = elf_loads(dumped)
    assert loads
    covered = sum(m for _, m, _, _ in loads)
    assert covered >= (MEM_MB - 1) << 20, (covered, loads)
    # all of RAM above 1 MiB, in PT_LOADs
    spans = sorted((p, p + m) for p, m, _, _ in loads)
    pa = 0x100000
    for lo, hi in spans:
        if lo <= pa < hi:
            pa = hi
    assert pa >= MEM_MB << 20, ([(hex(a), hex(b)) for a, b in spans])
    assert host.context() in ("xen", "dom0")
    # dom0's L4 in the dump: the same bytes as QEMU's xp, and Xen's own slots present
    l4 = facts["dom0_cr3"] & ~0xfff
    raw = read_phys(dumped, loads, l4, 4096)
    entries = struct.unpack("<512Q", raw)
    qemu = [int(w, 16) for line in host.vm.hmp(f"xp /512gx {l4:#x}").splitlines()
            if ":" in line for w in re.findall(r"0x([0-9a-f]+)", line.split(":", 1)[1])]
    assert list(entries) == qemu
    assert any(entries[256:272]) and entries[261] & 1, [hex(e) for e in entries[256:272]]
    assert os.path.getsize(dumped) >= MEM_MB << 20


def test_total_time(host, dumped):
    took = time.time() - host.t0
    assert took < BUDGET, f"boot + checks + dump took {took:.0f} s (boot {host.boot_seconds:.0f} s)"
