"""ELF core layouts: headers, notes, x86 ``NT_PRSTATUS``, QEMU's CPU note, Xen crash notes.

Only little-endian x86 cores are described (the hosts refuse anything else first). Sources:
Linux ``include/uapi/linux/elf.h`` and ``arch/x86/include/asm/user_{32,64}.h`` (``user_regs_struct``
order of ``pr_reg``), QEMU ``target/i386/arch_dump.c`` and ``contrib/elf2dmp/qemu_elf.h``
(``QEMUCPUState``), Xen ``xen/include/xen/elfcore.h`` and ``public/elfnote.h`` (crash notes).

>>> Elf64_Phdr.sizeof(), Elf32_Phdr.sizeof(), PrStatus64.sizeof(), PrStatus32.sizeof()
(56, 32, 336, 144)
"""

import construct

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
ElfIdent = construct.Struct(
    "magic" / construct.Bytes(4),
    "ei_class" / construct.Int8ul,     # 1 = ELFCLASS32, 2 = ELFCLASS64
    "ei_data" / construct.Int8ul,      # 1 = little-endian, 2 = big-endian
    "ei_version" / construct.Int8ul,
    "ei_osabi" / construct.Int8ul,
    construct.Padding(8),
)


def _ehdr(word):
    return construct.Struct(
        "e_ident" / ElfIdent,
        "e_type" / construct.Int16ul, "e_machine" / construct.Int16ul, "e_version" / construct.Int32ul,
        "e_entry" / word, "e_phoff" / word, "e_shoff" / word,
        "e_flags" / construct.Int32ul, "e_ehsize" / construct.Int16ul,
        "e_phentsize" / construct.Int16ul, "e_phnum" / construct.Int16ul,
        "e_shentsize" / construct.Int16ul, "e_shnum" / construct.Int16ul, "e_shstrndx" / construct.Int16ul,
    )


Elf64_Ehdr = _ehdr(construct.Int64ul)          # 64 bytes
Elf32_Ehdr = _ehdr(construct.Int32ul)          # 52 bytes

Elf64_Phdr = construct.Struct(
    "p_type" / construct.Int32ul, "p_flags" / construct.Int32ul, "p_offset" / construct.Int64ul, "p_vaddr" / construct.Int64ul,
    "p_paddr" / construct.Int64ul, "p_filesz" / construct.Int64ul, "p_memsz" / construct.Int64ul, "p_align" / construct.Int64ul,
)
Elf32_Phdr = construct.Struct(
    "p_type" / construct.Int32ul, "p_offset" / construct.Int32ul, "p_vaddr" / construct.Int32ul, "p_paddr" / construct.Int32ul,
    "p_filesz" / construct.Int32ul, "p_memsz" / construct.Int32ul, "p_flags" / construct.Int32ul, "p_align" / construct.Int32ul,
)


def _shdr(word):
    return construct.Struct(
        "sh_name" / construct.Int32ul, "sh_type" / construct.Int32ul, "sh_flags" / word, "sh_addr" / word,
        "sh_offset" / word, "sh_size" / word, "sh_link" / construct.Int32ul, "sh_info" / construct.Int32ul,
        "sh_addralign" / word, "sh_entsize" / word,
    )


Elf64_Shdr = _shdr(construct.Int64ul)          # 64 bytes
Elf32_Shdr = _shdr(construct.Int32ul)          # 40 bytes

# Elf32_Nhdr and Elf64_Nhdr are the same 12 bytes; name and descriptor are padded to 4 bytes.
Elf_Nhdr = construct.Struct("n_namesz" / construct.Int32ul, "n_descsz" / construct.Int32ul, "n_type" / construct.Int32ul)

# user_regs_struct, in pr_reg order.
GREGS_X86_64 = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
                "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "rflags", "rsp", "ss", "fs_base",
                "gs_base", "ds", "es", "fs", "gs")
GREGS_I386 = ("ebx", "ecx", "edx", "esi", "edi", "ebp", "eax", "ds", "es", "fs", "gs", "orig_eax",
              "eip", "cs", "eflags", "esp", "ss")

