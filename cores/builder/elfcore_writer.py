"""Write little-endian ET_CORE ELF files like QEMU ``dump-guest-memory`` or a kdump vmcore.

Layout (deterministic: no timestamps, no dict-order dependence):
ELF header, program headers (one PT_NOTE then one PT_LOAD per run of adjacent segments),
the notes, then each PT_LOAD's bytes at a 4 KiB-aligned file offset.

Formats (verified, see cores/README.md):
* ``elf_prstatus``: x86_64 336 bytes, ``pr_pid`` at 32, ``pr_reg`` at 112 (27 u64, ``user_regs_struct``
  order); i386 144 bytes, ``pr_pid`` at 24, ``pr_reg`` at 72 (17 u32).
* ``QEMUCPUState`` (note "QEMU", type 0): the same 440-byte struct in ELF32 and ELF64 files
  (QEMU ``target/i386/arch_dump.c``).
* VMCOREINFO (note "VMCOREINFO", type 0): text, as Linux writes it.
* Xen crash registers (note "Xen", type 0x1000002): u64 cr0, cr2, cr3, cr4.
* Other notes (Xen CRASH_INFO, VMCOREINFO_XEN) are built by the caller and passed as
  ``per_cpu_notes`` / ``extra_notes``.
"""

import construct as C

EM_386, EM_X86_64 = 3, 62
ET_CORE = 4
PT_LOAD, PT_NOTE = 1, 4
PF_RWX = 7
NT_PRSTATUS = 1
XEN_ELFNOTE_CRASH_REGS = 0x1000002
PAGE = 0x1000

VADDR_BASE = {"x86_64": 0xFFFF888000000000, "i386": 0xC0000000}


def _ident(elfclass):
    return C.Struct(
        "magic" / C.Const(b"\x7fELF"),
        "ei_class" / C.Const(elfclass, C.Int8ul),
        "ei_data" / C.Const(1, C.Int8ul),          # little endian
        "ei_version" / C.Const(1, C.Int8ul),
        "ei_osabi" / C.Const(0, C.Int8ul),
        "ei_abiversion" / C.Const(0, C.Int8ul),
        "pad" / C.Padding(7),
    )


def _ehdr(word):
    return C.Struct(
        "e_ident" / _ident(2 if word is C.Int64ul else 1),
        "e_type" / C.Int16ul,
        "e_machine" / C.Int16ul,
        "e_version" / C.Int32ul,
        "e_entry" / word,
        "e_phoff" / word,
        "e_shoff" / word,
        "e_flags" / C.Int32ul,
        "e_ehsize" / C.Int16ul,
        "e_phentsize" / C.Int16ul,
        "e_phnum" / C.Int16ul,
        "e_shentsize" / C.Int16ul,
        "e_shnum" / C.Int16ul,
        "e_shstrndx" / C.Int16ul,
    )


Elf64_Ehdr = _ehdr(C.Int64ul)
Elf32_Ehdr = _ehdr(C.Int32ul)

Elf64_Phdr = C.Struct(
    "p_type" / C.Int32ul, "p_flags" / C.Int32ul, "p_offset" / C.Int64ul, "p_vaddr" / C.Int64ul,
    "p_paddr" / C.Int64ul, "p_filesz" / C.Int64ul, "p_memsz" / C.Int64ul, "p_align" / C.Int64ul,
)
Elf32_Phdr = C.Struct(
    "p_type" / C.Int32ul, "p_offset" / C.Int32ul, "p_vaddr" / C.Int32ul, "p_paddr" / C.Int32ul,
    "p_filesz" / C.Int32ul, "p_memsz" / C.Int32ul, "p_flags" / C.Int32ul, "p_align" / C.Int32ul,
)
# Elf32_Nhdr and Elf64_Nhdr are the same three u32.
Elf_Nhdr = C.Struct("n_namesz" / C.Int32ul, "n_descsz" / C.Int32ul, "n_type" / C.Int32ul)

X86_64_REGS = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
               "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
               "gs_base", "ds", "es", "fs", "gs")
I386_REGS = ("ebx", "ecx", "edx", "esi", "edi", "ebp", "eax", "xds", "xes", "xfs", "xgs",
             "orig_eax", "eip", "xcs", "eflags", "esp", "xss")

