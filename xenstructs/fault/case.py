"""Gather one page fault's inputs and explain it: options, then a console/oops log, then a dump.

The ``fault`` command and ``xenscope check`` both call :func:`explain_fault`. Options win over the
log, the log over the dump (:meth:`~xenstructs.fault.state.FaultState.give` keeps the first value given).
With a dump the vCPU's registers (CR0/CR2/CR3/CR4, EFER, RIP, RFLAGS, CS) come from it, CR2 is
walked under CR3 (an option, else the log's register dump, else the dump's CPU) and the instruction
at IP is read through the walk of IP. A Linux CPU stopped after its fault (dumped on panic) holds the
fault's pt_regs on its stack: when its instruction fetches or addresses CR2, its RIP, CS and RFLAGS
come before the CPU's later ones; after a Xen crash block the dump's RIP, CS and RFLAGS are not the
fault's at all. Entries a log printed (an oops's or Xen's page walk, at fault time) are compared with
the dump's walk: the walk is used when they agree, the log's entries when they differ. EFER, not in
QEMU's notes, gets NXE=1 when the walk of the CPU's own stack has bit 63 set.
"""

from dataclasses import dataclass, fields
from typing import Optional

from ..errors import UsageError, XenscopeError
from ..xen.release import parse_version
from .explainer import explain
from .insn import parse_hex_bytes
from ..xen.console.faultlog import parse_log, read_log
from .state import FaultState

ENTRY_NAMES = (("pte", "PTE"), ("pde", "PDE"), ("pdpte", "PDPTE"), ("pml4e", "PML4E"), ("pml5e", "PML5E"))
REGISTERS = ("cr2", "error", "ip", "cs", "cr3", "cr4", "guest_cr4", "cr0", "efer", "eflags", "pkru")


@dataclass
class FaultInputs:
    """What the user says about the fault (each None when not given)."""
    cpu: int = 0
    log: Optional[str] = None
    log_lines: Optional[list] = None    # the log's text already read (a dump's console), instead of log
    log_name: Optional[str] = None      # what log_lines are, for the notes ("Xen's console ring in the dump")
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
        return cls(**{f.name: getattr(namespace, f.name) for f in fields(cls) if hasattr(namespace, f.name)})


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


def _add_log(state, path, notes, lines=None):
    """The fault's fields a log gives: the file at ``path``, or ``lines`` (named ``path``)."""
    found, log_notes = read_log(path) if lines is None else parse_log(lines)
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
    """The page fault's exception frame (:func:`_add_fault_frame`), the registers from the target,
    then the walk of CR2 and the instruction bytes at IP: ``(walk, context)``, both None when
    nothing could be walked. Entries the log printed are checked against the dump's walk."""
    from ..context import resolve
    from ..paging import walk
    pv_image = getattr(target, "m2p", None) is not None
    failure = None
    try:
        # CR3 as the fault had it: an option, else the log's register dump, else the dump's CPU
        ctx = resolve(target, cr3=state.cr3, mode=given.mode, cpu=given.cpu, efer=given.efer,
                      cr4=given.guest_cr4 if pv_image and given.guest_cr4 is not None else given.cr4,
                      maxphyaddr=state.maxphyaddr)
        if state.cr3 is not None:
            ctx.sources["cr3"] = state.sources.get("cr3", ctx.sources.get("cr3"))
    except XenscopeError as e:
        ctx, failure = None, e
    frame = None
    if ctx is not None and not pv_image and state.accessor is None:
        frame = _add_fault_frame(state, target, ctx, given.cpu, notes)
    _add_registers(state, target, given.cpu, notes)
    if ctx is not None and not pv_image:
        _infer_nxe_from_stack(state, target, ctx, given.cpu)
    from_options = any(state.sources.get(name, "").startswith("--") for name in state.entries)
    logged = bool(state.entries) and not from_options
    if state.entries and not logged:
        notes.append("page-table entries given as options: the dump's walk of CR2 is not used")
        return None, None, frame
    if state.cr2 is None:
        notes.append("CR2 unknown: nothing to walk (give --cr2)")
        return None, None, frame
    if ctx is None:
        notes.append(f"no walk of CR2: {failure}")
        return None, None, frame
    state.give("mode", ctx.paging.mode, ctx.sources.get("mode", "the dump"))
    fault_walk = walk(target, ctx.paging, state.cr2)
    if logged and not _log_agrees_with_walk(state, fault_walk, notes):
        return None, None, frame
    _read_insn(state, target, ctx, given.cpu, notes)
    return fault_walk, ctx, frame


