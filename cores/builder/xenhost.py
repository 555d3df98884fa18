"""Synthetic Xen x86_64 hypervisor kdump cores (``xen-4.6-host.core``, ``xen-4.17-host.core``).

Independent of ``xenstructs``: every value below comes from this module's own intent (which frame is
what, which entry references what), never from a reader. Facts used: shared/reference/xen-facts.md
§1 (page_info 32 bytes: count_info @8, type_info @16, _domain u32 @24; PGT_/PGC_ layouts T1/C1 and
T3/C3; owner pickling; PDX mask compression), §2.1 (virtual layout), §3 (mm.c messages), §5.1 (notes).

Machine: 64 MiB of RAM at machine frames 0x0-0x3fff; the 4.6 core also has 16 MiB at 64 GiB
(frames 0x1000000-0x1000fff), squeezed out by PDX compression (hole bits 19..23 of the pfn, as
``pfn_pdx_hole_setup`` computes with MAX_ORDER 20 from the OR of the two RAM regions).

Reference counting (what the page_info counts mean here):
* an allocated guest frame starts with count 1 (PGC_allocated);
* a legitimate table entry (L4->L3, L3->L2, L2->L1) takes a general and a type reference on the
  table it points to (type = its level, validated);
* a legitimate L1 entry takes a general reference, and when RW also a PGT_writable_page type ref;
* pinning and each vcpu's guest_table take a general and a type reference on the L4;
* Xen's own slots (256-271) of a guest L4 take no references;
* injected (violating) entries take no references at all (Xen would have refused them).
"""

import json
import os
import struct
from dataclasses import dataclass, field

from . import xenforeign
from .elfcore_writer import write_elf_core
from .pagetables import PhysMem

PAGE = 0x1000
P, RW, US, A, D, PS, G = 1, 2, 4, 0x20, 0x40, 0x80, 0x100
NX = 1 << 63
GUEST_KERNEL = 1 << 52                      # _PAGE_GUEST_KERNEL, set by Xen on 64-bit PV kernel L1es
XEN_TABLE = P | RW | A | D                  # __PAGE_HYPERVISOR
XEN_DATA = P | RW | A | D | G | NX          # __PAGE_HYPERVISOR_RW (+ global)
GUEST_TABLE = P | RW | US | A | D           # _PAGE_TABLE (Xen adds US on 64-bit PV L2-L4)
FRAME_MASK = 0x000FFFFFFFFFF000
INVALID_M2P = (1 << 64) - 1
INVALID_P2M = (1 << 64) - 1                 # Linux INVALID_P2M_ENTRY
IDENTITY_FRAME_BIT = 1 << 62                # Linux IDENTITY_FRAME(pfn) = pfn | this bit
SHARED_M2P = (1 << 64) - 2
U64 = (1 << 64) - 1

DIRECTMAP = 0xFFFF830000000000
FRAMETABLE = 0xFFFF82E000000000
RDWR_MPT = 0xFFFF828000000000
RO_MPT = 0xFFFF800000000000
LINEAR_PT = 0xFFFF810000000000
PERDOMAIN = 0xFFFF820000000000
GUEST_DM = 0xFFFF880000000000               # PV Linux direct map (slot 272)
GUEST_KTEXT = 0xFFFFFFFF81000000            # PV Linux kernel text (slot 511)
GUEST_VMALLOC = 0xFFFFC90000000000          # PV Linux vmalloc (slot 402): dom0's P2M array
PAGE_INFO_SIZE = 32
MAX_ORDER = 20

DOMID = {"d0": 0, "d1": 1, "dom_xen": 0x7FF2, "dom_io": 0x7FF1, "dom_cow": 0x7FF3}
TYPE_NAMES = ("none", "l1", "l2", "l3", "l4", "seg_desc", "writable", "shared")
# type code per layout (§1.3)
TYPE_LAYOUT = {
    "T1": {"shift": 60, "codes": {"none": 0, "l1": 1, "l2": 2, "l3": 3, "l4": 4, "seg_desc": 5,
                                  "writable": 7, "shared": 8}},
    "T3": {"shift": 61, "codes": {"none": 0, "l1": 1, "l2": 2, "l3": 3, "l4": 4, "seg_desc": 5,
                                  "shared": 6, "writable": 7}},
}
PGT_pinned, PGT_validated, PGT_count_mask = 1 << 59, 1 << 58, (1 << 55) - 1
COUNT_LAYOUT = {
    "C1": {"state_shift": 55, "broken": 1 << 57, "count_mask": (1 << 55) - 1, "need_scrub": None},
    "C3": {"state_shift": 58, "broken": 1 << 60, "count_mask": (1 << 57) - 1, "need_scrub": 1 << 63},
}
STATES = {"inuse": 0, "offlining": 1, "offlined": 2, "free": 3}
PGC_allocated, PGC_xen_heap = 1 << 63, 1 << 62

VERSIONS = {
    "4.6": dict(version="4.6.0", major=4, minor=6, extra=".0", type="T1", count="C1",
                xen_virt_start=0xFFFF82D080000000, pdx_hole=True, line_bad_type=2359,
                compile_date="Tue Oct 13 12:00:00 UTC 2015", compiler="gcc (GCC) 4.8.5",
                domain_size=0xD00,
                domain_offsets={"domain_id": 0, "shared_info": 8, "next_in_list": 0x30,
                                "tot_pages": 0x98, "max_pages": 0xA4}),
    "4.17": dict(version="4.17.0", major=4, minor=17, extra=".0", type="T3", count="C3",
                 xen_virt_start=0xFFFF82D040000000, pdx_hole=False, line_bad_type=None,
                 compile_date="Mon Dec 12 12:00:00 UTC 2022", compiler="gcc (GCC) 12.2.0",
                 domain_size=0xF80,
                 domain_offsets={"domain_id": 0, "shared_info": 16, "next_in_list": 0x40,
                                 "tot_pages": 0x1A0, "max_pages": 0x1AC}),
}

# Xen image layout (offsets from XEN_VIRT_START / xen_phys_start); the image is one 2 MiB page
IMG_SIZE = 0x200000
TEXT_FUNCS = [  # name, offset (all inside .text, [0, 0x100000))
    ("start", 0x0), ("_start", 0x0), ("_stext", 0x0),
    ("idle_loop", 0x15A40), ("__get_page_type", 0x1E2B0), ("alloc_page_type", 0x1D870),
    ("get_page_from_l2e", 0x1B9C0), ("mod_l2_entry", 0x1C4F0), ("get_page", 0x1A110),
    ("put_page", 0x1A3D0), ("show_page_walk", 0x4C260), ("do_page_fault", 0x4E8F0),
    ("panic", 0x2F120), ("kexec_crash", 0x25C80), ("kexec_crash_save_cpu", 0x25A10),
    ("machine_crash_shutdown", 0x53E40), ("do_nmi_crash", 0x54110), ("_etext", 0x100000),
]
RODATA = 0x100000                           # page: version strings, _frame_table
DATA = 0x180000                             # page: variables
IDLE_PG_TABLE, L3_XENMAP, L2_XENMAP = 0x190000, 0x191000, 0x192000
IMG_END = 0x1C0000
DATA_VARS = [  # name, offset in the data page, size
    ("max_page", 0x00, 8), ("domain_list", 0x08, 8), ("dom_xen", 0x10, 8), ("dom_io", 0x18, 8),
    ("dom_cow", 0x20, 8), ("pfn_pdx_bottom_mask", 0x28, 8), ("ma_va_bottom_mask", 0x30, 8),
    ("pfn_top_mask", 0x38, 8), ("ma_top_mask", 0x40, 8), ("pfn_hole_mask", 0x48, 8),
    ("pfn_pdx_hole_shift", 0x50, 4), ("max_pdx", 0x58, 8), ("xen_phys_start", 0x60, 8),
    ("total_pages", 0x68, 8), ("hardware_domain", 0x70, 8),
]
RODATA_STRINGS = [("xen_extra_version", 0x100), ("xen_changeset", 0x120), ("xen_compiler", 0x180),
                  ("xen_compile_date", 0x1C0), ("xen_compile_time", 0x200)]
XEN_PHYS_START = 0x1000000                  # 16 MiB, 2 MiB aligned

XEN_STACKS = (0x1E07F58, 0x1E0FD88)         # per-CPU stack pointers (xenheap frames, kept empty)

# dom0: pfns 0-9 are its page tables (see Dom0Tables), then these pages
D0_P2M, D0_WRITABLE, D0_FRAME_LIST_LIST, D0_FRAME_LIST = 10, 11, 12, 13
D0_EXTRA = (  # dom0 pfns 64-71 (frames 0x2040..; the P2M faults), why each is odd; pfn 69 is non-RAM
    (64, "M2P entry stale: says pfn 0x41"), (65, None),
    (66, "P2M entry bit 36 flipped: beyond max_page; M2P orphan"), (67, None),
    (68, "P2M entry overwritten with pfn 0x43's: M2P orphan"),
    (70, "P2M entry overwritten with INVALID: M2P orphan"), (71, None))
