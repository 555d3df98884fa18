"""``xen log``: the Xen console-log annotator (xenstructs/xen/console/, commands/xenlog.py).

Sample lines are written from Xen's format strings (file named in each comment; tags RELEASE-4.4.0,
4.6.0, 4.9.0, 4.13.0, 4.19.0 and master of xen-project/xen); decoded values from
../shared/reference/xen-facts.md §1.3/§1.6 (page_info bits), §2.1 (24-bit PTE flags), §7.2 (error codes).
"""

import io
import json
import os
import subprocess
import sys
import time

import pytest

from xenstructs.cli import run as cli_run
from xenstructs.xen.console import annotate_file, annotate_lines, decode_flags24, parse_message, strip_prefix, split_context

HERE = os.path.dirname(__file__)
LOGS = os.path.join(HERE, "data", "xenlogs")
CORES = os.path.join(os.path.dirname(HERE), "cores")
XENSCOPE = os.path.join(os.path.dirname(sys.executable), "xenscope")


def one(line, version=None):
    r = annotate_lines([line], version=version)
    assert len(r["entries"]) == 1, r["entries"]
    return r["entries"][0]


# --- the seed (reference §1.6) ------------------------------------------------------------------

def test_seed_lines_decoded_as_the_reference_says():
    r = annotate_file(os.path.join(LOGS, "seed-4.4.log"))
    assert r["layout"]["name"].startswith("T1/")
    assert "exp 0x1000000000000000" in r["layout"]["why"] and "T1" in r["layout"]["why"]
    e = {x["line_no"]: x for x in r["entries"]}
    # Bad type (saw 7400000000000001 != exp 1000000000000000): writable, validated, count 1 vs L1
    bt = e[1]
    assert bt["kind"] == "bad_type"
    assert bt["fields"] == {"saw": 0x7400000000000001, "exp": 0x1000000000000000, "mfn": 0x8DF82B,
                            "pfn": 0x1A99DD}
    saw, exp = bt["decoded"]["saw"], bt["decoded"]["exp"]
    assert (saw["type"], saw["count"], "validated" in saw["flags"]) == ("writable", 1, True)
    assert (exp["type"], exp["count"], exp["flags"]) == ("l1", 0, [])
    assert bt["sentence"] == ("mfn 0x8df82b (guest pfn 0x1a99dd) is in use as a writable page (validated, "
                              "type count 1); Xen was asked to use it as an L1 page table and refused: the "
                              "page must have no writable mappings before it can become a page table.")
    assert bt["context"] == {"domain": 1, "vcpu": None, "file": "mm.c", "line": 2349}
    # exp 3000000000000000 = L3 (32-bit PAE guest's PDPT)
    assert e[2]["decoded"]["exp"]["type"] == "l3"
    assert "use it as an L3 page table" in e[2]["sentence"]
    # Error while validating ... type 2000000000000000: caf=8000000000000003 taf=2000000000000001
    ve = e[5]
    assert ve["kind"] == "validate_error"
    assert ve["fields"] == {"mfn": 0x10373AF, "pfn": 0x15CF40, "type": 0x2000000000000000,
                            "caf": 0x8000000000000003, "taf": 0x2000000000000001}
    d = ve["decoded"]
    assert d["type"]["type"] == "l2"
    assert (d["caf"]["state"], d["caf"]["count"], d["caf"]["flags"]) == ("inuse", 3, ["allocated"])
    assert not d["caf"]["cacheattr"]
    assert (d["taf"]["type"], d["taf"]["count"]) == ("l2", 1)
    assert not {"validated", "partial", "pinned"} & set(d["taf"]["flags"])
    assert ve["sentence"].startswith("validating mfn 0x10373af (guest pfn 0x15cf40) as an L2 page table failed (")
    assert "allocated, in use, 3 references" in ve["sentence"]
    assert "not validated, type count 1" in ve["sentence"]
    assert ve["sentence"].endswith("one of its entries was refused, see the message just before.")
    assert e[3]["kind"] == "linear_pt" and "RW set" in e[3]["sentence"]
    assert e[4]["fields"] == {"level": 2, "slot": 511, "function": "alloc_l2_table"}


