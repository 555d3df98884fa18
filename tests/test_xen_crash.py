"""Xen's crash blocks: the register dump, domain_crash_sync, Unhandled, the fixup's page walk
(xenstructs.xen.console.crash / crashstory), ``xenscope log`` and ``xenscope fault --log`` on them.

Two real captures (tests/data/xenlogs, the header line of each says how they were made): dom0 of
Debian's Xen 4.17.7 crashing under QEMU TCG ``-cpu max`` (its own iretq faults: QEMU's IRET makes
supervisor accesses under SMAP; Xen only gives up delivering the #PF), and a create_bounce_frame store
faulting in Xen on a bad guest stack pointer (the fixup path). The expected values are read from the
log text with plain regexes here, not from xenscope. The synthetic blocks below are built from Xen's
format strings (x86_64/traps.c _show_registers, traps.c fatal_trap / asm_domain_crash_synchronous,
entry.S) for paths the real captures do not cover: Xen's own SMAP violation, Xen < 4.14's fixup
address, a failed create_bounce_frame check.
"""
import io
import json
import os
import re

from xenstructs.cli import run as cli_run
from xenstructs.xen.console import annotate_lines, parse_log

DATA = os.path.join(os.path.dirname(__file__), "data", "xenlogs")
SMAP_LOG = os.path.join(DATA, "tcg-smap-4.17.7.log")
FIXUP_LOG = os.path.join(DATA, "bounce-fixup-4.17.7.log")


def run(argv):
    out = io.StringIO()
    rc = cli_run(argv, out=out)
    return rc, out.getvalue()


def lines_of(path):
    return open(path, errors="replace").read().splitlines()


def grab(path, regex):
    m = re.search(regex, open(path, errors="replace").read())
    assert m, regex
    return [int(g, 16) if re.fullmatch(r"[0-9a-f]+", g) else g for g in m.groups()]


def crashes_of(lines):
    return annotate_lines(lines)["summary"]["crashes"]


# ---------------------------------------------------------------------------------------------
# the real TCG/SMAP crash
# ---------------------------------------------------------------------------------------------

def test_smap_crash_block_is_read():
    (c,) = crashes_of(lines_of(SMAP_LOG))
    cs, rip = grab(SMAP_LOG, r"RIP:    ([0-9a-f]+):\[<([0-9a-f]+)>\]")
    cr0, cr4 = grab(SMAP_LOG, r"cr0: ([0-9a-f]+)\s+cr4: ([0-9a-f]+)")
    cr3, cr2 = grab(SMAP_LOG, r"cr3: ([0-9a-f]+)\s+cr2: ([0-9a-f]+)")
    address, symbol = grab(SMAP_LOG, r"fault at ([0-9a-f]+) (\S+)")
    (rsp,) = grab(SMAP_LOG, r"rsp: ([0-9a-f]+)")
    regs = c["registers"]
    assert (regs["cs"], regs["rip"], regs["cr0"], regs["cr4"], regs["cr3"], regs["cr2"], regs["rsp"]) == (
        cs, rip, cr0, cr4, cr3, cr2, rsp)
    assert c["context"] == "pv guest" and c["vcpu"] == "d0v0" and c["version"] == "4.17.7" and c["debug"] == "n"
    assert c["crashed"]["domain"] == 0 and c["crashed"]["vcpu"] == 0
    assert c["domain_crash_sync"]["address"] == address and c["domain_crash_sync"]["symbol"] == symbol
    assert c["domain_crash_sync"]["path"] == "no-handler"
    assert c["unhandled"]["vector"] == 14 and c["unhandled"]["error_code"] == 1
    assert c["unhandled"]["walk"]["va"] == cr2 and len(c["unhandled"]["walk"]["levels"]) == 4
    assert c["guest_stack"]["sp"] == rsp and len(c["guest_stack"]["words"]) == 64
    frame = c["bounce_frame"]
    assert frame["rip"] == rip and frame["error_code"] == 1 and frame["rsp"] == cr2 and frame["cs"] == cs & ~3
    assert c["access"]["by"] == "guest" and c["access"]["guest"] == "pv64"


def test_smap_log_story():
    rc, out = run(["log", SMAP_LOG])
    assert rc == 0
    assert "no handler registered ('Unhandled' at line" in out
    assert "made by d0v0 itself" in out and "SMEP and SMAP on" in out
    assert "CR2 0xffffffff82a03e60 is at the guest's RSP at the fault" in out


def test_smap_fault_log():
    rc, out = run(["fault", "--log", SMAP_LOG, "--json"])
    r = json.loads(out)
    assert rc == 0 and r["cpl"] == 3 and r["access"]["actor"] == "pv64" and r["error"]["value"] == 1
    assert r["state"]["cr4"] == 0x340660 and r["state"]["eflags"] == 0x286
    assert all(rule["status"] == "passed" for rule in r["rules"])
    assert not r["spurious"] and r["assumed"][0]["fires"] == ["smap"]
    assert "SMAP violation" in r["cause"] and "as assumed" in r["cause"]


