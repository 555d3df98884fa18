"""Decoders that need no target: page-table entries, page-fault error codes, CR0, CR4, EFER.

Bit positions are from the Intel SDM vol. 3A ch. 4 and 2 and Linux ``pgtable_types.h``
(see ../shared/reference/xen-facts.md §7.1-7.3). Each decoder returns a plain dict so the CLI can
print it as JSON unchanged.

>>> decode_entry(0x800000007fffe067, "4level", "PTE")["flags"]
['P', 'RW', 'US', 'A', 'D', 'XD']
"""

from .errors import XenscopeError

# Bits common to every present entry (bit: name). Bit 6, 7 and 8 depend on the level (see below).
_LOW_BITS = {0: "P", 1: "RW", 2: "US", 3: "PWT", 4: "PCD", 5: "A"}
_SOFT_BITS = {9: "AVL9", 10: "AVL10", 11: "AVL11"}

CR0_BITS = {0: "PE", 1: "MP", 2: "EM", 3: "TS", 4: "ET", 5: "NE", 16: "WP", 18: "AM",
            29: "NW", 30: "CD", 31: "PG"}
CR4_BITS = {0: "VME", 1: "PVI", 2: "TSD", 3: "DE", 4: "PSE", 5: "PAE", 6: "MCE", 7: "PGE",
            8: "PCE", 9: "OSFXSR", 10: "OSXMMEXCPT", 11: "UMIP", 12: "LA57", 13: "VMXE",
            14: "SMXE", 16: "FSGSBASE", 17: "PCIDE", 18: "OSXSAVE", 19: "KL", 20: "SMEP",
            21: "SMAP", 22: "PKE", 23: "CET", 24: "PKS", 25: "UINTR", 27: "LAM_SUP"}
EFER_BITS = {0: "SCE", 8: "LME", 10: "LMA", 11: "NXE", 12: "SVME", 13: "LMSLE", 14: "FFXSR",
             15: "TCE", 17: "MCOMMIT", 18: "INTWB", 20: "UAIE", 21: "AIBRSE"}
# Page-fault error code (SDM 4.7; Linux X86_PF_*; Xen PFEC_*; bit 16+ Xen-internal)
PF_BITS = {0: "P", 1: "W", 2: "U", 3: "RSVD", 4: "I", 5: "PK", 6: "SS", 7: "HLAT", 15: "SGX",
           31: "RMP"}
PF_XEN_INTERNAL = {16: "paged", 17: "shared", 18: "implicit"}

CR0_PG, CR0_WP = 1 << 31, 1 << 16
CR4_PSE, CR4_PAE, CR4_LA57, CR4_SMEP, CR4_SMAP, CR4_PKE = 1 << 4, 1 << 5, 1 << 12, 1 << 20, 1 << 21, 1 << 22
EFER_LME, EFER_LMA, EFER_NXE = 1 << 8, 1 << 10, 1 << 11

MODES = ("2level", "pae", "4level", "5level")
# Level names from the top of each mode's hierarchy down to the 4 KiB table.
LEVELS = {
    "2level": ("PD", "PT"),
    "pae": ("PDPT", "PD", "PT"),
    "4level": ("PML4", "PDPT", "PD", "PT"),
    "5level": ("PML5", "PML4", "PDPT", "PD", "PT"),
}
ENTRY_NAMES = {"PML5": "PML5E", "PML4": "PML4E", "PDPT": "PDPTE", "PD": "PDE", "PT": "PTE"}
_ENTRY_TO_LEVEL = {v: k for k, v in ENTRY_NAMES.items()}


def _bits(value, table):
    return [name for bit, name in sorted(table.items()) if value >> bit & 1]


def _check_int(value, width, what):
    if not isinstance(value, int) or value < 0 or value >> width:
        raise XenscopeError(f"{what} {value!r} does not fit in {width} bits")


def level_name(level):
    """Accept ``PTE``/``PT``/``pte`` and return the table name (``PT``)."""
    up = level.upper()
    if up in ENTRY_NAMES:
        return up
    if up in _ENTRY_TO_LEVEL:
        return _ENTRY_TO_LEVEL[up]
    raise XenscopeError(f"unknown level {level!r}: use one of PML5E PML4E PDPTE PDE PTE")


