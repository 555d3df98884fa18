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

from .elfcore import write_elf_core
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
    ("total_pages", 0x68, 8),
]
RODATA_STRINGS = [("xen_extra_version", 0x100), ("xen_changeset", 0x120), ("xen_compiler", 0x180),
                  ("xen_compile_date", 0x1C0), ("xen_compile_time", 0x200)]
XEN_PHYS_START = 0x1000000                  # 16 MiB, 2 MiB aligned


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
    bmask = (1 << bottom) - 1
    hmask = ((1 << hole) - 1) << bottom
    top = U64 & ~(bmask | hmask)
    return {"hole_shift": hole, "bottom_mask": bmask, "top_mask": top, "hole_mask": hmask,
            "ma_va_bottom_mask": (PAGE << bottom) - 1, "ma_top_mask": (top << 12) & U64,
            "bits": [bottom, bottom + hole - 1]}


def _region_mask(base, n):
    """pdx_region_mask() in pfn units: base | fill_mask(base ^ (end - 1))."""
    x = base ^ (base + n - 1)
    fill = (1 << x.bit_length()) - 1
    return base | fill


class Host:
    def __init__(self, key):
        self.key = key
        self.cfg = VERSIONS[key]
        self.tl = TYPE_LAYOUT[self.cfg["type"]]
        self.cl = COUNT_LAYOUT[self.cfg["count"]]
        self.mem = PhysMem(0)
        self.ram = [(0, 0x4000)] + ([(0x1000000, 0x1000)] if self.cfg["pdx_hole"] else [])
        self.max_page = max(b + n for b, n in self.ram)
        if self.cfg["pdx_hole"]:
            mask = 0
            for b, n in self.ram:
                mask |= _region_mask(b, n)
            self.pdx = _hole_setup(mask)
            assert self.pdx and self.pdx["hole_shift"] == 5 and self.pdx["bits"] == [19, 23], self.pdx
        else:
            self.pdx = None
        self.frames = {}                    # mfn -> dict (every claimed = non-free frame)
        self.vx = self.cfg["xen_virt_start"]
        self.xen_pool = iter(range(0x1400, 0x1600))       # Xen's boot-allocated page tables
        self.heap_pool = iter(range(0x1C00, 0x1D00))      # xenheap (domain structs, shared_info)
        self.log_lines = []

    # -- machine frames -------------------------------------------------------------------------
    def is_ram(self, mfn):
        return any(b <= mfn < b + n for b, n in self.ram)

    def pfn_to_pdx(self, pfn):
        if not self.pdx:
            return pfn
        return (pfn & self.pdx["bottom_mask"]) | ((pfn & self.pdx["top_mask"]) >> self.pdx["hole_shift"])

    def dm_off(self, ma):
        if not self.pdx:
            return ma
        return ((ma & self.pdx["ma_top_mask"]) >> self.pdx["hole_shift"]) | (ma & self.pdx["ma_va_bottom_mask"])

    def dm_va(self, ma):
        return DIRECTMAP + self.dm_off(ma)

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

    def w64(self, ma, v):
        self.page(ma >> 12)
        self.mem.write(ma, (v & U64).to_bytes(8, "little"))

    def r64(self, ma):
        raw = self.mem.read(ma, 8)
        return None if raw is None else int.from_bytes(raw, "little")

    def ref(self, mfn, typ=None, legit=True):
        """Take a general reference and, with ``typ``, a type reference (validated)."""
        if not legit:
            return
        f = self.frames[mfn]
        f["gen"] += 1
        if typ is not None:
            assert f["tcount"] == 0 or f["type"] == typ, (hex(mfn), f["type"], typ)
            f["type"] = typ
            f["tcount"] += 1
            f["validated"] = True

    def share(self, mfn, owner, writable):
        """share_xen_page_with_guest(): PGC_allocated|1, type writable/none |validated|1."""
        f = self.frames[mfn]
        f.update(owner=owner, allocated=True, gen=1, type="writable" if writable else "none",
                 tcount=1, validated=True)

    # -- page tables ------------------------------------------------------------------------------
    def set_entry(self, table_mfn, idx, value):
        assert 0 <= idx < 512
        self.w64((table_mfn << 12) + idx * 8, value)

    def get_entry(self, table_mfn, idx):
        return self.r64((table_mfn << 12) + idx * 8)

    @staticmethod
    def idx(va, level):
        return va >> (12 + 9 * (level - 1)) & 511

    def xen_table(self):
        return self.claim(next(self.xen_pool), "xen page table (boot allocator)", write=True)

    def xen_path(self, va, level):
        """Table (mfn) holding the ``level`` entry for ``va`` in idle_pg_table; creates
        intermediate tables from Xen's pool with __PAGE_HYPERVISOR."""
        t = self.idle
        for lvl in range(4, level, -1):
            e = self.get_entry(t, self.idx(va, lvl))
            if not e & P:
                nt = self.xen_table()
                self.set_entry(t, self.idx(va, lvl), (nt << 12) | XEN_TABLE)
                t = nt
            else:
                assert not e & PS
                t = (e & FRAME_MASK) >> 12
        return t

    def xmap(self, va, ma, size, flags):
        level = {PAGE: 1, 1 << 21: 2}[size]
        t = self.xen_path(va, level)
        assert not self.get_entry(t, self.idx(va, level)) & P, hex(va)
        self.set_entry(t, self.idx(va, level), ma | flags | (PS if level == 2 else 0))
        return t

    def walk(self, root_mfn, va):
        """The CPU's 4-level walk over this builder's memory."""
        t = root_mfn << 12
        for level in (4, 3, 2, 1):
            e = self.r64(t + self.idx(va, level) * 8)
            name = f"L{level}"
            if e is None:
                return {"va": va, "ma": None, "stop": "not-in-dump", "level": name, "page_size": None}
            if not e & P:
                return {"va": va, "ma": None, "stop": "not-present", "level": name, "page_size": None}
            frame = e & FRAME_MASK
            if level in (2, 3) and e & PS:
                size = 1 << (12 + 9 * (level - 1))
                return {"va": va, "ma": (frame & ~(size - 1)) + (va & (size - 1)), "stop": None,
                        "level": name, "page_size": size}
            if level == 1:
                return {"va": va, "ma": frame + (va & 0xFFF), "stop": None, "level": name,
                        "page_size": PAGE}
            t = frame
        raise AssertionError

    # -- encodings ----------------------------------------------------------------------------------
    def type_info(self, f):
        if f["state"] == "free":
            return 0
        v = self.tl["codes"][f["type"]] << self.tl["shift"]
        v |= (PGT_pinned if f["pinned"] else 0) | (PGT_validated if f["validated"] else 0)
        assert f["tcount"] <= PGT_count_mask
        return v | f["tcount"]

    def count_info(self, f):
        v = STATES[f["state"]] << self.cl["state_shift"]
        v |= (PGC_allocated if f["allocated"] else 0) | (PGC_xen_heap if f["xen_heap"] else 0)
        v |= self.cl["broken"] if f["broken"] else 0
        if f.get("need_scrub"):
            v |= self.cl["need_scrub"]
        assert f["gen"] <= self.cl["count_mask"]
        return v | f["gen"]

    def pickled(self, name):
        return self.dm_off(self.domains[name]["maddr"]) >> 12

    def ptype(self, typ):
        return self.tl["codes"][typ] << self.tl["shift"]