# struct elf_prstatus: pr_info (3 ints), pr_cursig (short, padded), pr_sigpend, pr_sighold
# (unsigned long), pr_pid/ppid/pgrp/sid, 4 timevals, pr_reg, pr_fpvalid.
PrStatus64 = construct.Struct(
    "si_signo" / construct.Int32sl, "si_code" / construct.Int32sl, "si_errno" / construct.Int32sl,
    "pr_cursig" / construct.Int16sl, construct.Padding(2),
    "pr_sigpend" / construct.Int64ul, "pr_sighold" / construct.Int64ul,
    "pr_pid" / construct.Int32sl, "pr_ppid" / construct.Int32sl, "pr_pgrp" / construct.Int32sl, "pr_sid" / construct.Int32sl,
    "pr_times" / construct.Array(8, construct.Int64sl),              # utime stime cutime cstime (sec, usec)
    "pr_reg" / construct.Struct(*[n / construct.Int64ul for n in GREGS_X86_64]),   # offset 112
    "pr_fpvalid" / construct.Int32sl, construct.Padding(4),
)
PrStatus32 = construct.Struct(
    "si_signo" / construct.Int32sl, "si_code" / construct.Int32sl, "si_errno" / construct.Int32sl,
    "pr_cursig" / construct.Int16sl, construct.Padding(2),
    "pr_sigpend" / construct.Int32ul, "pr_sighold" / construct.Int32ul,
    "pr_pid" / construct.Int32sl, "pr_ppid" / construct.Int32sl, "pr_pgrp" / construct.Int32sl, "pr_sid" / construct.Int32sl,
    "pr_times" / construct.Array(8, construct.Int32sl),
    "pr_reg" / construct.Struct(*[n / construct.Int32ul for n in GREGS_I386]),     # offset 72
    "pr_fpvalid" / construct.Int32sl,
)

QEMUCPUSegment = construct.Struct("selector" / construct.Int32ul, "limit" / construct.Int32ul, "flags" / construct.Int32ul,
                          construct.Padding(4), "base" / construct.Int64ul)
QEMU_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15", "rip", "rflags")
QEMU_SEGS = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt")
# QEMUCPUState (version 1): the same layout in ELF32 and ELF64 dumps. kernel_gs_base was appended
# later (QEMU 7.x); ``size`` says whether it is there.
QEMUCPUState = construct.Struct(
    "version" / construct.Int32ul,
    "size" / construct.Int32ul,
    *[n / construct.Int64ul for n in QEMU_GPRS],
    *[n / QEMUCPUSegment for n in QEMU_SEGS],
    "cr" / construct.Array(5, construct.Int64ul),
    "kernel_gs_base" / construct.If(construct.this.size >= 440, construct.Int64ul),
)
QEMU_CPU_STATE_MIN = 432

# crash_xen_core_t: unsigned long cr0, cr2, cr3, cr4 (XEN_ELFNOTE_CRASH_REGS).
CrashXenCore64 = construct.Struct("cr0" / construct.Int64ul, "cr2" / construct.Int64ul, "cr3" / construct.Int64ul, "cr4" / construct.Int64ul)
CrashXenCore32 = construct.Struct("cr0" / construct.Int32ul, "cr2" / construct.Int32ul, "cr3" / construct.Int32ul, "cr4" / construct.Int32ul)
# crash_xen_info_t (x86): the first words only; xen_phys_start is word 8 when the note has >9 words.
CRASH_INFO_WORDS = ("xen_major_version", "xen_minor_version", "xen_extra_version",
                    "xen_changeset", "xen_compiler", "xen_compile_date", "xen_compile_time",
                    "tainted", "xen_phys_start", "dom0_pfn_to_mfn_frame_list_list")


def parse(con, data, what):
    """Parse ``data`` with ``con``; a short or bad buffer becomes one :class:`BadDump` line."""
    try:
        return con.parse(data)
    except (construct.ConstructError, ValueError, OverflowError) as e:
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
