"""What a crash block read by :class:`.crash.CrashReader` means: whose registers it holds, who made
the access that ended in the crash (Xen on the guest's behalf, Xen for itself, or the guest), the
bounce frame on the guest's stack, the fault's inputs for ``xenscope fault``, and its story.

The facts used are in :mod:`.crash`'s docstring (Xen 4.17.7's entry.S, traps.c, x86_64/traps.c).
"""

from ...decode import decode_cr4, decode_pf
from ..release import HYPERVISOR_CS
from .crash import STORE_WORDS, classify_sync
from .sentences import decode_pte, va_region

GUEST_OF_CS = {0xE033: "pv64", 0xE02B: "pv64", 0xE023: "pv64", 0xE019: "pv32"}   # FLAT_* selectors


def describe(block):
    """The crash dict of one register dump (the ``crashes`` of ``xenscope log``)."""
    lead = block["lead"]
    walks = [event for event in lead if event["kind"] == "walk"]
    unhandled = _last(lead, "unhandled")
    sync_event = _last(lead, "domain_crash_sync")
    crashed = _last(lead, "domain_crashed")
    sync = classify_sync(sync_event, walks, unhandled) if sync_event else None
    out = {"line_no": block["line_no"], "version": block["version"], "debug": block["debug"], "cpu": block["cpu"],
           "context": block["context"], "vcpu": block["vcpu"], "registers": block["registers"],
           "rip_symbol": block["rip_symbol"], "call_trace": block["call_trace"], "guest_stack": block["guest_stack"],
           "crashed": dict(crashed["fields"], line_no=crashed["line_no"]) if crashed else None,
           "domain_crash_sync": sync, "unhandled": _unhandled(unhandled, walks),
           "after": [{"line_no": event["line_no"], "kind": event["kind"]} for event in block["after"]],
           "lead": [{"line_no": event["line_no"], "kind": event["kind"], "fields": event["fields"]}
                    for event in lead if event["kind"] in ("xen_smap", "fatal")]}
    out["bounce_frame"] = bounce_frame(out)
    out["access"] = who_accessed(out, block["after"])
    out["story"] = crash_story(out)
    return out


def _last(events, kind):
    return next((event for event in reversed(events) if event["kind"] == kind), None)


def _unhandled(event, walks):
    if event is None:
        return None
    walk = next((w["fields"] for w in walks if w["line_no"] == event["line_no"] + 1), None)
    return dict(event["fields"], line_no=event["line_no"], context=event["context"], walk=_walk_dict(walk))


def _walk_dict(walk):
    if walk is None:
        return None
    return {"line_no": walk["line_no"], "va": walk["va"],
            "levels": [{"level": level["level"], "index": level["index"], "entry": level["entry"]}
                       for level in walk["levels"]]}


def bounce_frame(crash):
    """The frame create_bounce_frame wrote at the top of a 64-bit PV guest's stack, when the stack
    words hold one for the dumped RIP/CS: ``{rcx, r11, error_code?, rip, cs, rflags, rsp, ss,
    upcall_mask}``; else None."""
    stack, registers = crash["guest_stack"], crash["registers"]
    if not stack or "rip" not in registers or "cs" not in registers:
        return None
    words = stack["words"]
    for names in (("rcx", "r11", "error_code", "rip", "cs", "rflags", "rsp", "ss"),
                  ("rcx", "r11", "rip", "cs", "rflags", "rsp", "ss")):
        if len(words) < len(names):
            continue
        frame = dict(zip(names, words))
        if frame["rip"] == registers["rip"] and (frame["cs"] & 0xFFFC) == (registers["cs"] & 0xFFFC):
            frame["upcall_mask"] = frame["cs"] >> 32 & 0xFF
            frame["cs"] &= 0xFFFF
            frame["sp"] = stack["sp"]
            return frame
    return None


# --------------------------------------------------------------------------------------------
# who made the access
# --------------------------------------------------------------------------------------------

def who_accessed(crash, after):
    """``{"by", "why", "fault", "sources", "walk", "notes"}``: who made the access that ended in the
    crash, and that access's inputs (FaultState names) with where each comes from."""
    sync = crash["domain_crash_sync"]
    if crash["context"] == "hypervisor":
        return _xen_own(crash, after)
    if sync is not None and sync["path"] == "fixup" and sync["walk"] is not None:
        return _xen_for_guest(crash, sync)
    return _guest(crash, sync)


