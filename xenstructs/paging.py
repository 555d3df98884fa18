"""x86 page-table walks in every mode (2-level, PAE, 4-level, 5-level), as the CPU does them.

:func:`walk` translates one virtual address and keeps every level; :func:`enumerate_mappings`
lists an address space by reading whole tables with numpy (QEMU ``info tlb`` style pages), and
:func:`coalesce` merges them into ranges (``info mem`` style). Addresses are named by space:
``va`` (virtual), ``pa`` (physical in the target; machine memory for a Xen host dump).

Where a walk stops it says why (:data:`STOP_REASONS`). A hole in the dump (``not-in-dump``) is never
reported as ``not-present``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from . import decode as D
from .errors import NotInDump, XenscopeError

STOP_REASONS = {
    "not-present": "entry not present",
    "reserved": "reserved bit set",
    "not-in-dump": "page table not in the dump",
    "loop": "page table loop (a table is its own ancestor; enumeration does not re-enter it)",
    "non-canonical": "virtual address is not canonical",
    "out-of-range": "virtual address beyond the mode's width",
}

# Per mode: entry size, the VA shift of each level (top down), index bits of each level, VA width.
_GEOMETRY = {
    "2level": (4, (22, 12), (10, 10), 32),
    "pae": (8, (30, 21, 12), (2, 9, 9), 32),
    "4level": (8, (39, 30, 21, 12), (9, 9, 9, 9), 48),
    "5level": (8, (48, 39, 30, 21, 12), (9, 9, 9, 9, 9), 57),
}
MAX_TABLES = 1 << 20            # enumeration reads at most 1 M tables (4 GiB): absurd tables stop


@dataclass
class Paging:
    """How to walk: mode, root table address, and the bits that change the rules."""
    mode: str
    root: int                    # physical address of the top table (CR3 with flags masked off)
    nxe: bool = True
    maxphyaddr: int = 52
    cr4: int = D.CR4_PSE

    @property
    def entry_size(self):
        return _GEOMETRY[self.mode][0]

    @property
    def va_bits(self):
        return _GEOMETRY[self.mode][3]


def root_from_cr3(cr3, mode):
    """The top table's physical address from a CR3 value (drops PCID and flag bits)."""
    if mode == "pae":
        return cr3 & 0xFFFFFFE0
    if mode == "2level":
        return cr3 & 0xFFFFF000
    return cr3 & 0x000FFFFFFFFFF000


def canonical(va, mode):
    """Sign-extend a ``va_bits`` address to 64 bits (4/5-level); 32-bit modes return it masked."""
    bits = _GEOMETRY[mode][3]
    if bits == 32:
        return va & 0xFFFFFFFF
    va &= (1 << bits) - 1
    if va >> (bits - 1) & 1:
        va |= ((1 << 64) - 1) & ~((1 << bits) - 1)
    return va


@dataclass
class Level:
    """One step of a walk: which table, which index, what entry was found there."""
    name: str                    # entry name: PML5E PML4E PDPTE PDE PTE
    table: int                   # physical address of the table
    index: int
    entry_addr: int              # physical address of the entry
    entry: Optional[int] = None  # None when the table is not in the dump
    decoded: Optional[dict] = None
    recursive: bool = False      # this table already appeared higher up in the same walk


@dataclass
class Walk:
    """The result of translating one virtual address."""
    va: int
    mode: str
    root: int
    levels: List[Level] = field(default_factory=list)
    pa: Optional[int] = None
    page_size: Optional[int] = None
    writable: Optional[bool] = None   # RW at every level
    user: Optional[bool] = None       # US at every level
    nx: Optional[bool] = None         # XD at any level while EFER.NXE=1
    stop: Optional[str] = None        # key of STOP_REASONS when the walk did not reach a page
    stop_level: Optional[str] = None

    @property
    def ok(self):
        return self.stop is None

    def describe_stop(self):
        if self.stop is None:
            return None
        where = f" at {self.stop_level}" if self.stop_level else ""
        return f"{STOP_REASONS[self.stop]}{where}"


