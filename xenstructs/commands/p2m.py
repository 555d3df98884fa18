"""P2M commands: ``p2m-check`` (a PV domain's P2M against Xen's M2P and frame owners) and ``p2m``.

Where the P2M, the M2P and the owners come from is :mod:`xenstructs.xen.p2m_sources`'s.
"""

from ..errors import XenscopeError
from . import address, arg, command, group, number
from .xen import XEN

CHECK_LIMIT = 20



def _sources(domain_help):
    return (
        arg("--domain", type=number, default=None, help=domain_help),
        group("where the guest's P2M list is (Xen host dumps; default: found by the domain's shared_info)",
              arg("--kernel-syms", metavar="System.map",
                  help="the guest kernel's System.map: xen_p2m_addr / xen_p2m_size (or, without them, "
                       "xen_start_info's start_info.mfn_list / nr_pages) are read from its memory"),
              arg("--p2m-va", type=address, metavar="VA", help="guest virtual address of the P2M list"),
              arg("--p2m-entries", type=number, metavar="N",
                  help="number of entries (pfns) in the list; with --kernel-syms: read only the first N"),
              arg("--cr3", type=address,
                  help="the guest's CR3 (default: the dump CPU's when it is the domain's, else one of "
                       "the domain's pinned L4 tables)")),
        arg("--host", metavar="DUMP", help="xl dump-core targets: a Xen host dump giving the M2P and owners"),
        XEN,
    )


CHECK_SOURCES = _sources("domain id (default on a Xen host dump: every PV domain; --kernel-syms, --p2m-va, "
                         "--p2m-entries or --cr3 without it: domain 0)")
ENTRY_SOURCES = _sources("domain id (default 0)")


# ---------------------------------------------------------------------------------------------
# p2m-check
# ---------------------------------------------------------------------------------------------

def _translated_render(r, args):
    """A translated (HVM/PVH) domain's check (:mod:`~xenstructs.xen.p2m_hap`)."""
    from ..xen.p2m_hap import CLASSES, INFORMATIONAL, finding_text
    lim = args.limit or None
    out = [f"d{r['domain']} ({r['type']}, {r['paging']}): P2M of {r['frames']:#x} frames ({r['p2m_format']}, "
           f"{r['tables']} tables) checked against the M2P and the frame owners"]
    out += [f"  {k}: {v}" for k, v in r["sources"].items()]
    out.append("counts: " + ", ".join(f"{c} {r['counts'][c]}" for c in CLASSES))
    out += [f"P2M table problem: {p}" for p in r["table_problems"]]
    for c in CLASSES:
        for f in r["findings"][c][:lim]:
            out.append(f"{c}{' (informational)' if c in INFORMATIONAL else ''}: {finding_text(c, f)}")
        if lim and r["counts"][c] > lim:
            out.append(f"  ... {r['counts'][c] - lim} more {c} (use --limit 0)")
    out.append(f"{r['problems']} problem(s) found" if r["problems"] else "clean: P2M, M2P and owners agree")
    return "\n".join(out)


def _check_render(r, args):
    if "domains" in r:
        return _every_render(r, args)
    if r.get("translated"):
        return _translated_render(r, args)
    from ..xen.p2m_sources import finding_text
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
            out.append("  " + finding_text(c, f))
        if lim and n > lim:
            out.append(f"  ... {n - lim} more (use --limit 0)")
    info = sum(r["counts"][c] for c in INFORMATIONAL)
    out.append(f"{r['problems']} problem(s) found" if r["problems"]
               else "clean: P2M and M2P agree" + (f" ({info} informational entries)" if info else ""))
    return "\n".join(out)


