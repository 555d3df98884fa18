"""One walk, as the CPU does it: every level kept (:class:`Walk`), and reads through it.

:func:`walk` is the per-address API a script calls in a loop, so it is kept cheap: the rules of
the mode are worked out once (:mod:`.plan`), a walk reads one entry per level and keeps the raw
entries, and the :class:`Level` objects are made from them when ``walk.levels`` is first asked
for. On a dump (a target whose memory cannot change) the tables read are kept whole, and so is
the path down to the last table of each 2 MiB region (:mod:`.plan`): a walk there reads one entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .. import decode
from ..errors import NotInDump, XenscopeError
from .model import STOP_REASONS, Paging
from .plan import NO_TABLES, keep_region, plan_of, regions_of, table_view, tables_of


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
            d = decode.decode_entry(self.entry, pg.mode, self.name, pg.nxe, pg.maxphyaddr, pg.cr4)
            self.__dict__["_decoded"] = d
        return d



class Walk:
    """The result of translating one virtual address.

    ``pa`` (the physical address) and ``page_size`` are set when a page is mapped, with the rights
    combined over the levels: ``writable`` (RW at every level), ``user`` (US at every level),
    ``nx`` (XD at any level while EFER.NXE=1). Otherwise ``stop`` (a key of
    :data:`~xenstructs.paging.STOP_REASONS`) says why the walk stopped and ``stop_level`` at which
    entry (``"PDE"``...). ``levels`` is the list of :class:`Level` the walk went through, top down.
    """

    __slots__ = ("va", "mode", "root", "pa", "page_size", "stop", "stop_level", "_levels", "_entries", "_last",
                 "_paging", "_plan", "_and", "_or")
    # A walk() result keeps the raw entries (``_entries``, then ``_last``: the last-level entry when
    # it came from a kept region, else _NO_ENTRY), the rights bits ANDed (``_and``) and ORed
    # (``_or``, XD counted only where NXE is on) over the levels; the rest is made from them on use.

    def __init__(self, va, mode, root, levels=None, pa=None, page_size=None, writable=None, user=None,
                 nx=None, stop=None, stop_level=None):
        self.va, self.mode, self.root = va, mode, root
        self.pa, self.page_size = pa, page_size
        self._and = (2 if writable else 0) | (4 if user else 0)
        self._or = 1 << 63 if nx else 0
        self.stop, self.stop_level = stop, stop_level
        self._levels = [] if levels is None else levels
        self._entries = self._paging = self._plan = None
        self._last = _NO_ENTRY

    @property
    def writable(self):
        """RW at every level (None when the address did not translate)."""
        return None if self.pa is None else self._and & 2 != 0

    @property
    def user(self):
        """US at every level (None when the address did not translate)."""
        return None if self.pa is None else self._and & 4 != 0

    @property
    def nx(self):
        """XD at any level while EFER.NXE=1 (None when the address did not translate)."""
        return None if self.pa is None else self._or >> 63 & 1 == 1

    @property
    def levels(self):
        """The :class:`Level` list, top down (made from the entries read on first use)."""
        if self._levels is None:
            self._levels = _levels_of(self)
        return self._levels

    @levels.setter
    def levels(self, value):
        self._levels = value

    @property
    def ok(self):
        """True when the address translated (``pa`` is set)."""
        return self.stop is None

    def describe_stop(self):
        """Why and where the walk stopped, in words (None when it translated)."""
        if self.stop is None:
            return None
        where = f" at {self.stop_level}" if self.stop_level else ""
        return f"{STOP_REASONS[self.stop]}{where}"

    def _fields(self):
        return (self.va, self.mode, self.root, self.pa, self.page_size, self.writable, self.user, self.nx,
                self.stop, self.stop_level)

    def __eq__(self, other):
        if not isinstance(other, Walk):
            return NotImplemented
        return self._fields() == other._fields() and self.levels == other.levels

    __hash__ = None

    def __repr__(self):
        names = ("va", "mode", "root", "pa", "page_size", "writable", "user", "nx", "stop", "stop_level")
        shown = ", ".join(f"{name}={value!r}" for name, value in zip(names, self._fields()))
        return f"Walk({shown}, levels={self.levels!r})"


_new_walk = object.__new__
_NO_ENTRY = object()


def _levels_of(res):
    """The :class:`Level` list of a walk made by :func:`walk`, from the entries it read."""
    paging, plan, entries = res._paging, res._plan, res._entries
    if res._last is not _NO_ENTRY:
        entries = entries + (res._last,)
    levels, seen = [], set()
    table = res.root
    for i, entry in enumerate(entries):
        step = plan.steps[i]
        index = res.va >> step.shift & step.index_mask
        level = Level(plan.entry_names[i], table, index, table + index * plan.esize)
        # A table met again lower in the same walk is a recursive (self-referencing) entry, like
        # Xen's linear page-table slot. The CPU simply uses it as a lower-level table; so do we,
        # and say so. Only enumeration refuses to descend into it (it would list tables as pages).
        level.recursive = table in seen
        seen.add(table)
        if entry is not None:
            level.entry, level.paging = entry, paging      # decoded only when someone asks
            went_on = i < len(entries) - 1 or res.stop is None
            load_rsv = decode.cr3_load_reserved_bits(entry, plan.mode, plan.names[i]) if went_on else 0
            if load_rsv:
                level.warning = (f"bits {load_rsv:#x} are reserved in a PAE PDPTE: loading this CR3 "
                                 "would raise #GP (QEMU's TCG sets A, bit 5, itself)")
            table = entry & plan.frame
        levels.append(level)
    return levels


def _mapped(va, plan, paging, entries, pa, shift, rights_and, rights_or):
    """The :class:`Walk` of an address that translated (made without ``__init__``: cheap)."""
    res = _new_walk(Walk)
    res.va, res.mode, res.root, res.pa, res.page_size = va, plan.mode, paging.root, pa, 1 << shift
    res._and, res._or = rights_and, rights_or if plan.nx else 0
    res.stop = res.stop_level = res._levels = None
    res._entries, res._last, res._paging, res._plan = entries, _NO_ENTRY, paging, plan
    return res


def _stopped(va, plan, paging, entries, stop, index):
    """The :class:`Walk` of a walk that stopped at level ``index`` (None: before reading)."""
    res = _new_walk(Walk)
    res.va, res.mode, res.root = va, plan.mode, paging.root
    res.pa = res.page_size = None
    res._and = res._or = 0
    res.stop = stop
    res.stop_level = None if index is None else plan.entry_names[index]
    res._levels = None if entries else []
    res._entries, res._last, res._paging, res._plan = entries, _NO_ENTRY, paging, plan
    return res


def walk(target, paging, va):
    """Translate ``va`` through the tables at ``paging.root``, as the CPU would.

    :param target: a :class:`~xenstructs.target.Target` (a dump, or a live host)
    :param paging: a :class:`~xenstructs.paging.Paging` (mode, root, NXE, MAXPHYADDR, CR4)
    :param va: the virtual address (an int)
    :return: :class:`Walk`; ``walk.pa`` is set when a page is mapped, else ``walk.stop`` says why
             (a hole in the dump is ``not-in-dump``, never ``not-present``).
    """
    plan = paging.__dict__.get("_plan") or plan_of(paging)
    half, high, regions_name, region_shift, last_index_mask, last_reserved, frame, nx = plan.hot
    if not (0 <= va < half or high <= va < 1 << 64):
        return _stopped(va, plan, paging, [], "out-of-range" if plan.bits == 32 else "non-canonical", None)
    regions = target.__dict__.get(regions_name)
    if regions is not None:
        region = regions.get(paging.root << 64 | va >> region_shift)
        if region is not None:                  # the entries above the last level are known
            view, upper, rights_and, rights_or, base, shift = region
            if view is None:                    # ... and map a large page
                return _mapped(va, plan, paging, upper, base + (va & ((1 << shift) - 1)), shift,
                               rights_and, rights_or)
            value = view[va >> 12 & last_index_mask]
            if value & 1 and not value & last_reserved:          # the same as _mapped, inline
                res = _new_walk(Walk)
                res.va, res.mode, res.root, res.pa, res.page_size = (va, plan.mode, paging.root,
                                                                     (value & frame) | (va & 0xFFF), 4096)
                res._and, res._or = rights_and & value, (rights_or | value) if nx else 0
                res.stop = res.stop_level = res._levels = None
                res._entries, res._last, res._paging, res._plan = upper, value, paging, plan
                return res
    return _walk_levels(target, paging, plan, va, regions)


def _walk_levels(target, paging, plan, va, regions):
    """:func:`walk` level by level (keeping the region it goes through where ``regions`` is kept)."""
    table = paging.root
    if regions is None and not table & plan.entry_align:
        regions = regions_of(target, plan)
    tables = NO_TABLES if regions is None or table & plan.entry_align else tables_of(target, plan)
    esize, eshift, frame = plan.esize, plan.eshift, plan.frame
    entries = []
    rights_and, rights_or = -1, 0
    last = len(plan.steps) - 1
    for i, (shift, index_mask, reserved_table, reserved_leaf, leaf_bit, leaf_mask, rights) in enumerate(plan.steps):
        entry_addr = table + ((va >> shift & index_mask) << eshift)
        view = tables.get(entry_addr & -4096)
        if view is None:
            view = table_view(target, tables, entry_addr & -4096, esize)
        try:
            value = view[(entry_addr & 0xFFF) >> eshift] if view else target.read_entry(entry_addr, esize)
        except NotInDump:
            entries.append(None)
            return _stopped(va, plan, paging, entries, "not-in-dump", i)
        entries.append(value)
        if not value & 1:
            return _stopped(va, plan, paging, entries, "not-present", i)
        leaf = value & leaf_bit
        if value & (reserved_leaf if leaf else reserved_table):
            return _stopped(va, plan, paging, entries, "reserved", i)
        if rights:
            rights_and &= value
            rights_or |= value
        if leaf:
            if leaf_mask is None:               # PSE-36
                base = decode.entry_address(value, plan.mode, plan.names[i], True, plan.maxphyaddr)
            else:
                base = value & leaf_mask
            if i < last and tables is not NO_TABLES:
                keep_region(regions, paging.root << 64 | va >> plan.region_shift,
                            (None, tuple(entries), rights_and, rights_or, base, shift))
            return _mapped(va, plan, paging, entries, base + (va & ((1 << shift) - 1)), shift, rights_and,
                           rights_or)
        table = value & frame
        if i == last - 1 and tables is not NO_TABLES:
            below = tables.get(table)
            if below is None:
                below = table_view(target, tables, table, esize)
            if below:
                keep_region(regions, paging.root << 64 | va >> plan.region_shift,
                            (below, tuple(entries), rights_and, rights_or, table, 12))
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
