"""xenscope on a running Xen PV dom0's ``/proc/kcore`` (Debian's Xen 4.17 under QEMU TCG).

dom0 runs this machine's Python and checkout through a read-only virtio-9p share of its root (as in
test_live_kcore.py; virtio's DMA goes through xen-swiotlb in a PV dom0), with xenfs mounted so it
can tell it is dom0. A PV kernel's page tables hold machine frames while kcore reads pseudo-physical
memory: xenscope reads the kernel's P2M through kcore and walks through its inverse. Truth, none of
it from xenscope: the bytes kcore gives at each /proc/kallsyms symbol's virtual address, and the
bytes QEMU's monitor (``xp``) reads from the machine memory at the address xenscope's walk gave.
"""
import os
import re

import pytest

from gdbutil import TOP, venv_python
from realsys import xenhost as XH
from realsys.test_live_kcore import MODULES, SHARE, load

INIT = " && ".join([
    "mkdir -p /host", f"mount -t 9p -o {SHARE},ro hostroot /host", "mount -t proc proc /host/proc",
    "mount -t sysfs sys /host/sys", "mount -t devtmpfs dev /host/dev", "mount -t xenfs xenfs /host/proc/xen",
    f"mount -t 9p -o {SHARE} out /host/mnt", "echo SHARES-MOUNTED"])


@pytest.fixture(scope="module")
def dom0(tmp_path_factory):
    """``(XenHost, results dir)`` after :mod:`kcoreguest` ``--pv`` ran in dom0 (Python needs 640 MiB)."""
    out = str(tmp_path_factory.mktemp("kcore-pv"))
    host = XH.boot_xen_host(mem=1024, xen_args=XH.XEN_ARGS.replace("dom0_mem=256M,max:256M",
                                                                   "dom0_mem=640M,max:640M"),
                            extra_modules=MODULES, extra_init=INIT,
                            qemu_args=["-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,"
                                                  "readonly=on,multidevs=remap",
                                       "-virtfs", f"local,path={out},mount_tag=out,security_model=none"])
    try:
        assert "SHARES-MOUNTED" in host.console, host.console[-3000:]
        driver = os.path.join(TOP, "tests", "realsys", "kcoreguest.py")
        host.dom0_shell(f"chroot /host /usr/bin/env -i PATH=/usr/bin:/bin PYTHONPATH={TOP} {venv_python()} "
                        f"{driver} /mnt --pv", timeout=1200)
        assert os.path.exists(os.path.join(out, "status.json")), host.console[-3000:]
        yield host, out
    finally:
        host.close()


def xp(host, pa, length):
    """``length`` bytes of machine memory at ``pa`` as QEMU's monitor reads them."""
    text = host.vm.hmp(f"xp /{length}xb {pa:#x}")
    return bytes(int(b, 16) for line in text.splitlines() for b in re.findall(r"0x([0-9a-f]{2})\b",
                                                                                line.partition(":")[2]))


def test_info_says_pv_dom0_and_machine_addresses(dom0):
    _, out = dom0
    status = load(out, "status.json")
    assert {k: v[0] for k, v in status.items() if k != "p2m_check"} == {"info": 0, "info_json": 0}, status
    info = load(out, "info.json")
    assert info["kind"] == "live kernel (/proc/kcore, read-only)" and "paging_error" not in info, info
    assert info["sources"]["cr3"].startswith("init_top_pgt's pfn (/proc/kcore's text segment) through the "
                                             "kernel's P2M"), info["sources"]
    text = load(out, "info.txt")
    assert "note: Xen PV guest (dom0): page tables hold machine frames" in text, text
    assert "note: addresses are machine addresses: walks and reads go through the inverse of the kernel's P2M" in text
    assert "note: Xen's M2P: no kcore segment; p2m-check maps it read-only through privcmd" in text


def test_walks_reach_the_machine_frames_qemu_reads(dom0):
    host, out = dom0
    rows = load(out, "check.json")["symbols"]
    assert len(rows) >= 200, len(rows)
    assert all(r["walk_pa"] is not None and r["via_walk"] == r["kcore"] for r in rows), \
        [r for r in rows if r["walk_pa"] is None or r["via_walk"] != r["kcore"]][:3]
    host.vm.qmp("stop")
    try:
        for r in rows[::max(1, len(rows) // 25)]:
            assert xp(host, r["walk_pa"], 32).hex() == r["kcore"], r
    finally:
        host.vm.qmp("cont")


def test_p2m_check_on_the_live_dom0(dom0):
    """The kernel's P2M (through kcore) against Xen's M2P (mapped read-only through privcmd): two
    independent tables; on a healthy dom0 every frame the P2M names maps back to its pfn. Xen's
    max_page is the end of the highest usable range of the e820 map Xen printed at boot."""
    host, out = dom0
    status = load(out, "status.json")["p2m_check"]
    assert status[0] in (0, 1) and not status[1], status
    res = load(out, "p2m_check.json")
    assert res["format"] == "kcore" and res["domain"] == 0, res["sources"]
    assert "privcmd" in res["sources"]["m2p"] and "/proc/kcore" in res["sources"]["p2m"], res["sources"]
    assert res["pfns"] >= 100000 and res["counts"]["mismatch"] == 0, (res["pfns"], res["counts"])
    assert res["counts"]["duplicate"] == 0, res["counts"]
    usable = re.findall(r"\(XEN\)\s+\[([0-9a-f]{16}), ([0-9a-f]{16})\] \(usable\)", host.console)
    assert usable, "Xen printed no e820 map"
    assert res["max_mfn"] == (max(int(end, 16) for _, end in usable) + 1) >> 12, (hex(res["max_mfn"]), usable)
