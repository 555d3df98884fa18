"""P2M commands: ``p2m-check`` (a PV domain's P2M against Xen's M2P and frame owners) and ``p2m``.

Targets: a Xen host dump (Xen kdump vmcore, QEMU dump of a Xen host): the domain's P2M is its
Linux kernel's linear list (``xen_p2m_addr``, reference §6.1) read through the domain's own page
tables; M2P, ``max_page`` and page owners come from Xen. Or an xl dump-core file (target
``facts["format"] == "xc_core"``): the P2M is the dump's ``.xen_p2m``; the M2P is Xen's when a host
dump is given (``--host``), else the P2M's own inverse (then only duplicates, flags and holes can
be found).
"""

from ..errors import XenscopeError
from . import address, command, number
from .xen import _xen_args, host_of

CHECK_LIMIT = 20


def _source_args(p, check=True):
    p.add_argument("--domain", type=number, default=0, help="domain id (default 0)")
    g = p.add_argument_group("where the guest's P2M list is (Xen host dumps)")
    g.add_argument("--kernel-syms", metavar="System.map",
                   help="the guest kernel's System.map: xen_p2m_addr / xen_p2m_size (or, without them, "
                        "xen_start_info's start_info.mfn_list / nr_pages) are read from its memory")
    g.add_argument("--p2m-va", type=address, metavar="VA", help="guest virtual address of the P2M list")
    g.add_argument("--p2m-entries", type=number, metavar="N",
                   help="number of entries (pfns) in the list; with --kernel-syms: read only the first N")
    g.add_argument("--cr3", type=address,
                   help="the guest's CR3 (default: the dump CPU's when it is the domain's, else one of "
                        "the domain's pinned L4 tables)")
    p.add_argument("--host", metavar="DUMP", help="xl dump-core targets: a Xen host dump giving the M2P and owners")
    _xen_args(p)


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------

class _Sources:
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
        from ..xen.p2m import UNKNOWN_OWNER
        if raw == UNKNOWN_OWNER:
            return None, "unknown (page_info not in the dump)"
        d = self.host.owner(raw)
        return (d.id, d.name) if d is not None else (None, f"{raw:#x}")


def _dense_p2m(arr):
    """An xc_core ``p2m_array()``: dense by pfn, or (pfn, mfn) pairs."""
    import numpy as np
    from ..xen.p2m import INVALID_P2M_ENTRY
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


def _guest_paging(target, h, args, src, cols):
    """The domain's page tables: --cr3, the CPU's CR3 when its L4 is the domain's, a pinned L4."""
    import numpy as np
    from ..context import resolve
    from ..xen.frames import TYPES
    if args.cr3 is not None:
        cr3, why = args.cr3, "--cr3 option"
    else:
        cr3 = why = None
        cpu_cr3 = target.cpu(args.cpu).regs.get("cr3")
        if cpu_cr3 is not None and src.owners is not None and (cpu_cr3 >> 12) < len(src.owners) \
                and int(src.owners[cpu_cr3 >> 12]) == src.me:
            cr3, why = cpu_cr3, f"CPU {args.cpu}'s CR3 (an L4 of d{args.domain})"
        elif cols is not None:
            l4 = np.flatnonzero(cols["present"] & cols["pinned"] & (cols["domain"] == np.uint64(src.me))
                                & (cols["type"] == TYPES.index("l4")))
            if len(l4):
                cr3 = int(cols["mfn"][l4[0]]) << 12
                why = (f"d{args.domain}'s pinned L4 at mfn {cr3 >> 12:#x} (every Linux PGD maps the kernel "
                       f"half; {len(l4)} pinned L4(s))")
        if cr3 is None:
            raise XenscopeError(f"no page tables of d{args.domain} known: CPU {args.cpu}'s CR3 is not one of "
                                "its L4s and it has no pinned L4: give --cr3")
    ctx = resolve(target, cr3=cr3, cpu=args.cpu)
    src.why["cr3"] = f"{cr3:#x} ({why})"
    return ctx.paging


