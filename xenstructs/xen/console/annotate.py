"""The annotator: every recognised console line gets its fields and one plain sentence (from
:mod:`.messages`), then a summary per message kind, per mfn and per domain/vcpu, and the likely
story (:mod:`.story`).

The page_info layout is chosen by ``--xen``, else the log's "Xen version" banner, else guessed from
a "Bad type" line. The input is streamed: memory is bounded by ``keep`` entries (plus a few per mfn
after that), ``MAX_MFNS`` tracked frames and fixed-size lists for walks and faults, whatever the
log's length.
"""

import sys
import tempfile
from collections import Counter

from ...errors import XenscopeError
from ...inputs import iter_raw_lines, open_regular
from .. import layouts
from .chains import ChainBuilder
from .chainstory import describe_chains
from .lines import banner_version, clean_line, iter_lines, split_context, strip_prefix, suppressed_count
from .crash import CrashReader
from .messages import BY_KIND, hex_int, parse_message
from .sentences import PAGE_TABLES, PageInfo
from .sourcelines import MAX_OBSERVED, is_mm_c, match_lines
from .story import likely_story

MAX_MFNS = 20000           # frames tracked individually in the summary
MAX_CONTEXTS = 2000
MAX_EVENTS = 200           # walks / faults kept for the story
PER_MFN = 3                # entries kept per mfn once ``keep`` is reached
MAX_BAD_TYPES = 50         # "Bad type" lines read to guess the layout
FAULT_EVENTS = ("unhandled", "xen_smap", "guest_smap", "fault_address", "fatal_trap")