Prstatus64 = C.Struct(
    "pr_info" / C.Padding(12),
    "pr_cursig" / C.Int16ul,
    "pad0" / C.Padding(2),
    "pr_sigpend" / C.Int64ul,                      # @16
    "pr_sighold" / C.Int64ul,
    "pr_pid" / C.Int32ul,                          # @32
    "pr_ppid" / C.Int32ul,
    "pr_pgrp" / C.Int32ul,
    "pr_sid" / C.Int32ul,
    "pr_times" / C.Padding(64),                    # 4 x struct timeval (16 bytes)
    "pr_reg" / C.Array(27, C.Int64ul),             # @112
    "pr_fpvalid" / C.Int32ul,                      # @328
    "pad1" / C.Padding(4),
)
Prstatus32 = C.Struct(
    "pr_info" / C.Padding(12),
    "pr_cursig" / C.Int16ul,
    "pad0" / C.Padding(2),
    "pr_sigpend" / C.Int32ul,                      # @16
    "pr_sighold" / C.Int32ul,
    "pr_pid" / C.Int32ul,                          # @24
    "pr_ppid" / C.Int32ul,
    "pr_pgrp" / C.Int32ul,
    "pr_sid" / C.Int32ul,
    "pr_times" / C.Padding(32),                    # 4 x struct timeval (8 bytes)
    "pr_reg" / C.Array(17, C.Int32ul),             # @72
    "pr_fpvalid" / C.Int32ul,                      # @140
)
assert Prstatus64.sizeof() == 336 and Prstatus32.sizeof() == 144

QEMUCPUSegment = C.Struct("selector" / C.Int32ul, "limit" / C.Int32ul, "flags" / C.Int32ul,
                          "pad" / C.Int32ul, "base" / C.Int64ul)
QEMU_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15", "rip", "rflags")
QEMU_SEGS = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt")
QEMUCPUState = C.Struct(
    "version" / C.Int32ul,
    "size" / C.Int32ul,
    *[n / C.Int64ul for n in QEMU_GPRS],
    *[n / QEMUCPUSegment for n in QEMU_SEGS],
    "cr" / C.Array(5, C.Int64ul),
    "kernel_gs_base" / C.Int64ul,
)
assert QEMUCPUState.sizeof() == 440

XenCrashRegs = C.Struct("cr0" / C.Int64ul, "cr2" / C.Int64ul, "cr3" / C.Int64ul, "cr4" / C.Int64ul)


def _pad4(b):
    return b + b"\0" * (-len(b) % 4)


def note(name, ntype, desc):
    """One ELF note: header, NUL-terminated name and descriptor, each padded to 4 bytes."""
    nm = name.encode() + b"\0"
    return Elf_Nhdr.build(dict(n_namesz=len(nm), n_descsz=len(desc), n_type=ntype)) + _pad4(nm) + _pad4(desc)


def _prstatus(machine, cpu, pid):
    r = lambda k: int(cpu.get(k, 0))  # noqa: E731
    if machine == "x86_64":
        alias = {"eflags": "rflags"}
        regs = [r(alias.get(n, n)) for n in X86_64_REGS]
        return Prstatus64.build(dict(pr_cursig=0, pr_sigpend=0, pr_sighold=0, pr_pid=pid, pr_ppid=0,
                                     pr_pgrp=0, pr_sid=0, pr_reg=regs, pr_fpvalid=0))
    alias = {"ebx": "rbx", "ecx": "rcx", "edx": "rdx", "esi": "rsi", "edi": "rdi", "ebp": "rbp",
             "eax": "rax", "xds": "ds", "xes": "es", "xfs": "fs", "xgs": "gs", "orig_eax": "orig_rax",
             "eip": "rip", "xcs": "cs", "eflags": "rflags", "esp": "rsp", "xss": "ss"}
    regs = [r(alias[n]) & 0xFFFFFFFF for n in I386_REGS]
    return Prstatus32.build(dict(pr_cursig=0, pr_sigpend=0, pr_sighold=0, pr_pid=pid, pr_ppid=0,
                                 pr_pgrp=0, pr_sid=0, pr_reg=regs, pr_fpvalid=0))


def _qemu_state(cpu):
    r = lambda k: int(cpu.get(k, 0))  # noqa: E731
    d = dict(version=1, size=QEMUCPUState.sizeof())
    for n in QEMU_GPRS:
        d[n] = r(n)
    for n in QEMU_SEGS:
        d[n] = dict(selector=r(n), limit=int(cpu.get(n + "_limit", 0xFFFFFFFF if n in ("cs", "ds", "es", "ss") else 0)),
                    flags=r(n + "_flags"), pad=0, base=r(n + "_base"))
    d["cr"] = [r("cr0"), 0, r("cr2"), r("cr3"), r("cr4")]
    d["kernel_gs_base"] = r("kernel_gs_base")
    return QEMUCPUState.build(d)


def merge_segments(segments):
    """Sort ``(paddr, bytes)`` pieces and join adjacent ones; overlapping pieces are an error."""
    runs = []                                   # [start, end, [pieces]]
    for pa, data in sorted(segments, key=lambda s: s[0]):
        data = bytes(data)
        if runs and runs[-1][1] > pa:
            raise ValueError(f"segment at {pa:#x} overlaps the previous one")
        if runs and runs[-1][1] == pa:
            runs[-1][1] += len(data)
            runs[-1][2].append(data)
        else:
            runs.append([pa, pa + len(data), [data]])
    return [(start, b"".join(parts)) for start, _, parts in runs]


