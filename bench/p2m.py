#!/usr/bin/env python3
"""P2M <-> M2P check benchmark: a 64 GiB guest (16 M pfns) checked in memory, against a naive loop.

    .venv/bin/python bench/p2m.py [--pfns N] [--sample N] [--quick]

Builds a P2M of N pfns with a matching M2P and owner table (numpy, ~0.5 GiB), in 2 MiB extents
placed in shuffled order (what a guest gets from Xen's allocator), injects a few faults of every
class, and times ``xenstructs.xen.p2m.check`` with owners (best of 3) and a naive per-pfn Python
loop doing the same tests (timed on an evenly spread sample of pfns and scaled to the whole table;
the sample size is printed). Also times the worst case for memory locality: every pfn placed at a
random machine frame. Target: <= 1 s for 16 M pfns.
"""

import argparse
import os
import sys
import time

import numpy as np

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)

from xenstructs.xen import p2m as P      # noqa: E402

ME, OTHER = 0x1C03, 0x1C04
EXTENT = 512                             # 2 MiB of 4 KiB frames


def build(n, random_frames=False, seed=0):
    """P2M, M2P, owners for ``n`` pfns on a machine with n + n/8 frames; faults injected."""
    rng = np.random.default_rng(seed)
    max_mfn = n + n // 8
    if random_frames:
        mfn = rng.permutation(max_mfn)[:n].astype(np.uint64)
    else:
        ext = rng.permutation(max_mfn // EXTENT)[:(n + EXTENT - 1) // EXTENT].astype(np.uint64)
        mfn = (np.repeat(ext * np.uint64(EXTENT), EXTENT)[:n]
               + np.tile(np.arange(EXTENT, dtype=np.uint64), len(ext))[:n])
    p2m = mfn
    m2p = np.full(max_mfn, P.INVALID_M2P_ENTRY, np.uint64)
    m2p[mfn.view(np.int64)] = np.arange(n, dtype=np.uint64)
    owners = np.full(max_mfn, OTHER, np.uint64)
    owners[mfn.view(np.int64)] = ME
    free = np.flatnonzero(owners == OTHER)[:8]
    # faults: 3 mismatches, 2 beyond max, a duplicate pair, a foreign grant and a foreign frame,
    # identity entries, 2 holes, an orphan
    for k in (n // 3, n // 2, n - 5):
        m2p[p2m[k].view(np.int64)] = k + 1
    p2m[n // 5], p2m[n // 7] = max_mfn + 3, max_mfn + 1000
    p2m[n // 11] = p2m[n // 11 + 1]
    p2m[n // 13] = np.uint64(P.FOREIGN_FRAME_BIT) | np.uint64(free[0])
    p2m[n // 17] = free[1]
    p2m[n // 19:n // 19 + 256] = np.uint64(P.IDENTITY_FRAME_BIT) + np.arange(n // 19, n // 19 + 256, dtype=np.uint64)
    p2m[n // 23], p2m[n // 29] = P.INVALID_P2M_ENTRY, P.INVALID_P2M_ENTRY
    owners[free[2]], m2p[free[2]] = ME, 5
    return p2m, m2p, owners, max_mfn


def best_of(k, fn):
    best, out = None, None
    for _ in range(k):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best, out


def naive(p2m, m2p, owners, max_mfn, pfns):
    """What a per-pfn tool does (Linux's mfn_to_pfn() check, one entry at a time)."""
    found = 0
    for pfn in pfns:
        e = int(p2m[pfn])
        if e == P.INVALID_P2M_ENTRY:
            found += 1
            continue
        if e & P.IDENTITY_FRAME_BIT and not e & P.FOREIGN_FRAME_BIT:
            continue
        mfn = e & P.MFN_MASK
        if mfn >= max_mfn:
            found += 1
            continue
        if e & P.FOREIGN_FRAME_BIT or int(owners[mfn]) != ME:
            found += 1
            continue
        if int(m2p[mfn]) != pfn:
            found += 1
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pfns", type=int, default=1 << 24, help="pfns in the guest (default 16 M = 64 GiB)")
    ap.add_argument("--sample", type=int, default=200_000, help="pfns checked by the naive loop")
    ap.add_argument("--quick", action="store_true", help="1 M pfns (smoke test)")
    a = ap.parse_args()
    n = 1 << 20 if a.quick else a.pfns
    t0 = time.perf_counter()
    p2m, m2p, owners, max_mfn = build(n)
    t_build = time.perf_counter() - t0
    t_fast, rep = best_of(3, lambda: P.check(p2m, m2p, max_mfn, owners=owners, me=ME))
    sample = np.linspace(0, n - 1, min(a.sample, n)).astype(np.int64)
    t0 = time.perf_counter()
    naive(p2m, m2p, owners, max_mfn, sample.tolist())
    t_sample = time.perf_counter() - t0
    t_naive = t_sample / len(sample) * n
    gib = n * 4096 / (1 << 30)
    print(f"(d) p2m-check of a {gib:g} GiB guest: {n:,} pfns, {max_mfn:,} machine frames, 2 MiB extents "
          f"shuffled (tables built in {t_build:.1f} s)")
    print("    findings: " + ", ".join(f"{c} {k}" for c, k in rep.counts.items()))
    print(f"    xenscope check (with owners, best of 3): {t_fast:.3f} s = {n / t_fast / 1e6:.1f} M pfns/s   "
          f"(target <= 1 s: {'ok' if t_fast <= 1 else 'MISSED'})")
    print(f"    naive per-pfn loop: {t_naive:.1f} s for {n:,} pfns (timed on {len(sample):,} evenly spread pfns, "
          f"{t_sample:.2f} s) = {n / t_naive / 1e6:.2f} M pfns/s")
    print(f"    ratio naive/xenscope: {t_naive / t_fast:.0f}x")
    del p2m, m2p, owners, rep
    p2m, m2p, owners, max_mfn = build(n, random_frames=True)
    t_rand, rep = best_of(3, lambda: P.check(p2m, m2p, max_mfn, owners=owners, me=ME))
    print(f"    worst case, every pfn at a random frame (no locality): {t_rand:.3f} s "
          f"(target <= 1 s: {'ok' if t_rand <= 1 else 'MISSED'})")
    return 0 if t_fast <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
