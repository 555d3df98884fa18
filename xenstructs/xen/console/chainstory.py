"""The story of each causal chain (:mod:`.chains`): the path ``L3 mfn C slot M -> L2 mfn B slot N ->
mfn A``, its one root cause, the request that failed, and, with a dump, the page-table entries that
still keep the root page writable (a reverse map, :func:`xenstructs.xen.refs.references`).
"""

from ...errors import XenscopeError
from .messages import BY_KIND
from .sentences import PAGE_TABLES, TYPE_NOUN, decode_flags24, decode_pte, rc_text, type_state

MAX_ALL = 10                 # up to this many chains are all told
MAX_TOLD = 5                 # else the first ones are told, the rest summarised
MAX_REFS = 16                # PTEs listed per root page
ADDRESS_MASK = 0x000FFFFFFFFFF000   # bits 12-51 of an entry
GNTTAB_FLAG = 1 << 22        # 24-bit flags: PTE bit 62, Xen's _PAGE_GNTTAB (debug builds only)


def _decode(pages, value):
    try:
        return pages.type_info(value)
    except (XenscopeError, TypeError):
        return None


def _level(decoded):
    return int(decoded["type"][1]) if decoded and decoded["type"] in PAGE_TABLES else None


def path_text(chain):
    """``L3 mfn 0x1 slot 0x45 -> L2 mfn 0x2 slot 0x123 -> mfn 0x3``."""
    parts = [f"L{node['level'] or '?'} mfn {node['mfn']:#x}"
             + (f" slot {node['slot']:#x}" if node["slot"] is not None else " (slot not logged)")
             for node in chain["path"]]
    root = chain["root"]
    request = chain["request"]
    if root and "mfn" in root["fields"]:
        mfn = root["fields"]["mfn"]
        itself = not parts and request and request["mfn"] == mfn
        parts.append(f"mfn {mfn:#x}" + (" (the page itself)" if itself else ""))
    elif root is None and chain["path"]:
        parts.append("? (the cause was not logged)")
    elif root and root["kind"] == "bad_flags" and not parts:
        parts.append(f"an L{root['fields']['level']} entry written on request (no table validation)")
    return " -> ".join(parts)


def _writable_cause(mfn, saw, wanted, holder):
    return {"kind": "writable", "mfn": mfn, "type_count": saw["count"],
            "text": f"mfn {mfn:#x} is still mapped writable (type writable, count {saw['count']}), so it "
                    f"cannot become {wanted}" + (f", as {holder} requires" if holder else "")
                    + ": some L1 entry maps it with RW, and Xen gives a page a page-table type only when "
                    "no writable mapping of it is left"}


def _bad_type_cause(chain, pages):
    """The root cause when the chain ends in a Bad type (saw != exp) for the page an entry names."""
    fields = chain["root"]["fields"]
    mfn = fields["mfn"]
    saw, exp = _decode(pages, fields["saw"]), _decode(pages, fields["exp"])
    last = chain["path"][-1] if chain["path"] else None
    holder = (f"slot {last['slot']:#x} of L{last['level']} mfn {last['mfn']:#x}"
              if last and last["slot"] is not None else "")
    if saw is None or exp is None:
        return {"kind": "bad_type", "mfn": mfn,
                "text": f"mfn {mfn:#x} has type_info {fields['saw']:#x}, not the {fields['exp']:#x} asked "
                        f"for (give --xen to decode them)"}
    if last and last["level"] and _level(exp) and _level(exp) != last["level"] - 1:
        return {"kind": "inconsistent", "mfn": mfn,
                "text": f"mfn {mfn:#x} could not become {TYPE_NOUN.get(exp['type'], exp['type'])}, but an entry "
                        f"of L{last['level']} mfn {last['mfn']:#x} asks for an L{last['level'] - 1}: these "
                        f"lines are not one request (interleaved or edited log)"}
    if saw["type"] == "writable" and exp["type"] in PAGE_TABLES:
        return _writable_cause(mfn, saw, TYPE_NOUN[exp["type"]], holder)
    if saw["type"] in PAGE_TABLES + ("seg_desc",) and exp["type"] == "writable":
        entry = next((leaf for leaf in chain["leaves"] if leaf["kind"] == "l1e_ref_error"), None)
        return {"kind": "table_mapped_rw", "mfn": mfn,
                "text": f"mfn {mfn:#x} is {TYPE_NOUN[saw['type']]} ({type_state(saw)}) and an L1 entry"
                        + (f" ({entry['fields']['entry']:#x}, line {entry['line_no']})" if entry else "")
                        + " asks to map it writable: a page table (or GDT/LDT page) may only be mapped "
                        "read-only while it is one"}
    linear = last and _level(saw) == last["level"]
    if linear and last["linear_lines"]:
        how = ("and linear page tables are disabled (pv-linear-pt=0)" if last["linear_disabled"] else
               "with RW set: Xen accepts such a linear (recursive) mapping only read-only")
        return {"kind": "linear", "mfn": mfn,
                "text": f"slot {last['slot']:#x} of L{last['level']} mfn {last['mfn']:#x} points at mfn "
                        f"{mfn:#x}, itself {TYPE_NOUN[saw['type']]} ({type_state(saw)}), {how}"}
    return {"kind": "wrong_type", "mfn": mfn,
            "text": f"mfn {mfn:#x} is {TYPE_NOUN.get(saw['type'], saw['type'])} ({type_state(saw)}) and "
                    f"cannot also be {TYPE_NOUN.get(exp['type'], exp['type'])}"
                    + (f", as {holder} requires" if holder else "")
                    + ": a page has one type at a time"}


