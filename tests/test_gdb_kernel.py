"""Kernel objects and modcheck inside real gdb: ``gdb mini-vmlinux core``, types from gdb itself."""
import json
import os

import pytest

from gdbutil import TOP, run_gdb

CORES = os.path.join(TOP, "cores")
NAMES = ["mod-i386-2level", "mod-i386-pae", "mod-x86_64"]


def gdb_json(man, *cmds):
    vml = os.path.join(CORES, man["vmlinux"])
    r = run_gdb(f"file {vml}", f"core-file {os.path.join(CORES, man['core'])}", *cmds)
    assert "Traceback" not in r.output, r.output
    return r, [json.loads(chunk[chunk.index("{"):]) for chunk in r.stdout.split("@@@")[:-1]]


@pytest.mark.parametrize("name", NAMES)
def test_tasks_modules_modcheck_in_gdb(name):
    man = json.load(open(os.path.join(CORES, f"{name}.json")))
    r, (tasks, mods, mc) = gdb_json(man, "xen tasks --json", "echo @@@\\n", "xen modules --json", "echo @@@\\n",
                                    "xen modcheck --json", "echo @@@\\n")
    got = sorted((t["pid"], t["comm"]) for t in tasks["tasks"])
    assert got == sorted((t["pid"], t["comm"]) for t in man["tasks"])
    assert sorted(m["name"] for m in mods["modules"]) == sorted(m["name"] for m in man["modules"])
    want = sorted((f["module"], f["level"], f["kind"], f["top_index"], tuple(sorted(f["task_pids"])))
                  for f in man["findings"])
    have = sorted((g["module"], g["level"], g["kind"], g["top_index"], tuple(sorted(g["task_pids"])))
                  for g in mc["groups"])
    assert have == want
    assert "gdb types" in json.dumps(tasks)          # the offsets came from gdb, not from a DWARF read
