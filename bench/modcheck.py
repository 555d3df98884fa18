#!/usr/bin/env python3
"""modcheck benchmark: 1000 task page directories x 2000 module pages, fast path against the
exhaustive per-page walk, on an address space built here in memory (MemoryTarget).

    .venv/bin/python bench/modcheck.py [--tasks N] [--pages N] [--mode 2level|pae|4level|5level]

The space is what a real i386 (2-level / PAE with unshared kernel PMD) or x86_64 kernel has: a
reference directory (init_mm.pgd), modules in the vmalloc/module area, and every task directory a
copy of the kernel half. Then, like old tasks after a module load, some directories lack a PDE,
one has a stale page table (other frames), one other rights. Target: fast <= 1 s.

:class:`Space` (a tiny page-table builder) is reused by tests/test_modcheck.py.
"""

import argparse
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
if TOP not in sys.path:
    sys.path.insert(0, TOP)

from xenstructs.paging import GEOMETRY, Paging       # noqa: E402
from xenstructs.target import MemoryTarget            # noqa: E402

PAGE = 4096
P, RW, US, A, D, PS = 1, 2, 4, 0x20, 0x40, 0x80
NX = 1 << 63
MODULE_BASE = {"2level": 0xF8000000, "pae": 0xF8000000, "4level": 0xFFFFFFFFA0000000,
               "5level": 0xFFFFFFFFA0000000}
KERNEL_SPLIT = {"2level": 0x300, "pae": 3, "4level": 256, "5level": 256}   # first kernel top index


class Space:
    """Page tables laid out by hand in a :class:`MemoryTarget`.

    ``root()`` allocates a top table (PAE: a PDPT at offset 0x20 of its page); ``map(root, va, pa)``
    creates the missing tables of ``root`` and sets a 4 KiB leaf; ``entry``/``set`` read and write
    entries by (table, index); ``clone_kernel(ref)`` makes a task directory whose kernel half is a
    copy of ``ref``'s (PAE: its own copy of the kernel PMD, as Xen PV has it).
    """

    def __init__(self, mode, base=0x100000):
        self.mode = mode
        self.esize, self.shifts, self.widths, self.bits = GEOMETRY[mode]
        self.t = MemoryTarget()
        self.next = base

    def alloc(self):
        pa = self.next
        self.next += PAGE
        self.t.pages[pa] = bytearray(PAGE)
        return pa

    def root(self):
        pa = self.alloc()
        return pa + 0x20 if self.mode == "pae" else pa

    def entry(self, table, idx):
        a = table + idx * self.esize
        page = self.t.pages[a & ~0xFFF]
        return int.from_bytes(page[a & 0xFFF:(a & 0xFFF) + self.esize], "little")

    def set(self, table, idx, value):
        a = table + idx * self.esize
        page = self.t.pages[a & ~0xFFF]
        page[a & 0xFFF:(a & 0xFFF) + self.esize] = (value & ((1 << (8 * self.esize)) - 1)).to_bytes(self.esize, "little")

    def index(self, va, li):
        return (va >> self.shifts[li]) & ((1 << self.widths[li]) - 1)

    def table_flags(self, li):
        return P if (self.mode == "pae" and li == 0) else P | RW | A

    def map(self, root, va, pa, flags=P | RW | A | D, nx=False):
        table = root
        for li in range(len(self.shifts) - 1):
            i = self.index(va, li)
            e = self.entry(table, i)
            if not e & P:
                e = self.alloc() | self.table_flags(li)
                self.set(table, i, e)
            table = e & 0x000FFFFFFFFFF000
        leaf = pa | flags | (NX if nx and self.esize == 8 else 0)
        self.set(table, self.index(va, len(self.shifts) - 1), leaf)

    def walk_tables(self, root, va):
        """[(table, index)] per level for ``va`` (stops at a non-present entry)."""
        out, table = [], root
        for li in range(len(self.shifts)):
            i = self.index(va, li)
            out.append((table, i))
            e = self.entry(table, i)
            if not e & P or li == len(self.shifts) - 1:
                break
            table = e & 0x000FFFFFFFFFF000
        return out

    def write_virt(self, root, va, data):
        """Write bytes at kernel ``va``, mapping fresh data pages where none is mapped."""
        while data:
            n = min(len(data), PAGE - (va & 0xFFF))
            tw = self.walk_tables(root, va)
            t, i = tw[-1]
            e = self.entry(t, i)
            if len(tw) < len(self.shifts) or not e & P:
                self.map(root, va & ~0xFFF, self.alloc())
                t, i = self.walk_tables(root, va)[-1]
                e = self.entry(t, i)
            pa = (e & 0x000FFFFFFFFFF000) + (va & 0xFFF)
            self.t.pages[pa & ~0xFFF][pa & 0xFFF:(pa & 0xFFF) + n] = data[:n]
            data, va = data[n:], va + n

    def clone_kernel(self, ref):
        """A new directory sharing ``ref``'s kernel half as Linux makes one (pgd_alloc)."""
        r = self.root()
        n = 1 << self.widths[0]
        for i in range(KERNEL_SPLIT[self.mode], n):
            e = self.entry(ref, i)
            if self.mode == "pae" and e & P:                  # unshared kernel PMD: a private copy
                pmd = self.alloc()
                self.t.pages[pmd][:] = self.t.pages[e & 0x000FFFFFFFFFF000]
                e = pmd | (e & 0xFFF)
            self.set(r, i, e)
        return r

    def paging(self, root):
        return Paging(self.mode, root, nxe=True)


