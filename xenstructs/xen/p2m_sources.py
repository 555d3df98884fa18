"""Where a PV domain's P2M, the M2P, max_mfn and the frames' owners come from, for the P2M
commands and ``xenscope check`` (reference §6.1, §4.4).

On a Xen host dump (Xen kdump vmcore, QEMU dump of a Xen host) the domain's P2M is its Linux
kernel's linear list (``xen_p2m_addr``) read through the domain's own page tables; M2P,
``max_page`` and page owners come from Xen. On an xl dump-core file (target
``facts["format"] == "xc_core"``) the P2M is the dump's ``.xen_p2m`` (or the guest's own list, with
kernel symbols); the M2P is Xen's when a host dump is given (``host``), else the P2M's own inverse
(then only duplicates, flags and holes can be found).
"""

from dataclasses import dataclass, fields
from typing import Optional

from ..errors import XenscopeError
from .host import open_host


@dataclass
class P2MOptions:
    """Where to look (each None when not given): the P2M commands' options."""
    domain: Optional[int] = 0
    kernel_syms: Optional[object] = None    # System.map path (or a dict of symbols)
    p2m_va: Optional[int] = None
    p2m_entries: Optional[int] = None
    cr3: Optional[int] = None
    cpu: int = 0
    host: Optional[str] = None              # xl dump-core files: a Xen host dump for M2P and owners
    xen: Optional[str] = None
    xen_syms: Optional[str] = None

    @classmethod
    def from_namespace(cls, namespace):
        return cls(**{f.name: getattr(namespace, f.name) for f in fields(cls)})


class P2MSources:
    """The P2M (or a window of it), M2P, max_mfn and owners for one domain, with their origins."""

    def __init__(self):
        self.p2m = self.m2p = self.owners = self.me = self.host = self.xenheap = None
        self.first_pfn = 0
        self.partial = False
        self.size = None
        self.max_mfn = None
        self.why = {}
        self.xen = None
        self._close = []

    def close(self):
        for t in self._close:
            t.close()

    def owner_name(self, raw):
        if self.host is None or raw is None:
            return None, None
        if raw == 0:
            return None, "nobody (free or anonymous)"
        from .p2m import UNKNOWN_OWNER
        if raw == UNKNOWN_OWNER:
            return None, "unknown (page_info not in the dump)"
        d = self.host.owner(raw)
        return (d.id, d.name) if d is not None else (None, f"{raw:#x}")


def _dense_p2m(arr):
    """An xc_core ``p2m_array()``: dense by pfn, or (pfn, mfn) pairs."""
    import numpy as np
    from .p2m import INVALID_P2M_ENTRY
    a = np.asarray(arr)
    if a.dtype.names:
        names = a.dtype.names
        pfn, mfn = a[names[0]].astype(np.uint64), a[names[1]].astype(np.uint64)
    elif a.ndim == 2 and a.shape[1] == 2:
        pfn, mfn = a[:, 0].astype(np.uint64), a[:, 1].astype(np.uint64)
    else:
        return np.ascontiguousarray(a.astype(np.uint64).ravel())
    out = np.full(int(pfn.max()) + 1 if len(pfn) else 0, INVALID_P2M_ENTRY, np.uint64)
    out[pfn.astype(np.intp)] = mfn
    return out


def _domain(h, domid):
    for d in h.domains():
        if d.id == domid:
            return d
    known = ", ".join(f"d{d.id}" if d.id < 0x7FF0 else d.name for d in h.domains())
    raise XenscopeError(f"no domain {domid} in the dump (domains: {known or 'none found'})")


