"""``xenscope check``: run every applicable check over a batch of dumps.

For each dump the kind is detected (:func:`detect_kind`) and every check that applies is run, each
guarded: a check that raises becomes one ``error`` result, a dump that cannot be opened becomes one
``unreadable`` report, and neither stops the others.

Kinds: ``xen-host`` (a Xen hypervisor dump: :func:`~xenstructs.xen.host.open_host` accepts it),
``xl-dump-core`` (an ``xl dump-core`` guest image), ``linux`` (ELF/kdump with VMCOREINFO),
``elf-core`` / ``kdump`` (no VMCOREINFO), ``unreadable`` (:func:`~xenstructs.targets.open_dump`
refused it, or the child process checking it died: "the kdump library crashed on it (signal 11,
SIGSEGV)"; :func:`check_many` checks each dump in its own forked child).

Checks (``name``: when it applies: what it reports):

* ``paging``: every readable dump: resolve CPU 0's address space and enumerate its mappings;
  findings are the enumeration's problems (``reserved`` bits, tables ``not-in-dump``, ``loop``s).
* ``xen-frames``: Xen host dumps: frame-table census (free frames still holding references) and
  the offline page-table audit of every PV domain (``pt-audit`` findings; its informational
  foreign references, by a privileged domain or backed by a grant, are counted in the summary
  and are no findings).
* ``p2m``: xl dump-core files (the guest's own list, found by the dump's ``.xen_shared_info``, else the
  dump's ``.xen_p2m``, against the frames the dump holds), and Xen host dumps:
  every PV domain's P2M, found by its shared_info as Xen's toolstack finds it, against Xen's M2P and
  owners (``kernel_syms``, dom0's System.map, when given, says where dom0's list is instead).
* ``modcheck``: on Linux kernel dumps (neither a Xen host nor an xl dump-core file), with the
  symbols and types of the dump itself (its kallsyms and BTF) or of ``profile``/``vmlinux``:
  module pages mapped alike in every task's page directory.
* ``console``: Xen's console: the log (as for ``faults``), else a Xen host dump's own console ring
  (:mod:`~xenstructs.xen.conring`): each refused MMU request Xen logged (its causal chain and root
  cause, ``xenscope log``'s) and each crash block is a finding.
* ``faults``: when a log (``log``, or ``<dump without extension>.log`` next to the dump, e.g.
  ``xen-4.6-host.log``), else the dump's own console text (a Xen host's console ring, a Linux
  dump's printk buffer: :mod:`~xenstructs.dumpconsole`; there only a report with an error code
  counts, not a register dump's cr2), holds a page fault: the fault explained rule
  by rule against the dump's registers and page tables. The summary names the text read ("Xen's
  console ring in the dump", "the kernel's printk buffer in the dump", or the log's file name);
  each finding's ``source`` is ``file`` or ``dump``. Neither there: ``n.a.`` with the reason.

Xen symbols: ``xen_syms``, else ``<dump without extension>.map`` next to a Xen host dump.

Statuses: ``ok`` (ran, nothing found), ``findings``, ``error`` (the check could not run: the
message is the summary), ``n.a.`` (does not apply; the summary says why).

JSON (``xenscope check --json``; :meth:`DumpReport.as_dict`): a list, one object per dump in the
order given (a directory's files sorted by name), keys sorted::

    [{"dump": "cores/x86_64-4level.core",          # the path as given / found in the directory
      "kind": "linux",                              # see Kinds above
      "checks": [{"name": "paging",                 # paging, xen-frames, p2m, modcheck, faults
                  "status": "findings",             # ok, findings, error, n.a.
                  "summary": "4 problem(s) in 25 mappings ...",   # one line
                  "findings": [{"kind": "reserved", "text": "...", ...}, ...]}, ...]}, ...]

Each finding has ``kind`` and ``text`` (one line) plus check-specific fields (paging: ``va_start``,
``va_end``, ``level``, ``entry``; xen-frames: ``pt-audit``'s fields or ``mfn``; p2m: ``p2m-check``'s
fields; modcheck: the group's fields; faults: ``cpu``, ``cr2``, ``error``, ``cause``). At most
:data:`FINDINGS_LIMIT` findings are listed per check; the summary gives the total. An unreadable
dump has kind ``unreadable`` and one check ``open`` with status ``error``.

Exit status (:func:`exit_status`): 2 when any dump could not be read, else 1 when any check has
findings or an error, else 0.

Example (scripting)::

    import sys
    from xenstructs.check import Options, check_dump, check_many, exit_status

    reports = check_many(sys.argv[1:], Options(xen_syms=None), jobs=4)
    for rep in reports:                       # DumpReport: .dump .kind .checks
        for c in rep.checks:                  # CheckResult: .name .status .summary .findings
            if c.status != "ok":
                print(rep.dump, rep.kind, c.name, c.status, c.summary)
    one = check_dump("cores/xen-4.6-host.core")       # a single dump, in this process
    sys.exit(exit_status(reports))
"""

