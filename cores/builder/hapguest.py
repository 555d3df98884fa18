"""Machine memory of a translated (HVM/PVH) guest under HAP: the domain's P2M in either of Xen's formats,
the guest's own 4-level page tables in guest-physical space, and a few data pages. Independent of
xenstructs: the entry formats are written here from their sources.

* ``hap-npt.core``: the P2M in p2m-pt format (AMD NPT; xen/arch/x86/mm/p2m-pt.c ``p2m_type_to_flags``:
  the type in Xen's 24-bit flags bits 18..12 = entry bits 58..52; P2M_BASE_FLAGS = P|U|D|A; RW for
  ram_rw, grant_map_rw, map_foreign and writable MMIO; NX for grant/foreign and every non-present
  type; PCD on MMIO; intermediate entries P2M_BASE_FLAGS|RW; a paged-out entry holds INVALID_MFN
  clipped to 40 bits, ``p2m_l1e_from_pfn``);
* ``hap-ept.core``: the same P2M as Intel EPT (SDM vol. 3C "EPT Translation Mechanism": R/W/X bits
  0-2, memory type 5:3, ignore-PAT 6, page size 7, A/D 8/9; Xen's ``ept_entry_t``: recalc 10, snp 11,
  mfn 51:12, p2m type 57:52, access 61:58 (bit 62 reserved) up to 4.19, suppress-#VE 63;
  ``ept_p2m_type_to_flags`` for the rights; ``ept_set_middle_entry`` for intermediate entries: RWX, A,
  the default access, suppress-#VE, and every entry of a new table suppress-#VE only). The manifest
  also lists EPT words in 4.20's layout (bit 58 ``pw``, access 62:59).

Each ``.json`` says what is true: the P2M root (and EPTP), every gfn's machine frame and type, the
guest's CR0/CR3/CR4/EFER, and walks (va -> each level's table gpa and its mfn -> gpa -> mfn -> bytes).
"""

import json
import os

from .elfcore_writer import write_elf_core
from .pagetables import PhysMem

PAGE = 0x1000
P, RW, US, PWT, PCD, A, D, PS = 1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80
INVALID_MFN_40 = (1 << 40) - 1
TYPES = {"ram_rw": 0, "invalid": 1, "ram_logdirty": 2, "ram_ro": 3, "mmio_dm": 4, "mmio_direct": 5,
         "populate_on_demand": 6, "grant_map_rw": 7, "grant_map_ro": 8, "ram_paged": 10, "map_foreign": 14}
MARKER = b"XENSCOPE-HAP-MARKER"
GUEST_CR0, GUEST_CR4, GUEST_EFER = 0x80050033, 0x106F0, 0xD01
P2M_BASE = 0x100                 # mfns of the P2M tables
GUEST_SUPER_MFN = 0x1000         # gfns 0..0x1ff: one 2 MiB P2M superpage here
GUEST_4K_MFN = 0x2000            # gfns 0x200..0x23f: 4 KiB P2M entries, frames shuffled
FOREIGN_MFN = 0x3000             # what the grant and foreign entries map (another domain's frames)
RECALC_GFN = 0x212               # its leaf waits for a type recalculation (p2m-pt: U and A cleared; EPT: bit 10)


# ------------------------------------------------------------------------------------- the P2M

def _small_mfn(gfn):
    return GUEST_4K_MFN + (gfn * 37) % 64


def p2m_map():
    """``{gfn: (type, mfn or None, order)}``: the domain's P2M (order 9 = a 2 MiB superpage)."""
    m = {0: ("ram_rw", GUEST_SUPER_MFN, 9)}
    for gfn in range(0x200, 0x240):
        m[gfn] = ("ram_rw", _small_mfn(gfn), 0)
    m[0x210] = ("ram_logdirty", _small_mfn(0x210), 0)
    m[0x211] = ("ram_ro", _small_mfn(0x211), 0)
    m[0x220] = ("ram_paged", None, 0)
    m[0x221] = ("populate_on_demand", None, 0)
    m[0x300] = ("grant_map_rw", FOREIGN_MFN, 0)
    m[0x301] = ("grant_map_ro", FOREIGN_MFN + 1, 0)
    m[0x302] = ("map_foreign", FOREIGN_MFN + 2, 0)
    m[0xFEE00] = ("mmio_direct", 0xFEE00, 0)
    return m


def npt_entry(kind, mfn, leaf_level):
    """A p2m-pt entry (leaf at level 1, or a superpage at 2/3) of P2M type ``kind``."""
    t = TYPES[kind]
    flags = t << 12
    base = P | US | D | A
    nx = 1 << 23
    if kind == "ram_rw":
        flags |= base | RW
    elif kind in ("ram_logdirty", "ram_ro"):
        flags |= base
    elif kind in ("grant_map_rw", "map_foreign"):
        flags |= base | RW | nx
    elif kind == "grant_map_ro":
        flags |= base | nx
    elif kind == "mmio_direct":
        flags |= base | RW | PCD
    else:
        flags |= nx
    if leaf_level > 1:
        flags |= PS
    frame = INVALID_MFN_40 if mfn is None and kind == "ram_paged" else (mfn or 0)
    return ((flags & ~0xFFF) << 40) | (flags & 0xFFF) | frame << 12


