"""What the explainer is given (:class:`FaultState`) and what it answers (:class:`Explanation`), with
the architectural bits both speak of (SDM vol. 3A §4.7; reference §7.2-7.3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

# Page-fault error code bits (Xen PFEC_*, Linux X86_PF_*)
PF_P, PF_W, PF_U, PF_RSVD, PF_I, PF_PK, PF_SS = 1, 2, 4, 8, 0x10, 0x20, 0x40
PFEC_IMPLICIT = 1 << 18              # Xen-internal: implicit supervisor access (GDT/LDT/IDT/TSS)
EFLAGS_AC = 1 << 18
CR4_CET, CR4_PKS = 1 << 23, 1 << 24

GUESTS = ("pv32", "pv64", "hvm")
GUEST_TEXT = {"pv32": "32-bit PV guest", "pv64": "64-bit PV guest", "hvm": "HVM guest"}
PV_GUESTS = ("pv32", "pv64")
ENTRY_ORDER = ("PML5E", "PML4E", "PDPTE", "PDE", "PTE")


@dataclass
class FaultState:
    """Everything known about one fault; every field is optional, ``sources`` says where each came from."""
    cr2: Optional[int] = None
    error: Optional[int] = None
    ip: Optional[int] = None
    cs: Optional[int] = None
    cr0: Optional[int] = None
    cr3: Optional[int] = None
    cr4: Optional[int] = None          # the CR4 the CPU used (for a PV guest: Xen's, the real one)
    guest_cr4: Optional[int] = None    # a PV guest's own view of CR4 (what it believes)
    efer: Optional[int] = None
    eflags: Optional[int] = None
    mode: Optional[str] = None         # 2level pae 4level 5level
    pkru: Optional[int] = None
    xen: Optional[str] = None          # Xen version, e.g. "4.5.0"
    guest: Optional[str] = None        # pv32 pv64 hvm (None: native, or Xen itself)
    accessor: Optional[str] = None     # who made the access when a log says so: "xen" or "guest"
    kind: Optional[str] = None         # read / write / fetch when a log says so and no error code does
    maxphyaddr: Optional[int] = None
    entries: dict = field(default_factory=dict)   # entry name (PML5E..PTE) -> value
    insn: Optional[bytes] = None       # instruction bytes at IP
    bits: Optional[int] = None         # code size for disassembly (16/32/64)
    sources: dict = field(default_factory=dict)

    def give(self, name, value, source):
        """Set ``name`` unless it is already known (callers give the strongest source first)."""
        if value is None:
            return
        if name in ENTRY_ORDER:
            if name not in self.entries:
                self.entries[name] = value
                self.sources[name] = source
            return
        if getattr(self, name) is None:
            setattr(self, name, value)
            self.sources[name] = source


@dataclass
class Explanation:
    """The answer of :func:`~xenstructs.fault.explain`: one ``{"rule", "status", "why"}`` per rule in
    :data:`~xenstructs.fault.rules.RULES` order, the cause, and what it was built from."""
    rules: list
    cause: str
    spurious: bool
    error: Optional[dict]
    cpl: Optional[int]
    walk: Optional[dict]
    access: dict
    missing: list
    notes: list
    insn: Optional[dict]
    state: dict
    assumed: list = field(default_factory=list)   # :func:`~.assumptions.alternatives` when no rule fired

    def rule(self, name):
        return next(r for r in self.rules if r["rule"] == name)

    def status(self, name):
        return self.rule(name)["status"]

    def to_dict(self):
        return {"rules": self.rules, "cause": self.cause, "spurious": self.spurious,
                "error": self.error, "cpl": self.cpl, "walk": self.walk, "access": self.access,
                "missing": self.missing, "notes": self.notes, "insn": self.insn, "state": self.state,
                "assumed": self.assumed}


@dataclass
class Findings:
    """Notes and missing pieces, in the order the explainer meets them (the order users read)."""
    notes: list = field(default_factory=list)
    missing: list = field(default_factory=list)

    def unique_missing(self):
        """``missing`` without repeats, first occurrence kept."""
        return list(dict.fromkeys(self.missing))