import os
from dataclasses import dataclass, field
from typing import List, Optional

FINDINGS_LIMIT = 100
STATUSES = ("ok", "findings", "error", "n.a.")
CHECKS = ("paging", "xen-frames", "p2m", "modcheck", "faults", "console")


@dataclass
class Options:
    """What the checks may use beyond the dump: ``xen_syms`` (xen-syms or its .map), ``kernel_syms``
    (dom0's System.map: where dom0's P2M list is on host dumps, instead of its shared_info), ``profile``/``vmlinux``/``system_map`` (modcheck),
    ``log`` (a console/oops excerpt for ``faults``, for every dump), ``siblings`` (look for
    ``<stem>.map`` / ``<stem>.log`` next to each dump), ``pictures`` (also draw the HTML report's
    pictures of the dump into :attr:`DumpReport.pictures`, from the JSON :func:`xenstructs.views.gather`
    takes: drawn where the dump is read, so a batch keeps kilobytes of markup per dump, not its ranges)."""
    xen_syms: Optional[str] = None
    kernel_syms: Optional[str] = None
    profile: Optional[str] = None
    vmlinux: Optional[str] = None
    system_map: Optional[str] = None
    log: Optional[str] = None
    siblings: bool = True
    pictures: bool = False


@dataclass
class CheckResult:
    """One check on one dump: ``name``, ``status`` (ok/findings/error/n.a.), one-line ``summary``,
    ``findings`` (list of dicts, each with ``kind`` and ``text``)."""
    name: str
    status: str
    summary: str
    findings: list = field(default_factory=list)

    def as_dict(self):
        return {"name": self.name, "status": self.status, "summary": self.summary,
                "findings": list(self.findings)}


@dataclass
class DumpReport:
    """Every check run on one dump: ``dump`` (path), ``kind``, ``checks`` (list of CheckResult),
    ``pictures`` (the HTML report's pictures of the dump with ``Options(pictures=True)``, else None;
    not in :meth:`as_dict`)."""
    dump: str
    kind: str
    checks: List[CheckResult] = field(default_factory=list)
    pictures: Optional[str] = field(default=None, compare=False, repr=False)

    @property
    def readable(self):
        return self.kind != "unreadable"

    @property
    def status(self):
        """The worst status: error > findings > ok (n.a. ignored)."""
        st = {c.status for c in self.checks}
        for s in ("error", "findings"):
            if s in st:
                return s
        return "ok"

    def as_dict(self):
        return {"dump": self.dump, "kind": self.kind, "checks": [c.as_dict() for c in self.checks]}


def exit_status(reports):
    """2 when any dump was unreadable, else 1 when any check has findings or an error, else 0."""
    if any(not r.readable for r in reports):
        return 2
    return 1 if any(c.status in ("findings", "error") for r in reports for c in r.checks) else 0


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def expand(paths):
    """Dump paths from ``paths``: files as given (those :func:`open_dump` refuses are reported
    unreadable), a directory as its regular files that start like a dump (sorted by name, not
    recursive: logs, maps and symbol files beside the dumps are passed over)."""
    from .targets import looks_like_dump
    out = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            out += [q for q in (os.path.join(p, n) for n in sorted(os.listdir(p)))
                    if os.path.isfile(q) and looks_like_dump(q)]
        else:
            out.append(p)
    return out


def _sibling(path, ext):
    cand = os.path.splitext(path)[0] + ext
    return cand if cand != path and os.path.isfile(cand) else None


def _host(target, syms):
    """``(host, syms used)``, or ``(None, reason)`` when the dump is not a Xen host."""
    from .errors import XenscopeError
    from .xen.host import open_host
    why = None
    for s in ([syms, None] if syms else [None]):
        try:
            return open_host(target, syms=s), s
        except XenscopeError as e:
            why = why or str(e)
    return None, why