def _registers(crash, names, where):
    """``(fault, sources)`` of the named registers of the dump (FaultState names)."""
    registers = crash["registers"]
    fault, sources = {}, {}
    for name, register in names:
        if registers.get(register) is not None:
            fault[name] = registers[register]
            sources[name] = f"crash block line {crash['line_no']}: {register} ({where})"
    return fault, sources


def _xen_own(crash, after):
    fault, sources = _registers(crash, (("ip", "rip"), ("cs", "cs"), ("eflags", "rflags"), ("cr0", "cr0"),
                                        ("cr4", "cr4"), ("cr3", "cr3"), ("cr2", "cr2")), "Xen's own registers")
    walk = None
    for event in after:
        if event["kind"] == "walk" and walk is None:
            walk = event["fields"]
        elif (event["kind"] in ("fatal_pf", "error_code", "fatal_trap") and event["fields"].get("error_code") is not None
              and event["fields"].get("vector", 14) == 14):
            fault.setdefault("error", event["fields"]["error_code"])
            sources.setdefault("error", f"log line {event['line_no']}: the error code of Xen's own #PF")
    where = f" in {crash['rip_symbol']}" if crash["rip_symbol"] else ""
    why = (f"the register dump at line {crash['line_no']} is Xen's own (CONTEXT: hypervisor; CS "
           f"{crash['registers'].get('cs', 0):#x}, RIP {crash['registers'].get('rip', 0):#x}{where})")
    smap = next((event for event in crash["lead"] if event["kind"] == "xen_smap"), None)
    if smap is not None:
        why += f"; Xen printed 'Xen {smap['fields']['what']} violation' (line {smap['line_no']})"
    return {"by": "xen", "why": why, "fault": fault, "sources": sources, "walk": _walk_dict(walk), "notes": []}


def _xen_for_guest(crash, sync):
    """A store of create_bounce_frame's frame faulted in Xen: the fixup's walk is of the address."""
    walk = sync["walk"]
    fault, sources = _registers(crash, (("cr0", "cr0"), ("cr4", "cr4"), ("cr3", "cr3")), "read from the CPU")
    line = f"log line {walk['line_no']}"
    fault.update(cr2=walk["va"], cs=HYPERVISOR_CS, kind="write")
    sources.update(cr2=f"{line}: the page walk Xen's fixup printed for the address it was writing",
                   cs=f"log line {sync['line_no']}: Xen's entry code (create_bounce_frame) runs in ring 0 "
                      f"(__HYPERVISOR_CS)",
                   kind=f"log line {sync['line_no']}: create_bounce_frame writes the frame on the guest's stack")
    notes = []
    name = (sync["symbol"] or "").split("#")[-1]
    if name.startswith(("create_bounce_frame", "compat_create_bounce_frame")):
        fault["ip"] = sync["address"]
        sources["ip"] = f"log line {sync['line_no']}: the faulting store (Xen < 4.14 prints last_extable_addr)"
    else:
        notes.append(f"'fault at {sync['address']:#x} {sync['symbol']}' is the fixup label, not the faulting "
                     f"store (Xen 4.14+ sets last_extable_addr after the fixup)"
                     + (f": the {STORE_WORDS[sync['store']]} word of the frame" if sync["store"] in STORE_WORDS
                        else ""))
    notes.append("the register dump that follows is the guest's (CONTEXT: pv guest): its RIP, CS, RFLAGS and cr2 "
                 "are not those of Xen's faulting store; Xen's error code and EFLAGS are not printed on this path")
    who = crash["vcpu"] or "the guest"
    why = (f"'domain_crash_sync ... fault at {sync['symbol']}' (line {sync['line_no']}) follows the page walk Xen's "
           f"fixup printed for {walk['va']:#x} (line {walk['line_no']}): Xen (CPL 0) faulted writing the exception "
           f"frame for {who} on its stack")
    return {"by": "xen", "why": why, "fault": fault, "sources": sources, "walk": _walk_dict(walk), "notes": notes,
            "on_behalf_of": crash["vcpu"], "guest": GUEST_OF_CS.get(crash["registers"].get("cs"))}


