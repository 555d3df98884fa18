#!/usr/bin/env python3
"""Peak memory of every command on every dump: each run is one child process, its peak RSS taken
from ``os.wait4`` (``ru_maxrss`` of that child alone, started by a small launcher: Linux carries the
exec'ing process's high-water mark into it), and held to a bound that grows with the
dump's RAM, not with what the dump claims.

    .venv/bin/python bench/memory.py [DUMP...] [--json FILE] [--only COMMAND]

Without DUMP: every bundled core (``cores/*.core``, ``cores/*.xc``); Xen host cores are run with
and without their ``.map``, kernel cores with their ``.vmlinux`` when there is one.

The bound: ``RAM / 4 + MARGIN``, where RAM is the physical memory the dump holds (the sum of its
``phys_ranges()``, i.e. ELF ``PT_LOAD`` sizes, the kdump bitmap's pages, an xl dump-core file's
pages) and ``MARGIN`` a fixed allowance for the interpreter, numpy, the readers and the fixed-size
tables (see :data:`MARGIN_MIB` for the measurement it comes from). Exit 1 when a run exceeds it.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, TOP)

# Measured (bench/memory.py on the bundled cores, 2-core CI machine): a command's fixed cost is the
# interpreter with numpy, construct and the readers, 40-60 MiB; the largest fixed-size work tables
# (page-table enumeration chunks of TABLE_CHUNK tables, the frame-table and P2M read chunks) add
# well under 100 MiB. 200 MiB leaves room for a larger Python or numpy without hiding a growth.
MARGIN_MIB = 200
RAM_DIVISOR = 4                       # per byte of RAM the dump holds, a quarter byte may be used

KERNEL_VA = {"i386": 0xC0000000}      # an address for walk/vtop (any answer will do: memory is measured)


def dump_ram(path):
    """Bytes of physical memory the dump holds (its ``phys_ranges()``), and its kind."""
    from xenstructs.targets import open_dump
    t = open_dump(path)
    try:
        ram = sum(end - start for start, end in t.phys_ranges())
        machine = t.facts.get("machine", "x86_64")
        return ram, machine
    finally:
        t.close()


def commands_for(path, machine):
    """``[(label, argv)]``: every command that takes a dump, with the options that make it work on
    this one (symbols next to the core), plus the Xen commands without the .map for host cores."""
    base = os.path.splitext(path)[0]
    va = hex(KERNEL_VA.get(machine, 0xFFFFFFFF81000000))
    syms = [base + ".map"] if os.path.exists(base + ".map") else []
    kernel = ["--vmlinux", base + ".vmlinux"] if os.path.exists(base + ".vmlinux") else []
    plain = [("info", []), ("walk", [va]), ("vtop", [va]), ("maps", []), ("maps --limit 5", ["--limit", "5"]),
             ("read-phys", ["0x1000", "256"]), ("stack", []), ("fault", []), ("check", [])]
    xen = [("page", ["0x100"]), ("frames --summary", ["--summary"]), ("frames", []), ("domains", []),
           ("m2p", ["0x100"]), ("pt-audit", []), ("refs", ["0x100"]), ("p2m-check", []), ("p2m", ["0"])]
    linux = [("tasks", kernel), ("modules", kernel), ("modcheck", kernel)]
    out = []
    for label, extra in plain + linux:
        out.append((label, [label.split()[0], path] + extra))
    for label, extra in xen:
        out.append((label, [label.split()[0], path] + extra))
        if syms and path.endswith(".core"):            # a Xen host core: its xen-syms .map
            out.append((label + " (.map)", [label.split()[0], path] + extra + ["--xen-syms", syms[0]]))
        elif syms and label.startswith("p2m"):          # an xl dump-core file: the guest's System.map
            out.append((label + " (.map)", [label.split()[0], path] + extra + ["--kernel-syms", syms[0]]))
    if syms and path.endswith(".core"):
        out.append(("check (.map)", ["check", path, "--xen-syms", syms[0]]))
    return out


# Linux carries the pre-exec memory's high-water mark into ru_maxrss across exec: a child exec'd
# straight from this (large) process would report at least our own peak. A small launcher process
# starts each command and reports the command's own ru_maxrss.
LAUNCHER = """
import os, subprocess, sys, time
deadline = time.monotonic() + float(sys.argv[1])
proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while True:
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid:
        break
    if time.monotonic() > deadline:
        proc.kill()
        pid, status, usage = os.wait4(proc.pid, 0)
        break
    time.sleep(0.01)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def run_one(argv, timeout=300):
    """Run ``xenscope ARGV`` as a child of a small launcher: (exit status, peak RSS in bytes, seconds)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", LAUNCHER, str(timeout), sys.executable, "-m", "xenstructs.cli"]
                         + argv, cwd=TOP, capture_output=True, text=True, timeout=timeout + 60).stdout.split()
    return int(out[0]), int(out[1]) * 1024, time.perf_counter() - t0


def bound_of(ram):
    return ram // RAM_DIVISOR + (MARGIN_MIB << 20)


def measure(dumps, only=None, out=sys.stdout):
    """Run every command on every dump; print one line per run; return (rows, all within bounds)."""
    rows, ok = [], True
    for path in dumps:
        ram, machine = dump_ram(path)
        bound = bound_of(ram)
        print(f"{os.path.relpath(path, TOP)}: RAM held {ram / (1 << 20):.1f} MiB, bound "
              f"{bound / (1 << 20):.0f} MiB (RAM/{RAM_DIVISOR} + {MARGIN_MIB} MiB)", file=out, flush=True)
        for label, argv in commands_for(path, machine):
            if only and label.split()[0] != only:
                continue
            status, rss, secs = run_one(argv)
            within = rss <= bound
            ok &= within
            rows.append({"dump": os.path.relpath(path, TOP), "command": label, "exit": status, "rss": rss,
                         "bound": bound, "seconds": round(secs, 2)})
            print(f"    {label:28s} exit {status:3d}  peak RSS {rss / (1 << 20):8.1f} MiB  {secs:6.2f} s"
                  f"{'' if within else '   OVER THE BOUND'}", file=out, flush=True)
    return rows, ok


def bundled():
    return sorted(glob.glob(os.path.join(TOP, "cores", "*.core")) + glob.glob(os.path.join(TOP, "cores", "*.xc")))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dumps", nargs="*", help="dumps (default: every bundled core)")
    ap.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    ap.add_argument("--only", metavar="COMMAND", help="only this subcommand")
    a = ap.parse_args(argv)
    rows, ok = measure(a.dumps or bundled(), a.only)
    worst = max(rows, key=lambda r: r["rss"] / r["bound"]) if rows else None
    if worst:
        print(f"peak RSS: {len(rows)} runs; highest share of its bound: {worst['command']} on {worst['dump']} "
              f"{worst['rss'] / (1 << 20):.1f} of {worst['bound'] / (1 << 20):.0f} MiB "
              f"({'ok' if ok else 'OVER THE BOUND'})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
