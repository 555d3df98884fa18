"""What Xen keeps about a domain's kind, its vCPUs' saved state and a translated domain's P2M.

* **type** (``xen/include/xen/sched.h``): ``is_pv_domain`` is ``!(d->options & XEN_DOMCTL_CDF_hvm)``
  (bit 0, public/domctl.h); an HVM-container domain is **PVH** when Xen emulates no legacy device
  for it: ``d->arch.emulation_flags`` (``XEN_X86_EMU_*``, public/arch-x86/xen.h) is
  ``XEN_X86_EMU_LAPIC`` alone for a PVH domU (``emulation_flags_ok``: a domU is either that or every
  device but vPCI), LAPIC|IOAPIC|VPCI for a PVH dom0; **HVM** has the PIC (bit 5) among them.
* **paging mode** (``asm-x86/paging.h``): ``d->arch.paging.mode`` has ``PG_SH_enable`` (bit 20:
  shadow), ``PG_HAP_enable`` (bit 21), and ``PG_refcounts``/``PG_log_dirty``/``PG_translate``/
  ``PG_external`` (``XEN_DOMCTL_SHADOW_ENABLE_*`` = bits 1..4, shifted by ``PG_mode_shift`` 10).
  A PV guest has none of them unless log-dirty shadow is on (live migration).
* **saved vCPU state** of an HVM-container vCPU: ``v->arch.hvm.guest_cr[0..4]`` and
  ``v->arch.hvm.guest_efer``. With HAP the guest writes CR3 without a VM exit; Xen copies the VMCB's
  (SVM, ``svm_vmexit_handler``) or the VMCS's (VMX) CR3 into ``guest_cr[3]`` on every VM exit, so a
  descheduled vCPU's value is current. A PV vCPU's page-table root is ``v->arch.cr3`` (a machine
  address).
* **P2M**: ``d->arch.p2m`` points to the host ``struct p2m_domain``; its ``phys_table`` is the root's
  mfn. On Intel with HAP the tables are EPT (``p2m->ept``: the EPTP, whose frame is that root);
  otherwise (AMD NPT, or shadow mode on any CPU: ``p2m_initialise`` calls ``ept_p2m_init`` only for
  HAP on VMX) they are p2m-pt's x86 tables. A shadow-mode guest's P2M and its own page tables can
  be followed; the shadow tables the CPU really walks (``hw_cr[3]``) are Xen's private copies.
"""

import struct
from dataclasses import dataclass, field
from typing import Optional

from ..errors import NotInDump, XenscopeError
from . import ept, npt
from .p2m_tables import leaf_arrays as table_leaf_arrays, leaves as table_leaves, translate as table_translate

CDF_HVM = 1 << 0
EMU_LAPIC, EMU_PIC = 1 << 0, 1 << 5
PG_REFCOUNTS, PG_LOG_DIRTY, PG_TRANSLATE, PG_EXTERNAL = (1 << 11, 1 << 12, 1 << 13, 1 << 14)
PG_SH_ENABLE, PG_HAP_ENABLE = 1 << 20, 1 << 21
MAX_VCPUS = 1 << 13
NEEDED = ("domain.options", "domain.arch.emulation_flags", "domain.arch.paging.mode", "domain.arch.p2m",
          "domain.vcpu", "domain.max_vcpus", "vcpu.arch.hvm.guest_cr", "vcpu.arch.hvm.guest_efer",
          "vcpu.arch.cr3", "p2m_domain.phys_table", "p2m_domain.ept", "p2m_domain.domain")


@dataclass
class Vcpu:
    """One vCPU's saved state: ``regs`` (``cr0``, ``cr2``, ``cr3``, ``cr4``, ``efer`` for an
    HVM-container vCPU; ``cr3`` as a machine address for a PV one)."""
    id: int
    struct_va: int
    regs: dict = field(default_factory=dict)
    source: str = ""