def root_cause(chain, pages):
    """``{"kind", "text", "mfn"?}``: what made the chain's innermost request fail."""
    root = chain["root"]
    if root is None:
        gap = (f": Xen's rate limit suppressed messages just before it (line {chain['gap_before']})"
               if chain["gap_before"] else " (printed before the log starts, or not a debug build's message)")
        return {"kind": "unknown", "text": "the innermost cause was not logged" + gap}
    if root["kind"] == "bad_type":
        return _bad_type_cause(chain, pages)
    if root["kind"] == "bad_flags":
        flags = decode_flags24(root["fields"]["flags"], root["fields"]["level"])
        last = chain["path"][-1] if chain["path"] else None
        where = (f"slot {last['slot']:#x} of L{last['level']} mfn {last['mfn']:#x}"
                 if last and last["slot"] is not None else
                 f"an L{root['fields']['level']} entry the guest asked Xen to write (no table was being "
                 f"validated: mmu_update or update_va_mapping)")
        debug_only = (" (bit 62 is Xen's _PAGE_GNTTAB, refused only by debug builds: "
                      "asm/page.h undefines it under NDEBUG, so a release build accepts this entry)"
                      if root["fields"]["flags"] & GNTTAB_FLAG else "")
        return {"kind": "bad_flags", "flags": root["fields"]["flags"],
                "text": f"{where} has flags Xen forbids in a PV L{root['fields']['level']} entry: "
                        f"{root['fields']['flags']:#x} = {' '.join(flags['names']) or 'none'}{debug_only}"}
    try:
        sentence = BY_KIND[root["kind"]].explain(root["fields"], pages)[1]
    except (XenscopeError, KeyError, TypeError):
        sentence = f"a {root['kind']} message (line {root['line_no']})"
    return {"kind": root["kind"], "mfn": root["fields"].get("mfn"), "text": sentence.rstrip(".")}


def _request_text(chain, pages):
    request = chain["request"]
    if request is not None and request["kind"] == "unpin":
        return f"unpinning mfn {request['mfn']:#x} (line {request['line_no']})"
    if request is None:
        if chain["gap_after"]:
            what = "a request whose next messages were suppressed (line " + str(chain["gap_after"]) + ")"
        elif chain["path"]:
            what = "a table validation (no pin followed: mmu_update, a new baseptr, or a pin not logged)"
        else:
            what = "a type change or page-table update (no table validation followed)"
        return what
    level = chain["path"][0]["level"] if chain["path"] else None
    if level is None and chain["root"] and chain["root"]["kind"] == "bad_type":
        level = _level(_decode(pages, chain["root"]["fields"]["exp"]))
    rc = f", {rc_text(request['rc'])}" if request.get("rc") is not None else ""
    return (f"pinning mfn {request['mfn']:#x}" + (f" as an L{level}" if level else "")
            + f" (line {request['line_no']}{rc})")


