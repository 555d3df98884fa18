"""Annotate a Xen console log (``xl dmesg``, a serial capture): every mm.c / traps.c message that
carries numbers gets one plain sentence with the numbers decoded, then a summary per message kind,
per mfn and per domain/vcpu, and "the likely story" (rules that read like an engineer's notes).

Message texts are matched as printed by every Xen release 4.4 ... 4.20 (format strings read in
``xen/arch/x86/mm.c``, ``xen/arch/x86/pv/mm.h``, ``xen/arch/x86/traps.c``, ``xen/arch/x86/pv/traps.c``,
``xen/arch/x86/x86_64/traps.c`` and ``xen/drivers/char/console.c`` at tags RELEASE-4.4.0, 4.6.0, 4.9.0,
4.13.0, 4.19.0 and master; reference: ../shared/reference/xen-facts.md §3). ``type_info`` and
``count_info`` values are decoded with the page_info layout of :mod:`xenstructs.xen.layouts`
(chosen by ``--xen``, else the log's "Xen version" banner, else guessed from a "Bad type" line);
page-table entries with :func:`xenstructs.decode.decode_entry` (4-level), error codes with
:func:`xenstructs.decode.decode_pf`.

The input is streamed: memory is bounded by ``keep`` entries (plus a few per mfn after that),
``MAX_MFNS`` tracked frames and fixed-size lists for walks and faults, whatever the log's length.
"""

import re
from collections import Counter

from .. import decode as D
from ..errors import XenscopeError

MAX_LINE = 4096            # Xen console lines are < 1 KiB; longer "lines" are junk (binary, no newline)
MAX_MFNS = 20000           # frames tracked individually in the summary
MAX_CONTEXTS = 2000
MAX_EVENTS = 200           # walks / faults kept for the story
PER_MFN = 3                # entries kept per mfn once ``keep`` is reached
INVALID_M2P = (1 << 64) - 1
SHARED_M2P = (1 << 64) - 2
M2P_DEBUG_FILL = 0x5555555555555555
ERRNO = {1: "EPERM", 2: "ENOENT", 3: "ESRCH", 4: "EINTR", 5: "EIO", 11: "EAGAIN", 12: "ENOMEM",
         13: "EACCES", 14: "EFAULT", 16: "EBUSY", 17: "EEXIST", 22: "EINVAL", 28: "ENOSPC",
         34: "ERANGE", 38: "ENOSYS", 75: "EOVERFLOW", 85: "ERESTART"}   # xen/include/public/errno.h

# --------------------------------------------------------------------------------------------
# Line prefixes
# --------------------------------------------------------------------------------------------
# "(XEN) ", console timestamps "[  123.456789]" / "[2024-01-01 12:00:00.123]" (console.c
# printk_start_of_line), in any order and repeated (a serial logger adds its own).
_PREFIX = re.compile(r"\s*(?:\(XEN\)\s?|\[\s*\d[\d .:,\-T+Z]*\]\s?)")
# gdprintk: "%s:%d:d%d " (4.4) / "%s:%d:%pv " (4.5+); gprintk: "%pv " ("d1v0", "d[IDLE]v2")
_DOM = r"d(?:\d+|\[[A-Za-z]+\]|<[A-Za-z]+>)"
_CTX_FILE = re.compile(r"([\w./\-]+\.[ch]):(\d+):(" + _DOM + r")(?:v(\d+))? ")
_CTX_PV = re.compile(r"(" + _DOM + r")v(\d+):? ")

_H = r"([0-9a-fA-F]+)"
_PATTERNS = [
    # mm.c __get_page_type(), all versions
    ("bad_type", re.compile(r"Bad type \(saw " + _H + r" != exp " + _H + r"\) for mfn " + _H
                            + r" \(pfn " + _H + r"\)")),
    # mm.c __get_page_type(): "on pfn %lx" (4.4-4.8, value is the mfn) / "on mfn %" (4.9+)
    ("type_overflow", re.compile(r"Type count overflow on (?:pfn|mfn) " + _H)),
    # mm.c alloc_page_type() / validate_page()
    ("validate_error", re.compile(r"Error while validating mfn " + _H + r" \(pfn " + _H
                                  + r"\) for type " + _H + r": caf=" + _H + r" taf=" + _H)),
    # mm.c alloc_lN_table(): "entry %d" (4.4-4.8), "slot %#x" (4.9-4.12), "Failure %d in ...
    # slot %#x" (4.13), promote_lN_table (4.14+)
    ("table_failure", re.compile(r"Failure(?: (-?\d+))? in (alloc|promote)_l([1-4])_table: "
                                 r"(?:entry (-?\d+)|slot (0x[0-9a-fA-F]+|\d+))")),
    # mm.c define_get_linear_pagetable(); "(feature disabled)" since XSA-240
    ("linear_pt", re.compile(r"Attempt to create linear p\.t\. (with write perms|\(feature disabled\))")),
    # mm.c do_mmuext_op(): "Error while pinning mfn %lx" (4.4-4.6), "Error %d while pinning" (4.7+)
    ("pin_error", re.compile(r"Error(?: (-?\d+))? while pinning mfn " + _H)),
    ("already_pinned", re.compile(r"[Mm]fn " + _H + r" already pinned")),
    ("not_pinned", re.compile(r"[Mm]fn " + _H + r" not pinned")),
    # mm.c get_page_from_lNe() / mod_lN_entry(): 24-bit flag encoding (get_pte_flags)
    ("bad_flags", re.compile(r"Bad L([1-4]) flags (?:0x)?" + _H)),
    # mm.c get_page_from_l1e(): "l1e_owner=%d, pg_owner=%d" (4.4-4.8), "l1e_owner d%d, pg_owner d%d"
    ("l1e_ref_error", re.compile(r"Error getting mfn " + _H + r" \(pfn " + _H + r"\) from L1 entry "
                                 + _H + r" for l1e_owner[= ]d?(-?\d+), pg_owner[= ]d?(-?\d+)")),
    ("io_map", re.compile(r"Non-privileged \((\d+)\) attempt to map I/O space " + _H)),
    # mm.c get_page_from_pagenr() (4.4-4.8 "pfn"), get_page_from_mfn() (4.9+ "mfn")
    ("page_ref", re.compile(r"Could not get page ref for (?:pfn|mfn) " + _H)),
    # mm.c get_page(): "Error pfn %lx: rd=%p, od=%p, ..." (4.4), "rd=%d od=%d" (4.6-4.12),
    # "Error mfn %: rd=%pd od=%pd" (4.13+)
    ("get_page_error", re.compile(r"Error (?:pfn|mfn) " + _H + r": rd=(\S+?),? od=(\S+?),? caf="
                                  + _H + r",? taf=" + _H)),
    # mm.c steal_page() (4.4-4.8): "ed=%p(%u), sd=%p," (4.4), "ed=%d sd=%d" (4.5-4.8)
    ("steal_error", re.compile(r"Bad page (?:0x)?" + _H + r": ed=(\S+?),? sd=(\S+?),? caf=" + _H
                               + r",? taf=" + _H)),
    # adjust_guest_l1e(): "set to kernel page" (4.4-4.9, mm.c), "set in kernel page" (4.10+, pv/mm.h)
    ("global_kernel", re.compile(r"Global bit is set (?:to|in) kernel page " + _H)),
    # x86_64/traps.c show_page_walk()
    ("walk_start", re.compile(r"Pagetable walk from " + _H + r":")),
    ("walk_entry", re.compile(r"^\s*L([1-4])\[0x" + _H + r"\] = " + _H + r" " + _H + r"\s*(\(PSE\))?")),
    # traps.c do_page_fault(): panic("FATAL PAGE FAULT\n[error_code=%04x]\nFaulting linear address: %p")
    ("fatal_pf", re.compile(r"FATAL PAGE FAULT(?:\s*\[error_code=" + _H + r"\])?")),
    ("error_code", re.compile(r"^\[error_code=" + _H + r"\]")),
    ("fault_address", re.compile(r"Faulting linear address: (?:0x)?" + _H)),
    # traps.c: printk("Xen SM%cP violation\n") / printk(XENLOG_G_ERR "%pv fatal SM%cP violation\n")
    ("guest_smap", re.compile(r"fatal SM([AE])P violation")),
    ("xen_smap", re.compile(r"Xen SM([AE])P violation")),
    # pv/traps.c pv_inject_event(): "Unhandled: vec %u, %s[%04x]" (4.20+); traps.c/pv/traps.c
    # "Unhandled %s fault/trap [#%d, ec=%04x]" (4.5-4.19); "Unhandled %s fault/trap [#%d] on VCPU %d
    # [ec=%04x]" (4.4)
    ("unhandled", re.compile(r"Unhandled(?:: vec (\d+), (#\w+)\[" + _H + r"\]| (.+?) fault/trap \[#(\d+)"
                             r"(?:, ec=" + _H + r")?\](?: on VCPU (\d+) \[ec=" + _H + r"\])?)")),
    # traps.c fatal_trap(): "FATAL TRAP: vec %u, %s[%04x]%s" (4.15+) / "FATAL TRAP: vector = %d (%s)"
    ("fatal_trap", re.compile(r"FATAL TRAP: vec(?:tor = (\d+) \(([^)]*)\)| (\d+), (#\w+)\[" + _H + r"\])")),
]
_PAT = dict(_PATTERNS)
# cheap prefilter: a line that contains none of these cannot match any pattern above
_KEYWORDS = ("Bad ", "Type count", "Error", "Failure", "linear p.t.", "pinned", "Non-privileged",
             "Could not get", "Global bit", "walk from", "] = ", "FATAL", "Faulting", "SMAP", "SMEP",
             "Unhandled", "error_code", "suppressed", "Xen version", "Xen-")
