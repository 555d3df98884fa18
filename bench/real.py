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
(c) peak RSS of every command on the dump (bench/memory.py), held to RAM / 4 + 200 MiB.

Exit status 0 when every check agrees and every target is met (``walk()`` and
``translate_many()`` at least drgn's rate, best of ``--repeat`` runs each, in the same run).
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


def best_of(n, fn, first=None):
    """Best of ``n`` timed runs of ``fn`` and its last answer; the first run's seconds are
    appended to the list ``first`` when given (caches still empty)."""
    best, out = None, None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        if first is not None and best is None:
            first.append(dt)
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


def boot_and_dump(args, dump):
    """Boot, pause, time ``info tlb`` (best of ``args.repeat``) and write the ELF dump: (info tlb
    text, its seconds, the dump's seconds)."""
    t0 = time.perf_counter()
    vm = boot_linux("x86_64")
    try:
        print(f"Debian x86_64 kernel booted under QEMU TCG in {time.perf_counter() - t0:.1f} s; paused")
        vm.qmp("stop")
        t_tlb, tlb = best_of(args.repeat, lambda: vm.hmp("info tlb"))
        t0 = time.perf_counter()
        vm.qmp("dump-guest-memory", paging=False, protocol=f"file:{dump}")
        t_dump = time.perf_counter() - t0
    finally:
        vm.close()
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        shutil.copy(dump, args.keep)
        with open(os.path.join(args.keep, "info-tlb.txt"), "w") as f:
            f.write(tlb)
    return tlb, t_tlb, t_dump


def random_translations(args, target, paging, dump, tlb_va, tlb_pa, drgn, drgn_follow_phys):
    """(a) N random kernel VAs through xenscope and drgn, every answer checked against ``info
    tlb``; True when all agree."""
    rng = np.random.default_rng(12345)
    kern = np.nonzero(tlb_va >= np.uint64(KERNEL_HALF))[0]
    pick = kern[rng.integers(0, len(kern), args.n)]
    offset = rng.integers(0, 4096, args.n, dtype=np.uint64)
    vas = tlb_va[pick] + offset
    want = tlb_pa[pick] + offset
    va_list = vas.tolist()
    n = len(va_list)

    def xs_walk():
        return [walk(target, paging, va).pa for va in va_list]
    cold = []                 # first runs: walk() then drgn, each with its caches empty
    t_walk, got_walk = best_of(args.repeat, xs_walk, cold)
    t_many, translated = best_of(args.repeat, lambda: translate_many(target, paging, va_list))  # the same list

    prog = drgn.Program()
    prog.set_core_dump(dump)
    pgd = target.facts["vmcoreinfo"].symbol("init_top_pgt")   # the kernel's top table (kernel VA)

    def drgn_phys():
        return [drgn_follow_phys(prog, pgd, va) for va in va_list]

    def drgn_read():
        read, out = prog.read, []
        for va in va_list:
            try:
                out.append(read(va, 1))
            except drgn.FaultError:          # translated, but the page is not in the dump
                out.append(None)
        return out
    t_drgn, got_drgn = best_of(args.repeat, drgn_phys, cold)
    t_read, got_read = best_of(args.repeat, drgn_read)

    want_list = want.tolist()
    bad_walk = sum(got != wanted for got, wanted in zip(got_walk, want_list))
    bad_many = int((~translated.ok).sum() + (translated.pa != want).sum())
    bad_drgn = sum(got != wanted for got, wanted in zip(got_drgn, want_list))
    in_dump = [target.in_memory(wanted) for wanted in want_list]
    bad_read = sum((got is None) == present for got, present in zip(got_read, in_dump))
    bytes_ok = sum(got == target.read_phys(wanted, 1) for got, wanted in zip(got_read[:5000], want_list[:5000])
                   if got is not None)
    checked = sum(got is not None for got in got_read[:5000])
    ok = bad_walk == bad_many == bad_drgn == bad_read == 0 and bytes_ok == checked

    r_walk, r_many, r_drgn, r_read = rate(n, t_walk), rate(n, t_many), rate(n, t_drgn), rate(n, t_read)
    print(f"\n(a) {n:,} random kernel VAs inside {len(kern):,} kernel pages of info tlb "
          f"(best of {args.repeat}; the same Python list of addresses for every tool)")
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
          f"for {sum(got is None for got in got_read):,}; byte equal to read_phys(info-tlb pa) "
          f"for {bytes_ok:,} of {checked:,} checked)")
    print(f"    ratio xenscope/drgn(follow_phys): walk() {r_walk / r_drgn:.2f}x, "
          f"translate_many() {r_many / r_drgn:.1f}x   (target >= 1x: "
          f"walk() {'ok' if r_walk >= r_drgn else 'MISSED'}, "
          f"translate_many() {'ok' if r_many >= r_drgn else 'MISSED'})")
    print(f"    first runs (nothing kept yet): walk() {rate(n, cold[0]):,.0f} /s, drgn follow_phys "
          f"{rate(n, cold[1]):,.0f} /s = {cold[1] / cold[0]:.2f}x (not a target: the best of {args.repeat} is)")
    return ok and r_walk >= r_drgn and r_many >= r_drgn


