"""Kernel objects: profiles from gcc -g binaries, symbols, list walks, KASLR, the kernel commands."""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess

import pytest

from xenstructs.errors import XenscopeError
from xenstructs.formats.vmcoreinfo import parse_vmcoreinfo
from xenstructs.linux import ListError, list_for_each
from xenstructs.linux.modules import for_each_module, module_regions
from xenstructs.linux.profile import Profile, Symbols
from xenstructs.linux.tasks import for_each_task
from xenstructs.linux.vmalloc import for_each_vmap_area

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
_spec = importlib.util.spec_from_file_location("bench_modcheck", os.path.join(TOP, "bench", "modcheck.py"))
B = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(B)

SRC = os.path.join(HERE, "data", "linux_structs.c")
GCC = shutil.which("gcc")


@pytest.fixture(scope="module")
def gcc_binaries(tmp_path_factory):
    if GCC is None:
        pytest.skip("no gcc")
    d = tmp_path_factory.mktemp("gcc")
    out = {}
    for dwarf in (4, 5):
        for var in (0, 1, 2):
            exe = str(d / f"k{dwarf}_{var}")
            subprocess.run([GCC, f"-gdwarf-{dwarf}", "-O0", f"-DMODVAR={var}", "-o", exe, SRC], check=True)
            truth = {}
            for line in subprocess.run([exe], check=True, capture_output=True, text=True).stdout.splitlines():
                k, v = line.split()
                truth[k] = int(v)
            out[(dwarf, var)] = (exe, truth)
    return out


@pytest.mark.parametrize("dwarf", [4, 5])
@pytest.mark.parametrize("var,variant", [(0, "old"), (1, "layout"), (2, "mem")])
def test_profile_from_dwarf_matches_offsetof(gcc_binaries, dwarf, var, variant, tmp_path):
    exe, truth = gcc_binaries[(dwarf, var)]
    p = Profile.from_dwarf(exe)
    for k, v in truth.items():                       # offsetof() printed by the same program
        assert p.offsets[k] == v, k
    assert p.module_variant == variant
    assert p.sizes["task_struct.comm"] == 16 and p.sizes["module.name"] == 56
    if variant == "mem":
        assert p.sizes["module.mem.count"] == 7 and p.sizes["module_memory"] == 24
    assert p.meta["dwarf_version"] == dwarf
    assert p.meta["kernel_version"] == "6.4.0-gcctest" and len(p.meta["build_id"]) == 40
    for s in ("init_task", "init_mm", "modules", "vmap_area_list", "swapper_pg_dir", "linux_banner"):
        assert s in p.symbols
    f = tmp_path / "p.json"
    p.to_json(str(f))
    q = Profile.from_json(str(f))
    assert (q.offsets, q.sizes, q.symbols) == (p.offsets, p.sizes, p.symbols)


def test_profile_from_callable_and_errors(tmp_path):
    offs = {("task_struct", "pid"): 8, ("module", "mem"): 40, ("module_memory", "base"): 0,
            ("module_memory", "size"): 8}
    sizes = {"module_memory": 24, "module.mem": 168}
    p = Profile.from_callable(lambda s, m: offs[(s, m)], sizes.get, {"init_task": 0x1000}.get)
    assert p.offsets["task_struct.pid"] == 8 and p.module_variant == "mem"
    assert p.sizes["module.mem.count"] == 7 and p.symbols == {"init_task": 0x1000}
    with pytest.raises(XenscopeError, match="task_struct.comm"):
        p.offset("task_struct.comm")
    bad = tmp_path / "bad.json"
    bad.write_text('{"offsets": {"task_struct.pid": -1}}')
    with pytest.raises(XenscopeError, match="non-negative"):
        Profile.from_json(str(bad))
    with pytest.raises(XenscopeError, match="no DWARF|cannot read"):
        Profile.from_dwarf("/bin/true")


