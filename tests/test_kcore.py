"""``/proc/kcore`` targets on this machine: its own kernel where it has /proc/kcore, and a kcore-shaped
file made from a bundled core (the reader's parsing, judged by the builder's manifest).

The running-kernel check proper (walks of /proc/kallsyms symbols against kcore's own bytes, QEMU's
gva2gpa, tasks, dmesg, an unprivileged user) runs in a real Debian guest:
tests/realsys/test_live_kcore.py.
"""
import gzip
import json
import os
import struct
import subprocess

import pytest

from conftest import CORES, TOP
from elfbytes import EM_X86_64, note, prstatus64
from gdbutil import run_cli, venv_python
from xenstructs.context import resolve
from xenstructs.paging import walk
from xenstructs.targets import open_dump
from xenstructs.targets.kcore import KcoreTarget

DIRECT_MAP = 0xffff888000000000
NO_PADDR = (1 << 64) - 1


def kernel_config():
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            return f.read()
    except OSError:
        return None


def test_this_machines_kernel():
    """Where /proc/kcore exists (and we are root): every sampled kallsyms symbol's bytes through
    xenscope's walk equal kcore's at the same VA. Where it does not, the one line says why, and the
    kernel's own configuration agrees."""
    if os.path.exists("/proc/kcore"):
        assert os.geteuid() == 0, "this check reads /proc/kcore: run the tests as root"
        r = subprocess.run([venv_python(), os.path.join(TOP, "tests", "kcorecheck.py")], capture_output=True,
                           text=True, env=dict(os.environ, PYTHONPATH=TOP), timeout=600)
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)["symbols"]
        assert rows and all(x["walk_pa"] is not None and x["via_walk"] == x["kcore"] for x in rows)
        return
    r = run_cli("info", "/proc/kcore")
    assert r.returncode == 2 and r.stdout == "", r.output
    assert r.stderr == ("xenscope info: /proc/kcore does not exist: this kernel is built without "
                        "CONFIG_PROC_KCORE, so its memory cannot be read live (take a dump instead)\n"), r.stderr
    config = kernel_config()
    if config is not None:                     # the kernel says so itself
        assert "# CONFIG_PROC_KCORE is not set" in config


def kcore_shaped(path, core="x86_64-4level"):
    """A file laid out as /proc/kcore is: notes (an empty NT_PRSTATUS, VMCOREINFO), one PT_LOAD per
    RAM range at its direct-map address with its physical address, and a vmalloc segment without
    one (p_paddr -1), from the bundled core's memory."""
    manifest = json.load(open(os.path.join(CORES, f"{core}.json")))
    vmcoreinfo = "".join(f"{k}={v}\n" for k, v in manifest["vmcoreinfo"].items()).encode()
    notes = note("CORE", 1, prstatus64({})) + note("VMCOREINFO", 0, vmcoreinfo)
    source = open_dump(os.path.join(CORES, f"{core}.core"))
    ranges = [(s, source.read_phys(s, e - s)) for s, e in manifest["memory"]]
    phdrs = [(4, 0, 0, 0, len(notes), len(notes), 0, 4),
             (1, 0, 0xffffc90000000000, NO_PADDR, 0, 1 << 30, 7, 4096)]
    phdrs += [(1, 0, DIRECT_MAP + pa, pa, len(data), len(data), 7, 4096) for pa, data in ranges]
    offset = 64 + 56 * len(phdrs)
    body = bytearray(notes)
    fixed = []
    for p in phdrs:
        if p[0] == 4:
            fixed.append((4, offset) + p[2:])
        elif p[4]:
            data = next(d for pa, d in ranges if pa == p[3])
            fixed.append((1, offset + len(body)) + p[2:])
            body += data
        else:
            fixed.append(p)
    head = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8 + struct.pack(
        "<HHIQQQIHHHHHH", 4, EM_X86_64, 1, 0, 64, 0, 0, 64, 56, len(phdrs), 64, 0, 0)
    table = b"".join(struct.pack("<IIQQQQQQ", t, 7, off, va, pa, filesz, memsz, align)
                     for t, off, va, pa, filesz, memsz, _, align in fixed)
    with open(path, "wb") as f:
        f.write(head + table + bytes(body))
    return manifest


@pytest.fixture
def shaped(tmp_path):
    path = str(tmp_path / "kcore")
    manifest = kcore_shaped(path)
    system = {name: str(tmp_path / f"none-{name}") for name in ("kallsyms", "btf", "hypervisor", "vmcoreinfo")}
    target = KcoreTarget(path, system=system)
    yield target, manifest
    target.close()


