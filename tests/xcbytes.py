"""Tiny ``xl dump-core`` (xc_core) files laid out by hand with :mod:`struct` only.

Independent of ``xenstructs.formats``: offsets are typed in from Xen's
``tools/libs/guest/xg_core.c`` (layout and note order), ``xg_core.h`` (note descriptors,
``xen_dumpcore_p2m``) and ``public/arch-x86/xen*.h`` (``vcpu_guest_context``, ``cpu_user_regs``,
``arch_shared_info``).
Every knob that a corrupt file could turn is a keyword of :func:`xc_core`.
"""

import struct

PAGE = 4096
MAGIC_PV, MAGIC_HVM = 0xF00FEBED, 0xF00FEBEE
INVALID = 0xFFFFFFFFFFFFFFFF
EM_386, EM_X86_64 = 3, 62
SHT_PROGBITS, SHT_STRTAB, SHT_NOTE = 1, 3, 7
NOTE_NONE, NOTE_HEADER, NOTE_VERSION, NOTE_FORMAT = 0x2000000, 0x2000001, 0x2000002, 0x2000003

# cpu_user_regs x86_64 (offset inside user_regs, size)
UREGS64 = {"r15": (0, 8), "r14": (8, 8), "r13": (16, 8), "r12": (24, 8), "rbp": (32, 8),
           "rbx": (40, 8), "r11": (48, 8), "r10": (56, 8), "r9": (64, 8), "r8": (72, 8),
           "rax": (80, 8), "rcx": (88, 8), "rdx": (96, 8), "rsi": (104, 8), "rdi": (112, 8),
           "rip": (128, 8), "cs": (136, 2), "rflags": (144, 8), "rsp": (152, 8), "ss": (160, 2),
           "es": (168, 2), "ds": (176, 2), "fs": (184, 2), "gs": (192, 2)}
UREGS32 = {"ebx": (0, 4), "ecx": (4, 4), "edx": (8, 4), "esi": (12, 4), "edi": (16, 4),
           "ebp": (20, 4), "eax": (24, 4), "eip": (32, 4), "cs": (36, 2), "eflags": (40, 4),
           "esp": (44, 4), "ss": (48, 2), "es": (52, 2), "ds": (56, 2), "fs": (60, 2),
           "gs": (64, 2)}
VGC64 = {"flags": (512, 8), "kernel_ss": (4968, 8), "kernel_sp": (4976, 8),
         "fs_base": (5144, 8), "gs_base_kernel": (5152, 8), "gs_base_user": (5160, 8)}
VGC32 = {"flags": (512, 4), "kernel_ss": (2708, 4), "kernel_sp": (2712, 4)}
SIZE64, SIZE32, CTRLREG64, CTRLREG32, UREGS_OFF64, UREGS_OFF32 = 5168, 2800, 4984, 2716, 520, 516


def _put(buf, off, size, value):
    buf[off:off + size] = (value & ((1 << 8 * size) - 1)).to_bytes(size, "little")


def vgc64(regs=None, ctrlreg=(), slot=SIZE64):
    """``vcpu_guest_context`` x86_64: ``regs`` by name, ``ctrlreg`` = CR0..CR7 values."""
    b = bytearray(slot)
    for name, value in (regs or {}).items():
        off, size = (UREGS_OFF64 + UREGS64[name][0], UREGS64[name][1]) if name in UREGS64 \
            else VGC64[name]
        _put(b, off, size, value)
    for i, v in enumerate(ctrlreg):
        _put(b, CTRLREG64 + 8 * i, 8, v)
    return bytes(b)


def vgc32(regs=None, ctrlreg=(), slot=SIZE64):
    """``vcpu_guest_context`` x86_32 at the start of a ``vcpu_guest_context_any_t`` slot."""
    b = bytearray(slot)
    for name, value in (regs or {}).items():
        off, size = (UREGS_OFF32 + UREGS32[name][0], UREGS32[name][1]) if name in UREGS32 \
            else VGC32[name]
        _put(b, off, size, value)
    for i, v in enumerate(ctrlreg):
        _put(b, CTRLREG32 + 4 * i, 4, v)
    return bytes(b)


def cr3_32(mfn):
    """32-bit ``xen_pfn_to_cr3``: rotated so frames above 4 GiB fit in 32 bits."""
    return ((mfn << 12) | (mfn >> 20)) & 0xFFFFFFFF


def shared_info(width, max_pfn=0, fll=0, nmi=0, p2m_cr3=0, p2m_vaddr=0, gen=0):
    """A shared_info page with only ``arch`` filled (at 3088 for 64-bit, 2316 for 32-bit)."""
    b = bytearray(PAGE)
    fmt, off = ("<6Q", 3088) if width == 8 else ("<6I", 2316)
    struct.pack_into(fmt, b, off, max_pfn, fll, nmi, p2m_cr3, p2m_vaddr, gen)
    return bytes(b)


def note(ntype, desc):
    """The writer's ``struct elfnote`` (namesz 4, "Xen\\0") + descriptor."""
    return struct.pack("<III4s", 4, len(desc), ntype, b"Xen\0") + desc