def _read_insn(state, target, ctx, cpu, notes):
    """The instruction bytes at IP, read through the walk of IP (unless given or logged)."""
    from ..paging import read_virt
    if state.insn is not None or state.ip is None:
        return
    where = f"CPU {cpu} of the dump"
    for n in (16, 0x1000 - (state.ip & 0xFFF)):
        try:
            state.give("insn", read_virt(target, state.ip, min(n, 16), ctx.paging, ctx.paging.mode),
                       f"read at IP through the walk of IP ({where})")
            return
        except XenscopeError:
            continue
    notes.append(f"the bytes at IP {state.ip:#x} are not readable in the dump")


def _log_agrees_with_walk(state, fault_walk, notes):
    """Entries the log printed (an oops's page-table dump, Xen's page walk) against the dump's walk of
    CR2: when they agree the walk is used (every level, the frame); when one differs the log's
    fault-time entries are."""
    dumped = {level.name: level.entry for level in fault_walk.levels if level.entry is not None}
    differ = [f"{name} {value:#x} in the log, {dumped[name]:#x} in the dump" if name in dumped
              else f"{name} {value:#x} in the log, not reached by the dump's walk"
              for name, value in state.entries.items() if dumped.get(name) != value]
    if differ:
        notes.append("the log's page-table entries differ from the dump's walk of CR2 (" + "; ".join(differ) +
                     "): the entries changed after the fault; the log's (fault-time) entries are used")
        return False
    notes.append("the log's page-table entries (" + ", ".join(state.entries) + ") equal the dump's walk of "
                 "CR2: the dump's walk is used")
    for name in list(state.entries):
        del state.entries[name]
        del state.sources[name]
    return True


def _add_fault_frame(state, target, ctx, cpu, notes):
    """A Linux CPU stopped after its page fault (in the oops or panic path, as a QEMU dump taken on
    panic has it) holds the fault's pt_regs on its stack: IP, CS and EFLAGS at the fault (not the
    error code: Linux overwrites it). The innermost kernel exception frame is taken as the fault's
    when its rip is CR2's instruction (a fetch) or its instruction, with its registers, addresses
    CR2; its values are given before the CPU's own, later, registers. Returns the frame or None."""
    from ..stack import kernel_exception_frame, pick_sp
    cr2 = state.cr2 if state.cr2 is not None else target.cpu(cpu).regs.get("cr2")
    if ctx.paging.mode not in ("4level", "5level") or cr2 is None:
        return None
    try:
        sp, _ = pick_sp(target, cpu)
        frame = kernel_exception_frame(target, ctx.paging, sp)
    except XenscopeError:
        return None
    if frame is None:
        return None
    where = f"the exception frame at {frame['va']:#x} on CPU {cpu}'s stack (pt_regs at {frame['pt_regs_va']:#x})"
    evidence = _frame_evidence(frame, cr2, target, ctx)
    if evidence is None:
        notes.append(f"{where} (rip {frame['rip']:#x}) neither fetches nor addresses CR2 {cr2:#x}: not taken as "
                     "this fault's")
        return None
    for name, value, what in (("ip", frame["rip"], "ip"), ("cs", frame["cs"], "cs"),
                              ("eflags", frame["rflags"], "flags")):
        known = getattr(state, name)
        if known is not None and known != value:
            notes.append(f"{where} has {name} {value:#x}, not {known:#x} ({state.sources[name]})")
        state.give(name, value, f"pt_regs->{what} of {where}")
    notes.append(f"CPU {cpu} was stopped after the page fault: IP, CS and EFLAGS at the fault are taken from {where}, "
                 f"the fault's ({evidence}); CR0, CR2, CR3, CR4 are the CPU's at dump time; the error code is not in "
                 "the dump (Linux overwrites it in pt_regs)")
    return frame


