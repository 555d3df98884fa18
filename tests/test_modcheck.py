"""modcheck: hand-laid address spaces with stated findings; fast == exhaustive == a scalar walk."""

import argparse
import glob
import importlib.util
import json
import os
import random

import numpy as np
import pytest

from xenstructs import decode as D
from xenstructs.linux.modcheck import KINDS, check, exhaustive, fast
from xenstructs.paging import GEOMETRY, walk

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
_spec = importlib.util.spec_from_file_location("bench_modcheck", os.path.join(TOP, "bench", "modcheck.py"))
B = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(B)
P, RW, US, A, D_ = 1, 2, 4, 0x20, 0x40


def _groups(rep):
    return sorted((g.module, g.top_index, g.level, g.kind, tuple(p for p, _ in g.tasks), g.pages)
                  for g in rep.groups)


# -- hand-laid kernels, expected findings stated by hand -------------------------------------------

def test_2level_pde_missing_in_old_tasks():
    fk = B.FakeKernel("2level")
    fk.add_task(1, "init")
    fk.add_task(2, "kthreadd", kthread=True)
    fk.add_task(3, "old")
    fk.add_module("early", 2)                        # 0xf8000000: same PDE as nothing yet: new PT
    fk.add_task(4, "mid")
    fk.add_module("late", 3, gap_pages=1024)         # 0xf8403000: a new PDE (0x3e1)
    fk.add_task(5, "new")
    rep, info = check(fk.kernel())
    assert _groups(rep) == [("early", 0x3e0, "PDE", "missing", (1, 3), 2),
                            ("late", 0x3e1, "PDE", "missing", (1, 3, 4), 3)]
    g = rep.groups[1]
    assert g.entries == [0x3e1] and g.va_start == 0xf8403000 and g.va_end == 0xf8406000
    assert "PDE 0x3e1 missing in 3 task PGDs" in g.explanation and "vmalloc_sync_all()" in g.explanation
    assert info["shared_with_reference"] == [0, 2]
    rep, _ = check(fk.kernel(), modules=["late"], pid=4)
    assert _groups(rep) == [("late", 0x3e1, "PDE", "missing", (4,), 3)]
    rep, _ = check(fk.kernel(), method="exhaustive")
    assert len(rep.groups) == 2


def test_pae_unshared_pmd_stale_table_and_rights():
    fk = B.FakeKernel("pae")
    _, r1 = fk.add_task(1, "init")
    _, base = fk.add_module("m", 4)                   # 0xf8000000, PDPTE 3, PDE 0x1c0
    _, r2 = fk.add_task(2, "a")
    _, r3 = fk.add_task(3, "b")
    sp = fk.sp
    # task 2: a stale copy of the module's page table, PTE 1 another frame, PTE 2 not present
    tbl, idx = sp.walk_tables(r2, base)[1]
    pde = sp.entry(tbl, idx)
    pt = sp.alloc()
    sp.t.pages[pt][:] = sp.t.pages[pde & ~0xFFF & ((1 << 52) - 1)]
    sp.set(pt, 1, (sp.entry(pt, 1) & 0xFFF) | sp.alloc())
    sp.set(pt, 2, 0)
    sp.set(pt, 3, sp.entry(pt, 3) | A | D_)           # accessed/dirty only: not a finding
    sp.set(tbl, idx, pt | (pde & 0xFFF))
    # task 3: PDE without RW
    tbl, idx = sp.walk_tables(r3, base)[1]
    sp.set(tbl, idx, sp.entry(tbl, idx) & ~RW)
    rep, _ = check(fk.kernel())
    assert _groups(rep) == [("m", 3, "PDE", "different-rights", (3,), 4),
                            ("m", 3, "PDE", "missing", (1,), 4),
                            ("m", 3, "PTE", "different-frame", (2,), 1),
                            ("m", 3, "PTE", "missing", (2,), 1)]


def test_4level_shared_kernel_half_and_a_lost_pml4e():
    fk = B.FakeKernel("4level")
    fk.add_task(1, "init")
    _, r2 = fk.add_task(2, "x")
    fk.add_module("m", 3)
    fk.add_task(3, "y")
    assert check(fk.kernel())[0].ok                   # PML4E 511 shared by all: nothing to report
    fk.sp.set(r2, 511, 0)
    fk.sp.set(r2, 510, 0)                             # not covering any module page: irrelevant
    rep, _ = check(fk.kernel())
    assert _groups(rep) == [("m", 511, "PML4E", "missing", (2,), 3)]
    assert "corrupt" in rep.groups[0].explanation


def test_vmalloc_and_range():
    fk = B.FakeKernel("2level")
    fk.add_task(1, "old")
    fk.add_module("m", 2)
    va = 0xf8800000
    fk.add_vmap(va, va + 3 * 4096)                    # 2 mapped pages + guard page
    rep, info = check(fk.kernel(), vmalloc=True)
    assert info["vmalloc_areas"] == 1
    assert _groups(rep) == [("m", 0x3e0, "PDE", "missing", (1,), 2),
                            (f"vmalloc {va:#x}-{va + 0x3000:#x}", 0x3e2, "PDE", "missing", (1,), 2)]
    assert rep.unmapped_in_reference == {f"vmalloc {va:#x}-{va + 0x3000:#x}": 1}
    rep, _ = check(fk.kernel(), va_range=(va, va + 0x2000))
    assert _groups(rep) == [(f"range {va:#x}-{va + 0x2000:#x}", 0x3e2, "PDE", "missing", (1,), 2)]


