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
from typing import TYPE_CHECKING, List, Optional

if TYPE_CHECKING:                # annotations only: numpy is imported where it is used
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
        # 32 bits on hardware; a 32-bit PV guest's (decoded) CR3 can name an L3 above 4 GiB
        return cr3 & 0x000FFFFFFFFFFFE0
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
    recursive: bool = False      # this table already appeared higher up in the same walk
    warning: Optional[str] = None
    paging: Optional["Paging"] = field(default=None, repr=False, compare=False)

    @property
    def decoded(self):
        """:func:`~xenstructs.decode.decode_entry` of the entry (computed on first use), or None."""
        if self.entry is None or self.paging is None:
            return None
        d = self.__dict__.get("_decoded")
        if d is None:
            pg = self.paging
            d = D.decode_entry(self.entry, pg.mode, self.name, pg.nxe, pg.maxphyaddr, pg.cr4)
            self.__dict__["_decoded"] = d
        return d


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
        lvl.paging = paging             # the full decode is made only when someone asks for it
        if not value & 1:
            res.stop, res.stop_level = "not-present", lvl.name
            return res
        if D.reserved_bits(value, mode, name, paging.nxe, paging.maxphyaddr, paging.cr4):
            res.stop, res.stop_level = "reserved", lvl.name
            return res
        if mode == "pae" and name == "PDPT":              # PAE PDPTEs carry no rights
            load_rsv = D.cr3_load_reserved_bits(value, mode, name)
            if load_rsv:
                lvl.warning = (f"bits {load_rsv:#x} are reserved in a PAE PDPTE: loading this CR3 "
                               "would raise #GP (QEMU's TCG sets A, bit 5, itself)")
        else:
            rw &= bool(value & 2)
            us &= bool(value & 4)
            nx |= paging.nxe and bool(value >> 63 & 1) and esize == 8
        large = D.is_large(value, mode, name, paging.cr4)
        addr = D.entry_address(value, mode, name, large, paging.maxphyaddr)
        if large or name == "PT":
            size = 1 << shift
            res.pa = addr + (va & (size - 1))
            res.page_size = size
            res.writable, res.user, res.nx = rw, us, nx
            return res
        table = addr
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


def coalesce(m, ignore_pa=False, ignore_nx=False):
    """Merge virtually contiguous pages of equal rights into :class:`Ranges`.

    Pages merge when their ``pa`` are contiguous too, unless ``ignore_pa``; their NX must be equal
    unless ``ignore_nx``. QEMU's ``info mem`` merges with both (user and write rights only)."""
    import numpy as np
    n = len(m)
    brk = np.ones(n, bool)
    pa_step = np.zeros(n, bool)
    if n > 1:
        pa_step[1:] = m.pa[1:] != m.pa[:-1] + m.size[:-1]
        same = (m.va[1:] == m.va[:-1] + m.size[:-1]) & (m.rw[1:] == m.rw[:-1]) & \
               (m.us[1:] == m.us[:-1])
        if not ignore_nx:
            same &= m.nx[1:] == m.nx[:-1]
        if not ignore_pa:
            same &= ~pa_step[1:]
        brk[1:] = ~same
    starts = np.nonzero(brk)[0]
    if n == 0:                           # nothing mapped (e.g. a --range over a hole)
        e = m.va[:0]
        return Ranges(e, e, m.pa[:0], np.zeros(0, bool), np.zeros(0, np.int64), m.rw[:0], m.us[:0], m.nx[:0])
    last = np.append(starts[1:], n) - 1
    cum = np.cumsum(pa_step)
    return Ranges(m.va[starts], m.va[last] + m.size[last], m.pa[starts],
                  cum[last] == cum[starts], last - starts + 1, m.rw[starts], m.us[starts], m.nx[starts])


# ---------------------------------------------------------------------------------------------
# Many translations at once
# ---------------------------------------------------------------------------------------------

# Stop reasons of :func:`translate_many` as small integers (0: the address translated).
STOP_CODES = (None, "not-present", "reserved", "not-in-dump", "non-canonical", "out-of-range")
_STOP_CODE = {name: i for i, name in enumerate(STOP_CODES)}
TRANSLATE_CHUNK = 1 << 20        # addresses translated together (bounds the temporary arrays)
PAGE = 4096


