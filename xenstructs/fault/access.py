"""What the CPU was doing when it faulted (:class:`Access`): who made the access (which guest, or Xen),
at which CPL, whether the CPU saw a user or a supervisor access, implicit or not, a read, a write or a
fetch, a shadow-stack access or not; and the reasons for each belief.

Xen PV specifics (reference §2.2, §7.4): a 32-bit PV kernel runs in ring 1, so its accesses are
supervisor accesses; a 64-bit PV kernel runs in ring 3, so the CPU sees user accesses (Xen resets the
error code's U bit to the guest's mode when it reflects the fault).

Who made it (:func:`who_accessed`), first evidence wins: a log that says so (``state.accessor``: Xen's
crash block, :mod:`xenstructs.xen.console.crashstory`), CS = ``__HYPERVISOR_CS``, RIP in Xen's text
range, CPL 0 on a PV host (PV kernels run in ring 1 or 3); else the guest. An access Xen made (on a
guest's behalf or for itself) is judged at CPL 0 with the real CR4: SMAP and SMEP apply to the
guest's pages (US=1 at every level of a 64-bit PV guest's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional

from ..xen.release import (FLAT_RING1_CS, FLAT_RING3_CS, FLAT_RING3_CS32, FLAT_RING3_CS64, HYPERVISOR_CS,
                           in_xen_text)
from .insn import code_bits, decode_at_ip
from .state import GUEST_TEXT, PF_I, PF_SS, PF_U, PF_W, PFEC_IMPLICIT, PV_GUESTS

# Xen's flat code selectors (reference §2.2): selector -> (guest kind or "xen", what it is)
CS_NAMES = {FLAT_RING1_CS: ("pv32", "FLAT_RING1_CS: 32-bit PV kernel, ring 1"),
            FLAT_RING3_CS: ("pv32", "FLAT_RING3_CS (32-bit PV user, ring 3)"),
            FLAT_RING3_CS64: ("pv64", "FLAT_RING3_CS64: 64-bit PV guest, ring 3"),
            FLAT_RING3_CS32: ("pv64", "FLAT_RING3_CS32: 64-bit PV guest's compat user code, ring 3"),
            HYPERVISOR_CS: ("xen", "__HYPERVISOR_CS: Xen itself, ring 0")}


@dataclass
class Access:
    """The faulting access as the CPU made it.

    ``actor`` is who made it: ``"xen"`` (CS is Xen's own selector), the guest kind, or None when
    nothing says; ``actor_reason`` says why.

    ``user`` is the privilege the CPU checked (for a 64-bit PV kernel: user, whatever the guest-visible
    error code says; ``guest_kernel`` then tells kernel from user); None when neither the error code nor
    CS is known. ``kind`` is ``read``, ``write`` or ``fetch`` (None: unknown).
    """
    error: Optional[int]                # the error code, when known
    guest: Optional[str]                # pv32 pv64 hvm, given or inferred from CS; None: native or Xen
    cpl: Optional[int]                  # CS & 3
    actor: Optional[str]                # "xen", pv32 pv64 hvm, or None
    actor_reason: Optional[str]
    user: Optional[bool]
    implicit: bool                      # an implicit supervisor access (descriptor tables, TSS...)
    guest_kernel: Optional[bool]        # 64-bit PV only: the guest kernel (not its user space) made it
    kind: Optional[str]
    shadow_stack: Optional[bool]        # None: error code unknown
    instruction: Optional[dict] = None  # :func:`~.insn.disassemble` of the bytes at IP
    reasons: list = field(default_factory=list)   # what the privilege and the kind were taken from
    on_behalf_of: Optional[str] = None  # the guest kind an access by Xen was made for, when known
    assumed: list = field(default_factory=list)   # [(input, value, why)]: inputs taken, not known

    @property
    def privilege(self) -> str:
        """``user``, ``supervisor`` or ``unknown-privilege``."""
        return "unknown-privilege" if self.user is None else ("user" if self.user else "supervisor")

    @property
    def kind_text(self) -> str:
        return self.kind or "access of unknown kind"

    @property
    def text(self) -> str:
        """``"supervisor write"``, ``"user fetch"``, ``"unknown-privilege access of unknown kind"``..."""
        return f"{self.privilege} {self.kind_text}"

    def to_dict(self):
        return {"kind": self.kind, "shadow_stack": self.shadow_stack, "user": self.user,
                "implicit": self.implicit, "guest_kernel": self.guest_kernel,
                "source": "; ".join(self.reasons) or None, "actor": self.actor, "actor_reason": self.actor_reason,
                "cpl": self.cpl, "on_behalf_of": self.on_behalf_of,
                "assumed": [{"input": name, "value": value, "why": why} for name, value, why in self.assumed]}


class Who(NamedTuple):
    """:func:`who_accessed`: the guest kind, the CPL, and who made the access (``actor``), with why."""
    guest: Optional[str]
    cpl: Optional[int]
    actor: Optional[str]
    actor_reason: Optional[str]


def who_accessed(state, findings) -> Who:
    """The guest kind (given, or inferred from a Xen PV selector in CS), the CPL, and who made the
    access, with why (module docstring: the evidence, in order). An inferred guest is recorded in
    ``state.sources["guest"]``; an access by Xen is at CPL 0."""
    guest = state.guest
    cs = state.cs
    cpl = cs & 3 if cs is not None else None
    if cs in CS_NAMES:
        kind, text = CS_NAMES[cs]
        if guest is None and kind != "xen":
            guest = kind
            state.sources.setdefault("guest", f"inferred from CS {cs:#x} ({text})")
            findings.notes.append(f"CS {cs:#x} is {text}: taken as a {GUEST_TEXT[kind]}")
        elif guest is not None and kind not in (guest, "xen"):
            findings.notes.append(f"CS {cs:#x} is {text}, which does not fit a {GUEST_TEXT[guest]}")
        elif kind == "xen":
            findings.notes.append(f"CS {cs:#x} is {text}: the access is Xen's own")
    if cs is None and state.accessor != "xen":
        findings.missing.append("CS unknown: CPL not known (give --cs)")
    reason = _xen_evidence(state, guest, cpl)
    if reason is not None:
        if cpl not in (None, 0):
            findings.notes.append(f"{reason}, yet CS {cs:#x} says CPL {cpl}: judged at CPL 0 (Xen's)")
        return Who(guest, 0, "xen", reason)
    if state.accessor == "guest" and guest is not None:
        return Who(guest, cpl, guest, state.sources.get("accessor"))
    return Who(guest, cpl, guest, state.sources.get("guest") if guest else None)


def _xen_evidence(state, guest, cpl):
    """Why the access is Xen's, or None: a log, CS, RIP in Xen's text, or CPL 0 on a PV host."""
    if state.accessor == "xen":
        return state.sources.get("accessor") or "the log says Xen made it"
    if state.cs == HYPERVISOR_CS:
        return f"CS {state.cs:#x} is {CS_NAMES[HYPERVISOR_CS][1]}"
    if in_xen_text(state.ip):
        return (f"RIP {state.ip:#x} is in Xen's text (from XEN_VIRT_START: 0xffff82d040000000 in 4.14+, "
                f"0xffff82d080000000 before): Xen's own code, at CPL 0")
    if cpl == 0 and guest in PV_GUESTS:
        return (f"CPL 0 (CS {state.cs:#x}) on a PV host: only Xen runs in ring 0 (a PV kernel runs in ring "
                f"{1 if guest == 'pv32' else 3})")
    return None


def infer_access(state, who, mode, code, findings) -> Access:
    """The :class:`Access` of ``state``, given who made it (:func:`who_accessed`) and the paging mode
    (for the code size); ``code`` is the instruction bytes at IP, or None."""
    cpl = who.cpl
    guest = None if who.actor == "xen" else who.guest     # Xen's access: no PV-guest privilege rules
    assumed = []
    user, implicit, guest_kernel, reasons = _privilege(state, guest, cpl, findings, assumed)
    decoded = None
    if code:
        decoded = decode_at_ip(code, state.ip, state.bits or code_bits(state.cs, who.guest, mode), findings)
    kind, shadow, kind_reasons = _kind(state, decoded, findings)
    if user is None:
        findings.missing.append("privilege unknown: neither an error code nor CS")
    return Access(error=state.error, guest=guest, cpl=cpl, actor=who.actor, actor_reason=who.actor_reason,
                  user=user, implicit=implicit,
                  guest_kernel=guest_kernel, kind=kind, shadow_stack=shadow, instruction=decoded,
                  reasons=reasons + kind_reasons, on_behalf_of=who.guest if who.actor == "xen" else None,
                  assumed=assumed)


def _privilege(state, guest, cpl, findings, assumed):
    """``(user, implicit, guest_kernel, reasons)`` from the error code's U bit, else from the CPL;
    an input taken rather than known goes to ``assumed``."""
    error = state.error
    implicit = bool(error is not None and error & PFEC_IMPLICIT)
    guest_kernel = None
    reasons = []
    if error is not None:
        user = bool(error & PF_U)
        reasons.append(f"error code {error:#x}")
        if guest == "pv64":
            guest_kernel = not user
            if not user:
                findings.notes.append(
                    "64-bit PV kernel: taken as a user access (it runs in ring 3); Xen resets the error code's U "
                    "bit to the guest's mode when it reflects the fault, so U=0 here says guest kernel mode, not "
                    "what the CPU checked")
            user = True
            assumed.append(("privilege", "user", "the guest runs at CPL 3 and the error code's U bit is the guest's "
                                                 "mode (Xen rewrites it when it reflects the fault), not the CPU's"))
        elif not user and cpl == 3:
            implicit = True
            findings.notes.append("U=0 at CPL 3: an implicit supervisor access (descriptor table, TSS, "
                                  "shadow stack)")
        elif user and cpl is not None and cpl < 3:
            findings.notes.append(f"the error code says a user access (U=1) but CS says CPL {cpl}: they disagree")
    elif cpl is not None:
        user = cpl == 3
        reasons.append(f"CPL {cpl}" + (f" from CS {state.cs:#x}" if state.cs is not None else " (Xen's)"))
        if guest == "pv64" and state.ip is not None:
            guest_kernel = state.ip >> 63 == 1
        if user:
            assumed.append(("privilege", "user", "no error code: taken from CPL 3"))
    else:
        user = None
    if guest == "pv64" and cpl is not None and cpl != 3:
        findings.notes.append(f"a 64-bit PV guest runs in ring 3, yet CS says CPL {cpl}")
    return user, implicit, guest_kernel, reasons


def _kind(state, decoded, findings):
    """``(kind, shadow_stack, reasons)`` from the error code, else from CR2 vs IP or the instruction."""
    error = state.error
    if error is not None:
        kind = "fetch" if error & PF_I else ("write" if error & PF_W else "read")
        return kind, bool(error & PF_SS), []
    findings.missing.append("error code unknown (it is not in dumps: give --error): access kind and "
                            "the U, RSVD, PK, SS bits inferred or unknown")
    if state.kind is not None:
        return state.kind, None, [state.sources.get("kind", f"a {state.kind}")]
    if state.cr2 is not None and state.ip is not None and 0 <= state.cr2 - state.ip < 16:
        return "fetch", None, ["CR2 is at IP: an instruction fetch"]
    if decoded is not None:
        kind = "write" if decoded["writes_memory"] else "read"
        return kind, None, [f"the instruction at IP ({decoded['text']}): {decoded['why']}"]
    return None, None, []
