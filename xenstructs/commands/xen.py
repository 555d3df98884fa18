"""Xen host commands: page, frames, domains, m2p (a hypervisor dump, or a QEMU dump of a Xen host)."""

from ..errors import XenscopeError
from ..xen.frames import STATES, TYPES
from . import address, arg, command, group, number, tabulate, va_range

MAX_LIST = 1 << 20

XEN = group(
    "Xen (default: from the dump)",
    arg("--xen", metavar="VERSION", help="Xen release, e.g. 4.17.3 (decides the page_info layout)"),
    arg("--xen-syms", metavar="PATH", help="xen-syms (ELF), its .map, or a Xen profile (xenscope profile): "
                                           "default: the symbol table and build-id of Xen's own image"),
    arg("--cpu", type=number, default=0, help="CPU whose CR3 reaches Xen's page tables (default 0)"))


def host_of(target, args):
    from ..xen.host import open_host
    return open_host(target, version=args.xen, syms=args.xen_syms, cpu=args.cpu)


# ---------------------------------------------------------------------------------------------
# page
# ---------------------------------------------------------------------------------------------

def _page_render(r, args):
    x = r["xen"]
    out = [f"Xen {x['version'] or '?'}; layout {x['layout']} ({x['layout_why']})"]
    for pg in r["pages"]:
        if "error" in pg:
            out.append(f"mfn {pg['mfn']:#x}: {pg['error']}")
            continue
        owner = pg["owner_name"] or "-"
        m2p = "-" if pg["m2p"] is None else f"{pg['m2p']:#x}"
        out.append(f"mfn {pg['mfn']:#x} (pdx {pg['pdx']:#x}, page_info at {pg['page_info_va']:#x}) "
                   f"owner {owner}, M2P pfn {m2p}")
        out.append(f"  count_info {pg['count_info']:#018x}: {pg['count']['text']}")
        out.append(f"  type_info  {pg['type_info']:#018x}: {pg['type']['text']}")
    return "\n".join(out)


@command("page", "Decode the struct page_info of machine frames: type, counts, state, owner, M2P.",
         arguments=[arg("mfn", type=address, help="machine frame number (hex)"),
                    arg("--count", type=number, default=1, help="this many frames from MFN (default 1)"),
                    XEN],
         render=_page_render)
def page(target, args):
    if args.count < 1 or args.count > 4096:
        raise XenscopeError(f"--count {args.count} out of range (1..4096)")
    h = host_of(target, args)
    pages = []
    for mfn in range(args.mfn, args.mfn + args.count):
        try:
            pages.append(h.page(mfn))
        except XenscopeError as e:
            pages.append({"mfn": mfn, "error": str(e)})
    return {"xen": h.describe(), "pages": pages}


# ---------------------------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------------------------

def _frames_render(r, args):
    x = r["xen"]
    head = f"Xen {x['version'] or '?'}; layout {x['layout']} ({x['layout_why']}); max_page {r['max_page']:#x}"
    if "census" in r:
        c = r["census"]
        types = sorted({t for row in c["by_owner"].values() for t in row})
        rows = [[owner] + [row.get(t, 0) for t in types] + [sum(row.values())]
                for owner, row in sorted(c["by_owner"].items())]
        out = [head, tabulate(rows, headers=["owner"] + types + ["total"], tablefmt="simple"),
               "states: " + ", ".join(f"{k} {v}" for k, v in c["states"].items())
               + f"; frames {c['frames']}, frame-table pages missing from the dump: {c['missing']}"]
        if c["free_with_references_count"]:
            out.append(f"INCONSISTENT: {c['free_with_references_count']} free frame(s) still hold references, "
                       f"e.g. mfn {', '.join(hex(m) for m in c['free_with_references'][:8])}")
        else:
            out.append("no free frame holds a reference")
        return "\n".join(out)
    rows = [(f"{f['mfn']:#x}", f["owner"] or "-", f["state"], f["type"], f["type_count"],
             "P" if f["pinned"] else "", "V" if f["validated"] else "", f["count"],
             f"{f['count_info']:#018x}", f"{f['type_info']:#018x}") for f in r["frames"]]
    out = [head, tabulate(rows, headers=("mfn", "owner", "state", "type", "tcount", "pin", "val", "count",
                                         "count_info", "type_info"), tablefmt="simple", disable_numparse=True)]
    if r["matches"] > len(rows):
        out.append(f"... {r['matches'] - len(rows)} more (use --limit 0)")
    out.append(f"{r['matches']} frame(s) match")
    return "\n".join(out)