def _linear_note(chain, cause):
    lines = sorted([line for node in chain["path"] for line in node["linear_lines"]]
                   + chain["linear_lines"])
    if not lines or cause["kind"] == "linear":
        return ""
    listed = ", ".join(str(line) for line in lines)
    return (f" The 'Attempt to create linear p.t.' line{'s' if len(lines) > 1 else ''} ({listed}) "
            f"{'are' if len(lines) > 1 else 'is'} Xen retrying a refused RW entry as a linear (recursive) "
            f"mapping of a table of its own level and refusing that too: a consequence of the failure "
            f"below, not a cause.")


def describe_chains(chains, pages):
    """Each chain with ``text`` (its path), ``root_cause`` and ``sentence``."""
    for chain in chains:
        chain["text"] = path_text(chain)
        cause = root_cause(chain, pages)
        chain["root_cause"] = cause
        context = chain["context"]
        who = ""
        if context:
            domain = context["domain"]
            who = (f"d{domain}" if isinstance(domain, int) else str(domain)) + (
                f"v{context['vcpu']}" if context.get("vcpu") is not None else "")
        span = (f"line {chain['line_no']}" if chain["line_no"] == chain["last_line"]
                else f"lines {chain['line_no']}-{chain['last_line']}")
        chain["sentence"] = (f"{span}{f' ({who})' if who else ''}: {_request_text(chain, pages)} failed: "
                             f"{chain['text']}. Root cause: {cause['text']}.{_linear_note(chain, cause)}")
    return chains


def chains_story(chains, dropped=0):
    """Sentences for the chains: all of a few, else the first ones told and the rest counted by
    root cause (``dropped``: chains beyond the builder's bound, counted only)."""
    told = len(chains) if len(chains) <= MAX_ALL else MAX_TOLD
    story = [chain["sentence"] for chain in chains[:told]]
    rest = chains[told:]
    if rest:
        kinds = {}
        for chain in rest:
            kinds[chain["root_cause"]["kind"]] = kinds.get(chain["root_cause"]["kind"], 0) + 1
        story.append(f"... and {len(rest)} more refused request(s) (lines {rest[0]['line_no']}...): "
                     + ", ".join(f"{count} with root cause {kind}" for kind, count in kinds.items())
                     + (f"; {dropped} more failed validation(s)/request(s) not analysed (bound reached)"
                        if dropped else "") + ".")
    return story


# ---------------------------------------------------------------------------------------------
# With a dump
# ---------------------------------------------------------------------------------------------

def _ref_text(ref):
    """One entry of the reverse map (:func:`xenstructs.xen.refs.references`) as the story names it."""
    rights = f"{'RW' if ref['writable'] else 'RO'}{' US' if ref['user'] else ''}"
    vas = "".join(f", va {va:#x}" for va in ref["vas"][:2])
    if ref["level"] is None:                                 # Xen's own mapping, in its slots
        return f"Xen's own mapping = {ref['entry']:#x} ({rights}{vas})"
    return (f"{ref['domain_name']} L{ref['level']} mfn {ref['table_mfn']:#x} slot {ref['slot']:#x} = "
            f"{ref['entry']:#x} ({rights}{vas})")


def _entry_in_dump(host, node):
    """The entry at ``node``'s slot in the dump and the page it names now, as a dict."""
    entry = host.t.read_u64((node["mfn"] << 12) + node["slot"] * 8)
    decoded = decode_pte(entry, node["level"] or 1)
    target = (entry & ADDRESS_MASK) >> 12 if decoded["present"] else None      # the frame it names
    found = {"table_mfn": node["mfn"], "level": node["level"], "slot": node["slot"], "entry": entry,
             "flags": decoded["flags"], "target_mfn": target, "target": None}
    if target is not None:
        try:
            page = host.page(target)
            found["target"] = {"type": page["type"]["type"], "type_text": page["type"]["text"],
                               "owner": page["owner"]}
        except XenscopeError as e:
            found["target"] = {"error": str(e)}
    return found


