"""``xen fault``: every rule fires and passes on hand-built states; the RHEL6 32-bit PV SMAP seed case
on Xen 4.5.0 (fires) and 4.5.4 / 4.6.3 / 4.7.0 (Xen clears SMAP: look elsewhere); 64-bit PV; spurious
faults; missing pieces named; capstone; logs; the CLI (exit 0, 2 on bad input)."""
import io
import json
import os

import pytest

from conftest import CORES
from xenstructs import decode as D
from xenstructs.cli import run as cli_run
from xenstructs.errors import XenscopeError
from xenstructs.fault import FaultState, disassemble, explain, parse_log, xen_clears_smep_smap_for_pv32

SEED_PTE = 0x800000007fffe067                 # P RW US A D XD
USER_TABLE = 0x1000 | 0x67 & ~0x40            # P RW US A (a table pointer)
EFER_LM_NXE = D.EFER_LME | D.EFER_LMA | D.EFER_NXE
CR4_SMAP_SMEP = 0x3406f0
SEED_ARGS = ["--pv32", "--cr2", "0x805f3a0", "--error", "0x3", "--ip", "0xc0617233", "--cs", "0xe019",
             "--eflags", "0x246", "--cr4", "0x3406f0", "--guest-cr4", "0x6f0", "--pte", "0x800000007fffe067",
             "--mode", "pae"]


def state(entries=None, **kw):
    s = FaultState(**kw)
    for k, v in (entries or {}).items():
        s.give(k, v, f"--{k.lower()} option")
    return s


def full4(pte, pde=USER_TABLE, pdpte=USER_TABLE, pml4e=USER_TABLE):
    return {"PML4E": pml4e, "PDPTE": pdpte, "PDE": pde, "PTE": pte}


def base64(**kw):
    """A native 64-bit CPU with every control register known: rules decide on the entries."""
    d = dict(cr2=0x400000, ip=0x401000, cs=0x33, cr0=0x80050033, cr4=0x6f0, efer=EFER_LM_NXE,
             eflags=0x246, mode="4level")
    d.update(kw)
    return d


def run(argv):
    out = io.StringIO()
    rc = cli_run(argv, out=out)
    return rc, out.getvalue()


# ---------------------------------------------------------------------------------------------
# each rule: fires and passes
# ---------------------------------------------------------------------------------------------

def test_present_fires_and_passes():
    ex = explain(state(full4(0x0), **base64(error=0x4)))
    assert ex.status("present") == "fired" and "PTE 0x0 has P=0" in ex.rule("present")["why"]
    assert ex.status("write") == "not-evaluated" and "not reached" in ex.rule("write")["why"]
    assert ex.cause.startswith("Not-present fault")
    ex = explain(state(full4(SEED_PTE), **base64(error=0x5)))
    assert ex.status("present") == "passed"
    # from the error code alone
    assert explain(state(cr2=0x1000, error=0x4)).status("present") == "fired"
    assert explain(state(cr2=0x1000, error=0x5)).status("present") == "passed"


def test_reserved_fires_and_passes():
    ex = explain(state(full4(0x7fffe067 | 1 << 63), **base64(error=0xd, efer=D.EFER_LME | D.EFER_LMA)))
    assert ex.status("reserved") == "fired" and "bit 63 without EFER.NXE" in ex.rule("reserved")["why"]
    ex = explain(state(full4(0x7fffe067 | 1 << 45), maxphyaddr=40, **base64(error=0xd)))
    assert ex.status("reserved") == "fired" and hex(1 << 45) in ex.rule("reserved")["why"]
    assert explain(state(full4(SEED_PTE), **base64(error=0x5))).status("reserved") == "passed"
    ex = explain(state(cr2=0x1000, error=0xd))
    assert ex.status("reserved") == "fired" and "RSVD=1" in ex.rule("reserved")["why"]