_SUPPRESSED = re.compile(r"(\d+) messages? suppressed")
_BANNER = re.compile(r"Xen version (\d+\.\d+[\w.\-+~]*)|\[ Xen-(\d+\.\d+[\w.\-+~]*)")

KIND_TEXT = {
    "bad_type": "Bad type", "type_overflow": "Type count overflow",
    "validate_error": "Error while validating", "table_failure": "Failure in alloc/promote_lN_table",
    "linear_pt": "Attempt to create linear p.t.", "pin_error": "Error while pinning",
    "already_pinned": "mfn already pinned", "not_pinned": "mfn not pinned",
    "bad_flags": "Bad Ln flags", "l1e_ref_error": "Error getting mfn from L1 entry",
    "io_map": "Non-privileged attempt to map I/O space", "page_ref": "Could not get page ref",
    "get_page_error": "get_page error (rd/od)", "steal_error": "Bad page (steal_page)",
    "global_kernel": "Global bit set on kernel page", "walk_start": "Pagetable walk",
    "walk_entry": "Pagetable walk entry", "fatal_pf": "FATAL PAGE FAULT",
    "fault_address": "Faulting linear address", "xen_smap": "Xen SMAP/SMEP violation",
    "guest_smap": "guest fatal SMAP/SMEP violation", "unhandled": "Unhandled guest trap",
    "fatal_trap": "FATAL TRAP",
}


def strip_prefix(line):
    """The message without "(XEN) " and timestamps (any order, repeated)."""
    pos = 0
    while True:
        m = _PREFIX.match(line, pos)
        if not m or m.end() == pos:
            return line[pos:]
        pos = m.end()


def _dom(token):
    t = token[1:]
    return int(t) if t.isdigit() else t


def split_context(body):
    """``(context or None, rest)``: gdprintk "file.c:NNN:d1v0 " / "file.c:NNN:d1 ", gprintk "d1v0 "."""
    m = _CTX_FILE.match(body)
    if m:
        return ({"domain": _dom(m.group(3)), "vcpu": int(m.group(4)) if m.group(4) else None,
                 "file": m.group(1), "line": int(m.group(2))}, body[m.end():])
    m = _CTX_PV.match(body)
    if m:
        return {"domain": _dom(m.group(1)), "vcpu": int(m.group(2)), "file": None, "line": None}, body[m.end():]
    return None, body


def _x(s):
    return int(s, 16)


def parse_message(body):
    """``(kind, fields)`` for a recognised message (prefix and context already stripped), else None."""
    if not any(k in body for k in _KEYWORDS):
        return None
    for kind, rx in _PATTERNS:
        m = rx.search(body)
        if not m:
            continue
        g = m.groups()
        if kind == "bad_type":
            return kind, {"saw": _x(g[0]), "exp": _x(g[1]), "mfn": _x(g[2]), "pfn": _x(g[3])}
        if kind == "type_overflow":
            return kind, {"mfn": _x(g[0])}
        if kind == "validate_error":
            return kind, {"mfn": _x(g[0]), "pfn": _x(g[1]), "type": _x(g[2]), "caf": _x(g[3]),
                          "taf": _x(g[4])}
        if kind == "table_failure":
            f = {"level": int(g[2]), "slot": int(g[3]) if g[3] is not None else int(g[4], 0),
                 "function": f"{g[1]}_l{g[2]}_table"}
            if g[0] is not None:
                f["rc"] = int(g[0])
            return kind, f
        if kind == "linear_pt":
            return kind, {"disabled": g[0].startswith("(")}
        if kind == "pin_error":
            f = {"mfn": _x(g[1])}
            if g[0] is not None:
                f["rc"] = int(g[0])
            return kind, f
        if kind in ("already_pinned", "not_pinned", "page_ref", "global_kernel"):
            return kind, {"mfn": _x(g[0])}
        if kind == "bad_flags":
            return kind, {"level": int(g[0]), "flags": _x(g[1])}
        if kind == "l1e_ref_error":
            return kind, {"mfn": _x(g[0]), "pfn": _x(g[1]), "entry": _x(g[2]),
                          "l1e_owner": int(g[3]), "pg_owner": int(g[4])}
        if kind == "io_map":
            return kind, {"domain": int(g[0]), "mfn": _x(g[1])}
        if kind in ("get_page_error", "steal_error"):
            a, b = ("rd", "od") if kind == "get_page_error" else ("ed", "sd")
            return kind, {"mfn": _x(g[0]), a: g[1], b: g[2], "caf": _x(g[3]), "taf": _x(g[4])}
        if kind == "walk_start":
            return kind, {"va": _x(g[0])}
        if kind == "walk_entry":
            return kind, {"level": int(g[0]), "index": _x(g[1]), "entry": _x(g[2]), "m2p": _x(g[3]),
                          "pse": bool(g[4])}
        if kind == "fatal_pf":
            return kind, ({"error_code": _x(g[0])} if g[0] else {})
        if kind == "error_code":
            return kind, {"error_code": _x(g[0])}
        if kind == "fault_address":
            return kind, {"va": _x(g[0])}
        if kind in ("xen_smap", "guest_smap"):
            return kind, {"what": "SMAP" if g[0] == "A" else "SMEP"}
        if kind == "unhandled":
            if g[0] is not None:
                return kind, {"vector": int(g[0]), "name": g[1], "error_code": _x(g[2])}
            f = {"vector": int(g[4]), "name": g[3]}
            ec = g[5] or g[7]
            if ec:
                f["error_code"] = _x(ec)
            if g[6]:
                f["vcpu"] = int(g[6])
            return kind, f
        if kind == "fatal_trap":
            if g[0] is not None:
                return kind, {"vector": int(g[0]), "name": g[1]}
            return kind, {"vector": int(g[2]), "name": g[3], "error_code": _x(g[4])}
    return None