class Annotator:
    """Feed lines one by one (:meth:`feed`), then :meth:`finish` for the result dict."""

    def __init__(self, layout=None, layout_name=None, layout_why="", keep=5000, per_mfn=PER_MFN):
        self.layout = layout
        self.pages = PageInfo(layout)
        self.layout_info = {"name": layout_name, "why": layout_why}
        self.keep = keep
        self.per_mfn = per_mfn
        self.entries = []
        self.dropped = 0
        self.by_kind = Counter()
        self.mfns = {}
        self.mfns_overflow = 0
        self.contexts = {}
        self.suppressed = 0
        self.suppressed_lines = 0
        self.lines = 0
        self.walks = []           # [{"line_no","va","levels":[...]}]
        self.faults = []          # fatal_pf / unhandled / smap events
        self.chain_builder = ChainBuilder(self._level_of)
        self.chains = []          # causal chains (chains.py), filled by finish()
        self.source_lines = set()  # (kind, level, line) of mm.c gdprintk lines
        self.source_match = None
        self._walk = None
        self._last_fatal = None
        self.banner = None
        self.crash = CrashReader()        # crash blocks: register dumps and what led to them (.crash)
        self.release_build = False

    # -- per line ---------------------------------------------------------------------------
    def feed(self, line_no, raw):
        self.lines = line_no
        line = clean_line(raw)
        body = strip_prefix(line)
        self.crash.feed(line_no, body)
        if "suppressed" in body:
            count = suppressed_count(body)
            if count is not None:
                self.suppressed += count
                self.suppressed_lines += 1
                self.chain_builder.gap(line_no)
                return
        if self.banner is None and "Xen" in body:
            version = banner_version(body)
            if version is not None:
                self.banner = version
                self.release_build = " debug=n" in body       # console.c prints debug=%c
                return
        context, rest = split_context(body)
        parsed = parse_message(rest)
        if parsed is None:
            return
        kind, fields = parsed
        if kind == "error_code":
            self._merge_error_code(line_no, fields)
            return
        self.by_kind[kind] += 1
        self._track_mfn(line_no, kind, fields, context)
        self._track_context(line_no, kind, context)
        self._track_events(line_no, kind, fields, context)
        self.chain_builder.feed(line_no, kind, fields, context)
        self._track_source_line(kind, fields, context)
        entry = self._add_entry(line_no, line, kind, fields, context)
        if kind == "fatal_pf":
            event = {"line_no": line_no, "kind": kind, "context": context,
                     "error_code": fields.get("error_code"), "entry": entry}
            self._last_fatal = event
            if len(self.faults) < MAX_EVENTS:
                self.faults.append(event)

    def _merge_error_code(self, line_no, fields):
        """The second line of panic("FATAL PAGE FAULT\\n[error_code=%04x]\\n...") completes the first."""
        fatal = self._last_fatal
        if fatal is not None and line_no - fatal["line_no"] <= 3:
            fatal["error_code"] = fields["error_code"]
            if fatal.get("entry") is not None:
                fatal["entry"]["fields"].update(fields)
                self._fill(fatal["entry"])

    def _add_entry(self, line_no, line, kind, fields, context):
        """The annotated entry, or None when the bounds drop it."""
        mfn = fields.get("mfn")
        kept = len(self.entries) < self.keep
        if not kept and mfn is not None and len(self.entries) < 2 * self.keep:
            record = self.mfns.get(mfn)
            kept = record is not None and record["kept"] < self.per_mfn
        if not kept:
            self.dropped += 1
            return None
        entry = {"line_no": line_no, "text": line.strip()[:400], "kind": kind, "context": context,
                 "fields": fields}
        self._fill(entry)
        self.entries.append(entry)
        if mfn is not None and mfn in self.mfns:
            self.mfns[mfn]["kept"] += 1
        return entry

    def _fill(self, entry):
        try:
            decoded, sentence = BY_KIND[entry["kind"]].explain(entry["fields"], self.pages)
        except XenscopeError as e:
            decoded, sentence = {}, f"(could not decode: {e})"
        entry["decoded"] = decoded
        entry["sentence"] = sentence

    def _track_mfn(self, line_no, kind, fields, context):
        mfn = fields.get("mfn")
        if mfn is None:
            return
        record = self.mfns.get(mfn)
        if record is None:
            if len(self.mfns) >= MAX_MFNS:
                self.mfns_overflow += 1
                return
            record = self.mfns[mfn] = {"mfn": mfn, "kinds": Counter(), "first_line": line_no,
                                       "last_line": line_no, "kept": 0, "saw": None, "exp": None,
                                       "taf": None, "caf": None, "pfn": None, "context": None}
        record["kinds"][kind] += 1
        record["last_line"] = line_no
        for name in ("saw", "exp", "taf", "caf", "pfn"):
            if fields.get(name) is not None:
                record[name] = fields[name]
        if kind == "validate_error":
            record["type_req"] = fields["type"]
        if context:
            record["context"] = context

    def _track_context(self, line_no, kind, context):
        if context is None:
            return
        key = (str(context["domain"]), context["vcpu"])
        seen = self.contexts.get(key)
        if seen is None:
            if len(self.contexts) >= MAX_CONTEXTS:
                return
            seen = self.contexts[key] = {"domain": context["domain"], "vcpu": context["vcpu"], "count": 0,
                                         "kinds": Counter(), "first_line": line_no, "files": Counter()}
        seen["count"] += 1
        seen["kinds"][kind] += 1
        seen["last_line"] = line_no
        if context["file"]:
            seen["files"][context["file"]] += 1

    def _track_events(self, line_no, kind, fields, context):
        """Page walks (a start line, then up to 4 entry lines) and fault events, for the story."""
        if kind == "walk_start":
            self._walk = {"line_no": line_no, "va": fields["va"], "levels": [], "last": line_no,
                          "context": context}
            if len(self.walks) < MAX_EVENTS:
                self.walks.append(self._walk)
        elif kind == "walk_entry":
            walk = self._walk
            if walk is not None and line_no - walk["last"] <= 2 and len(walk["levels"]) < 4:
                walk["levels"].append(dict(fields))
                walk["last"] = line_no
        elif kind in FAULT_EVENTS:
            if len(self.faults) < MAX_EVENTS:
                self.faults.append({"line_no": line_no, "kind": kind, "context": context, **fields})

    def _level_of(self, type_info):
        """1..4 for a type_info of an L1..L4 page table in the chosen layout, else None."""
        if self.layout is None:
            return None
        try:
            kind = self.pages.type_info(type_info)["type"]
        except XenscopeError:
            return None
        return int(kind[1]) if kind in PAGE_TABLES else None

    def _track_source_line(self, kind, fields, context):
        """(kind, level, line) of a gdprintk line printed from mm.c, for :func:`.sourcelines.match_lines`."""
        if context and context.get("line") and is_mm_c(context.get("file")) \
                and len(self.source_lines) < MAX_OBSERVED:
            self.source_lines.add((kind, fields.get("level"), context["line"]))

    # -- summary --------------------------------------------------------------------------------
    def finish(self):
        crashes = self.crash.finish()
        self.chains = describe_chains(self.chain_builder.finish(), self.pages)
        self.source_match = match_lines(self.source_lines)
        summary = {"lines": self.lines, "messages": sum(self.by_kind.values()),
                   "by_kind": dict(self.by_kind), "by_mfn": self._mfn_rows(), "by_context": self._context_rows(),
                   "suppressed": self.suppressed, "suppressed_lines": self.suppressed_lines,
                   "entries_dropped": self.dropped, "mfns_not_tracked": self.mfns_overflow,
                   "xen_version_in_log": self.banner,
                   "walks": [self._walk_result(walk) for walk in self.walks],
                   "crashes": crashes,
                   "chains": self.chains, "chains_dropped": self.chain_builder.dropped,
                   "source_lines": self.source_match,
                   "story": self.story() + [line for crash in crashes for line in crash["story"]]}
        return {"layout": self.layout_info, "entries": self.entries, "summary": summary}

    def _mfn_rows(self):
        rows = []
        for record in sorted(self.mfns.values(), key=lambda record: record["first_line"]):
            row = {"mfn": record["mfn"], "kinds": dict(record["kinds"]), "count": sum(record["kinds"].values()),
                   "first_line": record["first_line"], "last_line": record["last_line"], "pfn": record["pfn"]}
            for name in ("saw", "taf"):
                if record[name] is not None:
                    row[name] = record[name]
                    try:
                        row[name + "_decoded"] = self.pages.type_info(record[name])
                    except XenscopeError:
                        row[name + "_decoded"] = None
            if record["exp"] is not None:
                row["exp"] = record["exp"]
            if record["context"]:
                row["context"] = {"domain": record["context"]["domain"], "vcpu": record["context"]["vcpu"]}
            rows.append(row)
        return rows

    def _context_rows(self):
        return [{"domain": seen["domain"], "vcpu": seen["vcpu"], "count": seen["count"],
                 "kinds": dict(seen["kinds"]), "first_line": seen["first_line"],
                 "last_line": seen["last_line"], "files": dict(seen["files"])}
                for seen in sorted(self.contexts.values(), key=lambda seen: seen["first_line"])]

    @staticmethod
    def _walk_result(walk):
        return {"line_no": walk["line_no"], "va": walk["va"],
                "levels": [{"level": level["level"], "index": level["index"], "entry": level["entry"],
                            "m2p": level["m2p"], "pse": level["pse"]} for level in walk["levels"]]}

    def story(self):
        """The likely story (:func:`.story.likely_story`)."""
        return likely_story(self)


