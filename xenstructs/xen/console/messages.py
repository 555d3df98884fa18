"""Every console message the annotator decodes, each declared once: its kind, its name in summaries,
a keyword it cannot match without, its regex, its fields, and the function that explains it.

Message texts are as printed by every Xen release 4.4 ... 4.20 (format strings read in
``xen/arch/x86/mm.c``, ``xen/arch/x86/pv/mm.h``, ``xen/arch/x86/traps.c``, ``xen/arch/x86/pv/traps.c``
and ``xen/arch/x86/x86_64/traps.c`` at tags RELEASE-4.4.0, 4.6.0, 4.9.0, 4.13.0, 4.19.0 and master;
reference: ../shared/reference/xen-facts.md §3).

A declaration::

    @message("type_overflow", "Type count overflow", "Type count overflow",
             r"Type count overflow on (?:pfn|mfn) " + HEX,
             lambda g: {"mfn": hex_int(g[0])})
    def _type_overflow(fields, pages):
        return {}, f"mfn {fields['mfn']:#x}: ..."

The decorated function gets the fields and a :class:`.sentences.PageInfo` (type_info / count_info
decoding with the chosen layout) and returns ``(decoded values, one plain sentence)``. Messages are
tried in declaration order; the first regex that matches wins.
"""

import re
from typing import Callable, NamedTuple, Optional

from ...decode import decode_cr0, decode_cr4, decode_pf
from .sentences import (PAGE_TABLES, TYPE_NOUN, count_state, decode_flags24, decode_pte, domain_name,
                        entry_text, flags_hints, level_name, pfn_text, rc_text, request_text, type_state,
                        va_region)

HEX = r"([0-9a-fA-F]+)"


def hex_int(text):
    return int(text, 16)


class Message(NamedTuple):
    kind: str                     # the key in entries and summaries
    text: Optional[str]           # its name in summaries (KIND_TEXT); None: never counted on its own
    keyword: str                  # a line without it cannot match (a cheap prefilter)
    regex: "re.Pattern"
    fields: Callable              # the match's groups -> the message's fields
    explain: Callable             # (fields, PageInfo) -> (decoded values, sentence)


MESSAGES = []                     # in matching order
BY_KIND = {}


def message(kind, text, keyword, regex, fields):
    """Declare a message kind; decorates its explain function."""
    def declare(explain):
        declared = Message(kind, text, keyword, re.compile(regex), fields, explain)
        MESSAGES.append(declared)
        BY_KIND[kind] = declared
        return explain
    return declare


def parse_message(body):
    """``(kind, fields)`` for a recognised message (prefix and context already stripped), else None."""
    for declared in MESSAGES:
        if declared.keyword in body:
            match = declared.regex.search(body)
            if match:
                return declared.kind, declared.fields(match.groups())
    return None


def _with_rc(fields, rc):
    """``fields`` plus ``"rc"`` when the message printed one."""
    if rc is not None:
        fields["rc"] = int(rc)
    return fields


def _table_noun(decoded):
    return (f"an {level_name(decoded['type'])} page table" if decoded["type"] in PAGE_TABLES
            else TYPE_NOUN.get(decoded["type"], decoded["type"]))


def _page_state(count, type_info, sep):
    """``count_info: ...<sep>type_info: L2, ...`` of a decoded caf / taf pair."""
    return (f"count_info: {count_state(count)}{sep}type_info: {level_name(type_info['type'])}, "
            f"{type_state(type_info)}")


# --- mm.c: types, validation, pinning ---------------------------------------------------------

# mm.c __get_page_type(), all versions
@message("bad_type", "Bad type", "Bad type",
         r"Bad type \(saw " + HEX + r" != exp " + HEX + r"\) for mfn " + HEX + r" \(pfn " + HEX + r"\)",
         lambda g: {"saw": hex_int(g[0]), "exp": hex_int(g[1]), "mfn": hex_int(g[2]), "pfn": hex_int(g[3])})
