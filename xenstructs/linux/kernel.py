"""The running kernel as a dump shows it: kernel virtual memory, symbols, KASLR, the reference tables.

:class:`Kernel` reads kernel virtual memory through the *reference* page directory,
``init_mm.pgd`` (``swapper_pg_dir`` / ``init_top_pgt``). It gets there in two steps:

1. a bootstrap address space: the ``paging`` given, else :func:`xenstructs.context.resolve` (the
   CPU's CR3, or VMCOREINFO's ``init_top_pgt``), else the symbol ``init_top_pgt``/``swapper_pg_dir``
   minus the kernel map base;
2. ``init_mm.pgd`` read through it, and its virtual address translated to a table address with
   :func:`~xenstructs.paging.walk`. That works alike for native dumps and for PV guests, whose
   entries (and the target's ``read_phys``) are in machine frames: no direct-map arithmetic.

Any task's page directory is found the same way (:meth:`Kernel.pgd_paging`).
Symbols are looked up in, in order: the ``symbols`` given (System.map / kallsyms, or the dump's
own kallsyms tables), the profile's (link-time, vmlinux), VMCOREINFO's (runtime). Link-time addresses get the KASLR offset: given,
VMCOREINFO ``KERNELOFFSET``, ``SYMBOL(_stext)`` against the link-time ``_stext``, else found by
looking for the profile's banner at ``linux_banner`` + k * 2 MiB.
"""

import struct

from ..context import resolve
from ..errors import NoRegister, NotInDump, XenscopeError
from ..paging import Paging, root_from_cr3, walk
from .memory_layout import I386_PAGE_OFFSET, START_KERNEL_MAP
from .profile import Profile

KASLR_ALIGN = 2 << 20                   # CONFIG_PHYSICAL_ALIGN default (x86_64)
KASLR_MAX = 1 << 30                     # x86_64 KERNEL_IMAGE_SIZE with RANDOMIZE_BASE
BANNER_PREFIX = b"Linux version "

# How members are read when the profile has no size for them (default: a pointer).
MEMBER_KINDS = {"task_struct.pid": "s32", "task_struct.tgid": "s32", "task_struct.comm": "str",
                "module.name": "str", "module.state": "u32", "module.core_size": "u32",
                "module.init_size": "u32", "module_layout.size": "u32", "module_memory.size": "u32"}
STR_DEFAULT = {"task_struct.comm": 16, "module.name": 56}


