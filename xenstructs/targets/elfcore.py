"""ELF core files (Linux kdump ``/proc/vmcore`` copies, QEMU ``dump-guest-memory``, Xen kdump).

The file is mmapped, never read whole. Physical addresses are ``p_paddr`` of the ``PT_LOAD``
segments; bytes between ``p_filesz`` and ``p_memsz`` read as zeros; an address outside every
segment raises :class:`~xenstructs.errors.NotInDump`. A segment whose physical range lies inside
another one is an alias (kdump's kernel-text segment) and is left out of the index; partial
overlaps are refused. Registers come from ``NT_PRSTATUS``, QEMU's CPU note and Xen's crash notes.
"""

from bisect import bisect_right
import mmap
import os

from ..errors import BadDump, NotInDump, XenscopeError
from ..formats import elf
from ..formats.vmcoreinfo import parse_vmcoreinfo
from ..inputs import open_regular
from ..target import CpuState, Target

MAX_NOTES_BYTES = 64 << 20      # all PT_NOTE segments together
MAX_SEGMENTS = 1 << 20
_I386_GPRS = ("ax", "bx", "cx", "dx", "si", "di", "sp", "bp", "ip")


def _open_mmap(path):
    """Open and mmap ``path`` read-only; every OS error becomes one :class:`BadDump` line."""
    f = open_regular(path, error=BadDump)
    try:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise BadDump(f"{path}: empty file")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        f.close()
        raise BadDump(f"{path}: cannot map: {e.strerror or e}") from None
    except BaseException:
        f.close()
        raise
    return f, mm, size


_ELF_TYPES = {1: "relocatable object", 2: "executable", 3: "shared object"}


def _close_mmap(target):
    """Close what :func:`_open_mmap` opened for ``target`` (its ``_mm`` and ``_file``); idempotent."""
    mm, f = getattr(target, "_mm", None), getattr(target, "_file", None)
    target._mm = target._file = None
    try:
        if mm is not None:
            mm.close()
    except BufferError:
        pass                                   # a caller still holds a view; GC frees it
    if f is not None:
        f.close()


def _set(cpu, name, value, source):
    cpu.regs[name] = value
    cpu.source[name] = source


def _fill(cpu, name, value, source):
    if name not in cpu.regs:
        _set(cpu, name, value, source)


def _prstatus_regs(cpu, desc, machine):
    """Registers of one ``NT_PRSTATUS`` note (x86_64 or i386 ``pr_reg``)."""
    src = "NT_PRSTATUS"
    if machine == "x86_64":
        reg = elf.parse(elf.PrStatus64, desc, "x86_64 NT_PRSTATUS note").pr_reg
        for n in elf.GREGS_X86_64:
            _set(cpu, n, reg[n], src)
    else:
        reg = elf.parse(elf.PrStatus32, desc, "i386 NT_PRSTATUS note").pr_reg
        for n in elf.GREGS_I386:
            _set(cpu, n, reg[n], src)
        for alias, n in (("rip", "eip"), ("rsp", "esp"), ("rflags", "eflags")):
            _set(cpu, alias, reg[n], src)