def _bad_type(fields, pages):
    saw, exp = pages.type_info(fields["saw"]), pages.type_info(fields["exp"])
    decoded = {"saw": saw, "exp": exp}
    if saw is None:
        return decoded, (f"mfn {fields['mfn']:#x} ({pfn_text(fields['pfn'])}): Xen refused a type change "
                         f"(layout unknown: give --xen)")
    saw_type, exp_type = saw["type"], exp["type"]
    if saw_type == "writable" and exp_type in PAGE_TABLES:
        why = "the page must have no writable mappings before it can become a page table"
    elif saw_type in PAGE_TABLES and exp_type == "writable":
        why = ("a page table may only be mapped read-only while it is one (its type count "
               "must drop to 0 first: unpin it and remove it from every table)")
    elif saw_type in PAGE_TABLES and exp_type in PAGE_TABLES:
        why = (f"a page has one type at a time: it must stop being an {level_name(saw_type)} table "
               f"(type count 0) before it can become an {level_name(exp_type)} table")
    elif saw_type == "seg_desc":
        why = "a GDT/LDT page must not be mapped writable or used as anything else while in use"
    elif saw_type == exp_type:
        why = ("same type but the PAE-Xen-L2 flag differs" if "pae_xen_l2" in saw["flags"] + exp["flags"]
               else "the type matched but Xen still refused")
    else:
        why = "a page has one type at a time and its type count is not 0"
    return decoded, (f"mfn {fields['mfn']:#x} ({pfn_text(fields['pfn'])}) is in use as "
                     f"{TYPE_NOUN.get(saw_type, saw_type)} ({type_state(saw)}); Xen was asked to "
                     f"{request_text(exp)} and refused: {why}.")


# mm.c __get_page_type(): "on pfn %lx" (4.4-4.8, value is the mfn) / "on mfn %" (4.9+)
@message("type_overflow", "Type count overflow", "Type count overflow",
         r"Type count overflow on (?:pfn|mfn) " + HEX,
         lambda g: {"mfn": hex_int(g[0])})
def _type_overflow(fields, pages):
    return {}, (f"mfn {fields['mfn']:#x}: its type count would overflow; something takes type "
                f"references in a loop without dropping them (a reference leak).")


# mm.c alloc_page_type() / validate_page()
@message("validate_error", "Error while validating", "Error while validating",
         r"Error while validating mfn " + HEX + r" \(pfn " + HEX + r"\) for type " + HEX + r": caf=" + HEX
         + r" taf=" + HEX,
         lambda g: {"mfn": hex_int(g[0]), "pfn": hex_int(g[1]), "type": hex_int(g[2]), "caf": hex_int(g[3]),
                    "taf": hex_int(g[4])})
def _validate_error(fields, pages):
    requested, count, type_info = (pages.type_info(fields["type"]), pages.count_info(fields["caf"]),
                                   pages.type_info(fields["taf"]))
    decoded = {"type": requested, "caf": count, "taf": type_info}
    if requested is None:
        return decoded, f"validating mfn {fields['mfn']:#x} as type {fields['type']:#x} failed (layout unknown)."
    return decoded, (f"validating mfn {fields['mfn']:#x} ({pfn_text(fields['pfn'])}) as "
                     f"{_table_noun(requested)} failed ({_page_state(count, type_info, '; ')}): one of its "
                     f"entries was refused, see the message just before.")


# mm.c alloc_lN_table(): "entry %d" (4.4-4.8), "slot %#x" (4.9-4.12), "Failure %d in ...
# slot %#x" (4.13), promote_lN_table (4.14+)
@message("table_failure", "Failure in alloc/promote_lN_table", "Failure",
         r"Failure(?: (-?\d+))? in (alloc|promote)_l([1-4])_table: (?:entry (-?\d+)|slot (0x[0-9a-fA-F]+|\d+))",
         lambda g: _with_rc({"level": int(g[2]), "slot": int(g[3]) if g[3] is not None else int(g[4], 16),
                             "function": f"{g[1]}_l{g[2]}_table"}, g[0]))
def _table_failure(fields, pages):
    level, slot = fields["level"], fields["slot"]
    span = {4: "512 GiB", 3: "1 GiB", 2: "2 MiB", 1: "4 KiB"}[level]
    extra = ""
    if level == 4:
        va = slot << 39
        if va >> 47:
            va |= 0xFFFF << 48
        extra = f", virtual addresses {va:#x}+512 GiB ({va_region(va)})"
    rc = f" ({rc_text(fields.get('rc'))})" if fields.get("rc") is not None else ""
    return {}, (f"while validating a page as an L{level} table, entry {slot} ({slot:#x}; each "
                f"covers {span}{extra}) was refused{rc}: the page it points at cannot be used "
                f"as an L{level - 1 if level > 1 else 1} {'table' if level > 1 else 'mapping'} "
                f"(see the message before this one).")


