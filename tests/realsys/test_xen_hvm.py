"""An HVM guest with its device model on a real Xen host with hardware-assisted paging (Debian's Xen 4.17
under QEMU TCG with SVM + NPT; QEMU for Xen, hvmloader and SeaBIOS in dom0: realsys/xenhvm.py),
followed from its virtual addresses to machine frames in the host image.

Truth that does not come from xenscope:

* Xen's own console: "HVM: SVM enabled", "HAP detected", hvmloader's and SeaBIOS' lines (only an HVM
  guest runs them);
* Xen's 'q' key for the paused domain: ``paging assistance: hap ... translate external``, its page
  counts, the Xen heap pages it shares with the domain (``XenPage``: shared_info, grant-table frames),
  its ``ExtraPage`` frames (the pages of the ioreq server QEMU made: xen/common/ioreq.c allocates
  them MEMF_no_refcount) and the device model's ioreq server
  ``memory`` ranges (guest-physical addresses QEMU emulates);
* the device model's command line (``/proc/PID/cmdline`` of the pid libxl wrote to xenstore,
  ``/local/domain/D/image/device-model-pid``);
* the guest's own view: the marker program's VA and its /proc/self/pagemap frame, the marker string,
  its /proc/iomem; xenstore's console and store ring-refs (gfns for an HVM guest);
* ``xen-hvmctx`` (the vCPU's saved CR0/CR3/CR4/EFER as Xen's HVM save record has them);
* QEMU's memory itself: the host image's only page-aligned copy of the marker is the machine frame.

No ``xl dump-core`` of this domain (libxc maps every gfn one by one: minutes under TCG).
"""
import json
import re
import struct
import time

import pytest

from realsys.test_xen_pvh import _cli, _json, check_type_and_saved_registers, check_walks_reach_the_marker
from realsys.xenhost import parse_q
from realsys.xenhvm import boot_xen_with_hvm, parse_q_domain

PAGE = 4096
GTF_PERMIT_ACCESS = 1             # xen/include/public/grant_table.h: a v1 entry's type bits (flags & 3)


@pytest.fixture(scope="module")
def hvm(tmp_path_factory):
    t0 = time.time()
    h = boot_xen_with_hvm(str(tmp_path_factory.mktemp("xenhvm")))
    h.seconds = time.time() - t0
    yield h
    h.close()


def _domu(hvm):
    return hvm.domu.domid


def _q(hvm):
    """Xen's 'q' for the domU: parse_q's counts and pages, with parse_q_domain's paging and ranges."""
    return dict(parse_q(hvm.key_q)["domains"][_domu(hvm)], **parse_q_domain(hvm.key_q, _domu(hvm)))


def _platform_bar(hvm):
    """The guest-physical start of the Xen platform PCI device's BAR, from the guest's /proc/iomem."""
    m = re.search(r"^\s*([0-9a-f]+)-[0-9a-f]+ : xen-platform-pci$", hvm.iomem, re.M)
    assert m, hvm.iomem
    return int(m.group(1), 16)


def _p2m(hvm):
    from xenstructs.targets import open_dump
    from xenstructs.xen.host import open_host
    from xenstructs.xen.hvm import guest_memory
    return guest_memory(open_host(open_dump(hvm.host_image)), _domu(hvm))[3]


def _mapped(hvm):
    """{gfn: mfn} of every frame xenscope's reading of the domain's P2M maps."""
    out = {}
    for leaf in _p2m(hvm).leaves().leaves:
        if leaf.entry.present:
            out.update({leaf.gfn + i: leaf.mfn + i for i in range(1 << leaf.order)})
    return out


def test_xen_runs_an_hvm_guest_with_its_device_model(hvm):
    console = hvm.host.console
    assert "HVM: SVM enabled" in console and "HVM: Hardware Assisted Paging (HAP) detected" in console
    domid = _domu(hvm)
    assert f"(d{domid}) HVM Loader" in console and f"(d{domid}) SeaBIOS (version" in console
    assert f"-xen-domid {domid} " in hvm.qemu_cmdline and "-machine xenfv" in hvm.qemu_cmdline
    assert "-kernel /boot/vmlinuz" in hvm.qemu_cmdline
    assert hvm.marker["present"], hvm.marker


def test_domains_type_paging_and_saved_registers(hvm):
    assert _q(hvm)["paging"].split() == ["hap", "refcounts", "translate", "external"]
    check_type_and_saved_registers(hvm, "HVM")


