"""A real crash of Debian's Xen 4.17 under QEMU TCG with SMAP: who made the access that faulted?

One boot (``-cpu max``: SMAP on, Xen turns CR4.SMAP on), with QEMU's own interrupt log (``-d int``).
dom0's kernel (64-bit PV, ring 3) executes ``iretq`` in sync_core; QEMU 7.2 reads the IRET frame with
supervisor accesses, SMAP-checked, so the CPU raises #PF error code 0x1 at CPL 3 on the guest's own
stack (QEMU's log: ``v=0e e=0001 cpl=3``); Xen reflects it to dom0, which has no #PF handler yet
(``d0v0 Unhandled: vec 14, #PF[0001]`` and the page walk), and create_bounce_frame gives up
(``domain_crash_sync called from entry.S: fault at ... create_bounce_frame+0x14f``: the ``je`` of its
no-handler check, not a store) and dom0 crashes (the register dump, ``CONTEXT: pv guest (d0v0)``).
Xen takes no page fault itself (no ``cpl=0`` #PF in QEMU's log).

Truth: Xen's console text, QEMU's interrupt log and monitor (``info registers``, ``x``), the xen-syms
of Debian's -dbg package (objdump at the printed address), the ELF dump QEMU writes after the crash.
xenscope's answers (``log --json``, ``fault --log``, ``fault DUMP --log``) are compared with them.
"""
import json
import re
import subprocess
import time

import pytest

from gdbutil import run_cli
from realsys.xenhost import CRASHED, boot_xen_host, qemu_page_faults

MEM_MB = 512
HEX = r"([0-9a-f]+)"


@pytest.fixture(scope="module")
def crash(tmp_path_factory):
    """Boot with SMAP, wait for dom0's crash, keep QEMU's interrupt log, the console and a dump."""
    d = tmp_path_factory.mktemp("xensmap")
    qemu_log = str(d / "qemu-int.log")
    t0 = time.time()
    host = boot_xen_host(workdir=str(d), timeout=180, mem=MEM_MB, cpu="max", until=CRASHED,
                         qemu_args=["-d", "int", "-D", qemu_log])
    try:
        console = host.console.replace("\r", "")
        log = d / "xen-console.log"
        log.write_text(console)
        registers = host.registers()
        iret_bytes = None
        rip = _printed(console)["rip"]
        words = re.findall(r"0x([0-9a-f]{2})\b", host.vm.hmp(f"x /2bx {rip:#x}").split(":", 1)[-1])
        if len(words) == 2:
            iret_bytes = bytes(int(w, 16) for w in words)
        dump = str(d / "host.elf")
        host.dump(dump)
        yield {"log": str(log), "console": console, "qemu_log": open(qemu_log).read(), "dump": dump,
               "registers": registers, "iret_bytes": iret_bytes, "host": host, "seconds": time.time() - t0}
    finally:
        host.close()


def _printed(console):
    """What Xen printed, read with plain regexes (independent of xenscope)."""
    out = {}
    m = re.search(r"(d\d+v\d+) Unhandled: vec (\d+), #PF\[" + HEX + r"\]", console)
    out["unhandled"] = (m.group(1), int(m.group(2)), int(m.group(3), 16)) if m else None
    m = re.search(r"Pagetable walk from " + HEX + ":", console)
    out["walk_va"] = int(m.group(1), 16) if m else None
    out["walk"] = [(int(level), int(entry, 16)) for level, entry in
                   re.findall(r"\(XEN\)\s+L([1-4])\[0x[0-9a-f]+\] = " + HEX + " ", console)]
    m = re.search(r"domain_crash_sync called from entry\.S: fault at " + HEX + r" (\S+)", console)
    out["sync"] = (int(m.group(1), 16), m.group(2)) if m else None
    m = re.search(r"RIP:    " + HEX + r":\[<" + HEX + r">\]", console)
    out["cs"], out["rip"] = (int(m.group(1), 16), int(m.group(2), 16)) if m else (None, None)
    m = re.search(r"RFLAGS: " + HEX + r".*CONTEXT: ([a-z ]+?) \((d\d+v\d+)\)", console)
    out["rflags"], out["context"] = (int(m.group(1), 16), m.group(2)) if m else (None, None)
    for a, b in (("cr0", "cr4"), ("cr3", "cr2")):
        m = re.search(rf"{a}: " + HEX + rf"\s+{b}: " + HEX, console)
        out[a], out[b] = (int(m.group(1), 16), int(m.group(2), 16)) if m else (None, None)
    m = re.search(r"Xen-(\d+\.\d+\.\d+)", console)
    out["version"] = m.group(1) if m else None
    return out


def _qemu_page_faults(qemu_log):
    """QEMU's own record of every #PF: ``[(error code, cpl, cs, ip, cr2)]``."""
    return [(f["error"], f["cpl"], f["cs"], f["ip"], f["cr2"]) for f in qemu_page_faults(qemu_log)]