def _qemu_regs(cpu, desc, machine):
    """Registers of one QEMU CPU note: CRs, segment bases, descriptor tables, missing GPRs."""
    src = "QEMU CPU note"
    if len(desc) < elf.QEMU_CPU_STATE_MIN:
        raise BadDump(f"QEMU CPU note is {len(desc)} bytes, expected at least "
                      f"{elf.QEMU_CPU_STATE_MIN}")
    st = elf.parse(elf.QEMUCPUState, desc, "QEMU CPU note")
    if st.size < elf.QEMU_CPU_STATE_MIN or st.size > len(desc):
        raise BadDump(f"QEMU CPU note claims size {st.size}, note holds {len(desc)} bytes")
    for n in elf.QEMU_GPRS:
        if machine == "i386":
            if n[1:] in _I386_GPRS:
                _fill(cpu, "e" + n[1:], st[n] & 0xFFFFFFFF, src)
            elif n == "rflags":
                _fill(cpu, "eflags", st[n] & 0xFFFFFFFF, src)
        _fill(cpu, n, st[n], src)
    for n in ("cs", "ds", "es", "fs", "gs", "ss"):
        _fill(cpu, n, st[n].selector, src)
    for n in ("fs", "gs"):
        _set(cpu, n + "_base", st[n].base, src)
    _set(cpu, "ldtr", st.ldt.selector, src)
    _set(cpu, "tr", st.tr.selector, src)
    for n in ("gdt", "idt"):
        _set(cpu, n + "r_base", st[n].base, src)
        _set(cpu, n + "r_limit", st[n].limit, src)
    for i in (0, 2, 3, 4):
        _set(cpu, f"cr{i}", st.cr[i], src)
    if st.kernel_gs_base is not None:
        _set(cpu, "kernel_gs_base", st.kernel_gs_base, src)


def _xen_crash_regs(cpu, desc, elfclass):
    con = elf.CrashXenCore64 if elfclass == 64 else elf.CrashXenCore32
    st = elf.parse(con, desc, "Xen CRASH_REGS note")
    for n in ("cr0", "cr2", "cr3", "cr4"):
        _set(cpu, n, st[n], "Xen crash notes")


def xen_crash_info(desc, elfclass):
    """``crash_xen_info_t`` words as a dict (``xen_phys_start`` only when the note has it)."""
    w = 8 if elfclass == 64 else 4
    words = [int.from_bytes(desc[i:i + w], "little") for i in range(0, len(desc) - w + 1, w)]
    out = dict(zip(elf.CRASH_INFO_WORDS[:8], words[:8]))
    if len(words) > 9:
        out["xen_phys_start"] = words[8]
    if words:
        out["dom0_pfn_to_mfn_frame_list_list"] = words[-1]
    return out


def analyse_notes(notes, machine, elfclass):
    """Turn ``[(name, type, desc)]`` into ``(cpus, facts)``.

    The i-th ``NT_PRSTATUS``, i-th QEMU CPU note and i-th Xen ``CRASH_REGS`` note describe CPU i.
    """
    prs, qemu, xen = [], [], []
    facts = {"notes": [], "qemu_notes": False, "xen_notes": False, "vmcoreinfo": None,
             "xen_crash_info": None}
    vmci_raw = None
    for name, ntype, desc in notes:
        facts["notes"].append((name, ntype, len(desc)))
        if name == "CORE" and ntype == elf.NT_PRSTATUS:
            prs.append(desc)
        elif name == "QEMU" and ntype == elf.QEMU_NOTE_TYPE:
            qemu.append(desc)
        elif name == "Xen":
            facts["xen_notes"] = True
            if ntype == elf.XEN_ELFNOTE_CRASH_REGS:
                xen.append(desc)
            elif ntype == elf.XEN_ELFNOTE_CRASH_INFO and facts["xen_crash_info"] is None:
                facts["xen_crash_info"] = xen_crash_info(desc, elfclass)
        elif name in ("VMCOREINFO", "VMCOREINFO_XEN") and vmci_raw is None:
            vmci_raw = desc
            facts["vmcoreinfo_note"] = name
    facts["qemu_notes"] = bool(qemu)
    if vmci_raw is not None:
        facts["vmcoreinfo"] = parse_vmcoreinfo(vmci_raw)
    cpus = []
    for i in range(max(len(prs), len(qemu), len(xen))):
        cpu = CpuState(i)
        if i < len(prs):
            _prstatus_regs(cpu, prs[i], machine)
        if i < len(qemu):
            _qemu_regs(cpu, qemu[i], machine)
        if i < len(xen):
            _xen_crash_regs(cpu, xen[i], elfclass)
        cpus.append(cpu)
    return cpus, facts