# mm.c define_get_linear_pagetable(); "(feature disabled)" since XSA-240. get_page_from_l2e/l3e/l4e
# (4.4-4.20) call get_lN_linear_pagetable() only after get_page_and_type() of the entry's target at
# the level below failed with -EINVAL; it prints "with write perms" when the entry has RW set.
@message("linear_pt", "Attempt to create linear p.t.", "linear p.t.",
         r"Attempt to create linear p\.t\. (with write perms|\(feature disabled\))",
         lambda g: {"disabled": g[0].startswith("(")})
def _linear_pt(fields, pages):
    why = ("linear page tables are disabled (pv-linear-pt=0)" if fields["disabled"] else
           "the entry has RW set and linear mappings must be read-only")
    return {}, ("Xen could not give the page this L2/L3/L4 entry points at the type of the level below "
                "(-EINVAL: the message before says why), so it tried the entry as a linear (recursive) "
                f"mapping of a table of its own level and refused that too: {why}. A consequence of the "
                "failure before it, unless that failure saw a table of the entry's own level.")


# mm.c do_mmuext_op(): "Error while pinning mfn %lx" (4.4-4.6), "Error %d while pinning" (4.7+)
@message("pin_error", "Error while pinning", "while pinning",
         r"Error(?: (-?\d+))? while pinning mfn " + HEX,
         lambda g: _with_rc({"mfn": hex_int(g[1])}, g[0]))
def _pin_error(fields, pages):
    return {}, (f"the guest asked to pin mfn {fields['mfn']:#x} as a page table (MMUEXT_PIN_Ln_TABLE) "
                f"and Xen could not give it that type"
                + (f" ({rc_text(fields['rc'])})" if fields.get("rc") is not None else "")
                + ": see the Bad type / validation messages just before.")


@message("already_pinned", "mfn already pinned", "already pinned",
         r"[Mm]fn " + HEX + r" already pinned",
         lambda g: {"mfn": hex_int(g[0])})
def _already_pinned(fields, pages):
    return {}, (f"the guest pinned mfn {fields['mfn']:#x} a second time: refused; usually a "
                f"pin/unpin bookkeeping bug in the guest.")


@message("not_pinned", "mfn not pinned", "not pinned",
         r"[Mm]fn " + HEX + r" not pinned",
         lambda g: {"mfn": hex_int(g[0])})
def _not_pinned(fields, pages):
    return {}, (f"the guest unpinned mfn {fields['mfn']:#x}, which is not pinned: refused; usually "
                f"a pin/unpin bookkeeping bug in the guest.")


# --- mm.c: entries and references ---------------------------------------------------------------

# mm.c get_page_from_lNe() / mod_lN_entry(): 24-bit flag encoding (get_pte_flags)
@message("bad_flags", "Bad Ln flags", "Bad L",
         r"Bad L([1-4]) flags (?:0x)?" + HEX,
         lambda g: {"level": int(g[0]), "flags": hex_int(g[1])})
def _bad_flags(fields, pages):
    flags = decode_flags24(fields["flags"], fields["level"])
    hints = flags_hints(flags["names"], fields["level"])
    return {"flags": flags}, (
        f"an L{fields['level']} entry has flags Xen forbids for this guest: {fields['flags']:#x} "
        f"(Xen's 24-bit encoding) = {' '.join(flags['names']) or 'none'} (PTE bits "
        f"{', '.join(map(str, flags['pte_bits']))})" + ("; " + "; ".join(hints) if hints else "") + ".")


# mm.c get_page_from_l1e(): "l1e_owner=%d, pg_owner=%d" (4.4-4.8), "l1e_owner d%d, pg_owner d%d"
@message("l1e_ref_error", "Error getting mfn from L1 entry", "from L1 entry",
         r"Error getting mfn " + HEX + r" \(pfn " + HEX + r"\) from L1 entry " + HEX
         + r" for l1e_owner[= ]d?(-?\d+), pg_owner[= ]d?(-?\d+)",
         lambda g: {"mfn": hex_int(g[0]), "pfn": hex_int(g[1]), "entry": hex_int(g[2]),
                    "l1e_owner": int(g[3]), "pg_owner": int(g[4])})