@dataclass
class Translations:
    """Results of :func:`translate_many` as parallel numpy arrays, one element per address.

    ``pa`` and ``page_size`` (uint64) are 0 where ``ok`` is False; ``rw``, ``us``, ``nx`` are the
    effective rights (as :class:`Walk` has them) and False on failures. ``stop`` holds an index
    into :data:`STOP_CODES` (0 when ``ok``) and ``stop_level`` the index of the level in
    ``decode.LEVELS[mode]`` where the walk stopped (-1 when it stopped before reading any entry,
    or did not stop).
    """
    mode: str
    va: np.ndarray
    pa: np.ndarray
    page_size: np.ndarray
    ok: np.ndarray
    rw: np.ndarray
    us: np.ndarray
    nx: np.ndarray
    stop: np.ndarray
    stop_level: np.ndarray

    def __len__(self):
        return len(self.va)

    def stop_name(self, i):
        """``walk(...).stop`` of element ``i`` (a key of :data:`STOP_REASONS`, or None)."""
        return STOP_CODES[int(self.stop[i])]

    def stop_level_name(self, i):
        """``walk(...).stop_level`` of element ``i`` (``"PDE"``...), or None."""
        lv = int(self.stop_level[i])
        return D.ENTRY_NAMES[D.LEVELS[self.mode][lv]] if lv >= 0 else None


def _read_entries(target, eaddr, esize):
    """Entries at physical addresses ``eaddr`` (uint64 array): ``(values, missing mask)``.

    Each distinct 4 KiB page is read once through ``target.read_table`` (cached on slow hosts, a
    slice of the mmap on files) and the entries gathered with numpy, :data:`TABLE_CHUNK` pages at
    a time. Entries of pages that cannot be read whole (a hole, or a page only partly held) and
    entries that are not naturally aligned are read one by one with ``target.read_entry``, exactly
    as :func:`walk` reads them, so a partly held page behaves as it does there.
    """
    import numpy as np
    n = len(eaddr)
    vals = np.zeros(n, np.uint64)
    missing = np.zeros(n, bool)
    dtype = np.dtype("<u4") if esize == 4 else np.dtype("<u8")
    nent = PAGE // esize
    aligned = (eaddr & np.uint64(esize - 1)) == 0
    single = np.nonzero(~aligned)[0]
    sel_all = np.nonzero(aligned)[0] if len(single) else None
    ea = eaddr if sel_all is None else eaddr[sel_all]
    pages, inv = np.unique(ea >> np.uint64(12), return_inverse=True)
    inv = inv.ravel()
    off = ((ea & np.uint64(0xFFF)) // np.uint64(esize)).astype(np.intp)
    order = np.argsort(inv, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(inv, minlength=len(pages)))])
    zero = bytes(PAGE)
    bad_pages = []
    for b0 in range(0, len(pages), TABLE_CHUNK):
        raws = []
        for k, page in enumerate(pages[b0:b0 + TABLE_CHUNK].tolist(), b0):
            try:
                raws.append(target.read_table(page << 12))
            except NotInDump:
                raws.append(zero)
                bad_pages.append(k)
        buf = np.frombuffer(b"".join(raws), dtype=dtype).reshape(len(raws), nent)
        sel = order[bounds[b0]:bounds[min(b0 + TABLE_CHUNK, len(pages))]]
        got = buf[inv[sel] - b0, off[sel]]
        vals[sel if sel_all is None else sel_all[sel]] = got
    if bad_pages:
        idx = np.concatenate([order[bounds[k]:bounds[k + 1]] for k in bad_pages])
        single = np.concatenate([single, idx if sel_all is None else sel_all[idx]])
    if len(single):
        uniq, uinv = np.unique(eaddr[single], return_inverse=True)
        uvals = np.zeros(len(uniq), np.uint64)
        umiss = np.zeros(len(uniq), bool)
        for k, a in enumerate(uniq.tolist()):
            try:
                uvals[k] = target.read_entry(a, esize)
            except NotInDump:
                umiss[k] = True
        vals[single] = uvals[uinv.ravel()]
        missing[single] = umiss[uinv.ravel()]
    return vals, missing



