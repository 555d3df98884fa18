"""The likely story of a console log: rules that read the annotator's summary (Bad type patterns
per mfn, validation chains, faults with their page walks) like an engineer's notes.

Each rule reads an :class:`.annotate.Annotator` after its last line; :func:`likely_story` runs
them in order.
"""

from collections import Counter

from ...decode import decode_pf
from ...errors import XenscopeError
from .chainstory import chains_story
from .sentences import PAGE_TABLES, decode_pte, level_name, va_region


def likely_story(annotator):
    """The story: a list of sentences (empty for an empty log)."""
    story = _bad_type_story(annotator)
    story += chains_story(annotator.chains, annotator.chain_builder.dropped)
    story += _source_story(annotator)
    if annotator.release_build:
        story.append(f"the banner says debug=n: a release build of Xen {annotator.banner}, in which gdprintk() "
                     f"prints nothing (xen/include/xen/lib.h, NDEBUG): a refused pin, type change or "
                     f"page-table update leaves no line in this log, so only a dump can tell those "
                     f"(pt-audit, xen refs).")
    by_kind = annotator.by_kind
    told = Counter(leaf["kind"] for chain in annotator.chains for leaf in chain["leaves"])
    if by_kind.get("bad_flags", 0) > told["bad_flags"]:
        count = by_kind["bad_flags"] - told["bad_flags"]
        story.append(f"{count} page-table entr{'y has' if count == 1 else 'ies have'} "
                     f"flags Xen forbids (see the decoded Bad Ln flags lines): the guest builds entries "
                     f"with bits Xen does not allow in PV page tables.")
    if by_kind.get("l1e_ref_error", 0) > told["l1e_ref_error"]:
        count = by_kind["l1e_ref_error"] - told["l1e_ref_error"]
        story.append(f"{count} L1 entr{'y maps' if count == 1 else 'ies map'} "
                     f"frames the domain cannot take a reference on: mappings of frames it does not own "
                     f"(freed, granted away, or another domain's) or writable mappings of page tables.")
    story += fault_story(annotator.faults, annotator.walks)
    if by_kind.get("guest_smap"):
        story.append("a guest was crashed for an SMAP/SMEP violation: a 32-bit PV guest on SMAP/SMEP "
                     "hardware and a Xen without the fix (4.5.0-4.5.3, 4.6.0-4.6.2): upgrade, or boot Xen "
                     "with smap=hvm smep=hvm.")
    if annotator.suppressed:
        story.append(f"{annotator.suppressed} messages were suppressed by Xen's printk rate limit "
                     f"({annotator.suppressed_lines} line(s)): the log is incomplete; boot Xen with "
                     f"loglvl=all guest_loglvl=all to see every message.")
    if not story and annotator.entries:
        story.append("no known pattern; read the decoded lines above.")
    return story


def _source_story(annotator):
    """Which Xen release's mm.c line numbers the log's gdprintk lines match."""
    match = annotator.source_match
    if not match:
        return []
    count = f"{match['checked']} distinct mm.c line number(s) of the decoded messages"
    if match["releases"]:
        where = ", ".join(f"{line['line']} {line['function']}" for line in match["lines"][:12])
        banner = annotator.banner
        agrees = ""
        if banner:
            release = banner.split("-")[0]
            agrees = (f"; the banner's Xen {banner} is one of them" if release in match["releases"] else
                      f"; but the banner says Xen {banner}")
        return [f"{count} match the real mm.c of Xen {match['text']} (and no other release 4.4.0-4.20.x)"
                f"{agrees}: {where}."]
    best = match.get("best")
    return [f"{count} match no Xen release's mm.c (4.4.0-4.20.x, from the real sources): a patched, "
            f"unreleased or hand-written log"
            + (f"; the closest, {best['text']}, has {best['matched']} of them." if best and best["matched"] > 1
               else ".")]


def _bad_type_pairs(annotator):
    """The mfns with a Bad type, as ``(record, saw, exp)`` in three groups: writable pages asked to
    become page tables, page tables asked to become writable, tables asked for another level. The
    root pages of causal chains are told by their chain, not here."""
    writable_as_table, table_as_writable, table_as_table = [], [], []
    in_chains = {chain["root"]["fields"].get("mfn") for chain in annotator.chains
                 if chain["root"] and chain["root"]["kind"] == "bad_type"}
    for record in annotator.mfns.values():
        if record["saw"] is None or record["exp"] is None or annotator.layout is None:
            continue
        if record["mfn"] in in_chains and len(in_chains) <= 3:
            continue
        try:
            saw, exp = annotator.pages.type_info(record["saw"]), annotator.pages.type_info(record["exp"])
        except XenscopeError:
            continue
        if saw["type"] == "writable" and exp["type"] in PAGE_TABLES:
            writable_as_table.append((record, saw, exp))
        elif saw["type"] in PAGE_TABLES and exp["type"] == "writable":
            table_as_writable.append((record, saw, exp))
        elif saw["type"] in PAGE_TABLES and exp["type"] in PAGE_TABLES:
            table_as_table.append((record, saw, exp))
    return writable_as_table, table_as_writable, table_as_table


