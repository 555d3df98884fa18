"""``fault``: explain one page fault rule by rule (see :mod:`xenstructs.fault`).

The target is optional: ``xenscope fault [DUMP] [options]``. With a dump the vCPU's registers
(CR0/CR2/CR3/CR4, EFER, RIP, RFLAGS, CS) come from it, CR2 is walked under its CR3 and the
instruction at IP is read through the walk of IP. ``--log FILE`` adds what a Xen console or guest
oops excerpt says. Options win over the log, the log over the dump.
"""


from .. import decode as D
from ..errors import XenscopeError
from ..fault import ENTRY_ORDER, GUEST_TEXT, FaultState, explain, parse_hex_bytes, read_log
from ..xen.release import parse_version
from . import UsageError, address, command, number, tabulate
from . import front_target as _front_target

_ENTRY_OPTS = (("pte", "PTE"), ("pde", "PDE"), ("pdpte", "PDPTE"), ("pml4e", "PML4E"), ("pml5e", "PML5E"))
_REG_OPTS = ("cr2", "error", "ip", "cs", "cr3", "cr4", "guest_cr4", "cr0", "efer", "eflags", "pkru")


@command("fault", "Explain a page fault rule by rule (present, reserved, RW, US, XD, SMEP, SMAP, keys, "
                  "shadow stack), with Xen PV specifics; the dump is optional.", needs_target=False)
def fault_cmd(p):
    p.add_argument("dump", nargs="?", help="optional dump: registers, the walk of CR2, the bytes at IP")
    p.add_argument("--cpu", type=number, default=0, help="vCPU/CPU of the dump (default 0)")
    g = p.add_argument_group("the fault (each overrides the dump and the log)")
    g.add_argument("--cr2", type=address, help="faulting linear address")
    g.add_argument("--error", type=address, help="page-fault error code (not in dumps)")
    g.add_argument("--ip", type=address, help="instruction pointer (RIP/EIP)")
    g.add_argument("--cs", type=address, help="code segment selector (CPL = low 2 bits)")
    g.add_argument("--eflags", "--rflags", dest="eflags", type=address, help="EFLAGS (AC is bit 18)")
    g.add_argument("--insn", metavar="HEX", help="instruction bytes at IP (hex, e.g. 'f3 aa')")
    g.add_argument("--bits", type=int, choices=(16, 32, 64), help="code size for disassembly (default: from CS/guest/mode)")
    g = p.add_argument_group("paging state")
    g.add_argument("--cr0", type=address, help="CR0 (WP is bit 16)")
    g.add_argument("--cr3", type=address, help="CR3 (walk root with a dump)")
    g.add_argument("--cr4", type=address, help="the CR4 the CPU used (for a PV guest: Xen's real CR4)")
    g.add_argument("--guest-cr4", type=address, help="a PV guest's own view of CR4")
    g.add_argument("--efer", type=address, help="EFER (NXE is bit 11)")
    g.add_argument("--mode", choices=D.MODES, help="paging mode")
    g.add_argument("--pkru", type=address, help="PKRU (AD=bit 2k, WD=bit 2k+1 for key k)")
    g.add_argument("--maxphyaddr", type=number, help="physical-address width (reserved-bit checks; default 52)")
    for opt, name in _ENTRY_OPTS:
        g.add_argument(f"--{opt}", type=address, help=f"the walk's {name} value (instead of a dump)")
    g = p.add_argument_group("Xen")
    g.add_argument("--xen", metavar="VERSION", help="Xen version (e.g. 4.5.0): whether it clears SMEP/SMAP "
                                                    "for 32-bit PV guests")
    k = g.add_mutually_exclusive_group()
    k.add_argument("--pv32", dest="guest", action="store_const", const="pv32", help="a 32-bit PV guest")
    k.add_argument("--pv64", dest="guest", action="store_const", const="pv64", help="a 64-bit PV guest")
    k.add_argument("--hvm", dest="guest", action="store_const", const="hvm", help="an HVM guest")
    p.add_argument("--log", metavar="FILE", help="a Xen console or guest oops excerpt to read the fault from")


# ---------------------------------------------------------------------------------------------


