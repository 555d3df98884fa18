"""xenscope inside Debian's real crash utility (8.0.2), on the bundled cores.

crash needs a vmlinux for every dump; the bundled cores are not real kernels, so these runs use
crash's minimal mode (``crash --minimal``), where crash still reads the dump (its ELF reader, its
Xen-core handling) and the vmlinux's types (the gcc-built mini vmlinux of the mod-* cores has
DWARF). Full crash sessions on a real Debian kernel are in tests/realsys/test_crash_linux.py.
Debian's crash is built for x86_64 only: it refuses the i386 cores ("machine type mismatch").

Truth: each core's manifest (written by the builder), and the CLI's output for the same
arguments (the CLI reads the dump with xenscope's own readers; crash with its own).
"""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import CORES, TOP
from crashutil import CRASH, EXTENSION, crash_env, run_crash, run_crash_pipe
from xenstructs.commands import COMMANDS, debugger_commands

MINI = os.path.join(CORES, "mod-x86_64.vmlinux")     # any x86_64 vmlinux serves minimal mode
MINIMAL = ("--minimal",)


def core(name):
    return os.path.join(CORES, name)


def manifest(name):
    with open(core(name)) as f:
        return json.load(f)


def cli(*argv):
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", *argv], capture_output=True, text=True,
                       cwd=TOP, timeout=600)
    return r.stdout + r.stderr


def crash_min(dump, cmds, namelist=MINI, **kw):
    r = run_crash(namelist, dump, cmds, options=MINIMAL, **kw)
    assert r.returncode == 0, r.output
    assert "shared object loaded" in r.stdout, r.output
    for c, out in zip(cmds, r.outputs):
        assert out is not None, (c, r.output)
        assert "Traceback" not in out and "internal error" not in out, (c, out)
    return r


def test_crash_and_the_extension_are_installed():
    assert CRASH, "Debian's crash is not installed (./setup.sh installs it)"
    assert os.path.isfile(EXTENSION), "crashext/xenscope.so is not built (./setup.sh builds it)"


def test_help_lists_every_subcommand():
    r = crash_min(core("x86_64-4level.core"), ["help xen", "xen", "xen help walk", "xen walk --help"])
    help_xen, overview, help_walk, walk_help = r.outputs
    assert "NAME" in help_xen and "SYNOPSIS" in help_xen and "xen SUBCOMMAND" in help_xen
    for name, cmd in debugger_commands().items():
        assert f"\n    {name:<10} {cmd.summary}" in help_xen, name
        assert f"xen {name:<10} {cmd.summary}" in overview, name
    want = COMMANDS["walk"].parser("xen walk").format_help()
    assert help_walk == walk_help
    assert help_walk.split() == want.split()            # argparse may wrap differently


# ---------------------------------------------------------------------------------------------
# Every subcommand, in crash and in the CLI: the same text, and the manifest's facts
# ---------------------------------------------------------------------------------------------

XEN17 = ("xen-4.17-host.core", ["--xen-syms", core("xen-4.17-host.map")])
XEN6 = ("xen-4.6-host.core", ["--xen-syms", core("xen-4.6-host.map")])


