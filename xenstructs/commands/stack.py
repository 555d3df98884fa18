"""stack: scan a vCPU's kernel stack for return addresses and exception frames (xenctx-like)."""

from ..context import resolve
from ..errors import XenscopeError
from ..stack import TextSymbols, pick_sp, scan_stack
from . import address, arg, command, number

MAX_DEPTH = 1 << 20


def _render(r, args):
    w = 16 if r["width"] == 8 else 8
    ip = "?" if r["ip"] is None else f"{r['ip']:#0{w + 2}x}"
    out = [f"ip  {ip}" + (f"  {r['ip_symbol']}" if r["ip_symbol"] else ""),
           f"sp  {r['sp']:#0{w + 2}x}  ({r['sp_source']}); scanned {r['stack_start']:#x}-"
           f"{r['stack_end']:#x} ({r['words']} words, {r['mode']}, cr3 {r['cr3']:#x})"]
    if not r["symbols"]:
        out.append("no --symbols: showing words that look like kernel text addresses")
    else:
        out.append(f"symbols: {'; '.join(r['symbols'])}")
    frames = {f["va"]: f for f in r["frames"]}
    shown = set()
    items = sorted([(e["va"], "e", e) for e in r["entries"]] + [(f["va"], "f", f) for f in r["frames"]],
                   key=lambda t: (t[0], t[1]))
    for va, kind, x in items:
        if kind == "f":
            sym = None
            for e in r["entries"]:
                if e["va"] == va:
                    sym = e["symbol"]
            out.append(f"  {va:#0{w + 2}x}: --- exception frame ({x['mode']}): rip {x['rip']:#x}"
                       + (f" {sym}" if sym else "") + f" cs {x['cs']:#x} ({x['cs_name']}) "
                       f"rflags {x['rflags']:#x}"
                       + ("" if x["rsp"] is None else f" rsp {x['rsp']:#x} ss {x['ss']:#x}")
                       + ("" if x["pt_regs_va"] is None else f"; pt_regs at {x['pt_regs_va']:#x}"))
            pv = x["xen_pv"]
            if pv is not None and "rcx" in pv:
                out.append(f"      Xen 64-bit PV bounce frame: rcx {pv['rcx']:#x} at {pv['rcx_va']:#x}, "
                           f"r11 {pv['r11']:#x} at {pv['r11_va']:#x} (pushed by Xen below the iret "
                           f"frame; with an error code they sit one word lower); upcall mask "
                           f"{pv['upcall_mask']}")
            shown.add(va)
            continue
        if va in frames:
            continue
        out.append(f"  {va:#0{w + 2}x}: {x['value']:#0{w + 2}x}" + (f"  {x['symbol']}" if x["symbol"] else ""))
    if not r["entries"] and not r["frames"]:
        out.append("  (no candidate return addresses)")
    if r["note"]:
        out.append(f"note: {r['note']}")
    return "\n".join(out)


def _dump_symbols(target):
    """The kernel's text symbols from a Linux dump's own kallsyms tables, or None."""
    from ..linux.profile import Symbols
    vi = target.facts.get("vmcoreinfo")
    if vi is None or vi.symbol("kallsyms_names") is None:
        return None
    try:
        found = Symbols.from_dump(target)
    except XenscopeError:
        return None
    syms = TextSymbols()
    syms.add(found.kallsyms.text_pairs(), found.get("_etext"), found.source)
    _add_module_symbols(target, syms)
    return syms


def _add_module_symbols(target, syms):
    """Each loaded module's own symbols (``module->kallsyms``), when the dump's BTF gives the types."""
    from ..linux.kernel import open_kernel
    from ..linux.modsyms import module_symbols
    from ..linux.modules import for_each_module
    try:
        kernel = open_kernel(target)
        if not kernel.profile.has("mod_kallsyms.symtab"):
            return
        for m in for_each_module(kernel):
            pairs = [(a, n if t in "Tt" else None) for a, t, n in module_symbols(kernel, m.address)]
            if any(n for _, n in pairs):
                syms.add(pairs, source=f"from the dump (module {m.name}'s kallsyms)", module=m.name)
    except XenscopeError:
        return


@command("stack", "Scan a vCPU's kernel stack from SP: candidate return addresses (function+0xoff/0xsize "
                  "[module] with --symbols, as the kernel's Call Trace prints them) and exception frames "
                  "(pt_regs, Xen PV rcx/r11).",
         arguments=[
             arg("--cpu", type=number, default=0, help="vCPU / CPU whose registers to use (default 0)"),
             arg("--sp", type=address, help="stack pointer (default: the CPU's rsp/esp; PV in user "
                                            "mode: kernel_sp)"),
             arg("--ip", type=address, help="instruction pointer for the first line (default: rip/eip)"),
             arg("--symbols", action="append", default=[], metavar="FILE",
                 help="System.map, saved /proc/kallsyms (or only its [module] lines) or vmlinux "
                      "(repeatable; default: a Linux dump's own kallsyms)"),
             arg("--depth", type=number, help="scan at most N words (default: to the end of the stack)"),
             arg("--thread-size", type=number,
                 help="stack size, a power of two (default 16 KiB on x86_64, 8 KiB on i386)"),
             arg("--cr3", type=address, help="page-table root (default: the CPU's CR3)"),
             arg("--mode", help="paging mode (default: from the target)")],
         render=_render)
def stack(target, args):
    if args.depth is not None and not 0 < args.depth <= MAX_DEPTH:
        raise XenscopeError(f"--depth {args.depth} out of range (1..{MAX_DEPTH})")
    syms = TextSymbols.from_files(args.symbols) if args.symbols else _dump_symbols(target)
    ctx = resolve(target, cr3=args.cr3, mode=args.mode, cpu=args.cpu)
    machine = target.facts.get("machine") or ("x86_64" if ctx.paging.mode in ("4level", "5level")
                                              else "i386")
    sp, sp_src = pick_sp(target, args.cpu, args.sp)
    regs = ctx.regs
    ip = args.ip if args.ip is not None else regs.get("rip")
    res = scan_stack(target, ctx.paging, sp, machine, syms, args.depth, args.thread_size)
    res.update(cpu=args.cpu, machine=machine, mode=ctx.paging.mode, cr3=ctx.cr3, sp=sp, sp_source=sp_src,
               ip=ip, ip_symbol=syms.name(ip) if syms is not None and ip is not None else None,
               cs=regs.get("cs"), symbols=syms.sources if syms is not None else [])
    return res