def detect_kind(target, syms=None):
    """``(kind, host, syms used)``: the dump's kind (see the module docstring) and, for a Xen host
    dump, its XenHost and the symbol file it was opened with (None when none)."""
    if target.facts.get("format") == "xc_core":
        return "xl-dump-core", None, None
    host, used = _host(target, syms)
    if host is not None:
        return "xen-host", host, used
    if target.facts.get("vmcoreinfo") is not None:
        return "linux", None, None
    return ("kdump" if target.facts.get("format") == "kdump" else "elf-core"), None, None


def _limit(findings):
    return findings[:FINDINGS_LIMIT]


# ---------------------------------------------------------------------------------------------
# The checks: each returns a CheckResult or raises (turned into an ``error`` result)
# ---------------------------------------------------------------------------------------------

def _check_paging(target, ctx):
    from .context import resolve
    from .paging import enumerate_mappings
    from .xen.release import LINEAR_PT_VIRT_START, SH_LINEAR_PT_VIRT_START, in_xen_slots
    rc = resolve(target)
    m = enumerate_mappings(target, rc.paging)
    fs = []
    for va0, va1, ename, reason, entry in m.problems:
        if reason == "loop" and va0 in (LINEAR_PT_VIRT_START, SH_LINEAR_PT_VIRT_START):
            continue                      # Xen's own linear page-table slot: recursive by design
        if reason == "not-in-dump" and in_xen_slots(va0) and in_xen_slots(va1 - 1) \
                and target.facts.get("format") == "xc_core":
            continue                      # a PV guest's L4 slots 256-271 are Xen's: not in its dump
        text = f"{reason} at {ename} for va {va0:#x}-{va1:#x}" + ("" if entry is None else f" (entry {entry:#x})")
        fs.append({"kind": reason, "va_start": int(va0), "va_end": int(va1), "level": ename,
                   "entry": None if entry is None else int(entry), "text": text})
    kinds = {}
    for f in fs:
        kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
    head = f"{len(m)} mappings under CR3 {rc.cr3:#x} ({rc.paging.mode}) of CPU 0"
    if not fs:
        return CheckResult("paging", "ok", head + "; no problems")
    return CheckResult("paging", "findings", f"{len(fs)} problem(s) ("
                       + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + f") in {head}", _limit(fs))


def _check_xen_frames(target, ctx):
    from .xen.frames import census, classify
    from .xen.ptaudit import audit
    h = ctx["host"]
    cols = classify(h, h.frame_arrays())
    c = census(h, cols)
    fs = [{"kind": "free-with-references", "mfn": m, "text": f"free frame mfn {m:#x} still holds references"}
          for m in c["free_with_references"]]
    ndom = ntables = 0
    npt = 0
    info = {}
    for a in audit(h):
        ndom += 1
        ntables += a.tables
        for f in a.findings:
            npt += 1
            d = f.as_dict()
            d["text"] = f"d{f.domain} {f.kind}: {f.details}"
            fs.append(d)
        for f in a.informational:
            info[f.label] = info.get(f.label, 0) + 1
    nfree = c["free_with_references_count"]
    legit = ("; informational: " + ", ".join(f"{k} {v}" for k, v in sorted(info.items()))) if info else ""
    summary = (f"{c['frames']} frames: {nfree} free frame(s) with references; pt-audit of {ndom} domain(s), "
               f"{ntables} table(s): {npt} finding(s){legit}"
               + (f" (xen-syms {ctx['syms']})" if ctx.get("syms") else ""))
    return CheckResult("xen-frames", "findings" if nfree or npt else "ok", summary, _limit(fs))