def _cases():
    m4 = manifest("x86_64-4level.json")
    m5 = manifest("x86_64-5level.json")
    va4 = [w["va"] for w in m4["walks"]]
    x17 = manifest("xen-4.17-host.json")
    mfn = x17["violations"][0]["mfn"]
    p2m = x17["p2m"]
    p2m_args = ["--p2m-va", hex(p2m["va"]), "--p2m-entries", str(p2m["pfn_count"])] + XEN17[1]
    fault_pfn = p2m["faults"][0]["pfn"]
    cases = [
        ("walk", "x86_64-4level.core", [f"{va4[0]:x}"]),
        ("walk", "x86_64-4level.core", [f"{va4[-1]:x}"]),
        ("walk", "x86_64-5level.core", [f"{m5['walks'][0]['va']:x}"]),
        ("vtop", "x86_64-4level.core", [f"{v:x}" for v in va4]),
        ("maps", "x86_64-4level.core", []),
        ("maps", "x86_64-5level.core", ["--pages", "--limit", "40"]),
        ("read-phys", "x86_64-4level.core", [f"{m4['walks'][0]['pa']:x}", "64"]),
        ("pte", None, ["0x800000007fffe067"]),
        ("decode", None, ["cr4", "0x6f0"]),
        ("fault", "x86_64-4level.core", ["--error", "0x2"]),
        ("stack", "x86_64-4level.core", []),
        ("page", XEN17[0], [f"{mfn:x}", "--count", "4"] + XEN17[1]),
        ("frames", XEN17[0], ["--summary"] + XEN17[1]),
        ("frames", XEN6[0], ["--summary"] + XEN6[1]),
        ("frames", XEN17[0], ["--type", "l4"] + XEN17[1]),
        ("domains", XEN17[0], XEN17[1]),
        ("m2p", XEN17[0], [f"{mfn:x}"] + XEN17[1]),
        ("refs", XEN6[0], [f"{v['target_mfn']:x}" for v in manifest("xen-4.6-host.json")["violations"]
                            if v.get("target_mfn")] + XEN6[1]),
        ("pt-audit", XEN17[0], XEN17[1]),
        ("pt-audit", XEN6[0], XEN6[1]),
        ("p2m-check", XEN17[0], p2m_args),
        ("p2m-check", XEN17[0], p2m_args + ["--json"]),
        ("p2m-check", XEN17[0], XEN17[1] + ["--json"]),        # every PV domain, by shared_info
        ("p2m-check", XEN6[0], XEN6[1]),
        ("p2m", XEN17[0], [f"{fault_pfn - 1:x}", "--count", "3"] + p2m_args),
        ("log", None, [core("xen-4.6-host.log")]),
        ("dmesg", XEN17[0], XEN17[1]),          # no conring in the .map: the same one-line error
        ("log", None, [os.path.join(TOP, "tests", "data", "xenlogs", "tcg-smap-4.17.7.log")]),
        ("tasks", "mod-x86_64.core", []),
        ("modules", "mod-x86_64.core", []),
        ("modcheck", "mod-x86_64.core", []),
        ("info", "x86_64-4level.core", []),
        ("check", None, [core("x86_64-4level.core"), core("xen-4.17-host.core")]),
    ]
    return cases


CASES = _cases()


def test_every_subcommand_has_a_case():
    assert {c[0] for c in CASES} | {"profile"} == set(debugger_commands())


def _cli_argv(name, dump, args):
    cmd = COMMANDS[name]
    if name in ("tasks", "modules", "modcheck"):
        args = args + ["--vmlinux", MINI]          # the CLI reads the types from the same vmlinux
    if dump is None:
        return [name] + args
    if cmd.needs_target or name == "fault":
        return [name, core(dump)] + args
    return [name] + args


@pytest.fixture(scope="module")
def crash_runs():
    """One crash session per core: every case's output, keyed by the case's index."""
    by_core = {}
    for i, (name, dump, args) in enumerate(CASES):
        by_core.setdefault(dump or "x86_64-4level.core", []).append((i, name, args))
    outs = {}
    for dump, items in by_core.items():
        r = crash_min(core(dump), [" ".join(["xen", name] + args) for _, name, args in items])
        for (i, _, _), out in zip(items, r.outputs):
            outs[i] = out
    return outs


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{c[0]}-{c[1] or 'none'}-{n}" for n, c in enumerate(CASES)])
def test_same_output_as_the_cli(crash_runs, i):
    name, dump, args = CASES[i]
    got = crash_runs[i]
    want = cli(*_cli_argv(name, dump, args))
    if want.startswith(f"xenscope {name}: "):     # an error: crash's error() says "xen: NAME: ..."
        want = "xen: " + want[len("xenscope "):]
    if name == "info":          # the kind and the notes say crash; the address space must not differ
        keep = ("machine", "cpus", "paging", "cr3", "cr0", "cr4", "efer")
        got = [ln for ln in got.splitlines() if ln.split(" ", 1)[0] in keep]
        want = [ln for ln in want.splitlines() if ln.split(" ", 1)[0] in keep]
        assert len(got) == len(keep), got
    if name in ("tasks", "modules", "modcheck"):     # where symbols and types came from: crash's own
        assert "\nsymbols: crash symbols; types: crash's types of " in got, got
        got, want = (re.sub(r"\nsymbols: [^\n]*", "", text) for text in (got, want))
    assert got == want, f"crash:\n{got}\nCLI:\n{want}"


def test_walks_match_the_manifest():
    for name in ("x86_64-4level", "x86_64-5level"):
        m = manifest(f"{name}.json")
        vas = [w["va"] for w in m["walks"]]
        r = crash_min(core(f"{name}.core"), [f"xen walk {va:x} --json" for va in vas])
        for w, out in zip(m["walks"], r.outputs):
            got = json.loads(out)
            assert got["pa"] == w["pa"], (name, hex(w["va"]), w["why"], out)


