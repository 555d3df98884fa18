"""``check``: every applicable check over a batch of dumps (see :mod:`xenstructs.check`).

Exit status: 0 clean, 1 findings or a check error, 2 when any dump could not be read.
"""

import os
import sys

from . import UsageError, arg, command, number, tabulate


class _Progress:
    """A one-line progress bar on ``stream``; silent unless it is a TTY."""

    def __init__(self, stream, width=30):
        self.stream, self.width = stream, width
        self.on = hasattr(stream, "isatty") and stream.isatty()

    def __call__(self, done, total, report):
        if not self.on or not total:
            return
        filled = self.width * done // total
        name = os.path.basename(report.dump)[:30]
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {name:<30}")
        if done == total:
            self.stream.write("\r" + " " * (self.width + 45) + "\r")
        self.stream.flush()


def _render(reports, args):
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
             arg("--no-siblings", action="store_true", help="do not look for <dump>.map / <dump>.log")],
         render=_render, status=_status)
def check(target, args):
    from ..check import Options, check_many
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
    can_fork = active_front().can_fork
    jobs = args.jobs if args.jobs is not None or can_fork else 1
    reports = check_many(args.dumps, opts, jobs=jobs, progress=_Progress(sys.stderr), isolate=can_fork)
    return [r.as_dict() for r in reports]
