"""Write ``xl dump-core`` (xc_core) ELF files exactly as Xen's libxenguest does.

Format (verified against ``tools/libs/guest/xg_core.c``, ``xg_core.h``, ``tools/libxc/xc_core_x86.h``,
``public/arch-x86/xen.h``, ``xen-x86_64.h``, ``xen-x86_32.h``, ``public/version.h``, ``public/elfnote.h``;
see cores/README.md):

* ELF64 little endian ET_CORE for every guest (``xc_core_ehdr_init``): EI_OSABI SYSV, **EI_ABIVERSION
  = EV_CURRENT (1)**, e_phoff 0, e_phnum 0 but e_phentsize = sizeof(Elf64_Phdr) (56), e_shoff = 64,
  e_shentsize 64, e_flags 0, e_machine EM_X86_64 if guest_width == 8 else EM_386.
* Section headers right after the ELF header, in this order: null, ``.shstrtab``, ``.note.Xen``,
  ``.xen_prstatus``, ``.xen_shared_info`` (when the page could be mapped), ``.xen_pages``,
  ``.xen_p2m`` (PV) or ``.xen_pfn`` (HVM). sh_flags/sh_addr/sh_link/sh_info are 0.
* File order: ELF header, section headers, notes (NONE, HEADER, XEN_VERSION, FORMAT_VERSION, each with
  the fixed 16-byte ``struct elfnote`` header), vcpu contexts, shared_info page, zero padding up to a
  page boundary, pages, p2m/pfn table, then the string table (its section is index 1 but its bytes
  come last).
* (sh_addralign, sh_entsize): .shstrtab (0, 0) SHT_STRTAB; .note.Xen (0, 0) SHT_NOTE; .xen_prstatus
  (8, 5168) = alignof/sizeof(vcpu_guest_context_any_t) with a 64-bit toolstack; .xen_shared_info
  (8, 4096); .xen_pages (4096, 4096); .xen_p2m (8, 16); .xen_pfn (8, 8); the others SHT_PROGBITS.
* XEN_VERSION descriptor: u64 major, minor; char extra[16]; compile_info {compiler[64], compile_by[16],
  compile_domain[32], compile_date[32]}; capabilities[1024]; changeset[64]; platform_parameters
  {xen_ulong_t virt_start} (the toolstack's, 8 bytes); u64 pagesize: 1280 bytes. For a guest narrower
  than the toolstack the writer memmove()s pagesize 4 bytes earlier (to offset 1268), leaving the old
  high half at 1276.
* FORMAT_VERSION: u64 (0 << 32) | 1.
"""

import construct as C

EM_386, EM_X86_64 = 3, 62
ET_CORE = 4
SHT_PROGBITS, SHT_STRTAB, SHT_NOTE = 1, 3, 7
PAGE = 4096

XEN_ELFNOTE_DUMPCORE_NONE = 0x2000000
XEN_ELFNOTE_DUMPCORE_HEADER = 0x2000001
XEN_ELFNOTE_DUMPCORE_XEN_VERSION = 0x2000002
XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION = 0x2000003
XC_CORE_MAGIC, XC_CORE_MAGIC_HVM = 0xF00FEBED, 0xF00FEBEE
FORMAT_VERSION_CURRENT = (0 << 32) | 1
VCPU_SLOT = 5168                     # sizeof(vcpu_guest_context_any_t), 64-bit toolstack
SECTION_NAMES = (".shstrtab", ".note.Xen", ".xen_prstatus", ".xen_shared_info", ".xen_pages",
                 ".xen_p2m", ".xen_pfn")

