"""Each PV guest's P2M from its ``shared_info`` page, the way Xen's toolstack finds it for
save/restore and ``xl dump-core``: no guest symbols needed.

Where the page is: ``struct domain``'s ``shared_info`` pointer (a Xen heap page the domain owns,
``share_xen_page_with_guest``); its ``arch`` member (``struct arch_shared_info``, public ABI:
reference §2.3; :data:`~xenstructs.formats.xccore.SHARED_INFO_ARCH_OFF`) at 3088 for a 64-bit guest,
2316 for a 32-bit one. An ``xl dump-core`` file carries the page itself (``.xen_shared_info``).

The rules (``tools/libs/guest/xg_sr_save_x86_pv.c`` ``map_p2m*`` and ``xg_core_x86.c``
``xc_core_arch_map_p2m*``, Xen 4.14+; ``tools/libxc`` before):

* the guest's size is ``arch.max_pfn`` (``xc_domain_nr_gpfns`` = Xen's ``domain_get_maximum_gpfn() + 1``,
  which for a PV guest is ``arch.max_pfn``): ``(max_pfn - 1) / fpp + 1`` list pages, ``fpp`` = 4096 /
  the guest's word size;
* ``p2m_cr3`` non-zero: the list is virtually mapped at ``p2m_vaddr`` and walked through the page
  tables at ``p2m_cr3`` (64-bit: an L4, ``cr3 >> 12``; 32-bit: a PAE L3 in ``xen_pfn_to_cr3``'s rotated
  form); the range must be canonical, must not wrap and must not overlap Xen's hole (64-bit
  0xffff800000000000-0xffff87ffffffffff, 32-bit 0xf5800000-0xffffffff);
* else the 3-level tree: ``pfn_to_mfn_frame_list_list`` is the mfn of a page of mfns of pages of mfns
  of the list pages (``~0`` there means the guest publishes the list only by ``p2m_cr3``:
  ``SIF_VIRT_P2M_4TOOLS``); every mfn on the way must be non-zero (and below ``max_mfn``);
* ``p2m_generation`` odd: the guest was changing the list's mappings when the dump was taken (libxc
  re-reads the list when it changes during a live migration); the read goes on and says so.

Which domains are PV, and their word size, come from Xen's frame table: a PV guest's own page tables
are validated L4s (64-bit) or, for a 32-bit guest, L3s (Xen's own compat L4 has no owner); HVM and
PVH guests have no validated page-table frames.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import NotInDump, XenscopeError
from ..formats.xccore import ARCH_SHARED_INFO, SHARED_INFO_ARCH_OFF, pfn_from_cr3
from .p2m_list import MAX_ENTRIES, PAGE, assemble, list_frames

HOLE = {8: (0xFFFF800000000000, 0xFFFF87FFFFFFFFFF), 4: (0xF5800000, 0xFFFFFFFF)}
VA_MASK = {8: (1 << 64) - 1, 4: 0xFFFFFFFF}
DOMID_FIRST_RESERVED = 0x7FF0


class NoP2M(XenscopeError):
    """The guest publishes no P2M in its shared_info (max_pfn, p2m_cr3 and the frame list list unset)."""


@dataclass
class Arch:
    """``struct arch_shared_info`` of one guest: ``width`` (guest word size, 8 or 4), the fields,
    and ``where`` (how the page was found)."""
    width: int
    max_pfn: int
    pfn_to_mfn_frame_list_list: int
    p2m_cr3: int
    p2m_vaddr: int
    p2m_generation: int
    where: str

    @classmethod
    def parse(cls, raw, width, where):
        """From the bytes of the ``arch`` member (at least its size)."""
        con = ARCH_SHARED_INFO[width]
        a = con.parse(bytes(raw[:con.sizeof()]))
        return cls(width, a.max_pfn, a.pfn_to_mfn_frame_list_list, a.p2m_cr3, a.p2m_vaddr, a.p2m_generation, where)

    @classmethod
    def from_facts(cls, facts, where):
        """From an xl dump-core target's parsed ``.xen_shared_info`` (``facts["shared_info"]``)."""
        s = facts["shared_info"]
        return cls(facts["guest_width"], s["max_pfn"], s["pfn_to_mfn_frame_list_list"], s["p2m_cr3"],
                   s["p2m_vaddr"], s["p2m_generation"], where)

    def text(self):
        return (f"max_pfn {self.max_pfn:#x}, p2m_cr3 {self.p2m_cr3:#x}, p2m_vaddr {self.p2m_vaddr:#x}, "
                f"p2m_generation {self.p2m_generation}, pfn_to_mfn_frame_list_list "
                f"{self.pfn_to_mfn_frame_list_list:#x}")


