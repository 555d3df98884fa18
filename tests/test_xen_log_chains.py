"""Causal chains of ``xen log`` (xenstructs/xen/console/chains.py, chainstory.py, sourcelines.py) on
a REAL capture: data/xenlogs/xen-4.17.5-debug-mmu.log is every mm.c line the debug build of Debian's
Xen 4.17.5+72-g01140da4e8-1 printed for the PV MMU refusals realsys/xsmmu provoked from dom0
(tests/realsys/test_xen_mmu_failures.py makes it again at each run); the .json beside it is what
the module reported it injected in that run (mfns, slots, entries, PTE machine addresses).
"""

import json
import os

from xenstructs.xen.console import annotate_file, annotate_lines
from xenstructs.xen.console.chainstory import dump_story

LOGS = os.path.join(os.path.dirname(__file__), "data", "xenlogs")
REAL = os.path.join(LOGS, "xen-4.17.5-debug-mmu.log")
INJECTED = json.load(open(os.path.join(LOGS, "xen-4.17.5-debug-mmu.json")))["reports"]


def chains():
    return annotate_file(REAL)["summary"]["chains"]


def test_one_chain_per_refused_request_in_xen_order():
    got = [(c["request"] or {}).get("kind") for c in chains()]
    # pin_writable_l1, cascade_l2, cascade_l3, bad_l1_flags (pin), bad_l1_flags_update (no request),
    # bad_l2_flags (pin), unpin_not_pinned
    assert got == ["pin", "pin", "pin", "pin", None, "pin", "unpin"]


def test_the_l3_cascade_is_the_injected_chain():
    injected = INJECTED["cascade_l3"]
    a, b, c = injected["a_mfn"], injected["b_mfn"], injected["c_mfn"]
    chain = chains()[2]
    assert chain["text"] == (f"L3 mfn {c:#x} slot {injected['c_slot']:#x} -> L2 mfn {b:#x} slot "
                             f"{injected['b_slot']:#x} -> mfn {a:#x}")
    assert chain["root_cause"]["kind"] == "writable" and chain["root_cause"]["mfn"] == a
    assert chain["root_cause"]["text"].startswith(f"mfn {a:#x} is still mapped writable (type writable, count 1)")
    assert chain["lines"] == list(range(9, 17))             # the 8 lines Xen printed for it
    assert [n["linear_lines"] for n in chain["path"]] == [[13], [10]]
    assert "(10, 13)" in chain["sentence"] and "not a cause" in chain["sentence"]


def test_the_pin_of_the_writable_page_itself():
    injected = INJECTED["pin_writable_l1"]
    chain = chains()[0]
    assert chain["path"] == [] and chain["request"]["mfn"] == injected["a_mfn"] == injected["pin_mfn"]
    assert chain["root_cause"]["kind"] == "writable" and chain["request"]["rc"] == injected["pin_rc"]


def test_bad_flags_and_the_debug_only_bit():
    l1, update, l2 = chains()[3], chains()[4], chains()[5]
    assert [(n["mfn"], n["slot"]) for n in l1["path"]] == [(INJECTED["bad_l1_flags"]["table_mfn"],
                                                            INJECTED["bad_l1_flags"]["table_slot"])]
    assert l1["root_cause"]["flags"] == 1 << 22 and "refused only by debug builds" in l1["root_cause"]["text"]
    assert update["path"] == [] and update["root"]["kind"] == "bad_flags"
    assert "no table was being validated" in update["root_cause"]["text"]
    assert l2["root_cause"]["flags"] == 0x80 and l2["path"][0]["level"] == 2


def test_the_line_numbers_name_the_release_and_the_functions():
    match = annotate_file(REAL)["summary"]["source_lines"]
    assert {"4.17.4", "4.17.5", "4.17.6", "4.17.7", "4.17.5+72-g01140da4e8"} == set(match["releases"])
    functions = {line["line"]: line["function"] for line in match["lines"]}
    assert functions[1124] == "get_l2_linear_pagetable" and functions[1148] == "get_l3_linear_pagetable"
    assert functions[2160] == "mod_l1_entry" and functions[877] == "get_page_from_l1e"
    assert functions[2940] == "_get_page_type" and functions[3576] == functions[3642] == "do_mmuext_op"


