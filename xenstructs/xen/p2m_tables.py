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


def leaves(read_table, fmt, root_mfn, max_tables=MAX_TABLES):
    """Every P2M entry that maps a frame or carries a type (:class:`Leaves`), in gfn order."""
    out = Leaves()
    seen = set()

    def visit(mfn, level, base):
        if mfn in seen:
            out.problems.append(f"L{level} table mfn {mfn:#x} (gfn {base:#x}) met twice: not entered again")
            return
        if len(seen) >= max_tables:
            out.problems.append(f"more than {max_tables} P2M tables: enumeration stopped at gfn {base:#x}")
            return
        seen.add(mfn)
        try:
            words = np.frombuffer(read_table(mfn), "<u8")
        except NotInDump:
            out.problems.append(f"L{level} table mfn {mfn:#x} (gfn {base:#x}) is not in the dump")
            return
        out.tables += 1
        span = 9 * (level - 1)
        for index in np.nonzero(words)[0].tolist():
            entry = fmt.decode(int(words[index]), level)
            gfn = base + (index << span)
            if entry.leaf or not fmt.table_present(entry):
                if fmt.holds(entry):
                    out.leaves.append(Leaf(gfn, span if entry.present else 0, entry))
            else:
                visit(entry.mfn, level - 1, gfn)

    visit(root_mfn, fmt.levels, 0)
    return out
