"""fault --log on real x86_64 Linux oopses (Debian 6.1 under QEMU TCG -cpu max, printed by the kernel
for faults tests/realsys/faultmod provoked; the first line of each file is the module's marker).

The expected values are the kernel's own printed ones (its ``#PF: error_code``, ``PGD .. PTE``,
``RIP:``, ``RSP: .. EFLAGS:``, ``CR2:`` lines) and the module's marker: the full tier
(tests/realsys/test_linux_faults.py) checks the same against the dumps.
"""

import io
import json
import os

from xenstructs.cli import run as cli_run
from xenstructs.fault import FaultState, explain, parse_log
from xenstructs.fault.insn import memory_operands

DATA = os.path.join(os.path.dirname(__file__), "data", "linuxoops")


def log(name):
    return os.path.join(DATA, f"{name}.log")


def fields_of(name):
    with open(log(name)) as f:
        fields, notes = parse_log(f)
    return {key: value for key, (value, _) in fields.items()}, notes


def fault_json(*argv):
    out = io.StringIO()
    rc = cli_run(["fault", *argv, "--json"], out=out)
    assert rc == 0, out.getvalue()
    return json.loads(out.getvalue())


def test_five_level_oops_names_every_level():
    # PGD 6205067 P4D 622a067 PUD 62c4067 PMD 6201067 PTE 800000000456c867, CR4 0x751ef0 (LA57)
    f, notes = fields_of("smap")
    assert f["mode"] == "5level"
    assert (f["PML5E"], f["PML4E"], f["PDPTE"], f["PDE"], f["PTE"]) == \
        (0x6205067, 0x622a067, 0x62c4067, 0x6201067, 0x800000000456c867)
    assert f["cs"] == 0x10 and f["eflags"] == 0x246 and f["error"] == 1 and f["cr2"] == 0x7f49d5e28000
    # "RIP: 0010:faultmod_smap+0x3c/0x50 [faultmod]": no address; the user frame's later
    # "RIP: 0033:0x47b7a0" under the Call Trace is not the fault's
    assert "ip" not in f
    assert any("faultmod_smap+0x3c/0x50 [faultmod]" in note for note in notes)


def test_four_level_oops_folds_the_p4d_and_reads_a_numeric_rip():
    # PGD 623a067 P4D 623a067 ...; RIP: 0010:0x7fc47d7f9000; the kernel's SMEP line
    f, notes = fields_of("smep")
    assert f["mode"] == "4level" and f["PML4E"] == 0x623a067 and "PML5E" not in f
    assert f["ip"] == f["cr2"] == 0x7fc47d7f9000 and f["error"] == 0x11
    assert any("unable to execute userspace code (SMEP?)" in note for note in notes)


def test_smap_and_smep_from_the_log_alone():
    r = fault_json("--log", log("smap"))
    assert r["cause"].startswith("SMAP violation") and r["cpl"] == 0 and r["walk"]["mode"] == "5level"
    r = fault_json("--log", log("smep"))
    assert r["cause"].startswith("SMEP violation") and r["access"]["kind"] == "fetch"
    assert r["insn"] is None                    # "Code: Unable to access opcode bytes"


def test_reserved_bit_reported_without_p():
    # QEMU's TCG pushed 0x8 (RSVD without P) and the kernel printed "not-present page"; the module set
    # bit 40 (phys_bits=40) in a present PTE
    r = fault_json("--log", log("reserved"))
    status = {rule["rule"]: rule for rule in r["rules"]}
    assert r["error"]["value"] == 8 and not r["spurious"]
    assert status["present"]["status"] == "passed" and status["reserved"]["status"] == "fired"
    assert "address bit 40 set" in status["reserved"]["why"]
    assert any("RSVD=1 with P=0" in note for note in r["notes"])
    r = fault_json("--log", log("reserved"), "--maxphyaddr", "40", "--efer", "0xd00")
    status = {rule["rule"]: rule for rule in r["rules"]}
    assert f"reserved bits {1 << 40:#x} set" in status["reserved"]["why"]


def test_rsvd_without_p_and_no_entries():
    ex = explain(FaultState(cr2=0xffffc9000004d000, error=0x8, cs=0x10))
    assert ex.status("present") == "passed" and ex.status("reserved") == "fired"


def test_unknown_maxphyaddr_is_not_a_spurious_fault():
    # the reserved case's walk without an error code: bit 40 may be reserved, nothing says; the
    # explanation must say what is missing, not call it spurious
    entries = {"PML4E": 0x4800067, "PDPTE": 0x49b1067, "PDE": 0x49b2067, "PTE": 0x80000100062b7163}
    state = FaultState(cr2=0xffffc9000004d000, cs=0x10, cr0=0x80050033, cr4=0x750ef0, efer=0xd00,
                       eflags=0x286, mode="4level", insn=bytes.fromhex("8b4500"), ip=0xffffffffc0218699)
    for name, value in entries.items():
        state.give(name, value, "test")
    ex = explain(state)
    assert not ex.spurious and ex.status("reserved") == "not-evaluated"
    assert any("--maxphyaddr" in m for m in ex.missing)


def test_memory_operands_with_the_oops_registers():
    # reserved: "<8b> 45 00" with RBP: ffffc9000004d000 (the address the kernel reported)
    text, operands = memory_operands(bytes.fromhex("8b4500"), 0xffffffffc0218699, 64, {"rbp": 0xffffc9000004d000})
    assert text == "mov eax, dword ptr [rbp]" and operands == [(0xffffc9000004d000, 4)]
    _, operands = memory_operands(bytes.fromhex("65488b042528000000"), 0, 64, {})      # gs-relative
    assert operands == [(None, 8)]
    _, operands = memory_operands(bytes.fromhex("488b0510000000"), 0x1000, 64, {})      # rip-relative
    assert operands == [(0x1000 + 7 + 0x10, 8)]
