"""Linux kernel commands: tasks, modules, modcheck, profile."""

import time

from ..errors import XenscopeError
from . import address, arg, command, group, tabulate, va_range, number
from .paging import PAGING

KERNEL = group(
    "kernel types and symbols",
    arg("--vmlinux", metavar="PATH", help="vmlinux with DWARF (offsets and symbols; slow on a big "
        "one: save a profile once with 'xenscope profile'; default: the dump's own BTF and kallsyms)"),
    arg("--profile", metavar="FILE", help="kernel profile JSON (xenscope profile VMLINUX -o FILE)"),
    arg("--system-map", metavar="FILE", help="System.map, or a saved /proc/kallsyms"),
    arg("--kaslr-offset", type=address, help="KASLR offset (default: KERNELOFFSET, or found)"))


def resolve_args(args):
    """The paging options of ``args`` as :func:`~xenstructs.context.resolve` keywords."""
    return {"cr3": args.cr3, "mode": args.mode, "cpu": args.cpu, "efer": args.efer, "cr4": args.cr4,
            "maxphyaddr": args.maxphyaddr}


def kernel_of(target, args):
    """The :class:`~xenstructs.linux.kernel.Kernel` the options describe; without --vmlinux or
    --profile, the host's own kernel types first (gdb with a vmlinux loaded, crash)."""
    from ..linux.kernel import open_kernel
    from .execute import active_front
    if args.vmlinux and args.profile:
        raise XenscopeError("give --vmlinux or --profile, not both")
    if not (args.vmlinux or args.profile):
        kernel = active_front().kernel(target, args)
        if kernel is not None:
            return kernel
    return open_kernel(target, vmlinux=args.vmlinux, profile=args.profile, system_map=args.system_map,
                       kaslr_offset=args.kaslr_offset, resolve_args=resolve_args(args))


def _hex(v):
    return "-" if v is None else f"{v:#x}"


def _list_error_lines(errs):
    return [f"warning: {e['message']}" for e in errs]


def _sources_line(r):
    """Where the kernel's symbols and structure offsets came from (``kernel.sources``)."""
    src = (r.get("kernel") or {}).get("sources") or {}
    return [f"symbols: {src.get('symbols', '?')}; types: {src.get('types', '?')}"]


def _list_status(result):
    return 1 if result["list_errors"] else 0


# ---------------------------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------------------------

def _tasks_render(r, args):
    rows = []
    for t in r["tasks"]:
        pgd = _hex(t["pgd"]) + (" (active_mm)" if t["pgd_from"] == "active_mm" else "")
        rows.append((t["pid"], t["comm"], _hex(t["task"]), _hex(t["mm"]), pgd,
                     t["error"] or _hex(t["cr3"])))
    out = [tabulate(rows, headers=("pid", "comm", "task", "mm", "pgd", "cr3"), tablefmt="plain")]
    out += _list_error_lines(r["list_errors"]) + _sources_line(r)
    return "\n".join(out)


@command("tasks", "List tasks (init_task.tasks): pid, comm, mm, page directory and its CR3 value.",
         arguments=[KERNEL, PAGING], render=_tasks_render, status=_list_status)
def tasks(target, args):
    from ..linux.tasks import for_each_task
    k = kernel_of(target, args)
    ts = for_each_task(k)
    return {"kernel": k.describe(), "tasks": [t.as_dict() for t in ts],
            "list_errors": [ts.error.as_dict()] if ts.error else []}


# ---------------------------------------------------------------------------------------------
# modules
# ---------------------------------------------------------------------------------------------

def _modules_render(r, args):
    rows = []
    for m in r["modules"]:
        regs = ", ".join(f"{g['name']} {g['va']:#x}+{g['size']:#x}" for g in m["regions"])
        rows.append((m["name"], _hex(m["module"]), m["pages"], m["error"] or regs))
    out = [tabulate(rows, headers=("name", "module", "pages", "regions"), tablefmt="plain")]
    out += _list_error_lines(r["list_errors"]) + _sources_line(r)
    return "\n".join(out)