def _bad_type_story(annotator):
    story = []
    writable_as_table, table_as_writable, table_as_table = _bad_type_pairs(annotator)
    mfns_with_bad_type = sum(1 for record in annotator.mfns.values() if record["kinds"].get("bad_type"))
    if mfns_with_bad_type >= 5:
        story.append(f"Bad type on {mfns_with_bad_type} different mfns: a mass problem, not one stray mapping "
                     f"(the guest's page-table handling is broken wholesale: e.g. a kernel that does not "
                     f"write-protect its page tables before pinning them, or a Xen/guest version mismatch).")
    if len(writable_as_table) > 3:
        by_level = Counter(level_name(exp["type"]) for _, _, exp in writable_as_table)
        examples = ", ".join(f"{record['mfn']:#x} (type count {saw['count']})"
                             for record, saw, _ in writable_as_table[:5])
        story.append(f"{len(writable_as_table)} mfns are still mapped writable, so the guest cannot pin or "
                     f"install them as page tables "
                     f"({', '.join(f'{count} as {level}' for level, count in by_level.items())}): "
                     f"e.g. {examples}; some PTEs map these page-table pages read-write.")
    else:
        for record, saw, exp in writable_as_table:
            story.append(f"mfn {record['mfn']:#x} is still mapped writable (type count {saw['count']}), so the "
                         f"guest cannot pin or install it as an {level_name(exp['type'])} table: some PTE maps "
                         f"this page-table page read-write (look for L1 entries with RW set that point at mfn "
                         f"{record['mfn']:#x}; for a Linux PV guest, a page-table page still writable in the "
                         f"direct map or in a vmalloc/kmap alias).")
    for record, saw, exp in table_as_writable[:5]:
        story.append(f"mfn {record['mfn']:#x} is an {level_name(saw['type'])} page table (type count "
                     f"{saw['count']}) and something tried to map it writable: page tables may only be mapped "
                     f"read-only (a guest writing its page tables directly instead of through Xen, or a stale "
                     f"PTE to a recycled page).")
    if len(table_as_writable) > 5:
        story.append(f"... and {len(table_as_writable) - 5} more page tables someone tried to map writable.")
    for record, saw, exp in table_as_table[:5]:
        story.append(f"mfn {record['mfn']:#x} is an {level_name(saw['type'])} table but was requested as an "
                     f"{level_name(exp['type'])} table: an entry at the wrong level points at it (a PGD/PMD "
                     f"pointer written where a lower-level table was expected, or a stale entry).")
    if len(table_as_table) > 5:
        story.append(f"... and {len(table_as_table) - 5} more page tables requested at the wrong level.")
    return story


def fault_story(faults, walks):
    """One sentence per page fault (Xen's FATAL PAGE FAULT, a guest's unhandled #PF) of the first
    20 fault events, with the page walk logged next to it."""
    story = []
    for event in faults[:20]:
        if event.get("kind") not in ("fatal_pf", "unhandled"):
            continue
        if event["kind"] == "unhandled" and event.get("vector") != 14:
            continue
        error_code = event.get("error_code")
        # the walk: before a FATAL PAGE FAULT (show_page_walk then panic); after an Unhandled #PF
        first, last = ((event["line_no"] - 80, event["line_no"]) if event["kind"] == "fatal_pf"
                       else (event["line_no"] - 80, event["line_no"] + 3))
        walk = next((logged for logged in reversed(walks) if first <= logged["line_no"] <= last), None)
        who = "Xen" if event["kind"] == "fatal_pf" else "the guest"
        fault = decode_pf(error_code) if error_code is not None else None
        head = f"line {event['line_no']}: {who} faulted"
        if walk is not None:
            head += f" at va {walk['va']:#x} ({va_region(walk['va'])})"
        if fault:
            head += f" ({fault['text']})"
        if walk is None:
            story.append(head + ": no page-table walk was logged with it.")
            continue
        story.append(head + ": " + explain_walk(walk, error_code))
    return story


def explain_walk(walk, error_code):
    """Which level of a logged walk explains the fault (``error_code`` may be None)."""
    if not walk["levels"]:
        return "the walk printed no entries (non-canonical address or unreadable root)."
    known = error_code is not None
    write, user, fetch = (known and error_code & 2, known and error_code & 4, known and error_code & 0x10)
    protection = known and error_code & 1
    decoded = [(level, decode_pte(level["entry"], level["level"])) for level in walk["levels"]]
    for level, entry in decoded:
        name = f"L{level['level']}[{level['index']:#05x}]"
        if not entry["present"]:
            tail = "" if not known else (", as the error code says (P=0)" if not protection else
                                         ", although the error code says P=1 (the entry changed after the fault?)")
            return f"the walk stops at {name} = {level['entry']:#x}, which is not present{tail}."
        if entry["reserved"]:
            return f"{name} = {level['entry']:#x} has reserved bits set ({entry['reserved']:#x})."
    if known and error_code & 8:
        return "the error code says a reserved bit was set, but no logged entry has one."
    for level, entry in decoded:
        name = f"L{level['level']}[{level['index']:#05x}]"
        if write and "RW" not in entry["flags"]:
            return f"every level is present; {name} is read-only (RW clear) and the access was a write."
        if fetch and "XD" in entry["flags"]:
            return f"every level is present; {name} has NX set and the access was an instruction fetch."
        if user and "US" not in entry["flags"]:
            return f"every level is present; {name} is supervisor-only (US clear) and the access was from user mode."
    if not decoded[-1][1]["leaf"]:
        return "the walk ended before a leaf entry (frame not valid in Xen's view?)."
    if known and not user and all("US" in entry["flags"] for _, entry in decoded):
        return ("every level is present and user-accessible (US set everywhere): a supervisor access "
                "to a user page, i.e. an SMAP/SMEP fault if CR4.SMAP/SMEP is on.")
    return ("every level is present and allows the access: the fault was spurious, or the tables "
            "changed after the fault (a missing TLB flush).")
