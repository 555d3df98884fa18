"""The P2M commands (``p2m``, ``p2m-check``) on Xen's gdbsx: the guest's own P2M list, checked
against its own inverse.

gdbsx reads guest-virtual memory only. The guest's P2M list (``xen_p2m_addr``, bounded by
``xen_p2m_last_pfn``: :meth:`GdbsxTarget.p2m_location`) is readable; Xen's M2P is not (its read-only
alias in L4 slot 256 is mapped with 2 MiB pages, and gdbsx's walk, ``dbg_pv_va2mfn()``, refuses PSE
entries), nor is Xen's frame table (owners). So the list is checked against its own inverse, as an
``xl dump-core`` without its host is: duplicates, Linux's flags (FOREIGN_FRAME_BIT, IDENTITY_FRAME_BIT)
and holes are found; a frame the M2P names differently (``mismatch``) or another domain's frame
(``foreign`` by owner) cannot be seen. The sources say so.
"""

from ..errors import XenscopeError

NO_HOST = ("--host: on gdbsx the guest's list is checked against its own inverse; for Xen's M2P and "
           "owners, run p2m-check on a host dump (--domain D) taken at the same pause")


def _window(entries, first, count, size):
    if first >= size:
        raise XenscopeError(f"pfn {first:#x} is beyond the P2M ({size:#x} entries)")
    return entries[first:None if count is None else first + count]


def _own_list(target, opts):
    """``(entries, where)``: the list at --p2m-va (--p2m-entries long) or the kernel's own."""
    import numpy as np
    if opts.p2m_va is None:
        va, size, source = target.p2m_location()
        return target.p2m_list(), f"{size:#x} entries at {va:#x}, {source}"
    if opts.p2m_entries is None:
        raise XenscopeError("--p2m-va needs --p2m-entries N (the number of pfns in the list)")
    raw = target.read_guest_virtual(opts.p2m_va, opts.p2m_entries * 8)
    return np.frombuffer(raw, "<u8"), f"{opts.p2m_entries:#x} entries at --p2m-va {opts.p2m_va:#x}"


def own_p2m_sources(target, opts, src, first, count):
    """Fill ``src`` (a :class:`~xenstructs.xen.p2m_sources.P2MSources`) from the guest's own list
    read over gdbsx (``target``: a :class:`~xenstructs.targets.gdbsx.GdbsxTarget`)."""
    import numpy as np
    from ..xen import p2m as P
    if opts.host:
        raise XenscopeError(NO_HOST)
    if opts.kernel_syms and not target.syms_path:
        target.set_kernel_syms(opts.kernel_syms)
    entries, where = _own_list(target, opts)
    src.size = len(entries)
    src.p2m = _window(entries, first, count, len(entries))
    src.first_pfn = first
    src.m2p = P.inverse_m2p(entries)
    named = entries[(entries >> np.uint64(62)) == 0]
    src.max_mfn = int(named.max()) + 1 if len(named) else 0
    src.why["p2m"] = f"the guest's own P2M list read over gdbsx ({where})"
    src.why["m2p"] = ("the P2M's own inverse: gdbsx cannot read Xen's M2P (its RO alias in L4 slot 256 is "
                      "mapped with 2 MiB pages, which gdbsx's walk refuses) nor its frame table, so mismatches "
                      "and other domains' frames cannot be seen, only duplicates, flags and holes")
    src.why["max_mfn"] = f"{src.max_mfn:#x}: the highest frame the list names + 1 (Xen's max_page is not readable)"
