"""Read the fault out of a Xen console or guest oops excerpt (:func:`parse_log`, :func:`read_log`).

The code below is the block moved verbatim from the former ``xenstructs/fault.py``: the Xen console
package will replace this file; keep its names (``parse_log``, ``read_log``) when it does.
"""

import re

from ..errors import XenscopeError
from .insn import parse_hex_bytes

# ---------------------------------------------------------------------------------------------
# Log excerpts
# ---------------------------------------------------------------------------------------------

_H = r"([0-9a-fA-F]+)"
_LOG_RX = [
    ("xen_banner", re.compile(r"Xen version (\d+\.\d+(?:\.\d+)?)|\[ Xen-(\d+\.\d+(?:\.\d+)?)")),
    ("xen_fatal", re.compile(r"FATAL PAGE FAULT(?:\s*\[error_code=" + _H + r"\])?")),
    ("xen_error", re.compile(r"\[error_code=" + _H + r"\]")),
    ("xen_addr", re.compile(r"Faulting linear address: (?:0x)?" + _H)),
    ("xen_walk", re.compile(r"Pagetable walk from (?:0x)?" + _H)),
    ("xen_walk_entry", re.compile(r"^\s*L([1-4])\[0x" + _H + r"\] = " + _H)),
    ("xen_unhandled", re.compile(r"Unhandled(?:: vec 14, #PF\[" + _H + r"\]| page fault fault/trap \[#14"
                                 r"(?:, ec=" + _H + r")?\](?: on VCPU \d+ \[ec=" + _H + r"\])?)")),
    ("xen_smap", re.compile(r"(?:Xen|fatal) SM([AE])P violation")),
    ("xen_cr04", re.compile(r"\bcr0: " + _H + r"\s+cr4: " + _H)),
    ("xen_cr32", re.compile(r"\bcr3: " + _H + r"\s+cr2: " + _H)),
    ("linux_bug", re.compile(r"BUG: unable to handle .*?(?: at|address:) (?:0x)?" + _H)),
    ("linux_pf_ec", re.compile(r"#PF: error_code\(0x" + _H + r"\)")),
    ("pf_bracket", re.compile(r"#PF\[(?:ec=|error_code=)?(?:0x)?" + _H + r"\]")),
    ("linux_pf_text", re.compile(r"#PF: (supervisor|user) (read|write|instruction fetch) access")),
    ("linux_oops", re.compile(r"Oops: " + _H + r" \[#\d+\]")),
    ("segfault", re.compile(r"segfault at " + _H + r" ip " + _H + r" sp " + _H + r" error " + _H)),
    ("ip_cs", re.compile(r"\b[ER]?IP:\s*" + _H + r":\[<" + _H + r">\]")),
    ("ip_only", re.compile(r"^\s*(?:\S+\s+)?IP: \[<" + _H + r">\]")),
    ("flags", re.compile(r"\b[ER]?FLAGS: " + _H)),
    ("linux_cr", re.compile(r"\bCR([0234]): " + _H)),
    ("pae_dump", re.compile(r"\*(pdpt|pde|pte) = " + _H)),
    ("pgd_dump", re.compile(r"^\s*PGD " + _H)),
    ("code", re.compile(r"\bCode: (.*)$")),
]
_XEN_WALK_LEVEL = {4: "PML4E", 3: "PDPTE", 2: "PDE", 1: "PTE"}
_LINUX_LEVEL = {"PGD": "PML4E", "PUD": "PDPTE", "PMD": "PDE", "PTE": "PTE"}
_PAE_LEVEL = {"pdpt": "PDPTE", "pde": "PDE", "pte": "PTE"}
_PREFIX = re.compile(r"^\s*(?:\(XEN\)\s?|\[\s*\d[\d .:,\-T+Z]*\]\s?|<\d>)*")


