"""`xenscope log` on Xen PV MMU failures provoked on a real Xen (realsys.xenmmu): the debug build of
Debian's Xen prints the mm.c messages of each refused request; xenscope must link them into the one
causal chain Xen went through and name the root cause the module injected.

Truth, none of it from xenscope: the module's report (the mfns, slots, entries, VAs and PTE machine
addresses it used, each hypercall's rc), Xen's own console lines (read here with this file's own
regexes of the 4.17 format strings), QEMU's read of Xen's frame table (page_info after the
scenarios), and the very mm.c the debug hypervisor was compiled from (its line numbers).
"""
import json
import os
import re
import subprocess
import sys

import pytest

from realsys import xendebug
from realsys.xenhost import decode_page
from realsys.xenmmu import SLOT_K, SLOT_M, SLOT_N

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Xen 4.17's mm.c format strings (xen/arch/x86/mm.c), as printed by gdprintk ("%s:%d:%pv ")
PRINTED = (
    ("bad_type", r"Bad type \(saw (?P<saw>[0-9a-f]+) != exp (?P<exp>[0-9a-f]+)\) for mfn (?P<mfn>[0-9a-f]+)"),
    ("linear_pt", r"Attempt to create linear p\.t\. with write perms"),
    ("table_failure", r"Failure (?P<rc>-\d+) in promote_l(?P<level>\d)_table: slot (?P<slot>0x[0-9a-f]+|0)"),
    ("validate_error", r"Error while validating mfn (?P<mfn>[0-9a-f]+) \(pfn [0-9a-f]+\) for type (?P<type>[0-9a-f]+)"),
    ("pin_error", r"Error (?P<rc>-\d+) while pinning mfn (?P<mfn>[0-9a-f]+)"),
    ("bad_flags", r"Bad L(?P<level>\d) flags (?P<flags>[0-9a-f]+)"),
    ("not_pinned", r"mfn (?P<mfn>[0-9a-f]+) not pinned"),
    # get_page_from_l1e(): the frame's owner is not the one asked for; not declared in xenscope's
    # messages.py (outside this test's part: reported), so xenscope decodes only the next line
    ("owner_mismatch", r"pg_owner d(?P<pg_owner>\d+) l1e_owner d(?P<l1e_owner>\d+), but real_pg_owner d(?P<real>-?\d+)"),
    ("l1e_ref_error", r"Error getting mfn (?P<mfn>[0-9a-f]+) \(pfn [0-9a-f]+\) from L1 entry (?P<entry>[0-9a-f]+) "
                      r"for l1e_owner d(?P<l1e_owner>\d+), pg_owner d(?P<pg_owner>\d+)"),
)
DECIMAL = ("rc", "level", "slot", "pg_owner", "l1e_owner", "real")
UNDECLARED = ("owner_mismatch",)
# what each request got back from Xen (the module's rc), the same in both builds unless noted
RESULT = {"p2m_wrong_mfn": 0, "domu_foreign_self": -16, "foreign_self": -16, "domu_foreign_dom0": -1}
CONTEXT = re.compile(r"^\(XEN\) (?P<file>[\w/]+\.c):(?P<line>\d+):d(?P<domain>\d+)v(?P<vcpu>\d+) (?P<rest>.*)$")
PGT_L = {1: 0x2000000000000000, 2: 0x4000000000000000, 3: 0x6000000000000000}   # 4.17 PGT_lN_page_table


def printed(lines):
    """Xen's lines of one scenario as [(kind, fields, file, line)]."""
    out = []
    for text in lines:
        context = CONTEXT.match(text)
        assert context, f"an (XEN) line without gdprintk's file:line:dNvN: {text!r}"
        for kind, pattern in PRINTED:
            match = re.search(pattern, context["rest"])
            if match:
                fields = {k: int(v, 0) if k in DECIMAL else int(v, 16) for k, v in match.groupdict().items()}
                out.append((kind, fields, context["file"], int(context["line"])))
                break
        else:
            raise AssertionError(f"a line this test does not know: {text!r}")
    return out