def test_write_fires_and_passes():
    ro = 0x7fffe065                                  # P US A, RW=0
    assert explain(state(full4(ro), **base64(error=0x7))).status("write") == "fired"          # user write
    ex = explain(state(full4(ro), **base64(error=0x3, cs=0x10)))                               # sup, WP=1
    assert ex.status("write") == "fired" and "CR0.WP=1" in ex.rule("write")["why"]
    ex = explain(state(full4(ro), **base64(error=0x3, cs=0x10, cr0=0x80000033)))               # WP=0
    assert ex.status("write") == "passed" and "CR0.WP=0" in ex.rule("write")["why"]
    ex = explain(state(full4(ro), **base64(error=0x3, cs=0x10, cr0=None)))
    assert ex.status("write") == "not-evaluated" and "CR0 unknown" in ex.rule("write")["why"]
    # RW=0 at an upper level counts too
    ex = explain(state(full4(SEED_PTE, pde=0x1065), **base64(error=0x7)))
    assert ex.status("write") == "fired" and "PDE RW=0" in ex.rule("write")["why"]
    assert explain(state(full4(SEED_PTE), **base64(error=0x7))).status("write") == "passed"
    assert explain(state(full4(ro), **base64(error=0x5))).status("write") == "passed"          # a read


def test_user_fires_and_passes():
    ex = explain(state(full4(SEED_PTE, pdpte=0x1063), **base64(error=0x5)))        # PDPTE US=0
    assert ex.status("user") == "fired" and "PDPTE US=0" in ex.rule("user")["why"]
    assert ex.cause.startswith("User access to a supervisor page")
    assert explain(state(full4(SEED_PTE), **base64(error=0x5))).status("user") == "passed"
    # supervisor access to a supervisor page: fine
    assert explain(state(full4(0x7fffe063), **base64(error=0x1, cs=0x10))).status("user") == "passed"


def test_nx_fires_and_passes():
    ex = explain(state(full4(SEED_PTE), **base64(error=0x15, cr2=0x401000)))
    assert ex.status("nx") == "fired" and ex.cause.startswith("No-execute fault")
    assert explain(state(full4(0x7fffe067), **base64(error=0x15))).status("nx") == "passed"
    # EFER unknown and bit 63 set: named, not guessed
    ex = explain(state(full4(SEED_PTE), **base64(error=0x15, efer=None)))
    assert ex.status("nx") == "not-evaluated" or "NXE=1 inferred" in " ".join(ex.notes)


def test_smep_fires_and_passes():
    kw = base64(error=0x11, cs=0x10, cr4=0x1006f0)               # supervisor fetch, SMEP on
    ex = explain(state(full4(0x7fffe067), **kw))
    assert ex.status("smep") == "fired" and ex.cause.startswith("SMEP violation")
    kw["cr4"] = 0x6f0
    assert explain(state(full4(0x7fffe067), **kw)).status("smep") == "passed"
    kw["cr4"] = None
    ex = explain(state(full4(0x7fffe067), **kw))
    assert ex.status("smep") == "not-evaluated" and "CR4 unknown" in ex.rule("smep")["why"]


def test_smap_fires_and_passes():
    kw = base64(error=0x1, cs=0x10, cr4=0x2006f0, eflags=0x246)     # supervisor read, AC=0
    ex = explain(state(full4(0x7fffe067), **kw))
    assert ex.status("smap") == "fired" and ex.cause.startswith("SMAP violation")
    kw["eflags"] = 0x246 | 1 << 18                                   # AC=1 (stac)
    ex = explain(state(full4(0x7fffe067), **kw))
    assert ex.status("smap") == "passed" and "AC=1" in ex.rule("smap")["why"]
    assert ex.spurious                                              # nothing else forbids it
    # an implicit supervisor access ignores AC (Xen PFEC_implicit)
    kw["error"] = 0x1 | 1 << 18
    assert explain(state(full4(0x7fffe067), **kw)).status("smap") == "fired"
    # supervisor page: SMAP does not apply
    kw["error"] = 0x1
    kw["eflags"] = 0x246
    assert explain(state(full4(0x7fffe063), **kw)).status("smap") == "passed"


def test_pkeys_fire_and_pass():
    pte = 0x7fffe067 | 5 << 59
    kw = base64(error=0x25, cr4=0x4006f0, pkru=1 << 10)              # AD for key 5
    ex = explain(state(full4(pte), **kw))
    assert ex.status("pkeys") == "fired" and "key 5" in ex.rule("pkeys")["why"]
    assert ex.cause.startswith("Protection-key violation")
    kw["pkru"] = 2 << 10                                             # WD for key 5: a read passes
    assert explain(state(full4(pte), **kw)).status("pkeys") == "passed"
    kw.update(error=0x27)                                            # ... a user write fires
    assert explain(state(full4(pte), **kw)).status("pkeys") == "fired"
    kw["pkru"] = None
    ex = explain(state(full4(pte), **kw))
    assert ex.status("pkeys") == "not-evaluated" and "PKRU unknown" in ex.rule("pkeys")["why"]


