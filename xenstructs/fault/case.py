"""Gather one page fault's inputs and explain it: options, then a console/oops log, then a dump.

The ``fault`` command and ``xenscope check`` both call :func:`explain_fault`. Options win over the
log, the log over the dump (:meth:`~xenstructs.fault.state.FaultState.give` keeps the first value given).
With a dump the vCPU's registers (CR0/CR2/CR3/CR4, EFER, RIP, RFLAGS, CS) come from it, CR2 is
walked under CR3 (an option, else the log's register dump, else the dump's CPU) and the instruction at
IP is read through the walk of IP. Page-table entries: options, else the dump's walk, else the log's
page walk (compared with the dump's walk when both exist).
"""

from dataclasses import dataclass, fields
from typing import Optional

from ..errors import UsageError, XenscopeError
from ..xen.release import parse_version
from .explainer import explain
from .insn import parse_hex_bytes
from ..xen.console.faultlog import read_log
from .state import ENTRY_ORDER, FaultState

ENTRY_NAMES = (("pte", "PTE"), ("pde", "PDE"), ("pdpte", "PDPTE"), ("pml4e", "PML4E"), ("pml5e", "PML5E"))
REGISTERS = ("cr2", "error", "ip", "cs", "cr3", "cr4", "guest_cr4", "cr0", "efer", "eflags", "pkru")


@dataclass
class FaultInputs:
    """What the user says about the fault (each None when not given)."""
    cpu: int = 0
    log: Optional[str] = None
    cr2: Optional[int] = None
    error: Optional[int] = None
    ip: Optional[int] = None
    cs: Optional[int] = None
    eflags: Optional[int] = None
    insn: Optional[str] = None          # instruction bytes in hex
    bits: Optional[int] = None
    cr0: Optional[int] = None
    cr3: Optional[int] = None
    cr4: Optional[int] = None           # the CR4 the CPU used (for a PV guest: Xen's)
    guest_cr4: Optional[int] = None     # a PV guest's own view of CR4
    efer: Optional[int] = None
    mode: Optional[str] = None
    pkru: Optional[int] = None
    maxphyaddr: Optional[int] = None
    pte: Optional[int] = None
    pde: Optional[int] = None
    pdpte: Optional[int] = None
    pml4e: Optional[int] = None
    pml5e: Optional[int] = None
    xen: Optional[str] = None           # Xen version
    guest: Optional[str] = None         # pv32, pv64, hvm

    @classmethod
    def from_namespace(cls, namespace):
        """The inputs from an argparse namespace holding the same names."""
        return cls(**{f.name: getattr(namespace, f.name) for f in fields(cls)})


def _state_from_inputs(given):
    state = FaultState()
    for name in REGISTERS:
        state.give(name, getattr(given, name), f"--{name.replace('_', '-')} option")
    for option, name in ENTRY_NAMES:
        state.give(name, getattr(given, option), f"--{option} option")
    state.give("mode", given.mode, "--mode option")
    state.give("xen", given.xen, "--xen option")
    state.give("guest", given.guest, f"--{given.guest} option" if given.guest else None)
    state.give("maxphyaddr", given.maxphyaddr, "--maxphyaddr option")
    state.give("bits", given.bits, "--bits option")
    if given.insn:
        state.give("insn", parse_hex_bytes(given.insn), "--insn option")
    if given.xen:
        parse_version(given.xen)
    return state


def _add_log(state, path, notes):
    found, log_notes = read_log(path)
    notes.extend(log_notes)
    pv = (state.guest or "") in ("pv32", "pv64")
    for name, (value, source) in found.items():
        if name == "linux_cr4":
            # the guest printed its own CR4: a PV guest's view, the real one otherwise
            state.give("guest_cr4" if pv else "cr4", value, source + (" (the PV guest's view)" if pv else ""))
        else:
            state.give(name, value, source)
    if not found:
        notes.append(f"{path}: no page-fault lines recognised")


def _add_registers(state, target, cpu_number, notes):
    """The dump's registers of ``cpu_number``; True when the image is a PV guest's."""
    cpu = target.cpu(cpu_number)
    regs, source = cpu.regs, cpu.source
    pv_image = getattr(target, "m2p", None) is not None
    where = f"CPU {cpu_number} of the dump"
    names = (("cr0", "cr0"), ("cr2", "cr2"), ("cr3", "cr3"), ("efer", "efer"), ("rip", "ip"), ("cs", "cs"),
             ("rflags", "eflags"), ("eflags", "eflags"))
    if state.accessor is not None:
        # a log's crash block named the faulting context: the dump's CPU ran on after the crash
        names = tuple(pair for pair in names if pair[1] not in ("ip", "cs", "eflags"))
        if regs.get("rip") is not None and state.ip != regs["rip"]:
            notes.append(f"the dump's RIP {regs['rip']:#x} (CPU {cpu_number}) is not used: the log's crash block "
                         f"gives the faulting context (the dump was taken after it)")
    for reg, name in names:
        if regs.get(reg) is not None:
            state.give(name, regs[reg], f"{source.get(reg, 'registers')} ({where})")
    if regs.get("cr4") is not None:
        # a PV guest's image holds the guest's view of CR4; a host dump or an HVM guest the real one
        if pv_image:
            state.give("guest_cr4", regs["cr4"], f"{source.get('cr4', 'registers')} ({where}: the PV guest's view)")
        else:
            state.give("cr4", regs["cr4"], f"{source.get('cr4', 'registers')} ({where})")
    return pv_image


