"""Explain one x86 page fault: which architectural rule fired, with Xen PV specifics.

Inputs are whatever is known about the faulting vCPU (:class:`FaultState`: CR2, the error code,
IP, CS, CR0/CR3/CR4, EFER, EFLAGS, PKRU, the paging mode, page-table entries, the Xen version and
the kind of guest), each with the source it came from. Nothing missing is assumed silently: a rule
that needs a missing piece is ``not-evaluated`` and says which piece.

:func:`explain` evaluates the rules in the order the CPU applies them (SDM vol. 3A §4.6-4.7):
present at every level, reserved bits, write vs RW (CR0.WP for supervisor writes), user vs US,
fetch vs XD, SMEP, SMAP, protection keys, shadow stack; then names one cause. Xen PV rules
(../shared/reference/xen-facts.md §2.2, §7.4): a 32-bit PV kernel runs in ring 1, so its accesses
are supervisor accesses, and Xen 4.5.0-4.5.3 / 4.6.0-4.6.2 leave SMEP/SMAP on while it runs (fixed by
ea3e8edfdb in 4.7.0, backported to 4.5.4 and 4.6.3); a 64-bit PV kernel runs in ring 3, so the CPU
sees user accesses (Xen resets the error code's U bit to the guest's mode when it reflects the fault).

Pure Python: no gdb. Capstone (installed with pwntools) is imported only to disassemble.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from . import decode as D
from .errors import XenscopeError

EFLAGS_AC = 1 << 18
CR4_CET, CR4_PKS = 1 << 23, 1 << 24
PFEC_IMPLICIT = 1 << 18              # Xen-internal: implicit supervisor access (GDT/LDT/IDT/TSS)
PF_P, PF_W, PF_U, PF_RSVD, PF_I, PF_PK, PF_SS = 1, 2, 4, 8, 0x10, 0x20, 0x40

GUESTS = ("pv32", "pv64", "hvm")
GUEST_TEXT = {"pv32": "32-bit PV guest", "pv64": "64-bit PV guest", "hvm": "HVM guest"}
# Known selectors (xen-facts §2.2; __HYPERVISOR_CS 0xe008)
CS_NAMES = {0xe019: ("pv32", "FLAT_RING1_CS: 32-bit PV kernel, ring 1"),
            0xe02b: ("pv32", "FLAT_RING3_CS (32-bit PV user, ring 3)"),
            0xe033: ("pv64", "FLAT_RING3_CS64: 64-bit PV guest, ring 3"),
            0xe023: ("pv64", "FLAT_RING3_CS32: 64-bit PV guest's compat user code, ring 3"),
            0xe008: ("xen", "__HYPERVISOR_CS: Xen itself, ring 0")}
ENTRY_ORDER = ("PML5E", "PML4E", "PDPTE", "PDE", "PTE")
RULES = ("present", "reserved", "write", "user", "nx", "smep", "smap", "pkeys", "shadow-stack")
FIX_COMMIT = "ea3e8edfdb \"x86: suppress SMEP and SMAP while running 32-bit PV guest code\""
# Mnemonics that write memory without an explicit written memory operand in capstone's detail
_WRITERS = ("stos", "movs", "push", "call", "enter", "cmpxchg", "xadd", "xchg", "fxsave", "xsave",
            "sgdt", "sidt", "fnsave", "fnstenv", "fsave", "fstenv", "wrss", "wruss", "maskmov",
            "movnt")


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

    def rule(self, name):
        return next(r for r in self.rules if r["rule"] == name)

    def status(self, name):
        return self.rule(name)["status"]

    def to_dict(self):
        return {"rules": self.rules, "cause": self.cause, "spurious": self.spurious,
                "error": self.error, "cpl": self.cpl, "walk": self.walk, "access": self.access,
                "missing": self.missing, "notes": self.notes, "insn": self.insn, "state": self.state}


# ---------------------------------------------------------------------------------------------
# Xen versions
# ---------------------------------------------------------------------------------------------

def parse_version(text):
    """``"4.6.3"`` / ``"4.7"`` / ``"4.5.0-rc"`` -> ``(4, 6, 3)``; a bad string is a XenscopeError."""
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    if not m:
        raise XenscopeError(f"not a Xen version: {text!r} (expected X.Y or X.Y.Z, e.g. 4.6.3)")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def xen_clears_smep_smap_for_pv32(version):
    """True when this Xen clears CR4.SMEP/SMAP while 32-bit PV guest code runs (4.5.4+, 4.6.3+,
    4.7.0+), False when it does not, None when the version is unknown."""
    if version is None:
        return None
    v = parse_version(version)
    if v >= (4, 7, 0):
        return True
    if v[:2] == (4, 6):
        return v >= (4, 6, 3)
    if v[:2] == (4, 5):
        return v >= (4, 5, 4)
    return False


# ---------------------------------------------------------------------------------------------
# Instructions
# ---------------------------------------------------------------------------------------------

def parse_hex_bytes(text):
    """``"f3 aa"`` / ``"f3aa"`` / ``"\\xf3\\xaa"`` -> bytes; XenscopeError when it is not hex."""
    t = re.sub(r"\\x|0x|[\s,<>]", "", text)
    try:
        b = bytes.fromhex(t)
    except ValueError:
        raise XenscopeError(f"not instruction bytes in hex: {text!r}")
    if not b:
        raise XenscopeError("no instruction bytes given")
    return b[:16]


def disassemble(code, ip=0, bits=32):
    """Decode the first instruction of ``code`` with capstone and say whether it writes memory.

    :return: dict ``text``, ``mnemonic``, ``op_str``, ``size``, ``bytes`` (hex), ``writes_memory``,
             ``reads_memory``, ``why`` (how that was decided); ``None`` when nothing decodes.
    """
    import capstone as cs
    from capstone import x86 as cx
    modes = {16: cs.CS_MODE_16, 32: cs.CS_MODE_32, 64: cs.CS_MODE_64}
    md = cs.Cs(cs.CS_ARCH_X86, modes[bits])
    md.detail = True
    insn = next(iter(md.disasm(bytes(code), ip, 1)), None)
    if insn is None:
        return None
    writes = reads = False
    why = []
    try:
        for op in insn.operands:
            if op.type == cx.X86_OP_MEM:
                if op.access & cs.CS_AC_WRITE:
                    writes = True
                    why.append("a memory operand is written (capstone CS_AC_WRITE)")
                if op.access & cs.CS_AC_READ or not op.access:
                    reads = True
    except cs.CsError:
        pass
    mn = insn.mnemonic.split()[-1]
    if not writes:
        for w in _WRITERS:
            if mn.startswith(w):
                if w == "xchg" and "ptr" not in insn.op_str:
                    continue
                writes = True
                why.append(f"{mn} writes memory" + (" (the stack)" if w in ("push", "call", "enter") else ""))
                break
    if not why:
        why.append("no memory operand is written" + (" (it reads memory)" if reads else ""))
    return {"ip": ip, "bytes": bytes(insn.bytes).hex(), "size": insn.size, "mnemonic": insn.mnemonic,
            "op_str": insn.op_str, "text": f"{insn.mnemonic} {insn.op_str}".strip(), "bits": bits,
            "writes_memory": writes, "reads_memory": reads, "why": why[0]}


# ---------------------------------------------------------------------------------------------
# Log excerpts: read by the console package (xenstructs/xen/console/faultlog.py)
# ---------------------------------------------------------------------------------------------

from .xen.console import faultlog as _faultlog  # noqa: E402

parse_log, read_log = _faultlog.parse_log, _faultlog.read_log     # the names fault's importers use


# ---------------------------------------------------------------------------------------------
# The explanation
# ---------------------------------------------------------------------------------------------

def _conj(conds):
    """Evaluate a rule made of conditions ``(value, text)`` (value True/False/None).

    Fires when every condition is True; passes when one is False (its text is why); otherwise
    not evaluated, naming each unknown condition."""
    for v, t in conds:
        if v is False:
            return "passed", t
    unknown = [t for v, t in conds if v is None]
    if unknown:
        return "not-evaluated", "; ".join(unknown)
    return "fired", "; ".join(t for _, t in conds)


class _Levels:
    """The known page-table entries along the walk of CR2, top down."""

    def __init__(self, levels, mode, complete, origin, nxe, maxphyaddr, cr4, stop_note=None):
        self.mode = mode
        self.levels = levels           # [(entry name, value)] up to where the walk ends
        self.complete = complete       # every level from the root to the end is known
        self.origin = origin
        self.nxe = nxe
        self.maxphyaddr = maxphyaddr
        self.cr4 = cr4
        self.stop_note = stop_note
        self.dmode = mode or "5level"  # decode mode when the real one is unknown (low bits agree)
        self.missing = [n for n in self._names() if n not in dict(levels)]
        self.missing_word = "not in the dump" if origin.startswith("walk") else "not given"

    def _names(self):
        if self.mode:
            return [D.ENTRY_NAMES[t] for t in D.LEVELS[self.mode]]
        return [n for n in ENTRY_ORDER if n in dict(self.levels)]

    def decode(self, name, value):
        return D.decode_entry(value, self.dmode, name, nxe=bool(self.nxe) if self.nxe is not None else True,
                              maxphyaddr=self.maxphyaddr or 52, cr4=self.cr4)

    def rights_levels(self):
        """Present levels that carry rights (a PAE PDPTE has none)."""
        return [(n, v) for n, v in self.levels if v & 1 and not (self.mode == "pae" and n == "PDPTE")]

    def leaf(self):
        if not self.levels:
            return None
        n, v = self.levels[-1]
        d = self.decode(n, v)
        return (n, v) if d["present"] and d["leaf"] else None

    def partial(self):
        """``" (PTE only; PDPTE, PDE not given)"`` or ``""`` for a complete walk."""
        if self.complete or not self.missing:
            return ""
        return (f" (checked {', '.join(n for n, _ in self.levels)}; {', '.join(self.missing)} "
                f"{self.missing_word})")


def _levels_from(state, walk):
    """Build :class:`_Levels` from a paging.Walk, or from the state's entries, or None."""
    maxphy = state.maxphyaddr
    cr4 = state.cr4 if state.cr4 is not None else (state.guest_cr4 if state.guest_cr4 is not None else D.CR4_PSE)
    if walk is not None and not state.entries:
        lv = [(x.name, x.entry) for x in walk.levels if x.entry is not None]
        note = None
        if walk.stop == "not-in-dump":
            note = f"the table holding the {walk.stop_level} is not in the dump: levels below it unknown"
        elif walk.stop in ("non-canonical", "out-of-range"):
            note = f"CR2 {walk.va:#x}: {walk.describe_stop()}"
        return _Levels(lv, walk.mode, walk.stop != "not-in-dump" and bool(lv), "walk of CR2 in the target",
                       None, maxphy, cr4, note)
    if not state.entries:
        return None
    mode = state.mode
    names = [D.ENTRY_NAMES[t] for t in D.LEVELS[mode]] if mode else list(ENTRY_ORDER)
    for n in state.entries:
        if mode and n not in names:
            raise XenscopeError(f"{n} does not exist in {mode} paging")
    lv = []
    complete = True
    for n in names:
        if n not in state.entries:
            if mode:
                complete = False
            continue
        v = state.entries[n]
        lv.append((n, v))
        d = D.decode_entry(v, mode or "5level", n, cr4=cr4)
        if not d["present"] or d["leaf"]:
            break
    if not mode:
        complete = False
    srcs = [state.sources.get(n, "") for n, _ in lv]
    origin = ("entries given as options" if all(x.startswith("--") for x in srcs) else
              "entries from the log" if all(x.startswith("log") for x in srcs) else "entries given")
    return _Levels(lv, mode, complete and bool(lv), origin, None, maxphy, cr4)


