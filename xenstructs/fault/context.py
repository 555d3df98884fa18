"""What the rules read besides the access and the walk (:class:`Context`): the paging mode, EFER.NXE,
CR0.WP, the CR4 the CPU used and the guest's view of it, EFLAGS, PKRU, the Xen version; and
``stopped``, set by the rule loop once a rule has ended the walk (not present, reserved bits).

The mode, NXE and WP may be inferred (PV guests' fixed table formats, the error code's RSVD bit, Xen
running PV guests with CR0.WP=1); each inference says so in the sources, notes or missing pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .. import decode
from .state import PF_RSVD, PV_GUESTS


@dataclass(frozen=True)
class Context:
    mode: Optional[str]          # the paging mode (given or inferred)
    nxe: Optional[bool]          # EFER.NXE (given or inferred)
    cr0_wp: Optional[bool]       # CR0.WP (given, or 1 for PV guests)
    wp_source: Optional[str]     # where cr0_wp comes from
    cr2: Optional[int]
    cr4: Optional[int]           # the CR4 the CPU used (for a PV guest: Xen's)
    guest_cr4: Optional[int]     # a PV guest's own view of CR4
    eflags: Optional[int]
    pkru: Optional[int]
    maxphyaddr: Optional[int]
    version: Optional[str]       # the Xen version as given (validated by explain)
    stopped: Optional[str] = None   # "not reached: ..." once a rule ended the walk

    @property
    def where(self) -> str:
        """``" at CR2 0x..."`` for the cause sentences, ``""`` when CR2 is unknown."""
        return f" at CR2 {self.cr2:#x}" if self.cr2 is not None else ""


def infer_mode(state, guest, findings):
    """The paging mode: given, else fixed by the PV guest kind, else from CR0/CR4/EFER. Sets
    ``state.mode`` (and its source) to what was found."""
    mode = state.mode
    if mode is None and guest == "pv32":
        mode = "pae"
        state.sources["mode"] = "32-bit PV guests on 64-bit Xen use PAE page tables"
    elif mode is None and guest == "pv64":
        mode = "4level"
        state.sources["mode"] = "64-bit PV guests use 4-level page tables"
    if mode is None and state.cr4 is not None:
        mode = decode.mode_from_registers(state.cr0, state.cr4, state.efer)
        if mode:
            state.sources["mode"] = "from CR0/CR4/EFER"
    state.mode = mode
    if mode is None:
        findings.missing.append("paging mode unknown: reserved bits not checked (give --mode)")
    if guest == "pv32" and mode == "pae":
        findings.notes.append("a 32-bit PV guest's PAE tables are walked by the CPU in long mode (compat), "
                              "under Xen's L4: bits 52-62 are ignored there, not reserved")
    return mode


def infer_nxe(state, mode, walk, findings):
    """EFER.NXE: given, False for 2-level paging, or inferred from the error code when an entry of the
    walk has bit 63 set (RSVD=0: the CPU did not find it reserved, so NXE=1); None when unknown."""
    if state.efer is not None:
        return bool(state.efer & decode.EFER_NXE)
    if mode == "2level":
        return False
    if walk is None:
        return None
    bit63 = [name for name, value in walk.levels
             if value & 1 and value >> 63 and not (mode == "pae" and name == "PDPTE")]
    if not bit63:
        return True                # irrelevant: no entry has bit 63
    if state.error is not None and not state.error & PF_RSVD:
        state.sources["efer"] = (f"EFER unknown: NXE=1 inferred (bit 63 is set in {bit63[0]} and the error "
                                 "code's RSVD=0: the CPU did not find it reserved)")
        findings.notes.append(state.sources["efer"])
        return True
    findings.missing.append(f"EFER unknown: bit 63 of {bit63[0]} is XD (NXE=1) or reserved (NXE=0) (give --efer)")
    return None


def cr0_write_protect(state, guest):
    """``(CR0.WP, where it comes from)``; Xen always runs PV guests with WP=1; ``(None, None)`` unknown."""
    if state.cr0 is not None:
        return bool(state.cr0 & decode.CR0_WP), f"CR0 {state.cr0:#x}"
    if guest in PV_GUESTS:
        return True, ("CR0 unknown; Xen always runs PV guests with CR0.WP=1 (writable page-table emulation "
                      "needs it)")
    return None, None


def build_context(state, guest, mode, walk, findings) -> Context:
    """The :class:`Context` of ``state``; sets ``walk.nxe`` to the NXE found."""
    nxe = infer_nxe(state, mode, walk, findings)
    if walk is not None:
        walk.nxe = nxe
    cr0_wp, wp_source = cr0_write_protect(state, guest)
    return Context(mode=mode, nxe=nxe, cr0_wp=cr0_wp, wp_source=wp_source, cr2=state.cr2, cr4=state.cr4,
                   guest_cr4=state.guest_cr4, eflags=state.eflags, pkru=state.pkru,
                   maxphyaddr=state.maxphyaddr, version=state.xen)
