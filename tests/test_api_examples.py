"""Every function of the scripting API (xenstructs/api.py) has a runnable example,
docs/examples/NAME.py, on a bundled core; each runs here and what it computed is checked against
the core's manifest (cores/build.py's truth, written when the core was laid out), never against
xenscope's own output.
"""
import contextlib
import io
import json
import os
import runpy

import numpy as np
import pytest

from xenstructs import api
from xenstructs.decode import EFER_NXE

from conftest import CORES, TOP

EXAMPLES = os.path.join(TOP, "docs", "examples")
INVALID = (1 << 64) - 1


def manifest(core):
    with open(os.path.join(CORES, core.replace(".core", ".json"))) as f:
        return json.load(f)


def run_example(name, monkeypatch):
    """Run docs/examples/NAME.py from the checkout's top (as docs/generate.py does): its globals."""
    monkeypatch.chdir(TOP)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        names = runpy.run_path(os.path.join(EXAMPLES, f"{name}.py"), run_name="__main__")
    assert out.getvalue().strip(), f"{name}.py printed nothing"
    return names


def page_of(pages, va):
    """The manifest page holding ``va``, or None."""
    return next((p for p in pages if p["va"] <= va < p["va"] + p["size"]), None)


# --------------------------------------------------------------------------------------------
# One check per function, on what its example left in its globals
# --------------------------------------------------------------------------------------------

def check_open_dump(g):
    man = manifest("x86_64-4level.core")
    assert g["target"].facts["machine"] == man["machine"]
    assert [list(r) for r in g["memory"]] == man["memory"]
    assert g["cpu"].regs["cr3"] == man["registers"]["cr3"] and g["cpu"].regs["cr4"] == man["registers"]["cr4"]
    assert len(g["first_bytes"]) == 16


def check_resolve(g):
    man = manifest("x86_64-4level.core")
    regs = man["registers"]
    assert (g["paging"].mode, g["context"].cr3) == (man["mode"], regs["cr3"])
    assert g["paging"].root == regs["cr3"] & ~0xFFF
    assert g["paging"].nxe == bool(regs["efer"] & EFER_NXE)


def check_walk(g):
    truth = {w["va"]: w for w in manifest("x86_64-4level.core")["walks"]}
    for va, w in g["walks"].items():
        want = truth[va]
        assert (w.pa, w.page_size, w.stop) == (want["pa"], want["page_size"], want["stop"]), hex(va)
        if w.ok:
            assert (w.writable, w.user, w.nx) == (want["writable"], want["user"], want["nx"]), hex(va)
            assert w.levels[-1].name in ("PTE", "PDE", "PDPTE")
        else:
            assert w.stop_level == want["level"] and w.levels[-1].name == want["level"], hex(va)
    assert {w.stop for w in g["walks"].values()} == {None, "not-present", "not-in-dump"}


def check_translate_many(g):
    pages = manifest("x86_64-4level.core")["pages"]
    tr = g["translations"]
    assert tr.va.tolist() == g["addresses"].tolist()
    for i, va in enumerate(tr.va.tolist()):
        page = page_of(pages, va)
        assert bool(tr.ok[i]) == (page is not None), hex(va)
        if page is not None:
            assert int(tr.pa[i]) == page["pa"] + va - page["va"] and int(tr.page_size[i]) == page["size"], hex(va)
            assert (bool(tr.rw[i]), bool(tr.us[i]), bool(tr.nx[i])) == (page["writable"], page["user"], page["nx"])
    assert 0 < int(tr.ok.sum()) < len(tr)


def check_enumerate_mappings(g):
    man = manifest("x86_64-4level.core")
    m = g["mappings"]
    got = [{"va": va, "pa": pa, "size": size, "writable": rw, "user": us, "nx": nx} for va, pa, size, rw, us, nx in
           zip(m.va.tolist(), m.pa.tolist(), m.size.tolist(), m.rw.tolist(), m.us.tolist(), m.nx.tolist())]
    assert got == man["pages"]
    assert sorted((p[0], p[1], p[2], p[3]) for p in m.problems) == \
        sorted((p["va_start"], p["va_end"], p["level"], p["reason"]) for p in man["problems"])


def check_coalesce(g):
    want = manifest("x86_64-4level.core")["ranges"]
    got = [{"va_start": r.va_start, "va_end": r.va_end, "pa_start": r.pa_start, "writable": r.writable,
            "user": r.user, "nx": r.nx} for r in g["ranges"]]
    assert got == [{k: r[k] for k in ("va_start", "va_end", "pa_start", "writable", "user", "nx")} for r in want]


def check_read_virt(g):
    man = manifest("x86_64-4level.core")
    assert g["data"].hex() == next(d["hex"] for d in man["data"] if d["va"] == 0x600000)
    hole = next(w for w in man["walks"] if w["va"] == 0xFFFFC90000600000)
    assert hole["stop"] == "not-in-dump" and "not in the dump" in g["error"] and hole["level"] in g["error"]