def test_the_system_crashed_as_described(crash):
    p = _printed(crash["console"])
    assert p["unhandled"] is not None and p["unhandled"][1] == 14, crash["console"][-4000:]
    assert p["sync"] is not None and "create_bounce_frame" in p["sync"][1]
    assert p["context"] == "pv guest" and p["cs"] & 3 == 3
    assert p["cr4"] >> 21 & 1, "Xen's CR4 has SMAP"
    # QEMU: one #PF in the whole boot, at CPL 3 on dom0's iretq, supervisor (U=0) read of CR2
    faults = _qemu_page_faults(crash["qemu_log"])
    assert len(faults) == 1, faults
    error, cpl, cs, ip, cr2 = faults[0]
    assert (cpl, cs, ip, cr2) == (3, p["cs"], p["rip"], p["cr2"])
    assert error == p["unhandled"][2] == 0x1
    assert crash["iret_bytes"] == b"\x48\xcf", crash["iret_bytes"]         # REX.W IRET = iretq (SDM)
    # the printed domain_crash_sync address is the je of create_bounce_frame's no-handler check
    host = crash["host"]
    address = p["sync"][0]
    out = subprocess.run(["objdump", "-d", f"--start-address={address:#x}", f"--stop-address={address + 6:#x}",
                          host.xen_syms_symtab], capture_output=True, text=True, check=True).stdout
    assert re.search(rf"{address:x}:\s+0f 84 .*\bje\b", out), out
    # QEMU's own CR4 after the crash is the one Xen printed (SMAP on)
    m = re.search(r"CR4=([0-9a-f]+)", crash["registers"])
    assert m and int(m.group(1), 16) == p["cr4"], crash["registers"]