def read_p2m(target, arch, max_mfn=None):
    """``(ListRead, why)``: the guest's P2M by the toolstack's rules (module docstring) from ``arch``
    (an :class:`Arch`), read from ``target``'s machine memory; ``max_mfn``: the host's ``max_page``
    (frames at or above it are refused), None when not known."""
    none = VA_MASK[arch.width]
    if not arch.p2m_cr3 and arch.pfn_to_mfn_frame_list_list in (0, none):
        raise NoP2M(f"{arch.where}: the guest publishes no P2M (p2m_cr3 0, pfn_to_mfn_frame_list_list "
                    f"{arch.pfn_to_mfn_frame_list_list:#x}, max_pfn {arch.max_pfn:#x})")
    if arch.max_pfn <= 0 or arch.max_pfn > MAX_ENTRIES:
        raise XenscopeError(f"{arch.where}: max_pfn {arch.max_pfn:#x} does not describe a P2M (the guest "
                            "has published none yet?)")
    if arch.p2m_cr3:
        got, why = _virtual_list(target, arch, max_mfn)
    else:
        got, why = _frame_tree(target, arch, max_mfn)
    if arch.p2m_generation & 1:
        got.notes.append(f"p2m_generation {arch.p2m_generation} is odd: the guest was changing its P2M mappings "
                         "when the dump was taken; entries under change may be stale")
    return got, f"{why}, from {arch.where} ({arch.text()})"


def _canonical(va):
    return (va >> 47) in (0, (1 << 17) - 1)


def _check_range(arch, start, end):
    """libxc's checks of the list's virtual range ``[start, end]`` (inclusive)."""
    lo, hi = HOLE[arch.width]
    bad = (end < start or (arch.width == 8 and not (_canonical(start) and _canonical(end)))
           or (arch.width == 4 and end > VA_MASK[4]) or (start <= hi and end > lo))
    if bad:
        raise XenscopeError(f"{arch.where}: bad virtual P2M range {start:#x}-{end:#x} (not canonical, wrapping "
                            "or overlapping Xen's hole)")


def _virtual_list(target, arch, max_mfn):
    from ..paging import Paging
    fpp = PAGE // arch.width
    frames = (arch.max_pfn - 1) // fpp + 1
    start = arch.p2m_vaddr
    _check_range(arch, start, start + frames * PAGE - 1)
    mfn = pfn_from_cr3(arch.p2m_cr3, arch.width)
    if not mfn or (max_mfn is not None and mfn >= max_mfn):
        raise XenscopeError(f"{arch.where}: bad p2m_cr3 {arch.p2m_cr3:#x} (mfn {mfn:#x})")
    paging = Paging("4level" if arch.width == 8 else "pae", mfn << 12)
    maddrs, writable = list_frames(target, paging, start, frames, "P2M list (shared_info.arch.p2m_vaddr)")
    _check_frames(arch, maddrs >> np.uint64(12), max_mfn, "P2M list page")
    got = assemble(target, maddrs, "P2M list", arch.width, writable, length=arch.max_pfn)
    got.entries = got.entries[:arch.max_pfn]
    return got, (f"the virtually mapped list at {start:#x} through the page tables at mfn {mfn:#x} "
                 f"(shared_info.arch.p2m_cr3), {frames} page(s) for max_pfn {arch.max_pfn:#x}")