def _guest_paging(target, h, opts, src, cols):
    """The domain's page tables: --cr3, the CPU's CR3 when its L4 is the domain's, a pinned L4."""
    import numpy as np
    from ..context import resolve
    from .frames import TYPES
    from .p2m_owners import owner_of
    if opts.cr3 is not None:
        cr3, why = opts.cr3, "--cr3 option"
    else:
        cr3 = why = None
        cpu_cr3 = target.cpu(opts.cpu).regs.get("cr3")
        if cpu_cr3 is not None and owner_of(src.owners, cpu_cr3 >> 12) == src.me:
            cr3, why = cpu_cr3, f"CPU {opts.cpu}'s CR3 (an L4 of d{opts.domain})"
        elif cols is not None:
            l4 = np.flatnonzero(cols["present"] & cols["pinned"] & (cols["domain"] == np.uint64(src.me))
                                & (cols["type"] == TYPES.index("l4")))
            if len(l4):
                cr3 = int(cols["mfn"][l4[0]]) << 12
                why = (f"d{opts.domain}'s pinned L4 at mfn {cr3 >> 12:#x} (every Linux PGD maps the kernel "
                       f"half; {len(l4)} pinned L4(s))")
        if cr3 is None:
            raise XenscopeError(f"no page tables of d{opts.domain} known: CPU {opts.cpu}'s CR3 is not one of "
                                "its L4s and it has no pinned L4: give --cr3")
    ctx = resolve(target, cr3=cr3, cpu=opts.cpu)
    src.why["cr3"] = f"{cr3:#x} ({why})"
    return ctx.paging


def _p2m_window(target, paging, opts, src, first, count):
    """Read entries [first, first+count) of the list (count None: to the end)."""
    from . import p2m as P
    if opts.p2m_va is not None:
        if opts.p2m_entries is None:
            raise XenscopeError("--p2m-va needs --p2m-entries N (the number of pfns in the list)")
        va, size, why = opts.p2m_va, opts.p2m_entries, "--p2m-va/--p2m-entries"
        src.partial = True
        src.why["partial"] = (f"--p2m-entries may be a prefix of the list: frames of the domain whose M2P pfn "
                              f"is >= {size:#x} are not judged")
    elif opts.kernel_syms:
        va, size = P.linux_p2m_location(target, paging, opts.kernel_syms)
        why = f"xen_p2m_addr/xen_p2m_size of {opts.kernel_syms}"
        if opts.p2m_entries is not None and opts.p2m_entries < size:
            # Linux sizes the list for the largest possible guest: read only the first N entries
            # (over a slow live stub the whole list is far too many pages)
            size = opts.p2m_entries
            src.partial = True
            why += f", first {size:#x} entries (--p2m-entries)"
            src.why["partial"] = (f"--p2m-entries reads a prefix of the list: frames of the domain whose M2P "
                                  f"pfn is >= {size:#x} are not judged")
    else:
        raise XenscopeError("where is the guest's P2M list? give --kernel-syms System.map, "
                            "or --p2m-va VA --p2m-entries N")
    if size <= 0 or size > P.MAX_ENTRIES:
        raise XenscopeError(f"P2M size {size} out of range (1..{P.MAX_ENTRIES})")
    if first >= size:
        raise XenscopeError(f"pfn {first:#x} is beyond the P2M list ({size:#x} entries)")
    count = size - first if count is None else min(count, size - first)
    src.size = size
    src.why["p2m"] = f"Linux P2M list at va {va:#x}, {size:#x} entries ({why})"
    return P.p2m_from_linux(target, paging, va + 8 * first, count)


def find_sources(target, opts, first=0, count=None):
    """Resolve every input of a P2M command on ``target`` (see the module docstring)."""
    from . import p2m as P
    src = P2MSources()
    try:
        if hasattr(target, "own_p2m_sources"):     # a live guest from inside: gdbsx (targets/gdbsx_p2m.py)
            target.own_p2m_sources(opts, src, first, count)
        elif target.facts.get("format") == "xc_core":
            _xc_core_sources(target, opts, src, first, count)
        else:
            if opts.host:
                raise XenscopeError("--host is for xl dump-core files: this dump is itself the host's")
            try:
                h = open_host(target, version=opts.xen, syms=opts.xen_syms, cpu=opts.cpu)
            except XenscopeError as e:
                raise XenscopeError(f"needs a Xen host dump or an xl dump-core file; as a Xen host: {e}") from None
            src.host, src.xen = h, h.describe()
            d = _domain(h, opts.domain)
            src.me = d.pickled
            cols = None
            try:
                src.owners, src.xenheap, cols = P.owners_from_host(h)
                src.why["owners"] = (f"Xen's frame table (d{opts.domain} pages carry owner {d.pickled:#x}; "
                                     "its Xen heap pages, e.g. shared_info, are not expected in the P2M)")
            except XenscopeError as e:
                src.why["owners"] = f"unavailable ({e}): owner checks skipped"
            paging = _guest_paging(target, h, opts, src, cols)
            src.p2m = _p2m_window(target, paging, opts, src, first, count)
            src.first_pfn = first
            src.m2p = P.m2p_reader(h)
            src.max_mfn = h.max_page
            src.why["m2p"] = f"Xen's M2P (max_page {h.max_page:#x})"
    except BaseException:
        src.close()
        raise
    return src