D1_P2M = 7                                  # d1's P2M array page
MAX_PAGES = {"d0": 256, "d1": 64, "dom_xen": 0, "dom_io": 0, "dom_cow": 0}
FREE_FRAME = {"owner": None, "xen_heap": False, "allocated": False, "gen": 0, "type": "none",
              "tcount": 0, "validated": False, "pinned": False, "state": "free", "broken": False,
              "m2p": INVALID_M2P}


def _hole_setup(mask):
    """pfn_pdx_hole_setup() (xen/common/pdx.c): largest run of zero bits above MAX_ORDER-1."""
    hole = bottom = 0
    j = MAX_ORDER - 1
    while True:
        i = j
        while i < 64 and mask >> i & 1:
            i += 1
        j = i
        while j < 64 and not mask >> j & 1:
            j += 1
        if j >= 64:
            break
        if j - i > hole:
            hole, bottom = j - i, i
    if not hole:
        return None
    bottom_mask = (1 << bottom) - 1
    hole_mask = ((1 << hole) - 1) << bottom
    top = U64 & ~(bottom_mask | hole_mask)
    return {"hole_shift": hole, "bottom_mask": bottom_mask, "top_mask": top, "hole_mask": hole_mask,
            "ma_va_bottom_mask": (PAGE << bottom) - 1, "ma_top_mask": (top << 12) & U64,
            "bits": [bottom, bottom + hole - 1]}


def _region_mask(base, n):
    """pdx_region_mask() in pfn units: base | fill_mask(base ^ (end - 1))."""
    differing = base ^ (base + n - 1)
    fill = (1 << differing.bit_length()) - 1
    return base | fill


class Host:
    def __init__(self, key):
        self.key = key
        self.cfg = VERSIONS[key]
        self.type_layout = TYPE_LAYOUT[self.cfg["type"]]
        self.count_layout = COUNT_LAYOUT[self.cfg["count"]]
        self.mem = PhysMem(0)
        self.ram = [(0, 0x4000)] + ([(0x1000000, 0x1000)] if self.cfg["pdx_hole"] else [])
        self.max_page = max(base + count for base, count in self.ram)
        if self.cfg["pdx_hole"]:
            mask = 0
            for base, count in self.ram:
                mask |= _region_mask(base, count)
            self.pdx = _hole_setup(mask)
            assert self.pdx and self.pdx["hole_shift"] == 5 and self.pdx["bits"] == [19, 23], self.pdx
        else:
            self.pdx = None
        self.frames = {}                    # mfn -> dict (every claimed = non-free frame)
        self.virt_start = self.cfg["xen_virt_start"]
        self.idle = None                    # idle_pg_table's mfn (set with the image)
        self.domains = {}                   # name -> {"maddr", "va"} of its struct domain
        self.xen_pool = iter(range(0x1400, 0x1600))       # Xen's boot-allocated page tables
        self.heap_pool = iter(range(0x1C00, 0x1D00))      # xenheap (domain structs, shared_info)

    # -- machine frames -------------------------------------------------------------------------
    def is_ram(self, mfn):
        return any(base <= mfn < base + count for base, count in self.ram)

    def pfn_to_pdx(self, pfn):
        if not self.pdx:
            return pfn
        return (pfn & self.pdx["bottom_mask"]) | ((pfn & self.pdx["top_mask"]) >> self.pdx["hole_shift"])

    def directmap_offset(self, ma):
        if not self.pdx:
            return ma
        return ((ma & self.pdx["ma_top_mask"]) >> self.pdx["hole_shift"]) | (ma & self.pdx["ma_va_bottom_mask"])

    def directmap_va(self, ma):
        return DIRECTMAP + self.directmap_offset(ma)

    def claim(self, mfn, role, owner=None, xen_heap=False, allocated=None, state="inuse", write=False):
        assert self.is_ram(mfn) and mfn not in self.frames, hex(mfn)
        self.frames[mfn] = {"role": role, "owner": owner, "xen_heap": xen_heap,
                            "allocated": owner is not None if allocated is None else allocated,
                            "gen": 0, "type": "none", "tcount": 0, "validated": False, "pinned": False,
                            "state": state, "broken": False, "m2p": INVALID_M2P}
        if owner is not None and self.frames[mfn]["allocated"]:
            self.frames[mfn]["gen"] = 1
        if write:
            self.page(mfn)
        return mfn

    def page(self, mfn):
        if mfn not in self.mem.pages:
            self.mem.add(mfn << 12)
        return self.mem.pages[mfn]

    def write_u64(self, ma, value):
        self.page(ma >> 12)
        self.mem.write(ma, (value & U64).to_bytes(8, "little"))

    def read_u64(self, ma):
        raw = self.mem.read(ma, 8)
        return None if raw is None else int.from_bytes(raw, "little")

    def ref(self, mfn, typ=None, legit=True):
        """Take a general reference and, with ``typ``, a type reference (validated)."""
        if not legit:
            return
        frame = self.frames[mfn]
        frame["gen"] += 1
        if typ is not None:
            assert frame["tcount"] == 0 or frame["type"] == typ, (hex(mfn), frame["type"], typ)
            frame["type"] = typ
            frame["tcount"] += 1
            frame["validated"] = True

    def share(self, mfn, owner, writable):
        """share_xen_page_with_guest(): PGC_allocated|1, type writable/none |validated|1."""
        self.frames[mfn].update(owner=owner, allocated=True, gen=1, type="writable" if writable else "none",
                                tcount=1, validated=True)

    # -- page tables ------------------------------------------------------------------------------
    def set_entry(self, table_mfn, index, value):
        assert 0 <= index < 512
        self.write_u64((table_mfn << 12) + index * 8, value)

    def get_entry(self, table_mfn, index):
        return self.read_u64((table_mfn << 12) + index * 8)

    @staticmethod
    def idx(va, level):
        return va >> (12 + 9 * (level - 1)) & 511

    def xen_table(self):
        return self.claim(next(self.xen_pool), "xen page table (boot allocator)", write=True)

    def xen_path(self, va, level):
        """Table (mfn) holding the ``level`` entry for ``va`` in idle_pg_table; creates
        intermediate tables from Xen's pool with __PAGE_HYPERVISOR."""
        table = self.idle
        for upper in range(4, level, -1):
            entry = self.get_entry(table, self.idx(va, upper))
            if not entry & P:
                new_table = self.xen_table()
                self.set_entry(table, self.idx(va, upper), (new_table << 12) | XEN_TABLE)
                table = new_table
            else:
                assert not entry & PS
                table = (entry & FRAME_MASK) >> 12
        return table

    def xen_map(self, va, ma, size, flags):
        level = {PAGE: 1, 1 << 21: 2}[size]
        table = self.xen_path(va, level)
        assert not self.get_entry(table, self.idx(va, level)) & P, hex(va)
        self.set_entry(table, self.idx(va, level), ma | flags | (PS if level == 2 else 0))
        return table

    def walk(self, root_mfn, va):
        """The CPU's 4-level walk over this builder's memory."""
        table_ma = root_mfn << 12
        for level in (4, 3, 2, 1):
            entry = self.read_u64(table_ma + self.idx(va, level) * 8)
            name = f"L{level}"
            if entry is None:
                return {"va": va, "ma": None, "stop": "not-in-dump", "level": name, "page_size": None}
            if not entry & P:
                return {"va": va, "ma": None, "stop": "not-present", "level": name, "page_size": None}
            frame = entry & FRAME_MASK
            if level in (2, 3) and entry & PS:
                size = 1 << (12 + 9 * (level - 1))
                return {"va": va, "ma": (frame & ~(size - 1)) + (va & (size - 1)), "stop": None,
                        "level": name, "page_size": size}
            if level == 1:
                return {"va": va, "ma": frame + (va & 0xFFF), "stop": None, "level": name,
                        "page_size": PAGE}
            table_ma = frame
        raise AssertionError

    # -- encodings ----------------------------------------------------------------------------------
    def type_info(self, frame):
        if frame["state"] == "free":
            return 0
        value = self.type_layout["codes"][frame["type"]] << self.type_layout["shift"]
        value |= (PGT_pinned if frame["pinned"] else 0) | (PGT_validated if frame["validated"] else 0)
        assert frame["tcount"] <= PGT_count_mask
        return value | frame["tcount"]

    def count_info(self, frame):
        value = STATES[frame["state"]] << self.count_layout["state_shift"]
        value |= (PGC_allocated if frame["allocated"] else 0) | (PGC_xen_heap if frame["xen_heap"] else 0)
        value |= self.count_layout["broken"] if frame["broken"] else 0
        if frame.get("need_scrub"):
            value |= self.count_layout["need_scrub"]
        assert frame["gen"] <= self.count_layout["count_mask"]
        return value | frame["gen"]

    def pickled(self, name):
        return self.directmap_offset(self.domains[name]["maddr"]) >> 12

    def type_bits(self, typ):
        return self.type_layout["codes"][typ] << self.type_layout["shift"]