def xenscope_log(*argv):
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", "log", *argv, "--json"], capture_output=True,
                       text=True, cwd=TOP, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def debug_logs(xen_mmu_debug):
    """xenscope's reading of the whole debug console and of each scenario's excerpt."""
    run = xen_mmu_debug
    whole = xenscope_log(run["console_path"])
    parts = {name: xenscope_log(scenario["path"]) for name, scenario in run["scenarios"].items()}
    return run, whole, parts


def chain_for(result, mfn):
    """The chain whose request (or, without one, whose root) names ``mfn``."""
    for chain in result["summary"]["chains"]:
        if (chain["request"] or {}).get("mfn") == mfn or (chain["root"] or {}).get("fields", {}).get("mfn") == mfn:
            return chain
    raise AssertionError(f"no chain for mfn {mfn:#x}: {[c['text'] for c in result['summary']['chains']]}")


def test_the_debug_build_is_debian_source_with_debug_on(xen_mmu_debug):
    run = xen_mmu_debug
    hv = run["hypervisor"]
    config = open(hv["config"]).read()
    assert "CONFIG_DEBUG=y" in config and "# CONFIG_DEBUG is not set" in open(hv["release_config"]).read()
    banner = run["xen_version"]["banner_line"]
    assert f"(Debian {run['version']})" in banner and " debug=y " in run["console"]
    assert subprocess.run(["readelf", "-S", hv["xen_syms"]], capture_output=True,
                          text=True).stdout.count(".debug_info") == 1, "the debug xen-syms has DWARF"
    if hv["reason"]:                       # the version the tier boots has no fetchable source here
        print("NOTE:", hv["reason"])


def test_xen_printed_each_refusal_and_the_module_saw_it_refused(xen_mmu_debug):
    scenarios = xen_mmu_debug["scenarios"]
    kinds = {name: [kind for kind, *_ in printed(s["xen_lines"])] for name, s in scenarios.items()}
    assert kinds["pin_writable_l1"] == ["bad_type", "pin_error"]
    assert kinds["cascade_l2"] == ["bad_type", "linear_pt", "table_failure", "validate_error", "pin_error"]
    assert kinds["cascade_l3"] == ["bad_type", "linear_pt", "table_failure", "validate_error",
                                   "linear_pt", "table_failure", "validate_error", "pin_error"]
    assert kinds["bad_l1_flags"] == ["bad_flags", "table_failure", "validate_error", "pin_error"]
    assert kinds["bad_l1_flags_update"] == ["bad_flags"]
    assert kinds["bad_l2_flags"] == ["bad_flags", "table_failure", "validate_error", "pin_error"]
    assert kinds["unpin_not_pinned"] == ["not_pinned"]
    assert kinds["p2m_wrong_mfn"] == []                # Xen is not asked: the guest's own P2M
    assert kinds["domu_foreign_self"] == kinds["foreign_self"] == ["owner_mismatch", "l1e_ref_error"]
    assert kinds["domu_foreign_dom0"] == []            # refused by XSM (-EPERM) without a word
    for name, scenario in scenarios.items():
        report = scenario["report"]
        assert report["scenario"] == name.replace("domu_", "")
        assert report["initial_domain"] == (0 if name.startswith("domu_") else 1)
        assert report["result"] == RESULT.get(name, -22), (name, report)


def test_the_printed_line_numbers_are_the_compiled_mm_c(xen_mmu_debug, debug_logs):
    """Every mm.c:NNNN Xen printed is, in the mm.c the debug build compiled, the gdprintk of that
    message (or the define_get_linear_pagetable(lN) line a linear-p.t. message expands from);
    xenscope names the release whose line numbers those are."""
    run, whole, _ = debug_logs
    source = open(os.path.join(xendebug.fetch_source(run["version"]), "tree", "xen", "arch", "x86",
                               "mm.c")).read().splitlines()
    seen = set()
    for scenario in run["scenarios"].values():
        for kind, fields, path, line in printed(scenario["xen_lines"]):
            assert path == "arch/x86/mm.c"
            text = source[line - 1]
            if kind == "linear_pt":
                assert re.match(r"define_get_linear_pagetable\(l[234]\);", text), (line, text)
            else:
                assert "gdprintk(" in text, (kind, line, text)
            if kind not in UNDECLARED:
                seen.add(line)
    match = whole["summary"]["source_lines"]
    assert match["checked"] == len(seen)
    assert {line["line"] for line in match["lines"]} == seen
    upstream = run["version"].rsplit("-", 1)[0]          # 4.17.5+72-g01140da4e8: upstream commit 01140da4e8
    assert upstream in match["releases"] or upstream.split("+")[0] in match["releases"], match["releases"]
    assert any("match the real mm.c of Xen" in s for s in whole["summary"]["story"])