def test_seed_summary_and_story():
    r = annotate_file(os.path.join(LOGS, "seed-4.4.log"))
    s = r["summary"]
    assert s["by_kind"] == {"bad_type": 2, "linear_pt": 1, "table_failure": 1, "validate_error": 1,
                            "pin_error": 1}
    rows = {row["mfn"]: row for row in s["by_mfn"]}
    assert set(rows) == {0x8DF82B, 0x8DF830, 0x10373AF}
    assert rows[0x10373AF]["kinds"] == {"validate_error": 1, "pin_error": 1}
    assert (rows[0x10373AF]["first_line"], rows[0x10373AF]["last_line"]) == (5, 6)
    assert rows[0x8DF82B]["saw_decoded"]["type"] == "writable"
    assert rows[0x10373AF]["taf_decoded"]["type"] == "l2"
    assert s["by_context"] == [{"domain": 1, "vcpu": None, "count": 6, "first_line": 1, "last_line": 6,
                                "kinds": s["by_kind"], "files": {"mm.c": 6}}]
    # the causal chains (console/chains.py): line 1 alone (a different mfn from line 2's: not the same
    # request); lines 2-6 one pin of 0x10373af whose L2 slot 511 (line 4) failed. Line 2 asks for an
    # L3 (exp 3000... under T1) where an L2 slot asks for an L1: a hand-written seed, not one request
    first, pin = s["chains"]
    assert first["root"]["fields"]["mfn"] == 0x8DF82B and first["request"] is None
    assert first["root_cause"]["kind"] == "writable" and first["root_cause"]["type_count"] == 1
    assert [(n["mfn"], n["level"], n["slot"]) for n in pin["path"]] == [(0x10373AF, 2, 511)]
    assert pin["request"] == {"kind": "pin", "mfn": 0x10373AF, "line_no": 6, "rc": None}
    assert pin["root"]["fields"]["mfn"] == 0x8DF830 and pin["root_cause"]["kind"] == "inconsistent"
    assert pin["lines"] == [2, 3, 4, 5, 6] and pin["path"][0]["linear_lines"] == [3]
    story = "\n".join(s["story"])
    assert "mfn 0x8df82b is still mapped writable (type writable, count 1)" in story
    assert "L2 mfn 0x10373af slot 0x1ff -> mfn 0x8df830" in story
    assert "these lines are not one request" in story
    # mm.c:2349/1156/1398/2195/3020 are no release's line numbers (tools/mmlines.py, real sources)
    assert s["source_lines"]["releases"] == [] and "match no Xen release" in story


# --- every message kind, from Xen's format strings ----------------------------------------------

def test_bad_type_417_values_t3():
    # mm.c __get_page_type() 4.17: "Bad type (saw %" PRtype_info " != exp %" PRtype_info ") for mfn %"
    # PRI_mfn " (pfn %" PRI_pfn ")"; T3: 0x2000... = L1, 0xe4...01 = writable, validated, count 1
    e = one("(XEN) mm.c:3058:d1v0 Bad type (saw e400000000000001 != exp 2000000000000000) for mfn 2a4f1 (pfn 3c00)",
            version="4.17.0")
    assert e["decoded"]["exp"]["type"] == "l1"
    assert (e["decoded"]["saw"]["type"], e["decoded"]["saw"]["count"]) == ("writable", 1)
    assert "validated" in e["decoded"]["saw"]["flags"]
    assert "use it as an L1 page table" in e["sentence"]
    r = annotate_file(os.path.join(LOGS, "xen-4.17.log"))
    assert r["layout"]["name"] == "T3/C3" and "4.17.3" in r["layout"]["why"]
    assert r["entries"][0]["decoded"]["exp"]["type"] == "l1"


def test_bad_type_other_combinations():
    e = one("(XEN) mm.c:2349:d1 Bad type (saw 1c00000000000002 != exp 7000000000000000) for mfn 1234 (pfn 5)")
    assert e["decoded"]["saw"]["type"] == "l1" and "map it writable" in e["sentence"]
    assert "read-only" in e["sentence"]
    e = one("(XEN) Bad type (saw 7400000000000001 != exp 1000000000000000) for mfn 1 (pfn ffffffffffffffff)")
    assert "no guest pfn" in e["sentence"]