def walk(target, paging, va):
    """Translate ``va`` through the tables at ``paging.root``, reading single entries.

    :return: :class:`Walk`; ``walk.pa`` is set when a page is mapped, else ``walk.stop`` says why.
    """
    mode = paging.mode
    esize, shifts, widths, bits = _GEOMETRY[mode]
    res = Walk(va=va, mode=mode, root=paging.root)
    if bits == 32:
        if va >> 32:
            res.stop = "out-of-range"
            return res
    elif canonical(va, mode) != va:
        res.stop = "non-canonical"
        return res
    names = D.LEVELS[mode]
    table = paging.root
    rw = us = True
    nx = False
    seen = set()
    for name, shift, width in zip(names, shifts, widths):
        idx = va >> shift & ((1 << width) - 1)
        entry_addr = table + idx * esize
        lvl = Level(D.ENTRY_NAMES[name], table, idx, entry_addr)
        res.levels.append(lvl)
        # A table met again lower in the same walk is a recursive (self-referencing) entry, like
        # Xen's linear page-table slot. The CPU simply uses it as a lower-level table; so do we,
        # and say so. Only enumeration refuses to descend into it (it would list tables as pages).
        lvl.recursive = table in seen
        seen.add(table)
        try:
            value = target.read_entry(entry_addr, esize)
        except NotInDump:
            res.stop, res.stop_level = "not-in-dump", lvl.name
            return res
        lvl.entry = value
        lvl.decoded = D.decode_entry(value, mode, name, paging.nxe, paging.maxphyaddr, paging.cr4)
        if not value & 1:
            res.stop, res.stop_level = "not-present", lvl.name
            return res
        if lvl.decoded["reserved"]:
            res.stop, res.stop_level = "reserved", lvl.name
            return res
        if not (mode == "pae" and name == "PDPT"):      # PAE PDPTEs carry no rights
            rw &= bool(value & 2)
            us &= bool(value & 4)
            nx |= paging.nxe and bool(value >> 63 & 1) and esize == 8
        if lvl.decoded["leaf"]:
            size = 1 << shift
            res.pa = lvl.decoded["addr"] + (va & (size - 1))
            res.page_size = size
            res.writable, res.user, res.nx = rw, us, nx
            return res
        table = lvl.decoded["addr"]
    raise AssertionError("walk fell off the last level")


def translate(target, paging, va):
    """Physical address of ``va`` or raise :class:`XenscopeError` saying where the walk stopped."""
    w = walk(target, paging, va)
    if w.pa is None:
        raise XenscopeError(f"va {va:#x} does not translate: {w.describe_stop()}")
    return w.pa


def read_virt(target, va, size, root, mode, nxe=True):
    """Read ``size`` bytes of virtual memory, page by page, through the tables at ``root``."""
    paging = root if isinstance(root, Paging) else Paging(mode, root, nxe)
    out = bytearray()
    while size > 0:
        pa = translate(target, paging, va)
        n = min(size, 0x1000 - (va & 0xFFF))
        out += target.read_phys(pa, n)
        va += n
        size -= n
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# Enumeration
# ---------------------------------------------------------------------------------------------

@dataclass
class Mappings:
    """Every mapped page of an address space, as parallel numpy arrays sorted by ``va``.

    ``va``, ``pa``, ``size``, ``entry`` (the leaf entry) are uint64; ``rw``, ``us``, ``nx`` are the
    effective rights (bool). ``problems`` lists ``(va_start, va_end, entry name, stop reason,
    entry value or None)`` for the ranges the CPU could not walk: reserved bits, tables missing from
    the dump, loops.
    """
    mode: str
    va: np.ndarray
    pa: np.ndarray
    size: np.ndarray
    entry: np.ndarray
    rw: np.ndarray
    us: np.ndarray
    nx: np.ndarray
    problems: list
    tables: int = 0

    def __len__(self):
        return len(self.va)


TABLE_CHUNK = 4096               # tables decoded together (16 MiB of entries at most)


def _reserved_mask(paging, level, large):
    """Reserved-bit mask of a present entry at ``level`` (a large page or a table pointer)."""
    esize = _GEOMETRY[paging.mode][0]
    probe = ((1 << 64) - 1 if esize == 8 else (1 << 32) - 1) | 1
    probe = probe | 0x80 if large else probe & ~0x80
    mask = D.reserved_bits(probe, paging.mode, level, paging.nxe, paging.maxphyaddr, paging.cr4)
    if not large and level in ("PML5", "PML4"):
        mask |= 0x80            # PS is reserved there: such an entry is never a table pointer
    return mask


def _bit(arr, n):
    import numpy as np
    return ((arr >> np.uint64(n)) & np.uint64(1)).astype(bool)