def _same_messages(scenario, result):
    """xenscope's entries of a scenario's excerpt: the same kinds, mfns, slots, levels, flags."""
    entries = [e for e in result["entries"]]
    want = [line for line in printed(scenario["xen_lines"]) if line[0] not in UNDECLARED]
    assert [e["kind"] for e in entries] == [kind for kind, *_ in want]
    for entry, (kind, fields, _, line) in zip(entries, want):
        for key in ("mfn", "slot", "level", "flags", "saw", "exp", "type", "rc"):
            if key in fields:
                assert entry["fields"][key] == fields[key], (kind, key, entry, fields)
        assert entry["context"]["line"] == line and entry["context"]["domain"] == scenario["domain"]


@pytest.mark.parametrize("name", ["pin_writable_l1", "cascade_l2", "cascade_l3", "bad_l1_flags",
                                  "bad_l1_flags_update", "bad_l2_flags", "unpin_not_pinned",
                                  "domu_foreign_self", "foreign_self"])
def test_each_excerpt_is_decoded_as_xen_printed_it(debug_logs, name):
    run, _, parts = debug_logs
    _same_messages(run["scenarios"][name], parts[name])


def _writable_count(run, mfn):
    caf, taf = run["page_info"][mfn]
    page = decode_page(caf, taf)
    assert page["type"] == "writable", page          # QEMU's read: still a writable page after the test
    return page["type_count"]


def test_pin_of_a_writable_page(debug_logs):
    run, whole, parts = debug_logs
    report = run["scenarios"]["pin_writable_l1"]["report"]
    a = report["a_mfn"]
    for result in (whole, parts["pin_writable_l1"]):
        chain = chain_for(result, a)
        assert chain["request"]["kind"] == "pin" and chain["request"]["mfn"] == a
        assert chain["path"] == [] and chain["root"]["fields"]["mfn"] == a
        assert chain["root_cause"]["kind"] == "writable"
        assert chain["root_cause"]["type_count"] == _writable_count(run, a)
        assert chain["sentence"] in result["summary"]["story"]


def test_the_l2_cascade(debug_logs):
    run, whole, parts = debug_logs
    report = run["scenarios"]["cascade_l2"]["report"]
    a, b = report["a_mfn"], report["b_mfn"]
    assert report["b_slot"] == SLOT_N and report["b_entry"] >> 12 == a
    for result in (whole, parts["cascade_l2"]):
        chain = chain_for(result, b)
        assert [(n["mfn"], n["level"], n["slot"]) for n in chain["path"]] == [(b, 2, SLOT_N)]
        assert chain["path"][0]["type"] == PGT_L[2]
        assert chain["text"] == f"L2 mfn {b:#x} slot {SLOT_N:#x} -> mfn {a:#x}"
        assert chain["root_cause"]["kind"] == "writable" and chain["root_cause"]["mfn"] == a
        assert f"mfn {a:#x} is still mapped writable (type writable, count {_writable_count(run, a)})" \
            in chain["sentence"]


