"""Each PV guest's P2M from its shared_info (xenstructs.xen.shared_info), the way Xen's toolstack
finds it: the virtually mapped list (p2m_cr3/p2m_vaddr) and the 3-level frame tree
(pfn_to_mfn_frame_list_list), 64- and 32-bit guests, against the builders' manifests; Linux's shared
placeholder pages read once (cores/builder/p2mlayout.py lays a P2M area out as Linux does); and
p2m-check of every PV domain of the bundled Xen host cores with no guest symbols."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import CORES, TOP, XEN_MANIFESTS
from cores.builder import p2mlayout as B
from xenstructs.errors import XenscopeError
from xenstructs.paging import Paging
from xenstructs.target import MemoryTarget
from xenstructs.targets import open_dump
from xenstructs.xen import p2m as P
from xenstructs.xen import p2m_list as L
from xenstructs.xen.shared_info import Arch, NoP2M, read_p2m

INV = (1 << 64) - 1


def cli(*args):
    return subprocess.run([sys.executable, "-m", "xenstructs.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=TOP, timeout=120)


def layout(regions, max_pfn, **kw):
    pages, man = B.build(regions, max_pfn, **kw)
    return MemoryTarget(pages), Paging("4level", man["root"]), man, pages


def shared_ranges(man, pages_end):
    """[first, end) pfn ranges of the chunks below ``pages_end`` (pages) the builder left to a shared
    page (the manifest's read entries are INVALID there and the page is not one of its own)."""
    kinds = [bool((man["read"][c * 512:(c + 1) * 512] == np.uint64(INV)).all()) for c in range(pages_end)]
    out, start = [], None
    for c, shared in enumerate(kinds + [False]):
        if shared and start is None:
            start = c
        elif not shared and start is not None:
            out.append([start * 512, c * 512])
            start = None
    return out


# ---------------------------------------------------------------------------------------------
# Linux's layout: shared pages once, the list's end
# ---------------------------------------------------------------------------------------------

def test_dom0_layout_reads_its_own_pages_and_stops_at_max_pfn():
    """A 256 MiB dom0's 1 GiB area (0x8000000 entries): up to max_pfn its own pages are read, the
    shared p2m_missing/p2m_identity pages once; without max_pfn the whole area gives the same list."""
    t, pg, man, _ = layout(B.dom0_regions(), 0x28000)
    got = L.read_linear(t, pg, man["va"], man["size"], end=man["max_pfn"])
    n = len(got.entries)
    assert n == 0x28000 and np.array_equal(got.entries, man["read"][:n])
    assert got.placeholders.tolist() == shared_ranges(man, n // 512)
    assert set(got.shared) == {man["missing"], man["identity"]}
    whole = L.read_linear(t, pg, man["va"], man["size"])
    assert np.array_equal(whole.entries, got.entries) and whole.length == man["size"]


def test_a_single_read_only_placeholder_is_recognised():
    """One identity chunk between RAM: p2m_identity backs a single list page, mapped read-only; its
    INVALID entries are not findings, an INVALID entry in a page of the guest's own is."""
    regions = [(0, 0x1000, "ram"), (0x1000, 0x1200, "identity"), (0x1200, 0x1FFF, "ram")]
    t, pg, man, _ = layout(regions, 0x2000, area_entries=1 << 18)
    got = L.read_linear(t, pg, man["va"], man["size"], end=man["max_pfn"])
    assert got.placeholders.tolist() == [[0x1000, 0x1200]] and list(got.shared) == [man["identity"]]
    assert np.array_equal(got.entries, man["read"])
    mfn = got.entries & np.uint64(P.MFN_MASK)
    m2p = np.full(int(mfn[got.entries != np.uint64(INV)].max()) + 1, INV, np.uint64)
    ok = got.entries != np.uint64(INV)
    m2p[mfn[ok].astype(np.int64)] = np.flatnonzero(ok).astype(np.uint64)
    entries = got.entries.copy()
    entries[0x1500] = INV                                     # a hole in a page of its own
    rep = P.check(entries, m2p, len(m2p), placeholders=got.placeholders)
    assert [int(p) for p in rep.findings["invalid-in-range"].pfn] == [0x1500]
    rep = P.check(entries, m2p, len(m2p))                     # without: the placeholder's pfns too
    assert len(rep.findings["invalid-in-range"]) == 0x200 + 1


def test_a_shared_page_holding_entries_is_read_into_every_page_it_backs():
    """A corrupt p2m_missing (an mfn written into it): every pfn it covers reads the entry, so the
    check sees the same frame named many times."""
    t, pg, man, pages = layout(B.dom0_regions(), 0x28000)
    page = bytearray(pages[man["missing"]])
    page[8 * 5:8 * 6] = int(man["entries"][3]).to_bytes(8, "little")
    t.pages[man["missing"]] = bytes(page)
    got = L.read_linear(t, pg, man["va"], man["size"], end=man["max_pfn"])
    backed = [r for r in shared_ranges(man, 0x28000 // 512)]
    hits = np.flatnonzero(got.entries == man["entries"][3])
    assert 3 in hits and len(hits) > 1 and any("holds entries" in n for n in got.notes)
    assert all(any(a <= h < b for a, b in backed) for h in hits if h != 3)


# ---------------------------------------------------------------------------------------------
# the toolstack's rules on the bundled xl dump-core files (64-bit and 32-bit PAE guests)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["pv-x86_64", "pv-i386-pae"])
@pytest.mark.parametrize("how", ["list", "tree"])
def test_xl_dump_core_shared_info_gives_the_manifest_p2m(name, how):
    man = json.load(open(os.path.join(CORES, f"{name}.json")))
    t = open_dump(os.path.join(CORES, man["core"]))
    try:
        arch = Arch.from_facts(t.facts, ".xen_shared_info")
        assert (arch.max_pfn, arch.p2m_cr3, arch.p2m_vaddr) == (man["shared_info"]["max_pfn"],
                                                                man["shared_info"]["p2m_cr3"],
                                                                man["shared_info"]["p2m_vaddr"])
        if how == "tree":
            arch = dataclasses.replace(arch, p2m_cr3=0)
        got, why = read_p2m(t, arch)
    finally:
        t.close()
    n = man["shared_info"]["max_pfn"]
    want = np.full(n, INV, np.uint64)
    for pfn, mfn in man["p2m"]:
        if pfn < n:
            want[pfn] = mfn
    full = np.full(n, INV, np.uint64)
    full[:len(got.entries)] = got.entries
    assert np.array_equal(full, want)
    assert ("virtually mapped list" if how == "list" else "frame tree") in why


def test_bad_shared_info_is_one_clear_error():
    man = json.load(open(os.path.join(CORES, "pv-x86_64.json")))
    t = open_dump(os.path.join(CORES, man["core"]))
    try:
        arch = Arch.from_facts(t.facts, "test")
        tree = {"p2m_cr3": 0, "pfn_to_mfn_frame_list_list": 0x7FFFFFFF}
        for bad, max_mfn, words in (({"p2m_vaddr": 0xFFFF800000000000}, None, "Xen's hole"),
                                    ({"p2m_vaddr": 0x0000900000000000}, None, "not canonical"),
                                    ({"max_pfn": 0}, None, "max_pfn 0x0"),
                                    ({"p2m_cr3": 0x7FFFFFFF000}, 1 << 30, "bad p2m_cr3"),
                                    (tree, 1 << 30, "bad mfn 0x7fffffff for the frame list list"),
                                    (tree, None, "frame list list at mfn 0x7fffffff is not in the dump")):
            with pytest.raises(XenscopeError, match=words):
                read_p2m(t, dataclasses.replace(arch, **bad), max_mfn=max_mfn)
        with pytest.raises(NoP2M, match="publishes no P2M"):
            read_p2m(t, dataclasses.replace(arch, p2m_cr3=0, pfn_to_mfn_frame_list_list=INV))
        odd, _ = read_p2m(t, dataclasses.replace(arch, p2m_generation=3))
        assert any("p2m_generation 3 is odd" in n for n in odd.notes)
    finally:
        t.close()


# ---------------------------------------------------------------------------------------------
# every PV domain of the bundled Xen host cores, no guest symbols
# ---------------------------------------------------------------------------------------------

@pytest.fixture(params=XEN_MANIFESTS)
def host(request):
    man = json.load(open(os.path.join(CORES, request.param)))
    core = os.path.join(CORES, man["core"])
    return man, core, core[:-len(".core")] + ".map"


def faults(res):
    def inv(v):
        return INV if v is None else v
    other = {"mismatch": "m2p", "beyond-max": "max_mfn", "foreign": "owner", "identity": "entry",
             "invalid-in-range": "range_end", "m2p-orphan": "p2m"}
    return sorted((c, inv(f["pfn"]), inv(f["mfn"]), inv(len(f["pfns"]) if c == "duplicate" else f[other[c]]))
                  for c, fs in res["findings"].items() for f in fs)


def test_p2m_check_of_every_domain_by_shared_info(host):
    """No --domain, no --kernel-syms: dom0's P2M is found by its shared_info (struct domain's
    pointer at the manifest's offset: the 4.17 core by the per-release table, the 4.6 core's found in
    the dump) and holds exactly the builder's injected faults; d1's shared_info publishes no P2M."""
    man, core, syms = host
    r = cli("p2m-check", core, "--xen-syms", syms, "--json", "--limit", "0")
    assert r.returncode == 1, r.stdout + r.stderr
    res = json.loads(r.stdout)
    assert [d["domain"] for d in res["domains"]] == [0]
    d0 = res["domains"][0]
    assert faults(d0) == sorted((f["class"], f["pfn"], f["mfn"], f["other"]) for f in man["p2m"]["faults"])
    assert d0["sources"]["p2m"].startswith("from shared_info: the virtually mapped list at "
                                           f"{man['p2m']['va']:#x}")
    off = man["domain_offsets"]["shared_info"]
    rule = "table: Xen 4.17" if "4.17" in core else "found in this dump"
    assert f"shared_info at +{off} ({rule}" in d0["sources"]["shared_info"] or \
        (f"shared_info at +{off}, {rule}" in d0["sources"]["shared_info"]), d0["sources"]["shared_info"]
    assert [(s["domain"], "publishes no P2M" in s["why"]) for s in res["skipped"]] == [(1, True)]
    assert res["problems"] == d0["problems"] and not res["errors"]
    one = json.loads(cli("p2m-check", core, "--domain", 0, "--xen-syms", syms, "--json", "--limit", "0").stdout)
    assert faults(one) == faults(d0) and one["sources"]["p2m"] == d0["sources"]["p2m"]


def test_tree_and_list_agree_on_the_host_cores(host):
    """dom0's frame tree (pfn_to_mfn_frame_list_list -> frame list -> list page) and its virtually
    mapped list give the same entries: the builder's list."""
    from xenstructs.xen.host import open_host
    from xenstructs.xen.shared_info import SharedInfoPages
    man, core, syms = host
    t = open_dump(core)
    try:
        h = open_host(t, syms=syms)
        pages = SharedInfoPages(h, P.owners_from_host(h)[2])
        arch = pages.arch(next(d for d in pages.domains if d.id == 0))
        listed, _ = read_p2m(t, arch, h.max_page)
        tree, why = read_p2m(t, dataclasses.replace(arch, p2m_cr3=0), h.max_page)
        assert "frame tree at mfn" in why and np.array_equal(listed.entries, tree.entries)
        assert len(listed.entries) == man["p2m"]["pfn_count"] == arch.max_pfn
    finally:
        t.close()
