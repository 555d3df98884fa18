"""``check --json-lines`` streams one object per dump as it finishes; on a terminal a progress line
(tqdm's) goes to stderr, elsewhere nothing does. The truth: ``check --json``'s objects of the same
batch (the bundled cores), and a real pseudo-terminal as the stderr a user would have."""

import fcntl
import glob
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORES = os.path.join(TOP, "cores")
DUMPS = sorted(glob.glob(os.path.join(CORES, "*.core")) + glob.glob(os.path.join(CORES, "*.xc")))


def command(*argv):
    return [sys.executable, "-m", "xenstructs.cli", "check", *map(str, argv)]


def test_json_lines_are_the_json_objects():
    local = subprocess.run(command(*DUMPS, "--json", "--jobs", "2"), capture_output=True, text=True, cwd=TOP)
    lines = subprocess.run(command(*DUMPS, "--json-lines", "--jobs", "2"), capture_output=True, text=True, cwd=TOP)
    assert lines.returncode == local.returncode == 1, lines.stderr
    assert lines.stderr == ""                          # not a terminal: no progress line
    objects = [json.loads(line) for line in lines.stdout.splitlines()]
    assert len(objects) == len(DUMPS) and all(line.strip() for line in lines.stdout.splitlines())
    want = json.loads(local.stdout)
    assert sorted(objects, key=lambda o: o["dump"]) == sorted(want, key=lambda o: o["dump"])


def test_json_lines_arrive_as_dumps_finish():
    """One job, a fast dump first and nine Xen host dumps after it: the first line is read while the
    others are still being checked (a stream flushed per line, not one write at exit)."""
    dumps = [os.path.join(CORES, n) for n in ("x86_64-5level.core",) + ("xen-4.17-host.core", "xen-4.6-host.core",
                                                                        "xen-4.17-host.core") * 3]
    proc = subprocess.Popen(command(*dumps, "--json-lines", "--jobs", "1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=TOP)
    first = proc.stdout.readline()
    at_first = time.monotonic()
    rest = proc.stdout.read()
    proc.wait()
    gap = time.monotonic() - at_first
    assert json.loads(first)["dump"] == dumps[0]
    assert len(rest.splitlines()) == 9 and proc.returncode == 1
    assert gap > 0.3, f"the first line came {gap:.2f} s before the end: not streamed"


def run_on_terminal(argv, rows=40, columns=120):
    """Run ``argv`` with stderr on a new pseudo-terminal of ``rows`` x ``columns`` (stdout a pipe);
    return ``(exit status, stdout, what the terminal received)``."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, cwd=TOP)
    os.close(slave)
    received = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                data = os.read(master, 1 << 16)
            except OSError:                            # EIO: every writer closed the terminal
                break
            if not data:
                break
            received += data
        elif proc.poll() is not None:
            break
    out = proc.stdout.read()
    proc.wait()
    os.close(master)
    return proc.returncode, out.decode(), received.decode("utf-8", "replace")


def test_progress_line_on_a_terminal():
    dumps = [os.path.join(CORES, n) for n in ("x86_64-5level.core", "pv-x86_64.xc", "xen-4.6-host.core")]
    status, out, screen = run_on_terminal(command(*dumps, "--json-lines", "--jobs", "1"))
    assert status == 1
    assert [json.loads(line)["dump"] for line in out.splitlines()] == dumps      # stdout untouched
    for done in ("0/3 dumps", "1/3 dumps", "2/3 dumps", "3/3 dumps"):
        assert done in screen, screen[-400:]
    assert "elapsed" in screen and "dumps/s" in screen
    for name in ("x86_64-5level.core", "pv-x86_64.xc", "xen-4.6-host.core"):
        assert f"checking {name}" in screen                                   # the dump being checked
    assert screen.endswith("\r")                                              # the line is cleared at the end


def test_progress_on_an_unsized_terminal():
    """A pseudo-terminal nobody sized (0 x 0) still shows the line (tqdm alone would hide it)."""
    status, out, screen = run_on_terminal(command(os.path.join(CORES, "x86_64-5level.core")), rows=0, columns=0)
    assert status == 0 and "1/1 dumps" in screen and "x86_64-5level.core" in out


def test_table_output_keeps_its_place_with_progress():
    """Without --json-lines the table is printed at the end, on stdout, as before."""
    status, out, screen = run_on_terminal(command(os.path.join(CORES, "xen-4.6-host.core")))
    assert status == 1 and "details:" in out and "1/1 dumps" in screen and "details" not in screen


def test_json_and_json_lines_together_refused():
    r = subprocess.run(command(os.path.join(CORES, "x86_64-5level.core"), "--json", "--json-lines"),
                       capture_output=True, text=True, cwd=TOP)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == "xenscope check: give --json or --json-lines, not both"


def test_jobs_and_dask_together_refused():
    r = subprocess.run(command(os.path.join(CORES, "x86_64-5level.core"), "--jobs", "2", "--dask", "tcp://127.0.0.1:9"),
                       capture_output=True, text=True, cwd=TOP)
    assert r.returncode == 2 and r.stdout == "" and "give --jobs or --dask, not both" in r.stderr