def test_shadow_stack_fires_and_passes():
    kw = base64(error=0x47, cr4=0x8006f0)                            # user shadow-stack write, CET
    ex = explain(state(full4(0x7fffe067), **kw))                     # RW=1: not a shadow-stack page
    assert ex.status("shadow-stack") == "fired" and ex.cause.startswith("Shadow-stack violation")
    ex = explain(state(full4(0x7fffe065), **kw))                     # RW=0 D=1: a shadow-stack page
    assert ex.status("shadow-stack") == "passed" and ex.status("write") == "passed"
    assert explain(state(full4(0x7fffe067), **base64(error=0x7))).status("shadow-stack") == "passed"


# ---------------------------------------------------------------------------------------------
# the seed case and Xen versions
# ---------------------------------------------------------------------------------------------

def seed(xen):
    return state({"PTE": SEED_PTE}, guest="pv32", xen=xen, cr2=0x805f3a0, error=0x3, ip=0xc0617233,
                 cs=0xe019, eflags=0x246, cr4=CR4_SMAP_SMEP, guest_cr4=0x6f0, mode="pae")


@pytest.mark.parametrize("xen", ["4.5.0", "4.5.3", "4.6.0", "4.6.2"])
def test_seed_smap_fires_on_unfixed_xen(xen):
    ex = explain(seed(xen), insn=b"\xf3\xaa")
    assert ex.cpl == 1
    assert ex.status("smap") == "fired"
    why = ex.rule("smap")["why"]
    assert "AC=0" in why and "user page" in why and "CPL 1" in why
    assert ex.status("write") == "passed" and ex.status("present") == "passed"   # the PTE allows it
    assert ex.access["user"] is False and ex.access["kind"] == "write"
    assert "SMAP violation" in ex.cause and "ring 1" in ex.cause and "0x800000007fffe067" in ex.cause
    assert any("SMAP=0" in n for n in ex.notes)                                   # the guest's view
    assert ex.insn["writes_memory"] and ex.insn["agrees"]
    assert not ex.spurious


@pytest.mark.parametrize("xen", ["4.5.4", "4.6.3", "4.7.0", "4.19.1"])
def test_seed_fixed_xen_clears_smap(xen):
    ex = explain(seed(xen))
    assert ex.status("smap") == "passed" and "clears SMEP/SMAP" in ex.rule("smap")["why"]
    assert "Xen would have cleared SMAP while this 32-bit PV kernel ran: look elsewhere" in ex.cause


def test_seed_without_xen_version_names_it():
    ex = explain(seed(None))
    assert ex.status("smap") == "fired" and "give --xen" in ex.rule("smap")["why"]
    assert any("Xen version unknown" in m for m in ex.missing)


def test_xen_version_table():
    assert [xen_clears_smep_smap_for_pv32(v) for v in ("4.4.1", "4.5.0", "4.5.3", "4.5.4", "4.6.2", "4.6.3",
                                                       "4.7.0", "4.8")] == \
        [False, False, False, True, False, True, True, True]
    assert xen_clears_smep_smap_for_pv32(None) is None
    with pytest.raises(XenscopeError):
        xen_clears_smep_smap_for_pv32("four")


def test_seed_cs_alone_says_pv32():
    s = seed("4.5.0")
    s.guest = None
    ex = explain(s)
    assert ex.state["guest"] == "pv32" and ex.status("smap") == "fired"


def test_pv64_kernel_runs_in_ring3():
    # a 64-bit PV kernel write (guest-visible error code U=0) to a user page, Xen with SMAP on
    s = state(full4(0x7fffe067), guest="pv64", cs=0xe033, cr2=0x7f0000001000, ip=0xffffffff81234567,
              error=0x3, eflags=0x246, cr4=CR4_SMAP_SMEP, efer=EFER_LM_NXE, xen="4.5.0")
    ex = explain(s)
    assert ex.cpl == 3 and ex.access["user"] is True and ex.access["guest_kernel"] is True
    assert ex.status("smap") == "passed" and "ring 3" in ex.rule("smap")["why"]
    assert ex.status("smep") == "passed" and ex.status("user") == "passed"
    # every rule passes only because the privilege is assumed (the error code's U is the guest's mode):
    # not spurious. A supervisor access at CPL 3 makes SMAP fire -- which is what the real crash of
    # tests/realsys/test_xen_smap_crash.py was (QEMU's -d int: "v=0e e=0001 cpl=3"); this test said
    # "spurious" before that crash was read.
    assert not ex.spurious
    assert ex.assumed[0]["input"] == "privilege" and ex.assumed[0]["fires"] == ["smap"], ex.assumed
    assert "as assumed" in ex.cause and "smap rule fires" in ex.cause
    # the same guest touching a page Xen did not mark user: the CPU's user check fires
    ex = explain(state(full4(0x7fffe063), guest="pv64", cs=0xe033, cr2=0x1000, error=0x1,
                       cr4=CR4_SMAP_SMEP, efer=EFER_LM_NXE))
    assert ex.status("user") == "fired"


