"""Where a PV domain's P2M, the M2P, max_mfn and the frames' owners come from, for the P2M
commands and ``xenscope check`` (reference §6.1, §4.4).

On a Xen host dump (Xen kdump vmcore, QEMU dump of a Xen host) the domain's P2M is found by its
``shared_info`` page, as Xen's toolstack finds it (:mod:`.shared_info`: no guest symbols), or, when
the options say (``--kernel-syms``, ``--p2m-va``), it is the Linux kernel's linear list
(``xen_p2m_addr``) read through the domain's own page tables; M2P, ``max_page`` and page owners
come from Xen. Without ``--domain`` (nor any option naming one guest's list), ``p2m-check`` checks
every PV domain (:func:`check_every_domain`). On an xl dump-core file (target
``facts["format"] == "xc_core"``) the P2M is the guest's own list, found by the dump's
``.xen_shared_info`` (or, with kernel symbols, by them), else the dump's ``.xen_p2m``; the M2P is
Xen's when a host dump is given (``host``), else the inverse of ``.xen_p2m`` (the frames the dump
holds; checking ``.xen_p2m`` against its own inverse finds only duplicates, flags and holes).
"""

from dataclasses import dataclass, fields
from typing import Optional

from ..errors import XenscopeError
from .host import open_host


@dataclass
class P2MOptions:
    """Where to look (each None when not given): the P2M commands' options."""
    domain: Optional[int] = None            # None: every PV domain (p2m-check on a host), else d0
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
        self.domain = None
        self.first_pfn = 0
        self.partial = False
        self.size = None
        self.max_mfn = None
        self.placeholders = None                # [first, end) pfn ranges of shared placeholder pages
        self.why = {}
        self.xen = None
        self.access = None                      # the host's ForeignAccess, once read
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


class HostContext:
    """What every domain of one Xen host dump shares: the host, its frame table's owners and columns,
    the M2P reader, the shared_info pages and the foreign-access facts (each read once)."""

    def __init__(self, target, opts, host=None):
        from . import p2m as P
        if opts.host:
            raise XenscopeError("--host is for xl dump-core files: this dump is itself the host's")
        try:
            self.host = host or open_host(target, version=opts.xen, syms=opts.xen_syms, cpu=opts.cpu)
        except XenscopeError as e:
            raise XenscopeError(f"needs a Xen host dump or an xl dump-core file; as a Xen host: {e}") from None
        self.owners = self.xenheap = self.cols = None
        self.owners_error = None
        try:
            self.owners, self.xenheap, self.cols = P.owners_from_host(self.host)
        except XenscopeError as e:
            self.owners_error = str(e)
        self.m2p = P.m2p_reader(self.host)
        self._pages = self._access = None

    def shared_info(self):
        """The :class:`~.shared_info.SharedInfoPages` of the host (needs the frame table)."""
        if self._pages is None:
            from .shared_info import SharedInfoPages
            if self.cols is None:
                raise XenscopeError(f"the frame table is needed to find the PV domains and their shared_info: "
                                    f"{self.owners_error}")
            self._pages = SharedInfoPages(self.host, self.cols)
        return self._pages

    def access(self):
        if self._access is None:
            from .grants import read_foreign_access
            self._access = read_foreign_access(self.host)
        return self._access


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


def _guest_paging(target, opts, src, cols, domid):
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
        if cpu_cr3 is not None and owner_of(src.owners, cpu_cr3 >> 12) == src.me \
                and _maps_kernel_half(target, cpu_cr3):
            cr3, why = cpu_cr3, f"CPU {opts.cpu}'s CR3 (an L4 of d{domid})"
        elif cols is not None:
            l4 = np.flatnonzero(cols["present"] & cols["pinned"] & (cols["domain"] == np.uint64(src.me))
                                & (cols["type"] == TYPES.index("l4")))
            kernel = [int(m) << 12 for m in cols["mfn"][l4].tolist() if _maps_kernel_half(target, int(m) << 12)]
            if kernel:
                cr3 = kernel[0]
                why = (f"d{domid}'s pinned L4 at mfn {cr3 >> 12:#x} (a kernel PGD: it maps the kernel image; "
                       f"{len(kernel)} of its {len(l4)} pinned L4(s) do)")
        if cr3 is None:
            raise XenscopeError(f"no page tables of d{domid} known: CPU {opts.cpu}'s CR3 is not one of "
                                "its L4s and it has no pinned L4: give --cr3")
    ctx = resolve(target, cr3=cr3, cpu=opts.cpu)
    src.why["cr3"] = f"{cr3:#x} ({why})"
    return ctx.paging