def _guest(crash, sync):
    registers = crash["registers"]
    fault, sources = _registers(crash, (("ip", "rip"), ("cs", "cs"), ("eflags", "rflags"), ("cr0", "cr0"),
                                        ("cr4", "cr4"), ("cr3", "cr3")),
                                f"{crash['context'] or 'guest'} context: the guest's RIP/CS/RFLAGS, the CPU's CRn")
    unhandled = crash["unhandled"]
    walk = None
    if unhandled is not None and unhandled.get("vector") == 14:
        walk = unhandled["walk"]
        if registers.get("cr2") is not None:
            fault["cr2"] = registers["cr2"]
            sources["cr2"] = f"crash block line {crash['line_no']}: cr2 (the vCPU's CR2: the fault Xen reflected)"
        if unhandled.get("error_code") is not None:
            fault["error"] = unhandled["error_code"]
            sources["error"] = (f"log line {unhandled['line_no']}: Unhandled #PF (the error code Xen reflected to "
                                f"the guest: U set to the guest's mode)")
    cs = registers.get("cs")
    ring = f"CS {cs:#x} is ring {cs & 3}" if cs is not None else "CS not printed"
    why = (f"the register dump at line {crash['line_no']} is {crash['vcpu'] or 'the guest'}'s (CONTEXT: "
           f"{crash['context']}), {ring}")
    if sync is not None:
        why += f"; the domain_crash_sync line ({sync['line_no']}) is {_SYNC_SHORT.get(sync['path'], 'no access')}"
    return {"by": "guest", "why": why, "fault": fault, "sources": sources, "walk": walk, "notes": [],
            "guest": GUEST_OF_CS.get(cs)}


_SYNC_SHORT = {"no-handler": "Xen giving up on a guest with no handler, not an access",
               "check": "a failed check in create_bounce_frame, not an access",
               "selector": "a segment-load fixup (#GP), not a page fault"}


def _sync_text(sync, unhandled):
    """Why a domain_crash_sync line that is not a fixup is no access by Xen."""
    head = f"line {sync['line_no']}: 'domain_crash_sync ... fault at {sync['symbol']}' "
    if sync["path"] == "no-handler":
        return (head + f"is where create_bounce_frame gave up delivering the event: no handler registered "
                f"('Unhandled' at line {unhandled['line_no']}); no access by Xen faulted (a faulting store of the "
                f"frame is preceded by the page walk its fixup prints, and none was)")
    if sync["path"] == "check":
        return head + "is a create_bounce_frame check that failed (bad guest stack pointer or null selector), not a fault"
    if sync["path"] == "selector":
        return head + "is the fixup of a segment load of the compat bounce frame (#GP), not a page fault"
    return head + "names no known bounce-frame path"


# --------------------------------------------------------------------------------------------
# the story
# --------------------------------------------------------------------------------------------

def crash_story(crash):
    """Sentences for ``xenscope log``'s story: what happened, who made the access, what was read."""
    access, registers = crash["access"], crash["registers"]
    story = [f"line {crash['line_no']}: " + _head(crash) + "."]
    sync = crash["domain_crash_sync"]
    if sync is not None and access["by"] == "guest":
        story.append(_sync_text(sync, crash["unhandled"]) + ".")
    unhandled = crash["unhandled"]
    if unhandled is not None and unhandled.get("walk") is not None:
        story.append(_walk_sentence(unhandled, access))
    if access["by"] == "xen" and access["walk"] is not None and crash["context"] != "hypervisor":
        walk = access["walk"]
        story.append(f"line {walk['line_no']}: the address Xen was writing, {walk['va']:#x} "
                     f"({va_region(walk['va'])}): " + _levels_text(walk) + _below_rsp(walk["va"], registers) + ".")
    frame = crash["bounce_frame"]
    if frame is not None:
        story.append(_frame_sentence(frame, access))
    story.append("the access that ended in the crash was made by " + _by_text(crash) + ": " + access["why"] + ".")
    allowed = _allowed_at_cpl3(crash)
    if allowed:
        story.append(allowed)
    cr4 = registers.get("cr4")
    if cr4 is not None:
        bits = [name for name in ("SMEP", "SMAP") if name in decode_cr4(cr4)["flags"]]
        story.append(f"CR4 {cr4:#x} (read from the CPU by Xen): " + (" and ".join(bits) + " on" if bits else
                                                                        "SMEP and SMAP off") + ".")
    story.extend(note + "." for note in access["notes"])
    return story


def _head(crash):
    registers = crash["registers"]
    if crash["context"] == "hypervisor":
        where = f" in {crash['rip_symbol']}" if crash["rip_symbol"] else ""
        return (f"Xen {crash['version']} dumped its own registers (CONTEXT: hypervisor; RIP "
                f"{registers.get('rip', 0):#x}{where}): a fatal fault or trap in the hypervisor")
    crashed = crash["crashed"]
    who = (f"d{crashed['domain']}v{crashed['vcpu']}" if crashed and crashed.get("vcpu") is not None
           else crash["vcpu"] or "the domain")
    cs = registers.get("cs")
    regs = (f"; the register dump is {crash['vcpu'] or 'the guest'}'s (CONTEXT: {crash['context']}): RIP "
            f"{cs or 0:04x}:{registers.get('rip', 0):016x}" + (f", ring {cs & 3}" if cs is not None else ""))
    return f"Xen {crash['version']} crashed {who}{regs}; cr0, cr3 and cr4 are the CPU's"


