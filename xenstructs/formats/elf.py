"""ELF core layouts: headers, notes, x86 ``NT_PRSTATUS``, QEMU's CPU note, Xen crash notes.

Only little-endian x86 cores are described (the hosts refuse anything else first). Sources:
Linux ``include/uapi/linux/elf.h`` and ``arch/x86/include/asm/user_{32,64}.h`` (``user_regs_struct``
order of ``pr_reg``), QEMU ``target/i386/arch_dump.c`` and ``contrib/elf2dmp/qemu_elf.h``
(``QEMUCPUState``), Xen ``xen/include/xen/elfcore.h`` and ``public/elfnote.h`` (crash notes).

>>> Elf64_Phdr.sizeof(), Elf32_Phdr.sizeof(), PrStatus64.sizeof(), PrStatus32.sizeof()
(56, 32, 336, 144)
"""

import construct as C

from ..errors import BadDump

EM_386, EM_X86_64 = 3, 62
MACHINES = {EM_X86_64: "x86_64", EM_386: "i386"}
ET_CORE = 4
PT_LOAD, PT_NOTE = 1, 4
SHT_NOTE = 7
PN_XNUM = 0xFFFF               # e_phnum escape: the real count is in section header 0's sh_info
NT_PRSTATUS = 1
QEMU_NOTE_TYPE = 0             # name "QEMU"
XEN_ELFNOTE_CRASH_INFO = 0x1000001
XEN_ELFNOTE_CRASH_REGS = 0x1000002

# e_ident is parsed first on its own: class and data encoding choose the rest.
ElfIdent = C.Struct(
    "magic" / C.Bytes(4),
    "ei_class" / C.Int8ul,     # 1 = ELFCLASS32, 2 = ELFCLASS64
    "ei_data" / C.Int8ul,      # 1 = little-endian, 2 = big-endian
    "ei_version" / C.Int8ul,
    "ei_osabi" / C.Int8ul,
    C.Padding(8),
)


def _ehdr(word):
    return C.Struct(
        "e_ident" / ElfIdent,
        "e_type" / C.Int16ul, "e_machine" / C.Int16ul, "e_version" / C.Int32ul,
        "e_entry" / word, "e_phoff" / word, "e_shoff" / word,
        "e_flags" / C.Int32ul, "e_ehsize" / C.Int16ul,
        "e_phentsize" / C.Int16ul, "e_phnum" / C.Int16ul,
        "e_shentsize" / C.Int16ul, "e_shnum" / C.Int16ul, "e_shstrndx" / C.Int16ul,
    )


Elf64_Ehdr = _ehdr(C.Int64ul)          # 64 bytes
Elf32_Ehdr = _ehdr(C.Int32ul)          # 52 bytes

Elf64_Phdr = C.Struct(
    "p_type" / C.Int32ul, "p_flags" / C.Int32ul, "p_offset" / C.Int64ul, "p_vaddr" / C.Int64ul,
    "p_paddr" / C.Int64ul, "p_filesz" / C.Int64ul, "p_memsz" / C.Int64ul, "p_align" / C.Int64ul,
)
Elf32_Phdr = C.Struct(
    "p_type" / C.Int32ul, "p_offset" / C.Int32ul, "p_vaddr" / C.Int32ul, "p_paddr" / C.Int32ul,
    "p_filesz" / C.Int32ul, "p_memsz" / C.Int32ul, "p_flags" / C.Int32ul, "p_align" / C.Int32ul,
)


def _shdr(word):
    return C.Struct(
        "sh_name" / C.Int32ul, "sh_type" / C.Int32ul, "sh_flags" / word, "sh_addr" / word,
        "sh_offset" / word, "sh_size" / word, "sh_link" / C.Int32ul, "sh_info" / C.Int32ul,
        "sh_addralign" / word, "sh_entsize" / word,
    )


Elf64_Shdr = _shdr(C.Int64ul)          # 64 bytes
Elf32_Shdr = _shdr(C.Int32ul)          # 40 bytes

# Elf32_Nhdr and Elf64_Nhdr are the same 12 bytes; name and descriptor are padded to 4 bytes.
Elf_Nhdr = C.Struct("n_namesz" / C.Int32ul, "n_descsz" / C.Int32ul, "n_type" / C.Int32ul)

# user_regs_struct, in pr_reg order.
GREGS_X86_64 = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
                "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "rflags", "rsp", "ss", "fs_base",
                "gs_base", "ds", "es", "fs", "gs")
GREGS_I386 = ("ebx", "ecx", "edx", "esi", "edi", "ebp", "eax", "ds", "es", "fs", "gs", "orig_eax",
              "eip", "cs", "eflags", "esp", "ss")

