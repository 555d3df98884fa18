"""Hostile numbers and messages: every number parser refuses negative, over-wide and non-ASCII
values with one line (CLI exit 2, a gdb error, a crash error), gdb refuses a bad `set xen cr3` when
it is set, and an error line stays one line (a newline in a path is escaped, a huge value cut)."""
import os

import pytest

from conftest import CORES
from crashutil import run_crash
from gdbutil import run_cli, run_gdb

CORE4 = os.path.join(CORES, "x86_64-4level.core")
XEN6 = os.path.join(CORES, "xen-4.6-host.core")
PV = os.path.join(CORES, "pv-x86_64.xc")
BAD_VALUES = ["-1", "-0x10", "0x10000000000000000", "１２", "١٢٣", "0x", "", "12g"]


@pytest.mark.parametrize("bad", BAD_VALUES)
@pytest.mark.parametrize("argv", [
    ["walk", CORE4, "{}"],
    ["walk", CORE4, "ffff888000001000", "--cr4", "{}"],
    ["maps", CORE4, "--limit", "{}"],
    ["page", XEN6, "{}"],
    ["p2m", PV, "{}"],
    ["pte", "{}"],
    ["read-phys", CORE4, "0", "{}"],
    ["decode", "pf", "{}"],
])
def test_cli_refuses_bad_numbers_with_one_line(argv, bad):
    r = run_cli(*[a.replace("{}", bad) for a in argv])
    assert r.returncode == 2, (argv, bad, r.output)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"xenscope {argv[0]}: "), r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr


def test_every_value_within_64_bits_is_accepted():
    for text in ("0", "0x0", "ffffffffffffffff", "0xFFFF_FFFF_FFFF_FFFF", " 1a "):
        r = run_cli("pte", text)
        assert r.returncode == 0, (text, r.stderr)


def test_error_lines_stay_one_line(tmp_path):
    odd = tmp_path / "dump\nwith a newline"
    odd.write_bytes(b"x\n")
    r = run_cli("info", str(odd))
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "\\n" in r.stderr, r.stderr
    huge = "9" * 100_000                    # one argument may hold 128 KiB
    r = run_cli("pte", huge)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and len(r.stderr) < 3000, len(r.stderr)


def test_gdb_refuses_a_bad_cr3_when_it_is_set_and_negative_expressions():
    r = run_gdb("set xen cr3 zz", "show xen cr3", "set xen cr3 0x2000", "show xen cr3",
                "xen pte -1", "xen pte 1-2", "xen pte 0x1000*2", "echo alive\n", core=CORE4)
    assert "xen cr3: 'zz'" in r.stderr and "xen cr3 is not set." in r.stdout, r.output
    assert "xen cr3 is '0x2000'." in r.stdout
    assert r.stderr.count("is negative") == 2 and "pa 0x2000" in r.stdout
    assert r.stdout.rstrip().endswith("alive") and "Traceback" not in r.output


def test_crash_refuses_bad_numbers_and_goes_on():
    mini = os.path.join(CORES, "mod-x86_64.vmlinux")
    r = run_crash(mini, os.path.join(CORES, "mod-x86_64.core"),
                  ["xen walk -1", "xen maps --limit -3", "xen pte ١٢", "xen pte 0x10"], options=("--minimal",))
    outs = r.outputs
    assert "walk: argument va: not a hex number: '-1'" in outs[0], outs
    assert "not a number: '-3'" in outs[1] and "not a hex number" in outs[2], outs
    assert "PTE 0x10" in outs[3] and "Traceback" not in r.output
