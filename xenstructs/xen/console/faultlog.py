"""The fault-log reader (``xenscope fault --log``): what a Xen console or a guest oops excerpt says
about one page fault, as FaultState field values with the line each came from.

Each pattern is declared once with what it reads (:func:`pattern`); lines are stripped of their
console prefixes by :func:`.lines.strip_prefix`, and Xen's banner and FATAL PAGE FAULT lines are
matched by the same regexes as the annotator's.
"""

import re

from ...errors import XenscopeError
from .lines import BANNER, MAX_LINE, strip_prefix
from .messages import BY_KIND, HEX

_XEN_WALK_LEVEL = {4: "PML4E", 3: "PDPTE", 2: "PDE", 1: "PTE"}
_LINUX_LEVEL = {"PGD": "PML4E", "PUD": "PDPTE", "PMD": "PDE", "PTE": "PTE"}
_PAE_LEVEL = {"pdpt": "PDPTE", "pde": "PDE", "pte": "PTE"}
_LINUX_DUMP_ENTRY = re.compile(r"\b(PGD|PUD|PMD|PTE) " + HEX)

_LOG_RX = []                  # (kind, regex, every match on the line?, read), in reading order


def pattern(kind, regex, every=False):
    """Declare a log pattern; decorates ``read(excerpt, groups, match, line)``."""
    def declare(read):
        _LOG_RX.append((kind, re.compile(regex) if isinstance(regex, str) else regex, every, read))
        return read
    return declare


class _Excerpt:
    """What the lines read so far say: the first value of each field, notes, fault reports."""

    def __init__(self):
        self.fields, self.notes = {}, []
        self.faults = 0
        self.line_no = 0

    def put(self, name, value, what):
        if name not in self.fields:
            self.fields[name] = (value, f"log line {self.line_no}: {what}")


# --- Xen's console --------------------------------------------------------------------------

@pattern("xen_banner", BANNER)
def _xen_banner(log, groups, match, line):
    log.put("xen", groups[1], "Xen banner")


@pattern("xen_fatal", BY_KIND["fatal_pf"].regex)
def _xen_fatal(log, groups, match, line):
    log.faults += 1
    if groups[0]:
        log.put("error", int(groups[0], 16), "FATAL PAGE FAULT [error_code=]")


@pattern("xen_error", r"\[error_code=" + HEX + r"\]")
def _xen_error(log, groups, match, line):
    log.put("error", int(groups[0], 16), "[error_code=]")


@pattern("xen_addr", BY_KIND["fault_address"].regex)
def _xen_addr(log, groups, match, line):
    log.put("cr2", int(groups[0], 16), "Faulting linear address")


@pattern("xen_walk", r"Pagetable walk from (?:0x)?" + HEX)
def _xen_walk(log, groups, match, line):
    log.put("cr2", int(groups[0], 16), "Pagetable walk from")
    log.put("mode", "4level", "Xen's 4-level page walk")


@pattern("xen_walk_entry", r"^\s*L([1-4])\[0x" + HEX + r"\] = " + HEX)
def _xen_walk_entry(log, groups, match, line):
    log.put(_XEN_WALK_LEVEL[int(groups[0])], int(groups[2], 16), f"Xen page walk L{groups[0]}")


@pattern("xen_unhandled", r"Unhandled(?:: vec 14, #PF\[" + HEX + r"\]| page fault fault/trap \[#14"
                          r"(?:, ec=" + HEX + r")?\](?: on VCPU \d+ \[ec=" + HEX + r"\])?)")
def _xen_unhandled(log, groups, match, line):
    error_code = next((group for group in groups if group), None)
    log.faults += 1
    if error_code:
        log.put("error", int(error_code, 16), "Unhandled #PF")


@pattern("xen_smap", r"(?:Xen|fatal) SM([AE])P violation")
def _xen_smap(log, groups, match, line):
    log.notes.append(f"log line {log.line_no}: Xen reported an SM{groups[0]}P violation")


@pattern("xen_cr04", r"\bcr0: " + HEX + r"\s+cr4: " + HEX)
def _xen_cr04(log, groups, match, line):
    log.put("cr0", int(groups[0], 16), "Xen register dump cr0")
    log.put("cr4", int(groups[1], 16), "Xen register dump cr4 (the real CR4)")


@pattern("xen_cr32", r"\bcr3: " + HEX + r"\s+cr2: " + HEX)
def _xen_cr32(log, groups, match, line):
    log.put("cr3", int(groups[0], 16), "Xen register dump cr3")
    log.put("cr2", int(groups[1], 16), "Xen register dump cr2")


# --- a guest's oops / segfault --------------------------------------------------------------

@pattern("linux_bug", r"BUG: unable to handle .*?(?: at|address:) (?:0x)?" + HEX)
def _linux_bug(log, groups, match, line):
    log.faults += 1
    log.put("cr2", int(groups[0], 16), "BUG: unable to handle ...")