# --------------------------------------------------------------------------------------------
# Decoding helpers
# --------------------------------------------------------------------------------------------

def _L():
    from . import layouts
    return layouts


_TYPE_NOUN = {"none": "an untyped page", "l1": "an L1 page table", "l2": "an L2 page table",
              "l3": "an L3 page table", "l4": "an L4 page table",
              "seg_desc": "a descriptor (GDT/LDT) page", "writable": "a writable page",
              "shared": "a shared (mem-sharing) page"}
_PT = ("l1", "l2", "l3", "l4")


def _lvl(t):
    return t.upper() if t in _PT else t


def pfn_text(pfn):
    if pfn == INVALID_M2P:
        return "no guest pfn: M2P entry invalid"
    if pfn == SHARED_M2P:
        return "M2P: shared (mem-sharing) page"
    if pfn == M2P_DEBUG_FILL:
        return "M2P entry never set (debug fill 0x5555...)"
    return f"guest pfn {pfn:#x}"


def _type_state(d):
    """``validated, pinned, type count 1`` for a decoded type_info."""
    parts = []
    fl = d["flags"]
    if d["type"] in _PT or d["type"] == "seg_desc":
        parts.append("validated" if "validated" in fl else "not validated")
    elif "validated" in fl:
        parts.append("validated")
    for f, txt in (("pinned", "pinned"), ("partial", "partially validated"),
                   ("pae_xen_l2", "PAE L2 holding Xen's slots"), ("locked", "locked"),
                   ("non_coherent", "non-coherent")):
        if f in fl:
            parts.append(txt)
    parts.append(f"type count {d['count']}")
    return ", ".join(parts)


def _count_state(d):
    fl = d["flags"]
    parts = []
    if "allocated" in fl:
        parts.append("allocated")
    if "need_scrub" in fl:
        parts.append("needs scrubbing")
    if "xen_heap" in fl:
        parts.append("Xen heap")
    parts.append({"inuse": "in use"}.get(d["state"], d["state"]))
    for f in fl:
        if f not in ("allocated", "need_scrub", "xen_heap"):
            parts.append(f.replace("_", " "))
    if d.get("cacheattr"):
        parts.append(f"cacheattr {d['cacheattr']}")
    n = d["count"]
    parts.append(f"{n} reference{'s' if n != 1 else ''}")
    return ", ".join(parts)


def _request(d):
    t = d["type"]
    if t in _PT:
        extra = " (a PAE L2 that holds Xen's slots)" if "pae_xen_l2" in d["flags"] else ""
        return f"use it as an {_lvl(t)} page table{extra}"
    return {"writable": "map it writable", "seg_desc": "use it as a descriptor (GDT/LDT) page",
            "shared": "share it (mem-sharing)", "none": "take an untyped reference"}.get(t, f"use it as type {t}")


def _rc(rc):
    if rc is None:
        return ""
    return f"rc {rc}" + (f" = -{ERRNO[-rc]}" if rc < 0 and -rc in ERRNO else "")


_FLAG24 = {0: "P", 1: "RW", 2: "US", 3: "PWT", 4: "PCD", 5: "A", 6: "D", 7: "PSE/PAT", 8: "G",
           9: "AVAIL0", 10: "AVAIL1", 11: "AVAIL2"}


def decode_flags24(value, level):
    """Xen's 24-bit PTE flag encoding (get_pte_flags): bits 0-11 = PTE bits 0-11, bits 12-23 = PTE
    bits 52-63 (reference §2.1). Returns names and the PTE bits."""
    names, bits = [], []
    for b in range(24):
        if not value >> b & 1:
            continue
        pte_bit = b if b < 12 else b + 40
        bits.append(pte_bit)
        if b < 12:
            n = _FLAG24[b]
            if b == 7:
                n = "PAT" if level == 1 else "PSE"
            names.append(n)
        elif b == 23:
            names.append("NX")
        elif b == 22:
            names.append("GNTTAB(bit 62)")
        elif b == 12:
            names.append("GUEST_KERNEL(bit 52)")
        elif 19 <= b <= 21:
            names.append(f"PKEY(bit {pte_bit})")
        else:
            names.append(f"bit {pte_bit}")
    return {"value": value, "names": names, "pte_bits": bits}


def _flags_hint(names, level):
    hints = []
    if "NX" in names:
        hints.append("NX (bit 63) is set but Xen does not allow it (the CPU or Xen has no NX support, "
                     "so bit 63 is reserved)")
    if any(n in names for n in ("PWT", "PCD", "PAT")) and level == 1:
        hints.append("cache-attribute bits (PWT/PCD/PAT) in an L1 entry are allowed only for a domain "
                     "with I/O memory (iomem) permission")
    elif any(n in names for n in ("PWT", "PCD")) and level == 3:
        hints.append("PWT/PCD in a 32-bit PAE guest's L3 (PDPT) entry are forbidden")
    if "PSE" in names and level in (3, 4):
        hints.append(f"PSE in an L{level} entry: Xen gives PV guests no {'1 GiB' if level == 3 else ''} superpages")
    if "G" in names and level >= 3:
        hints.append(f"G in an L{level} entry is not allowed")
    if any(n.startswith(("GNTTAB", "GUEST_KERNEL", "PKEY", "bit 5", "bit 6")) for n in names):
        hints.append("PTE bits 52-62 are reserved for Xen's own use in PV guests' entries")
    if "PSE" in names and level == 2:
        hints.append("PSE in an L2 entry: PV superpages are not allowed (or not enabled)")
    return hints


def _entry(value, level):
    name = {4: "PML4E", 3: "PDPTE", 2: "PDE", 1: "PTE"}[level]
    d = D.decode_entry(value & ((1 << 64) - 1), "4level", name)
    return {k: d[k] for k in ("value", "level", "present", "flags", "large", "leaf", "addr", "pfn",
                              "reserved", "software")}


def _entry_text(d):
    if not d["present"]:
        return "not present"
    return " ".join(d["flags"]) + f" -> mfn {d['pfn']:#x}"