Elf64_Ehdr = C.Struct(
    "e_ident" / C.Struct(
        "magic" / C.Const(b"\x7fELF"),
        "ei_class" / C.Const(2, C.Int8ul),         # ELFCLASS64
        "ei_data" / C.Const(1, C.Int8ul),          # ELFDATA2LSB
        "ei_version" / C.Const(1, C.Int8ul),       # EV_CURRENT
        "ei_osabi" / C.Const(0, C.Int8ul),         # ELFOSABI_SYSV
        "ei_abiversion" / C.Const(1, C.Int8ul),    # EV_CURRENT (xc_core_ehdr_init)
        "pad" / C.Padding(7),
    ),
    "e_type" / C.Int16ul, "e_machine" / C.Int16ul, "e_version" / C.Int32ul,
    "e_entry" / C.Int64ul, "e_phoff" / C.Int64ul, "e_shoff" / C.Int64ul, "e_flags" / C.Int32ul,
    "e_ehsize" / C.Int16ul, "e_phentsize" / C.Int16ul, "e_phnum" / C.Int16ul,
    "e_shentsize" / C.Int16ul, "e_shnum" / C.Int16ul, "e_shstrndx" / C.Int16ul,
)
Elf64_Shdr = C.Struct(
    "sh_name" / C.Int32ul, "sh_type" / C.Int32ul, "sh_flags" / C.Int64ul, "sh_addr" / C.Int64ul,
    "sh_offset" / C.Int64ul, "sh_size" / C.Int64ul, "sh_link" / C.Int32ul, "sh_info" / C.Int32ul,
    "sh_addralign" / C.Int64ul, "sh_entsize" / C.Int64ul,
)
assert Elf64_Ehdr.sizeof() == 64 and Elf64_Shdr.sizeof() == 64

# struct elfnote (xg_core.h): the name is a fixed char[4], so descriptors start 8-byte aligned
XenNote = C.Struct("namesz" / C.Int32ul, "descsz" / C.Int32ul, "type" / C.Int32ul,
                   "name" / C.Const(b"Xen\0"))
HeaderDesc = C.Struct("xch_magic" / C.Int64ul, "xch_nr_vcpus" / C.Int64ul,
                      "xch_nr_pages" / C.Int64ul, "xch_page_size" / C.Int64ul)
XenVersionDesc = C.Struct(
    "major_version" / C.Int64ul, "minor_version" / C.Int64ul,
    "extra_version" / C.PaddedString(16, "ascii"),
    "compiler" / C.PaddedString(64, "ascii"), "compile_by" / C.PaddedString(16, "ascii"),
    "compile_domain" / C.PaddedString(32, "ascii"), "compile_date" / C.PaddedString(32, "ascii"),
    "capabilities" / C.PaddedString(1024, "ascii"),
    "changeset" / C.PaddedString(64, "ascii"),
    "virt_start" / C.Int64ul,                      # xen_platform_parameters_t (toolstack: 64-bit)
    "pagesize" / C.Int64ul,
)
FormatVersionDesc = C.Struct("version" / C.Int64ul)
assert XenNote.sizeof() == 16 and HeaderDesc.sizeof() == 32 and XenVersionDesc.sizeof() == 1280
P2mEntry = C.Struct("pfn" / C.Int64ul, "gmfn" / C.Int64ul)

# ---- vcpu_guest_context (public/arch-x86/xen.h with xen-x86_64.h / xen-x86_32.h) ------------------
X86_64_GPRS = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
               "rdx", "rsi", "rdi")
