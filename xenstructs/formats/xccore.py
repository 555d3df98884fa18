"""``xl dump-core`` (xc_core) layouts: dumpcore notes, ``.xen_p2m``/``.xen_pfn`` entries,
``vcpu_guest_context`` (x86_64 and x86_32) and ``arch_shared_info``.

Sources: Xen ``tools/libs/guest/xg_core.{c,h}`` (``tools/libxc/xc_core.*`` up to 4.14),
``xg_core_x86.h``, ``xen/include/public/arch-x86/{xen,xen-x86_64,xen-x86_32}.h``,
``public/version.h``, ``public/elfnote.h``, ``xen/arch/x86/domctl.c`` (``arch_get_info_guest``).
The ELF container (always ELFCLASS64, ``e_phnum == 0``) uses :mod:`xenstructs.formats.elf`.

>>> VcpuGuestContext64.sizeof(), VcpuGuestContext32.sizeof(), XenVersionDesc.sizeof()
(5168, 2800, 1280)
>>> DumpcoreHeader.sizeof(), CpuUserRegs64.sizeof(), CpuUserRegs32.sizeof()
(32, 200, 68)
"""

import construct as C
import numpy as np

# Section names (xg_core.h XEN_DUMPCORE_SEC_*).
SEC_NOTE = ".note.Xen"
SEC_PRSTATUS = ".xen_prstatus"
SEC_SHARED_INFO = ".xen_shared_info"
SEC_P2M = ".xen_p2m"
SEC_PFN = ".xen_pfn"
SEC_PAGES = ".xen_pages"
SECTIONS = (SEC_NOTE, SEC_PRSTATUS, SEC_SHARED_INFO, SEC_P2M, SEC_PFN, SEC_PAGES)

NOTE_NAME = "Xen"
# public/elfnote.h
XEN_ELFNOTE_DUMPCORE_NONE = 0x2000000
XEN_ELFNOTE_DUMPCORE_HEADER = 0x2000001
XEN_ELFNOTE_DUMPCORE_XEN_VERSION = 0x2000002
XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION = 0x2000003

# tools/include/xenctrl.h
XC_CORE_MAGIC = 0xF00FEBED          # PV guest
XC_CORE_MAGIC_HVM = 0xF00FEBEE      # HVM (auto-translated) guest
XC_CORE_INVALID = 0xFFFFFFFFFFFFFFFF  # XC_CORE_INVALID_PFN / XC_CORE_INVALID_GMFN
PAGE_SIZE = 4096

# struct xen_dumpcore_elfnote_header_desc
DumpcoreHeader = C.Struct(
    "xch_magic" / C.Int64ul,
    "xch_nr_vcpus" / C.Int64ul,
    "xch_nr_pages" / C.Int64ul,
    "xch_page_size" / C.Int64ul,
)

def _cstr(n):
    """A NUL-padded ``char[n]`` as text; any bytes are accepted (latin-1, cut at the first NUL)."""
    return C.ExprAdapter(C.Bytes(n),
                         lambda obj, ctx: bytes(obj).split(b"\0", 1)[0].decode("latin-1"),
                         lambda obj, ctx: obj.encode("latin-1").ljust(n, b"\0"))


# struct xen_dumpcore_elfnote_xen_version_desc as a 64-bit toolstack writes it. For a guest whose
# width is smaller than the toolstack's long, the writer moves ``pagesize`` 4 bytes earlier (1268).
XenVersionDesc = C.Struct(
    "major_version" / C.Int64ul,
    "minor_version" / C.Int64ul,
    "extra_version" / _cstr(16),        # xen_extraversion_t
    "compiler" / _cstr(64),             # xen_compile_info_t
    "compile_by" / _cstr(16),
    "compile_domain" / _cstr(32),
    "compile_date" / _cstr(32),
    "capabilities" / _cstr(1024),       # xen_capabilities_info_t
    "changeset" / _cstr(64),            # xen_changeset_info_t
    "virt_start" / C.Int64ul,                               # xen_platform_parameters_t
    "pagesize" / C.Int64ul,
)
XEN_VERSION_PAGESIZE_OFF = {8: 1272, 4: 1268}

# struct xen_dumpcore_elfnote_format_version_desc: (major << 32) | minor; current 0.1.
FormatVersionDesc = C.Struct("version" / C.Int64ul)

# .xen_p2m: struct xen_dumpcore_p2m { uint64_t pfn; uint64_t gmfn; }; .xen_pfn: uint64_t pfn.
P2M_DTYPE = np.dtype([("pfn", "<u8"), ("gmfn", "<u8")])
PFN_DTYPE = np.dtype("<u8")

