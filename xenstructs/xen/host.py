"""A Xen host: the hypervisor's own view over a target that holds machine memory.

A :class:`XenHost` wraps a target (a Xen kdump vmcore, or a whole-machine QEMU dump of a Xen host)
and answers Xen questions: which ``struct page_info`` layout, where the frame table, the M2P and
the direct map are, which domain owns a frame, what the M2P says. Everything is read through
Xen's own page tables (any CPU's CR3: PV guests' L4s carry Xen's slots 256-271 too) or the
direct map, with PDX compression undone when Xen's masks are known.

Addresses are named by space: ``va`` Xen virtual, ``maddr`` machine address, ``mfn`` machine frame,
``pdx`` frame-table index, ``pfn`` a guest's pseudo-physical frame (an M2P value).
Facts: ../shared/reference/xen-facts.md §1.4-1.5 (owners, PDX), §2.1 (layout), §5.1 (notes).
"""

import struct
from dataclasses import dataclass, field

from ..context import resolve
from ..errors import NotInDump, XenscopeError
from ..paging import walk
from . import layouts
from .console.lines import banner_version
from .frametable import masks_consistent
from .release import (DIRECTMAP_PV_SIZE, RDWR_MPT_VIRT_START, directmap_start, frame_table_size,
                      frame_table_start, xen_virt_start_of)
from .profile import is_profile, load as load_profile
from .symbols import load_symbols

INVALID_M2P_ENTRY = (1 << 64) - 1
SHARED_M2P_ENTRY = (1 << 64) - 2
MAX_DOMAINS = 1 << 15                        # domain_list walk bound (domids are 15-bit)
DOMAIN_MEMBERS = ("domain_id", "next_in_list", "tot_pages", "max_pages", "shared_info")


@dataclass
class Pdx:
    """PDX compression (reference §1.5): identity when ``hole_shift`` is 0."""
    bottom_mask: int = (1 << 64) - 1
    top_mask: int = 0
    hole_shift: int = 0
    ma_va_bottom_mask: int = (1 << 64) - 1
    ma_top_mask: int = 0
    source: str = "identity (no PDX compression)"

    def pfn_to_pdx(self, pfn):
        if not self.hole_shift:
            return pfn
        return (pfn & self.bottom_mask) | ((pfn & self.top_mask) >> self.hole_shift)

    def pdx_to_pfn(self, pdx):
        if not self.hole_shift:
            return pdx
        return (pdx & self.bottom_mask) | ((pdx << self.hole_shift) & self.top_mask)

    def directmapoff_to_maddr(self, off):
        if not self.hole_shift:
            return off
        return (off & self.ma_va_bottom_mask) | ((off << self.hole_shift) & self.ma_top_mask)


@dataclass
class Domain:
    id: int
    name: str
    struct_va: int
    pickled: int                     # the value page owners hold (pdx of the struct's page)
    source: str = "domain_list"
    extra: dict = field(default_factory=dict)