CpuUserRegs64 = C.Struct(
    *[n / C.Int64ul for n in X86_64_GPRS],
    "error_code" / C.Int32ul, "entry_vector" / C.Int32ul,       # @120, @124
    "rip" / C.Int64ul,                                          # @128
    "cs" / C.Int16ul, C.Padding(2), "saved_upcall_mask" / C.Int8ul, C.Padding(3),
    "rflags" / C.Int64ul, "rsp" / C.Int64ul,                    # @144, @152
    "ss" / C.Int16ul, C.Padding(6), "es" / C.Int16ul, C.Padding(6), "ds" / C.Int16ul, C.Padding(6),
    "fs" / C.Int16ul, C.Padding(6), "gs" / C.Int16ul, C.Padding(6),
)
CpuUserRegs32 = C.Struct(
    "ebx" / C.Int32ul, "ecx" / C.Int32ul, "edx" / C.Int32ul, "esi" / C.Int32ul, "edi" / C.Int32ul,
    "ebp" / C.Int32ul, "eax" / C.Int32ul,
    "error_code" / C.Int16ul, "entry_vector" / C.Int16ul,       # @28, @30
    "eip" / C.Int32ul,                                          # @32
    "cs" / C.Int16ul, "saved_upcall_mask" / C.Int8ul, C.Padding(1),
    "eflags" / C.Int32ul, "esp" / C.Int32ul,                    # @40, @44
    "ss" / C.Int16ul, C.Padding(2), "es" / C.Int16ul, C.Padding(2), "ds" / C.Int16ul, C.Padding(2),
    "fs" / C.Int16ul, C.Padding(2), "gs" / C.Int16ul, C.Padding(2),
)
assert CpuUserRegs64.sizeof() == 200 and CpuUserRegs32.sizeof() == 68
TrapInfo64 = C.Struct("vector" / C.Int8ul, "flags" / C.Int8ul, "cs" / C.Int16ul, C.Padding(4),
                      "address" / C.Int64ul)
TrapInfo32 = C.Struct("vector" / C.Int8ul, "flags" / C.Int8ul, "cs" / C.Int16ul, "address" / C.Int32ul)

VcpuGuestContext64 = C.Struct(
    "fpu_ctxt" / C.Bytes(512),
    "flags" / C.Int64ul,                                        # @512
    "user_regs" / CpuUserRegs64,                                # @520
    "trap_ctxt" / C.Array(256, TrapInfo64),                     # @720
    "ldt_base" / C.Int64ul, "ldt_ents" / C.Int64ul,             # @4816
    "gdt_frames" / C.Array(16, C.Int64ul), "gdt_ents" / C.Int64ul,  # @4832, @4960
    "kernel_ss" / C.Int64ul, "kernel_sp" / C.Int64ul,           # @4968, @4976
    "ctrlreg" / C.Array(8, C.Int64ul),                          # @4984 (cr3 @5008)
    "debugreg" / C.Array(8, C.Int64ul),                         # @5048
    "event_callback_eip" / C.Int64ul, "failsafe_callback_eip" / C.Int64ul,
    "syscall_callback_eip" / C.Int64ul,                         # @5128
    "vm_assist" / C.Int64ul,                                    # @5136
    "fs_base" / C.Int64ul, "gs_base_kernel" / C.Int64ul, "gs_base_user" / C.Int64ul,
)
VcpuGuestContext32 = C.Struct(
    "fpu_ctxt" / C.Bytes(512),
    "flags" / C.Int32ul,                                        # @512
    "user_regs" / CpuUserRegs32,                                # @516
    "trap_ctxt" / C.Array(256, TrapInfo32),                     # @584
    "ldt_base" / C.Int32ul, "ldt_ents" / C.Int32ul,             # @2632
    "gdt_frames" / C.Array(16, C.Int32ul), "gdt_ents" / C.Int32ul,  # @2640, @2704
    "kernel_ss" / C.Int32ul, "kernel_sp" / C.Int32ul,           # @2708, @2712
    "ctrlreg" / C.Array(8, C.Int32ul),                          # @2716 (cr3 @2728)
    "debugreg" / C.Array(8, C.Int32ul),                         # @2748
    "event_callback_cs" / C.Int32ul, "event_callback_eip" / C.Int32ul,
    "failsafe_callback_cs" / C.Int32ul, "failsafe_callback_eip" / C.Int32ul,
    "vm_assist" / C.Int32ul,                                    # @2796
)
assert VcpuGuestContext64.sizeof() == 5168 and VcpuGuestContext32.sizeof() == 2800

