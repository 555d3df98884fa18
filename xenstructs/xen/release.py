"""What depends on the Xen release, besides ``struct page_info`` (that is :mod:`.layouts`): the one
version parser, and Xen's x86_64 virtual memory layout.

Every Xen virtual address xenscope knows is defined here, once; everything else imports it.

Source: Xen's ``xen/include/asm-x86/config.h`` (``xen/arch/x86/include/asm/config.h`` from 4.17),
the layout comment and the ``*_VIRT_START`` macros; reference §2.1/§2.2. Two things moved:
``XEN_VIRT_START`` went from 0xffff82d080000000 to 0xffff82d040000000 when the high read-only compat
M2P was removed (commit 5af040ef8b, first in 4.14.0), and CONFIG_BIGMEM (4.6+) moves the frame table
and the direct map.
"""

import re
from typing import NamedTuple, Optional

from ..errors import XenscopeError

# ---------------------------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------------------------

OLDEST = (4, 4)              # the oldest release xenscope knows
NEWEST_KNOWN = (4, 22)       # the newest release whose layouts were checked

_VERSION_RE = re.compile(r"^\s*(?:xen[-_ ]?)?(\d+)\.(\d+)(?:\.(\d+))?([-+~_ ].*)?\s*$", re.I)


class XenVersion(NamedTuple):
    """A parsed Xen version: ``point`` is None when only X.Y was given; ``tail`` is what follows
    the numbers (``-pre``, ``+13-g2445b30a44``...)."""
    major: int
    minor: int
    point: Optional[int]
    tail: str

    @property
    def triple(self):
        """``(major, minor, point)`` with a missing point release read as 0, for comparisons."""
        return self.major, self.minor, self.point or 0


def parse_version(text) -> XenVersion:
    """``"4.17.3"`` -> ``XenVersion(4, 17, 3, "")``; ``"4.13"`` -> ``(4, 13, None, "")``;
    ``"4.17.7+13-g2445b30a44"`` -> ``(4, 17, 7, "+13-g2445b30a44")``; ``"xen-4.6.0"`` is accepted.

    :raises XenscopeError: not a version string, or older than :data:`OLDEST`
    """
    if not isinstance(text, str):
        raise XenscopeError(f"Xen version {text!r} is not a string like 4.17.3")
    m = _VERSION_RE.match(text)
    if not m:
        raise XenscopeError(f"cannot parse Xen version {text!r}: expected X.Y or X.Y.Z (e.g. 4.17.3)")
    major, minor = int(m.group(1)), int(m.group(2))
    point = None if m.group(3) is None else int(m.group(3))
    if (major, minor) < OLDEST:
        raise XenscopeError(f"Xen {text.strip()} is older than 4.4, which xenscope does not support")
    return XenVersion(major, minor, point, (m.group(4) or "").strip())


# ---------------------------------------------------------------------------------------------
# The x86_64 virtual memory layout (PML4_ADDR(n) = sign-extended n << 39)
# ---------------------------------------------------------------------------------------------

def pml4_addr(slot):
    """The virtual address of L4 slot ``slot`` (sign-extended ``slot << 39``)."""
    va = slot << 39
    return va | 0xFFFF000000000000 if slot >= 256 else va


FIRST_XEN_SLOT, LAST_XEN_SLOT = 256, 271          # ROOT_PAGETABLE_FIRST/LAST_XEN_SLOT
HYPERVISOR_VIRT_START = pml4_addr(256)            # 0xffff800000000000
HYPERVISOR_VIRT_END = pml4_addr(272)              # 0xffff880000000000: the PV guest kernel's half
RO_MPT_VIRT_START = pml4_addr(256)                # read-only M2P, guest-accessible (MACH2PHYS_VIRT_START)
RO_MPT_VIRT_END = RO_MPT_VIRT_START + (1 << 38)   # MPT_VIRT_SIZE = 256 GiB: 2^35 8-byte entries
PCI_MCFG_VIRT_START = pml4_addr(257)
LINEAR_PT_SLOT = 258                              # the guest's linear (recursive) page table
LINEAR_PT_VIRT_START = pml4_addr(LINEAR_PT_SLOT)  # 0xffff810000000000
SH_LINEAR_PT_VIRT_START = pml4_addr(259)          # the shadow linear page table
PERDOMAIN_VIRT_START = pml4_addr(260)             # GDT/LDT, mapcache, argument translation
RDWR_MPT_VIRT_START = pml4_addr(261)              # Xen's writable M2P (machine_to_phys_mapping)
VMAP_VIRT_START = RDWR_MPT_VIRT_START + (1 << 38)             # 0xffff82c000000000, 64 GiB
RDWR_COMPAT_MPT_VIRT_START = VMAP_VIRT_START + (64 << 30)     # 0xffff82d000000000, 1 GiB
XEN_VIRT_START_NEW = RDWR_COMPAT_MPT_VIRT_START + (1 << 30)   # 0xffff82d040000000: 4.14+
XEN_VIRT_START_OLD = XEN_VIRT_START_NEW + (1 << 30)           # 0xffff82d080000000: 4.4-4.13
DIRECTMAP_VIRT_START = pml4_addr(262)             # 0xffff830000000000
DIRECTMAP_PV_SIZE = 10 << 39                      # slots 262-271: the direct map every PV L4 carries
FRAMETABLE_VIRT_START = DIRECTMAP_VIRT_START - (128 << 30)    # 0xffff82e000000000
DIRECTMAP_VIRT_START_BIGMEM = pml4_addr(265)      # 0xffff848000000000 (CONFIG_BIGMEM)
FRAMETABLE_VIRT_START_BIGMEM = pml4_addr(262)     # 1.5 TiB before it
FRAMETABLE_SIZE = 128 << 30                       # 2^32 page_info: 16 TiB of RAM
FRAMETABLE_SIZE_BIGMEM = DIRECTMAP_VIRT_START_BIGMEM - FRAMETABLE_VIRT_START_BIGMEM   # slots 262-264


