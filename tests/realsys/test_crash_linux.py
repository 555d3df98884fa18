"""xenscope inside Debian's real crash utility (8.0.2) on a real Debian 6.1 x86_64 kernel under QEMU.

One boot (modules crc7 and crc8, a few ``sleep`` processes), paused over QMP and dumped twice: as ELF
and as kdump-zlib (makedumpfile's flattened form). For each dump crash is started a few times with
``crashext/xenscope.so`` loaded, and its own commands are the judge of ``xen ...``:

- ``vtop`` (kernel text, direct map, vmalloc areas of ``kmem -v``, task stacks and their guard pages,
  modules of ``mod``) must give the physical address ``xen walk`` gives, or both say unmapped;
- ``mod``, ``list task_struct.tasks`` and crash's gdb (``mm->pgd``, then ``vtop`` of it) must give what
  ``xen modules``, ``xen tasks`` and ``xen modcheck`` report;
- user addresses, which no crash command translates here, are walked with ``--cr3`` = crash's
  ``vtop`` of the task's ``mm->pgd`` and the bytes crash reads there (``rd -p``) must be the task's
  ``/proc/PID/cmdline`` (printed by the guest) and the ``syscall`` instruction before its saved user
  RIP and busybox's own bytes (the host's /bin/busybox is the guest's);
- the text of ``xen walk`` and ``xen maps`` must equal the CLI's (``python -m xenstructs.cli``, which
  reads the dump itself), pipes and redirection must work, and errors must be one clean line.

crash 8.0.2 limits, worked around here and nowhere else (never by loosening a comparison):
- its task table shows only ``[swapper/0]`` on this kernel (``struct pid``'s ``numbers[]`` became a
  flexible array in 6.1.192; fixed in crash 8.0.4, commit 88580068), so ``ps``/``set PID``/``vm``/
  ``vtop -u`` cannot be used: the truth for tasks is ``list task_struct.tasks -h init_task`` and crash's
  gdb; 8.0.2 has no maple-tree support either, so no crash command translates user addresses on 6.1.
- for direct-map and kernel-image addresses crash's ``vtop`` computes PHYSICAL arithmetically even
  when nothing maps them: direct-map samples are taken only inside the guest's "System RAM"
  (/proc/iomem) and kernel-image samples only inside ``_stext``..``_etext``.
- crash finds the process at the end of a ``|`` by scanning /proc and sometimes misses it ("crash: pipe
  operation failed"; the command's output is then lost and only that message reaches the pipe): the
  pipe command is issued three times and each such failure must be matched by crash's message.
"""
import json
import os
import random
import re
import subprocess
import sys
import time

import pytest

from crashutil import CRASH, EXTENSION, run_crash
from realsys.linux import boot_linux, debug_vmlinux

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = ("kernel/lib/crc7.ko", "kernel/lib/crc8.ko")
KINDS = ("elf", "kdump")
THREAD_SIZE = 16384            # x86_64 without KASAN: the pt_regs of a task are at stack + THREAD_SIZE - 168
PIPE_TRIES = 3



# ---------------------------------------------------------------------------------------------
# the guest: one boot, two dumps
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    assert CRASH, "Debian's crash is not installed: run ./setup.sh"
    assert os.path.exists(EXTENSION), f"{EXTENSION} is missing: run ./setup.sh"
    d = tmp_path_factory.mktemp("crash-linux")
    vml = debug_vmlinux()
    vm = boot_linux("x86_64", modules=MODULES,
                    extra_init="sleep 100002 & sleep 100003 & "
                               "echo MODS-BEGIN; cat /proc/modules; echo MODS-END; "
                               "echo IOMEM-BEGIN; cat /proc/iomem; echo IOMEM-END; "
                               "echo PIDS-BEGIN; for p in /proc/[0-9]*; do echo ${p#/proc/} $(cat $p/comm) "
                               "$(tr '\\0' '@' < $p/cmdline); done; echo PIDS-END")
    try:
        time.sleep(0.3)
        vm.qmp("stop")
        console = vm.read_console().decode(errors="replace")
        dumps = {"elf": str(d / "guest.elf"), "kdump": str(d / "guest.kdump")}
        vm.qmp("dump-guest-memory", paging=False, protocol=f"file:{dumps['elf']}")
        vm.qmp("dump-guest-memory", paging=False, protocol=f"file:{dumps['kdump']}", format="kdump-zlib")
    finally:
        vm.close()

    def section(name):
        return re.search(rf"{name}-BEGIN\r?\n(.*?){name}-END", console, re.S).group(1).replace("\r", "")

    mods = {ln.split()[0]: int(ln.split()[1]) for ln in section("MODS").splitlines() if ln.strip()}
    ram = [(int(a, 16), int(b, 16) + 1) for a, b in
           re.findall(r"^([0-9a-f]+)-([0-9a-f]+) : System RAM$", section("IOMEM"), re.M)]
    procs = {}
    for ln in section("PIDS").splitlines():
        f = ln.split(None, 2)
        if len(f) >= 2:
            procs[int(f[0])] = (f[1], f[2] if len(f) == 3 else "")
    assert ram and sum(b - a for a, b in ram) > 200 << 20, section("IOMEM")
    yield {"dumps": dumps, "vmlinux": vml, "modules": mods, "ram": ram, "procs": procs, "console": console}
    for p in dumps.values():
        if os.path.exists(p):
            os.unlink(p)


