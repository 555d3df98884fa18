"""Walking a translated domain's P2M tables (either format: :mod:`.npt` or :mod:`.ept`): one guest frame
to its machine frame with every level kept (:func:`translate`), or every mapped entry (:func:`leaves`).

``read_table(mfn)`` gives the 4 KiB table in machine frame ``mfn`` (raising
:class:`~xenstructs.errors.NotInDump` for a frame the dump does not hold). Guest frame numbers are
``gfn`` (a guest-physical address >> 12), machine frames ``mfn``.
"""

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ..errors import NotInDump

GFN_BITS = 36                      # 4 levels x 9 bits: guest-physical addresses below 2^48
MAX_TABLES = 1 << 18               # one enumeration reads at most 256 Ki tables (1 GiB of P2M)
STOPS = {"not-present": "P2M entry not present", "not-in-dump": "P2M table not in the dump",
         "out-of-range": "guest frame beyond the P2M's 48-bit reach", "loop": "P2M table loop"}


@dataclass
class Step:
    """One level of a P2M walk."""
    level: int
    table_mfn: int
    index: int
    entry: Optional[object] = None            # the format's decoded Entry; None: table not in the dump

    @property
    def entry_maddr(self):
        return (self.table_mfn << 12) + 8 * self.index


@dataclass
class Translation:
    """Where guest frame ``gfn`` goes: ``mfn`` (of the 4 KiB frame itself) and the leaf ``entry``
    (its ``type_name``), or ``stop`` (a key of :data:`STOPS`) at ``steps[-1]``."""
    gfn: int
    format: str
    steps: List[Step] = field(default_factory=list)
    mfn: Optional[int] = None
    entry: Optional[object] = None
    stop: Optional[str] = None

    @property
    def type_name(self):
        return self.entry.type_name if self.entry is not None else None

    def describe_stop(self):
        if self.stop is None:
            return None
        where = f" at L{self.steps[-1].level}" if self.steps else ""
        typed = ""
        if self.steps and self.steps[-1].entry is not None and self.steps[-1].entry.raw:
            typed = f" ({self.steps[-1].entry.type_name})"
        return f"{STOPS[self.stop]}{where}{typed}"


def translate(read_table, fmt, root_mfn, gfn):
    """The :class:`Translation` of guest frame ``gfn`` through the P2M at ``root_mfn``."""
    res = Translation(gfn, fmt.name)
    if gfn >> GFN_BITS:
        res.stop = "out-of-range"
        return res
    table = root_mfn
    for level in range(fmt.levels, 0, -1):
        index = gfn >> (9 * (level - 1)) & 0x1FF
        step = Step(level, table, index)
        res.steps.append(step)
        try:
            data = read_table(table)
        except NotInDump:
            res.stop = "not-in-dump"
            return res
        raw = int.from_bytes(data[8 * index:8 * index + 8], "little")
        entry = step.entry = fmt.decode(raw, level)
        if not fmt.table_present(entry):
            res.stop = "not-present"
            res.entry = entry if raw else None
            return res
        if entry.leaf:
            res.entry = entry
            res.mfn = entry.mfn + (gfn & ((1 << (9 * (level - 1))) - 1))
            return res
        table = entry.mfn
    raise AssertionError("P2M walk fell off the last level")


@dataclass
class Leaf:
    """One mapped range of the P2M: ``1 << order`` guest frames from ``gfn`` to frames from ``mfn``."""
    gfn: int
    order: int
    entry: object

    @property
    def mfn(self):
        return self.entry.mfn


@dataclass
class Leaves:
    """Every leaf of a P2M (present, or typed though not present), the tables read, the problems."""
    leaves: List[Leaf] = field(default_factory=list)
    tables: int = 0
    problems: List[str] = field(default_factory=list)


@dataclass
class LeafArrays:
    """The entries of a P2M that map a frame or carry a type, as arrays in gfn order: ``gfn`` (the first
    guest frame), ``order`` (``1 << order`` frames; 0 for a typed entry that is not present), ``level``,
    ``raw`` (the entry), ``mfn``, ``type``, ``present``, ``recalc``; ``tables`` read, ``problems`` met."""
    gfn: np.ndarray
    order: np.ndarray
    level: np.ndarray
    raw: np.ndarray
    mfn: np.ndarray
    type: np.ndarray
    present: np.ndarray
    recalc: np.ndarray
    tables: int = 0
    problems: List[str] = field(default_factory=list)


_DTYPES = (np.uint64, np.uint8, np.uint8, np.uint64, np.uint64, np.int16, bool, bool)


def leaf_arrays(read_table, fmt, root_mfn, max_tables=MAX_TABLES):
    """Every P2M entry that maps a frame or carries a type (:class:`LeafArrays`): each table decoded
    whole (``fmt.columns``); Python steps only from a table to the tables it points at."""
    parts, seen = [], set()
    problems, tables = [], 0

    def visit(mfn, level, base):
        nonlocal tables
        if mfn in seen:
            problems.append(f"L{level} table mfn {mfn:#x} (gfn {base:#x}) met twice: not entered again")
            return
        if len(seen) >= max_tables:
            problems.append(f"more than {max_tables} P2M tables: enumeration stopped at gfn {base:#x}")
            return
        seen.add(mfn)
        try:
            words = np.frombuffer(read_table(mfn), "<u8")
        except NotInDump:
            problems.append(f"L{level} table mfn {mfn:#x} (gfn {base:#x}) is not in the dump")
            return
        tables += 1
        cols = fmt.columns(words, level)
        span = 9 * (level - 1)
        used = words != 0
        ends = used & (cols["leaf"] | ~cols["present"])        # a leaf, or no table under it
        keep = np.nonzero(ends & cols["holds"])[0]
        if len(keep):
            present = cols["present"][keep]
            parts.append((np.uint64(base) + (keep.astype(np.uint64) << np.uint64(span)),
                          np.where(present, span, 0), np.full(len(keep), level), words[keep],
                          cols["mfn"][keep], cols["type"][keep], present, cols["recalc"][keep]))
        for index in np.nonzero(used & ~ends)[0].tolist():
            visit(int(cols["mfn"][index]), level - 1, base + (index << span))

    visit(root_mfn, fmt.levels, 0)
    columns = [np.concatenate([p[i] for p in parts]).astype(t) if parts else np.zeros(0, t)
               for i, t in enumerate(_DTYPES)]
    order = np.argsort(columns[0], kind="stable")
    return LeafArrays(*(c[order] for c in columns), tables=tables, problems=problems)


def leaves(read_table, fmt, root_mfn, max_tables=MAX_TABLES):
    """:func:`leaf_arrays` as :class:`Leaf` objects with their decoded entries (:class:`Leaves`)."""
    a = leaf_arrays(read_table, fmt, root_mfn, max_tables)
    out = [Leaf(int(g), int(o), fmt.decode(int(r), int(lv)))
           for g, o, r, lv in zip(a.gfn.tolist(), a.order.tolist(), a.raw.tolist(), a.level.tolist())]
    return Leaves(out, a.tables, a.problems)
