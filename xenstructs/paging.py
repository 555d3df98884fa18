"""x86 page-table walks in every mode (2-level, PAE, 4-level, 5-level), as the CPU does them.

:func:`walk` translates one virtual address and keeps every level; :func:`enumerate_mappings`
lists an address space by reading whole tables with numpy (QEMU ``info tlb`` style pages), and
:func:`coalesce` merges them into ranges (``info mem`` style). Addresses are named by space:
``va`` (virtual), ``pa`` (physical in the target; machine memory for a Xen host dump).

Where a walk stops it says why (:data:`STOP_REASONS`). A hole in the dump (``not-in-dump``) is never
reported as ``not-present``.
"""

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

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


def _va_of(mode, va):
    return canonical(va, mode) if _GEOMETRY[mode][3] > 32 else va


def enumerate_mappings(target, paging, va_start=0, va_end=None):
    """List every mapped page whose start is in ``[va_start, va_end)`` (canonical addresses).

    Reads whole tables (one read per table) and decodes each with numpy; Python loops only over
    present non-leaf entries. Tables are bounded by :data:`MAX_TABLES`; a table found among its own
    ancestors is reported as a loop and not entered again.
    """
    mode = paging.mode
    esize, shifts, widths, bits = _GEOMETRY[mode]
    if va_end is None:
        va_end = 1 << 64 if bits > 32 else 1 << 32
    names = D.LEVELS[mode]
    dtype = np.dtype("<u4") if esize == 4 else np.dtype("<u8")
    fmask = D.frame_mask(mode, paging.maxphyaddr)
    chunks = []
    problems = []
    state = {"tables": 0}
    low_mask = (1 << bits) - 1

    def rsv_mask(level, large):
        """Reserved-bit mask of a present entry at ``level`` (large page or table pointer)."""
        probe = ((1 << 64) - 1 if esize == 8 else (1 << 32) - 1) | 1
        probe = probe | 0x80 if large else probe & ~0x80
        mask = D.reserved_bits(probe, mode, level, paging.nxe, paging.maxphyaddr, paging.cr4)
        if not large and level in ("PML5", "PML4"):
            mask |= 0x80        # PS is reserved there: an entry with it set is never a table pointer
        return mask

    def read_table(table_pa, level_i):
        n = 1 << widths[level_i]
        raw = target.read_phys(table_pa, n * esize) if n * esize < 4096 else target.read_table(table_pa)
        return np.frombuffer(raw, dtype=dtype).astype(np.uint64)

    def visit(table_pa, level_i, va_base, rw, us, nx, ancestors):
        name = names[level_i]
        shift = shifts[level_i]
        span = 1 << shift
        nentries = 1 << widths[level_i]
        lo_va = canonical(va_base, mode) if bits > 32 else va_base
        hi_va = _va_of(mode, va_base + nentries * span - 1)
        if hi_va < va_start or lo_va >= va_end:
            return
        if table_pa in ancestors:
            # named after the entry that points back up (the recursive entry), one level above
            problems.append((lo_va, hi_va + 1, D.ENTRY_NAMES[names[level_i - 1]], "loop", None))
            return
        state["tables"] += 1
        if state["tables"] > MAX_TABLES:
            raise XenscopeError(f"more than {MAX_TABLES} page tables: the tables are absurd or loop")
        try:
            arr = read_table(table_pa, level_i)
        except NotInDump:
            problems.append((lo_va, hi_va + 1, D.ENTRY_NAMES[name], "not-in-dump", None))
            return
        idx = np.arange(nentries, dtype=np.uint64)
        present = (arr & np.uint64(1)).astype(bool)
        # restrict to the requested VA window
        vas = np.uint64(va_base) + (idx << np.uint64(shift))
        if bits > 32:
            sign = np.uint64(1 << (bits - 1))
            ext = np.uint64(((1 << 64) - 1) & ~low_mask)
            vas = np.where(vas & sign, vas | ext, vas)
        ends = vas + np.uint64(span - 1)
        present &= ends >= np.uint64(va_start)
        if va_end < 1 << 64:
            present &= vas < np.uint64(va_end)
        if not present.any():
            return
        if mode == "pae" and name == "PDPT":
            e_rw = np.full(nentries, rw)
            e_us = np.full(nentries, us)
            e_nx = np.full(nentries, nx)
        else:
            e_rw = rw & ((arr >> np.uint64(1)) & np.uint64(1)).astype(bool)
            e_us = us & ((arr >> np.uint64(2)) & np.uint64(1)).astype(bool)
            e_nx = nx | ((((arr >> np.uint64(63)) & np.uint64(1)).astype(bool)) & paging.nxe
                         if esize == 8 else np.zeros(nentries, bool))
        is_ps = ((arr >> np.uint64(7)) & np.uint64(1)).astype(bool)
        if name == "PT":
            large = np.zeros(nentries, bool)
            leaf = present
        elif name == "PD" and not (mode == "2level" and not paging.cr4 & D.CR4_PSE):
            large = present & is_ps
            leaf = large
        elif name == "PDPT" and mode in ("4level", "5level"):
            large = present & is_ps
            leaf = large
        else:
            large = np.zeros(nentries, bool)
            leaf = np.zeros(nentries, bool)
        # reserved bits: vectorised for the regular masks; 2-level PSE handled by the same mask
        rsv_leaf = np.uint64(rsv_mask(name, True)) if leaf.any() and name != "PT" else None
        rsv_tab = np.uint64(rsv_mask(name, False))
        bad = np.zeros(nentries, bool)
        bad |= present & ~large & ((arr & rsv_tab) != 0)
        if rsv_leaf is not None:
            bad |= large & ((arr & rsv_leaf) != 0)
        if bad.any():
            for i in np.nonzero(bad)[0]:
                problems.append((int(vas[i]), int(vas[i]) + span, D.ENTRY_NAMES[name], "reserved", int(arr[i])))
        good_leaf = leaf & ~bad
        if good_leaf.any():
            sel = np.nonzero(good_leaf)[0]
            ent = arr[sel]
            if mode == "2level" and name == "PD":
                pa = (ent & np.uint64(0xFFC00000)) | (((ent >> np.uint64(13)) & np.uint64(0xFF)) << np.uint64(32))
            else:
                pa = ent & np.uint64(fmask & ~(span - 1))
            chunks.append((vas[sel], pa, np.full(len(sel), span, np.uint64), ent,
                           e_rw[sel], e_us[sel], e_nx[sel]))
        if level_i + 1 < len(names):
            down = present & ~leaf & ~bad
            if down.any():
                anc = ancestors | {table_pa}
                for i in np.nonzero(down)[0]:
                    nxt = int(arr[i]) & fmask
                    visit(nxt, level_i + 1, (va_base + (int(i) << shift)) & low_mask if bits > 32 else va_base + (int(i) << shift),
                          bool(e_rw[i]), bool(e_us[i]), bool(e_nx[i]), anc)

    visit(paging.root, 0, 0, True, True, False, frozenset())
    if chunks:
        cols = [np.concatenate([c[k] for c in chunks]) for k in range(7)]
    else:
        cols = [np.zeros(0, np.uint64)] * 4 + [np.zeros(0, bool)] * 3
    order = np.argsort(cols[0], kind="stable")
    cols = [c[order] for c in cols]
    problems.sort(key=lambda p: p[0])
    return Mappings(mode, *cols, problems=problems, tables=state["tables"])