def _add_target(state, target, given, notes):
    """Registers from the target, then the walk of CR2 and the instruction bytes at IP:
    ``(walk, context)``, both None when nothing could be walked."""
    from ..context import resolve
    from ..paging import read_virt, walk
    pv_image = _add_registers(state, target, given.cpu, notes)
    if any(state.sources.get(name, "").startswith("--") for name in state.entries):
        notes.append("page-table entries given as options: the dump's walk of CR2 is not used")
        return None, None
    if state.cr2 is None:
        notes.append("CR2 unknown: nothing to walk (give --cr2)")
        return None, None
    try:
        # CR3 as the fault had it: an option, else the log's register dump, else the dump's CPU
        ctx = resolve(target, cr3=state.cr3, mode=given.mode, cpu=given.cpu, efer=given.efer,
                      cr4=given.guest_cr4 if pv_image and given.guest_cr4 is not None else given.cr4,
                      maxphyaddr=state.maxphyaddr)
    except XenscopeError as e:
        notes.append(f"no walk of CR2: {e}")
        return None, None
    if state.cr3 is not None:
        ctx.sources["cr3"] = state.sources.get("cr3", ctx.sources.get("cr3"))
    state.give("mode", ctx.paging.mode, ctx.sources.get("mode", "the dump"))
    fault_walk = walk(target, ctx.paging, state.cr2)
    if state.entries:
        notes.append(_compare_with_log(state, fault_walk))
    if state.insn is None and state.ip is not None:
        where = f"CPU {given.cpu} of the dump"
        for n in (16, 0x1000 - (state.ip & 0xFFF)):
            try:
                state.give("insn", read_virt(target, state.ip, min(n, 16), ctx.paging, ctx.paging.mode),
                           f"read at IP through the walk of IP ({where})")
                break
            except XenscopeError:
                continue
        if state.insn is None:
            notes.append(f"the bytes at IP {state.ip:#x} are not readable in the dump")
    return fault_walk, ctx


def _compare_with_log(state, fault_walk):
    """The log's page walk (Xen's, at fault time) against the dump's walk of CR2 (now): one note;
    the rules then use the dump's walk (the log's entries are dropped from ``state``)."""
    in_dump = {level.name: level.entry for level in fault_walk.levels if level.entry is not None}
    logged = dict(state.entries)
    for name in logged:
        state.sources.pop(name, None)
    state.entries.clear()
    differ = [f"{name} log {value:#x}, dump {in_dump.get(name, 0):#x}" if name in in_dump else f"{name} not in the dump"
              for name, value in logged.items() if in_dump.get(name) != value]
    names = ", ".join(name for name in ENTRY_ORDER if name in logged)
    if not differ:
        return (f"the dump's walk of CR2 has the entries the log's page walk printed ({names}): the tables did "
                "not change after the fault")
    return (f"the dump's walk of CR2 differs from the log's page walk at fault time ({'; '.join(differ)}): the "
            "rules use the dump's (the tables as dumped)")


def explain_fault(target=None, given=None):
    """Explain the fault that ``given`` (:class:`FaultInputs`), its log and ``target`` describe.

    :returns: the ``fault`` command's JSON (:meth:`~xenstructs.fault.Explanation.to_dict` plus the
        notes of the gathering and, with a dump, the walk's CR3 and sources)
    :raises UsageError: nothing to explain (no dump, no log, no CR2, error code or entries)
    """
    given = given or FaultInputs()
    notes = []
    state = _state_from_inputs(given)
    if given.log:
        _add_log(state, given.log, notes)
    fault_walk = ctx = None
    if target is not None:
        fault_walk, ctx = _add_target(state, target, given, notes)
    if target is None and state.cr2 is None and state.error is None and not state.entries:
        raise UsageError("nothing to explain: give a DUMP, --log FILE, or at least --cr2/--error")
    result = explain(state, walk=fault_walk).to_dict()
    result["notes"] = notes + result["notes"]
    if ctx is not None:
        result["walk"]["cr3"] = ctx.cr3
        result["walk"]["sources"] = ctx.sources
        if getattr(target, "m2p", None) is not None:
            result["walk"]["space"] = "machine"
    return result
