"""An address space listed by reading whole tables with numpy (QEMU ``info tlb`` style pages,
:func:`enumerate_mappings`) and merged into ranges (``info mem`` style, :func:`coalesce`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:                # annotations only: numpy is imported where it is used
    import numpy as np

from .. import decode
from ..errors import NotInDump, XenscopeError
from .model import GEOMETRY, MAX_TABLES, TABLE_CHUNK, canonical, reserved_mask


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


def enumerate_mappings(target, paging, va_start=0, va_end=None):
    """List every mapped page whose span meets ``[va_start, va_end)`` (canonical addresses).

    Level by level, the tables of a level are read whole (one read each) and decoded together as
    one numpy array, in chunks of :data:`TABLE_CHUNK` tables: no Python loop per entry. Tables
    are bounded by :data:`MAX_TABLES`; a table found among its own ancestors (a recursive entry)
    is reported as a ``loop`` problem and not entered again.
    """
    import numpy as np          # imported here so that loading the commands (gdb start-up) stays cheap
    mode = paging.mode
    esize, shifts, widths, bits = GEOMETRY[mode]
    names = decode.LEVELS[mode]
    if va_end is None or va_end > 1 << 64:
        va_end = 1 << 64
    dtype = np.dtype("<u4") if esize == 4 else np.dtype("<u8")
    fmask = decode.frame_mask(mode, paging.maxphyaddr)
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
        ename = decode.ENTRY_NAMES[name]
        leaf_level = name == "PT"
        can_be_large = (name == "PD" and not (mode == "2level" and not paging.cr4 & decode.CR4_PSE)) or \
                       (name == "PDPT" and mode in ("4level", "5level"))
        rsv_tab = np.uint64(reserved_mask(paging, name, False))
        rsv_big = np.uint64(reserved_mask(paging, name, True)) if can_be_large or leaf_level else None
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
                    prev = decode.ENTRY_NAMES[names[li - 1]]
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