@dataclass
class Range:
    va_start: int
    va_end: int          # exclusive
    pa_start: Optional[int]   # None when the range is not physically contiguous (ignore_pa=True)
    pages: int
    writable: bool
    user: bool
    nx: bool


def coalesce(m, ignore_pa=False):
    """Merge virtually contiguous pages of equal rights (and contiguous ``pa`` unless
    ``ignore_pa``, which is how QEMU's ``info mem`` merges) into :class:`Range` objects."""
    n = len(m)
    if n == 0:
        return []
    brk = np.ones(n, bool)
    if n > 1:
        contiguous = m.va[1:] == m.va[:-1] + m.size[:-1]
        same = (m.rw[1:] == m.rw[:-1]) & (m.us[1:] == m.us[:-1]) & (m.nx[1:] == m.nx[:-1])
        if not ignore_pa:
            contiguous &= m.pa[1:] == m.pa[:-1] + m.size[:-1]
        brk[1:] = ~(contiguous & same)
    starts = np.nonzero(brk)[0]
    ends = np.append(starts[1:], n)
    last = ends - 1
    va_end = m.va[last] + m.size[last]
    pa_contig = None
    if ignore_pa and n > 1:
        step = np.zeros(n, bool)
        step[1:] = m.pa[1:] != m.pa[:-1] + m.size[:-1]
        cum = np.cumsum(step)
        pa_contig = cum[last] == cum[starts]
    out = []
    for k, (s, e) in enumerate(zip(starts.tolist(), va_end.tolist())):
        pa = int(m.pa[s])
        if pa_contig is not None and not pa_contig[k]:
            pa = None
        out.append(Range(int(m.va[s]), int(e) & ((1 << 64) - 1) or (1 << 64), pa,
                         int(ends[k] - s), bool(m.rw[s]), bool(m.us[s]), bool(m.nx[s])))
    return out
