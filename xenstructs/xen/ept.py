"""A translated domain's P2M on an Intel host with HAP: Xen's EPT tables (``xen/arch/x86/mm/p2m-ept.c``,
``ept_entry_t`` in ``asm-x86/hvm/vmx/vmx.h``; the hardware format in the Intel SDM vol. 3C, "EPT
Translation Mechanism").

Entry bits (Xen's ``ept_entry_t``, identical in 4.14.0 and 4.17.0-4.19; 4.20 moved ``access``):

=======  ==========================================================================================
0 1 2    r, w, x: the rights (an entry is present when any of them is set: ``is_epte_present``)
5:3      emt: EPT memory type of a leaf (0 UC, 1 WC, 4 WT, 5 WP, 6 WB: MTRR_TYPE_*)
6        ipat: ignore the guest's PAT
7        sp: a superpage (L2: 2 MiB, L3: 1 GiB)
8 9      a, d: accessed, dirty (when EPT A/D is on)
10       recalc: software bit 1, the type or memory type must be recalculated
11       snp: VT-d snoop control (shared EPT/VT-d tables)
51:12    mfn
57:52    sa_p2mt: the P2M type (:mod:`.p2m_types`)
61:58    access: ``p2m_access_t`` (4.14-4.19; bit 62 reserved)
62:59    access, with bit 58 ``pw`` (paging-write): 4.20 and later (commit b94305d984)
63       suppress_ve: suppress #VE (new tables start with it set in every entry)
=======  ==========================================================================================

``is_epte_valid``: an entry is valid when any bit but suppress_ve is set and its type is not
``p2m_invalid``. Intermediate entries (``ept_set_middle_entry``) have r=w=x=1, the domain's default
access, type 0 and suppress_ve set. The root is ``p2m_domain.ept`` (``struct ept_data``: the EPTP,
``mt`` bits 2:0, ``wl`` = levels - 1 in bits 5:3, ``ad`` bit 6, the root's mfn from bit 12), the same
frame as ``p2m_domain.phys_table``. Xen uses a 4-level walk (``wl`` = 3).
"""

from dataclasses import dataclass

import numpy as np

from .p2m_types import ACCESS, EntryNames

ADDR_MASK = 0x000FFFFFFFFFF000
MEMORY_TYPES = {0: "UC", 1: "WC", 4: "WT", 5: "WP", 6: "WB"}
SUPPRESS_VE = 1 << 63


@dataclass(frozen=True)
class Layout:
    """Where one release keeps ``access`` and whether it has ``pw``."""
    name: str
    access_shift: int
    pw: bool


OLD = Layout("4.14-4.19 (access 61:58)", 58, False)
NEW = Layout("4.20+ (pw 58, access 62:59)", 59, True)


def layout_for(version):
    """The :class:`Layout` of Xen ``version`` (``"4.17.5"``, or None: the older one)."""
    from .release import parse_version
    if version is None:
        return OLD
    major, minor = parse_version(version)[:2]
    return NEW if (major, minor) >= (4, 20) else OLD


@dataclass
class Entry(EntryNames):
    """One decoded EPT entry at ``level`` (4 = the root table's)."""
    raw: int
    level: int
    layout: Layout
    present: bool
    leaf: bool
    mfn: int
    type: int
    writable: bool
    nx: bool
    recalc: bool

    @property
    def access(self):
        return ACCESS.get(self.raw >> self.layout.access_shift & 0xF, "?")

    @property
    def memory_type(self):
        return MEMORY_TYPES.get(self.raw >> 3 & 7, f"reserved {self.raw >> 3 & 7}")

    @property
    def valid(self):
        """Xen's ``is_epte_valid``."""
        return bool(self.raw & ~SUPPRESS_VE) and self.type != 1

    def flags(self):
        out = [w for bit, w in ((1, "R"), (2, "W"), (4, "X")) if self.raw & bit]
        if self.leaf:
            out.append(f"emt={self.memory_type}")
            if self.raw & 0x40:
                out.append("ipat")
            if self.level > 1:
                out.append("SP")
        out += [w for bit, w in ((0x100, "A"), (0x200, "D"), (0x400, "recalc"), (0x800, "snp"))
                if self.raw & bit]
        if self.layout.pw and self.raw >> 58 & 1:
            out.append("pw")
        out.append(f"access={self.access}")
        if self.raw & SUPPRESS_VE:
            out.append("sve")
        return out


def decode(raw, level, layout=OLD):
    """The :class:`Entry` of ``raw`` found in a level-``level`` EPT table."""
    present = bool(raw & 7)
    leaf = level == 1 or (level in (2, 3) and bool(raw & 0x80))
    return Entry(raw, level, layout, present, leaf, (raw & ADDR_MASK) >> 12, raw >> 52 & 0x3F,
                 bool(raw & 2), not raw & 4, bool(raw & 0x400))


def columns(words, level):
    """:func:`decode` of a whole table at once (``words``: uint64 array): arrays ``present``, ``leaf``,
    ``mfn``, ``type``, ``recalc`` and ``holds`` (Xen's ``is_epte_valid``, :meth:`Entry.valid`)."""
    w = words.astype(np.uint64)
    present = (w & np.uint64(7)) != 0
    leaf = np.full(len(w), level == 1) | ((level in (2, 3)) & ((w & np.uint64(0x80)) != 0))
    kind = ((w >> np.uint64(52)) & np.uint64(0x3F)).astype(np.int16)
    holds = ((w & np.uint64(~SUPPRESS_VE & (1 << 64) - 1)) != 0) & (kind != 1)
    return {"present": present, "leaf": leaf, "mfn": (w & np.uint64(ADDR_MASK)) >> np.uint64(12), "type": kind,
            "recalc": (w & np.uint64(0x400)) != 0, "holds": holds}


@dataclass
class Eptp:
    """A decoded EPT pointer (``struct ept_data``'s ``eptp``)."""
    raw: int

    @property
    def memory_type(self):
        return MEMORY_TYPES.get(self.raw & 7, f"reserved {self.raw & 7}")

    @property
    def levels(self):
        return (self.raw >> 3 & 7) + 1

    @property
    def ad(self):
        return bool(self.raw >> 6 & 1)

    @property
    def mfn(self):
        return (self.raw & ADDR_MASK) >> 12


class Format:
    """The EPT entry format, for the walker of :mod:`.p2m_tables` (``layout``: the release's)."""
    name = "ept"
    title = "Intel EPT (p2m-ept)"
    levels = 4

    def __init__(self, layout=OLD):
        self.layout = layout

    def decode(self, raw, level):
        return decode(raw, level, self.layout)

    @staticmethod
    def columns(words, level):
        return columns(words, level)

    @staticmethod
    def table_present(entry):
        """Whether the walk goes on through ``entry`` (hardware: any of R/W/X)."""
        return entry.present

    @staticmethod
    def holds(entry):
        """Whether a leaf or non-present entry says something: Xen's ``is_epte_valid``."""
        return entry.valid
