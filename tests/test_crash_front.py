"""crashext's defaults from crash's session, which Debian's crash 8.0.2 cannot exercise on the cores
we have (minimal mode has no task context; on the real 6.1 kernel its task table holds only the
idle task, so `set PID` fails): the front end runs here over a stand-in for the bridge's ``_crash``
module that answers from the mod-x86_64 core's manifest and xenscope's own reader of the core.

Truth: the manifest (tasks, their page directories, offsets, symbols).
"""
import io
import json
import os
import sys

import pytest

from conftest import CORES
from xenstructs.targets import open_dump

CORE = os.path.join(CORES, "mod-x86_64.core")
START_KERNEL_MAP = 0xFFFFFFFF80000000
PAGE_OFFSET = 0xFFFF888000000000


class FakeCrash:
    """The bridge's ``_crash`` services, answered from the core and its manifest."""
    KVADDR, UVADDR, PHYSADDR, XENMACHADDR = 1, 2, 4, 8

    def __init__(self, man, context):
        self.man, self.ctx = man, context
        self.t = open_dump(CORE)
        self.out = io.StringIO()
        self.reads = {1: 0, 2: 0, 4: 0, 8: 0}

    def _kv2p(self, va):
        return va - START_KERNEL_MAP if va >= START_KERNEL_MAP else va - PAGE_OFFSET

    def readmem(self, addr, memtype, size):
        self.reads[memtype] += 1
        pa = self._kv2p(addr) if memtype == self.KVADDR else addr
        try:
            return self.t.read_phys(pa, size)
        except Exception:
            return None

    def kvtop(self, va):
        return self._kv2p(va)

    def symbol(self, name):
        return self.man["symbols"].get(name)

    def member_offset(self, struct, member):
        return self.man["offsets"].get(f"{struct}.{member}")

    def member_size(self, struct, member):
        return {"task_struct.comm": 16, "task_struct.pid": 4, "module.name": 56}.get(f"{struct}.{member}")

    def struct_size(self, name):
        return self.man["offsets"].get(f"sizeof.{name}")

    def vmcoreinfo(self, key):
        vi = self.t.facts.get("vmcoreinfo")
        return vi.get(key) if vi is not None else None

    def qemu_cpu(self, i):
        return dict(self.t.cpus()[i].regs) if i < len(self.t.cpus()) else None

    def context(self):
        return self.ctx

    def info(self):
        return {"namelist": "mini-vmlinux", "dumpfile": CORE, "machine": "X86_64", "format": "ELF vmcore",
                "xen_hyper": 0, "xen": 0, "xen_core": 0, "minimal": 0, "cpus": 1, "relocate": 0,
                "kernel_pgd": self.man["symbols"]["init_top_pgt"], "la57": 0, "pagesize": 4096}

    def write(self, text):
        self.out.write(text)
        return len(text)

    def flush(self):
        pass


@pytest.fixture
def front():
    from crashext import front as F
    with open(os.path.join(CORES, "mod-x86_64.json")) as f:
        man = json.load(f)
    made = []

    def attach(task):
        ctx = None if task is None else {"task": task["task_va"], "pid": task["pid"], "comm": task["comm"],
                                         "cpu": 0, "mm": task["mm"] or 0}
        C = FakeCrash(man, ctx)
        F.attach(C)
        made.append(C)
        return C
    yield F, man, attach
    F.detach()
    for C in made:
        C.t.close()


def run(F, C, line):
    err = F.invoke(line.split())
    return err, C.out.getvalue()


def test_set_pid_then_walk_uses_that_tasks_page_directory(front):
    F, man, attach = front
    cpu_cr3 = open_dump(CORE).cpus()[0].regs["cr3"] & ~0xFFF
    task = next(t for t in man["tasks"] if t["mm"] and t["pgd_pa"] != cpu_cr3)
    C = attach(task)
    err, out = run(F, C, "walk 400000 --json")
    assert err is None, err
    res = json.loads(out)
    assert res["root_pa"] == task["pgd_pa"]
    assert res["sources"]["cr3"] == (f"crash context: pid {task['pid']} ({task['comm']}) "
                                     f"mm->pgd {task['pgd_va']:#x}"), res["sources"]
    assert C.reads[C.KVADDR] >= 1                  # mm->pgd read through crash's KVADDR


def test_an_explicit_cr3_wins_and_a_kernel_thread_uses_the_cpu(front):
    F, man, attach = front
    task = next(t for t in man["tasks"] if t["mm"])
    C = attach(task)
    err, out = run(F, C, f"walk 400000 --cr3 {man['tasks'][0]['pgd_pa']:#x} --json")
    assert err is None and json.loads(out)["root_pa"] == man["tasks"][0]["pgd_pa"]
    kthread = next(t for t in man["tasks"] if not t["mm"])
    C = attach(kthread)
    err, out = run(F, C, "walk 400000 --json")
    res = json.loads(out)
    assert err is None and res["sources"]["cr3"].startswith("QEMU CPU note"), res["sources"]


def test_errors_come_back_as_text_and_nothing_is_printed_to_the_real_stdout(front, capsys):
    F, man, attach = front
    C = attach(None)
    assert F.invoke(["walk", "zzz"]) == "walk: argument va: not a hex number: 'zzz'"
    assert F.invoke(["nope"]) == "unknown subcommand 'nope': see `xen help`"
    assert F.invoke(["frames"]).startswith("frames: ")
    assert F.invoke(["walk", "--help"]) is None and "usage: xen walk" in C.out.getvalue()
    assert capsys.readouterr().out == ""
    assert sys.stdout is not None and not isinstance(sys.stdout, F._CrashOut)


def test_an_internal_error_is_one_line(front, monkeypatch):
    F, man, attach = front
    C = attach(None)
    from xenstructs import commands
    monkeypatch.setattr(commands.COMMANDS["walk"], "run", lambda t, a: {}["boom"])
    msg = F.invoke(["walk", "0"])
    assert msg.startswith("xenscope internal error in walk: KeyError: 'boom'") and "\n" not in msg


def test_detached_front_refuses(front):
    F, man, attach = front
    attach(None)
    F.detach()
    assert F.invoke(["walk", "0"]) == "xenscope is detached from crash (extend it again)"