def explain(state: FaultState, walk=None, insn=None) -> Explanation:
    """Evaluate every rule for ``state`` (and a :class:`~xenstructs.paging.Walk` of CR2 if given).

    :param insn: instruction bytes at IP (default ``state.insn``)
    """
    s = state
    notes, missing = [], []
    err = s.error
    if err is not None and (err < 0 or err >> 32):
        raise XenscopeError(f"error code {err:#x} does not fit in 32 bits")
    if s.mode is not None and s.mode not in D.MODES:
        raise XenscopeError(f"unknown paging mode {s.mode!r}: use one of {', '.join(D.MODES)}")
    if s.guest is not None and s.guest not in GUESTS:
        raise XenscopeError(f"unknown guest kind {s.guest!r}: use one of {', '.join(GUESTS)}")
    version = s.xen
    if version is not None:
        parse_version(version)

    # --- who made the access -----------------------------------------------------------------
    guest = s.guest
    cpl = s.cs & 3 if s.cs is not None else None
    if s.cs is not None and s.cs in CS_NAMES:
        kind, text = CS_NAMES[s.cs]
        if guest is None and kind != "xen":
            guest = kind
            s.sources.setdefault("guest", f"inferred from CS {s.cs:#x} ({text})")
            notes.append(f"CS {s.cs:#x} is {text}: taken as a {GUEST_TEXT[kind]}")
        elif guest is not None and kind not in (guest, "xen"):
            notes.append(f"CS {s.cs:#x} is {text}, which does not fit a {GUEST_TEXT[guest]}")
        elif kind == "xen":
            notes.append(f"CS {s.cs:#x} is {text}: the fault is Xen's own")
    if s.cs is None:
        missing.append("CS unknown: CPL not known (give --cs)")
    # the mode when not given: PV guests' page tables have a fixed format
    mode = s.mode
    if mode is None and guest == "pv32":
        mode = "pae"
        s.sources["mode"] = "32-bit PV guests on 64-bit Xen use PAE page tables"
    elif mode is None and guest == "pv64":
        mode = "4level"
        s.sources["mode"] = "64-bit PV guests use 4-level page tables"
    if mode is None and s.cr4 is not None:
        mode = D.mode_from_registers(s.cr0, s.cr4, s.efer)
        if mode:
            s.sources["mode"] = "from CR0/CR4/EFER"
    s.mode = mode
    if mode is None:
        missing.append("paging mode unknown: reserved bits not checked (give --mode)")
    if guest == "pv32" and mode == "pae":
        notes.append("a 32-bit PV guest's PAE tables are walked by the CPU in long mode (compat), "
                     "under Xen's L4: bits 52-62 are ignored there, not reserved")

    # implicit supervisor access (Xen-internal PFEC_implicit, or U=0 at CPL 3)
    implicit = bool(err is not None and err & PFEC_IMPLICIT)
    guest_kernel = None
    acc_src = []
    if err is not None:
        hw_user = bool(err & PF_U)
        acc_src.append(f"error code {err:#x}")
        if guest == "pv64":
            guest_kernel = not hw_user
            if not hw_user:
                notes.append("64-bit PV kernel: the CPU made a user access (ring 3); Xen resets the error "
                             "code's U bit to the guest's mode when it reflects the fault, so U=0 here means "
                             "guest kernel mode")
            hw_user = True
        elif not hw_user and cpl == 3:
            implicit = True
            notes.append("U=0 at CPL 3: an implicit supervisor access (descriptor table, TSS, shadow stack)")
        elif hw_user and cpl is not None and cpl < 3:
            notes.append(f"the error code says a user access (U=1) but CS says CPL {cpl}: they disagree")
    elif cpl is not None:
        hw_user = cpl == 3
        acc_src.append(f"CPL {cpl} from CS {s.cs:#x}")
        if guest == "pv64" and s.ip is not None:
            guest_kernel = s.ip >> 63 == 1
    else:
        hw_user = None
    if guest == "pv64" and cpl is not None and cpl != 3:
        notes.append(f"a 64-bit PV guest runs in ring 3, yet CS says CPL {cpl}")

    # decoded instruction
    code = insn if insn is not None else s.insn
    dis = None
    if code:
        bits = s.bits or _code_bits(s, guest, mode)
        if bits is None:
            missing.append("code size unknown: instruction decoded as 64-bit (give --bits)")
            bits = 64
        dis = disassemble(code, s.ip or 0, bits)
        if dis is None:
            notes.append(f"the bytes at IP ({bytes(code).hex()}) do not decode as an instruction")

    # access kind
    if err is not None:
        kind = "fetch" if err & PF_I else ("write" if err & PF_W else "read")
        shadow = bool(err & PF_SS)
    else:
        missing.append("error code unknown (it is not in dumps: give --error): access kind and "
                       "the U, RSVD, PK, SS bits inferred or unknown")
        shadow = None
        kind = None
        if s.cr2 is not None and s.ip is not None and 0 <= s.cr2 - s.ip < 16:
            kind = "fetch"
            acc_src.append("CR2 is at IP: an instruction fetch")
        elif dis is not None:
            kind = "write" if dis["writes_memory"] else "read"
            acc_src.append(f"the instruction at IP ({dis['text']}): {dis['why']}")
    if hw_user is None:
        missing.append("privilege unknown: neither an error code nor CS")

    # EFER.NXE: given, or inferred from the error code when bit 63 is set
    lv = _levels_from(s, walk)
    nxe = None
    if s.efer is not None:
        nxe = bool(s.efer & D.EFER_NXE)
    elif mode == "2level":
        nxe = False
    elif lv is not None:
        bit63 = [n for n, v in lv.levels if v & 1 and v >> 63 and not (mode == "pae" and n == "PDPTE")]
        if not bit63:
            nxe = True        # irrelevant: no entry has bit 63
        elif err is not None and not err & PF_RSVD:
            nxe = True
            s.sources["efer"] = (f"EFER unknown: NXE=1 inferred (bit 63 is set in {bit63[0]} and the error "
                                 "code's RSVD=0: the CPU did not find it reserved)")
            notes.append(s.sources["efer"])
        else:
            missing.append(f"EFER unknown: bit 63 of {bit63[0]} is XD (NXE=1) or reserved (NXE=0) (give --efer)")
    if lv is not None:
        lv.nxe = nxe

    cr0_wp, wp_src = None, None
    if s.cr0 is not None:
        cr0_wp = bool(s.cr0 & D.CR0_WP)
        wp_src = f"CR0 {s.cr0:#x}"
    elif guest in ("pv32", "pv64"):
        cr0_wp, wp_src = True, "CR0 unknown; Xen always runs PV guests with CR0.WP=1 (writable page-table emulation needs it)"

    access = {"kind": kind, "shadow_stack": shadow, "user": hw_user, "implicit": implicit,
              "guest_kernel": guest_kernel, "source": "; ".join(acc_src) or None}
    who = ("unknown-privilege" if hw_user is None else ("user" if hw_user else "supervisor"))
    acc_text = f"{who} {kind or 'access of unknown kind'}"

    # --- rules ---------------------------------------------------------------------------------
    rules = []

    def add(rule, status, why):
        rules.append({"rule": rule, "status": status, "why": why})

    stopped = None            # why later rules were not reached
    no_entries = "no page-table entries (give a dump or --pte/--pde...)"

    # present
    if lv is not None and lv.levels:
        absent = [(n, v) for n, v in lv.levels if not v & 1]
        if absent:
            n, v = absent[0]
            why = f"{n} {v:#x} has P=0"
            if err is not None and err & PF_P:
                why += " now, but the error code's P=1 says it was present at fault time: the mapping changed after the fault"
            add("present", "fired", why)
            stopped = f"not reached: the walk ends at the not-present {n}"
        else:
            why = "P=1 at " + ", ".join(n for n, _ in lv.levels) + lv.partial()
            if err is not None and not err & PF_P:
                why += "; the error code's P=0 says a level was not present at fault time: filled in since"
            add("present", "passed", why)
        if lv.stop_note:
            notes.append(lv.stop_note)
    elif err is not None:
        if err & PF_P:
            add("present", "passed", f"from the error code (P=1); {no_entries}")
        else:
            add("present", "fired", f"from the error code (P=0: not present); {no_entries}")
            stopped = "not reached: the page was not present (error code P=0)"
    else:
        add("present", "not-evaluated", f"{no_entries} and no error code")

    # reserved bits
    if stopped:
        add("reserved", "not-evaluated", stopped)
    elif lv is not None and lv.levels:
        if mode is None:
            add("reserved", "not-evaluated", "paging mode unknown (give --mode)")
        else:
            found, load = [], []
            unknown63 = nxe is None
            for n, v in lv.levels:
                if not v & 1:
                    break
                t = D.level_name(n)
                rsv = D.reserved_bits(v, mode, t, True if nxe is None else nxe, lv.maxphyaddr or 52, lv.cr4)
                if rsv:
                    found.append((n, v, rsv))
                cl = D.cr3_load_reserved_bits(v, mode, t)
                if cl:
                    load.append(f"{n} bits {cl:#x} are reserved at MOV CR3 (#GP, not #PF)")
            if found:
                n, v, rsv = found[0]
                why = f"{n} {v:#x} has reserved bits {rsv:#x} set"
                if rsv >> 63 and nxe is False:
                    why += " (bit 63 without EFER.NXE)"
                if err is not None and not err & PF_RSVD:
                    why += "; but the error code's RSVD=0: the CPU did not see them"
                add("reserved", "fired", why)
                stopped = f"not reached: reserved bits in {n}"
            elif unknown63:
                add("reserved", "not-evaluated", "EFER unknown: bit 63 may be reserved (NXE=0) (give --efer)")
            else:
                why = "no reserved bits" + lv.partial()
                if s.maxphyaddr is None:
                    why += "; MAXPHYADDR unknown: 52 used (bits between the real MAXPHYADDR and 51 not checked)"
                if err is not None and err & PF_RSVD:
                    why += "; yet the error code's RSVD=1: the entry changed since the fault"
                add("reserved", "passed", why)
            notes.extend(load)
    elif err is not None:
        if err & PF_RSVD:
            add("reserved", "fired", f"from the error code (RSVD=1); {no_entries}")
            stopped = "not reached: reserved bit (error code RSVD=1)"
        else:
            add("reserved", "passed", f"from the error code (RSVD=0); {no_entries}")
    else:
        add("reserved", "not-evaluated", f"{no_entries} and no error code")

    have = lv is not None and bool(lv.levels)
    rl = lv.rights_levels() if have else []
    leaf = lv.leaf() if have else None
    us_all = all(v & 4 for _, v in rl) if rl else None
    us_text = None
    if rl:
        us0 = [n for n, v in rl if not v & 4]
        us_text = (f"a user page (US=1 at {', '.join(n for n, _ in rl)}){lv.partial()}" if not us0
                   else f"a supervisor page ({us0[0]} US=0)")

    def not_reached():
        return stopped or (None if have else no_entries)

    # write
    nr = not_reached()
    if stopped:
        add("write", "not-evaluated", stopped)
    elif kind is not None and kind != "write":
        add("write", "passed", f"a {kind}: RW not consulted")
    elif nr:
        add("write", "not-evaluated", nr)
    elif kind is None:
        add("write", "not-evaluated", "access kind unknown (no error code, no decodable instruction)")
    else:
        ro = [n for n, v in rl if not v & 2 and not (shadow and leaf and n == leaf[0])]
        if not ro:
            why = "RW=1 at " + ", ".join(n for n, _ in rl) + lv.partial()
            if shadow:
                why += " (a shadow-stack write needs the leaf read-only: see shadow-stack)"
            add("write", "passed", why)
        else:
            base = f"{ro[0]} RW=0"
            if hw_user:
                add("write", "fired", f"a user write; {base}")
            elif cr0_wp is True:
                add("write", "fired", f"a supervisor write with CR0.WP=1 ({wp_src}); {base}")
            elif cr0_wp is False:
                add("write", "passed", f"{base}, but a supervisor write with CR0.WP=0 ignores RW ({wp_src})")
            elif hw_user is False:
                add("write", "not-evaluated", f"{base}; CR0 unknown: a supervisor write to a read-only page "
                                              "faults only with CR0.WP=1 (give --cr0)")
            else:
                add("write", "not-evaluated", f"{base}; privilege and CR0 unknown")

    # user
    nr = not_reached()
    if stopped:
        add("user", "not-evaluated", stopped)
    elif hw_user is False:
        add("user", "passed", "a supervisor access: US not required (user pages: see SMEP/SMAP)")
    elif nr:
        add("user", "not-evaluated", nr)
    else:
        us0 = [n for n, v in rl if not v & 4]
        if not us0:
            why = "US=1 at " + ", ".join(n for n, _ in rl) + lv.partial()
            if guest == "pv64":
                why += ("; the 64-bit PV kernel runs in ring 3, so Xen sets US=1 on every guest page "
                        "(kernel pages are marked by bit 52, _PAGE_GUEST_KERNEL)")
            add("user", "passed", why)
        elif hw_user:
            add("user", "fired", f"a user-mode access; {us0[0]} US=0")
        else:
            add("user", "not-evaluated", f"{us0[0]} US=0; privilege unknown (no error code, no CS)")

    # nx
    nr = not_reached()
    if stopped:
        add("nx", "not-evaluated", stopped)
    elif kind is not None and kind != "fetch":
        add("nx", "passed", f"a {kind}, not an instruction fetch: XD not consulted")
    elif nr:
        add("nx", "not-evaluated", nr)
    elif kind is None:
        add("nx", "not-evaluated", "access kind unknown")
    elif mode == "2level":
        add("nx", "passed", "2-level paging has no XD bit")
    else:
        xd = [n for n, v in rl if v >> 63]
        if not xd:
            add("nx", "passed", "XD=0 at every level" + lv.partial())
        elif nxe:
            add("nx", "fired", f"an instruction fetch; {xd[0]} XD=1 with EFER.NXE=1")
        elif nxe is False:
            add("nx", "passed", f"{xd[0]} bit 63 set but EFER.NXE=0 (reserved: see reserved)")
        else:
            add("nx", "not-evaluated", f"{xd[0]} bit 63 set; EFER unknown (give --efer)")

    # SMEP / SMAP: the CR4 the CPU used while the code ran
    xen_cleared = {}

    def cr4_cond(bit, name):
        pv32_kernel = guest == "pv32" and (cpl == 1 if cpl is not None else hw_user is False)
        if guest == "hvm" and s.cr4 is None and s.guest_cr4 is not None:
            return bool(s.guest_cr4 & bit), f"CR4.{name}={int(bool(s.guest_cr4 & bit))} (the HVM guest's CR4 {s.guest_cr4:#x})"
        if s.cr4 is None:
            if guest in ("pv32", "pv64") and s.guest_cr4 is not None:
                return None, (f"real CR4 unknown: the guest's CR4 view {s.guest_cr4:#x} ({name}="
                              f"{int(bool(s.guest_cr4 & bit))}) is not what the CPU used (Xen's CR4) (give --cr4)")
            return None, f"CR4 unknown: {name} rule not evaluated (give --cr4)"
        on = bool(s.cr4 & bit)
        if not on:
            return False, f"CR4.{name}=0 (CR4 {s.cr4:#x})"
        if pv32_kernel:
            fixed = xen_clears_smep_smap_for_pv32(version)
            if fixed:
                xen_cleared[name] = True
                return False, (f"Xen {version} clears SMEP/SMAP while 32-bit PV guest code runs ({FIX_COMMIT}; "
                               f"4.7.0, backported to 4.5.4 and 4.6.3): CR4.{name} was 0 while this ring-1 kernel ran")
            if fixed is False:
                if name == "SMAP" and parse_version(version) < (4, 5, 0):
                    return True, (f"CR4.SMAP=1 (CR4 {s.cr4:#x}), though Xen {version} predates Xen's own use "
                                  "of SMAP (4.5.0)")
                return True, (f"CR4.{name}=1 (CR4 {s.cr4:#x}) and Xen {version} does not clear SMEP/SMAP while "
                              "32-bit PV guest code runs (fixed in 4.5.4, 4.6.3, 4.7.0)")
            missing.append("Xen version unknown: whether Xen cleared SMEP/SMAP while the 32-bit PV kernel ran "
                           "is unknown (give --xen)")
            return True, (f"CR4.{name}=1 (CR4 {s.cr4:#x}), if it was live while the guest ran: Xen version "
                          "unknown (4.5.0-4.5.3 and 4.6.0-4.6.2 leave it on, 4.5.4+/4.6.3+/4.7.0+ clear it; give --xen)")
        return True, f"CR4.{name}=1 (CR4 {s.cr4:#x})"

    def sup_cond():
        if hw_user is None:
            return None, "privilege unknown (no error code, no CS)"
        if hw_user:
            if guest == "pv64":
                return False, ("the 64-bit PV kernel runs in ring 3: the CPU saw a user access, "
                               "so SMEP/SMAP never apply to it")
            return False, "a user-mode access (U=1): applies to supervisor accesses only"
        where = f"CPL {cpl}" if cpl is not None else "CPL unknown"
        extra = " (the 32-bit PV kernel runs in ring 1: its accesses are supervisor accesses)" if guest == "pv32" and cpl == 1 else ""
        return True, f"a supervisor access at {where}{extra}"

    def page_cond():
        if stopped:
            return None, stopped
        if us_all is None:
            return None, f"whether the page is a user page is unknown: {no_entries}"
        return us_all, us_text

    nr_stop = [(None, stopped)] if stopped else []
    if nr_stop:
        add("smep", "not-evaluated", stopped)
    else:
        fetch = (None, "access kind unknown") if kind is None else \
                (kind == "fetch", "an instruction fetch" if kind == "fetch" else f"a {kind}, not an instruction fetch")
        st, why = _conj([fetch, sup_cond(), page_cond(), cr4_cond(D.CR4_SMEP, "SMEP")])
        add("smep", st, why)

    if nr_stop:
        add("smap", "not-evaluated", stopped)
    else:
        data = (None, "access kind unknown") if kind is None else \
               (kind != "fetch", f"a data {kind}" if kind != "fetch" else "an instruction fetch (SMAP covers data accesses)")
        if implicit:
            ac = (True, "an implicit supervisor access (EFLAGS.AC ignored)")
        elif cpl == 3 and hw_user is False:
            ac = (True, "a supervisor access at CPL 3 (implicit: EFLAGS.AC ignored)")
        elif s.eflags is not None:
            on = bool(s.eflags & EFLAGS_AC)
            ac = (not on, f"EFLAGS.AC={int(on)} (EFLAGS {s.eflags:#x})" +
                  (": explicit supervisor accesses to user pages are allowed (stac)" if on else ""))
        else:
            ac = (None, "EFLAGS unknown: AC not known (give --eflags)")
        conds = [data, sup_cond(), page_cond(), cr4_cond(D.CR4_SMAP, "SMAP"), ac]
        st, why = _conj(conds)
        add("smap", st, why)
        if st == "passed" and xen_cleared.get("SMAP"):
            # would it have fired with SMAP on?
            others = [c for c in conds if c is not conds[3]]
            if all(v is True for v, _ in others):
                xen_cleared["would_fire"] = True

    # protection keys
    if nr_stop:
        add("pkeys", "not-evaluated", stopped)
    else:
        pke = (None, "CR4 unknown: protection keys not evaluated (give --cr4)") if s.cr4 is None else \
              (bool(s.cr4 & D.CR4_PKE), f"CR4.PKE={int(bool(s.cr4 & D.CR4_PKE))}")
        ia32e = (None, "paging mode unknown") if mode is None else \
                (mode in ("4level", "5level"), f"{mode} paging" + ("" if mode in ("4level", "5level")
                                                                  else ": protection keys need IA-32e paging"))
        data = (None, "access kind unknown") if kind is None else \
               (kind != "fetch", "a data access" if kind != "fetch" else "an instruction fetch: keys do not apply")
        key = None
        if leaf is not None:
            key = leaf[1] >> 59 & 0xF
        if s.pkru is None:
            pk = (None, "PKRU unknown (give --pkru)")
        elif key is None:
            pk = (None, f"the leaf entry (its key) is unknown: {no_entries}")
        else:
            ad, wd = s.pkru >> (2 * key) & 1, s.pkru >> (2 * key + 1) & 1
            if ad:
                pk = (True, f"PKRU {s.pkru:#x}: AD=1 for key {key} (no data access)")
            elif wd and kind == "write" and (hw_user or cr0_wp):
                pk = (True, f"PKRU {s.pkru:#x}: WD=1 for key {key} and a write" +
                      ("" if hw_user else " with CR0.WP=1"))
            elif wd and kind == "write" and cr0_wp is None:
                pk = (None, f"PKRU WD=1 for key {key}; a supervisor write needs CR0.WP=1 and CR0 is unknown")
            else:
                pk = (False, f"PKRU {s.pkru:#x} allows this {kind} for key {key}")
        conds = [pke, ia32e, data, page_cond(), pk]
        if guest in ("pv32", "pv64"):
            conds.insert(0, (False, "Xen disables protection keys for PV guests (PTE bit 62 is _PAGE_GNTTAB)"))
        st, why = _conj(conds)
        if st == "not-evaluated" and err is not None and have is False:
            st, why = ("fired", "from the error code (PK=1)") if err & PF_PK else ("passed", "from the error code (PK=0)")
        if s.cr4 is not None and s.cr4 & CR4_PKS and us_all is False:
            notes.append("CR4.PKS=1: supervisor protection keys (IA32_PKRS) are not evaluated")
        add("pkeys", st, why)

    # shadow stack
    if s.cr4 is not None and not s.cr4 & CR4_CET and not shadow:
        add("shadow-stack", "passed", f"CR4.CET=0: no shadow stacks (CR4 {s.cr4:#x})")
    elif shadow is None:
        add("shadow-stack", "not-evaluated", "error code unknown: the SS bit (shadow-stack access) is only in the error code")
    elif not shadow:
        why = "not a shadow-stack access (error code SS=0)"
        if (leaf is not None and not leaf[1] & 2 and leaf[1] & 0x40 and kind == "write"
                and s.cr4 is not None and s.cr4 & CR4_CET):
            why += f"; the page is a shadow-stack page ({leaf[0]} RW=0 D=1): ordinary writes fault (see write)"
        add("shadow-stack", "passed", why)
    elif stopped:
        add("shadow-stack", "not-evaluated", stopped)
    else:
        cet = (None, "CR4 unknown (give --cr4)") if s.cr4 is None else \
              (bool(s.cr4 & CR4_CET), f"CR4.CET={int(bool(s.cr4 & CR4_CET))}")
        if leaf is None:
            add("shadow-stack", "not-evaluated", f"a shadow-stack access; the leaf entry is unknown: {no_entries}")
        else:
            n, v = leaf
            bad = []
            if v & 2 or not v & 0x40:
                bad.append(f"{n} is not a shadow-stack page (needs RW=0, D=1)")
            upper_ro = [m for m, x in rl if m != n and not x & 2]
            if upper_ro:
                bad.append(f"{upper_ro[0]} RW=0 (shadow-stack pages need RW=1 above the leaf)")
            if hw_user is not None and us_all is not None and us_all != hw_user:
                bad.append("a user shadow-stack access to a supervisor page" if hw_user
                           else "a supervisor shadow-stack access to a user page")
            if cet[0] is False:
                notes.append("the error code has SS=1 but CR4.CET=0: they disagree")
            if bad:
                add("shadow-stack", "fired", "a shadow-stack access; " + "; ".join(bad))
            else:
                add("shadow-stack", "passed", f"a shadow-stack access to a shadow-stack page ({n} RW=0 D=1)")

    # --- guest CR4 view vs the real CR4 ------------------------------------------------------------
    if s.guest_cr4 is not None and s.cr4 is not None and guest in ("pv32", "pv64"):
        diff = (s.guest_cr4 ^ s.cr4) & (D.CR4_SMEP | D.CR4_SMAP)
        if diff:
            names = [n for b, n in ((D.CR4_SMEP, "SMEP"), (D.CR4_SMAP, "SMAP")) if diff & b]
            notes.append("the guest's CR4 view " + f"{s.guest_cr4:#x} (" +
                         ", ".join(f"{n}={int(bool(s.guest_cr4 & b))}" for b, n in ((D.CR4_SMEP, 'SMEP'), (D.CR4_SMAP, 'SMAP')) if n in names) +
                         f") differs from the CPU's CR4 {s.cr4:#x} (" +
                         ", ".join(f"{n}={int(bool(s.cr4 & b))}" for b, n in ((D.CR4_SMEP, 'SMEP'), (D.CR4_SMAP, 'SMAP')) if n in names) +
                         "): the guest does not know to use stac/clac")

    # --- the instruction vs the error code ------------------------------------------------------
    if dis is not None and err is not None and not err & PF_I:
        w = bool(err & PF_W)
        if dis["writes_memory"] == w:
            dis["agrees"] = True
            dis["agreement"] = (f"agrees with the error code (W={int(w)}): the instruction "
                                f"{'writes' if w else 'does not write'} memory")
        else:
            dis["agrees"] = False
            dis["agreement"] = (f"disagrees with the error code (W={int(w)}): the instruction "
                                f"{'writes' if dis['writes_memory'] else 'does not write'} memory — "
                                "an implicit access, or IP is not the faulting instruction")
    elif dis is not None:
        dis["agrees"] = None
        dis["agreement"] = "no error code to compare with" if err is None else "an instruction fetch fault"

    # --- cause ---------------------------------------------------------------------------------
    fired = [r for r in rules if r["status"] == "fired"]
    unevaluated = [r for r in rules if r["status"] == "not-evaluated"]
    spurious = False
    where = f" at CR2 {s.cr2:#x}" if s.cr2 is not None else ""
    if fired:
        cause = _cause(fired[0], s, guest, cpl, acc_text, where, version, leaf, lv)
    elif xen_cleared.get("would_fire"):
        cause = (f"Xen would have cleared SMAP while this 32-bit PV kernel ran: look elsewhere (Xen {version} "
                 "has the fix; the SMAP rule would otherwise fire for this supervisor access with AC=0 to a "
                 "user page)")
        if lv is not None and not lv.complete:
            cause += f"; the entries given allow the access, {', '.join(lv.missing) or 'other levels'} not checked"
    elif not unevaluated and lv is not None and lv.complete:
        spurious = True
        cause = (f"Spurious fault{where}: the page tables allow this {acc_text} now (every rule passes), so the "
                 "CPU faulted on a stale TLB entry or the mapping was fixed up after the fault (lazy fixup such "
                 "as i386 vmalloc_fault copying a PDE, or a permission upgrade without a TLB flush)")
        if err is not None and not err & PF_P:
            cause += "; the error code's P=0 says it was not present then"
    elif not unevaluated:
        cause = (f"No rule fires{where} with the entries given: the access is allowed by "
                 f"{', '.join(n for n, _ in lv.levels) if lv else 'them'}; "
                 f"{', '.join(lv.missing) if lv and lv.missing else 'the other levels'} not checked "
                 "(spurious if they allow it too)")
    else:
        cause = (f"No rule fires{where} with what is known; not evaluated: " +
                 "; ".join(f"{r['rule']} ({r['why']})" for r in unevaluated))
    # dedupe missing
    seen, miss = set(), []
    for m in missing:
        if m not in seen:
            seen.add(m)
            miss.append(m)
    walk_d = _walk_dict(lv, s, walk)
    return Explanation(rules=rules, cause=cause, spurious=spurious,
                       error=D.decode_pf(err) if err is not None else None, cpl=cpl, walk=walk_d,
                       access=access, missing=miss, notes=notes, insn=dis, state=_state_dict(s, guest, nxe))