DIRECT = {"2level": 0xC0000000, "pae": 0xC0000000, "4level": 0xFFFF888000000000,
          "5level": 0xFF11000000000000}
HEAP = {"2level": 0xD0000000, "pae": 0xD0000000, "4level": 0xFFFFFFFF82000000,
        "5level": 0xFFFFFFFF82000000}


def fake_profile(ptr):
    """Offsets of the fake kernel's structs (pointer size ``ptr``; 'layout' module regions)."""
    p = ptr
    off = {"task_struct.tasks": 2 * p, "task_struct.pid": 8 * p, "task_struct.tgid": 8 * p + 4,
           "task_struct.comm": 10 * p, "task_struct.mm": 10 * p + 16, "task_struct.active_mm": 11 * p + 16,
           "mm_struct.pgd": 3 * p, "module.list": p, "module.name": 3 * p,
           "module.core_layout": 3 * p + 64, "module.init_layout": 7 * p + 64,
           "module_layout.base": 0, "module_layout.size": p,
           "vmap_area.va_start": 0, "vmap_area.va_end": p, "vmap_area.list": 2 * p}
    sizes = {"task_struct": 16 * p + 16, "mm_struct": 8 * p, "module": 12 * p + 64, "module_layout": 4 * p,
             "vmap_area": 6 * p, "task_struct.comm": 16, "module.name": 64 - p}
    return off, sizes