def parse_log(lines):
    """Read a Xen console or guest oops excerpt; return ``(fields, notes)``.

    ``fields`` maps FaultState names (and entry names) to ``(value, source)``; only the first
    value of each is kept. Guest (Linux) CR values are marked ``guest_cr4`` candidates by the
    caller: ``fields["linux_cr4"]`` holds a guest-printed CR4, ``fields["cr4"]`` a Xen-printed one.
    """
    f, notes = {}, []
    faults = 0

    def put(name, value, n, what):
        if name not in f:
            f[name] = (value, f"log line {n}: {what}")

    for n, raw in enumerate(lines, 1):
        if len(raw) > 4096:
            continue
        line = _PREFIX.sub("", raw.rstrip("\n"))
        for kind, rx in _LOG_RX:
            for m in (rx.finditer(line) if kind in ("linux_cr", "pae_dump") else [rx.search(line)]):
                if not m:
                    continue
                g = m.groups()
                if kind == "xen_banner":
                    put("xen", g[0] or g[1], n, "Xen banner")
                elif kind == "xen_fatal":
                    faults += 1
                    if g[0]:
                        put("error", int(g[0], 16), n, "FATAL PAGE FAULT [error_code=]")
                elif kind == "xen_error":
                    put("error", int(g[0], 16), n, "[error_code=]")
                elif kind == "xen_addr":
                    put("cr2", int(g[0], 16), n, "Faulting linear address")
                elif kind == "xen_walk":
                    put("cr2", int(g[0], 16), n, "Pagetable walk from")
                    put("mode", "4level", n, "Xen's 4-level page walk")
                elif kind == "xen_walk_entry":
                    put(_XEN_WALK_LEVEL[int(g[0])], int(g[2], 16), n, f"Xen page walk L{g[0]}")
                elif kind == "xen_unhandled":
                    ec = next((x for x in g if x), None)
                    faults += 1
                    if ec:
                        put("error", int(ec, 16), n, "Unhandled #PF")
                elif kind == "xen_smap":
                    notes.append(f"log line {n}: Xen reported an SM{g[0]}P violation")
                elif kind == "xen_cr04":
                    put("cr0", int(g[0], 16), n, "Xen register dump cr0")
                    put("cr4", int(g[1], 16), n, "Xen register dump cr4 (the real CR4)")
                elif kind == "xen_cr32":
                    put("cr3", int(g[0], 16), n, "Xen register dump cr3")
                    put("cr2", int(g[1], 16), n, "Xen register dump cr2")
                elif kind == "linux_bug":
                    faults += 1
                    put("cr2", int(g[0], 16), n, "BUG: unable to handle ...")
                elif kind in ("linux_pf_ec", "pf_bracket"):
                    put("error", int(g[0], 16), n, "#PF error code")
                elif kind == "linux_pf_text":
                    notes.append(f"log line {n}: the guest said: {m.group(0)}")
                elif kind == "linux_oops":
                    put("oops_error", int(g[0], 16), n, "Oops: (the error code of a page-fault oops)")
                elif kind == "segfault":
                    faults += 1
                    put("cr2", int(g[0], 16), n, "segfault at")
                    put("ip", int(g[1], 16), n, "segfault ip")
                    put("error", int(g[3], 16), n, "segfault error")
                elif kind == "ip_cs":
                    put("cs", int(g[0], 16), n, "IP line's CS")
                    put("ip", int(g[1], 16), n, "IP line")
                elif kind == "ip_only":
                    put("ip", int(g[0], 16), n, "IP line")
                elif kind == "flags":
                    put("eflags", int(g[0], 16), n, "EFLAGS")
                elif kind == "linux_cr":
                    name = "linux_cr4" if g[0] == "4" else f"cr{g[0]}"
                    put(name, int(g[1], 16), n, f"guest's CR{g[0]}")
                elif kind == "pae_dump":
                    put(_PAE_LEVEL[g[0]], int(g[1], 16), n, f"*{g[0]}")
                elif kind == "pgd_dump":
                    for tok, val in re.findall(r"\b(PGD|PUD|PMD|PTE) " + _H, line):
                        put(_LINUX_LEVEL[tok], int(val, 16), n, f"{tok} (oops page-table dump)")
                elif kind == "code":
                    toks = g[0].split()
                    start = next((i for i, t in enumerate(toks) if t.startswith("<")), None)
                    if start is not None:
                        try:
                            put("insn", parse_hex_bytes(" ".join(toks[start:start + 16])), n,
                                "Code: bytes from the <marked> one")
                        except XenscopeError:
                            pass
    if "error" not in f and "oops_error" in f and "cr2" in f:
        f["error"] = f["oops_error"]
    f.pop("oops_error", None)
    if faults > 1:
        notes.append(f"the log holds {faults} fault reports: the first value of each field is used")
    return f, notes


def read_log(path):
    """:func:`parse_log` of a file; an unreadable file is a XenscopeError."""
    try:
        with open(path, errors="replace") as fh:
            return parse_log(fh)
    except OSError as e:
        raise XenscopeError(f"cannot read {path}: {e.strerror or e}")
