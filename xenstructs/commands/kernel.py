"""Linux kernel commands: tasks, modules, modcheck, profile."""

import time
from typing import Callable, Optional

from ..errors import XenscopeError
from . import address, command, number, tabulate, va_range
from .paging import _paging_args

# A front end that knows the kernel's types (gdb with a vmlinux loaded) sets this to a function
# ``(target, args) -> Kernel`` used when neither --vmlinux nor --profile is given.
kernel_provider: Optional[Callable] = None


def _kernel_args(p):
    g = p.add_argument_group("kernel types and symbols")
    g.add_argument("--vmlinux", metavar="PATH", help="vmlinux with DWARF (offsets and symbols; slow on a big "
                   "one: save a profile once with 'xenscope profile')")
    g.add_argument("--profile", metavar="FILE", help="kernel profile JSON (xenscope profile VMLINUX -o FILE)")
    g.add_argument("--system-map", metavar="FILE", help="System.map, or a saved /proc/kallsyms")
    g.add_argument("--kaslr-offset", type=address, help="KASLR offset (default: KERNELOFFSET, or found)")
    _paging_args(p)


def kernel_of(target, args):
    """The :class:`~xenstructs.linux.kernel.Kernel` the options describe."""
    from ..linux.kernel import Kernel
    from ..linux.profile import Profile, Symbols
    if args.vmlinux and args.profile:
        raise XenscopeError("give --vmlinux or --profile, not both")
    if not (args.vmlinux or args.profile) and kernel_provider is not None:
        k = kernel_provider(target, args)       # a host's own types (gdb with a vmlinux), or None
        if k is not None:
            return k
    profile = None
    if args.vmlinux:
        profile = Profile.from_dwarf(args.vmlinux)
    elif args.profile:
        profile = Profile.from_json(args.profile)
    symbols = Symbols.from_file(args.system_map) if args.system_map else None
    if profile is None and target.facts.get("vmcoreinfo") is None:
        raise XenscopeError("the kernel's structure offsets are unknown: give --vmlinux VMLINUX or "
                            "--profile FILE (xenscope profile VMLINUX -o FILE)")
    ra = {"cr3": args.cr3, "mode": args.mode, "cpu": args.cpu, "efer": args.efer, "cr4": args.cr4,
          "maxphyaddr": args.maxphyaddr}
    return Kernel(target, profile, symbols, kaslr_offset=args.kaslr_offset, resolve_args=ra)


def _hex(v):
    return "-" if v is None else f"{v:#x}"


def _list_error_lines(errs):
    return [f"warning: {e['message']}" for e in errs]


# ---------------------------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------------------------

@command("tasks", "List tasks (init_task.tasks): pid, comm, mm, page directory and its CR3 value.")
def tasks(p):
    _kernel_args(p)


def _tasks_run(target, args):
    from ..linux.tasks import for_each_task
    k = kernel_of(target, args)
    ts = for_each_task(k)
    return {"kernel": k.describe(), "tasks": [t.as_dict() for t in ts],
            "list_errors": [ts.error.as_dict()] if ts.error else []}


def _tasks_render(r, args):
    rows = []
    for t in r["tasks"]:
        pgd = _hex(t["pgd"]) + (" (active_mm)" if t["pgd_from"] == "active_mm" else "")
        rows.append((t["pid"], t["comm"], _hex(t["task"]), _hex(t["mm"]), pgd,
                     t["error"] or _hex(t["cr3"])))
    out = [tabulate(rows, headers=("pid", "comm", "task", "mm", "pgd", "cr3"), tablefmt="plain")]
    out += _list_error_lines(r["list_errors"])
    return "\n".join(out)


tasks.run, tasks.render = _tasks_run, _tasks_render
tasks.status = lambda r: 1 if r["list_errors"] else 0


# ---------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------

@command("modules", "List loaded modules (the modules list): name, memory regions, pages.")
def modules(p):
    _kernel_args(p)


def _modules_run(target, args):
    from ..linux.modules import for_each_module
    k = kernel_of(target, args)
    ms = for_each_module(k)
    return {"kernel": k.describe(), "modules": [m.as_dict() for m in ms],
            "list_errors": [ms.error.as_dict()] if ms.error else []}


def _modules_render(r, args):
    rows = []
    for m in r["modules"]:
        regs = ", ".join(f"{g['name']} {g['va']:#x}+{g['size']:#x}" for g in m["regions"])
        rows.append((m["name"], _hex(m["module"]), m["pages"], m["error"] or regs))
    out = [tabulate(rows, headers=("name", "module", "pages", "regions"), tablefmt="plain")]
    out += _list_error_lines(r["list_errors"])
    return "\n".join(out)


modules.run, modules.render = _modules_run, _modules_render
modules.status = lambda r: 1 if r["list_errors"] else 0


# ---------------------------------------------------------------------------------------------
# modcheck
# ---------------------------------------------------------------------------------------------

@command("modcheck", "Is every module page mapped in every task's page directory as in init_mm.pgd? "
                     "(exit 1 when not)")