def _words(target, mfns, count, width, what):
    """The first ``count`` words (``width`` bytes) of the pages at ``mfns``, in order."""
    out = []
    for mfn in mfns:
        try:
            out.append(np.frombuffer(target.read_phys(int(mfn) << 12, PAGE), "<u8" if width == 8 else "<u4"))
        except NotInDump:
            raise XenscopeError(f"{what} at mfn {int(mfn):#x} is not in the dump") from None
    return np.concatenate(out)[:count].astype(np.uint64) if out else np.zeros(0, np.uint64)


def _check_frames(arch, mfns, max_mfn, what):
    bad = np.flatnonzero((mfns == 0) | ((mfns >= np.uint64(max_mfn)) if max_mfn is not None else False))
    if len(bad):
        i = int(bad[0])
        raise XenscopeError(f"{arch.where}: bad mfn {int(mfns[i]):#x} for {what} {i} (of {len(mfns)})")


def _frame_tree(target, arch, max_mfn):
    fpp = PAGE // arch.width
    fll_entries = (arch.max_pfn + fpp * fpp - 1) // (fpp * fpp)
    fl_entries = (arch.max_pfn + fpp - 1) // fpp
    if fll_entries > fpp:
        raise XenscopeError(f"{arch.where}: max_pfn {arch.max_pfn:#x} is too large for a P2M frame tree")
    top = np.array([arch.pfn_to_mfn_frame_list_list], np.uint64)
    _check_frames(arch, top, max_mfn, "the frame list list")
    mids = _words(target, top, fll_entries, arch.width, "P2M frame list list")
    _check_frames(arch, mids, max_mfn, "P2M frame list")
    leaves = _words(target, mids, fl_entries, arch.width, "P2M frame list")
    _check_frames(arch, leaves, max_mfn, "P2M list page")
    got = assemble(target, leaves << np.uint64(12), "P2M list", arch.width, None, length=arch.max_pfn)
    got.entries = got.entries[:arch.max_pfn]
    return got, (f"the 3-level frame tree at mfn {arch.pfn_to_mfn_frame_list_list:#x} "
                 f"(shared_info.arch.pfn_to_mfn_frame_list_list), {fl_entries} list page(s) for max_pfn "
                 f"{arch.max_pfn:#x}")


# ---------------------------------------------------------------------------------------------
# Xen host dumps: which domains are PV, where their shared_info is
# ---------------------------------------------------------------------------------------------

def guest_widths(cols, domains):
    """``{domain id: 8, 4 or None}``: the word size of each PV domain from the page-table frames it
    owns (validated L4s: 64-bit; L3s without L4s: 32-bit PAE), None for a domain with none (HVM, PVH)."""
    from .frames import STATES, TYPES
    use = cols["present"] & cols["validated"] & (cols["state"] == STATES.index("inuse"))
    owner, kind = cols["domain"][use], cols["type"][use]
    out = {}
    for d in domains:
        mine = kind[owner == np.uint64(d.pickled)]
        l4, l3 = (int(np.count_nonzero(mine == TYPES.index(t))) for t in ("l4", "l3"))
        out[d.id] = 8 if l4 else 4 if l3 else None
    return out


