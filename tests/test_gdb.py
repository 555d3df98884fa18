"""The gdb front end in the real gdb (``gdb -nx -batch``): loading, help, errors, JSON equal to the
CLI's, and every synthetic core's manifest through ``core-file`` and ``set xen dump``."""
import glob
import json
import os
import re

import pytest

from gdbutil import GDB, TOP, gdb_argv, gdb_env, median_seconds, run_cli, run_gdb, venv_python

assert GDB is not None, "gdb is not installed: ./setup.sh installs it"

CORES = os.path.join(TOP, "cores")
MANIFESTS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CORES, "*.json"))
                   if not os.path.basename(p).startswith(("xen-", "mod-", "pv-", "hap-")))
NAMES = ("info", "walk", "vtop", "maps", "pte", "decode", "read-phys")


def command_names():
    import subprocess
    r = subprocess.run([venv_python(), "-c", "from xenstructs.commands import debugger_commands as d; print(' '.join(d()))"],
                       capture_output=True, text=True, cwd=TOP, check=True)
    return r.stdout.split()


def gdb_json(*commands, setup=(), **kw):
    """Run ``setup`` then ``commands`` that each print one JSON document; return them parsed."""
    marked = list(setup)
    for c in commands:
        marked += [c, "echo @@@\\n"]
    r = run_gdb(*marked, **kw)
    assert "Traceback" not in r.output, r.output
    docs = r.stdout.split("@@@\n")[:-1]
    assert len(docs) == len(commands), r.output
    return [json.loads(d[d.index("{"):]) for d in docs]


def load(name):
    with open(os.path.join(CORES, name)) as f:
        return json.load(f)


def core_of(name):
    man = load(name)
    path = os.path.join(CORES, man["core"])
    assert os.path.exists(path), f"{man['core']} missing: python cores/build.py"
    return man, path


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------

def test_loads_quietly_and_imports_nothing_heavy():
    r = run_gdb("python import sys; print('heavy:', sorted(m for m in ('numpy', 'pwnlib', 'tabulate', "
                "'construct', 'elftools') if m in sys.modules))")
    assert r.returncode == 0 and r.stderr == "", r.output
    assert "heavy: []" in r.stdout, r.output


def test_load_time():
    env = gdb_env()
    bare = median_seconds(gdb_argv(load=False), env=env)
    loaded = median_seconds(gdb_argv(), env=env)
    assert loaded - bare <= 0.3, f"loading took {loaded - bare:.3f} s (gdb alone {bare:.3f} s)"


def test_missing_venv_says_what_to_run(tmp_path):
    r = run_gdb("echo still-running\\n", env=gdb_env(XENSCOPE_VENV=str(tmp_path)))
    assert r.returncode == 0, r.output
    assert "setup.sh" in r.output and "Traceback" not in r.output
    assert r.output.count("not loaded") == 1
    assert "still-running" in r.stdout
    r = run_gdb("help xen", env=gdb_env(XENSCOPE_VENV=str(tmp_path)))
    assert 'Undefined command: "xen"' in r.stderr      # nothing registered


def test_venv_for_another_python(tmp_path):
    os.makedirs(tmp_path / "lib" / "python3.99" / "site-packages")
    r = run_gdb(env=gdb_env(XENSCOPE_VENV=str(tmp_path)))
    assert r.returncode == 0 and "Python 3.99" in r.output and "setup.sh" in r.output, r.output
    assert "Traceback" not in r.output


# ---------------------------------------------------------------------------------------------
# commands without a target
# ---------------------------------------------------------------------------------------------

def test_help_lists_every_command():
    names = command_names()
    assert set(NAMES) <= set(names)
    r = run_gdb("help xen", "help xen walk", "help xen maps")
    assert r.returncode == 0, r.output
    for n in names:
        assert re.search(rf"^xen {re.escape(n)} -- \S", r.stdout, re.M), n
    assert "usage: xen walk" in r.stdout and "--cr3 CR3" in r.stdout
    assert "usage: xen maps" in r.stdout and "--pages" in r.stdout


def test_pte():
    r = run_gdb("xen pte 0x800000007fffe067")
    assert r.returncode == 0, r.output
    assert re.search(r"flags: P RW US A D XD\b", r.stdout), r.stdout
    assert "frame 0x7fffe" in r.stdout