def _pf_error_code(log, groups, match, line):
    log.put("error", int(groups[0], 16), "#PF error code")


pattern("linux_pf_ec", r"#PF: error_code\(0x" + HEX + r"\)")(_pf_error_code)
pattern("pf_bracket", r"#PF\[(?:ec=|error_code=)?(?:0x)?" + HEX + r"\]")(_pf_error_code)


@pattern("linux_pf_text", r"#PF: (supervisor|user) (read|write|instruction fetch) access")
def _linux_pf_text(log, groups, match, line):
    log.notes.append(f"log line {log.line_no}: the guest said: {match.group(0)}")


@pattern("linux_oops", r"Oops: " + HEX + r" \[#\d+\]")
def _linux_oops(log, groups, match, line):
    log.put("oops_error", int(groups[0], 16), "Oops: (the error code of a page-fault oops)")


@pattern("segfault", r"segfault at " + HEX + r" ip " + HEX + r" sp " + HEX + r" error " + HEX)
def _segfault(log, groups, match, line):
    log.faults += 1
    log.put("cr2", int(groups[0], 16), "segfault at")
    log.put("ip", int(groups[1], 16), "segfault ip")
    log.put("error", int(groups[3], 16), "segfault error")


@pattern("ip_cs", r"\b[ER]?IP:\s*" + HEX + r":\[<" + HEX + r">\]")
def _ip_cs(log, groups, match, line):
    log.put("cs", int(groups[0], 16), "IP line's CS")
    log.put("ip", int(groups[1], 16), "IP line")


@pattern("ip_only", r"^\s*(?:\S+\s+)?IP: \[<" + HEX + r">\]")
def _ip_only(log, groups, match, line):
    log.put("ip", int(groups[0], 16), "IP line")


@pattern("flags", r"\b[ER]?FLAGS: " + HEX)
def _flags(log, groups, match, line):
    log.put("eflags", int(groups[0], 16), "EFLAGS")


@pattern("linux_cr", r"\bCR([0234]): " + HEX, every=True)
def _linux_cr(log, groups, match, line):
    name = "linux_cr4" if groups[0] == "4" else f"cr{groups[0]}"
    log.put(name, int(groups[1], 16), f"guest's CR{groups[0]}")


@pattern("pae_dump", r"\*(pdpt|pde|pte) = " + HEX, every=True)
def _pae_dump(log, groups, match, line):
    log.put(_PAE_LEVEL[groups[0]], int(groups[1], 16), f"*{groups[0]}")


@pattern("pgd_dump", r"^\s*PGD " + HEX)
def _pgd_dump(log, groups, match, line):
    for token, value in _LINUX_DUMP_ENTRY.findall(line):
        log.put(_LINUX_LEVEL[token], int(value, 16), f"{token} (oops page-table dump)")


@pattern("code", r"\bCode: (.*)$")
def _code(log, groups, match, line):
    from ...fault import parse_hex_bytes           # not at the top: xenstructs.fault imports this module
    tokens = groups[0].split()
    start = next((i for i, token in enumerate(tokens) if token.startswith("<")), None)
    if start is not None:
        try:
            log.put("insn", parse_hex_bytes(" ".join(tokens[start:start + 16])),
                    "Code: bytes from the <marked> one")
        except XenscopeError:
            pass


def parse_log(lines):
    """Read a Xen console or guest oops excerpt; return ``(fields, notes)``.

    ``fields`` maps FaultState names (and entry names) to ``(value, source)``; only the first
    value of each is kept. Guest (Linux) CR values are marked ``guest_cr4`` candidates by the
    caller: ``fields["linux_cr4"]`` holds a guest-printed CR4, ``fields["cr4"]`` a Xen-printed one.
    """
    log = _Excerpt()
    for line_no, raw in enumerate(lines, 1):
        if len(raw) > MAX_LINE:
            continue
        log.line_no = line_no
        line = strip_prefix(raw.rstrip("\n"))
        for _kind, regex, every, read in _LOG_RX:
            for match in (regex.finditer(line) if every else [regex.search(line)]):
                if match:
                    read(log, match.groups(), match, line)
    fields = log.fields
    if "error" not in fields and "oops_error" in fields and "cr2" in fields:
        fields["error"] = fields["oops_error"]
    fields.pop("oops_error", None)
    if log.faults > 1:
        log.notes.append(f"the log holds {log.faults} fault reports: the first value of each field is used")
    return fields, log.notes


def read_log(path):
    """:func:`parse_log` of a file, read by :func:`xenstructs.inputs.iter_text_lines` (a regular
    file only; lines over MAX_LINE bytes are skipped without being held; junk, over 1 GiB or 16 M
    lines stop it); an unreadable file is a XenscopeError."""
    from ...inputs import iter_text_lines, open_regular
    with open_regular(path) as fh:
        return parse_log(text if length <= MAX_LINE else ""
                         for _, text, length in iter_text_lines(fh, path))