def _l1e_ref_error(fields, pages):
    entry = decode_pte(fields["entry"], 1)
    writable = "RW" in entry["flags"]
    owner = domain_name(str(fields["pg_owner"]))
    foreign = ("" if fields["l1e_owner"] == fields["pg_owner"] else
               f" (a foreign mapping: the table belongs to {domain_name(str(fields['l1e_owner']))})")
    return {"entry": entry}, (
        f"an L1 entry {fields['entry']:#018x} ({entry_text(entry)}) maps mfn {fields['mfn']:#x} "
        f"({pfn_text(fields['pfn'])}), but Xen could not take a "
        + ("writable (type) " if writable else "") + f"reference on it for {owner}{foreign}: "
        + (f"the frame is not owned by {owner}, is free, or is a page table (or GDT/LDT) "
           f"that cannot be mapped writable" if writable else
           f"the frame is not owned by {owner} or is free")
        + ".")


@message("io_map", "Non-privileged attempt to map I/O space", "attempt to map I/O space",
         r"Non-privileged \((\d+)\) attempt to map I/O space " + HEX,
         lambda g: {"domain": int(g[0]), "mfn": hex_int(g[1])})
def _io_map(fields, pages):
    return {}, (f"{domain_name(str(fields['domain']))} tried to map mfn {fields['mfn']:#x}, an I/O (non-RAM) "
                f"frame, without I/O memory permission (iomem=): refused.")


# mm.c get_page_from_pagenr() (4.4-4.8 "pfn"), get_page_from_mfn() (4.9+ "mfn")
@message("page_ref", "Could not get page ref", "Could not get page ref",
         r"Could not get page ref for (?:pfn|mfn) " + HEX,
         lambda g: {"mfn": hex_int(g[0])})
def _page_ref(fields, pages):
    return {}, (f"Xen could not take a reference on mfn {fields['mfn']:#x} for the requesting domain: "
                f"the mfn is invalid (beyond RAM) or not owned by that domain.")


# mm.c get_page(): "Error pfn %lx: rd=%p, od=%p, ..." (4.4), "rd=%d od=%d" (4.6-4.12),
# "Error mfn %: rd=%pd od=%pd" (4.13+)
@message("get_page_error", "get_page error (rd/od)", "rd=",
         r"Error (?:pfn|mfn) " + HEX + r": rd=(\S+?),? od=(\S+?),? caf=" + HEX + r",? taf=" + HEX,
         lambda g: {"mfn": hex_int(g[0]), "rd": g[1], "od": g[2], "caf": hex_int(g[3]), "taf": hex_int(g[4])})
def _get_page_error(fields, pages):
    count, type_info = pages.count_info(fields["caf"]), pages.type_info(fields["taf"])
    requester, owner = domain_name(fields["rd"]), domain_name(fields["od"])
    state = f" ({_page_state(count, type_info, '; ')})" if count else ""
    return {"caf": count, "taf": type_info}, (
        f"get_page on mfn {fields['mfn']:#x} for {requester} failed: the page belongs to {owner}{state}"
        + (": a domain used a frame it does not own" if requester != owner else
           ": owner matches, so the count was exhausted or the page is being freed")
        + ".")


# mm.c steal_page() (4.4-4.8): "ed=%p(%u), sd=%p," (4.4), "ed=%d sd=%d" (4.5-4.8)
@message("steal_error", "Bad page (steal_page)", "Bad page",
         r"Bad page (?:0x)?" + HEX + r": ed=(\S+?),? sd=(\S+?),? caf=" + HEX + r",? taf=" + HEX,
         lambda g: {"mfn": hex_int(g[0]), "ed": g[1], "sd": g[2], "caf": hex_int(g[3]), "taf": hex_int(g[4])})
def _steal_error(fields, pages):
    count, type_info = pages.count_info(fields["caf"]), pages.type_info(fields["taf"])
    return {"caf": count, "taf": type_info}, (
        f"steal_page (page transfer) of mfn {fields['mfn']:#x} failed: expected owner "
        f"{domain_name(fields['ed'])}, actual owner {domain_name(fields['sd'])}"
        + (f"; {_page_state(count, type_info, '; ')}" if count else "")
        + ": only an unmapped, untyped page with exactly its allocation reference "
        "can be transferred.")


# adjust_guest_l1e(): "set to kernel page" (4.4-4.9, mm.c), "set in kernel page" (4.10+, pv/mm.h)
@message("global_kernel", "Global bit set on kernel page", "Global bit is set",
         r"Global bit is set (?:to|in) kernel page " + HEX,
         lambda g: {"mfn": hex_int(g[0])})
