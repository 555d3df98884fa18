"""Kernel stack scan of one vCPU (xenctx-like): candidate return addresses and exception frames.

:func:`scan_stack` reads the stack from SP up to the end of its THREAD_SIZE-aligned block (16 KiB
on x86_64, 8 KiB on i386 by default), at most ``depth`` words, through the vCPU's page tables.
Every word inside kernel text is a *candidate* return address (a scan, not an unwinder: stale
words show up too). :class:`TextSymbols` turns addresses into ``name+0xoff`` from System.map /
kallsyms text entries (``T``/``t``) or the function symbols of a vmlinux.

Exception frames: an x86_64 iret frame (rip, cs, rflags, rsp, ss) with a valid CS (Linux
``__KERNEL_CS`` 0x10, ``__USER_CS`` 0x33, ``__USER32_CS`` 0x23, Xen flat 0xe033/0xe023; Xen keeps
the saved upcall mask in bits 32-39 of the CS slot) marks a pt_regs whose base is 16 words below
rip. A frame with a Xen flat CS on a 64-bit guest is a PV bounce frame: Xen's
``create_bounce_frame`` pushes rcx then r11 below it (below the error code, when there is one).
On i386: eip, cs, eflags [, esp, ss when the CS is not the kernel's].
"""

import bisect
import struct
from dataclasses import dataclass, field

from .errors import NotInDump, XenscopeError
from .inputs import open_regular
from .linux.memory_layout import (I386_PAGE_OFFSET, KERNEL_START_48, KERNEL_START_57, MODULES_END,
                                  START_KERNEL_MAP, USER_END_48, USER_END_57)
from .paging import read_virt
from .xen.release import (FLAT_RING1_CS, FLAT_RING3_CS, FLAT_RING3_CS32, FLAT_RING3_CS64,
                          HYPERVISOR_COMPAT_VIRT_START)

THREAD_SIZE = {"x86_64": 16 << 10, "i386": 8 << 10}

# x86_64 CS values: Linux selectors and Xen's flat PV ones (FLAT_RING3_CS64 / CS32)
CS64_KERNEL = {0x10: "__KERNEL_CS", FLAT_RING3_CS64: "FLAT_RING3_CS64 (PV kernel or user)"}
CS64_USER = {0x33: "__USER_CS", 0x23: "__USER32_CS", 0x2B: "__USER_CS (old)",
             FLAT_RING3_CS32: "FLAT_RING3_CS32"}
XEN_FLAT_CS64 = (FLAT_RING3_CS64, FLAT_RING3_CS32)
SS64 = (0, 0x18, 0x2B, FLAT_RING3_CS)           # FLAT_RING3_SS64 = FLAT_RING3_DS32 = 0xe02b
# i386: Linux __KERNEL_CS 0x60, __USER_CS 0x73; Xen FLAT_RING1_CS (PV kernel), FLAT_RING3_CS (PV user)
CS32_KERNEL = {0x60: "__KERNEL_CS", 0x10: "__KERNEL_CS (old)", FLAT_RING1_CS: "FLAT_RING1_CS"}
CS32_USER = {0x73: "__USER_CS", 0x23: "__USER_CS (old)", FLAT_RING3_CS: "FLAT_RING3_CS"}
RFLAGS_RESERVED = (1 << 3) | (1 << 5) | (1 << 15) | ~((1 << 22) - 1)


def _ok_flags(v, width):
    return bool(v & 2) and not v & RFLAGS_RESERVED & ((1 << (8 * width)) - 1)


# ---------------------------------------------------------------------------------------------
# Symbols
# ---------------------------------------------------------------------------------------------