def _maps_kernel_half(target, cr3):
    """True when the L4 at machine address ``cr3`` maps the kernel image's gigabyte (L4[511] and its
    PDPT[510]: 0xffffffff80000000-0xffffffffbfffffff, where every x86_64 Linux links its text,
    KASLR or not). A 64-bit PV Linux's kernel PGD does; the user PGD Xen switches to in user mode
    (a CPU dumped in user mode has it in CR3) maps only the vsyscall page there (PDPT[511])."""
    import numpy as np
    try:
        l4 = np.frombuffer(target.read_table(cr3 & ~0xFFF), "<u8")
        if not l4[511] & 1:
            return False
        pdpt = np.frombuffer(target.read_table(int(l4[511]) & 0x000FFFFFFFFFF000), "<u8")
    except XenscopeError:
        return False
    return bool(pdpt[510] & 1)


def _take(src, got, first, count):
    """The window ``[first, first+count)`` (count None: all) of a :class:`~.p2m_list.ListRead`; pfns
    past its materialised entries (a shared tail) read INVALID."""
    import numpy as np
    from .p2m import INVALID_P2M_ENTRY
    if first >= got.length:
        raise XenscopeError(f"pfn {first:#x} is beyond the P2M list ({got.length:#x} entries)")
    src.size = got.length
    if count is None and first == 0:
        src.p2m, src.placeholders = got.entries, got.placeholders
    else:
        stop = got.length if count is None else min(got.length, first + count)
        window = np.full(stop - first, INVALID_P2M_ENTRY, np.uint64)
        have = got.entries[first:stop]
        window[:len(have)] = have
        src.p2m = window
    notes = got.notes + ([got.placeholder_text()] if got.placeholder_text() else [])
    if notes:
        src.why["list"] = "; ".join(notes)


def _p2m_window(target, paging, opts, src, first, count):
    """Read entries [first, first+count) of the list (count None: to the end) where the options say."""
    from . import p2m_list as L
    end = None
    if opts.p2m_va is not None:
        if opts.p2m_entries is None:
            raise XenscopeError("--p2m-va needs --p2m-entries N (the number of pfns in the list)")
        va, size, why = opts.p2m_va, opts.p2m_entries, "--p2m-va/--p2m-entries"
        src.partial = True
        src.why["partial"] = (f"--p2m-entries may be a prefix of the list: frames of the domain whose M2P pfn "
                              f"is >= {size:#x} are not judged")
    elif opts.kernel_syms:
        va, size = L.linux_p2m_location(target, paging, opts.kernel_syms)
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
            end = L.linux_p2m_end(target, paging, opts.kernel_syms)
            why += f", up to xen_p2m_last_pfn {end:#x}" if end is not None else ""
    else:
        raise XenscopeError("where is the guest's P2M list? give --kernel-syms System.map, "
                            "or --p2m-va VA --p2m-entries N")
    if size <= 0 or size > L.MAX_ENTRIES:
        raise XenscopeError(f"P2M size {size} out of range (1..{L.MAX_ENTRIES})")
    src.why["p2m"] = f"Linux P2M list at va {va:#x}, {size:#x} entries ({why})"
    if va & (L.PAGE - 1):
        if first >= size:
            raise XenscopeError(f"pfn {first:#x} is beyond the P2M list ({size:#x} entries)")
        src.size = size
        count = size - first if count is None else min(count, size - first)
        src.p2m = L.p2m_from_linux(target, paging, va + 8 * first, count)
    else:
        _take(src, L.read_linear(target, paging, va, size, end), first, count)


def _shared_info_window(target, ctx, d, src, first, count):
    """The domain's P2M by its shared_info (:mod:`.shared_info`)."""
    from .shared_info import read_p2m
    pages = ctx.shared_info()
    arch = pages.arch(d)
    got, why = read_p2m(target, arch, ctx.host.max_page)
    src.why["p2m"] = f"from shared_info: {why}"
    src.why["shared_info"] = pages.offset()[1]
    _take(src, got, first, count)


