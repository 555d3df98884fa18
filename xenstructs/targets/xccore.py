"""``xl dump-core`` files (libxc/libxenguest "xc_core" ELF format) of one Xen guest.

The file is an ELFCLASS64 core with no program headers: sections are found by name through the
section headers (``.note.Xen``, ``.xen_prstatus``, ``.xen_shared_info``, ``.xen_pages`` and
``.xen_p2m`` for a PV guest or ``.xen_pfn`` for an HVM guest). Page *i* of ``.xen_pages`` is the
page described by entry *i* of the table.

Address spaces. A PV guest's page tables hold machine frame numbers, so :meth:`read_phys` of a PV
dump reads **machine** memory: ``mfn`` → page through the inverse of ``.xen_p2m`` (sorted once
with numpy, ``searchsorted`` per lookup); a machine frame the guest does not own raises
:class:`~xenstructs.errors.NotInDump`. Pseudo-physical pages are read with :meth:`read_pfn`;
:meth:`p2m`, :meth:`m2p` and :meth:`p2m_array` expose the dump's P2M and its inverse ("M2P view").
An HVM dump's :meth:`read_phys` is guest-physical.

Registers come from ``.xen_prstatus`` (``vcpu_guest_context``, x86_64 or x86_32 layout chosen by the
guest width, i.e. ``e_machine``); a PV ``ctrlreg[3]`` is decoded to a real CR3 (``mfn << 12``).
The pre-ELF format of Xen 3.0 is refused with :class:`~xenstructs.errors.Unsupported`.
"""

import struct

import numpy as np

from ..errors import BadDump, NotInDump, Unsupported, XenscopeError
from ..formats import elf
from ..formats import xccore as xc_format
from ..inputs import open_regular
from ..target import MAX_READ, PAGE_SIZE, CpuState, Target
from .elfcore import _close_mmap, _open_mmap

MAX_SECTIONS = 1024               # the writer makes 6 or 7
MAX_SHSTRTAB = 1 << 16            # the writer's string table length is a uint16_t
MAX_NOTES = 1 << 20
MAX_VCPUS = 1 << 16
MAX_CONTEXT_SIZE = 1 << 20        # one .xen_prstatus entry
MAX_FRAME = 1 << 40               # pfn/mfn of a 52-bit physical address space
MAX_P2M_ARRAY = 1 << 28           # p2m_array() entries (2 GiB of uint64) at most
P2M_SPREAD = 4                    # ... and at most 4 pfns per page the dump holds (ballooned, sparse guests)
P2M_HOLE = 1 << 20                # ... plus the 4 GiB below-4G hole's pfns
INVALID = xc_format.XC_CORE_INVALID
OLD_MAGICS = {struct.pack("<I", xc_format.XC_CORE_MAGIC): "PV",
              struct.pack("<I", xc_format.XC_CORE_MAGIC_HVM): "HVM"}
SRC = ".xen_prstatus (vcpu_guest_context)"
CR0_PE, CR0_WP, CR0_PG = 1 << 0, 1 << 16, 1 << 31
CR4_PAE = 1 << 5
PV_CR0 = CR0_PG | CR0_WP | CR0_PE


def pre_elf_magic(head):
    """``"PV"``/``"HVM"`` when ``head`` starts with the Xen 3.0 ``xc_core_header_t`` magic."""
    return OLD_MAGICS.get(bytes(head[:4]))


def refuse_pre_elf(path, head):
    kind = pre_elf_magic(head)
    magic = xc_format.XC_CORE_MAGIC if kind == "PV" else xc_format.XC_CORE_MAGIC_HVM
    raise Unsupported(f"{path}: xl dump-core file of a {kind} guest in the pre-ELF format of Xen "
                      f"3.0 (xc_core_header_t, magic {magic:#x}): not supported; only the ELF "
                      "format (Xen 3.1 and later) is read")


