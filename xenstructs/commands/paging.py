"""Paging commands: info, walk, vtop, maps, pte, decode, read-phys."""

import argparse

from .. import decode
from ..context import resolve
from ..errors import XenscopeError
from ..paging import STOP_REASONS, coalesce, enumerate_mappings, walk
from . import UsageError, address, arg, command, group, number, tabulate, va_range
from .guest import DOMAIN, add_walk_stages, guest_target, header, stage2_of

MAX_READ_PHYS = 1 << 20

PAGING = group(
    "address space (default: from the target's registers)",
    arg("--cr3", type=address, help="page-table root (CR3 value, hex)"),
    arg("--mode", choices=decode.MODES, help="paging mode (default: from CR0/CR4/EFER)"),
    arg("--cpu", type=number, default=0, help="take registers from this CPU (default 0)"),
    arg("--efer", type=address, help="EFER value (NXE decides whether bit 63 is XD)"),
    arg("--cr4", type=address, help="CR4 value (PSE, PAE, LA57)"),
    arg("--maxphyaddr", type=number, default=52,
        help="physical-address width for reserved-bit checks (default 52)"))


def _context(target, args):
    return resolve(target, cr3=args.cr3, mode=args.mode, cpu=args.cpu, efer=args.efer,
                   cr4=args.cr4, maxphyaddr=args.maxphyaddr)


def _flags(d):
    return " ".join(d["flags"]) if d else ""


def _rights(w, u, nx):
    """``urwx`` style: user/supervisor, read, write, execute (``*`` when NX was not compared)."""
    x = "*" if nx is None else ("-" if nx else "x")
    return ("u" if u else "s") + "r" + ("w" if w else "-") + x


# ---------------------------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------------------------

def _info_render(r, args):
    rows = [("kind", r["kind"]), ("file", r["file"] or "-"), ("machine", r["machine"] or "?"),
            ("cpus", r["cpus"])]
    if r.get("osrelease"):
        rows.append(("kernel", r["osrelease"]))
    mem = r["memory"]
    if mem:
        total = sum(e - s for s, e in mem)
        rows.append(("memory", f"{len(mem)} range(s), {total // 1024} KiB, "
                               f"{mem[0][0]:#x}-{mem[-1][1]:#x}"))
    for d in r.get("domains") or ():
        kind = f"{d['type']}, {d['paging']}" if "type" in d else d.get("kind_error", "?")
        cr3 = " ".join(f"v{v['vcpu']} cr3 {v['cr3']:#x}" for v in d.get("vcpus") or () if "cr3" in v)
        rows.append((f"domain {d['id']}", f"{kind}; {cr3 or 'no vCPU'}"))
    if "paging_error" in r:
        rows.append(("paging", r["paging_error"]))
    else:
        src = r["sources"]
        rows.append(("paging", f"{r['mode']}  ({src.get('mode')})"))
        rows.append(("cr3", f"{r['cr3']:#x}  ({src.get('cr3')}); root table pa {r['root_pa']:#x}"))
        for reg, dec in (("cr0", decode.decode_cr0), ("cr4", decode.decode_cr4), ("efer", decode.decode_efer)):
            if r.get(reg) is not None:
                rows.append((reg, f"{r[reg]:#x} [{' '.join(dec(r[reg])['flags'])}]  ({src.get(reg, 'registers')})"))
    return tabulate(rows, tablefmt="plain")


def _xen_domains(target, vi):
    """A Xen host dump's domains with their type, paging mode and vCPUs' saved CR3 (None when the target
    is not a Xen host dump: a Linux kernel's VMCOREINFO, an xl dump-core, no Xen found in it; or a live
    or remote target, where looking for Xen would cost reads nobody asked for)."""
    if vi is not None and vi.symbol("frame_table") is None or "xl dump-core" in (target.kind or "") \
            or target.live or target.slow:
        return None
    from ..xen.host import open_host
    from .xen import domain_kinds
    try:
        host = open_host(target)
        doms = host.domains()
        kinds = domain_kinds(host, doms)
    except XenscopeError:
        return None
    return [dict(id=d.id, **kinds[d.id]) for d in doms if d.id in kinds]


