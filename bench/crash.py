#!/usr/bin/env python3
"""(f) xenscope inside crash (crashext/xenscope.so), against baselines measured in the same run.

- load: ``crash -s --minimal`` plus ``extend xenscope.so`` minus the same session without it
  (median of 5). Target: <= 0.5 s.
- maps of >= 1 M PTEs (the core of bench (a)) through crash's readmem(), against the CLI reading
  the same file with xenscope's own mmap reader; each minus its own empty run (crash session start,
  Python start-up). Target: crash within 3x of the CLI.
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, TOP)

from cores.builder.big import build_big_core           # noqa: E402

SO = os.path.join(TOP, "crashext", "xenscope.so")
MINI = os.path.join(TOP, "cores", "mod-x86_64.vmlinux")


def _timed(argv, stdin=None, runs=5, discard=False):
    """Median wall time; ``discard``: stdout to /dev/null, as the crash runs redirect it."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run(argv, input=stdin, text=True, timeout=600, stderr=subprocess.PIPE,
                           stdout=subprocess.DEVNULL if discard else subprocess.PIPE)
        times.append(time.perf_counter() - t0)
        out = (r.stdout or "") + r.stderr
        if r.returncode != 0 or "Traceback" in out or "error" in out.lower() or "not loaded" in out:
            raise SystemExit(f"failed: {' '.join(argv)}: {out.strip()[-400:]}")
    return statistics.median(times)


def _crash(core, lines, runs):
    with tempfile.NamedTemporaryFile("w", suffix=".crash", delete=False) as f:
        f.write("\n".join(lines + ["exit"]) + "\n")
    try:
        return _timed(["crash", "-s", "--minimal", MINI, core, "-i", f.name], stdin="", runs=runs)
    finally:
        os.unlink(f.name)


def main(argv=()):
    quick = "--quick" in argv
    if not os.path.exists(SO):
        raise SystemExit("crashext/xenscope.so is not built: run ./setup.sh")
    small = os.path.join(TOP, "cores", "x86_64-4level.core")
    base = _crash(small, [], 5)
    loaded = _crash(small, [f"extend {SO}"], 5)
    cost = loaded - base
    print(f"(f) crash: load: crash --minimal {base:.3f} s, with extend xenscope.so {loaded:.3f} s -> "
          f"{cost:.3f} s (median of 5; target <= 0.5 s: {'ok' if cost <= 0.5 else 'MISSED'})")
    with tempfile.TemporaryDirectory() as d:
        core = os.path.join(d, "big.core")
        man = build_big_core(core, n_ptes=(1 << 16) if quick else (1 << 20))
        cr3 = f"{man['cr3']:#x}"
        cmd = ["maps", "--cr3", cr3, "--mode", "4level", "--json"]
        c_empty = _crash(core, [f"extend {SO}"], 3)
        c_maps = _crash(core, [f"extend {SO}", " ".join(["xen"] + cmd + [">", "/dev/null"])], 3)
        cli = [sys.executable, "-m", "xenstructs.cli"]
        p_empty = _timed(cli + ["pte", "0"], runs=3, discard=True)
        p_maps = _timed(cli + [cmd[0], core] + cmd[1:], runs=3, discard=True)
        t_crash, t_cli = c_maps - c_empty, p_maps - p_empty
        ratio = t_crash / t_cli
        print(f"    maps --json of {man['n_ptes']:,} PTEs: through crash's readmem {t_crash:.2f} s, "
              f"CLI (own reader) {t_cli:.2f} s -> crash/CLI {ratio:.2f}x (median of 3 each, start-up "
              f"subtracted; target <= 3x: {'ok' if ratio <= 3 else 'MISSED'})")
    return 0 if cost <= 0.5 and ratio <= 3 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