def test_kcore_shaped_file_walks_as_the_manifest_says(shaped):
    target, manifest = shaped
    ctx = resolve(target)
    assert ctx.cr3 == manifest["registers"]["cr3"] & ~0xfff and "init_top_pgt" in ctx.sources["cr3"]
    assert target.cpus() and all(not c.regs for c in target.cpus())     # kcore's prstatus is a placeholder
    assert target.phys_ranges() == [tuple(r) for r in manifest["memory"]]
    for w in manifest["walks"]:
        got = walk(target, ctx.paging, w["va"])
        assert (got.pa, got.stop) == (w["pa"], w["stop"]), w
    pa, size = manifest["memory"][1][0], 64
    assert target.read_kcore_virt(DIRECT_MAP + pa, size) == target.read_phys(pa, size)
    assert [s[2] for s in target.segments()].count(None) == 1


def test_kcore_shaped_file_notes_say_what_is_missing(shaped):
    target, _ = shaped
    notes = target.info_notes()
    assert notes[0].startswith("read-only: ") and "O_RDONLY" in notes[0]
    assert any(n.startswith("symbols: VMCOREINFO only (") and "cannot read" in n for n in notes), notes
    assert any(n.startswith("types: no ") for n in notes), notes


def test_pv_domain_without_its_p2m_refuses_walks_and_says_why(tmp_path):
    path = str(tmp_path / "kcore")
    kcore_shaped(path)
    for name, text in (("hypervisor", "xen\n"), ("guest_type", "PV\n"), ("capabilities", "control_d\n")):
        (tmp_path / name).write_text(text)
    system = {name: str(tmp_path / name) for name in ("hypervisor", "guest_type", "capabilities")}
    system.update(kallsyms=str(tmp_path / "none"), btf=str(tmp_path / "none"))
    target = KcoreTarget(path, system=system)
    try:
        with pytest.raises(Exception) as e:
            resolve(target)
        assert "page tables cannot be walked: a Xen PV domain" in str(e.value)
        assert "the kernel's P2M could not be read" in str(e.value) and "(cannot read " in str(e.value)
        notes = "\n".join(target.info_notes())
        assert "Xen PV guest (dom0)" in notes and "P2M could not be read: walks are refused" in notes
        assert "Xen's M2P: no kcore segment; p2m-check maps it read-only through privcmd" in notes
    finally:
        target.close()



def test_machine_view_inverts_the_p2m_and_reads_through_it():
    """kcore_pv.MachineView over a P2M laid out by hand (pfn -> mfn, with identity, foreign and
    invalid entries): machine reads land on the pseudo-physical page the P2M names."""
    import numpy as np
    from xenstructs.errors import NotInDump
    from xenstructs.targets.kcore_pv import MachineView
    p2m = [0x500, 0x501, (1 << 64) - 1, 0x9000 | (1 << 62), 0x777 | (1 << 63), 0x300, 0x502]
    view = MachineView.from_p2m(np.array(p2m, dtype=np.uint64), 0xffffc90000000000)
    assert [view.pfn(m) for m in (0x500, 0x501, 0x502, 0x300, 0x9000, 0x777, 0x503)] == [0, 1, 6, 5, None, None, None]
    assert [view.mfn(p) for p in range(8)] == [0x500, 0x501, None, None, None, 0x300, 0x502, None]
    assert view.machine_ranges() == [(0x300000, 0x301000), (0x500000, 0x503000)]
    pages = {p << 12: bytes([p]) * 4096 for p in range(7)}
    got = view.read(lambda pa, n: pages[pa & ~0xfff][pa & 0xfff:(pa & 0xfff) + n], 0x500ffe, 4)
    assert got == b"\0\0\1\1"                       # the end of pfn 0, the start of pfn 1
    with pytest.raises(NotInDump):
        view.read(lambda pa, n: b"", 0x777000, 8)


def test_hidden_kallsyms_are_said(tmp_path):
    """/proc/kallsyms with every address zeroed (kptr_restrict, or not root): said in one line."""
    path = str(tmp_path / "kcore")
    kcore_shaped(path)
    (tmp_path / "kallsyms").write_text("0000000000000000 T _stext\n0000000000000000 D jiffies\n")
    (tmp_path / "kptr_restrict").write_text("2\n")
    target = KcoreTarget(path, system={"kallsyms": str(tmp_path / "kallsyms"), "btf": str(tmp_path / "none"),
                                       "kptr_restrict": str(tmp_path / "kptr_restrict"),
                                       "hypervisor": str(tmp_path / "none")})
    try:
        with pytest.raises(Exception) as e:
            target.own_kallsyms()
        assert str(e.value).startswith(f"{tmp_path}/kallsyms hides every address (kptr_restrict=2"), str(e.value)
        assert any(n.startswith("symbols: VMCOREINFO only (") and "kptr_restrict=2" in n for n in target.info_notes())
        assert target.symbol("init_top_pgt") == 0xffffffff82200000        # VMCOREINFO still names it
    finally:
        target.close()