@command("info", "What the target is: kind, file, CPUs, paging mode and where CR3/CR4/EFER came from.",
         arguments=[PAGING], render=_info_render, host_notes=True)
def info(target, args):
    res = {"kind": target.kind, "file": target.path, "machine": target.facts.get("machine"),
           "cpus": len(target.cpus()), "memory": [[s, e] for s, e in target.phys_ranges()]}
    vi = target.facts.get("vmcoreinfo")
    if vi is not None:
        res["osrelease"] = vi.get("OSRELEASE")
    res["domains"] = _xen_domains(target, vi)
    try:
        ctx = _context(target, args)
        res.update(mode=ctx.paging.mode, cr3=ctx.cr3, root_pa=ctx.paging.root, nxe=ctx.paging.nxe,
                   cr0=ctx.regs.get("cr0"), cr4=ctx.regs.get("cr4"), efer=ctx.regs.get("efer"),
                   sources=ctx.sources)
    except XenscopeError as e:
        res["paging_error"] = str(e)
    return res


# ---------------------------------------------------------------------------------------------
# walk / vtop
# ---------------------------------------------------------------------------------------------

def walk_result(w, target=None):
    """The JSON form of a :class:`~xenstructs.paging.Walk`.

    On a PV guest's dump (the target has ``m2p``: page tables hold machine frames) every level also
    says which guest pfn holds its table (``table_pfn``), and the result the pfn of the page.
    """
    m2p = getattr(target, "m2p", None)

    def pfn(addr):
        return m2p(addr >> 12) if m2p is not None and addr is not None else None
    levels = []
    for lv in w.levels:
        d = lv.decoded
        levels.append({"level": lv.name, "table_pa": lv.table, "index": lv.index,
                       "entry_pa": lv.entry_addr, "entry": lv.entry,
                       "flags": d["flags"] if d else None,
                       "next_pa": d["addr"] if d and d["present"] else None,
                       "leaf": bool(d and d["leaf"]), "recursive": lv.recursive,
                       "warning": lv.warning, "table_pfn": pfn(lv.table)})
    return {"va": w.va, "mode": w.mode, "root_pa": w.root, "levels": levels, "pa": w.pa,
            "page_size": w.page_size, "writable": w.writable, "user": w.user, "nx": w.nx,
            "stop": w.stop, "stop_level": w.stop_level, "pfn": pfn(w.pa),
            "space": "machine" if m2p is not None else "physical"}


def _size_name(n):
    return {1 << 12: "4K", 1 << 21: "2M", 1 << 22: "4M", 1 << 30: "1G"}.get(n, hex(n or 0))


def _walk_render(r, args):
    if r.get("domain"):
        return _nested_walk_render(r)
    head = f"va {r['va']:#x}  {r['mode']}  cr3 {r['cr3']:#x} ({r['sources'].get('cr3')})"
    rows = []
    for lv in r["levels"]:
        if lv["entry"] is None:
            rows.append((lv["level"], f"{lv['table_pa']:#x}", lv["index"], "(not in dump)", "", "", "-")[
                :7 if r.get("space") == "machine" else 6])
            continue
        nxt = "" if lv["next_pa"] is None else f"{lv['next_pa']:#x}" + (" page" if lv["leaf"] else "")
        note = " (recursive)" if lv["recursive"] else ""
        rows.append((lv["level"], f"{lv['table_pa']:#x}", lv["index"], f"{lv['entry']:#018x}",
                     " ".join(lv["flags"]) + note, nxt))
        if r.get("space") == "machine":
            rows[-1] = rows[-1] + ("-" if lv["table_pfn"] is None else f"{lv['table_pfn']:#x}",)
    heads = ("entry", "table pa", "idx", "value", "flags", "points to")
    if r.get("space") == "machine":          # PV guest: tables and pages are machine frames
        heads = ("entry", "table maddr", "idx", "value", "flags", "points to (maddr)", "table pfn")
    out = [head, tabulate(rows, headers=heads, tablefmt="simple", disable_numparse=True)]
    out += [f"note: {lv['level']}: {lv['warning']}" for lv in r["levels"] if lv["warning"]]
    if r["pa"] is not None:
        where = (f"maddr {r['pa']:#x} (pfn {r['pfn']:#x})" if r.get("space") == "machine" and r["pfn"] is not None
                 else f"{'maddr' if r.get('space') == 'machine' else 'pa'} {r['pa']:#x}")
        out.append(f"=> {where}  ({_size_name(r['page_size'])} page, "
                   f"{'writable' if r['writable'] else 'read-only'}, "
                   f"{'user' if r['user'] else 'supervisor'}, "
                   f"{'no-execute' if r['nx'] else 'executable'})")
    else:
        out.append(f"=> not mapped: {STOP_REASONS[r['stop']]}"
                   + (f" at {r['stop_level']}" if r["stop_level"] else ""))
    return "\n".join(out)