def is_large(value, mode, level, cr4=CR4_PSE):
    """True when a present entry at ``level`` maps a page (PS=1 in a PD or a 64-bit PDPT)."""
    if not value & 0x80:
        return False
    if level == "PD":
        return mode != "2level" or bool(cr4 & CR4_PSE)
    return level == "PDPT" and mode in ("4level", "5level")


def frame_mask(mode, maxphyaddr=52):
    """Mask of the physical-address bits of an entry (4 KiB-aligned)."""
    if mode == "2level":
        return 0xFFFFF000
    return ((1 << maxphyaddr) - 1) & ~0xFFF


def entry_address(value, mode, level, large=False, maxphyaddr=52):
    """Physical address an entry points at: the next table, or the page for a leaf/large page."""
    if mode == "2level":
        if large:
            # PSE-36: PDE bits 13..20 are physical address bits 32..39.
            return (value & 0xFFC00000) | ((value >> 13 & 0xFF) << 32)
        return value & 0xFFFFF000
    addr = value & frame_mask(mode, maxphyaddr)
    if large:
        size = 1 << (30 if level == "PDPT" else 21)
        addr &= ~(size - 1)
    return addr


def reserved_bits(value, mode, level, nxe=True, maxphyaddr=52, cr4=CR4_PSE):
    """Return the mask of reserved bits set in a present entry (0 when the entry is well formed).

    SDM vol. 3A §4.3-4.5 tables: bits above MAXPHYADDR, bit 63 without EFER.NXE, PS in PML4E/PML5E,
    the low bits of a large page's frame, PAE PDPTE bits 1,2,5-8 and 63.
    """
    if not value & 1:
        return 0
    large = is_large(value, mode, level, cr4)
    if mode == "2level":
        if large:
            m = min(maxphyaddr, 40)
            rsv = 1 << 21
            rsv |= ((1 << 8) - 1 << 13) & ~((1 << (13 + m - 32)) - 1)   # PSE-36 bits above MAXPHYADDR
            return value & rsv
        return 0
    rsv = ((1 << 52) - 1) & ~((1 << maxphyaddr) - 1)          # bits maxphyaddr..51
    if mode == "pae":
        rsv |= ((1 << 63) - 1) & ~((1 << maxphyaddr) - 1)      # PAE: bits maxphyaddr..62 all reserved
        if level == "PDPT":
            # bits 1, 2, 5-8 are checked only when CR3 is loaded: see cr3_load_reserved_bits()
            return value & (rsv | 1 << 63)
    if not nxe:
        rsv |= 1 << 63
    if level in ("PML5", "PML4"):
        rsv |= 0x80
    if large:
        size_bits = 30 if level == "PDPT" else 21
        rsv |= ((1 << size_bits) - 1) & ~((1 << 13) - 1)     # bits 13..size_bits-1 (bit 12 is PAT)
    return value & rsv


PAE_PDPTE_LOAD_RESERVED = 0x1E6     # bits 1, 2, 5, 6, 7, 8


def cr3_load_reserved_bits(value, mode, level):
    """Reserved bits of a PAE PDPTE that the CPU checks when CR3 is loaded, not during a walk.

    SDM vol. 3A §4.4.1: the four PDPTEs are loaded into registers by MOV CR3 and a reserved bit
    there raises #GP. A dump only shows the table in memory, so a walk goes on through them
    (QEMU's TCG walker ignores them too, and sets A, bit 5, itself in every PDPTE it uses).
    """
    if mode == "pae" and level_name(level) == "PDPT" and value & 1:
        return value & PAE_PDPTE_LOAD_RESERVED
    return 0