def _state_from_options(args):
    st = FaultState()
    for name in _REG_OPTS:
        st.give(name, getattr(args, name), f"--{name.replace('_', '-')} option")
    for opt, name in _ENTRY_OPTS:
        st.give(name, getattr(args, opt), f"--{opt} option")
    st.give("mode", args.mode, "--mode option")
    st.give("xen", args.xen, "--xen option")
    st.give("guest", args.guest, f"--{args.guest} option" if args.guest else None)
    st.give("maxphyaddr", args.maxphyaddr, "--maxphyaddr option")
    st.give("bits", args.bits, "--bits option")
    if args.insn:
        st.give("insn", parse_hex_bytes(args.insn), "--insn option")
    if args.xen:
        parse_version(args.xen)
    return st


def _add_log(st, path, notes):
    fields, log_notes = read_log(path)
    notes.extend(log_notes)
    pv = (st.guest or "") in ("pv32", "pv64")
    for name, (value, src) in fields.items():
        if name == "linux_cr4":
            # the guest printed its own CR4: a PV guest's view, the real one otherwise
            st.give("guest_cr4" if pv else "cr4", value, src + (" (the PV guest's view)" if pv else ""))
        else:
            st.give(name, value, src)
    if not fields:
        notes.append(f"{path}: no page-fault lines recognised")


def _add_target(st, target, args, notes):
    """Registers from the target, then the walk of CR2 and the instruction bytes at IP."""
    from ..context import resolve
    from ..paging import read_virt, walk
    cpu = target.cpu(args.cpu)
    regs, src = cpu.regs, cpu.source
    pv_image = getattr(target, "m2p", None) is not None
    where = f"CPU {args.cpu} of the dump"
    for reg, name in (("cr0", "cr0"), ("cr2", "cr2"), ("cr3", "cr3"), ("efer", "efer"), ("rip", "ip"),
                      ("cs", "cs"), ("rflags", "eflags")):
        if regs.get(reg) is not None:
            st.give(name, regs[reg], f"{src.get(reg, 'registers')} ({where})")
    if regs.get("eflags") is not None:
        st.give("eflags", regs["eflags"], f"{src.get('eflags', 'registers')} ({where})")
    if regs.get("cr4") is not None:
        # a PV guest's image holds the guest's view of CR4; a host dump or an HVM guest the real one
        if pv_image:
            st.give("guest_cr4", regs["cr4"], f"{src.get('cr4', 'registers')} ({where}: the PV guest's view)")
        else:
            st.give("cr4", regs["cr4"], f"{src.get('cr4', 'registers')} ({where})")
    if st.entries:
        notes.append("page-table entries given as options: the dump's walk of CR2 is not used")
        return None, None
    if st.cr2 is None:
        notes.append("CR2 unknown: nothing to walk (give --cr2)")
        return None, None
    try:
        ctx = resolve(target, cr3=args.cr3, mode=args.mode, cpu=args.cpu, efer=args.efer,
                      cr4=args.guest_cr4 if pv_image and args.guest_cr4 is not None else args.cr4,
                      maxphyaddr=st.maxphyaddr)
    except XenscopeError as e:
        notes.append(f"no walk of CR2: {e}")
        return None, None
    st.give("mode", ctx.paging.mode, ctx.sources.get("mode", "the dump"))
    w = walk(target, ctx.paging, st.cr2)
    if st.insn is None and st.ip is not None:
        for n in (16, 0x1000 - (st.ip & 0xFFF)):
            try:
                st.give("insn", read_virt(target, st.ip, min(n, 16), ctx.paging, ctx.paging.mode),
                        f"read at IP through the walk of IP ({where})")
                break
            except XenscopeError:
                continue
        if st.insn is None:
            notes.append(f"the bytes at IP {st.ip:#x} are not readable in the dump")
    return w, ctx


