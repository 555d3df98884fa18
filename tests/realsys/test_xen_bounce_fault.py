"""A real fault Xen takes on a guest's behalf: create_bounce_frame writing on a bad guest stack.

One boot of Debian's Xen 4.17 with a PV dom0 (``-cpu max,-smap``) and QEMU's gdbstub. dom0 runs a
kernel-heavy ``dd``; the vCPU is stopped in dom0's kernel (CS e033, RIP in the kernel half) and its
RSP set to an address QEMU's ``gva2gpa`` says is unmapped. The next event Xen delivers to dom0 goes
through create_bounce_frame, whose first store (SS, 8 bytes below RSP) faults in Xen (CPL 0); the
fixup prints the page walk of that address and ``domain_crash_sync called from entry.S: fault at
... domain_crash_page_fault_6x8``, and dom0 crashes. QEMU's interrupt log (turned on with the monitor's
``log int`` just before) records the #PF as the CPU raised it.

Truth: QEMU's interrupt log and ``gva2gpa``, Xen's console, the xen-syms map (the faulting IP lies in
create_bounce_frame), the host dump. xenscope's ``log``, ``fault --log`` and ``fault DUMP --log``
must name Xen as the accessor, at CPL 0, writing, at the address QEMU reports.
"""
import json
import re
import socket
import subprocess
import time

import pytest

from gdbutil import run_cli
from realsys.xenhost import CRASHED, boot_xen_host, qemu_page_faults

BAD_RSP = 0xFFFF880000100000          # L4 slot 272: below Linux's direct map, unmapped in a PV dom0


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _gdb_script(port):
    """Stop in dom0's kernel (stepping until CS is FLAT_RING3_CS64 and RIP in the upper half), ask
    QEMU whether BAD_RSP is mapped, set RSP, detach (the VM runs on)."""
    return f"""set pagination off
set confirm off
target remote 127.0.0.1:{port}
python
import gdb
for i in range(20000):
    cs = int(gdb.parse_and_eval("$cs")) & 0xffff
    rip = int(gdb.parse_and_eval("$pc")) & (2**64 - 1)
    if cs == 0xe033 and rip >> 63:
        break
    gdb.execute("stepi", to_string=True)
print("XS-STOPPED", hex(cs), hex(rip))
end
monitor gva2gpa {BAD_RSP:#x}
set $rsp = {BAD_RSP:#x}
detach
"""


@pytest.fixture(scope="module")
def bounce(tmp_path_factory):
    d = tmp_path_factory.mktemp("xenbounce")
    port = _free_port()
    host = boot_xen_host(workdir=str(d), timeout=180, qemu_args=["-gdb", f"tcp:127.0.0.1:{port}"])
    try:
        host._input_to(False)
        host._type("dd if=/dev/zero of=/dev/null bs=64k count=100000000 &\n")
        time.sleep(1.5)
        qemu_log = str(d / "qemu-int.log")
        host.vm.hmp(f"logfile {qemu_log}")
        host.vm.hmp("log int")
        (d / "stop.gdb").write_text(_gdb_script(port))
        gdb = subprocess.run(["gdb", "-nx", "-batch", "-x", str(d / "stop.gdb")], capture_output=True, text=True,
                             timeout=300)
        start = time.time()
        while CRASHED not in host.console and time.time() - start < 60:
            time.sleep(0.2)
        time.sleep(0.5)
        host.vm.hmp("log none")
        console = host.console.replace("\r", "")
        log = d / "xen-console.log"
        log.write_text(console)
        dump = str(d / "host.elf")
        host.dump(dump)
        yield {"log": str(log), "console": console, "gdb": gdb.stdout + gdb.stderr, "qemu_log": open(qemu_log).read(),
               "dump": dump, "host": host}
    finally:
        host.close()