def check_open_host(g):
    man = manifest("xen-4.17-host.core")
    host = g["host"]
    assert host.version == man["xen_version"] and host.max_page == man["max_page"]
    assert host.layout.name == f"{man['layout']['type']}/{man['layout']['count']}"
    assert host.frametable == man["frametable_virt_start"]
    assert sorted((d.id, d.name, d.struct_va) for d in g["domains"]) == \
        sorted((d["id"], d["name"], d["struct_va"]) for d in man["domains"])


def check_page_info(g):
    frames = {f["mfn"]: f for f in manifest("xen-4.17-host.core")["frames"]}
    for mfn, got in g["frames"].items():
        want = frames[mfn]
        assert (got["count_info"], got["type_info"], got["domain_raw"]) == \
            (want["count_info"], want["type_info"], want["domain_raw"]), hex(mfn)
        assert (got["count"]["state"], got["count"]["count"]) == (want["state"], want["count"]), hex(mfn)
        assert (got["type"]["type"], got["type"]["count"]) == (want["type"], want["type_count"]), hex(mfn)
        assert ("pinned" in got["type"]["flags"], "validated" in got["type"]["flags"]) == \
            (want["pinned"], want["validated"]), hex(mfn)
        assert got["owner"] == want["owner"] and got["m2p"] == (None if want["m2p"] == INVALID else want["m2p"])
    assert {f["type"]["type"] for f in g["frames"].values()} >= {"writable", "l4", "l2"}


def check_p2m_check(g):
    truth = manifest("xen-4.17-host.core")["p2m"]
    (domain,) = g["report"]["domains"]
    assert domain["domain"] == truth["domain"] and domain["pfns"] == truth["pfn_count"]
    got = sorted((kind, f["pfn"], INVALID if f["mfn"] is None else f["mfn"])
                 for kind, findings in domain["findings"].items() for f in findings)
    assert got == sorted((f["class"], f["pfn"], f["mfn"]) for f in truth["faults"])
    (foreign,) = domain["findings"]["foreign"]
    assert (foreign["pfn"], foreign["mfn"], foreign["owner_id"]) == \
        tuple(truth["foreign"][0][k] for k in ("pfn", "mfn", "owner"))


def check_open_kernel(g):
    man = manifest("mod-x86_64.core")
    kernel, facts = g["kernel"], g["facts"]
    assert facts["kernel_version"] == man["kernel_version"] and facts["mode"] == man["mode"]
    assert facts["reference_root"] == man["reference_pgd"]["pa"] and facts["init_pgd"] == man["reference_pgd"]["va"]
    for name in ("init_task", "init_mm", "init_top_pgt", "modules", "linux_banner", "vmap_area_list"):
        assert kernel.symbol(name) == man["symbols"][name], name
    assert g["init_task"] == man["symbols"]["init_task"]


def check_for_each_task(g):
    man = manifest("mod-x86_64.core")
    got = [(t.pid, t.comm, t.address, t.pgd, t.root) for t in g["tasks"]]
    assert got == [(t["pid"], t["comm"], t["task_va"], t["pgd_va"], t["pgd_pa"]) for t in man["tasks"]]
    assert g["tasks"].error is None and not man["list_errors"]


def check_for_each_module(g):
    man = manifest("mod-x86_64.core")
    assert [m.name for m in g["modules"]] == man["modules_list_order"]
    want = {m["name"]: m for m in man["modules"]}
    for m in g["modules"]:
        truth = want[m.name]
        assert m.address == truth["module_va"] and len(m.pages) == truth["pages"], m.name
        assert sorted((r.name, r.va, r.size) for r in m.regions) == \
            sorted((r["kind"], r["base"], r["size"]) for r in truth["regions"]), m.name


def check_check_dump(g):
    man = manifest("x86_64-4level.core")
    report, paging = g["report"], g["paging"]
    assert report.kind == "linux" and report.status == "findings" and paging.status == "findings"
    assert sorted((f["va_start"], f["va_end"], f["level"], f["kind"]) for f in paging.findings) == \
        sorted((p["va_start"], p["va_end"], p["level"], p["reason"]) for p in man["problems"])
    assert {c.name: c.status for c in report.checks}["xen-frames"] == "n.a."       # a Linux dump


CHECKS = {name[len("check_"):]: fn for name, fn in globals().items() if name.startswith("check_")}


def test_every_function_has_an_example_and_a_check():
    examples = sorted(f[:-3] for f in os.listdir(EXAMPLES) if f.endswith(".py"))
    assert examples == sorted(api.FUNCTIONS) == sorted(CHECKS)
    assert all(callable(getattr(api, name)) and getattr(api, name).__doc__ for name in api.FUNCTIONS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_example(name, monkeypatch):
    CHECKS[name](run_example(name, monkeypatch))


def test_the_checks_can_fail(monkeypatch):
    """A wrong answer in an example's globals is caught (the checks compare, not just run)."""
    g = run_example("walk", monkeypatch)
    w = next(iter(g["walks"].values()))
    w.pa += 0x1000
    with pytest.raises(AssertionError):
        check_walk(g)
    g = run_example("translate_many", monkeypatch)
    g["translations"].pa[np.flatnonzero(g["translations"].ok)[0]] ^= np.uint64(0x1000)
    with pytest.raises(AssertionError):
        check_translate_many(g)