def version_desc(major=4, minor=17, extra=".0", width=8, pagesize=PAGE):
    d = bytearray(1280)
    struct.pack_into("<QQ16s", d, 0, major, minor, extra.encode())
    struct.pack_into("<64s", d, 32, b"gcc (Debian 12.2.0-14) 12.2.0")
    struct.pack_into("<64s", d, 1200, b"d75f1e9b7431")                # changeset at 1200
    struct.pack_into("<Q", d, 1264, 0xFFFF800000000000)               # virt_start
    struct.pack_into("<Q", d, 1272 if width == 8 else 1268, pagesize)
    return bytes(d)


def xc_core(pages, vcpus, machine=EM_X86_64, hvm=False, magic=None, nr_pages=None,
            nr_vcpus=None, page_size=PAGE, shinfo=None, drop=(), entsize=None, table=None,
            version=True, fmt_version=1, shnum=None, shstrndx=None, extra_sections=(),
            ei_class=2, phnum=0):
    """Build a dump-core file.

    ``pages``: ``[(pfn, mfn, data)]`` for PV, ``[(pfn, data)]`` for HVM (data ≤ 4096 bytes).
    ``vcpus``: context slots (``vgc64``/``vgc32``). ``table``: raw ``.xen_p2m``/``.xen_pfn`` bytes
    instead of the ones made from ``pages``; ``drop``: section names to leave out; ``entsize``:
    ``{name: sh_entsize}`` overrides.
    """
    width = 8 if machine == EM_X86_64 else 4
    if magic is None:
        magic = MAGIC_HVM if hvm else MAGIC_PV
    n = len(pages)
    nr_pages = n if nr_pages is None else nr_pages
    nr_vcpus = len(vcpus) if nr_vcpus is None else nr_vcpus
    entsize = dict(entsize or {})

    notes = note(NOTE_NONE, b"") + note(NOTE_HEADER, struct.pack("<4Q", magic, nr_vcpus,
                                                                nr_pages, page_size))
    if version:
        notes += note(NOTE_VERSION, version_desc(width=width))
    if fmt_version is not None:
        notes += note(NOTE_FORMAT, struct.pack("<Q", fmt_version))
    prstatus = b"".join(vcpus)
    page_data = b"".join(p[-1].ljust(PAGE, b"\0") for p in pages)
    if table is None:
        if hvm:
            table = b"".join(struct.pack("<Q", p[0]) for p in pages)
        else:
            table = b"".join(struct.pack("<QQ", p[0], p[1]) for p in pages)
    tname = ".xen_pfn" if hvm else ".xen_p2m"

    # (name, type, data, addralign, entsize) in the writer's order; .shstrtab comes second.
    secs = [(".note.Xen", SHT_NOTE, notes, 0, 0),
            (".xen_prstatus", SHT_PROGBITS, prstatus, 8, len(vcpus[0]) if vcpus else SIZE64)]
    if shinfo is not None:
        secs.append((".xen_shared_info", SHT_PROGBITS, shinfo, 8, PAGE))
    secs.append((".xen_pages", SHT_PROGBITS, page_data, PAGE, PAGE))
    secs.append((tname, SHT_PROGBITS, table, 8, 8 if hvm else 16))
    secs.extend(extra_sections)
    secs = [s for s in secs if s[0] not in drop]

    names = b"\0"
    name_off = {}
    for nm in [".shstrtab"] + [s[0] for s in secs]:
        name_off[nm] = len(names)
        names += nm.encode() + b"\0"

    count = 2 + len(secs)
    off = 64 + count * 64
    body = b""
    shdrs = [struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)]
    placed = []
    for nm, typ, data, align, ent in secs:
        if nm == ".xen_pages":                               # page-aligned, zero padding before
            pad = -off % PAGE
            body += b"\0" * pad
            off += pad
        placed.append((nm, typ, off, len(data), align, entsize.get(nm, ent)))
        body += data
        off += len(data)
    strtab_off = off
    body += names
    shdrs.append(struct.pack("<IIQQQQIIQQ", name_off[".shstrtab"], SHT_STRTAB, 0, 0, strtab_off,
                             len(names), 0, 0, 0, 0))
    for nm, typ, o, size, align, ent in placed:
        shdrs.append(struct.pack("<IIQQQQIIQQ", name_off[nm], typ, 0, 0, o, size, 0, 0, align,
                                 ent))
    ident = b"\x7fELF" + bytes([ei_class, 1, 1, 0, 1]) + bytes(7)
    eh = ident + struct.pack("<HHIQQQIHHHHHH", 4, machine, 1, 0, 0, 64, 0, 64, 56, phnum, 64,
                             count if shnum is None else shnum,
                             1 if shstrndx is None else shstrndx)
    return eh + b"".join(shdrs) + body


def pre_elf(magic=MAGIC_PV):
    """Xen 3.0 ``xc_core_header_t`` (six u32) followed by nothing useful."""
    return struct.pack("<6I", magic, 1, 1, 24, 4096, 8192) + bytes(64)


def section_offsets(data):
    """``{name: (offset, size, header offset)}`` of a :func:`xc_core` file (for corrupting it)."""
    shoff, = struct.unpack_from("<Q", data, 40)
    shnum, shstrndx = struct.unpack_from("<HH", data, 60)
    hdrs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + 64 * i) for i in range(shnum)]
    st = hdrs[shstrndx]
    strtab = data[st[4]:st[4] + st[5]]
    out = {}
    for i, h in enumerate(hdrs[1:], 1):
        name = strtab[h[0]:].split(b"\0", 1)[0].decode()
        out[name] = (h[4], h[5], shoff + 64 * i)
    return out