# struct elf_prstatus: pr_info (3 ints), pr_cursig (short, padded), pr_sigpend, pr_sighold
# (unsigned long), pr_pid/ppid/pgrp/sid, 4 timevals, pr_reg, pr_fpvalid.
PrStatus64 = C.Struct(
    "si_signo" / C.Int32sl, "si_code" / C.Int32sl, "si_errno" / C.Int32sl,
    "pr_cursig" / C.Int16sl, C.Padding(2),
    "pr_sigpend" / C.Int64ul, "pr_sighold" / C.Int64ul,
    "pr_pid" / C.Int32sl, "pr_ppid" / C.Int32sl, "pr_pgrp" / C.Int32sl, "pr_sid" / C.Int32sl,
    "pr_times" / C.Array(8, C.Int64sl),              # utime stime cutime cstime (sec, usec)
    "pr_reg" / C.Struct(*[n / C.Int64ul for n in GREGS_X86_64]),   # offset 112
    "pr_fpvalid" / C.Int32sl, C.Padding(4),
)
PrStatus32 = C.Struct(
    "si_signo" / C.Int32sl, "si_code" / C.Int32sl, "si_errno" / C.Int32sl,
    "pr_cursig" / C.Int16sl, C.Padding(2),
    "pr_sigpend" / C.Int32ul, "pr_sighold" / C.Int32ul,
    "pr_pid" / C.Int32sl, "pr_ppid" / C.Int32sl, "pr_pgrp" / C.Int32sl, "pr_sid" / C.Int32sl,
    "pr_times" / C.Array(8, C.Int32sl),
    "pr_reg" / C.Struct(*[n / C.Int32ul for n in GREGS_I386]),     # offset 72
    "pr_fpvalid" / C.Int32sl,
)

QEMUCPUSegment = C.Struct("selector" / C.Int32ul, "limit" / C.Int32ul, "flags" / C.Int32ul,
                          C.Padding(4), "base" / C.Int64ul)
QEMU_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15", "rip", "rflags")
QEMU_SEGS = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt")
# QEMUCPUState (version 1): the same layout in ELF32 and ELF64 dumps. kernel_gs_base was appended
# later (QEMU 7.x); ``size`` says whether it is there.
QEMUCPUState = C.Struct(
    "version" / C.Int32ul,
    "size" / C.Int32ul,
    *[n / C.Int64ul for n in QEMU_GPRS],
    *[n / QEMUCPUSegment for n in QEMU_SEGS],
    "cr" / C.Array(5, C.Int64ul),
    "kernel_gs_base" / C.If(C.this.size >= 440, C.Int64ul),
)
QEMU_CPU_STATE_MIN = 432

# crash_xen_core_t: unsigned long cr0, cr2, cr3, cr4 (XEN_ELFNOTE_CRASH_REGS).
CrashXenCore64 = C.Struct("cr0" / C.Int64ul, "cr2" / C.Int64ul, "cr3" / C.Int64ul, "cr4" / C.Int64ul)
CrashXenCore32 = C.Struct("cr0" / C.Int32ul, "cr2" / C.Int32ul, "cr3" / C.Int32ul, "cr4" / C.Int32ul)
# crash_xen_info_t (x86): the first words only; xen_phys_start is word 8 when the note has >9 words.
CRASH_INFO_WORDS = ("xen_major_version", "xen_minor_version", "xen_extra_version",
                    "xen_changeset", "xen_compiler", "xen_compile_date", "xen_compile_time",
                    "tainted", "xen_phys_start", "dom0_pfn_to_mfn_frame_list_list")


def parse(con, data, what):
    """Parse ``data`` with ``con``; a short or bad buffer becomes one :class:`BadDump` line."""
    try:
        return con.parse(data)
    except (C.ConstructError, ValueError, OverflowError) as e:
        raise BadDump(f"bad {what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                      ) from None


def iter_notes(buf, where="note segment"):
    """Yield ``(name, type, desc)`` for each note in ``buf`` (bytes-like).

    Stops at trailing zero padding; a note running past the end raises :class:`BadDump`.
    """
    buf = bytes(buf)
    off, end = 0, len(buf)
    while off + 12 <= end:
        nh = Elf_Nhdr.parse(buf[off:off + 12])
        if nh.n_namesz == 0 and nh.n_descsz == 0 and nh.n_type == 0:
            break                              # zero padding after the last note
        name_off = off + 12
        desc_off = name_off + ((nh.n_namesz + 3) & ~3)
        nxt = desc_off + ((nh.n_descsz + 3) & ~3)
        if desc_off + nh.n_descsz > end:
            raise BadDump(f"{where}: note at offset {off} (namesz {nh.n_namesz}, descsz "
                          f"{nh.n_descsz}) runs past the end ({end} bytes)")
        name = buf[name_off:name_off + nh.n_namesz].split(b"\0", 1)[0].decode("latin-1")
        yield name, nh.n_type, buf[desc_off:desc_off + nh.n_descsz]
        off = nxt