def _check_p2m(target, ctx, opts):
    from .xen.p2m_sources import P2MOptions, check_every_domain, check_p2m
    if ctx["kind"] == "xl-dump-core":
        r = check_p2m(target, P2MOptions())
        own = r["sources"]["p2m"].startswith("the guest's own P2M list from shared_info")
        return _p2m_result([r], "the guest's own P2M (by its shared_info) against the frames the dump holds"
                           if own else "the dump's .xen_p2m")
    if ctx["kind"] != "xen-host":
        return CheckResult("p2m", "n.a.", "not a Xen host dump or an xl dump-core file")
    r = check_every_domain(target, P2MOptions(kernel_syms=opts.kernel_syms, xen_syms=ctx.get("syms")),
                           host=ctx.get("host"))
    who = ("every PV domain's P2M (" + ", ".join(f"d{d['domain']}" for d in r["domains"]) + ") from shared_info"
           + (f", dom0's by {opts.kernel_syms}" if opts.kernel_syms else ""))
    res = _p2m_result(r["domains"], who)
    for e in r["errors"]:
        res.findings.append({"kind": "not-checked", "domain": e["domain"], "text": f"d{e['domain']}: {e['error']}"})
        res.status = "error" if not r["domains"] else "findings"
        res.summary += f"; d{e['domain']} not checked: {e['error']}"
    res.findings = _limit(res.findings)
    return res


def _p2m_result(results, who):
    """One CheckResult from ``p2m-check`` results (one per domain)."""
    from .xen.p2m import CLASSES, INFORMATIONAL
    from .xen.p2m_sources import finding_text
    fs, counts, problems, pfns = [], {}, 0, []
    for r in results:
        problems += r["problems"]
        pfns.append(f"{r['pfns']:#x}" if len(results) == 1 else f"d{r['domain']} {r['pfns']:#x}")
        for cls in CLASSES:
            if cls in INFORMATIONAL:
                continue
            counts[cls] = counts.get(cls, 0) + r["counts"][cls]
            for f in r["findings"][cls]:
                d = dict(f)
                d["kind"] = cls
                d["text"] = (f"d{r['domain']} " if len(results) > 1 else "") + f"{cls}: {finding_text(cls, f)}"
                fs.append(d)
    shown = ", ".join(f"{c} {n}" for c, n in counts.items() if n)
    summary = f"{who}, {' / '.join(pfns)} pfns: " + (f"{problems} problem(s) ({shown})" if problems
                                                       else "P2M and M2P agree")
    return CheckResult("p2m", "findings" if problems else "ok", summary, _limit(fs))


def _check_modcheck(target, ctx, opts):
    if ctx["kind"] == "xen-host":
        return CheckResult("modcheck", "n.a.", f"{ctx['kind']} dump: not a Linux kernel dump")
    from .linux.kernel import open_kernel
    from .linux.modcheck import modcheck_report
    resolve_args = {"cpu": 0, "maxphyaddr": 52}
    if not (opts.profile or opts.vmlinux):
        why = _types_from_dump(target, opts, resolve_args)
        if why:
            return CheckResult("modcheck", "n.a.", f"{why}: give --profile or --vmlinux")
    kernel = open_kernel(target, vmlinux=opts.vmlinux, profile=opts.profile, system_map=opts.system_map,
                         resolve_args=resolve_args)
    r = modcheck_report(kernel)
    fs = []
    for g in r["groups"]:
        d = dict(g)
        d["text"] = (f"{g['module']}: {g['kind']} at {g['level']}, {g['pages']} pages "
                     f"{g['va_start']:#x}-{g['va_end']:#x} in {g['pgds']} PGD(s)")
        fs.append(d)
    for e in r["list_errors"]:
        d = dict(e)
        d["kind"] = "list-error"
        d["text"] = f"list error: {e.get('message')}"
        fs.append(d)
    summary = (f"{r['checked_pages']} pages of {r['modules']} module(s) in {r['checked_pgds']} page directories: "
               + ("all mapped alike" if r["ok"] else f"{len(r['groups'])} divergent group(s), "
                  f"{len(r['list_errors'])} list error(s)"))
    src = kernel.sources
    if not (opts.profile or opts.vmlinux):
        summary += f" (symbols {src.get('symbols')}; {src.get('types', '').split(' (')[0]})"
    return CheckResult("modcheck", "ok" if r["ok"] else "findings", summary, _limit(fs))


def _types_from_dump(target, opts, resolve_args):
    """None when the dump itself gives the kernel's symbols and types (kallsyms and BTF), else why not."""
    from .errors import XenscopeError
    from .linux.profile import Profile, Symbols
    if target.facts.get("vmcoreinfo") is None and target.facts.get("format") != "xc_core":
        return "no VMCOREINFO: not a Linux kernel dump"     # an xl dump-core file has none: its guest's own tables
    symbols = None
    try:
        if not opts.system_map:
            symbols = Symbols.from_dump(target, resolve_args)
        Profile.from_btf(target, symbols, resolve_args)
    except XenscopeError as e:
        return str(e)
    return None