@dataclass
class TextSymbols:
    """Sorted symbols; :meth:`lookup` gives ``(name, offset, size, module)`` for an address inside text.

    ``addrs`` holds every symbol's address, ``names`` the text symbol's name there (None for a
    non-text symbol, which ends the text symbol before it), ``modules`` the module of a kallsyms
    ``[module]`` symbol (None for the kernel's own). ``regions`` are the text ranges, ``[start,
    end)``: the kernel's (its first text symbol to ``_etext``, or the last text symbol + 64 KiB) and
    each module's (its first text symbol to its last symbol, or the page after its last text
    symbol). A symbol's size, as the kernel's ``%pS`` prints it, runs to the next symbol of any kind
    (or the end of its region).
    """
    addrs: list = field(default_factory=list)
    names: list = field(default_factory=list)
    modules: list = field(default_factory=list)
    regions: list = field(default_factory=list)
    sources: list = field(default_factory=list)

    def add(self, pairs, etext=None, source="", module=None):
        """Add ``(address, name or None)`` pairs (None: a non-text symbol) of the kernel (``module``
        None, text ending at ``etext``) or of one module."""
        merged = {a: (n, m) for a, n, m in zip(self.addrs, self.names, self.modules)}
        for a, n in pairs:
            if merged.get(a, (None,))[0] is None:
                merged[a] = (n, module)
        self.addrs = sorted(merged)
        self.names = [merged[a][0] for a in self.addrs]
        self.modules = [merged[a][1] for a in self.addrs]
        text = sorted(a for a, n in pairs if n is not None)
        if text:
            if module is None:
                last = etext if etext else text[-1] + 0x10000
            else:
                last = max(a for a, _ in pairs)
                last = last if last > text[-1] else (text[-1] | 0xFFF) + 1
            self.regions = sorted(self.regions + [(text[0], last)])
        self.sources.append(source)

    def __len__(self):
        return len(self.addrs)

    def _region_end(self, addr):
        i = bisect.bisect_right(self.regions, (addr, float("inf"))) - 1
        if i < 0 or not self.regions[i][0] <= addr < self.regions[i][1]:
            return None
        return self.regions[i][1]

    def lookup(self, addr):
        """``(name, offset, size, module)`` of the text symbol holding ``addr``, or None."""
        end = self._region_end(addr)
        if end is None:
            return None
        i = bisect.bisect_right(self.addrs, addr) - 1
        if i < 0 or self.names[i] is None:
            return None
        start = self.addrs[i]
        following = self.addrs[i + 1] if i + 1 < len(self.addrs) else end
        return self.names[i], addr - start, min(following, end) - start, self.modules[i]

    def name(self, addr):
        """``function+0xoff/0xsize`` (`` [module]`` for a module's symbol), as the kernel prints it."""
        hit = self.lookup(addr)
        if hit is None:
            return None
        name, offset, size, module = hit
        return f"{name}+{offset:#x}/{size:#x}" + (f" [{module}]" if module else "")

    def backtrace_name(self, addr):
        """:meth:`name` of a return address as the kernel's ``%pB`` prints it: the symbol holding
        ``addr - 1`` (a call that ends its function returns to the next one's first byte)."""
        hit = self.lookup(addr - 1) if addr else None
        if hit is None:
            return None
        name, offset, size, module = hit
        return f"{name}+{offset + 1:#x}/{size:#x}" + (f" [{module}]" if module else "")

    @classmethod
    def from_files(cls, paths):
        s = cls()
        for p in paths:
            s.load(p)
        return s

    def load(self, path):
        try:
            with open_regular(path) as f:
                magic = f.read(4)
        except OSError as e:
            raise XenscopeError(f"cannot read {path}: {e.strerror}") from None
        if magic == b"\x7fELF":
            self._load_elf(path)
        else:
            self._load_map(path)

    def _load_map(self, path):
        """System.map or a saved /proc/kallsyms (whole, or only some modules' ``[module]`` lines)."""
        try:
            with open_regular(path, "r", errors="replace") as f:
                text = f.read(64 << 20)
        except OSError as e:
            raise XenscopeError(f"cannot read {path}: {e.strerror}") from None
        kernel, modules, etext = [], {}, None
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or len(parts) > 4 or len(parts) == 4 and not parts[3].startswith("["):
                continue
            try:
                addr = int(parts[0], 16)
            except ValueError:
                continue
            pair = (addr, parts[2] if parts[1] in ("T", "t") else None)
            if len(parts) == 4:
                modules.setdefault(parts[3].strip("[]"), []).append(pair)
            elif parts[2] == "_etext" and etext is None:
                etext = addr
            elif not (parts[1] in ("U", "u", "w", "v", "A") and addr == 0):
                kernel.append(pair)
        if not any(n for _, n in kernel) and not any(n for pairs in modules.values() for _, n in pairs):
            raise XenscopeError(f"{path}: no text symbols (T/t lines)")
        kind = "kallsyms" if modules or "kallsyms" in str(path) else "System.map"
        if any(n for _, n in kernel):
            self.add(kernel, etext, f"{kind} {path}")
        for module, pairs in sorted(modules.items()):
            if any(n for _, n in pairs):
                self.add(pairs, source=f"{kind} {path} [{module}]", module=module)

    def _load_elf(self, path):
        from elftools.common.exceptions import ELFError
        from elftools.elf.constants import SH_FLAGS
        from elftools.elf.elffile import ELFFile
        pairs, etext = [], None
        try:
            with open_regular(path) as f:
                elf = ELFFile(f)
                tab = elf.get_section_by_name(".symtab")
                if tab is None:
                    raise XenscopeError(f"{path}: no .symtab (stripped vmlinux?)")
                execs = {i for i, s in enumerate(elf.iter_sections()) if s["sh_flags"] & SH_FLAGS.SHF_EXECINSTR}
                for sym in tab.iter_symbols():
                    if sym.name == "_etext":
                        etext = sym["st_value"]
                    shndx = sym["st_shndx"]
                    if (sym["st_info"]["type"] in ("STT_FUNC", "STT_NOTYPE") and sym.name
                            and isinstance(shndx, int) and shndx in execs and not sym.name.startswith("$")):
                        pairs.append((sym["st_value"], sym.name))
        except (ELFError, OSError, ValueError) as e:
            raise XenscopeError(f"{path}: unreadable ELF: {e}") from None
        if not pairs:
            raise XenscopeError(f"{path}: no text symbols in .symtab")
        self.add(pairs, etext, f"vmlinux {path}")