def npt_middle(mfn):
    return P | US | D | A | RW | mfn << 12


def ept_entry(kind, mfn, leaf_level, layout="4.17"):
    """An EPT leaf of P2M type ``kind`` (access rwx, A/D on, suppress-#VE set, WB+ipat for RAM)."""
    rights = {"ram_rw": 7, "ram_logdirty": 5, "ram_ro": 5, "mmio_direct": 7, "grant_map_rw": 3,
              "grant_map_ro": 1, "map_foreign": 3}.get(kind, 0)
    emt, ipat = (0, 0) if kind == "mmio_direct" else (6, 1)
    value = rights | emt << 3 | ipat << 6
    if rights:
        value |= 1 << 8 | (1 << 9 if rights & 2 else 0)
    if leaf_level > 1:
        value |= PS
    frame = INVALID_MFN_40 if mfn is None and kind == "ram_paged" else (mfn or 0)
    access_shift = 59 if layout == "4.20" else 58
    return value | frame << 12 | TYPES[kind] << 52 | 7 << access_shift | 1 << 63


def ept_middle(mfn):
    return 7 | 1 << 8 | mfn << 12 | 7 << 58 | 1 << 63


EPT_EMPTY = 1 << 63


def build_p2m(mem, fmt):
    """Write the P2M tables into ``mem``; return the root mfn."""
    tables = {}
    empty = EPT_EMPTY if fmt == "ept" else 0
    alloc = iter(range(P2M_BASE, P2M_BASE + 64))

    def table(key, root=False):
        if key not in tables:
            mfn = next(alloc)
            fill = 0 if root else empty
            mem.add(mfn << 12, fill.to_bytes(8, "little") * 512)
            tables[key] = mfn
        return tables[key]

    def put(mfn, index, value):
        mem.write((mfn << 12) + 8 * index, value.to_bytes(8, "little"))

    root = table((4, 0), root=True)
    middle = ept_middle if fmt == "ept" else npt_middle
    leaf = ept_entry if fmt == "ept" else npt_entry
    for gfn, (kind, mfn, order) in sorted(p2m_map().items()):
        stop = 1 + order // 9
        parent = root
        for level in range(4, stop, -1):
            key = (level - 1, gfn >> (9 * (level - 1)))
            child = table(key)
            put(parent, gfn >> (9 * (level - 1)) & 0x1FF, middle(child))
            parent = child
        value = leaf(kind, mfn, stop)
        if gfn == RECALC_GFN:
            value = value | 1 << 10 if fmt == "ept" else value & ~(US | A)     # set_recalc: RECALC_FLAGS off
        put(parent, gfn >> (9 * (stop - 1)) & 0x1FF, value)
    return root


def gfn_to_mfn(gfn):
    """The truth of one gfn: ``(mfn or None, type)``."""
    m = p2m_map()
    if gfn in m and m[gfn][2] == 0:
        return m[gfn][1], m[gfn][0]
    if gfn < 0x200:
        return GUEST_SUPER_MFN + gfn, "ram_rw"
    return None, None


# ------------------------------------------------------------------------------------- the guest

GUEST_TABLE = P | RW | US | A | D
PML4_GFN, PDPT_GFN, PD_GFN, PT_GFN, PAGED_GFN = 0x201, 0x202, 0x210, 0x10, 0x220
# va -> (gfn of its page or None, what the walk meets); the guest's own tables, top down
GUEST_PAGES = {
    0x4A9000: 0x230,          # the marker (a 4 KiB P2M entry)
    0x4AA000: PAGED_GFN,      # guest maps it; the P2M says paged out
    0x4AC000: 0x300,          # a grant mapping: another domain's frame
    0x4AD000: 0x211,          # read-only RAM in the P2M
}
LARGE_VA, LARGE_GPA = 0x600000, 0x0          # a guest 2 MiB page inside the P2M's superpage
UNMAPPED_VA = 0x4AB000                       # guest PTE not present
PAGED_TABLE_VA = 0x200000000                 # PDPT[8] -> a PD in a paged-out gfn


def _mfn_of(gfn):
    mfn, _ = gfn_to_mfn(gfn)
    assert mfn is not None, hex(gfn)
    return mfn