def is_xc_core(path):
    """True when ``path`` is an ELF file without program headers that carries Xen dumpcore
    sections: a section named ``.note.Xen``/``.xen_*``, or a note section whose first note is a
    ``"Xen"`` dumpcore note (still found when the file is cut short and ``.shstrtab``, written
    last, is gone). Bounded reads; any inconsistency answers False."""
    try:
        with open_regular(path, error=BadDump) as f:
            head = f.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2):
                return False
            c64 = head[4] == 2
            eh = (elf.Elf64_Ehdr if c64 else elf.Elf32_Ehdr).parse(head)
            shdr_con = elf.Elf64_Shdr if c64 else elf.Elf32_Shdr
            ent = shdr_con.sizeof()
            if eh.e_phnum != 0 or eh.e_shentsize != ent or eh.e_shnum == 0:
                return False
            f.seek(eh.e_shoff)
            raw = f.read(min(eh.e_shnum, MAX_SECTIONS) * ent)    # what there is of the table
            shdrs = [shdr_con.parse(raw[i * ent:(i + 1) * ent]) for i in range(len(raw) // ent)]
            if eh.e_shstrndx < len(shdrs):
                st = shdrs[eh.e_shstrndx]
                f.seek(st.sh_offset)
                names = f.read(min(st.sh_size, MAX_SHSTRTAB))
                for sh in shdrs:
                    if names[sh.sh_name:].split(b"\0", 1)[0].decode("latin-1") in xc_format.SECTIONS:
                        return True
            for sh in shdrs:
                if sh.sh_type == elf.SHT_NOTE and sh.sh_size >= 16:
                    f.seek(sh.sh_offset)
                    n = f.read(16)
                    if len(n) == 16:
                        namesz, _, ntype = struct.unpack("<III", n[:12])
                        if namesz == 4 and n[12:16] == b"Xen\0" and \
                                xc_format.XEN_ELFNOTE_DUMPCORE_NONE <= ntype <= \
                                xc_format.XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION:
                            return True
    except (OSError, ValueError, OverflowError, elf.construct.ConstructError):
        return False
    return False


def _set(cpu, name, value, source):
    cpu.regs[name] = value
    cpu.source[name] = source


class XcCoreTarget(Target):
    """An ``xl dump-core`` file: machine memory of a PV guest, guest-physical of an HVM one."""

    fixed = True             # a file: its memory never changes (a live view sets live)

    def __init__(self, path):
        super().__init__()
        self.path = path
        self._file, self._mm, self._size = _open_mmap(path)
        self._ranges = None
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    # -- parsing ------------------------------------------------------------------------------
    def _bad(self, msg):
        return BadDump(f"{self.path}: {msg}")

    def _need(self, off, size, what):
        """Check that ``size`` bytes at ``off`` lie in the file (``what`` names them)."""
        if off < 0 or size < 0 or off + size > self._size:
            raise self._bad(f"truncated: {what} needs {off + size} bytes, file has {self._size}")

    def _load(self):
        if pre_elf_magic(self._mm[:4]):
            refuse_pre_elf(self.path, self._mm[:4])
        self._need(0, 16, "the ELF identification")
        ident = elf.parse(elf.ElfIdent, self._mm[:16], "ELF header")
        if ident.magic != b"\x7fELF":
            raise self._bad(f"not an ELF file (starts with {ident.magic!r})")
        if ident.ei_class != 2:
            raise self._bad(f"xl dump-core files are ELFCLASS64, this one has EI_CLASS "
                            f"{ident.ei_class}")
        if ident.ei_data != 1:
            raise self._bad(f"unsupported byte order (EI_DATA={ident.ei_data}): only "
                            "little-endian x86 dumps are read")
        self._need(0, elf.Elf64_Ehdr.sizeof(), "the ELF header")
        eh = elf.parse(elf.Elf64_Ehdr, self._mm[:elf.Elf64_Ehdr.sizeof()], "ELF header")
        machine = elf.MACHINES.get(eh.e_machine)
        if machine is None:
            raise self._bad(f"unsupported machine (e_machine={eh.e_machine}; x86_64 (62) and "
                            "i386 (3) xl dump-core files are read)")
        if eh.e_phnum != 0:
            raise self._bad(f"an xl dump-core file has no program headers, this one has "
                            f"e_phnum {eh.e_phnum}")
        width = 8 if machine == "x86_64" else 4
        secs = self._sections(eh)

        for name in (xc_format.SEC_NOTE, xc_format.SEC_PRSTATUS, xc_format.SEC_PAGES):
            if name not in secs:
                raise self._bad(f"xl dump-core file without a {name} section")
        for name, sh in sorted(secs.items(), key=lambda kv: kv[1].sh_offset):
            if name in xc_format.SECTIONS:
                self._need(sh.sh_offset, sh.sh_size, name)

        hdr, facts = self._notes(secs[xc_format.SEC_NOTE], width)
        magic = hdr.xch_magic
        if magic not in (xc_format.XC_CORE_MAGIC, xc_format.XC_CORE_MAGIC_HVM):
            raise self._bad(f"bad xc_core magic {magic:#x} in the dumpcore header note (expected "
                            f"{xc_format.XC_CORE_MAGIC:#x} PV or {xc_format.XC_CORE_MAGIC_HVM:#x} HVM)")
        if hdr.xch_page_size != PAGE_SIZE:
            raise self._bad(f"page size {hdr.xch_page_size} in the dumpcore header note; only "
                            f"{PAGE_SIZE} is read")
        nr_pages, nr_vcpus = hdr.xch_nr_pages, hdr.xch_nr_vcpus
        if nr_pages >= MAX_FRAME:
            raise self._bad(f"absurd page count {nr_pages} in the dumpcore header note")
        if nr_vcpus > MAX_VCPUS:
            raise self._bad(f"absurd vCPU count {nr_vcpus} in the dumpcore header note")
        pv = magic == xc_format.XC_CORE_MAGIC
        guest = "pv" if pv else "hvm"

        has_p2m, has_pfn = xc_format.SEC_P2M in secs, xc_format.SEC_PFN in secs
        if has_p2m and has_pfn:
            raise self._bad("both .xen_p2m and .xen_pfn sections: one of them is expected")
        if pv and not has_p2m:
            raise self._bad("PV xl dump-core (magic 0xf00febed) without a .xen_p2m section" +
                            (" (it has an HVM .xen_pfn table)" if has_pfn else ""))
        if not pv and not has_pfn:
            raise self._bad("HVM xl dump-core (magic 0xf00febee) without a .xen_pfn section" +
                            (" (it has a PV .xen_p2m table)" if has_p2m else ""))

        pages = secs[xc_format.SEC_PAGES]
        self._check_table(pages, xc_format.SEC_PAGES, nr_pages, PAGE_SIZE)
        self._pages_off = pages.sh_offset
        table = secs[xc_format.SEC_P2M if pv else xc_format.SEC_PFN]
        esz = 16 if pv else 8
        self._check_table(table, xc_format.SEC_P2M if pv else xc_format.SEC_PFN, nr_pages, esz)
        self._index(table, nr_pages, pv)

        self._width = width
        self._pv = pv
        self._cpus = self._contexts(secs[xc_format.SEC_PRSTATUS], nr_vcpus, width, pv)
        shinfo = None
        if xc_format.SEC_SHARED_INFO in secs:
            shinfo = self._shared_info(secs[xc_format.SEC_SHARED_INFO], width)
        self.kind = f"xl dump-core (xc_core) of {'a PV' if pv else 'an HVM'} guest"
        self.facts.update(facts)
        self.facts.update({
            "format": "xc_core", "guest": guest, "machine": machine, "guest_width": width,
            "space": "machine" if pv else "guest-physical", "nr_pages": nr_pages,
            "nr_vcpus": nr_vcpus, "shared_info": shinfo, "vmcoreinfo": None,
            "pages_present": int(self._keys.size), "invalid_entries": self._invalid,
            "duplicate_mfns": self._dup_mfns,
        })

    def _sections(self, eh):
        """``{name: shdr}`` of the named sections (a duplicate Xen section name is refused)."""
        ent = elf.Elf64_Shdr.sizeof()
        n = eh.e_shnum
        if eh.e_shentsize != ent:
            raise self._bad(f"e_shentsize is {eh.e_shentsize}, expected {ent}")
        if n == 0 or eh.e_shoff == 0:
            raise self._bad("no section headers (an xl dump-core file finds its data by section)")
        if n > MAX_SECTIONS:
            raise self._bad(f"absurd section count {n} (at most {MAX_SECTIONS} are read)")
        self._need(eh.e_shoff, n * ent, f"the section header table ({n} entries)")
        shdrs = [elf.parse(elf.Elf64_Shdr, self._mm[eh.e_shoff + i * ent:eh.e_shoff + (i + 1) * ent],
                         "section header") for i in range(n)]
        if eh.e_shstrndx >= n:
            raise self._bad(f"e_shstrndx {eh.e_shstrndx} is not a section (e_shnum {n})")
        st = shdrs[eh.e_shstrndx]
        if st.sh_size > MAX_SHSTRTAB:
            raise self._bad(f"absurd section name table size {st.sh_size}")
        if st.sh_offset + st.sh_size > self._size:
            self._truncated_unnamed(shdrs)
        names = self._mm[st.sh_offset:st.sh_offset + st.sh_size]
        out = {}
        for i, sh in enumerate(shdrs):
            if i == 0:
                continue
            if sh.sh_name >= len(names):
                raise self._bad(f"section {i} name offset {sh.sh_name} is past the end of "
                                f".shstrtab ({len(names)} bytes)")
            name = names[sh.sh_name:].split(b"\0", 1)[0].decode("latin-1")
            if name in out and name in xc_format.SECTIONS:
                raise self._bad(f"two {name} sections")
            out.setdefault(name, sh)
        return out

    def _truncated_unnamed(self, shdrs):
        """``.shstrtab`` (written last) is cut off: name the first section that is cut short by
        its attributes (the writer's entry sizes and alignments) and refuse."""
        for i, sh in sorted(enumerate(shdrs), key=lambda t: t[1].sh_offset):
            if i == 0 or sh.sh_offset + sh.sh_size <= self._size:
                continue
            if sh.sh_type == elf.SHT_NOTE:
                name = xc_format.SEC_NOTE
            elif sh.sh_type == 3:
                name = ".shstrtab"
            elif sh.sh_entsize == PAGE_SIZE:
                name = xc_format.SEC_PAGES if sh.sh_addralign == PAGE_SIZE else xc_format.SEC_SHARED_INFO
            else:
                name = {16: xc_format.SEC_P2M, 8: xc_format.SEC_PFN}.get(
                    sh.sh_entsize, xc_format.SEC_PRSTATUS if sh.sh_entsize >= 2800 else f"section {i}")
            raise self._bad(f"truncated: {name} needs {sh.sh_offset + sh.sh_size} bytes, file has "
                            f"{self._size}")
        raise self._bad("truncated: .shstrtab lies past the end of the file")

    def _check_table(self, sh, name, nr_pages, esz):
        if sh.sh_entsize != esz:
            raise self._bad(f"{name} has sh_entsize {sh.sh_entsize}, expected {esz}")
        if sh.sh_size != nr_pages * esz:
            raise self._bad(f"nr_pages mismatch: the header note says {nr_pages} pages, {name} "
                            f"holds {sh.sh_size} bytes ({sh.sh_size / esz:g} entries of {esz})")

    def _notes(self, sh, width):
        if sh.sh_size > MAX_NOTES:
            raise self._bad(f"absurd .note.Xen size {sh.sh_size}")
        data = self._mm[sh.sh_offset:sh.sh_offset + sh.sh_size]
        hdr = None
        facts = {"xen_version": None, "format_version": None, "xen_build": None}
        for name, ntype, desc in elf.iter_notes(data, f"{self.path}: .note.Xen"):
            if name != xc_format.NOTE_NAME:
                continue
            if ntype == xc_format.XEN_ELFNOTE_DUMPCORE_HEADER and hdr is None:
                if len(desc) < xc_format.DumpcoreHeader.sizeof():
                    raise self._bad(f"dumpcore header note is {len(desc)} bytes, expected "
                                    f"{xc_format.DumpcoreHeader.sizeof()}")
                hdr = elf.parse(xc_format.DumpcoreHeader, desc[:xc_format.DumpcoreHeader.sizeof()],
                              "dumpcore header note")
            elif ntype == xc_format.XEN_ELFNOTE_DUMPCORE_XEN_VERSION and \
                    len(desc) >= xc_format.XEN_VERSION_PAGESIZE_OFF[8]:
                v = elf.parse(xc_format.XenVersionDesc, bytes(desc[:xc_format.XenVersionDesc.sizeof()]).ljust(
                    xc_format.XenVersionDesc.sizeof(), b"\0"), "dumpcore Xen version note")
                facts["xen_version"] = f"{v.major_version}.{v.minor_version}{v.extra_version}"
                facts["xen_build"] = {"changeset": v.changeset, "compiler": v.compiler,
                                      "compile_date": v.compile_date,
                                      "capabilities": v.capabilities}
                off = xc_format.XEN_VERSION_PAGESIZE_OFF[width]
                if len(desc) >= off + 8:
                    facts["xen_pagesize"] = int.from_bytes(desc[off:off + 8], "little")
            elif ntype == xc_format.XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION and len(desc) >= 8:
                ver = int.from_bytes(desc[:8], "little")
                facts["format_version"] = f"{ver >> 32}.{ver & 0xFFFFFFFF}"
        if hdr is None:
            raise self._bad("no dumpcore header note (\"Xen\", type 0x2000001) in .note.Xen")
        return hdr, facts

    def _index(self, sh, nr_pages, pv):
        """Sorted lookup arrays: pfn → page, and for PV mfn → page and the P2M pairs."""
        dtype = xc_format.P2M_DTYPE if pv else xc_format.PFN_DTYPE
        arr = np.frombuffer(self._mm, dtype=dtype, count=nr_pages, offset=sh.sh_offset).copy()
        if pv:
            pfns, mfns = arr["pfn"], arr["gmfn"]
            valid = (pfns != INVALID) & (mfns != INVALID)
        else:
            pfns, mfns = arr, None
            valid = pfns != INVALID
        idx = np.nonzero(valid)[0]
        self._invalid = int(nr_pages - idx.size)
        vp = pfns[idx]
        bad = np.nonzero(vp >= MAX_FRAME)[0]
        if bad.size:
            i = int(idx[bad[0]])
            raise self._bad(f"absurd pfn {int(pfns[i]):#x} in entry {i} of "
                            f"{'.xen_p2m' if pv else '.xen_pfn'}")
        by_pfn = np.argsort(vp, kind="stable")
        self._pfn_keys = vp[by_pfn]
        self._pfn_page = idx[by_pfn]
        dup = np.nonzero(np.diff(self._pfn_keys) == 0)[0]
        if dup.size:
            i = int(dup[0])
            raise self._bad(f"pfn {int(self._pfn_keys[i]):#x} appears twice in "
                            f"{'.xen_p2m' if pv else '.xen_pfn'} (entries "
                            f"{int(self._pfn_page[i])} and {int(self._pfn_page[i + 1])})")
        self._dup_mfns = 0
        if pv:
            vm = mfns[idx]
            bad = np.nonzero(vm >= MAX_FRAME)[0]
            if bad.size:
                i = int(idx[bad[0]])
                raise self._bad(f"absurd machine frame {int(mfns[i]):#x} in entry {i} of "
                                ".xen_p2m")
            # Sorted by (mfn, pfn): a machine frame listed twice (a live dump) answers its
            # lowest pfn.
            order = np.lexsort((vp, vm))
            self._mfn_keys = vm[order]
            self._mfn_page = idx[order]
            self._mfn_pfn = vp[order]
            self._dup_mfns = int(np.count_nonzero(np.diff(self._mfn_keys) == 0))
            self._pfn_mfn = vm[by_pfn]
            self._keys, self._key_page = self._mfn_keys, self._mfn_page
        else:
            self._keys, self._key_page = self._pfn_keys, self._pfn_page

    def _contexts(self, sh, nr_vcpus, width, pv):
        con = xc_format.VCPU_CONTEXT[width]
        need = con.sizeof()
        ent = sh.sh_entsize
        if ent < need or ent > MAX_CONTEXT_SIZE:
            raise self._bad(f".xen_prstatus has sh_entsize {ent}, expected "
                            f"{xc_format.VCPU_CONTEXT_ANY_SIZE} (vcpu_guest_context_any_t; at least "
                            f"{need} for a {'64' if width == 8 else '32'}-bit guest)")
        if sh.sh_size != ent * nr_vcpus:
            raise self._bad(f"vCPU count mismatch: the header note says {nr_vcpus} vCPUs, "
                            f".xen_prstatus holds {sh.sh_size} bytes ({sh.sh_size / ent:g} "
                            f"contexts of {ent})")
        cpus = []
        for i in range(nr_vcpus):
            off = sh.sh_offset + i * ent
            ctx = elf.parse(con, self._mm[off:off + need], f"vcpu_guest_context {i}")
            cpus.append(self._cpu(i, ctx, width, pv))
        return cpus

    @staticmethod
    def _cpu(i, ctx, width, pv):
        cpu = CpuState(i)
        ur = ctx.user_regs
        if width == 8:
            for n in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10",
                      "r11", "r12", "r13", "r14", "r15", "rip", "rflags"):
                _set(cpu, n, ur[n], SRC)
            for n in ("fs_base", "gs_base_kernel", "gs_base_user"):
                _set(cpu, n, ctx[n], SRC)
        else:
            for n in ("eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp", "eip", "eflags"):
                _set(cpu, n, ur[n], SRC)
            for alias, n in (("rip", "eip"), ("rsp", "esp"), ("rflags", "eflags")):
                _set(cpu, alias, ur[n], SRC)
        for n in ("cs", "ss", "ds", "es", "fs", "gs"):
            _set(cpu, n, ur[n], SRC)
        _set(cpu, "kernel_ss", ctx.kernel_ss, SRC)
        _set(cpu, "kernel_sp", ctx.kernel_sp, SRC)
        _set(cpu, "flags", ctx.flags, SRC + " flags (VGCF_*)")
        cr = ctx.ctrlreg
        _set(cpu, "cr2", cr[2], SRC + " ctrlreg[2]")
        bits = "64" if width == 8 else "32"
        if not pv:
            _set(cpu, "cr0", cr[0], SRC + " ctrlreg[0]")
            _set(cpu, "cr4", cr[4], SRC + " ctrlreg[4]")
            _set(cpu, "cr3", cr[3], SRC + " ctrlreg[3] (the HVM guest's own CR3, guest-physical)")
            return cpu
        if cr[0]:
            _set(cpu, "cr0", cr[0], SRC + " ctrlreg[0] (PV: Xen's CR0 with the guest's TS)")
        else:
            _set(cpu, "cr0", PV_CR0, "inferred: ctrlreg[0] is 0; a PV guest runs under Xen's CR0 "
                 "(PE, WP, PG)")
        if cr[4]:
            _set(cpu, "cr4", cr[4], SRC + " ctrlreg[4] (PV: the guest's view)")
        else:
            why = ("a 64-bit PV guest runs in long mode, i.e. with PAE" if width == 8 else
                   "a 32-bit PV guest on 64-bit Xen uses PAE page tables")
            _set(cpu, "cr4", CR4_PAE, f"inferred: ctrlreg[4] is 0; {why}")
        if cr[3]:
            mfn = xc_format.pfn_from_cr3(cr[3], width)
            how = "mfn << 12" if width == 8 else "rotated 32-bit xen_pfn_to_cr3 decoded, mfn << 12"
            _set(cpu, "cr3", mfn << 12, f"{SRC} ctrlreg[3] {cr[3]:#x} ({bits}-bit PV: {how}, "
                 f"machine address of the top page table)")
        if width == 8 and cr[1]:
            _set(cpu, "cr3_user", xc_format.pfn_from_cr3(cr[1], 8) << 12,
                 f"{SRC} ctrlreg[1] {cr[1]:#x} (64-bit PV user page table, mfn << 12)")
        return cpu

    def _shared_info(self, sh, width):
        off = xc_format.SHARED_INFO_ARCH_OFF[width]
        con = xc_format.ARCH_SHARED_INFO[width]
        if sh.sh_size < off + con.sizeof():
            raise self._bad(f".xen_shared_info is {sh.sh_size} bytes, expected {PAGE_SIZE}")
        base = sh.sh_offset + off
        a = elf.parse(con, self._mm[base:base + con.sizeof()], "arch_shared_info")
        return {k: a[k] for k in ("max_pfn", "pfn_to_mfn_frame_list_list", "nmi_reason",
                                  "p2m_cr3", "p2m_vaddr", "p2m_generation")}

    # -- lookups ------------------------------------------------------------------------------
    @staticmethod
    def _find(keys, key):
        """Position of ``key`` in the sorted uint64 array ``keys``, or -1."""
        if key < 0 or key >= MAX_FRAME or not keys.size:
            return -1
        i = int(np.searchsorted(keys, np.uint64(key)))
        if i < keys.size and int(keys[i]) == key:
            return i
        return -1

    def _page(self, key):
        """File offset of the page of frame ``key`` in :meth:`read_phys`'s space, or None."""
        i = self._find(self._keys, key)
        if i < 0:
            return None
        return self._pages_off + int(self._key_page[i]) * PAGE_SIZE

    def _read_frames(self, lookup, addr, size, space, what):
        out = bytearray()
        a, left = addr, size
        while left:
            off = a & (PAGE_SIZE - 1)
            n = min(left, PAGE_SIZE - off)
            base = lookup(a >> 12)
            if base is None:
                raise NotInDump(a, space, what.format(frame=a >> 12))
            if n == size:
                return self._mm[base + off:base + off + n]
            out += self._mm[base + off:base + off + n]
            a += n
            left -= n
        return bytes(out)

    def _read_phys(self, addr, size):
        if self._pv:
            return self._read_frames(self._page, addr, size, "ma",
                                     "machine frame {frame:#x} is not one of the guest's pages")
        return self._read_frames(self._page, addr, size, "gpa",
                                 "guest frame {frame:#x} is not in the dump")

    def _pfn_page_off(self, pfn):
        i = self._find(self._pfn_keys, pfn)
        if i < 0:
            return None
        return self._pages_off + int(self._pfn_page[i]) * PAGE_SIZE

    def read_pfn(self, pfn, offset=0, size=PAGE_SIZE):
        """``size`` bytes of pseudo-physical (guest-physical) memory at ``pfn * 4096 + offset``.

        :raises NotInDump: for a pfn the dump does not hold.
        """
        if size < 0 or size > MAX_READ:
            raise XenscopeError(f"refusing to read {size} bytes (limit {MAX_READ})")
        addr = pfn * PAGE_SIZE + offset
        if pfn < 0 or addr < 0 or addr + size > 1 << 64:
            raise NotInDump(max(addr, 0), "gpa")
        if size == 0:
            return b""
        return self._read_frames(self._pfn_page_off, addr, size, "gpa",
                                 "pfn {frame:#x} is not in the dump")

    def _need_p2m(self, what):
        if not self._pv:
            raise Unsupported(f"{what}: an HVM dump has no P2M (its .xen_pfn table is "
                              "guest-physical already)")

    def p2m(self, pfn):
        """Machine frame of pseudo-physical frame ``pfn`` per ``.xen_p2m``, or None."""
        self._need_p2m("p2m")
        i = self._find(self._pfn_keys, pfn)
        return None if i < 0 else int(self._pfn_mfn[i])

    def m2p(self, mfn):
        """Pseudo-physical frame of machine frame ``mfn`` (inverse of ``.xen_p2m``), or None."""
        self._need_p2m("m2p")
        i = self._find(self._mfn_keys, mfn)
        return None if i < 0 else int(self._mfn_pfn[i])

    def p2m_array(self):
        """numpy uint64 array indexed by pfn (up to the highest pfn + 1): mfn, or ~0 (INVALID)."""
        self._need_p2m("p2m_array")
        n = int(self._pfn_keys[-1]) + 1 if self._pfn_keys.size else 0
        limit = min(MAX_P2M_ARRAY, P2M_SPREAD * self._pfn_keys.size + P2M_HOLE)
        if n > limit:
            raise XenscopeError(f"p2m_array would have {n} entries for the {self._pfn_keys.size} pages the dump "
                                f"holds (limit {limit}: {P2M_SPREAD} per page plus a 4 GiB hole); use p2m() per pfn")
        out = np.full(n, INVALID, dtype=np.uint64)
        out[self._pfn_keys] = self._pfn_mfn
        return out

    # -- Target -------------------------------------------------------------------------------
    def phys_ranges(self):
        if self._ranges is None:
            k = self._keys
            if not k.size:
                self._ranges = []
            else:
                brk = np.nonzero(np.diff(k) > 1)[0]
                starts = np.concatenate(([k[0]], k[brk + 1]))
                ends = np.concatenate((k[brk], [k[-1]]))
                self._ranges = [(int(s) << 12, (int(e) + 1) << 12) for s, e in zip(starts, ends)]
        return self._ranges

    def holds(self, addr):
        return addr >= 0 and self._find(self._keys, addr >> 12) >= 0

    def close(self):
        _close_mmap(self)

    def __repr__(self):
        return f"<XcCoreTarget {self.path!r} {self.kind}>"


__all__ = ["XcCoreTarget", "is_xc_core", "pre_elf_magic", "refuse_pre_elf"]
