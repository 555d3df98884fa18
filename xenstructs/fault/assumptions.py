"""When no rule fires: which inputs were taken rather than known, and what each would change.

An input is *assumed* when the explainer had to take it (:attr:`~.access.Access.assumed`: the
privilege of a 64-bit PV guest's access, whose error code carries the guest's mode and not the
CPU's; the privilege taken from CPL 3 without an error code) or inferred it (EFER.NXE). For each,
:func:`alternatives` runs the rules again with the other value and reports the rules that fire.
The explainer then says "no rule fires for the access as assumed; with X, rule R fires" instead of
calling the fault spurious.

The other privilege at CPL 3 is a supervisor access, i.e. an implicit one (descriptor tables, the
TSS; SMAP checks it whatever EFLAGS.AC). Emulators add one: QEMU's TCG IRET/far RET (7.2:
``helper_ret_protected`` pops the frame with ``cpu_ldq_kernel_ra``, the supervisor index that
enforces SMAP when CR4.SMAP=1) reads the frame as supervisor accesses at CPL 3, where hardware makes
user accesses; a 64-bit PV guest kernel (ring 3, every page US=1) then takes an SMAP fault on its own
stack. Seen on Xen 4.17.7 under QEMU 7.2 ``-cpu max`` (tests/realsys/test_xen_smap_crash.py).
"""

from dataclasses import replace

from .rules import FIRED, RULES

_RETURN_MNEMONICS = ("iret", "iretd", "iretq", "retf", "retfq", "lret", "lretq")


def _rerun(access, walk, context):
    """``[(rule name, verdict)]`` of every rule that fires for this access."""
    fired = []
    for name, rule in RULES:
        verdict = rule(access, walk, context)
        if verdict.stops and not context.stopped:
            context = replace(context, stopped=verdict.stops)
        if verdict.status == FIRED:
            fired.append((name, verdict))
    return fired


def alternatives(access, walk, context):
    """One dict per assumed input: ``{input, assumed, why, alternative, fires: [rule], cause}``
    (``cause``: the first fired rule's cause under the alternative, None when none fires)."""
    out = []
    for name, value, why in access.assumed:
        if name == "privilege" and value == "user" and access.cpl == 3:
            other = replace(access, user=False, implicit=True, guest=None, assumed=[])
            label = "a supervisor access at CPL 3 (implicit: descriptor tables, TSS; or an emulator's IRET)"
        else:
            continue
        fired = _rerun(other, walk, context)
        out.append({"input": name, "assumed": value, "why": why, "alternative": label,
                    "fires": [rule for rule, _ in fired],
                    "cause": (fired[0][1].cause or fired[0][1].why) if fired else None})
    if context.nxe is True and walk is not None and any(value >> 63 for _, value in walk.levels):
        other_context = replace(context, nxe=False)
        fired = _rerun(access, walk, other_context)
        if fired:
            out.append({"input": "EFER.NXE", "assumed": "1", "why": "inferred (EFER unknown)",
                        "alternative": "EFER.NXE=0 (bit 63 reserved)", "fires": [rule for rule, _ in fired],
                        "cause": fired[0][1].cause or fired[0][1].why})
    return out


def emulator_note(access, found):
    """A note when the instruction at IP is an IRET/far RET at CPL 3 and SMAP fires only for a
    supervisor access: the QEMU TCG behaviour of the module docstring."""
    insn = access.instruction
    if insn is None or access.cpl != 3 or not any("smap" in item["fires"] for item in found):
        return None
    if insn["mnemonic"].split()[-1] not in _RETURN_MNEMONICS:
        return None
    return (f"the instruction at IP is {insn['text']}: it reads its return frame from the stack. On hardware "
            "at CPL 3 those are user accesses (SMAP does not apply); QEMU's TCG (7.2: helper_ret_protected "
            "pops with cpu_ldq_kernel_ra, a supervisor access checked by SMAP) makes them supervisor accesses, "
            "which faults exactly so on a US=1 stack with CR4.SMAP=1: an emulator artefact, not a guest bug")


def assumed_cause(access, found, where):
    """The cause when no rule fired but an assumed input, changed, makes one fire; else None."""
    firing = [item for item in found if item["fires"]]
    if not firing:
        return None
    item = firing[0]
    return (f"No rule fires{where} for the {access.text} as assumed ({item['input']} = {item['assumed']}: "
            f"{item['why']}); with {item['alternative']} the {', '.join(item['fires'])} rule fires: "
            f"{item['cause']}")