def build_guest(mem):
    """The guest's tables (written at the machine frames their gfns map to) and data pages."""
    for gfn in (PML4_GFN, PDPT_GFN, PD_GFN, PT_GFN):
        mem.add(_mfn_of(gfn) << 12)

    def put(gfn, index, value):
        mem.write((_mfn_of(gfn) << 12) + 8 * index, value.to_bytes(8, "little"))

    put(PML4_GFN, 0, PDPT_GFN << 12 | GUEST_TABLE)
    put(PDPT_GFN, 0, PD_GFN << 12 | GUEST_TABLE)
    put(PDPT_GFN, 8, PAGED_GFN << 12 | GUEST_TABLE)
    put(PD_GFN, 2, PT_GFN << 12 | GUEST_TABLE)
    put(PD_GFN, 3, LARGE_GPA | GUEST_TABLE | PS)
    for va, gfn in GUEST_PAGES.items():
        put(PT_GFN, va >> 12 & 0x1FF, gfn << 12 | GUEST_TABLE)
    put(PT_GFN, UNMAPPED_VA >> 12 & 0x1FF, 0x231 << 12 | RW | US)        # not present
    marker = _mfn_of(0x230) << 12
    mem.add(marker, MARKER + bytes(range(256)) * 15 + bytes(PAGE - len(MARKER) - 256 * 15))
    for mfn in (GUEST_SUPER_MFN + 5, FOREIGN_MFN, _mfn_of(0x211)):
        mem.pattern(mfn << 12, 0x48)


def _walk_truth(va):
    """The expected nested walk of ``va``: levels (table gpa, its mfn and P2M type), gpa, mfn."""
    levels, table = [], PML4_GFN << 12
    names = ("PML4E", "PDPTE", "PDE", "PTE")
    tables = {0: PDPT_GFN, 1: {0: PD_GFN, 8: PAGED_GFN}, 2: PT_GFN}
    for depth, name in enumerate(names):
        mfn, kind = gfn_to_mfn(table >> 12)
        levels.append({"level": name, "table_gpa": table, "table_mfn": mfn, "table_type": kind})
        if mfn is None:
            return {"va": va, "levels": levels, "gpa": None, "stop": "not-in-dump"}
        index = va >> (39 - 9 * depth) & 0x1FF
        if depth == 0:
            table = tables[0] << 12
        elif depth == 1:
            table = tables[1][index] << 12
        elif depth == 2:
            if index == 3:
                gpa = LARGE_GPA + (va & 0x1FFFFF)
                return _page_truth(va, levels, gpa, 1 << 21)
            table = tables[2] << 12
        else:
            if va == UNMAPPED_VA:
                return {"va": va, "levels": levels, "gpa": None, "stop": "not-present"}
            return _page_truth(va, levels, GUEST_PAGES[va & ~0xFFF] << 12 | (va & 0xFFF), PAGE)
    raise AssertionError(hex(va))


def _page_truth(va, levels, gpa, size):
    mfn, kind = gfn_to_mfn(gpa >> 12)
    return {"va": va, "levels": levels, "gpa": gpa, "page_size": size, "mfn": mfn, "type": kind, "stop": None}


def write(fmt, out):
    """Write ``hap-<fmt>.core`` and its manifest into ``out``; return the file names."""
    mem = PhysMem(0)
    root = build_p2m(mem, fmt)
    build_guest(mem)
    name = f"hap-{fmt}"
    # the host CPU: on the NPT core its CR3 is the P2M root (p2m-pt tables are x86 long-mode tables, so
    # a plain walk of a gpa there is the second stage); the EPT core's CPU has no page tables (CR3 0)
    cpu = {"cr0": 0x80050033, "cr3": root << 12 if fmt == "npt" else 0, "cr4": 0x1526E0}
    write_elf_core(os.path.join(out, name + ".core"), machine="x86_64", segments=mem.segments(), cpus=[cpu])
    vas = sorted(GUEST_PAGES) + [LARGE_VA + 0x5008, UNMAPPED_VA, PAGED_TABLE_VA]
    walks = [_walk_truth(va) for va in vas]
    for w in walks:
        if w.get("mfn") is not None and mem.has(w["mfn"] << 12):
            w["bytes"] = mem.read((w["mfn"] << 12) | (w["gpa"] & 0xFFF), 32).hex()
    man = {"core": name + ".core", "format": fmt, "root_mfn": root, "recalc_gfn": RECALC_GFN,
           "guest": {"cr0": GUEST_CR0, "cr3": PML4_GFN << 12, "cr4": GUEST_CR4, "efer": GUEST_EFER},
           "marker": {"va": 0x4A9000, "gpa": 0x230 << 12, "mfn": _mfn_of(0x230), "text": MARKER.decode()},
           "p2m": [{"gfn": g, "type": k, "mfn": m, "order": o} for g, (k, m, o) in sorted(p2m_map().items())],
           "walks": walks, "memory": mem.ranges()}
    if fmt == "ept":
        man["eptp"] = root << 12 | 6 | 3 << 3 | 1 << 6
        man["ept_4_20"] = [{"raw": ept_entry(k, m, 1, "4.20"), "type": k, "access": "rwx", "pw": False}
                           for k, m, _ in (p2m_map()[0x230], p2m_map()[0x300])]
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(man, f, sort_keys=True, indent=1)
        f.write("\n")
    return [name + ".core", name + ".json"]