# ---------------------------------------------------------------------------------------------
# spurious, missing pieces, instructions
# ---------------------------------------------------------------------------------------------

def test_spurious_fault():
    # not-present at fault time (P=0) but every level present and allowing the access now
    ex = explain(state(full4(0x7fffe067), **base64(error=0x6)))
    assert ex.spurious and "Spurious" in ex.cause and "P=0" in ex.cause
    assert all(r["status"] == "passed" for r in ex.rules)
    # with only the PTE given the explainer does not claim it
    ex = explain(state({"PTE": 0x7fffe067}, **base64(error=0x6)))
    assert not ex.spurious and "not checked" in ex.cause


def test_missing_pieces_are_named():
    ex = explain(state({"PTE": SEED_PTE}, cr2=0x805f3a0, error=0x3))
    smap = ex.rule("smap")
    assert smap["status"] == "not-evaluated"
    assert "CR4 unknown: SMAP rule not evaluated" in smap["why"]
    assert "CR4 unknown: SMEP rule not evaluated" in ex.rule("smep")["why"] or ex.status("smep") == "passed"
    assert any("CS unknown" in m for m in ex.missing)
    assert any("paging mode unknown" in m for m in ex.missing)
    assert ex.status("reserved") == "not-evaluated"
    assert "not evaluated" in ex.cause
    # EFLAGS missing: AC named
    ex = explain(state({"PTE": SEED_PTE}, cr2=0x805f3a0, error=0x3, cs=0xe019, cr4=CR4_SMAP_SMEP, xen="4.5.0"))
    assert ex.status("smap") == "not-evaluated" and "EFLAGS unknown" in ex.rule("smap")["why"]
    # a PV guest's CR4 view is not the real CR4
    ex = explain(state({"PTE": SEED_PTE}, cr2=0x805f3a0, error=0x3, cs=0xe019, guest_cr4=0x6f0, eflags=0x246))
    assert "real CR4 unknown" in ex.rule("smap")["why"]
    # no error code: access inferred from the instruction, and said so
    ex = explain(state(full4(0x7fffe065), **base64()), insn=b"\x89\x03")
    assert ex.access["kind"] == "write" and "mov" in ex.access["source"]
    assert ex.status("write") == "fired"
    assert any("error code unknown" in m for m in ex.missing)
    assert ex.status("shadow-stack") == "passed"     # CR4.CET=0


@pytest.mark.parametrize("code,bits,writes,mnemonic", [
    (b"\xf3\xaa", 32, True, "rep stosb"),
    (b"\x8b\x03", 32, False, "mov"),
    (b"\x89\x03", 32, True, "mov"),
    (b"\x50", 32, True, "push"),
    (b"\x48\x8b\x07", 64, False, "mov"),
    (b"\xf0\x0f\xb1\x0b", 64, True, "lock cmpxchg"),
])
def test_capstone_writes_memory(code, bits, writes, mnemonic):
    d = disassemble(code, 0x1000, bits)
    assert d["mnemonic"] == mnemonic and d["writes_memory"] is writes


def test_instruction_disagrees_with_error_code():
    ex = explain(state(full4(0x7fffe067), **base64(error=0x7)), insn=b"\x8b\x03")
    assert ex.insn["agrees"] is False and "disagrees" in ex.insn["agreement"]


# ---------------------------------------------------------------------------------------------
# logs
# ---------------------------------------------------------------------------------------------