# ---------------------------------------------------------------------------------------------
# the real create_bounce_frame fixup: Xen's own access on the guest's behalf
# ---------------------------------------------------------------------------------------------

def test_fixup_crash_is_xens_access():
    (c,) = crashes_of(lines_of(FIXUP_LOG))
    (walk_va,) = grab(FIXUP_LOG, r"Pagetable walk from ([0-9a-f]+):")
    (rsp,) = grab(FIXUP_LOG, r"rsp: ([0-9a-f]+)")
    sync = c["domain_crash_sync"]
    assert sync["path"] == "fixup" and sync["store"] == 6 and sync["walk"]["va"] == walk_va
    access = c["access"]
    assert access["by"] == "xen" and access["fault"]["cr2"] == walk_va == rsp - 8
    assert access["fault"]["cs"] == 0xE008 and "ip" not in access["fault"] and "eflags" not in access["fault"]
    assert c["guest_stack"]["note"] == "Stack empty."
    assert any("8 bytes below the guest's RSP" in line for line in c["story"])


def test_fixup_fault_log():
    rc, out = run(["fault", "--log", FIXUP_LOG, "--json"])
    r = json.loads(out)
    assert rc == 0 and r["cpl"] == 0 and r["access"]["actor"] == "xen" and r["access"]["on_behalf_of"] == "pv64"
    assert r["state"]["cr2"] == 0xFFFF8800000FFFF8 and r["access"]["kind"] == "write" and r["access"]["user"] is False
    assert r["state"]["cr4"] == 0x150660 and r["state"]["eflags"] is None     # the block's RFLAGS are the guest's
    assert r["rules"][0]["status"] == "fired" and "PML4E 0x0 has P=0" in r["cause"]
    rc, text = run(["fault", "--log", FIXUP_LOG])
    assert "made by: Xen on behalf of a 64-bit PV guest (CPL 0)" in text


# ---------------------------------------------------------------------------------------------
# synthetic: Xen's own SMAP violation (4.17 formats), Xen < 4.14 fixup address, a failed check
# ---------------------------------------------------------------------------------------------

XEN_SMAP = """\
(XEN) Xen SMAP violation
(XEN) ----[ Xen-4.17.7  x86_64  debug=n  Not tainted ]----
(XEN) CPU:    0
(XEN) RIP:    e008:[<ffff82d04031c2a1>] memcpy+0x11/0x20
(XEN) RFLAGS: 0000000000010246   CONTEXT: hypervisor (d1v0)
(XEN) rax: 0000000000000000   rbx: 0000000000000000   rcx: 0000000000000008
(XEN) r15: 0000000000000000   cr0: 0000000080050033   cr4: 0000000000372660
(XEN) cr3: 000000012a4f0000   cr2: 00007f0000001000
(XEN) ds: 0000   es: 0000   fs: 0000   gs: 0000   ss: 0000   cs: e008
(XEN) Xen call trace:
(XEN)    [<ffff82d04031c2a1>] R memcpy+0x11/0x20
(XEN)    [<ffff82d04027a0c4>] S arch_do_domctl+0x64/0x2f00
(XEN) Pagetable walk from 00007f0000001000:
(XEN)  L4[0x0fe] = 000000012a4f1067 0000000000001000
(XEN)  L3[0x000] = 000000012a4f2067 0000000000001001
(XEN)  L2[0x000] = 000000012a4f3067 0000000000001002
(XEN)  L1[0x001] = 800000012a4f4067 0000000000001003
(XEN)
(XEN) ****************************************
(XEN) Panic on CPU 0:
(XEN) FATAL TRAP: vec 14, #PF[0001]
(XEN) ****************************************
"""


def test_xen_own_smap_violation():
    (c,) = crashes_of(XEN_SMAP.splitlines())
    assert c["context"] == "hypervisor" and c["access"]["by"] == "xen"
    assert [entry["symbol"] for entry in c["call_trace"]] == ["memcpy+0x11/0x20", "arch_do_domctl+0x64/0x2f00"]
    assert "Xen SMAP violation" in c["access"]["why"]
    fields, _ = parse_log(XEN_SMAP.splitlines())
    assert fields["accessor"][0] == "xen" and fields["error"][0] == 1 and fields["cr2"][0] == 0x7F0000001000


def test_xen_own_smap_violation_fires_smap(tmp_path):
    log = tmp_path / "smap.log"
    log.write_text(XEN_SMAP)
    rc, out = run(["fault", "--log", str(log), "--json"])
    r = json.loads(out)
    assert rc == 0 and r["access"]["actor"] == "xen" and r["cpl"] == 0 and r["access"]["user"] is False
    status = {rule["rule"]: rule["status"] for rule in r["rules"]}
    assert status["smap"] == "fired" and status["user"] == "passed", r["rules"]
    assert r["cause"].startswith("SMAP violation") and "Xen (CPL 0)" in r["cause"]


