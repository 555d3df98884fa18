#!/usr/bin/env python3
"""xenscope benchmarks: one command, every figure measured against a baseline in the same run.

    .venv/bin/python bench/run.py [--ptes N] [--quick]

(a) ``maps`` over an address space of >= 1 M 4-KiB PTEs (a core generated here, not bundled):
    seconds for enumerate + coalesce, and the ratio to a naive per-page walk over the same span
    (the naive walk is timed on an evenly spread sample of pages and scaled to the whole span;
    the sample size is printed). Targets: <= 1 s and >= 10x.
(b) gdb load time of the extension: ``gdb -nx -batch -ex 'source gdbext/xenscope.py'`` minus plain
    ``gdb -nx -batch``, median of 5. Target: <= 0.3 s.
(c) on a real Debian kernel under QEMU (bench/real.py): translations per second against drgn on the
    same addresses (targets: ``walk()`` and ``translate_many()`` >= drgn's ``follow_phys``), and
    ``maps`` against QEMU's own ``info tlb``. Skipped with --quick or --no-real.
(d) ``p2m-check`` of a 64 GiB guest (16 M pfns) in memory (bench/p2m.py): seconds for the numpy check
    with owners (best of 3) and the ratio to a naive per-pfn loop (timed on a sample, scaled).
    Target: <= 1 s. With --quick: 1 M pfns. Then the real layout: Linux's sparse 1 GiB virtual P2M
    area (shared p2m_missing/p2m_identity pages) of a 256 MiB dom0 (and, without --quick, a 64 GiB
    guest) in an ELF core, read by shared_info and checked, against the path before (the whole area
    translated) and entry by entry, in the same run. Target: the dom0 in <= 0.5 s.
(f) crash (bench/crash.py): extension load time in crash's minimal mode, and ``maps`` of the 1 M-PTE
    core through crash's readmem() against the CLI's own reader. Targets: <= 0.5 s and <= 3x.
(e) ``modcheck`` (bench/modcheck.py): 1000 task page directories x 2000 module pages built in memory,
    fast path against the exhaustive per-page walk (2-level, PAE, 4-level). Target: fast <= 1 s.
(h) a translated guest's P2M (bench/hap.py): a 4 GiB guest in 4 KiB pages (1 M NPT leaves) enumerated
    with each table decoded whole, against decoding entry by entry in the same run. Target: <= 1 s.
(g) peak RSS (bench/memory.py) of every command on every bundled core (Xen host cores with and
    without their .map), each run a child process measured with wait4(); bound: the RAM the dump
    holds / 4 + 200 MiB. (c) measures the real kernel dump the same way. With --quick: the Xen
    host cores only.

Exit status 1 when any target above is missed ("MISSED" printed) or any answer disagrees with its
baseline, 0 when every one is met; every part runs either way.
"""

import argparse
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
from xenstructs.paging import Paging, coalesce, enumerate_mappings, walk, root_from_cr3  # noqa: E402
from xenstructs.targets import open_dump               # noqa: E402


def best_of(n, fn):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def bench_maps(n_ptes, sample):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "big.core")
        t0 = time.perf_counter()
        man = build_big_core(path, n_ptes=n_ptes)
        t_build = time.perf_counter() - t0
        t = open_dump(path)
        pg = Paging("4level", root_from_cr3(man["cr3"], "4level"), nxe=True)

        def fast():
            m = enumerate_mappings(t, pg)
            return m, coalesce(m)
        t_fast, (m, ranges) = best_of(3, fast)
        n = len(m)
        lo, hi = int(m.va[0]), int(m.va[-1]) + 4096
        span_pages = (hi - lo) // 4096
        step = max(1, span_pages // sample)
        vas = range(lo, hi, step * 4096)
        t0 = time.perf_counter()
        hits = sum(1 for va in vas if walk(t, pg, va).pa is not None)
        t_sample = time.perf_counter() - t0
        t_naive = t_sample / len(vas) * span_pages
        t.close()
    print(f"(a) maps over {n:,} mapped 4 KiB pages ({m.tables:,} tables read, {len(ranges):,} ranges; "
          f"core built in {t_build:.1f} s)")
    print(f"    xenscope enumerate+coalesce: {t_fast:.3f} s   (target <= 1 s: {'ok' if t_fast <= 1 else 'MISSED'})")
    print(f"    naive per-page walk: {t_naive:.2f} s for {span_pages:,} pages "
          f"(timed on {len(vas):,} evenly spread pages, {hits:,} mapped, {t_sample:.2f} s)")
    ratio = t_naive / t_fast
    print(f"    ratio naive/xenscope: {ratio:.1f}x   (target >= 10x: {'ok' if ratio >= 10 else 'MISSED'})")
    return t_fast <= 1 and ratio >= 10


def _gdb_time(args, runs=5):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run(["gdb", "-nx", "-batch"] + args, capture_output=True, text=True, timeout=60)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0 or "Traceback" in r.stderr + r.stdout:
            raise SystemExit(f"gdb failed: {r.stderr.strip()[:300]}")
    return statistics.median(times)


def bench_gdb_load():
    check = subprocess.run(["gdb", "-nx", "-batch", "-ex", f"source {TOP}/gdbext/xenscope.py", "-ex", "help xen"],
                           capture_output=True, text=True, timeout=60)
    if "xen walk" not in check.stdout:
        raise SystemExit(f"the extension did not load: {check.stderr.strip()[:300]} (run ./setup.sh)")
    base = _gdb_time([])
    loaded = _gdb_time(["-ex", f"source {TOP}/gdbext/xenscope.py"])
    cost = loaded - base
    print(f"(b) gdb load: plain gdb {base:.3f} s, with xenscope {loaded:.3f} s -> extension {cost:.3f} s "
          f"(median of 5; target <= 0.3 s: {'ok' if cost <= 0.3 else 'MISSED'})")
    return cost <= 0.3


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ptes", type=int, default=1 << 20, help="mapped 4 KiB pages (default 1 M)")
    ap.add_argument("--sample", type=int, default=20000, help="pages walked by the naive baseline")
    ap.add_argument("--quick", action="store_true", help="64 K PTEs, no real system (smoke test)")
    ap.add_argument("--no-real", action="store_true", help="skip (c), the QEMU-booted real kernel")
    a = ap.parse_args()
    ok = bench_maps(1 << 16 if a.quick else a.ptes, a.sample)
    ok &= bench_gdb_load()
    print("(e) modcheck: fast path vs exhaustive (bench/modcheck.py):", flush=True)
    import modcheck as bench_modcheck
    ok &= bench_modcheck.main([]) == 0
    if not (a.quick or a.no_real):
        print("(c) real kernel (bench/real.py):", flush=True)
        r = subprocess.run([sys.executable, os.path.join(HERE, "real.py")], timeout=900)
        ok &= r.returncode == 0
    r = subprocess.run([sys.executable, os.path.join(HERE, "p2m.py")] + (["--quick"] if a.quick else []),
                       timeout=900)
    ok &= r.returncode == 0
    r = subprocess.run([sys.executable, os.path.join(HERE, "hap.py")] + (["--gib", "1"] if a.quick else []),
                       timeout=900)
    ok &= r.returncode == 0
    r = subprocess.run([sys.executable, os.path.join(HERE, "crash.py")] + (["--quick"] if a.quick else []),
                       timeout=900)
    ok &= r.returncode == 0
    print("(g) peak RSS of every command on every bundled core (bench/memory.py):", flush=True)
    import memory as bench_memory
    cores = [c for c in bench_memory.bundled() if not a.quick or os.path.basename(c).startswith("xen-")]
    ok &= bench_memory.main(cores) == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