def test_xen_host_census_and_audit_match_the_manifest():
    x = manifest("xen-4.17-host.json")
    r = crash_min(core("xen-4.17-host.core"), ["xen frames --summary --json " + " ".join(XEN17[1]),
                                              "xen pt-audit --json " + " ".join(XEN17[1]),
                                              "xen info"])
    census, audit, info = r.outputs
    assert "machine reads (XENMACHADDR)" in info, info       # crash's Xen-core handling is used
    got = json.loads(census)["census"]["by_owner"]
    for owner, types in x["census"].items():
        if owner == "free":
            continue
        for t, n in types.items():
            assert got[owner][t] == n, (owner, t, got.get(owner))
    found = {(f["kind"], f["mfn"]) for d in json.loads(audit)["domains"] for f in d["findings"]}
    for v in x["violations"]:
        if v["kind"] != "foreign-p2m":        # a P2M fault: p2m-check's, not pt-audit's
            assert (v["kind"], v.get("target_mfn", v["mfn"])) in found, (v, sorted(found)[:20])


def test_p2m_check_in_crash_reports_every_injected_fault():
    """The builder's dom0 P2M carries one fault of every class: crash's reads find them all."""
    from test_p2m import CLI_OTHER, INV
    p = manifest("xen-4.17-host.json")["p2m"]
    r = crash_min(core("xen-4.17-host.core"), [
        f"xen p2m-check --domain {p['domain']} --p2m-va {p['va']:#x} --p2m-entries {p['pfn_count']} "
        f"--json {' '.join(XEN17[1])}"])
    res = json.loads(r.outputs[0])

    def inv(v):
        return INV if v is None else v
    got = sorted((c, inv(f["pfn"]), inv(f["mfn"]), inv(len(f["pfns"]) if c == "duplicate" else f[CLI_OTHER[c]]))
                 for c, fs in res["findings"].items() for f in fs)
    assert got == sorted((f["class"], f["pfn"], f["mfn"], f["other"]) for f in p["faults"])


def test_kernel_objects_from_crash_types_match_the_manifest():
    m = manifest("mod-x86_64.json")
    r = crash_min(core("mod-x86_64.core"), ["xen tasks --json", "xen modules --json", "xen modcheck --json"])
    tasks, mods, mc = (json.loads(o) for o in r.outputs)
    assert [(t["pid"], t["comm"]) for t in tasks["tasks"]] == [(t["pid"], t["comm"]) for t in m["tasks"]]
    assert {t["pid"]: t["task"] for t in tasks["tasks"]} == {t["pid"]: t["task_va"] for t in m["tasks"]}
    got = {g["name"]: sorted((x["va"], x["size"]) for x in g["regions"]) for g in mods["modules"]}
    want = {g["name"]: sorted((x["base"], x["size"]) for x in g["regions"]) for g in m["modules"]}
    assert got == want
    assert mc["groups"] == [] and m["findings"] == []
    assert mc["checked_pages"] == sum(g["pages"] for g in m["modules"])


def test_corrupt_task_list_is_reported_not_fatal():
    m = manifest("mod-corrupt-tasks.json")
    r = crash_min(core("mod-corrupt-tasks.core"), ["xen tasks --json", "xen tasks"],
                  namelist=os.path.join(CORES, "mod-x86_64.vmlinux"))
    res = json.loads(r.outputs[0])
    assert res["list_errors"], res
    assert len(res["tasks"]) == len([t for t in m["tasks"]]) or m["list_errors"], res
    assert "warning:" in r.outputs[1]


def test_profile_from_inside_crash(tmp_path):
    a, b = tmp_path / "crash.json", tmp_path / "cli.json"
    crash_min(core("x86_64-4level.core"), [f"xen profile {MINI} -o {a}"])
    cli("profile", MINI, "-o", str(b))
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ja == jb and ja["offsets"]


# ---------------------------------------------------------------------------------------------
# crash's session: pipes, redirection, errors, unloading, a missing venv
# ---------------------------------------------------------------------------------------------