def test_symbols_system_map_and_kallsyms(tmp_path):
    m = tmp_path / "System.map"
    m.write_text("ffffffff81000000 T _text\nffffffff81000000 T _stext\nffffffff82a0a000 D init_top_pgt\n"
                 "junk line\n")
    s = Symbols.from_file(str(m))
    assert not s.relocated and s.get("init_top_pgt") == 0xffffffff82a0a000
    k = tmp_path / "kallsyms"
    k.write_text("ffffffff9e000000 T _stext\nffffffffc0a00000 t foo_init\t[foo]\n"
                 "ffffffff9f000000 D init_task\n")
    s = Symbols.from_file(str(k))
    assert s.relocated and s.get("init_task") == 0xffffffff9f000000 and "foo_init" not in s
    with pytest.raises(XenscopeError):
        Symbols.from_file(str(tmp_path / "nope"))


def _fk(mode="4level", kaslr=0, ntasks=5):
    fk = B.FakeKernel(mode, kaslr)
    for pid in range(1, ntasks + 1):
        fk.add_task(pid, f"t{pid}", kthread=(pid == 2))
    return fk


@pytest.mark.parametrize("mode", ["2level", "pae", "4level"])
def test_tasks_modules_vmalloc(mode):
    fk = _fk(mode)
    fk.add_module("alpha", 3)
    fk.add_module("beta", 2)
    base = B.MODULE_BASE[mode] + (64 << 20)
    fk.add_vmap(base, base + 3 * 4096)
    k = fk.kernel()
    ts = for_each_task(k)
    assert ts.error is None
    assert [(t.pid, t.comm) for t in ts] == [(0, "swapper/0")] + [(i, f"t{i}") for i in range(1, 6)]
    kt = ts[2]
    assert kt.mm == 0 and kt.pgd_from == "active_mm" and kt.root == fk.ref
    assert all(t.root is not None and t.root != fk.ref for t in ts if t.mm)
    ms = for_each_module(k)
    assert [(m.name, len(m.pages)) for m in ms] == [("alpha", 3), ("beta", 2)]
    assert ms[0].regions[0].va == B.MODULE_BASE[mode]
    vs = for_each_vmap_area(k)
    assert [(a.va_start, a.va_end) for a in vs] == [(base, base + 3 * 4096)]


def test_list_loop_corrupt_and_bounds():
    fk = _fk()
    k = fk.kernel()
    off = fk.offsets["task_struct.tasks"]
    nodes = [fk.tasks[p] + off for p in range(1, 6)]
    # a loop: t4.next -> t2, met before: reported at t4
    fk.write_ptr(nodes[3], nodes[1])
    ts = for_each_task(fk.kernel())
    assert [t.pid for t in ts] == [0, 1, 2, 3, 4]
    assert ts.error.reason == "loop" and ts.error.address == nodes[3] and ts.error.value == nodes[1]
    # next -> readable memory whose prev does not point back (a stray pointer)
    stray = fk.alloc(64)
    fk.write_ptr(nodes[3], stray + 16)
    ts = for_each_task(fk.kernel())
    assert ts.error.reason == "bad-prev" and ts.error.address == nodes[3] and ts.error.value == stray + 16
    # an unmapped pointer
    fk2 = _fk()
    fk2.write_ptr(fk2.tasks[3] + off, 0xffffffffdead0000)
    ts = for_each_task(fk2.kernel())
    assert [t.pid for t in ts] == [0, 1, 2, 3] and ts.error.reason == "unreadable"
    assert ts.error.address == fk2.tasks[3] + off and ts.error.value == 0xffffffffdead0000
    with pytest.raises(ListError, match="list broken at"):
        for_each_task(fk2.kernel(), strict=True)
    # NULL, and the length bound
    fk3 = _fk()
    fk3.write_ptr(fk3.tasks[1] + off, 0)
    assert for_each_task(fk3.kernel()).error.reason == "null"
    k4 = _fk().kernel()
    w = list_for_each(k4, k4.symbol("init_task") + off, max_entries=3)
    assert len(w) == 3 and w.error.reason == "too-long"


def test_loop_without_bad_prev():
    fk = _fk()
    off = fk.offsets["task_struct.tasks"]
    n = [fk.tasks[p] + off for p in range(1, 6)]
    # t5 -> t5: a node pointing to itself
    fk.write_ptr(n[4], n[4])
    ts = for_each_task(fk.kernel())
    assert ts.error.reason == "loop" and ts.error.address == n[4] and len(ts) == 6