@command("modules", "List loaded modules (the modules list): name, memory regions, pages.",
         arguments=[KERNEL, PAGING], render=_modules_render, status=_list_status)
def modules(target, args):
    from ..linux.modules import for_each_module
    k = kernel_of(target, args)
    ms = for_each_module(k)
    return {"kernel": k.describe(), "modules": [m.as_dict() for m in ms],
            "list_errors": [ms.error.as_dict()] if ms.error else []}


# ---------------------------------------------------------------------------------------------
# modcheck
# ---------------------------------------------------------------------------------------------

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
    out += _list_error_lines(r["list_errors"]) + _sources_line(r)
    return "\n".join(out)


@command("modcheck", "Is every module page mapped in every task's page directory as in init_mm.pgd? "
                     "(exit 1 when not)",
         arguments=[
             arg("--module", action="append", metavar="NAME", help="only this module (repeatable)"),
             arg("--range", type=va_range, metavar="A-B", help="only pages in A-B (hex, end exclusive); "
                 "pages in it outside any module are checked too"),
             arg("--vmalloc", action="store_true", help="also every vmalloc area (vmap_area_list)"),
             arg("--task", type=number, metavar="PID", help="only this task's page directory"),
             arg("--exhaustive", action="store_true", help="walk every page in every directory "
                 "(slow; the default compares upper-level entries and walks only where they differ)"),
             KERNEL, PAGING],
         render=_modcheck_render, status=lambda r: 0 if r["ok"] else 1)
def modcheck(target, args):
    from ..linux.modcheck import modcheck_report
    return modcheck_report(kernel_of(target, args), modules=args.module, vmalloc=args.vmalloc,
                           va_range=args.range, pid=args.task, exhaustive=args.exhaustive)


# ---------------------------------------------------------------------------------------------
# profile
# ---------------------------------------------------------------------------------------------

def _xen_profile_render(r, args):
    out = [f"{r['xen_syms']}: Xen {r['xen'] or '?'}, build-id {', '.join(r['build_ids'])}, read in {r['seconds']} s"]
    rows = [(f"{name}.{member}", off) for name, members in sorted(r["structs"].items())
            for member, off in sorted(members.items())]
    out.append(tabulate(rows, headers=("member", "offset"), tablefmt="plain"))
    if r["output"]:
        out.append(f"written to {r['output']} (give it to the Xen commands with --xen-syms)")
    return "\n".join(out)


def _profile_render(r, args):
    if r.get("kind") == "xen":
        return _xen_profile_render(r, args)
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


@command("profile", "Extract the kernel offsets and symbols xenscope needs from a vmlinux (DWARF), or "
                    "the Xen structure offsets from a xen-syms with DWARF, into a small JSON profile.",
         target=None,
         arguments=[arg("vmlinux", help="vmlinux or xen-syms with DWARF debug info"),
                    arg("-o", "--output", metavar="FILE", help="write the profile to FILE")],
         render=_profile_render)
def profile(target, args):
    from ..linux.profile import Profile
    from ..xen import profile as xen_profile
    t0 = time.perf_counter()
    if xen_profile.is_xen_syms(args.vmlinux):
        prof = xen_profile.from_xen_syms(args.vmlinux)
        if args.output:
            prof.to_json(args.output)
        return dict(prof.to_dict(), kind="xen", xen_syms=args.vmlinux, output=args.output,
                    seconds=round(time.perf_counter() - t0, 3))
    prof = Profile.from_dwarf(args.vmlinux)
    if args.output:
        prof.to_json(args.output)
    d = prof.to_dict()
    d["seconds"] = round(time.perf_counter() - t0, 3)
    d["output"] = args.output
    d["module_variant"] = prof.module_variant
    return d