def enumerate_mappings(target, paging, va_start=0, va_end=None):
    """List every mapped page whose span meets ``[va_start, va_end)`` (canonical addresses).

    Level by level, the tables of a level are read whole (one read each) and decoded together as
    one numpy array, in chunks of :data:`TABLE_CHUNK` tables: no Python loop per entry. Tables
    are bounded by :data:`MAX_TABLES`; a table found among its own ancestors (a recursive entry)
    is reported as a ``loop`` problem and not entered again.
    """
    import numpy as np          # imported here so that loading the commands (gdb start-up) stays cheap
    mode = paging.mode
    esize, shifts, widths, bits = _GEOMETRY[mode]
    names = D.LEVELS[mode]
    if va_end is None or va_end > 1 << 64:
        va_end = 1 << 64
    dtype = np.dtype("<u4") if esize == 4 else np.dtype("<u8")
    fmask = D.frame_mask(mode, paging.maxphyaddr)
    sign = np.uint64(1 << (bits - 1)) if bits > 32 else None
    ext = np.uint64(((1 << 64) - 1) & ~((1 << bits) - 1)) if bits > 32 else None
    out = []
    problems = []
    ntables = 0

    # items of the current level: table pa, raw va base, inherited rights, ancestor tables
    items = (np.array([paging.root], np.uint64), np.zeros(1, np.uint64), np.ones(1, bool),
             np.ones(1, bool), np.zeros(1, bool), np.zeros((1, 0), np.uint64))
    for li, name in enumerate(names):
        shift, n = shifts[li], 1 << widths[li]
        span = 1 << shift
        ename = D.ENTRY_NAMES[name]
        leaf_level = name == "PT"
        can_be_large = (name == "PD" and not (mode == "2level" and not paging.cr4 & D.CR4_PSE)) or \
                       (name == "PDPT" and mode in ("4level", "5level"))
        rsv_tab = np.uint64(_reserved_mask(paging, name, False))
        rsv_big = np.uint64(_reserved_mask(paging, name, True)) if can_be_large or leaf_level else None
        nxt = []
        tabs_all, base_all, rw_all, us_all, nx_all, anc_all = items
        for c0 in range(0, len(tabs_all), TABLE_CHUNK):
            sl = slice(c0, c0 + TABLE_CHUNK)
            tabs, base, rw, us, nx, anc = (tabs_all[sl], base_all[sl], rw_all[sl], us_all[sl],
                                           nx_all[sl], anc_all[sl])
            raws, keep = [], []
            for k, tpa in enumerate(tabs.tolist()):
                lo = int(base[k])
                if tpa in anc[k].tolist():
                    prev = D.ENTRY_NAMES[names[li - 1]]
                    problems.append((_va_of(mode, lo), _va_of(mode, lo + n * span - 1) + 1, prev, "loop", None))
                    continue
                ntables += 1
                if ntables > MAX_TABLES:
                    raise XenscopeError(f"more than {MAX_TABLES} page tables: the tables are absurd or loop")
                try:
                    raws.append(target.read_phys(tpa, n * esize) if n * esize < 4096 else target.read_table(tpa))
                except NotInDump:
                    problems.append((_va_of(mode, lo), _va_of(mode, lo + n * span - 1) + 1, ename, "not-in-dump", None))
                    continue
                keep.append(k)
            if not keep:
                continue
            keep = np.array(keep)
            tabs, base, rw, us, nx, anc = tabs[keep], base[keep], rw[keep], us[keep], nx[keep], anc[keep]
            arr = np.frombuffer(b"".join(raws), dtype=dtype).astype(np.uint64).reshape(len(keep), n)
            vas = base[:, None] + (np.arange(n, dtype=np.uint64) << np.uint64(shift))[None, :]
            cva = np.where(vas & sign, vas | ext, vas) if bits > 32 else vas
            present = _bit(arr, 0) & (cva + np.uint64(span - 1) >= np.uint64(va_start))
            if va_end < 1 << 64:
                present &= cva < np.uint64(va_end)
            if not present.any():
                continue
            if mode == "pae" and name == "PDPT":            # PAE PDPTEs carry no rights
                e_rw = np.repeat(rw[:, None], n, 1)
                e_us = np.repeat(us[:, None], n, 1)
                e_nx = np.repeat(nx[:, None], n, 1)
            else:
                e_rw = rw[:, None] & _bit(arr, 1)
                e_us = us[:, None] & _bit(arr, 2)
                e_nx = nx[:, None] | (_bit(arr, 63) & paging.nxe) if esize == 8 else np.repeat(nx[:, None], n, 1)
            if leaf_level:
                large = present
            elif can_be_large:
                large = present & _bit(arr, 7)
            else:
                large = np.zeros_like(present)
            bad = present & ~large & ((arr & rsv_tab) != 0)
            if rsv_big is not None:
                bad |= large & ((arr & rsv_big) != 0)
            if bad.any():
                for r, c in zip(*np.nonzero(bad)):
                    problems.append((int(cva[r, c]), int(cva[r, c]) + span, ename, "reserved", int(arr[r, c])))
            leaf = large & ~bad
            if leaf.any():
                ent = arr[leaf]
                if mode == "2level" and name == "PD":
                    pa = (ent & np.uint64(0xFFC00000)) | (((ent >> np.uint64(13)) & np.uint64(0xFF)) << np.uint64(32))
                else:
                    pa = ent & np.uint64(fmask & ~(span - 1))
                out.append((cva[leaf], pa, np.full(len(ent), span, np.uint64), ent,
                            e_rw[leaf], e_us[leaf], e_nx[leaf]))
            down = present & ~large & ~bad
            if down.any() and li + 1 < len(names):
                r, c = np.nonzero(down)
                nxt.append((arr[r, c] & np.uint64(fmask), vas[r, c], e_rw[r, c], e_us[r, c], e_nx[r, c],
                            np.concatenate([anc[r], tabs[r][:, None]], axis=1)))
        if not nxt:
            break
        items = tuple(np.concatenate([x[k] for x in nxt]) for k in range(6))

    if out:
        cols = [np.concatenate([c[k] for c in out]) for k in range(7)]
        order = np.argsort(cols[0], kind="stable")       # runs are already sorted per level
        cols = [c[order] for c in cols]
    else:
        cols = [np.zeros(0, np.uint64)] * 4 + [np.zeros(0, bool)] * 3
    problems.sort(key=lambda p: p[0])
    return Mappings(mode, *cols, problems=problems, tables=ntables)