def decode_entry(value, mode="4level", level="PTE", nxe=True, maxphyaddr=52, cr4=CR4_PSE):
    """Decode one page-table entry.

    :param value: the raw entry (32-bit in 2-level mode, 64-bit otherwise)
    :param mode: ``2level``, ``pae``, ``4level`` or ``5level``
    :param level: ``PML5E``/``PML4E``/``PDPTE``/``PDE``/``PTE`` (or the table names)
    :return: dict with ``value``, ``present``, ``flags`` (names of set bits), ``large``, ``addr``
             (physical address it points at), ``pfn``, ``pkey`` (64-bit leaf), ``software`` (names of
             set software bits), ``reserved`` (mask of reserved bits set: a walk faults on them) and
             ``reserved_at_cr3_load`` (PAE PDPTE bits that make MOV CR3 raise #GP).
    """
    if mode not in MODES:
        raise XenscopeError(f"unknown paging mode {mode!r}: use one of {', '.join(MODES)}")
    level = level_name(level)
    if level not in LEVELS[mode]:
        raise XenscopeError(f"{ENTRY_NAMES[level]} does not exist in {mode} paging")
    _check_int(value, 32 if mode == "2level" else 64, "entry")
    large = is_large(value, mode, level, cr4)
    leaf = level == "PT" or large
    flags = _bits(value, _LOW_BITS)
    if mode == "pae" and level == "PDPT":
        flags = [f for f in flags if f in ("P", "PWT", "PCD")]
    else:
        if leaf and value & 0x40:
            flags.append("D")
        if value & 0x80:
            flags.append("PAT" if level == "PT" else ("PS" if large or level in ("PD", "PDPT") else "PS?"))
        if leaf and value & 0x100:
            flags.append("G")
        if large and mode != "2level" and value & 0x1000:
            flags.append("PAT")
        if large and mode == "2level" and value & 0x1000:
            flags.append("PAT")
    software = _bits(value, _SOFT_BITS)
    pkey = None
    if mode != "2level":
        software += [f"SW{b}" for b in range(52, 59) if value >> b & 1]
        if leaf:
            pkey = value >> 59 & 0xF
        elif value >> 59 & 0xF:
            software += [f"SW{b}" for b in range(59, 63) if value >> b & 1]
        if value >> 63 & 1:
            flags.append("XD")
    addr = entry_address(value, mode, level, large, maxphyaddr)
    return {
        "value": value,
        "mode": mode,
        "level": ENTRY_NAMES[level],
        "present": bool(value & 1),
        "flags": flags,
        "large": large,
        "leaf": leaf,
        "addr": addr,
        "pfn": addr >> 12,
        "pkey": pkey,
        "software": software,
        "reserved": reserved_bits(value, mode, level, nxe, maxphyaddr, cr4),
        "reserved_at_cr3_load": cr3_load_reserved_bits(value, mode, level),
    }


def decode_pf(error_code):
    """Decode a page-fault error code into set bit names and a sentence like Linux's oops text."""
    _check_int(error_code, 32, "error code")
    names = _bits(error_code, PF_BITS) + [f"xen:{n}" for n in _bits(error_code, PF_XEN_INTERNAL)]
    who = "user" if error_code & 4 else "supervisor"
    what = "instruction fetch" if error_code & 0x10 else ("write" if error_code & 2 else "read")
    if error_code & 8:
        why = "reserved bit violation"
    elif error_code & 0x20:
        why = "protection keys violation"
    elif error_code & (1 << 31):
        why = "RMP violation"
    elif error_code & 1:
        why = "permissions violation"
    else:
        why = "not-present page"
    if error_code & 0x40:
        what = "shadow-stack " + what
    return {"value": error_code, "flags": names,
            "text": f"{who} {what} access, {why}"}


def _decode_reg(value, table, width, name):
    _check_int(value, width, name)
    known = 0
    for bit in table:
        known |= 1 << bit
    return {"value": value, "flags": _bits(value, table), "unknown": value & ~known}


def decode_cr0(value):
    return _decode_reg(value, CR0_BITS, 64, "CR0")


def decode_cr4(value):
    return _decode_reg(value, CR4_BITS, 64, "CR4")


def decode_efer(value):
    return _decode_reg(value, EFER_BITS, 64, "EFER")


def mode_from_registers(cr0, cr4, efer):
    """Paging mode the CPU uses with these control registers, or ``None`` when paging is off."""
    if cr0 is not None and not cr0 & CR0_PG:
        return None
    cr4 = cr4 or 0
    if efer is not None and efer & (EFER_LMA | EFER_LME) and cr4 & CR4_PAE:
        return "5level" if cr4 & CR4_LA57 else "4level"
    if cr4 & CR4_PAE:
        return "pae"
    return "2level"