# =================================================================================================
class Guest:
    """A 64-bit PV guest: frames, P2M, page tables with machine frame numbers."""

    def __init__(self, host, name, npfn, mfn_of, vcpus, max_pages, missing=()):
        self.h, self.name, self.npfn, self.vcpus, self.max_pages = host, name, npfn, vcpus, max_pages
        self.p2m = {}
        for pfn in range(npfn):
            if pfn in missing:
                continue
            mfn = mfn_of(pfn)
            host.claim(mfn, f"{name} pfn {pfn:#x}", owner=name)
            host.frames[mfn]["m2p"] = pfn
            self.p2m[pfn] = mfn
        self.tables = {}

    def mfn(self, pfn):
        return self.p2m[pfn]

    def table(self, pfn, level):
        mfn = self.mfn(pfn)
        self.h.page(mfn)
        self.tables[mfn] = level
        self.h.frames[mfn]["role"] += f" (L{level})"
        return mfn

    def link(self, parent, idx, child, flags=GUEST_TABLE, legit=True):
        """parent[idx] -> child as a next-level table."""
        self.h.set_entry(parent, idx, (child << 12) | flags)
        self.h.ref(child, f"l{self.tables[parent] - 1}", legit)

    def map(self, l1, idx, target, rw, user=False, legit=True):
        flags = P | US | A | (RW | D if rw else 0) | (0 if user else GUEST_KERNEL)
        self.h.set_entry(l1, idx, (target << 12) | flags)
        self.h.ref(target, "writable" if rw else None, legit)
        return (target << 12) | flags

    def xen_slots(self, l4, perdomain_l3):
        """init_xen_l4_slots / init_guest_l4_table: slots 256..271 copied from idle_pg_table, then
        258 = linear self map, 260 = per-domain L3 (no references taken)."""
        h = self.h
        for s in range(256, 272):
            h.set_entry(l4, s, h.get_entry(h.idle, s))
        h.set_entry(l4, 258, (l4 << 12) | XEN_TABLE)
        h.set_entry(l4, 260, (perdomain_l3 << 12) | XEN_TABLE)

    def pin_and_run(self, l4):
        f = self.h.frames[l4]
        self.h.ref(l4, "l4")                # MMUEXT_PIN_L4_TABLE
        f["pinned"] = True
        for _ in range(self.vcpus):         # each vcpu's arch.guest_table
            self.h.ref(l4, "l4")
        self.l4 = l4


