"""The library and the CLI against every bundled synthetic core's manifest (the builder's truth).

The builder (cores/builder/) lays out tables from its own intent and never imports xenstructs;
its manifest lists every page the CPU can use, the expected walks and the enumeration problems.
"""
import json
import os
import subprocess
import sys

import pytest

from xenstructs.context import resolve
from xenstructs.paging import coalesce, enumerate_mappings, read_virt, walk
from xenstructs.targets import open_dump

from conftest import CORES, MANIFESTS, TOP


def load(name):
    with open(os.path.join(CORES, name)) as f:
        return json.load(f)


def cli(*args):
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", *args], capture_output=True, text=True,
                       cwd=TOP, timeout=120)
    return r


@pytest.fixture(scope="module", params=MANIFESTS)
def core(request):
    man = load(request.param)
    t = open_dump(os.path.join(CORES, man["core"]))
    yield man, t
    t.close()


def test_context_matches_manifest(core):
    man, t = core
    ctx = resolve(t)
    assert ctx.paging.mode == man["mode"]
    assert ctx.paging.root == man["registers"]["cr3"] & ~0xFFF & ((1 << 52) - 1) or \
        man["mode"] == "pae" and ctx.paging.root == man["registers"]["cr3"] & 0xFFFFFFE0
    assert [list(r) for r in t.phys_ranges()] == man["memory"]


def test_every_page_matches(core):
    man, t = core
    m = enumerate_mappings(t, resolve(t).paging)
    got = [{"va": va, "pa": pa, "size": sz, "writable": w, "user": u, "nx": x}
           for va, pa, sz, w, u, x in zip(m.va.tolist(), m.pa.tolist(), m.size.tolist(),
                                          m.rw.tolist(), m.us.tolist(), m.nx.tolist())]
    assert got == man["pages"]


def test_ranges_match(core):
    man, t = core
    m = enumerate_mappings(t, resolve(t).paging)
    got = [{"va_start": r.va_start, "va_end": r.va_end, "pa_start": r.pa_start, "writable": r.writable,
            "user": r.user, "nx": r.nx} for r in coalesce(m)]
    want = [{k: r[k] for k in ("va_start", "va_end", "pa_start", "writable", "user", "nx")}
            for r in man["ranges"]]
    assert got == want


def test_problems_match(core):
    man, t = core
    m = enumerate_mappings(t, resolve(t).paging)
    got = [{"va_start": a, "va_end": b, "level": lvl, "reason": why} for a, b, lvl, why, _ in m.problems]
    want = sorted(({k: p[k] for k in ("va_start", "va_end", "level", "reason")} for p in man["problems"]),
                  key=lambda p: p["va_start"])
    assert got == want


def test_walks_match(core):
    man, t = core
    pg = resolve(t).paging
    for w in man["walks"]:
        res = walk(t, pg, w["va"])
        assert res.pa == w["pa"], w
        assert res.stop == w["stop"], w
        if w["stop"] not in (None, "non-canonical"):
            assert res.stop_level == w["level"], w
        if w["pa"] is not None:
            assert res.page_size == w["page_size"], w
            assert (res.writable, res.user, res.nx) == (w["writable"], w["user"], w["nx"]), w


def test_known_data(core):
    man, t = core
    ctx = resolve(t)
    for d in man.get("data", []):
        want = bytes.fromhex(d["hex"])
        assert read_virt(t, d["va"], len(want), ctx.paging, ctx.paging.mode) == want


@pytest.mark.parametrize("name", MANIFESTS)
def test_cli_walk_and_maps_json(name):
    man = load(name)
    path = os.path.join(CORES, man["core"])
    for w in man["walks"][:6]:
        r = cli("walk", path, hex(w["va"]), "--json")
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert (res["pa"], res["stop"]) == (w["pa"], w["stop"])
    r = cli("maps", path, "--pages", "--json")
    assert r.returncode == 0, r.stderr
    pages = json.loads(r.stdout)["pages"]
    assert [(p["va"], p["pa"], p["size"]) for p in pages] == [(p["va"], p["pa"], p["size"]) for p in man["pages"]]
    r = cli("maps", path)
    assert r.returncode == 0 and "pages" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.parametrize("name", MANIFESTS)
def test_cli_vtop_many(name, tmp_path):
    man = load(name)
    path = os.path.join(CORES, man["core"])
    lst = tmp_path / "vas.txt"
    lst.write_text("# manifest walks\n" + "".join(f"{w['va']:#x}\n" for w in man["walks"]))
    r = cli("vtop", path, "--from", str(lst), "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)["translations"]
    assert [(t["va"], t["pa"], t["page_size"], t["stop"]) for t in got] == \
        [(w["va"], w["pa"], w["page_size"], w["stop"]) for w in man["walks"]]
    lst.write_text("1000\nnot-an-address\n")
    r = cli("vtop", path, "--from", str(lst))
    assert r.returncode == 2 and ":2:" in r.stderr and "Traceback" not in r.stderr