def _p2m_window(target, paging, args, src, first, count):
    """Read entries [first, first+count) of the list (count None: to the end)."""
    from ..xen import p2m as P
    if args.p2m_va is not None:
        if args.p2m_entries is None:
            raise XenscopeError("--p2m-va needs --p2m-entries N (the number of pfns in the list)")
        va, size, why = args.p2m_va, args.p2m_entries, "--p2m-va/--p2m-entries"
        src.partial = True
        src.why["partial"] = (f"--p2m-entries may be a prefix of the list: frames of the domain whose M2P pfn "
                              f"is >= {size:#x} are not judged")
    elif args.kernel_syms:
        va, size = P.linux_p2m_location(target, paging, args.kernel_syms)
        why = f"xen_p2m_addr/xen_p2m_size of {args.kernel_syms}"
        if args.p2m_entries is not None and args.p2m_entries < size:
            # Linux sizes the list for the largest possible guest: read only the first N entries
            # (over a slow live stub the whole list is far too many pages)
            size = args.p2m_entries
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


def sources(target, args, first=0, count=None):
    """Resolve every input of a P2M command on ``target`` (see the module docstring)."""
    from ..xen import p2m as P
    src = _Sources()
    try:
        if target.facts.get("format") == "xc_core":
            _xc_core_sources(target, args, src, first, count)
        else:
            if args.host:
                raise XenscopeError("--host is for xl dump-core files: this dump is itself the host's")
            try:
                h = host_of(target, args)
            except XenscopeError as e:
                raise XenscopeError(f"needs a Xen host dump or an xl dump-core file; as a Xen host: {e}") from None
            src.host, src.xen = h, h.describe()
            d = _domain(h, args.domain)
            src.me = d.pickled
            cols = None
            try:
                src.owners, src.xenheap, cols = P.owners_from_host(h)
                src.why["owners"] = (f"Xen's frame table (d{args.domain} pages carry owner {d.pickled:#x}; "
                                     "its Xen heap pages, e.g. shared_info, are not expected in the P2M)")
            except XenscopeError as e:
                src.why["owners"] = f"unavailable ({e}): owner checks skipped"
            paging = _guest_paging(target, h, args, src, cols)
            src.p2m = _p2m_window(target, paging, args, src, first, count)
            src.first_pfn = first
            src.m2p = P.m2p_reader(h)
            src.max_mfn = h.max_page
            src.why["m2p"] = f"Xen's M2P (max_page {h.max_page:#x})"
    except BaseException:
        src.close()
        raise
    return src


def _xc_core_sources(target, args, src, first, count):
    import numpy as np
    from ..xen import p2m as P
    if not hasattr(target, "p2m_array"):
        raise XenscopeError("this xl dump-core target has no P2M (.xen_p2m) to check")
    full = _dense_p2m(target.p2m_array())
    own = None
    if args.kernel_syms or args.p2m_va is not None:
        # the guest's own P2M list, read through its own page tables in the dump, is checked
        # against the frames the dump says it held (.xen_p2m inverted, or Xen's M2P with --host)
        from ..context import resolve
        paging = resolve(target, cr3=args.cr3, cpu=args.cpu).paging
        if args.p2m_va is not None:
            if args.p2m_entries is None:
                raise XenscopeError("--p2m-va needs --p2m-entries N (the number of pfns in the list)")
            va, size = args.p2m_va, args.p2m_entries
        else:
            va, size = P.linux_p2m_location(target, paging, args.kernel_syms)
        own = P.p2m_from_linux(target, paging, va, size)
    p2m = own if own is not None else full
    src.size = len(p2m)
    if first >= len(p2m):
        raise XenscopeError(f"pfn {first:#x} is beyond the P2M ({len(p2m):#x} entries)")
    src.p2m = p2m[first:None if count is None else first + count]
    src.first_pfn = first
    src.why["p2m"] = (f"the guest's own P2M list ({len(p2m):#x} entries) read through its page tables"
                      if own is not None else f"the dump's .xen_p2m ({len(full):#x} entries)")
    if args.host:
        from ..targets import open_dump
        ht = open_dump(args.host)
        src._close.append(ht)
        h = host_of(ht, args)
        src.host, src.xen = h, h.describe()
        domid = args.domain if args.domain is not None else target.facts.get("domid", 0)
        src.me = _domain(h, domid).pickled
        try:
            src.owners, src.xenheap, _ = P.owners_from_host(h)
            src.why["owners"] = f"Xen's frame table of {args.host}"
        except XenscopeError as e:
            src.why["owners"] = f"unavailable ({e}): owner checks skipped"
        src.m2p = P.m2p_reader(h)
        src.max_mfn = h.max_page
        src.why["m2p"] = f"Xen's M2P from {args.host} (max_page {h.max_page:#x})"
    else:
        src.m2p = P.inverse_m2p(full)
        named = full[(full >> np.uint64(62)) == 0]
        mx = target.facts.get("max_mfn")
        src.max_mfn = int(mx) if mx else (int(named.max()) + 1 if len(named) else 0)
        src.why["m2p"] = ("the inverse of the dump's .xen_p2m (the frames the guest held)" if own is not None else
                          "the P2M's own inverse (no --host: mismatches cannot be seen, only duplicates, "
                          "flags and holes)")