@pytest.mark.parametrize("line,kind,fields,phrase", [
    # mm.c 4.4 "Type count overflow on pfn %lx" / 4.9+ "Type count overflow on mfn %"PRI_mfn
    ("mm.c:2318:d0 Type count overflow on pfn 1a2b", "type_overflow", {"mfn": 0x1A2B}, "overflow"),
    ("mm.c:2918:d0v0 Type count overflow on mfn 1a2b", "type_overflow", {"mfn": 0x1A2B}, "leak"),
    # mm.c alloc_l2_table 4.4-4.8 "entry %d", 4.9-4.12 "slot %#x", 4.13 "Failure %d in ...",
    # 4.14+ promote_lN_table
    ("mm.c:1398:d1 Failure in alloc_l1_table: entry 7", "table_failure",
     {"level": 1, "slot": 7, "function": "alloc_l1_table"}, "entry 7"),
    ("mm.c:1500:d1v0 Failure in alloc_l3_table: slot 0x1ff", "table_failure",
     {"level": 3, "slot": 0x1FF, "function": "alloc_l3_table"}, "each covers 1 GiB"),
    ("mm.c:1500:d1v0 Failure -22 in alloc_l2_table: slot 0", "table_failure",
     {"level": 2, "slot": 0, "function": "alloc_l2_table", "rc": -22}, "-EINVAL"),
    ("mm.c:1500:d1v0 Failure -1 in promote_l4_table: slot 0x100", "table_failure",
     {"level": 4, "slot": 0x100, "function": "promote_l4_table", "rc": -1}, "0xffff800000000000"),
    # mm.c define_get_linear_pagetable(); "(feature disabled)" since XSA-240
    ("mm.c:1156:d1v0 Attempt to create linear p.t. (feature disabled)", "linear_pt", {"disabled": True},
     "pv-linear-pt=0"),
    # mm.c do_mmuext_op(): 4.4-4.6 "Error while pinning mfn %lx", 4.7+ "Error %d while pinning mfn %"
    ("mm.c:3020:d1 Error while pinning mfn 10373af", "pin_error", {"mfn": 0x10373AF}, "pin"),
    ("mm.c:3530:d1v0 Error -16 while pinning mfn 2a4f0", "pin_error", {"mfn": 0x2A4F0, "rc": -16}, "-EBUSY"),
    ("mm.c:3040:d1 Mfn 2a4f0 already pinned", "already_pinned", {"mfn": 0x2A4F0}, "second time"),
    ("mm.c:3540:d1v0 mfn 2a4f0 not pinned", "not_pinned", {"mfn": 0x2A4F0}, "not pinned"),
    # mm.c get_page_from_l1e(): 4.4 "l1e_owner=%d, pg_owner=%d", 4.9+ "l1e_owner d%d, pg_owner d%d"
    ("mm.c:880:d1 Error getting mfn 2b000 (pfn 3c) from L1 entry 000000002b000025 for l1e_owner=1, pg_owner=7",
     "l1e_ref_error", {"mfn": 0x2B000, "pfn": 0x3C, "entry": 0x2B000025, "l1e_owner": 1, "pg_owner": 7},
     "foreign mapping"),
    ("mm.c:880:d0v0 Non-privileged (3) attempt to map I/O space 000fee00", "io_map",
     {"domain": 3, "mfn": 0xFEE00}, "iomem"),
    # mm.c get_page_from_pagenr() (4.4) / get_page_from_mfn() (4.9+)
    ("mm.c:800:d1 Could not get page ref for pfn 3fffff", "page_ref", {"mfn": 0x3FFFFF}, "not owned"),
    ("mm.c:800:d1v0 Could not get page ref for mfn 3fffff", "page_ref", {"mfn": 0x3FFFFF}, "invalid"),
    # mm.c get_page(): 4.6 "Error pfn %lx: rd=%d od=%d caf=%08lx taf=%016lx"
    ("mm.c:2101:d1 Error pfn 1234: rd=1 od=32753 caf=8000000000000001 taf=0000000000000000",
     "get_page_error", {"mfn": 0x1234, "rd": "1", "od": "32753", "caf": 0x8000000000000001, "taf": 0},
     "belongs to dom_io"),
    # 4.4: "rd=%p, od=%p, caf=%08lx, taf=%"
    ("mm.c:2011:d1 Error pfn 1234: rd=ffff830012345000, od=0000000000000000, caf=00000000, taf=0000000000000000",
     "get_page_error", {"mfn": 0x1234, "rd": "ffff830012345000", "od": "0000000000000000", "caf": 0,
                        "taf": 0}, "the domain at ffff830012345000"),
    # mm.c steal_page() 4.6: "Bad page %lx: ed=%d sd=%d caf=%08lx taf=%"
    ("mm.c:4294:d0 Bad page 5678: ed=1 sd=32756 caf=8000000000000002 taf=7400000000000001", "steal_error",
     {"mfn": 0x5678, "ed": "1", "sd": "32756", "caf": 0x8000000000000002, "taf": 0x7400000000000001},
     "actual owner dom_invalid"),
    # adjust_guest_l1e(): 4.4-4.9 "set to kernel page", pv/mm.h 4.10+ "set in kernel page"
    ("mm.c:1222:d1 Global bit is set to kernel page 2b000", "global_kernel", {"mfn": 0x2B000}, "Global"),
    ("mm.h:119:d1v0 Global bit is set in kernel page 2b000", "global_kernel", {"mfn": 0x2B000}, "global"),
    # traps.c: printk("Xen SM%cP violation\n"), printk(XENLOG_G_ERR "%pv fatal SM%cP violation\n")
    ("Xen SMAP violation", "xen_smap", {"what": "SMAP"}, "CR4.SMAP"),
    ("d3v0 fatal SMEP violation", "guest_smap", {"what": "SMEP"}, "smep=hvm"),
    # pv/traps.c pv_inject_event(): master "Unhandled: vec %u, %s[%04x]"; 4.5-4.19 "Unhandled %s
    # fault/trap [#%d, ec=%04x]"; 4.4 "Unhandled %s fault/trap [#%d] on VCPU %d [ec=%04x]"
    ("traps.c:93:d1v0 Unhandled: vec 14, #PF[0002]", "unhandled",
     {"vector": 14, "name": "#PF", "error_code": 2}, "supervisor write access, not-present page"),
    ("traps.c:101:d1v0 Unhandled page fault fault/trap [#14, ec=0003]", "unhandled",
     {"vector": 14, "name": "page fault", "error_code": 3}, "permissions violation"),
    ("traps.c:456:d1 Unhandled page fault fault/trap [#14] on VCPU 0 [ec=0004]", "unhandled",
     {"vector": 14, "name": "page fault", "vcpu": 0, "error_code": 4}, "user read access"),
    # traps.c fatal_trap() 4.15+: "FATAL TRAP: vec %u, %s[%04x]%s"
    ("FATAL TRAP: vec 13, #GP[0000]", "fatal_trap", {"vector": 13, "name": "#GP", "error_code": 0}, "panics"),
])
def test_message_kinds(line, kind, fields, phrase):
    e = one("(XEN) " + line)
    assert e["kind"] == kind
    assert e["fields"] == fields
    assert phrase in e["sentence"], e["sentence"]


