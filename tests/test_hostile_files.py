"""Files that are not what a reader expects: FIFOs, devices, directories, binary text inputs, endless
or very long lines. Every reader refuses them in one line, quickly, with bounded memory; real gdb
and real crash refuse them as command errors and their sessions go on.

Truth: the kind of file is what the test made (``mkfifo``, ``/dev/zero``, a directory); a hang is
a child killed by the wall clock (the limit is 20 s; a refusal takes well under 2 s); memory is
the child's peak RSS (wait4), compared with the same command on a small input.
"""

import os

import pytest

from conftest import CORES
from crashutil import CRASH, run_crash
from gdbutil import run_gdb
from hostile import cli

CORE = os.path.join(CORES, "x86_64-4level.core")
XEN = os.path.join(CORES, "xen-4.6-host.core")
XEN_MAP = os.path.join(CORES, "xen-4.6-host.map")
LOG = os.path.join(CORES, "xen-4.6-host.log")
SECONDS = 20


def readers(path):
    """Every command line that reads ``path`` as a user-named file (dump, option file, text)."""
    return [
        ("info", path), ("log", path), ("vtop", CORE, "--from", path), ("fault", "--log", path),
        ("check", "--log", path, CORE), ("check", "--xen-syms", path, CORE),
        ("check", "--kernel-syms", path, CORE), ("check", path),
        ("frames", XEN, "--summary", "--xen-syms", path),
        ("p2m-check", XEN, "--xen-syms", XEN_MAP, "--kernel-syms", path),
        ("tasks", CORE, "--vmlinux", path), ("tasks", CORE, "--profile", path),
        ("tasks", CORE, "--system-map", path), ("stack", CORE, "--symbols", path),
        ("log", LOG, "--dump", path), ("log", LOG, "--dump", XEN, "--xen-syms", path),
    ]


@pytest.fixture(scope="module")
def specials(tmp_path_factory):
    d = tmp_path_factory.mktemp("special")
    fifo = str(d / "fifo")
    os.mkfifo(fifo)
    return {"a FIFO": fifo, "a character device": "/dev/zero", "a directory": str(d)}


@pytest.mark.parametrize("kind", ["a FIFO", "a character device", "a directory"])
def test_every_reader_refuses(specials, kind):
    from concurrent.futures import ThreadPoolExecutor
    path = specials[kind]
    with ThreadPoolExecutor(2) as pool:         # each run is its own limited child process
        runs = list(pool.map(lambda argv: cli(*argv, seconds=SECONDS), readers(path)))
    for argv, r in zip(readers(path), runs):
        if argv == ("check", path):          # a batch: the file is one unreadable dump
            if kind == "a directory":        # check's DIR argument: its dumps (none here)
                assert r.returncode == 0 and "0 dump(s)" in r.stdout, (argv, r.verdict, r.stdout)
            else:
                assert r.returncode == 2 and f"not a regular file ({kind})" in r.stdout \
                    and "1 unreadable" in r.stdout, (argv, r.verdict, r.stdout)
            continue
        assert r.one_line, (argv, r.verdict, r.stderr[-400:], r.stdout[-200:])
        assert f"{path}: not a regular file ({kind})" in r.stderr, (argv, r.stderr)
        assert r.seconds < 10, (argv, r.seconds)


def test_urandom_is_a_device_too():
    for argv in (("log", "/dev/urandom"), ("vtop", CORE, "--from", "/dev/urandom"), ("info", "/dev/urandom")):
        r = cli(*argv, seconds=SECONDS)
        assert r.one_line and "(a character device)" in r.stderr, (argv, r.verdict, r.stderr)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_endless_standard_input(device):
    """``-`` reads standard input, whatever it is: junk stops it within the first MiBs."""
    for argv in (("log", "-"), ("vtop", CORE, "--from", "-")):
        with open(device, "rb") as stdin:
            r = cli(*argv, seconds=SECONDS, stdin=stdin)
        assert r.one_line, (argv, r.verdict, r.stderr[-400:])
        if argv[0] == "log":
            assert "standard input does not look like text" in r.stderr, r.stderr
        assert r.seconds < 10, (argv, r.seconds)