# ---------------------------------------------------------------------------------------------
# helpers: crash sessions, the CLI, parsers of crash's output
# ---------------------------------------------------------------------------------------------

def crash(g, kind, cmds):
    """Run ``cmds`` (``[(key, command)]``) in one crash session: ``{key: output}``, and crash's
    stdout under ``"_stdout"``."""
    r = run_crash(g["vmlinux"], g["dumps"][kind], [c for _, c in cmds])
    assert r.returncode == 0, (r.returncode, r.stdout[-3000:], r.stderr[-3000:])
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output[-5000:]
    for (_, c), o in zip(cmds, r.outputs):
        assert o is not None, f"no output file for {c!r}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        assert "Traceback" not in o and "internal error" not in o, f"crash> {c}\n{o}"
    out = {k: o for (k, _), o in zip(cmds, r.outputs)}
    assert len(out) == len(cmds), "duplicate keys"
    out["_stdout"] = r.stdout
    return out


def cli(*args):
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", *args], capture_output=True, text=True,
                       cwd=TOP, timeout=600)
    return r


def hexs(v):
    return f"{v:x}"


def parse_vtop(va, text):
    """crash's ``vtop VA`` for a kernel address: the physical address, or None when not mapped."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) >= 2 and lines[0].split()[:2] == ["VIRTUAL", "PHYSICAL"], f"vtop {va:x}:\n{text}"
    f = lines[1].split()
    assert int(f[0], 16) == va, f"vtop {va:x}:\n{text}"
    rest = lines[1][lines[1].index(f[0]) + len(f[0]):].strip()
    if rest.startswith("("):
        assert rest in ("(not mapped)", "(not accessible)"), f"vtop {va:x}:\n{text}"
        return None
    return int(f[1], 16)


def parse_rd(pa, n, text):
    """crash's ``rd -p -8 PA N``: the bytes."""
    out = b""
    for m in re.finditer(r"^\s*([0-9a-f]+):\s\s((?:[0-9a-f]{2} )*[0-9a-f]{2})", text, re.M):
        assert int(m.group(1), 16) == pa + len(out), f"rd -p -8 {pa:x} {n}:\n{text}"
        out += bytes(int(b, 16) for b in m.group(2).split())
    assert len(out) == n, f"rd -p -8 {pa:x} {n}:\n{text}"
    return out


def parse_mod(text):
    mods = [dict(module=int(a, 16), name=n, base=int(b, 16), size=int(s))
            for a, n, b, s in re.findall(r"^([0-9a-f]{16})\s+(\S+)\s+([0-9a-f]{16})\s+(\d+)\s", text, re.M)]
    assert mods and text.split()[:4] == ["MODULE", "NAME", "BASE", "SIZE"], text
    return mods


def parse_walk_json(text, what):
    try:
        return json.loads(text)
    except ValueError:
        raise AssertionError(f"{what} did not give JSON:\n{text}")


def chunks(va, n):
    """[va, va + n) split at page boundaries: ``[(va, n), ...]``."""
    out = []
    while n > 0:
        k = min(n, 4096 - (va & 0xFFF))
        out.append((va, k))
        va, n = va + k, n - k
    return out


def busybox_bytes(start_code, va, n):
    """Bytes of the host's /bin/busybox (the guest's) at user address ``va`` of a task whose
    ``mm->start_code`` is ``start_code`` (binfmt_elf: start_code = load bias + lowest p_vaddr of the
    executable PT_LOAD segments)."""
    from elftools.elf.elffile import ELFFile
    with open("/bin/busybox", "rb") as f:
        elf = ELFFile(f)
        xs = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD" and s["p_flags"] & 1]
        bias = start_code - min(s["p_vaddr"] for s in xs)
        for s in xs:
            lo = bias + s["p_vaddr"]
            if lo <= va and va + n <= lo + s["p_filesz"]:
                f.seek(s["p_offset"] + va - lo)
                return f.read(n)
    raise AssertionError(f"{va:#x}+{n} is in no executable segment of /bin/busybox (start_code {start_code:#x})")