@command("frames", "Query the frame table (by type, owner, state, pinned) or count it (--summary).",
         arguments=[
             arg("--type", choices=TYPES, help="page type (frames in use)"),
             arg("--owner", help="owning domain: id (0, 0x7ff2) or name (d0, dom_xen, dom_io, dom_cow)"),
             arg("--pinned", action="store_true", help="only pinned page tables"),
             arg("--state", choices=STATES, help="allocation state"),
             arg("--summary", action="store_true", help="census: pages per owner x type, per state"),
             arg("--range", type=va_range, dest="mfn_range", metavar="A-B", default=(0, None),
                 help="only mfns in [A, B)"),
             arg("--limit", type=number, default=100, help="list at most N frames (default 100; 0: all)"),
             XEN],
         render=_frames_render)
def frames(target, args):
    import numpy as np
    from ..xen.frames import census, classify, owner_names, select
    h = host_of(target, args)
    start, end = args.mfn_range
    arr = h.frame_arrays(start, None if end is None else max(0, end - start))
    cols = classify(h, arr)
    res = {"xen": h.describe(), "max_page": h.max_page}
    if args.summary:
        res["census"] = census(h, cols)
        return res
    mask = select(h, cols, type=args.type, owner=args.owner, pinned=args.pinned, state=args.state)
    idx = np.nonzero(mask)[0]
    res["matches"] = int(len(idx))
    lim = args.limit or MAX_LIST
    names = owner_names(h, np.unique(cols["domain"][idx[:lim]]))
    rows = []
    for i in idx[:lim].tolist():
        free = cols["state"][i] == STATES.index("free")
        t = int(cols["type"][i])
        rows.append({"mfn": int(cols["mfn"][i]), "count_info": int(cols["count_info"][i]),
                     "type_info": int(cols["type_info"][i]),
                     "type": "unknown" if t < 0 else TYPES[t], "state": STATES[cols["state"][i]],
                     "type_count": int(cols["type_count"][i]), "count": int(cols["count"][i]),
                     "pinned": bool(cols["pinned"][i]), "validated": bool(cols["validated"][i]),
                     "owner": None if free else names[int(cols["domain"][i])]})
    res["frames"] = rows
    return res


# ---------------------------------------------------------------------------------------------
# domains
# ---------------------------------------------------------------------------------------------

def _vcpu_cells(d):
    """``v0 0x1234 v1 ...``: each vCPU's saved CR3 (a PV vCPU's is a machine address)."""
    cells = []
    for v in d.get("vcpus") or ():
        cells.append(f"v{v['vcpu']} {v['cr3']:#x}" if "cr3" in v else "?")
    return " ".join(cells) or "-"


def domain_kinds(h, domains, cols=None):
    """Each real domain's type, paging mode and vCPUs' saved registers (:mod:`~xenstructs.xen.hvm`)
    as ``{domain id: {...}}``; a domain whose structures cannot be read gets ``kind_error``
    (``cols``: the frame table's classified columns, when the caller has them)."""
    from ..xen import hvm
    out = {}
    widths = None
    for d in domains:
        if not 0 <= d.id < 0x7FF0:            # DOMID_FIRST_RESERVED: dom_xen/io/cow have no vCPUs
            continue
        try:
            if widths is None and cols is not None:
                widths = hvm.pv_widths(h, cols)
            k = hvm.kind(h, d, widths)
        except XenscopeError as e:
            out[d.id] = {"kind_error": str(e)}
            continue
        out[d.id] = {"type": k.type, "paging": k.paging, "vcpus": hvm.describe_vcpus(h, d, k)}
    return out


def _domains_render(r, args):
    def n(v):
        return "?" if v is None else v
    rows = [(d["id"], d["name"], f"{d['struct_va']:#x}", d["frames"], n(d["tot_pages"]), n(d["max_pages"]),
             d.get("type") or "-", d.get("paging") or "-", _vcpu_cells(d), d["source"]) for d in r["domains"]]
    out = [tabulate(rows, headers=("id", "name", "struct domain", "frames owned", "tot_pages", "max_pages",
                                   "type", "paging", "vCPU saved CR3", "found via"),
                    tablefmt="simple", disable_numparse=True)]
    out += [f"domain {d['id']}: type/paging unknown: {d['kind_error']}" for d in r["domains"] if d.get("kind_error")]
    errors = sorted({v["error"] for d in r["domains"] for v in d.get("vcpus") or () if "error" in v})
    out += [f"vCPU saved CR3 '?': {e}" for e in errors]
    if any(d["max_pages"] is None for d in r["domains"]):
        out.append("tot_pages/max_pages: '?' where struct domain offsets are unknown (give xen-syms with DWARF, "
                   "or a profile of this build: xenscope profile XEN-SYMS)")
    structs = r["xen"]["sources"].get("structs")
    if structs:
        out.append(f"struct offsets: {structs}")
    if r["frames_error"]:
        out.append(f"frame counts unavailable: {r['frames_error']}")
    return "\n".join(out)