_XEN_REGIONS = [  # reference §2.1 (x86_64); default (non-BIGMEM) build
    (0xFFFF800000000000, 0xFFFF804000000000, "Xen's read-only M2P (guest-visible)"),
    (0xFFFF808000000000, 0xFFFF810000000000, "the PCI MMCFG area"),
    (0xFFFF810000000000, 0xFFFF818000000000, "the guest linear page-table slot"),
    (0xFFFF818000000000, 0xFFFF820000000000, "the shadow linear page-table slot"),
    (0xFFFF820000000000, 0xFFFF828000000000, "the per-domain area (GDT/LDT, mapcache)"),
    (0xFFFF828000000000, 0xFFFF82C000000000, "Xen's writable M2P"),
    (0xFFFF82C000000000, 0xFFFF82D000000000, "Xen's vmap area"),
    (0xFFFF82D000000000, 0xFFFF82D040000000, "the compat M2P"),
    (0xFFFF82D040000000, 0xFFFF82E000000000, "Xen's text/data (4.14+: from 0xffff82d040000000, "
                                             "older: 0xffff82d080000000)"),
    (0xFFFF82E000000000, 0xFFFF830000000000, "the frame table (struct page_info array)"),
    (0xFFFF830000000000, 0xFFFF880000000000, "Xen's direct map"),
    (0xFFFF880000000000, 1 << 64, "the PV guest kernel's half"),
]


def va_region(va):
    if va < 0x0000800000000000:
        return "guest user space (lower half)"
    for lo, hi, name in _XEN_REGIONS:
        if lo <= va < hi:
            return name
    return "a non-canonical address"


def _dname(x):
    """A domain as printed: ``d1``, ``d[IO]``, a decimal id (4.6-4.12) or a pointer (4.4)."""
    if re.fullmatch(r"-?\d+", x):
        i = int(x)
        try:
            return _L().domid_name(i)
        except Exception:
            return f"d{i}"
    if re.fullmatch(r"[0-9a-fA-F]{8,16}(\(\d+\))?", x):
        m = re.fullmatch(r"([0-9a-fA-F]+)(?:\((\d+)\))?", x)
        return f"the domain at {m.group(1)}" + (f" (d{m.group(2)})" if m.group(2) else "")
    return x


# --------------------------------------------------------------------------------------------
# The annotator
# --------------------------------------------------------------------------------------------