def _xc_core_sources(target, opts, src, first, count):
    import numpy as np
    from . import p2m as P
    if not hasattr(target, "p2m_array"):
        raise XenscopeError("this xl dump-core target has no P2M (.xen_p2m) to check")
    full = _dense_p2m(target.p2m_array())
    own = None
    if opts.kernel_syms or opts.p2m_va is not None:
        # the guest's own P2M list, read through its own page tables in the dump, is checked
        # against the frames the dump says it held (.xen_p2m inverted, or Xen's M2P with --host)
        from ..context import resolve
        paging = resolve(target, cr3=opts.cr3, cpu=opts.cpu).paging
        if opts.p2m_va is not None:
            if opts.p2m_entries is None:
                raise XenscopeError("--p2m-va needs --p2m-entries N (the number of pfns in the list)")
            va, size = opts.p2m_va, opts.p2m_entries
        else:
            va, size = P.linux_p2m_location(target, paging, opts.kernel_syms)
        own = P.p2m_from_linux(target, paging, va, size)
    p2m = own if own is not None else full
    src.size = len(p2m)
    if first >= len(p2m):
        raise XenscopeError(f"pfn {first:#x} is beyond the P2M ({len(p2m):#x} entries)")
    src.p2m = p2m[first:None if count is None else first + count]
    src.first_pfn = first
    src.why["p2m"] = (f"the guest's own P2M list ({len(p2m):#x} entries) read through its page tables"
                      if own is not None else f"the dump's .xen_p2m ({len(full):#x} entries)")
    if opts.host:
        from ..targets import open_dump
        ht = open_dump(opts.host)
        src._close.append(ht)
        h = open_host(ht, version=opts.xen, syms=opts.xen_syms, cpu=opts.cpu)
        src.host, src.xen = h, h.describe()
        domid = opts.domain if opts.domain is not None else target.facts.get("domid", 0)
        src.me = _domain(h, domid).pickled
        try:
            src.owners, src.xenheap, _ = P.owners_from_host(h)
            src.why["owners"] = f"Xen's frame table of {opts.host}"
        except XenscopeError as e:
            src.why["owners"] = f"unavailable ({e}): owner checks skipped"
        src.m2p = P.m2p_reader(h)
        src.max_mfn = h.max_page
        src.why["m2p"] = f"Xen's M2P from {opts.host} (max_page {h.max_page:#x})"
    else:
        src.m2p = P.inverse_m2p(full)
        named = full[(full >> np.uint64(62)) == 0]
        mx = target.facts.get("max_mfn")
        src.max_mfn = int(mx) if mx else (int(named.max()) + 1 if len(named) else 0)
        src.why["m2p"] = ("the inverse of the dump's .xen_p2m (the frames the guest held)" if own is not None else
                          "the P2M's own inverse (no --host: mismatches cannot be seen, only duplicates, "
                          "flags and holes)")


# ---------------------------------------------------------------------------------------------

def check_p2m(target, opts):
    """Check the domain's P2M (``opts``: :class:`P2MOptions`) against the M2P and the owners:
    the ``p2m-check`` command's JSON (README "p2m-check")."""
    from . import p2m as P
    src = find_sources(target, opts)
    try:
        rep = P.check(src.p2m, src.m2p, src.max_mfn, owners=src.owners,
                      me=src.me if src.owners is not None else None, xenheap=src.xenheap, partial=src.partial)
        res = rep.to_json()
        for f in res["findings"]["foreign"]:
            f["owner_id"], f["owner_name"] = src.owner_name(f["owner"])
        xc = target.facts.get("format") == "xc_core"
        own = hasattr(target, "own_p2m_sources")
        res.update(domain=opts.domain if not (xc or own) or opts.host else target.facts.get("domid"),
                   sources=src.why, xen=src.xen, format="xc_core" if xc else "gdbsx" if own else "xen-host")
        _allowed_foreign(res, src, opts)
        return res
    finally:
        src.close()