OLD_FIXUP = """\
(XEN) Pagetable walk from ffff880000fffff0:
(XEN)  L4[0x110] = 0000000000000000 ffffffffffffffff
(XEN) domain_crash_sync called from entry.S: fault at ffff82d08023a8d5 create_bounce_frame+0x6d/0x1a9
(XEN) Domain 3 (vcpu#1) crashed on cpu#2:
(XEN) ----[ Xen-4.11.4  x86_64  debug=n   Not tainted ]----
(XEN) CPU:    2
(XEN) RIP:    e033:[<ffffffff81001000>]
(XEN) RFLAGS: 0000000000000246   EM: 0   CONTEXT: pv guest (d3v1)
(XEN) rbp: 0000000000000000   rsp: ffff880000100000   r8:  0000000000000000
(XEN) r15: 0000000000000000   cr0: 0000000080050033   cr4: 00000000003526e0
(XEN) cr3: 0000000200001000   cr2: 0000000000000000
(XEN) Guest stack trace from rsp=ffff880000100000:
(XEN)   Stack empty.
"""

CHECK = """\
(XEN) domain_crash_sync called from entry.S: fault at ffff82d040204b2a x86_64/entry.S#create_bounce_frame+0x101/0x177
(XEN) Domain 1 (vcpu#0) crashed on cpu#0:
(XEN) ----[ Xen-4.17.7  x86_64  debug=n  Not tainted ]----
(XEN) CPU:    0
(XEN) RIP:    e033:[<ffffffff81001000>]
(XEN) RFLAGS: 0000000000000246   EM: 0   CONTEXT: pv guest (d1v0)
(XEN) r15: 0000000000000000   cr0: 0000000080050033   cr4: 0000000000350660
(XEN) cr3: 0000000200001000   cr2: 0000000000000000
"""


def test_fixup_before_414_names_the_store():
    (c,) = crashes_of(OLD_FIXUP.splitlines())
    assert c["domain_crash_sync"]["path"] == "fixup" and c["access"]["by"] == "xen"
    assert c["access"]["fault"]["ip"] == 0xFFFF82D08023A8D5 and c["access"]["fault"]["cr2"] == 0xFFFF880000FFFFF0


def test_failed_check_is_no_access():
    (c,) = crashes_of(CHECK.splitlines())
    assert c["domain_crash_sync"]["path"] == "check" and c["access"]["by"] == "guest"
    assert "cr2" not in c["access"]["fault"]            # no page fault to explain
    assert any("a create_bounce_frame check that failed" in line for line in c["story"])


def test_actor_evidence_without_a_log():
    # RIP in Xen's text, CPL 0 on a PV host: Xen's access, judged at CPL 0
    rc, out = run(["fault", "--cr2", "0x7f0000001000", "--ip", "0xffff82d04031c2a1", "--error", "0x1",
                   "--cr4", "0x372660", "--eflags", "0x246", "--pte", "0x800000012a4f4067", "--mode", "4level",
                   "--json"])
    r = json.loads(out)
    assert rc == 0 and r["access"]["actor"] == "xen" and "Xen's text" in r["access"]["actor_reason"]
    rc, out = run(["fault", "--pv64", "--cs", "0xe010", "--cr2", "0x1000", "--error", "0x1", "--json"])
    r = json.loads(out)
    assert r["access"]["actor"] == "xen" and r["cpl"] == 0 and "only Xen runs in ring 0" in r["access"]["actor_reason"]


def test_a_debug_key_register_dump_is_no_crash():
    """keyhandler.c: 'd' (and '0') print the same "----[ Xen-..." register block as a crash; asked
    for by the operator (the "'d' pressed -> dumping registers" line before it), it is no crash."""
    from xenstructs.xen.console import annotate_lines
    block = ["(XEN) ----[ Xen-4.17.7  x86_64  debug=n  Not tainted ]----", "(XEN) CPU:    0",
             "(XEN) RIP:    e008:[<ffff82d04020e3a1>] default_idle+0x31/0x40",
             "(XEN) RFLAGS: 0000000000000246   CONTEXT: hypervisor",
             "(XEN) rax: 0000000000000000   rbx: ffff83003ffd7fff   rcx: 0000000000000008"]
    asked = annotate_lines(["(XEN) 'd' pressed -> dumping registers", "(XEN) ",
                            "(XEN) *** Dumping CPU0 host state: ***"] + block)
    assert asked["summary"]["crashes"] == []
    crashed = annotate_lines(["(XEN) Domain 0 (vcpu#0) crashed on cpu#0:"] + block)
    assert len(crashed["summary"]["crashes"]) == 1