def test_nested_walk_finds_the_marker(hvm):
    m = hvm.marker
    maddr = check_walks_reach_the_marker(hvm, "--vcpu", "0")
    t = _json("vtop", hvm.host_image, hex(m["va"]), "--domain", _domu(hvm))["translations"][0]
    assert (t["pa"], t["maddr"], t["p2m_type"]) == (m["gpa"], maddr, "p2m_ram_rw")
    maps = _json("maps", hvm.host_image, "--domain", _domu(hvm), "--pages", "--range", f"{m['va']:#x}+0x1000")
    assert [(p["va"], p["pa"], p["maddr"]) for p in maps["pages"]] == [(m["va"], m["gpa"], maddr)]


def test_p2m_check_clean_and_counts_xens_pages(hvm):
    """The P2M maps as many frames as Xen counts for the domain (its pages plus the Xen heap pages it
    shares), the guest's RAM as p2m_ram_rw, and nothing p2m-check would call a problem."""
    r = _cli("p2m-check", hvm.host_image, "--domain", _domu(hvm), "--json")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    res = json.loads(r.stdout)
    q = _q(hvm)
    assert res["translated"] and res["problems"] == 0 and res["type"] == "HVM"
    assert res["frames"] == q["nr_pages"] + q["xenheap_pages"] == len(_mapped(hvm)), (res["frames"], q)
    for line in hvm.iomem.splitlines():
        if line.strip().endswith(": System RAM") and not line.startswith(" "):
            start = int(line.split("-")[0], 16)
            got = _json("read-phys", hvm.host_image, hex(start), "8", "--domain", _domu(hvm))
            assert got["frames"][0]["p2m_type"] == "p2m_ram_rw", line


def test_xen_heap_and_extra_pages(hvm):
    """Xen's XenPage frames of the domain are in its P2M (the grant-table frame at the platform device's
    BAR, where the guest put it); its ExtraPage frames (the ioreq server's pages, which QEMU maps as a
    resource) are not."""
    q, mapped = _q(hvm), _mapped(hvm)
    by_mfn = {mfn: gfn for gfn, mfn in mapped.items()}
    assert q["xen_pages"] and all(p["mfn"] in by_mfn for p in q["xen_pages"]), q["xen_pages"]
    assert q["extra_pages"] and not any(p["mfn"] in by_mfn for p in q["extra_pages"]), q["extra_pages"]
    bar = _platform_bar(hvm)
    r = _json("read-phys", hvm.host_image, hex(bar), "16", "--domain", _domu(hvm))
    assert r["frames"][0]["mfn"] in {p["mfn"] for p in q["xen_pages"]}, r["frames"]
    entries = [struct.unpack_from("<HHI", bytes.fromhex(r["hex"]), 8 * i) for i in range(2)]
    # the grant table's reserved entries 0 and 1: the console and xenstore rings, granted to dom0
    assert [(flags & 3, domid, frame) for flags, domid, frame in entries] == [
        (GTF_PERMIT_ACCESS, 0, hvm.domu.rings["console"]), (GTF_PERMIT_ACCESS, 0, hvm.domu.rings["store"])]


def test_device_model_ranges_are_not_in_the_p2m(hvm):
    """Guest-physical memory that Xen sends to the device model (the ioreq server's ranges of Xen's 'q')
    has no P2M entry, except frames the guest itself placed in the platform device's BAR: Xen heap
    pages of the domain (XenPage: its grant-table frames)."""
    q = _q(hvm)
    assert q["ioreq_memory"], hvm.key_q
    bar, xen_pages = _platform_bar(hvm), {p["mfn"] for p in q["xen_pages"]}
    inside = {g: m for g, m in _mapped(hvm).items() if any(a <= g << 12 <= b for a, b in q["ioreq_memory"])}
    assert bar >> 12 in inside and all(g << 12 >= bar and m in xen_pages for g, m in inside.items()), \
        {hex(g): hex(m) for g, m in inside.items()}
    for first, _ in q["ioreq_memory"]:
        if first >> 12 not in inside:
            r = _cli("read-phys", hvm.host_image, hex(first), "8", "--domain", _domu(hvm))
            assert r.returncode == 2 and "not present" in r.stderr, (hex(first), r.stdout + r.stderr)
