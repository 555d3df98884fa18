"""``log``: annotate a Xen console log (mm.c / traps.c messages decoded, summary, likely story)."""

from ..errors import XenscopeError
from . import arg, command, number

DEFAULT_LIMIT = 200
DUMP_MFNS = 1000          # frames looked up in --dump (the summary's first ones)


def _add_dump(res, args):
    from ..targets import open_dump
    from ..xen.host import open_host
    target = open_dump(args.dump)
    try:
        _add_pages(res, open_host(target, version=args.xen, syms=args.xen_syms), args.dump)
    finally:
        target.close()


def _add_pages(res, host, path):
    """Each mfn's current page_info (the first DUMP_MFNS of the summary) and the dump's story."""
    res["summary"]["dump"] = {"file": path}
    for row in res["summary"]["by_mfn"][:DUMP_MFNS]:
        try:
            row["page"] = host.page(row["mfn"])
        except XenscopeError as e:
            row["page"] = {"mfn": row["mfn"], "error": str(e)}
    from ..xen.console.chainstory import dump_story
    res["summary"]["story"] += dump_story(res["summary"]["chains"], host)


def _from_dump(args, keep):
    """Annotate Xen's console ring in ``args.from_dump``, with each mfn's page state from that dump
    when a XenHost can be made of it."""
    from ..dumpconsole import dump_console, xen_console
    from ..targets import open_dump
    from ..xen.console import annotate_lines
    from ..xen.host import open_host
    target = open_dump(args.from_dump)
    try:
        try:
            host = open_host(target, version=args.xen, syms=args.xen_syms)
            console, why = xen_console(host), None
        except XenscopeError as e:
            host, why = None, str(e)
            console = dump_console(target, xen_syms=args.xen_syms, xen=args.xen)
        if console.kind != "xen":
            raise XenscopeError(f"{args.from_dump} is a Linux dump: its console is the kernel's printk buffer, "
                                f"not Xen's (xenscope dmesg prints it)")
        dumped = None if args.xen or host is None else host.version
        res = annotate_lines(console.lines, version=args.xen or dumped, keep=keep)
        if dumped:
            res["layout"]["why"] = f"Xen {dumped} from the dump ({host.sources.get('version')})"
        res["console"] = {"file": args.from_dump, "description": console.description,
                          "pages": "from the same dump" if host else f"not added: {why}"}
        if host is not None:
            _add_pages(res, host, args.from_dump)
        return res
    finally:
        target.close()


def _page_text(pg):
    if "error" in pg:
        return f"now: {pg['error']}"
    owner = pg.get("owner_name") or ("-" if pg.get("owner") is None else f"d{pg['owner']}")
    m2p = pg.get("m2p")
    m2p = "?" if m2p is None else f"{m2p:#x}"
    return (f"now: count_info {pg['count_info']:#x} ({pg['count']['text']}); type_info "
            f"{pg['type_info']:#x} ({pg['type']['text']}); owner {owner}; M2P pfn {m2p}")


def _ctx_text(c):
    if not c:
        return ""
    d = c["domain"]
    s = f"d{d}" if isinstance(d, int) else str(d)
    return s + (f"v{c['vcpu']}" if c.get("vcpu") is not None else "")