# offsets a reader needs (checked against the struct definitions above by _selfcheck)
CTX_OFFSETS = {
    8: {"flags": 512, "user_regs": 520, "rip": 520 + 128, "rsp": 520 + 152, "rflags": 520 + 144,
        "cs": 520 + 136, "gdt_frames": 4832, "kernel_ss": 4968, "kernel_sp": 4976, "ctrlreg": 4984,
        "cr3": 5008, "cr1": 4992, "debugreg": 5048, "vm_assist": 5136, "fs_base": 5144,
        "gs_base_kernel": 5152, "gs_base_user": 5160, "size": 5168},
    4: {"flags": 512, "user_regs": 516, "rip": 516 + 32, "rsp": 516 + 44, "rflags": 516 + 40,
        "cs": 516 + 36, "gdt_frames": 2640, "kernel_ss": 2708, "kernel_sp": 2712, "ctrlreg": 2716,
        "cr3": 2728, "cr1": 2720, "debugreg": 2748, "vm_assist": 2796, "size": 2800},
}

VGCF_i387_valid, VGCF_in_kernel, VGCF_online = 1 << 0, 1 << 2, 1 << 5

_ALIAS32 = {"eax": "rax", "ebx": "rbx", "ecx": "rcx", "edx": "rdx", "esi": "rsi", "edi": "rdi",
            "ebp": "rbp", "eip": "rip", "esp": "rsp", "eflags": "rflags"}


def vcpu_context(guest_width, v):
    """Bytes of one ``.xen_prstatus`` slot (5168 bytes; a 32-bit context is zero-padded).

    ``v``: rax..r15 (or eax..), rip, rsp, rflags, cs, ss, ds, es, fs, gs, error_code, entry_vector,
    saved_upcall_mask, flags, ctrlreg (8 raw values as the hypervisor reports them), debugreg,
    kernel_ss, kernel_sp, gdt_frames, gdt_ents, ldt_base, ldt_ents, callbacks, vm_assist, fs_base,
    gs_base_kernel, gs_base_user, fpu (512 bytes), trap_ctxt (list of dicts); missing ones are 0.
    """
    g = lambda k, d=0: int(v.get(k, d))  # noqa: E731
    ctrl = list(v.get("ctrlreg", [0] * 8))
    dbg = list(v.get("debugreg", [0] * 8))
    gdt = list(v.get("gdt_frames", [])) + [0] * (16 - len(v.get("gdt_frames", [])))
    fpu = bytes(v.get("fpu", bytes(512)))
    assert len(ctrl) == 8 and len(dbg) == 8 and len(gdt) == 16 and len(fpu) == 512
    traps = list(v.get("trap_ctxt", []))
    traps += [{}] * (256 - len(traps))
    if guest_width == 8:
        regs = {n: g(n) for n in X86_64_GPRS}
        regs.update(error_code=g("error_code"), entry_vector=g("entry_vector"), rip=g("rip"),
                    cs=g("cs"), saved_upcall_mask=g("saved_upcall_mask"), rflags=g("rflags"),
                    rsp=g("rsp"), ss=g("ss"), es=g("es"), ds=g("ds"), fs=g("fs"), gs=g("gs"))
        raw = VcpuGuestContext64.build(dict(
            fpu_ctxt=fpu, flags=g("flags"), user_regs=regs,
            trap_ctxt=[dict(vector=t.get("vector", 0), flags=t.get("flags", 0), cs=t.get("cs", 0),
                            address=t.get("address", 0)) for t in traps],
            ldt_base=g("ldt_base"), ldt_ents=g("ldt_ents"), gdt_frames=gdt, gdt_ents=g("gdt_ents"),
            kernel_ss=g("kernel_ss"), kernel_sp=g("kernel_sp"), ctrlreg=ctrl, debugreg=dbg,
            event_callback_eip=g("event_callback_eip"), failsafe_callback_eip=g("failsafe_callback_eip"),
            syscall_callback_eip=g("syscall_callback_eip"), vm_assist=g("vm_assist"),
            fs_base=g("fs_base"), gs_base_kernel=g("gs_base_kernel"), gs_base_user=g("gs_base_user")))
    elif guest_width == 4:
        m = 0xFFFFFFFF
        r = lambda k: int(v.get(k, v.get(_ALIAS32.get(k, k), 0))) & m  # noqa: E731
        regs = {n: r(n) for n in ("ebx", "ecx", "edx", "esi", "edi", "ebp", "eax", "eip", "eflags", "esp")}
        regs.update(error_code=g("error_code"), entry_vector=g("entry_vector"), cs=g("cs"),
                    saved_upcall_mask=g("saved_upcall_mask"), ss=g("ss"), es=g("es"), ds=g("ds"),
                    fs=g("fs"), gs=g("gs"))
        for x in ctrl + dbg + gdt:
            assert 0 <= x <= m, hex(x)
        raw = VcpuGuestContext32.build(dict(
            fpu_ctxt=fpu, flags=g("flags"), user_regs=regs,
            trap_ctxt=[dict(vector=t.get("vector", 0), flags=t.get("flags", 0), cs=t.get("cs", 0),
                            address=t.get("address", 0)) for t in traps],
            ldt_base=g("ldt_base"), ldt_ents=g("ldt_ents"), gdt_frames=gdt, gdt_ents=g("gdt_ents"),
            kernel_ss=g("kernel_ss"), kernel_sp=g("kernel_sp"), ctrlreg=ctrl, debugreg=dbg,
            event_callback_cs=g("event_callback_cs"), event_callback_eip=g("event_callback_eip"),
            failsafe_callback_cs=g("failsafe_callback_cs"),
            failsafe_callback_eip=g("failsafe_callback_eip"), vm_assist=g("vm_assist")))
    else:
        raise ValueError(f"guest_width {guest_width}")
    return raw + bytes(VCPU_SLOT - len(raw))