def test_bad_flags_24bit_encoding():
    # mm.c get_page_from_l1e(): "Bad L1 flags %x" prints get_pte_flags() & disallow (reference §2.1)
    e = one("(XEN) mm.c:1233:d1v0 Bad L1 flags 800000")
    assert e["fields"] == {"level": 1, "flags": 0x800000}
    assert e["decoded"]["flags"]["names"] == ["NX"] and e["decoded"]["flags"]["pte_bits"] == [63]
    assert "NX" in e["sentence"]
    f = decode_flags24(0x401098, 1)          # PCD|PAT|bit 52|bit 62
    assert f["pte_bits"] == [3, 4, 7, 12 + 40, 22 + 40]
    assert f["names"] == ["PWT", "PCD", "PAT", "GUEST_KERNEL(bit 52)", "GNTTAB(bit 62)"]
    assert decode_flags24(0x80, 2)["names"] == ["PSE"]
    e = one("(XEN) mm.c:1300:d1v0 Bad L3 flags 18")
    assert "PWT PCD" in e["sentence"] and "L3" in e["sentence"]


def test_l1e_entry_decoded():
    e = one("(XEN) mm.c:977:d1v1 Error getting mfn 2b000 (pfn ffffffffffffffff) from L1 entry "
            "800000002b000067 for l1e_owner d1, pg_owner d1")
    ent = e["decoded"]["entry"]
    assert ent["flags"] == ["P", "RW", "US", "A", "D", "XD"] and ent["pfn"] == 0x2B000
    assert "writable (type) reference" in e["sentence"] and "foreign" not in e["sentence"]


