"""Wording shared by the message decoders and the story: page_info type/count states, M2P values,
errno names, Xen's 24-bit PTE flag encoding, page-table entries, domains and Xen's memory regions.

``type_info`` / ``count_info`` are decoded with a page_info layout of :mod:`xenstructs.xen.layouts`
(:class:`PageInfo`); page-table entries with :func:`xenstructs.decode.decode_entry` (4-level).
"""

import re

from ...decode import decode_entry
from .. import layouts
from ..release import region_of

INVALID_M2P = (1 << 64) - 1
SHARED_M2P = (1 << 64) - 2
M2P_DEBUG_FILL = 0x5555555555555555
ERRNO = {1: "EPERM", 2: "ENOENT", 3: "ESRCH", 4: "EINTR", 5: "EIO", 11: "EAGAIN", 12: "ENOMEM",
         13: "EACCES", 14: "EFAULT", 16: "EBUSY", 17: "EEXIST", 22: "EINVAL", 28: "ENOSPC",
         34: "ERANGE", 38: "ENOSYS", 75: "EOVERFLOW", 85: "ERESTART"}   # xen/include/public/errno.h

TYPE_NOUN = {"none": "an untyped page", "l1": "an L1 page table", "l2": "an L2 page table",
             "l3": "an L3 page table", "l4": "an L4 page table",
             "seg_desc": "a descriptor (GDT/LDT) page", "writable": "a writable page",
             "shared": "a shared (mem-sharing) page"}
PAGE_TABLES = ("l1", "l2", "l3", "l4")


class PageInfo:
    """``type_info`` / ``count_info`` values decoded with one page_info layout; with no layout
    (None) every decode is None."""

    def __init__(self, layout):
        self.layout = layout

    def type_info(self, value):
        if self.layout is None:
            return None
        return layouts.decode_type(value, self.layout)

    def count_info(self, value):
        if self.layout is None:
            return None
        return layouts.decode_count(value, self.layout)


def level_name(page_type):
    """``"l2"`` -> ``"L2"``; other types unchanged."""
    return page_type.upper() if page_type in PAGE_TABLES else page_type


def pfn_text(pfn):
    """An M2P value: a guest pfn, or what an invalid / shared / never-set entry means."""
    if pfn == INVALID_M2P:
        return "no guest pfn: M2P entry invalid"
    if pfn == SHARED_M2P:
        return "M2P: shared (mem-sharing) page"
    if pfn == M2P_DEBUG_FILL:
        return "M2P entry never set (debug fill 0x5555...)"
    return f"guest pfn {pfn:#x}"


def type_state(decoded):
    """``validated, pinned, type count 1`` for a decoded type_info."""
    parts = []
    flags = decoded["flags"]
    if decoded["type"] in PAGE_TABLES or decoded["type"] == "seg_desc":
        parts.append("validated" if "validated" in flags else "not validated")
    elif "validated" in flags:
        parts.append("validated")
    for flag, text in (("pinned", "pinned"), ("partial", "partially validated"),
                       ("pae_xen_l2", "PAE L2 holding Xen's slots"), ("locked", "locked"),
                       ("non_coherent", "non-coherent")):
        if flag in flags:
            parts.append(text)
    parts.append(f"type count {decoded['count']}")
    return ", ".join(parts)


def count_state(decoded):
    """``allocated, in use, 3 references`` for a decoded count_info."""
    flags = decoded["flags"]
    parts = []
    if "allocated" in flags:
        parts.append("allocated")
    if "need_scrub" in flags:
        parts.append("needs scrubbing")
    if "xen_heap" in flags:
        parts.append("Xen heap")
    parts.append({"inuse": "in use"}.get(decoded["state"], decoded["state"]))
    for flag in flags:
        if flag not in ("allocated", "need_scrub", "xen_heap"):
            parts.append(flag.replace("_", " "))
    if decoded.get("cacheattr"):
        parts.append(f"cacheattr {decoded['cacheattr']}")
    references = decoded["count"]
    parts.append(f"{references} reference{'s' if references != 1 else ''}")
    return ", ".join(parts)


def request_text(decoded):
    """What taking the decoded type ``exp`` asks of a page: ``use it as an L1 page table``."""
    page_type = decoded["type"]
    if page_type in PAGE_TABLES:
        extra = " (a PAE L2 that holds Xen's slots)" if "pae_xen_l2" in decoded["flags"] else ""
        return f"use it as an {level_name(page_type)} page table{extra}"
    return {"writable": "map it writable", "seg_desc": "use it as a descriptor (GDT/LDT) page",
            "shared": "share it (mem-sharing)",
            "none": "take an untyped reference"}.get(page_type, f"use it as type {page_type}")