class XenHost:
    """Xen's view of a target holding a Xen host's machine memory.

    :param target: a :class:`~xenstructs.target.Target` whose physical memory is machine memory
    :param version: ``--xen`` option (used when the dump does not say)
    :param syms: path of xen-syms (ELF) or its ``.map``; without it every symbol comes from the image's
        own symbol table (:mod:`.symbols`), VMCOREINFO_XEN's too
    """

    def __init__(self, target, version=None, syms=None, cpu=0):
        self.t = target
        vi = target.facts.get("vmcoreinfo")
        # only Xen's own VMCOREINFO (a dom0 kernel's describes Linux, not Xen)
        self.vi = vi if vi is not None and vi.symbol("frame_table") is not None else None
        self.symbols = {}
        self.sources = {}
        self.symbol_table = None
        self.profile = None
        if syms and is_profile(syms):              # a Xen profile (xenscope profile): offsets, no symbols
            self.profile = load_profile(syms)
            syms = None
        self.syms_path = syms
        if syms:
            self.symbols.update(load_symbols(syms))
            self.sources["symbols"] = syms
        ci = target.facts.get("xen_crash_info") or {}
        self.crash_info = ci
        self.xen_phys_start = ci.get("xen_phys_start")
        if self.xen_phys_start is not None:
            self.sources["xen_phys_start"] = "the dump's Xen crash-info note"
        self.paging = self._cpu_paging(cpu)
        self.image = self._image(want_table=not syms)
        self._embedded_symbols()
        if self.vi is not None:
            for name, va in self.vi.symbols().items():
                self.symbols.setdefault(name, va)
            self.sources.setdefault("symbols", "VMCOREINFO_XEN")
        if self.paging is None:
            self.paging = self._symbol_paging()
        self.directmap = directmap_start()         # the BIGMEM layout moves it: set again below
        self.pdx = Pdx()
        self.pdx = self._pdx()                     # masks are read through the Xen image mapping
        self.version = self._version(version)
        self.selection = self._select_layout()
        self.layout = self.selection.layout
        self.dwarf = self._dwarf(syms)
        self.directmap = directmap_start(self.layout.bigmem)
        self.frametable = self._frametable()
        self._max_page = None
        self._domains = None
        self._owner_cache = {}
        self._structs = None
        self._structs_asked = set()
        self._build_id = False

    def _select_layout(self):
        """The page_info layout: the version's (:func:`.layouts.select_layout`), else the one the
        frame table itself fits (:func:`.identify.identify_layout`)."""
        bigmem = None
        if self.vi is not None and self.vi.size("page_info"):
            bigmem = self.vi.size("page_info") == 48
        src = self.sources.get("version")
        ci = self._crash_info_for_layout()
        if self.version is None and ci is None:
            from .identify import identify_layout
            return identify_layout(self, bool(bigmem))
        return layouts.select_layout(version=self.version, vmcoreinfo=self.vi, crash_info=ci, bigmem=bigmem,
                                     version_source=None if src in (None, "--xen option") else src)

    def _image(self, want_table):
        """Xen's image in the dump (:func:`.image.read_images`: the candidate whose own symbol table is
        found when ``want_table``, else the first); sets ``xen_phys_start`` from it when the crash note
        does not, and ``symbol_table``."""
        from .image import read_images
        from .release import XEN_VIRT_START_NEW, XEN_VIRT_START_OLD
        from .symbols import find_table
        major = self.crash_info.get("xen_major_version")
        origin = XEN_VIRT_START_OLD if major is not None and (major, self.crash_info.get(
            "xen_minor_version") or 0) < (4, 14) else XEN_VIRT_START_NEW
        candidates = read_images(self.t, self.paging, self.xen_phys_start, origin)
        image, why = (candidates[0] if candidates else None), "Xen's image not found in the dump"
        for cand in candidates if want_table else ():
            try:
                self.symbol_table, image = find_table(cand), cand
                break
            except XenscopeError as e:
                why = str(e)
        if want_table and self.symbol_table is None:
            self.sources["symbol_table"] = f"none: {why}"
        if image is not None and self.xen_phys_start is None:
            self.xen_phys_start = image.phys_start
            self.sources["xen_phys_start"] = image.how
        return image

    def _embedded_symbols(self):
        """Every Xen symbol from the image's own table (:mod:`.symbols`), when no xen-syms is given."""
        if self.symbol_table is None:
            return
        for name, va in self.symbol_table.addresses().items():
            self.symbols.setdefault(name, va)
        self.sources["symbols"] = self.symbol_table.describe()

    def _dwarf(self, syms):
        """Offsets from xen-syms' DWARF when it has any; they must agree with the layout registry."""
        if not syms:
            return None
        try:
            with open(syms, "rb") as f:
                if f.read(4) != b"\x7fELF":
                    return None
        except OSError:
            return None
        from .dwarf import check_layout, offsets_from_xen_syms
        try:
            off = offsets_from_xen_syms(syms)
        except XenscopeError as e:
            self.sources["dwarf"] = f"none ({e})"
            return None
        bad = check_layout(self.layout, off)
        if bad:
            raise XenscopeError(f"{syms} disagrees with layout {self.layout.name}: {bad[0]}")
        self.sources["dwarf"] = f"{syms} (struct offsets checked against layout {self.layout.name})"
        return off

    @property
    def build_id(self):
        """The build-id (hex) of the image's GNU build-id note, or None (read once)."""
        if self._build_id is False:
            from .image import build_id
            found = None
            if self.image is not None:
                try:
                    found = build_id(self.image, self.read_va, self.symbols.get("__note_gnu_build_id_start"))
                except XenscopeError:
                    found = None
            self._build_id = found[0] if found else None
        return self._build_id

    def struct_offsets(self, *want):
        """The :class:`~.structs.StructOffsets` of this host, searched in the dump for the
        ``"struct.member"`` names in ``want`` that no other source gives (cached)."""
        from .structs import resolve
        asked = set(want) | self._structs_asked
        if self._structs is None or asked != self._structs_asked:
            self._structs_asked = asked
            self._structs = resolve(self, sorted(asked))
            self.sources["structs"] = self._structs.describe()
        return self._structs

    def _frametable(self):
        """FRAMETABLE_VIRT_START: x86's ``frame_table`` is a macro; VMCOREINFO_XEN's SYMBOL(frame_table)
        is the address of the pointer variable ``_frame_table`` that holds it (xen/common/kexec.c)."""
        default = frame_table_start(self.layout.bigmem)
        for name in ("_frame_table", "frame_table"):
            if name in self.symbols:
                try:
                    va = self.read_u64(self.symbols[name])
                except XenscopeError:
                    continue
                if va >> 47 == 0x1FFFF:
                    self.sources["frame_table"] = f"pointer at symbol {name}"
                    return va
        self.sources["frame_table"] = "FRAMETABLE_VIRT_START of the layout"
        return default

    # -- what Xen this is ----------------------------------------------------------------------
    def _crash_info_for_layout(self):
        ci = self.crash_info
        if not ci.get("xen_major_version"):
            return None
        return {"major": ci["xen_major_version"], "minor": ci.get("xen_minor_version"),
                "extra": self._crash_extra()}

    def _crash_extra(self):
        """Xen's extra version string (``.7``, ``.5-pre``): the note holds its machine address."""
        pa = self.crash_info.get("xen_extra_version")
        if not pa:
            return None
        try:
            raw = self.t.read_phys(pa, 64)
        except (NotInDump, XenscopeError):
            return None
        return raw.split(b"\0", 1)[0].decode(errors="replace")

    def _version(self, option):
        ci = self._crash_info_for_layout()
        if ci and ci.get("major") is not None:
            self.sources["version"] = "the dump's Xen crash-info note"
            return f"{ci['major']}.{ci['minor']}{ci.get('extra') or ''}"
        if option:
            self.sources["version"] = "--xen option"
            return option
        from .image import version_from_code
        found = version_from_code(self.read_va, self.symbols)
        if found:
            self.sources["version"] = found[1]
            return found[0]
        found = self._banner_version()
        if found:
            self.sources["version"] = "the banner in Xen's console ring"
            return found
        return None

    def _banner_version(self):
        """The version of Xen's banner (or a register dump's header) in the console ring
        (:func:`.conring.read_conring`) when known: :func:`.console.lines.banner_version`."""
        from .conring import read_conring
        try:
            ring = read_conring(self)
        except XenscopeError:
            return None
        return banner_version(ring.text)

    def _cpu_paging(self, cpu):
        """Xen's page tables from a CPU's CR3 (Xen's idle table or a PV guest's L4, which carries
        Xen's slots), or None."""
        try:
            ctx = resolve(self.t, cpu=cpu, mode=None)
            if ctx.paging.mode in ("4level", "5level"):
                self.sources["cr3"] = ctx.sources.get("cr3", "registers")
                return ctx.paging
        except XenscopeError:
            pass
        return None

    def _symbol_paging(self):
        """Xen's page tables from ``pgd_l4``/``idle_pg_table`` through the Xen image mapping."""
        from ..paging import Paging
        va = self.symbols.get("pgd_l4") or self.symbols.get("idle_pg_table")
        if va is not None and self.xen_phys_start is not None:
            start = xen_virt_start_of(va)
            self.sources["cr3"] = "idle_pg_table symbol through the Xen image mapping"
            return Paging("4level", va - start + self.xen_phys_start)
        raise XenscopeError("cannot find Xen's page tables: the dump has no CPU CR3 and no "
                            "idle_pg_table/xen_phys_start (give --cr3)")

    # -- reading Xen virtual memory --------------------------------------------------------------
    def va_to_maddr(self, va):
        """Machine address of a Xen virtual address (direct map arithmetic, else a page walk)."""
        if self.directmap <= va < self.directmap + DIRECTMAP_PV_SIZE:
            return self.pdx.directmapoff_to_maddr(va - self.directmap)
        w = walk(self.t, self.paging, va)
        if w.pa is None:
            raise XenscopeError(f"Xen va {va:#x} does not translate: {w.describe_stop()}")
        return w.pa

    def read_va(self, va, size):
        out = bytearray()
        while size > 0:
            n = min(size, 0x1000 - (va & 0xFFF))
            out += self.t.read_phys(self.va_to_maddr(va), n)
            va += n
            size -= n
        return bytes(out)

    def read_u64(self, va):
        return struct.unpack("<Q", self.read_va(va, 8))[0]

    def read_u32(self, va):
        return struct.unpack("<I", self.read_va(va, 4))[0]

    def symbol(self, name):
        va = self.symbols.get(name)
        if va is None:
            raise XenscopeError(f"symbol {name} unknown: give xen-syms or its .map (--xen-syms)")
        return va

    def _pdx(self):
        names = ("pfn_pdx_bottom_mask", "pfn_top_mask", "pfn_pdx_hole_shift", "ma_va_bottom_mask",
                 "ma_top_mask")
        if all(n in self.symbols for n in names):
            try:
                vals = [self.read_u64(self.symbols[n]) for n in names]
                vals[2] &= 0xFFFFFFFF
            except XenscopeError:
                return Pdx()
            found = Pdx(*vals, source="Xen's pfn_pdx_* masks read from memory")
            if masks_consistent(found):
                return found
            return Pdx(source="identity (Xen's pfn_pdx_* masks read from memory do not have Xen's shape: ignored)")
        return Pdx()

    # -- frames -----------------------------------------------------------------------------------
    @property
    def max_page(self):
        """Xen's ``max_page``, refused when no x86 machine or Xen frame table could have it."""
        if self._max_page is None:
            self._max_page = self._checked_max_page(self.read_u64(self.symbol("max_page")))
        return self._max_page

    def _checked_max_page(self, value):
        from .frametable import MAX_FRAMES, valid_below
        if not 0 < value <= MAX_FRAMES:
            raise XenscopeError(f"max_page {value:#x} read from the dump is absurd (x86 machine frames stop at "
                                f"{MAX_FRAMES:#x}): a corrupt image?")
        need = valid_below(self.pdx, value) * self.layout.page_info_size
        room = frame_table_size(self.layout.bigmem)
        if need > room:
            raise XenscopeError(f"max_page {value:#x} read from the dump is absurd: its frame table would take "
                                f"{need >> 30} GiB, more than Xen's {room >> 30} GiB frame-table area")
        return value

    def page_info_va(self, mfn):
        return self.frametable + self.pdx.pfn_to_pdx(mfn) * self.layout.page_info_size

    def page_raw(self, mfn):
        if mfn < 0 or mfn >= self.max_page:
            raise XenscopeError(f"mfn {mfn:#x} is beyond max_page {self.max_page:#x}")
        return self.read_va(self.page_info_va(mfn), self.layout.page_info_size)

    def page(self, mfn):
        """Everything about one machine frame: page_info decoded, owner, M2P."""
        info = layouts.parse_page_info(self.page_raw(mfn), self.layout)
        raw = info["domain"]
        owner = self.owner(raw) if info["count"]["state"] != "free" else None
        res = {"mfn": mfn, "pdx": self.pdx.pfn_to_pdx(mfn), "page_info_va": self.page_info_va(mfn),
               "count_info": info["count_info"], "type_info": info["type_info"],
               "count": info["count"], "type": info["type"], "domain_raw": raw,
               "owner": owner.id if owner else None,
               "owner_name": owner.name if owner else ("anonymous" if raw == 0 else None),
               "m2p": self.m2p(mfn)}
        return res

    def frame_arrays(self, start=0, count=None):
        """The frame table's records of the frames in ``[start, start+count)`` that Xen maps and
        the dump holds, as numpy columns: :func:`.frametable.frame_arrays`."""
        from .frametable import frame_arrays
        return frame_arrays(self, start, count)

    # -- M2P ---------------------------------------------------------------------------------------
    def m2p(self, mfn):
        """Xen's M2P entry for ``mfn`` (the owning guest's pfn), or None when invalid/unmapped."""
        try:
            v = self.read_u64(RDWR_MPT_VIRT_START + 8 * mfn)
        except XenscopeError:
            return None
        return None if v >> 63 else v

    def m2p_array(self, start, end):
        """M2P entries of mfns ``[start, end)`` as a numpy uint64 array (``INVALID_M2P_ENTRY`` where
        the M2P is unmapped or missing), read a page (512 entries) at a time."""
        import numpy as np
        out = np.full(max(0, end - start), INVALID_M2P_ENTRY, np.uint64)
        va0 = RDWR_MPT_VIRT_START + 8 * start
        for pva in range(va0 & ~0xFFF, RDWR_MPT_VIRT_START + 8 * end, 0x1000):
            try:
                page = np.frombuffer(self.read_va(pva, 4096), "<u8")
            except XenscopeError:
                continue
            first = (pva - RDWR_MPT_VIRT_START) // 8
            lo, hi = max(first, start), min(first + 512, end)
            out[lo - start:hi - start] = page[lo - first:hi - first]
        return out

    # -- domains -----------------------------------------------------------------------------------
    def pickle(self, struct_va):
        """The owner value a page of this domain carries: pdx of the struct's direct-map page."""
        return (struct_va - self.directmap) >> 12

    def domains(self):
        """Domains from ``domain_list`` (bounded walk) plus dom_xen, dom_io, dom_cow."""
        if self._domains is not None:
            return self._domains
        out = []
        seen = set()
        offsets = self.struct_offsets(*(f"domain.{m}" for m in DOMAIN_MEMBERS))
        next_off = offsets.get("domain", "next_in_list")
        id_off = offsets.get("domain", "domain_id") or 0
        if "domain_list" in self.symbols and next_off is not None:
            va = self.read_u64(self.symbols["domain_list"])
            while va and va not in seen:
                if len(seen) >= MAX_DOMAINS:
                    raise XenscopeError(f"domain_list has more than {MAX_DOMAINS} entries: corrupt list")
                seen.add(va)
                did = struct.unpack("<H", self.read_va(va + id_off, 2))[0]
                out.append(Domain(did, layouts.domid_name(did), va, self.pickle(va)))
                va = self.read_u64(va + next_off)
        for sym in ("dom_xen", "dom_io", "dom_cow"):
            if sym in self.symbols:
                try:
                    va = self.read_u64(self.symbols[sym])
                except XenscopeError:
                    continue
                if va and va not in seen:
                    did = struct.unpack("<H", self.read_va(va + id_off, 2))[0]
                    out.append(Domain(did, layouts.domid_name(did), va, self.pickle(va), source=sym))
                    seen.add(va)
        for d in out:
            self._owner_cache[d.pickled] = d
        if next_off is None or "domain_list" not in self.symbols:
            out += self.owner_domains(seen)
        for d in out:                       # page counts, shared_info: when the offsets are known
            for member, read in (("tot_pages", self.read_u32), ("max_pages", self.read_u32),
                                 ("shared_info", self.read_u64)):
                off = offsets.get("domain", member)
                if off is not None:
                    try:
                        d.extra[member] = read(d.struct_va + off)
                    except XenscopeError:
                        pass
        self._domains = out
        return out

    def owner_domains(self, seen=()):
        """Domains found as owners of frames in use (when domain_list cannot be walked, or for
        domains it does not list, like dom_cow): only owner values that name a xen-heap page."""
        import numpy as np
        from .frames import STATES, FrameIndex, classify
        try:
            cols = classify(self, self.frame_arrays())
        except XenscopeError:
            return []
        # only frames assigned to a domain (PGC_allocated): an anonymous xen-heap page keeps in its
        # owner field what its free-list days left there (v.free.order: Debian's 4.14.6 had two
        # order-1 xen-heap allocations whose head "owner" 1 named frame 1 as a domain d0)
        inuse = cols["present"] & (cols["state"] != STATES.index("free")) & cols["allocated"]
        raws, counts = np.unique(cols["domain"][inuse], return_counts=True)
        index = FrameIndex(cols["mfn"])
        best = {}
        for raw, n in zip(raws.tolist(), counts.tolist()):
            if not raw or self.directmap + (raw << 12) in seen:
                continue
            # a real owner value names a struct domain, which lives in a xen-heap page: other
            # values (a union member reused by some page state) are not domains
            i = index.get(self.pdx.pdx_to_pfn(raw))
            if i is None or not cols["xen_heap"][i]:
                continue
            d = self.owner(raw)
            if d is not None and d.id >= 0 and (d.id not in best or n > best[d.id][1]):
                d.source = "frame owners"
                best[d.id] = (d, n)
        return sorted((d for d, _ in best.values()), key=lambda d: d.id)

    def owner(self, raw):
        """The :class:`Domain` a page's raw owner value names (None for anonymous pages)."""
        if not raw:
            return None
        if not self._owner_cache:
            try:
                self.domains()
            except XenscopeError:
                pass
        d = self._owner_cache.get(raw)
        if d is None:
            va = self.directmap + (raw << 12)
            try:
                did = struct.unpack("<H", self.read_va(va, 2))[0]
            except XenscopeError:
                return Domain(-1, f"unreadable owner {raw:#x}", va, raw, source="page owner")
            d = Domain(did, layouts.domid_name(did), va, raw, source="page owner")
            self._owner_cache[raw] = d
        return d

    def describe(self):
        """What this host is and where each fact came from (for ``xen info``-style output)."""
        return {"version": self.version, "layout": self.layout.name, "layout_why": self.selection.why,
                "directmap_va": self.directmap, "frametable_va": self.frametable,
                "xen_phys_start": self.xen_phys_start, "build_id": self.build_id, "pdx": self.pdx.source,
                "sources": dict(self.sources)}