def _log_json(crash):
    r = run_cli("log", crash["log"], "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_log_json_reads_the_crash_block(crash):
    p = _printed(crash["console"])
    summary = _log_json(crash)["summary"]
    assert len(summary["crashes"]) == 1, summary["crashes"]
    c = summary["crashes"][0]
    regs = c["registers"]
    assert (regs["cs"], regs["rip"], regs["rflags"]) == (p["cs"], p["rip"], p["rflags"])
    assert (regs["cr0"], regs["cr4"], regs["cr3"], regs["cr2"]) == (p["cr0"], p["cr4"], p["cr3"], p["cr2"])
    assert c["context"] == p["context"] and c["vcpu"] == p["unhandled"][0] and c["version"] == p["version"]
    assert (c["domain_crash_sync"]["address"], c["domain_crash_sync"]["symbol"]) == p["sync"]
    assert c["domain_crash_sync"]["path"] == "no-handler"
    un = c["unhandled"]
    assert (un["vector"], un["error_code"], un["walk"]["va"]) == (14, p["unhandled"][2], p["walk_va"])
    assert [(lv["level"], lv["entry"]) for lv in un["walk"]["levels"]] == p["walk"]
    # the bounce frame Xen wrote on the guest's stack: the faulting RIP, the printed error code, and
    # the guest's RSP at the fault, which QEMU's log says was CR2
    frame = c["bounce_frame"]
    faults = _qemu_page_faults(crash["qemu_log"])
    assert frame["rip"] == p["rip"] and frame["error_code"] == p["unhandled"][2]
    assert frame["rsp"] == faults[0][4]
    # who made the access: the guest (QEMU: cpl=3, and Xen took no #PF at all)
    assert c["access"]["by"] == "guest" and not [f for f in faults if f[1] == 0]
    story = " ".join(summary["story"])
    assert "no handler registered" in story and "SMEP and SMAP on" in story


def test_log_text(crash):
    r = run_cli("log", crash["log"])
    assert r.returncode == 0, r.stderr
    assert "Register dump RFLAGS/CONTEXT" in r.stdout and "the likely story" in r.stdout
    assert "made by d0v0 itself" in r.stdout


def _fault(crash, *extra):
    r = run_cli("fault", *extra, "--log", crash["log"], "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_fault_log_judges_the_guests_access(crash):
    p = _printed(crash["console"])
    error, cpl, _, _, cr2 = _qemu_page_faults(crash["qemu_log"])[0]
    r = _fault(crash)
    s = r["state"]
    assert (s["cr2"], s["cr4"], s["cs"], s["ip"]) == (cr2, p["cr4"], p["cs"], p["rip"])
    assert r["error"]["value"] == p["unhandled"][2] and r["cpl"] == cpl == 3
    assert r["access"]["actor"] == "pv64" and r["access"]["cpl"] == 3
    assert [(lv["level"], lv["entry"]) for lv in r["walk"]["levels"]] == [
        (name, entry) for name, (_, entry) in zip(("PML4E", "PDPTE", "PDE", "PTE"), p["walk"])]
    # every rule passes for the user read assumed; the CPU (QEMU's log: U=0 at CPL 3) made a
    # supervisor access, and with it SMAP fires: never "spurious"
    assert not r["spurious"]
    assert not error & 4 and cpl == 3
    item = r["assumed"][0]
    assert item["input"] == "privilege" and item["fires"] == ["smap"], r["assumed"]
    assert "smap rule fires" in r["cause"] and "SMAP violation" in r["cause"]


def test_fault_log_text(crash):
    r = run_cli("fault", "--log", crash["log"])
    assert r.returncode == 0, r.stderr
    assert "made by: the 64-bit PV guest (CPL 3)" in r.stdout
    assert "assumed: privilege = user" in r.stdout and "the smap rule fires" in r.stdout
    assert "spurious: yes" not in r.stdout


def test_fault_dump_log_walks_the_guest_tables(crash):
    """The walk of CR2 in the host dump under the crash's CR3 shows what Xen's walk printed (US=1 at
    every level), and the instruction at RIP is the iretq QEMU's memory holds."""
    p = _printed(crash["console"])
    r = _fault(crash, crash["dump"])
    walk = r["walk"]
    assert walk["origin"] == "walk of CR2 in the target" and walk["cr3"] == p["cr3"]
    assert [lv["entry"] for lv in walk["levels"]] == [entry for _, entry in p["walk"]]
    assert all(entry & 4 for _, entry in p["walk"]), "Xen's walk: US=1 at every level"
    assert all("US" in lv["flags"] for lv in walk["levels"])
    assert bytes.fromhex(r["insn"]["bytes"]) == crash["iret_bytes"] and r["insn"]["mnemonic"] == "iretq"
    assert any("QEMU's TCG" in note for note in r["notes"]), r["notes"]
    assert r["assumed"][0]["fires"] == ["smap"] and not r["spurious"]


# ---------------------------------------------------------------------------------------------
# The console the dump itself holds: Xen's console ring
# ---------------------------------------------------------------------------------------------

def _xen_lines(console):
    """Xen's lines on com1 (from their "(XEN)" on: dom0's hvc0 output shares the stream)."""
    return [line[line.index("(XEN)"):] for line in console.splitlines() if "(XEN)" in line]


def _check(crash, *extra):
    r = run_cli("check", crash["dump"], "--xen-syms", crash["host"].xen_syms_symtab, "--json", *extra, timeout=600)
    assert r.returncode in (0, 1), r.stderr
    (report,) = json.loads(r.stdout)
    return {c["name"]: c for c in report["checks"]}


def test_dmesg_holds_the_crash_as_xen_printed_it(crash):
    """``dmesg`` of the dump taken after the crash: Xen's console ring is line for line what Xen
    printed on com1, the crash block (Unhandled #PF, the page walk, domain_crash_sync, the register
    dump) and the last line included."""
    r = run_cli("dmesg", crash["dump"], "--xen-syms", crash["host"].xen_syms_symtab, "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["lines"] == _xen_lines(crash["console"]), got["description"]
    p = _printed(crash["console"])
    assert any(f"domain_crash_sync called from entry.S: fault at {p['sync'][0]:016x}" in line for line in got["lines"])
    assert "Hardware Dom0 crashed" in got["lines"][-1] and got["details"]["dropped"] == 0


def test_check_without_a_log_reads_the_ring(crash):
    """``check`` with no log beside the dump: faults and console read Xen's console ring in the dump and
    say so; what they find is what they find in the console file Xen's serial wrote (check --log):
    the same fault (CR2, error code, cause: SMAP, the guest's access) and the same crash."""
    alone, with_log = _check(crash, "--no-siblings"), _check(crash, "--log", crash["log"])
    ring = "Xen's console ring in the dump"
    assert alone["faults"]["status"] == "findings" and alone["faults"]["summary"].startswith(f"page fault from {ring}: ")
    (fault,), (logged,) = alone["faults"]["findings"], with_log["faults"]["findings"]
    assert (fault["source"], fault["log"], logged["source"]) == ("dump", ring, "file")
    p = _printed(crash["console"])
    assert (fault["cr2"], fault["error"]) == (logged["cr2"], logged["error"]) == (p["cr2"], p["unhandled"][2])
    assert fault["cause"] == logged["cause"] and "SMAP violation" in fault["cause"]
    assert alone["console"]["summary"].startswith(f"{ring}: ") and alone["console"]["status"] == "findings"

    def without_source(findings):   # the line numbers differ: the serial has dom0's lines too
        return [dict({k: v for k, v in f.items() if k not in ("source", "lines")},
                     text=re.sub(r"^lines? [\d-]+", "", f["text"])) for f in findings]
    assert without_source(alone["console"]["findings"]) == without_source(with_log["console"]["findings"])
    assert [f["kind"] for f in alone["console"]["findings"]] == ["crash"]