# ---------------------------------------------------------------------------------------------
# Scan
# ---------------------------------------------------------------------------------------------

def _raw_text(machine, va):
    """Without symbols: does ``va`` look like kernel text? (x86_64: the kernel image mapping;
    i386: above the 3G/1G PAGE_OFFSET, below the Xen hole.)"""
    if machine == "x86_64":
        return START_KERNEL_MAP <= va < MODULES_END
    return I386_PAGE_OFFSET <= va < HYPERVISOR_COMPAT_VIRT_START


def _canonical(mode):
    """``(user end, kernel start)``: the canonical halves of x86_64 addresses in paging ``mode``."""
    return (USER_END_57, KERNEL_START_57) if mode == "5level" else (USER_END_48, KERNEL_START_48)


def _frame64(words, i, base, mode=None):
    """An x86_64 iret frame at word ``i``, or None. A kernel CS may come with any canonical rip
    (a supervisor fetch from a user page or from data faults there: SMEP, NX, a NULL call)."""
    if i + 4 >= len(words):
        return None
    user_end, kernel_start = _canonical(mode)
    rip, cs_slot, rflags, rsp, ss = words[i:i + 5]
    cs, mask = cs_slot & 0xFFFF, (cs_slot >> 32) & 0xFF
    if cs_slot & ~0xFF0000FFFF:
        return None
    if cs in CS64_KERNEL:
        kind = "kernel"
    elif cs in CS64_USER:
        kind = "user"
    else:
        return None
    if not _ok_flags(rflags, 8) or (ss & ~0x3) not in (s & ~0x3 for s in SS64):
        return None
    if not (rip < user_end or rip >= kernel_start):
        return None                        # non-canonical
    if cs in (0x33, 0x23, 0x2B, FLAT_RING3_CS32) and rip >= user_end:
        return None
    if not (rsp < user_end or rsp >= kernel_start):
        return None                        # non-canonical
    if cs == 0x10 and rsp < user_end:
        return None                        # the kernel runs on kernel stacks
    va = base + 8 * i
    fr = {"kind": "pt_regs", "va": va, "pt_regs_va": va - 16 * 8, "rip": rip, "cs": cs,
          "cs_name": (CS64_KERNEL.get(cs) or CS64_USER.get(cs)), "mode": kind, "rflags": rflags,
          "rsp": rsp, "ss": ss, "orig_ax": words[i - 1] if i >= 1 else None, "xen_pv": None}
    if cs in XEN_FLAT_CS64:
        # create_bounce_frame: rcx, r11 [, error code], rip ... (rcx lowest)
        pv = {"upcall_mask": mask}
        if i >= 2:
            pv.update(rcx_va=va - 16, rcx=words[i - 2], r11_va=va - 8, r11=words[i - 1])
        fr["xen_pv"], fr["orig_ax"] = pv, None
        if kind == "kernel":
            fr["mode"] = "kernel (64-bit PV kernels run in ring 3: mode from the guest, not CS)"
    return fr


def _frame32(words, i, base):
    if i + 2 >= len(words):
        return None
    eip, cs_slot, eflags = words[i:i + 3]
    cs = cs_slot & 0xFFFF
    if cs_slot >> 16 & ~0xFF:            # Xen: saved upcall mask in bits 16-23
        return None
    if cs in CS32_KERNEL:
        kind = "kernel"
    elif cs in CS32_USER:
        kind = "user"
    else:
        return None
    if not _ok_flags(eflags, 4):
        return None
    if kind == "kernel" and eip < 0xC0000000 or kind == "user" and eip >= 0xC0000000:
        return None
    va = base + 4 * i
    fr = {"kind": "pt_regs", "va": va, "pt_regs_va": None, "rip": eip, "cs": cs,
          "cs_name": CS32_KERNEL.get(cs) or CS32_USER.get(cs), "mode": kind, "rflags": eflags,
          "rsp": None, "ss": None, "orig_ax": words[i - 1] if i >= 1 else None, "xen_pv": None}
    if kind == "user" and i + 4 < len(words):
        fr["rsp"], fr["ss"] = words[i + 3], words[i + 4]
    return fr


