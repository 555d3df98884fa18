"""P2M <-> M2P check: synthetic tables with one injected fault per class (expected findings written
out by hand, not derived from the checker), the Linux list reader, and the CLI on the Xen host cores
against their manifests."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import CORES, TOP, XEN_MANIFESTS
from xenstructs.paging import Paging
from xenstructs.target import MemoryTarget
from xenstructs.xen import p2m as P

INV = (1 << 64) - 1
FOREIGN = 1 << 63
IDENT = 1 << 62
N = 4096                 # pfns with entries
TAIL = 100               # trailing INVALID entries (as Linux's ALIGN(nr_pages, P2M_PER_PAGE))
MAX_MFN = 8192
ME, OTHER = 5, 9


def base_mfn(pfn):
    return 1000 + (pfn * 7) % N          # a bijection of [0, N) onto [1000, 1000+N)


def build():
    """Consistent tables, then one fault per class at known pfns/mfns."""
    p2m = np.full(N + TAIL, INV, np.uint64)
    m2p = np.full(MAX_MFN, INV, np.uint64)
    owners = np.zeros(MAX_MFN, np.uint64)
    xenheap = np.zeros(MAX_MFN, bool)
    for p in range(N):
        p2m[p] = base_mfn(p)
        m2p[base_mfn(p)] = p
        owners[base_mfn(p)] = ME
    m = base_mfn
    m2p[m(10)] = 11                       # mismatch: M2P names another pfn
    m2p[m(12)] = INV                      # mismatch: M2P says invalid
    p2m[20] = 9000                        # beyond-max
    p2m[30] = m(31)                       # duplicate pair (31 is the consistent partner)
    p2m[40] = p2m[41] = m(42)             # duplicate triple (42 consistent)
    p2m[50] = FOREIGN | 7000              # grant mapping of a d9 frame
    owners[7000], m2p[7000] = OTHER, 77
    p2m[60] = 7001                        # a d9 frame without the bit
    owners[7001], m2p[7001] = OTHER, 3
    p2m[70] = IDENT | 70                  # identity (informational)
    p2m[80] = INV                         # a hole inside the populated range
    owners[m(95)] = P.UNKNOWN_OWNER       # owner unknown: consistent, no finding
    # frames displaced by the faults above are given away (owner 0) so they are not orphans
    for p in (20, 30, 40, 41, 50, 60, 70, 80):
        owners[m(p)] = 0
    # orphans: frames of the domain that no entry maps
    owners[7500], m2p[7500] = ME, 90      # M2P names pfn 90, whose entry is another frame
    owners[7501] = ME                     # M2P invalid
    owners[7502] = ME                     # Xen heap page shared with the domain: not an orphan
    xenheap[7502] = True
    owners[7503], m2p[7503] = ME, 5000    # M2P names a pfn beyond the list
    return p2m, m2p, owners, xenheap


def rows(rep, cls):
    f = rep.findings[cls]
    return sorted(zip(f.pfn.tolist(), f.mfn.tolist(), f.other.tolist()))


EXPECTED = {
    "mismatch": [(10, base_mfn(10), 11), (12, base_mfn(12), INV)],
    "beyond-max": [(20, 9000, MAX_MFN)],
    "duplicate": [(30, base_mfn(31), 2), (31, base_mfn(31), 2),
                  (40, base_mfn(42), 3), (41, base_mfn(42), 3), (42, base_mfn(42), 3)],
    "foreign": [(50, 7000, OTHER), (60, 7001, OTHER)],
    "identity": [(70, 70, IDENT | 70)],
    "invalid-in-range": [(80, INV, N)],
    "m2p-orphan": [(90, 7500, base_mfn(90)), (5000, 7503, INV), (INV, 7501, INV)],
    "foreign-allowed": [],          # P.check never decides it: grants and privileges do (p2m_sources)
}


def test_every_class_exactly():
    p2m, m2p, owners, xenheap = build()
    rep = P.check(p2m, m2p, MAX_MFN, owners=owners, me=ME, xenheap=xenheap)
    for cls in P.CLASSES:
        assert rows(rep, cls) == sorted(EXPECTED[cls]), cls
    assert rep.counts == {c: len(v) for c, v in EXPECTED.items()}
    assert rep.problems == sum(len(v) for c, v in EXPECTED.items() if c != "identity")
    assert rep.populated_end == N and rep.pfns == N + TAIL
    fo = {d["pfn"]: d for d in rep.as_dicts("foreign")}
    assert fo[50]["foreign_bit"] and fo[50]["m2p"] == 77 and fo[50]["owner"] == OTHER
    assert not fo[60]["foreign_bit"] and fo[60]["m2p"] == 3
    dup = {d["pfn"]: d for d in rep.as_dicts("duplicate")}
    assert dup[40]["pfns"] == [40, 41, 42] and dup[30]["pfns"] == [30, 31] and dup[41]["m2p"] == 42
    assert rep.as_dicts("mismatch")[1]["m2p_text"] == "invalid"
    assert len(rep.as_dicts("duplicate", limit=2)) == 2
    js = json.loads(json.dumps(rep.to_json()))
    assert js["counts"] == rep.counts and set(js["summary"]) == set(P.CLASSES)
    assert all(len(js["findings"][c]) == len(EXPECTED[c]) for c in P.CLASSES)


def test_without_owners_and_variants():
    p2m, m2p, owners, xenheap = build()
    rep = P.check(p2m, m2p, MAX_MFN)
    # without owners a frame of another domain without the bit is only an M2P mismatch
    assert rows(rep, "mismatch") == sorted(EXPECTED["mismatch"] + [(60, 7001, 3)])
    assert rows(rep, "foreign") == [(50, 7000, 77)]               # other = M2P value
    assert rows(rep, "m2p-orphan") == [] and not rep.have_owners
    for cls in ("beyond-max", "duplicate", "identity", "invalid-in-range"):
        assert rows(rep, cls) == sorted(EXPECTED[cls]), cls
    # the xen heap frame counts as an orphan when the caller does not say it is one
    rep = P.check(p2m, m2p, MAX_MFN, owners=owners, me=ME)
    assert rows(rep, "m2p-orphan") == sorted(EXPECTED["m2p-orphan"] + [(INV, 7502, INV)])
    # partial list: frames whose M2P pfn is beyond it are not judged
    rep = P.check(p2m, m2p, MAX_MFN, owners=owners, me=ME, xenheap=xenheap, partial=True)
    assert rows(rep, "m2p-orphan") == [(90, 7500, base_mfn(90)), (INV, 7501, INV)]
    # populated range given: INVALID entries inside it, trailing ones included
    rep = P.check(p2m, m2p, MAX_MFN, populated=N + 10)
    assert rows(rep, "invalid-in-range") == [(80, INV, N + 10)] + [(p, INV, N + 10) for p in range(N, N + 10)]
    rep = P.check(p2m, m2p, MAX_MFN, populated=(81, N))
    assert rows(rep, "invalid-in-range") == []


def test_sparse_m2p_and_chunks_agree(monkeypatch):
    p2m, m2p, owners, xenheap = build()
    want = P.check(p2m, m2p, MAX_MFN, owners=owners, me=ME, xenheap=xenheap)
    calls = []

    def sparse(mfns):
        calls.append(len(mfns))
        out = np.full(len(mfns), INV, np.uint64)
        ok = mfns < MAX_MFN
        out[ok] = m2p[mfns[ok].astype(np.intp)]
        return out
    monkeypatch.setattr(P, "CHUNK", 1000)                 # several chunks, on threads
    got = P.check(p2m, sparse, MAX_MFN, owners=owners, me=ME, xenheap=xenheap)
    assert calls
    for cls in P.CLASSES:
        assert rows(got, cls) == rows(want, cls), cls
    clean = np.array([base_mfn(p) for p in range(N)], np.uint64)
    m2 = np.full(MAX_MFN, INV, np.uint64)
    m2[clean.astype(np.intp)] = np.arange(N, dtype=np.uint64)
    assert P.check(clean, m2, MAX_MFN).ok


def test_empty_and_all_invalid():
    assert P.check(np.zeros(0, np.uint64), np.zeros(0, np.uint64), 16).ok
    rep = P.check(np.full(600, INV, np.uint64), np.zeros(16, np.uint64), 16)
    assert rep.ok and rep.populated_end == 0


# ---------------------------------------------------------------------------------------------
# Linux list reader on hand-made 4-level tables
# ---------------------------------------------------------------------------------------------

LIST_VA = 0xFFFFC90000000800           # not page aligned: the list straddles two pages
VARS_VA = 0xFFFFC90000005000


def _pt_target(n_entries, values):
    pages = {}

    def table(pa, entries):
        buf = bytearray(4096)
        for i, v in entries.items():
            buf[i * 8:i * 8 + 8] = v.to_bytes(8, "little")
        pages[pa] = bytes(buf)
    table(0x1000, {(LIST_VA >> 39) & 511: 0x2000 | 3})
    table(0x2000, {0: 0x3000 | 3})
    table(0x3000, {0: 0x4000 | 3})
    # list pages 0 and 1 at pa 0x11000 and 0x10000 (not contiguous in order), vars at 0x20000
    table(0x4000, {0: 0x11000 | 3, 1: 0x10000 | 3, 5: 0x20000 | 3})
    raw = np.asarray(values, "<u8").tobytes()
    mem = bytearray(8192)
    mem[0x800:0x800 + len(raw)] = raw
    pages[0x11000], pages[0x10000] = bytes(mem[:4096]), bytes(mem[4096:])
    v = bytearray(4096)
    v[0:8] = LIST_VA.to_bytes(8, "little")
    v[8:16] = n_entries.to_bytes(8, "little")
    pages[0x20000] = bytes(v)
    return MemoryTarget(pages), Paging("4level", 0x1000)


def test_p2m_from_linux_and_symbols(tmp_path):
    vals = np.arange(700, dtype=np.uint64) * np.uint64(3) + np.uint64(0x1000)
    t, pg = _pt_target(700, vals)
    assert np.array_equal(P.p2m_from_linux(t, pg, LIST_VA, 700), vals)
    smap = tmp_path / "System.map"
    smap.write_text(f"{VARS_VA:016x} D xen_p2m_addr\n{VARS_VA + 8:016x} D xen_p2m_size\n")
    assert np.array_equal(P.p2m_from_symbols(t, pg, str(smap)), vals)
    with pytest.raises(P.XenscopeError, match="do not translate"):
        P.p2m_from_linux(t, pg, LIST_VA, 2000)          # runs into unmapped pages
    smap.write_text(f"{VARS_VA:016x} D xen_p2m_addr\n")
    with pytest.raises(P.XenscopeError, match="xen_p2m_size"):
        P.p2m_from_symbols(t, pg, str(smap))


# ---------------------------------------------------------------------------------------------
# CLI on the Xen host cores
# ---------------------------------------------------------------------------------------------

GUEST_DIRECTMAP = 0xFFFF880000000000   # cores/README.md: guests' direct map
D1_P2M_PFN = 7                         # cores/builder/xenhost.py: d1's P2M array page (D1_P2M)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "xenstructs.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=TOP, timeout=120)


@pytest.fixture(params=XEN_MANIFESTS)
def host(request):
    with open(os.path.join(CORES, request.param)) as f:
        man = json.load(f)
    core = os.path.join(CORES, man["core"])
    doms = {d["id"]: d for d in man["domains"]}
    return man, core, core[:-len(".core")] + ".map", doms


def manifest_counts(p):
    """Findings per class (non-zero only) and problems (all but identity) of manifest p2m.faults."""
    counts = {}
    for f in p["faults"]:
        counts[f["class"]] = counts.get(f["class"], 0) + 1
    return counts, sum(n for c, n in counts.items() if c not in P.INFORMATIONAL)


def test_cli_dom0_reports_the_manifest_violation(host):
    man, core, syms, doms = host
    p = man["p2m"]
    want = {(v["mfn"], v["domain"]) for v in man["violations"] if v["kind"] == "foreign-p2m"}
    want_rows = sorted((f["pfn"], f["mfn"], f["owner"]) for f in p["foreign"])
    assert {(m, 0) for _, m, _ in want_rows} == want
    base = ["p2m-check", core, "--p2m-va", hex(p["va"]), "--p2m-entries", p["pfn_count"], "--xen-syms", syms]
    for extra in (["--cr3", hex(doms[p["domain"]]["cr3"])], []):      # given, and found (pinned L4)
        r = cli(*base, *extra, "--json")
        assert r.returncode == 1, r.stderr
        res = json.loads(r.stdout)
        assert sorted((f["pfn"], f["mfn"], f["owner_id"]) for f in res["findings"]["foreign"]) == want_rows
        counts, problems = manifest_counts(p)
        assert res["problems"] == problems
        assert {c: n for c, n in res["counts"].items() if n} == counts
    r = cli(*base, "--cr3", hex(doms[0]["cr3"]))
    assert r.returncode == 1 and "owned by d1" in r.stdout and f"{problems} problem(s) found" in r.stdout


# the CLI's JSON name for each class's ``other`` column (p2m.OTHER_NAME, duplicate: len(pfns))
CLI_OTHER = {"mismatch": "m2p", "beyond-max": "max_mfn", "foreign": "owner", "identity": "entry",
             "invalid-in-range": "range_end", "m2p-orphan": "p2m"}


def test_cli_full_list_reports_every_injected_fault(host):
    """The builder injects one fault of every class into dom0's P2M list (plus the M2P orphans they
    leave); p2m-check over the whole list reports exactly manifest p2m.faults, nothing else."""
    man, core, syms, doms = host
    p = man["p2m"]
    # every class but foreign-allowed, which grants and privileges decide (tested below and for real)
    assert {f["class"] for f in p["faults"]} == set(P.CLASSES) - {"foreign-allowed"}
    r = cli("p2m-check", core, "--domain", p["domain"], "--p2m-va", hex(p["va"]), "--p2m-entries", p["pfn_count"],
            "--cr3", hex(doms[p["domain"]]["cr3"]), "--xen-syms", syms, "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    res = json.loads(r.stdout)
    assert res["pfns"] == p["pfn_count"]

    def inv(v):
        return INV if v is None else v
    got = sorted((c, inv(f["pfn"]), inv(f["mfn"]), inv(len(f["pfns"]) if c == "duplicate" else f[CLI_OTHER[c]]))
                 for c, fs in res["findings"].items() for f in fs)
    want = sorted((f["class"], f["pfn"], f["mfn"], f["other"]) for f in p["faults"])
    assert got == want
    counts, problems = manifest_counts(p)
    assert res["problems"] == problems


def test_cli_clean_variants(host):
    man, core, syms, doms = host
    p = man["p2m"]
    first_bad = min(f["pfn"] for f in p["foreign"])
    r = cli("p2m-check", core, "--p2m-va", hex(p["va"]), "--p2m-entries", first_bad, "--xen-syms", syms)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "clean" in r.stdout
    r = cli("p2m-check", core, "--domain", 1, "--cr3", hex(doms[1]["cr3"]), "--xen-syms", syms,
            "--p2m-va", hex(GUEST_DIRECTMAP + D1_P2M_PFN * 4096), "--p2m-entries", doms[1]["tot_pages"], "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["problems"] == 0


def test_cli_kernel_syms(host, tmp_path):
    """--kernel-syms: the two variables are placed where dom0 can read the values the builder wrote
    (shared_info.arch p2m_vaddr at +0xC30 and max_pfn at +0xC10, through Xen's direct map, which
    every PV L4 carries)."""
    man, core, syms, doms = host
    si = 0xFFFF830000000000 + doms[0]["shared_info_maddr"]
    smap = tmp_path / "System.map"
    smap.write_text(f"{si + 0xC30:016x} D xen_p2m_addr\n{si + 0xC10:016x} D xen_p2m_size\n")
    r = cli("p2m-check", core, "--kernel-syms", smap, "--xen-syms", syms, "--json")
    assert r.returncode == 1, r.stderr
    res = json.loads(r.stdout)
    counts, problems = manifest_counts(man["p2m"])
    assert res["pfns"] == man["p2m"]["pfn_count"] and res["counts"]["foreign"] == 1 and res["problems"] == problems


def test_cli_p2m_entry(host):
    man, core, syms, doms = host
    p = man["p2m"]
    f = p["foreign"][0]
    r = cli("p2m", core, hex(f["pfn"] - 1), "--count", 2, "--p2m-va", hex(p["va"]),
            "--p2m-entries", p["pfn_count"], "--xen-syms", syms, "--json")
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)["entries"]
    assert e[0]["verdict"].startswith("ok") and e[0]["m2p"] == f["pfn"] - 1
    assert e[1]["mfn"] == f["mfn"] and e[1]["owner_id"] == f["owner"] and e[1]["verdict"].startswith("foreign")


def test_cli_bad_input(host):
    man, core, syms, doms = host
    p = man["p2m"]

    def one_line_error(r, *words):
        assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        for w in words:
            assert w in lines[0], lines[0]
    one_line_error(cli("p2m-check", core, "--p2m-va", hex(p["va"] + (2 << 20)), "--p2m-entries", 64,
                       "--xen-syms", syms), "do not translate", "not-present")
    one_line_error(cli("p2m-check", core, "--domain", 1, "--xen-syms", syms), "d1's shared_info",
                   "publishes no P2M")          # the builder's d1 fills only max_pfn
    one_line_error(cli("p2m-check", core, "--p2m-va", hex(p["va"]), "--xen-syms", syms), "--p2m-entries")
    one_line_error(cli("p2m-check", core, "--domain", 7, "--p2m-va", hex(p["va"]), "--p2m-entries", 64,
                       "--xen-syms", syms), "no domain 7")
    one_line_error(cli("p2m-check", os.path.join(CORES, "x86_64-4level.core"), "--p2m-va", hex(p["va"]),
                       "--p2m-entries", 64), "Xen host dump or an xl dump-core")


@pytest.mark.parametrize("name", ["pv-x86_64", "pv-i386-pae"])
def test_cli_xc_core(name):
    """An xl dump-core: P2M = the guest's own list, found by the dump's .xen_shared_info (no guest
    symbols), M2P = the inverse of .xen_p2m; the pfns the manifest's P2M lacks below its highest pfn
    (the builder's ballooned-out range) are the only findings."""
    path = os.path.join(CORES, name + ".xc")
    if not os.path.exists(path):
        pytest.skip(f"{name}.xc not built")
    with open(os.path.join(CORES, name + ".json")) as f:
        man = json.load(f)
    have = {pfn for pfn, _ in man["p2m"]}
    holes = [p for p in range(max(have)) if p not in have]
    r = cli("p2m-check", path, "--json")
    assert r.returncode == (1 if holes else 0), r.stderr
    res = json.loads(r.stdout)
    assert res["sources"]["p2m"].startswith("the guest's own P2M list from shared_info: the virtually mapped")
    assert [f["pfn"] for f in res["findings"]["invalid-in-range"]] == holes
    assert {c: n for c, n in res["counts"].items() if n and c != "invalid-in-range"} == {}


@pytest.mark.parametrize("name", ["pv-x86_64"])
def test_xl_dump_core_guest_own_list_against_its_frames(name):
    """On an xl dump-core file, --kernel-syms checks the guest's OWN P2M list (read through its page
    tables in the dump) against the frames the dump says it held: the manifest's invalid pfns
    below the last populated one are the only findings."""
    man = json.load(open(os.path.join(CORES, f"{name}.json")))
    core = os.path.join(CORES, man["core"])
    r = cli("p2m-check", core, "--kernel-syms", os.path.join(CORES, f"{name}.map"), "--json", "--limit", "0")
    assert r.returncode == 1, r.stderr
    res = json.loads(r.stdout)
    assert res["pfns"] == man["linux_p2m"]["size"] and "own P2M list" in res["sources"]["p2m"]
    last = max(p for p, _ in man["p2m"])
    want = [p for p in man["linux_p2m"]["invalid_pfns"] if p < last]
    assert [f["pfn"] for f in res["findings"]["invalid-in-range"]] == want
    assert {k for k, v in res["counts"].items() if v} == {"invalid-in-range"}


def test_a_foreign_entry_is_allowed_only_marked_and_granted_or_privileged():
    """p2m_sources._allowed_foreign: Linux marks every foreign mapping FOREIGN_FRAME_BIT
    (set_foreign_p2m_mapping); a marked entry backed by the owner's grant, or made by a privileged
    domain, is informational; an unmarked one, or one of an unprivileged domain without a grant, stays."""
    from types import SimpleNamespace
    from xenstructs.xen.grants import ForeignAccess, Grant
    from xenstructs.xen.p2m_sources import _allowed_foreign
    grant = Grant(granter=1, ref=0, grantee=2, mfn=0x500, pin=0x1)
    access = ForeignAccess(privileged={0: "control domain (is_privileged)"}, grants={(0x500, 2): [grant]},
                           grant_tables=[1])

    def run(mapper, entries):
        res = {"findings": {"foreign": [dict(e) for e in entries], "foreign-allowed": []},
               "counts": {"foreign": len(entries), "foreign-allowed": 0}, "problems": len(entries),
               "summary": {}, "sources": {}}
        src = SimpleNamespace(host=object())
        import xenstructs.xen.grants as grants
        old = grants.read_foreign_access
        grants.read_foreign_access = lambda host: access
        try:
            _allowed_foreign(res, src, mapper)
        finally:
            grants.read_foreign_access = old
        return res
    marked = {"mfn": 0x500, "owner_id": 1, "foreign_bit": True}
    unmarked = {"mfn": 0x500, "owner_id": 1, "foreign_bit": False}
    res = run(2, [marked, unmarked])                      # d2 holds a grant of mfn 0x500 from d1
    assert [f["basis"] for f in res["findings"]["foreign-allowed"]] == ["granted"]
    assert res["findings"]["foreign"] == [unmarked] and res["problems"] == 1
    res = run(0, [dict(marked, mfn=0x600)])               # d0 is privileged: no grant needed
    assert [f["basis"] for f in res["findings"]["foreign-allowed"]] == ["privileged"] and res["problems"] == 0
    res = run(3, [dict(marked, mfn=0x600)])               # d3: unprivileged, no grant
    assert res["findings"]["foreign-allowed"] == [] and res["problems"] == 1