def write_elf_core(path, *, machine, segments, cpus, vmcoreinfo=None, qemu_notes=True,
                   xen_crash_regs=False, vaddr_base=None, per_cpu_notes=None, extra_notes=(),
                   vaddr_of=None):
    """Write an ELF core.

    :param machine: ``"x86_64"`` (ELFCLASS64, EM_X86_64) or ``"i386"`` (ELFCLASS32, EM_386)
    :param segments: ``[(paddr, bytes)]``; adjacent pieces become one PT_LOAD
    :param cpus: per CPU a dict of register values (rax.., rip, rsp, rflags, cs, ss, ds, es, fs, gs,
        cr0, cr2, cr3, cr4, kernel_gs_base, <seg>_base/_limit/_flags); missing ones are 0
    :param vmcoreinfo: text of a VMCOREINFO note, or None
    :param qemu_notes: add a "QEMU" QEMUCPUState note per CPU (after all NT_PRSTATUS notes)
    :param xen_crash_regs: add a "Xen" 0x1000002 note (cr0, cr2, cr3, cr4) per CPU
    :param vaddr_base: when set, ``p_vaddr = vaddr_base + paddr`` (0 if that does not fit the class)
    :param per_cpu_notes: optional ``f(index, cpu) -> [(name, type, desc bytes)]``: notes written right
        after that CPU's NT_PRSTATUS (Xen kdump order: CORE, "Xen" CRASH_REGS, CRASH_INFO on CPU 0)
    :param extra_notes: ``[(name, type, desc bytes)]`` appended after all other notes
        (e.g. "VMCOREINFO_XEN")
    :param vaddr_of: optional ``f(paddr) -> vaddr`` for each PT_LOAD (overrides ``vaddr_base``)
    :return: dict with ``memory`` ([start, end) physical ranges written) and ``size``
    """
    if machine == "x86_64":
        ehdr, phdr, em, wmask = Elf64_Ehdr, Elf64_Phdr, EM_X86_64, (1 << 64) - 1
    elif machine == "i386":
        ehdr, phdr, em, wmask = Elf32_Ehdr, Elf32_Phdr, EM_386, (1 << 32) - 1
    else:
        raise ValueError(f"unknown machine {machine!r}")
    notes = []
    for i, c in enumerate(cpus):
        notes.append(note("CORE", NT_PRSTATUS, _prstatus(machine, c, i + 1)))
        if per_cpu_notes is not None:
            notes += [note(n, t, d) for n, t, d in per_cpu_notes(i, c)]
    if qemu_notes:
        notes += [note("QEMU", 0, _qemu_state(c)) for c in cpus]
    if xen_crash_regs:
        notes += [note("Xen", XEN_ELFNOTE_CRASH_REGS,
                       XenCrashRegs.build({k: int(c.get(k, 0)) for k in ("cr0", "cr2", "cr3", "cr4")}))
                  for c in cpus]
    if vmcoreinfo is not None:
        notes.append(note("VMCOREINFO", 0, vmcoreinfo.encode()))
    notes += [note(n, t, d) for n, t, d in extra_notes]
    notes = b"".join(notes)
    loads = merge_segments(segments)
    for pa, data in loads:
        if pa + len(data) - 1 > wmask:
            raise ValueError(f"segment at {pa:#x} does not fit an ELF{'64' if wmask >> 32 else '32'} p_paddr")

    phnum = 1 + len(loads)
    hdr_size = ehdr.sizeof() + phnum * phdr.sizeof()
    note_off = hdr_size
    off = note_off + len(notes)
    phdrs = [dict(p_type=PT_NOTE, p_flags=0, p_offset=note_off, p_vaddr=0, p_paddr=0,
                  p_filesz=len(notes), p_memsz=len(notes), p_align=0)]
    body = []
    for pa, data in loads:
        off += -off % PAGE
        va = 0
        if vaddr_of is not None:
            va = vaddr_of(pa) or 0
        elif vaddr_base is not None and vaddr_base + pa + len(data) - 1 <= wmask:
            va = vaddr_base + pa
        phdrs.append(dict(p_type=PT_LOAD, p_flags=PF_RWX, p_offset=off, p_vaddr=va, p_paddr=pa,
                          p_filesz=len(data), p_memsz=len(data), p_align=0))
        body.append((off, data))
        off += len(data)
    head = ehdr.build(dict(e_ident={}, e_type=ET_CORE, e_machine=em, e_version=1, e_entry=0,
                           e_phoff=ehdr.sizeof(), e_shoff=0, e_flags=0, e_ehsize=ehdr.sizeof(),
                           e_phentsize=phdr.sizeof(), e_phnum=phnum, e_shentsize=0, e_shnum=0,
                           e_shstrndx=0))
    head += b"".join(phdr.build(p) for p in phdrs) + notes
    with open(path, "wb") as f:
        f.write(head)
        pos = len(head)
        for o, data in body:
            f.write(b"\0" * (o - pos))
            f.write(data)
            pos = o + len(data)
    return {"memory": [[pa, pa + len(d)] for pa, d in loads], "size": pos}