def test_get_page_error_pd_format():
    # mm.c get_page() 4.13+: gprintk(XENLOG_INFO, "Error mfn %"PRI_mfn": rd=%pd od=%pd caf=%08lx taf=%"...)
    e = one("(XEN) d1v1 Error mfn 2b000: rd=d1 od=d[IO] caf=8000000000000001 taf=0000000000000000",
            version="4.17")
    assert e["context"] == {"domain": 1, "vcpu": 1, "file": None, "line": None}
    assert e["fields"]["rd"] == "d1" and e["fields"]["od"] == "d[IO]"
    assert "for d1 failed: the page belongs to d[IO]" in e["sentence"]
    assert e["decoded"]["caf"]["count"] == 1


# --- prefixes, timestamps, suppression, junk ----------------------------------------------------

@pytest.mark.parametrize("prefix", [
    "", "(XEN) ", "(XEN) [  123.456789] ", "(XEN) [2024-01-01 12:00:00] ", "(XEN) [2024-01-01 12:00:00.123] ",
    "[2024-01-01 12:00:00] (XEN) ", "[2024-01-01 12:00:00] (XEN) [   12.000001] ", "[  5.1] ",
])
def test_prefix_variants(prefix):
    e = one(prefix + "mm.c:2359:d0v1 Bad type (saw 7400000000000001 != exp 1000000000000000) for mfn 8df82b (pfn 1a99dd)\r\n")
    assert e["fields"]["mfn"] == 0x8DF82B
    assert e["context"] == {"domain": 0, "vcpu": 1, "file": "mm.c", "line": 2359}


def test_context_forms():
    assert split_context("mm.c:2349:d1 X")[0] == {"domain": 1, "vcpu": None, "file": "mm.c", "line": 2349}
    assert split_context("arch/x86/mm.c:12:d[IDLE]v3 X")[0]["domain"] == "[IDLE]"
    assert split_context("d0v1 X") == ({"domain": 0, "vcpu": 1, "file": None, "line": None}, "X")
    assert split_context("Bad type") == (None, "Bad type")
    assert strip_prefix("(XEN) [error_code=0002]") == "[error_code=0002]"


def test_suppressed_counted():
    # console.c: printk_start_of_line("(XEN) "); "printk: " N " messages suppressed.\n"
    r = annotate_lines(["(XEN) printk: 12 messages suppressed.", "(XEN) [  1.0] printk: 3 messages suppressed.",
                        "(XEN) mm.c:1:d1 Mfn 5 already pinned", "... 4 messages suppressed"])
    assert r["summary"]["suppressed"] == 19 and r["summary"]["suppressed_lines"] == 3
    assert any("19 messages were suppressed" in s for s in r["summary"]["story"])


def test_binary_junk(tmp_path):
    p = tmp_path / "junk.log"
    with open(p, "wb") as f:
        f.write(os.urandom(20000))
        f.write(b"\n\xff\xfe(XEN) mm.c:2359:d0v1 Bad type (saw 7400000000000001 != exp 1000000000000000) "
                b"for mfn 8df82b (pfn 1a99dd)\r\n")
        f.write(b"\x00" * 100000)                       # one huge line without a newline
        f.write(b"\n(XEN) mm.c:1:d1 Mfn 5 already pinned\n")
    r = annotate_file(str(p))
    kinds = [e["kind"] for e in r["entries"]]
    assert "bad_type" in kinds and "already_pinned" in kinds


# --- walks and faults -----------------------------------------------------------------------

