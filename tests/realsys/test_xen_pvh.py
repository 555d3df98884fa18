"""A PVH guest on a real Xen host with hardware-assisted paging (Debian's Xen 4.17 under QEMU TCG with
SVM + NPT: realsys/xenpvh.py), followed from its virtual addresses to machine frames in the host image.

Truth that does not come from xenscope:

* Xen's own console: "HVM: SVM enabled", "HAP detected";
* the guest's own view: the marker program's VA and its /proc/self/pagemap frame (the gpa), the
  marker string it wrote, the guest's /proc/iomem;
* Xen's toolstack: ``xen-hvmctx`` (the vCPU's saved CR0/CR3/CR4/EFER as Xen's HVM save record has
  them), ``xl dump-core``'s ``.xen_pfn`` and ``.xen_pages`` (libxc mapping each gfn through Xen);
* QEMU's memory itself: the host image's only page-aligned copy of the marker (taken while the
  domain was paused, before the dump-core copied it into dom0) is the machine frame.
"""
import json
import mmap
import os
import struct
import subprocess
import sys
import time

import pytest

from realsys.test_xen_domu_p2m import _section, section_table
from realsys.xenpvh import boot_xen_with_pvh

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LINUX_DIRECT_MAP = 0xffff888000000000          # x86_64 PAGE_OFFSET, 4-level, nokaslr (the domU's command line)
PAGE = 4096


@pytest.fixture(scope="module")
def pvh(tmp_path_factory):
    t0 = time.time()
    p = boot_xen_with_pvh(str(tmp_path_factory.mktemp("xenpvh")))
    p.seconds = time.time() - t0
    yield p
    p.close()


@pytest.fixture(scope="module")
def shadow(tmp_path_factory):
    """The same PVH domU with shadow paging (xl's ``hap = 0``): host image only, no dump-core (~70 s)."""
    p = boot_xen_with_pvh(str(tmp_path_factory.mktemp("xenpvh-shadow")), hap=False)
    yield p
    p.close()


def _cli(*args):
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", *map(str, args)], capture_output=True, text=True,
                       cwd=TOP, timeout=600)
    return r