class FakeKernel:
    """A hand-laid kernel in a :class:`Space`: init_task/init_mm, tasks with their own page
    directories (clones of init_mm's), modules mapped in the module area, vmalloc areas.
    Symbols are at runtime = link-time + ``kaslr``."""

    BANNER = b"Linux version 6.1.0-fake (xenscope@test) #1 SMP\n"

    def __init__(self, mode="2level", kaslr=0):
        import struct as _s
        self._s = _s
        self.mode, self.kaslr = mode, kaslr
        self.sp = Space(mode)
        self.ref = self.sp.root()
        self.ptr = 8 if mode in ("4level", "5level") else 4
        self.offsets, self.sizes = fake_profile(self.ptr)
        self.heap = HEAP[mode] + kaslr
        self.symbols = {}
        self.mod_next = MODULE_BASE[mode]
        banner = self.alloc(len(self.BANNER) + 1, "linux_banner")
        self.write(banner, self.BANNER)
        self.init_mm = self.alloc(self.sizes["mm_struct"], "init_mm")
        self.write_ptr(self.init_mm + self.offsets["mm_struct.pgd"], self.pgd_va(self.ref))
        self.init_task = self.alloc(self.sizes["task_struct"], "init_task")
        self._task_fields(self.init_task, 0, "swapper/0", 0, self.init_mm)
        self.list_init(self.init_task + self.offsets["task_struct.tasks"])
        self.modules = self.alloc(2 * self.ptr, "modules")
        self.list_init(self.modules)
        self.vmap_list = self.alloc(2 * self.ptr, "vmap_area_list")
        self.list_init(self.vmap_list)
        self.tasks = {0: self.init_task}

    # memory
    def alloc(self, size, name=None):
        va = self.heap
        self.heap += (size + 63) & ~63
        self.sp.write_virt(self.ref, va, bytes(size))
        if name:
            self.symbols[name] = va - self.kaslr         # link-time
        return va

    def write(self, va, data):
        self.sp.write_virt(self.ref, va, bytes(data))

    def write_ptr(self, va, v):
        self.write(va, v.to_bytes(self.ptr, "little"))

    def pgd_va(self, root):
        """Map the page of ``root`` in the direct map; its virtual address (PAE: + 0x20)."""
        va = DIRECT[self.mode] + root
        self.sp.map(self.ref, va & ~0xFFF, root & ~0xFFF)
        return va

    def list_init(self, head):
        self.write_ptr(head, head)
        self.write_ptr(head + self.ptr, head)

    def list_add_tail(self, node, head):
        prev = int.from_bytes(self.sp.t.read_phys(self._pa(head + self.ptr), self.ptr), "little")
        self.write_ptr(node, head)
        self.write_ptr(node + self.ptr, prev)
        self.write_ptr(prev, node)
        self.write_ptr(head + self.ptr, node)

    def _pa(self, va):
        from xenstructs.paging import translate
        return translate(self.sp.t, self.sp.paging(self.ref), va)

    def read_ptr(self, va):
        return int.from_bytes(self.sp.t.read_phys(self._pa(va), self.ptr), "little")

    def _task_fields(self, t, pid, comm, mm, active_mm):
        o = self.offsets
        self.write(t + o["task_struct.pid"], pid.to_bytes(4, "little"))
        self.write(t + o["task_struct.tgid"], pid.to_bytes(4, "little"))
        self.write(t + o["task_struct.comm"], comm.encode()[:15].ljust(16, b"\0"))
        self.write_ptr(t + o["task_struct.mm"], mm)
        self.write_ptr(t + o["task_struct.active_mm"], active_mm)

    # objects
    def add_task(self, pid, comm, kthread=False, share_mm_of=None):
        """A task on init_task.tasks: its own mm and cloned directory, or (kthread) active_mm =
        init_mm, or the mm of task ``share_mm_of``. Returns (task va, root)."""
        o = self.offsets
        t = self.alloc(self.sizes["task_struct"])
        if kthread:
            mm, active, root = 0, self.init_mm, self.ref
        elif share_mm_of is not None:
            mm = self.read_ptr(self.tasks[share_mm_of] + o["task_struct.mm"])
            active, root = mm, None
        else:
            mm = self.alloc(self.sizes["mm_struct"])
            root = self.sp.clone_kernel(self.ref)
            self.write_ptr(mm + o["mm_struct.pgd"], self.pgd_va(root))
            active = mm
        self._task_fields(t, pid, comm, mm, active)
        self.list_add_tail(t + o["task_struct.tasks"], self.init_task + o["task_struct.tasks"])
        self.tasks[pid] = t
        return t, root

    def add_module(self, name, pages, gap_pages=0):
        """A module with a core region of ``pages`` mapped pages at the next module address."""
        o = self.offsets
        m = self.alloc(self.sizes["module"])
        self.write(m + o["module.name"], name.encode().ljust(self.sizes["module.name"], b"\0"))
        base = self.mod_next + gap_pages * PAGE
        for i in range(pages):
            self.sp.map(self.ref, base + i * PAGE, self.sp.alloc(), nx=True)
        lay = m + o["module.core_layout"]
        self.write_ptr(lay + o["module_layout.base"], base)
        self.write(lay + o["module_layout.size"], (pages * PAGE).to_bytes(4, "little"))
        self.list_add_tail(m + o["module.list"], self.modules)
        self.mod_next = base + pages * PAGE + PAGE
        return m, base

    def add_vmap(self, start, end, map_pages=True):
        o = self.offsets
        a = self.alloc(self.sizes["vmap_area"])
        self.write_ptr(a + o["vmap_area.va_start"], start)
        self.write_ptr(a + o["vmap_area.va_end"], end)
        if map_pages:
            for va in range(start, end - PAGE, PAGE):          # the last page is the guard page
                self.sp.map(self.ref, va, self.sp.alloc())
        self.list_add_tail(a + o["vmap_area.list"], self.vmap_list)
        return a

    def profile(self, with_symbols=True):
        from xenstructs.linux.profile import Profile
        return Profile(dict(self.offsets), dict(self.sizes), dict(self.symbols) if with_symbols else {},
                       {"source": "fake", "banner": self.BANNER.decode().rstrip()})

    def kernel(self, **kw):
        from xenstructs.linux.kernel import Kernel
        kw.setdefault("profile", self.profile())
        return Kernel(self.sp.t, paging=self.sp.paging(self.ref), **kw)