# --------------------------------------------------------------------------------------------
# Choosing the layout, files
# --------------------------------------------------------------------------------------------

def _layout_clues(texts, stop_early):
    """(version from a "Xen version" banner or None, [(exp, saw)...] of the first Bad type lines);
    ``stop_early``: stop reading at the first Bad type line after a banner."""
    banner, exps = None, []
    bad_type = BY_KIND["bad_type"].regex
    for text in texts:
        if banner is None and "Xen" in text:
            banner = banner_version(text)
        if "Bad type" in text and (stop_early or len(exps) < MAX_BAD_TYPES):
            match = bad_type.search(text)
            if match:
                exps.append((hex_int(match.group(2)), hex_int(match.group(1))))
                if stop_early and (len(exps) >= MAX_BAD_TYPES or banner):
                    break
    return banner, exps


def prescan(f, name="the log"):
    """(version from a "Xen version" banner or None, [(exp, saw)...] of the first Bad type lines)."""
    return _layout_clues((text for _, text in iter_lines(f, name=name)), stop_early=True)


def choose_layout(version=None, banner=None, exps=()):
    """``(layout, name, why)`` by --xen, the log's banner, the first decisive Bad type, or a default."""
    if version is not None:
        selection = layouts.select_layout(version=version)
        return selection.layout, selection.layout.name, selection.why
    if banner is not None:
        try:
            selection = layouts.select_layout(version=banner)
            return selection.layout, selection.layout.name, f"Xen {banner} from the log's banner line"
        except XenscopeError:
            pass
    for exp, saw in exps:
        if layouts.guess_from_exp(exp, saw) is not None:
            selection = layouts.select_layout(bad_type_exp=exp, bad_type_saw=saw)
            return (selection.layout, selection.layout.name,
                    selection.why.replace("guessed: exp", "guessed from the first decisive Bad type line: exp"))
    selection = layouts.select_layout(version="4.17")
    why = ("assumed Xen 4.17 (T3/C3): no --xen, no version banner"
           + (" and every Bad type exp is valid in both type layouts" if exps else " and no Bad type line")
           + " in the log; give --xen X.Y.Z")
    return selection.layout, selection.layout.name, why


def _open_input(path, stdin=None):
    """A binary file to read twice: ``path`` (a regular file only:
    :func:`~xenstructs.inputs.open_regular`), or ``-`` (``stdin``) spooled to a temporary file line
    by line through the bounded reader (junk, endless lines and over 1 GiB stop it early)."""
    if path != "-":
        return open_regular(path, verb="read")        # a log is read, a dump opened
    source = stdin if stdin is not None else sys.stdin.buffer
    spool = tempfile.TemporaryFile()
    try:
        for _, raw, length in iter_raw_lines(source, "standard input"):
            spool.write(raw if length == len(raw) or raw.endswith(b"\n") else raw + b"\n")
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def annotate_file(path, version=None, keep=5000, stdin=None):
    """Annotate the log at ``path`` (``-``: ``stdin``, a binary file, spooled to a temporary file for
    the two passes). Raises XenscopeError when the input cannot be read."""
    shown = "standard input" if path == "-" else path
    with _open_input(path, stdin) as f:
        try:
            banner, exps = prescan(f, shown)
            layout, name, why = choose_layout(version, banner, exps)
            f.seek(0)
            annotator = Annotator(layout, name, why, keep=keep)
            for line_no, text in iter_lines(f, name=shown):
                annotator.feed(line_no, text)
        except OSError as e:
            raise XenscopeError(f"cannot read {path}: {e.strerror or e}") from None
    return annotator.finish()


def annotate_lines(lines, version=None, keep=5000):
    """Annotate an in-memory list of text lines (tests, gdb)."""
    banner, exps = _layout_clues(lines, stop_early=False)
    layout, name, why = choose_layout(version, banner, exps)
    annotator = Annotator(layout, name, why, keep=keep)
    for line_no, text in enumerate(lines, 1):
        annotator.feed(line_no, text)
    return annotator.finish()
