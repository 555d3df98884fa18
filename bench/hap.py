#!/usr/bin/env python3
"""A translated (HVM/PVH) guest's P2M enumerated whole: what ``p2m-check --domain`` and the nested
``maps`` read first.

    .venv/bin/python bench/hap.py [--gib N]

The P2M of an N GiB guest mapped in 4 KiB pages (the worst case: no superpage; N * 256 Ki leaves)
is built here in memory, in p2m-pt (NPT) format with p2m_ram_rw entries. Timed: ``leaf_arrays``
(each table decoded whole, xenstructs/xen/p2m_tables.py) and, on the same tables in the same run, the
baseline: every non-zero entry decoded alone (``Format.decode``) while walking, as the enumeration did
before. Both must give the same leaves. Target: 4 GiB in <= 1 s.
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
if TOP not in sys.path:
    sys.path.insert(0, TOP)

from xenstructs.xen import npt                      # noqa: E402
from xenstructs.xen.p2m_tables import leaf_arrays   # noqa: E402

TABLE_FLAGS = 0x67                                  # P2M_BASE_FLAGS | RW (p2m-pt.c), type bits 0


def build(gib):
    """``{mfn: table bytes}`` of a P2M rooted at mfn 1 mapping ``gib`` GiB in 4 KiB leaves."""
    l2_count = gib
    tables = {1: np.zeros(512, np.uint64), 2: np.zeros(512, np.uint64)}
    tables[1][0] = (2 << 12) | TABLE_FLAGS
    next_mfn = 10
    for j in range(l2_count):
        l2 = tables[next_mfn] = np.zeros(512, np.uint64)
        tables[2][j] = (next_mfn << 12) | TABLE_FLAGS
        next_mfn += 1
        for k in range(512):
            first = 0x100000 + (j * 512 + k) * 512
            tables[next_mfn] = ((np.arange(512, dtype=np.uint64) + np.uint64(first)) << np.uint64(12)) | \
                np.uint64(TABLE_FLAGS)
            l2[k] = (next_mfn << 12) | TABLE_FLAGS
            next_mfn += 1
    return {m: t.tobytes() for m, t in tables.items()}


def per_entry(read_table, fmt, mfn, level, base, out):
    """The baseline: walk the tables, decoding each non-zero entry on its own."""
    words = np.frombuffer(read_table(mfn), "<u8")
    for index in np.nonzero(words)[0].tolist():
        entry = fmt.decode(int(words[index]), level)
        gfn = base + (index << 9 * (level - 1))
        if entry.leaf or not entry.present:
            if fmt.holds(entry):
                out.append((gfn, entry.mfn, entry.type))
        else:
            per_entry(read_table, fmt, entry.mfn, level - 1, gfn, out)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=int, default=4, help="guest memory in GiB (default 4)")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    tables = build(a.gib)
    built = time.perf_counter() - t0
    fmt = npt.Format()
    read = tables.__getitem__
    t0 = time.perf_counter()
    got = leaf_arrays(read, fmt, 1)
    fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    want = per_entry(read, fmt, 1, 4, 0, [])
    slow = time.perf_counter() - t0
    same = list(zip(got.gfn.tolist(), got.mfn.tolist(), got.type.tolist())) == want
    ok = same and fast <= 1.0
    print(f"(h) P2M of a {a.gib} GiB translated guest in 4 KiB pages: {len(want):,} leaves, {len(tables):,} tables "
          f"(built in {built:.1f} s)")
    print(f"    whole tables (leaf_arrays): {fast:.3f} s   (target <= 1 s: {'ok' if fast <= 1.0 else 'MISSED'})")
    print(f"    entry by entry: {slow:.2f} s = {slow / fast:.0f}x; same leaves: {same}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