def _selfcheck():
    for w, st in ((8, VcpuGuestContext64), (4, VcpuGuestContext32)):
        probe = {"rip": 0x1111, "rsp": 0x2222, "rflags": 0x246, "cs": 0xE033, "kernel_ss": 0xE02B,
                 "kernel_sp": 0x3333, "flags": 0x25, "ctrlreg": [1, 2, 0, 0x4000, 5, 0, 0, 0],
                 "gdt_frames": [0x77], "vm_assist": 0x2D}
        raw = vcpu_context(w, probe)
        o = CTX_OFFSETS[w]
        ws = 8 if w == 8 else 4
        rd = lambda off, n=ws: int.from_bytes(raw[off:off + n], "little")  # noqa: E731
        assert (rd(o["rip"]), rd(o["rsp"]), rd(o["rflags"]), rd(o["cs"], 2)) == (0x1111, 0x2222, 0x246, 0xE033)
        assert (rd(o["kernel_ss"]), rd(o["kernel_sp"]), rd(o["flags"])) == (0xE02B, 0x3333, 0x25)
        assert (rd(o["cr3"]), rd(o["cr1"]), rd(o["gdt_frames"]), rd(o["vm_assist"])) == (0x4000, 2, 0x77, 0x2D)
        assert st.sizeof() == o["size"]


_selfcheck()


def _cstr(s, n):
    b = s.encode()
    assert len(b) < n, s
    return s