class ElfCoreTarget(Target):
    """A little-endian x86 ELF core, read by ``p_paddr`` through an mmap of ``path``."""

    fixed = True             # a file: its memory never changes (a live view sets live)

    def __init__(self, path):
        super().__init__()
        self.path = path
        self._file, self._mm, self._size = _open_mmap(path)
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    # -- parsing ------------------------------------------------------------------------------
    def _bytes(self, off, size, what):
        if off < 0 or size < 0 or off + size > self._size:
            raise BadDump(f"{self.path}: {what} needs bytes {off}..{off + size}, "
                          f"file has {self._size}")
        return self._mm[off:off + size]

    def _load(self):
        p = self.path
        ident = elf.parse(elf.ElfIdent, self._bytes(0, 16, "ELF identification"), "ELF header")
        if ident.magic != b"\x7fELF":
            raise BadDump(f"{p}: not an ELF file (starts with {ident.magic!r})")
        if ident.ei_class not in (1, 2):
            raise BadDump(f"{p}: bad ELF class {ident.ei_class}")
        if ident.ei_data != 1:
            raise BadDump(f"{p}: unsupported byte order (EI_DATA={ident.ei_data}, "
                          "only little-endian x86 cores are read)")
        elfclass = 64 if ident.ei_class == 2 else 32
        ehdr_con = elf.Elf64_Ehdr if elfclass == 64 else elf.Elf32_Ehdr
        eh = elf.parse(ehdr_con, self._bytes(0, ehdr_con.sizeof(), "ELF header"), "ELF header")
        if eh.e_type != 4:                       # ET_CORE: a vmlinux or an object is not a dump
            raise BadDump(f"{p}: an ELF {_ELF_TYPES.get(eh.e_type, f'type {eh.e_type}')}, not a core dump "
                          "(give the vmlinux/xen-syms with --vmlinux, --xen-syms or gdb's `file`)")
        machine = elf.MACHINES.get(eh.e_machine)
        if machine is None:
            raise BadDump(f"{p}: unsupported machine (e_machine={eh.e_machine}; "
                          "x86_64 (62) and i386 (3) are read)")
        phdr_con = elf.Elf64_Phdr if elfclass == 64 else elf.Elf32_Phdr
        shdr_con = elf.Elf64_Shdr if elfclass == 64 else elf.Elf32_Shdr
        phnum = eh.e_phnum
        if phnum == elf.PN_XNUM:
            if eh.e_shoff == 0:
                raise BadDump(f"{p}: e_phnum is PN_XNUM but there is no section header 0")
            sh0 = elf.parse(shdr_con, self._bytes(eh.e_shoff, shdr_con.sizeof(), "section header 0"),
                          "section header 0")
            phnum = sh0.sh_info
        if phnum and eh.e_phentsize != phdr_con.sizeof():
            raise BadDump(f"{p}: e_phentsize is {eh.e_phentsize}, expected {phdr_con.sizeof()}")
        if phnum > MAX_SEGMENTS or eh.e_phoff + phnum * phdr_con.sizeof() > self._size:
            raise BadDump(f"{p}: program header table ({phnum} entries at offset {eh.e_phoff}) "
                          f"lies beyond the end of the file ({self._size} bytes)")
        ent = phdr_con.sizeof()
        phdrs = [elf.parse(phdr_con, self._mm[eh.e_phoff + i * ent:eh.e_phoff + (i + 1) * ent],
                         "program header") for i in range(phnum)]
        loads = [ph for ph in phdrs if ph.p_type == elf.PT_LOAD]
        if not loads:
            raise BadDump(f"{p}: ELF file has no PT_LOAD segments (not a memory dump)")

        notes = []
        total = 0
        for i, ph in enumerate(phdrs):
            if ph.p_type != elf.PT_NOTE:
                continue
            total += ph.p_filesz
            if total > MAX_NOTES_BYTES:
                raise BadDump(f"{p}: PT_NOTE segments hold more than {MAX_NOTES_BYTES} bytes")
            data = self._bytes(ph.p_offset, ph.p_filesz, f"note segment {i}")
            notes.extend(elf.iter_notes(data, f"{p}: note segment {i}"))

        self._index_segments(phdrs)
        cpus, facts = analyse_notes(notes, machine, elfclass)
        self._cpus = cpus
        self.facts.update(facts)
        self.facts.update({"format": "elf", "machine": machine, "elfclass": elfclass,
                           "segments": len(loads), "aliased_segments": self._aliases})
        if facts["qemu_notes"]:
            self.kind = "ELF vmcore (QEMU dump-guest-memory)"
        elif facts["xen_notes"]:
            self.kind = "Xen hypervisor ELF vmcore"
        elif facts["vmcoreinfo"] is not None:
            self.kind = "ELF vmcore (kdump)"
        else:
            self.kind = "ELF core"

    def _index_segments(self, phdrs):
        segs = []
        for i, ph in enumerate(phdrs):
            if ph.p_type != elf.PT_LOAD:
                continue
            if ph.p_filesz > ph.p_memsz:
                raise BadDump(f"{self.path}: segment {i} has p_filesz {ph.p_filesz:#x} > "
                              f"p_memsz {ph.p_memsz:#x}")
            if ph.p_offset + ph.p_filesz > self._size:
                raise BadDump(f"{self.path}: truncated: segment {i} needs bytes {ph.p_offset}.."
                              f"{ph.p_offset + ph.p_filesz}, file has {self._size}")
            if ph.p_memsz == 0:
                continue
            if ph.p_paddr + ph.p_memsz > 1 << 64:
                raise BadDump(f"{self.path}: segment {i} at pa {ph.p_paddr:#x} wraps past 2^64")
            segs.append((ph.p_paddr, ph.p_paddr + ph.p_memsz, ph.p_offset, ph.p_filesz, i))
        # Longest first at equal starts so that an alias sorts after what contains it.
        segs.sort(key=lambda s: (s[0], -s[1]))
        kept, aliases = [], []
        for s in segs:
            if kept and s[0] < kept[-1][1]:
                prev = kept[-1]
                if s[1] <= prev[1]:
                    aliases.append(s[4])          # wholly inside the previous one: same memory
                    continue
                raise BadDump(f"{self.path}: segments {prev[4]} and {s[4]} overlap in physical "
                              f"memory (pa {s[0]:#x}..{min(s[1], prev[1]):#x})")
            kept.append(s)
        self._segs = kept
        self._starts = [s[0] for s in kept]
        self._aliases = aliases

    # -- Target -------------------------------------------------------------------------------
    def _read_phys(self, addr, size):
        if size == 0:
            return b""
        i = bisect_right(self._starts, addr) - 1
        if i >= 0:
            start, end, off, filesz, _ = self._segs[i]
            rel = addr - start
            if rel + size <= filesz:                  # fast path: inside one segment's file data
                return self._mm[off + rel:off + rel + size]
        out = bytearray()
        while size:
            i = bisect_right(self._starts, addr) - 1
            if i < 0 or addr >= self._segs[i][1]:
                raise NotInDump(addr)
            start, end, off, filesz, _ = self._segs[i]
            rel = addr - start
            n = min(size, end - addr)
            if rel < filesz:
                m = min(n, filesz - rel)
                out += self._mm[off + rel:off + rel + m]
                if n > m:
                    out += bytes(n - m)
            else:
                out += bytes(n)
            addr += n
            size -= n
        return bytes(out)

    def phys_ranges(self):
        out = []
        for start, end, *_ in self._segs:
            if out and out[-1][1] == start:
                out[-1] = (out[-1][0], end)
            else:
                out.append((start, end))
        return out

    def close(self):
        _close_mmap(self)

    def __repr__(self):
        return f"<ElfCoreTarget {self.path!r} {self.kind}>"


__all__ = ["ElfCoreTarget", "analyse_notes", "xen_crash_info", "XenscopeError"]
