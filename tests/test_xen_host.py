"""Xen host commands against the synthetic hypervisor dumps (cores/xen-*.core): the builder's
manifests are the truth (frames, owners, M2P, domains, census, injected violations)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import CORES, TOP, XEN_MANIFESTS
from xenstructs.targets import open_dump
from xenstructs.xen import frames as F
from xenstructs.xen.host import open_host
from xenstructs.xen.ptaudit import audit

INVALID = (1 << 64) - 1


def load(name):
    with open(os.path.join(CORES, name)) as f:
        return json.load(f)


@pytest.fixture(scope="module", params=XEN_MANIFESTS)
def xen(request):
    man = load(request.param)
    core = os.path.join(CORES, man["core"])
    syms = core[:-len(".core")] + ".map"
    t = open_dump(core)
    h = open_host(t, syms=syms)
    yield man, h, core, syms
    t.close()


def test_identity(xen):
    man, h, _, _ = xen
    assert h.version == man["xen_version"]
    assert h.layout.name.startswith(f"{man['layout']['type']}/{man['layout']['count']}")
    assert h.max_page == man["max_page"]
    assert h.frametable == man["frametable_virt_start"]
    if man["pdx"]:
        assert h.pdx.hole_shift == man["pdx"]["hole_shift"] and h.pdx.top_mask == man["pdx"]["top_mask"]


def test_every_listed_frame(xen):
    man, h, _, _ = xen
    for f in man["frames"]:
        pg = h.page(f["mfn"])
        assert (pg["pdx"], pg["count_info"], pg["type_info"]) == (f["pdx"], f["count_info"], f["type_info"]), f
        if f["state"] != "free":
            assert pg["owner"] == f["owner"], f
        assert pg["m2p"] == (None if f["m2p"] >> 63 else f["m2p"]), f      # INVALID/SHARED entries
        assert pg["type"]["type"] == f["type"] and pg["count"]["state"] == f["state"], f


def test_frame_arrays_and_census(xen):
    man, h, _, _ = xen
    cols = F.classify(h, h.frame_arrays())
    by_mfn = {m: i for i, m in enumerate(cols["mfn"].tolist())}
    for f in man["frames"]:
        i = by_mfn[f["mfn"]]
        assert (int(cols["count_info"][i]), int(cols["type_info"][i])) == (f["count_info"], f["type_info"])
    for r in man["free_ranges"]:
        for m in (r["mfn"], r["mfn"] + r["pages"] - 1):
            assert F.STATES[cols["state"][by_mfn[m]]] == "free", r
    c = F.census(h, cols)
    want = {k: v for k, v in man["census"].items() if k != "free"}
    assert c["by_owner"] == want
    assert c["states"].get("free", 0) == man["free_frames"]


def test_domains(xen):
    man, h, _, _ = xen
    got = {(d.id, d.struct_va) for d in h.domains()}
    for d in man["domains"]:
        assert (d["id"], d["struct_va"]) in got, d


def test_m2p_and_walks(xen):
    man, h, _, _ = xen
    for s in man["m2p_samples"]:
        assert h.m2p(s["mfn"]) == (None if s["pfn"] >> 63 else s["pfn"]), s
    for w in man["walks"]:
        if w["ma"] is not None:
            assert h.va_to_maddr(w["va"]) == w["ma"], w


def test_pt_audit_finds_the_injected_violations(xen):
    man, h, _, _ = xen
    found = {(f.kind, f.domain, f.mfn) for a in audit(h) for f in a.findings}
    want = {(v["kind"], v["domain"], v.get("target_mfn", v["mfn"])) for v in man["violations"]
            if v["kind"] != "foreign-p2m"}
    assert found == want, (found - want, want - found)


def test_pt_audit_foreign_references(xen):
    """The one foreign-reference finding is the unprivileged domain's ungranted one; dom0's (the
    control/hardware domain) and, on 4.17, d1's granted one are informational with their basis, at
    the manifest's path and virtual address."""
    man, h, _, _ = xen
    audits = audit(h)
    foreign = [f for a in audits for f in a.findings if f.kind == "foreign-reference"]
    want = man["foreign"]["violation"]
    assert [(f.domain, f.mfn, f.path, f.va) for f in foreign] == \
        [(want["domain"], want["mfn"], [[f"L{lv}", i] for lv, i in want["path"]], want["va"])]
    info = {(f.domain, f.basis, f.mfn, f.va) for a in audits for f in a.informational}
    assert info == {(i["domain"], i["basis"], i["mfn"], i["va"]) for i in man["informational"]}
    access = audits[0].access
    assert sorted(access.privileged) == [man["foreign"]["hardware_domain"]]
    grants = {(g.granter, g.ref, g.grantee, g.mfn, g.pin) for gs in access.grants.values() for g in gs}
    assert grants == {(g["granter"], g["ref"], g["grantee"], g["mfn"], g["pin"]) for g in man["foreign"]["grants"]}
    if man["foreign"]["control_domains"] is not None:
        assert access.layout is not None and access.layout.is_privileged == man["foreign"]["layout"]["is_privileged"]
        assert "control domain (is_privileged)" in access.privileged[0]