def test_walk_and_fatal_page_fault():
    # x86_64/traps.c show_page_walk(); traps.c do_page_fault(): panic("FATAL PAGE FAULT\n[error_code=%04x]\n
    # Faulting linear address: %p\n")
    r = annotate_file(os.path.join(LOGS, "fatal-4.19.log"))
    assert r["layout"]["why"].startswith("Xen 4.19.1 from the log")
    by = {e["line_no"]: e for e in r["entries"]}
    assert by[5]["kind"] == "walk_start" and by[5]["fields"]["va"] == 0xFFFF8300BFE00000
    assert "direct map" in by[5]["sentence"]
    l4 = by[6]
    assert l4["fields"] == {"level": 4, "index": 0x106, "entry": 0x80000000BFE35063,
                            "m2p": 0xFFFFFFFFFFFFFFFF, "pse": False}
    assert l4["decoded"]["entry"]["pfn"] == 0xBFE35 and "no guest pfn" in l4["sentence"]
    assert "not present" in by[8]["sentence"]
    fatal = by[12]
    assert fatal["kind"] == "fatal_pf" and fatal["fields"]["error_code"] == 2
    assert fatal["decoded"]["error_code"]["text"] == "supervisor write access, not-present page"
    assert by[14]["fields"]["va"] == 0xFFFF8300BFE00000
    w = r["summary"]["walks"][0]
    assert [lv["level"] for lv in w["levels"]] == [4, 3, 2]
    story = " ".join(r["summary"]["story"])
    assert "Xen faulted at va 0xffff8300bfe00000" in story
    assert "the walk stops at L2[0x1ff] = 0x0, which is not present, as the error code says (P=0)" in story


def test_single_line_fatal_and_readonly_leaf_with_pse():
    lines = ["(XEN) Pagetable walk from ffff82d080200000:",
             "(XEN)  L4[0x105] = 00000000bfe35063 ffffffffffffffff",
             "(XEN)  L3[0x142] = 00000000bfe34063 ffffffffffffffff",
             "(XEN)  L2[0x001] = 00000000bf6000e1 ffffffffffffffff (PSE)",
             "(XEN) FATAL PAGE FAULT [error_code=0003]",
             "(XEN) Faulting linear address: ffff82d080200000"]
    r = annotate_lines(lines, version="4.6")
    by = {e["line_no"]: e for e in r["entries"]}
    assert by[4]["fields"]["pse"] is True and "2 MiB page" in by[4]["sentence"]
    assert by[5]["fields"]["error_code"] == 3
    assert "L2[0x001] is read-only (RW clear) and the access was a write" in " ".join(r["summary"]["story"])


def test_unhandled_pf_then_walk():
    lines = ["(XEN) d1v0 Unhandled: vec 14, #PF[0004]",
             "(XEN) Pagetable walk from 0000000000400000:",
             "(XEN)  L4[0x000] = 0000000000000000 ffffffffffffffff"]
    r = annotate_lines(lines, version="4.20")
    story = " ".join(r["summary"]["story"])
    assert "the guest faulted at va 0x400000" in story and "L4[0x000]" in story


# --- scale, CLI -----------------------------------------------------------------------------

def test_huge_input_bounded(tmp_path):
    p = tmp_path / "big.log"
    with open(p, "w") as f:
        for i in range(200000):
            r = i % 4
            if r == 0:
                f.write(f"(XEN) [{i:6d}.000000] mm.c:2359:d1v0 Bad type (saw 7400000000000001 != exp "
                        f"1000000000000000) for mfn {0x100000 + i % 50000:x} (pfn {i:x})\n")
            elif r == 1:
                f.write(f"(XEN) [{i:6d}.000000] sched: nothing to see {i}\n")
            elif r == 2:
                f.write(f"(XEN) mm.c:2600:d1v{i % 4} Error while validating mfn {0x200000 + i:x} (pfn {i:x}) "
                        f"for type 2000000000000000: caf=8000000000000003 taf=2000000000000001\n")
            else:
                f.write("(XEN) printk: 3 messages suppressed.\n")
    t = time.time()
    r = annotate_file(str(p), keep=200)
    assert time.time() - t < 5
    s = r["summary"]
    assert s["by_kind"] == {"bad_type": 50000, "validate_error": 50000}
    assert s["suppressed"] == 150000
    assert len(r["entries"]) <= 400 and s["entries_dropped"] == 100000 - len(r["entries"])
    assert len(s["by_mfn"]) <= 20000 and s["mfns_not_tracked"] > 0
    assert len(s["by_context"]) == 2
    assert any("a mass problem" in x for x in s["story"])
    assert len(s["story"]) < 12