def _log_path(opts, path):
    return opts.log or (_sibling(path, ".log") if opts.siblings else None)


def _dump_console(target, ctx):
    """``(DumpConsole, None)`` of the console text the dump holds, or ``(None, why not)``: read
    once a dump (:func:`~xenstructs.dumpconsole.console_of_kind`)."""
    if "console" not in ctx:
        from .dumpconsole import console_of_kind
        ctx["console"] = console_of_kind(target, ctx["kind"], ctx.get("host"))
    return ctx["console"]


def _check_faults(target, ctx, opts, path):
    from .fault.case import FaultInputs, explain_fault
    from .xen.console import parse_log, read_log
    log = _log_path(opts, path)
    if log:
        fields, _ = read_log(log)
        name, inputs = os.path.basename(log), FaultInputs(log=log)
    else:
        console, why = _dump_console(target, ctx)
        if console is None:
            return CheckResult("faults", "n.a.", "no log or error code: give --log, or put <dump>.log next to the "
                                                 f"dump (the dump's own console: {why})")
        fields, _ = parse_log(console.lines)
        name, inputs = console.name, FaultInputs(log_lines=console.lines, log_name=console.name)
    # the dump's own text always holds something: there a fault report is one with an error code
    # (Xen's FATAL PAGE FAULT / Unhandled #PF, an oops's #PF line); a register dump's cr2 (debug keys
    # 'd' and '0', a crash of another kind) is none
    if not any(k in fields for k in (("cr2", "error") if log else ("error",))):
        return CheckResult("faults", "n.a.", f"{name}: no page fault in it")
    r = explain_fault(target, inputs)
    s = r.get("state", {})
    err = r.get("error") or {}
    f = {"kind": "page-fault", "cpu": 0, "cr2": s.get("cr2"), "error": err.get("value"),
         "cause": r.get("cause"), "log": log or name, "source": "file" if log else "dump",
         "text": f"CPU 0: {r.get('cause')}"}
    return CheckResult("faults", "findings", f"page fault from {name}: {r.get('cause')}", [f])


def _console_summary(target, ctx, opts, path):
    """``(annotator summary, name, source)`` of the console log beside the dump, else of Xen's
    console ring in a Xen host dump; ``(None, why not, None)`` when neither is there."""
    from .xen.console import annotate_file, annotate_lines
    log = _log_path(opts, path)
    if log:
        return annotate_file(log)["summary"], os.path.basename(log), "file"
    if ctx.get("host") is None:
        return None, ("no console log: give --log, or put <dump>.log next to the dump (not a Xen host dump: "
                      "no Xen console ring in it)"), None
    console, why = _dump_console(target, ctx)
    if console is None:
        return None, f"no console log, and Xen's console ring in the dump was not read: {why}", None
    return annotate_lines(console.lines, version=ctx["host"].version)["summary"], console.name, "dump"


def _check_console(target, ctx, opts, path):
    """Xen's console (beside the dump, else its console ring in the dump): every refused MMU request
    (one causal chain each, with its root cause) and every crash block is a finding; a release
    build's silence is said."""
    summary, name, source = _console_summary(target, ctx, opts, path)
    if summary is None:
        return CheckResult("console", "n.a.", name)
    findings = [{"kind": "refused-request", "lines": chain["lines"], "request": chain["request"],
                 "root_cause": {k: chain["root_cause"].get(k) for k in ("kind", "mfn")},
                 "source": source, "text": chain["sentence"]} for chain in summary["chains"]]
    findings += [{"kind": "crash", "source": source,
                  "text": crash["story"][0] if crash["story"] else "a crash block"}
                 for crash in summary["crashes"]]
    if not findings:
        quiet = " (a release build, debug=n: mm.c refusals are not printed)" if any(
            "debug=n" in line for line in summary["story"]) else ""
        return CheckResult("console", "ok", f"{name}: {summary['lines']} lines, no refused request or crash{quiet}")
    kinds = {}
    for finding in findings:
        kinds[finding["kind"]] = kinds.get(finding["kind"], 0) + 1
    return CheckResult("console", "findings", f"{name}: " + ", ".join(f"{n} {k}" for k, n in kinds.items()),
                       _limit(findings))