def test_decode_pf():
    r = run_gdb("xen decode pf 3")
    assert r.returncode == 0, r.output
    assert "pf 0x3: P W" in r.stdout


def test_usage_error_is_a_gdb_error_and_gdb_goes_on():
    r = run_gdb("xen decode cr9 3", "xen pte", "xen walk --help", "echo after\\n")
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 2, r.stderr
    assert lines[0].startswith("xen decode: argument what: invalid choice")
    assert lines[1].startswith("xen pte: the following arguments are required")
    assert "usage: xen walk" in r.stdout
    assert r.stdout.rstrip().endswith("after")
    assert "Traceback" not in r.output


def test_walk_without_target():
    r = run_gdb("xen walk 0x1000", "echo after\\n")
    assert "no target: open a core (gdb -c FILE), attach to a stub, or `set xen dump FILE`" in r.stderr
    assert "after" in r.stdout and "Traceback" not in r.output


def test_gdb_expressions_as_addresses():
    r = run_gdb("set $v = 0x7fffe000", "xen pte $v|0x67", "xen pte $nosuchvar")
    assert "frame 0x7fffe" in r.stdout, r.output
    assert "xen pte: argument value:" in r.stderr and "Traceback" not in r.output


def test_completion():
    r = run_gdb("complete xen wa", "complete xen walk --mo", "complete xen walk --mode p", "complete xen decode c")
    assert r.stdout.split("\n")[:6] == ["xen walk", "xen walk --mode", "xen walk --mode pae",
                                         "xen decode count", "xen decode cr0", "xen decode cr4"], r.output


def test_internal_error_is_one_line_unless_debug():
    broken = "python import xenstructs.commands as C; C.COMMANDS['pte'].run = lambda t, a: 1 // 0"
    r = run_gdb("xen pte 1", broken, "xen pte 1", "set xen debug on", "xen pte 1", "echo after\n")
    lines = r.stderr.splitlines()
    assert lines[0] == ("xenscope internal error: ZeroDivisionError: integer division or modulo by zero "
                        "(set xen debug on for the traceback)"), r.stderr
    assert lines[1] == "Traceback (most recent call last):" and lines[-1] == lines[0], r.stderr
    assert r.stdout.rstrip().endswith("after")


def test_sourcing_twice_is_harmless():
    from gdbutil import LOADER
    r = run_gdb(f"source {LOADER}", "xen decode pf 3")
    assert r.returncode == 0 and r.stderr == "" and r.stdout.count("pf 0x3") == 1, r.output


@pytest.mark.parametrize("args", [["pte", "0x800000007fffe067"], ["pte", "0x80000000000000e3", "--level", "PDE"],
                                  ["decode", "pf", "0x15"], ["decode", "cr4", "0x3406f0"]])
def test_json_equals_cli(args):
    (got,) = gdb_json("xen " + " ".join(args) + " --json")
    c = run_cli(*args, "--json")
    assert c.returncode == 0, c.stderr
    assert got == json.loads(c.stdout)


def test_parameters():
    r = run_gdb("show xen", "set xen mode pae", "xen pte 0x63", "set xen mode 3level", "set xen dump /no/such/file",
                "show xen dump", "set xen debug on", "show xen debug")
    assert "xen mode is 'auto'" in r.stdout and "xen dump is not set" in r.stdout, r.output
    assert "(pae)" in r.stdout
    assert "Undefined item: \"3level\"" in r.stderr
    assert "xen dump: no such file: /no/such/file" in r.stderr
    assert "tracebacks are on" in r.stdout


# ---------------------------------------------------------------------------------------------
# synthetic cores (the builder's manifests are the truth)
# ---------------------------------------------------------------------------------------------

def test_cores_present():
    assert os.path.exists(os.path.join(CORES, "x86_64-4level.core"))
    assert len(MANIFESTS) >= 5