def _fault_run(target, args):
    notes = []
    st = _state_from_options(args)
    if args.log:
        _add_log(st, args.log, notes)
    own = None
    if target is None and args.dump:
        from ..targets import open_dump
        target = own = open_dump(args.dump)
    elif target is None:
        target = _front_target()
    try:
        w = ctx = None
        if target is not None:
            with target.batch():
                w, ctx = _add_target(st, target, args, notes)
        if target is None and st.cr2 is None and st.error is None and not st.entries:
            raise UsageError("xen fault: nothing to explain: give a DUMP, --log FILE, or at least --cr2/--error")
        ex = explain(st, walk=w)
    finally:
        if own is not None:
            own.close()
    res = ex.to_dict()
    res["notes"] = notes + res["notes"]
    if ctx is not None:
        res["walk"]["cr3"] = ctx.cr3
        res["walk"]["sources"] = ctx.sources
        if getattr(target, "m2p", None) is not None:
            res["walk"]["space"] = "machine"
    return res


# ---------------------------------------------------------------------------------------------


def _h(v):
    return "?" if v is None else f"{v:#x}"


_MARK = {"fired": "FIRED", "passed": "passed", "not-evaluated": "not evaluated"}


def _fault_render(r, args):
    s = r["state"]
    out = []
    head = f"page fault at CR2 {_h(s['cr2'])}  IP {_h(s['ip'])}  CS {_h(s['cs'])}"
    if r["cpl"] is not None:
        head += f" (CPL {r['cpl']})"
    ctx = [GUEST_TEXT.get(s["guest"], s["guest"])] if s["guest"] else []
    if s["xen"]:
        ctx.append(f"Xen {s['xen']}")
    if s["mode"]:
        ctx.append(s["mode"])
    if ctx:
        head += "  [" + ", ".join(ctx) + "]"
    out.append(head)
    e = r["error"]
    if e:
        out.append(f"error code {e['value']:#x} [{' '.join(e['flags']) or '-'}]: {e['text']}")
    else:
        out.append("error code unknown (not in dumps: give --error)")
    a = r["access"]
    who = "?" if a["user"] is None else ("user" if a["user"] else "supervisor")
    acc = f"access: {who} {a['kind'] or '?'}"
    if a["implicit"]:
        acc += " (implicit)"
    if a["shadow_stack"]:
        acc += " (shadow stack)"
    if a["source"]:
        acc += f"  ({a['source']})"
    out.append(acc)
    regs = []
    for name in ("cr0", "cr4", "guest_cr4", "efer", "eflags", "pkru"):
        if s[name] is not None:
            regs.append(f"{name.replace('_', ' ')} {s[name]:#x}")
    if regs:
        out.append("registers: " + ", ".join(regs))
    w = r["walk"]
    if w is not None:
        head = f"walk of {_h(w['va'])} ({w['origin']}" + (f", cr3 {w['cr3']:#x}" if w.get("cr3") is not None else "") + "):"
        out.append(head)
        rows = [(lv["level"], f"{lv['entry']:#018x}", " ".join(lv["flags"]) or "-",
                 "" if lv["pkey"] in (None, 0) else f"key {lv['pkey']}") for lv in w["levels"]]
        rows += [(n, f"({w['missing_word']})", "", "") for n in w["not_given"]]
        order = {n: i for i, n in enumerate(ENTRY_ORDER)}
        rows.sort(key=lambda x: order[x[0]])
        out.append(tabulate(rows, tablefmt="plain", disable_numparse=True))
        if w.get("pa") is not None:
            out.append(f"  => {'maddr' if w.get('space') == 'machine' else 'pa'} {w['pa']:#x}")
        elif w.get("stop"):
            out.append(f"  => walk stopped: {w['stop']}" + (f" at {w['stop_level']}" if w["stop_level"] else ""))
    i = r["insn"]
    if i is not None:
        out.append(f"instruction at {_h(i['ip'])}: {i['text']}  ({i['bytes']}, {i['bits']}-bit): {i['why']}; "
                   f"{i['agreement']}")
    out.append("rules:")
    out.append(tabulate([(x["rule"], _MARK[x["status"]], x["why"]) for x in r["rules"]], tablefmt="plain",
                        disable_numparse=True))
    out.append(f"cause: {r['cause']}")
    if r["spurious"]:
        out.append("spurious: yes")
    for m in r["missing"]:
        out.append(f"missing: {m}")
    for n in r["notes"]:
        out.append(f"note: {n}")
    return "\n".join(out)


fault_cmd.run, fault_cmd.render = _fault_run, _fault_render