def test_the_l3_cascade_is_one_chain_with_one_root_cause(debug_logs):
    """Bad type A -> linear -> Failure l2 slot N -> Error validating B -> linear -> Failure l3 slot M ->
    Error validating C -> Error pinning C: one request, one root cause (A is writable)."""
    run, whole, parts = debug_logs
    scenario = run["scenarios"]["cascade_l3"]
    report = scenario["report"]
    a, b, c = report["a_mfn"], report["b_mfn"], report["c_mfn"]
    assert (report["b_slot"], report["c_slot"]) == (SLOT_N, SLOT_M)
    assert report["b_entry"] >> 12 == a and report["c_entry"] >> 12 == b
    want = f"L3 mfn {c:#x} slot {SLOT_M:#x} -> L2 mfn {b:#x} slot {SLOT_N:#x} -> mfn {a:#x}"
    for result in (whole, parts["cascade_l3"]):
        chain = chain_for(result, c)
        assert chain["text"] == want
        assert [(n["mfn"], n["level"], n["slot"], n["type"]) for n in chain["path"]] == \
            [(c, 3, SLOT_M, PGT_L[3]), (b, 2, SLOT_N, PGT_L[2])]
        assert chain["request"]["mfn"] == c and chain["request"]["rc"] == report["pin_rc"]
        assert chain["root_cause"] == {"kind": "writable", "mfn": a, "type_count": _writable_count(run, a),
                                       "text": chain["root_cause"]["text"]}
        assert chain["root_cause"]["text"].startswith(
            f"mfn {a:#x} is still mapped writable (type writable, count {_writable_count(run, a)})")
        # the two "linear p.t." lines are named as consequences, not causes
        linear = [n for n in result["entries"] if n["kind"] == "linear_pt" and n["line_no"] in chain["lines"]]
        assert len(linear) == 2
        assert "not a cause" in chain["sentence"]
        assert all(str(n["line_no"]) in chain["sentence"] for n in linear)
        assert not any("its own level (a linear" in s or "another L2" in s or "another L3" in s
                       for s in result["summary"]["story"])
        for entry in linear:
            assert "consequence" in entry["sentence"]
    lines = chain_for(whole, c)["lines"]
    one = [other for other in whole["summary"]["chains"] if set(other["lines"]) & set(lines)]
    assert len(one) == 1 and len(lines) == 8, "the cascade is one chain: all 8 lines Xen printed"


def test_bad_flags(debug_logs):
    run, whole, parts = debug_logs
    for name, level, flags in (("bad_l1_flags", 1, 1 << 22), ("bad_l2_flags", 2, 0x80)):
        report = run["scenarios"][name]["report"]
        table = report["table_mfn"]
        assert report["table_slot"] == SLOT_K
        for result in (whole, parts[name]):
            chain = chain_for(result, table)
            assert [(n["mfn"], n["level"], n["slot"]) for n in chain["path"]] == [(table, level, SLOT_K)]
            assert chain["root_cause"]["kind"] == "bad_flags" and chain["root_cause"]["flags"] == flags
    # bit 62 of the entry the module wrote is flag bit 22 of Xen's 24-bit encoding (get_pte_flags)
    assert run["scenarios"]["bad_l1_flags"]["report"]["table_entry"] >> 40 & 0xFFF000 == 1 << 22
    update = run["scenarios"]["bad_l1_flags_update"]["report"]
    chains = [c for c in parts["bad_l1_flags_update"]["summary"]["chains"]]
    assert len(chains) == 1 and chains[0]["request"] is None and chains[0]["path"] == []
    added = update["update_val"] ^ update["target_pte"]           # the bit the module set: 62
    assert added == 1 << 62 and chains[0]["root_cause"]["flags"] == added >> 40


def test_unpin_of_what_is_not_pinned(debug_logs):
    run, whole, parts = debug_logs
    mfn = run["scenarios"]["unpin_not_pinned"]["report"]["unpin_mfn"]
    for result in (whole, parts["unpin_not_pinned"]):
        chain = chain_for(result, mfn)
        assert chain["request"]["kind"] == "unpin" and chain["root"]["kind"] == "not_pinned"


def test_a_frame_of_another_domain(debug_logs):
    """The domU maps a frame of dom0 as its own (DOMID_SELF), dom0 a frame of the domU: both refused
    (-EBUSY) with "Error getting mfn"; the domU naming dom0 as the owner (foreigndom 0) is refused by
    XSM (-EPERM) and Xen prints nothing."""
    run, whole, parts = debug_logs
    domid = run["domu"]["domid"]
    assert domid > 0
    cases = (("domu_foreign_self", domid, run["domu"]["targets"]["foreign_self"]),
             ("foreign_self", 0, run["scenarios"]["domu_foreign_self"]["report"]["target_mfn"]))
    for name, domain, frame in cases:
        report = run["scenarios"][name]["report"]
        assert report["foreign_mfn"] == frame and report["update_domid"] == 0x7FF0      # DOMID_SELF
        for result in (whole, parts[name]):
            chain = chain_for(result, frame)
            assert chain["context"]["domain"] == domain and chain["path"] == []
            root = chain["root"]
            assert root["kind"] == "l1e_ref_error" and root["fields"]["mfn"] == frame
            assert (root["fields"]["l1e_owner"], root["fields"]["pg_owner"]) == (domain, domain)
            assert root["fields"]["entry"] >> 12 & 0xFFFFFFFFFF == frame
    silent = run["scenarios"]["domu_foreign_dom0"]["report"]
    assert silent["update_domid"] == 0 and silent["result"] == -1
    assert [c["context"]["domain"] for c in whole["summary"]["chains"]].count(domid) == 1