class Annotator:
    """Feed lines one by one (:meth:`feed`), then :meth:`finish` for the result dict."""

    def __init__(self, layout=None, layout_name=None, layout_why="", keep=5000, per_mfn=PER_MFN):
        self.layout = layout
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
        self.chains = []          # validation chains: linear/flags/bad_type -> failure -> validate
        self._walk = None
        self._recent = []         # last few (line_no, kind, fields) for chaining
        self._last_fatal = None
        self.banner = None

    # -- per line ---------------------------------------------------------------------------
    def feed(self, line_no, raw):
        self.lines = line_no
        line = raw.rstrip("\r\n\x00 ").replace("\x00", "")
        if "\r" in line:
            line = line.rsplit("\r", 1)[-1] or line.replace("\r", "")
        body = strip_prefix(line)
        if "suppressed" in body:
            m = _SUPPRESSED.search(body)
            if m:
                self.suppressed += int(m.group(1))
                self.suppressed_lines += 1
                return
        if self.banner is None and "Xen" in body:
            m = _BANNER.search(body)
            if m:
                self.banner = m.group(1) or m.group(2)
                return
        ctx, rest = split_context(body)
        got = parse_message(rest)
        if got is None:
            return
        kind, fields = got
        if kind == "error_code":
            # the second line of panic("FATAL PAGE FAULT\n[error_code=%04x]\n...")
            f = self._last_fatal
            if f is not None and line_no - f["line_no"] <= 3:
                f["error_code"] = fields["error_code"]
                if f.get("entry") is not None:
                    f["entry"]["fields"].update(fields)
                    self._fill(f["entry"], f["entry"]["kind"], f["entry"]["fields"])
            return
        self.by_kind[kind] += 1
        self._track(line_no, kind, fields, ctx)
        mfn = fields.get("mfn")
        keep = len(self.entries) < self.keep
        if not keep and mfn is not None and len(self.entries) < 2 * self.keep:
            rec = self.mfns.get(mfn)
            keep = rec is not None and rec["kept"] < self.per_mfn
        entry = None
        if keep:
            entry = {"line_no": line_no, "text": line.strip()[:400], "kind": kind, "context": ctx,
                     "fields": fields}
            self._fill(entry, kind, fields)
            self.entries.append(entry)
            if mfn is not None and mfn in self.mfns:
                self.mfns[mfn]["kept"] += 1
        else:
            self.dropped += 1
        if kind == "fatal_pf":
            ev = {"line_no": line_no, "kind": kind, "context": ctx,
                  "error_code": fields.get("error_code"), "entry": entry}
            self._last_fatal = ev
            if len(self.faults) < MAX_EVENTS:
                self.faults.append(ev)

    def _track(self, line_no, kind, fields, ctx):
        mfn = fields.get("mfn")
        if mfn is not None:
            rec = self.mfns.get(mfn)
            if rec is None:
                if len(self.mfns) >= MAX_MFNS:
                    self.mfns_overflow += 1
                else:
                    rec = self.mfns[mfn] = {"mfn": mfn, "kinds": Counter(), "first_line": line_no,
                                            "last_line": line_no, "kept": 0, "saw": None, "exp": None,
                                            "taf": None, "caf": None, "pfn": None, "context": None}
            if rec is not None:
                rec["kinds"][kind] += 1
                rec["last_line"] = line_no
                for k in ("saw", "exp", "taf", "caf", "pfn"):
                    if fields.get(k) is not None:
                        rec[k] = fields[k]
                if kind == "validate_error":
                    rec["type_req"] = fields["type"]
                if ctx:
                    rec["context"] = ctx
        if ctx is not None:
            key = (str(ctx["domain"]), ctx["vcpu"])
            c = self.contexts.get(key)
            if c is None and len(self.contexts) < MAX_CONTEXTS:
                c = self.contexts[key] = {"domain": ctx["domain"], "vcpu": ctx["vcpu"], "count": 0,
                                          "kinds": Counter(), "first_line": line_no, "files": Counter()}
            if c is not None:
                c["count"] += 1
                c["kinds"][kind] += 1
                c["last_line"] = line_no
                if ctx["file"]:
                    c["files"][ctx["file"]] += 1
        # walks
        if kind == "walk_start":
            self._walk = {"line_no": line_no, "va": fields["va"], "levels": [], "last": line_no,
                          "context": ctx}
            if len(self.walks) < MAX_EVENTS:
                self.walks.append(self._walk)
        elif kind == "walk_entry":
            w = self._walk
            if w is not None and line_no - w["last"] <= 2 and len(w["levels"]) < 4:
                w["levels"].append(dict(fields))
                w["last"] = line_no
        elif kind in ("unhandled", "xen_smap", "guest_smap", "fault_address", "fatal_trap"):
            if len(self.faults) < MAX_EVENTS:
                self.faults.append({"line_no": line_no, "kind": kind, "context": ctx, **fields})
        # validation chains (message sequences of one __get_page_type / alloc_page_type call)
        self._recent = [r for r in self._recent if line_no - r[0] <= 12][-10:]
        self._recent.append((line_no, kind, fields, ctx))
        if kind == "validate_error" and len(self.chains) < 4:
            before = [r for r in self._recent[:-1] if r[1] in ("bad_type", "linear_pt", "bad_flags",
                                                                "table_failure", "l1e_ref_error",
                                                                "page_ref", "io_map", "get_page_error")]
            self.chains.append({"line_no": line_no, "fields": fields, "context": ctx,
                                "before": [(r[0], r[1], r[2]) for r in before]})
        if kind == "pin_error" and self.chains and line_no - self.chains[-1]["line_no"] <= 12:
            self.chains[-1]["pin"] = (line_no, fields)

    # -- decoding one entry -------------------------------------------------------------------
    def _t(self, v):
        if self.layout is None:
            return None
        return _L().decode_type(v, self.layout)

    def _c(self, v):
        if self.layout is None:
            return None
        return _L().decode_count(v, self.layout)

    def _fill(self, entry, kind, f):
        try:
            decoded, sentence = self._decode(kind, f)
        except XenscopeError as e:
            decoded, sentence = {}, f"(could not decode: {e})"
        entry["decoded"] = decoded
        entry["sentence"] = sentence

    def _decode(self, kind, f):
        dec = {}
        if kind == "bad_type":
            saw, exp = self._t(f["saw"]), self._t(f["exp"])
            dec = {"saw": saw, "exp": exp}
            if saw is None:
                return dec, (f"mfn {f['mfn']:#x} ({pfn_text(f['pfn'])}): Xen refused a type change "
                             f"(layout unknown: give --xen)")
            st, et = saw["type"], exp["type"]
            if st == "writable" and et in _PT:
                why = "the page must have no writable mappings before it can become a page table"
            elif st in _PT and et == "writable":
                why = ("a page table may only be mapped read-only while it is one (its type count "
                       "must drop to 0 first: unpin it and remove it from every table)")
            elif st in _PT and et in _PT:
                why = (f"a page has one type at a time: it must stop being an {_lvl(st)} table "
                       f"(type count 0) before it can become an {_lvl(et)} table")
            elif st == "seg_desc":
                why = "a GDT/LDT page must not be mapped writable or used as anything else while in use"
            elif st == et:
                why = ("same type but the PAE-Xen-L2 flag differs" if "pae_xen_l2" in saw["flags"] +
                       exp["flags"] else "the type matched but Xen still refused")
            else:
                why = "a page has one type at a time and its type count is not 0"
            return dec, (f"mfn {f['mfn']:#x} ({pfn_text(f['pfn'])}) is in use as {_TYPE_NOUN.get(st, st)} "
                         f"({_type_state(saw)}); Xen was asked to {_request(exp)} and refused: {why}.")
        if kind == "type_overflow":
            return dec, (f"mfn {f['mfn']:#x}: its type count would overflow; something takes type "
                         f"references in a loop without dropping them (a reference leak).")
        if kind == "validate_error":
            t, caf, taf = self._t(f["type"]), self._c(f["caf"]), self._t(f["taf"])
            dec = {"type": t, "caf": caf, "taf": taf}
            if t is None:
                return dec, f"validating mfn {f['mfn']:#x} as type {f['type']:#x} failed (layout unknown)."
            what = (f"an {_lvl(t['type'])} page table" if t["type"] in _PT else _TYPE_NOUN.get(t["type"], t["type"]))
            return dec, (f"validating mfn {f['mfn']:#x} ({pfn_text(f['pfn'])}) as {what} failed "
                         f"(count_info: {_count_state(caf)}; type_info: {_lvl(taf['type'])}, "
                         f"{_type_state(taf)}): one of its entries was refused, see the message just "
                         f"before.")
        if kind == "table_failure":
            lv, slot = f["level"], f["slot"]
            span = {4: "512 GiB", 3: "1 GiB", 2: "2 MiB", 1: "4 KiB"}[lv]
            extra = ""
            if lv == 4:
                va = slot << 39
                if va >> 47:
                    va |= 0xFFFF << 48
                extra = f", virtual addresses {va:#x}+512 GiB ({va_region(va)})"
            rc = f" ({_rc(f.get('rc'))})" if f.get("rc") is not None else ""
            return dec, (f"while validating a page as an L{lv} table, entry {slot} ({slot:#x}; each "
                         f"covers {span}{extra}) was refused{rc}: the page it points at cannot be used "
                         f"as an L{lv - 1 if lv > 1 else 1} {'table' if lv > 1 else 'mapping'} "
                         f"(see the message before this one).")
        if kind == "linear_pt":
            if f["disabled"]:
                return dec, ("an L2/L3/L4 entry points at a page table of its own level (a linear, or "
                             "recursive, page table) and Xen runs with linear page tables disabled "
                             "(pv-linear-pt=0): the entry is refused.")
            return dec, ("an L2/L3/L4 entry points at a page table of its own level (a linear, or "
                         "recursive, page table) with RW set: Xen allows such entries only read-only, "
                         "so it is refused.")
        if kind == "pin_error":
            return dec, (f"the guest asked to pin mfn {f['mfn']:#x} as a page table (MMUEXT_PIN_Ln_TABLE) "
                         f"and Xen could not give it that type"
                         + (f" ({_rc(f['rc'])})" if f.get("rc") is not None else "")
                         + ": see the Bad type / validation messages just before.")
        if kind == "already_pinned":
            return dec, (f"the guest pinned mfn {f['mfn']:#x} a second time: refused; usually a "
                         f"pin/unpin bookkeeping bug in the guest.")
        if kind == "not_pinned":
            return dec, (f"the guest unpinned mfn {f['mfn']:#x}, which is not pinned: refused; usually "
                         f"a pin/unpin bookkeeping bug in the guest.")
        if kind == "bad_flags":
            fl = decode_flags24(f["flags"], f["level"])
            dec = {"flags": fl}
            hints = _flags_hint(fl["names"], f["level"])
            return dec, (f"an L{f['level']} entry has flags Xen forbids for this guest: {f['flags']:#x} "
                         f"(Xen's 24-bit encoding) = {' '.join(fl['names']) or 'none'} (PTE bits "
                         f"{', '.join(map(str, fl['pte_bits']))})" + ("; " + "; ".join(hints) if hints else "")
                         + ".")
        if kind == "l1e_ref_error":
            e = _entry(f["entry"], 1)
            dec = {"entry": e}
            rw = "RW" in e["flags"]
            own = _dname(str(f["pg_owner"]))
            foreign = ("" if f["l1e_owner"] == f["pg_owner"] else
                       f" (a foreign mapping: the table belongs to {_dname(str(f['l1e_owner']))})")
            return dec, (f"an L1 entry {f['entry']:#018x} ({_entry_text(e)}) maps mfn {f['mfn']:#x} "
                         f"({pfn_text(f['pfn'])}), but Xen could not take a "
                         + ("writable (type) " if rw else "") + f"reference on it for {own}{foreign}: "
                         + (f"the frame is not owned by {own}, is free, or is a page table (or GDT/LDT) "
                            f"that cannot be mapped writable" if rw else
                            f"the frame is not owned by {own} or is free")
                         + ".")
        if kind == "io_map":
            return dec, (f"{_dname(str(f['domain']))} tried to map mfn {f['mfn']:#x}, an I/O (non-RAM) "
                         f"frame, without I/O memory permission (iomem=): refused.")
        if kind == "page_ref":
            return dec, (f"Xen could not take a reference on mfn {f['mfn']:#x} for the requesting domain: "
                         f"the mfn is invalid (beyond RAM) or not owned by that domain.")
        if kind == "get_page_error":
            caf, taf = self._c(f["caf"]), self._t(f["taf"])
            dec = {"caf": caf, "taf": taf}
            rd, od = _dname(f["rd"]), _dname(f["od"])
            state = (f" (count_info: {_count_state(caf)}; type_info: {_lvl(taf['type'])}, {_type_state(taf)})"
                     if caf else "")
            return dec, (f"get_page on mfn {f['mfn']:#x} for {rd} failed: the page belongs to {od}"
                         f"{state}" + (": a domain used a frame it does not own" if rd != od else
                                       ": owner matches, so the count was exhausted or the page is being freed")
                         + ".")
        if kind == "steal_error":
            caf, taf = self._c(f["caf"]), self._t(f["taf"])
            dec = {"caf": caf, "taf": taf}
            return dec, (f"steal_page (page transfer) of mfn {f['mfn']:#x} failed: expected owner "
                         f"{_dname(f['ed'])}, actual owner {_dname(f['sd'])}"
                         + (f"; count_info: {_count_state(caf)}; type_info: {_lvl(taf['type'])}, {_type_state(taf)}"
                            if caf else "")
                         + ": only an unmapped, untyped page with exactly its allocation reference "
                         "can be transferred.")
        if kind == "global_kernel":
            return dec, (f"a 64-bit PV guest's kernel-only mapping of mfn {f['mfn']:#x} has the Global "
                         f"bit set; kernel mappings must not be global (the guest switches between "
                         f"kernel and user page tables).")
        if kind == "walk_start":
            return dec, (f"Xen's page-table walk for va {f['va']:#x} ({va_region(f['va'])}); the next "
                         f"lines are the entries, each followed by the M2P value of the frame it points at.")
        if kind == "walk_entry":
            e = _entry(f["entry"], f["level"])
            dec = {"entry": e}
            lv = f["level"]
            if not e["present"]:
                return dec, (f"L{lv} slot {f['index']:#x}: {f['entry']:#x} is not present: the walk "
                             f"ends here (an access faults with 'not-present page').")
            leaf = e["leaf"]
            tgt = "page" if leaf else "next table"
            size = {3: " (1 GiB page)", 2: " (2 MiB page)"}.get(lv, "") if leaf and lv > 1 else ""
            res = f"; reserved bits set {e['reserved']:#x}" if e["reserved"] else ""
            return dec, (f"L{lv} slot {f['index']:#x}: {' '.join(e['flags'])} -> {tgt}{size} at mfn "
                         f"{e['pfn']:#x} ({pfn_text(f['m2p'])}){res}.")
        if kind == "fatal_pf":
            ec = f.get("error_code")
            if ec is None:
                return dec, "Xen itself took a page fault it could not fix up: the hypervisor panics."
            pf = D.decode_pf(ec)
            dec = {"error_code": pf}
            return dec, (f"Xen itself took a page fault it could not fix up ({pf['text']}; error code "
                         f"{ec:#x}: {' '.join(pf['flags']) or 'no bits'}): the hypervisor panics.")
        if kind == "fault_address":
            return dec, f"the faulting address is {f['va']:#x} ({va_region(f['va'])})."
        if kind == "xen_smap":
            if f["what"] == "SMAP":
                return dec, ("Xen read or wrote a user-accessible page (US set at every level) while "
                             "CR4.SMAP was on: fatal for the hypervisor.")
            return dec, ("Xen executed code from a user-accessible page while CR4.SMEP was on: fatal "
                         "for the hypervisor.")
        if kind == "guest_smap":
            return dec, (f"a PV guest kernel (typically 32-bit, running in ring 1) made a supervisor "
                         f"{'access to' if f['what'] == 'SMAP' else 'instruction fetch from'} a user page "
                         f"with CR4.{f['what']} on, and Xen crashed the domain; fixed in Xen 4.7.0 / "
                         f"4.6.3 / 4.5.4 (SMEP/SMAP suppressed while 32-bit PV guest code runs), or "
                         f"boot Xen with {f['what'].lower()}=hvm.")
        if kind == "unhandled":
            ec = f.get("error_code")
            pf = D.decode_pf(ec) if ec is not None and f["vector"] == 14 else None
            dec = {"error_code": pf} if pf else {}
            what = f"vector {f['vector']} ({f['name']})"
            return dec, (f"the PV guest has no handler registered for {what}, so Xen cannot deliver it"
                         + (f" ({pf['text']}, error code {ec:#x})" if pf else
                            (f" (error code {ec:#x})" if ec is not None else ""))
                         + ": the guest faulted before installing its trap table, or its trap table is "
                           "corrupt.")
        if kind == "fatal_trap":
            ec = f.get("error_code")
            return dec, (f"Xen took exception {f['vector']} ({f['name']}) in hypervisor context"
                         + (f" (error code {ec:#x})" if ec is not None else "") + ": the hypervisor panics.")
        return dec, ""

    # -- summary --------------------------------------------------------------------------------
    def finish(self):
        by_mfn = []
        for rec in sorted(self.mfns.values(), key=lambda r: r["first_line"]):
            row = {"mfn": rec["mfn"], "kinds": dict(rec["kinds"]), "count": sum(rec["kinds"].values()),
                   "first_line": rec["first_line"], "last_line": rec["last_line"], "pfn": rec["pfn"]}
            for k in ("saw", "taf"):
                if rec[k] is not None:
                    row[k] = rec[k]
                    try:
                        row[k + "_decoded"] = self._t(rec[k])
                    except XenscopeError:
                        row[k + "_decoded"] = None
            if rec["exp"] is not None:
                row["exp"] = rec["exp"]
            if rec["context"]:
                row["context"] = {"domain": rec["context"]["domain"], "vcpu": rec["context"]["vcpu"]}
            by_mfn.append(row)
        by_ctx = []
        for c in sorted(self.contexts.values(), key=lambda c: c["first_line"]):
            by_ctx.append({"domain": c["domain"], "vcpu": c["vcpu"], "count": c["count"],
                           "kinds": dict(c["kinds"]), "first_line": c["first_line"],
                           "last_line": c["last_line"], "files": dict(c["files"])})
        summary = {"lines": self.lines, "messages": sum(self.by_kind.values()),
                   "by_kind": dict(self.by_kind), "by_mfn": by_mfn, "by_context": by_ctx,
                   "suppressed": self.suppressed, "suppressed_lines": self.suppressed_lines,
                   "entries_dropped": self.dropped, "mfns_not_tracked": self.mfns_overflow,
                   "xen_version_in_log": self.banner,
                   "walks": [self._walk_result(w) for w in self.walks],
                   "story": self.story()}
        return {"layout": self.layout_info, "entries": self.entries, "summary": summary}

    @staticmethod
    def _walk_result(w):
        return {"line_no": w["line_no"], "va": w["va"],
                "levels": [{"level": lv["level"], "index": lv["index"], "entry": lv["entry"],
                            "m2p": lv["m2p"], "pse": lv["pse"]} for lv in w["levels"]]}

    # -- the likely story -------------------------------------------------------------------------
    def story(self):
        out = []
        # Bad type patterns, per mfn
        wr_as_pt, pt_as_wr, pt_as_pt = [], [], []
        for rec in self.mfns.values():
            if rec["saw"] is None or rec["exp"] is None or self.layout is None:
                continue
            try:
                s, e = self._t(rec["saw"]), self._t(rec["exp"])
            except XenscopeError:
                continue
            if s["type"] == "writable" and e["type"] in _PT:
                wr_as_pt.append((rec, s, e))
            elif s["type"] in _PT and e["type"] == "writable":
                pt_as_wr.append((rec, s, e))
            elif s["type"] in _PT and e["type"] in _PT:
                pt_as_pt.append((rec, s, e))
        n_bad = sum(1 for r in self.mfns.values() if r["kinds"].get("bad_type"))
        if n_bad >= 5:
            out.append(f"Bad type on {n_bad} different mfns: a mass problem, not one stray mapping "
                       f"(the guest's page-table handling is broken wholesale: e.g. a kernel that does not "
                       f"write-protect its page tables before pinning them, or a Xen/guest version mismatch).")
        if len(wr_as_pt) > 3:
            by_lvl = Counter(_lvl(e["type"]) for _, _, e in wr_as_pt)
            ex = ", ".join(f"{r['mfn']:#x} (type count {s['count']})" for r, s, _ in wr_as_pt[:5])
            out.append(f"{len(wr_as_pt)} mfns are still mapped writable, so the guest cannot pin or install "
                       f"them as page tables ({', '.join(f'{n} as {k}' for k, n in by_lvl.items())}): "
                       f"e.g. {ex}; some PTEs map these page-table pages read-write.")
        else:
            for rec, s, e in wr_as_pt:
                out.append(f"mfn {rec['mfn']:#x} is still mapped writable (type count {s['count']}), so the "
                           f"guest cannot pin or install it as an {_lvl(e['type'])} table: some PTE maps this "
                           f"page-table page read-write (look for L1 entries with RW set that point at mfn "
                           f"{rec['mfn']:#x}; for a Linux PV guest, a page-table page still writable in the "
                           f"direct map or in a vmalloc/kmap alias).")
        for rec, s, e in pt_as_wr[:5]:
            out.append(f"mfn {rec['mfn']:#x} is an {_lvl(s['type'])} page table (type count {s['count']}) and "
                       f"something tried to map it writable: page tables may only be mapped read-only "
                       f"(a guest writing its page tables directly instead of through Xen, or a stale PTE "
                       f"to a recycled page).")
        if len(pt_as_wr) > 5:
            out.append(f"... and {len(pt_as_wr) - 5} more page tables someone tried to map writable.")
        for rec, s, e in pt_as_pt[:5]:
            out.append(f"mfn {rec['mfn']:#x} is an {_lvl(s['type'])} table but was requested as an "
                       f"{_lvl(e['type'])} table: an entry at the wrong level points at it (a PGD/PMD "
                       f"pointer written where a lower-level table was expected, or a stale entry).")
        if len(pt_as_pt) > 5:
            out.append(f"... and {len(pt_as_pt) - 5} more page tables requested at the wrong level.")
        # validation chains
        for ch in self.chains[:3]:
            out.append(self._chain_story(ch))
        if len(self.chains) > 3:
            out.append(f"... and {self.by_kind['validate_error'] - 3} more failed validations "
                       f"(lines {self.chains[3]['line_no']}...; see the decoded lines).")
        # flags / references
        if self.by_kind.get("bad_flags"):
            out.append(f"{self.by_kind['bad_flags']} page-table entr{'y has' if self.by_kind['bad_flags'] == 1 else 'ies have'} "
                       f"flags Xen forbids (see the decoded Bad Ln flags lines): the guest builds entries "
                       f"with bits Xen does not allow in PV page tables.")
        if self.by_kind.get("l1e_ref_error"):
            out.append(f"{self.by_kind['l1e_ref_error']} L1 entr{'y maps' if self.by_kind['l1e_ref_error'] == 1 else 'ies map'} "
                       f"frames the domain cannot take a reference on: mappings of frames it does not own "
                       f"(freed, granted away, or another domain's) or writable mappings of page tables.")
        # faults
        out += self._fault_story()
        if self.by_kind.get("guest_smap"):
            out.append("a guest was crashed for an SMAP/SMEP violation: a 32-bit PV guest on SMAP/SMEP "
                       "hardware and a Xen without the fix (4.5.0-4.5.3, 4.6.0-4.6.2): upgrade, or boot Xen "
                       "with smap=hvm smep=hvm.")
        if self.suppressed:
            out.append(f"{self.suppressed} messages were suppressed by Xen's printk rate limit "
                       f"({self.suppressed_lines} line(s)): the log is incomplete; boot Xen with "
                       f"loglvl=all guest_loglvl=all to see every message.")
        if not out and self.entries:
            out.append("no known pattern; read the decoded lines above.")
        return out

    def _chain_story(self, ch):
        f = ch["fields"]
        try:
            t = self._t(f["type"]) if self.layout is not None else None
        except XenscopeError:
            t = None
        lvl = _lvl(t["type"]) if t and t["type"] in _PT else (f"type {f['type']:#x}")
        kinds = [b[1] for b in ch["before"]]
        fail = next((b for b in reversed(ch["before"]) if b[1] == "table_failure"), None)
        slot = f"entry {fail[2]['slot']} ({fail[2]['slot']:#x})" if fail else "one of the entries"
        pin = ""
        if ch.get("pin"):
            pin = (f"; so the pin of mfn {ch['pin'][1]['mfn']:#x} (line {ch['pin'][0]}) failed too")
        head = f"line {ch['line_no']}: "
        if "linear_pt" in kinds:
            lp = next(b for b in ch["before"] if b[1] == "linear_pt")
            if lp[2]["disabled"]:
                return (head + f"{slot} of the {lvl} table mfn {f['mfn']:#x} points at another {lvl} table "
                        f"(a linear page table) and linear page tables are disabled (pv-linear-pt=0), so "
                        f"validating mfn {f['mfn']:#x} as an {lvl} failed{pin}.")
            where = f" (slot {fail[2]['slot']:#x})" if fail else ""
            return (head + f"an {lvl} entry{where} of mfn {f['mfn']:#x} points at another {lvl} with RW set: "
                    f"Xen allows such linear entries only read-only, so validating mfn {f['mfn']:#x} as an "
                    f"{lvl} failed{pin}.")
        if "bad_flags" in kinds:
            bf = next(b for b in ch["before"] if b[1] == "bad_flags")
            names = " ".join(decode_flags24(bf[2]["flags"], bf[2]["level"])["names"])
            return (head + f"{slot} of mfn {f['mfn']:#x} has forbidden flags ({names}), so "
                    f"validating it as an {lvl} failed{pin}.")
        if "bad_type" in kinds:
            bt = next(b for b in reversed(ch["before"]) if b[1] == "bad_type")
            try:
                s = self._t(bt[2]["saw"])
                sd = f"{_TYPE_NOUN.get(s['type'], s['type'])} ({_type_state(s)})"
            except (XenscopeError, TypeError):
                sd = f"type_info {bt[2]['saw']:#x}"
            return (head + f"{slot} of mfn {f['mfn']:#x} points at mfn {bt[2]['mfn']:#x}, which is "
                    f"{sd} and cannot take the type the entry needs, so validating mfn {f['mfn']:#x} as "
                    f"an {lvl} failed{pin}.")
        if "l1e_ref_error" in kinds or "page_ref" in kinds or "get_page_error" in kinds or "io_map" in kinds:
            return (head + f"{slot} of mfn {f['mfn']:#x} maps a frame the domain may not reference "
                    f"(see the messages before), so validating it as an {lvl} failed{pin}.")
        return (head + f"validating mfn {f['mfn']:#x} as an {lvl} failed at {slot}; the specific reason was "
                f"not logged (suppressed, or a non-debug Xen)" + pin + ".")

    def _fault_story(self):
        out = []
        for ev in self.faults[:20]:
            if ev.get("kind") not in ("fatal_pf", "unhandled"):
                continue
            if ev["kind"] == "unhandled" and ev.get("vector") != 14:
                continue
            ec = ev.get("error_code")
            # the walk: before a FATAL PAGE FAULT (show_page_walk then panic); after an Unhandled #PF
            lo, hi = ((ev["line_no"] - 80, ev["line_no"]) if ev["kind"] == "fatal_pf"
                      else (ev["line_no"] - 80, ev["line_no"] + 3))
            w = next((w for w in reversed(self.walks) if lo <= w["line_no"] <= hi), None)
            who = "Xen" if ev["kind"] == "fatal_pf" else "the guest"
            pf = D.decode_pf(ec) if ec is not None else None
            head = f"line {ev['line_no']}: {who} faulted"
            if w is not None:
                head += f" at va {w['va']:#x} ({va_region(w['va'])})"
            if pf:
                head += f" ({pf['text']})"
            if w is None:
                out.append(head + ": no page-table walk was logged with it.")
                continue
            out.append(head + ": " + explain_walk(w, ec))
        return out