def pick_sp(target, cpu, sp=None):
    """The stack pointer to scan and where it came from."""
    if sp is not None:
        return sp, "--sp option"
    st = target.cpu(cpu)
    regs = st.regs
    flags = regs.get("flags")
    if flags is not None and not flags & (1 << 2) and regs.get("kernel_sp"):
        return regs["kernel_sp"], (f"kernel_sp of vCPU {cpu} (the vCPU was in user mode: "
                                   "VGCF_in_kernel clear)")
    if regs.get("rsp") is None:
        raise XenscopeError(f"no stack pointer known for CPU {cpu}: give --sp")
    return regs["rsp"], f"{st.source.get('rsp', 'registers')} (CPU {cpu})"


def scan_stack(target, paging, sp, machine="x86_64", symbols=None, depth=None, thread_size=None):
    """Scan from ``sp`` to the end of its stack block; return (words read, stack_end, entries, frames, note)."""
    width = 8 if machine == "x86_64" else 4
    ts = thread_size or THREAD_SIZE.get(machine, 16 << 10)
    if ts <= 0 or ts & (ts - 1):
        raise XenscopeError(f"thread size {ts:#x} is not a power of two")
    mask = (1 << (8 * width)) - 1
    sp &= mask
    start = sp & ~(width - 1)
    end = (sp | (ts - 1)) + 1
    if depth is not None:
        end = min(end, start + depth * width)
    data, va, note = bytearray(), start, None
    while va < end:
        n = min(end - va, 0x1000 - (va & 0xFFF))
        try:
            data += read_virt(target, va, n, paging, None)
        except NotInDump as e:
            if va == start:
                raise XenscopeError(f"stack pointer {sp:#x} is not readable: {e}") from None
            note = f"scan stopped at {va:#x}: {e}"
            break
        except XenscopeError as e:
            if va == start:
                raise XenscopeError(f"stack pointer {sp:#x} is not mapped: {e}") from None
            note = f"scan stopped at {va:#x}: {e}"
            break
        va += n
    cnt = len(data) // width
    words = list(struct.unpack(f"<{cnt}{'Q' if width == 8 else 'I'}", bytes(data[:cnt * width])))
    entries, frames = [], []
    for i, w in enumerate(words):
        fr = _frame64(words, i, start, paging.mode) if width == 8 else _frame32(words, i, start)
        if fr is not None:
            frames.append(fr)
        if symbols is not None and len(symbols):
            sym = symbols.backtrace_name(w)
            if sym is None:
                continue
        elif not _raw_text(machine, w):
            continue
        else:
            sym = None
        entries.append({"va": start + width * i, "value": w, "symbol": sym})
    return {"stack_start": start, "stack_end": end, "words": cnt, "width": width, "thread_size": ts,
            "entries": entries, "frames": frames, "note": note}


# x86_64 struct pt_regs, from its first word: the registers an exception entry saved
PT_REGS64 = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi",
             "rdi", "orig_ax", "rip", "cs", "rflags", "rsp", "ss")
EXCEPTION_ORIG_AX = (1 << 64) - 1       # Linux sets orig_ax to -1 after an exception's entry


def kernel_exception_frame(target, paging, sp):
    """The innermost exception taken in kernel mode on an x86_64 Linux stack, above ``sp``: a frame
    with ``__KERNEL_CS`` whose orig_ax is -1 (the exception entry stores the error code it pushed
    there, passes it on in a register and writes -1 over it; an interrupt leaves its negated vector,
    a syscall a user CS). The oops and panic paths run on the stack that took the fault, so a CPU
    stopped in them has the fault's frame here. Returns :func:`scan_stack`'s frame dict with
    ``registers`` (every pt_regs field by name), or None. Whether it is the fault's is the
    caller's to check (its rip fetches, or its instruction addresses, CR2)."""
    for frame in scan_stack(target, paging, sp, "x86_64")["frames"]:
        if frame["cs"] == 0x10 and frame["orig_ax"] == EXCEPTION_ORIG_AX:
            try:
                raw = read_virt(target, frame["pt_regs_va"], 8 * len(PT_REGS64), paging, None)
            except XenscopeError:
                return None
            frame["registers"] = dict(zip(PT_REGS64, struct.unpack(f"<{len(PT_REGS64)}Q", raw)))
            return frame
    return None
