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


def makedumpfile_input(cpus=({"rip": 0xffffffff81000123, "rsp": 0x1234, "cs": 0x10,
                              "cr3": 0x2000, "cr0": 0x80050033, "cr4": 0x6f0},), qemu=True,
                       anon_pfns=(0x20, 0x22, 0x23, 0x101, 0x104)):
    """An x86_64 ELF vmcore that makedumpfile 1.7 accepts (``-d 1``): returns ``(image, pages)``.

    makedumpfile needs, besides PAGESIZE/OSRELEASE: ``init_uts_ns`` readable through the page
    tables at ``init_top_pgt`` (release must match OSRELEASE) and a FLATMEM ``mem_map``
    (SYMBOL(mem_map), SIZE(page), OFFSET(page.flags/_refcount/mapping)). Memory: pa 0..512 KiB
    and 1 MiB..1.5 MiB; every third page is zero (``-d 1`` stores them as one shared zero page,
    still readable). ``struct page`` of each pfn in ``anon_pfns`` has an anonymous ``mapping``
    (bit 0), so ``-d 8`` excludes those pages (mem_map lives at pa 0x10000).
    """
    pages = bytearray()
    for i in range(256):
        pages += (bytes([i % 251 + 1]) * 4096) if i % 3 else b"\0" * 4096
    uts = b"".join(s.encode().ljust(65, b"\0")
                   for s in ("Linux", "synth", "6.1.0-test", "#1", "x86_64", "(none)"))
    pages[0x1000:0x2000] = (struct.pack("<I", 1) + uts).ljust(4096, b"\0")
    pages[0x1800:0x1808] = struct.pack("<Q", 0xffffffff80010000)      # mem_map -> pa 0x10000
    pages[0x10000:0x16000] = bytes(0x6000)                             # 384 struct page (64 B)
    for pfn in anon_pfns:
        struct.pack_into("<Q", pages, 0x10000 + pfn * 64 + 24, 0xffff888000abc001)

    def table(d):
        return b"".join(struct.pack("<Q", d.get(i, 0)) for i in range(512))
    pages[0x2000:0x3000] = table({511: 0x3003})        # PML4[511] -> PDPT
    pages[0x3000:0x4000] = table({510: 0x4003})        # PDPT[510] -> PD (0xffffffff80000000)
    pages[0x4000:0x5000] = table({0: 0x83})            # PD[0]: 2 MiB page at pa 0
    vmci = ("OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(init_uts_ns)=ffffffff80001000\n"
            "SYMBOL(init_top_pgt)=ffffffff80002000\nNUMBER(phys_base)=0\nKERNELOFFSET=0\n"
            "SYMBOL(mem_map)=ffffffff80001800\nSIZE(page)=64\nOFFSET(page.flags)=0\n"
            "OFFSET(page._refcount)=52\nOFFSET(page.mapping)=24\n")
    notes = b"".join(note("CORE", NT_PRSTATUS, prstatus64(c)) for c in cpus)
    if qemu:
        notes += b"".join(note("QEMU", 0, qemu_cpu_state(c)) for c in cpus)
    notes += note("VMCOREINFO", 0, vmci.encode())
    segs = [(0, bytes(pages[:0x80000])), (0x100000, bytes(pages[0x80000:]))]
    return elf_core(segs, notes, align_data=4096), {0: bytes(pages[:0x80000]),
                                                    0x100000: bytes(pages[0x80000:])}