# =================================================================================================
class Guest:
    """A 64-bit PV guest: frames, P2M, page tables with machine frame numbers."""

    def __init__(self, host, name, npfn, mfn_of, vcpus, missing=()):
        self.host, self.name, self.npfn, self.vcpus = host, name, npfn, vcpus
        self.p2m = {}
        for pfn in range(npfn):
            if pfn in missing:
                continue
            mfn = mfn_of(pfn)
            host.claim(mfn, f"{name} pfn {pfn:#x}", owner=name)
            host.frames[mfn]["m2p"] = pfn
            self.p2m[pfn] = mfn
        self.tables = {}
        self.l4 = None                      # set by pin_and_run

    def mfn(self, pfn):
        return self.p2m[pfn]

    def table(self, pfn, level):
        mfn = self.mfn(pfn)
        self.host.page(mfn)
        self.tables[mfn] = level
        self.host.frames[mfn]["role"] += f" (L{level})"
        return mfn

    def link(self, parent, index, child, flags=GUEST_TABLE, legit=True):
        """parent[index] -> child as a next-level table."""
        self.host.set_entry(parent, index, (child << 12) | flags)
        self.host.ref(child, f"l{self.tables[parent] - 1}", legit)

    def link_path(self, l4, indices, l3, l2, l1):
        """l4[i4] -> l3, l3[i3] -> l2, l2[i2] -> l1 for ``indices`` (i4, i3, i2): legitimate entries."""
        i4, i3, i2 = indices
        self.link(l4, i4, l3)
        self.link(l3, i3, l2)
        self.link(l2, i2, l1)

    def map(self, l1, index, target, rw, user=False, legit=True):
        flags = P | US | A | (RW | D if rw else 0) | (0 if user else GUEST_KERNEL)
        self.host.set_entry(l1, index, (target << 12) | flags)
        self.host.ref(target, "writable" if rw else None, legit)
        return (target << 12) | flags

    def xen_slots(self, l4, perdomain_l3):
        """init_xen_l4_slots / init_guest_l4_table: slots 256..271 copied from idle_pg_table, then
        258 = linear self map, 260 = per-domain L3 (no references taken)."""
        host = self.host
        for slot in range(256, 272):
            host.set_entry(l4, slot, host.get_entry(host.idle, slot))
        host.set_entry(l4, 258, (l4 << 12) | XEN_TABLE)
        host.set_entry(l4, 260, (perdomain_l3 << 12) | XEN_TABLE)

    def pin_and_run(self, l4):
        self.host.ref(l4, "l4")             # MMUEXT_PIN_L4_TABLE
        self.host.frames[l4]["pinned"] = True
        for _ in range(self.vcpus):         # each vcpu's arch.guest_table
            self.host.ref(l4, "l4")
        self.l4 = l4


def _directmap_indices(host):
    return (host.idx(GUEST_DM, 4), 0, 0)


def _kernel_text_indices(host):
    return (host.idx(GUEST_KTEXT, 4), host.idx(GUEST_KTEXT, 3), host.idx(GUEST_KTEXT, 2))


@dataclass
class Dom0Tables:
    """dom0's page tables (mfns; its pfns 0-9): the L4 and one L3-L2-L1 path each for the direct map
    (GUEST_DM), the kernel text (GUEST_KTEXT) and vmalloc (GUEST_VMALLOC: the P2M array)."""
    l4: int
    l3_directmap: int
    l2_directmap: int
    l1_directmap: int
    l3_text: int
    l2_text: int
    l1_text: int
    l3_vmalloc: int
    l2_vmalloc: int
    l1_vmalloc: int


@dataclass
class HostDump:
    """What the steps of :func:`build` hand on to each other and to :func:`write`, filled in step by
    step (each field says which step sets it)."""
    key: str
    host: Host
    frame_table_backing: dict = field(default_factory=dict)   # frame table: page index -> mfn
    m2p_backing: dict = field(default_factory=dict)           # M2P: page index -> mfn
    perdomain_l3: dict = field(default_factory=dict)          # xen heap: "d0"/"d1" -> mfn
    shared_info: dict = field(default_factory=dict)           # xen heap: "d0"/"d1" -> mfn
    cow_mfn: int = None                                       # dom_cow
    dom0: Guest = None                                        # guests
    domu: Guest = None
    dom0_extra: dict = field(default_factory=dict)            # guests: dom0 pfn 64-71 -> mfn
    dom0_tables: Dom0Tables = None                            # dom0 tables
    foreign_p2m_mfn: int = None                               # injected violations: d1 frames
    foreign_ref_mfn: int = None
    table_mapped_rw_entry: int = None                         # ... and the L1 entries written
    foreign_ref_entry: int = None
    domu_l1_user: int = None                                  # d1's user L1 (0x400000)
    foreign: dict = None                                      # ... d1's foreign references (xenforeign)
    dom0_p2m: list = None                                     # dom0 P2M: the list's entries
    p2m_faults: list = None                                   # ... what a check must report
    free_chunks: list = None                                  # free frames: (mfn, order, need_scrub)
    tot_pages: dict = None                                    # domain structs
    values: dict = None                                       # Xen variables: what they hold
    symbols: dict = field(default_factory=dict)               # ... name -> Xen virtual address
    string_maddr: dict = field(default_factory=dict)          # ... rodata string -> machine address
    map_types: dict = None                                    # ... System.map type letters
    vmcoreinfo_symbols: dict = None                           # VMCOREINFO_XEN
    vmcoreinfo_lines: list = None
    vmcoreinfo_text: str = None
    frames: list = None                                       # frame truth: every non-free frame
    census: dict = None
    free_frames: int = None
    free_ranges: list = None
    violations: list = None                                   # violation records
    informational: list = None                                # ... legitimate foreign references
    frame_table_fault: int = None                             # walks: the VA Xen faults on
    walks: list = None
    guest_walks: list = None
    cpus: list = None                                         # crash notes
    crash_info: bytes = None

    def per_cpu_notes(self, cpu, regs):
        notes = [("Xen", 0x1000002, struct.pack("<4Q", regs["cr0"], regs["cr2"], regs["cr3"], regs["cr4"]))]
        if cpu == 0:
            notes.append(("Xen", 0x1000001, self.crash_info))
        return notes