def find_sources(target, opts, first=0, count=None, ctx=None):
    """Resolve every input of a P2M command on ``target`` for one domain (``opts.domain``, 0 when
    None); ``ctx``: the host's :class:`HostContext` when the caller has one (see the module docstring)."""
    src = P2MSources()
    try:
        if _inside(target):
            target.own_p2m_sources(opts, src, first, count)
        elif target.facts.get("format") == "xc_core":
            _xc_core_sources(target, opts, src, first, count)
        else:
            ctx = ctx or HostContext(target, opts)
            h = ctx.host
            domid = 0 if opts.domain is None else opts.domain
            src.host, src.xen, src.domain = h, h.describe(), domid
            d = _domain(h, domid)
            src.me = d.pickled
            src.owners, src.xenheap = ctx.owners, ctx.xenheap
            src.why["owners"] = (f"Xen's frame table (d{domid} pages carry owner {d.pickled:#x}; its Xen heap "
                                 "pages, e.g. shared_info, are not expected in the P2M)" if ctx.owners is not None
                                 else f"unavailable ({ctx.owners_error}): owner checks skipped")
            if opts.p2m_va is not None or opts.kernel_syms:
                paging = _guest_paging(target, opts, src, ctx.cols, domid)
                _p2m_window(target, paging, opts, src, first, count)
            else:
                _shared_info_window(target, ctx, d, src, first, count)
            src.first_pfn = first
            src.m2p = ctx.m2p
            src.max_mfn = h.max_page
            src.why["m2p"] = f"Xen's M2P (max_page {h.max_page:#x})"
            src.access = ctx.access
    except BaseException:
        src.close()
        raise
    return src


def _xc_shared_info_list(target, src):
    """The guest's own P2M list found by the dump's ``.xen_shared_info`` (:mod:`.shared_info`), or None
    (no such section, no P2M published, or unreadable: then the dump's ``.xen_p2m`` is checked)."""
    from .shared_info import Arch, NoP2M, read_p2m
    if not target.facts.get("shared_info"):
        return None
    try:
        got, why = read_p2m(target, Arch.from_facts(target.facts, "the dump's .xen_shared_info"))
    except NoP2M:
        return None
    except XenscopeError as e:
        src.why["shared_info"] = f"the guest's own list is unreadable ({e}): the dump's .xen_p2m is checked"
        return None
    src.why["p2m"] = f"the guest's own P2M list from shared_info: {why}"
    src.placeholders = got.placeholders
    notes = got.notes + ([got.placeholder_text()] if got.placeholder_text() else [])
    if notes:
        src.why["list"] = "; ".join(notes)
    return got.entries


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
        src.why["p2m"] = f"the guest's own P2M list ({len(own):#x} entries) read through its page tables"
    else:
        own = _xc_shared_info_list(target, src)
    p2m = own if own is not None else full
    src.size = len(p2m)
    if first >= len(p2m):
        raise XenscopeError(f"pfn {first:#x} is beyond the P2M ({len(p2m):#x} entries)")
    src.p2m = p2m[first:None if count is None else first + count]
    if first or count is not None:
        src.placeholders = None
    src.first_pfn = first
    if own is None:
        src.why["p2m"] = f"the dump's .xen_p2m ({len(full):#x} entries)"
    if opts.host:
        from ..targets import open_dump
        ht = open_dump(opts.host)
        src._close.append(ht)
        h = open_host(ht, version=opts.xen, syms=opts.xen_syms, cpu=opts.cpu)
        src.host, src.xen = h, h.describe()
        domid = opts.domain if opts.domain is not None else target.facts.get("domid", 0)
        src.domain = domid
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

def _inside(target):
    """The name of the view when ``target`` is a guest seen from inside that reads its own P2M
    (``own_p2m_sources``: gdbsx, targets/gdbsx_p2m.py; a running PV domain's /proc/kcore,
    targets/kcore.py), else None."""
    return getattr(target, "own_p2m_view", None) if hasattr(target, "own_p2m_sources") else None


def every_domain(opts):
    """True when ``opts`` name no domain and nothing of one guest: ``p2m-check`` then checks every PV
    domain of a host dump."""
    return opts.domain is None and opts.p2m_va is None and not opts.kernel_syms and opts.cr3 is None \
        and opts.p2m_entries is None


def check_p2m(target, opts):
    """Check the domain's P2M (``opts``: :class:`P2MOptions`) against the M2P and the owners:
    the ``p2m-check`` command's JSON (README "p2m-check"); every PV domain's (:func:`check_every_domain`)
    on a host dump when :func:`every_domain`."""
    if target.facts.get("format") != "xc_core" and not _inside(target) and every_domain(opts):
        return check_every_domain(target, opts)
    ctx = None
    if target.facts.get("format") != "xc_core" and not _inside(target) and opts.domain is not None:
        ctx = HostContext(target, opts)
        translated = _translated(ctx.host, opts.domain, explicit=True)
        if translated is not None:
            return translated
    src = find_sources(target, opts, ctx=ctx)
    try:
        return _check_sources(target, src, opts)
    finally:
        src.close()