def _cause(r, s, guest, cpl, acc_text, where, version, leaf, lv):
    name, why = r["rule"], r["why"]
    if name == "present":
        return f"Not-present fault{where}: {why}."
    if name == "reserved":
        return f"Reserved-bit fault{where}: {why} (a corrupt or foreign entry)."
    if name == "write":
        return (f"Write-protection fault{where}: {why} (copy-on-write, a read-only mapping, or a page "
                "table Xen keeps read-only for a PV guest).")
    if name == "user":
        return f"User access to a supervisor page{where}: {why}."
    if name == "nx":
        return f"No-execute fault{where}: {why}."
    if name == "smep":
        return f"SMEP violation{where}: {why}."
    if name == "smap":
        who = ""
        if guest == "pv32" and cpl == 1:
            who = "the 32-bit PV guest kernel (ring 1, CPL 1) "
        elif cpl is not None:
            who = f"code at CPL {cpl} "
        ac = "with EFLAGS.AC=0 " if s.eflags is not None and not s.eflags & EFLAGS_AC else ""
        kind = acc_text.split(" ", 1)[1]
        allows = ""
        if leaf is not None:
            allows = f" that its {leaf[0]} allows ({leaf[0]} {leaf[1]:#x})"
        tail = ""
        if guest == "pv32" and s.cr4 is not None:
            tail = (f"; Xen {version} left CR4.SMAP=1 while guest code ran" if version else
                    "; CR4.SMAP=1 was live if this Xen lacks the 4.5.4/4.6.3/4.7.0 fix")
            if s.guest_cr4 is not None and not s.guest_cr4 & D.CR4_SMAP:
                tail += " (the guest's own CR4 view shows SMAP=0, so it never uses stac/clac)"
        return f"SMAP violation{where}: {who}made a supervisor {kind} {ac}to a user page{allows}{tail}."
    if name == "pkeys":
        return f"Protection-key violation{where}: {why}."
    return f"Shadow-stack violation{where}: {why}."