@pytest.mark.parametrize("mode", ["2level", "4level"])
def test_kaslr(mode):
    off = 0x6000000 if mode == "4level" else 0x400000 * 2
    fk = _fk(mode, kaslr=off)
    k = fk.kernel()                                       # found via the banner
    assert k.kaslr_offset == off and "banner" in k.sources["kaslr"]
    assert [t.pid for t in for_each_task(k)] == list(range(6))
    fk.sp.t.facts["vmcoreinfo"] = parse_vmcoreinfo(f"KERNELOFFSET={off:x}\n")
    k = fk.kernel()
    assert k.kaslr_offset == off and k.sources["kaslr"] == "VMCOREINFO KERNELOFFSET"
    # runtime symbols (kallsyms): nothing to add
    syms = Symbols({n: a + off for n, a in fk.symbols.items()}, True, "kallsyms")
    del fk.sp.t.facts["vmcoreinfo"]
    k = fk.kernel(profile=fk.profile(with_symbols=False), symbols=syms)
    assert k.symbol("init_task") == fk.init_task and k.kaslr_offset == 0


def test_module_region_variants():
    fk = _fk()
    m = fk.alloc(512)
    p = fk.profile()
    # 6.4+: mem[7] of {base, size}
    p.offsets.update({"module.mem": 128, "module_memory.base": 0, "module_memory.size": 8})
    p.sizes.update({"module_memory": 24, "module.mem.count": 7})
    fk.write_ptr(m + 128, 0xffffffffa0000000)
    fk.write(m + 136, (0x3000).to_bytes(4, "little"))
    fk.write_ptr(m + 128 + 2 * 24, 0xffffffffa0010000)
    fk.write(m + 128 + 2 * 24 + 8, (0x1000).to_bytes(4, "little"))
    k = fk.kernel(profile=p)
    assert [(r.name, r.va, r.size) for r in module_regions(k, m)] == \
        [("text", 0xffffffffa0000000, 0x3000), ("rodata", 0xffffffffa0010000, 0x1000)]
    # <= 4.4: module_core/core_size
    q = fk.profile()
    for key in ("module.core_layout", "module.init_layout"):
        del q.offsets[key]
    q.offsets.update({"module.module_core": 200, "module.core_size": 208, "module.module_init": 216,
                      "module.init_size": 224})
    fk.write_ptr(m + 200, 0xffffffffa0020000)
    fk.write(m + 208, (0x2000).to_bytes(4, "little"))
    k = fk.kernel(profile=q)
    assert q.module_variant == "old"
    assert [(r.name, r.va, r.size) for r in module_regions(k, m)] == [("core", 0xffffffffa0020000, 0x2000)]


def _args(**kw):
    base = dict(vmlinux=None, profile=None, system_map=None, kaslr_offset=None, cr3=None, mode=None, cpu=0,
                efer=None, cr4=None, maxphyaddr=52, json=True)
    base.update(kw)
    return argparse.Namespace(**base)


def test_commands_tasks_modules_profile(tmp_path, gcc_binaries):
    from xenstructs import cli
    from xenstructs.commands import COMMANDS
    fk = _fk("pae")
    fk.add_module("alpha", 2)
    pf = tmp_path / "fake.json"
    fk.profile().to_json(str(pf))
    a = _args(profile=str(pf), cr3=fk.ref, mode="pae")
    r = COMMANDS["tasks"].run(fk.sp.t, a)
    assert [t["pid"] for t in r["tasks"]] == list(range(6)) and r["tasks"][1]["cr3"] is not None
    json.dumps(r)
    assert "t3" in COMMANDS["tasks"].render(r, a)
    r = COMMANDS["modules"].run(fk.sp.t, a)
    assert r["modules"][0]["name"] == "alpha" and r["modules"][0]["pages"] == 2
    assert "alpha" in COMMANDS["modules"].render(r, a)
    exe, truth = gcc_binaries[(5, 1)]
    out = tmp_path / "prof.json"
    assert cli.run(["profile", exe, "-o", str(out)], out=open(os.devnull, "w")) == 0
    assert Profile.from_json(str(out)).offsets["task_struct.pid"] == truth["task_struct.pid"]