def test_cli_json_file():
    out = io.StringIO()
    assert cli_run(["log", os.path.join(LOGS, "seed-4.4.log"), "--json"], out=out) == 0
    r = json.loads(out.getvalue())
    assert set(r) == {"layout", "entries", "summary"}
    assert set(r["layout"]) == {"name", "why"}
    e = r["entries"][0]
    assert set(e) == {"line_no", "text", "kind", "context", "fields", "decoded", "sentence"}
    assert e["fields"]["saw"] == 0x7400000000000001
    assert {"by_kind", "by_mfn", "by_context", "suppressed", "story"} <= set(r["summary"])


def test_cli_text_limit_and_xen_option():
    buf = io.StringIO()
    assert cli_run(["log", os.path.join(LOGS, "xen-4.17.log"), "--limit", "1", "--xen", "4.16.1"], out=buf) == 0
    out = buf.getvalue()
    assert out.startswith("layout: T2/C2 (--xen 4.16.1")
    assert "more annotated line(s) not shown" in out and "the likely story:" in out
    assert "suppressed by Xen's rate limit: 12 message(s)" in out


def test_cli_stdin_subprocess():
    data = open(os.path.join(LOGS, "seed-4.4.log"), "rb").read()
    p = subprocess.run([XENSCOPE, "log", "-", "--json"], input=data, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["summary"]["by_kind"]["bad_type"] == 2


def test_cli_bad_path_exit_2(tmp_path):
    for path in (str(tmp_path / "nope.log"), str(tmp_path)):
        p = subprocess.run([XENSCOPE, "log", path], capture_output=True, text=True, timeout=60)
        assert p.returncode == 2
        assert p.stdout == "" and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert p.stderr.startswith("xenscope log: cannot read")
    p = subprocess.run([XENSCOPE, "log", os.path.join(LOGS, "seed-4.4.log"), "--xen", "banana"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1


def test_parse_message_ignores_other_lines():
    assert parse_message("Scrubbing Free RAM on 1 nodes using 2 CPUs") is None
    assert parse_message("Bad type in alloc_page_type 5 t=1 c=2") is None


# --- --dump against the Xen 4.6 host core (builder manifest is the truth) ------------------

def test_dump_option_against_host_core():
    # cores/builder/xenhost.py writes the log; its manifest tags each line with the violation it shows
    # ("writable-as-table", "linear-rw", ..., "pagetable-walk", "fatal-page-fault") and that violation's mfn
    core, log, manifest, smap = (os.path.join(CORES, f"xen-4.6-host.{x}") for x in ("core", "log", "json", "map"))
    missing = [p for p in (core, log, manifest) if not os.path.exists(p)]
    assert not missing, f"waiting for the Xen 4.6 host core fixtures: {missing}"
    m = json.load(open(manifest))
    buf = io.StringIO()
    argv = ["log", log, "--dump", core, "--xen", "4.6.0", "--json"]
    if os.path.exists(smap):
        argv += ["--xen-syms", smap]
    assert cli_run(argv, out=buf) == 0
    r = json.loads(buf.getvalue())
    assert r["layout"]["name"].startswith("T1/C1") and "4.6.0" in r["layout"]["why"]
    entries = {e["line_no"]: e for e in r["entries"]}
    for ln in m["log"]["lines"]:
        if ln["line_no"] not in entries:           # "[error_code=%04x]": merged into FATAL PAGE FAULT
            assert entries[ln["line_no"] - 1]["kind"] == "fatal_pf"
            assert entries[ln["line_no"] - 1]["fields"]["error_code"] == 2
            continue
        e = entries[ln["line_no"]]                 # every tagged line is recognised
        if ln["kind"] == "pagetable-walk" and e["kind"] == "walk_entry":
            assert e["decoded"]["entry"]["pfn"] == ln["mfn"]
        elif ln["kind"] in ("writable-as-table", "table-mapped-rw") and e["kind"] == "bad_type":
            assert e["fields"]["mfn"] == ln["mfn"]
        elif e["kind"] == "validate_error":
            assert e["fields"]["mfn"] == ln["mfn"]
    assert r["summary"]["suppressed"] == 14
    frames = {f["mfn"]: f for f in m["frames"]}
    rows = {row["mfn"]: row for row in r["summary"]["by_mfn"]}
    checked = 0
    for mfn, row in rows.items():
        page = row["page"]
        if mfn in frames:
            f = frames[mfn]
            assert "error" not in page, page
            assert (page["count_info"], page["type_info"]) == (f["count_info"], f["type_info"])
            assert page["owner"] == f["owner"]
            checked += 1
        else:
            assert "error" in page or "count_info" in page
    assert checked
    story = " ".join(r["summary"]["story"])
    # lines 22-24 follow a "messages suppressed" notice: the log lost the cause; the dump has the entry
    linear = next(v for v in m["violations"] if v["kind"] == "linear-rw")
    table_level, slot = linear["path"][-1]
    assert (f"slot {slot:#x} of L{table_level} mfn {linear['table_mfn']:#x} = {linear['entry']:#x} (P RW US A) "
            f"-> mfn {linear['target_mfn']:#x}, L2 page table") in story
    assert "an RW linear (recursive) mapping of an L2 table" in story
    assert "Xen's rate limit suppressed messages just before it (line 21)" in story
    chain = next(c for c in r["summary"]["chains"] if c["path"] and c["path"][0]["mfn"] == linear["table_mfn"])
    assert chain["dump_entry"]["target_mfn"] == linear["target_mfn"]
    assert "not present" in story or "read-only" in story        # the FATAL PAGE FAULT's walk


def test_the_issue_seed_lines_exactly():
    """The four lines of the Xen-frames issue, decoded as the reference's worked example (§1.6) says."""
    import json
    import subprocess
    import sys
    path = os.path.join(os.path.dirname(__file__), "data", "xenlogs", "seed-issue.log")
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", "log", path, "--json"], capture_output=True,
                       text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["layout"]["name"].startswith("T1/")                 # exp 0x1000000000000000: T1 (<= 4.9)
    bad, linear, failure, validating = res["entries"]
    assert bad["context"]["domain"] == 0 and bad["context"]["vcpu"] == 1
    assert bad["fields"]["mfn"] == 0x8df82b and bad["fields"]["pfn"] == 0x1a99dd
    assert bad["decoded"]["saw"]["type"] == "writable" and bad["decoded"]["saw"]["count"] == 1
    assert "validated" in bad["decoded"]["saw"]["flags"]
    assert bad["decoded"]["exp"]["type"] == "l1"
    assert linear["kind"] == "linear_pt" and not linear["fields"]["disabled"]
    assert failure["fields"]["slot"] == 390 and failure["fields"]["level"] == 2
    assert validating["fields"]["mfn"] == 0x10373af and validating["fields"]["pfn"] == 0x15cf40
    assert validating["decoded"]["type"]["type"] == "l2"                       # type 0x2000... under T1
    caf, taf = validating["decoded"]["caf"], validating["decoded"]["taf"]
    assert caf["state"] == "inuse" and caf["count"] == 3 and "allocated" in caf["flags"]
    assert taf["type"] == "l2" and taf["count"] == 1 and "validated" not in taf["flags"]
    story = " ".join(res["summary"]["story"])
    assert "0x8df82b" in story and "writable" in story


def test_hand_edited_slot_with_leading_zero_is_read_not_raised():
    # Xen prints "slot %#x" (0x7, or 0); a hand-edited log may say 07: still hex, never a ValueError
    from xenstructs.xen.console import parse_message
    assert parse_message("Failure in alloc_l2_table: slot 07")[1]["slot"] == 7
    assert parse_message("Failure in alloc_l2_table: slot 0x1f")[1]["slot"] == 0x1f


def test_every_hypervisor_slot_address_has_a_region():
    # Xen's config.h: 0xffff804000000000-0xffff807fffffffff is "Reserved (guest accessible)"
    from xenstructs.xen.release import region_of
    assert "reserved" in region_of(0xFFFF804000000000)
    assert all(region_of(0xFFFF800000000000 + k * (1 << 36)) for k in range(0x800))