def _global_kernel(fields, pages):
    return {}, (f"a 64-bit PV guest's kernel-only mapping of mfn {fields['mfn']:#x} has the Global "
                f"bit set; kernel mappings must not be global (the guest switches between "
                f"kernel and user page tables).")


# --- traps.c: page walks, faults, traps -------------------------------------------------------

# x86_64/traps.c show_page_walk()
@message("walk_start", "Pagetable walk", "Pagetable walk from",
         r"Pagetable walk from " + HEX + r":",
         lambda g: {"va": hex_int(g[0])})
def _walk_start(fields, pages):
    return {}, (f"Xen's page-table walk for va {fields['va']:#x} ({va_region(fields['va'])}); the next "
                f"lines are the entries, each followed by the M2P value of the frame it points at.")


@message("walk_entry", "Pagetable walk entry", "] = ",
         r"^\s*L([1-4])\[0x" + HEX + r"\] = " + HEX + r" " + HEX + r"\s*(\(PSE\))?",
         lambda g: {"level": int(g[0]), "index": hex_int(g[1]), "entry": hex_int(g[2]), "m2p": hex_int(g[3]),
                    "pse": bool(g[4])})
def _walk_entry(fields, pages):
    entry = decode_pte(fields["entry"], fields["level"])
    decoded = {"entry": entry}
    level = fields["level"]
    if not entry["present"]:
        return decoded, (f"L{level} slot {fields['index']:#x}: {fields['entry']:#x} is not present: the walk "
                         f"ends here (an access faults with 'not-present page').")
    leaf = entry["leaf"]
    target = "page" if leaf else "next table"
    size = {3: " (1 GiB page)", 2: " (2 MiB page)"}.get(level, "") if leaf and level > 1 else ""
    reserved = f"; reserved bits set {entry['reserved']:#x}" if entry["reserved"] else ""
    return decoded, (f"L{level} slot {fields['index']:#x}: {' '.join(entry['flags'])} -> {target}{size} at mfn "
                     f"{entry['pfn']:#x} ({pfn_text(fields['m2p'])}){reserved}.")


# traps.c do_page_fault(): panic("FATAL PAGE FAULT\n[error_code=%04x]\nFaulting linear address: %p")
@message("fatal_pf", "FATAL PAGE FAULT", "FATAL PAGE FAULT",
         r"FATAL PAGE FAULT(?:\s*\[error_code=" + HEX + r"\])?",
         lambda g: {"error_code": hex_int(g[0])} if g[0] else {})
def _fatal_pf(fields, pages):
    error_code = fields.get("error_code")
    if error_code is None:
        return {}, "Xen itself took a page fault it could not fix up: the hypervisor panics."
    fault = decode_pf(error_code)
    return {"error_code": fault}, (f"Xen itself took a page fault it could not fix up ({fault['text']}; error "
                                   f"code {error_code:#x}: {' '.join(fault['flags']) or 'no bits'}): the "
                                   f"hypervisor panics.")


# its second line: the annotator merges it into the FATAL PAGE FAULT entry just before
@message("error_code", None, "[error_code=",
         r"^\[error_code=" + HEX + r"\]",
         lambda g: {"error_code": hex_int(g[0])})
def _error_code(fields, pages):
    return {}, ""


@message("fault_address", "Faulting linear address", "Faulting linear address",
         r"Faulting linear address: (?:0x)?" + HEX,
         lambda g: {"va": hex_int(g[0])})
def _fault_address(fields, pages):
    return {}, f"the faulting address is {fields['va']:#x} ({va_region(fields['va'])})."


# traps.c: printk("Xen SM%cP violation\n") / printk(XENLOG_G_ERR "%pv fatal SM%cP violation\n")
@message("guest_smap", "guest fatal SMAP/SMEP violation", "fatal SM",
         r"fatal SM([AE])P violation",
         lambda g: {"what": "SMAP" if g[0] == "A" else "SMEP"})
def _guest_smap(fields, pages):
    return {}, (f"a PV guest kernel (typically 32-bit, running in ring 1) made a supervisor "
                f"{'access to' if fields['what'] == 'SMAP' else 'instruction fetch from'} a user page "
                f"with CR4.{fields['what']} on, and Xen crashed the domain; fixed in Xen 4.7.0 / "
                f"4.6.3 / 4.5.4 (SMEP/SMAP suppressed while 32-bit PV guest code runs), or "
                f"boot Xen with {fields['what'].lower()}=hvm.")


