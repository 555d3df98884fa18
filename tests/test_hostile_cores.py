"""Hostile ELF cores and xl dump-core files in real gdb and real crash: the session goes on.

A small seeded corpus of the bundled cores cut short and with header, program-header and note
bytes overwritten (the fuzzing tier, tests/test_fuzz.py, drives the CLI over many more): gdb opens
each with ``set xen dump FILE`` and runs ``xen info`` and ``xen maps --limit 5``; crash checks every
file with ``xen check`` (named one by one: a directory would skip the files no longer starting like a dump). Every command answers or fails with one gdb/crash error line;
no traceback, and the session reaches its last command.
"""
import json
import os
import random

import pytest

from conftest import CORES
from crashutil import CRASH, run_crash
from gdbutil import run_gdb

BASES = ("x86_64-4level.core", "pv-x86_64.xc", "xen-4.17-host.core", "i386-pae.core")
PER_BASE = 6


def _corrupt(data, rng, kind):
    data = bytearray(data)
    if kind == "cut":
        return bytes(data[:rng.choice([0, 16, 63, 64, 100, 4096, len(data) // 3, len(data) - 1])])
    if kind == "wide":                          # ELF e_phoff, e_phnum, p_offset, p_filesz... as 0xff..
        at = rng.choice([32, 40, 56, 60, 64 + 8, 64 + 32, 64 + 40]) if data[4] == 2 else rng.choice([28, 44, 52 + 4])
        data[at:at + 8] = b"\xff" * 8
        return bytes(data)
    for _ in range(rng.randint(1, 24)):         # bytes in the headers and notes
        data[rng.randrange(0, min(len(data), 8192))] = rng.randrange(256)
    return bytes(data)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hostile-cores")
    rng = random.Random(20261204)
    paths = []
    for base in BASES:
        data = open(os.path.join(CORES, base), "rb").read()
        for k in range(PER_BASE):
            path = directory / f"{k:02d}-{base}"
            path.write_bytes(_corrupt(data, rng, ("cut", "wide", "bytes")[k % 3]))
            paths.append(str(path))
    return str(directory), paths


def test_gdb_goes_on_after_every_hostile_core(corpus):
    _, paths = corpus
    commands = []
    for i, path in enumerate(paths):
        commands += [f"set xen dump {path}", "xen info", "xen maps --limit 5", f"echo survived-{i}\\n"]
    r = run_gdb(*commands, "set xen dump", "echo done\\n", timeout=900)
    assert r.returncode == 0 and r.stdout.rstrip().endswith("done"), r.output[-2000:]
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output[-3000:]
    for i in range(len(paths)):
        assert f"survived-{i}\n" in r.stdout, (i, r.output[-2000:])
    for line in r.stderr.splitlines():
        assert line.startswith(("xen info: ", "xen maps: ", "xen dump: ")), line


def test_crash_checks_the_hostile_directory_and_goes_on(corpus):
    assert CRASH, "Debian's crash is not installed (./setup.sh installs it)"
    directory, paths = corpus
    groups = [paths[k:k + 6] for k in range(0, len(paths), 6)]      # crash's command lines are short
    r = run_crash(os.path.join(CORES, "mod-x86_64.vmlinux"), os.path.join(CORES, "x86_64-4level.core"),
                  [f"xen check --json --no-siblings {' '.join(group)}" for group in groups] + ["eval 6*7"],
                  options=("--minimal",))
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output[-2000:]
    reports = [rep for out in r.outputs[:-1] for rep in json.loads(out)]
    assert sorted(rep["dump"] for rep in reports) == sorted(paths)
    for rep in reports:
        for check in rep["checks"]:
            assert check["status"] in ("ok", "findings", "error", "n.a."), check
            assert not check["summary"].startswith(("IndexError", "ValueError", "KeyError", "TypeError",
                                                    "struct.error", "OverflowError")), (rep["dump"], check)
    assert "42" in r.outputs[-1], r.output[-1000:]
