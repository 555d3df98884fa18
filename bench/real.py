#!/usr/bin/env python3
"""xenscope against QEMU and drgn on a real kernel: one command, every figure from the same run.

    .venv/bin/python bench/real.py [-n 100000] [--repeat 3]

Boots Debian's x86_64 kernel (4-level paging) under QEMU TCG (tests/realsys), pauses it, times
QEMU's own ``info tlb`` over QMP (the reference), takes an ELF dump (``dump-guest-memory``, with
VMCOREINFO) and on that dump measures:

(a) translations per second of N random addresses inside the kernel mappings ``info tlb`` lists
    (VA >= 0xffff800000000000; each a listed page's VA plus a random offset below 4 KiB, so its
    physical address is known from ``info tlb`` alone): xenscope ``walk()`` one address at a time,
    xenscope ``translate_many()`` all at once, and drgn (PyPI) translating through the kernel's
    page tables without debug info (``drgn.helpers.linux.mm`` follow_phys helper, and
    ``Program.read(va, 1)``). Every answer is checked against ``info tlb``.
(b) ``maps`` of the whole address space: xenscope ``enumerate_mappings`` + ``coalesce`` seconds
    against QEMU ``info tlb`` seconds, and the page count / (va, pa) set against ``info tlb``.

Exit status 0 when every check agrees.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, TOP)
sys.path.insert(0, os.path.join(TOP, "tests"))

import numpy as np                                                     # noqa: E402

from realsys.linux import boot_linux                                   # noqa: E402
from xenstructs.context import resolve                                 # noqa: E402
from xenstructs.paging import coalesce, enumerate_mappings, translate_many, walk  # noqa: E402
from xenstructs.targets import open_dump                               # noqa: E402

KERNEL_HALF = 0xFFFF800000000000


def best_of(n, fn):
    best, out = None, None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best, out


def parse_tlb(text):
    """``info tlb`` lines ``VVVVVVVVVVVVVVVV: PPPPPPPPPPPPPPPP FLAGS`` -> (va array, pa array)."""
    va, pa = [], []
    for line in text.splitlines():
        v, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) != 2:
            continue
        va.append(int(v, 16))
        pa.append(int(fields[0], 16))
    return np.array(va, np.uint64), np.array(pa, np.uint64)


def rate(n, seconds):
    return n / seconds if seconds > 0 else float("inf")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000, help="random kernel addresses (default 100 000)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs, best kept (default 3)")
    ap.add_argument("--keep", metavar="DIR", help="keep the dump and info tlb text in DIR")
    a = ap.parse_args()
    try:
        import drgn
        from drgn.helpers.linux.mm import _linux_helper_follow_phys as drgn_follow_phys
    except ImportError as e:
        raise SystemExit(f"drgn is needed: .venv/bin/pip install drgn ({e})")

    work = tempfile.mkdtemp(prefix="xenscope-bench-")
    dump = os.path.join(work, "linux.elf")
    ok = True
    try:
        t0 = time.perf_counter()
        v = boot_linux("x86_64")
        try:
            print(f"Debian x86_64 kernel booted under QEMU TCG in {time.perf_counter() - t0:.1f} s; paused")
            v.qmp("stop")
            t_tlb, tlb = best_of(a.repeat, lambda: v.hmp("info tlb"))
            t0 = time.perf_counter()
            v.qmp("dump-guest-memory", paging=False, protocol=f"file:{dump}")
            t_dump = time.perf_counter() - t0
        finally:
            v.close()
        if a.keep:
            os.makedirs(a.keep, exist_ok=True)
            shutil.copy(dump, a.keep)
            with open(os.path.join(a.keep, "info-tlb.txt"), "w") as f:
                f.write(tlb)
        tlb_va, tlb_pa = parse_tlb(tlb)
        print(f"QEMU info tlb (QMP human-monitor-command): {len(tlb_va):,} pages in {t_tlb:.3f} s "
              f"(best of {a.repeat}); dump {os.path.getsize(dump) >> 20} MiB written in {t_dump:.1f} s")

        t = open_dump(dump)
        ctx = resolve(t)
        pg = ctx.paging
        print(f"xenscope: {t.kind}, {pg.mode}, CR3 {ctx.cr3:#x} ({ctx.sources['cr3']})")

        # ---- (a) random kernel translations --------------------------------------------------
        rng = np.random.default_rng(12345)
        kern = np.nonzero(tlb_va >= np.uint64(KERNEL_HALF))[0]
        pick = kern[rng.integers(0, len(kern), a.n)]
        off = rng.integers(0, 4096, a.n, dtype=np.uint64)
        vas = tlb_va[pick] + off
        want = tlb_pa[pick] + off
        va_list = vas.tolist()
        n = len(va_list)

        def xs_walk():
            return [walk(t, pg, va).pa for va in va_list]
        t_walk, got_walk = best_of(a.repeat, xs_walk)
        t_many, tr = best_of(a.repeat, lambda: translate_many(t, pg, va_list))   # from the same list

        prog = drgn.Program()
        prog.set_core_dump(dump)
        pgd = t.facts["vmcoreinfo"].symbol("init_top_pgt")   # the kernel's top table (kernel VA)

        def drgn_phys():
            return [drgn_follow_phys(prog, pgd, va) for va in va_list]

        def drgn_read():
            rd, out = prog.read, []
            for va in va_list:
                try:
                    out.append(rd(va, 1))
                except drgn.FaultError:          # translated, but the page is not in the dump
                    out.append(None)
            return out
        t_drgn, got_drgn = best_of(a.repeat, drgn_phys)
        t_read, got_read = best_of(a.repeat, drgn_read)

        want_l = want.tolist()
        bad_walk = sum(g != w for g, w in zip(got_walk, want_l))
        bad_many = int((~tr.ok).sum() + (tr.pa != want).sum())
        bad_drgn = sum(g != w for g, w in zip(got_drgn, want_l))
        in_dump = [t.in_memory(w) for w in want_l]
        bad_read = sum((r is None) == d for r, d in zip(got_read, in_dump))
        bytes_ok = sum(r == t.read_phys(w, 1) for r, w in zip(got_read[:5000], want_l[:5000]) if r is not None)
        checked = sum(r is not None for r in got_read[:5000])
        ok &= bad_walk == bad_many == bad_drgn == bad_read == 0 and bytes_ok == checked

        r_walk, r_many, r_drgn, r_read = rate(n, t_walk), rate(n, t_many), rate(n, t_drgn), rate(n, t_read)
        print(f"\n(a) {n:,} random kernel VAs inside {len(kern):,} kernel pages of info tlb "
              f"(best of {a.repeat}; the same Python list of addresses for every tool)")
        print(f"    drgn {drgn.__version__}, no debug info: follow_phys helper through init_top_pgt "
              f"(VMCOREINFO); xenscope through CR3 (same kernel half)")
        print(f"    xenscope walk() loop      {t_walk:8.3f} s  {r_walk:12,.0f} /s   "
              f"mismatches vs info tlb: {bad_walk}")
        print(f"    xenscope translate_many() {t_many:8.3f} s  {r_many:12,.0f} /s   "
              f"mismatches vs info tlb: {bad_many}")
        print(f"    drgn follow_phys loop     {t_drgn:8.3f} s  {r_drgn:12,.0f} /s   "
              f"mismatches vs info tlb: {bad_drgn}")
        print(f"    drgn Program.read(va, 1)  {t_read:8.3f} s  {r_read:12,.0f} /s   "
              f"({n - sum(in_dump):,} VAs map pages absent from the dump (ISA/ROM holes): FaultError "
              f"for {sum(r is None for r in got_read):,}; byte equal to read_phys(info-tlb pa) "
              f"for {bytes_ok:,} of {checked:,} checked)")
        print(f"    ratio xenscope/drgn(follow_phys): walk() {r_walk / r_drgn:.2f}x, "
              f"translate_many() {r_many / r_drgn:.1f}x   (target >= 1x: "
              f"walk() {'ok' if r_walk >= r_drgn else 'MISSED'}, "
              f"translate_many() {'ok' if r_many >= r_drgn else 'MISSED'})")

        # ---- (b) maps of the whole address space ---------------------------------------------
        def maps():
            m = enumerate_mappings(t, pg)
            return m, coalesce(m)
        t_maps, (m, ranges) = best_of(a.repeat, maps)
        same_count = len(m) == len(tlb_va)
        xs = set(zip(m.va.tolist(), m.pa.tolist()))
        qs = set(zip(tlb_va.tolist(), tlb_pa.tolist()))
        ok &= same_count and xs == qs
        print(f"\n(b) maps of the whole address space (CR3 {ctx.cr3:#x})")
        print(f"    xenscope enumerate_mappings+coalesce {t_maps:.3f} s: {len(m):,} pages, "
              f"{len(ranges):,} ranges, {m.tables:,} tables, {len(m.problems)} problems")
        print(f"    QEMU info tlb over QMP                {t_tlb:.3f} s: {len(tlb_va):,} lines")
        print(f"    ratio info-tlb time / xenscope time: {t_tlb / t_maps:.2f}x "
              f"({'xenscope faster' if t_maps < t_tlb else 'QEMU faster'})")
        print(f"    page count equal: {'yes' if same_count else 'NO'}; (va, pa) sets equal: "
              f"{'yes' if xs == qs else f'NO ({len(xs - qs)} only xenscope, {len(qs - xs)} only QEMU)'}")
        t.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'all checks agree' if ok else 'DISAGREEMENT (see above)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