def test_cli_page_and_frames(xen):
    man, h, core, syms = xen
    v = next(v for v in man["violations"] if v["kind"] == "writable-as-table")
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", "page", core, hex(v["mfn"]), "--xen-syms", syms,
                        "--json"], capture_output=True, text=True, cwd=TOP)
    assert r.returncode == 0, r.stderr
    pg = json.loads(r.stdout)["pages"][0]
    assert pg["type"]["type"] == "writable" and pg["type"]["count"] == 1 and pg["owner"] == 0
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", "frames", core, "--type", "l4", "--pinned",
                        "--xen-syms", syms, "--json"], capture_output=True, text=True, cwd=TOP)
    assert r.returncode == 0, r.stderr
    l4s = {f["mfn"] for f in json.loads(r.stdout)["frames"]}
    assert {d["l4_mfn"] for d in man["domains"] if d.get("l4_mfn")} <= l4s


def _xen_syms_with_dwarf(tmp_path, man, bigmem=False):
    """A tiny ELF with DWARF declaring struct page_info / struct domain at the builder's offsets
    (what a xen-syms built with debug info would carry), compiled by gcc."""
    o = man["domain_offsets"]
    pdx = "unsigned long" if bigmem else "unsigned int"
    src = f"""
    struct page_list_entry {{ {pdx} next, prev; }};
    struct page_info {{
        union {{ struct page_list_entry list; unsigned long up; }};
        unsigned long count_info;
        union {{ struct {{ unsigned long type_info; }} inuse; unsigned long val; }} u;
        union {{ struct {{ {pdx} _domain; }} inuse; unsigned int order; }} v;
        union {{ unsigned int tlbflush_timestamp; {pdx} pad; }};
    }};
    struct domain {{
        unsigned short domain_id;
        char pad0[{o['next_in_list'] - 2}];
        struct domain *next_in_list;
        char pad1[{o['tot_pages'] - o['next_in_list'] - 8}];
        unsigned int tot_pages;
        char pad2[{o['max_pages'] - o['tot_pages'] - 4}];
        unsigned int max_pages;
    }};
    struct page_info xs_page; struct domain xs_domain;
    """
    c = tmp_path / "xs.c"
    c.write_text(src)
    out = tmp_path / ("xs-bigmem.o" if bigmem else "xs.o")
    subprocess.run(["gcc", "-g", "-c", "-o", str(out), str(c)], check=True)
    return str(out)


def test_dwarf_offsets_are_checked_and_used(xen, tmp_path):
    man, h, core, _ = xen
    syms = _xen_syms_with_dwarf(tmp_path, man)
    t = open_dump(core)
    try:
        hd = open_host(t, syms=syms)
        assert "checked against layout" in hd.sources["dwarf"]
        got = {d.id: d.extra for d in hd.domains()}
        for d in man["domains"]:
            if d["id"] < 0x7FF0:                  # guests (dom_cow is no domain_list member)
                pages = {k: got[d["id"]][k] for k in ("tot_pages", "max_pages")}
                assert pages == {"tot_pages": d["tot_pages"], "max_pages": d["max_pages"]}, d
                # the DWARF has no shared_info: found in the dump (a Xen-heap page given to the domain)
                si = got[d["id"]].get("shared_info")
                assert si is not None and hd.va_to_maddr(si) == d["shared_info_maddr"], (d, si)
        with pytest.raises(Exception, match="disagrees with layout"):
            open_host(t, syms=_xen_syms_with_dwarf(tmp_path, man, bigmem=True))
    finally:
        t.close()