def _nested_walk_render(r):
    """Both stages per level: the guest table's gpa and its machine frame with the p2m type."""
    out = [header(r["domain"]), f"va {r['va']:#x}  {r['mode']}  cr3 {r['cr3']:#x} (gpa; {r['sources'].get('cr3')})"]
    rows = []
    for lv in r["levels"]:
        mfn = "-" if lv["table_mfn"] is None else f"{lv['table_mfn']:#x}"
        p2m = lv["table_p2m_type"] or lv["table_p2m_stop"] or "-"
        if lv["entry"] is None:
            rows.append((lv["level"], f"{lv['table_pa']:#x}", mfn, p2m, lv["index"], "(not mapped)", "", ""))
            continue
        nxt = "" if lv["next_pa"] is None else f"{lv['next_pa']:#x}" + (" page" if lv["leaf"] else "")
        rows.append((lv["level"], f"{lv['table_pa']:#x}", mfn, p2m, lv["index"], f"{lv['entry']:#018x}",
                     " ".join(lv["flags"]), nxt))
    out.append(tabulate(rows, headers=("entry", "table gpa", "table mfn", "p2m type", "idx", "value", "flags",
                                       "points to (gpa)"), tablefmt="simple", disable_numparse=True))
    s2 = r["stage2"]
    if r["pa"] is None:
        out.append(f"=> not mapped: {STOP_REASONS[r['stop']]}" + (f" at {r['stop_level']}" if r["stop_level"] else ""))
    elif s2["mfn"] is None:
        out.append(f"=> gpa {r['pa']:#x}: not in the P2M ({s2['stop']})")
    else:
        out.append(f"=> gpa {r['pa']:#x} -> maddr {s2['maddr']:#x} (mfn {s2['mfn']:#x}, {s2['p2m_type']}; "
                   f"{_size_name(r['page_size'])} guest page, {'writable' if r['writable'] else 'read-only'}, "
                   f"{'user' if r['user'] else 'supervisor'})")
        out.append("   P2M: " + "; ".join(f"{x['level']} {x['entry']:#x} [{' '.join(x['flags'])}]"
                                          for x in s2["p2m_levels"] if x["entry"] is not None))
    return "\n".join(out)


@command("walk", "Walk the page tables for one virtual address and show every level.",
         arguments=[arg("va", type=address, help="virtual address (hex)"), PAGING, DOMAIN], render=_walk_render)
def walk_cmd(target, args):
    target, dom = guest_target(target, args)
    ctx = _context(target, args)
    w = walk(target, ctx.paging, args.va)
    res = walk_result(w, target)
    res["cr3"] = ctx.cr3
    res["sources"] = ctx.sources
    if dom:
        add_walk_stages(res, target, w)
        res["domain"] = dom
    return res


MAX_VTOP = 16 << 20      # addresses per call (a 16 M-address batch needs ~1 GiB of arrays)


