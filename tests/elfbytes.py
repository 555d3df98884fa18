"""Tiny ELF core files laid out by hand with :mod:`struct` (independent of xenstructs.formats).

Used by the format tests so the reader is checked against bytes nobody else's code produced.
Layouts: Linux ``include/uapi/linux/elf.h``, ``arch/x86/include/asm/user_{32,64}.h``
(``user_regs_struct``), QEMU ``target/i386/arch_dump.c`` (``QEMUCPUState``), Xen
``xen/include/xen/elfcore.h`` (``crash_xen_core_t``).
"""

import struct

EM_386, EM_X86_64 = 3, 62
NT_PRSTATUS = 1
XEN_ELFNOTE_CRASH_INFO, XEN_ELFNOTE_CRASH_REGS = 0x1000001, 0x1000002

GREGS64 = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
           "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "rflags", "rsp", "ss", "fs_base",
           "gs_base", "ds", "es", "fs", "gs")
GREGS32 = ("ebx", "ecx", "edx", "esi", "edi", "ebp", "eax", "ds", "es", "fs", "gs", "orig_eax",
           "eip", "cs", "eflags", "esp", "ss")
QEMU_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15", "rip", "rflags")
QEMU_SEGS = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt")


def pad4(b):
    return b + b"\0" * (-len(b) % 4)


def note(name, ntype, desc, e="<"):
    """One ELF note: namesz counts the NUL; name and desc padded to 4 bytes."""
    n = name.encode() + b"\0"
    return struct.pack(e + "III", len(n), len(desc), ntype) + pad4(n) + pad4(desc)


def prstatus64(regs, pid=1):
    """x86_64 ``struct elf_prstatus`` (336 bytes); pr_reg at offset 112."""
    head = struct.pack("<iiih2xQQiiii", 0, 0, 0, 0, 0, 0, pid, 0, 0, 0) + b"\0" * 64
    assert len(head) == 112
    gregs = struct.pack("<27Q", *[regs.get(r, 0) for r in GREGS64])
    return head + gregs + struct.pack("<i4x", 1)


def prstatus32(regs, pid=1):
    """i386 ``struct elf_prstatus`` (144 bytes); pr_reg at offset 72."""
    head = struct.pack("<iiih2xIIiiii", 0, 0, 0, 0, 0, 0, pid, 0, 0, 0) + b"\0" * 32
    assert len(head) == 72
    gregs = struct.pack("<17I", *[regs.get(r, 0) for r in GREGS32])
    return head + gregs + struct.pack("<i", 1)


def qemu_cpu_state(regs, with_kgs=True):
    """QEMUCPUState: version 1, size, 18 GPRs, 10 segments, cr[5], kernel_gs_base."""
    body = struct.pack("<18Q", *[regs.get(r, 0) for r in QEMU_GPRS])
    for s in QEMU_SEGS:
        body += struct.pack("<IIIIQ", regs.get(s, 0), 0xFFFFFFFF, 0, 0, regs.get(s + "_base", 0))
    body += struct.pack("<5Q", *[regs.get(f"cr{i}", 0) for i in range(5)])
    if with_kgs:
        body += struct.pack("<Q", regs.get("kernel_gs_base", 0))
    size = 8 + len(body)
    return struct.pack("<II", 1, size) + body


def xen_crash_regs(regs, word="Q"):
    return struct.pack("<4" + word, *[regs.get(r, 0) for r in ("cr0", "cr2", "cr3", "cr4")])


def elf_core(segments, notes=b"", elfclass=64, machine=EM_X86_64, endian="<", extra_phdrs=(),
             phnum=None, phentsize=None, align_data=16):
    """Build an ET_CORE image: ELF header, PT_NOTE (if ``notes``), one PT_LOAD per segment.

    ``segments`` items are ``(paddr, data)`` or ``(paddr, data, memsz)``; p_vaddr is
    ``0xffff880000000000 + paddr`` so reads by p_vaddr would be caught. Returns bytes.
    """
    e = endian
    segs = [s if len(s) == 3 else (s[0], s[1], len(s[1])) for s in segments]
    if elfclass == 64:
        ehsize, phsize = 64, 56
    else:
        ehsize, phsize = 52, 32
    nph = (1 if notes else 0) + len(segs) + len(extra_phdrs)
    off = ehsize + phsize * nph
    note_off = off
    off += len(notes)
    off += -off % align_data
    phdrs = []
    if notes:
        phdrs.append((4, note_off, 0, 0, len(notes), len(notes), 0, 4))   # PT_NOTE
    data_off = []
    for paddr, data, memsz in segs:
        data_off.append(off)
        vaddr = (0xffff880000000000 + paddr) if elfclass == 64 else (0xC0000000 + paddr) & 0xFFFFFFFF
        phdrs.append((1, off, vaddr, paddr, len(data), memsz, 7, 4096))
        off += len(data)
    phdrs.extend(extra_phdrs)
    ident = b"\x7fELF" + bytes([2 if elfclass == 64 else 1, 1 if e == "<" else 2, 1, 0]) + b"\0" * 8
    n = nph if phnum is None else phnum
    pe = phsize if phentsize is None else phentsize
    if elfclass == 64:
        eh = ident + struct.pack(e + "HHIQQQIHHHHHH", 4, machine, 1, 0, ehsize, 0, 0, ehsize, pe,
                                 n, 64, 0, 0)
    else:
        eh = ident + struct.pack(e + "HHIIIIIHHHHHH", 4, machine, 1, 0, ehsize, 0, 0, ehsize, pe,
                                 n, 40, 0, 0)
    out = bytearray(eh)
    for p_type, p_off, vaddr, paddr, filesz, memsz, flags, align in phdrs:
        if elfclass == 64:
            out += struct.pack(e + "IIQQQQQQ", p_type, flags, p_off, vaddr, paddr, filesz, memsz,
                               align)
        else:
            out += struct.pack(e + "IIIIIIII", p_type, p_off, vaddr, paddr, filesz, memsz, flags,
                               align)
    out += notes
    out += b"\0" * (-len(out) % align_data)
    for (paddr, data, memsz), o in zip(segs, data_off):
        assert len(out) == o
        out += data
    return bytes(out)


def vmcoreinfo_text(extra=""):
    return ("OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff82a0a000\n"
            "SYMBOL(swapper_pg_dir)=ffffffff82a0a000\nSYMBOL(_stext)=ffffffff81000000\n"
            "NUMBER(phys_base)=-1073741824\nSIZE(page)=64\nOFFSET(page.flags)=0\n"
            "LENGTH(zone.free_area)=11\nKERNELOFFSET=0\nNUMBER(pgtable_l5_enabled)=0\n"
            "CRASHTIME=1700000000\n" + extra)
