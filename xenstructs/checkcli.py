"""``xenscope check DUMP... | DIR [options]``: every applicable check over a batch of dumps.

See :mod:`xenstructs.check` for the checks, the JSON schema and the exit status (0 clean,
1 findings or a check error, 2 when any dump could not be read).
"""

import argparse
import json
import os
import sys

from .check import Options, check_many, exit_status
from .commands import HelpShown, UsageError, XenArgumentParser, number, tabulate


def parser():
    p = XenArgumentParser(prog="xenscope check", formatter_class=argparse.RawDescriptionHelpFormatter,
                          description="Run every check that applies (paging, xen-frames, p2m, modcheck, faults) "
                                      "on each dump; exit 0 clean, 1 findings, 2 a dump could not be read.")
    p.add_argument("dumps", nargs="+", metavar="DUMP|DIR", help="dump files, or directories (their regular files)")
    p.add_argument("--json", action="store_true", help="one JSON object per dump (a list)")
    p.add_argument("--jobs", "-j", type=number, default=None, help="worker processes (default: CPU count)")
    p.add_argument("--xen-syms", metavar="P", help="xen-syms or its .map (default: <dump>.map next to a Xen host dump)")
    p.add_argument("--kernel-syms", metavar="System.map", help="dom0's System.map: check dom0's P2M on host dumps")
    p.add_argument("--profile", metavar="P", help="kernel profile JSON: run modcheck on kernel dumps")
    p.add_argument("--vmlinux", metavar="P", help="vmlinux with DWARF: run modcheck on kernel dumps")
    p.add_argument("--system-map", metavar="P", help="System.map for modcheck")
    p.add_argument("--log", metavar="FILE", help="console/oops excerpt for the faults check (default: <dump>.log)")
    p.add_argument("--no-siblings", action="store_true", help="do not look for <dump>.map / <dump>.log")
    return p


class _Progress:
    """A one-line progress bar on ``stream``; silent unless it is a TTY."""

    def __init__(self, stream, width=30):
        self.stream, self.width = stream, width
        self.on = hasattr(stream, "isatty") and stream.isatty()

    def __call__(self, done, total, report):
        if not self.on or not total:
            return
        k = self.width * done // total
        name = os.path.basename(report.dump)[:30]
        self.stream.write(f"\r[{'#' * k}{'.' * (self.width - k)}] {done}/{total} {name:<30}")
        if done == total:
            self.stream.write("\r" + " " * (self.width + 45) + "\r")
        self.stream.flush()


def render(reports):
    rows = [(r.dump, r.kind, c.name, c.status, c.summary) for r in reports for c in r.checks]
    out = [tabulate(rows, headers=("dump", "kind", "check", "status", "summary"), tablefmt="simple",
                    disable_numparse=True)]
    details = [(r, c) for r in reports for c in r.checks if c.findings or c.status == "error"]
    if details:
        out.append("")
        out.append("details:")
    for r, c in details:
        out.append(f"{r.dump}: {c.name} ({c.status}): {c.summary}")
        for f in c.findings:
            out.append(f"  {f.get('text', f)}")
    n_bad = sum(not r.readable for r in reports)
    n_find = sum(c.status == "findings" for r in reports for c in r.checks)
    n_err = sum(c.status == "error" for r in reports for c in r.checks if r.readable)
    out.append(f"\n{len(reports)} dump(s): {n_bad} unreadable, {n_find} check(s) with findings, "
               f"{n_err} check error(s)")
    return "\n".join(out)


def run(argv, out=sys.stdout, err=sys.stderr):
    """``xenscope check`` with ``argv`` (after ``check``); return the exit status."""
    try:
        args = parser().parse_args(argv)
    except HelpShown:
        return 0
    except UsageError as e:
        print(str(e), file=err)
        return 2
    if args.jobs is not None and args.jobs < 1:
        print("xenscope check: --jobs must be >= 1", file=err)
        return 2
    if args.vmlinux and args.profile:
        print("xenscope check: give --vmlinux or --profile, not both", file=err)
        return 2
    opts = Options(xen_syms=args.xen_syms, kernel_syms=args.kernel_syms, profile=args.profile,
                   vmlinux=args.vmlinux, system_map=args.system_map, log=args.log,
                   siblings=not args.no_siblings)
    reports = check_many(args.dumps, opts, jobs=args.jobs, progress=_Progress(err))
    if args.json:
        json.dump([r.as_dict() for r in reports], out, indent=1, sort_keys=True)
        out.write("\n")
    else:
        print(render(reports), file=out)
    return exit_status(reports)