def _infer_nxe_from_stack(state, target, ctx, cpu):
    """EFER (not in QEMU's notes) when the CPU's own stack proves NXE=1: a present entry of the walk
    of SP with bit 63 set would be reserved with NXE=0, and the CPU ran on that stack."""
    from ..decode import EFER_LMA, EFER_LME, EFER_NXE
    from ..paging import walk
    from ..stack import pick_sp
    if state.efer is not None or ctx.paging.mode not in ("4level", "5level"):
        return
    try:
        sp, _ = pick_sp(target, cpu)
        stack = walk(target, ctx.paging, sp)
    except XenscopeError:
        return
    if stack.pa is None:
        return
    xd = [level.name for level in stack.levels if level.entry is not None and level.entry & 1 and level.entry >> 63]
    if xd:
        state.give("efer", EFER_NXE | EFER_LMA | EFER_LME,
                   f"inferred: NXE=1 because CPU {cpu} ran on its stack at SP {sp:#x}, whose {xd[0]} has bit 63 set "
                   f"(reserved with NXE=0); LME, LMA from {ctx.paging.mode} paging; the other bits unknown")


def _frame_evidence(frame, cr2, target, ctx):
    """Why ``frame`` is the fault at ``cr2``'s: its rip is CR2's instruction, or its instruction
    addresses CR2 with the frame's registers; None when neither."""
    from ..paging import read_virt
    from .insn import memory_operands
    rip = frame["rip"]
    if 0 <= cr2 - rip < 16:
        return f"its rip {rip:#x} is CR2's instruction: a fetch"
    try:
        code = read_virt(target, rip, min(16, 0x1000 - (rip & 0xFFF)), ctx.paging, ctx.paging.mode)
    except XenscopeError:
        return None
    text, operands = memory_operands(code, rip, 64, frame["registers"])
    for address, size in operands:
        if address is not None and 0 <= cr2 - address < max(size, 1):
            return f"its instruction {text} addresses {address:#x} with the frame's registers"
    return None


def _frame_dict(frame):
    """The ``exception_frame`` of the result: where the fault's pt_regs are and what they hold."""
    if frame is None:
        return None
    return {name: frame[name] for name in ("va", "pt_regs_va", "rip", "cs", "rflags", "rsp", "ss")}


def explain_fault(target=None, given=None):
    """Explain the fault that ``given`` (:class:`FaultInputs`), its log and ``target`` describe.

    :returns: the ``fault`` command's JSON (:meth:`~xenstructs.fault.Explanation.to_dict` plus the
        notes of the gathering, ``exception_frame`` (the fault's pt_regs found on a Linux CPU's
        stack: ``va``, ``pt_regs_va``, ``rip``, ``cs``, ``rflags``, ``rsp``, ``ss``; None) and,
        with a dump, the walk's CR3 and sources)
    :raises UsageError: nothing to explain (no dump, no log, no CR2, error code or entries)
    """
    given = given or FaultInputs()
    notes = []
    state = _state_from_inputs(given)
    if given.log_lines is not None:
        _add_log(state, given.log_name or "the log", notes, given.log_lines)
    elif given.log:
        _add_log(state, given.log, notes)
    fault_walk = ctx = frame = None
    if target is not None:
        fault_walk, ctx, frame = _add_target(state, target, given, notes)
    if target is None and state.cr2 is None and state.error is None and not state.entries:
        raise UsageError("nothing to explain: give a DUMP, --log FILE, or at least --cr2/--error")
    result = explain(state, walk=fault_walk).to_dict()
    result["notes"] = notes + result["notes"]
    result["exception_frame"] = _frame_dict(frame)
    if ctx is not None:
        result["walk"]["cr3"] = ctx.cr3
        result["walk"]["sources"] = ctx.sources
        if getattr(target, "m2p", None) is not None:
            result["walk"]["space"] = "machine"
    return result