def _json(*args):
    r = _cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _segments(path):
    """``[(paddr, file offset, size)]`` of an ELF64 core's PT_LOAD segments (read here with struct)."""
    with open(path, "rb") as f:
        eh = f.read(64)
        phoff, = struct.unpack_from("<Q", eh, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", eh, 0x36)
        f.seek(phoff)
        out = []
        for _ in range(phnum):
            ptype, _, off, _, paddr, filesz = struct.unpack_from("<IIQQQQ", f.read(phentsize))
            if ptype == 1:
                out.append((paddr, off, filesz))
    return out


def _aligned_copies(path, needle):
    """Machine addresses of every page-aligned occurrence of ``needle`` in the host image."""
    found = []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for paddr, off, size in _segments(path):
            at = data.find(needle, off, off + size)
            while at >= 0:
                if (paddr + at - off) % PAGE == 0:
                    found.append(paddr + at - off)
                at = data.find(needle, at + 1, off + size)
    return found


def _host_page(path, maddr):
    with open(path, "rb") as f:
        for paddr, off, size in _segments(path):
            if paddr <= maddr < paddr + size:
                f.seek(off + maddr - paddr)
                return f.read(PAGE)
    raise AssertionError(f"maddr {maddr:#x} not in the host image")


def _xc_sections(path):
    """The xl dump-core's .xen_pfn (a tuple of pfns) and the file offset of .xen_pages."""
    pfn = _section(path, ".xen_pfn")
    return struct.unpack(f"<{len(pfn) // 8}Q", pfn), section_table(path)[".xen_pages"][0]


def _domu(pvh):
    return pvh.domu.domid


def test_xen_runs_hvm_with_hap(pvh):
    console = pvh.host.console
    assert "HVM: SVM enabled" in console
    assert "HVM: Hardware Assisted Paging (HAP) detected" in console
    assert pvh.marker["present"], pvh.marker


def check_type_and_saved_registers(guest, kind):
    """``domains`` and ``info`` of the host image: the domU (``guest``: a boot of this module's or of
    test_xen_hvm.py's) is of type ``kind`` with HAP, its vCPU 0's saved CR0/CR3/CR4/EFER are
    xen-hvmctx's; returns ``domains``' rows by domain id."""
    doms = {d["id"]: d for d in _json("domains", guest.host_image)["domains"]}
    domu = doms[guest.domu.domid]
    assert (domu["type"], domu["paging"]) == (kind, "HAP")
    v0 = domu["vcpus"][0]
    for reg in ("cr0", "cr3", "cr4", "efer"):                  # xen-hvmctx: Xen's HVM save record
        assert v0[reg] == guest.saved[reg], (reg, v0, guest.saved)
    info = _cli("info", guest.host_image)
    assert info.returncode == 0 and f"domain {guest.domu.domid}  {kind}, HAP; v0 cr3 {guest.saved['cr3']:#x}" \
        in info.stdout
    return doms


def check_walks_reach_the_marker(guest, *walk_args):
    """The nested walk from the vCPU's saved CR3, of the marker's VA and of its direct-map address,
    lands on the guest frame its /proc/self/pagemap named and on the host image's only page-aligned
    copy of the marker, every guest table read through the P2M; read-phys of the gpa gives the
    marker's bytes. Returns that copy's machine address."""
    m, domid = guest.marker, guest.domu.domid
    copies = _aligned_copies(guest.host_image, m["text"].encode())
    assert len(copies) == 1, [hex(c) for c in copies]
    for va in (m["va"], LINUX_DIRECT_MAP + m["gpa"]):          # the process's VA (saved CR3), the direct map
        w = _json("walk", guest.host_image, hex(va), "--domain", domid, *walk_args)
        assert w["pa"] == m["gpa"], (hex(va), w["pa"], m)           # /proc/self/pagemap
        assert w["stage2"]["maddr"] == copies[0] and w["stage2"]["p2m_type"] == "p2m_ram_rw"
        assert w["cr3"] == guest.saved["cr3"]
        for level in w["levels"]:                              # every guest table read through the P2M
            assert level["table_mfn"] is not None and level["table_p2m_type"] == "p2m_ram_rw"
    r = _json("read-phys", guest.host_image, hex(m["gpa"]), len(m["text"]), "--domain", domid)
    assert bytes.fromhex(r["hex"]).decode() == m["text"]
    assert r["frames"][0]["mfn"] == copies[0] >> 12
    return copies[0]


def test_domains_type_paging_and_saved_registers(pvh):
    doms = check_type_and_saved_registers(pvh, "PVH")
    assert (doms[0]["type"], doms[0]["paging"]) == ("PV", "PV")


def test_nested_walk_finds_the_marker(pvh):
    check_walks_reach_the_marker(pvh)


def test_vtop_and_maps_agree_with_the_walk(pvh):
    m = pvh.marker
    t = _json("vtop", pvh.host_image, hex(m["va"]), "--domain", _domu(pvh))["translations"][0]
    assert (t["pa"], t["p2m_type"]) == (m["gpa"], "p2m_ram_rw")
    maps = _json("maps", pvh.host_image, "--domain", _domu(pvh), "--pages",
                 "--range", f"{m['va']:#x}+0x1000")
    assert [(p["va"], p["pa"], p["maddr"]) for p in maps["pages"]] == [(m["va"], m["gpa"], t["maddr"])]


def test_dump_core_pages_are_the_p2m_frames(pvh):
    """Every page libxc dumped for a gfn is, byte for byte, the host's page at the mfn xenscope's P2M
    gives that gfn (a sample of 256 spread over the dump, and the marker's)."""
    pfns, pages_at = _xc_sections(pvh.domu.xc_core_path)
    valid = [(i, pfn) for i, pfn in enumerate(pfns) if pfn != (1 << 64) - 1]
    assert any(pfn == pvh.marker["pfn"] for _, pfn in valid)
    step = max(1, len(valid) // 256)
    sample = valid[::step] + [x for x in valid if x[1] == pvh.marker["pfn"]]
    from xenstructs.targets import open_dump
    from xenstructs.xen.host import open_host
    from xenstructs.xen.hvm import guest_memory
    guest, _, _, p2m = guest_memory(open_host(open_dump(pvh.host_image)), _domu(pvh))
    with open(pvh.domu.xc_core_path, "rb") as f:
        for i, pfn in sample:
            f.seek(pages_at + i * PAGE)
            dumped = f.read(PAGE)
            mfn = p2m.translate(pfn).mfn
            assert mfn is not None, hex(pfn)
            assert _host_page(pvh.host_image, mfn << 12) == dumped, (hex(pfn), hex(mfn))


def test_p2m_check_clean_and_iomem_ram_mapped(pvh):
    r = _cli("p2m-check", pvh.host_image, "--domain", _domu(pvh), "--json")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    res = json.loads(r.stdout)
    assert res["translated"] and res["problems"] == 0 and res["frames"] > 0
    for line in pvh.iomem.splitlines():
        if line.strip().endswith(": System RAM") and not line.startswith(" "):
            start = int(line.split("-")[0], 16)
            got = _json("read-phys", pvh.host_image, hex(start), "8", "--domain", _domu(pvh))
            assert got["frames"][0]["p2m_type"] == "p2m_ram_rw", line


def _entry_copies(path, value):
    """File offsets of every 8-byte-aligned occurrence of the u64 ``value`` in the host image."""
    needle, found = struct.pack("<Q", value), []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for paddr, off, size in _segments(path):
            at = data.find(needle, off, off + size)
            while at >= 0:
                if (paddr + at - off) % 8 == 0:
                    found.append(at)
                at = data.find(needle, at + 1, off + size)
    return found


def _ram_leaf(path, maddr):
    """``(file offset, frames)`` of the P2M leaf that maps machine address ``maddr`` as ``p2m_ram_rw``:
    the only aligned copy of ``maddr's frame | P RW U A D`` (p2m-pt's flags, type 0) or, when the page
    sits in a 2 MiB superpage, of ``its 2 MiB frame | P RW U A D PSE``."""
    for mask, flags, frames in ((0xFFF, 0x67, 1), (0x1FFFFF, 0xE7, 512)):
        at = _entry_copies(path, (maddr & ~mask) | flags)
        if at:
            assert len(at) == 1, at
            return at[0], frames
    raise AssertionError(f"no P2M leaf of maddr {maddr:#x} in the host image")


def test_p2m_check_finds_a_frame_mapped_twice(pvh, tmp_path):
    """A copy of the host image in which the P2M leaf of the marker's page (found in the image by value,
    :func:`_ram_leaf`) is overwritten with its neighbour (the next gfns' leaf, a RAM leaf of the same
    size): the marker's gfns now map the neighbour's frames, whose M2P names the neighbour's gfns."""
    import shutil
    maddr = _aligned_copies(pvh.host_image, pvh.marker["text"].encode())[0]
    at, frames = _ram_leaf(pvh.host_image, maddr)
    with open(pvh.host_image, "rb") as f:
        f.seek(at + 8)
        neighbour, = struct.unpack("<Q", f.read(8))
    flags = 0x67 if frames == 1 else 0xE7
    assert neighbour & 0xFFF == flags and neighbour >> 52 == 0, hex(neighbour)    # RAM leaf, p2m_ram_rw
    bad = str(tmp_path / "host-bad.elf")
    shutil.copyfile(pvh.host_image, bad)
    os.chmod(bad, 0o600)
    with open(bad, "r+b") as f:
        f.seek(at)
        f.write(struct.pack("<Q", neighbour))
    r = _cli("p2m-check", bad, "--domain", _domu(pvh), "--json", "--limit", "0")
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr
    res = json.loads(r.stdout)
    first, other = pvh.marker["pfn"] & ~(frames - 1), (neighbour & 0x000FFFFFFFFFF000) >> 12
    moved = {(first + i, other + i) for i in range(frames)}
    got = {c: {(f["pfn"], f["mfn"]) for f in v} for c, v in res["findings"].items() if v}
    assert got == {"mismatch": moved, "duplicate": moved | {(first + frames + i, other + i) for i in range(frames)}}
    assert {f["m2p"] - f["pfn"] for f in res["findings"]["mismatch"]} == {frames}


def test_shadow_mode_guest(shadow):
    """Shadow paging: Xen keeps the P2M in p2m-pt format on any CPU, and the guest's own tables with its
    saved CR3 (xen-hvmctx's): both are followed to the marker; the shadow tables are said not to be."""
    m = shadow.marker
    doms = {d["id"]: d for d in _json("domains", shadow.host_image)["domains"]}
    domu = doms[_domu(shadow)]
    assert (domu["type"], domu["paging"]) == ("PVH", "shadow")
    assert domu["vcpus"][0]["cr3"] == shadow.saved["cr3"]
    copies = _aligned_copies(shadow.host_image, m["text"].encode())
    assert len(copies) == 1, [hex(c) for c in copies]
    w = _json("walk", shadow.host_image, hex(m["va"]), "--domain", _domu(shadow))
    assert w["pa"] == m["gpa"] and w["stage2"]["maddr"] == copies[0]
    assert w["domain"]["format"].startswith("x86 page tables (p2m-pt")
    text = _cli("walk", shadow.host_image, hex(m["va"]), "--domain", _domu(shadow)).stdout
    assert "shadow tables the CPU really walks" in text
    r = _cli("p2m-check", shadow.host_image, "--domain", _domu(shadow), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["problems"] == 0, r.stdout[-2000:] + r.stderr