def modcheck(p):
    p.add_argument("--module", action="append", metavar="NAME", help="only this module (repeatable)")
    p.add_argument("--range", type=va_range, metavar="A-B", help="only pages in A-B (hex, end exclusive); "
                   "pages in it outside any module are checked too")
    p.add_argument("--vmalloc", action="store_true", help="also every vmalloc area (vmap_area_list)")
    p.add_argument("--task", type=number, metavar="PID", help="only this task's page directory")
    p.add_argument("--exhaustive", action="store_true", help="walk every page in every directory "
                   "(slow; the default compares upper-level entries and walks only where they differ)")
    _kernel_args(p)


def _modcheck_run(target, args):
    from ..linux.modcheck import check
    k = kernel_of(target, args)
    t0 = time.perf_counter()
    rep, info = check(k, modules=args.module, vmalloc=args.vmalloc, va_range=args.range, pid=args.task,
                      method="exhaustive" if args.exhaustive else "fast")
    return {"kernel": k.describe(), "ok": rep.ok and not info["list_errors"], "mode": rep.mode,
            "reference_root": rep.reference_root, "checked_pages": rep.checked_pages,
            "checked_pgds": rep.checked_pgds, "groups": [g.as_dict() for g in rep.groups],
            "unmapped_in_reference": rep.unmapped_in_reference, "list_errors": info["list_errors"],
            "skipped_tasks": info["skipped_tasks"], "tasks": info["tasks"], "modules": info["modules"],
            "vmalloc_areas": info["vmalloc_areas"], "shared_with_reference": info["shared_with_reference"],
            "method": "exhaustive" if args.exhaustive else "fast",
            "seconds": round(time.perf_counter() - t0, 3)}


def _modcheck_render(r, args):
    out = [f"modcheck ({r['method']}): {r['checked_pages']} pages of {r['modules']} module(s)"
           f"{' and ' + str(r['vmalloc_areas']) + ' vmalloc areas' if r['vmalloc_areas'] else ''} in "
           f"{r['checked_pgds']} page directories ({r['tasks']} tasks) against init_mm.pgd "
           f"{r['reference_root']:#x} ({r['mode']})"]
    if not r["groups"]:
        out.append("every page is mapped alike in every directory")
    for g in r["groups"]:
        tasks = ", ".join(f"{p} {c}" for p, c in g["tasks"][:8]) + (" ..." if len(g["tasks"]) > 8 else "")
        out.append(f"{g['module']}: {g['kind']} at {g['level']} ({g['top_entry']} {g['top_index']:#x}), "
                   f"{g['pages']} pages {g['va_start']:#x}-{g['va_end']:#x}, {g['pgds']} PGDs: {tasks}")
        out.append(f"  {g['explanation']}")
    for lab, n in sorted(r["unmapped_in_reference"].items()):
        out.append(f"note: {n} page(s) of {lab} are not mapped in init_mm.pgd either (not compared)")
    for t in r["skipped_tasks"]:
        out.append(f"note: task {t['pid']} {t['comm']} skipped: {t['why']}")
    out += _list_error_lines(r["list_errors"])
    return "\n".join(out)


modcheck.run, modcheck.render = _modcheck_run, _modcheck_render
modcheck.status = lambda r: 0 if r["ok"] else 1


# ---------------------------------------------------------------------------------------------
# profile
# ---------------------------------------------------------------------------------------------

@command("profile", "Extract the kernel offsets and symbols xenscope needs from a vmlinux (DWARF) "
                    "into a small JSON profile.", needs_target=False)
def profile(p):
    p.add_argument("vmlinux", help="vmlinux with DWARF debug info")
    p.add_argument("-o", "--output", metavar="FILE", help="write the profile to FILE")


def _profile_run(target, args):
    from ..linux.profile import Profile
    t0 = time.perf_counter()
    prof = Profile.from_dwarf(args.vmlinux)
    if args.output:
        prof.to_json(args.output)
    d = prof.to_dict()
    d["seconds"] = round(time.perf_counter() - t0, 3)
    d["output"] = args.output
    d["module_variant"] = prof.module_variant
    return d


def _profile_render(r, args):
    m = r["meta"]
    out = [f"{m.get('vmlinux')}: Linux {m.get('kernel_version') or '?'}, build-id {m.get('build_id') or '-'}, "
           f"DWARF {m.get('dwarf_version')}, {m.get('cus_read')} of {m.get('cus_total')} CUs read in "
           f"{r['seconds']} s; module layout {r['module_variant'] or '?'}"]
    out.append(tabulate(sorted(r["offsets"].items()), headers=("offset", "bytes"), tablefmt="plain"))
    if r["symbols"]:
        out.append(tabulate([(k, f"{v:#x}") for k, v in sorted(r["symbols"].items())],
                            headers=("symbol", "link address"), tablefmt="plain"))
    if r["output"]:
        out.append(f"written to {r['output']}")
    return "\n".join(out)


profile.run, profile.render = _profile_run, _profile_render