# =================================================================================================
# build(): the steps, in the order they touch memory and frames
def _xen_image(dump):
    """Xen's image: one 2 MiB page (frames anonymous, not heap) holding ud2 text, idle_pg_table
    (with its linear slot 258) and the l3/l2_xenmap tables that map the image itself."""
    host, image = dump.host, XEN_PHYS_START
    for mfn in range(image >> 12, (image + IMG_SIZE) >> 12):
        host.claim(mfn, "xen image")
    host.idle = (image + IDLE_PG_TABLE) >> 12
    for offset in (0, RODATA, DATA, IDLE_PG_TABLE, L3_XENMAP, L2_XENMAP):
        host.page((image + offset) >> 12)
    host.page(image >> 12)[:] = bytes([0x0F, 0x0B] * (PAGE // 2))    # ud2 ...
    host.set_entry(host.idle, 261, (image + L3_XENMAP) | XEN_TABLE)
    host.set_entry((image + L3_XENMAP) >> 12, host.idx(host.virt_start, 3), (image + L2_XENMAP) | XEN_TABLE)
    host.xen_map(host.virt_start, image, 1 << 21, P | RW | A | D | G)  # RWX 2 MiB (4.6-style)
    host.set_entry(host.idle, 258, (host.idle << 12) | XEN_TABLE)      # LINEAR_PT: self map


def _direct_map(dump):
    """2 MiB pages over all RAM."""
    host = dump.host
    for base, count in host.ram:
        for ma in range(base << 12, (base + count) << 12, 1 << 21):
            host.xen_map(host.directmap_va(ma), ma, 1 << 21, XEN_DATA)


def _frame_table(dump):
    """The frame table (indexed by pdx): 4 KiB pages, backing frames from the boot allocator."""
    host = dump.host
    pool = iter(range(0x1800, 0x1900))
    pages = sorted({host.pfn_to_pdx(mfn) * PAGE_INFO_SIZE >> 12
                    for base, count in host.ram for mfn in range(base, base + count)})
    for page in pages:
        mfn = host.claim(next(pool), "frame table", write=True)
        dump.frame_table_backing[page] = mfn
        host.xen_map(FRAMETABLE + (page << 12), mfn << 12, PAGE, XEN_DATA)


def _m2p(dump):
    """The M2P (indexed by mfn, all ~0 for now): RW view (slot 261), RO view (slot 256) sharing the L1s."""
    host = dump.host
    pool = iter(range(0x1A00, 0x1B00))
    pages = sorted({mfn * 8 >> 12 for base, count in host.ram for mfn in range(base, base + count)})
    for page in pages:
        mfn = host.claim(next(pool), "M2P")
        dump.m2p_backing[page] = mfn
        host.page(mfn)[:] = b"\xff" * PAGE
        host.xen_map(RDWR_MPT + (page << 12), mfn << 12, PAGE, P | RW | US | A | D | G | NX)
    assert all(page >> 18 == 0 for page in pages)          # all in the first GiB of the M2P
    ro_l3, ro_l2 = host.xen_table(), host.xen_table()
    host.set_entry(host.idle, 256, (ro_l3 << 12) | P | US | A)  # RO, user (guest-visible)
    host.set_entry(ro_l3, 0, (ro_l2 << 12) | P | US | A)
    rw_l2 = host.xen_path(RDWR_MPT, 2)
    for index in range(512):                               # RO L2 entries -> the RW view's L1s
        entry = host.get_entry(rw_l2, index)
        if entry & P:
            host.set_entry(ro_l2, index, (entry & FRAME_MASK) | P | US | A)


def _xen_heap(dump):
    """struct domain pages, per-domain L3s, shared_info pages, a trace buffer, stacks (xenheap); the
    M2P shared read-only with dom_xen; the first MiB owned by dom_io."""
    host = dump.host
    for name in ("dom_xen", "dom_io", "dom_cow", "d0", "d1"):
        mfn = host.claim(next(host.heap_pool), f"struct domain {name}", xen_heap=True, write=True)
        host.domains[name] = {"maddr": mfn << 12, "va": host.directmap_va(mfn << 12)}
    dump.perdomain_l3 = {name: host.claim(next(host.heap_pool), f"per-domain L3 {name}", write=True)
                         for name in ("d0", "d1")}
    for name in ("d0", "d1"):
        mfn = host.claim(next(host.heap_pool), f"shared_info {name}", xen_heap=True, write=True)
        host.share(mfn, name, writable=True)
        dump.shared_info[name] = mfn
    trace_buffer = host.claim(next(host.heap_pool), "xenheap page shared with dom_xen (trace buffer)",
                              xen_heap=True, write=True)
    host.share(trace_buffer, "dom_xen", writable=True)
    for mfn in dump.m2p_backing.values():
        host.share(mfn, "dom_xen", writable=False)
    for mfn in range(0, 0x100):
        host.claim(mfn, "legacy I/O (first MiB)")
        host.share(mfn, "dom_io", writable=True)
    for cpu, stack_pointer in enumerate(XEN_STACKS):
        host.claim(stack_pointer >> 12, f"xen stack cpu{cpu}", xen_heap=True, write=True)


def _dom_cow(dump):
    """dom_cow: one mem-sharing shared page."""
    host = dump.host
    dump.cow_mfn = 0x1000800 if host.cfg["pdx_hole"] else 0x3C00
    host.claim(dump.cow_mfn, "mem-sharing shared page", owner="dom_cow")
    host.frames[dump.cow_mfn].update(type="shared", tcount=1, validated=True, m2p=SHARED_M2P)


def _guests(dump):
    """dom0 (2 vcpus, 64 pfns; pfn 60 is a foreign frame in its P2M; pfns 64-71 for the P2M faults)
    and domU d1 (1 vcpu, 32 pfns): their frames, with the M2P's pfn."""
    host = dump.host
    dump.dom0 = Guest(host, "d0", 64, lambda pfn: 0x2000 + (pfn * 37 + 11) % 64, vcpus=2, missing=(60,))
    for i, (pfn, oddity) in enumerate(D0_EXTRA):
        mfn = host.claim(0x2040 + i, f"d0 pfn {pfn:#x}" + (f" ({oddity})" if oddity else ""), owner="d0")
        host.frames[mfn]["m2p"] = pfn
        dump.dom0_extra[pfn] = mfn
    high = 0x1000000 if host.cfg["pdx_hole"] else 0x3000
    dump.domu = Guest(host, "d1", 32, lambda pfn: high + (pfn * 13 + 5) % 32, vcpus=1)


def _dom0_tables(dump):
    """dom0's page tables: direct map of its pfns (tables and pfns 16-23 read-only, 56-59 unmapped),
    kernel text (pfns 16-23), vmalloc (the P2M array page); pinned, one guest_table per vcpu."""
    host, dom0 = dump.host, dump.dom0
    tables = dump.dom0_tables = Dom0Tables(
        l4=dom0.table(0, 4), l3_directmap=dom0.table(1, 3), l2_directmap=dom0.table(2, 2),
        l1_directmap=dom0.table(3, 1), l3_text=dom0.table(4, 3), l2_text=dom0.table(5, 2),
        l1_text=dom0.table(6, 1), l3_vmalloc=dom0.table(7, 3), l2_vmalloc=dom0.table(8, 2),
        l1_vmalloc=dom0.table(9, 1))
    table_pfns = set(range(10))
    for pfn in (D0_P2M, D0_WRITABLE, D0_FRAME_LIST_LIST, D0_FRAME_LIST, 14):
        host.page(dom0.mfn(pfn))
    dom0.xen_slots(tables.l4, dump.perdomain_l3["d0"])
    dom0.link_path(tables.l4, _directmap_indices(host),
                   tables.l3_directmap, tables.l2_directmap, tables.l1_directmap)
    dom0.link_path(tables.l4, _kernel_text_indices(host), tables.l3_text, tables.l2_text, tables.l1_text)
    dom0.link_path(tables.l4, (host.idx(GUEST_VMALLOC, 4), 0, 0),
                   tables.l3_vmalloc, tables.l2_vmalloc, tables.l1_vmalloc)
    for pfn in range(64):
        if pfn in dom0.p2m and not 56 <= pfn <= 59:
            dom0.map(tables.l1_directmap, pfn, dom0.mfn(pfn),
                     rw=pfn not in table_pfns and not 16 <= pfn <= 23)
    for index, pfn in enumerate(range(16, 24)):
        dom0.map(tables.l1_text, index, dom0.mfn(pfn), rw=False)
    dom0.map(tables.l1_vmalloc, 0, dom0.mfn(D0_P2M), rw=True)
    dom0.pin_and_run(tables.l4)


def _domu_tables(dump):
    """d1's page tables (direct map, kernel text, a user process at 0x400000), its P2M array, and
    one frame being offlined."""
    host, domu = dump.host, dump.domu
    l4 = domu.table(0, 4)
    l3_directmap, l2_directmap, l1_directmap = domu.table(1, 3), domu.table(2, 2), domu.table(3, 1)
    l3_text, l2_text, l1_text = domu.table(4, 3), domu.table(5, 2), domu.table(6, 1)
    l3_user, l2_user, l1_user = domu.table(12, 3), domu.table(13, 2), domu.table(14, 1)
    table_pfns = {0, 1, 2, 3, 4, 5, 6, 12, 13, 14}
    host.page(domu.mfn(D1_P2M))
    domu.xen_slots(l4, dump.perdomain_l3["d1"])
    domu.link_path(l4, _directmap_indices(host), l3_directmap, l2_directmap, l1_directmap)
    domu.link_path(l4, _kernel_text_indices(host), l3_text, l2_text, l1_text)
    domu.link_path(l4, (0, 0, 2), l3_user, l2_user, l1_user)                # 0x400000
    for pfn in range(32):
        domu.map(l1_directmap, pfn, domu.mfn(pfn),
                 rw=pfn not in table_pfns and not 8 <= pfn <= 11 and pfn != 15)
    for index, pfn in enumerate(range(8, 12)):
        domu.map(l1_text, index, domu.mfn(pfn), rw=False)
    domu.map(l1_user, 0, domu.mfn(15), rw=False, user=True)
    domu.map(l1_user, 1, domu.mfn(16), rw=True, user=True)
    domu.map(l1_user, 2, domu.mfn(17), rw=True, user=True)
    dump.domu_l1_user = l1_user
    domu.pin_and_run(l4)
    host.frames[domu.mfn(30)]["state"] = "offlining"
    for pfn in range(domu.npfn):                                # domU P2M array
        host.write_u64((domu.mfn(D1_P2M) << 12) + pfn * 8, domu.mfn(pfn))


def _inject_violations(dump):
    """dom0's violating entries (no references taken: Xen would have refused them)."""
    dom0, tables = dump.dom0, dump.dom0_tables
    dump.foreign_p2m_mfn = dump.domu.mfn(20)
    dump.foreign_ref_mfn = dump.domu.mfn(21)
    # writable-as-table: a writable page (type count 1) referenced by L2_dm[1] as an L1 table (RW entry)
    dom0.link(tables.l2_directmap, 1, dom0.mfn(D0_WRITABLE), legit=False)
    # linear-rw: L2_v[390] -> L2_dm (an L2 page): linear p.t. with write perms
    dom0.link(tables.l2_vmalloc, 390, tables.l2_directmap, legit=False)
    # table-mapped-rw: L1_v[2] maps L1_k (an L1 table) read-write
    dump.table_mapped_rw_entry = dom0.map(tables.l1_vmalloc, 2, tables.l1_text, rw=True, legit=False)
    # foreign-reference by a privileged domain (informational): L1_v[1] maps a domU frame (read-only)
    dump.foreign_ref_entry = dom0.map(tables.l1_vmalloc, 1, dump.foreign_ref_mfn, rw=False, legit=False)
    # foreign-reference by d1 (unprivileged, no grant); 4.17: a granted one; privilege, grant tables
    xenforeign.inject(dump, dump.domu_l1_user)
    xenforeign.write_domains(dump)


def _dom0_p2m(dump):
    """dom0's P2M list (Linux entry encoding): pfn 60 -> a domU frame (foreign-p2m), the other pfns
    < 64 -> dom0's own frames, then one fault of every class of a P2M/M2P cross-check (pfns 64-73);
    and its 3-level frame list (crash: CRASH_INFO dom0_pfn_to_mfn_frame_list_list)."""
    host, dom0, extra = dump.host, dump.dom0, dump.dom0_extra
    p2m = [dom0.p2m.get(pfn, dump.foreign_p2m_mfn) for pfn in range(64)]
    host.frames[extra[64]]["m2p"] = 65          # mismatch: P2M[64] -> x64, whose M2P says 65 (-> x65)
    beyond = extra[66] ^ (1 << 36)              # beyond-max: a bit flip, mfn >= max_page
    assert beyond >= host.max_page
    p2m += [extra[64], extra[65], beyond,
            extra[67], extra[67],               # duplicate: P2M[68] names pfn 67's frame too
            IDENTITY_FRAME_BIT | 69,            # identity: non-RAM 1:1 pfn (informational)
            INVALID_P2M,                        # invalid-in-range: below pfn 71, a dom0 frame
            extra[71],
            INVALID_P2M, INVALID_P2M]           # trailing INVALID (as Linux pads the list): no finding
    for pfn, entry in enumerate(p2m):
        host.write_u64((dom0.mfn(D0_P2M) << 12) + pfn * 8, entry)
    dump.dom0_p2m = p2m
    dump.p2m_faults = [  # what a P2M <-> M2P check must report for the whole list (pfn, mfn, other)
        ("foreign", 60, dump.foreign_p2m_mfn, host.pickled("d1")),   # other: raw owner of the frame
        ("mismatch", 64, extra[64], 65),                               # other: the M2P's pfn
        ("beyond-max", 66, beyond, host.max_page),                     # other: max_page
        ("duplicate", 67, extra[67], 2), ("duplicate", 68, extra[67], 2),  # other: pfns sharing the mfn
        ("identity", 69, 69, IDENTITY_FRAME_BIT | 69),                 # other: the raw entry
        ("invalid-in-range", 70, INVALID_P2M, 72),                     # other: end of the populated range
        ("m2p-orphan", 66, extra[66], beyond),                         # pfn: the frame's M2P; other: P2M[pfn]
        ("m2p-orphan", 68, extra[68], extra[67]),
        ("m2p-orphan", 70, extra[70], INVALID_P2M),
    ]
    host.write_u64(dom0.mfn(D0_FRAME_LIST_LIST) << 12, dom0.mfn(D0_FRAME_LIST))
    host.write_u64(dom0.mfn(D0_FRAME_LIST) << 12, dom0.mfn(D0_P2M))


def _guest_data(dump):
    """The writable page's contents (pattern words with bit 0 clear, so as PTEs they are not
    present) and each guest's shared_info.arch."""
    host, dom0 = dump.host, dump.dom0
    writable_ma = dom0.mfn(D0_WRITABLE) << 12
    for offset in range(0, PAGE, 8):
        host.write_u64(writable_ma + offset, (0x5E << 56) | (0x0D << 48) | (writable_ma + offset))
    for name, guest in (("d0", dom0), ("d1", dump.domu)):
        arch = dump.shared_info[name] << 12
        host.write_u64(arch + 0xC10, len(dump.dom0_p2m) if name == "d0" else guest.npfn)  # max_pfn
        host.write_u64(arch + 0xC18, dom0.mfn(D0_FRAME_LIST_LIST) if name == "d0" else 0)  # frame_list_list
        if name == "d0":
            host.write_u64(arch + 0xC28, dump.dom0_tables.l4 << 12)              # p2m_cr3
            host.write_u64(arch + 0xC30, GUEST_VMALLOC)                          # p2m_vaddr


def _free_runs(host):
    """Runs [first, end, need_scrub] of unclaimed frames (4.17: 0x3800-0x38ff need scrubbing)."""
    runs = []
    for base, count in host.ram:
        run = None
        for mfn in range(base, base + count):
            if mfn in host.frames:
                run = None
                continue
            scrub = host.cfg["count"] == "C3" and 0x3800 <= mfn < 0x3900
            if run and run[2] == scrub and run[1] == mfn:
                run[1] += 1
            else:
                run = [mfn, mfn + 1, scrub]
                runs.append(run)
    return runs


def _offlined_and_free(dump):
    """Two offlined frames (one broken); every frame still unclaimed is free, in buddy chunks."""
    host = dump.host
    host.claim(0x3F00, "offlined", state="offlined")
    host.claim(0x3F01, "offlined (broken)", state="offlined")
    host.frames[0x3F01]["broken"] = True
    chunks = []
    for first, end, scrub in _free_runs(host):
        while first < end:
            order = 0
            while order < MAX_ORDER and first % (2 << order) == 0 and first + (2 << order) <= end:
                order += 1
            chunks.append((first, order, scrub))
            first += 1 << order
    dump.free_chunks = chunks


def _domain_structs(dump):
    """struct domain contents (invented offsets): id, shared_info, page counts, domain_list links."""
    host, offsets = dump.host, dump.host.cfg["domain_offsets"]
    owned = {name: 0 for name in DOMID}
    for frame in host.frames.values():
        if frame["owner"] and not frame["xen_heap"]:
            owned[frame["owner"]] += 1
    dump.tot_pages = {name: (owned[name] if name in ("d0", "d1") else 0) for name in DOMID}
    for name, domain in host.domains.items():
        ma = domain["maddr"]
        host.mem.write(ma + offsets["domain_id"], struct.pack("<H", DOMID[name]))
        if name in dump.shared_info:
            host.write_u64(ma + offsets["shared_info"], host.directmap_va(dump.shared_info[name] << 12))
        host.mem.write(ma + offsets["tot_pages"], struct.pack("<I", dump.tot_pages[name]))
        host.mem.write(ma + offsets["max_pages"], struct.pack("<I", MAX_PAGES[name]))
    host.write_u64(host.domains["d0"]["maddr"] + offsets["next_in_list"], host.domains["d1"]["va"])
    host.write_u64(host.domains["d1"]["maddr"] + offsets["next_in_list"], 0)


def _xen_variables(dump):
    """Xen's variables (.data), version strings (.rodata), _frame_table and the image's symbols."""
    host, cfg, image, virt = dump.host, dump.host.cfg, XEN_PHYS_START, dump.host.virt_start
    pdx = host.pdx or {"hole_shift": 0, "bottom_mask": U64, "top_mask": 0, "hole_mask": 0,
                       "ma_va_bottom_mask": U64, "ma_top_mask": 0}
    dump.values = {
        "max_page": host.max_page, "domain_list": host.domains["d0"]["va"],
        "dom_xen": host.domains["dom_xen"]["va"], "dom_io": host.domains["dom_io"]["va"],
        "dom_cow": host.domains["dom_cow"]["va"], "pfn_pdx_bottom_mask": pdx["bottom_mask"],
        "ma_va_bottom_mask": pdx["ma_va_bottom_mask"], "pfn_top_mask": pdx["top_mask"],
        "ma_top_mask": pdx["ma_top_mask"], "pfn_hole_mask": pdx["hole_mask"],
        "pfn_pdx_hole_shift": pdx["hole_shift"], "max_pdx": host.pfn_to_pdx(host.max_page - 1) + 1,
        "xen_phys_start": XEN_PHYS_START, "total_pages": sum(count for _, count in host.ram),
        "hardware_domain": host.domains["d0"]["va"]}
    for name, offset, size in DATA_VARS:
        host.mem.write(image + DATA + offset, dump.values[name].to_bytes(size, "little"))
        dump.symbols[name] = virt + DATA + offset
    strings = {"xen_extra_version": cfg["extra"], "xen_changeset": "unavailable",
               "xen_compiler": cfg["compiler"], "xen_compile_date": cfg["compile_date"],
               "xen_compile_time": cfg["compile_date"].split()[3]}
    for name, offset in RODATA_STRINGS:
        host.mem.write(image + RODATA + offset, strings[name].encode() + b"\0")
        dump.string_maddr[name] = image + RODATA + offset
    host.write_u64(image + RODATA, FRAMETABLE)                       # static const _frame_table
    dump.symbols["_frame_table"] = virt + RODATA
    for name, offset in TEXT_FUNCS:
        dump.symbols[name] = virt + offset
    dump.symbols.update(idle_pg_table=virt + IDLE_PG_TABLE, l3_xenmap=virt + L3_XENMAP,
                        l2_xenmap=virt + L2_XENMAP, _end=virt + IMG_END)
    dump.map_types = {name: "T" for name, _ in TEXT_FUNCS}
    dump.map_types.update({"_frame_table": "r", "_end": "B"})


def _vmcoreinfo(dump):
    """VMCOREINFO_XEN: the lines and order of Xen's crash_save_vmcoreinfo()."""
    symbols, offsets = dump.symbols, dump.host.cfg["domain_offsets"]
    names = dump.vmcoreinfo_symbols = {
        "frame_table": symbols["_frame_table"], "max_page": symbols["max_page"],
        "domain_list": symbols["domain_list"], "dom_xen": symbols["dom_xen"],
        "dom_io": symbols["dom_io"], "pgd_l4": symbols["idle_pg_table"]}
    dump.vmcoreinfo_lines = [("PAGESIZE", "4096")] + \
        [(f"SYMBOL({name})", f"{names[name]:x}") for name in ("domain_list", "frame_table", "max_page")] + \
        [("SIZE(page_info)", str(PAGE_INFO_SIZE)), ("SIZE(domain)", str(dump.host.cfg["domain_size"])),
         ("OFFSET(page_info.count_info)", "8"), ("OFFSET(page_info._domain)", "24"),
         ("OFFSET(domain.domain_id)", str(offsets["domain_id"])),
         ("OFFSET(domain.next_in_list)", str(offsets["next_in_list"]))] + \
        [(f"SYMBOL({name})", f"{names[name]:x}") for name in ("dom_xen", "dom_io", "pgd_l4")]
    dump.vmcoreinfo_text = "".join(f"{key}={value}\n" for key, value in dump.vmcoreinfo_lines)


def _page_infos(dump):
    """Write every RAM frame's page_info (frame table) and M2P entry; returns per frame
    (mfn, pdx, frame, count_info, type_info, domain_raw)."""
    host = dump.host
    heads = {first: order for first, order, _ in dump.free_chunks}
    scrubbed = {mfn for first, order, scrub in dump.free_chunks if scrub
                for mfn in range(first, first + (1 << order))}

    def raw_domain(mfn):
        frame = host.frames.get(mfn)
        if frame is None:
            return heads.get(mfn, 0)
        return host.pickled(frame["owner"]) if frame["owner"] else 0

    out = []
    for base, count in host.ram:
        for mfn in range(base, base + count):
            frame = host.frames.get(mfn) or dict(FREE_FRAME, need_scrub=mfn in scrubbed)
            count_info, type_info, domain_raw = host.count_info(frame), host.type_info(frame), raw_domain(mfn)
            pdx = host.pfn_to_pdx(mfn)
            offset = pdx * PAGE_INFO_SIZE
            page_info_ma = (dump.frame_table_backing[offset >> 12] << 12) + (offset & 0xFFF)
            host.mem.write(page_info_ma, struct.pack("<QQQII", 0, count_info, type_info, domain_raw, 0))
            m2p_ma = (dump.m2p_backing[mfn * 8 >> 12] << 12) + (mfn * 8 & 0xFFF)
            host.write_u64(m2p_ma, frame["m2p"])
            out.append((mfn, pdx, frame, count_info, type_info, domain_raw))
    return out


def _frame_truth(dump, page_infos):
    """The manifest's frames (every non-free one), census and free ranges."""
    host = dump.host
    frames, census = [], {}
    for mfn, pdx, frame, count_info, type_info, domain_raw in page_infos:
        if frame["state"] == "free":
            continue
        owner_name = frame["owner"] or "anonymous"
        census.setdefault(owner_name, {}).setdefault(frame["type"], 0)
        census[owner_name][frame["type"]] += 1
        frames.append({"mfn": mfn, "pdx": pdx, "count_info": count_info, "type_info": type_info,
                       "domain_raw": domain_raw, "owner": DOMID[frame["owner"]] if frame["owner"] else None,
                       "type": frame["type"], "type_count": frame["tcount"], "validated": frame["validated"],
                       "pinned": frame["pinned"], "count": frame["gen"], "state": frame["state"],
                       "xen_heap": frame["xen_heap"], "m2p": frame["m2p"], "role": frame["role"]})
    free_frames = sum(1 << order for _, order, _ in dump.free_chunks)
    census["free"] = {"none": free_frames}
    dump.free_ranges = []
    for first, order, scrub in dump.free_chunks:
        head = dict(FREE_FRAME, need_scrub=scrub)
        dump.free_ranges.append({"mfn": first, "pages": 1 << order, "order": order,
                                 "pdx": host.pfn_to_pdx(first), "count_info": host.count_info(head),
                                 "type_info": 0, "domain_raw_head": order, "need_scrub": scrub})
    assert len(frames) + free_frames == sum(count for _, count in host.ram)
    dump.frames, dump.census, dump.free_frames = frames, census, free_frames


def _violations(dump):
    """The manifest's records of the injected violations, with what Xen would say about each."""
    host, tables, dom0 = dump.host, dump.dom0_tables, dump.dom0
    mfn_format = "%05x" if dump.key == "4.17" else "%x"

    def mfn_text(value):
        return mfn_format % value

    def bad_type(saw, expected, mfn):
        return (f"Bad type (saw {saw:016x} != exp {expected:016x}) for mfn {mfn_text(mfn)} "
                f"(pfn {mfn_text(host.frames[mfn]['m2p'])})")

    writable = dom0.mfn(D0_WRITABLE)
    foreign_ref, foreign_entry = dump.foreign_ref_mfn, dump.foreign_ref_entry
    vmalloc_l4 = [4, host.idx(GUEST_VMALLOC, 4)]
    dump.violations = [
        {"kind": "writable-as-table", "domain": 0, "l4_mfn": tables.l4,
         "path": [[4, host.idx(GUEST_DM, 4)], [3, 0], [2, 1]], "mfn": writable, "target_mfn": writable,
         "table_mfn": tables.l2_directmap,
         "entry": host.get_entry(tables.l2_directmap, 1), "va": GUEST_DM + (1 << 21),
         "details": f"dom0 pfn {D0_WRITABLE:#x}: type writable, validated, type count 1 (one RW mapping "
                    f"in the direct map), also referenced by dom0 L2 mfn {tables.l2_directmap:#x} slot 1 "
                    "as an L1 table",
         "xen_would_say": bad_type(host.type_info(host.frames[writable]), host.type_bits("l1"), writable)},
        {"kind": "linear-rw", "domain": 0, "l4_mfn": tables.l4,
         "path": [vmalloc_l4, [3, 0], [2, 390]], "mfn": tables.l2_vmalloc, "target_mfn": tables.l2_directmap,
         "table_mfn": tables.l2_vmalloc,
         "entry": host.get_entry(tables.l2_vmalloc, 390), "va": GUEST_VMALLOC + (390 << 21),
         "details": f"L2 mfn {tables.l2_vmalloc:#x} (dom0 pfn 8) slot 390 points with RW at L2 mfn "
                    f"{tables.l2_directmap:#x} (dom0 pfn 2): a linear page table with write permission",
         "xen_would_say": "Attempt to create linear p.t. with write perms"},
        {"kind": "foreign-p2m", "domain": 0, "l4_mfn": tables.l4, "path": None, "mfn": dump.foreign_p2m_mfn,
         "target_mfn": dump.foreign_p2m_mfn,
         "table_mfn": None, "entry": None, "va": GUEST_VMALLOC + 60 * 8,
         "details": f"dom0 P2M[60] = mfn {dump.foreign_p2m_mfn:#x}, owned by d1 (its pfn 20; M2P says 20)",
         "xen_would_say": None},
        {"kind": "table-mapped-rw", "domain": 0, "l4_mfn": tables.l4,
         "path": [vmalloc_l4, [3, 0], [2, 0], [1, 2]], "mfn": tables.l1_text,
         "target_mfn": tables.l1_text, "table_mfn": tables.l1_vmalloc,
         "entry": dump.table_mapped_rw_entry, "va": GUEST_VMALLOC + 0x2000,
         "details": f"dom0 L1 mfn {tables.l1_vmalloc:#x} slot 2 maps L1 table mfn {tables.l1_text:#x} "
                    "(dom0 pfn 6) read-write",
         "xen_would_say": bad_type(host.type_info(host.frames[tables.l1_text]), host.type_bits("writable"),
                                   tables.l1_text)},
    ]
    unpriv = xenforeign.manifest(dump, lambda name: {"d0": dump.dom0, "d1": dump.domu}[name].l4)["violation"]
    d1_owners = "l1e_owner=1, pg_owner=1" if dump.key == "4.6" else "l1e_owner d1, pg_owner d1"
    unpriv["xen_would_say"] = (f"Error getting mfn {mfn_text(unpriv['mfn'])} "
                               f"(pfn {mfn_text(xenforeign.UNPRIVILEGED_PFN)}) "
                               f"from L1 entry {unpriv['entry']:016x} for {d1_owners}")
    dump.violations.append(unpriv)
    # dom0 is the control/hardware domain: its foreign reference is legitimate (pt-audit: informational)
    dump.informational = [
        {"kind": "foreign-reference", "basis": "privileged", "domain": 0, "l4_mfn": tables.l4,
         "path": [vmalloc_l4, [3, 0], [2, 0], [1, 1]], "mfn": foreign_ref,
         "target_mfn": foreign_ref,
         "table_mfn": tables.l1_vmalloc, "entry": foreign_entry, "va": GUEST_VMALLOC + 0x1000,
         "details": f"dom0 L1 mfn {tables.l1_vmalloc:#x} slot 1 maps mfn {foreign_ref:#x}, owned by d1 "
                    "(its pfn 21)",
         "xen_would_say": None},
    ]
    granted = xenforeign.manifest(dump, lambda name: {"d0": dump.dom0, "d1": dump.domu}[name].l4).get("granted")
    if granted:
        dump.informational.append(dict(granted, target_mfn=granted["mfn"], table_mfn=dump.domu_l1_user,
                                       xen_would_say=None))


def _walks(dump):
    """Walks through idle_pg_table (Xen's VAs, one into the unmapped frame-table page Xen faults
    on) and through each guest's L4."""
    host, dom0, symbols, virt = dump.host, dump.dom0, dump.symbols, dump.host.virt_start
    writable = dom0.mfn(D0_WRITABLE)
    fault = dump.frame_table_fault = FRAMETABLE + 0x4000 * PAGE_INFO_SIZE   # pdx 0x4000: not mapped
    recursive = 0xFFFF000000000000 | 258 << 39 | 258 << 30 | 258 << 21 | 258 << 12
    xen_vas = [DIRECTMAP + 0x1234, host.domains["d0"]["va"], DIRECTMAP + 0x4000000,
               FRAMETABLE + host.pfn_to_pdx(writable) * PAGE_INFO_SIZE, fault,
               RDWR_MPT + writable * 8, RO_MPT + writable * 8, virt, symbols["max_page"],
               symbols["idle_pg_table"], recursive, PERDOMAIN, virt + IMG_SIZE]
    if host.pdx:
        xen_vas[3:3] = [host.directmap_va(0x1000005008),
                        FRAMETABLE + host.pfn_to_pdx(0x1000000) * PAGE_INFO_SIZE, RDWR_MPT + 0x1000000 * 8]
    dump.walks = [host.walk(host.idle, va) for va in xen_vas]
    dump.guest_walks = []
    for domain_id, guest, vas in (
            (0, dom0, [GUEST_DM + 14 * PAGE, GUEST_KTEXT + 0x10, GUEST_VMALLOC, GUEST_DM + (1 << 21),
                       GUEST_VMALLOC + 0x2000, RO_MPT + writable * 8, LINEAR_PT]),
            (1, dump.domu, [0x400000, 0x401008, GUEST_DM + 16 * PAGE, 0x403000])):
        for va in vas:
            walk = host.walk(guest.l4, va)
            walk["domain"] = domain_id
            dump.guest_walks.append(walk)
    by_va = {walk["va"]: walk for walk in dump.walks}
    assert by_va[fault]["stop"] == "not-present" and by_va[fault]["level"] == "L1"
    assert by_va[symbols["idle_pg_table"]]["ma"] == host.idle << 12 and by_va[recursive]["ma"] == host.idle << 12
    assert by_va[RO_MPT + writable * 8]["ma"] == by_va[RDWR_MPT + writable * 8]["ma"]
    assert host.read_u64(by_va[RDWR_MPT + writable * 8]["ma"]) == D0_WRITABLE
    guest_by_va = {(walk["domain"], walk["va"]): walk for walk in dump.guest_walks}
    assert guest_by_va[(0, GUEST_DM + 14 * PAGE)]["ma"] == dom0.mfn(14) << 12
    assert guest_by_va[(0, GUEST_DM + (1 << 21))]["stop"] == "not-present"


def _crash_notes(dump):
    """Both CPUs' registers at the crash (CPU 1 took the frame-table fault) and CRASH_INFO."""
    host, symbols, strings = dump.host, dump.symbols, dump.string_maddr
    cr0, cr4 = 0x8005003B, 0x1526E0
    dump.cpus = [
        {"rip": symbols["do_nmi_crash"] + 0x1F, "rsp": host.directmap_va(XEN_STACKS[0]), "cs": 0xE008,
         "ss": 0xE010, "ds": 0, "rflags": 0x46, "cr0": cr0, "cr2": 0, "cr3": host.idle << 12, "cr4": cr4},
        {"rip": symbols["kexec_crash_save_cpu"] + 0x4B, "rsp": host.directmap_va(XEN_STACKS[1]),
         "cs": 0xE008, "ss": 0xE010, "ds": 0, "rflags": 0x46, "cr0": cr0, "cr2": dump.frame_table_fault,
         "cr3": host.idle << 12, "cr4": cr4},
    ]
    dump.crash_info = struct.pack("<10Q", host.cfg["major"], host.cfg["minor"], strings["xen_extra_version"],
                                  strings["xen_changeset"], strings["xen_compiler"],
                                  strings["xen_compile_date"], strings["xen_compile_time"], 0,
                                  XEN_PHYS_START, dump.dom0.mfn(D0_FRAME_LIST_LIST))


def build(key):
    """The Xen host of version ``key``, step by step; returns the :class:`HostDump`."""
    dump = HostDump(key, Host(key))
    _xen_image(dump)
    _direct_map(dump)
    _frame_table(dump)
    _m2p(dump)
    _xen_heap(dump)
    _dom_cow(dump)
    _guests(dump)
    _dom0_tables(dump)
    _domu_tables(dump)
    _inject_violations(dump)
    _dom0_p2m(dump)
    _guest_data(dump)
    _offlined_and_free(dump)
    _domain_structs(dump)
    _xen_variables(dump)
    _vmcoreinfo(dump)
    _frame_truth(dump, _page_infos(dump))
    _violations(dump)
    _walks(dump)
    _crash_notes(dump)
    return dump


# =================================================================================================
class _ConsoleLog:
    """Console lines as Xen prints them; some tagged for the manifest (1-based line, mfn, kind)."""

    def __init__(self):
        self.lines, self.tagged = [], []

    def add(self, text, stamp=None, kind=None, mfn=None):
        self.lines.append("(XEN) " + (f"[{stamp}] " if stamp else "") + text)
        if kind:
            self.tagged.append({"line_no": len(self.lines), "mfn": mfn, "kind": kind})


def _log_46_boot(log, dump):
    add = log.add
    add(" __  __            _  _    __    ___  ")
    add(" \\ \\/ /___ _ __   | || |  / /_  / _ \\ ")
    add("Xen version 4.6.0 (builder@example.org) (gcc (GCC) 4.8.5) debug=y Tue Oct 13 12:00:00 UTC 2015")
    add("Latest ChangeSet: unavailable")
    add("Bootloader: GRUB 2.02~beta2")
    add("Command line: dom0_mem=256K,max:1M loglvl=all guest_loglvl=all console_timestamps com1=115200,8n1")
    add("Xen-e820 RAM map:")
    add(" 0000000000000000 - 0000000004000000 (usable)")
    add(" 0000001000000000 - 0000001001000000 (usable)")
    low_bit, high_bit = dump.host.pdx["bits"]
    add(f"PFN compression on bits {low_bit}...{high_bit}")
    add("Dom0 has maximum 2 VCPUs")
    add("Scrubbing Free RAM on 1 nodes using 2 CPUs")
    add("Std. Loglevel: All")
    add("Guest Loglevel: All")
    add("*** Serial input -> DOM0 (type 'CTRL-a' three times to switch input to Xen)")
    add("Freed 316kB init memory.")
    add("grant_table.c:316:d0v0 Increased maptrack size to 2 frames", "   41.022817")
    add("traps.c:3290: GPF (0000): ffff82d0801a3f1c -> ffff82d08024c8e3", "   57.690204")


def _log_46_violations(log, dump):
    """The seed's lines for the injected violations."""
    add, host, tables = log.add, dump.host, dump.dom0_tables
    frames = host.frames
    writable, l2_vmalloc, l1_text = dump.dom0.mfn(D0_WRITABLE), tables.l2_vmalloc, tables.l1_text
    violation = {record["kind"]: record for record in dump.violations}
    bad_type_line = dump.host.cfg["line_bad_type"]

    def type_info(mfn):
        return host.type_info(frames[mfn])

    add(f"mm.c:{bad_type_line}:d0v1 Bad type (saw {type_info(writable):016x} != exp "
        f"{host.type_bits('l1'):016x}) for mfn {writable:x} (pfn {frames[writable]['m2p']:x})",
        "  123.456789", "writable-as-table", writable)
    add("mm.c:1376:d0v1 Attempt to create linear p.t. with write perms", "  123.456802",
        "writable-as-table", writable)
    add("printk: 3 messages suppressed.", "  124.000117")
    add("mm.c:1376:d0v1 Attempt to create linear p.t. with write perms", "  130.108322", "linear-rw",
        l2_vmalloc)
    add("mm.c:1520:d0v1 Failure in alloc_l2_table: entry 390", "  130.108330", "linear-rw", l2_vmalloc)
    add(f"mm.c:2283:d0v1 Error while validating mfn {l2_vmalloc:x} (pfn {frames[l2_vmalloc]['m2p']:x}) "
        f"for type {host.type_bits('l2'):016x}: caf=8000000000000003 taf={host.type_bits('l2') | 1:016x}",
        "  130.108341", "linear-rw", l2_vmalloc)
    add(f"mm.c:{bad_type_line}:d0v0 Bad type (saw {type_info(l1_text):016x} != exp "
        f"{host.type_bits('writable'):016x}) for mfn {l1_text:x} (pfn {frames[l1_text]['m2p']:x})",
        "  131.772150", "table-mapped-rw", l1_text)
    entry = violation["table-mapped-rw"]["entry"]
    add(f"mm.c:901:d0v0 Error getting mfn {l1_text:x} (pfn {frames[l1_text]['m2p']:x}) from L1 entry "
        f"{entry:016x} for l1e_owner=0, pg_owner=0", "  131.772163", "table-mapped-rw", l1_text)
    foreign = dump.informational[0]
    foreign_mfn = foreign["mfn"]
    add(f"mm.c:2084:d0v0 Error pfn {foreign_mfn:x}: rd={host.domains['d0']['va']:016x}, "
        f"od={host.domains['d1']['va']:016x}, caf={host.count_info(frames[foreign_mfn]):08x}, "
        f"taf={type_info(foreign_mfn):016x}", "  131.772170", "foreign-reference", foreign_mfn)
    add(f"mm.c:901:d0v0 Error getting mfn {foreign_mfn:x} (pfn {frames[foreign_mfn]['m2p']:x}) from L1 "
        f"entry {foreign['entry']:016x} for l1e_owner=0, pg_owner=0", "  131.772176", "foreign-reference",
        foreign_mfn)
    add("printk: 11 messages suppressed.", "  132.000021")
    add("d1v0: upcall vector f3", "  135.550912")


def _log_46_crash(log, dump):
    """The crash: Xen writes the page_info of pdx 0x4000, in the PDX hole (not mapped)."""
    add, host = log.add, dump.host
    stamp = "  140.203311"
    fault_va = dump.frame_table_fault
    rip = dump.symbols["put_page"] + 0x5A
    add("----[ Xen-4.6.0  x86_64  debug=y  Not tainted ]----", stamp)
    add("CPU:    1", stamp)
    add(f"RIP:    e008:[<{rip:016x}>] put_page+0x5a/0x1c0", stamp)
    add("RFLAGS: 0000000000010246   CONTEXT: hypervisor (d0v1)", stamp)
    add(f"cr0: 000000008005003b   cr4: 00000000001526e0   cr3: {host.idle << 12:016x}   cr2: {fault_va:016x}",
        stamp)
    add("Xen call trace:", stamp)
    add(f"   [<{rip:016x}>] put_page+0x5a/0x1c0", stamp)
    add(f"   [<{dump.symbols['mod_l2_entry'] + 0x2F1:016x}>] mod_l2_entry+0x2f1/0x5b0", stamp)
    add("", stamp)
    add(f"Pagetable walk from {fault_va:016x}:", stamp, "pagetable-walk", None)
    table = host.idle
    for level in (4, 3, 2, 1):
        index = host.idx(fault_va, level)
        entry = host.get_entry(table, index)
        mfn = (entry & FRAME_MASK) >> 12
        m2p = host.frames[mfn]["m2p"] if mfn in host.frames else INVALID_M2P
        add(f" L{level}[0x{index:03x}] = {entry:016x} {m2p:016x}", stamp, "pagetable-walk", mfn)
        if not entry & P:
            break
        table = mfn
    add("", stamp)
    add("****************************************", stamp)
    add("Panic on CPU 1:", stamp)
    add("FATAL PAGE FAULT", stamp, "fatal-page-fault", None)
    add("[error_code=0002]", stamp, "fatal-page-fault", None)
    add(f"Faulting linear address: {fault_va:016x}", stamp, "fatal-page-fault", None)
    add("****************************************", stamp)
    add("", stamp)
    add("Reboot in five seconds...", stamp)


def _log_46(dump):
    """Xen 4.6 console excerpt: boot, the seed's lines for the injected violations, the crash."""
    log = _ConsoleLog()
    _log_46_boot(log, dump)
    _log_46_violations(log, dump)
    _log_46_crash(log, dump)
    return "\n".join(log.lines) + "\n", log.tagged


def _map_text(dump):
    rows = sorted((va, dump.map_types.get(name, "D"), name) for name, va in dump.symbols.items())
    return "".join(f"{va:016x} {letter} {name}\n" for va, letter, name in rows)


def _domain_records(dump):
    host = dump.host
    guests = {"d0": dump.dom0, "d1": dump.domu}
    records = []
    for name in ("d0", "d1", "dom_xen", "dom_io", "dom_cow"):
        domain, guest = host.domains[name], guests.get(name)
        records.append({
            "id": DOMID[name], "name": name, "struct_va": domain["va"], "struct_maddr": domain["maddr"],
            "pickled": host.pickled(name), "tot_pages": dump.tot_pages[name], "max_pages": MAX_PAGES[name],
            "l4_mfn": guest.l4 if guest else None, "cr3": (guest.l4 << 12) if guest else None,
            "vcpus": guest.vcpus if guest else None,
            "shared_info_maddr": (dump.shared_info[name] << 12) if name in dump.shared_info else None,
            "next_in_list": {"d0": host.domains["d1"]["va"], "d1": 0}.get(name)})
    return records


def _manifest(dump, name, log):
    host, cfg, pdx, dom0 = dump.host, dump.host.cfg, dump.host.pdx, dump.dom0
    crash_info_fields = ("xen_major_version", "xen_minor_version", "xen_extra_version", "xen_changeset",
                         "xen_compiler", "xen_compile_date", "xen_compile_time", "tainted",
                         "xen_phys_start", "dom0_pfn_to_mfn_frame_list_list")
    m2p_sample_mfns = ([dom0.mfn(pfn) for pfn in (0, 2, 10, 11, 14)] +
                       [dump.domu.mfn(pfn) for pfn in (0, 20, 21)] + [0x10, 0x3F00, dump.cow_mfn])
    return {
        "core": name + ".core", "xen_version": cfg["version"],
        "layout": {"type": cfg["type"], "count": cfg["count"], "page_info_size": PAGE_INFO_SIZE,
                   "page_info_offsets": {"list": 0, "count_info": 8, "type_info": 16, "_domain": 24,
                                         "tlbflush_timestamp": 28}},
        "max_page": host.max_page, "max_pdx": dump.values["max_pdx"],
        "ram": [[base, base + count] for base, count in host.ram],
        "xen_phys_start": XEN_PHYS_START, "xen_virt_start": host.virt_start,
        "directmap_virt_start": DIRECTMAP, "frametable_virt_start": FRAMETABLE,
        "m2p_virt_start": RDWR_MPT, "ro_m2p_virt_start": RO_MPT,
        "pdx": None if pdx is None else {key: pdx[key] for key in ("hole_shift", "bottom_mask", "top_mask",
                                                                   "ma_va_bottom_mask", "ma_top_mask",
                                                                   "hole_mask")},
        "idle_pg_table": host.idle << 12,
        "symbols": dict(dump.symbols, frame_table=dump.vmcoreinfo_symbols["frame_table"],
                        pgd_l4=dump.vmcoreinfo_symbols["pgd_l4"]),
        "symbol_values": dump.values,
        "vmcoreinfo_xen": dict(dump.vmcoreinfo_lines),
        "crash_info": dict(zip(crash_info_fields, struct.unpack("<10Q", dump.crash_info)),
                           extra_version_string=cfg["extra"]),
        "cpus": [{key: cpu[key] for key in ("rip", "rsp", "cs", "ss", "rflags", "cr0", "cr2", "cr3", "cr4")}
                 for cpu in dump.cpus],
        "domain_offsets": dict(cfg["domain_offsets"], size=cfg["domain_size"]),
        "domains": _domain_records(dump),
        "frames": dump.frames, "free_ranges": dump.free_ranges,
        "census": dump.census, "free_frames": dump.free_frames,
        "violations": dump.violations, "informational": dump.informational, "log": log,
        "foreign": xenforeign.manifest(dump, lambda name: {"d0": dom0, "d1": dump.domu}[name].l4),
        "p2m": {"domain": 0, "pfn_count": len(dump.dom0_p2m), "va": GUEST_VMALLOC,
                "mfn": dom0.mfn(D0_P2M),
                "foreign": [{"pfn": 60, "mfn": dump.foreign_p2m_mfn, "owner": 1}],
                "faults": [{"class": kind, "pfn": pfn, "mfn": mfn, "other": other}
                           for kind, pfn, mfn, other in dump.p2m_faults],
                "frame_list_list_mfn": dom0.mfn(D0_FRAME_LIST_LIST)},
        "m2p_samples": [{"mfn": mfn, "pfn": host.frames[mfn]["m2p"]} for mfn in m2p_sample_mfns],
        "walks": dump.walks, "guest_walks": dump.guest_walks,
    }


def write(key, out):
    dump = build(key)
    host = dump.host
    name = f"xen-{key}-host"
    files = [name + ".core", name + ".json", name + ".map"]
    result = write_elf_core(os.path.join(out, name + ".core"), machine="x86_64",
                            segments=host.mem.segments(), cpus=dump.cpus, qemu_notes=False,
                            per_cpu_notes=dump.per_cpu_notes,
                            extra_notes=[("VMCOREINFO_XEN", 0, dump.vmcoreinfo_text.encode())],
                            vaddr_of=host.directmap_va)
    assert result["memory"] == host.mem.ranges()
    log = None
    if key == "4.6":
        text, tagged = _log_46(dump)
        with open(os.path.join(out, name + ".log"), "w") as f:
            f.write(text)
        log = {"file": name + ".log", "lines": tagged}
        files.append(name + ".log")
    with open(os.path.join(out, name + ".map"), "w") as f:
        f.write(_map_text(dump))
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(_manifest(dump, name, log), f, sort_keys=True, indent=1)
        f.write("\n")
    return files