def _log_render(r, args):
    from ..xen.console import KIND_TEXT
    out = [f"layout: {r['layout']['name']} ({r['layout']['why']})", ""]
    if r.get("console"):
        out[:0] = [f"console: {r['console']['description']} (in {r['console']['file']}; page states "
                   f"{r['console']['pages']})"]
    limit = DEFAULT_LIMIT if args.limit is None else args.limit
    entries = r["entries"]
    for e in entries[:limit]:
        out.append(f"{e['line_no']:>7}: {e['text']}")
        if e.get("sentence"):
            out.append(f"         {e['sentence']}")
    s = r["summary"]
    hidden = len(entries) - min(limit, len(entries)) + s["entries_dropped"]
    if hidden:
        out.append(f"... {hidden} more annotated line(s) not shown (--limit N, or --json)")
    out += ["", f"summary: {s['messages']} message(s) in {s['lines']} line(s)"
                + (f"; Xen version in the log: {s['xen_version_in_log']}" if s["xen_version_in_log"] else "")]
    for k, n in sorted(s["by_kind"].items(), key=lambda kv: -kv[1]):
        out.append(f"  {n:>7}  {KIND_TEXT.get(k, k)}")
    out.append(f"  suppressed by Xen's rate limit: {s['suppressed']} message(s)")
    if s["by_mfn"]:
        out += ["", f"by mfn ({len(s['by_mfn'])}"
                + (f", {s['mfns_not_tracked']} more not tracked" if s["mfns_not_tracked"] else "") + "):"]
        for row in s["by_mfn"][:max(limit, 20)]:
            kinds = ", ".join(f"{KIND_TEXT.get(k, k)} x{n}" for k, n in row["kinds"].items())
            lines = (f"line {row['first_line']}" if row["first_line"] == row["last_line"]
                     else f"lines {row['first_line']}-{row['last_line']}")
            out.append(f"  mfn {row['mfn']:#x}: {kinds}; {lines}"
                       + (f"; {_ctx_text(row.get('context'))}" if row.get("context") else ""))
            for k, label in (("saw", "last saw"), ("taf", "last taf")):
                if row.get(k + "_decoded"):
                    out.append(f"      {label} {row[k]:#x}: {row[k + '_decoded']['text']}")
            if row.get("page"):
                out.append("      " + _page_text(row["page"]))
        if len(s["by_mfn"]) > max(limit, 20):
            out.append(f"  ... {len(s['by_mfn']) - max(limit, 20)} more mfn(s) (--json)")
    if s["by_context"]:
        out += ["", "by domain/vcpu:"]
        for c in s["by_context"][:50]:
            kinds = ", ".join(f"{KIND_TEXT.get(k, k)} x{n}" for k, n in c["kinds"].items())
            out.append(f"  {_ctx_text(c)}: {c['count']} message(s), lines {c['first_line']}-{c['last_line']}: {kinds}")
    out += ["", "the likely story:"]
    out += [f"  - {t}" for t in s["story"]] or ["  (nothing recognised)"]
    return "\n".join(out)


@command("log", "Annotate a Xen console log (xl dmesg, serial capture, or the console ring a Xen host dump "
                "holds: --from-dump): decode every mm.c/traps.c message, summarise per mfn and domain, tell "
                "the likely story.", target=None,
         arguments=[
             arg("file", metavar="FILE", nargs="?", help="the log file, or - for standard input"),
             arg("--from-dump", metavar="DUMP",
                 help="instead of FILE: Xen's console ring in this Xen host dump (with each mfn's page state "
                      "from it, as --dump)"),
             arg("--xen", metavar="VERSION",
                 help="Xen version (X.Y.Z) for the page_info layout (default: the log's banner, "
                      "else guessed from a Bad type line)"),
             arg("--dump", metavar="DUMP",
                 help="a Xen host dump: add each mfn's current page_info state (count, type, owner, M2P)"),
             arg("--xen-syms", metavar="PATH",
                 help="with --dump or --from-dump: xen-syms (ELF) or its .map, for symbols VMCOREINFO_XEN "
                      "lacks"),
             arg("--limit", type=number, default=DEFAULT_LIMIT,
                 help=f"annotated lines shown in text output (default {DEFAULT_LIMIT}; the summary is "
                      "always shown)")],
         render=_log_render)
def log_cmd(target, args):
    from ..xen.console import annotate_file
    if args.limit is not None and args.limit < 0:
        from . import UsageError
        raise UsageError("--limit must be >= 0")
    if (args.file is None) == (args.from_dump is None):
        from . import UsageError
        raise UsageError("give a log FILE (or -) or --from-dump DUMP, one of them")
    if args.from_dump:
        if args.dump:
            from . import UsageError
            raise UsageError("--from-dump already reads the page states from its dump: --dump is not needed")
        return _from_dump(args, max(5000, args.limit or 0))
    res = annotate_file(args.file, version=args.xen, keep=max(5000, args.limit or 0))
    if args.dump:
        _add_dump(res, args)
    return res


