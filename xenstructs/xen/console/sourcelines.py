"""Which Xen release printed a log: the ``mm.c:NNNN`` of each decoded gdprintk line against the
line numbers of that message in every release's real mm.c (:mod:`.mmlines`, generated from the
Xen git repository by ``tools/mmlines.py``).

Only debug builds print these lines (gdprintk is empty in release builds). A release matches
when every observed (message kind, line) is a call of that kind in its mm.c (the call's first
line, or any line up to its last: what older compilers print for a multi-line call).
"""

import os

from .mmlines import FUNCTIONS, KINDS, TABLES

MAX_OBSERVED = 200          # distinct (kind, level, line) kept per log
MM_DIRS = ("", "arch/x86", "xen/arch/x86", "x86")      # how releases print mm.c's __FILE__

_decoded = None


def _tables():
    """[(release names, [(start, end, kind, level, function)])], decoded once."""
    global _decoded
    if _decoded is None:
        _decoded = []
        for names, *cells in TABLES:
            rows = []
            for cell in "".join(cells).rstrip(";").split(";"):
                span, kind, function = cell.split(" ")
                start, _, end = span.partition("-")
                kind_index, _, level = kind.partition("/")
                rows.append((int(start), int(end or start), KINDS[int(kind_index)],
                             int(level) if level else None, FUNCTIONS[int(function)]))
            _decoded.append((names, rows))
    return _decoded


def is_mm_c(path):
    """Whether a gdprintk ``__FILE__`` is xen/arch/x86/mm.c (not pv/mm.c, not mm/...)."""
    return path is not None and os.path.basename(path) == "mm.c" and os.path.dirname(path) in MM_DIRS


def _row_for(rows, kind, level, line):
    for start, end, row_kind, row_level, function in rows:
        if row_kind == kind and start <= line <= end and (level is None or row_level in (None, level)):
            return start, row_level, function
    return None


def _release_list(names):
    """``4.17.4, 4.17.5, 4.17.6`` -> ``4.17.4-4.17.6`` (consecutive point releases of a series)."""
    upstream = [name for name in names if name.count(".") == 2 and name.replace(".", "").isdigit()]
    others = [name for name in names if name not in upstream]
    parts, run = [], []
    for name in upstream:
        major, minor, point = (int(x) for x in name.split("."))
        if run and run[-1][:2] == (major, minor) and run[-1][2] == point - 1:
            run.append((major, minor, point))
            continue
        if run:
            parts.append(run)
        run = [(major, minor, point)]
    if run:
        parts.append(run)
    text = [".".join(map(str, r[0])) + ("" if len(r) == 1 else "-" + ".".join(map(str, r[-1])))
            for r in parts]
    return text + [f"upstream commit {name.rsplit('-g', 1)[-1]} ({name})" if "-g" in name else name
                   for name in others]


def match_lines(observed):
    """Releases whose mm.c line numbers agree with ``observed`` [(kind, level or None, line)].

    Returns ``{"checked", "releases", "text", "lines": [{"line", "kind", "function"}],
    "best": {"releases", "matched"} when nothing matches all}``, or None when nothing observed
    is a kind the tables know.
    """
    known = set(KINDS)
    observed = sorted({item for item in observed if item[0] in known}, key=lambda item: item[2])
    if not observed:
        return None
    scored = []
    for names, rows in _tables():
        hits = [(_row_for(rows, kind, level, line), kind, line) for kind, level, line in observed]
        scored.append((sum(1 for hit in hits if hit[0]), names, hits))
    full = [entry for entry in scored if entry[0] == len(observed)]
    result = {"checked": len(observed), "kinds": sorted({kind for kind, _, _ in observed})}
    if full:
        names = [name for _, group, _ in full for name in group]
        hits = full[-1][2]
        result.update(releases=names, text=", ".join(_release_list(names)),
                      lines=[{"line": line, "kind": kind, "function": hit[2], "level": hit[1]}
                             for hit, kind, line in hits])
        return result
    best = max(entry[0] for entry in scored)
    result.update(releases=[], text=None, lines=[])
    if best:
        names = [name for count, group, _ in scored if count == best for name in group]
        result["best"] = {"releases": names, "text": ", ".join(_release_list(names)),
                          "matched": best}
    return result