class SharedInfoPages:
    """The ``shared_info`` of a Xen host's domains: :meth:`offset` of the pointer in ``struct
    domain`` (VMCOREINFO/DWARF, else the per-release table checked on this dump, else found: the one
    offset at which every domain's struct points at a Xen heap page the domain owns), :meth:`arch`."""

    def __init__(self, host, cols):
        from .frames import FrameIndex
        self.host, self.cols = host, cols
        self.index = FrameIndex(cols["mfn"])
        self.domains = [d for d in host.domains() if 0 <= d.id < DOMID_FIRST_RESERVED]
        self.widths = guest_widths(cols, self.domains)
        self._offset = None

    def _owned_heap_page(self, d, va):
        """True when ``va`` is the direct-map address of a Xen heap page in use that ``d`` owns."""
        from .frames import STATES
        host = self.host
        if va & (PAGE - 1) or va < host.directmap:
            return False
        try:
            i = self.index.get(host.va_to_maddr(va) >> 12)
        except XenscopeError:
            return False
        c = self.cols
        return (i is not None and bool(c["xen_heap"][i]) and int(c["domain"][i]) == d.pickled
                and int(c["state"][i]) == STATES.index("inuse"))

    def _fits(self, offset):
        for d in self.domains:
            try:
                if not self._owned_heap_page(d, self.host.read_u64(d.struct_va + offset)):
                    return False
            except XenscopeError:
                return False
        return bool(self.domains)

    def offset(self):
        """``(offset, why)`` of ``struct domain``'s ``shared_info``; XenscopeError when none fits."""
        if self._offset is None:
            self._offset = self._find_offset()
        return self._offset

    def _find_offset(self):
        check = (f"every domain's pointer names a Xen heap page it owns ({', '.join(f'd{d.id}' for d in self.domains)})")
        offsets = self.host.struct_offsets()            # DWARF, VMCOREINFO, a profile (no dump search)
        off, source = offsets.get("domain", "shared_info"), offsets.source("domain", "shared_info")
        if off is not None and source != "dump" and self._fits(off):
            return off, f"struct domain shared_info at +{off} ({offsets.sources[source]}); {check}"
        tried = []
        for off, row in self._table_rows():
            if self._fits(off):
                return off, f"struct domain shared_info at +{off} (table: Xen {row}); {check}"
            tried.append(f"+{off} ({row})")
        found = self._discover()
        if len(found) == 1:
            why = f"the table's offsets did not fit ({', '.join(tried)}); " if tried else ""
            return found[0], (f"struct domain shared_info at +{found[0]}, found in this dump: {why}the only "
                              f"offset at which {check}")
        raise XenscopeError("where is each domain's shared_info? " + (
            f"the table's offsets ({', '.join(tried)}) do not fit this dump and " if tried else "") +
            (f"{len(found)} offsets fit ({', '.join(f'+{o}' for o in found)})" if found else
             "no offset of struct domain points at a Xen heap page the domain owns in every domain"))

    def _table_rows(self):
        from . import domain_layouts
        if not self.host.version:
            return []
        try:
            rows = domain_layouts.candidates(self.host.version)
        except XenscopeError:
            return []
        seen, out = set(), []
        for row in rows:
            if row.shared_info not in seen:
                seen.add(row.shared_info)
                out.append((row.shared_info, row.name))
        return out

    def _discover(self):
        """Offsets (8-aligned, within the struct's page) valid in every domain."""
        common = None
        for d in self.domains:
            try:
                raw = self.host.read_va(d.struct_va, PAGE - (d.struct_va & (PAGE - 1)))
            except XenscopeError:
                return []
            words = np.frombuffer(raw[:len(raw) // 8 * 8], "<u8")
            mine = {8 * i for i in np.flatnonzero((words & np.uint64(PAGE - 1)) == 0).tolist()
                    if self._owned_heap_page(d, int(words[i]))}
            common = mine if common is None else common & mine
        return sorted(common or ())

    def arch(self, d):
        """The :class:`Arch` of domain ``d`` (a :class:`~.host.Domain`); XenscopeError when it is not
        a PV domain or its page cannot be read."""
        width = self.widths.get(d.id)
        if width is None:
            raise XenscopeError(f"d{d.id} is not a PV domain (it owns no validated page-table frames)")
        off, _ = self.offset()
        va = self.host.read_u64(d.struct_va + off)
        maddr = self.host.va_to_maddr(va)
        raw = self.host.read_va(va + SHARED_INFO_ARCH_OFF[width], ARCH_SHARED_INFO[width].sizeof())
        kind = "64-bit" if width == 8 else "32-bit"
        return Arch.parse(raw, width, f"d{d.id}'s shared_info (frame {maddr >> 12:#x}, {kind} PV guest)")