# ---------------------------------------------------------------------------------------------
# what crash and xenscope say about one dump (four crash sessions)
# ---------------------------------------------------------------------------------------------

def _lists_and_symbols(guest, kind):
    """Session 1: crash's own lists and symbols; xenscope's JSON, maps, pipes."""
    cmds = [("mod", "mod"), ("ps", "ps"),
            ("list", "list task_struct.tasks -h init_task"),
            ("stext", "sym _stext"), ("etext", "sym _etext"),
            ("pob", "p/x page_offset_base"), ("init_pgd", "p/x (unsigned long)init_mm.pgd"),
            ("kmemv", "kmem -v"),
            ("modules", "xen modules --json"), ("tasks", "xen tasks --json"), ("modcheck", "xen modcheck --json"),
            ("maps", "xen maps")]
    cmds += [(("pipe", i), "xen maps | grep -c .") for i in range(PIPE_TRIES)]
    out = crash(guest, kind, cmds)

    def num(key, pattern):
        m = re.search(pattern, out[key], re.M)
        assert m, f"{key}:\n{out[key]}"
        return int(m.group(1), 16)

    stext = num("stext", r"^([0-9a-f]+) \(\w\) _stext")
    etext = num("etext", r"^([0-9a-f]+) \(\w\) _etext")
    pob = num("pob", r"^\$\d+ = 0x([0-9a-f]+)$")
    init_pgd = num("init_pgd", r"^\$\d+ = 0x([0-9a-f]+)$")
    mods = parse_mod(out["mod"])
    listed = [int(x, 16) for x in out["list"].split()]
    assert len(listed) > 20 and all(x >> 47 for x in listed), out["list"]
    areas = [(int(a, 16), int(b, 16)) for a, b in
             re.findall(r"^[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+) - ([0-9a-f]+)\s+\d+$", out["kmemv"], re.M)]
    assert len(areas) > 20, out["kmemv"]
    return dict(o1=out, stext=stext, etext=etext, pob=pob, init_pgd=init_pgd, mods=mods, listed=listed,
                areas=areas)


