"""Run a hostile input through a child process under limits, and say how it ended.

``run_limited(argv)`` starts ``argv`` with ``RLIMIT_AS`` (:data:`MEMORY`) and ``RLIMIT_CPU`` set in
the child and a wall-clock timeout (:data:`SECONDS`); :class:`Outcome` classifies the end as
``signal SIGSEGV`` / ``hang`` / ``memory`` / ``traceback`` / ``exit N``. ``probe_libkdumpfile``
hands a file to Debian's libkdumpfile directly (open, a few attributes, one page read), as the
``xenscope`` of before this change did; ``cli`` runs ``python -m xenstructs.cli`` of ``TOP`` (or of
another tree, to measure the code before a change).
"""

import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from gdbutil import TOP, venv_python

SECONDS = 60
MEMORY = 2 << 30

PROBE = r"""
import sys, kdumpfile
path, addr = sys.argv[1], int(sys.argv[2], 0)
try:
    k = kdumpfile.kdumpfile(path)
    for key in ("max_pfn", "arch.page_size", "linux.vmcoreinfo.raw", "file.pagemap"):
        try:
            k.attr[key]
        except (KeyError, kdumpfile.exceptions.KDumpBaseException):
            pass
    k.read(kdumpfile.KDUMP_MACHPHYSADDR, addr, 4096)
except kdumpfile.exceptions.KDumpBaseException as e:
    print(f"{type(e).__name__}: {e}"[:300])
    sys.exit(1)
print("read ok")
"""


def _limits(seconds, memory):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 5))
        os.setsid()
    return apply


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    max_rss: int = 0                # KiB (ru_maxrss of the child)

    @property
    def verdict(self):
        """``signal SIGxxx``, ``hang``, ``memory``, ``traceback`` or ``exit N``."""
        if self.timed_out or self.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
            return "hang"
        if self.returncode < 0:
            return f"signal {signal.Signals(-self.returncode).name}"
        if "MemoryError" in self.stderr or "Cannot allocate memory" in self.stderr:
            return "memory"
        if "Traceback (most recent call last)" in self.stderr:
            return "traceback"
        return f"exit {self.returncode}"

    @property
    def one_line(self):
        """The CLI contract: exit 2, exactly one line on stderr, nothing on stdout, no traceback."""
        lines = self.stderr.splitlines()
        return (self.returncode == 2 and len(lines) == 1 and not self.stdout
                and "Traceback" not in self.stderr)


def run_limited(argv, seconds=SECONDS, memory=MEMORY, env=None, stdin=subprocess.DEVNULL, cwd=TOP):
    """Run ``argv`` under the limits; a child still running after ``seconds`` is killed (its
    whole process group) and reported as timed out. Output goes through temporary files (no pipe
    to fill), the child is reaped with wait4() for its peak RSS."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=err, cwd=cwd, env=env,
                             preexec_fn=_limits(seconds, memory))
        timed_out = False
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > seconds:
                os.killpg(p.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(p.pid, 0)
                timed_out = True
                break
            time.sleep(0.01)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Outcome(p.returncode, out.read().decode(errors="replace"),
                       err.read().decode(errors="replace"), time.perf_counter() - t0, timed_out,
                       usage.ru_maxrss)


def probe_libkdumpfile(path, addr=0, seconds=SECONDS):
    """Debian's libkdumpfile on ``path``, directly: open, attributes, one page read at ``addr``."""
    return run_limited([venv_python(), "-c", PROBE, path, hex(addr)], seconds=seconds)


def cli(*args, tree=TOP, seconds=SECONDS, stdin=subprocess.DEVNULL):
    """``python -m xenstructs.cli ARGS`` of the source tree ``tree``."""
    env = dict(os.environ, PYTHONPATH=tree)
    return run_limited([venv_python(), "-m", "xenstructs.cli", *args], seconds=seconds, env=env,
                       stdin=stdin, cwd=tree)


def main(argv):
    """``python tests/hostile.py OUTDIR [TREE]``: write the corpus to OUTDIR and print, per file,
    libkdumpfile's outcome and ``xenscope read-phys``'s (of TREE, default this tree)."""
    from collections import Counter

    import kdumpcorpus
    out, tree = argv[0], argv[1] if len(argv) > 1 else TOP
    os.makedirs(out, exist_ok=True)
    lib, ours = Counter(), Counter()
    for case in kdumpcorpus.corpus(tempfile.mkdtemp()):
        path = case.write(out)
        a = probe_libkdumpfile(path, case.read) if case.klass != "flattened" else None
        b = cli("read-phys", path, hex(case.read), "16", tree=tree)
        lib[(case.klass, a.verdict if a else "n/a")] += 1
        ours[(case.klass, "one line, exit 2" if b.one_line else b.verdict)] += 1
        print(f"{case.name:40} {a.seconds if a else 0:5.1f}s {b.seconds:5.1f}s "
              f"lib: {a.verdict if a else 'n/a':16} "
              f"{(a.stdout.strip() if a else '')[:60]:60} xenscope: "
              f"{'one line, exit 2' if b.one_line else b.verdict:16} {b.stderr.strip()[:150]!r}",
              flush=True)
    for name, counts in (("libkdumpfile", lib), ("xenscope", ours)):
        print(f"\n{name}:")
        for (klass, verdict), n in sorted(counts.items()):
            print(f"  {klass:18} {verdict:20} {n}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main(sys.argv[1:])