class Kernel:
    """Kernel virtual memory and objects of a target.

    :param target: a :class:`~xenstructs.target.Target`
    :param profile: :class:`~.profile.Profile` (offsets; link-time symbols)
    :param symbols: :class:`~.profile.Symbols` (System.map, kallsyms)
    :param paging: a :class:`~xenstructs.paging.Paging` to bootstrap from (default: resolved)
    :param kaslr_offset: the KASLR offset, when known
    :param resolve_args: options for :func:`~xenstructs.context.resolve` (``cr3``, ``mode``, ``cpu``...)
    """

    def __init__(self, target, profile=None, symbols=None, paging=None, kaslr_offset=None,
                 pointer_size=None, resolve_args=None):
        self.target = target
        self.profile = profile or Profile(meta={"source": "none"})
        self.symbols = symbols
        self.vmcoreinfo = target.facts.get("vmcoreinfo")
        self.sources = {}
        self.notes = []
        self._xlate = {}
        self._merge_vmcoreinfo_offsets()
        self.sources["types"] = self.profile.meta.get("source", "none")
        self.sources["symbols"] = symbols.source if symbols is not None else \
            self.profile.meta.get("source") if self.profile.symbols else "VMCOREINFO SYMBOL() lines"
        self.kaslr_offset = self._kaslr_without_paging(kaslr_offset)
        self.boot = self._bootstrap(paging, dict(resolve_args or {}))
        self.paging = self.boot
        if self.kaslr_offset is None:
            self.kaslr_offset = self._kaslr_from_banner()
        machine = target.facts.get("machine")
        if pointer_size is None:
            pointer_size = {"x86_64": 8, "i386": 4}.get(machine) or \
                (8 if self.boot.mode in ("4level", "5level") else 4)
        self.ptr_size = pointer_size
        self._ptr_fmt = "<Q" if pointer_size == 8 else "<I"
        self.paging = self._reference()

    # -- set-up ---------------------------------------------------------------------------------
    def _merge_vmcoreinfo_offsets(self):
        vi = self.vmcoreinfo
        if vi is None:
            return
        added = []
        for key, val in vi.as_dict().items():
            if key.startswith("OFFSET(") and key.endswith(")"):
                name = key[7:-1]
                v = vi.offset(*name.split(".", 1)) if "." in name else None
                if v is not None and name not in self.profile.offsets:
                    self.profile.offsets[name] = v
                    added.append(name)
        if added:
            self.sources["offsets"] = f"VMCOREINFO OFFSET() for {', '.join(sorted(added))}"

    def _kaslr_without_paging(self, given):
        if given is not None:
            self.sources["kaslr"] = "given"
            return given
        if self.symbols is not None and self.symbols.relocated:
            self.sources["kaslr"] = f"not needed for {self.symbols.source} (runtime addresses)"
            for name in ("_stext", "_text"):
                if name in self.symbols and name in self.profile.symbols:
                    self.sources["kaslr"] = f"{self.symbols.source} {name} - link-time {name}"
                    return self.symbols.get(name) - self.profile.symbols[name]
        vi = self.vmcoreinfo
        if vi is not None:
            if vi.kerneloffset is not None:
                self.sources["kaslr"] = "VMCOREINFO KERNELOFFSET"
                return vi.kerneloffset
            link = self._link_symbol("_stext")
            if vi.symbol("_stext") is not None and link is not None:
                self.sources["kaslr"] = "VMCOREINFO SYMBOL(_stext) - link-time _stext"
                return vi.symbol("_stext") - link
        if not self._has_link_symbols():
            self.sources["kaslr"] = "not needed (runtime symbols only)"
            return 0
        return None

    def _has_link_symbols(self):
        return bool(self.profile.symbols) or (self.symbols is not None and not self.symbols.relocated)

    def _link_symbol(self, name):
        if self.symbols is not None and not self.symbols.relocated and name in self.symbols:
            return self.symbols.get(name)
        return self.profile.symbols.get(name)

    def symbol(self, name, required=True):
        """Runtime address of ``name`` (KASLR applied to link-time addresses).

        :raises XenscopeError: when no source knows it and ``required``.
        """
        off = self.kaslr_offset or 0
        s = self.symbols
        if s is not None and name in s:
            return s.get(name) + (0 if s.relocated else off)
        if name in self.profile.symbols:
            return self.profile.symbols[name] + off
        vi = self.vmcoreinfo
        if vi is not None and vi.symbol(name) is not None:
            return vi.symbol(name)
        if required:
            where = f" (not in the symbols {s.source}{'; ' + '; '.join(self.notes) if self.notes else ''})" \
                if s is not None else ""
            raise XenscopeError(f"symbol {name} unknown{where}: give --vmlinux, --system-map or a "
                                f"--profile with symbols")
        return None

    def _bootstrap(self, paging, ra):
        if paging is not None:
            self.sources["bootstrap"] = "given paging"
            return paging
        try:
            ctx = resolve(self.target, **ra)
            self.sources["bootstrap"] = f"CR3 {ctx.cr3:#x} ({ctx.sources.get('cr3')}), mode " \
                                        f"{ctx.paging.mode} ({ctx.sources.get('mode')})"
            return ctx.paging
        except NoRegister as e:
            err = e
        # last resort: the kernel's top table by symbol, minus the kernel map base
        mode = ra.get("mode")
        machine = self.target.facts.get("machine")
        if mode is None and machine == "x86_64":
            mode = "4level"
        if mode is None:
            raise NoRegister(f"{err}; and the paging mode is unknown for the kernel's tables: give --mode")
        if mode in ("4level", "5level"):
            for name in ("init_top_pgt", "init_level4_pgt"):
                va = self.symbol(name, required=False)
                if va is not None:
                    vi = self.vmcoreinfo
                    phys_base = (vi.number("phys_base") if vi is not None else None) or 0
                    pa = va - START_KERNEL_MAP + phys_base
                    self.sources["bootstrap"] = f"{name} - __START_KERNEL_map + phys_base ({phys_base:#x})"
                    break
            else:
                raise NoRegister(f"{err}; no init_top_pgt symbol either")
        else:
            va = self.symbol("swapper_pg_dir", required=False)
            if va is None:
                raise NoRegister(f"{err}; no swapper_pg_dir symbol either")
            pa = va - I386_PAGE_OFFSET
            self.sources["bootstrap"] = "swapper_pg_dir - PAGE_OFFSET"
        return Paging(mode, root_from_cr3(pa, mode))

    def _kaslr_from_banner(self):
        link = self._link_symbol("linux_banner")
        if link is None:
            self.sources["kaslr"] = "assumed 0 (no KERNELOFFSET, no linux_banner symbol to check)"
            return 0
        want = (self.profile.meta.get("banner") or "").encode() or BANNER_PREFIX
        want = want[:64]
        for off in range(0, KASLR_MAX, KASLR_ALIGN):
            va = link + off
            w = walk(self.target, self.boot, va)
            if w.pa is None:
                continue
            try:
                got = self.target.read_phys(w.pa, min(len(want), 4096 - (w.pa & 0xFFF)))
            except NotInDump:
                continue
            if want.startswith(got) and got:
                self.sources["kaslr"] = f"linux_banner found at link address + {off:#x}"
                return off
        self.sources["kaslr"] = "assumed 0 (the banner was not found at any KASLR offset)"
        self.notes.append("KASLR offset unknown: the profile's banner is not in this dump (wrong vmlinux?)")
        return 0

    def _reference(self):
        """Paging of ``init_mm.pgd`` (the reference directory), else the bootstrap paging."""
        if self.profile.has("mm_struct.pgd"):
            init_mm = self.symbol("init_mm", required=False)
            if init_mm is not None:
                try:
                    pgd = self.read_ptr(init_mm + self.profile.offset("mm_struct.pgd"))
                    ref = self.pgd_paging(pgd)
                    self.sources["reference"] = f"init_mm.pgd = {pgd:#x} (table at {ref.root:#x})"
                    self.init_mm, self.init_pgd = init_mm, pgd
                    return ref
                except XenscopeError as e:
                    self.notes.append(f"init_mm.pgd unreadable ({e}): using the bootstrap tables")
        self.init_mm = self.symbol("init_mm", required=False)
        self.init_pgd = None
        self.sources["reference"] = "the bootstrap tables (init_mm.pgd not known)"
        return self.boot

    # -- memory ---------------------------------------------------------------------------------
    def translate(self, va):
        """Table address (physical, or machine on a PV guest) of kernel ``va``.

        :raises XenscopeError: when ``va`` does not translate through the reference tables.
        """
        page = va >> 12
        base = self._xlate.get(page)
        if base is None:
            w = walk(self.target, self.paging, va & ~0xFFF)
            if w.pa is None:
                raise XenscopeError(f"kernel va {va:#x} does not translate: {w.describe_stop()}")
            base = w.pa
            self._xlate[page] = base
        return base + (va & 0xFFF)

    def read(self, va, size):
        """``size`` bytes of kernel virtual memory at ``va``."""
        out = bytearray()
        while size > 0:
            n = min(size, 4096 - (va & 0xFFF))
            try:
                out += self.target.read_phys(self.translate(va), n)
            except NotInDump:
                raise XenscopeError(f"kernel va {va:#x} is not in the dump") from None
            va += n
            size -= n
        return bytes(out)

    def read_u32(self, va):
        return struct.unpack("<I", self.read(va, 4))[0]

    def read_s32(self, va):
        return struct.unpack("<i", self.read(va, 4))[0]

    def read_u64(self, va):
        return struct.unpack("<Q", self.read(va, 8))[0]

    def read_ptr(self, va):
        """A pointer (4 or 8 bytes, the kernel's size)."""
        return struct.unpack(self._ptr_fmt, self.read(va, self.ptr_size))[0]

    def read_str(self, va, maxlen=256):
        """A NUL-terminated string of at most ``maxlen`` bytes (decoded, invalid bytes replaced)."""
        return self.read(va, maxlen).split(b"\0", 1)[0].decode("utf-8", "replace")

    def member_addr(self, addr, key):
        """``&((struct S *)addr)->m`` for ``key = "S.m"``."""
        return addr + self.profile.offset(key)

    def member(self, addr, key):
        """The value of member ``key`` (``"task_struct.pid"``) of the struct at ``addr``: an int,
        or a str for char arrays (``comm``, ``name``)."""
        a = self.member_addr(addr, key)
        kind = MEMBER_KINDS.get(key, "ptr")
        size = self.profile.size(key)
        if kind == "str":
            return self.read_str(a, size or STR_DEFAULT.get(key, 64))
        if kind in ("u32", "s32") and size == 8:
            return self.read_u64(a)
        if kind == "u32":
            return self.read_u32(a)
        if kind == "s32":
            return self.read_s32(a)
        return self.read_ptr(a)

    def container_of(self, ptr, key):
        """``container_of(ptr, S, m)`` for ``key = "S.m"``."""
        return ptr - self.profile.offset(key)

    # -- address spaces -------------------------------------------------------------------------
    def pgd_paging(self, pgd_va):
        """:class:`~xenstructs.paging.Paging` of the page directory at kernel virtual ``pgd_va``
        (``mm->pgd``), found by walking the current tables: correct for PV guests (machine frames)."""
        w = walk(self.target, self.paging, pgd_va)
        if w.pa is None:
            raise XenscopeError(f"pgd {pgd_va:#x} does not translate: {w.describe_stop()}")
        b = self.paging
        return Paging(b.mode, w.pa if b.mode == "pae" else w.pa & ~0xFFF, b.nxe, b.maxphyaddr, b.cr4)

    def cr3_of(self, pgd_va):
        """The CR3 value a CPU would load for ``pgd_va`` (no PCID): the table's address."""
        return self.pgd_paging(pgd_va).root

    def describe(self):
        p = self.profile
        return {"mode": self.paging.mode, "reference_root": self.paging.root, "bootstrap_root": self.boot.root,
                "init_pgd": self.init_pgd, "kaslr_offset": self.kaslr_offset, "pointer_size": self.ptr_size,
                "profile": p.meta.get("source"), "kernel_version": p.meta.get("kernel_version"),
                "module_variant": p.module_variant, "sources": dict(self.sources), "notes": list(self.notes)}