def _kernel_samples(guest, s, rnd):
    """Kernel addresses to translate, each with its class; the ones whose text is compared with the
    CLI's; a CR3 above everything the dump holds (the CLI's own reading of the dump)."""
    stext, etext, pob, areas, mods = s["stext"], s["etext"], s["pob"], s["areas"], s["mods"]
    samples = [("text", stext), ("text", etext - 1)]
    samples += [("text", rnd.randrange(stext, etext)) for _ in range(12)]
    for lo, hi in guest["ram"]:
        samples += [("direct", pob + lo), ("direct", pob + hi - 1)]
        samples += [("direct", pob + rnd.randrange(lo, hi)) for _ in range(6)]
    for lo, hi in areas:
        samples += [("vmalloc", lo), ("vmalloc", rnd.randrange(lo, hi - 4096)), ("vmalloc-guard", hi - 4096)]
    for m in mods:
        samples += [("module", m["base"]), ("module", m["base"] + m["size"] - 1), ("module-end", m["base"] + m["size"])]
        samples += [("module", m["base"] + rnd.randrange(0, m["size"])) for _ in range(4)]
    info = cli("info", s["dump"], "--json")
    assert info.returncode == 0, info.stderr
    top = max(e for _, e in json.loads(info.stdout)["memory"])
    absent = (top + (1 << 30)) & ~((1 << 30) - 1)
    text_samples = {"text": stext, "direct": pob + guest["ram"][-1][0] + 0x123000,
                    "vmalloc": areas[len(areas) // 2][0] + 0x10, "module": mods[0]["base"] + 0x1234,
                    "module-end": mods[0]["base"] + mods[0]["size"],
                    "noncanonical": 0x8000000000000000, "noncanonical-low": 0x0000800000000000}
    return dict(samples=samples, absent=absent, text_samples=text_samples)


TASK_FIELDS = ("task", "pid", "mm", "active_mm", "stack", "pgd", "active_pgd", "arg_start", "arg_end",
               "start_code", "end_code", "ip", "cs")


def _task_command(address):
    """crash's gdb printing TASK_FIELDS then comm of the task_struct at ``address``."""
    task = f"((struct task_struct *)0x{address:x})"
    regs = f"(((struct pt_regs *)((char *){task}->stack + {THREAD_SIZE})) - 1)"
    mm, active_mm = f"{task}->mm", f"{task}->active_mm"
    # (crash 8.0.2 hands a gdb line whose last argument is a ?: expression to gdb with its "> FILE":
    # keep those away from the end; comm last, as it is the rest of the line)
    return ('gdb printf "%lx %d %lx %lx %lx %lx %lx %lx %lx %lx %lx %lx %lx %s\\n", '
            f"{task}, {task}->pid, {mm}, {active_mm}, {task}->stack, "
            f"{mm} ? (unsigned long){mm}->pgd : 0, {active_mm} ? (unsigned long){active_mm}->pgd : 0, "
            f"{mm} ? {mm}->arg_start : 0, {mm} ? {mm}->arg_end : 0, "
            f"{mm} ? {mm}->start_code : 0, {mm} ? {mm}->end_code : 0, "
            f"{regs}->ip, {regs}->cs, {task}->comm")


def _tasks_and_kernel_walks(guest, kind, s):
    """Session 2: every task through crash's gdb; vtop and xen walk of the samples; errors."""
    stext, absent = s["stext"], s["absent"]
    cmds = [(("task", address), _task_command(address)) for address in s["listed"]]
    for i, (_, va) in enumerate(s["samples"]):
        cmds += [(("vtop", i), f"vtop {va:x}"), (("walk", i), f"xen walk {va:x} --json")]
    for name, va in s["text_samples"].items():
        cmds.append((("text", name), f"xen walk {va:x}"))
    cmds += [("absent-text", f"xen walk --cr3 {absent:x} {stext:x}"),
             ("absent-json", f"xen walk --cr3 {absent:x} {stext:x} --json"),
             ("absent-rd", f"rd -p -8 {absent:x} 8"),
             ("bad", "xen walk zzz"), ("after-bad", f"xen walk {stext:x} --json"),
             ("after-bad-vtop", f"vtop {stext:x}"),
             ("noncanon-json", "xen walk 8000000000000000 --json")]
    out = crash(guest, kind, cmds)

    members = []
    for address in s["listed"]:
        text = out[("task", address)].rstrip("\n")
        words = text.split(" ", len(TASK_FIELDS))
        assert len(words) == len(TASK_FIELDS) + 1 and "\n" not in text, f"task {address:x}:\n{text}"
        task = {k: int(v, 10 if k == "pid" else 16) for k, v in zip(TASK_FIELDS, words)}
        task["comm"] = words[-1]
        assert task["task"] == address, text
        members.append(task)
    crash_pa, xen, vtext = [], [], []
    for i, (_, va) in enumerate(s["samples"]):
        vtext.append(f"crash> vtop {va:x}\n{out[('vtop', i)]}\ncrash> xen walk {va:x} --json\n{out[('walk', i)]}")
        crash_pa.append(parse_vtop(va, out[("vtop", i)]))
        xen.append(parse_walk_json(out[("walk", i)], f"xen walk {va:x} --json"))
    sleeps = [task for task in members if task["comm"] == "sleep"]
    assert sleeps, [(task["pid"], task["comm"]) for task in members]
    return dict(o2=out, members=members, crash_pa=crash_pa, xen=xen, vtext=vtext, sleeps=sleeps)


def _user_reads(sleeps):
    """(task, what, va, n) per page-bounded piece of each sleep's arguments, the syscall instruction
    before its saved user RIP and 32 bytes of text there."""
    user = []
    for task in sleeps:
        for what, va, n in (("args", task["arg_start"], task["arg_end"] - task["arg_start"]),
                            ("syscall", task["ip"] - 2, 2), ("text", task["ip"], 32)):
            for piece_va, piece_n in chunks(va, n):
                user.append((task, what, piece_va, piece_n))
    return user


def _stacks_and_user_walks(guest, kind, s):
    """Session 3: task stacks; vtop of every page directory; the sleeps' user addresses on it.
    The stack samples join ``samples``, ``crash_pa``, ``xen`` and ``vtext``."""
    members, pob = s["members"], s["pob"]
    stack_samples = []
    for task in members:
        if task["stack"] >> 44 == 0xffffc:           # VMAP_STACK: a vmalloc area, a guard page after it
            stack_samples += [("stack", task["stack"]), ("stack", task["stack"] + THREAD_SIZE - 1),
                              ("stack-guard", task["stack"] + THREAD_SIZE)]
    pgds = sorted({t["pgd"] for t in members if t["pgd"]} | {t["active_pgd"] for t in members if t["active_pgd"]}
                  | {s["init_pgd"]})
    cmds = [(("pgd", pgd), f"vtop {pgd:x}") for pgd in pgds]
    for i, (_, va) in enumerate(stack_samples):
        cmds += [(("vtop", i), f"vtop {va:x}"), (("walk", i), f"xen walk {va:x} --json")]
    guard = next(v for c, v in stack_samples if c == "stack-guard")
    cmds.append(("guard-text", f"xen walk {guard:x}"))
    user = _user_reads(s["sleeps"])
    for i, (task, _, va, _) in enumerate(user):
        # the walk's CR3: mm->pgd through the direct map; the test checks it is crash's vtop of mm->pgd
        cmds.append((("uwalk", i), f"xen walk --cr3 {task['pgd'] - pob:x} {va:x} --json"))
    uva0 = s["sleeps"][0]["arg_start"]
    cmds += [("kctx-json", f"xen walk {uva0:x} --json"), ("kctx-text", f"xen walk {uva0:x}")]
    out = crash(guest, kind, cmds)
    cr3_of = {pgd: parse_vtop(pgd, out[("pgd", pgd)]) for pgd in pgds}
    for i, (_, va) in enumerate(stack_samples):
        s["samples"].append(stack_samples[i])
        s["vtext"].append(f"crash> vtop {va:x}\n{out[('vtop', i)]}\ncrash> xen walk {va:x} --json\n{out[('walk', i)]}")
        s["crash_pa"].append(parse_vtop(va, out[("vtop", i)]))
        s["xen"].append(parse_walk_json(out[("walk", i)], f"xen walk {va:x} --json"))
    uwalks = [parse_walk_json(out[("uwalk", i)], f"xen walk --cr3 ... {va:x}") for i, (_, _, va, _) in enumerate(user)]
    return dict(o3=out, cr3_of=cr3_of, user=user, uwalks=uwalks, uva0=uva0)


def _user_bytes(guest, kind, s):
    """Session 4: the bytes crash reads at the physical addresses of those user walks."""
    user, uwalks = s["user"], s["uwalks"]
    cmds = [(("rd", i), f"rd -p -8 {w['pa']:x} {n}") for i, ((_, _, _, n), w) in enumerate(zip(user, uwalks))
            if w["pa"] is not None]
    out = crash(guest, kind, cmds) if cmds else {}
    return dict(ubytes={i: parse_rd(uwalks[i]["pa"], user[i][3], out[("rd", i)])
                        for i in range(len(user)) if ("rd", i) in out})


@pytest.fixture(scope="module", params=KINDS)
def seen(request, guest):
    kind = request.param
    s = dict(kind=kind, dump=guest["dumps"][kind])
    s.update(_lists_and_symbols(guest, kind))
    s.update(_kernel_samples(guest, s, random.Random(kind)))
    s.update(_tasks_and_kernel_walks(guest, kind, s))
    s.update(_stacks_and_user_walks(guest, kind, s))
    s.update(_user_bytes(guest, kind, s))
    return s


def root_pgd(t):
    """The page directory a task runs on, as crash's gdb read it: mm->pgd, else active_mm->pgd."""
    return t["pgd"] if t["mm"] else t["active_pgd"] if t["active_mm"] else None


# ---------------------------------------------------------------------------------------------
# 1. kernel addresses: xen walk == crash's vtop; text == the CLI's
# ---------------------------------------------------------------------------------------------

def test_walk_agrees_with_crash_vtop(seen):
    s = seen
    bad = []
    for i, ((cls, va), cpa, w) in enumerate(zip(s["samples"], s["crash_pa"], s["xen"])):
        if w["va"] != va or w["pa"] != cpa or (w["pa"] is None) != (w["stop"] is not None):
            bad.append(f"{cls} {va:#x}: crash vtop {cpa if cpa is None else hex(cpa)}, xen walk pa "
                       f"{w['pa'] if w['pa'] is None else hex(w['pa'])} stop {w['stop']} at {w['stop_level']}\n"
                       f"{s['vtext'][i]}")
    assert not bad, f"{len(bad)} of {len(s['samples'])} disagree:\n" + "\n".join(bad[:6])
    classes = {c for c, _ in s["samples"]}
    assert {"text", "direct", "vmalloc", "vmalloc-guard", "module", "module-end", "stack", "stack-guard"} <= classes
    # mapped where the kernel maps, unmapped at the guard pages (both tools say so: checked above)
    for cls in ("text", "direct", "module", "stack"):
        miss = [t for (c, _), p, t in zip(s["samples"], s["crash_pa"], s["vtext"]) if c == cls and p is None]
        assert not miss, f"{cls}: {len(miss)} unmapped\n" + "\n".join(miss[:4])
    for cls in ("stack-guard", "module-end"):
        hit = [t for (c, _), p, t in zip(s["samples"], s["crash_pa"], s["vtext"]) if c == cls and p is not None]
        assert not hit, f"{cls}: {len(hit)} mapped\n" + "\n".join(hit[:4])
    # the direct map is the identity on RAM, kernel text at its link offset from _stext's frame
    for (c, va), p in zip(s["samples"], s["crash_pa"]):
        if c == "direct":
            assert p == va - s["pob"], (hex(va), p)


def test_walk_text_equals_the_cli(seen):
    s = seen
    guard = next(v for c, v in s["samples"] if c == "stack-guard")
    outs = [(name, va, s["o2"][("text", name)]) for name, va in s["text_samples"].items()]
    for name, va, got in outs + [("stack-guard", guard, s["o3"]["guard-text"])]:
        r = cli("walk", s["dump"], f"{va:x}")
        assert r.returncode == 0 and not r.stderr, (name, r.returncode, r.stderr)
        assert got == r.stdout, f"{name} {va:#x}\n--- crash> xen walk {va:x}\n{got}\n--- CLI\n{r.stdout}"
        assert "Traceback" not in got
    for name in ("noncanonical", "noncanonical-low"):
        assert "not canonical" in s["o2"][("text", name)], s["o2"][("text", name)]
    j = parse_walk_json(s["o2"]["noncanon-json"], "xen walk 8000000000000000 --json")
    assert j["pa"] is None and j["stop"] == "non-canonical", j


def test_walk_of_a_table_not_in_the_dump(seen):
    """--cr3 whose top table is not in the dump: crash cannot read it either (its `rd -p` fails);
    both front ends refuse up front with the same one line (crash: probed with readmem())."""
    s = seen
    rd = s["o2"]["absent-rd"]
    assert re.search(r"rd: (read|seek) error: physical address: " + hexs(s["absent"]), rd), rd
    for got in (s["o2"]["absent-json"], s["o2"]["absent-text"]):
        lines = got.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("xen: walk: CR3 ") and \
            "points outside the dump's memory" in lines[0], got
    r = cli("walk", s["dump"], "--cr3", f"{s['absent']:x}", f"{s['stext']:x}")
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert "xen: " + r.stderr.strip()[len("xenscope "):] == s["o2"]["absent-text"].strip(), \
        (r.stderr, s["o2"]["absent-text"])


def test_a_bad_argument_is_one_line_and_the_session_goes_on(seen):
    s = seen
    bad = s["o2"]["bad"]
    lines = [ln for ln in bad.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("xen: walk: ") and "zzz" in lines[0], bad
    after = parse_walk_json(s["o2"]["after-bad"], "xen walk after the error")
    assert after["pa"] is not None and after["pa"] == parse_vtop(s["stext"], s["o2"]["after-bad-vtop"]), \
        (after, s["o2"]["after-bad-vtop"])


# ---------------------------------------------------------------------------------------------
# 2. user addresses: --cr3 from crash's vtop of mm->pgd; bytes read by crash
# ---------------------------------------------------------------------------------------------

def test_user_addresses_of_the_sleep_processes(seen, guest):
    s = seen
    procs = guest["procs"]
    sleeps = s["sleeps"]
    # the guest's own list: four sleeps (two from the initramfs, two from this test), with their arguments
    want_args = {p: cmd for p, (comm, cmd) in procs.items() if comm == "sleep"}
    assert sorted(want_args.values()) == [f"sleep@{n}@" for n in range(100000, 100004)], procs
    assert sorted(t["pid"] for t in sleeps) == sorted(want_args), ([t["pid"] for t in sleeps], want_args)
    # the CR3 the walks used (mm->pgd through the direct map) is crash's vtop of mm->pgd
    for t in sleeps:
        pgd = t["pgd"]
        assert s["cr3_of"][pgd] == pgd - s["pob"], (hex(pgd), s["cr3_of"][pgd], s["o3"][("pgd", pgd)])
    got = {}
    for i, ((t, what, va, n), w) in enumerate(zip(s["user"], s["uwalks"])):
        assert w["pa"] is not None, (t["pid"], what, hex(va), w["stop"], w["stop_level"], s["o3"][("uwalk", i)])
        assert w["user"], (t["pid"], what, hex(va), s["o3"][("uwalk", i)])
        got.setdefault((t["task"], what), b"")
        got[(t["task"], what)] += s["ubytes"][i]
    for t in sleeps:
        f, ip, cs = t, t["ip"], t["cs"]
        assert cs & 3 == 3 and f["start_code"] <= ip < f["end_code"], (t["pid"], hex(ip), hex(cs), f)
        args = got[(t["task"], "args")]
        assert args.replace(b"\0", b"@").decode() == want_args[t["pid"]], (t["pid"], args, want_args[t["pid"]])
        assert got[(t["task"], "syscall")] == b"\x0f\x05", (t["pid"], hex(ip), got[(t["task"], "syscall")])
        assert got[(t["task"], "text")] == busybox_bytes(f["start_code"], ip, 32), (t["pid"], hex(ip))


def test_user_address_in_the_kernel_context(seen):
    """crash's context is swapper/0 (no mm; crash 8.0.2 cannot switch to another task here): without
    --cr3, ``xen walk`` uses the CPU's CR3 from the QEMU note, exactly as the CLI does."""
    s = seen
    j = parse_walk_json(s["o3"]["kctx-json"], "xen walk UVA --json")
    r = cli("walk", s["dump"], f"{s['uva0']:x}", "--json")
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)
    assert (j["cr3"], j["pa"], j["stop"], j["stop_level"]) == (c["cr3"], c["pa"], c["stop"], c["stop_level"]), (j, c)
    assert "CPU" in j["sources"]["cr3"], j["sources"]
    r = cli("walk", s["dump"], f"{s['uva0']:x}")
    assert s["o3"]["kctx-text"] == r.stdout, f"--- crash\n{s['o3']['kctx-text']}\n--- CLI\n{r.stdout}"


# ---------------------------------------------------------------------------------------------
# 3. modules, tasks, modcheck against mod, list + gdb, vtop
# ---------------------------------------------------------------------------------------------

def test_modules_agree_with_crash_mod(seen, guest):
    s = seen
    xm = json.loads(s["o1"]["modules"])
    assert not xm["list_errors"], xm["list_errors"]
    ours = {m["name"]: m for m in xm["modules"]}
    theirs = {m["name"]: m for m in s["mods"]}
    assert set(ours) == set(theirs) == set(guest["modules"]), (sorted(ours), s["o1"]["mod"], guest["modules"])
    assert {"crc7", "crc8", "qemu_fw_cfg"} <= set(theirs)
    for name, m in theirs.items():
        o = ours[name]
        regs = o["regions"]
        assert o["module"] == m["module"] and not o["error"], (name, o, s["o1"]["mod"])
        assert min(r["va"] for r in regs) == m["base"], (name, regs, s["o1"]["mod"])
        assert sum(r["size"] for r in regs) == m["size"] == guest["modules"][name], (name, regs, s["o1"]["mod"])
        assert o["pages"] == m["size"] // 4096, (name, o)


def test_tasks_agree_with_crash_list(seen, guest):
    s = seen
    # crash 8.0.2's `ps` shows only swapper/0 on this kernel (struct pid's numbers[] became a flexible
    # array in 6.1.192; fixed in crash 8.0.4, 88580068): what it shows must still be consistent
    ps = re.findall(r"^[> ]\s*(\d+)\s+\d+\s+\d+\s+([0-9a-f]{16})\s+\S+\s+[\d.]+\s+\d+\s+\d+\s+(.*)$", s["o1"]["ps"], re.M)
    assert ("0", f"{s['listed'][0]:016x}", "[swapper/0]") in ps, s["o1"]["ps"]
    by_task = {t["task"]: t for t in s["members"]}
    for pid, task, comm in ps:
        t = by_task.get(int(task, 16))
        assert t and t["pid"] == int(pid) and comm.strip("[]") == t["comm"], (pid, task, comm, s["o1"]["ps"])

    xt = json.loads(s["o1"]["tasks"])
    assert not xt["list_errors"], xt["list_errors"]
    assert [t["task"] for t in xt["tasks"]] == s["listed"], (xt["tasks"][:3], s["o1"]["list"])
    bad = []
    for x, c in zip(xt["tasks"], s["members"]):
        if (x["pid"], x["comm"], x["mm"], x["active_mm"]) != (c["pid"], c["comm"], c["mm"], c["active_mm"]):
            bad.append((x, c))
            continue
        want_pgd = root_pgd(c)
        want_cr3 = s["cr3_of"][want_pgd] if want_pgd else None
        if (x["pgd"], x["cr3"], x["error"]) != (want_pgd, want_cr3, None) or \
                x["pgd_from"] != ("mm" if c["mm"] else "active_mm" if c["active_mm"] else None):
            bad.append((x, c, want_pgd, want_cr3))
    assert not bad, bad[:5]
    # the guest's own /proc list: every lasting process is on crash's list with its comm
    names = {t["pid"]: t["comm"] for t in s["members"]}
    for pid, (comm, _) in guest["procs"].items():
        if pid != 1 and comm not in ("cat", "sh", "tr"):
            want = comm.split("-")[0] if comm.startswith("kworker/") else comm[:15]
            assert names.get(pid) == want, (pid, comm, names.get(pid))


def test_modcheck_is_clean_and_counts_what_crash_counts(seen):
    s = seen
    mc = json.loads(s["o1"]["modcheck"])
    assert mc["ok"] and mc["groups"] == [] and not mc["list_errors"], (mc["groups"][:3], mc["list_errors"])
    assert not mc["unmapped_in_reference"], mc["unmapped_in_reference"]
    assert mc["mode"] == "4level"
    assert mc["modules"] == len(s["mods"]), (mc["modules"], s["o1"]["mod"])
    assert mc["checked_pages"] == sum(m["size"] for m in s["mods"]) // 4096, (mc["checked_pages"], s["o1"]["mod"])
    # a task is checked when it has a page directory: mm, or active_mm for a kernel thread
    with_pgd = [c for c in s["members"] if c["mm"] or c["active_mm"]]
    assert mc["tasks"] == len(with_pgd), (mc["tasks"], [(c["pid"], c["comm"]) for c in with_pgd])
    assert sorted(t["pid"] for t in mc["skipped_tasks"]) == \
        sorted(c["pid"] for c in s["members"] if not (c["mm"] or c["active_mm"]))
    # directories other than init_mm.pgd (compared against it), each CR3 from crash's vtop
    ref = s["cr3_of"][s["init_pgd"]]
    assert mc["reference_root"] == ref, (mc["reference_root"], s["o3"][("pgd", s["init_pgd"])])
    roots = {s["cr3_of"][root_pgd(c)] for c in with_pgd}
    assert mc["checked_pgds"] == len(roots - {ref}), (mc["checked_pgds"], sorted(map(hex, roots)), hex(ref))
    assert sorted(mc["shared_with_reference"]) == sorted(
        c["pid"] for c in with_pgd if s["cr3_of"][root_pgd(c)] == ref)


# ---------------------------------------------------------------------------------------------
# 4. pipes and redirection
# ---------------------------------------------------------------------------------------------

def test_maps_through_a_pipe_and_a_redirection(seen):
    s = seen
    redirected = s["o1"]["maps"]
    r = cli("maps", s["dump"])
    assert r.returncode == 0, r.stderr
    n = len([ln for ln in redirected.splitlines() if ln])
    assert n > 1000 and n == len([ln for ln in r.stdout.splitlines() if ln]), (n, len(r.stdout.splitlines()))
    assert redirected == r.stdout, "crash's `xen maps > FILE` differs from the CLI's maps"
    counts = [s["o1"][("pipe", i)].strip() for i in range(PIPE_TRIES)]
    good = [c for c in counts if c == str(n)]
    # crash's own pipe race (see the module doc): each miss must come with crash's message
    missed = len(counts) - len(good)
    assert good and missed <= s["o1"]["_stdout"].count("pipe operation failed"), \
        (counts, n, s["o1"]["_stdout"][-2000:])



@pytest.mark.parametrize("kind", KINDS)
def test_dmesg_equals_crashs_log(guest, kind):
    """``xen dmesg`` in crash (readmem) and in the CLI: the kernel's printk buffer, each record as crash's
    own ``log`` prints it (crash indents a record's later lines as wide as its "[seconds] " prefix,
    the console and xenscope repeat the prefix: undone here); the first line says where it came from."""
    out = crash(guest, kind, [("log", "log"), ("dmesg", "xen dmesg")])
    ours, theirs, prefix = out["dmesg"].splitlines(), [], ""
    for line in out["log"].splitlines():
        if line.startswith("["):
            prefix = re.match(r"\[\s*\d+\.\d{6}\] ", line).group(0)
        elif line[:len(prefix)] == " " * len(prefix):
            line = prefix + line[len(prefix):]
        theirs.append(line)
    assert ours[0].startswith("Linux's printk buffer (printk_ringbuffer) at ") and "VMCOREINFO" in ours[0]
    assert ours[1:] == theirs and len(theirs) > 300 and theirs[0].startswith("[    0.000000] Linux version ")
    assert out["dmesg"] == cli("dmesg", guest["dumps"][kind]).stdout