def open_host(target, version=None, syms=None, cpu=0):
    """Xen's view of a Xen host dump: its frame table, M2P, domains and symbols (a :class:`XenHost`).

    Opening reads what every Xen question needs: Xen's page tables (from ``cpu``'s CR3 in the
    crash notes, else from its symbols), the frame table's address, the PDX compression masks,
    the release (which decides the ``page_info`` layout: ``host.layout``, and ``host.selection.why``
    says how it was chosen) and the domain list. ``host.describe()`` says where each came from.

    :param target: a :class:`~xenstructs.target.Target` whose physical memory is machine memory
        (a Xen ``kexec``/``crash`` dump, or a QEMU dump of a Xen host)
    :param version: the Xen release (``"4.17.3"``) when the dump does not say
    :param syms: xen-syms (ELF), its ``.map``, or a Xen profile (``xenscope profile``); default:
        the symbol table of Xen's own image in the dump
    :param cpu: the CPU whose CR3 reaches Xen's page tables
    :return: :class:`XenHost`: ``host.page(mfn)`` (see :func:`~xenstructs.api.page_info`),
        ``host.m2p(mfn)``, ``host.domains()``, ``host.max_page``, ``host.version``, ``host.layout``
    :raises XenscopeError: not a Xen host dump, or a value it needs cannot be found (the message
        says which option gives it)
    """
    return XenHost(target, version=version, syms=syms, cpu=cpu)