def _allowed_foreign(res, src, opts):
    """Foreign entries a grant of the owner or the domain's own privilege allows move from
    ``foreign`` to the informational ``foreign-allowed``, each with its ``basis`` and why. Only
    entries marked FOREIGN_FRAME_BIT qualify: Linux marks every foreign mapping it makes
    (``set_foreign_p2m_mapping()`` stores ``FOREIGN_FRAME(mfn)``, arch/x86/xen/p2m.c), so an unmarked
    entry naming another domain's frame is a corruption whoever the domain is."""
    if src.host is None or not res["findings"]["foreign"]:
        return
    from .grants import read_foreign_access
    access = read_foreign_access(src.host)
    mapper = opts.domain
    kept, allowed = [], []
    for f in res["findings"]["foreign"]:
        if not f["foreign_bit"]:
            kept.append(f)
            continue
        basis, why = access.judge(mapper, f["mfn"], f.get("owner_id"), writable=False)
        f["basis"], f["why"] = basis, why
        (allowed if basis else kept).append(f)
    res["findings"]["foreign"], res["findings"]["foreign-allowed"] = kept, allowed
    res["counts"]["foreign"], res["counts"]["foreign-allowed"] = len(kept), len(allowed)
    res["problems"] -= len(allowed)
    marked = sum(f["foreign_bit"] for f in kept)
    res["summary"]["foreign"] = (f"{len(kept)} entr(y/ies) name frames of another domain without a grant or "
                                 f"privilege ({marked} marked FOREIGN_FRAME_BIT, {len(kept) - marked} without it)")
    res["summary"]["foreign-allowed"] = (f"{len(allowed)} entr(y/ies) name another domain's frame that a grant or "
                                         "the domain's privilege allows (informational)")
    res["sources"]["foreign access"] = "; ".join(access.notes) or "grants and privileges read from the dump"


def _pfn(v):
    return "-" if v is None else f"{v:#x}"


def finding_text(cls, f):
    """One line for a finding ``f`` of class ``cls`` (as ``p2m-check`` prints it)."""
    if cls == "mismatch":
        return f"pfn {f['pfn']:#x} -> mfn {f['mfn']:#x} -> M2P pfn {f['m2p_text']}"
    if cls == "beyond-max":
        return f"pfn {f['pfn']:#x} -> mfn {f['mfn']:#x} >= max_mfn {f['max_mfn']:#x}"
    if cls == "duplicate":
        return (f"pfn {f['pfn']:#x} -> mfn {f['mfn']:#x}, also mapped by pfn(s) "
                f"{', '.join(hex(p) for p in f['pfns'] if p != f['pfn'])} (M2P says {_pfn(f['m2p'])})")
    if cls in ("foreign", "foreign-allowed"):
        own = f.get("owner_name") or ("?" if f["owner"] is None else f"{f['owner']:#x}")
        bit = "FOREIGN_FRAME_BIT set" if f["foreign_bit"] else "no FOREIGN_FRAME_BIT"
        text = f"pfn {f['pfn']:#x} -> mfn {f['mfn']:#x}: owned by {own} ({bit}; M2P says pfn {_pfn(f['m2p'])})"
        return text + (f": {f['why']}" if f.get("why") else "")
    if cls == "identity":
        return f"pfn {f['pfn']:#x}: identity entry {f['entry']:#x}"
    if cls == "invalid-in-range":
        return f"pfn {f['pfn']:#x}: INVALID below {f['range_end']:#x}"
    if cls == "m2p-orphan":
        return (f"mfn {f['mfn']:#x} (owned by the domain): M2P says pfn {f['m2p_text']}, "
                f"P2M there holds {_pfn(f['p2m'])}")
    return str(f)