def build(mode="2level", ntasks=1000, npages=2000, seed=1, old=37):
    """The benchmark's space: ``(space, ref_root, task_roots, module_pages, expected)``.

    ``old`` directories are cloned before the last module's page tables exist (they lack the
    covering PDE, or on 4/5-level nothing: the kernel half is shared there); directory 1 has a
    stale page table with other frames, directory 2 a PDE without RW.
    ``expected`` = {(root, va, level, kind)} for the per-page check.
    """
    rnd = random.Random(seed)
    s = Space(mode)
    ref = s.root()
    base = MODULE_BASE[mode]
    # the first half of the modules: mapped before any task exists
    half = npages // 2
    pages = [base + i * PAGE for i in range(npages)]
    for va in pages[:half]:
        s.map(ref, va, s.alloc(), flags=P | RW | A | D, nx=True)
    tasks = [s.clone_kernel(ref) for _ in range(old)]
    # later modules, far enough to need new page tables (a new PDE per 2/4 MiB)
    late_base = base + (8 << 20)
    late = [late_base + i * PAGE for i in range(npages - half)]
    for va in late:
        s.map(ref, va, s.alloc(), flags=P | RW | A | D, nx=True)
    tasks += [s.clone_kernel(ref) for _ in range(ntasks - old)]
    pages = pages[:half] + late
    expected = set()
    lv_pde = len(s.shifts) - 2
    pde_name = "PDE"
    if mode in ("2level", "pae"):
        for r in tasks[:old]:
            for va in late:
                expected.add((r, va, pde_name, "missing"))
    # directory old+1: a stale page table for the first late PDE (other frames)
    if mode in ("2level", "pae"):
        r = tasks[old + 1]
        va0 = late[0]
        tbl, idx = s.walk_tables(r, va0)[lv_pde]
        e = s.entry(tbl, idx)
        # 2-level: the PD is the task's own; PAE: the task's own PMD copy
        pt = s.alloc()
        s.t.pages[pt][:] = s.t.pages[e & 0x000FFFFFFFFFF000]
        changed = rnd.sample(range(512), 5)
        for k in changed:
            old_e = s.entry(pt, k)
            if old_e & P:
                s.set(pt, k, (old_e & ~0x000FFFFFFFFFF000) | s.alloc())
                expected.add((r, (va0 & ~((1 << s.shifts[lv_pde]) - 1)) + k * PAGE, "PTE", "different-frame"))
        s.set(tbl, idx, pt | (e & 0xFFF))
        # directory old+2: the PDE of the first early pages without RW
        r = tasks[old + 2]
        tbl, idx = s.walk_tables(r, pages[0])[lv_pde]
        s.set(tbl, idx, s.entry(tbl, idx) & ~RW)
        span = 1 << s.shifts[lv_pde]
        for va in pages[:half]:
            if va >> s.shifts[lv_pde] == pages[0] >> s.shifts[lv_pde]:
                expected.add((r, va, "PDE", "different-rights"))
        del span
    else:                         # x86_64: kernel half shared; directory old+1 lost its top entry
        from xenstructs.decode import ENTRY_NAMES, LEVELS
        r = tasks[old + 1]
        s.set(r, s.index(pages[0], 0), 0)
        for va in pages:
            expected.add((r, va, ENTRY_NAMES[LEVELS[mode][0]], "missing"))
    return s, ref, tasks, pages, expected


def run(mode, ntasks, npages, repeat=3):
    from xenstructs.linux.modcheck import exhaustive, fast
    t0 = time.perf_counter()
    s, ref, roots, pages, expected = build(mode, ntasks, npages)
    t_build = time.perf_counter() - t0
    pg = s.paging(ref)
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        f = fast(s.t, pg, roots, pages)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    t0 = time.perf_counter()
    e = exhaustive(s.t, pg, roots, pages)
    t_ex = time.perf_counter() - t0
    same = f.as_set() == e.as_set()
    exp_ok = f.as_set() == expected
    print(f"    {mode}: {ntasks} PGDs x {len(pages)} module pages (built in {t_build:.1f} s): "
          f"{len(f)} findings")
    print(f"      fast {best:.3f} s (target <= 1 s: {'ok' if best <= 1 else 'MISSED'}), exhaustive {t_ex:.2f} s, "
          f"ratio {t_ex / best:.0f}x; fast == exhaustive: {same}; == expected: {exp_ok}")
    return best <= 1 and same and exp_ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--mode", action="append", choices=sorted(GEOMETRY))
    a = ap.parse_args(argv)
    ok = True
    for mode in a.mode or ("2level", "pae", "4level"):
        ok &= run(mode, a.tasks, a.pages)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