MAX_ADDRESS_LINE = 256   # bytes of one --from line: an address, blanks and a comment


def _read_addresses(path):
    """The addresses of a ``--from`` file (``-``: standard input), read by
    :func:`~xenstructs.inputs.iter_text_lines`: a regular file only, lines cut at
    :data:`MAX_ADDRESS_LINE` bytes (a longer line is an error, never read whole), binary junk
    refused."""
    import sys
    from ..inputs import TextLimits, iter_text_lines, open_regular
    name = "standard input" if path == "-" else path
    f = sys.stdin.buffer if path == "-" else open_regular(path)
    out = []
    try:
        for n, line, length in iter_text_lines(f, name, TextLimits(max_line=MAX_ADDRESS_LINE)):
            if length > MAX_ADDRESS_LINE:
                raise XenscopeError(f"{name}:{n}: a line of {length} bytes is not an "
                                    f"address (at most {MAX_ADDRESS_LINE})")
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if len(out) >= MAX_VTOP:
                raise XenscopeError(f"{name}: more than {MAX_VTOP} addresses")
            try:
                out.append(address(line))
            except argparse.ArgumentTypeError as e:
                raise XenscopeError(f"{name}:{n}: {e}")
    finally:
        if path != "-":
            f.close()
    return out


def _vtop_render(r, args):
    out = []
    for t in r["translations"]:
        if t["pa"] is None:
            out.append(f"va {t['va']:#x}: not mapped ({STOP_REASONS[t['stop']]}"
                       + (f" at {t['stop_level']})" if t["stop_level"] else ")"))
        elif "maddr" in t:
            s2 = "not in the P2M: " + t["p2m_stop"] if t["maddr"] is None else \
                f"maddr {t['maddr']:#x}, mfn {t['mfn']:#x}, {t['p2m_type']}"
            out.append(f"va {t['va']:#x} -> gpa {t['pa']:#x} ({_size_name(t['page_size'])} page) -> {s2}")
        else:
            out.append(f"va {t['va']:#x} -> pa {t['pa']:#x} ({_size_name(t['page_size'])} page)")
    if r.get("domain"):
        out.insert(0, header(r["domain"]))
    return "\n".join(out)


@command("vtop", "Translate virtual addresses to physical addresses (many at once: vectorised).",
         arguments=[arg("va", type=address, nargs="*", help="virtual address(es) (hex)"),
                    arg("--from", dest="from_file", metavar="FILE",
                        help="also translate the addresses in FILE, one per line (hex; - for stdin)"),
                    PAGING, DOMAIN],
         render=_vtop_render)
def vtop(target, args):
    from ..paging import translate_many
    vas = list(args.va) + (_read_addresses(args.from_file) if args.from_file else [])
    if not vas:
        raise UsageError("give at least one address (or --from FILE)")
    target, dom = guest_target(target, args)
    ctx = _context(target, args)
    t = translate_many(target, ctx.paging, [v & ((1 << 64) - 1) for v in vas])
    rows = []
    for i, (va, pa, size, ok) in enumerate(zip(t.va.tolist(), t.pa.tolist(), t.page_size.tolist(),
                                               t.ok.tolist())):
        rows.append({"va": va, "pa": pa if ok else None, "page_size": size if ok else None,
                     "stop": None if ok else t.stop_name(i),
                     "stop_level": None if ok else t.stop_level_name(i)})
        if dom and ok:
            rows[-1].update(stage2_of(target, pa))
    res = {"mode": ctx.paging.mode, "cr3": ctx.cr3, "translations": rows}
    if dom:
        res["domain"] = dom
    return res


# ---------------------------------------------------------------------------------------------
# maps
# ---------------------------------------------------------------------------------------------

def _stage2_cells(row):
    """The maddr and p2m-type cells of a maps row of a translated guest (none otherwise)."""
    if "maddr" not in row:
        return ()
    return ("-" if row["maddr"] is None else f"{row['maddr']:#x}", row["p2m_type"] or row["p2m_stop"] or "-")


