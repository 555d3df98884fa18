""":func:`explain`: infer the access and the context, run :data:`~.rules.RULES` in order, name one cause."""

from __future__ import annotations

from dataclasses import replace

from .. import decode
from ..errors import XenscopeError
from ..xen.release import parse_version
from .access import infer_access, who_accessed
from .assumptions import alternatives, assumed_cause, emulator_note
from .context import build_context, infer_mode
from .rules import FIRED, NOT_EVALUATED, RULES
from .state import GUESTS, PF_I, PF_P, PF_W, PV_GUESTS, Explanation, FaultState, Findings
from .walk import walk_dict, walk_view

_STATE_FIELDS = ("cr2", "error", "ip", "cs", "cr0", "cr3", "cr4", "guest_cr4", "efer", "eflags", "mode", "pkru",
                 "xen", "maxphyaddr", "bits", "accessor", "kind")


def explain(state: FaultState, walk=None, insn=None) -> Explanation:
    """Evaluate every rule for ``state`` (and a :class:`~xenstructs.paging.Walk` of CR2 if given).

    ``state`` gains what was inferred (the paging mode, the guest kind, their sources).

    :param insn: instruction bytes at IP (default ``state.insn``)
    :raises XenscopeError: a value of ``state`` is invalid (error code, mode, guest, Xen version, an
        entry the paging mode does not have)
    """
    _validate(state)
    findings = Findings()
    who = who_accessed(state, findings)
    guest, cpl = who.guest, who.cpl
    mode = infer_mode(state, guest, findings)
    access = infer_access(state, who, mode, insn if insn is not None else state.insn, findings)
    view = walk_view(state, walk)
    context = build_context(state, guest, mode, view, findings)
    verdicts = []
    for name, rule in RULES:
        verdict = rule(access, view, context)
        verdicts.append((name, verdict))
        findings.notes.extend(verdict.notes)
        findings.missing.extend(verdict.missing)
        if verdict.stops and not context.stopped:
            context = replace(context, stopped=verdict.stops)
    findings.notes.extend(_guest_cr4_notes(state, guest))
    _compare_with_error_code(access.instruction, state.error)
    rules = [{"rule": name, "status": verdict.status, "why": verdict.why} for name, verdict in verdicts]
    found = [] if any(verdict.status == FIRED for _, verdict in verdicts) else alternatives(access, view, context)
    note = emulator_note(access, found)
    if note:
        findings.notes.append(note)
    cause, spurious = _cause(verdicts, rules, access, view, context, found)
    return Explanation(rules=rules, cause=cause, spurious=spurious, assumed=found,
                       error=decode.decode_pf(state.error) if state.error is not None else None, cpl=cpl,
                       walk=walk_dict(view, state, walk), access=access.to_dict(), missing=findings.unique_missing(),
                       notes=findings.notes, insn=access.instruction, state=_state_dict(state, guest, context.nxe))


def _validate(state):
    error = state.error
    if error is not None and (error < 0 or error >> 32):
        raise XenscopeError(f"error code {error:#x} does not fit in 32 bits")
    if state.mode is not None and state.mode not in decode.MODES:
        raise XenscopeError(f"unknown paging mode {state.mode!r}: use one of {', '.join(decode.MODES)}")
    if state.guest is not None and state.guest not in GUESTS:
        raise XenscopeError(f"unknown guest kind {state.guest!r}: use one of {', '.join(GUESTS)}")
    if state.xen is not None:
        parse_version(state.xen)


def _cause(verdicts, rules, access, walk, context, found):
    """``(cause, spurious)``: the first rule that fired; else what a rule says instead (Xen cleared
    SMAP); else the rule an assumed input would make fire (``found``: :func:`.assumptions.alternatives`);
    else a spurious fault when every rule passed on a complete walk; else what is not known."""
    where = context.where
    fired = [(name, verdict) for name, verdict in verdicts if verdict.status == FIRED]
    otherwise = next((verdict.otherwise for _, verdict in verdicts if verdict.otherwise), None)
    unevaluated = [rule for rule in rules if rule["status"] == NOT_EVALUATED]
    if fired:
        name, verdict = fired[0]
        return verdict.cause or f"The {name} rule fires{where}: {verdict.why}.", False
    if otherwise:
        return otherwise, False
    instead = assumed_cause(access, found, where)
    if instead:
        return instead, False
    if not unevaluated and walk is not None and walk.complete:
        cause = (f"Spurious fault{where}: the page tables allow this {access.text} now (every rule passes), so the "
                 "CPU faulted on a stale TLB entry or the mapping was fixed up after the fault (lazy fixup such "
                 "as i386 vmalloc_fault copying a PDE, or a permission upgrade without a TLB flush)")
        if access.error is not None and not access.error & PF_P:
            cause += "; the error code's P=0 says it was not present then"
        return cause, True
    if not unevaluated:
        allowed_by = ", ".join(name for name, _ in walk.levels) if walk is not None else "them"
        unchecked = ", ".join(walk.missing) if walk is not None and walk.missing else "the other levels"
        return (f"No rule fires{where} with the entries given: the access is allowed by {allowed_by}; "
                f"{unchecked} not checked (spurious if they allow it too)"), False
    return (f"No rule fires{where} with what is known; not evaluated: " +
            "; ".join(f"{rule['rule']} ({rule['why']})" for rule in unevaluated)), False


def _guest_cr4_notes(state, guest):
    """A PV guest whose CR4 view differs from the real CR4 in SMEP/SMAP does not know to use stac/clac."""
    if state.guest_cr4 is None or state.cr4 is None or guest not in PV_GUESTS:
        return []
    differ = [(bit, name) for bit, name in ((decode.CR4_SMEP, "SMEP"), (decode.CR4_SMAP, "SMAP"))
              if (state.guest_cr4 ^ state.cr4) & bit]
    if not differ:
        return []

    def bits_of(cr4):
        return ", ".join(f"{name}={int(bool(cr4 & bit))}" for bit, name in differ)
    return [f"the guest's CR4 view {state.guest_cr4:#x} ({bits_of(state.guest_cr4)}) differs from the CPU's CR4 "
            f"{state.cr4:#x} ({bits_of(state.cr4)}): the guest does not know to use stac/clac"]


def _compare_with_error_code(decoded, error):
    """Add ``agrees`` and ``agreement`` to the decoded instruction: does it write memory as the error
    code's W bit says?"""
    if decoded is None:
        return
    if error is None or error & PF_I:
        decoded["agrees"] = None
        decoded["agreement"] = "no error code to compare with" if error is None else "an instruction fetch fault"
        return
    write = bool(error & PF_W)
    decoded["agrees"] = decoded["writes_memory"] == write
    if decoded["agrees"]:
        decoded["agreement"] = (f"agrees with the error code (W={int(write)}): the instruction "
                                f"{'writes' if write else 'does not write'} memory")
    else:
        decoded["agreement"] = (f"disagrees with the error code (W={int(write)}): the instruction "
                                f"{'writes' if decoded['writes_memory'] else 'does not write'} memory — "
                                "an implicit access, or IP is not the faulting instruction")


def _state_dict(state, guest, nxe):
    out = {name: getattr(state, name) for name in _STATE_FIELDS}
    out["guest"] = guest
    out["nxe"] = nxe
    out["entries"] = dict(state.entries)
    out["insn"] = bytes(state.insn).hex() if state.insn else None
    out["sources"] = dict(state.sources)
    return out