def _va_of(mode, va):
    return canonical(va, mode) if _GEOMETRY[mode][3] > 32 else va


@dataclass
class Range:
    va_start: int
    va_end: int               # exclusive
    pa_start: Optional[int]   # None when the range is not physically contiguous (ignore_pa=True)
    pages: int
    writable: bool
    user: bool
    nx: bool


@dataclass
class Ranges:
    """Coalesced ranges as parallel numpy arrays; iterating yields :class:`Range` objects."""
    va_start: np.ndarray
    va_end: np.ndarray        # exclusive; 0 means 2**64 (a range reaching the top of memory)
    pa_start: np.ndarray
    pa_contiguous: np.ndarray
    pages: np.ndarray
    rw: np.ndarray
    us: np.ndarray
    nx: np.ndarray

    def __len__(self):
        return len(self.va_start)

    def __iter__(self):
        cols = (self.va_start.tolist(), self.va_end.tolist(), self.pa_start.tolist(),
                self.pa_contiguous.tolist(), self.pages.tolist(), self.rw.tolist(), self.us.tolist(),
                self.nx.tolist())
        for vs, ve, pa, contig, pages, w, u, x in zip(*cols):
            yield Range(vs, ve or 1 << 64, pa if contig else None, pages, w, u, x)


def coalesce(m, ignore_pa=False):
    """Merge virtually contiguous pages of equal rights, and contiguous ``pa`` unless
    ``ignore_pa`` (which is how QEMU's ``info mem`` merges), into :class:`Ranges`."""
    import numpy as np
    n = len(m)
    brk = np.ones(n, bool)
    pa_step = np.zeros(n, bool)
    if n > 1:
        pa_step[1:] = m.pa[1:] != m.pa[:-1] + m.size[:-1]
        same = (m.va[1:] == m.va[:-1] + m.size[:-1]) & (m.rw[1:] == m.rw[:-1]) & \
               (m.us[1:] == m.us[:-1]) & (m.nx[1:] == m.nx[:-1])
        if not ignore_pa:
            same &= ~pa_step[1:]
        brk[1:] = ~same
    starts = np.nonzero(brk)[0]
    last = np.append(starts[1:], n) - 1
    cum = np.cumsum(pa_step)
    return Ranges(m.va[starts], m.va[last] + m.size[last], m.pa[starts],
                  cum[last] == cum[starts], last - starts + 1, m.rw[starts], m.us[starts], m.nx[starts])