def test_the_whole_log_has_one_chain_per_refused_request(debug_logs):
    run, whole, _ = debug_logs
    refused = [name for name, s in run["scenarios"].items() if s["xen_lines"]]
    assert len(refused) == len(run["scenarios"]) - 2          # p2m_wrong_mfn, domu_foreign_dom0
    assert len(whole["summary"]["chains"]) == len(refused)


def test_with_the_dump_the_failing_entries_are_read_back(xen_mmu_debug):
    """--dump: the entry at each chain's failing slot is the one the module wrote; the root page's
    RW mappings come from the reverse map (xen refs): the PTE the module reported is among them."""
    run = xen_mmu_debug
    result = xenscope_log(run["console_path"], "--dump", run["dump"], "--xen-syms", run["xen_syms"])
    for name, table, entry_key in (("cascade_l2", "b", "b_entry"), ("cascade_l3", "c", "b_entry")):
        report = run["scenarios"][name]["report"]
        chain = chain_for(result, report[f"{table}_mfn"])
        found = chain["dump_entry"]
        assert (found["table_mfn"], found["slot"], found["entry"]) == (report["b_mfn"], SLOT_N, report[entry_key])
        assert found["target_mfn"] == report["a_mfn"] and found["target"]["type"] == "writable"
    story = " ".join(result["summary"]["story"])
    domid = run["domu"]["domid"]
    for name, owner, asker in (("domu_foreign_self", 0, domid), ("foreign_self", domid, 0)):
        frame = run["scenarios"][name]["report"]["foreign_mfn"]
        assert chain_for(result, frame)["dump_owner"] == owner
        assert f"mfn {frame:#x} belongs to d{owner}: d{asker} asked to map it as its own" in story
    for name in ("pin_writable_l1", "cascade_l2", "cascade_l3"):
        report = run["scenarios"][name]["report"]
        chain = chain_for(result, report.get("c_mfn", report.get("b_mfn", report["a_mfn"])))
        ptes = {(m["table_mfn"], m["slot"]) for m in chain["writable_mappings"]}
        assert (report["a_pte_maddr"] >> 12, (report["a_pte_maddr"] & 0xFFF) // 8) in ptes
        direct = next(m for m in chain["writable_mappings"] if m["table_mfn"] == report["a_pte_maddr"] >> 12)
        assert report["a_va"] in direct["vas"] and direct["domain"] == 0 and direct["entry"] == report["a_pte"]


def test_the_release_build_is_silent_and_refuses_alike(xen_mmu_debug, xen_mmu_release):
    """Debian's release Xen of the same version: the same requests are refused (same rc) without a
    single mm.c line, except _PAGE_GNTTAB (bit 62), which only debug builds refuse."""
    debug, release = xen_mmu_debug, xen_mmu_release
    assert " debug=n " in release["console"] and release["version"] == debug["version"]
    for name, scenario in release["scenarios"].items():
        assert not re.search(r"\.c:\d+:d\d", scenario["text"]), (name, scenario["xen_lines"])
        report, twin = scenario["report"], debug["scenarios"][name]["report"]
        if name in ("bad_l1_flags", "bad_l1_flags_update"):
            assert report["result"] == 0 and twin["result"] == -22, (name, report, twin)
        else:
            assert report["result"] == twin["result"], (name, report, twin)
    result = xenscope_log(release["console_path"])
    assert result["summary"]["chains"] == [] and result["summary"]["source_lines"] is None
    assert any("debug=n: a release build" in s for s in result["summary"]["story"])


def _request(request):
    """A chain's request without its line number (the serial capture has dom0's lines too)."""
    return {k: v for k, v in (request or {}).items() if k != "line_no"}


def _chains(result):
    return [(_request(chain["request"]), chain["text"], chain["root_cause"]["kind"], chain["root_cause"]["text"])
            for chain in result["summary"]["chains"]]


def test_the_dumps_own_console_ring_tells_the_same_chains(xen_mmu_debug, debug_logs):
    """No log file: ``log --from-dump`` reads Xen's console ring in the host dump and finds the same
    refused requests, the same paths through mm.c and the same root causes as in the console Xen's
    serial wrote (the ring holds the whole boot: conring_size=1M); ``check`` without a log names each
    of them from the ring."""
    run, whole, _ = debug_logs
    ring = xenscope_log("--from-dump", run["dump"], "--xen-syms", run["xen_syms"])
    assert ring["console"]["pages"] == "from the same dump" and "nothing dropped" in ring["console"]["description"]
    assert _chains(ring) == _chains(whole) and len(_chains(ring)) >= 6
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", "check", run["dump"], "--xen-syms", run["xen_syms"],
                        "--no-siblings", "--json"], capture_output=True, text=True, cwd=TOP, timeout=900)
    (report,) = json.loads(r.stdout)
    console = {c["name"]: c for c in report["checks"]}["console"]
    assert console["summary"].startswith("Xen's console ring in the dump: ") and console["status"] == "findings"
    found = [(_request(f["request"]), f["root_cause"]["kind"]) for f in console["findings"]
             if f["kind"] == "refused-request"]
    assert found == [(_request(chain["request"]), chain["root_cause"]["kind"]) for chain in whole["summary"]["chains"]]
    assert {f["source"] for f in console["findings"]} == {"dump"}