def test_modcheck_command_status(tmp_path):
    from xenstructs.commands import COMMANDS
    fk = B.FakeKernel("2level")
    fk.add_task(1, "old")
    fk.add_module("m", 2)
    pf = tmp_path / "p.json"
    fk.profile().to_json(str(pf))
    a = argparse.Namespace(vmlinux=None, profile=str(pf), system_map=None, kaslr_offset=None, cr3=fk.ref,
                           mode="2level", cpu=0, efer=None, cr4=None, maxphyaddr=52, json=False, module=None,
                           range=None, vmalloc=False, task=None, exhaustive=False)
    cmd = COMMANDS["modcheck"]
    r = cmd.run(fk.sp.t, a)
    json.dumps(r)
    assert cmd.exit_status(r) == 1 and r["groups"][0]["task_pids"] == [1]
    assert "PDE 0x3e0 missing in 1 task PGD " in cmd.render(r, a)
    fk2 = B.FakeKernel("2level")
    fk2.add_module("m", 2)
    fk2.add_task(1, "new")
    pf2 = tmp_path / "p2.json"
    fk2.profile().to_json(str(pf2))
    a.profile, a.cr3 = str(pf2), fk2.ref
    r = cmd.run(fk2.sp.t, a)
    assert cmd.exit_status(r) == 0 and "alike" in cmd.render(r, a)


# -- fast == exhaustive == an independent scalar walk, on randomised spaces -----------------------

def _scalar(t, ref, root, vas):
    """Per page with walk() for the kind, entries read one by one for the level (the definition)."""
    esize, shifts, widths, _ = GEOMETRY[ref.mode]
    names = D.LEVELS[ref.mode]
    fm = D.frame_mask(ref.mode, ref.maxphyaddr)
    pg = B.Paging(ref.mode, root, ref.nxe, ref.maxphyaddr, ref.cr4)
    out = set()
    for va in vas:
        wr, wt = walk(t, ref, va), walk(t, pg, va)
        if wr.pa is None:
            continue
        if wt.pa is None:
            kind = "missing"
        elif wt.pa != wr.pa:
            kind = "different-frame"
        elif (wt.writable, wt.user, wt.nx) != (wr.writable, wr.user, wr.nx):
            kind = "different-rights"
        else:
            continue
        tt, tr = root, ref.root
        for li in range(len(shifts)):
            i = (va >> shifts[li]) & ((1 << widths[li]) - 1)
            try:
                te = t.read_entry(tt + i * esize, esize)
            except Exception:
                break
            re = t.read_entry(tr + i * esize, esize)
            mt, mr = te & ~0x60, re & ~0x60
            assert mt != mr, "a differing page under equal entries"
            large = te & 0x80 and (names[li] == "PD" or (names[li] == "PDPT" and esize == 8 and ref.mode != "pae"))
            if li < len(shifts) - 1 and te & 1 and re & 1 and not large and not (mt ^ mr) & ~fm:
                tt, tr = te & fm, re & fm
                continue
            break
        out.add((root, va, D.ENTRY_NAMES[names[li]], kind))
    return out


def _mutate(sp, rnd, roots, vas):
    """Random damage: drop, redirect, re-flag entries at random levels of random task directories."""
    nlev = len(sp.shifts)
    for _ in range(rnd.randint(5, 25)):
        r = rnd.choice(roots)
        va = rnd.choice(vas)
        tw = sp.walk_tables(r, va)
        li = rnd.randrange(len(tw))
        if rnd.random() < 0.7:                     # make the path private first (else the damage is shared)
            for lv in range(li):
                tbl, idx = sp.walk_tables(r, va)[lv]
                e = sp.entry(tbl, idx)
                if e & 1 and not e & 0x80:
                    new = sp.alloc()
                    sp.t.pages[new][:] = sp.t.pages[e & 0x000FFFFFFFFFF000]
                    sp.set(tbl, idx, new | (e & 0xFFF) | (e & (1 << 63)))
            tw = sp.walk_tables(r, va)
            li = min(li, len(tw) - 1)
        tbl, idx = tw[li]
        e = sp.entry(tbl, idx)
        op = rnd.choice(["drop", "copy", "rw", "nx", "ad", "frame", "us"])
        if op == "drop":
            sp.set(tbl, idx, 0)
        elif op == "copy" and li < nlev - 1 and e & 1:          # private copy of the next table
            new = sp.alloc()
            sp.t.pages[new][:] = sp.t.pages[e & 0x000FFFFFFFFFF000]
            sp.set(tbl, idx, new | (e & 0xFFF) | (e & (1 << 63)))
        elif op == "rw":
            sp.set(tbl, idx, e ^ RW)
        elif op == "us":
            sp.set(tbl, idx, e ^ US)
        elif op == "nx" and sp.esize == 8:
            sp.set(tbl, idx, e ^ (1 << 63))
        elif op == "ad":
            sp.set(tbl, idx, e | A | D_)
        elif op == "frame" and li == nlev - 1 and e & 1:
            sp.set(tbl, idx, (e & 0xFFF) | sp.alloc())


