"""The page-fault rules, one function each, in the order the CPU applies them (SDM vol. 3A §4.6-4.7):
present at every level, reserved bits, write vs RW (CR0.WP for supervisor writes), user vs US, fetch
vs XD, SMEP, SMAP, protection keys, shadow stack.

A rule is ``rule(access, walk, context) -> Verdict``: ``access`` the :class:`~.access.Access`,
``walk`` the :class:`~.walk.WalkView` of CR2 (None when no entry is known), ``context`` the
:class:`~.context.Context` (``context.stopped`` says an earlier rule ended the walk). A rule that
needs a missing piece is ``not-evaluated`` and says which piece. :data:`RULES` is the table
:func:`~xenstructs.fault.explain` runs, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from .. import decode
from .conditions import (NO_ENTRIES, ac_clear, all_of, cr4_bit, leaf, rights_levels, supervisor_access,
                         user_page)
from .state import CR4_CET, CR4_PKS, EFLAGS_AC, PF_P, PF_PK, PF_RSVD, PV_GUESTS
from .walk import ENTRY_D, ENTRY_P, ENTRY_RW, ENTRY_US, has_entries

FIRED, PASSED, NOT_EVALUATED = "fired", "passed", "not-evaluated"


@dataclass(frozen=True)
class Verdict:
    """What a rule found: ``status`` (fired, passed, not-evaluated) and ``why``.

    ``cause``: the cause sentence when it fired (explain uses the first rule that fired).
    ``stops``: ``"not reached: ..."`` when this rule ends the walk; later rules see it as
    ``context.stopped``. ``otherwise``: the cause to give when no rule fires. ``notes``, ``missing``:
    added to the explanation's, in rule order.
    """
    status: str
    why: str
    cause: Optional[str] = None
    stops: Optional[str] = None
    otherwise: Optional[str] = None
    notes: Tuple[str, ...] = ()
    missing: Tuple[str, ...] = ()


def _fired(why, title, context, detail="", **more) -> Verdict:
    """A fired :class:`Verdict` whose cause reads ``"<title> at CR2 <cr2>: <why><detail>."``."""
    return Verdict(FIRED, why, cause=f"{title}{context.where}: {why}{detail}.", **more)


def present_rule(access, walk, context) -> Verdict:
    """Every level of the walk has P=1 (else the error code's P bit, when no entry is known)."""
    error = access.error
    if has_entries(walk):
        notes = (walk.stop_note,) if walk.stop_note else ()
        absent = [(name, value) for name, value in walk.levels if not value & ENTRY_P]
        if absent:
            name, value = absent[0]
            why = f"{name} {value:#x} has P=0"
            if error is not None and error & PF_P:
                why += (" now, but the error code's P=1 says it was present at fault time: the mapping changed "
                        "after the fault")
            return _fired(why, "Not-present fault", context, notes=notes,
                          stops=f"not reached: the walk ends at the not-present {name}")
        why = "P=1 at " + ", ".join(name for name, _ in walk.levels) + walk.partial()
        if error is not None and not error & PF_P and error & PF_RSVD:
            notes += (RSVD_WITHOUT_P,)
        elif error is not None and not error & PF_P:
            why += "; the error code's P=0 says a level was not present at fault time: filled in since"
        return Verdict(PASSED, why, notes=notes)
    if error is None:
        return Verdict(NOT_EVALUATED, f"{NO_ENTRIES} and no error code")
    if error & PF_P:
        return Verdict(PASSED, f"from the error code (P=1); {NO_ENTRIES}")
    if error & PF_RSVD:
        return Verdict(PASSED, f"from the error code (RSVD=1: a reserved bit in a present entry); {NO_ENTRIES}",
                       notes=(RSVD_WITHOUT_P,))
    return _fired(f"from the error code (P=0: not present); {NO_ENTRIES}", "Not-present fault", context,
                  stops="not reached: the page was not present (error code P=0)")


def reserved_rule(access, walk, context) -> Verdict:
    """No present level has a reserved bit set (MAXPHYADDR, bit 63 without EFER.NXE, PS at the wrong
    level...); bits reserved only at MOV CR3 (#GP, not #PF) are noted."""
    error, nxe = access.error, context.nxe
    if context.stopped:
        return Verdict(NOT_EVALUATED, context.stopped)
    if not has_entries(walk):
        if error is None:
            return Verdict(NOT_EVALUATED, f"{NO_ENTRIES} and no error code")
        if error & PF_RSVD:
            return _fired(f"from the error code (RSVD=1); {NO_ENTRIES}", "Reserved-bit fault", context,
                          " (a corrupt or foreign entry)", stops="not reached: reserved bit (error code RSVD=1)")
        return Verdict(PASSED, f"from the error code (RSVD=0); {NO_ENTRIES}")
    if context.mode is None:
        return Verdict(NOT_EVALUATED, "paging mode unknown (give --mode)")
    found, at_cr3_load = [], []
    for name, value in walk.levels:
        if not value & ENTRY_P:
            break
        level = decode.level_name(name)
        reserved = decode.reserved_bits(value, context.mode, level, True if nxe is None else nxe,
                                        walk.maxphyaddr or 52, walk.cr4)
        if reserved:
            found.append((name, value, reserved))
        load_reserved = decode.cr3_load_reserved_bits(value, context.mode, level)
        if load_reserved:
            at_cr3_load.append(f"{name} bits {load_reserved:#x} are reserved at MOV CR3 (#GP, not #PF)")
    notes = tuple(at_cr3_load)
    if found:
        name, value, reserved = found[0]
        why = f"{name} {value:#x} has reserved bits {reserved:#x} set"
        if reserved >> 63 and nxe is False:
            why += " (bit 63 without EFER.NXE)"
        if error is not None and not error & PF_RSVD:
            why += "; but the error code's RSVD=0: the CPU did not see them"
        return _fired(why, "Reserved-bit fault", context, " (a corrupt or foreign entry)", notes=notes,
                      stops=f"not reached: reserved bits in {name}")
    candidates = _reserved_candidates(walk, context) if error is not None and error & PF_RSVD else []
    if candidates:
        return _fired("the error code's RSVD=1: the CPU found a reserved bit; " +
                      "; ".join(text for _, text in candidates), "Reserved-bit fault", context,
                      " (a corrupt or foreign entry)", notes=notes,
                      stops=f"not reached: a reserved bit in {candidates[0][0]} (error code RSVD=1)")
    if nxe is None:
        return Verdict(NOT_EVALUATED, "EFER unknown: bit 63 may be reserved (NXE=0) (give --efer)", notes=notes)
    high = _reserved_candidates(walk, context) if error is None else []
    if high:
        return Verdict(NOT_EVALUATED, "the error code (its RSVD bit) unknown and " + high[0][1], notes=notes,
                       missing=("MAXPHYADDR unknown and an entry has address bits at or above 36: whether they are "
                                "reserved is unknown (give --maxphyaddr or --error)",))
    why = "no reserved bits" + walk.partial()
    if context.maxphyaddr is None:
        why += "; MAXPHYADDR unknown: 52 used (bits between the real MAXPHYADDR and 51 not checked)"
    if error is not None and error & PF_RSVD:
        why += "; yet the error code's RSVD=1: the entry changed since the fault"
    return Verdict(PASSED, why, notes=notes)


# The lowest MAXPHYADDR of a CPU with PAE or long mode (SDM vol. 3A §4.1.4: 36 bits).
MIN_MAXPHYADDR = 36
RSVD_WITHOUT_P = ("the error code has RSVD=1 with P=0, which the SDM does not allow (RSVD is set only with P=1, "
                  "a reserved bit of a present entry): QEMU's TCG (7.0 and later) reports reserved-bit faults "
                  "without P, and Linux then prints \"not-present page\"; taken as a reserved-bit fault")


def _reserved_candidates(walk, context):
    """When the error code says RSVD=1 but no bit is reserved under what is assumed (MAXPHYADDR 52,
    EFER.NXE=1): ``[(entry name, text)]`` of the bits that would be, with what they need (address
    bits 36-51, bit 63)."""
    out = []
    for name, value in walk.levels:
        if not value & ENTRY_P:
            break
        high = value & ((1 << 52) - 1) & ~((1 << MIN_MAXPHYADDR) - 1)
        if high and context.maxphyaddr is None:
            bit = high.bit_length() - 1
            out.append((name, f"{name} {value:#x} has address bit {bit} set: reserved if MAXPHYADDR <= {bit} "
                               "(MAXPHYADDR unknown, 52 assumed: give --maxphyaddr)"))
        if value >> 63 and context.nxe is None and not (context.mode == "pae" and name == "PDPTE"):
            out.append((name, f"{name} {value:#x} has bit 63 set: reserved if EFER.NXE=0 (EFER unknown)"))
    return out


def write_rule(access, walk, context) -> Verdict:
    """A write needs RW=1 at every level; a supervisor write only with CR0.WP=1 (a shadow-stack
    write needs the leaf read-only instead: see :func:`shadow_stack_rule`)."""
    kind, shadow = access.kind, access.shadow_stack
    if context.stopped:
        return Verdict(NOT_EVALUATED, context.stopped)
    if kind is not None and kind != "write":
        return Verdict(PASSED, f"a {kind}: RW not consulted")
    if not has_entries(walk):
        return Verdict(NOT_EVALUATED, NO_ENTRIES)
    if kind is None:
        return Verdict(NOT_EVALUATED, "access kind unknown (no error code, no decodable instruction)")
    levels, last = walk.rights_levels(), walk.leaf()
    read_only = [name for name, value in levels
                 if not value & ENTRY_RW and not (shadow and last and name == last[0])]
    if not read_only:
        why = "RW=1 at " + ", ".join(name for name, _ in levels) + walk.partial()
        if shadow:
            why += " (a shadow-stack write needs the leaf read-only: see shadow-stack)"
        return Verdict(PASSED, why)
    base = f"{read_only[0]} RW=0"
    title, detail = "Write-protection fault", (" (copy-on-write, a read-only mapping, or a page table Xen keeps "
                                               "read-only for a PV guest)")
    if access.user:
        return _fired(f"a user write; {base}", title, context, detail)
    if context.cr0_wp is True:
        return _fired(f"a supervisor write with CR0.WP=1 ({context.wp_source}); {base}", title, context, detail)
    if context.cr0_wp is False:
        return Verdict(PASSED, f"{base}, but a supervisor write with CR0.WP=0 ignores RW ({context.wp_source})")
    if access.user is False:
        return Verdict(NOT_EVALUATED, f"{base}; CR0 unknown: a supervisor write to a read-only page faults only "
                                      "with CR0.WP=1 (give --cr0)")
    return Verdict(NOT_EVALUATED, f"{base}; privilege and CR0 unknown")


def user_rule(access, walk, context) -> Verdict:
    """A user access needs US=1 at every level (supervisor accesses to user pages: SMEP, SMAP)."""
    if context.stopped:
        return Verdict(NOT_EVALUATED, context.stopped)
    if access.user is False:
        return Verdict(PASSED, "a supervisor access: US not required (user pages: see SMEP/SMAP)")
    if not has_entries(walk):
        return Verdict(NOT_EVALUATED, NO_ENTRIES)
    levels = walk.rights_levels()
    supervisor = [name for name, value in levels if not value & ENTRY_US]
    if not supervisor:
        why = "US=1 at " + ", ".join(name for name, _ in levels) + walk.partial()
        if access.guest == "pv64":
            why += ("; the 64-bit PV kernel runs in ring 3, so Xen sets US=1 on every guest page "
                    "(kernel pages are marked by bit 52, _PAGE_GUEST_KERNEL)")
        return Verdict(PASSED, why)
    if access.user:
        return _fired(f"a user-mode access; {supervisor[0]} US=0", "User access to a supervisor page", context)
    return Verdict(NOT_EVALUATED, f"{supervisor[0]} US=0; privilege unknown (no error code, no CS)")


def nx_rule(access, walk, context) -> Verdict:
    """An instruction fetch needs XD=0 at every level (with EFER.NXE=1; bit 63 is reserved otherwise)."""
    kind = access.kind
    if context.stopped:
        return Verdict(NOT_EVALUATED, context.stopped)
    if kind is not None and kind != "fetch":
        return Verdict(PASSED, f"a {kind}, not an instruction fetch: XD not consulted")
    if not has_entries(walk):
        return Verdict(NOT_EVALUATED, NO_ENTRIES)
    if kind is None:
        return Verdict(NOT_EVALUATED, "access kind unknown")
    if context.mode == "2level":
        return Verdict(PASSED, "2-level paging has no XD bit")
    execute_disabled = [name for name, value in walk.rights_levels() if value >> 63]
    if not execute_disabled:
        return Verdict(PASSED, "XD=0 at every level" + walk.partial())
    name = execute_disabled[0]
    if context.nxe:
        return _fired(f"an instruction fetch; {name} XD=1 with EFER.NXE=1", "No-execute fault", context)
    if context.nxe is False:
        return Verdict(PASSED, f"{name} bit 63 set but EFER.NXE=0 (reserved: see reserved)")
    return Verdict(NOT_EVALUATED, f"{name} bit 63 set; EFER unknown (give --efer)")


def smep_rule(access, walk, context) -> Verdict:
    """SMEP: a supervisor instruction fetch from a user page with CR4.SMEP=1 (as the CPU had it)."""
    kind = access.kind
    if context.stopped:
        return Verdict(NOT_EVALUATED, context.stopped)
    if kind is None:
        fetch = (None, "access kind unknown")
    else:
        fetch = (kind == "fetch", "an instruction fetch" if kind == "fetch" else f"a {kind}, not an instruction fetch")
    smep = cr4_bit(decode.CR4_SMEP, "SMEP", access, context)
    status, why = all_of([fetch, supervisor_access(access), user_page(walk), smep.condition])
    if status == FIRED:
        return _fired(why, "SMEP violation", context, missing=smep.missing)
    return Verdict(status, why, missing=smep.missing)


def smap_rule(access, walk, context) -> Verdict:
    """SMAP: a supervisor data access to a user page with CR4.SMAP=1 (as the CPU had it) and EFLAGS.AC=0,
    or an implicit one (reference §7.4). When a fixed Xen cleared SMAP for a 32-bit PV kernel and the
    rule would fire otherwise, the cause says to look elsewhere."""
    kind = access.kind
    if context.stopped:
        return Verdict(NOT_EVALUATED, context.stopped)
    if kind is None:
        data = (None, "access kind unknown")
    else:
        data = (kind != "fetch", f"a data {kind}" if kind != "fetch" else
                "an instruction fetch (SMAP covers data accesses)")
    smap = cr4_bit(decode.CR4_SMAP, "SMAP", access, context)
    others = [data, supervisor_access(access), user_page(walk), ac_clear(access, context)]
    status, why = all_of(others[:3] + [smap.condition] + others[3:])
    if status == FIRED:
        return Verdict(FIRED, why, cause=_smap_cause(access, walk, context), missing=smap.missing)
    otherwise = None
    if status == PASSED and smap.xen_cleared and all(holds is True for holds, _ in others):
        otherwise = (f"Xen would have cleared SMAP while this 32-bit PV kernel ran: look elsewhere (Xen "
                     f"{context.version} has the fix; the SMAP rule would otherwise fire for this supervisor "
                     "access with AC=0 to a user page)")
        if walk is not None and not walk.complete:
            otherwise += (f"; the entries given allow the access, {', '.join(walk.missing) or 'other levels'} "
                          "not checked")
    return Verdict(status, why, otherwise=otherwise, missing=smap.missing)


def _smap_cause(access, walk, context):
    """``SMAP violation at CR2 ...: <who> made a supervisor <kind> with EFLAGS.AC=0 to a user page ...``"""
    who = ""
    if access.guest == "pv32" and access.cpl == 1:
        who = "the 32-bit PV guest kernel (ring 1, CPL 1) "
    elif access.cpl is not None:
        who = f"code at CPL {access.cpl} "
    ac = "with EFLAGS.AC=0 " if context.eflags is not None and not context.eflags & EFLAGS_AC else ""
    if access.implicit:
        ac = "(an implicit supervisor access: EFLAGS.AC ignored) "
    elif access.actor == "xen":
        who = "Xen (CPL 0) " + (f"for the {access.on_behalf_of} guest " if access.on_behalf_of else "")
    last = leaf(walk)
    allows = f" that its {last[0]} allows ({last[0]} {last[1]:#x})" if last is not None else ""
    tail = ""
    if access.guest == "pv32" and context.cr4 is not None:
        tail = (f"; Xen {context.version} left CR4.SMAP=1 while guest code ran" if context.version else
                "; CR4.SMAP=1 was live if this Xen lacks the 4.5.4/4.6.3/4.7.0 fix")
        if context.guest_cr4 is not None and not context.guest_cr4 & decode.CR4_SMAP:
            tail += " (the guest's own CR4 view shows SMAP=0, so it never uses stac/clac)"
    return (f"SMAP violation{context.where}: {who}made a supervisor {access.kind_text} {ac}to a user page"
            f"{allows}{tail}.")


def pkeys_rule(access, walk, context) -> Verdict:
    """Protection keys: with CR4.PKE=1 and IA-32e paging, PKRU's AD (any data access) or WD (writes:
    user ones, supervisor ones with CR0.WP=1) bit for the leaf's key forbids the access to a user page."""
    cr4, mode, kind = context.cr4, context.mode, access.kind
    if context.stopped:
        return Verdict(NOT_EVALUATED, context.stopped)
    if cr4 is None:
        enabled = (None, "CR4 unknown: protection keys not evaluated (give --cr4)")
    else:
        enabled = (bool(cr4 & decode.CR4_PKE), f"CR4.PKE={int(bool(cr4 & decode.CR4_PKE))}")
    long_mode = mode in ("4level", "5level")
    ia32e = ((None, "paging mode unknown") if mode is None else
             (long_mode, f"{mode} paging" + ("" if long_mode else ": protection keys need IA-32e paging")))
    data = ((None, "access kind unknown") if kind is None else
            (kind != "fetch", "a data access" if kind != "fetch" else "an instruction fetch: keys do not apply"))
    page = user_page(walk)
    conditions = [enabled, ia32e, data, page, _pkru_forbids(access, walk, context)]
    if access.guest in PV_GUESTS:
        conditions.insert(0, (False, "Xen disables protection keys for PV guests (PTE bit 62 is _PAGE_GNTTAB)"))
    status, why = all_of(conditions)
    if status == NOT_EVALUATED and access.error is not None and not has_entries(walk):
        status, why = ((FIRED, "from the error code (PK=1)") if access.error & PF_PK else
                       (PASSED, "from the error code (PK=0)"))
    notes = ()
    if cr4 is not None and cr4 & CR4_PKS and page[0] is False:
        notes = ("CR4.PKS=1: supervisor protection keys (IA32_PKRS) are not evaluated",)
    if status == FIRED:
        return _fired(why, "Protection-key violation", context, notes=notes)
    return Verdict(status, why, notes=notes)


def _pkru_forbids(access, walk, context):
    """The PKRU condition of :func:`pkeys_rule` for the leaf entry's key."""
    pkru, kind = context.pkru, access.kind
    last = leaf(walk)
    if pkru is None:
        return None, "PKRU unknown (give --pkru)"
    if last is None:
        return None, f"the leaf entry (its key) is unknown: {NO_ENTRIES}"
    key = last[1] >> 59 & 0xF
    access_disabled, write_disabled = pkru >> (2 * key) & 1, pkru >> (2 * key + 1) & 1
    if access_disabled:
        return True, f"PKRU {pkru:#x}: AD=1 for key {key} (no data access)"
    if write_disabled and kind == "write" and (access.user or context.cr0_wp):
        return True, f"PKRU {pkru:#x}: WD=1 for key {key} and a write" + ("" if access.user else " with CR0.WP=1")
    if write_disabled and kind == "write" and context.cr0_wp is None:
        return None, f"PKRU WD=1 for key {key}; a supervisor write needs CR0.WP=1 and CR0 is unknown"
    return False, f"PKRU {pkru:#x} allows this {kind} for key {key}"


def shadow_stack_rule(access, walk, context) -> Verdict:
    """A shadow-stack access (error code SS=1, CR4.CET=1) needs a shadow-stack leaf (RW=0, D=1), RW=1
    above it, and US matching the access's privilege."""
    cr4, shadow = context.cr4, access.shadow_stack
    last = leaf(walk)
    if cr4 is not None and not cr4 & CR4_CET and not shadow:
        return Verdict(PASSED, f"CR4.CET=0: no shadow stacks (CR4 {cr4:#x})")
    if shadow is None:
        return Verdict(NOT_EVALUATED, "error code unknown: the SS bit (shadow-stack access) is only in the error code")
    if not shadow:
        why = "not a shadow-stack access (error code SS=0)"
        if (last is not None and not last[1] & ENTRY_RW and last[1] & ENTRY_D and access.kind == "write"
                and cr4 is not None and cr4 & CR4_CET):
            why += f"; the page is a shadow-stack page ({last[0]} RW=0 D=1): ordinary writes fault (see write)"
        return Verdict(PASSED, why)
    if context.stopped:
        return Verdict(NOT_EVALUATED, context.stopped)
    if last is None:
        return Verdict(NOT_EVALUATED, f"a shadow-stack access; the leaf entry is unknown: {NO_ENTRIES}")
    name, value = last
    problems = []
    if value & ENTRY_RW or not value & ENTRY_D:
        problems.append(f"{name} is not a shadow-stack page (needs RW=0, D=1)")
    upper_read_only = [upper for upper, entry in rights_levels(walk) if upper != name and not entry & ENTRY_RW]
    if upper_read_only:
        problems.append(f"{upper_read_only[0]} RW=0 (shadow-stack pages need RW=1 above the leaf)")
    all_user = user_page(walk)[0]
    if access.user is not None and all_user is not None and all_user != access.user:
        problems.append("a user shadow-stack access to a supervisor page" if access.user
                        else "a supervisor shadow-stack access to a user page")
    notes = ("the error code has SS=1 but CR4.CET=0: they disagree",) if cr4 is not None and not cr4 & CR4_CET else ()
    if problems:
        return _fired("a shadow-stack access; " + "; ".join(problems), "Shadow-stack violation", context, notes=notes)
    return Verdict(PASSED, f"a shadow-stack access to a shadow-stack page ({name} RW=0 D=1)", notes=notes)


# The rules explain() runs, in this order; a new rule is one function above and one row here.
RULES = (
    ("present", present_rule),
    ("reserved", reserved_rule),
    ("write", write_rule),
    ("user", user_rule),
    ("nx", nx_rule),
    ("smep", smep_rule),
    ("smap", smap_rule),
    ("pkeys", pkeys_rule),
    ("shadow-stack", shadow_stack_rule),
)
