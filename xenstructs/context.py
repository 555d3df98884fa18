"""Which page tables to walk, and why: CR3, paging mode and EFER for a target, with their sources.

Order of preference for each value: an explicit option, the CPU's registers from the target
(QEMU CPU notes, Xen crash notes, a live stub), then kernel facts (VMCOREINFO symbols), then a
stated assumption. Every value carries a one-line source so ``xen info`` can say where it came from.
"""

from dataclasses import dataclass, field

from . import decode
from .errors import NoRegister, XenscopeError
from .linux.memory_layout import I386_PAGE_OFFSET, START_KERNEL_MAP
from .paging import Paging, root_from_cr3



@dataclass
class Context:
    """A resolved address space: how to walk, and where each value came from."""
    paging: Paging
    cr3: int
    cpu: int
    regs: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)


def _vmcoreinfo(target):
    return target.facts.get("vmcoreinfo")


def _kernel_root(target, machine):
    """CR3 from VMCOREINFO: the kernel's top page table, translated without paging."""
    vi = _vmcoreinfo(target)
    if vi is None:
        return None, None
    if machine == "x86_64":
        for name in ("init_top_pgt", "init_level4_pgt"):
            va = vi.symbol(name)
            if va is not None:
                phys_base = vi.number("phys_base") or 0
                return va - START_KERNEL_MAP + phys_base, f"VMCOREINFO SYMBOL({name}) - __START_KERNEL_map + phys_base"
    else:
        va = vi.symbol("swapper_pg_dir")
        if va is not None:
            return va - I386_PAGE_OFFSET, "VMCOREINFO SYMBOL(swapper_pg_dir) - PAGE_OFFSET"
    return None, None


def _assume_efer(regs, src, mode):
    """EFER is in no dump note we read: derive what the mode implies and assume NXE=1."""
    if mode in ("4level", "5level"):
        regs["efer"] = decode.EFER_LME | decode.EFER_LMA | decode.EFER_NXE
        src["efer"] = "assumed: long mode (LME, LMA) from the dump's machine; NXE=1 assumed (give --efer)"
    else:
        regs["efer"] = decode.EFER_NXE
        src["efer"] = "assumed: NXE=1 (Linux sets it when the CPU has NX; give --efer)"


def resolve(target, cr3=None, mode=None, cpu=0, efer=None, cr4=None, maxphyaddr=None):
    """Resolve the address space to walk on ``target``: which page tables, in which paging mode.

    Each value comes from the first source that has it: the argument, the CPU's registers in the
    target (QEMU CPU notes, Xen crash notes, a live stub), the kernel's facts (VMCOREINFO), then a
    stated assumption; ``Context.sources`` says which, one line per value.

    :param target: a :class:`~xenstructs.target.Target`
    :param cr3: CR3 value (flags and PCID are masked off); default: the CPU's CR3, then the kernel's
        top table from VMCOREINFO (``init_top_pgt`` / ``swapper_pg_dir``)
    :param mode: ``2level``/``pae``/``4level``/``5level``; default: from CR0/CR4/EFER, then VMCOREINFO
    :param cpu: whose registers to use (default CPU 0)
    :param efer: EFER value (its NXE bit decides whether XD is a rights bit or reserved); default:
        the CPU's, else long mode with NXE=1 assumed (and said in ``sources``)
    :param cr4: CR4 value (PSE matters in 2-level mode); default: the CPU's
    :param maxphyaddr: physical address width (bits above it are reserved in entries); default 52
    :return: :class:`Context`: ``paging`` (the :class:`~xenstructs.paging.Paging` to pass to
        :func:`~xenstructs.paging.walk` and the others), ``cr3``, ``cpu``, ``regs`` (the registers
        used) and ``sources`` (register name -> where its value came from)
    :raises NoRegister: when no CR3 or mode can be found; the message names the option to give.
    :raises XenscopeError: an unknown mode, or a CR3 whose top table is not in the dump
    """
    refusal = getattr(target, "paging_refusal", None)
    why = refusal() if refusal is not None else None
    if why:
        raise XenscopeError(f"page tables cannot be walked: {why}")
    state = target.cpu(cpu) if target is not None else None
    regs = dict(state.regs) if state else {}
    src = dict(state.source) if state else {}
    machine = target.facts.get("machine") if target is not None else None
    vi = _vmcoreinfo(target) if target is not None else None
    sources = {}

    if cr4 is not None:
        regs["cr4"], src["cr4"] = cr4, "--cr4 option"
    if efer is not None:
        regs["efer"], src["efer"] = efer, "--efer option"
    if "efer" not in regs and regs.get("cr4") is not None and regs["cr4"] & decode.CR4_PAE:
        _assume_efer(regs, src, "4level" if machine == "x86_64" else "pae")

    if mode is not None:
        if mode not in decode.MODES:
            raise XenscopeError(f"unknown paging mode {mode!r}: use one of {', '.join(decode.MODES)}")
        sources["mode"] = "--mode option"
    elif regs.get("cr4") is not None:
        mode = decode.mode_from_registers(regs.get("cr0"), regs["cr4"], regs.get("efer"))
        if mode is None:
            raise NoRegister(f"paging is off on CPU {cpu} (CR0.PG=0): give --cr3 and --mode")
        sources["mode"] = f"CR0/CR4/EFER of CPU {cpu}"
    elif vi is not None and machine == "x86_64":
        mode = "5level" if vi.number("pgtable_l5_enabled") else "4level"
        sources["mode"] = "VMCOREINFO NUMBER(pgtable_l5_enabled)"
    elif vi is not None and machine == "i386":
        mode = "pae" if vi.get("CONFIG_X86_PAE") == "y" else "2level"
        sources["mode"] = "VMCOREINFO CONFIG_X86_PAE"
    else:
        raise NoRegister("paging mode unknown (no CR4 in the target): give --mode")

    if "efer" not in regs and mode != "2level":
        _assume_efer(regs, src, mode)

    if cr3 is not None:
        sources["cr3"] = "--cr3 option"
    elif regs.get("cr3") is not None:
        cr3 = regs["cr3"]
        sources["cr3"] = f"{src.get('cr3', 'registers')} (CPU {cpu})"
    else:
        cr3, why = _kernel_root(target, machine) if target is not None else (None, None)
        if cr3 is None:
            raise NoRegister("no CR3 known for this target: give --cr3 (or a dump with CPU notes or VMCOREINFO)")
        sources["cr3"] = why

    nxe = bool((regs.get("efer") or 0) & decode.EFER_NXE)
    if "efer" in src:
        sources["efer"] = src["efer"]
    for name in ("cr0", "cr4"):
        if name in src:
            sources[name] = src[name]
    paging = Paging(mode, root_from_cr3(cr3, mode), nxe=nxe,
                    maxphyaddr=maxphyaddr or 52,
                    cr4=regs.get("cr4") if regs.get("cr4") is not None else decode.CR4_PSE)
    regs["cr3"] = cr3
    if target is not None and target.holds(paging.root) is False:
        raise XenscopeError(f"CR3 {cr3:#x} ({sources['cr3']}) points outside the dump's memory: "
                            f"the top page table at pa {paging.root:#x} is not in it")
    return Context(paging=paging, cr3=cr3, cpu=cpu, regs=regs, sources=sources)