GUEST_OOPS = """\
[ 1234.5678] BUG: unable to handle kernel paging request at 0805f3a0
[ 1234.5678] IP: [<c0617233>] clear_user+0x33/0x50
[ 1234.5678] *pdpt = 000000002c5a7027 *pde = 000000002d8c6067 *pte = 800000007fffe067
[ 1234.5678] Oops: 0003 [#1] SMP
[ 1234.5678] EIP: e019:[<c0617233>] EFLAGS: 00010246 CPU: 0
[ 1234.5678] CR0: 8005003b CR2: 0805f3a0 CR3: 2c5a6000 CR4: 000006f0
[ 1234.5678] Code: 89 d1 c1 e9 02 85 c9 74 06 <f3> aa 89 d1 83 e1 03
"""


def test_guest_oops_log(tmp_path):
    fields, _ = parse_log(GUEST_OOPS.splitlines())
    assert fields["error"][0] == 3 and fields["cr2"][0] == 0x805f3a0 and fields["ip"][0] == 0xc0617233
    assert fields["cs"][0] == 0xe019 and fields["eflags"][0] == 0x10246 and fields["PTE"][0] == SEED_PTE
    assert fields["insn"][0][:2] == b"\xf3\xaa" and fields["linux_cr4"][0] == 0x6f0
    log = tmp_path / "oops.txt"
    log.write_text(GUEST_OOPS)
    rc, out = run(["fault", "--log", str(log), "--pv32", "--cr4", "0x3406f0", "--xen", "4.5.0", "--json"])
    r = json.loads(out)
    assert rc == 0 and r["cpl"] == 1 and r["state"]["guest_cr4"] == 0x6f0
    assert {x["rule"]: x["status"] for x in r["rules"]}["smap"] == "fired"
    assert r["insn"]["writes_memory"] and r["insn"]["agrees"]


def test_xen_fatal_log():
    path = os.path.join(os.path.dirname(__file__), "data", "xenlogs", "fatal-4.19.log")
    rc, out = run(["fault", "--log", path, "--json"])
    r = json.loads(out)
    assert rc == 0 and r["error"]["value"] == 2 and r["state"]["xen"] == "4.19.1"
    assert {x["rule"]: x["status"] for x in r["rules"]}["present"] == "fired"
    assert "PDE" in r["cause"]


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def test_cli_seed_text():
    rc, out = run(["fault", "--xen", "4.5.0", *SEED_ARGS, "--insn", "f3aa"])
    assert rc == 0
    assert "SMAP violation" in out and "CPL 1" in out and "rep stosb" in out
    rc, out = run(["fault", "--xen", "4.6.3", *SEED_ARGS])
    assert rc == 0 and "Xen would have cleared SMAP while this 32-bit PV kernel ran: look elsewhere" in out


def test_cli_json_numbers_are_ints():
    rc, out = run(["fault", "--xen", "4.5.0", *SEED_ARGS, "--json"])
    r = json.loads(out)
    assert rc == 0 and r["state"]["cr2"] == 0x805f3a0 and r["walk"]["levels"][0]["entry"] == SEED_PTE
    assert r["error"]["value"] == 3 and r["cpl"] == 1


@pytest.mark.parametrize("argv", [
    ["fault"],                                                   # nothing to explain
    ["fault", "--error", "zz"],
    ["fault", "--pv32", "--pv64", "--error", "3"],
    ["fault", "--error", "0x100000000"],
    ["fault", "--error", "3", "--xen", "four"],
    ["fault", "--error", "3", "--mode", "pae", "--pml4e", "0x1067"],
    ["fault", "--error", "3", "--insn", "zz"],
    ["fault", "--log", "/nonexistent/log.txt"],
    ["fault", "/nonexistent/dump.core"],
])
def test_cli_bad_input_exits_2(argv, capsys):
    rc, _ = run(argv)
    assert rc == 2
    assert "Traceback" not in capsys.readouterr().err


def test_cli_with_dump():
    core = os.path.join(CORES, "x86_64-4level.core")
    rc, out = run(["fault", core, "--json"])                    # CR2 from the dump; walk stops (not in dump)
    r = json.loads(out)
    assert rc == 0 and r["walk"]["origin"].startswith("walk") and r["walk"]["stop"] == "not-in-dump"
    assert any("error code unknown" in m for m in r["missing"])
    rc, out = run(["fault", core, "--cr2", "0x400000", "--error", "0x7", "--json"])
    r = json.loads(out)
    assert rc == 0 and {x["rule"]: x["status"] for x in r["rules"]}["write"] == "fired"
    assert r["walk"]["complete"] and r["walk"]["pa"] is not None