# =================================================================================================
def build(key):
    h = Host(key)
    cfg = h.cfg
    vx = h.vx
    img = XEN_PHYS_START
    # ---- Xen image: one 2 MiB page; frames anonymous (not heap) ---------------------------------
    for mfn in range(img >> 12, (img + IMG_SIZE) >> 12):
        h.claim(mfn, "xen image")
    h.idle = (img + IDLE_PG_TABLE) >> 12
    for off in (0, RODATA, DATA, IDLE_PG_TABLE, L3_XENMAP, L2_XENMAP):
        h.page((img + off) >> 12)
    text = h.page(img >> 12)
    text[:] = bytes([0x0F, 0x0B] * (PAGE // 2))                     # ud2 ...
    h.set_entry(h.idle, 261, ((img + L3_XENMAP)) | XEN_TABLE)
    h.set_entry(img + L3_XENMAP >> 12, h.idx(vx, 3), (img + L2_XENMAP) | XEN_TABLE)
    h.xmap(vx, img, 1 << 21, P | RW | A | D | G)                      # RWX 2 MiB (4.6-style)
    h.set_entry(h.idle, 258, (h.idle << 12) | XEN_TABLE)              # LINEAR_PT: self map

    # ---- direct map: 2 MiB pages over all RAM ------------------------------------------------
    for base, n in h.ram:
        for ma in range(base << 12, (base + n) << 12, 1 << 21):
            h.xmap(h.dm_va(ma), ma, 1 << 21, XEN_DATA)

    # ---- frame table (indexed by pdx), 4 KiB pages, backing frames from the boot allocator ----
    ft_pool = iter(range(0x1800, 0x1900))
    ft_pages = sorted({h.pfn_to_pdx(m) * PAGE_INFO_SIZE >> 12 for b, n in h.ram for m in range(b, b + n)})
    ft_backing = {}
    for pg in ft_pages:
        mfn = h.claim(next(ft_pool), "frame table", write=True)
        ft_backing[pg] = mfn
        h.xmap(FRAMETABLE + (pg << 12), mfn << 12, PAGE, XEN_DATA)

    # ---- M2P (indexed by mfn): RW view (slot 261), RO view (slot 256) sharing the L1s --------------
    m2p_pool = iter(range(0x1A00, 0x1B00))
    m2p_pages = sorted({m * 8 >> 12 for b, n in h.ram for m in range(b, b + n)})
    m2p_backing = {}
    for pg in m2p_pages:
        mfn = h.claim(next(m2p_pool), "M2P")
        m2p_backing[pg] = mfn
        h.page(mfn)[:] = b"\xff" * PAGE
        h.xmap(RDWR_MPT + (pg << 12), mfn << 12, PAGE, P | RW | US | A | D | G | NX)
    assert all(pg >> 18 == 0 for pg in m2p_pages)          # all in the first GiB of the M2P
    ro_l3, ro_l2 = h.xen_table(), h.xen_table()
    h.set_entry(h.idle, 256, (ro_l3 << 12) | P | US | A)  # RO, user (guest-visible)
    h.set_entry(ro_l3, 0, (ro_l2 << 12) | P | US | A)
    rw_l2 = h.xen_path(RDWR_MPT, 2)
    for i in range(512):                                   # RO L2 entries -> the RW view's L1s
        e = h.get_entry(rw_l2, i)
        if e & P:
            h.set_entry(ro_l2, i, (e & FRAME_MASK) | P | US | A)

    # ---- domains: struct domain pages in the xenheap -------------------------------------------
    h.domains = {}
    for name in ("dom_xen", "dom_io", "dom_cow", "d0", "d1"):
        mfn = h.claim(next(h.heap_pool), f"struct domain {name}", xen_heap=True, write=True)
        h.domains[name] = {"maddr": mfn << 12, "va": h.dm_va(mfn << 12)}
    perdomain = {n: h.claim(next(h.heap_pool), f"per-domain L3 {n}", write=True) for n in ("d0", "d1")}
    shared_info = {}
    for n in ("d0", "d1"):
        mfn = h.claim(next(h.heap_pool), f"shared_info {n}", xen_heap=True, write=True)
        h.share(mfn, n, writable=True)
        shared_info[n] = mfn
    conring = h.claim(next(h.heap_pool), "xenheap page shared with dom_xen (trace buffer)",
                      xen_heap=True, write=True)
    h.share(conring, "dom_xen", writable=True)
    for pg, mfn in m2p_backing.items():                     # M2P shared read-only with dom_xen
        h.share(mfn, "dom_xen", writable=False)
    for mfn in range(0, 0x100):                             # first MiB: I/O, owned by dom_io
        h.claim(mfn, "legacy I/O (first MiB)")
        h.share(mfn, "dom_io", writable=True)
    stacks = (0x1E07F58, 0x1E0FD88)                         # per-CPU stacks (xenheap, kept empty)
    for c, sp in enumerate(stacks):
        h.claim(sp >> 12, f"xen stack cpu{c}", xen_heap=True, write=True)

    # ---- dom_cow: one shared page -------------------------------------------------------------
    cow_mfn = 0x1000800 if cfg["pdx_hole"] else 0x3C00
    h.claim(cow_mfn, "mem-sharing shared page", owner="dom_cow")
    f = h.frames[cow_mfn]
    f.update(type="shared", tcount=1, validated=True, m2p=SHARED_M2P)

    # ---- dom0 (2 vcpus, 64 pfns, pfn 60 is a foreign frame in its P2M) -------------------------
    d0 = Guest(h, "d0", 64, lambda p: 0x2000 + (p * 37 + 11) % 64, vcpus=2, max_pages=256,
               missing=(60,))
    # dom0 pfns 64-71 (P2M faults below): frames 0x2040.., M2P = pfn; pfn 69 is non-RAM (identity)
    d0_extra = {}
    for i, (pfn, what) in enumerate(((64, "M2P entry stale: says pfn 0x41"), (65, None),
                                     (66, "P2M entry bit 36 flipped: beyond max_page; M2P orphan"),
                                     (67, None), (68, "P2M entry overwritten with pfn 0x43's: M2P orphan"),
                                     (70, "P2M entry overwritten with INVALID: M2P orphan"), (71, None))):
        mfn = h.claim(0x2040 + i, f"d0 pfn {pfn:#x}" + (f" ({what})" if what else ""), owner="d0")
        h.frames[mfn]["m2p"] = pfn
        d0_extra[pfn] = mfn
    hi = 0x1000000 if cfg["pdx_hole"] else 0x3000
    d1 = Guest(h, "d1", 32, lambda p: hi + (p * 13 + 5) % 32, vcpus=1, max_pages=64)
    g = d0
    L4, L3dm, L2dm, L1dm = g.table(0, 4), g.table(1, 3), g.table(2, 2), g.table(3, 1)
    L3k, L2k, L1k = g.table(4, 3), g.table(5, 2), g.table(6, 1)
    L3v, L2v, L1v = g.table(7, 3), g.table(8, 2), g.table(9, 1)
    d0_tables = set(range(10))
    P2M, W, FLL, FL = 10, 11, 12, 13
    for pfn in (P2M, W, FLL, FL, 14):
        h.page(g.mfn(pfn))
    g.xen_slots(L4, perdomain["d0"])
    g.link(L4, h.idx(GUEST_DM, 4), L3dm)
    g.link(L3dm, 0, L2dm)
    g.link(L2dm, 0, L1dm)
    g.link(L4, h.idx(GUEST_KTEXT, 4), L3k)
    g.link(L3k, h.idx(GUEST_KTEXT, 3), L2k)
    g.link(L2k, h.idx(GUEST_KTEXT, 2), L1k)
    g.link(L4, h.idx(GUEST_VMALLOC, 4), L3v)
    g.link(L3v, 0, L2v)
    g.link(L2v, 0, L1v)
    for pfn in range(64):
        if pfn in g.p2m and not 56 <= pfn <= 59:
            g.map(L1dm, pfn, g.mfn(pfn), rw=pfn not in d0_tables and not 16 <= pfn <= 23)
    for i, pfn in enumerate(range(16, 24)):
        g.map(L1k, i, g.mfn(pfn), rw=False)
    g.map(L1v, 0, g.mfn(P2M), rw=True)
    g.pin_and_run(L4)

    # ---- domU (1 vcpu, 32 pfns, a user process) ------------------------------------------------
    u = d1
    uL4, uL3dm, uL2dm, uL1dm = u.table(0, 4), u.table(1, 3), u.table(2, 2), u.table(3, 1)
    uL3k, uL2k, uL1k = u.table(4, 3), u.table(5, 2), u.table(6, 1)
    uL3u, uL2u, uL1u = u.table(12, 3), u.table(13, 2), u.table(14, 1)
    u_tables = {0, 1, 2, 3, 4, 5, 6, 12, 13, 14}
    uP2M = 7
    h.page(u.mfn(uP2M))
    u.xen_slots(uL4, perdomain["d1"])
    u.link(uL4, h.idx(GUEST_DM, 4), uL3dm)
    u.link(uL3dm, 0, uL2dm)
    u.link(uL2dm, 0, uL1dm)
    u.link(uL4, h.idx(GUEST_KTEXT, 4), uL3k)
    u.link(uL3k, h.idx(GUEST_KTEXT, 3), uL2k)
    u.link(uL2k, h.idx(GUEST_KTEXT, 2), uL1k)
    u.link(uL4, 0, uL3u)
    u.link(uL3u, 0, uL2u)
    u.link(uL2u, 2, uL1u)                                    # 0x400000
    for pfn in range(32):
        u.map(uL1dm, pfn, u.mfn(pfn), rw=pfn not in u_tables and not 8 <= pfn <= 11 and pfn != 15)
    for i, pfn in enumerate(range(8, 12)):
        u.map(uL1k, i, u.mfn(pfn), rw=False)
    u.map(uL1u, 0, u.mfn(15), rw=False, user=True)
    u.map(uL1u, 1, u.mfn(16), rw=True, user=True)
    u.map(uL1u, 2, u.mfn(17), rw=True, user=True)
    u.pin_and_run(uL4)
    h.frames[u.mfn(30)]["state"] = "offlining"
    for pfn in range(u.npfn):                                # domU P2M array
        h.w64((u.mfn(uP2M) << 12) + pfn * 8, u.mfn(pfn))

    # ---- injected violations (no references taken) --------------------------------------------
    V = []
    foreign_p2m = u.mfn(20)
    foreign_ref = u.mfn(21)
    # (1) W: writable page (type count 1) referenced by dom0's L2_dm[1] as an L1 table (RW entry)
    g.link(L2dm, 1, g.mfn(W), legit=False)
    # (2) L2_v[390] -> L2_dm (an L2 page): linear p.t. with write perms
    g.link(L2v, 390, L2dm, legit=False)
    # (4) L1_v[2] maps L1_k (an L1 table) read-write
    e4 = g.map(L1v, 2, L1k, rw=True, legit=False)
    # (5) L1_v[1] maps a domU frame (read-only)
    e5 = g.map(L1v, 1, foreign_ref, rw=False, legit=False)
    # dom0 P2M array (3): pfn 60 -> a domU frame; the other pfns < 64 -> dom0's own frames
    d0_p2m = [g.p2m.get(pfn, foreign_p2m) for pfn in range(64)]
    # P2M faults, one per class of a P2M/M2P cross-check (pfns 64-73; Linux entry encoding):
    x = d0_extra
    h.frames[x[64]]["m2p"] = 65                 # mismatch: P2M[64] -> x64, whose M2P says 65 (-> x65)
    beyond = x[66] ^ (1 << 36)                  # beyond-max: a bit flip, mfn >= max_page
    assert beyond >= h.max_page
    d0_p2m += [x[64], x[65], beyond,
               x[67], x[67],                    # duplicate: P2M[68] names pfn 67's frame too
               IDENTITY_FRAME_BIT | 69,         # identity: non-RAM 1:1 pfn (informational)
               INVALID_P2M,                     # invalid-in-range: below pfn 71, a dom0 frame
               x[71],
               INVALID_P2M, INVALID_P2M]        # trailing INVALID (as Linux pads the list): no finding
    for pfn, e in enumerate(d0_p2m):
        h.w64((g.mfn(P2M) << 12) + pfn * 8, e)
    d1_raw = h.pickled("d1")
    p2m_faults = [  # what a P2M <-> M2P check must report for the whole list (pfn, mfn, other)
        ("foreign", 60, foreign_p2m, d1_raw),                     # other: raw owner of the frame
        ("mismatch", 64, x[64], 65),                              # other: the M2P's pfn
        ("beyond-max", 66, beyond, h.max_page),                   # other: max_page
        ("duplicate", 67, x[67], 2), ("duplicate", 68, x[67], 2),  # other: pfns sharing the mfn
        ("identity", 69, 69, IDENTITY_FRAME_BIT | 69),            # other: the raw entry
        ("invalid-in-range", 70, INVALID_P2M, 72),                # other: end of the populated range
        ("m2p-orphan", 66, x[66], beyond),                        # pfn: the frame's M2P; other: P2M[pfn]
        ("m2p-orphan", 68, x[68], x[67]),
        ("m2p-orphan", 70, x[70], INVALID_P2M),
    ]
    # dom0's 3-level frame list (crash: CRASH_INFO dom0_pfn_to_mfn_frame_list_list)
    h.w64(g.mfn(FLL) << 12, g.mfn(FL))
    h.w64(g.mfn(FL) << 12, g.mfn(P2M))
    # W's contents: pattern words (bit 0 clear, so as PTEs they are not present)
    wpa = g.mfn(W) << 12
    for i in range(0, PAGE, 8):
        h.w64(wpa + i, (0x5E << 56) | (0x0D << 48) | (wpa + i))
    for n, gg in (("d0", g), ("d1", u)):                     # shared_info.arch
        si = shared_info[n] << 12
        h.w64(si + 0xC10, len(d0_p2m) if n == "d0" else gg.npfn)  # max_pfn (P2M list size)
        h.w64(si + 0xC18, g.mfn(FLL) if n == "d0" else 0)     # pfn_to_mfn_frame_list_list
        if n == "d0":
            h.w64(si + 0xC28, L4 << 12)                      # p2m_cr3
            h.w64(si + 0xC30, GUEST_VMALLOC)                 # p2m_vaddr

    # ---- offlined / broken frames; free frames ------------------------------------------------
    h.claim(0x3F00, "offlined", state="offlined")
    h.claim(0x3F01, "offlined (broken)", state="offlined")
    h.frames[0x3F01]["broken"] = True
    free_runs = []
    for base, n in h.ram:
        run = None
        for mfn in range(base, base + n):
            if mfn in h.frames:
                run = None
                continue
            scrub = cfg["count"] == "C3" and 0x3800 <= mfn < 0x3900
            if run and run[2] == scrub and run[1] == mfn:
                run[1] += 1
            else:
                run = [mfn, mfn + 1, scrub]
                free_runs.append(run)
    chunks = []
    for s, e, scrub in free_runs:
        while s < e:
            order = 0
            while order < MAX_ORDER and s % (2 << order) == 0 and s + (2 << order) <= e:
                order += 1
            chunks.append((s, order, scrub))
            s += 1 << order

    # ---- domain structs ---------------------------------------------------------------------------
    off = cfg["domain_offsets"]
    owned = {n: 0 for n in DOMID}
    for f in h.frames.values():
        if f["owner"] and not f["xen_heap"]:
            owned[f["owner"]] += 1
    tot = {n: (owned[n] if n in ("d0", "d1") else 0) for n in DOMID}
    maxp = {"d0": 256, "d1": 64, "dom_xen": 0, "dom_io": 0, "dom_cow": 0}
    for n, d in h.domains.items():
        pa = d["maddr"]
        h.mem.write(pa + off["domain_id"], struct.pack("<H", DOMID[n]))
        if n in shared_info:
            h.w64(pa + off["shared_info"], h.dm_va(shared_info[n] << 12))
        h.mem.write(pa + off["tot_pages"], struct.pack("<I", tot[n]))
        h.mem.write(pa + off["max_pages"], struct.pack("<I", maxp[n]))
    h.w64(h.domains["d0"]["maddr"] + off["next_in_list"], h.domains["d1"]["va"])
    h.w64(h.domains["d1"]["maddr"] + off["next_in_list"], 0)

    # ---- Xen variables and strings --------------------------------------------------------------
    pdx = h.pdx or {"hole_shift": 0, "bottom_mask": U64, "top_mask": 0, "hole_mask": 0,
                    "ma_va_bottom_mask": U64, "ma_top_mask": 0}
    max_pdx = h.pfn_to_pdx(h.max_page - 1) + 1
    values = {"max_page": h.max_page, "domain_list": h.domains["d0"]["va"],
              "dom_xen": h.domains["dom_xen"]["va"], "dom_io": h.domains["dom_io"]["va"],
              "dom_cow": h.domains["dom_cow"]["va"], "pfn_pdx_bottom_mask": pdx["bottom_mask"],
              "ma_va_bottom_mask": pdx["ma_va_bottom_mask"], "pfn_top_mask": pdx["top_mask"],
              "ma_top_mask": pdx["ma_top_mask"], "pfn_hole_mask": pdx["hole_mask"],
              "pfn_pdx_hole_shift": pdx["hole_shift"], "max_pdx": max_pdx,
              "xen_phys_start": XEN_PHYS_START, "total_pages": sum(n for _, n in h.ram)}
    symbols = {}
    for name, o, size in DATA_VARS:
        h.mem.write(img + DATA + o, values[name].to_bytes(size, "little"))
        symbols[name] = vx + DATA + o
    strings = {"xen_extra_version": cfg["extra"], "xen_changeset": "unavailable",
               "xen_compiler": cfg["compiler"], "xen_compile_date": cfg["compile_date"],
               "xen_compile_time": cfg["compile_date"].split()[3]}
    str_ma = {}
    for name, o in RODATA_STRINGS:
        h.mem.write(img + RODATA + o, strings[name].encode() + b"\0")
        str_ma[name] = img + RODATA + o
    h.w64(img + RODATA, FRAMETABLE)                                   # static const _frame_table
    symbols["_frame_table"] = vx + RODATA
    for name, o in TEXT_FUNCS:
        symbols[name] = vx + o
    symbols.update(idle_pg_table=vx + IDLE_PG_TABLE, l3_xenmap=vx + L3_XENMAP,
                   l2_xenmap=vx + L2_XENMAP, _end=vx + IMG_END)
    map_types = {n: "T" for n, _ in TEXT_FUNCS}
    map_types.update({"_frame_table": "r", "_end": "B"})
    vmci_syms = {"frame_table": symbols["_frame_table"], "max_page": symbols["max_page"],
                 "domain_list": symbols["domain_list"], "dom_xen": symbols["dom_xen"],
                 "dom_io": symbols["dom_io"], "pgd_l4": symbols["idle_pg_table"]}
    vmci_lines = [("PAGESIZE", "4096")] + \
        [(f"SYMBOL({n})", f"{vmci_syms[n]:x}") for n in ("domain_list", "frame_table", "max_page")] + \
        [("SIZE(page_info)", str(PAGE_INFO_SIZE)), ("SIZE(domain)", str(cfg["domain_size"])),
         ("OFFSET(page_info.count_info)", "8"), ("OFFSET(page_info._domain)", "24"),
         ("OFFSET(domain.domain_id)", str(off["domain_id"])),
         ("OFFSET(domain.next_in_list)", str(off["next_in_list"]))] + \
        [(f"SYMBOL({n})", f"{vmci_syms[n]:x}") for n in ("dom_xen", "dom_io", "pgd_l4")]
    vmci_text = "".join(f"{k}={v}\n" for k, v in vmci_lines)

    # ---- M2P contents and the frame table -----------------------------------------------------
    def raw_domain(mfn):
        f = h.frames.get(mfn)
        if f is None:
            return heads.get(mfn, 0)
        return h.pickled(f["owner"]) if f["owner"] else 0

    heads = {s: o for s, o, _ in chunks}
    scrub_set = {m for s, o, sc in chunks if sc for m in range(s, s + (1 << o))}
    free_f = {"owner": None, "xen_heap": False, "allocated": False, "gen": 0, "type": "none",
              "tcount": 0, "validated": False, "pinned": False, "state": "free", "broken": False,
              "m2p": INVALID_M2P}
    all_frames = []
    for base, n in h.ram:
        for mfn in range(base, base + n):
            f = h.frames.get(mfn) or dict(free_f, need_scrub=mfn in scrub_set)
            ci, ti, dr = h.count_info(f), h.type_info(f), raw_domain(mfn)
            pdxv = h.pfn_to_pdx(mfn)
            ftpa = (ft_backing[pdxv * PAGE_INFO_SIZE >> 12] << 12) + (pdxv * PAGE_INFO_SIZE & 0xFFF)
            h.mem.write(ftpa, struct.pack("<QQQII", 0, ci, ti, dr, 0))
            m2pa = (m2p_backing[mfn * 8 >> 12] << 12) + (mfn * 8 & 0xFFF)
            h.w64(m2pa, f["m2p"])
            all_frames.append((mfn, pdxv, f, ci, ti, dr))

    # ---- truth -----------------------------------------------------------------------------------
    frames_out, census = [], {}
    for mfn, pdxv, f, ci, ti, dr in all_frames:
        if f["state"] == "free":
            continue
        owner_name = f["owner"] or "anonymous"
        census.setdefault(owner_name, {}).setdefault(f["type"], 0)
        census[owner_name][f["type"]] += 1
        frames_out.append({"mfn": mfn, "pdx": pdxv, "count_info": ci, "type_info": ti,
                           "domain_raw": dr, "owner": DOMID[f["owner"]] if f["owner"] else None,
                           "type": f["type"], "type_count": f["tcount"], "validated": f["validated"],
                           "pinned": f["pinned"], "count": f["gen"], "state": f["state"],
                           "xen_heap": f["xen_heap"], "m2p": f["m2p"], "role": f["role"]})
    nfree = sum(1 << o for _, o, _ in chunks)
    census["free"] = {"none": nfree}
    free_ranges = []
    for s, o, sc in chunks:
        fr = dict(free_f, need_scrub=sc)
        free_ranges.append({"mfn": s, "pages": 1 << o, "order": o, "pdx": h.pfn_to_pdx(s),
                            "count_info": h.count_info(fr), "type_info": 0, "domain_raw_head": o,
                            "need_scrub": sc})
    nframes = sum(n for _, n in h.ram)
    assert len(frames_out) + nfree == nframes

    # ---- violations -------------------------------------------------------------------------------
    tstr = lambda t: f"{t:016x}"  # noqa: E731
    m4 = "%05x" if key == "4.17" else "%x"
    fm = lambda v: m4 % v  # noqa: E731
    Wm = g.mfn(W)
    ti_W = h.type_info(h.frames[Wm])
    ti_L1k = h.type_info(h.frames[L1k])
    bad_type = lambda saw, exp, mfn: (f"Bad type (saw {tstr(saw)} != exp {tstr(exp)}) for mfn "  # noqa: E731
                                      f"{fm(mfn)} (pfn {fm(h.frames[mfn]['m2p'])})")
    e5_owner = "l1e_owner=0, pg_owner=0" if key == "4.6" else "l1e_owner d0, pg_owner d0"
    viol = [
        {"kind": "writable-as-table", "domain": 0, "l4_mfn": L4,
         "path": [[4, h.idx(GUEST_DM, 4)], [3, 0], [2, 1]], "mfn": Wm, "target_mfn": Wm, "table_mfn": L2dm,
         "entry": h.get_entry(L2dm, 1), "va": GUEST_DM + (1 << 21),
         "details": f"dom0 pfn {W:#x}: type writable, validated, type count 1 (one RW mapping in the "
                    f"direct map), also referenced by dom0 L2 mfn {L2dm:#x} slot 1 as an L1 table",
         "xen_would_say": bad_type(ti_W, h.ptype("l1"), Wm)},
        {"kind": "linear-rw", "domain": 0, "l4_mfn": L4,
         "path": [[4, h.idx(GUEST_VMALLOC, 4)], [3, 0], [2, 390]], "mfn": L2v, "target_mfn": L2dm,
         "table_mfn": L2v,
         "entry": h.get_entry(L2v, 390), "va": GUEST_VMALLOC + (390 << 21),
         "details": f"L2 mfn {L2v:#x} (dom0 pfn 8) slot 390 points with RW at L2 mfn {L2dm:#x} "
                    "(dom0 pfn 2): a linear page table with write permission",
         "xen_would_say": "Attempt to create linear p.t. with write perms"},
        {"kind": "foreign-p2m", "domain": 0, "l4_mfn": L4, "path": None, "mfn": foreign_p2m,
         "target_mfn": foreign_p2m,
         "table_mfn": None, "entry": None, "va": GUEST_VMALLOC + 60 * 8,
         "details": f"dom0 P2M[60] = mfn {foreign_p2m:#x}, owned by d1 (its pfn 20; M2P says 20)",
         "xen_would_say": None},
        {"kind": "table-mapped-rw", "domain": 0, "l4_mfn": L4,
         "path": [[4, h.idx(GUEST_VMALLOC, 4)], [3, 0], [2, 0], [1, 2]], "mfn": L1k, "target_mfn": L1k,
         "table_mfn": L1v,
         "entry": e4, "va": GUEST_VMALLOC + 0x2000,
         "details": f"dom0 L1 mfn {L1v:#x} slot 2 maps L1 table mfn {L1k:#x} (dom0 pfn 6) read-write",
         "xen_would_say": bad_type(ti_L1k, h.ptype("writable"), L1k)},
        {"kind": "foreign-reference", "domain": 0, "l4_mfn": L4,
         "path": [[4, h.idx(GUEST_VMALLOC, 4)], [3, 0], [2, 0], [1, 1]], "mfn": foreign_ref,
         "target_mfn": foreign_ref,
         "table_mfn": L1v, "entry": e5, "va": GUEST_VMALLOC + 0x1000,
         "details": f"dom0 L1 mfn {L1v:#x} slot 1 maps mfn {foreign_ref:#x}, owned by d1 (its pfn 21)",
         "xen_would_say": f"Error getting mfn {fm(foreign_ref)} (pfn {fm(21)}) from L1 entry "
                          f"{e5:016x} for {e5_owner}"},
    ]

    # ---- walks ----------------------------------------------------------------------------------------
    ft_fault = FRAMETABLE + 0x4000 * PAGE_INFO_SIZE                  # pdx 0x4000: not mapped
    rec = 0xFFFF000000000000 | 258 << 39 | 258 << 30 | 258 << 21 | 258 << 12
    xwalk_vas = [DIRECTMAP + 0x1234, h.domains["d0"]["va"], DIRECTMAP + 0x4000000,
                 FRAMETABLE + h.pfn_to_pdx(Wm) * PAGE_INFO_SIZE, ft_fault,
                 RDWR_MPT + Wm * 8, RO_MPT + Wm * 8, vx, symbols["max_page"], symbols["idle_pg_table"],
                 rec, PERDOMAIN, vx + IMG_SIZE]
    if h.pdx:
        xwalk_vas[3:3] = [h.dm_va(0x1000005008), FRAMETABLE + h.pfn_to_pdx(0x1000000) * PAGE_INFO_SIZE,
                          RDWR_MPT + 0x1000000 * 8]
    walks = [h.walk(h.idle, va) for va in xwalk_vas]
    gwalks = []
    for dom, gg, vas in ((0, g, [GUEST_DM + 14 * PAGE, GUEST_KTEXT + 0x10, GUEST_VMALLOC, GUEST_DM + (1 << 21),
                                 GUEST_VMALLOC + 0x2000, RO_MPT + Wm * 8, LINEAR_PT]),
                         (1, u, [0x400000, 0x401008, GUEST_DM + 16 * PAGE, 0x403000])):
        for va in vas:
            w = h.walk(gg.l4, va)
            w["domain"] = dom
            gwalks.append(w)
    wk = {w["va"]: w for w in walks}
    assert wk[ft_fault]["stop"] == "not-present" and wk[ft_fault]["level"] == "L1"
    assert wk[symbols["idle_pg_table"]]["ma"] == h.idle << 12 and wk[rec]["ma"] == h.idle << 12
    assert wk[RO_MPT + Wm * 8]["ma"] == wk[RDWR_MPT + Wm * 8]["ma"]
    assert h.r64(wk[RDWR_MPT + Wm * 8]["ma"]) == W
    gw = {(w["domain"], w["va"]): w for w in gwalks}
    assert gw[(0, GUEST_DM + 14 * PAGE)]["ma"] == g.mfn(14) << 12
    assert gw[(0, GUEST_DM + (1 << 21))]["stop"] == "not-present"

    # ---- notes, registers ------------------------------------------------------------------------------
    cr0, cr4 = 0x8005003B, 0x1526E0
    cpus = [
        {"rip": symbols["do_nmi_crash"] + 0x1F, "rsp": h.dm_va(stacks[0]), "cs": 0xE008, "ss": 0xE010,
         "ds": 0, "rflags": 0x46, "cr0": cr0, "cr2": 0, "cr3": h.idle << 12, "cr4": cr4},
        {"rip": symbols["kexec_crash_save_cpu"] + 0x4B, "rsp": h.dm_va(stacks[1]), "cs": 0xE008,
         "ss": 0xE010, "ds": 0, "rflags": 0x46, "cr0": cr0, "cr2": ft_fault, "cr3": h.idle << 12,
         "cr4": cr4},
    ]
    crash_info = struct.pack("<10Q", cfg["major"], cfg["minor"], str_ma["xen_extra_version"],
                             str_ma["xen_changeset"], str_ma["xen_compiler"], str_ma["xen_compile_date"],
                             str_ma["xen_compile_time"], 0, XEN_PHYS_START, g.mfn(FLL))

    def per_cpu(i, c):
        out = [("Xen", 0x1000002, struct.pack("<4Q", c["cr0"], c["cr2"], c["cr3"], c["cr4"]))]
        if i == 0:
            out.append(("Xen", 0x1000001, crash_info))
        return out

    info = {"h": h, "cfg": cfg, "cpus": cpus, "per_cpu": per_cpu, "vmci_text": vmci_text,
            "vmci_lines": vmci_lines, "symbols": symbols, "map_types": map_types,
            "vmci_syms": vmci_syms, "frames": frames_out, "census": census, "nfree": nfree,
            "free_ranges": free_ranges, "violations": viol, "walks": walks, "gwalks": gwalks,
            "d0": g, "d1": u, "d0_p2m": d0_p2m, "p2m_faults": p2m_faults, "tot": tot, "maxp": maxp,
            "shared_info": shared_info,
            "values": values, "pdx": h.pdx, "str_ma": str_ma, "ft_fault": ft_fault,
            "tables": dict(L4=L4, L2dm=L2dm, L2v=L2v, L1v=L1v, L1k=L1k, W=Wm, P2M=g.mfn(P2M),
                           FLL=g.mfn(FLL), uL4=uL4, cow=cow_mfn), "crash_info": crash_info}
    return info


# =================================================================================================
def _log_46(info):
    """Xen 4.6 console excerpt with the seed's lines for the injected violations."""
    h, t = info["h"], info["tables"]
    fr = h.frames
    W, L2v, L1k, L1v = t["W"], t["L2v"], t["L1k"], t["L1v"]
    viol = {v["kind"]: v for v in info["violations"]}
    fref = viol["foreign-reference"]
    ti = lambda m: h.type_info(fr[m])  # noqa: E731
    ci = lambda m: h.count_info(fr[m])  # noqa: E731
    L, lines = [], []

    def add(text, stamp=None, kind=None, mfn=None):
        pre = "(XEN) " + (f"[{stamp}] " if stamp else "")
        L.append(pre + text)
        if kind:
            lines.append({"line_no": len(L), "mfn": mfn, "kind": kind})

    add(" __  __            _  _    __    ___  ")
    add(" \\ \\/ /___ _ __   | || |  / /_  / _ \\ ")
    add("Xen version 4.6.0 (builder@example.org) (gcc (GCC) 4.8.5) debug=y Tue Oct 13 12:00:00 UTC 2015")
    add("Latest ChangeSet: unavailable")
    add("Bootloader: GRUB 2.02~beta2")
    add("Command line: dom0_mem=256K,max:1M loglvl=all guest_loglvl=all console_timestamps com1=115200,8n1")
    add("Xen-e820 RAM map:")
    add(" 0000000000000000 - 0000000004000000 (usable)")
    add(" 0000001000000000 - 0000001001000000 (usable)")
    b0, b1 = h.pdx["bits"]
    add(f"PFN compression on bits {b0}...{b1}")
    add("Dom0 has maximum 2 VCPUs")
    add("Scrubbing Free RAM on 1 nodes using 2 CPUs")
    add("Std. Loglevel: All")
    add("Guest Loglevel: All")
    add("*** Serial input -> DOM0 (type 'CTRL-a' three times to switch input to Xen)")
    add("Freed 316kB init memory.")
    add("grant_table.c:316:d0v0 Increased maptrack size to 2 frames", "   41.022817")
    add("traps.c:3290: GPF (0000): ffff82d0801a3f1c -> ffff82d08024c8e3", "   57.690204")
    add(f"mm.c:{info['cfg']['line_bad_type']}:d0v1 Bad type (saw {ti(W):016x} != exp {h.ptype('l1'):016x}) "
        f"for mfn {W:x} (pfn {fr[W]['m2p']:x})", "  123.456789", "writable-as-table", W)
    add("mm.c:1376:d0v1 Attempt to create linear p.t. with write perms", "  123.456802",
        "writable-as-table", W)
    add("printk: 3 messages suppressed.", "  124.000117")
    add("mm.c:1376:d0v1 Attempt to create linear p.t. with write perms", "  130.108322", "linear-rw", L2v)
    add("mm.c:1520:d0v1 Failure in alloc_l2_table: entry 390", "  130.108330", "linear-rw", L2v)
    add(f"mm.c:2283:d0v1 Error while validating mfn {L2v:x} (pfn {fr[L2v]['m2p']:x}) for type "
        f"{h.ptype('l2'):016x}: caf=8000000000000003 taf={h.ptype('l2') | 1:016x}", "  130.108341",
        "linear-rw", L2v)
    add(f"mm.c:{info['cfg']['line_bad_type']}:d0v0 Bad type (saw {ti(L1k):016x} != exp "
        f"{h.ptype('writable'):016x}) for mfn {L1k:x} (pfn {fr[L1k]['m2p']:x})", "  131.772150",
        "table-mapped-rw", L1k)
    e4 = viol["table-mapped-rw"]["entry"]
    add(f"mm.c:901:d0v0 Error getting mfn {L1k:x} (pfn {fr[L1k]['m2p']:x}) from L1 entry {e4:016x} "
        "for l1e_owner=0, pg_owner=0", "  131.772163", "table-mapped-rw", L1k)
    fm = fref["mfn"]
    add(f"mm.c:2084:d0v0 Error pfn {fm:x}: rd={h.domains['d0']['va']:016x}, "
        f"od={h.domains['d1']['va']:016x}, caf={ci(fm):08x}, taf={ti(fm):016x}",
        "  131.772170", "foreign-reference", fm)
    add(f"mm.c:901:d0v0 Error getting mfn {fm:x} (pfn {fr[fm]['m2p']:x}) from L1 entry "
        f"{fref['entry']:016x} for l1e_owner=0, pg_owner=0", "  131.772176", "foreign-reference", fm)
    add("printk: 11 messages suppressed.", "  132.000021")
    add("d1v0: upcall vector f3", "  135.550912")
    # the crash: Xen writes the page_info of pdx 0x4000, in the PDX hole (not mapped)
    st = "  140.203311"
    fa = info["ft_fault"]
    rip = info["symbols"]["put_page"] + 0x5A
    add("----[ Xen-4.6.0  x86_64  debug=y  Not tainted ]----", st)
    add("CPU:    1", st)
    add(f"RIP:    e008:[<{rip:016x}>] put_page+0x5a/0x1c0", st)
    add("RFLAGS: 0000000000010246   CONTEXT: hypervisor (d0v1)", st)
    add(f"cr0: 000000008005003b   cr4: 00000000001526e0   cr3: {h.idle << 12:016x}   cr2: {fa:016x}", st)
    add("Xen call trace:", st)
    add(f"   [<{rip:016x}>] put_page+0x5a/0x1c0", st)
    add(f"   [<{info['symbols']['mod_l2_entry'] + 0x2F1:016x}>] mod_l2_entry+0x2f1/0x5b0", st)
    add("", st)
    add(f"Pagetable walk from {fa:016x}:", st, "pagetable-walk", None)
    t_ = h.idle
    for level in (4, 3, 2, 1):
        i = h.idx(fa, level)
        e = h.get_entry(t_, i)
        mfn = (e & FRAME_MASK) >> 12
        m2p = fr[mfn]["m2p"] if mfn in fr else INVALID_M2P
        add(f" L{level}[0x{i:03x}] = {e:016x} {m2p:016x}", st, "pagetable-walk", mfn)
        if not e & P:
            break
        t_ = mfn
    add("", st)
    add("****************************************", st)
    add("Panic on CPU 1:", st)
    add("FATAL PAGE FAULT", st, "fatal-page-fault", None)
    add("[error_code=0002]", st, "fatal-page-fault", None)
    add(f"Faulting linear address: {fa:016x}", st, "fatal-page-fault", None)
    add("****************************************", st)
    add("", st)
    add("Reboot in five seconds...", st)
    return "\n".join(L) + "\n", lines


def _map_text(info):
    syms = info["symbols"]
    types = info["map_types"]
    rows = sorted((va, types.get(n, "D"), n) for n, va in syms.items())
    return "".join(f"{va:016x} {t} {n}\n" for va, t, n in rows)


def write(key, out):
    info = build(key)
    h, cfg = info["h"], info["cfg"]
    name = f"xen-{key}-host"
    files = [name + ".core", name + ".json", name + ".map"]
    res = write_elf_core(os.path.join(out, name + ".core"), machine="x86_64",
                         segments=h.mem.segments(), cpus=info["cpus"], qemu_notes=False,
                         per_cpu_notes=info["per_cpu"],
                         extra_notes=[("VMCOREINFO_XEN", 0, info["vmci_text"].encode())],
                         vaddr_of=h.dm_va)
    assert res["memory"] == h.mem.ranges()
    log = None
    if key == "4.6":
        text, lines = _log_46(info)
        with open(os.path.join(out, name + ".log"), "w") as f:
            f.write(text)
        log = {"file": name + ".log", "lines": lines}
        files.append(name + ".log")
    with open(os.path.join(out, name + ".map"), "w") as f:
        f.write(_map_text(info))
    doms = []
    off = cfg["domain_offsets"]
    for n in ("d0", "d1", "dom_xen", "dom_io", "dom_cow"):
        d = h.domains[n]
        g = info.get(n) if n in ("d0", "d1") else None
        doms.append({"id": DOMID[n], "name": n, "struct_va": d["va"], "struct_maddr": d["maddr"],
                     "pickled": h.pickled(n), "tot_pages": info["tot"][n], "max_pages": info["maxp"][n],
                     "l4_mfn": g.l4 if g else None, "cr3": (g.l4 << 12) if g else None,
                     "vcpus": g.vcpus if g else None,
                     "shared_info_maddr": (info["shared_info"][n] << 12) if n in info["shared_info"] else None,
                     "next_in_list": {"d0": h.domains["d1"]["va"], "d1": 0}.get(n)})
    d0 = info["d0"]
    pdx = info["pdx"]
    man = {
        "core": name + ".core", "xen_version": cfg["version"],
        "layout": {"type": cfg["type"], "count": cfg["count"], "page_info_size": PAGE_INFO_SIZE,
                   "page_info_offsets": {"list": 0, "count_info": 8, "type_info": 16, "_domain": 24,
                                         "tlbflush_timestamp": 28}},
        "max_page": h.max_page, "max_pdx": info["values"]["max_pdx"],
        "ram": [[b, b + n] for b, n in h.ram],
        "xen_phys_start": XEN_PHYS_START, "xen_virt_start": h.vx,
        "directmap_virt_start": DIRECTMAP, "frametable_virt_start": FRAMETABLE,
        "m2p_virt_start": RDWR_MPT, "ro_m2p_virt_start": RO_MPT,
        "pdx": None if pdx is None else {k: pdx[k] for k in ("hole_shift", "bottom_mask", "top_mask",
                                                              "ma_va_bottom_mask", "ma_top_mask",
                                                              "hole_mask")},
        "idle_pg_table": h.idle << 12,
        "symbols": dict(info["symbols"], frame_table=info["vmci_syms"]["frame_table"],
                        pgd_l4=info["vmci_syms"]["pgd_l4"]),
        "symbol_values": info["values"],
        "vmcoreinfo_xen": {k: v for k, v in info["vmci_lines"]},
        "crash_info": dict(zip(("xen_major_version", "xen_minor_version", "xen_extra_version",
                                "xen_changeset", "xen_compiler", "xen_compile_date", "xen_compile_time",
                                "tainted", "xen_phys_start", "dom0_pfn_to_mfn_frame_list_list"),
                               struct.unpack("<10Q", info["crash_info"])),
                           extra_version_string=cfg["extra"]),
        "cpus": [{k: c[k] for k in ("rip", "rsp", "cs", "ss", "rflags", "cr0", "cr2", "cr3", "cr4")}
                 for c in info["cpus"]],
        "domain_offsets": dict(off, size=cfg["domain_size"]),
        "domains": doms,
        "frames": info["frames"], "free_ranges": info["free_ranges"],
        "census": info["census"], "free_frames": info["nfree"],
        "violations": info["violations"], "log": log,
        "p2m": {"domain": 0, "pfn_count": len(info["d0_p2m"]), "va": GUEST_VMALLOC,
                "mfn": info["tables"]["P2M"],
                "foreign": [{"pfn": 60, "mfn": info["violations"][2]["mfn"], "owner": 1}],
                "faults": [{"class": c, "pfn": p, "mfn": m, "other": o} for c, p, m, o in info["p2m_faults"]],
                "frame_list_list_mfn": info["tables"]["FLL"]},
        "m2p_samples": [{"mfn": m, "pfn": h.frames[m]["m2p"]}
                        for m in [d0.mfn(p) for p in (0, 2, 10, 11, 14)] +
                        [info["d1"].mfn(p) for p in (0, 20, 21)] + [0x10, 0x3F00, info["tables"]["cow"]]],
        "walks": info["walks"], "guest_walks": info["gwalks"],
    }
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(man, f, sort_keys=True, indent=1)
        f.write("\n")
    return files
