"""``check --dask``: the per-dump check on a real Dask ``LocalCluster`` of worker processes
(``tests/dask_cluster.py``) gives what the local run gives, byte for byte, for the bundled cores,
a real QEMU kdump file and two unreadable files; a dump that kills its checker on a worker is one
``unreadable`` report, as locally. The truth is the local run of the same batch, and the signal the
test itself raises in the workers."""

import json
import os
import re
import subprocess
import sys

import pytest

import kdumpcorpus
from dask_cluster import cluster

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORES = os.path.join(TOP, "cores")
CRASHING = "crash.kdump"                  # the workers' kdump reader dies of SIGSEGV on this name


@pytest.fixture(scope="module")
def scheduler():
    """The address of a LocalCluster of 2 worker processes (1 thread each), in its own process."""
    with cluster(2, crash_on=CRASHING) as address:
        yield address


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A directory of dumps named relative to it: every bundled core with its .map/.log/.json beside
    it, a real QEMU ``dump-guest-memory -z`` kdump file, makedumpfile's kdump-compressed file (plain
    and flattened), a truncated core and a text file."""
    top = tmp_path_factory.mktemp("fleet")
    dumps = top / "dumps"
    dumps.mkdir()
    for name in os.listdir(CORES):
        if os.path.isfile(os.path.join(CORES, name)):
            os.symlink(os.path.join(CORES, name), dumps / name)
    real = kdumpcorpus._qemu_bases()["qemu"]
    (dumps / "qemu.kdump").write_bytes(real)
    mdf, flat = kdumpcorpus._makedumpfile_bases(str(top))           # makedumpfile -c, plain and -F
    (dumps / "mdf64.kdump").write_bytes(mdf)
    (dumps / "mdf64.flat").write_bytes(flat)
    (dumps / "truncated.core").write_bytes(open(os.path.join(CORES, "x86_64-4level.core"), "rb").read()[:200])
    (top / "notes.txt").write_text("not a dump\n")
    (top / CRASHING).write_bytes(real)
    return top


def check(cwd, *argv):
    return subprocess.run([sys.executable, "-m", "xenstructs.cli", "check", *argv], capture_output=True,
                          text=True, cwd=cwd, env=dict(os.environ, PYTHONPATH=TOP))


@pytest.fixture(scope="module")
def local(batch):
    """The local run of the batch (forked children on this machine)."""
    return check(batch, "dumps", "notes.txt", "--json", "--jobs", "2", "--html", "local.html")


def written(page):
    """The HTML report without the time it was written."""
    return re.sub(r"Written [0-9-]+ [0-9:]+ UTC", "Written", page)


def test_dask_run_equals_local_run(scheduler, batch, local):
    """Relative paths, from a directory the workers were not started in (each task checks from the
    client's directory): the JSON, the exit status and the HTML report (its pictures' data gathered
    on the workers) are the local run's."""
    dask = check(batch, "dumps", "notes.txt", "--json", "--dask", scheduler, "--html", "dask.html")
    assert local.returncode == 2, local.stderr
    assert dask.returncode == local.returncode, dask.stderr
    assert dask.stdout == local.stdout
    page = written((batch / "dask.html").read_text())
    assert page == written((batch / "local.html").read_text()) and 'class="seg"' in page
    reports = {os.path.basename(r["dump"]): r for r in json.loads(dask.stdout)}
    assert {"qemu.kdump", "mdf64.kdump", "mdf64.flat", "x86_64-4level.core", "pv-x86_64.xc"} <= set(reports)
    assert reports["notes.txt"]["kind"] == "unreadable"
    assert all(reports[n]["kind"] != "unreadable" for n in ("qemu.kdump", "mdf64.kdump", "mdf64.flat"))
    assert reports["truncated.core"]["kind"] == "unreadable" or any(
        c["status"] == "error" for c in reports["truncated.core"]["checks"])
    assert dask.stderr == ""


def test_dask_json_lines_stream_the_same_objects(scheduler, batch, local):
    lines = check(batch, "dumps", "notes.txt", "--json-lines", "--dask", scheduler)
    got = [json.loads(line) for line in lines.stdout.splitlines()]
    assert lines.returncode == 2 and lines.stderr == ""
    assert sorted(got, key=lambda r: r["dump"]) == sorted(json.loads(local.stdout), key=lambda r: r["dump"])


def test_a_dump_that_kills_its_checker_stops_nothing(scheduler, batch):
    """The workers' kdump reader dies of SIGSEGV on crash.kdump: that dump is unreadable, as a local
    child's crash is reported; the real kdump file with the same bytes and a core are checked as
    locally; the workers survive (the next run on them is complete)."""
    good = ["dumps/qemu.kdump", "dumps/x86_64-4level.core"]
    local = json.loads(check(batch, *good, "--json", "--jobs", "1").stdout)
    dask = check(batch, good[0], CRASHING, good[1], "--json", "--dask", scheduler)
    assert dask.returncode == 2, dask.stderr
    first, crashed, last = json.loads(dask.stdout)
    assert crashed["kind"] == "unreadable"
    assert crashed["checks"][0]["summary"] == "the kdump library crashed on it (signal 11, SIGSEGV)"
    assert [first, last] == local
    again = check(batch, *good, "--json", "--dask", scheduler)
    assert again.returncode == 1 and json.loads(again.stdout) == local


def test_unreachable_scheduler_is_one_line(tmp_path):
    """Nobody listens on the address: exit 2 and one line, after Dask's connect timeout (2 s here)."""
    env = dict(os.environ, PYTHONPATH=TOP, DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="2s")
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", "check", os.path.join(CORES, "x86_64-5level.core"),
                        "--dask", "tcp://127.0.0.1:9"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("xenscope check: cannot reach the Dask scheduler at tcp://127.0.0.1:9: ")
    assert len(r.stderr.strip().splitlines()) == 1


def test_setup_installs_the_dask_extra():
    """CI gets Dask: setup.sh installs the project with its dask extra, which names dask[distributed]."""
    setup = open(os.path.join(TOP, "setup.sh")).read()
    assert "[test,dask]" in setup
    assert '"dask[distributed]' in open(os.path.join(TOP, "pyproject.toml")).read()
