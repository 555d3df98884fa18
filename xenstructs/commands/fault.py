"""``fault``: explain one page fault rule by rule (see :mod:`xenstructs.fault`).

The target is optional: ``xenscope fault [DUMP] [options]``; without a DUMP, gdb and crash use
their own target. Gathering the inputs (options, then ``--log FILE``, then the dump) is
:func:`xenstructs.fault.case.explain_fault`'s.
"""

from .. import decode
from ..fault import ENTRY_ORDER, GUEST_TEXT
from ..fault.case import ENTRY_NAMES, FaultInputs, explain_fault
from . import address, arg, command, exclusive, group, number, tabulate

ARGUMENTS = (
    arg("dump", nargs="?", help="optional dump: registers, the walk of CR2, the bytes at IP"),
    arg("--cpu", type=number, default=0, help="vCPU/CPU of the dump (default 0)"),
    group("the fault (each overrides the dump and the log)",
          arg("--cr2", type=address, help="faulting linear address"),
          arg("--error", type=address, help="page-fault error code (not in dumps)"),
          arg("--ip", type=address, help="instruction pointer (RIP/EIP)"),
          arg("--cs", type=address, help="code segment selector (CPL = low 2 bits)"),
          arg("--eflags", "--rflags", dest="eflags", type=address, help="EFLAGS (AC is bit 18)"),
          arg("--insn", metavar="HEX", help="instruction bytes at IP (hex, e.g. 'f3 aa')"),
          arg("--bits", type=int, choices=(16, 32, 64),
              help="code size for disassembly (default: from CS/guest/mode)")),
    group("paging state",
          arg("--cr0", type=address, help="CR0 (WP is bit 16)"),
          arg("--cr3", type=address, help="CR3 (walk root with a dump)"),
          arg("--cr4", type=address, help="the CR4 the CPU used (for a PV guest: Xen's real CR4)"),
          arg("--guest-cr4", type=address, help="a PV guest's own view of CR4"),
          arg("--efer", type=address, help="EFER (NXE is bit 11)"),
          arg("--mode", choices=decode.MODES, help="paging mode"),
          arg("--pkru", type=address, help="PKRU (AD=bit 2k, WD=bit 2k+1 for key k)"),
          arg("--maxphyaddr", type=number, help="physical-address width (reserved-bit checks; default 52)"),
          *(arg(f"--{option}", type=address, help=f"the walk's {name} value (instead of a dump)")
            for option, name in ENTRY_NAMES)),
    group("Xen",
          arg("--xen", metavar="VERSION", help="Xen version (e.g. 4.5.0): whether it clears SMEP/SMAP "
                                               "for 32-bit PV guests"),
          exclusive(arg("--pv32", dest="guest", action="store_const", const="pv32", help="a 32-bit PV guest"),
                    arg("--pv64", dest="guest", action="store_const", const="pv64", help="a 64-bit PV guest"),
                    arg("--hvm", dest="guest", action="store_const", const="hvm", help="an HVM guest"))),
    arg("--log", metavar="FILE", help="a Xen console or guest oops excerpt to read the fault from"),
)


def _h(v):
    return "?" if v is None else f"{v:#x}"


_MARK = {"fired": "FIRED", "passed": "passed", "not-evaluated": "not evaluated"}


def _actor_text(access):
    """``Xen (CPL 0) on behalf of a 64-bit PV guest: <why>`` / ``a 64-bit PV guest (CPL 3): <why>``."""
    actor, cpl = access.get("actor"), access.get("cpl")
    if actor == "xen":
        who = "Xen" + (f" on behalf of a {GUEST_TEXT[access['on_behalf_of']]}" if access.get("on_behalf_of") else "")
    elif actor is not None:
        who = f"the {GUEST_TEXT.get(actor, actor)}"
    else:
        who = "not known (native code, or give --cs / a log)"
    where = f" (CPL {cpl})" if cpl is not None else ""
    return who + where + (f": {access['actor_reason']}" if access.get("actor_reason") else "")


def _fault_render(r, args):
    s = r["state"]
    out = []
    head = f"page fault at CR2 {_h(s['cr2'])}  IP {_h(s['ip'])}  CS {_h(s['cs'])}"
    if r["cpl"] is not None:
        head += f" (CPL {r['cpl']})"
    ctx = [GUEST_TEXT.get(s["guest"], s["guest"])] if s["guest"] else []
    if r["access"].get("actor") == "xen":
        ctx = ["Xen's own access" + (f" for a {ctx[0]}" if ctx else "")]
    if s["xen"]:
        ctx.append(f"Xen {s['xen']}")
    if s["mode"]:
        ctx.append(s["mode"])
    if ctx:
        head += "  [" + ", ".join(ctx) + "]"
    out.append(head)
    e = r["error"]
    if e:
        reflected = any(item["input"] == "privilege" and "rewrites" in item["why"]
                        for item in r["access"].get("assumed") or [])
        out.append(f"error code {e['value']:#x} [{' '.join(e['flags']) or '-'}]: {e['text']}"
                   + (" (as Xen reflected it to the guest: U is the guest's mode, not the CPU's)" if reflected else ""))
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
    out.append("made by: " + _actor_text(a))
    for item in r.get("assumed") or []:
        fires = (f"the {', '.join(item['fires'])} rule fires" if item["fires"] else "no rule fires either")
        out.append(f"assumed: {item['input']} = {item['assumed']} ({item['why']}); with {item['alternative']}: {fires}")
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


@command("fault", "Explain a page fault rule by rule (present, reserved, RW, US, XD, SMEP, SMAP, keys, "
                  "shadow stack), with Xen PV specifics; the dump is optional.",
         arguments=ARGUMENTS, render=_fault_render, target="optional")
def fault_cmd(target, args):
    return explain_fault(target, FaultInputs.from_namespace(args))