@message("xen_smap", "Xen SMAP/SMEP violation", "Xen SM",
         r"Xen SM([AE])P violation",
         lambda g: {"what": "SMAP" if g[0] == "A" else "SMEP"})
def _xen_smap(fields, pages):
    if fields["what"] == "SMAP":
        return {}, ("Xen read or wrote a user-accessible page (US set at every level) while "
                    "CR4.SMAP was on: fatal for the hypervisor.")
    return {}, ("Xen executed code from a user-accessible page while CR4.SMEP was on: fatal "
                "for the hypervisor.")


def _unhandled_fields(g):
    if g[0] is not None:                     # 4.20+
        return {"vector": int(g[0]), "name": g[1], "error_code": hex_int(g[2])}
    fields = {"vector": int(g[4]), "name": g[3]}
    error_code = g[5] or g[7]
    if error_code:
        fields["error_code"] = hex_int(error_code)
    if g[6]:
        fields["vcpu"] = int(g[6])
    return fields


# pv/traps.c pv_inject_event(): "Unhandled: vec %u, %s[%04x]" (4.20+); traps.c/pv/traps.c
# "Unhandled %s fault/trap [#%d, ec=%04x]" (4.5-4.19); "Unhandled %s fault/trap [#%d] on VCPU %d
# [ec=%04x]" (4.4)
@message("unhandled", "Unhandled guest trap", "Unhandled",
         r"Unhandled(?:: vec (\d+), (#\w+)\[" + HEX + r"\]| (.+?) fault/trap \[#(\d+)"
         r"(?:, ec=" + HEX + r")?\](?: on VCPU (\d+) \[ec=" + HEX + r"\])?)",
         _unhandled_fields)
def _unhandled(fields, pages):
    error_code = fields.get("error_code")
    fault = decode_pf(error_code) if error_code is not None and fields["vector"] == 14 else None
    what = f"vector {fields['vector']} ({fields['name']})"
    return ({"error_code": fault} if fault else {}), (
        f"the PV guest has no handler registered for {what}, so Xen cannot deliver it"
        + (f" ({fault['text']}, error code {error_code:#x})" if fault else
           (f" (error code {error_code:#x})" if error_code is not None else ""))
        + ": the guest faulted before installing its trap table, or its trap table is corrupt.")


# traps.c fatal_trap(): "FATAL TRAP: vec %u, %s[%04x]%s" (4.15+) / "FATAL TRAP: vector = %d (%s)"
@message("fatal_trap", "FATAL TRAP", "FATAL TRAP",
         r"FATAL TRAP: vec(?:tor = (\d+) \(([^)]*)\)| (\d+), (#\w+)\[" + HEX + r"\])",
         lambda g: ({"vector": int(g[0]), "name": g[1]} if g[0] is not None else
                    {"vector": int(g[2]), "name": g[3], "error_code": hex_int(g[4])}))
def _fatal_trap(fields, pages):
    error_code = fields.get("error_code")
    return {}, (f"Xen took exception {fields['vector']} ({fields['name']}) in hypervisor context"
                + (f" (error code {error_code:#x})" if error_code is not None else "")
                + ": the hypervisor panics.")



# --- a crash: Xen's register dump and what leads to it (x86_64/traps.c show_registers, traps.c,
# x86_64/entry.S, common/domain.c; the same text 4.4 ... 4.20). The rest of the block (general
# registers, stack words, call-trace entries) is read by :mod:`.crash`.

# traps.c asm_domain_crash_synchronous(): printk("domain_crash_sync called from entry.S: fault at %p %pS")
@message("domain_crash_sync", "domain_crash_sync (entry.S)", "domain_crash_sync",
         r"domain_crash_sync called from entry\.S: fault at (?:0x)?" + HEX + r"(?: (\S+))?",
         lambda g: {"address": hex_int(g[0]), "symbol": g[1]})