def xen_virt_start_of(va):
    """The ``XEN_VIRT_START`` that a Xen text address ``va`` belongs to (by where it lies)."""
    return XEN_VIRT_START_NEW if va < XEN_VIRT_START_OLD else XEN_VIRT_START_OLD


def in_xen_text(va):
    """True for an address in Xen's text/data range: from ``XEN_VIRT_START`` (4.14+: 0xffff82d040000000;
    4.4-4.13: 0xffff82d080000000) up to the frame table. Code there is Xen's own, at CPL 0."""
    return va is not None and XEN_VIRT_START_NEW <= va < FRAMETABLE_VIRT_START


def frame_table_start(bigmem=False):
    """``FRAMETABLE_VIRT_START`` of a default or CONFIG_BIGMEM build."""
    return FRAMETABLE_VIRT_START_BIGMEM if bigmem else FRAMETABLE_VIRT_START


def frame_table_size(bigmem=False):
    """Bytes of virtual space for the frame table (``FRAMETABLE_SIZE``) of a default or BIGMEM build."""
    return FRAMETABLE_SIZE_BIGMEM if bigmem else FRAMETABLE_SIZE


def directmap_start(bigmem=False):
    """``DIRECTMAP_VIRT_START`` of a default or CONFIG_BIGMEM build."""
    return DIRECTMAP_VIRT_START_BIGMEM if bigmem else DIRECTMAP_VIRT_START


# (start, end, what) for a default (non-BIGMEM) build; XEN_VIRT_START depends on the release.
REGIONS = (
    (RO_MPT_VIRT_START, RO_MPT_VIRT_END, "Xen's read-only M2P (guest-visible)"),
    (RO_MPT_VIRT_END, PCI_MCFG_VIRT_START, "reserved (guest-accessible, the rest of slot 256)"),
    (PCI_MCFG_VIRT_START, LINEAR_PT_VIRT_START, "the PCI MMCFG area"),
    (LINEAR_PT_VIRT_START, SH_LINEAR_PT_VIRT_START, "the guest linear page-table slot"),
    (SH_LINEAR_PT_VIRT_START, PERDOMAIN_VIRT_START, "the shadow linear page-table slot"),
    (PERDOMAIN_VIRT_START, RDWR_MPT_VIRT_START, "the per-domain area (GDT/LDT, mapcache)"),
    (RDWR_MPT_VIRT_START, VMAP_VIRT_START, "Xen's writable M2P"),
    (VMAP_VIRT_START, RDWR_COMPAT_MPT_VIRT_START, "Xen's vmap area"),
    (RDWR_COMPAT_MPT_VIRT_START, XEN_VIRT_START_NEW, "the compat M2P"),
    (XEN_VIRT_START_NEW, FRAMETABLE_VIRT_START,
     f"Xen's text/data (4.14+: from {XEN_VIRT_START_NEW:#x}, older: {XEN_VIRT_START_OLD:#x})"),
    (FRAMETABLE_VIRT_START, DIRECTMAP_VIRT_START, "the frame table (struct page_info array)"),
    (DIRECTMAP_VIRT_START, HYPERVISOR_VIRT_END, "Xen's direct map"),
    (HYPERVISOR_VIRT_END, 1 << 64, "the PV guest kernel's half"),
)


def region_of(va):
    """What Xen's layout puts at ``va`` (a default build), or None below the hypervisor's slots."""
    for start, end, what in REGIONS:
        if start <= va < end:
            return what
    return None


def in_xen_slots(va):
    """True for addresses in L4 slots 256-271, which Xen owns in every 64-bit PV guest's L4."""
    return HYPERVISOR_VIRT_START <= va < HYPERVISOR_VIRT_END


# ---------------------------------------------------------------------------------------------
# 32-bit PV guests (compat) and the PV segment selectors (public/arch-x86/xen-x86_{32,64}.h)
# ---------------------------------------------------------------------------------------------

HYPERVISOR_COMPAT_VIRT_START = 0xF5800000   # lower limit: a 32-bit PV guest owns [0, this)
MACH2PHYS_COMPAT_VIRT_END = 0xFFE00000

HYPERVISOR_CS = 0xE008        # __HYPERVISOR_CS: Xen itself, ring 0
FLAT_RING1_CS = 0xE019        # 32-bit PV kernel (ring 1)
FLAT_RING3_CS32 = 0xE023      # 64-bit PV guest's compat user code; (32-bit ABI: FLAT_RING1_DS 0xe021)
FLAT_RING3_CS = 0xE02B        # 32-bit PV user code; the same value is FLAT_RING3_DS32/SS32 in the 64-bit ABI
FLAT_RING3_CS64 = 0xE033      # 64-bit PV kernel and user (both run in ring 3)