@dataclass
class Kind:
    """A domain's type (``PV``/``PVH``/``HVM``), paging mode (``PV``/``shadow``/``HAP``) and the raw
    words they were read from."""
    type: str
    paging: str
    options: int
    emulation_flags: Optional[int]
    paging_mode: int

    @property
    def translated(self):
        return self.type != "PV"

    def paging_words(self):
        bits = ((PG_SH_ENABLE, "shadow"), (PG_HAP_ENABLE, "hap"), (PG_REFCOUNTS, "refcounts"),
                (PG_LOG_DIRTY, "log_dirty"), (PG_TRANSLATE, "translate"), (PG_EXTERNAL, "external"))
        return [w for bit, w in bits if self.paging_mode & bit]


def _offsets(host):
    return host.struct_offsets(*NEEDED)


def _need(offsets, key):
    struct_name, member = key.split(".", 1)
    off = offsets.get(struct_name, member)
    if off is None:
        raise XenscopeError(f"the offset of {key} is unknown: give xen-syms with DWARF or a profile of this "
                            f"build (--xen-syms; xenscope profile XEN-SYMS)")
    return off


def pv_widths(host, cols=None):
    """``{domain id: word size or None}``: which domains own validated PV page-table frames
    (:func:`.shared_info.guest_widths`; ``cols``: the frame table's :func:`.frames.classify` columns)."""
    from .frames import classify
    from .shared_info import guest_widths
    return guest_widths(cols if cols is not None else classify(host, host.frame_arrays()), host.domains())


def _pv_by_frames(host, dom, why, widths):
    """The :class:`Kind` of a domain that owns validated PV page-table frames (found without struct
    offsets), else XenscopeError ``why``."""
    if widths is None:
        try:
            widths = pv_widths(host)
        except XenscopeError:
            raise XenscopeError(why) from None
    if widths.get(dom.id) is None:
        raise XenscopeError(why)
    return Kind("PV", "PV", None, None, None)


def kind(host, dom, widths=None):
    """The :class:`Kind` of a :class:`~.host.Domain`: from ``options``/``arch.paging.mode``/
    ``arch.emulation_flags`` when their offsets are known; else a domain owning validated page-table
    frames is PV (paging "PV": a log-dirty shadow during migration is then not seen; ``widths``:
    :func:`pv_widths` when the caller has them)."""
    s = _offsets(host)
    if s.get("domain", "options") is None or s.get("domain", "arch.paging.mode") is None:
        try:
            _need(s, "domain.options")
            _need(s, "domain.arch.paging.mode")
        except XenscopeError as e:
            return _pv_by_frames(host, dom, f"not a PV domain by its frames, and {e}", widths)
    options = host.read_u32(dom.struct_va + _need(s, "domain.options"))
    mode = host.read_u32(dom.struct_va + _need(s, "domain.arch.paging.mode"))
    emu = None
    if options & CDF_HVM:
        emu = host.read_u32(dom.struct_va + _need(s, "domain.arch.emulation_flags"))
        dtype = "HVM" if emu & EMU_PIC else "PVH"
    else:
        dtype = "PV"
    paging = "HAP" if mode & PG_HAP_ENABLE else "shadow" if mode & PG_SH_ENABLE else "PV"
    return Kind(dtype, paging, options, emu, mode)


def vcpus(host, dom, translated=None):
    """The :class:`Vcpu` list of a domain (``d->vcpu[0 .. max_vcpus)``, NULL slots skipped)."""
    s = _offsets(host)
    if translated is None:
        translated = kind(host, dom).translated
    count = host.read_u32(dom.struct_va + _need(s, "domain.max_vcpus"))
    array = host.read_u64(dom.struct_va + _need(s, "domain.vcpu"))
    if count > MAX_VCPUS:
        raise XenscopeError(f"domain {dom.id}: max_vcpus {count} is absurd")
    out = []
    pointers = struct.unpack(f"<{count}Q", host.read_va(array, 8 * count)) if array and count else ()
    for i, va in enumerate(pointers):           # one read for the array, one for guest_cr[0..4]
        if not va:
            continue
        vid = i                                   # d->vcpu[i]->vcpu_id == i (vcpu_create)
        if translated:
            words = struct.unpack("<5Q", host.read_va(va + _need(s, "vcpu.arch.hvm.guest_cr"), 40))
            regs = {"cr0": words[0], "cr2": words[2], "cr3": words[3], "cr4": words[4],
                    "efer": host.read_u64(va + _need(s, "vcpu.arch.hvm.guest_efer"))}
            where = "vcpu.arch.hvm.guest_cr/guest_efer"
        else:
            regs = {"cr3": host.read_u64(va + _need(s, "vcpu.arch.cr3"))}
            where = "vcpu.arch.cr3 (machine address)"
        out.append(Vcpu(vid, va, regs, f"d{dom.id}v{vid} {where}"))
    return out