def _domain_crash_sync(fields, pages):
    symbol = fields.get("symbol") or "?"
    if symbol.split("#")[-1].startswith(("domain_crash_page_fault_", "compat_crash_page_fault")):
        what = ("the fixup of a page fault Xen took writing the exception frame on the guest's stack "
                "(the page walk just before names the address)")
    elif "create_bounce_frame" in symbol:
        what = ("where create_bounce_frame gave up delivering an event to the guest (no handler, or a bad "
                "stack pointer), or, before Xen 4.14, the store that faulted (then a page walk precedes)")
    else:
        what = "where Xen's entry code gave up on the guest"
    return {}, (f"Xen crashes the current domain from its entry code; 'fault at {fields['address']:#x} {symbol}' "
                f"is {what}.")


# common/domain.c __domain_crash()
@message("domain_crashed", "Domain crashed", "crashed",
         r"Domain (\d+) (?:\(vcpu#(\d+)\) crashed|reported crashed by domain (\d+)) on cpu#(\d+):",
         lambda g: {"domain": int(g[0]), "vcpu": int(g[1]) if g[1] else None,
                    "by": int(g[2]) if g[2] else None, "cpu": int(g[3])})
def _domain_crashed(fields, pages):
    if fields["by"] is not None:
        return {}, f"d{fields['by']} reported d{fields['domain']} crashed (CPU {fields['cpu']}): no register dump follows."
    return {}, (f"Xen crashes d{fields['domain']} (its vCPU {fields['vcpu']} was running on CPU {fields['cpu']}); "
                f"the register dump that follows is that vCPU's, as saved when it entered Xen.")


# x86_64/traps.c print_xen_info(): "----[ Xen-%d.%d%s  x86_64  debug=%c  %s ]----" (4.20: build info)
@message("crash_header", "Register dump header", "----[ Xen-",
         r"----\[ Xen-(\d+\.\d+\S*)\s+(\S+)\s+(?:debug=([yn])\s+)?(.*?)\s*\]----",
         lambda g: {"version": g[0], "arch": g[1], "debug": g[2], "taint": g[3]})
def _crash_header(fields, pages):
    build = {"y": "a debug build", "n": "a release build", None: "build type not printed"}[fields["debug"]]
    return {}, f"a register dump from Xen {fields['version']} ({fields['arch']}, {build}, {fields['taint']})."


@message("crash_cpu", "Register dump CPU", "CPU:", r"^CPU:    (\d+)$", lambda g: {"cpu": int(g[0])})
def _crash_cpu(fields, pages):
    return {}, f"on physical CPU {fields['cpu']}."


# "RIP:    %04x:[<%016lx>]" and " %pS" for Xen's own context
@message("crash_rip", "Register dump RIP", "RIP:",
         r"^RIP:    " + HEX + r":\[<" + HEX + r">\](?: (\S+))?",
         lambda g: {"cs": hex_int(g[0]), "rip": hex_int(g[1]), "symbol": g[2]})
def _crash_rip(fields, pages):
    cs = fields["cs"]
    ring = f"ring {cs & 3}" + (" (Xen)" if cs & 3 == 0 else "")
    where = f" in {fields['symbol']}" if fields.get("symbol") else ""
    return {}, f"RIP {fields['rip']:#x}{where}, CS {cs:#x} ({ring})."


@message("crash_rflags", "Register dump RFLAGS/CONTEXT", "RFLAGS:",
         r"^RFLAGS: " + HEX + r"\s+(?:EM: (\d)\s+)?CONTEXT: (hypervisor|pv guest|hvm guest)(?: \((\S+)\))?",
         lambda g: {"rflags": hex_int(g[0]), "event_mask": int(g[1]) if g[1] else None, "context": g[2],
                    "vcpu": g[3]})
def _crash_rflags(fields, pages):
    ac = int(bool(fields["rflags"] & (1 << 18)))
    whose = {"hypervisor": "Xen's own registers (it was running in hypervisor context)",
             "pv guest": f"the PV guest vCPU {fields['vcpu'] or '?'}'s registers (saved when it entered Xen)",
             "hvm guest": f"the HVM guest vCPU {fields['vcpu'] or '?'}'s registers"}[fields["context"]]
    return {}, f"RFLAGS {fields['rflags']:#x} (AC={ac}, IF={int(bool(fields['rflags'] & 0x200))}): {whose}."


# "r15: %016lx   cr0: %016lx   cr4: %016lx": read from the CPU, except in HVM context
@message("crash_cr0_cr4", "Register dump CR0/CR4", "cr4:",
         r"\bcr0: " + HEX + r"\s+cr4: " + HEX,
         lambda g: {"cr0": hex_int(g[0]), "cr4": hex_int(g[1])})