def _maps_render(r, args):
    lim = args.limit or None
    out = [header(r["domain"])] if r.get("domain") else []
    if "pages" in r:
        rows = [(f"{p['va']:#018x}", f"{p['pa']:#014x}", _size_name(p["size"]),
                 _rights(p["writable"], p["user"], p["nx"]), f"{p['entry']:#018x}") + _stage2_cells(p)
                for p in r["pages"][:lim]]
        heads = ("va", "pa", "size", "rights", "entry")
        if r.get("domain"):
            heads = ("va", "gpa", "size", "rights", "entry", "maddr", "p2m type")
        out.append(tabulate(rows, headers=heads, tablefmt="simple", disable_numparse=True))
        shown, total = len(rows), r["page_count"]
    else:
        rows = [(f"{g['va_start']:#018x}-{g['va_end']:#018x}", f"{g['size']:#x}",
                 "-" if g["pa_start"] is None else f"{g['pa_start']:#x}", g["pages"],
                 _rights(g["writable"], g["user"], g["nx"])) + _stage2_cells(g)
                for g in r["ranges"][:lim]]
        heads = ("va range", "size", "pa start", "pages", "rights")
        if r.get("domain"):
            heads = ("va range", "size", "gpa start", "pages", "rights", "maddr start", "p2m type")
        out.append(tabulate(rows, headers=heads, tablefmt="simple", disable_numparse=True))
        shown, total = len(rows), r.get("range_count", len(r["ranges"]))
    if r.get("stopped_at") is not None:
        out.append(f"... --limit {args.limit}: listing stopped at va {r['stopped_at']:#x} (use --limit 0 for all)")
    elif shown < total:
        out.append(f"... {total - shown} more (use --limit 0)")
    what = "pages enumerated" if r.get("stopped_at") is not None else "pages"
    out.append(f"{r['page_count']} {what}, {r['tables']} tables read, {r['mode']}, cr3 {r['cr3']:#x}; "
               "rights: u/s user/supervisor, w writable, x executable")
    if r.get("domain") and "ranges" in r:
        out.append("maddr start: the machine address of each range's first page (a guest-physically contiguous "
                   "range need not be contiguous in machine memory: --pages gives every page's)")
    for pr in r["problems"]:
        ent = "" if pr["entry"] is None else f" (entry {pr['entry']:#x})"
        out.append(f"problem: {pr['va_start']:#x}-{pr['va_end']:#x} {pr['level']}: "
                   f"{STOP_REASONS[pr['reason']]}{ent}")
    return "\n".join(out)


@command("maps", "List an address space: ranges of equal rights (info mem style) or every page (--pages, "
                 "info tlb style).",
         arguments=[
             arg("--range", type=va_range, dest="va_range", metavar="A-B", default=(0, None),
                 help="only pages starting in [A, B) (hex; or A+SIZE)"),
             arg("--pages", action="store_true", help="one line per page, like QEMU's info tlb"),
             arg("--ignore-pa", action="store_true",
                 help="merge virtually contiguous pages of equal rights even when their physical "
                      "pages are not contiguous (how QEMU's info mem merges)"),
             arg("--ignore-nx", action="store_true",
                 help="merge pages whose only difference is NX (with --ignore-pa: exactly QEMU's info mem)"),
             arg("--limit", type=number, default=0,
                 help="list at most N lines (0: all); the enumeration stops once they are known"),
             PAGING, DOMAIN],
         render=_maps_render)