# ---------------------------------------------------------------------------------------------
# p2m-check
# ---------------------------------------------------------------------------------------------

@command("p2m-check", "Cross-check a PV domain's P2M with Xen's M2P and page owners (exit 1 on findings).")
def p2m_check(p):
    _source_args(p)
    p.add_argument("--limit", type=number, default=CHECK_LIMIT,
                   help=f"findings printed per class (default {CHECK_LIMIT}; 0: all)")


def _check_run(target, args):
    from ..xen import p2m as P
    src = sources(target, args)
    try:
        rep = P.check(src.p2m, src.m2p, src.max_mfn, owners=src.owners,
                      me=src.me if src.owners is not None else None, xenheap=src.xenheap, partial=src.partial)
        res = rep.to_json()
        for f in res["findings"]["foreign"]:
            f["owner_id"], f["owner_name"] = src.owner_name(f["owner"])
        xc = target.facts.get("format") == "xc_core"
        res.update(domain=args.domain if not xc or args.host else target.facts.get("domid"),
                   sources=src.why, xen=src.xen, format="xc_core" if xc else "xen-host")
        return res
    finally:
        src.close()


def _pfn(v):
    return "-" if v is None else f"{v:#x}"


def _finding_line(cls, f):
    if cls == "mismatch":
        return f"pfn {f['pfn']:#x} -> mfn {f['mfn']:#x} -> M2P pfn {f['m2p_text']}"
    if cls == "beyond-max":
        return f"pfn {f['pfn']:#x} -> mfn {f['mfn']:#x} >= max_mfn {f['max_mfn']:#x}"
    if cls == "duplicate":
        return (f"pfn {f['pfn']:#x} -> mfn {f['mfn']:#x}, also mapped by pfn(s) "
                f"{', '.join(hex(p) for p in f['pfns'] if p != f['pfn'])} (M2P says {_pfn(f['m2p'])})")
    if cls == "foreign":
        own = f.get("owner_name") or ("?" if f["owner"] is None else f"{f['owner']:#x}")
        bit = "FOREIGN_FRAME_BIT set" if f["foreign_bit"] else "no FOREIGN_FRAME_BIT"
        return f"pfn {f['pfn']:#x} -> mfn {f['mfn']:#x}: owned by {own} ({bit}; M2P says pfn {_pfn(f['m2p'])})"
    if cls == "identity":
        return f"pfn {f['pfn']:#x}: identity entry {f['entry']:#x}"
    if cls == "invalid-in-range":
        return f"pfn {f['pfn']:#x}: INVALID below {f['range_end']:#x}"
    if cls == "m2p-orphan":
        return (f"mfn {f['mfn']:#x} (owned by the domain): M2P says pfn {f['m2p_text']}, "
                f"P2M there holds {_pfn(f['p2m'])}")
    return str(f)


def _check_render(r, args):
    from ..xen.p2m import CLASSES, INFORMATIONAL
    lim = args.limit or None
    who = "the dumped guest's" if r["domain"] is None else f"d{r['domain']}"
    out = [f"{who} P2M of {r['pfns']:#x} pfns checked against the M2P (max_mfn {r['max_mfn']:#x})"]
    out += [f"  {k}: {v}" for k, v in r["sources"].items()]
    out.append("counts: " + ", ".join(f"{c} {r['counts'][c]}" for c in CLASSES))
    for c in CLASSES:
        n = r["counts"][c]
        if not n:
            continue
        out.append(f"{c}: {r['summary'][c]}")
        for f in r["findings"][c][:lim]:
            out.append("  " + _finding_line(c, f))
        if lim and n > lim:
            out.append(f"  ... {n - lim} more (use --limit 0)")
    info = sum(r["counts"][c] for c in INFORMATIONAL)
    out.append(f"{r['problems']} problem(s) found" if r["problems"]
               else "clean: P2M and M2P agree" + (f" ({info} informational entries)" if info else ""))
    return "\n".join(out)