@pytest.mark.parametrize("mode", ["2level", "pae", "4level", "5level"])
@pytest.mark.parametrize("seed", range(6))
def test_fast_equals_exhaustive_randomised(mode, seed):
    rnd = random.Random(seed * 31 + len(mode))
    sp, ref, roots, vas, _ = B.build(mode, ntasks=12, npages=300, seed=seed, old=3)
    roots = list(roots)
    _mutate(sp, rnd, roots[1:], vas)
    pg = sp.paging(ref)
    # also pages nobody maps, and a root equal to the reference
    vas = vas + [vas[-1] + 0x10000, vas[0] - 0x400000]
    f = fast(sp.t, pg, roots + [ref], vas)
    e = exhaustive(sp.t, pg, roots + [ref], vas)
    want = set()
    for r in roots + [ref]:
        want |= _scalar(sp.t, pg, r, vas)
    assert f.as_set() == e.as_set() == want
    assert want or mode in ("4level", "5level")    # there, damage to a shared table hits init_mm too


def test_bench_space_expected():
    for mode in ("2level", "pae", "4level"):
        sp, ref, roots, vas, expected = B.build(mode, ntasks=40, npages=600, old=5)
        assert fast(sp.t, sp.paging(ref), roots, vas).as_set() == expected


# -- the synthetic cores with a mini vmlinux, when present -----------------------------------------

MOD_CORES = sorted(glob.glob(os.path.join(TOP, "cores", "mod-*.json")))


@pytest.mark.skipif(not MOD_CORES, reason="cores/mod-*.json not built yet")
@pytest.mark.parametrize("manifest", MOD_CORES, ids=os.path.basename)
def test_mod_cores(manifest):
    from xenstructs.linux.kernel import Kernel
    from xenstructs.linux.profile import Profile
    from xenstructs.linux.modules import for_each_module
    from xenstructs.linux.tasks import for_each_task
    from xenstructs.targets import open_dump
    man = json.load(open(manifest))
    prof = Profile.from_dwarf(os.path.join(TOP, "cores", man["vmlinux"]))
    for key, off in (man.get("offsets") or {}).items():      # gdb ptype/o: the truth
        if key in prof.offsets:
            assert prof.offsets[key] == off, key
    t = open_dump(os.path.join(TOP, "cores", man["core"]))
    k = Kernel(t, prof)
    assert k.paging.root == (man.get("reference_pgd") or {}).get("pa", k.paging.root)
    ts = for_each_task(k)
    assert [x.pid for x in ts] == [0] + man["task_walk"]["next"]
    if man.get("list_errors"):
        err = [e for e in man["list_errors"] if e["direction"] == "next"][0]
        assert ts.error is not None and ts.error.reason == "bad-prev"
        assert ts.error.address == err["task_va"] + prof.offsets["task_struct.tasks"]
        assert ts.error.value == err["found"]
        return
    assert ts.error is None
    by_pid = {x.pid: x for x in ts}
    for mt in man["tasks"]:
        x = by_pid[mt["pid"]]
        assert (x.comm, x.mm, x.active_mm) == (mt["comm"], mt["mm"] or 0, mt["active_mm"] or 0)
        assert x.root == mt["pgd_pa"]
    # modcheck on the manifest's module regions (independent of the modules list)
    regions = [(m["name"], [p for r in m["regions"] for p in range(r["base"] & ~0xFFF, r["base"] + r["size"], 4096)])
               for m in man["modules"]]
    rep, _ = check(k, regions=regions, tasks=ts)
    rep_ex, _ = check(k, regions=regions, tasks=ts, method="exhaustive")
    assert _groups(rep) == _groups(rep_ex)
    got = sorted((g.module, g.level, g.kind, g.top_index, tuple(sorted(p for p, _ in g.tasks)), g.pages)
                 for g in rep.groups)
    want = sorted((f["module"], f["level"], f["kind"], f["top_index"], tuple(sorted(f["task_pids"])), f["pages"])
                  for f in man["findings"])
    assert got == want
    from xenstructs.linux.vmalloc import for_each_vmap_area
    va = for_each_vmap_area(k)
    assert va.error is None and [(a.va_start, a.va_end) for a in va] == \
        [(v["va_start"], v["va_end"]) for v in man["vmalloc"]]
    # the modules list
    ms = for_each_module(k)
    assert ms.error is None
    assert [m.name for m in ms] == man["modules_list_order"]
    want_regions = {m["name"]: sorted((r["base"], r["size"]) for r in m["regions"]) for m in man["modules"]}
    assert {m.name: sorted((r.va, r.size) for r in m.regions) for m in ms} == want_regions