class P2M:
    """A translated domain's P2M in machine memory ``target``: ``format`` (an :mod:`.npt`/:mod:`.ept`
    Format), ``root_mfn``, ``eptp`` (an :class:`.ept.Eptp` or None), ``source`` (where it was found);
    :meth:`translate` one gfn (cached), :meth:`leaf_arrays` every entry (arrays; :meth:`leaves`: objects)."""

    def __init__(self, target, fmt, root_mfn, source, eptp=None):
        self.target, self.format, self.root_mfn = target, fmt, root_mfn
        self.source, self.eptp = source, eptp
        self._cache = {}

    def read_table(self, mfn):
        return self.target.read_phys(mfn << 12, 4096)

    def translate(self, gfn):
        t = self._cache.get(gfn)
        if t is None:
            if len(self._cache) > 1 << 16:
                self._cache.clear()
            t = self._cache[gfn] = table_translate(self.read_table, self.format, self.root_mfn, gfn)
        return t

    def leaves(self):
        return table_leaves(self.read_table, self.format, self.root_mfn)

    def leaf_arrays(self):
        return table_leaf_arrays(self.read_table, self.format, self.root_mfn)


def domain_p2m(host, dom, kind_=None):
    """The :class:`P2M` of a translated domain (XenscopeError for a PV one)."""
    kind_ = kind_ or kind(host, dom)
    if not kind_.translated:
        raise XenscopeError(f"domain {dom.id} is PV: its P2M is the guest's own list (p2m-check --domain)")
    s = _offsets(host)
    p2m_va = host.read_u64(dom.struct_va + _need(s, "domain.arch.p2m"))
    if not p2m_va:
        raise XenscopeError(f"domain {dom.id}: d->arch.p2m is NULL")
    back = host.read_u64(p2m_va + _need(s, "p2m_domain.domain"))
    if back != dom.struct_va:
        raise XenscopeError(f"domain {dom.id}: its p2m_domain at {p2m_va:#x} points back to {back:#x}, "
                            f"not to the domain ({dom.struct_va:#x})")
    root = host.read_u64(p2m_va + _need(s, "p2m_domain.phys_table"))
    if not root:
        raise XenscopeError(f"domain {dom.id}: its P2M has no root table (phys_table 0)")
    eptp = ept.Eptp(host.read_u64(p2m_va + _need(s, "p2m_domain.ept")))
    source = f"d{dom.id}'s struct p2m_domain at {p2m_va:#x}: phys_table mfn {root:#x}"
    if kind_.paging == "HAP" and eptp.raw and eptp.mfn == root:
        return P2M(host.t, ept.Format(ept.layout_for(host.version)), root, source + f", EPTP {eptp.raw:#x}", eptp)
    return P2M(host.t, npt.Format(), root, source)


def find_domain(host, domid):
    for d in host.domains():
        if d.id == domid:
            return d
    raise XenscopeError(f"no domain {domid} in the dump (domains: {', '.join(str(d.id) for d in host.domains())})")


def describe_vcpus(host, dom, kind_):
    """``[{"vcpu", "cr3", ...}]`` for ``domains``/``info`` (an unreadable vCPU gives its error)."""
    try:
        return [dict(vcpu=v.id, **v.regs) for v in vcpus(host, dom, kind_.translated)]
    except (XenscopeError, NotInDump) as e:
        return [{"error": str(e)}]


def guest_memory(host, domid):
    """``(GuestMemory, dom, kind, p2m)`` of translated domain ``domid`` (:mod:`~xenstructs.paging.nested`)."""
    from ..paging.nested import GuestMemory
    dom = find_domain(host, domid)
    kind_ = kind(host, dom)
    p2m = domain_p2m(host, dom, kind_)
    return GuestMemory(host.t, p2m, vcpus(host, dom, True), f"d{domid}"), dom, kind_, p2m
