"""The fault-log reader (``xenscope fault --log``): what a Xen console or a guest oops excerpt says
about one page fault, as FaultState field values with the line each came from.

Each pattern is declared once with what it reads (:func:`pattern`); lines are stripped of their
console prefixes by :func:`.lines.strip_prefix`, and Xen's banner and FATAL PAGE FAULT lines are
matched by the same regexes as the annotator's.
"""

import re

from ...decode import CR4_LA57
from ...errors import XenscopeError
from .crash import CrashReader
from .lines import BANNER, MAX_LINE, clean_line, strip_prefix
from .messages import BY_KIND, HEX

_XEN_WALK_LEVEL = {4: "PML4E", 3: "PDPTE", 2: "PDE", 1: "PTE"}
_LINUX_LEVEL = {"PGD": "PML4E", "PUD": "PDPTE", "PMD": "PDE", "PTE": "PTE"}
_PAE_LEVEL = {"pdpt": "PDPTE", "pde": "PDE", "pte": "PTE"}
_LINUX_DUMP_ENTRY = re.compile(r"\b(PGD|P4D|PUD|PMD|PTE) " + HEX)
_LINUX_CR_64 = re.compile(r"\bCR2: ([0-9a-f]{16}) CR3: ([0-9a-f]{16}) CR4: ([0-9a-f]{16})")

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
    log.notes.append(f"log line {log.line_no}: the kernel said: {match.group(0)}")


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
    """Linux's dump_pagetable(): ``PGD v P4D v PUD v PMD v PTE v`` on x86_64 (up to the first entry
    not present or large), ``PGD v PUD ...`` before 4.12. x86_64 prints the P4D always: the PGD
    again with 4-level paging (folded), the PML4E under a PGD that is the PML5E with 5-level."""
    found = _LINUX_DUMP_ENTRY.findall(line)
    values = dict(found)
    five = "P4D" in values and values["P4D"] != values["PGD"]
    names = dict(_LINUX_LEVEL, PGD="PML5E", P4D="PML4E") if five else dict(_LINUX_LEVEL, P4D=None)
    for token, value in found:
        if names[token]:
            log.put(names[token], int(value, 16), f"{token} (oops page-table dump)")
    if "P4D" in values:
        log.put("mode", "5level" if five else "4level",
                f"x86_64 oops page-table dump: P4D {'differs from' if five else 'equals'} PGD "
                f"({'5-level paging' if five else '4-level paging: the P4D is folded'})")


@pattern("linux_rip", r"\bRIP: ([0-9a-f]{4}):(?:0x([0-9a-f]+)\s*$|(\S+(?: \[\w+\])?))")
def _linux_rip(log, groups, match, line):
    """The oops register dump's ``RIP: 0010:func+0x3c/0x50 [mod]`` (4.10+) or ``RIP: 0010:0x7f..``
    (an address without a symbol: a jump into user memory or data)."""
    if getattr(log, "linux_rip_seen", False):
        return                # a later register dump (the user frame under the Call Trace, a 2nd oops)
    log.linux_rip_seen = True
    log.put("cs", int(groups[0], 16), "RIP line's CS (oops register dump)")
    if groups[1]:
        log.put("ip", int(groups[1], 16), "RIP line (oops register dump)")
    elif "ip" not in log.fields:
        log.notes.append(f"log line {log.line_no}: the kernel printed RIP {groups[0]}:{groups[2]} "
                         "(a symbol: its address is not in the log)")


@pattern("linux_cs", r"^\s*CS:\s+([0-9a-f]{4}) DS: ")
def _linux_cs(log, groups, match, line):
    log.put("cs", int(groups[0], 16), "CS (oops register dump)")


@pattern("linux_cr_64", _LINUX_CR_64)
def _linux_cr_64(log, groups, match, line):
    """x86_64's ``CR2: .. CR3: .. CR4: ..`` (16 digits each): long mode, LA57 from CR4."""
    five = bool(int(groups[2], 16) & CR4_LA57)
    log.put("mode", "5level" if five else "4level",
            f"x86_64 oops register dump: CR4.LA57={int(five)}")


@pattern("linux_nx_smep", r"kernel tried to execute NX-protected page|unable to execute userspace code \(SMEP\?\)")
def _linux_nx_smep(log, groups, match, line):
    log.notes.append(f"log line {log.line_no}: the kernel said: {match.group(0)}")


@pattern("linux_pf_class", r"#PF: error_code\(0x[0-9a-f]+\) - (.+?)\s*$")
def _linux_pf_class(log, groups, match, line):
    log.notes.append(f"log line {log.line_no}: the kernel classed the error code: {groups[0]} (from its P, "
                     "RSVD and PK bits)")


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


# --- Xen's crash block (register dump, domain_crash_sync, Unhandled: .crash, .crashstory) --------

def add_crash(log, crashes):
    """The fault of the first crash block with a page fault (else the first): who made the access
    (``accessor``), and the inputs it names. When Xen made it on the guest's behalf (a bounce-frame
    fixup), the block's RIP/CS/RFLAGS/cr2 are the guest's, not the faulting access's: its own inputs
    replace what the line patterns read."""
    if not crashes:
        return
    crash = next((crash for crash in crashes if "cr2" in crash["access"]["fault"]), crashes[0])
    access = crash["access"]
    fault, sources = access["fault"], access["sources"]
    replace = access["by"] == "xen" and crash["context"] != "hypervisor"
    if replace:
        for name in ("cr2", "ip", "cs", "eflags", "error", "insn", "oops_error", *_XEN_WALK_LEVEL.values()):
            log.fields.pop(name, None)
        log.notes.append(f"log line {crash['line_no']}: the register dump is the guest's; the access explained is "
                         f"Xen's own store (the fixup's page walk), not the guest's registers")
    for name, value in fault.items():
        if replace or name not in log.fields:
            log.fields[name] = (value, sources[name])
    if access["walk"] is not None and (replace or not any(level in log.fields for level in _XEN_WALK_LEVEL.values())):
        for level in access["walk"]["levels"]:
            log.fields[_XEN_WALK_LEVEL[level["level"]]] = (level["entry"], f"log line {access['walk']['line_no']}: "
                                                                           f"Xen page walk L{level['level']}")
    log.fields["accessor"] = (access["by"], f"log line {crash['line_no']}: {access['why']}")
    if access.get("guest") and "guest" not in log.fields:
        log.fields["guest"] = (access["guest"], f"log line {crash['line_no']}: the crash block's CS "
                                                f"{crash['registers'].get('cs', 0):#x}")
    log.notes.extend(f"log line {crash['line_no']}: {note}" for note in access["notes"])


def parse_log(lines):
    """Read a Xen console or guest oops excerpt; return ``(fields, notes)``.

    ``fields`` maps FaultState names (and entry names) to ``(value, source)``; only the first
    value of each is kept. Guest (Linux) CR values are marked ``guest_cr4`` candidates by the
    caller: ``fields["linux_cr4"]`` holds a guest-printed CR4, ``fields["cr4"]`` a Xen-printed one.
    """
    log = _Excerpt()
    crashes = CrashReader()
    for line_no, raw in enumerate(lines, 1):
        if len(raw) > MAX_LINE:
            continue
        log.line_no = line_no
        line = strip_prefix(raw.rstrip("\n"))
        crashes.feed(line_no, strip_prefix(clean_line(raw)))
        for _kind, regex, every, read in _LOG_RX:
            for match in (regex.finditer(line) if every else [regex.search(line)]):
                if match:
                    read(log, match.groups(), match, line)
    add_crash(log, crashes.finish())
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