def test_pipes_and_redirection():
    """One pipe per session: crash 8.0.2 itself often fails the pipe after a previous one in the
    same session ("pipe operation failed", also for its own `sym -l | head`: it finds the last
    pipe's exited shell while looking for the new pipe's process)."""
    dump = core("x86_64-4level.core")
    full = crash_min(dump, ["xen maps --pages"]).outputs[0]
    count = run_crash_pipe(MINI, dump, "xen maps --pages | grep -c .", options=MINIMAL).outputs[0]
    head = run_crash_pipe(MINI, dump, "xen maps --pages | head -3", options=MINIMAL).outputs[0]
    assert int(count) == len(full.splitlines()) == len(cli("maps", dump, "--pages").splitlines())
    assert head.splitlines() == full.splitlines()[:3]


def test_errors_are_crash_errors_and_the_session_goes_on():
    cmds = ["xen walk zzz", "xen bogus", "xen read-phys 0 2000000", "xen walk ffff800000000000 --mode 4level",
            "xen frames", "xen walk --cr3 0x123456789000 0", "xen maps --range 5-1",
            "xen walk ffffffff81000000 --json"]
    r = crash_min(core("x86_64-4level.core"), cmds)
    outs = r.outputs
    assert outs[0].strip() == "xen: walk: argument va: not a hex number: 'zzz'"
    assert outs[1].strip() == "xen: unknown subcommand 'bogus': see `xen help`"
    assert outs[2].startswith("xen: read-phys:") and len(outs[2].strip().splitlines()) == 1, outs[2]
    for out in outs[3:7]:
        assert out.strip(), out
        lines = out.strip().splitlines()
        assert all(not ln.startswith("xen: ") for ln in lines[1:]), out
    assert outs[4].startswith("xen: frames:"), outs[4]
    assert json.loads(outs[7])["va"] == 0xffffffff81000000


def test_unload_and_load_again():
    r = crash_min(core("x86_64-4level.core"),
                  [f"extend -u {EXTENSION}", f"extend {EXTENSION}", "xen walk ffffffff81000000 --json"])
    assert "shared object unloaded" in r.outputs[0]
    assert "shared object loaded" in r.outputs[1]
    assert json.loads(r.outputs[2])["va"] == 0xffffffff81000000


def test_a_missing_venv_is_explained_and_crash_keeps_running(tmp_path):
    r = run_crash(MINI, core("x86_64-4level.core"), ["xen walk 0", "eval 6*7"], options=MINIMAL,
                  env=crash_env(XENSCOPE_VENV=str(tmp_path / "nowhere")))
    assert r.returncode == 0, r.output
    assert "xenscope: not loaded:" in r.stdout and "does not exist" in r.stdout, r.output
    assert r.outputs[0].startswith("xen: xenscope is not loaded:") and "setup.sh" in r.outputs[0], r.outputs
    assert "42" in r.outputs[1]
    assert "Traceback" not in r.output


def test_ctrl_c_interrupts_the_command_not_the_session(tmp_path):
    """On a terminal, Ctrl-C during a long `xen` command is crash's SIGINT; inside Python it must
    become KeyboardInterrupt (crash's own handler would longjmp through the interpreter and leave
    it unusable): the command stops with `xen: maps: interrupted` and the next one works."""
    import pty
    import select
    import time
    from cores.builder.big import build_big_core
    big = str(tmp_path / "big.core")
    cr3 = build_big_core(big, n_ptes=1 << 20)["cr3"]
    pid, fd = pty.fork()
    if pid == 0:                                   # the child: crash on a terminal
        os.environ.update(crash_env())
        os.execvp(CRASH, [CRASH, "-s", "--minimal", MINI, big])
    out = b""

    def read_until(marker, timeout):
        nonlocal out
        end = time.time() + timeout
        while time.time() < end and marker not in out:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    out += os.read(fd, 65536)
                except OSError:
                    break
        return marker in out
    try:
        assert read_until(b"crash> ", 60), out
        os.write(fd, b"set scroll off\n")
        os.write(fd, f"extend {EXTENSION}\n".encode())
        assert read_until(b"shared object loaded", 60), out
        os.write(fd, f"xen maps --pages --cr3 {cr3:#x} --mode 4level > /dev/null\n".encode())
        time.sleep(0.5)                            # maps of 1 M PTEs (rendered) takes seconds
        os.write(fd, b"\x03")
        assert read_until(b"xen: maps: interrupted", 30), out
        os.write(fd, f"xen walk 0 --cr3 {cr3:#x} --mode 4level\n".encode())
        assert read_until(b"not mapped", 30), out
        os.write(fd, b"exit\n")
        read_until(b"\0", 5)
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)
    assert b"Traceback" not in out