def explain_walk(w, ec):
    """Which level of a logged walk explains the fault (error code ``ec`` may be None)."""
    levels = w["levels"]
    if not levels:
        return "the walk printed no entries (non-canonical address or unreadable root)."
    write = ec is not None and ec & 2
    user = ec is not None and ec & 4
    fetch = ec is not None and ec & 0x10
    prot = ec is not None and ec & 1
    decs = [(lv, _entry(lv["entry"], lv["level"])) for lv in levels]
    for lv, e in decs:
        name = f"L{lv['level']}[{lv['index']:#05x}]"
        if not e["present"]:
            tail = "" if ec is None else (", as the error code says (P=0)" if not prot else
                                          ", although the error code says P=1 (the entry changed after the fault?)")
            return f"the walk stops at {name} = {lv['entry']:#x}, which is not present{tail}."
        if e["reserved"]:
            return f"{name} = {lv['entry']:#x} has reserved bits set ({e['reserved']:#x})."
    if ec is not None and ec & 8:
        return "the error code says a reserved bit was set, but no logged entry has one."
    for lv, e in decs:
        name = f"L{lv['level']}[{lv['index']:#05x}]"
        if write and "RW" not in e["flags"]:
            return f"every level is present; {name} is read-only (RW clear) and the access was a write."
        if fetch and "XD" in e["flags"]:
            return f"every level is present; {name} has NX set and the access was an instruction fetch."
        if user and "US" not in e["flags"]:
            return f"every level is present; {name} is supervisor-only (US clear) and the access was from user mode."
    last = decs[-1][1]
    if not last["leaf"]:
        return "the walk ended before a leaf entry (frame not valid in Xen's view?)."
    if ec is not None and not user and all("US" in e["flags"] for _, e in decs):
        return ("every level is present and user-accessible (US set everywhere): a supervisor access "
                "to a user page, i.e. an SMAP/SMEP fault if CR4.SMAP/SMEP is on.")
    return ("every level is present and allows the access: the fault was spurious, or the tables "
            "changed after the fault (a missing TLB flush).")


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def iter_lines(f, maxlen=MAX_LINE):
    """``(line_no, text)`` from a binary file: bounded line length, undecodable bytes ignored."""
    n = 0
    readline = f.readline
    while True:
        chunk = readline(maxlen)
        if not chunk:
            return
        if len(chunk) == maxlen and not chunk.endswith(b"\n"):
            while True:                       # drop the rest of an overlong line
                rest = readline(maxlen)
                if not rest or rest.endswith(b"\n"):
                    break
        n += 1
        yield n, chunk.decode("utf-8", "ignore")


