"""Nested (two-stage) translation: a translated guest's virtual address -> guest-physical (the guest's
own page tables) -> machine (the domain's P2M, every read of a guest table itself translated).

:class:`GuestMemory` is a :class:`~xenstructs.target.Target` whose physical memory is one domain's
guest-physical memory: each read goes through ``p2m.translate(gfn)`` (anything with that method
returning a :class:`~xenstructs.xen.p2m_tables.Translation`) to the host target's machine memory,
and whose CPUs are the domain's vCPUs with their saved registers. Every walk, enumeration and
batch translation of this package then runs on it unchanged; :func:`stage2` says for one
guest-physical address where the P2M sent it (mfn, p2m type, every P2M level), :func:`walk_nested`
adds that to every level of a guest walk. A guest page the P2M does not map reads as
:class:`~xenstructs.errors.NotInDump` (space ``gpa``), with the P2M's reason.
"""

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ..errors import NotInDump
from ..target import CpuState, Target
from .walk import walk

PAGE = 4096


class GuestMemory(Target):
    """Guest-physical memory of one translated domain, read through its P2M."""

    kind = "guest-physical memory of a translated Xen domain"

    def __init__(self, host_target, p2m, vcpus, name):
        super().__init__()
        self.host_target, self.p2m, self.name = host_target, p2m, name
        self.path = host_target.path
        self.facts = {"machine": "x86_64"}
        self._cpus = [CpuState(v.id, dict(v.regs), {r: v.source for r in v.regs}) for v in vcpus]
        self._ranges = None

    def _read_phys(self, addr, size):
        out = bytearray()
        while size > 0:
            t = self.p2m.translate(addr >> 12)
            if t.mfn is None:
                raise NotInDump(addr, "gpa", f"{self.name}: {t.describe_stop()}")
            n = min(size, PAGE - (addr & (PAGE - 1)))
            out += self.host_target.read_phys((t.mfn << 12) | (addr & (PAGE - 1)), n)
            addr += n
            size -= n
        return bytes(out)

    def phys_ranges(self):
        """The ``[start, end)`` guest-physical ranges the P2M maps to a frame (merged)."""
        if self._ranges is None:
            a = self.p2m.leaf_arrays()
            gfn, order = a.gfn[a.present], a.order[a.present].astype(np.uint64)
            starts, ends = gfn << np.uint64(12), (gfn + (np.uint64(1) << order)) << np.uint64(12)
            breaks = np.nonzero(starts[1:] != ends[:-1])[0] + 1        # where a range does not go on
            first, last = np.r_[0, breaks], np.r_[breaks, len(starts)] - 1
            self._ranges = list(zip(starts[first].tolist(), ends[last].tolist())) if len(starts) else []
        return self._ranges


@dataclass
class Stage2:
    """Where the P2M sends one guest-physical address."""
    gpa: int
    mfn: Optional[int]
    p2m_type: Optional[str]
    stop: Optional[str]
    levels: List[dict] = field(default_factory=list)

    @property
    def maddr(self):
        return None if self.mfn is None else (self.mfn << 12) | (self.gpa & (PAGE - 1))

    def as_dict(self):
        return {"gpa": self.gpa, "gfn": self.gpa >> 12, "mfn": self.mfn, "maddr": self.maddr,
                "p2m_type": self.p2m_type, "stop": self.stop, "p2m_levels": self.levels}


def stage2(p2m, gpa):
    """The :class:`Stage2` of guest-physical ``gpa`` (every P2M level with its entry)."""
    t = p2m.translate(gpa >> 12)
    levels = [{"level": f"L{s.level}", "table_mfn": s.table_mfn, "index": s.index, "entry_maddr": s.entry_maddr,
               "entry": None if s.entry is None else s.entry.raw,
               "flags": None if s.entry is None else s.entry.flags()} for s in t.steps]
    return Stage2(gpa, t.mfn, t.type_name, t.describe_stop(), levels)


def walk_nested(guest, paging, va):
    """``(walk, stages)``: the guest walk of ``va`` on ``guest`` (a :class:`GuestMemory`) and the
    :class:`Stage2` of each level's table and of the final page (``stages["tables"]``, ``stages["page"]``)."""
    w = walk(guest, paging, va)
    tables = [stage2(guest.p2m, lv.table) for lv in w.levels]
    page = stage2(guest.p2m, w.pa) if w.pa is not None else None
    return w, {"tables": tables, "page": page}