@command("domains", "List domains (domain_list, dom_xen/dom_io/dom_cow) with the frames each owns.",
         arguments=[XEN], render=_domains_render)
def domains(target, args):
    import numpy as np
    from ..xen.frames import classify
    h = host_of(target, args)
    doms = h.domains()
    counts, cols = {}, None
    try:
        cols = classify(h, h.frame_arrays())
        inuse = cols["present"] & (cols["state"] != STATES.index("free"))
        raws, n = np.unique(cols["domain"][inuse], return_counts=True)
        counts = dict(zip(raws.tolist(), n.tolist()))
    except XenscopeError as e:
        counts_error = str(e)
    else:
        counts_error = None
    listed = {d.pickled for d in doms}
    for d in h.owner_domains({x.struct_va for x in doms}):
        if d.pickled not in listed:
            doms.append(d)
            listed.add(d.pickled)
    kinds = domain_kinds(h, doms, cols)
    out = [dict({"id": d.id, "name": d.name, "struct_va": d.struct_va, "source": d.source,
                 "frames": counts.get(d.pickled, 0), "tot_pages": d.extra.get("tot_pages"),
                 "max_pages": d.extra.get("max_pages"), "shared_info": d.extra.get("shared_info")},
                **kinds.get(d.id, {})) for d in doms]
    return {"xen": h.describe(), "domains": out, "frames_error": counts_error}


# ---------------------------------------------------------------------------------------------
# m2p
# ---------------------------------------------------------------------------------------------

def _m2p_render(r, args):
    return "\n".join(f"mfn {e['mfn']:#x} -> " + ("invalid/unmapped" if e["pfn"] is None else f"pfn {e['pfn']:#x}")
                     for e in r["entries"])


@command("m2p", "Machine-to-phys: the guest pfn of an mfn, or of a range (--range A-B): Xen's M2P in a host "
                "dump, the P2M's inverse in an xl dump-core file.",
         arguments=[arg("mfn", type=address, nargs="?", help="machine frame number (hex)"),
                    arg("--range", type=va_range, dest="mfn_range", metavar="A-B", help="mfns in [A, B)"),
                    XEN],
         render=_m2p_render)
def m2p(target, args):
    if args.mfn_range:
        a, b = args.mfn_range
    elif args.mfn is not None:
        a, b = args.mfn, args.mfn + 1
    else:
        raise XenscopeError("give an MFN or --range A-B")
    if b - a > MAX_LIST or b <= a:
        raise XenscopeError(f"range of {b - a} frames out of bounds (1..{MAX_LIST})")
    if target.facts.get("format") == "xc_core":
        # a guest's dump: its M2P view is the inverse of the dump's P2M
        rows = [{"mfn": m, "pfn": target.m2p(m)} for m in range(a, b)]
        return {"source": "inverse of the dump's .xen_p2m", "entries": rows}
    h = host_of(target, args)
    vals = h.m2p_array(a, b).tolist()
    rows = [{"mfn": m, "pfn": None if v >> 63 else v} for m, v in zip(range(a, b), vals)]
    return {"source": "Xen's M2P", "entries": rows}


# ---------------------------------------------------------------------------------------------
# pt-audit
# ---------------------------------------------------------------------------------------------

def _pt_audit_lines(f):
    path = " > ".join(f"{lv}[{slot}]" for lv, slot in f["path"])
    where = f" L4 {f['l4_mfn']:#x} {path}" if f["l4_mfn"] else (f" {path}" if path else "")
    where += f" (va {f['va']:#x})" if f.get("va") is not None else ""
    label = f"{f['kind']} ({f['basis']})" if f.get("basis") else f["kind"]
    out = [f"  {label}:{where}: {f['details']}"]
    if f["xen_would_say"]:
        out.append(f"    Xen would say: {f['xen_would_say']}")
    return out


def _pt_audit_access(access):
    """Who may map foreign frames, and how that was read: the lines above the domains."""
    priv = ", ".join(f"d{p['domain']} ({p['why']})" for p in access["privileged"]) or "none found"
    out = [f"privileged: {priv}"]
    out += [f"  {note}" for note in access["notes"]]
    return out