def prescan(f):
    """(version from a "Xen version" banner or None, [(exp, saw)...] of the first Bad type lines)."""
    banner, exps = None, []
    for _, text in iter_lines(f):
        if banner is None and "Xen" in text:
            m = _BANNER.search(text)
            if m:
                banner = m.group(1) or m.group(2)
        if "Bad type" in text:
            m = _PAT["bad_type"].search(text)
            if m:
                exps.append((_x(m.group(2)), _x(m.group(1))))
                if len(exps) >= 50 or banner:
                    break
    return banner, exps


def choose_layout(version=None, banner=None, exps=()):
    """``(layout, name, why)`` by --xen, the log's banner, the first decisive Bad type, or a default."""
    L = _L()
    if version is not None:
        sel = L.select_layout(version=version)
        return sel.layout, sel.layout.name, sel.why
    if banner is not None:
        try:
            sel = L.select_layout(version=banner)
            return sel.layout, sel.layout.name, f"Xen {banner} from the log's banner line"
        except XenscopeError:
            pass
    for exp, saw in exps:
        if L.guess_from_exp(exp, saw) is not None:
            sel = L.select_layout(bad_type_exp=exp, bad_type_saw=saw)
            return sel.layout, sel.layout.name, sel.why.replace("guessed: exp", "guessed from the first decisive Bad type line: exp")
    sel = L.select_layout(version="4.17")
    why = ("assumed Xen 4.17 (T3/C3): no --xen, no version banner"
           + (" and every Bad type exp is valid in both type layouts" if exps else " and no Bad type line")
           + " in the log; give --xen X.Y.Z")
    return sel.layout, sel.layout.name, why


