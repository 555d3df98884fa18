"""The machine-frame view of a running Xen PV domain through ``/proc/kcore`` (read-only).

A PV kernel's page tables hold machine frames, while kcore's physical segments are its
pseudo-physical memory. The kernel's own P2M (``xen_p2m_addr``: ``xen_p2m_size`` entries, pfn ->
mfn, in the vmalloc area kcore reads) is read once; its inverse turns each machine address a walk
reads into the pseudo-physical one kcore gives, the way :mod:`.xccore` reads ``xl dump-core`` files.
Only the domain's own frames are reachable so: Xen's frames and other domains' are not (Xen's M2P,
which would name them, is no kcore segment). Entries with ``IDENTITY_FRAME_BIT`` (1 << 62) or
``FOREIGN_FRAME_BIT`` (1 << 63), and ``INVALID_P2M_ENTRY`` (~0), are no frames of the domain.
"""

import numpy as np

from ..errors import NotInDump, XenscopeError

PAGE_SHIFT = 12
PAGE = 1 << PAGE_SHIFT
FLAG_BITS = np.uint64(3 << 62)          # FOREIGN_FRAME_BIT | IDENTITY_FRAME_BIT (and ~0)
START_KERNEL_MAP = 0xffffffff80000000


class MachineView:
    """mfn -> pfn of the running PV domain, from its P2M read through ``target``'s kcore segments."""

    def __init__(self, target):
        table = target.own_kallsyms().table()
        missing = [n for n in ("xen_p2m_addr", "xen_p2m_size") if n not in table]
        if missing:
            raise XenscopeError(f"{', '.join(missing)} not in /proc/kallsyms (CONFIG_KALLSYMS_ALL off?)")
        p2m_va = _u64(target, table["xen_p2m_addr"])
        size = _u64(target, table["xen_p2m_size"])
        ram_end = max(end for _, end in target.pseudo_ranges())
        entries = min(size, ram_end >> PAGE_SHIFT)                # beyond RAM: no frame of ours
        self._invert(np.frombuffer(target.read_kcore_virt(p2m_va, entries * 8), dtype=np.uint64), p2m_va)

    @classmethod
    def from_p2m(cls, p2m, p2m_va=0):
        """A view over a P2M array already read (tests)."""
        view = cls.__new__(cls)
        view._invert(np.asarray(p2m, dtype=np.uint64), p2m_va)
        return view

    def _invert(self, p2m, p2m_va):
        self.p2m, self.entries, self.p2m_va = p2m, len(p2m), p2m_va
        valid = (p2m & FLAG_BITS) == 0
        pfns = np.nonzero(valid)[0].astype(np.uint64)
        mfns = p2m[valid]
        order = np.argsort(mfns, kind="stable")
        self.mfns, self.pfns = mfns[order], pfns[order]
        if not len(self.mfns):
            raise XenscopeError(f"the P2M at {p2m_va:#x} holds no frame")

    def pfn(self, mfn):
        """The pfn of machine frame ``mfn``, or None when it is not one of the domain's."""
        i = int(np.searchsorted(self.mfns, np.uint64(mfn)))
        if i < len(self.mfns) and int(self.mfns[i]) == mfn:
            return int(self.pfns[i])
        return None

    def mfn(self, pfn):
        """The mfn of ``pfn``, or None (not present, identity or foreign)."""
        if not 0 <= pfn < self.entries:
            return None
        value = int(self.p2m[pfn])
        return None if value & (3 << 62) else value

    def machine_ranges(self):
        """``[(start, end)]`` machine address ranges of the domain's frames, coalesced."""
        if not len(self.mfns):
            return []
        breaks = np.nonzero(np.diff(self.mfns) != 1)[0]
        starts = np.concatenate(([0], breaks + 1))
        ends = np.concatenate((breaks, [len(self.mfns) - 1]))
        return [(int(self.mfns[s]) << PAGE_SHIFT, (int(self.mfns[e]) + 1) << PAGE_SHIFT)
                for s, e in zip(starts, ends)]

    def read(self, read_pseudo, addr, size):
        """``size`` bytes at machine address ``addr``, page by page through ``read_pseudo(pa, n)``."""
        out = bytearray()
        while size:
            n = min(size, PAGE - (addr & (PAGE - 1)))
            pfn = self.pfn(addr >> PAGE_SHIFT)
            if pfn is None:
                raise NotInDump(addr, "ma", "not a frame of this domain: Xen's or another domain's")
            out += read_pseudo((pfn << PAGE_SHIFT) | (addr & (PAGE - 1)), n)
            addr += n
            size -= n
        return bytes(out)

    def kernel_root(self, target):
        """``(machine CR3, why)``: ``init_top_pgt``'s pfn (kcore's text segment) through the P2M."""
        va = target.symbol("init_top_pgt")
        if va is None:
            raise XenscopeError("init_top_pgt is neither in VMCOREINFO nor in /proc/kallsyms")
        pa = target.pseudo_of(va)
        mfn = self.mfn(pa >> PAGE_SHIFT) if pa is not None else None
        if mfn is None:
            raise XenscopeError(f"init_top_pgt ({va:#x}) has no machine frame in the P2M")
        return mfn << PAGE_SHIFT, "init_top_pgt's pfn (/proc/kcore's text segment) through the kernel's P2M"


def _u64(target, va):
    return int.from_bytes(target.read_kcore_virt(va, 8), "little")
