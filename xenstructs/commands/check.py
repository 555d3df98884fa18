"""``check``: every applicable check over a batch of dumps (see :mod:`xenstructs.check`).

Exit status: 0 clean, 1 findings or a check error, 2 when any dump could not be read.
"""

import os
import sys

from . import UsageError, arg, command, number, tabulate


class _Progress:
    """The progress line on ``stream`` (tqdm's: dumps done / total, the dumps being checked, elapsed,
    rate), only when it is a TTY; with ``emit``, each report is also handed to ``emit(report)`` as
    its dump finishes (the progress line cleared while it is written)."""

    def __init__(self, stream, total, emit=None):
        self.emit, self.running, self.bar = emit, [], None
        if total and hasattr(stream, "isatty") and stream.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, file=stream, unit=" dumps", leave=False, **_width(stream),
                            bar_format="{n_fmt}/{total_fmt} dumps |{bar}| {elapsed} elapsed, {rate_fmt}  {desc}")

    def started(self, path):
        self.running.append(os.path.basename(path))
        self._name()

    def __call__(self, done, total, report):
        name = os.path.basename(report.dump)
        if name in self.running:
            self.running.remove(name)
        if self.emit:
            if self.bar is not None:
                self.bar.clear()
            self.emit(report)
        if self.bar is not None:
            self._name(name)
            self.bar.update(done - self.bar.n)
            self.bar.refresh()                  # every count is shown (update alone is rate-limited)

    def _name(self, finished=None):
        if self.bar is None:
            return
        now = ", ".join(self.running[:2]) + (f" +{len(self.running) - 2}" if len(self.running) > 2 else "")
        self.bar.set_description_str(f"checking {now}" if now else f"done {finished}", refresh=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _width(stream):
    """tqdm's size options: the terminal's, followed as it changes; 100 columns by 24 lines on a
    terminal that says it has none (a pseudo-terminal nobody sized: tqdm would hide its line)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        columns = 0
    return {"dynamic_ncols": True} if columns else {"ncols": 100, "nrows": 24}


def _json_line(report):
    import json
    from .execute import active_front
    front = active_front()
    front.write(json.dumps(report.as_dict(), sort_keys=True))
    front.flush()


def _render(reports, args):
    if args.json_lines:
        return None                         # written line by line as each dump finished
    rows = [(r["dump"], r["kind"], c["name"], c["status"], c["summary"]) for r in reports for c in r["checks"]]
    out = [tabulate(rows, headers=("dump", "kind", "check", "status", "summary"), tablefmt="simple",
                    disable_numparse=True)]
    details = [(r, c) for r in reports for c in r["checks"] if c["findings"] or c["status"] == "error"]
    if details:
        out.append("")
        out.append("details:")
    for r, c in details:
        out.append(f"{r['dump']}: {c['name']} ({c['status']}): {c['summary']}")
        for f in c["findings"]:
            out.append(f"  {f.get('text', f)}")
    unreadable = sum(r["kind"] == "unreadable" for r in reports)
    with_findings = sum(c["status"] == "findings" for r in reports for c in r["checks"])
    errors = sum(c["status"] == "error" for r in reports for c in r["checks"] if r["kind"] != "unreadable")
    out.append(f"\n{len(reports)} dump(s): {unreadable} unreadable, {with_findings} check(s) with findings, "
               f"{errors} check error(s)")
    return "\n".join(out)


def _status(reports):
    if any(r["kind"] == "unreadable" for r in reports):
        return 2
    return 1 if any(c["status"] in ("findings", "error") for r in reports for c in r["checks"]) else 0


@command("check", "Run every check that applies (paging, xen-frames, p2m, modcheck, faults) on each dump; "
                  "exit 0 clean, 1 findings, 2 a dump could not be read.", target=None,
         arguments=[
             arg("dumps", nargs="+", metavar="DUMP|DIR", help="dump files, or directories (their regular files)"),
             arg("--jobs", "-j", type=number, default=None, help="worker processes (default: CPU count)"),
             arg("--xen-syms", metavar="P", help="xen-syms or its .map (default: <dump>.map next to a Xen host dump)"),
             arg("--kernel-syms", metavar="System.map",
                 help="dom0's System.map: where dom0's P2M list is on host dumps (default: every PV domain's P2M is "
                      "found by its shared_info)"),
             arg("--profile", metavar="P", help="kernel profile JSON: run modcheck on kernel dumps"),
             arg("--vmlinux", metavar="P", help="vmlinux with DWARF: run modcheck on kernel dumps"),
             arg("--system-map", metavar="P", help="System.map for modcheck"),
             arg("--log", metavar="FILE", help="console/oops excerpt for the faults check (default: <dump>.log)"),
             arg("--no-siblings", action="store_true", help="do not look for <dump>.map / <dump>.log"),
             arg("--json-lines", action="store_true",
                 help="one JSON object per line (--json's objects), written as each dump finishes"),
             arg("--dask", metavar="SCHEDULER", help="check on the Dask cluster whose scheduler is at this "
                 "address (tcp://HOST:8786); its workers read the same paths (pip install 'xenscope[dask]')"),
             arg("--html", metavar="FILE", help="also write a self-contained HTML report of the batch to FILE")],
         render=_render, status=_status)
def check(target, args):
    from ..check import Options, check_many, expand
    from .execute import active_front
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be >= 1")
    if args.vmlinux and args.profile:
        raise UsageError("give --vmlinux or --profile, not both")
    from ..inputs import require_regular
    for path in (args.xen_syms, args.kernel_syms, args.profile, args.vmlinux, args.system_map, args.log):
        if path:
            require_regular(path)           # refused once, in one line, not per dump
    opts = Options(xen_syms=args.xen_syms, kernel_syms=args.kernel_syms, profile=args.profile,
                   vmlinux=args.vmlinux, system_map=args.system_map, log=args.log,
                   siblings=not args.no_siblings)
    if args.json and args.json_lines:
        raise UsageError("give --json or --json-lines, not both")
    if args.dask and args.jobs is not None:
        raise UsageError("give --jobs or --dask, not both (the cluster's workers say how many run at once)")
    if args.html:
        opts.pictures = True
        _writable(args.html)
    can_fork = active_front().can_fork
    jobs = args.jobs if args.jobs is not None or can_fork else 1
    files = expand(args.dumps)
    progress = _Progress(sys.stderr, len(files), emit=_json_line if args.json_lines else None)
    try:
        reports = check_many(files, opts, jobs=jobs, progress=progress, isolate=can_fork, dask=args.dask)
    finally:
        progress.close()
    if args.html:
        from ..report_html import write_report
        write_report(args.html, reports)
    return [r.as_dict() for r in reports]


def _writable(path):
    """Refuse an HTML report path whose directory is missing, before any dump is checked."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"--html: no directory {directory}")
    if os.path.isdir(path):
        raise UsageError(f"--html: {path} is a directory")