def _code_bits(s, guest, mode):
    if s.cs in (0xe019, 0xe02b, 0xe023):
        return 32
    if s.cs in (0xe033, 0xe008):
        return 64
    if guest == "pv32" or mode in ("2level", "pae"):
        return 32
    if guest == "pv64":
        return 64
    if mode in ("4level", "5level") and s.cs is not None and s.cs & ~3 == 0x10:
        return 64
    if mode in ("4level", "5level"):
        return 64
    return None


def _walk_dict(lv, s, walk):
    if lv is None:
        return None
    levels = []
    for n, v in lv.levels:
        d = lv.decode(n, v)
        levels.append({"level": n, "entry": v, "flags": d["flags"], "pkey": d["pkey"],
                       "source": s.sources.get(n, lv.origin)})
    out = {"va": s.cr2, "mode": lv.mode, "origin": lv.origin, "levels": levels, "complete": lv.complete,
           "not_given": lv.missing if not lv.complete else [], "missing_word": lv.missing_word, "pa": None, "page_size": None, "stop": None,
           "stop_level": None}
    if walk is not None and not s.entries:
        out.update(pa=walk.pa, page_size=walk.page_size, stop=walk.stop, stop_level=walk.stop_level,
                   root_pa=walk.root)
    return out


def _state_dict(s, guest, nxe):
    out = {k: getattr(s, k) for k in ("cr2", "error", "ip", "cs", "cr0", "cr3", "cr4", "guest_cr4", "efer",
                                      "eflags", "mode", "pkru", "xen", "maxphyaddr", "bits")}
    out["guest"] = guest
    out["nxe"] = nxe
    out["entries"] = dict(s.entries)
    out["insn"] = bytes(s.insn).hex() if s.insn else None
    out["sources"] = dict(s.sources)
    return out