def translate_many(target, paging, vas, chunk=None):
    """Translate many virtual addresses at once; element ``i`` answers as ``walk(target, paging,
    vas[i])`` does (``pa``, ``page_size``, rights, ``stop`` and ``stop_level``).

    Level by level for all addresses together: entry addresses are computed with numpy, each
    distinct table page is read once (:func:`_read_entries`) and the rules of :func:`walk` are
    applied to whole arrays (present bit, reserved bits with the masks :func:`enumerate_mappings`
    uses, large pages in PDs and 64-bit PDPTs, PSE-36, PAE PDPTEs without rights, canonical
    form). Addresses are processed :data:`TRANSLATE_CHUNK` at a time, so memory stays bounded.

    :param vas: integers or a numpy array (taken as uint64)
    :return: :class:`Translations`
    """
    import numpy as np
    if isinstance(vas, (list, tuple, range)):
        vas = np.fromiter(vas, dtype=np.uint64, count=len(vas))
    vas = np.ascontiguousarray(np.asarray(vas, dtype=np.uint64).ravel())
    n = len(vas)
    chunk = chunk or TRANSLATE_CHUNK
    res = Translations(paging.mode, vas, np.zeros(n, np.uint64), np.zeros(n, np.uint64),
                       np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool),
                       np.zeros(n, np.uint8), np.full(n, -1, np.int8))
    for c0 in range(0, n, chunk):
        _translate_chunk(target, paging, vas, res, c0, min(n, c0 + chunk))
    return res


def _translate_chunk(target, paging, vas, res, c0, c1):
    import numpy as np
    u64 = np.uint64
    mode = paging.mode
    esize, shifts, widths, bits = _GEOMETRY[mode]
    names = D.LEVELS[mode]
    fmask = u64(D.frame_mask(mode, paging.maxphyaddr))
    va = vas[c0:c1]
    idx = np.arange(c0, c1)
    if bits == 32:
        bad = va >> u64(32) != 0
        res.stop[idx[bad]] = _STOP_CODE["out-of-range"]
    else:
        low = va & u64((1 << bits) - 1)
        sign = (low >> u64(bits - 1)) & u64(1) != 0
        ext = np.where(sign, low | u64(((1 << 64) - 1) & ~((1 << bits) - 1)), low)
        bad = ext != va
        res.stop[idx[bad]] = _STOP_CODE["non-canonical"]
    keep = ~bad
    idx, va = idx[keep], va[keep]
    table = np.full(len(idx), paging.root, np.uint64)
    rw = np.ones(len(idx), bool)
    us = np.ones(len(idx), bool)
    nx = np.zeros(len(idx), bool)
    for li, (name, shift, width) in enumerate(zip(names, shifts, widths)):
        if not len(idx):
            return
        eaddr = table + ((va >> u64(shift)) & u64((1 << width) - 1)) * u64(esize)
        val, missing = _read_entries(target, eaddr, esize)
        present = (val & u64(1)) != 0
        can_be_large = (name == "PD" and not (mode == "2level" and not paging.cr4 & D.CR4_PSE)) or \
                       (name == "PDPT" and mode in ("4level", "5level"))
        large = present & ((val & u64(0x80)) != 0) if can_be_large else np.zeros(len(idx), bool)
        rsv = np.where(large, u64(_reserved_mask(paging, name, True)),
                       u64(_reserved_mask(paging, name, False)))
        reserved = present & ((val & rsv) != 0)
        stop = np.zeros(len(idx), np.uint8)
        stop[~present] = _STOP_CODE["not-present"]
        stop[reserved] = _STOP_CODE["reserved"]
        stop[missing] = _STOP_CODE["not-in-dump"]
        failed = stop != 0
        res.stop[idx[failed]] = stop[failed]
        res.stop_level[idx[failed]] = li
        if not (mode == "pae" and name == "PDPT"):      # PAE PDPTEs carry no rights
            rw &= (val & u64(2)) != 0
            us &= (val & u64(4)) != 0
            if esize == 8 and paging.nxe:
                nx |= (val >> u64(63)) != 0
        leaf = ~failed & (large if name != "PT" else True)
        if np.any(leaf):
            span = 1 << shift
            v = val[leaf]
            if mode == "2level" and name == "PD":
                base = (v & u64(0xFFC00000)) | (((v >> u64(13)) & u64(0xFF)) << u64(32))
            else:
                base = v & u64(int(fmask) & ~(span - 1))
            li_idx = idx[leaf]
            res.pa[li_idx] = base + (va[leaf] & u64(span - 1))
            res.page_size[li_idx] = span
            res.ok[li_idx] = True
            res.rw[li_idx], res.us[li_idx], res.nx[li_idx] = rw[leaf], us[leaf], nx[leaf]
        down = ~failed & ~leaf
        idx, va, rw, us, nx = idx[down], va[down], rw[down], us[down], nx[down]
        table = val[down] & fmask
    if len(idx):
        raise AssertionError("translation fell off the last level")
