"""What :func:`~xenstructs.paging.walk` works out once instead of per address.

- :class:`Plan`: the rules of one paging mode under one set of control bits (shifts, index
  masks, reserved-bit masks, leaf masks), made by :func:`plan_of` and kept on the
  :class:`~xenstructs.paging.Paging` (dropped when one of its fields changes).
- The tables a walk reads, kept whole on a target whose memory cannot change (``target.fixed``
  and not ``target.live``: a dump file), keyed by physical page (:func:`table_view`, at most
  :data:`WALK_TABLES`).
- The regions: for each ``(root, va >> region_shift)`` a walk went through (the span of one entry
  of the level above the last: 2 MiB, or 4 MiB in 2-level mode), the entries above the last
  level, the rights they grant and the last table (or the large page they map), as the CPU's
  paging-structure caches keep them (Intel SDM vol. 3A §4.10.3); at most :data:`WALK_REGIONS`.

drgn keeps the table of its last walk at each level; a script's addresses seldom share all their
levels, so these keep every table and region, bounded. Both live in the target's ``__dict__``
under names starting ``_walk_`` and are dropped by ``target.invalidate()``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from .. import decode
from ..errors import NotInDump
from .model import GEOMETRY, reserved_mask

WALK_TABLES = 4096           # tables kept per target and entry size (16 MiB at most); oldest first out
WALK_REGIONS = 4096          # regions kept per target and plan (8 GiB of addresses); oldest first out.
                             # A region holds its last table: with the tables, 32 MiB at most
UNREADABLE = False           # kept for a table page the target cannot read whole


class Step(NamedTuple):
    """What one level of a mode needs."""
    shift: int                   # VA shift of the level's index
    index_mask: int
    reserved_table: int          # reserved bits of a present entry that points at a table
    reserved_leaf: int           # ... of a present entry that maps a page here
    leaf_bit: int                # 0x80 where PS makes a leaf, -1 at the last level (always), else 0
    leaf_mask: Optional[int]     # page address bits of a leaf entry (None: PSE-36, decoded)
    rights: bool                 # the entry's RW/US/XD count (not a PAE PDPTE)


class Plan(NamedTuple):
    """The rules of one paging mode under one set of control bits."""
    mode: str
    esize: int
    eshift: int                  # log2(esize)
    bits: int                    # VA width
    half: int                    # addresses walked are below this (canonical, or below 2**32) ...
    high: int                    # ... or at or above this (2**64 - 2**(bits-1); 2**64 in 32-bit modes)
    frame: int                   # table address bits of an entry
    nx: bool                     # XD counts (EFER.NXE and 64-bit entries)
    maxphyaddr: int
    names: tuple                 # table names, top down (decode.LEVELS)
    entry_names: tuple           # their entries' names (PML4E ...)
    steps: tuple                 # one Step per level
    entry_align: int             # esize - 1: a root not aligned on it is read entry by entry
    tables_name: str             # the target attribute keeping the tables of this entry size
    regions_name: str            # the target attribute keeping this plan's regions
    region_shift: int            # VA shift of a region (the level above the last)
    last_index_mask: int         # index mask of the last level (its shift is 12)
    last_reserved: int           # reserved bits of a present last-level entry
    hot: tuple                   # what walk() reads on every call, in one tuple (see walk.walk)


_PLANS = {}                  # (mode, nxe, maxphyaddr, cr4 & PSE) -> Plan; bounded by those values


def plan_of(paging):
    """The :class:`Plan` of ``paging`` (kept on it until one of its fields changes)."""
    plan = paging.__dict__.get("_plan")
    if plan is None:
        plan = _make(paging.mode, bool(paging.nxe), paging.maxphyaddr, paging.cr4 & decode.CR4_PSE)
        paging.__dict__["_plan"] = plan
    return plan


def _make(mode, nxe, maxphyaddr, pse):
    key = (mode, nxe, maxphyaddr, pse)
    plan = _PLANS.get(key)
    if plan is not None:
        return plan
    esize, shifts, widths, bits = GEOMETRY[mode]
    names = decode.LEVELS[mode]
    frame = decode.frame_mask(mode, maxphyaddr)
    rules = _Rules(mode, nxe, maxphyaddr, pse)
    steps = []
    for i, (name, shift, width) in enumerate(zip(names, shifts, widths)):
        last = i == len(names) - 1
        can_be_large = decode.is_large(0x80, mode, name, pse)
        leaf_mask = None if mode == "2level" and can_be_large else frame & ~((1 << shift) - 1)
        steps.append(Step(shift, (1 << width) - 1, reserved_mask(rules, name, False),
                          reserved_mask(rules, name, can_be_large), -1 if last else (0x80 if can_be_large else 0),
                          leaf_mask, not (mode == "pae" and name == "PDPT")))
    # addresses walked: [0, half) and [high, 2**64); 32-bit modes: [0, 2**32) only
    half, high = (1 << 32, 1 << 64) if bits == 32 else (1 << (bits - 1), (1 << 64) - (1 << (bits - 1)))
    regions_name = f"_walk_regions{len(_PLANS)}"
    hot = (half, high, regions_name, shifts[-2], steps[-1].index_mask, steps[-1].reserved_table, frame,
           nxe and esize == 8)
    plan = Plan(mode, esize, esize.bit_length() - 1, bits, half, high, frame, nxe and esize == 8,
                maxphyaddr, names, tuple(decode.ENTRY_NAMES[n] for n in names), tuple(steps), esize - 1,
                f"_walk_tables{esize * 8}", regions_name, shifts[-2], steps[-1].index_mask,
                steps[-1].reserved_table, hot)
    _PLANS[key] = plan
    return plan


class _Rules(NamedTuple):
    """The fields of a Paging that :func:`~.model.reserved_mask` reads."""
    mode: str
    nxe: bool
    maxphyaddr: int
    cr4: int


class _NoTables(dict):
    """The stand-in for the kept tables of a target whose memory may change: always empty."""


NO_TABLES = _NoTables()


def tables_of(target, plan):
    """The whole tables kept on ``target`` for ``plan``'s entry size (a dict: physical page ->
    memoryview of entries), or :data:`NO_TABLES` when the target's memory may change (``live``, or
    not declared ``fixed``): every entry is then read alone, as the host reads it."""
    if not getattr(target, "fixed", False) or getattr(target, "live", False):
        return NO_TABLES
    return target.__dict__.setdefault(plan.tables_name, {})


def regions_of(target, plan):
    """The regions kept on ``target`` for ``plan`` (None where tables are not kept)."""
    if not getattr(target, "fixed", False) or getattr(target, "live", False):
        return None
    return target.__dict__.setdefault(plan.regions_name, {})


def table_view(target, tables, base, esize):
    """The table page at ``base`` as a memoryview of ``esize``-byte entries, read whole once and
    kept in ``tables`` (oldest dropped first); :data:`UNREADABLE` when it is not kept (the target
    keeps no tables, or cannot read this page whole: a hole, or a page only partly held): the
    entry is then read alone."""
    if tables is NO_TABLES:
        return UNREADABLE
    try:
        view = memoryview(bytes(target.read_phys(base, 4096))).cast("Q" if esize == 8 else "I")
    except NotInDump:
        view = UNREADABLE
    if len(tables) >= WALK_TABLES:
        del tables[next(iter(tables))]
    tables[base] = view
    return view


def keep_region(regions, key, region):
    """Keep ``region`` (see the module docstring) under ``key``, the oldest dropped first."""
    if len(regions) >= WALK_REGIONS:
        del regions[next(iter(regions))]
    regions[key] = region
