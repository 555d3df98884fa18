"""A translated domain's P2M as Xen keeps it in x86 page-table format (``xen/arch/x86/mm/p2m-pt.c``):
the nested page tables (NPT) of HAP on AMD, and the P2M of every shadow-mode translated guest.

The tables are x86 long-mode tables (4 levels, 512 entries, 2 MiB/1 GiB superpages with PSE at
L2/L3), rooted at ``p2m_domain.phys_table``. What Xen adds (checked in 4.14.0, 4.17.0, 4.20.0-rc5 and
master; unchanged):

* the P2M type lives in the entry's high software-available bits: ``p2m_type_to_flags`` puts
  ``(t & 0x7f) << 12`` into Xen's 24-bit flags (``get_pte_flags``: bits 63..52 of the entry are flag
  bits 23..12), i.e. **entry bits 52..58**; ``p2m_flags_to_type`` reads them back, except that a
  flags word of 0 is ``p2m_invalid`` (``p2m.h``: "an entirely empty PTE doesn't have RAM type";
  ``p2m_ram_rw`` is 0);
* the rights follow the type (``P2M_BASE_FLAGS`` = PRESENT|USER|DIRTY|ACCESSED, plus RW for
  ``p2m_ram_rw``, ``p2m_grant_map_rw``, ``p2m_map_foreign``, writable MMIO; NX on every type that is
  not RAM or MMIO, and on the grant and foreign types); non-present types (invalid, mmio_dm,
  populate_on_demand, paging_out/paged/paging_in) keep their type with NX and no PRESENT;
* a present entry whose USER bit is clear must have its type recalculated (``RECALC_FLAGS``/
  ``_needs_recalc``: log-dirty or type changes over a range mark intermediate and leaf entries this way;
  the nested page fault the guest then takes brings Xen to ``do_recalc``);
* intermediate entries: ``P2M_BASE_FLAGS | _PAGE_RW`` (type bits 0).
"""

from dataclasses import dataclass

import numpy as np

from .p2m_types import EntryNames

ADDR_MASK = 0x000FFFFFFFFFF000          # bits 51:12 (PADDR_BITS 52)
LARGE_ADDR_MASK = ADDR_MASK & ~0x1000   # a superpage's bit 12 is PAT (p2m_l2e_from_pfn masks it)
PRESENT, RW, USER, PWT, PCD, ACCESSED, DIRTY, PSE = 1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80
NX = 1 << 63
TYPE_SHIFT, TYPE_MASK = 52, 0x7F
LEVEL_NAMES = {4: "L4", 3: "L3", 2: "L2", 1: "L1"}


def pte_flags(raw):
    """Xen's 24-bit flags of an entry (``get_pte_flags``): bits 63..52 as 23..12, bits 11..0."""
    return ((raw >> 40) & ~0xFFF & 0xFFFFFF) | (raw & 0xFFF)


def entry_type(raw):
    """The P2M type number of an entry (``p2m_flags_to_type``)."""
    flags = pte_flags(raw)
    if flags == 0:
        return 1                          # p2m_invalid
    return (flags >> 12) & TYPE_MASK


@dataclass
class Entry(EntryNames):
    """One decoded P2M entry at ``level`` (4 = the root table's)."""
    raw: int
    level: int
    present: bool
    leaf: bool                            # maps a frame (L1, or a superpage at L2/L3)
    mfn: int                              # the next table's frame, or the (first) frame mapped
    type: int                             # p2m_type_t number (meaningful on leaves)
    writable: bool
    nx: bool
    recalc: bool                          # USER clear: Xen recalculates the type on next use

    def flags(self):
        """Short words for the entry's bits."""
        out = [w for bit, w in ((PRESENT, "P"), (RW, "RW"), (USER, "U"), (PWT, "PWT"), (PCD, "PCD"),
                                (ACCESSED, "A"), (DIRTY, "D")) if self.raw & bit]
        if self.leaf and self.level > 1:
            out.append("PSE")
        if self.raw & NX:
            out.append("NX")
        if self.recalc:
            out.append("recalc")
        return out


def decode(raw, level):
    """The :class:`Entry` of the 64-bit value ``raw`` found in a level-``level`` table."""
    present = bool(raw & PRESENT)
    leaf = level == 1 or (level in (2, 3) and bool(raw & PSE))
    mask = LARGE_ADDR_MASK if leaf and level > 1 else ADDR_MASK
    return Entry(raw, level, present, leaf, (raw & mask) >> 12, entry_type(raw), bool(raw & RW),
                 bool(raw & NX), present and not raw & USER)


def columns(words, level):
    """:func:`decode` of a whole table at once (``words``: uint64 array): arrays ``present``, ``leaf``,
    ``mfn``, ``type``, ``recalc`` and ``holds`` (:meth:`Format.holds`)."""
    w = words.astype(np.uint64)
    present = (w & np.uint64(PRESENT)) != 0
    leaf = np.full(len(w), level == 1) | ((level in (2, 3)) & ((w & np.uint64(PSE)) != 0))
    mask = np.where(leaf & (level > 1), np.uint64(LARGE_ADDR_MASK), np.uint64(ADDR_MASK))
    flags = ((w >> np.uint64(40)) & np.uint64(0xFFF000)) | (w & np.uint64(0xFFF))
    kind = np.where(flags == 0, 1, (flags >> np.uint64(12)) & np.uint64(TYPE_MASK)).astype(np.int16)
    return {"present": present, "leaf": leaf, "mfn": (w & mask) >> np.uint64(12), "type": kind,
            "recalc": present & ((w & np.uint64(USER)) == 0), "holds": kind != 1}


class Format:
    """The P2M entry format of p2m-pt.c, for the walker of :mod:`.p2m_tables`."""
    name = "npt"
    title = "x86 page tables (p2m-pt: AMD NPT, or shadow mode)"
    levels = 4

    @staticmethod
    def decode(raw, level):
        return decode(raw, level)

    @staticmethod
    def columns(words, level):
        return columns(words, level)

    @staticmethod
    def table_present(entry):
        """Whether the walk goes on through ``entry`` (hardware: PRESENT)."""
        return entry.present

    @staticmethod
    def holds(entry):
        """Whether a leaf or non-present entry says something: any type but ``p2m_invalid``."""
        return entry.type != 1