def annotate_file(path, version=None, keep=5000, stdin=None):
    """Annotate the log at ``path`` (``-``: ``stdin``, a binary file, spooled to a temporary file for
    the two passes). Raises XenscopeError when the input cannot be read."""
    import os
    import shutil
    import tempfile
    if path == "-":
        import sys
        src = stdin if stdin is not None else sys.stdin.buffer
        f = tempfile.TemporaryFile()
        try:
            shutil.copyfileobj(src, f, 1 << 20)
        except OSError as e:
            f.close()
            raise XenscopeError(f"cannot read standard input: {e.strerror or e}") from None
        f.seek(0)
    else:
        if os.path.isdir(path):
            raise XenscopeError(f"cannot read {path}: is a directory")
        try:
            f = open(path, "rb")
        except OSError as e:
            raise XenscopeError(f"cannot read {path}: {e.strerror}") from None
    with f:
        try:
            banner, exps = prescan(f)
            layout, name, why = choose_layout(version, banner, exps)
            f.seek(0)
            a = Annotator(layout, name, why, keep=keep)
            for n, text in iter_lines(f):
                a.feed(n, text)
        except OSError as e:
            raise XenscopeError(f"cannot read {path}: {e.strerror or e}") from None
    return a.finish()


def annotate_lines(lines, version=None, keep=5000):
    """Annotate an in-memory list of text lines (tests, gdb)."""
    banner, exps = None, []
    for t in lines:
        if banner is None and "Xen" in t:
            m = _BANNER.search(t)
            if m:
                banner = m.group(1) or m.group(2)
        m = _PAT["bad_type"].search(t) if "Bad type" in t else None
        if m and len(exps) < 50:
            exps.append((_x(m.group(2)), _x(m.group(1))))
    layout, name, why = choose_layout(version, banner, exps)
    a = Annotator(layout, name, why, keep=keep)
    for n, t in enumerate(lines, 1):
        a.feed(n, t)
    return a.finish()