def test_binary_from_file():
    r = cli("vtop", CORE, "--from", CORE)            # an ELF core as an address list
    assert r.one_line and "is not an address" in r.stderr, (r.verdict, r.stderr)


@pytest.fixture(scope="module")
def long_lines(tmp_path_factory):
    d = tmp_path_factory.mktemp("long")
    small, huge = d / "small.txt", d / "huge.txt"
    small.write_bytes(b"# (XEN) a short line of text\n0x1000\n")
    with open(huge, "wb") as f:
        f.write(b"# (XEN) a line of text first\n")
        f.write(b"x" * (64 << 20) + b"\n")            # one 64 MiB line
        f.write(b"0x1000\n")
    return str(small), str(huge)


@pytest.mark.parametrize("command", ["log", "vtop", "fault", "check"])
def test_a_64mib_line_is_never_held(long_lines, command):
    """The same command on a two-line file and on one with a 64 MiB line: the peak RSS differs by
    less than 16 MiB (reading the line whole costs 64 MiB of bytes, and as much again decoded)."""
    argv = {"log": ("log", "{}"), "vtop": ("vtop", CORE, "--from", "{}"),
            "fault": ("fault", "--log", "{}"), "check": ("check", "--no-siblings", "--log", "{}", CORE)}[command]
    runs = [cli(*[a.format(p) for a in argv], seconds=SECONDS) for p in long_lines]
    small, huge = runs
    assert small.verdict in ("exit 0", "exit 1", "exit 2") and huge.verdict in ("exit 0", "exit 1", "exit 2"), \
        (small.verdict, huge.verdict, huge.stderr[-400:])
    assert "Traceback" not in small.stderr + huge.stderr
    assert huge.max_rss - small.max_rss < 16 << 10, (command, small.max_rss, huge.max_rss)
    if command == "vtop":
        assert huge.one_line and "a line of 67108865 bytes is not an address" in huge.stderr, huge.stderr


def test_gdb_refuses_and_goes_on(specials, long_lines):
    fifo, zero, directory = specials["a FIFO"], specials["a character device"], specials["a directory"]
    commands = [f"core-file {CORE}", f"xen log {fifo}", f"xen vtop --from {zero}", f"xen vtop --from {CORE}",
                f"xen fault --log {fifo}", f"xen check --log {fifo} {CORE}", f"xen tasks --profile {fifo}",
                f"xen log {long_lines[1]}", f"set xen dump {fifo}", "xen info", f"set xen dump {directory}",
                "xen info", "echo still-running\\n"]
    r = run_gdb(*commands, timeout=120)
    assert r.returncode == 0, r.output[-2000:]
    assert "still-running" in r.stdout and "Traceback" not in r.output, r.output[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("xen ")]
    assert sum("not a regular file (a FIFO)" in e for e in errors) == 4, errors
    assert sum("(a character device)" in e for e in errors) == 1, errors
    assert any("is not an address" in e for e in errors), errors
    # the `xen dump` parameter refuses anything but a file when set (gdbext/commands.py)
    assert [e for e in errors if e.startswith("xen dump: ")] == [
        f"xen dump: no such file: {fifo}", f"xen dump: no such file: {directory}"], errors


def test_crash_refuses_and_goes_on(specials):
    assert CRASH, "Debian's crash is not installed (./setup.sh installs it)"
    fifo, zero = specials["a FIFO"], specials["a character device"]
    cmds = [f"xen log {fifo}", f"xen vtop --from {zero}", f"xen vtop --from {CORE}",
            f"xen fault --log {fifo}", f"xen check {fifo}", f"xen tasks --system-map {fifo}", "eval 6*7"]
    r = run_crash(os.path.join(CORES, "mod-x86_64.vmlinux"), CORE, cmds, options=("--minimal",), timeout=120)
    assert r.returncode == 0, r.output[-2000:]
    outs = r.outputs
    for out in (outs[0], outs[3], outs[5]):
        assert out.strip().endswith(f"{fifo}: not a regular file (a FIFO)") and len(out.strip().splitlines()) == 1, out
    assert outs[1].strip().endswith("not a regular file (a character device)"), outs[1]
    assert "is not an address" in outs[2], outs[2]
    assert "a FIFO" in outs[4] and "unreadable" in outs[4], outs[4]
    assert "42" in outs[6]
