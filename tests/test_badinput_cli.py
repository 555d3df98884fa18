"""Bad input through the CLI: one clear line on stderr, exit 2, no traceback, no hang.

(Library-level format errors are in test_badinput_formats.py; gdb's in test_gdb.py.)
"""
import os
import subprocess
import sys


from conftest import CORES, TOP
import elfbytes

CORE = os.path.join(CORES, "x86_64-4level.core")


def cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "xenstructs.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=TOP, timeout=timeout)


def assert_one_line_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_truncated_core(tmp_path):
    bad = tmp_path / "trunc.core"
    data = open(CORE, "rb").read()
    bad.write_bytes(data[:len(data) // 2])
    assert_one_line_error(cli("walk", bad, "ffff888000001000"), "truncated")
    bad.write_bytes(data[:40])
    assert_one_line_error(cli("info", bad))


def test_not_an_elf(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, this is not a dump\n" * 10)
    assert_one_line_error(cli("maps", bad), "not a")
    assert_one_line_error(cli("maps", tmp_path / "missing.core"), "cannot open")


def test_overlapping_and_absurd_segments(tmp_path):
    over = tmp_path / "over.core"
    over.write_bytes(elfbytes.elf_core([(0x1000, b"\1" * 0x2000), (0x2000, b"\2" * 0x2000)]))
    assert_one_line_error(cli("info", over), "overlap")
    absurd = tmp_path / "absurd.core"
    absurd.write_bytes(elfbytes.elf_core([(0x1000, b"\1" * 0x1000)], phnum=0xfff0))
    assert_one_line_error(cli("info", absurd))


def test_address_outside_the_dump():
    assert_one_line_error(cli("read-phys", CORE, "0xdead00000000", 16), "not in the dump")
    assert_one_line_error(cli("read-phys", CORE, "0x1000", 1 << 30), "out of range")


def test_cr3_outside_memory():
    assert_one_line_error(cli("walk", CORE, "0x1000", "--cr3", "0x7ff000000"), "outside the dump")
    assert_one_line_error(cli("maps", CORE, "--cr3", "0x7ff000000"), "outside the dump")


def test_loop_terminates_and_is_reported():
    r = cli("maps", CORE, timeout=30)
    assert r.returncode == 0 and "page table loop" in r.stdout, r.stderr


def test_usage_errors():
    assert_one_line_error(cli("walk", CORE), "required")
    assert_one_line_error(cli("walk", CORE, "zzz"), "not a hex number")
    assert_one_line_error(cli("walk", CORE, "1000", "--mode", "6level"), "invalid choice")
    assert_one_line_error(cli("pte", "0x1", "--level", "PXE"), "unknown level")
    r = cli("nosuchcommand")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_help_exits_zero():
    r = cli("walk", "--help")
    assert r.returncode == 0 and "--cr3" in r.stdout
    r = cli()
    assert r.returncode == 2 and "subcommands" in r.stdout


def test_maps_ranges_empty_or_over_a_hole():
    """An empty or reversed --range is a usage error; a range with nothing mapped is an empty
    answer (found by the crash tests: both raised IndexError before)."""
    for bad in ("5-1", "1000-1000", "1000+0"):
        assert_one_line_error(cli("maps", CORE, "--range", bad), "empty range")
    r = cli("maps", CORE, "--range", "1000-2000", "--json")
    assert r.returncode == 0, r.stderr
    import json
    res = json.loads(r.stdout)
    assert res["ranges"] == [] and res["problems"] == []
    r = cli("maps", CORE, "--range", "1000-2000", "--pages")
    assert r.returncode == 0 and "0 pages" in r.stdout, r.stdout + r.stderr