def _check_status(r):
    return 1 if r["problems"] else 0


p2m_check.run, p2m_check.render, p2m_check.status = _check_run, _check_render, _check_status


# ---------------------------------------------------------------------------------------------
# p2m PFN
# ---------------------------------------------------------------------------------------------

@command("p2m", "A PV domain's P2M entry for a pfn: pfn -> mfn -> M2P back (and the frame's owner).")
def p2m_cmd(p):
    p.add_argument("pfn", type=address, help="guest pfn (hex)")
    p.add_argument("--count", type=number, default=1, help="this many pfns from PFN (default 1, at most 4096)")
    _source_args(p)


def _p2m_run(target, args):
    import numpy as np
    from ..xen import p2m as P
    if args.count < 1 or args.count > 4096:
        raise XenscopeError(f"--count {args.count} out of range (1..4096)")
    src = sources(target, args, first=args.pfn, count=args.count)
    try:
        e = np.asarray(src.p2m, np.uint64)
        mfn = e & np.uint64(P.MFN_MASK)
        back = P._lookup(src.m2p, np.where(mfn < np.uint64(src.max_mfn), mfn, np.uint64(0)),
                         P.INVALID_M2P_ENTRY).tolist()
        rows = []
        for i, (ent, m) in enumerate(zip(e.tolist(), mfn.tolist())):
            pfn = src.first_pfn + i
            row = {"pfn": pfn, "entry": ent, "mfn": None, "flags": [], "m2p": None, "m2p_text": None,
                   "owner": None, "owner_id": None, "owner_name": None, "verdict": None}
            if ent == P.INVALID_P2M_ENTRY:
                row["verdict"] = "invalid (no frame)"
                rows.append(row)
                continue
            if ent >> 63:
                row["flags"].append("foreign")
            if (ent >> 62) & 1:
                row["flags"].append("identity")
            row["mfn"] = m
            if "identity" in row["flags"] and "foreign" not in row["flags"]:
                row["verdict"] = "identity (1:1, not RAM)"
            elif m >= src.max_mfn:
                row["verdict"] = f"mfn beyond max_mfn {src.max_mfn:#x}"
            else:
                row["m2p"] = back[i]
                row["m2p_text"] = P.m2p_text(back[i])
                if src.owners is not None and m < len(src.owners):
                    row["owner"] = int(src.owners[m])
                    row["owner_id"], row["owner_name"] = src.owner_name(row["owner"])
                mine = row["owner"] is None or row["owner"] in (src.me, P.UNKNOWN_OWNER)
                if not mine:
                    row["verdict"] = f"foreign: owned by {row['owner_name']}"
                elif "foreign" in row["flags"]:
                    row["verdict"] = "foreign (FOREIGN_FRAME_BIT)"
                elif back[i] == pfn:
                    row["verdict"] = "ok (M2P maps it back)"
                else:
                    row["verdict"] = f"mismatch: M2P says {P.m2p_text(back[i])}"
            rows.append(row)
        return {"domain": args.domain, "sources": src.why, "entries": rows}
    finally:
        src.close()


def _p2m_render(r, args):
    out = []
    for e in r["entries"]:
        s = f"pfn {e['pfn']:#x} -> entry {e['entry']:#018x}"
        if e["mfn"] is not None:
            s += f" (mfn {e['mfn']:#x}{', ' + ', '.join(e['flags']) if e['flags'] else ''})"
        if e["m2p_text"] is not None:
            s += f" -> M2P {e['m2p_text']}"
        if e["owner_name"]:
            s += f"; owner {e['owner_name']}"
        out.append(f"{s}: {e['verdict']}")
    return "\n".join(out)


p2m_cmd.run, p2m_cmd.render = _p2m_run, _p2m_render
