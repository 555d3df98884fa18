"""One console line: the prefixes before the message, the "Xen version" banner, the
gdprintk/gprintk context ("mm.c:2349:d1 ", "d1v0 "), printk's suppression notice, and bounded
reading of a log file line by line.

Every console-line regex of xenscope lives here, once: the annotator (:mod:`.annotate`), the
fault-log reader (:mod:`.faultlog`) and :mod:`xenstructs.xen.host` (the banner in a dump's console
ring) use these.
"""

import re

MAX_LINE = 4096            # Xen console lines are < 1 KiB; longer "lines" are junk (binary, no newline)

# One prefix: "(XEN) ", a console timestamp "[  123.456789]" / "[2024-01-01 12:00:00.123]"
# (xen/drivers/char/console.c printk_start_of_line), or a Linux printk level "<4>" (a guest's line
# in the same serial capture). strip_prefix removes any run of them, in any order and repeated (a
# serial logger adds its own timestamp).
PREFIX = re.compile(r"\s*(?:\(XEN\)\s?|\[\s*\d[\d .:,\-T+Z]*\]\s?|<\d>)")

# The boot banner "Xen version %d.%d%s (%s@%s) ..." (console.c) or the "----[ Xen-%d.%d%s  x86_64 ..."
# header of a register dump. Group 1: the whole version ("4.17.3-pre", "4.5-unstable"); group 2:
# its release numbers only ("4.17.3", "4.5").
BANNER = re.compile(r"(?:Xen version |\[ Xen-)((\d+\.\d+(?:\.\d+)?)[\w.\-+~]*)")

# console.c: "printk: %u messages suppressed." (and a logger's own "... N messages suppressed")
SUPPRESSED = re.compile(r"(\d+) messages? suppressed")

# gdprintk: "%s:%d:d%d " (4.4) / "%s:%d:%pv " (4.5+); gprintk: "%pv " ("d1v0", "d[IDLE]v2")
DOMAIN = r"d(?:\d+|\[[A-Za-z]+\]|<[A-Za-z]+>)"
CONTEXT_FILE = re.compile(r"([\w./\-]+\.[ch]):(\d+):(" + DOMAIN + r")(?:v(\d+))? ")
CONTEXT_VCPU = re.compile(r"(" + DOMAIN + r")v(\d+):? ")


def strip_prefix(line):
    """The message without "(XEN) ", timestamps and "<N>" levels (any order, repeated)."""
    pos = 0
    while True:
        match = PREFIX.match(line, pos)
        if not match or match.end() == pos:
            return line[pos:]
        pos = match.end()


def banner_version(text):
    """The version a "Xen version X.Y.Z..." banner (or a "[ Xen-X.Y.Z" dump header) in ``text``
    names, as printed (``"4.17.3-pre"``), else None. :func:`xenstructs.xen.release.parse_version`
    parses it."""
    match = BANNER.search(text)
    return match.group(1) if match else None


def suppressed_count(body):
    """N of a "N messages suppressed" notice, else None."""
    match = SUPPRESSED.search(body)
    return int(match.group(1)) if match else None


def _domain(token):
    """``"d1"`` -> 1; ``"d[IDLE]"`` -> ``"[IDLE]"``."""
    name = token[1:]
    return int(name) if name.isdigit() else name


def split_context(body):
    """``(context or None, rest)``: gdprintk "file.c:NNN:d1v0 " / "file.c:NNN:d1 ", gprintk "d1v0 "."""
    match = CONTEXT_FILE.match(body)
    if match:
        return ({"domain": _domain(match.group(3)), "vcpu": int(match.group(4)) if match.group(4) else None,
                 "file": match.group(1), "line": int(match.group(2))}, body[match.end():])
    match = CONTEXT_VCPU.match(body)
    if match:
        return ({"domain": _domain(match.group(1)), "vcpu": int(match.group(2)), "file": None, "line": None},
                body[match.end():])
    return None, body


def clean_line(raw):
    """The line as a terminal shows it: no line end, NULs or trailing blanks; after a carriage
    return, what overwrote the start of the line."""
    line = raw.rstrip("\r\n\x00 ").replace("\x00", "")
    if "\r" in line:
        line = line.rsplit("\r", 1)[-1] or line.replace("\r", "")
    return line


def iter_lines(f, maxlen=MAX_LINE, name="the log"):
    """``(line_no, text)`` from a binary file, read by :func:`xenstructs.inputs.iter_text_lines`:
    lines cut at ``maxlen`` bytes (the rest skipped unread into memory), 1 GiB and 16 M lines at
    most, binary junk refused (one XenscopeError line naming ``name``); undecodable bytes ignored."""
    from ...inputs import TextLimits, iter_text_lines
    for line_no, text, _ in iter_text_lines(f, name, TextLimits(max_line=maxlen), errors="ignore"):
        yield line_no, text