def xen_version_desc(xen_version, guest_width, info=None):
    """The XEN_VERSION descriptor (1280 bytes), with the 32-bit pagesize shift."""
    major, minor, extra = xen_version
    info = dict(info or {})
    raw = XenVersionDesc.build(dict(
        major_version=major, minor_version=minor, extra_version=_cstr(extra, 16),
        compiler=_cstr(info.get("compiler", "gcc (GCC) 12.2.0"), 64),
        compile_by=_cstr(info.get("compile_by", "builder"), 16),
        compile_domain=_cstr(info.get("compile_domain", "example.org"), 32),
        compile_date=_cstr(info.get("compile_date", "Mon Dec 12 12:00:00 UTC 2022"), 32),
        capabilities=_cstr(info.get("capabilities", "xen-3.0-x86_64 xen-3.0-x86_32p hvm-3.0-x86_32 "
                                                    "hvm-3.0-x86_32p hvm-3.0-x86_64"), 1024),
        changeset=_cstr(info.get("changeset", "Mon Dec 12 12:00:00 2022 +0000 git:11560248ff"), 64),
        virt_start=info.get("virt_start", 0xFFFF800000000000), pagesize=PAGE))
    if guest_width < 8:
        # "32 bit elf file format differs in pagesize's alignment": memmove(p - 4, p, 8)
        p = XenVersionDesc.sizeof() - 8
        raw = raw[:p - 4] + raw[p:p + 8] + raw[p + 4:]
        assert len(raw) == 1280
    return raw


def _note(ntype, desc):
    return XenNote.build(dict(namesz=4, descsz=len(desc), type=ntype)) + desc