def _crash_cr0_cr4(fields, pages):
    cr0, cr4 = decode_cr0(fields["cr0"]), decode_cr4(fields["cr4"])
    return {}, (f"CR0 {fields['cr0']:#x} ({' '.join(cr0['flags'])}), CR4 {fields['cr4']:#x} "
                f"({' '.join(cr4['flags'])}): the CPU's own values (for an HVM vCPU: the guest's).")


# "cr3: %016lx   cr2: %016lx": cr2 is the vCPU's (a PV guest's last fault address) in guest context
@message("crash_cr3_cr2", "Register dump CR3/CR2", "cr2:",
         r"\bcr3: " + HEX + r"\s+cr2: " + HEX,
         lambda g: {"cr3": hex_int(g[0]), "cr2": hex_int(g[1])})
def _crash_cr3_cr2(fields, pages):
    return {}, (f"CR3 {fields['cr3']:#x} (the page-table root loaded), CR2 {fields['cr2']:#x} (in guest context: "
                f"the guest's last page-fault address, not necessarily Xen's).")


@message("crash_segments", "Register dump segments", "ss:",
         r"^ds: " + HEX + r"\s+es: " + HEX + r"\s+fs: " + HEX + r"\s+gs: " + HEX + r"\s+ss: " + HEX
         + r"\s+cs: " + HEX,
         lambda g: {"ds": hex_int(g[0]), "es": hex_int(g[1]), "fs": hex_int(g[2]), "gs": hex_int(g[3]),
                    "ss": hex_int(g[4]), "cs": hex_int(g[5])})
def _crash_segments(fields, pages):
    return {}, f"SS {fields['ss']:#x}, CS {fields['cs']:#x}."


@message("xen_call_trace", "Xen call trace", "Xen call trace:", r"^Xen call trace:", lambda g: {})
def _xen_call_trace(fields, pages):
    return {}, "Xen's own call chain follows (innermost first): the crash happened in hypervisor context."


# traps.c show_guest_stack(): "Guest stack trace from rsp=%p:", compat "esp=%08lx:"
@message("guest_stack", "Guest stack trace", "Guest stack trace from",
         r"Guest stack trace from (?:[er]?sp|ss:sp)\s*=\s*(?:([0-9a-fA-F]{4}):)?" + HEX,
         lambda g: {"ss": hex_int(g[0]) if g[0] else None, "sp": hex_int(g[1])})
def _guest_stack(fields, pages):
    return {}, (f"the guest's stack words from {fields['sp']:#x} follow (read by Xen; a bounce frame Xen wrote "
                f"for the event shows up at its top).")


@message("hwdom_crashed", "Hardware domain crashed", "Hardware Dom0 crashed",
         r"Hardware Dom0 crashed: (.*)", lambda g: {"what": g[0].strip()})
def _hwdom_crashed(fields, pages):
    return {}, f"dom0 is the hardware domain: its crash takes the host down ({fields['what']})."


@message("panic", "Panic", "Panic on CPU", r"^Panic on CPU (\d+):", lambda g: {"cpu": int(g[0])})
def _panic(fields, pages):
    return {}, f"Xen panics on CPU {fields['cpu']}; the reason is on the next lines."


# Xen touching guest memory elsewhere: domain.c load_segments(), pv/iret.c do_iret(), show_guest_stack()
@message("guest_frame_fault", "Fault writing/reading a guest frame", "while",
         r"(error while creating (?:compat )?failsafe callback frame|Fault while reading IRET context from "
         r"guest stack|Fault while accessing guest memory)",
         lambda g: {"what": g[0]})
def _guest_frame_fault(fields, pages):
    what = fields["what"]
    if what.startswith("error"):
        why = ("Xen could not write the failsafe callback frame on the guest's kernel stack (a segment reload "
               "failed at context switch, and the stack is unmapped or read-only): the domain is crashed")
    elif what.startswith("Fault while reading IRET"):
        why = ("the guest's HYPERVISOR_iret frame at its stack pointer could not be read (copy_from_guest "
               "faulted): the domain is crashed")
    else:
        why = "Xen could not read the guest's stack while dumping it (unmapped): the words stop here"
    return {}, why + "."

KIND_TEXT = {declared.kind: declared.text for declared in MESSAGES if declared.text is not None}
