"""Conditions that several rules share. A condition is ``(holds, why)``: ``holds`` True, False or None
(unknown); ``why`` says what it was decided from, or which piece is missing. :func:`all_of` turns a
list of them into a rule's status.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

from .state import EFLAGS_AC, PV_GUESTS
from .versions import FIX_COMMIT, predates_xen_smap, xen_clears_smep_smap_for_pv32
from .walk import ENTRY_US

Condition = Tuple[Optional[bool], str]

NO_ENTRIES = "no page-table entries (give a dump or --pte/--pde...)"


def all_of(conditions) -> Tuple[str, str]:
    """The status of a rule that fires when every condition holds: ``("fired", all the whys)``;
    ``("passed", why)`` of the first that does not hold; else ``("not-evaluated", each unknown why)``."""
    for holds, why in conditions:
        if holds is False:
            return "passed", why
    unknown = [why for holds, why in conditions if holds is None]
    if unknown:
        return "not-evaluated", "; ".join(unknown)
    return "fired", "; ".join(why for _, why in conditions)


def rights_levels(walk):
    """:meth:`~.walk.WalkView.rights_levels`, ``[]`` without a walk."""
    return walk.rights_levels() if walk is not None else []


def leaf(walk):
    """:meth:`~.walk.WalkView.leaf`, None without a walk."""
    return walk.leaf() if walk is not None else None


def user_page(walk) -> Condition:
    """A user page: US=1 at every level that carries rights (None when no such level is known)."""
    levels = rights_levels(walk)
    if not levels:
        return None, f"whether the page is a user page is unknown: {NO_ENTRIES}"
    supervisor = [name for name, value in levels if not value & ENTRY_US]
    if supervisor:
        return False, f"a supervisor page ({supervisor[0]} US=0)"
    return True, f"a user page (US=1 at {', '.join(name for name, _ in levels)}){walk.partial()}"


def supervisor_access(access) -> Condition:
    """A supervisor access (SMEP and SMAP apply to nothing else)."""
    if access.user is None:
        return None, "privilege unknown (no error code, no CS)"
    if access.user:
        if access.guest == "pv64":
            return False, ("the 64-bit PV kernel runs in ring 3: its explicit accesses are user accesses, "
                           "to which SMEP/SMAP do not apply")
        return False, "a user-mode access (U=1): applies to supervisor accesses only"
    where = f"CPL {access.cpl}" if access.cpl is not None else "CPL unknown"
    ring1 = (" (the 32-bit PV kernel runs in ring 1: its accesses are supervisor accesses)"
             if access.guest == "pv32" and access.cpl == 1 else "")
    return True, f"a supervisor access at {where}{ring1}"


def ac_clear(access, context) -> Condition:
    """EFLAGS.AC=0, or an implicit supervisor access (which ignores AC): what SMAP needs."""
    if access.implicit:
        return True, "an implicit supervisor access (EFLAGS.AC ignored)"
    if access.cpl == 3 and access.user is False:
        return True, "a supervisor access at CPL 3 (implicit: EFLAGS.AC ignored)"
    if context.eflags is None:
        return None, "EFLAGS unknown: AC not known (give --eflags)"
    on = bool(context.eflags & EFLAGS_AC)
    return not on, (f"EFLAGS.AC={int(on)} (EFLAGS {context.eflags:#x})" +
                    (": explicit supervisor accesses to user pages are allowed (stac)" if on else ""))


class Cr4Bit(NamedTuple):
    """:func:`cr4_bit`: the condition, what is missing to decide it, and whether Xen cleared the bit
    while the 32-bit PV kernel ran (the rule would fire otherwise)."""
    holds: Optional[bool]
    why: str
    missing: Tuple[str, ...] = ()
    xen_cleared: bool = False

    @property
    def condition(self) -> Condition:
        return self.holds, self.why


def cr4_bit(bit, name, access, context) -> Cr4Bit:
    """CR4.SMEP or CR4.SMAP as the CPU had it while the faulting code ran: the real CR4 (Xen's for a
    PV guest, whose own view is not what the CPU used), cleared by a fixed Xen for a 32-bit PV kernel."""
    cr4, guest_cr4, guest = context.cr4, context.guest_cr4, access.guest
    if guest == "hvm" and cr4 is None and guest_cr4 is not None:
        return Cr4Bit(bool(guest_cr4 & bit),
                      f"CR4.{name}={int(bool(guest_cr4 & bit))} (the HVM guest's CR4 {guest_cr4:#x})")
    if cr4 is None:
        if guest in PV_GUESTS and guest_cr4 is not None:
            return Cr4Bit(None, f"real CR4 unknown: the guest's CR4 view {guest_cr4:#x} ({name}="
                                f"{int(bool(guest_cr4 & bit))}) is not what the CPU used (Xen's CR4) (give --cr4)")
        return Cr4Bit(None, f"CR4 unknown: {name} rule not evaluated (give --cr4)")
    if not cr4 & bit:
        return Cr4Bit(False, f"CR4.{name}=0 (CR4 {cr4:#x})")
    pv32_kernel = guest == "pv32" and (access.cpl == 1 if access.cpl is not None else access.user is False)
    if pv32_kernel:
        return _cr4_bit_under_pv32_kernel(name, cr4, context.version)
    return Cr4Bit(True, f"CR4.{name}=1 (CR4 {cr4:#x})")


def _cr4_bit_under_pv32_kernel(name, cr4, version) -> Cr4Bit:
    """CR4.SMEP/SMAP set in Xen's CR4, and a 32-bit PV kernel running: was it live? (reference §7.4)"""
    fixed = xen_clears_smep_smap_for_pv32(version)
    if fixed:
        return Cr4Bit(False, f"Xen {version} clears SMEP/SMAP while 32-bit PV guest code runs ({FIX_COMMIT}; "
                             f"4.7.0, backported to 4.5.4 and 4.6.3): CR4.{name} was 0 while this ring-1 kernel ran",
                      xen_cleared=True)
    if fixed is False:
        if name == "SMAP" and predates_xen_smap(version):
            return Cr4Bit(True, f"CR4.SMAP=1 (CR4 {cr4:#x}), though Xen {version} predates Xen's own use "
                                "of SMAP (4.5.0)")
        return Cr4Bit(True, f"CR4.{name}=1 (CR4 {cr4:#x}) and Xen {version} does not clear SMEP/SMAP while "
                            "32-bit PV guest code runs (fixed in 4.5.4, 4.6.3, 4.7.0)")
    return Cr4Bit(True, f"CR4.{name}=1 (CR4 {cr4:#x}), if it was live while the guest ran: Xen version unknown "
                        "(4.5.0-4.5.3 and 4.6.0-4.6.2 leave it on, 4.5.4+/4.6.3+/4.7.0+ clear it; give --xen)",
                  missing=("Xen version unknown: whether Xen cleared SMEP/SMAP while the 32-bit PV kernel ran "
                           "is unknown (give --xen)",))