def rc_text(rc):
    """``rc -22 = -EINVAL``."""
    if rc is None:
        return ""
    return f"rc {rc}" + (f" = -{ERRNO[-rc]}" if rc < 0 and -rc in ERRNO else "")


FLAG24_NAMES = {0: "P", 1: "RW", 2: "US", 3: "PWT", 4: "PCD", 5: "A", 6: "D", 7: "PSE/PAT", 8: "G",
                9: "AVAIL0", 10: "AVAIL1", 11: "AVAIL2"}


def _flag24_name(bit, level):
    """The name of bit ``bit`` (0-23) of Xen's 24-bit flag encoding in an L``level`` entry."""
    pte_bit = bit if bit < 12 else bit + 40
    if bit == 7:
        return "PAT" if level == 1 else "PSE"
    if bit < 12:
        return FLAG24_NAMES[bit]
    if bit == 23:
        return "NX"
    if bit == 22:
        return "GNTTAB(bit 62)"
    if bit == 12:
        return "GUEST_KERNEL(bit 52)"
    if 19 <= bit <= 21:
        return f"PKEY(bit {pte_bit})"
    return f"bit {pte_bit}"


def decode_flags24(value, level):
    """Xen's 24-bit PTE flag encoding (get_pte_flags): bits 0-11 = PTE bits 0-11, bits 12-23 = PTE
    bits 52-63 (reference §2.1). Returns names and the PTE bits."""
    names, bits = [], []
    for bit in range(24):
        if value >> bit & 1:
            bits.append(bit if bit < 12 else bit + 40)
            names.append(_flag24_name(bit, level))
    return {"value": value, "names": names, "pte_bits": bits}


def flags_hints(names, level):
    """Why Xen forbids these flag names in an L``level`` entry of a PV guest."""
    hints = []
    if "NX" in names:
        hints.append("NX (bit 63) is set but Xen does not allow it (the CPU or Xen has no NX support, "
                     "so bit 63 is reserved)")
    if any(name in names for name in ("PWT", "PCD", "PAT")) and level == 1:
        hints.append("cache-attribute bits (PWT/PCD/PAT) in an L1 entry are allowed only for a domain "
                     "with I/O memory (iomem) permission")
    elif any(name in names for name in ("PWT", "PCD")) and level == 3:
        hints.append("PWT/PCD in a 32-bit PAE guest's L3 (PDPT) entry are forbidden")
    if "PSE" in names and level in (3, 4):
        hints.append(f"PSE in an L{level} entry: Xen gives PV guests no {'1 GiB ' if level == 3 else ''}superpages")
    if "G" in names and level >= 3:
        hints.append(f"G in an L{level} entry is not allowed")
    if any(name.startswith(("GNTTAB", "GUEST_KERNEL", "PKEY", "bit 5", "bit 6")) for name in names):
        hints.append("PTE bits 52-62 are reserved for Xen's own use in PV guests' entries")
    if "PSE" in names and level == 2:
        hints.append("PSE in an L2 entry: PV superpages are not allowed (or not enabled)")
    return hints


def decode_pte(value, level):
    """A logged 4-level page-table entry at L``level``, decoded."""
    name = {4: "PML4E", 3: "PDPTE", 2: "PDE", 1: "PTE"}[level]
    decoded = decode_entry(value & ((1 << 64) - 1), "4level", name)
    return {key: decoded[key] for key in ("value", "level", "present", "flags", "large", "leaf", "addr",
                                          "pfn", "reserved", "software")}


def entry_text(decoded):
    """``P RW US -> mfn 0x2b000`` or ``not present``."""
    if not decoded["present"]:
        return "not present"
    return " ".join(decoded["flags"]) + f" -> mfn {decoded['pfn']:#x}"


def va_region(va):
    """Where ``va`` lies in a PV guest's view: its lower half, one of Xen's regions (a default,
    non-BIGMEM build), the guest kernel's half, or non-canonical."""
    if va < 0x0000800000000000:
        return "guest user space (lower half)"
    return region_of(va) or "a non-canonical address"


_DECIMAL = re.compile(r"-?\d+")
_POINTER = re.compile(r"([0-9a-fA-F]{8,16})(?:\((\d+)\))?")


def domain_name(printed):
    """A domain as printed: ``d1``, ``d[IO]``, a decimal id (4.6-4.12) or a pointer (4.4)."""
    if _DECIMAL.fullmatch(printed):
        domid = int(printed)
        try:
            return layouts.domid_name(domid)
        except Exception:
            return f"d{domid}"
    pointer = _POINTER.fullmatch(printed)
    if pointer:
        return f"the domain at {pointer.group(1)}" + (f" (d{pointer.group(2)})" if pointer.group(2) else "")
    return printed