def test_interleaved_vcpus_make_separate_chains():
    lines = open(REAL).read().splitlines()
    cascade = lines[3:8]                       # cascade_l2 on d0v0
    other = [line.replace("d0v0", "d0v1") for line in lines[1:3]]    # pin_writable_l1 on d0v1
    mixed = [cascade[0], other[0], cascade[1], cascade[2], other[1], cascade[3], cascade[4]]
    got = annotate_lines(mixed, version="4.17.5")["summary"]["chains"]
    assert sorted(c["text"] for c in got) == sorted([
        f"L2 mfn {INJECTED['cascade_l2']['b_mfn']:#x} slot 0x123 -> mfn {INJECTED['cascade_l2']['a_mfn']:#x}",
        f"mfn {INJECTED['pin_writable_l1']['a_mfn']:#x} (the page itself)"])


def test_a_suppression_notice_cuts_a_chain():
    lines = open(REAL).read().splitlines()[8:16]             # the L3 cascade
    lines.insert(4, "(XEN) printk: 5 messages suppressed.")  # after B's "Error while validating"
    got = annotate_lines(lines, version="4.17.5")["summary"]["chains"]
    assert len(got) == 2
    assert got[0]["gap_after"] == 5 and got[0]["request"] is None
    assert got[1]["root"] is None and got[1]["gap_before"] == 5
    assert "suppressed messages just before it (line 5)" in got[1]["root_cause"]["text"]


class FakeTarget:
    def __init__(self, words):
        self.words = words

    def read_u64(self, addr):
        return self.words[addr]


class FakeHost:
    def __init__(self, words, pages):
        self.t = FakeTarget(words)
        self.pages = pages

    def page(self, mfn):
        return self.pages[mfn]


def test_dump_story_with_a_stub_reverse_map():
    """--dump: the entry at the failing slot read back, and the RW mappings the reverse map gives
    (xenstructs.xen.refs.references(host, mfns, writable_only) -> [{mfn, domain, domain_name,
    table_mfn, level, slot, entry, writable, user, linear, vas}]), here a stub answering with the PTE
    the module reported (the real reverse map meets the real dump in tests/realsys)."""
    injected = INJECTED["cascade_l3"]
    a, b = injected["a_mfn"], injected["b_mfn"]
    writable = {"type": {"type": "writable", "text": "writable page, validated, type count 1"}, "owner": 0}
    host = FakeHost({(b << 12) + injected["b_slot"] * 8: injected["b_entry"]}, {a: writable})
    asked = []

    def references(host_, mfns, writable_only=False):
        asked.append((list(mfns), writable_only))
        return [{"mfn": a, "domain": 0, "domain_name": "d0", "table_mfn": injected["a_pte_maddr"] >> 12,
                 "level": 1, "slot": (injected["a_pte_maddr"] & 0xFFF) // 8, "entry": injected["a_pte"],
                 "writable": True, "user": False, "linear": False, "vas": [injected["a_va"]]}]

    told = [c for c in chains() if c["root_cause"]["kind"] == "writable"]
    story = dump_story([told[2]], host, references)
    assert asked == [([a], True)]
    assert told[2]["dump_entry"]["entry"] == injected["b_entry"] and told[2]["dump_entry"]["target_mfn"] == a
    assert told[2]["writable_mappings"][0]["vas"] == [injected["a_va"]]
    assert story == [f"line 9: in the dump, mfn {a:#x} is mapped RW by 1 entry: d0 L1 mfn "
                     f"{injected['a_pte_maddr'] >> 12:#x} slot {(injected['a_pte_maddr'] & 0xFFF) // 8:#x} = "
                     f"{injected['a_pte']:#x} (RW, va {injected['a_va']:#x})."]