def _check_sources(target, src, opts):
    from . import p2m as P
    rep = P.check(src.p2m, src.m2p, src.max_mfn, owners=src.owners,
                  me=src.me if src.owners is not None else None, xenheap=src.xenheap, partial=src.partial,
                  placeholders=src.placeholders)
    res = rep.to_json()
    for f in res["findings"]["foreign"]:
        f["owner_id"], f["owner_name"] = src.owner_name(f["owner"])
    xc = target.facts.get("format") == "xc_core"
    inside = _inside(target)
    if xc and not opts.host:
        domain = target.facts.get("domid")
    elif inside:                    # gdbsx names its domain; a live dom0's kcore says it is dom0
        domain = src.domain if src.domain is not None else target.facts.get("domid")
    else:
        domain = src.domain
    res.update(domain=domain, sources=src.why, xen=src.xen, format="xc_core" if xc else inside or "xen-host")
    _allowed_foreign(res, src, res["domain"])
    return res


def _translated(host, domid, explicit=False):
    """The translated-domain check (:mod:`.p2m_hap`) of ``domid``, or None when it is a PV domain (or,
    unless ``explicit``, when its kind cannot be read)."""
    from . import hvm
    from .p2m_hap import check_translated
    dom = hvm.find_domain(host, domid)
    try:
        kind = hvm.kind(host, dom)
    except XenscopeError:
        if explicit:
            return None
        raise
    if not kind.translated:
        return None
    return check_translated(host, dom, hvm.domain_p2m(host, dom, kind), kind)


def check_every_domain(target, opts, host=None):
    """Every PV domain of a Xen host dump, each P2M found by its shared_info (``opts.kernel_syms`` /
    ``p2m_va`` / ``cr3`` / ``p2m_entries``, when given, still say where dom0's is):
    ``{format, xen, domains: [one domain's result], skipped: [{domain, why}], errors: [{domain, error}],
    counts, problems, sources}``; ``host``: the :class:`~.host.XenHost` when the caller has one."""
    from dataclasses import replace
    from .p2m import CLASSES
    from .shared_info import NoP2M
    ctx = HostContext(target, opts, host)
    pages = ctx.shared_info()
    out = {"format": "xen-host", "xen": ctx.host.describe(), "domains": [], "skipped": [], "errors": []}
    out["translated"] = []
    for d in pages.domains:
        if pages.widths.get(d.id) is None:
            try:
                one = _translated(ctx.host, d.id)
            except XenscopeError as e:
                one, why = None, f"; its P2M tables not read: {e}"
            else:
                why = ""
            if one is not None:
                out["translated"].append(one)
                continue
            out["skipped"].append({"domain": d.id, "why": "not a PV domain (it owns no validated page-table "
                                                         "frames): its P2M is Xen's, not a list to check" + why})
            continue
        guest = opts if d.id == 0 else replace(opts, kernel_syms=None, p2m_va=None, p2m_entries=None, cr3=None)
        try:
            src = find_sources(target, replace(guest, domain=d.id), ctx=ctx)
        except NoP2M as e:
            out["skipped"].append({"domain": d.id, "why": str(e)})
            continue
        except XenscopeError as e:
            out["errors"].append({"domain": d.id, "error": str(e)})
            continue
        try:
            out["domains"].append(_check_sources(target, src, opts))
        finally:
            src.close()
    if not out["domains"] and not out["errors"] and not out["translated"]:
        raise XenscopeError("no PV domain in the dump to check: " +
                            ("; ".join(f"d{s['domain']}: {s['why']}" for s in out["skipped"]) or "no domain found"))
    out["counts"] = {c: sum(r["counts"][c] for r in out["domains"]) for c in CLASSES}
    out["problems"] = sum(r["problems"] for r in out["domains"] + out["translated"])
    out["sources"] = {"shared_info": pages.offset()[1] if out["domains"] else None,
                      "pv": "PV domains and their word size from the page-table frames each owns in Xen's "
                            "frame table (" + ", ".join(f"d{i}: {w * 8 if w else 'not PV'}"
                                                        for i, w in sorted(pages.widths.items())) + ")"}
    return out


def _allowed_foreign(res, src, mapper):
    """Foreign entries a grant of the owner or the domain's own privilege allows move from
    ``foreign`` to the informational ``foreign-allowed``, each with its ``basis`` and why. Only
    entries marked FOREIGN_FRAME_BIT qualify: Linux marks every foreign mapping it makes
    (``set_foreign_p2m_mapping()`` stores ``FOREIGN_FRAME(mfn)``, arch/x86/xen/p2m.c), so an unmarked
    entry naming another domain's frame is a corruption whoever the domain is."""
    if src.host is None or not res["findings"]["foreign"]:
        return
    if getattr(src, "access", None) is not None:
        access = src.access()
    else:
        from .grants import read_foreign_access
        access = read_foreign_access(src.host)
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