def _xen_fault(bounce):
    """QEMU's record of the #PF Xen took (CPL 0); exactly one."""
    faults = [f for f in qemu_page_faults(bounce["qemu_log"]) if f["cpl"] == 0]
    assert len(faults) == 1, (faults, bounce["console"][-3000:])
    return faults[0]


def _symbol_range(map_path, name):
    rows = [(int(a, 16), s) for a, _, s in (line.split() for line in open(map_path) if len(line.split()) == 3)]
    rows.sort()
    for i, (address, symbol) in enumerate(rows):
        if symbol.endswith(name):
            return address, rows[i + 1][0]
    raise AssertionError(f"{name} not in {map_path}")


def test_the_system_did_it(bounce):
    assert "XS-STOPPED 0xe033" in bounce["gdb"] and "Unmapped" in bounce["gdb"], bounce["gdb"]
    assert CRASHED in bounce["console"], bounce["console"][-3000:]
    fault = _xen_fault(bounce)
    start, end = _symbol_range(bounce["host"].xen_map, "create_bounce_frame")
    assert fault["cs"] == 0xE008 and start <= fault["ip"] < end
    assert fault["cr2"] == BAD_RSP - 8 and fault["error"] == 0x2          # supervisor write, not present
    m = re.search(r"Pagetable walk from ([0-9a-f]+):\n\(XEN\)\s+L4\[0x([0-9a-f]+)\] = ([0-9a-f]+)", bounce["console"])
    assert m and int(m.group(1), 16) == fault["cr2"] and int(m.group(3), 16) == 0
    assert re.search(r"domain_crash_sync called from entry\.S: fault at [0-9a-f]+ \S*domain_crash_page_fault_6x8",
                     bounce["console"])


def test_log_names_xen_as_the_accessor(bounce):
    fault = _xen_fault(bounce)
    r = run_cli("log", bounce["log"], "--json")
    assert r.returncode == 0, r.stderr
    (c,) = json.loads(r.stdout)["summary"]["crashes"]
    assert c["domain_crash_sync"]["path"] == "fixup" and c["domain_crash_sync"]["store"] == 6
    assert c["access"]["by"] == "xen" and c["access"]["fault"]["cr2"] == fault["cr2"]
    assert c["registers"]["rsp"] == BAD_RSP                       # the register dump is the guest's


def test_fault_log_judges_xens_write(bounce):
    fault = _xen_fault(bounce)
    r = run_cli("fault", "--log", bounce["log"], "--json")
    assert r.returncode == 0, r.stderr
    x = json.loads(r.stdout)
    assert x["access"]["actor"] == "xen" and x["cpl"] == fault["cpl"] == 0
    assert x["state"]["cr2"] == fault["cr2"] and x["state"]["cs"] == fault["cs"]
    assert x["access"]["kind"] == "write" and bool(fault["error"] & 2)
    assert x["access"]["user"] is False and not fault["error"] & 4
    assert x["rules"][0]["status"] == "fired" and not fault["error"] & 1          # not present, as QEMU says
    assert "PML4E 0x0 has P=0" in x["cause"]


def test_fault_dump_log_walks_the_same(bounce):
    fault = _xen_fault(bounce)
    r = run_cli("fault", bounce["dump"], "--log", bounce["log"], "--json")
    assert r.returncode == 0, r.stderr
    x = json.loads(r.stdout)
    assert x["walk"]["origin"] == "walk of CR2 in the target" and x["walk"]["va"] == fault["cr2"]
    assert [lv["level"] for lv in x["walk"]["levels"]] == ["PML4E"] and x["walk"]["levels"][0]["entry"] == 0
    assert x["walk"]["stop"] == "not-present" and x["access"]["actor"] == "xen"
    # the dump's vCPU ran on after the crash (Xen's idle loop): its RIP/RFLAGS are not the fault's, whose
    # IP (QEMU: in create_bounce_frame) Xen 4.17 does not print on this path
    assert x["state"]["ip"] is None and x["state"]["eflags"] is None and x["state"]["cs"] == fault["cs"]