# struct cpu_user_regs (xen-x86_64.h): 200 bytes.
CpuUserRegs64 = C.Struct(
    *[n / C.Int64ul for n in ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9",
                              "r8", "rax", "rcx", "rdx", "rsi", "rdi")],
    "error_code" / C.Int32ul, "entry_vector" / C.Int32ul,
    "rip" / C.Int64ul,
    "cs" / C.Int16ul, C.Padding(2),
    "saved_upcall_mask" / C.Int8ul, C.Padding(3),
    "rflags" / C.Int64ul,
    "rsp" / C.Int64ul,
    "ss" / C.Int16ul, C.Padding(6),
    "es" / C.Int16ul, C.Padding(6),
    "ds" / C.Int16ul, C.Padding(6),
    "fs" / C.Int16ul, C.Padding(6),
    "gs" / C.Int16ul, C.Padding(6),
)

# struct cpu_user_regs (xen-x86_32.h): 68 bytes.
CpuUserRegs32 = C.Struct(
    *[n / C.Int32ul for n in ("ebx", "ecx", "edx", "esi", "edi", "ebp", "eax")],
    "error_code" / C.Int16ul, "entry_vector" / C.Int16ul,
    "eip" / C.Int32ul,
    "cs" / C.Int16ul,
    "saved_upcall_mask" / C.Int8ul, C.Padding(1),
    "eflags" / C.Int32ul,
    "esp" / C.Int32ul,
    "ss" / C.Int16ul, C.Padding(2),
    "es" / C.Int16ul, C.Padding(2),
    "ds" / C.Int16ul, C.Padding(2),
    "fs" / C.Int16ul, C.Padding(2),
    "gs" / C.Int16ul, C.Padding(2),
)

# VGCF_* flags (public/arch-x86/xen.h); VGCF_in_syscall is x86_64 only.
VGCF_FLAGS = {0: "i387_valid", 2: "in_kernel", 3: "failsafe_disables_events",
              4: "syscall_disables_events", 5: "online", 8: "in_syscall"}


def _vgc(word, regs, trap_size, tail):
    return C.Struct(
        C.Padding(512),                                     # fpu_ctxt
        "flags" / word,
        "user_regs" / regs,
        C.Padding(256 * trap_size),                         # trap_ctxt[256]
        "ldt_base" / word, "ldt_ents" / word,
        "gdt_frames" / C.Array(16, word), "gdt_ents" / word,
        "kernel_ss" / word, "kernel_sp" / word,
        "ctrlreg" / C.Array(8, word),
        "debugreg" / C.Array(8, word),
        *tail,
    )


# struct vcpu_guest_context, x86_64: 5168 bytes (ctrlreg at 4984).
VcpuGuestContext64 = _vgc(C.Int64ul, CpuUserRegs64, 16, (
    "event_callback_eip" / C.Int64ul,
    "failsafe_callback_eip" / C.Int64ul,
    "syscall_callback_eip" / C.Int64ul,
    "vm_assist" / C.Int64ul,
    "fs_base" / C.Int64ul, "gs_base_kernel" / C.Int64ul, "gs_base_user" / C.Int64ul,
))
# struct vcpu_guest_context, x86_32 (compat): 2800 bytes (ctrlreg at 2716).
VcpuGuestContext32 = _vgc(C.Int32ul, CpuUserRegs32, 8, (
    "event_callback_cs" / C.Int32ul, "event_callback_eip" / C.Int32ul,
    "failsafe_callback_cs" / C.Int32ul, "failsafe_callback_eip" / C.Int32ul,
    "vm_assist" / C.Int32ul,
))
VCPU_CONTEXT = {8: VcpuGuestContext64, 4: VcpuGuestContext32}
# vcpu_guest_context_any_t (union of both) with any toolstack: what .xen_prstatus entries hold.
VCPU_CONTEXT_ANY_SIZE = 5168

# struct shared_info: arch_shared_info at 3088 (64-bit guest) / 2316 (32-bit guest layout).
SHARED_INFO_ARCH_OFF = {8: 3088, 4: 2316}


def _arch_shared_info(word):
    return C.Struct(
        "max_pfn" / word,
        "pfn_to_mfn_frame_list_list" / word,
        "nmi_reason" / word,
        "p2m_cr3" / word,
        "p2m_vaddr" / word,
        "p2m_generation" / word,
    )


ARCH_SHARED_INFO = {8: _arch_shared_info(C.Int64ul), 4: _arch_shared_info(C.Int32ul)}

def pfn_from_cr3(cr3, guest_width):
    """Frame number in a PV ``ctrlreg[3]``/``p2m_cr3``: ``cr3 >> 12`` (64-bit) or the rotated
    32-bit ``xen_cr3_to_pfn``: ``(cr3 >> 12) | (cr3 << 20)`` in 32-bit arithmetic."""
    if guest_width == 8:
        return cr3 >> 12
    cr3 &= 0xFFFFFFFF
    return ((cr3 >> 12) | (cr3 << 20)) & 0xFFFFFFFF
