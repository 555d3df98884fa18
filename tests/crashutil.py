"""Run Debian's real crash utility with xenscope's extension loaded.

``run_crash(namelist, dump, [cmd, ...])`` starts ``crash -s NAMELIST DUMP -i FILE`` once and gives
back each command's own output: every command is written with crash's redirection ``> FILE``
(or, after a pipe, the shell's), so outputs never mix. Errors crash prints with ``error()`` go to
the same file. The extension is ``crashext/xenscope.so`` built by ``setup.sh``.
"""
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from gdbutil import TOP, Result, venv

CRASH = shutil.which("crash")
EXTENSION = os.path.join(TOP, "crashext", "xenscope.so")


@dataclass
class CrashRun(Result):
    outputs: list = None   # one text per command, in order (None: the command wrote nothing)


def crash_env(**extra):
    env = dict(os.environ, XENSCOPE_VENV=venv())
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def run_crash(namelist, dump, commands, extend=True, options=(), timeout=600, env=None, extension=EXTENSION):
    """Run ``commands`` in one crash session; ``extend=True`` loads xenscope (``extension``) first."""
    work = tempfile.mkdtemp(prefix="xenscope-crash-")
    try:
        lines = [f"extend {extension}"] if extend else []
        outs = []
        for i, c in enumerate(commands):
            out = os.path.join(work, f"out.{i}")
            outs.append(out)
            lines.append(f"{c} > {out}")
        lines.append("exit")
        script = os.path.join(work, "commands")
        with open(script, "w") as f:
            f.write("\n".join(lines) + "\n")
        argv = [CRASH, "-s", *options, namelist, dump, "-i", script]
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout, env=env or crash_env(), errors="replace")
        texts = []
        for out in outs:
            try:
                with open(out, errors="replace") as f:
                    texts.append(f.read())
            except FileNotFoundError:
                texts.append(None)
        return CrashRun(p.stdout, p.stderr, p.returncode, texts)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_crash_pipe(namelist, dump, command, tries=5, **kw):
    """Run one piped command (``xen maps | grep -c .``) in its own session, again when crash's own
    pipe set-up races: crash 8.0.2 looks for the pipe's process in /proc and sometimes misses it
    ("crash: pipe operation failed"; then only that message reaches the pipe) — also for its own
    commands, e.g. ``sym _stext | grep stext`` (8 of 30 runs)."""
    for _ in range(tries):
        r = run_crash(namelist, dump, [command], **kw)
        if "pipe operation failed" not in r.output + (r.outputs[0] or ""):
            return r
    return r
