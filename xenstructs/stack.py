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
from .linux.memory_layout import (I386_PAGE_OFFSET, KERNEL_START_48, MODULES_END, START_KERNEL_MAP,
                                  USER_END_48)
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
    """Sorted text symbols; :meth:`lookup` gives ``(name, offset)`` for an address inside text."""
    addrs: list = field(default_factory=list)
    names: list = field(default_factory=list)
    end: int = 0                       # first address past text (_etext, or last symbol + 64 KiB)
    sources: list = field(default_factory=list)

    def add(self, pairs, etext=None, source=""):
        merged = dict(zip(self.addrs, self.names))
        for a, n in pairs:                 # n None: a non-text symbol, which ends the one before
            if merged.get(a) is None:
                merged[a] = n
        self.addrs = sorted(merged)
        self.names = [merged[a] for a in self.addrs]
        text = [a for a, n in merged.items() if n is not None]
        if text:
            self.end = max(self.end, etext if etext else max(text) + 0x10000)
        self.sources.append(source)

    def __len__(self):
        return len(self.addrs)

    def lookup(self, addr):
        if not self.addrs or addr < self.addrs[0] or addr >= self.end:
            return None
        i = bisect.bisect_right(self.addrs, addr) - 1
        if self.names[i] is None:
            return None
        return self.names[i], addr - self.addrs[i]

    def name(self, addr):
        hit = self.lookup(addr)
        return None if hit is None else f"{hit[0]}+{hit[1]:#x}"

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
        from .linux.profile import Symbols
        syms = Symbols.from_file(path)          # errors, kallsyms-or-System.map like the rest
        with open_regular(path, "r", errors="replace") as f:
            text = f.read(64 << 20)
        pairs = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or len(parts) > 3 and parts[3].startswith("["):
                continue
            try:
                pairs.append((int(parts[0], 16), parts[2] if parts[1] in ("T", "t") else None))
            except ValueError:
                continue
        if not any(n for _, n in pairs):
            raise XenscopeError(f"{path}: no text symbols (T/t lines)")
        self.add(pairs, syms.get("_etext"), syms.source)

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


def _frame64(words, i, base):
    """An x86_64 iret frame at word ``i``, or None."""
    if i + 4 >= len(words):
        return None
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
    if cs == 0x10 and not rip >= KERNEL_START_48:
        return None
    if cs in (0x33, 0x23, 0x2B, FLAT_RING3_CS32) and rip >= USER_END_48:
        return None
    if not (rsp < USER_END_48 or rsp >= KERNEL_START_48):
        return None                        # non-canonical
    va = base + 8 * i
    fr = {"kind": "pt_regs", "va": va, "pt_regs_va": va - 16 * 8, "rip": rip, "cs": cs,
          "cs_name": (CS64_KERNEL.get(cs) or CS64_USER.get(cs)), "mode": kind, "rflags": rflags,
          "rsp": rsp, "ss": ss, "xen_pv": None}
    if cs in XEN_FLAT_CS64:
        # create_bounce_frame: rcx, r11 [, error code], rip ... (rcx lowest)
        pv = {"upcall_mask": mask}
        if i >= 2:
            pv.update(rcx_va=va - 16, rcx=words[i - 2], r11_va=va - 8, r11=words[i - 1])
        fr["xen_pv"] = pv
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
          "rsp": None, "ss": None, "xen_pv": None}
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
        fr = _frame64(words, i, start) if width == 8 else _frame32(words, i, start)
        if fr is not None:
            frames.append(fr)
        if symbols is not None and len(symbols):
            sym = symbols.name(w)
            if sym is None:
                continue
        elif not _raw_text(machine, w):
            continue
        else:
            sym = None
        entries.append({"va": start + width * i, "value": w, "symbol": sym})
    return {"stack_start": start, "stack_end": end, "words": cnt, "width": width, "thread_size": ts,
            "entries": entries, "frames": frames, "note": note}