@pytest.mark.parametrize("symbols", ["dom0's kallsyms", "none"])
def test_p2m_check_finds_the_module_s_wrong_p2m_entry(xen_mmu_release, tmp_path, symbols):
    """p2m_wrong_mfn changed dom0's P2M entry of one of its pages (page_pfn) to the mfn of another of
    its pages (what __set_phys_to_machine would do; Xen is not asked, so it says nothing): p2m-check
    on the dump, with dom0's P2M symbols (its /proc/kallsyms) and with no guest symbol file (every PV
    domain by its shared_info), finds exactly that: the two pfns naming other_mfn (duplicate) and
    page_mfn, which no entry maps any more (m2p-orphan: its M2P still says page_pfn); the domU clean."""
    run = xen_mmu_release
    report = run["scenarios"]["p2m_wrong_mfn"]["report"]
    page_pfn, page_mfn, other_pfn, other_mfn = (report[k] for k in ("page_pfn", "page_mfn", "other_pfn", "other_mfn"))
    assert (report["p2m_before"], report["p2m_after"]) == (page_mfn, other_mfn), report
    guest = []
    if symbols != "none":
        smap = tmp_path / "dom0.map"
        smap.write_text("".join(f"{va:016x} D {name}\n" for name, va in run["dom0_p2m_symbols"].items()))
        guest = ["--domain", "0", "--kernel-syms", str(smap)]
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", "p2m-check", run["dump"], *guest, "--xen-syms",
                        run["xen_syms"] or run["xen_map"], "--limit", "0", "--json"], capture_output=True,
                       text=True, cwd=TOP, timeout=600)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr
    res = json.loads(r.stdout)
    doms = {0: res} if guest else {d["domain"]: d for d in res["domains"]}
    got = {k: sorted((f["pfn"], f["mfn"]) for f in v) for k, v in doms[0]["findings"].items()
           if v and k not in ("identity", "foreign-allowed")}
    assert got == {"duplicate": sorted([(page_pfn, other_mfn), (other_pfn, other_mfn)]),
                   "m2p-orphan": [(page_pfn, page_mfn)]}, got
    if not guest:
        assert doms[0]["sources"]["p2m"].startswith("from shared_info") and len(doms) == 2, doms.keys()
        domu = next(d for i, d in doms.items() if i)
        assert domu["problems"] == 0, domu["counts"]
