"""What a walk needs to know: the paging modes' geometry, reserved bits, the stop reasons, and
:class:`Paging` (mode, root, NXE, MAXPHYADDR, CR4)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import decode

STOP_REASONS = {
    "not-present": "entry not present",
    "reserved": "reserved bit set",
    "not-in-dump": "page table not in the dump",
    "loop": "page table loop (a table is its own ancestor; enumeration does not re-enter it)",
    "non-canonical": "virtual address is not canonical",
    "out-of-range": "virtual address beyond the mode's width",
    "too-many-mappings": "too many mappings: shared tables? (enumeration stopped at its bound, see MAX_TABLES "
                         "and mapping_limit; the listing is incomplete from here)",
}

# Per mode: entry size, the VA shift of each level (top down), index bits of each level, VA width.
GEOMETRY = {
    "2level": (4, (22, 12), (10, 10), 32),
    "pae": (8, (30, 21, 12), (2, 9, 9), 32),
    "4level": (8, (39, 30, 21, 12), (9, 9, 9, 9), 48),
    "5level": (8, (48, 39, 30, 21, 12), (9, 9, 9, 9, 9), 57),
}
MAX_TABLES = 1 << 20            # enumeration reads at most 1 M tables (4 GiB): absurd tables stop
# Pages one enumeration may list (each costs ~100 bytes at peak, ~500 more as an output line):
# - at most 512 per distinct table read plus SHARED_ALLOWANCE: a tree of tables has one leaf per
#   entry at most, only tables shared by many entries (a DAG) go past it;
# - and at most MAX_MAPPINGS_FIXED (2 M; sparse synthetic dumps map much memory they do not hold),
#   or MAPPINGS_PER_PAGE per 4 KiB page the dump holds when that is more; 64 M without a memory
#   map (live stubs).
SHARED_ALLOWANCE = 1 << 19       # Linux PV maps its 1 GiB P2M area's holes through shared tables: 2^18 PTEs
MAX_MAPPINGS_FIXED = 1 << 21
MAPPINGS_PER_PAGE = 4
MAX_MAPPINGS_LIVE = 1 << 26


@dataclass
class Paging:
    """How to walk: mode, root table address, and the bits that change the rules.

    ``mode``: ``2level``, ``pae``, ``4level`` or ``5level``; ``root``: physical address of the top
    table (:func:`root_from_cr3` of a CR3 value); ``nxe``: EFER.NXE (XD is a rights bit, else
    reserved); ``maxphyaddr``: physical address width (entry bits above it are reserved); ``cr4``:
    CR4 (PSE decides 4 MiB pages in 2-level mode). :func:`~xenstructs.context.resolve` makes one
    from a target's registers."""
    mode: str
    root: int                    # physical address of the top table (CR3 with flags masked off)
    nxe: bool = True
    maxphyaddr: int = 52
    cr4: int = decode.CR4_PSE

    def __setattr__(self, name, value):
        # walk() keeps the rules it works out from these fields on the object: a change drops them
        self.__dict__.pop("_plan", None)
        object.__setattr__(self, name, value)

    @property
    def entry_size(self):
        return GEOMETRY[self.mode][0]

    @property
    def va_bits(self):
        return GEOMETRY[self.mode][3]


def root_from_cr3(cr3, mode):
    """The top table's physical address from a CR3 value (drops PCID and flag bits)."""
    if mode == "pae":
        # 32 bits on hardware; a 32-bit PV guest's (decoded) CR3 can name an L3 above 4 GiB
        return cr3 & 0x000FFFFFFFFFFFE0
    if mode == "2level":
        return cr3 & 0xFFFFF000
    return cr3 & 0x000FFFFFFFFFF000


def canonical(va, mode):
    """Sign-extend a ``va_bits`` address to 64 bits (4/5-level); 32-bit modes return it masked."""
    bits = GEOMETRY[mode][3]
    if bits == 32:
        return va & 0xFFFFFFFF
    va &= (1 << bits) - 1
    if va >> (bits - 1) & 1:
        va |= ((1 << 64) - 1) & ~((1 << bits) - 1)
    return va


TABLE_CHUNK = 1024               # tables decoded together (4 MiB of entries, ~25 MiB of work arrays)
PAGE = 4096


def reserved_mask(paging, level, large):
    """Reserved-bit mask of a present entry at ``level`` (a large page or a table pointer)."""
    esize = GEOMETRY[paging.mode][0]
    probe = ((1 << 64) - 1 if esize == 8 else (1 << 32) - 1) | 1
    probe = probe | 0x80 if large else probe & ~0x80
    mask = decode.reserved_bits(probe, paging.mode, level, paging.nxe, paging.maxphyaddr, paging.cr4)
    if not large and level in ("PML5", "PML4"):
        mask |= 0x80            # PS is reserved there: such an entry is never a table pointer
    return mask
