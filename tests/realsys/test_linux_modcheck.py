"""modcheck and the kernel objects on a real Debian x86_64 kernel under QEMU (4- and 5-level).

The guest's init loads two modules from the same kernel package and starts a few processes; it
prints /proc/modules and the process list on its console (the truth, from the kernel itself). The
structure offsets come from gdb's reading of Debian's own -dbg vmlinux (cached between runs),
through xenscope's gdb layer. On x86_64 the kernel half of every PGD is shared, so modcheck must
be clean.
"""
import json
import os
import re
import subprocess
import time

import pytest

from gdbutil import run_gdb
from realsys.linux import boot_linux, debug_vmlinux

MODULES = ("kernel/lib/crc7.ko", "kernel/lib/crc8.ko")


@pytest.fixture(scope="module", params=["4level", "5level"])
def guest(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("modcheck")
    vml = debug_vmlinux()
    vm = boot_linux("x86_64", la57=request.param == "5level", modules=MODULES,
                    # the listing below must see the four sleeps exec'd (a loaded host can catch a
                    # forked child still named sh): wait for them, at most 10 s
                    extra_init="sleep 100002 & sleep 100003 & n=0; while [ $n -lt 100 ] && "
                               "[ $(cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^sleep$') -lt 4 ]; do "
                               "sleep 0.1; n=$((n+1)); done; echo MODS-BEGIN; cat /proc/modules; "
                               "echo MODS-END; echo PIDS-BEGIN; for p in /proc/[0-9]*; do echo ${p#/proc/} "
                               "$(cat $p/comm); done; echo PIDS-END")
    try:
        time.sleep(0.3)
        vm.qmp("stop")
        console = vm.read_console().decode(errors="replace")
        dump = str(d / "guest.elf")
        vm.qmp("dump-guest-memory", paging=False, protocol=f"file:{dump}")
    finally:
        vm.close()
    mods = re.search(r"MODS-BEGIN\r?\n(.*?)MODS-END", console, re.S).group(1)
    pids = re.search(r"PIDS-BEGIN\r?\n(.*?)PIDS-END", console, re.S).group(1)
    yield {"dump": dump, "vmlinux": vml, "mode": request.param,
           "modules": {ln.split()[0]: int(ln.split()[1]) for ln in mods.splitlines() if ln.strip()},
           "pids": {int(ln.split()[0]): ln.split()[1] for ln in pids.splitlines() if len(ln.split()) == 2}}
    os.unlink(dump)


def xen_json(g, *cmds):
    marked = []
    for c in cmds:
        marked += [c, "echo @@@\\n"]
    r = run_gdb(f"file {g['vmlinux']}", f"set xen dump {g['dump']}", *marked, timeout=600)
    assert r.returncode == 0 and "Traceback" not in r.output, r.output
    return r, [json.loads(chunk[chunk.index("{"):]) for chunk in r.stdout.split("@@@")[:-1]]


def test_modules_tasks_and_a_clean_modcheck(guest):
    r, (mods, tasks, mc) = xen_json(guest, "xen modules --json", "xen tasks --json", "xen modcheck --json")
    got = {m["name"]: m for m in mods["modules"]}
    assert set(got) == set(guest["modules"]), (set(got), guest["modules"])
    assert {"crc7", "crc8", "qemu_fw_cfg"} <= set(got)
    for name, size in guest["modules"].items():            # /proc/modules: core + init layout sizes
        assert sum(reg["size"] for reg in got[name]["regions"]) == size, (name, got[name]["regions"], size)
    seen = {t["pid"]: t["comm"] for t in tasks["tasks"]}
    # every process the guest listed, but pid 1 (its init script exec()s sh afterwards, a new comm)
    # and the short-lived cat/sh of the listing itself
    lasting = {p: c for p, c in guest["pids"].items() if p != 1 and c not in ("cat", "sh")}
    assert len(lasting) > 20 and list(lasting.values()).count("sleep") >= 4
    for pid, comm in lasting.items():
        # /proc/PID/comm of a kworker adds "-<workqueue>" to task->comm
        want = comm.split("-")[0] if comm.startswith("kworker/") else comm[:15]
        assert seen.get(pid) == want, (pid, comm, seen.get(pid))
    assert seen[1] == "sh"
    assert mc["groups"] == [] and not mc["list_errors"], mc["groups"][:3]
    assert mc["mode"] == guest["mode"]
    assert mc["checked_pgds"] >= 2 and mc["checked_pages"] > 0


def test_cli_with_a_profile_made_from_the_debug_vmlinux(guest, tmp_path):
    """xenscope profile (DWARF of Debian's vmlinux) then the CLI: the same answers as gdb's types."""
    import sys
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    prof = str(tmp_path / "profile.json")
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", "profile", guest["vmlinux"], "-o", prof],
                       capture_output=True, text=True, cwd=top, timeout=600)
    assert r.returncode == 0, r.stderr
    assert time.time() - t0 < 120, "profile extraction from a 600 MB vmlinux must stay fast"
    _, (gdb_mods, gdb_mc) = xen_json(guest, "xen modules --json", "xen modcheck --json")
    for cmd in ("modules", "modcheck"):
        r = subprocess.run([sys.executable, "-m", "xenstructs.cli", cmd, guest["dump"], "--profile", prof, "--json"],
                           capture_output=True, text=True, cwd=top, timeout=600)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        if cmd == "modules":
            assert [(m["name"], m["regions"]) for m in res["modules"]] == \
                [(m["name"], m["regions"]) for m in gdb_mods["modules"]]
        else:
            assert res["groups"] == [] and res["checked_pages"] == gdb_mc["checked_pages"]


def test_cli_from_the_dump_alone(guest):
    """No file at all: the dump's own kallsyms and BTF give the same modules (and /proc/modules'
    sizes), tasks and a clean modcheck, and the outputs say so."""
    import sys
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    res = {}
    for cmd in ("modules", "tasks", "modcheck"):
        r = subprocess.run([sys.executable, "-m", "xenstructs.cli", cmd, guest["dump"], "--json"],
                           capture_output=True, text=True, cwd=top, timeout=600)
        assert r.returncode == 0, r.stderr
        res[cmd] = json.loads(r.stdout)
        src = res[cmd]["kernel"]["sources"]
        assert src["symbols"] == "from the dump (kallsyms via VMCOREINFO)"
        assert src["types"].startswith("offsets from BTF in the dump")
    got = {m["name"]: m for m in res["modules"]["modules"]}
    assert set(got) == set(guest["modules"])
    for name, size in guest["modules"].items():
        assert sum(reg["size"] for reg in got[name]["regions"]) == size, (name, got[name]["regions"], size)
    seen = {t["pid"]: t["comm"] for t in res["tasks"]["tasks"]}
    assert seen[1] == "sh" and all(seen.get(p) == (c.split("-")[0] if c.startswith("kworker/") else c[:15])
                                   for p, c in guest["pids"].items() if p != 1 and c not in ("cat", "sh"))
    mc = res["modcheck"]
    assert mc["groups"] == [] and not mc["list_errors"] and mc["mode"] == guest["mode"]