def whole_maps(args, target, context, tlb_va, tlb_pa, t_tlb):
    """(b) maps of the whole address space against ``info tlb``; True when they agree."""
    def maps():
        mappings = enumerate_mappings(target, context.paging)
        return mappings, coalesce(mappings)
    t_maps, (mappings, ranges) = best_of(args.repeat, maps)
    same_count = len(mappings) == len(tlb_va)
    ours = set(zip(mappings.va.tolist(), mappings.pa.tolist()))
    qemus = set(zip(tlb_va.tolist(), tlb_pa.tolist()))
    print(f"\n(b) maps of the whole address space (CR3 {context.cr3:#x})")
    print(f"    xenscope enumerate_mappings+coalesce {t_maps:.3f} s: {len(mappings):,} pages, "
          f"{len(ranges):,} ranges, {mappings.tables:,} tables, {len(mappings.problems)} problems")
    print(f"    QEMU info tlb over QMP                {t_tlb:.3f} s: {len(tlb_va):,} lines")
    print(f"    ratio info-tlb time / xenscope time: {t_tlb / t_maps:.2f}x "
          f"({'xenscope faster' if t_maps < t_tlb else 'QEMU faster'})")
    print(f"    page count equal: {'yes' if same_count else 'NO'}; (va, pa) sets equal: "
          f"{'yes' if ours == qemus else f'NO ({len(ours - qemus)} only xenscope, {len(qemus - ours)} only QEMU)'}")
    return same_count and ours == qemus


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000, help="random kernel addresses (default 100 000)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs, best kept (default 3)")
    ap.add_argument("--keep", metavar="DIR", help="keep the dump and info tlb text in DIR")
    args = ap.parse_args()
    try:
        import drgn
        from drgn.helpers.linux.mm import _linux_helper_follow_phys as drgn_follow_phys
    except ImportError as e:
        raise SystemExit(f"drgn is needed: .venv/bin/pip install drgn ({e})")

    work = tempfile.mkdtemp(prefix="xenscope-bench-")
    dump = os.path.join(work, "linux.elf")
    ok = True
    try:
        tlb, t_tlb, t_dump = boot_and_dump(args, dump)
        tlb_va, tlb_pa = parse_tlb(tlb)
        print(f"QEMU info tlb (QMP human-monitor-command): {len(tlb_va):,} pages in {t_tlb:.3f} s "
              f"(best of {args.repeat}); dump {os.path.getsize(dump) >> 20} MiB written in {t_dump:.1f} s")

        target = open_dump(dump)
        context = resolve(target)
        print(f"xenscope: {target.kind}, {context.paging.mode}, CR3 {context.cr3:#x} ({context.sources['cr3']})")
        ok &= random_translations(args, target, context.paging, dump, tlb_va, tlb_pa, drgn, drgn_follow_phys)
        ok &= whole_maps(args, target, context, tlb_va, tlb_pa, t_tlb)
        target.close()
        print("\n(c) peak RSS of every command on this dump (bench/memory.py):", flush=True)
        import memory as bench_memory
        ok &= bench_memory.main([dump]) == 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'all checks agree, every target met' if ok else 'DISAGREEMENT OR TARGET MISSED (see above)'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
