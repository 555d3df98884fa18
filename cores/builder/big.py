"""A large x86_64 4-level core for enumeration speed tests (not bundled; built on demand).

``build_big_core(path, n_ptes=1<<20, seed=0)`` maps ``n_ptes`` consecutive 4 KiB pages from
:data:`VA_BASE`, filled by numpy: rights (RW, US, NX) change every 1-8 pages and the physical frame
jumps now and then, so coalescing yields many ranges. Only the page tables are in the file; the data
pages (from 4 GiB up) are not.
"""

import numpy as np

from .elfcore_writer import VADDR_BASE, write_elf_core

PAGE = 0x1000
VA_BASE = 0xFFFFC90000000000            # vmalloc-like area: PML4 slot 402, PDPT slots 0..
DATA_BASE = 0x100000000                 # physical frames of the mapped pages (not in the dump)
TABLE_FLAGS = 0x27                      # P|RW|US|A on every intermediate entry (no XD)
CR0, CR4, EFER = 0x80050033, 0x6B0, 0xD01


def _ptes(n, rng):
    """PTE values (uint64) and the per-page rights/frames they encode."""
    runs = rng.integers(1, 9, size=n // 2 + 2)                 # rights change every 1..8 pages
    codes = rng.integers(0, 8, size=len(runs))                   # bit0 RW, bit1 US, bit2 NX
    rights = np.repeat(codes, runs)[:n].astype(np.uint64)
    assert len(rights) == n
    jump = (rng.random(n) < 1 / 16) * rng.integers(1, 64, size=n)   # physical discontinuities
    jump[0] = 0
    pfn = (DATA_BASE >> 12) + np.arange(n, dtype=np.uint64) + np.cumsum(jump, dtype=np.uint64)
    rw = rights & np.uint64(1)
    us = (rights >> np.uint64(1)) & np.uint64(1)
    nx = (rights >> np.uint64(2)) & np.uint64(1)
    pte = (pfn << np.uint64(12)) | np.uint64(0x61) | (rw << np.uint64(1)) | (us << np.uint64(2)) \
        | (nx << np.uint64(63))                                  # P|A|D + rights
    return pte, rights, pfn


def build_big_core(path, n_ptes=1 << 20, seed=0):
    """Write the core; return a small manifest dict (cr3, n_ptes, expected range counts, ...)."""
    rng = np.random.default_rng(seed)
    n_pt = -(-n_ptes // 512)
    n_pd = -(-n_pt // 512)
    assert n_pd <= 512
    pml4, pdpt = 0x1000, 0x2000
    pd0 = 0x3000
    pt0 = pd0 + n_pd * PAGE
    end = pt0 + n_pt * PAGE
    mem = np.zeros((end - pml4) // 8, dtype=np.uint64)           # physical [0x1000, end) as u64

    def at(pa):
        return (pa - pml4) // 8

    pml4_idx = VA_BASE >> 39 & 511
    mem[at(pml4) + pml4_idx] = pdpt | TABLE_FLAGS
    mem[at(pdpt):at(pdpt) + n_pd] = (pd0 + PAGE * np.arange(n_pd, dtype=np.uint64)) | np.uint64(TABLE_FLAGS)
    mem[at(pd0):at(pd0) + n_pt] = (pt0 + PAGE * np.arange(n_pt, dtype=np.uint64)) | np.uint64(TABLE_FLAGS)
    pte, rights, pfn = _ptes(n_ptes, rng)
    mem[at(pt0):at(pt0) + n_ptes] = pte

    brk_rights = np.ones(n_ptes, bool)
    brk_rights[1:] = rights[1:] != rights[:-1]
    brk_pa = np.zeros(n_ptes, bool)
    brk_pa[1:] = pfn[1:] != pfn[:-1] + np.uint64(1)
    regs = {"cr0": CR0, "cr2": 0, "cr3": pml4, "cr4": CR4, "rip": 0xFFFFFFFF81000000,
            "rsp": VA_BASE + 0x1000, "rflags": 0x246, "cs": 0x10, "ss": 0x18}
    write_elf_core(path, machine="x86_64", segments=[(pml4, mem.astype("<u8").tobytes())],
                   cpus=[regs], vaddr_base=VADDR_BASE["x86_64"])
    return {
        "mode": "4level", "cr3": pml4, "cr4": CR4, "efer": EFER, "n_ptes": n_ptes,
        "pt_pages": n_pt, "va_start": VA_BASE, "va_end": VA_BASE + n_ptes * PAGE,
        "ranges": int((brk_rights | brk_pa).sum()),               # merge needs va, pa contiguous
        "ranges_ignore_pa": int(brk_rights.sum()),                # merge on va and rights only
        "first_pte": int(pte[0]), "last_pte": int(pte[-1]),
    }