def _unknown_root_text(chain, found):
    node = chain["path"][-1]
    text = (f"line {chain['line_no']}: in the dump, slot {node['slot']:#x} of L{node['level']} mfn "
            f"{node['mfn']:#x} = {found['entry']:#x} ({' '.join(found['flags']) or 'no flags'})")
    target = found["target"]
    if found["target_mfn"] is None:
        return text + ": not present any more (changed after the log)."
    text += f" -> mfn {found['target_mfn']:#x}, " + (target.get("type_text") or target.get("error", "?"))
    if target.get("type") == f"l{node['level']}" and "RW" in found["flags"]:
        return text + (f": an RW linear (recursive) mapping of an L{node['level']} table, which Xen refuses "
                       f"(linear mappings must be read-only): the likely root cause the log lost.")
    if target.get("type") == "writable":
        return text + f": a page still mapped writable, which cannot become an L{node['level'] - 1} table."
    return text + "."


def dump_story(chains, host, references=None):
    """With a Xen host dump: the entry each chain's innermost table holds at its failing slot, and for
    each chain whose root page is still writable, the entries that map it RW (the reverse map);
    sentences for the story. ``references(host, mfns, writable_only)`` is
    :func:`xenstructs.xen.refs.references` unless given."""
    story = []
    for chain in chains:
        node = chain["path"][-1] if chain["path"] else None
        if node is None or node["slot"] is None:
            continue
        try:
            chain["dump_entry"] = found = _entry_in_dump(host, node)
        except XenscopeError as e:
            chain["dump_entry"] = {"error": str(e)}
            continue
        if chain["root"] is None:
            story.append(_unknown_root_text(chain, found))
    if references is None:
        from ..refs import references
    return story + _owner_story(chains, host) + _writable_story(chains, host, references)


def _owner_story(chains, host):
    """For an L1 entry refused because its frame is not the domain's: who owns the frame now."""
    story = []
    for chain in chains:
        root = chain["root"]
        if not root or root["kind"] != "l1e_ref_error":
            continue
        fields = root["fields"]
        try:
            owner = host.page(fields["mfn"])["owner"]
        except XenscopeError as e:
            story.append(f"line {root['line_no']}: mfn {fields['mfn']:#x} cannot be read in the dump ({e}).")
            continue
        chain["dump_owner"] = owner
        if owner is None or owner == fields["pg_owner"]:
            continue
        asked = ("its own (DOMID_SELF)" if fields["pg_owner"] == fields["l1e_owner"]
                 else f"d{fields['pg_owner']}'s")
        story.append(f"line {root['line_no']}: in the dump, mfn {fields['mfn']:#x} belongs to d{owner}: "
                     f"d{fields['l1e_owner']} asked to map it as {asked}, so Xen refused; mapping another "
                     f"domain's frame needs that domain named as the pages' owner (foreigndom) by a domain "
                     f"privileged over it, or a grant.")
    return story


def _writable_story(chains, host, references):
    roots = sorted({chain["root_cause"]["mfn"] for chain in chains
                    if chain["root_cause"]["kind"] == "writable"})
    if not roots:
        return []
    found = {}
    for ref in references(host, roots, writable_only=True):
        found.setdefault(ref["mfn"], []).append(ref)
    story = []
    for chain in chains:
        cause = chain["root_cause"]
        if cause["kind"] != "writable":
            continue
        refs = [ref for ref in found.get(cause["mfn"], []) if ref.get("writable")]
        chain["writable_mappings"] = refs[:MAX_REFS]
        if refs:
            listed = "; ".join(_ref_text(ref) for ref in refs[:MAX_REFS])
            more = f" and {len(refs) - MAX_REFS} more" if len(refs) > MAX_REFS else ""
            story.append(f"line {chain['line_no']}: in the dump, mfn {cause['mfn']:#x} is mapped RW by "
                         f"{len(refs)} entr{'y' if len(refs) == 1 else 'ies'}: {listed}{more}.")
        else:
            story.append(f"line {chain['line_no']}: in the dump, no page-table entry maps mfn "
                         f"{cause['mfn']:#x} RW any more (the mapping was removed after the log).")
    return story
