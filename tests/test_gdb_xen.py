"""The Xen commands inside real gdb: the same subcommands and options as the CLI, same JSON."""
import json
import os

from gdbutil import TOP, run_cli, run_gdb

CORE = os.path.join(TOP, "cores", "xen-4.6-host.core")
MAP = os.path.join(TOP, "cores", "xen-4.6-host.map")
LOG = os.path.join(TOP, "cores", "xen-4.6-host.log")


def gdb_json(cmd, setup=()):
    r = run_gdb(*setup, cmd)
    assert r.returncode == 0 and "Traceback" not in r.output and not r.stderr.strip(), r.output
    return json.loads(r.stdout[r.stdout.index("{"):])


def test_page_frames_domains_in_gdb_equal_cli():
    man = json.load(open(os.path.join(TOP, "cores", "xen-4.6-host.json")))
    v = next(v for v in man["violations"] if v["kind"] == "writable-as-table")
    for args in ([f"page {v['mfn']:#x} --count 2"], ["frames --summary"], ["domains"],
                 [f"m2p --range {v['mfn']:#x}-{v['mfn'] + 4:#x}"], ["pt-audit --domain 0 --limit 0"]):
        cmd = args[0] + f" --xen-syms {MAP} --json"
        a = gdb_json("xen " + cmd, setup=[f"core-file {CORE}"])
        r = run_cli(*(cmd.split()[:1] + [CORE] + cmd.split()[1:]))
        assert r.returncode == 0, r.stderr
        assert a == json.loads(r.stdout), cmd


def test_log_and_decode_in_gdb():
    r = run_gdb(f"xen log {LOG} --limit 3", "xen decode type 0x7400000000000001 --xen 4.6.0")
    assert r.returncode == 0 and "Traceback" not in r.output, r.output
    assert "writable page, validated, type count 1" in r.stdout
    assert "the likely story" in r.stdout


def test_xen_command_on_a_linux_core_is_a_gdb_error():
    r = run_gdb(f"core-file {os.path.join(TOP, 'cores', 'x86_64-4level.core')}", "xen frames --summary",
                "echo still-running\\n")
    assert "still-running" in r.stdout and "Traceback" not in r.output
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("xen frames:")], r.stderr


def test_crash_log_and_fault_in_gdb_equal_cli():
    """A real Xen crash block (tests/data/xenlogs/tcg-smap-4.17.7.log): ``xen log`` and
    ``xen fault --log`` in gdb give the CLI's JSON."""
    log = os.path.join(TOP, "tests", "data", "xenlogs", "tcg-smap-4.17.7.log")
    for cmd in (f"log {log} --json", f"fault --log {log} --json"):
        a = gdb_json("xen " + cmd)
        r = run_cli(*cmd.split())
        assert r.returncode == 0, r.stderr
        assert a == json.loads(r.stdout), cmd
    assert a["access"]["actor"] == "pv64" and a["assumed"][0]["fires"] == ["smap"]