def maps(target, args):
    from ..paging import first_mappings
    target, dom = guest_target(target, args)
    ctx = _context(target, args)
    start, end = args.va_range
    stopped = None
    if args.limit:
        def enough(m):                   # the first N lines are certain (a range may go on: N + 1)
            return len(m) >= args.limit if args.pages else \
                len(coalesce(m, ignore_pa=args.ignore_pa, ignore_nx=args.ignore_nx)) > args.limit
        m, stopped = first_mappings(target, ctx.paging, start, end, enough)
    else:
        m = enumerate_mappings(target, ctx.paging, start, end)
    res = {"mode": ctx.paging.mode, "cr3": ctx.cr3, "root_pa": ctx.paging.root,
           "tables": m.tables, "page_count": len(m), "stopped_at": stopped,
           "problems": [{"va_start": a, "va_end": b, "level": lvl, "reason": why, "entry": ent}
                        for a, b, lvl, why, ent in m.problems]}
    lim = args.limit or None
    if args.pages:
        res["pages"] = [{"va": va, "pa": pa, "size": sz, "entry": en, "writable": w, "user": u, "nx": x}
                        for va, pa, sz, en, w, u, x in zip(*(col[:lim].tolist() for col in (
                            m.va, m.pa, m.size, m.entry, m.rw, m.us, m.nx)))]
    else:
        ranges = coalesce(m, ignore_pa=args.ignore_pa, ignore_nx=args.ignore_nx)
        res["ranges"] = [{"va_start": r.va_start, "va_end": r.va_end, "size": r.va_end - r.va_start,
                          "pa_start": r.pa_start, "pages": r.pages, "writable": r.writable,
                          "user": r.user, "nx": None if args.ignore_nx else r.nx}
                         for _, r in zip(range(lim or len(ranges)), ranges)]
        res["range_count"] = len(ranges)
    if dom:
        res["domain"] = dom
        for row in res.get("pages") or res["ranges"]:
            pa = row["pa"] if "pa" in row else row["pa_start"]
            row.update(stage2_of(target, pa) if pa is not None else
                       {"mfn": None, "maddr": None, "p2m_type": None, "p2m_stop": None})
    return res


# ---------------------------------------------------------------------------------------------
# pte / decode (no target)
# ---------------------------------------------------------------------------------------------

def _pte_render(d, args):
    what = "page" if d["leaf"] else "next table"
    s = [f"{d['level']} {d['value']:#x} ({d['mode']}): " + ("present" if d["present"] else "NOT present"),
         f"  flags: {' '.join(d['flags']) or '-'}",
         f"  {what}: pa {d['pa']:#x} (frame {d['pfn']:#x})" + (" large page" if d["large"] else "")]
    if d["pkey"]:
        s.append(f"  protection key: {d['pkey']}")
    if d["software"]:
        s.append(f"  software bits: {' '.join(d['software'])}")
    if d["reserved"]:
        s.append(f"  RESERVED bits set: {d['reserved']:#x} (a walk through it faults with RSVD=1)")
    if d["reserved_at_cr3_load"]:
        s.append(f"  bits {d['reserved_at_cr3_load']:#x} are reserved in a PAE PDPTE: MOV CR3 raises #GP "
                 "(walks ignore them; QEMU's TCG sets A itself)")
    return "\n".join(s)


@command("pte", "Decode a page-table entry value (no target needed).", target=None,
         arguments=[
             arg("value", type=address, help="entry value (hex)"),
             arg("--mode", choices=decode.MODES, default="4level", help="paging mode (default 4level)"),
             arg("--level", default="PTE", help="PML5E PML4E PDPTE PDE PTE (default PTE)"),
             arg("--no-nxe", action="store_true", help="EFER.NXE=0: bit 63 is reserved"),
             arg("--maxphyaddr", type=number, default=52, help="physical-address width (default 52)")],
         render=_pte_render)
def pte(target, args):
    d = decode.decode_entry(args.value, args.mode, args.level, nxe=not args.no_nxe, maxphyaddr=args.maxphyaddr)
    d["pa"] = d.pop("addr")
    return d


_REGS = {"cr0": decode.decode_cr0, "cr4": decode.decode_cr4, "efer": decode.decode_efer}


# one representative release per page_info layout family, for decoding without --xen
_XEN_FAMILIES = (("4.4-4.9", "4.9.0"), ("4.10-4.16 before XSA-402", "4.16.0"),
                 ("4.17+ and XSA-402 backports", "4.17.0"), ("4.18+", "4.18.0"))