def write_xc_core(path, *, guest_width, machine, pages, vcpus, shared_info, hvm=False,
                  xen_version=(4, 17, ".0"), version_info=None):
    """Write an xc_core file.

    :param guest_width: 8 or 4 (EM_X86_64 / EM_386; ELF64 either way)
    :param machine: "x86_64" or "i386" (must agree with guest_width)
    :param pages: ``[(pfn, mfn, bytes 4096)]`` in the dumper's order (ascending pfn); for HVM ``mfn``
        is ignored (``.xen_pfn``)
    :param vcpus: list of dicts for :func:`vcpu_context` (online vcpus only, in id order)
    :param shared_info: 4096 bytes, or None (no ``.xen_shared_info`` section)
    :return: dict with ``sections`` (name -> [offset, size, addralign, entsize]), ``size``,
        ``prstatus_offset``, ``pages_offset``
    """
    assert guest_width in (8, 4) and machine == {8: "x86_64", 4: "i386"}[guest_width]
    assert not (hvm and guest_width != 8), "HVM guests are dumped with guest_width 8"
    pfns = [p for p, _, _ in pages]
    assert pfns == sorted(pfns) and len(set(pfns)) == len(pfns), "pages must be in ascending pfn order"
    for _, _, data in pages:
        assert len(data) == PAGE
    nr_pages, nr_vcpus = len(pages), len(vcpus)
    assert nr_vcpus > 0

    strtab = b"\0"
    name_idx = {}
    for n in (".shstrtab", ".note.Xen", ".xen_prstatus") + ((".xen_shared_info",) if shared_info is not None else ()) \
            + (".xen_pages", ".xen_pfn" if hvm else ".xen_p2m"):
        name_idx[n] = len(strtab)
        strtab += n.encode() + b"\0"

    notes = (_note(XEN_ELFNOTE_DUMPCORE_NONE, b"")
             + _note(XEN_ELFNOTE_DUMPCORE_HEADER, HeaderDesc.build(dict(
                 xch_magic=XC_CORE_MAGIC_HVM if hvm else XC_CORE_MAGIC, xch_nr_vcpus=nr_vcpus,
                 xch_nr_pages=nr_pages, xch_page_size=PAGE)))
             + _note(XEN_ELFNOTE_DUMPCORE_XEN_VERSION, xen_version_desc(xen_version, guest_width, version_info))
             + _note(XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION, FormatVersionDesc.build(dict(version=FORMAT_VERSION_CURRENT))))
    assert len(notes) == 16 + 48 + 1296 + 24
    prstatus = b"".join(vcpu_context(guest_width, v) for v in vcpus)
    if shared_info is not None:
        shared_info = bytes(shared_info)
        assert len(shared_info) == PAGE

    # the dumper's order of computation (xc_domain_dumpcore_via_callback)
    shdrs = [dict(sh_name=0, sh_type=0, sh_offset=0, sh_size=0, sh_addralign=0, sh_entsize=0)]
    shdrs.append(dict(sh_name=name_idx[".shstrtab"], sh_type=SHT_STRTAB, sh_offset=0, sh_size=0,
                      sh_addralign=0, sh_entsize=0))
    offset = Elf64_Ehdr.sizeof()
    shdrs.append(dict(sh_name=name_idx[".note.Xen"], sh_type=SHT_NOTE, sh_offset=offset,
                      sh_size=len(notes), sh_addralign=0, sh_entsize=0))
    offset += len(notes)
    shdrs.append(dict(sh_name=name_idx[".xen_prstatus"], sh_type=SHT_PROGBITS, sh_offset=offset,
                      sh_size=len(prstatus), sh_addralign=8, sh_entsize=VCPU_SLOT))
    offset += len(prstatus)
    if shared_info is not None:
        shdrs.append(dict(sh_name=name_idx[".xen_shared_info"], sh_type=SHT_PROGBITS, sh_offset=offset,
                          sh_size=PAGE, sh_addralign=8, sh_entsize=PAGE))
        offset += PAGE
    fixup = (len(shdrs) + 2) * Elf64_Shdr.sizeof()
    for s in shdrs[1:]:
        s["sh_offset"] += fixup
    offset += fixup
    pad = -offset % PAGE                               # ROUNDUP(offset, PAGE_SHIFT) - offset
    offset += pad
    shdrs.append(dict(sh_name=name_idx[".xen_pages"], sh_type=SHT_PROGBITS, sh_offset=offset,
                      sh_size=nr_pages * PAGE, sh_addralign=PAGE, sh_entsize=PAGE))
    pages_offset = offset
    offset += nr_pages * PAGE
    if hvm:
        table = b"".join(p.to_bytes(8, "little") for p in pfns)
        shdrs.append(dict(sh_name=name_idx[".xen_pfn"], sh_type=SHT_PROGBITS, sh_offset=offset,
                          sh_size=len(table), sh_addralign=8, sh_entsize=8))
    else:
        table = b"".join(P2mEntry.build(dict(pfn=p, gmfn=m)) for p, m, _ in pages)
        shdrs.append(dict(sh_name=name_idx[".xen_p2m"], sh_type=SHT_PROGBITS, sh_offset=offset,
                          sh_size=len(table), sh_addralign=8, sh_entsize=16))
    offset += len(table)
    shdrs[1].update(sh_offset=offset, sh_size=len(strtab))
    for s in shdrs:
        s.update(sh_flags=0, sh_addr=0, sh_link=0, sh_info=0)

    ehdr = Elf64_Ehdr.build(dict(
        e_ident={}, e_type=ET_CORE, e_machine=EM_X86_64 if guest_width == 8 else EM_386, e_version=1,
        e_entry=0, e_phoff=0, e_shoff=Elf64_Ehdr.sizeof(), e_flags=0, e_ehsize=Elf64_Ehdr.sizeof(),
        e_phentsize=56, e_phnum=0, e_shentsize=Elf64_Shdr.sizeof(), e_shnum=len(shdrs), e_shstrndx=1))
    head = ehdr + b"".join(Elf64_Shdr.build(s) for s in shdrs) + notes + prstatus + (shared_info or b"")
    assert len(head) + pad == pages_offset
    with open(path, "wb") as f:
        f.write(head)
        f.write(bytes(pad))
        for _, _, data in pages:
            f.write(bytes(data))
        f.write(table)
        f.write(strtab)
    inv = {v: k for k, v in name_idx.items()}
    sections = {inv[s["sh_name"]]: [s["sh_offset"], s["sh_size"], s["sh_addralign"], s["sh_entsize"]]
                for s in shdrs[1:]}
    return {"sections": sections, "size": offset + len(strtab), "pages_offset": pages_offset,
            "prstatus_offset": sections[".xen_prstatus"][0]}