def _every_render(r, args):
    """Every PV domain's result (:func:`~xenstructs.xen.p2m_sources.check_every_domain`)."""
    out = [f"{len(r['domains'])} PV domain(s) checked, each P2M found by its shared_info unless an option says "
           f"otherwise ({r['sources']['pv']})"]
    for one in r["domains"]:
        out += ["", f"== d{one['domain']} ==", _check_render(one, args)]
    for one in r.get("translated") or ():
        out += ["", f"== d{one['domain']} ({one['type']}) ==", _translated_render(one, args)]
    for s in r["skipped"]:
        out += ["", f"== d{s['domain']}: skipped: {s['why']}"]
    for e in r["errors"]:
        out += ["", f"== d{e['domain']}: not checked: {e['error']}"]
    out += ["", f"{r['problems']} problem(s) in {len(r['domains']) + len(r.get('translated') or ())} domain(s)"
            + (f", {len(r['errors'])} domain(s) not checked" if r["errors"] else "")]
    return "\n".join(out)


@command("p2m-check", "Cross-check domains' P2Ms with Xen's M2P and page owners: PV guests' lists, HVM/PVH "
                      "guests' NPT/EPT tables (exit 1 on findings).",
         arguments=[CHECK_SOURCES, arg("--limit", type=number, default=CHECK_LIMIT,
                                 help=f"findings printed per class (default {CHECK_LIMIT}; 0: all)")],
         render=_check_render, status=lambda r: 1 if r["problems"] or r.get("errors") else 0)
def p2m_check(target, args):
    from ..xen.p2m_sources import P2MOptions, check_p2m
    return check_p2m(target, P2MOptions.from_namespace(args))


# ---------------------------------------------------------------------------------------------
# p2m PFN
# ---------------------------------------------------------------------------------------------

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


@command("p2m", "A PV domain's P2M entry for a pfn: pfn -> mfn -> M2P back (and the frame's owner).",
         arguments=[arg("pfn", type=address, help="guest pfn (hex)"),
                    arg("--count", type=number, default=1, help="this many pfns from PFN (default 1, at most 4096)"),
                    ENTRY_SOURCES],
         render=_p2m_render)
def p2m_cmd(target, args):
    import numpy as np
    from ..xen import p2m
    from ..xen.p2m_sources import P2MOptions, find_sources
    if args.count < 1 or args.count > 4096:
        raise XenscopeError(f"--count {args.count} out of range (1..4096)")
    opts = P2MOptions.from_namespace(args)
    src = find_sources(target, opts, first=args.pfn, count=args.count)
    try:
        e = np.asarray(src.p2m, np.uint64)
        mfn = e & np.uint64(p2m.MFN_MASK)
        back = p2m._lookup(src.m2p, np.where(mfn < np.uint64(src.max_mfn), mfn, np.uint64(0)),
                         p2m.INVALID_M2P_ENTRY).tolist()
        rows = []
        for i, (ent, m) in enumerate(zip(e.tolist(), mfn.tolist())):
            pfn = src.first_pfn + i
            row = {"pfn": pfn, "entry": ent, "mfn": None, "flags": [], "m2p": None, "m2p_text": None,
                   "owner": None, "owner_id": None, "owner_name": None, "verdict": None}
            if ent == p2m.INVALID_P2M_ENTRY:
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
                row["m2p_text"] = p2m.m2p_text(back[i])
                if src.owners is not None and m < len(src.owners):
                    row["owner"] = int(src.owners[m])
                    row["owner_id"], row["owner_name"] = src.owner_name(row["owner"])
                mine = row["owner"] is None or row["owner"] in (src.me, p2m.UNKNOWN_OWNER)
                if not mine:
                    row["verdict"] = f"foreign: owned by {row['owner_name']}"
                elif "foreign" in row["flags"]:
                    row["verdict"] = "foreign (FOREIGN_FRAME_BIT)"
                elif back[i] == pfn:
                    row["verdict"] = "ok (M2P maps it back)"
                else:
                    row["verdict"] = f"mismatch: M2P says {p2m.m2p_text(back[i])}"
            rows.append(row)
        return {"domain": src.domain if src.domain is not None else args.domain, "sources": src.why,
                "entries": rows}
    finally:
        src.close()