def open_kernel(target, vmlinux=None, profile=None, system_map=None, kaslr_offset=None, resolve_args=None):
    """The :class:`Kernel` of ``target`` described by files: a vmlinux with DWARF, or a saved
    profile (``xenscope profile``), and optionally a System.map. What no file gives comes from the
    dump itself: every symbol from its kallsyms tables (:meth:`~.profile.Symbols.from_dump`), the
    structure offsets from its BTF (:meth:`~.profile.Profile.from_btf`), else VMCOREINFO's.

    :param resolve_args: :func:`~xenstructs.context.resolve` keywords (cr3, mode, cpu, efer, cr4,
        maxphyaddr) for the bootstrap tables
    :raises XenscopeError: both files given, or no structure offsets known at all
    """
    from .profile import Symbols
    if vmlinux and profile:
        raise XenscopeError("give --vmlinux or --profile, not both")
    prof = Profile.from_dwarf(vmlinux) if vmlinux else Profile.from_json(profile) if profile else None
    symbols = Symbols.from_file(system_map) if system_map else None
    notes = []
    if symbols is None and (prof is None or not prof.symbols):
        try:
            symbols = Symbols.from_dump(target, resolve_args)
        except XenscopeError as e:
            notes.append(f"no kernel symbols in the dump: {e}")
    if prof is None:
        try:
            prof = Profile.from_btf(target, symbols, resolve_args)
        except XenscopeError as e:
            if target.facts.get("vmcoreinfo") is None:
                raise XenscopeError(f"the kernel's structure offsets are unknown ({e}): give --vmlinux "
                                    "VMLINUX or --profile FILE (xenscope profile VMLINUX -o FILE)") from None
            notes.append(str(e))
            prof = Profile(meta={"source": f"VMCOREINFO only; {e}"})
    kernel = Kernel(target, prof, symbols, kaslr_offset=kaslr_offset, resolve_args=resolve_args)
    kernel.notes[:0] = notes
    return kernel