def _decode_xen(args):
    from ..xen import layouts
    fn = layouts.decode_type if args.what == "type" else layouts.decode_count
    if args.xen:
        lay = layouts.layout_for_version(args.xen)
        d = fn(args.value, lay)
        return {"register": args.what, "value": args.value,
                "decodings": [{"xen": args.xen, "layout": lay.name, **d}]}
    out, seen = [], set()
    for label, version in _XEN_FAMILIES:
        lay = layouts.layout_for_version(version)
        part = lay.type.name if args.what == "type" else lay.count.name
        if part in seen:
            continue
        seen.add(part)
        out.append({"xen": label, "layout": lay.name, **fn(args.value, lay)})
    return {"register": args.what, "value": args.value, "decodings": out}


def _decode_render(d, args):
    if "decodings" in d:
        lines = [f"{d['register']}_info {d['value']:#018x}:"]
        for x in d["decodings"]:
            lines.append(f"  Xen {x['xen']} ({x['layout']}): {x['text']}")
        if len(d["decodings"]) > 1:
            lines.append("  (give --xen VERSION to pick one: the bits moved between releases)")
        return "\n".join(lines)
    s = f"{d['register']} {d['value']:#x}: {' '.join(d['flags']) or '(no bits set)'}"
    if d.get("text"):
        s += f"\n  {d['text']}"
    if d.get("unknown"):
        s += f"\n  unknown bits: {d['unknown']:#x}"
    return s


@command("decode", "Decode CR0, CR4, EFER, a page-fault error code, or Xen's page_info type/count "
                   "words (no target needed).", target=None,
         arguments=[
             arg("what", choices=("cr0", "cr4", "efer", "pf", "type", "count"),
                 help="what the value is (type/count: a page_info type_info/count_info)"),
             arg("value", type=address, help="value (hex)"),
             arg("--xen", metavar="VERSION",
                 help="Xen release for type/count (e.g. 4.6.0, 4.17.3); default: every layout")],
         render=_decode_render)
def decode_cmd(target, args):
    if args.what in ("type", "count"):
        return _decode_xen(args)
    d = decode.decode_pf(args.value) if args.what == "pf" else _REGS[args.what](args.value)
    d["register"] = args.what
    return d


# ---------------------------------------------------------------------------------------------
# read-phys
# ---------------------------------------------------------------------------------------------

def _read_phys_render(r, args):
    from pwnlib.util.fiddling import hexdump    # lazy: pwntools is heavy
    dump = hexdump(bytes.fromhex(r["hex"]), begin=r["pa"], skip=False)
    if not r.get("domain"):
        return dump
    frames = [f"gpa {f['gpa']:#x} -> mfn {f['mfn']:#x} ({f['p2m_type']})" for f in r["frames"]]
    return "\n".join([header(r["domain"])] + frames + [dump])


@command("read-phys", "Hexdump physical memory (machine memory on a Xen host dump; a translated guest's "
                      "guest-physical memory with --domain).",
         arguments=[arg("pa", type=address, help="physical address (hex; guest-physical with --domain)"),
                    arg("length", type=number, nargs="?", default=64,
                        help="bytes (default 64, at most 1 MiB)"),
                    DOMAIN],
         render=_read_phys_render)
def read_phys(target, args):
    if args.length <= 0 or args.length > MAX_READ_PHYS:
        raise XenscopeError(f"length {args.length} out of range (1..{MAX_READ_PHYS})")
    guest, dom = guest_target(target, args)
    data = guest.read_phys(args.pa, args.length)
    res = {"pa": args.pa, "length": len(data), "hex": data.hex()}
    if dom:
        res["domain"] = dom
        res["frames"] = [dict(gpa=page, **stage2_of(guest, page))
                         for page in range(args.pa & ~0xFFF, args.pa + args.length, 0x1000)]
    return res


