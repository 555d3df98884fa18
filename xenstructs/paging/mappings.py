"""An address space listed by reading whole tables with numpy (QEMU ``info tlb`` style pages,
:func:`enumerate_mappings`) and merged into ranges (``info mem`` style, :func:`coalesce`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:                # annotations only: numpy is imported where it is used
    import numpy as np

from .. import decode
from ..errors import NotInDump
from .model import (GEOMETRY, MAPPINGS_PER_PAGE, MAX_MAPPINGS_FIXED, MAX_MAPPINGS_LIVE, MAX_TABLES,
                    SHARED_ALLOWANCE, TABLE_CHUNK, canonical, reserved_mask)


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


def _bit(arr, n):
    import numpy as np
    return ((arr >> np.uint64(n)) & np.uint64(1)).astype(bool)


def mapping_limit(target):
    """How many pages one enumeration may list at most: :data:`MAX_MAPPINGS_FIXED`, or
    :data:`MAPPINGS_PER_PAGE` per 4 KiB page of memory the target holds when that is more,
    :data:`MAX_MAPPINGS_LIVE` when the target has no memory map (live stubs). Within it, an
    enumeration also stops past 512 pages per distinct table read plus :data:`SHARED_ALLOWANCE` and
    two per page the dump holds (a tree of tables has at most one leaf per entry; shared tables go
    past it: a real PV kernel's P2M area, or a hostile DAG of a few tables multiplying its mappings)."""
    held = target.held_bytes()
    if held is None:
        return MAX_MAPPINGS_LIVE
    return max(MAX_MAPPINGS_FIXED, MAPPINGS_PER_PAGE * (held >> 12))


def enumerate_mappings(target, paging, va_start=0, va_end=None, max_mappings=None):
    """List every mapped page whose span meets ``[va_start, va_end)`` (canonical addresses).

    Level by level, the tables of a level are read whole (one read each) and decoded together as
    one numpy array, in chunks of :data:`TABLE_CHUNK` tables: no Python loop per entry. A table
    found among its own ancestors (a recursive entry) is reported as a ``loop`` problem and not
    entered again. Work is bounded as it goes: at most :data:`MAX_TABLES` table reads (counted
    before the next level's arrays are built) and ``max_mappings`` pages (default
    :func:`mapping_limit`); past either, enumeration stops with a ``too-many-mappings`` problem
    (tables shared by many entries make a DAG whose mappings multiply) and returns what it has.
    """
    return _Enumeration(target, paging, va_start, va_end,
                        mapping_limit(target) if max_mappings is None else max_mappings).run()


class _Enumeration:
    """One bounded breadth-first enumeration (see :func:`enumerate_mappings`)."""

    def __init__(self, target, paging, va_start, va_end, max_mappings):
        import numpy as np          # imported here so that loading the commands (gdb start-up) stays cheap
        self.t, self.paging, self.mode = target, paging, paging.mode
        self.esize, self.shifts, self.widths, self.bits = GEOMETRY[self.mode]
        self.names = decode.LEVELS[self.mode]
        self.va_start = va_start
        self.va_end = 1 << 64 if va_end is None or va_end > 1 << 64 else va_end
        self.dtype = np.dtype("<u4") if self.esize == 4 else np.dtype("<u8")
        self.fmask = decode.frame_mask(self.mode, paging.maxphyaddr)
        bits = self.bits
        self.sign = np.uint64(1 << (bits - 1)) if bits > 32 else None
        self.ext = np.uint64(((1 << 64) - 1) & ~((1 << bits) - 1)) if bits > 32 else None
        self.max_mappings = max(0, max_mappings)
        self.out, self.problems = [], []
        self.ntables = self.nmaps = self.pending = 0
        self.distinct = set()            # table addresses read: a tree has at most 512 leaves per table
        held = target.held_bytes()
        # shared tables are real too (Linux PV maps its P2M area's holes through shared
        # p2m_mid_missing tables): allow two mappings per page the dump holds beyond the tree's
        self.shared_room = SHARED_ALLOWANCE + (2 * (held >> 12) if held is not None else MAX_MAPPINGS_LIVE)
        self.stopped = False

    def run(self):
        import numpy as np
        # items of the current level: table pa, raw va base, inherited rights, ancestor tables
        items = (np.array([self.paging.root], np.uint64), np.zeros(1, np.uint64), np.ones(1, bool),
                 np.ones(1, bool), np.zeros(1, bool), np.zeros((1, 0), np.uint64))
        for li in range(len(self.names)):
            items = self._level(li, items)
            if items is None or self.stopped:
                break
        if self.out:
            cols = [np.concatenate([c[k] for c in self.out]) for k in range(7)]
            self.out = None
            order = np.argsort(cols[0], kind="stable")       # runs are already sorted per level
            cols = [c[order] for c in cols]
        else:
            cols = [np.zeros(0, np.uint64)] * 4 + [np.zeros(0, bool)] * 3
        self.problems.sort(key=lambda p: p[0])
        return Mappings(self.mode, *cols, problems=self.problems, tables=self.ntables)

    def _stop(self, va, ename):
        """Too many mappings: record the problem once (from ``va`` to the end of the range)."""
        if not self.stopped:
            self.stopped = True
            self.problems.append((_va_of(self.mode, va), _va_of(self.mode, self.va_end - 1) + 1, ename,
                                  "too-many-mappings", None))

    def _read(self, li, tabs, base, anc):
        """Read a chunk's tables: (raw bytes list, indexes kept); loops and holes become problems."""
        n, span = 1 << self.widths[li], 1 << self.shifts[li]
        ename = decode.ENTRY_NAMES[self.names[li]]
        raws, keep = [], []
        for k, tpa in enumerate(tabs.tolist()):
            lo = int(base[k])
            if tpa in anc[k].tolist():
                prev = decode.ENTRY_NAMES[self.names[li - 1]]
                self.problems.append((_va_of(self.mode, lo), _va_of(self.mode, lo + n * span - 1) + 1, prev,
                                      "loop", None))
                continue
            self.ntables += 1
            self.distinct.add(tpa)
            try:
                raws.append(self.t.read_phys(tpa, n * self.esize) if n * self.esize < 4096
                            else self.t.read_table(tpa))
            except NotInDump:
                self.problems.append((_va_of(self.mode, lo), _va_of(self.mode, lo + n * span - 1) + 1, ename,
                                      "not-in-dump", None))
                continue
            keep.append(k)
        return raws, keep

    def _level(self, li, items):
        """Every table of level ``li``: leaves into ``out``, the next level's items returned."""
        import numpy as np
        nxt = []
        self.pending = 0                 # the next level's tables, counted before they are built
        for c0 in range(0, len(items[0]), TABLE_CHUNK):
            got = self._chunk(li, *(x[c0:c0 + TABLE_CHUNK] for x in items))
            if got is not None:
                nxt.append(got)
            if self.stopped:
                break
        if not nxt or li + 1 >= len(self.names):
            return None
        return tuple(np.concatenate([x[k] for x in nxt]) for k in range(6))

    def _entries(self, li, raws, base):
        """The chunk's entries as a (tables x entries) array, their raw and canonical vas."""
        import numpy as np
        n, shift = 1 << self.widths[li], self.shifts[li]
        arr = np.frombuffer(b"".join(raws), dtype=self.dtype).astype(np.uint64).reshape(len(raws), n)
        vas = base[:, None] + (np.arange(n, dtype=np.uint64) << np.uint64(shift))[None, :]
        cva = np.where(vas & self.sign, vas | self.ext, vas) if self.bits > 32 else vas
        return arr, vas, cva

    def _rights(self, name, arr, rw, us, nx):
        import numpy as np
        n = arr.shape[1]
        if self.mode == "pae" and name == "PDPT":            # PAE PDPTEs carry no rights
            return np.repeat(rw[:, None], n, 1), np.repeat(us[:, None], n, 1), np.repeat(nx[:, None], n, 1)
        e_nx = nx[:, None] | (_bit(arr, 63) & self.paging.nxe) if self.esize == 8 else np.repeat(nx[:, None], n, 1)
        return rw[:, None] & _bit(arr, 1), us[:, None] & _bit(arr, 2), e_nx

    def _chunk(self, li, tabs, base, rw, us, nx, anc):
        """One chunk of tables of level ``li``; returns the next level's items for it (or None)."""
        import numpy as np
        name = self.names[li]
        span = 1 << self.shifts[li]
        ename = decode.ENTRY_NAMES[name]
        leaf_level = name == "PT"
        can_be_large = (name == "PD" and not (self.mode == "2level" and not self.paging.cr4 & decode.CR4_PSE)) or \
                       (name == "PDPT" and self.mode in ("4level", "5level"))
        raws, keep = self._read(li, tabs, base, anc)
        if not keep:
            return None
        keep = np.array(keep)
        tabs, base, rw, us, nx, anc = tabs[keep], base[keep], rw[keep], us[keep], nx[keep], anc[keep]
        arr, vas, cva = self._entries(li, raws, base)
        del raws
        present = _bit(arr, 0) & (cva + np.uint64(span - 1) >= np.uint64(self.va_start))
        if self.va_end < 1 << 64:
            present &= cva < np.uint64(self.va_end)
        if not present.any():
            return None
        e_rw, e_us, e_nx = self._rights(name, arr, rw, us, nx)
        if leaf_level:
            large = present
        elif can_be_large:
            large = present & _bit(arr, 7)
        else:
            large = np.zeros_like(present)
        rsv_tab = np.uint64(reserved_mask(self.paging, name, False))
        bad = present & ~large & ((arr & rsv_tab) != 0)
        if can_be_large or leaf_level:
            bad |= large & ((arr & np.uint64(reserved_mask(self.paging, name, True))) != 0)
        if bad.any():
            for r, c in zip(*np.nonzero(bad)):
                self.problems.append((int(cva[r, c]), int(cva[r, c]) + span, ename, "reserved", int(arr[r, c])))
        leaf = large & ~bad
        if leaf.any():
            self._leaves(name, span, ename, arr[leaf], cva[leaf], e_rw[leaf], e_us[leaf], e_nx[leaf])
        down = present & ~large & ~bad
        if self.stopped or not down.any() or li + 1 >= len(self.names):
            return None
        r, c = np.nonzero(down)
        self.pending += len(r)
        if self.ntables + self.pending > MAX_TABLES:
            self._stop(int(cva[r[0], c[0]]), ename)
            return None
        return (arr[r, c] & np.uint64(self.fmask), vas[r, c], e_rw[r, c], e_us[r, c], e_nx[r, c],
                np.concatenate([anc[r], tabs[r][:, None]], axis=1))

    def _leaves(self, name, span, ename, ent, cva, rw, us, nx):
        """Keep the leaves of a chunk, up to the mapping limit (past it: stop)."""
        import numpy as np
        room = min(self.max_mappings, self.shared_room + 512 * len(self.distinct)) - self.nmaps
        if len(ent) > room:
            self._stop(int(cva[room]), ename)
            ent, cva, rw, us, nx = ent[:room], cva[:room], rw[:room], us[:room], nx[:room]
        self.nmaps += len(ent)
        if self.mode == "2level" and name == "PD":
            pa = (ent & np.uint64(0xFFC00000)) | (((ent >> np.uint64(13)) & np.uint64(0xFF)) << np.uint64(32))
        else:
            pa = ent & np.uint64(self.fmask & ~(span - 1))
        self.out.append((cva, pa, np.full(len(ent), span, np.uint64), ent, rw, us, nx))


FIRST_WINDOW = 1 << 21           # first_mappings: the first window (one page table's span), then doubled


def first_mappings(target, paging, va_start, va_end, enough):
    """Enumerate ``[va_start, va_end)`` in growing windows (2 MiB, then doubling) until
    ``enough(mappings)`` says the lines wanted are certain: the work of ``maps --limit N`` follows N,
    not the size of the address space.

    :return: ``(Mappings of the windows enumerated, va where it stopped or None when it reached
             va_end)``; a ``too-many-mappings`` problem in a window also stops it there.
    """
    import numpy as np
    end = 1 << 64 if va_end is None or va_end > 1 << 64 else va_end
    parts, problems, seen, tables = [], [], set(), 0
    lo, width, stop = va_start, FIRST_WINDOW, None
    while lo < end:
        hi = min(end, lo + width)
        m = enumerate_mappings(target, paging, lo, hi)
        parts.append(m)
        tables += m.tables
        for p in m.problems:
            if p[:4] not in seen:
                seen.add(p[:4])
                problems.append(p)
        merged = _merge(paging.mode, parts, problems, tables)
        if any(p[3] == "too-many-mappings" for p in m.problems):
            return merged, None
        if hi < end and enough(merged):
            stop = hi
            break
        lo, width = hi, min(width * 2, 1 << 64)
    if not parts:
        z = np.zeros(0, np.uint64)
        return Mappings(paging.mode, z, z, z, z, *(np.zeros(0, bool),) * 3, problems=[], tables=0), None
    return _merge(paging.mode, parts, problems, tables), stop


def _merge(mode, parts, problems, tables):
    import numpy as np
    cols = [np.concatenate([getattr(m, k) for m in parts]) for k in ("va", "pa", "size", "entry", "rw", "us", "nx")]
    return Mappings(mode, *cols, problems=sorted(problems, key=lambda p: p[0]), tables=tables)


def _va_of(mode, va):
    return canonical(va, mode) if GEOMETRY[mode][3] > 32 else va


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