def _pt_audit_render(r, args):
    out = _pt_audit_access(r["foreign_access"]) if r.get("foreign_access") else []
    lim = args.limit or None
    for d in r["domains"]:
        roots = ", ".join(f"{x['level']} {x['mfn']:#x}" for x in d["roots"][:6]) or "none"
        info = ", ".join(f"{k} {v}" for k, v in sorted(d["informational_by_kind"].items()))
        out.append(f"d{d['domain']}: {d['tables']} table(s) audited from {len(d['roots'])} pinned root(s) ({roots}); "
                   + (", ".join(f"{k} {v}" for k, v in sorted(d["by_kind"].items())) or "no findings")
                   + (f"; informational: {info}" if info else ""))
        for f in d["findings"][:lim]:
            out += _pt_audit_lines(f)
        if lim and len(d["findings"]) > lim:
            out.append(f"  ... {len(d['findings']) - lim} more (use --limit 0)")
        for f in d["informational"][:lim]:
            out += _pt_audit_lines(f)
        if lim and len(d["informational"]) > lim:
            out.append(f"  ... {len(d['informational']) - lim} more informational (use --limit 0)")
    return "\n".join(out)


@command("pt-audit", "Audit a PV domain's page tables offline against the rules Xen enforces.",
         arguments=[
             arg("--domain", type=number, help="domain id (default: every domain with pinned tables)"),
             arg("--limit", type=number, default=50, help="findings printed per domain (default 50; 0: all)"),
             XEN],
         render=_pt_audit_render)
def pt_audit(target, args):
    from ..xen.ptaudit import audit
    h = host_of(target, args)
    out, access = [], None
    for a in audit(h, args.domain):
        kinds, info = {}, {}
        for f in a.findings:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
        for f in a.informational:
            info[f.label] = info.get(f.label, 0) + 1
        out.append({"domain": a.domain, "tables": a.tables, "roots": a.roots, "by_kind": kinds,
                    "findings": [f.as_dict() for f in a.findings], "informational_by_kind": info,
                    "informational": [f.as_dict() for f in a.informational]})
        access = a.access
    return {"xen": h.describe(), "foreign_access": access.as_dict() if access else None, "domains": out}




# ---------------------------------------------------------------------------------------------
# refs
# ---------------------------------------------------------------------------------------------

def _refs_render(r, args):
    x = r["xen"]
    out = [f"Xen {x['version'] or '?'}; {r['tables']} page-table frames searched"]
    for frame in r["frames"]:
        owner = frame["owner_name"] or "-"
        pfn = "-" if frame["m2p"] is None else f"{frame['m2p']:#x}"
        out.append(f"mfn {frame['mfn']:#x}: owner {owner}, M2P pfn {pfn}, {frame['type']['text']}; "
                   f"{frame['references']} reference(s)" + (" (and Xen's direct map)" if frame["direct_map"] else ""))
    rows = []
    for ref in r["references"][:args.limit or None]:
        where = "Xen" if ref["level"] is None else f"L{ref['level']} {ref['table_mfn']:#x}[{ref['slot']}]"
        rights = ("RW" if ref["writable"] else "RO") + (" US" if ref["user"] else "")
        vas = "linear slot" if ref["linear"] else ", ".join(f"{va:#x}" for va in ref["vas"]) or "-"
        rows.append((f"{ref['mfn']:#x}", ref["domain_name"], where, f"{ref['entry']:#018x}", rights, vas))
    if rows:
        out.append(tabulate(rows, headers=("mfn", "domain", "entry at", "value", "rights", "maps va"),
                            tablefmt="simple", disable_numparse=True))
    if args.limit and len(r["references"]) > args.limit:
        out.append(f"... {len(r['references']) - args.limit} more (use --limit 0)")
    if r["tables_not_in_dump"]:
        out.append(f"note: {len(r['tables_not_in_dump'])} page-table frame(s) are not in the dump (not searched)")
    return "\n".join(out)


@command("refs", "The reverse map: every page-table entry (any level, any domain, Xen's own) that names "
                 "these machine frames, with its rights and the address it maps.",
         arguments=[arg("mfn", type=address, nargs="+", help="machine frame number(s) (hex)"),
                    arg("--writable", action="store_true", help="only entries with RW set"),
                    arg("--limit", type=number, default=100, help="references listed (default 100; 0: all)"),
                    XEN],
         render=_refs_render)
def refs(target, args):
    from ..xen.refs import reverse_map
    if len(args.mfn) > MAX_LIST:
        raise XenscopeError(f"at most {MAX_LIST} mfns")
    h = host_of(target, args)
    found = reverse_map(h, args.mfn, writable_only=args.writable)
    frames = []
    for mfn in dict.fromkeys(args.mfn):
        try:
            page = h.page(mfn)
        except XenscopeError as e:
            page = {"owner_name": None, "m2p": None, "type": {"text": str(e)}}
        frames.append({"mfn": mfn, "owner_name": page["owner_name"], "m2p": page["m2p"], "type": page["type"],
                       "references": sum(ref["mfn"] == mfn for ref in found["references"]),
                       "direct_map": mfn in found["xen_direct_map"]})
    return {"xen": h.describe(), "frames": frames, **found}
