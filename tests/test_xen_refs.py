"""``xen refs``: the reverse map, judged by the builder's manifests of the synthetic Xen hosts.

Truth: every injected violation names the table, slot, entry and address of a real entry the
builder wrote; every guest walk of the manifest is a mapping the builder made (L1 entry -> frame
at that va). Each must be found by the reverse map of its frame.
"""
import json
import os

import pytest

from conftest import CORES, XEN_MANIFESTS
from gdbutil import run_cli

from xenstructs.targets import open_dump
from xenstructs.xen.host import open_host
from xenstructs.xen.refs import references, reverse_map


def _host(name):
    m = json.load(open(os.path.join(CORES, name)))
    core = os.path.join(CORES, name.replace(".json", ".core"))
    return m, open_host(open_dump(core), syms=core.replace(".core", ".map"))


@pytest.mark.parametrize("name", XEN_MANIFESTS)
def test_every_injected_entry_is_found_where_the_builder_wrote_it(name):
    m, host = _host(name)
    for v in m["violations"]:
        if v.get("table_mfn") is None or v.get("target_mfn") is None:
            continue
        found = references(host, [v["target_mfn"]])
        slot = v["path"][-1][1]
        hits = [r for r in found if r["table_mfn"] == v["table_mfn"] and r["slot"] == slot]
        assert hits, (v["kind"], v["table_mfn"], slot, found)
        assert hits[0]["entry"] == v["entry"] and hits[0]["domain"] == v["domain"]
        assert hits[0]["level"] == v["path"][-1][0]
        assert v["va"] in hits[0]["vas"] or hits[0]["linear"], (v, hits[0])


@pytest.mark.parametrize("name", XEN_MANIFESTS)
def test_every_guest_mapping_of_the_manifest_is_in_the_reverse_map(name):
    m, host = _host(name)
    walks = [w for w in m["guest_walks"] if w["ma"] is not None and w["level"] == "L1"]
    assert walks
    found = references(host, sorted({w["ma"] >> 12 for w in walks}))
    for w in walks:
        page_va = w["va"] & ~0xFFF
        xen_slots = 0xFFFF800000000000 <= w["va"] < 0xFFFF880000000000     # Xen's own mappings
        assert any(r["mfn"] == w["ma"] >> 12 and page_va in r["vas"]
                   and (r["domain_name"] == "Xen" if xen_slots else r["level"] == 1) for r in found), w


def test_writable_only_keeps_the_rw_entries():
    m, host = _host("xen-4.6-host.json")
    v = next(v for v in m["violations"] if v["kind"] == "writable-as-table")
    every = references(host, [v["target_mfn"]])
    rw = references(host, [v["target_mfn"]], writable_only=True)
    assert rw and all(r["writable"] for r in rw)
    assert [r for r in every if r["writable"]] == rw


def test_nothing_names_a_free_frame_and_the_search_is_whole():
    m, host = _host("xen-4.17-host.json")
    free = [r["mfn"] + k for r in m["free_ranges"][:2] for k in (0, r["pages"] - 1)]
    r = reverse_map(host, free)
    assert [x for x in r["references"] if x["level"] is not None] == []
    census = m["census"]
    assert r["tables"] == sum(n for owner, types in census.items() if owner != "free"
                              for t, n in types.items() if t in ("l1", "l2", "l3", "l4")), census


def test_cli_text_and_json():
    m, _ = _host("xen-4.6-host.json")
    v = next(v for v in m["violations"] if v["kind"] == "writable-as-table")
    core = os.path.join(CORES, "xen-4.6-host.core")
    r = run_cli("refs", core, f"{v['target_mfn']:x}", "--xen-syms", core.replace(".core", ".map"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert any(x["table_mfn"] == v["table_mfn"] for x in out["references"])
    text = run_cli("refs", core, f"{v['target_mfn']:x}", "--xen-syms", core.replace(".core", ".map"))
    assert f"L2 {v['table_mfn']:#x}[{v['path'][-1][1]}]" in text.stdout
    bad = run_cli("refs", core, "zz")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


@pytest.mark.parametrize("name", XEN_MANIFESTS)
def test_the_linear_slot_of_each_pinned_l4_is_noted_not_followed(name):
    m, host = _host(name)
    l4 = m["violations"][0]["l4_mfn"]                 # dom0's pinned L4: the builder maps it at slot 258
    found = references(host, [l4])
    linear = [r for r in found if r["linear"]]
    assert [(r["table_mfn"], r["slot"]) for r in linear] == [(l4, 258)] and linear[0]["vas"] == []