def _allowed_at_cpl3(crash):
    """For a guest's own #PF at CPL 3 whose logged walk allows a user access: what can make it fault."""
    access, unhandled = crash["access"], crash["unhandled"]
    cs, error = crash["registers"].get("cs"), (unhandled or {}).get("error_code")
    walk = (unhandled or {}).get("walk")
    if access["by"] != "guest" or cs is None or cs & 3 != 3 or error is None or not walk or not walk["levels"]:
        return None
    entries = [decode_pte(level["entry"], level["level"]) for level in walk["levels"]]
    needs = ["US"] + (["RW"] if error & 2 else [])
    if not all(entry["present"] and all(flag in entry["flags"] for flag in needs) for entry in entries):
        return None
    if error & 0x10 and any("XD" in entry["flags"] for entry in entries):
        return None
    smap = "SMAP" in decode_cr4(crash["registers"].get("cr4", 0))["flags"]
    return ("every level allows this access as a user access at CPL 3: the CPU faulted it as a supervisor "
            "access (implicit: descriptor tables, TSS, or an emulator's IRET frame reads)"
            + (", which CR4.SMAP=1 forbids on a user page whatever EFLAGS.AC" if smap else "")
            + ", or the tables changed after the fault; `xenscope fault --log` runs the rules.")


def _by_text(crash):
    access = crash["access"]
    if access["by"] == "xen" and crash["context"] == "hypervisor":
        return "Xen itself (CPL 0)"
    if access["by"] == "xen":
        return f"Xen (CPL 0) on behalf of {crash['vcpu'] or 'the guest'}"
    return f"{crash['vcpu'] or 'the guest'} itself"


def _below_rsp(va, registers):
    rsp = registers.get("rsp")
    if rsp is None or not 0 < rsp - va <= 64:
        return ""
    return f"; it is {rsp - va} bytes below the guest's RSP {rsp:#x}: the guest's stack pointer itself is not writable"


def _walk_sentence(unhandled, access):
    walk = unhandled["walk"]
    error = unhandled.get("error_code")
    code = ("no error code printed" if error is None else
            f"error code {error:#x} as reflected to the guest ({decode_pf(error)['text']}; U is the guest's mode, "
            f"not the CPU's)")
    who = _ctx(unhandled["context"]) if unhandled.get("context") else "the guest"
    return (f"line {unhandled['line_no']}: {who} took #PF at {walk['va']:#x} ({va_region(walk['va'])}) with no handler "
            f"registered; {code}; Xen's walk: " + _levels_text(walk) + ".")


def _ctx(context):
    return f"d{context['domain']}v{context['vcpu']}" if context.get("vcpu") is not None else f"d{context['domain']}"


def _levels_text(walk):
    parts = []
    for level in walk["levels"]:
        entry = decode_pte(level["entry"], level["level"])
        parts.append(f"L{level['level']} {level['entry']:#x} " + (" ".join(entry["flags"]) if entry["present"]
                                                                   else "not present"))
    if not parts:
        return "no entries printed"
    users = [decode_pte(level["entry"], level["level"]) for level in walk["levels"]]
    tail = ""
    if all(entry["present"] for entry in users):
        tail = ("; present and US=1 at every level (a user page)" if all("US" in entry["flags"] for entry in users)
                else "; present at every level")
    return ", ".join(parts) + tail


def _frame_sentence(frame, access):
    error = f"error code {frame['error_code']:#x}, " if "error_code" in frame else ""
    text = (f"the top of the guest stack ({frame['sp']:#x}) is the bounce frame Xen wrote: {error}RIP {frame['rip']:#x}, "
            f"CS {frame['cs']:#x}, RFLAGS {frame['rflags']:#x}, RSP {frame['rsp']:#x}")
    cr2 = access["fault"].get("cr2")
    if access["by"] == "guest" and cr2 is not None and 0 <= cr2 - frame["rsp"] < 48:
        text += (f"; CR2 {cr2:#x} is at the guest's RSP at the fault (+{cr2 - frame['rsp']:#x}): the access read its "
                 f"own stack (a pop, ret or iret frame)")
    return text + "."