def _guard(name, fn, *a):
    try:
        return fn(*a)
    except KeyboardInterrupt:
        raise
    except BaseException as e:              # noqa: BLE001 - one failing check never stops the others
        msg = str(e) or type(e).__name__
        if not _is_xenscope(e):
            msg = f"{type(e).__name__}: {msg}"
        return CheckResult(name, "error", msg.splitlines()[0] if msg else type(e).__name__)


def _is_xenscope(e):
    from .errors import XenscopeError
    return isinstance(e, XenscopeError)


def check_dump(path, options=None):
    """Run every applicable check on one dump, in this process; never raises for a bad dump.

    :param path: the dump file
    :param options: :class:`Options` (default: none given, siblings looked up)
    :returns: :class:`DumpReport` (``as_dict()`` is the JSON object of the module docstring)
    """
    from .targets import open_dump
    opts = options or Options()
    path = os.fspath(path)
    try:
        target = open_dump(path)
    except KeyboardInterrupt:
        raise
    except BaseException as e:              # noqa: BLE001
        msg = str(e) if _is_xenscope(e) else f"{type(e).__name__}: {e}"
        return DumpReport(path, "unreadable", [CheckResult("open", "error", msg)])
    try:
        syms = opts.xen_syms or (_sibling(path, ".map") if opts.siblings else None)
        try:
            kind, host, used = detect_kind(target, syms)
        except KeyboardInterrupt:
            raise
        except BaseException:               # noqa: BLE001
            kind, host, used = "unknown", None, None
        ctx = {"kind": kind, "host": host, "syms": used}
        rep = DumpReport(path, kind)
        rep.checks.append(_guard("paging", _check_paging, target, ctx))
        rep.checks.append(_guard("xen-frames", _check_xen_frames, target, ctx) if host is not None else
                          CheckResult("xen-frames", "n.a.", "not a Xen host dump"))
        rep.checks.append(_guard("p2m", _check_p2m, target, ctx, opts))
        rep.checks.append(_guard("modcheck", _check_modcheck, target, ctx, opts))
        rep.checks.append(_guard("faults", _check_faults, target, ctx, opts, path))
        rep.checks.append(_guard("console", _check_console, target, ctx, opts, path))
        if opts.pictures:
            from .report_html import pictures
            from .views import gather
            rep.pictures = pictures(gather(target, kind, used))
        return rep
    finally:
        try:
            target.close()
        except Exception:                   # noqa: BLE001
            pass


def check_many(paths, options=None, jobs=None, progress=None, isolate=True, dask=None):
    """Check many dumps (directories expanded by :func:`expand`), each in its own child process.

    Each dump is checked in a forked child (:func:`xenstructs.fleet.run_local` keeps ``jobs``
    children busy; each sends its report back through a pipe), so a dump that kills its child (a C
    library crashing on it) is reported ``unreadable`` (:func:`xenstructs.fleet.crashed_report`)
    and the others are unaffected.

    :param jobs: children at a time (default ``os.cpu_count()``)
    :param progress: optional ``progress(done, total, report)`` called as each dump finishes (and,
        when it has one, ``progress.started(path)`` as a dump's check starts on this machine)
    :param isolate: False checks in this process, one dump after the other (inside gdb or crash,
        where forking is not safe; the dump readers' own validation is the only guard there)
    :param dask: a Dask scheduler address (``tcp://host:8786``): each dump is checked on the
        cluster's workers instead (:func:`xenstructs.fleet.run_dask`; they read the same paths)
    :returns: list of :class:`DumpReport` in input order (identical for any ``jobs``, and on Dask)
    """
    from . import fleet
    files = expand(paths)
    if dask:
        return fleet.run_dask(files, options, dask, progress)
    jobs = max(1, int(jobs or os.cpu_count() or 1))
    if not isolate or not hasattr(os, "fork"):
        out = []
        for i, p in enumerate(files):
            started = getattr(progress, "started", None)
            if started:
                started(p)
            out.append(check_dump(p, options))
            if progress:
                progress(i + 1, len(files), out[i])
        return out
    fleet.preload()
    return fleet.run_local(files, options, jobs, progress)


def crashed_report(path, status):
    """The report of a dump whose child ended with wait ``status`` (see :mod:`xenstructs.fleet`)."""
    from .fleet import crashed_report as report
    return report(path, status)