@pytest.mark.parametrize("name", MANIFESTS)
def test_core_info(name):
    man, path = core_of(name)
    r = run_gdb("xen info", core=path)
    assert "Traceback" not in r.output, r.output
    assert re.search(rf"^file\s+{re.escape(os.path.abspath(path))}$", r.stdout, re.M), r.stdout
    assert re.search(r"^kind\s+gdb core file: ", r.stdout, re.M), r.stdout
    m = re.search(r"^cr3\s+(0x[0-9a-f]+)\s+\((.+?)\); root table pa", r.stdout, re.M)
    assert m, r.stdout
    assert int(m.group(1), 16) == man["registers"]["cr3"]
    assert ("note" in m.group(2)) if man.get("qemu_notes") else m.group(2)
    (got,) = gdb_json("xen info --json", core=path)
    c = run_cli("info", path, "--json")
    want = json.loads(c.stdout)
    assert got.pop("kind") == "gdb core file: " + want.pop("kind")
    assert got == want


@pytest.mark.parametrize("name", MANIFESTS)
def test_core_walks(name):
    man, path = core_of(name)
    walks = man["walks"]
    got = gdb_json(*(f"xen walk {w['va']:#x} --json" for w in walks), core=path)
    for w, res in zip(walks, got):
        assert (res["pa"], res["stop"]) == (w["pa"], w["stop"]), w
        if w["pa"] is not None:
            assert res["page_size"] == w["page_size"]
            assert (res["writable"], res["user"], res["nx"]) == (w["writable"], w["user"], w["nx"]), w
    # text form, and vtop, for the first mapped one
    w = next(w for w in walks if w["pa"] is not None)
    r = run_gdb(f"xen walk {w['va']:#x}", f"xen vtop {w['va']:#x}", core=path)
    assert f"=> pa {w['pa']:#x}" in r.stdout and f"-> pa {w['pa']:#x}" in r.stdout, r.output
    # gdb expressions: the core's registers
    rip = man["registers"].get("rip") or man["registers"].get("eip")
    a, b = gdb_json("xen vtop $pc --json", f"xen vtop {rip:#x} --json", core=path)
    assert a == b and a["translations"][0]["va"] == rip
    # every manifest walk through one vtop: the vectorised path gives the manifest's answers
    (res,) = gdb_json("xen vtop " + " ".join(f"{w['va']:#x}" for w in walks) + " --json", core=path)
    assert [(t["va"], t["pa"], t["stop"]) for t in res["translations"]] == \
        [(w["va"], w["pa"], w["stop"]) for w in walks]


@pytest.mark.parametrize("name", MANIFESTS)
def test_core_maps(name):
    man, path = core_of(name)
    ranges, pages = gdb_json("xen maps --json", "xen maps --pages --json", core=path)
    keys = ("va_start", "va_end", "pa_start", "writable", "user", "nx")
    assert [{k: g[k] for k in keys} for g in ranges["ranges"]] == [{k: g[k] for k in keys} for g in man["ranges"]]
    keys = ("va", "pa", "size", "writable", "user", "nx")
    assert [{k: p[k] for k in keys} for p in pages["pages"]] == [{k: p[k] for k in keys} for p in man["pages"]]
    c = run_cli("maps", path, "--json")
    assert json.loads(c.stdout) == ranges


@pytest.mark.parametrize("name", MANIFESTS)
def test_set_xen_dump(name):
    """The same answers from `set xen dump FILE` with nothing open in gdb."""
    man, path = core_of(name)
    w = man["walks"][0]
    (res,) = gdb_json(f"xen walk {w['va']:#x} --json", setup=[f"set xen dump {path}"])
    assert (res["pa"], res["stop"]) == (w["pa"], w["stop"])
    c = run_cli("walk", path, hex(w["va"]), "--json")
    assert json.loads(c.stdout) == res


@pytest.mark.parametrize("name", MANIFESTS)
def test_core_read_phys(name):
    man, path = core_of(name)
    start = man["memory"][0][0]
    r = run_gdb(f"xen read-phys {start:#x} 32", core=path)
    assert r.returncode == 0 and "Traceback" not in r.output, r.output
    assert r.stdout.splitlines()[-2].startswith(f"{start + 16:08x}"), r.stdout


# ---------------------------------------------------------------------------------------------
# live stubs: a fake QEMU gdbstub serving a core's memory, and a stub without physical reads
# ---------------------------------------------------------------------------------------------

X86_64 = [n for n in MANIFESTS if n.startswith("x86_64")]


def stub_for(name, mode="qemu", cpus=2):
    from gdbutil import FakeStub
    from xenstructs.targets import open_dump
    man, path = core_of(name)
    t = open_dump(path)
    regs = dict(man["registers"])
    regs["eflags"] = regs.pop("rflags", 0)
    per_cpu = [dict(regs, rsp=regs.get("rsp", 0) + i) for i in range(cpus)]
    return man, path, t, FakeStub(t.read_phys, per_cpu, mode=mode)


@pytest.mark.parametrize("name", X86_64)
def test_qemu_stub_walks_and_maps(name):
    man, path, t, stub = stub_for(name)
    try:
        walks = man["walks"]
        docs = gdb_json("xen info --json", "xen maps --json", *(f"xen walk {w['va']:#x} --json" for w in walks),
                        setup=[f"target remote 127.0.0.1:{stub.port}"])
    finally:
        stub.close()
        t.close()
    info, maps, got = docs[0], docs[1], docs[2:]
    assert info["kind"].startswith("QEMU gdbstub (live)")
    assert info["cr3"] == man["registers"]["cr3"]
    assert info["sources"]["cr3"] == "gdb register ($cr3) (CPU 0)"
    assert (info["cr0"], info["cr4"]) == (man["registers"]["cr0"], man["registers"]["cr4"])
    keys = ("va_start", "va_end", "pa_start", "writable", "user", "nx")
    assert [{k: g[k] for k in keys} for g in maps["ranges"]] == [{k: g[k] for k in keys} for g in man["ranges"]]
    for w, res in zip(walks, got):
        assert (res["pa"], res["stop"]) == (w["pa"], w["stop"]), w
    # every read happened in physical mode, and the mode was always switched back
    modes = [p for p in stub.log if p.startswith("Qqemu.PhyMemMode:")]
    assert modes and modes == ["Qqemu.PhyMemMode:1", "Qqemu.PhyMemMode:0"] * (len(modes) // 2)
    assert stub.phys == 0


def test_qemu_stub_caches_until_stop():
    name = "x86_64-4level.json"
    assert name in MANIFESTS
    man, path, t, stub = stub_for(name)
    try:
        r = run_gdb(f"target remote 127.0.0.1:{stub.port}", "xen maps", "maintenance packet qMARK1", "xen maps",
                    "maintenance packet qMARK2", "stepi", "xen maps", "maintenance packet qMARK3",
                    "thread 2", "xen info")
    finally:
        stub.close()
        t.close()
    assert "Traceback" not in r.output and r.stdout.count("pages,") == 3, r.output
    tables = int(re.search(r"pages, (\d+) tables read", r.stdout).group(1))
    log = "\n".join(stub.log).split("qMARK")
    reads = [sum(1 for p in part.splitlines() if p.startswith("m") and p.endswith(",1000")) for part in log[:3]]
    holes = r.stdout.count("page table not in the dump") // 3     # failed reads are not cached
    assert reads == [tables, holes, tables], reads    # cached until gdb stopped again (stepi)
    assert "(gdb register ($cr3) (CPU 1))" in r.stdout      # --cpu defaults to gdb's thread


def test_other_stub_has_registers_but_no_physical_reads():
    name = "x86_64-4level.json"
    assert name in MANIFESTS
    man, path, t, stub = stub_for(name, mode="plain")
    try:
        r = run_gdb(f"target remote 127.0.0.1:{stub.port}", "xen info", "xen decode cr0 $cr0", "xen walk 0x400000",
                    f"set xen dump {path}", "xen walk 0x400000")
    finally:
        stub.close()
        t.close()
    assert "not QEMU" in r.stdout and f"{man['registers']['cr3']:#x}  (gdb register ($cr3" in r.stdout, r.output
    assert ("xen walk: physical reads are not available on this stub (not QEMU's gdbstub); "
            "give a dump with `set xen dump FILE`") in r.stderr
    assert f"cr0 {man['registers']['cr0']:#x}: PE" in r.stdout   # flags-typed register as an expression
    assert "=> pa" in r.stdout                # the dump answers once it is given
    assert not any(p.startswith("Qqemu") for p in stub.log)
