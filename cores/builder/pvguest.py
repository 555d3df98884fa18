"""Synthetic Xen PV guests dumped as ``xl dump-core`` files (``pv-x86_64.xc``, ``pv-i386-pae.xc``).

Independent of ``xenstructs``: every value comes from this module's intent. Facts used
(shared/reference/xen-facts.md §2.2-2.4, §4, §6.1; checked against Xen and Linux sources, see
cores/README.md):

* PV page-table entries hold machine frame numbers; the dump has guest pages indexed by pfn
  (``.xen_p2m`` gives each page's mfn), so a walker maps entry mfn -> dump page via the p2m.
* 64-bit PV: Xen forces _PAGE_USER on present L2/L3/L4 entries and on L1 entries; a kernel-only L1
  entry (no US from the guest) gets _PAGE_GUEST_KERNEL (bit 52) | US; a user L1 entry gets G | US
  (``adjust_guest_l1e`` etc., xen/arch/x86/pv/mm.h); L4 entries also get A. Linux PV clears
  _PAGE_GLOBAL from __supported_pte_mask, so kernel entries have no G.
* 32-bit PV (compat): L1/L2 entries are not adjusted; L3 (PDPT) entries get US | RW added by Xen
  (``adjust_guest_l3e``: Xen runs the guest on a long-mode L4 whose slot 0 points at the guest L3);
  A is set by the hardware walk. ctrlreg[3] and shared_info.arch.p2m_cr3 hold the L3 mfn rotated:
  ``(mfn << 12 | mfn >> 20) & 0xffffffff``.
* Xen slots 256-271 of every 64-bit PV L4 point at Xen frames that are not guest pages, hence not
  in the dump (slot 258 = the L4 itself: the linear page-table slot). In the 32-bit guest's top L2
  (the PGT_pae_xen_l2 page) slots 428.. (0xF5800000..) hold Xen's compat M2P (2 MiB pages of Xen
  frames, not in the dump).
"""

import json
import os
import struct

from .xccore import write_xc_core

PAGE = 0x1000
P, RW, US, PWT, PCD, A, D, PS, G = 1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0x100
NX = 1 << 63
GUEST_KERNEL = 1 << 52
FRAME = 0x000FFFFFFFFFF000
U64, U32 = (1 << 64) - 1, (1 << 32) - 1

# __PAGE_HYPERVISOR_* (x86_64 asm/page.h): RO = P|A|NX, RW = RO|D|RW, RX = P|A, (plain) = RX|D|RW
HV_RO, HV_RW, HV = P | A | NX, P | A | NX | D | RW, P | A | D | RW

GEOMETRY = {
    "4level": (("PML4E", "PDPTE", "PDE", "PTE"), (39, 30, 21, 12), (9, 9, 9, 9)),
    "pae": (("PDPTE", "PDE", "PTE"), (30, 21, 12), (2, 9, 9)),
}

DM64 = 0xFFFF888000000000           # Linux x86_64 direct map (PAGE_OFFSET, L4 slot 273)
KTEXT64 = 0xFFFFFFFF81000000
VMALLOC64 = 0xFFFFC90000000000      # slot 402: the linear P2M list
RO_MPT64 = 0xFFFF800000000000
LINEAR_PT64 = 0xFFFF810000000000
PAGE_OFFSET32 = 0xC0000000
P2M_VA32 = 0xF1000000               # vmalloc area below Xen's 0xF5800000
COMPAT_M2P32 = 0xF5800000

CR0 = 0x80050033                    # PG|AM|WP|NE|ET|MP|PE
CR4 = 0x620                         # PAE|OSFXSR|OSXMMEXCPT
VGCF_i387_valid, VGCF_in_kernel, VGCF_online = 1, 4, 0x20


def canon(va):
    va &= (1 << 48) - 1
    return va | (U64 ^ ((1 << 48) - 1)) if va >> 47 & 1 else va


def rot_cr3(mfn):
    """xen_pfn_to_cr3() of a 32-bit guest."""
    return ((mfn << 12) | (mfn >> 20)) & U32


def mfn_layout(npfn, hole, lo_base, hi_base, extra_high=(), extra_low=()):
    """Scattered machine frames: not equal to pfn, not monotonic; every 7th pfn (and ``extra_high``)
    above 4 GiB."""
    high = {p for p in range(npfn) if p % 7 == 3} | set(extra_high)
    high -= set(extra_low)
    out = {}
    for pfn in range(npfn):
        if pfn in hole:
            continue
        if pfn in high:
            out[pfn] = hi_base + (pfn * 53 + 5) % 1021
        else:
            out[pfn] = lo_base + ((pfn * 37 + 11) % 509) * 2
    assert len(set(out.values())) == len(out)
    assert all(m != p for p, m in out.items())
    return out


class Guest:
    def __init__(self, width, mode, npfn, p2m, tag):
        self.width, self.mode, self.npfn, self.tag = width, mode, npfn, tag
        self.names, self.shifts, self.widths = GEOMETRY[mode]
        self.esize = 8
        self.p2m = dict(p2m)
        self.m2p = {m: p for p, m in p2m.items()}
        self.mem = {p: bytearray(PAGE) for p in p2m}       # every populated pfn is in the dump
        self.role = {}                                     # pfn -> what the builder made it
        self.xen = {}                                      # mfn -> role (Xen frames, not in the dump)
        self.intent = {}                                   # root name -> {va: (pfn, kind)}
        self.problems = []

    # -- memory ---------------------------------------------------------------------------------------
    def claim(self, pfn, role):
        assert pfn in self.p2m and pfn not in self.role, (hex(pfn), role, self.role.get(pfn))
        self.role[pfn] = role
        return pfn

    def mfn(self, pfn):
        return self.p2m[pfn]

    def pattern(self, pfn):
        """u64 words 0x5e<<56 | tag<<48 | (pfn << 12 | offset): the page's pseudo-physical address."""
        page = self.mem[pfn]
        for i in range(0, PAGE, 8):
            page[i:i + 8] = ((0x5E << 56) | (self.tag << 48) | (pfn << 12) | i).to_bytes(8, "little")

    def write(self, pfn, off, value, size):
        self.mem[pfn][off:off + size] = (value & ((1 << 8 * size) - 1)).to_bytes(size, "little")

    def page_of_mfn(self, mfn):
        pfn = self.m2p.get(mfn)
        return None if pfn is None else self.mem[pfn]

    def read_ma(self, ma, n):
        page = self.page_of_mfn(ma >> 12)
        if page is None:
            return None
        off = ma & 0xFFF
        return bytes(page[off:off + n])

    # -- tables ---------------------------------------------------------------------------------------
    def idx(self, va, lvl):
        return va >> self.shifts[lvl] & ((1 << self.widths[lvl]) - 1)

    def get_entry(self, table_mfn, i):
        page = self.page_of_mfn(table_mfn)
        return None if page is None else int.from_bytes(page[i * 8:i * 8 + 8], "little")

    def set_entry(self, table_mfn, i, value):
        page = self.page_of_mfn(table_mfn)
        assert page is not None and 0 <= i < 512
        page[i * 8:i * 8 + 8] = (value & U64).to_bytes(8, "little")

    def link(self, table_mfn, i, child_mfn, flags):
        assert not (self.get_entry(table_mfn, i) or 0) & P, (hex(table_mfn), i)
        self.set_entry(table_mfn, i, (child_mfn << 12) | flags)

    def ensure(self, root_mfn, va, lvl_target, inter_flags, pool):
        """mfn of the table holding the level-``lvl_target`` entry for ``va``; intermediate tables
        are taken from ``pool`` (an iterator of pfns) and linked with ``inter_flags(lvl)``."""
        t = root_mfn
        for lvl in range(lvl_target):
            i = self.idx(va, lvl)
            e = self.get_entry(t, i)
            if not e & P:
                pfn = self.claim(next(pool), f"{self.names[lvl + 1][:-1]} table")
                self.link(t, i, self.mfn(pfn), inter_flags(lvl))
                t = self.mfn(pfn)
            else:
                assert not e & PS
                t = (e & FRAME) >> 12
        return t

    def map4k(self, roots, root_mfn, va, pfn, leaf, inter_flags, pool, kind="data"):
        t = self.ensure(root_mfn, va, len(self.names) - 1, inter_flags, pool)
        i = self.idx(va, len(self.names) - 1)
        self.link(t, i, self.mfn(pfn), leaf)
        for r in roots:
            self.intent.setdefault(r, {})[va] = (pfn, kind)

    # -- truth: the CPU's walk over this builder's memory ------------------------------------------------
    def walk(self, root_mfn, va, root_name=None, why=None):
        out = {"va": va, "ma": None, "pfn": None, "page_size": None, "stop": None, "level": None,
               "levels": [], "writable": None, "user": None, "nx": None, "kernel_only": None,
               "in_dump": None, "root": root_name, "root_mfn": root_mfn}
        if why:
            out["why"] = why
        if self.mode == "4level" and canon(va) != va:
            out["stop"] = "non-canonical"
            return out
        rw = us = True
        nx = False
        t = root_mfn
        for lvl, name in enumerate(self.names):
            i = self.idx(va, lvl)
            e = self.get_entry(t, i)
            out["levels"].append({"entry": name, "mfn": t, "pfn": self.m2p.get(t), "index": i, "value": e})
            if e is None:
                out.update(stop="not-in-dump", level=name)
                return out
            if not e & P:
                out.update(stop="not-present", level=name)
                return out
            last = lvl == len(self.names) - 1
            large = bool(e & PS) and not last and (name == "PDE" or (name == "PDPTE" and self.mode == "4level"))
            rsv = 0
            if name == "PML4E":
                rsv |= PS
            if self.mode == "pae" and name == "PDPTE":
                rsv |= NX
            if large:
                rsv |= ((1 << self.shifts[lvl]) - 1) & ~((1 << 13) - 1)
            if e & rsv:
                out.update(stop="reserved", level=name)
                return out
            if not (self.mode == "pae" and name == "PDPTE"):
                rw &= bool(e & RW)
                us &= bool(e & US)
                nx |= bool(e & NX)
            if large or last:
                size = 1 << self.shifts[lvl]
                frame = (e & FRAME) & ~(size - 1)
                ma = frame + (va & (size - 1))
                pfn = self.m2p.get(ma >> 12)
                out.update(ma=ma, pfn=pfn, page_size=size, level=name, writable=rw, user=us, nx=nx,
                           kernel_only=bool(e & GUEST_KERNEL), in_dump=pfn is not None)
                return out
            t = (e & FRAME) >> 12
        raise AssertionError

    def expect(self, walks, root_mfn, root_name, va, why, stop=None, level=None, pfn=None, ma=None):
        w = self.walk(root_mfn, va, root_name, why)
        assert w["stop"] == stop, (hex(va), w, stop)
        if level is not None:
            assert w["level"] == level, (hex(va), w["level"], level)
        if pfn is not None:
            assert w["pfn"] == pfn and w["ma"] == (self.mfn(pfn) << 12) + (va & 0xFFF), (hex(va), w, pfn)
        if ma is not None:
            assert w["ma"] == ma, (hex(va), w, hex(ma))
        walks.append(w)
        return w

    def pages(self, roots):
        """Every intended 4 KiB guest mapping of each root, with the rights the CPU would apply."""
        out = []
        for rname, rmfn in roots:
            for va, (pfn, kind) in sorted(self.intent.get(rname, {}).items()):
                w = self.walk(rmfn, va)
                assert w["ma"] == self.mfn(pfn) << 12 and w["page_size"] == PAGE, (rname, hex(va), w)
                out.append({"root": rname, "va": va, "ma": w["ma"], "pfn": pfn, "size": PAGE,
                            "writable": w["writable"], "user": w["user"], "nx": w["nx"],
                            "kernel_only": w["kernel_only"], "kind": kind})
        return out

    def enumerate(self, root_mfn, skip):
        """Independent check of ``pages``: every present 4 KiB leaf reachable from ``root_mfn``
        (``skip(lvl, index, va_base)`` prunes Xen's slots and injected entries)."""
        found = {}

        def rec(t, lvl, base):
            for i in range(1 << self.widths[lvl]):
                va = base + (i << self.shifts[lvl])
                if skip(lvl, i, va):
                    continue
                e = self.get_entry(t, i)
                if e is None or not e & P:
                    continue
                if lvl == len(self.names) - 1:
                    found[canon(va) if self.mode == "4level" else va] = (e & FRAME) >> 12
                else:
                    assert not e & PS
                    rec((e & FRAME) >> 12, lvl + 1, va)
        rec(root_mfn, 0, 0)
        return found

    def data(self, root_mfn, root_name, vas):
        out = []
        for va in vas:
            w = self.walk(root_mfn, va)
            raw = self.read_ma(w["ma"], 16)
            assert raw is not None
            out.append({"root": root_name, "va": va, "hex": raw.hex()})
        return out

    def dump_pages(self):
        return [(pfn, self.p2m[pfn], bytes(self.mem[pfn])) for pfn in sorted(self.p2m)]


# =================================================================================================
def _shared_info_64(max_pfn, fll, p2m_cr3, p2m_vaddr, gen, cr2s):
    si = bytearray(PAGE)
    for i, cr2 in enumerate(cr2s):                       # vcpu_info[i]: upcall_mask @1, arch.cr2 @16
        si[i * 64 + 1] = 1
        struct.pack_into("<Q", si, i * 64 + 16, cr2)
    struct.pack_into("<III", si, 3072, 2, 1700000000, 0)    # wc_version, wc_sec, wc_nsec
    struct.pack_into("<6Q", si, 3088, max_pfn, fll, 0, p2m_cr3, p2m_vaddr, gen)
    return bytes(si)


def _shared_info_32(max_pfn, fll, p2m_cr3, p2m_vaddr, gen, cr2s):
    si = bytearray(PAGE)
    for i, cr2 in enumerate(cr2s):                       # vcpu_info[i]: arch.cr2 @8
        si[i * 64 + 1] = 1
        struct.pack_into("<I", si, i * 64 + 8, cr2)
    struct.pack_into("<III", si, 2304, 2, 1700000000, 0)
    struct.pack_into("<7I", si, 2316, max_pfn, fll, 0, p2m_cr3, p2m_vaddr, gen, 0)
    return bytes(si)


def _map_text(symbols, types):
    rows = sorted((va, types.get(n, "D"), n) for n, va in symbols.items())
    w = 16 if max(va for va, _, _ in rows) >> 32 else 8
    return "".join(f"{va:0{w}x} {t} {n}\n" for va, t, n in rows)


def _intervals(xs):
    xs = sorted(xs)
    out = []
    for x in xs:
        if out and out[-1][1] == x:
            out[-1][1] += 1
        else:
            out.append([x, x + 1])
    return out


# =================================================================================================
def build_x86_64():
    NPFN, HOLE = 256, set(range(0xF0, 0xF8))
    p2m = mfn_layout(NPFN, HOLE, 0x2A000, 0x140000, extra_high=(0x10, 0x16), extra_low=(0x11,))
    g = Guest(8, "4level", NPFN, p2m, tag=0x64)
    pool_pfns = list(range(0x18, 0x20)) + list(range(0x70, 0x78))
    pool = iter(pool_pfns)                               # intermediate tables
    # ---- pfn roles ---------------------------------------------------------------------------------
    L4, L4P, L4U = g.claim(0x10, "init_top_pgt (L4)"), g.claim(0x11, "process kernel L4"), g.claim(0x12, "process user L4")
    L3U = g.claim(0x13, "user L3 (shared by process kernel/user L4)")
    TEXT = [g.claim(p, "kernel text") for p in range(0x20, 0x28)]
    RODATA = [g.claim(p, "kernel rodata") for p in (0x28, 0x29)]
    DATA = [g.claim(p, "kernel data") for p in (0x2A, 0x2B)]
    P2M_LIST = g.claim(0x30, "linear P2M list page (xen_p2m_addr)")
    FLL, FL = g.claim(0x32, "pfn_to_mfn_frame_list_list"), g.claim(0x33, "pfn_to_mfn_frame_list")
    UTEXT, UDATA, USTACK = g.claim(0x40, "user text"), g.claim(0x42, "user data"), g.claim(0x44, "user stack")
    g.claim(0x41, "user text"), g.claim(0x45, "user stack")
    KSTACK0, KSTACK1 = g.claim(0x51, "vcpu0 kernel stack"), g.claim(0x53, "vcpu1 kernel stack")
    GDT0, GDT1 = g.claim(0x55, "vcpu0 GDT"), g.claim(0x56, "vcpu1 GDT")
    for p in range(NPFN):
        if p in p2m and p not in g.role and p not in pool_pfns:
            g.claim(p, "data")
    tables = {L4, L4P, L4U, L3U} | set(pool_pfns)
    for p in p2m:
        if p not in tables and p not in (P2M_LIST, FLL, FL, GDT0, GDT1, DATA[0]):
            g.pattern(p)

    m = g.mfn
    # Xen's frames (not guest pages: not in the dump)
    X = {"ro_m2p_l3": 0x8001, "perdomain_l3": 0x8003, "rw_m2p_l3": 0x8005, "directmap_l3": 0x8007}
    for k, v in X.items():
        g.xen[v] = k

    def xen_slots(l4):
        g.set_entry(l4, 256, (X["ro_m2p_l3"] << 12) | HV_RO | US)     # RO M2P, guest-readable
        g.set_entry(l4, 258, (l4 << 12) | HV_RW)                       # linear page tables
        g.set_entry(l4, 260, (X["perdomain_l3"] << 12) | HV_RW)
        g.set_entry(l4, 261, (X["rw_m2p_l3"] << 12) | HV)
        g.set_entry(l4, 262, (X["directmap_l3"] << 12) | HV)

    inter = lambda lvl: P | RW | US | A | D  # noqa: E731  (_PAGE_TABLE; Xen: US on L2-L4, A on L4)
    K_RW = P | RW | A | D | NX | US | GUEST_KERNEL      # after adjust_guest_l1e
    K_RO = P | A | NX | US | GUEST_KERNEL
    K_RX = P | A | US | GUEST_KERNEL
    U_RW = P | RW | US | A | D | NX | G
    U_RX = P | US | A | G
    KR = ["vcpu0.cr3", "vcpu1.cr3"]                      # kernel mappings: init_top_pgt and the process L4
    L4m = m(L4)
    # kernel image (one L1 covers 0xffffffff81000000-0xffffffff811fffff)
    for i, p in enumerate(TEXT):
        g.map4k(KR, L4m, KTEXT64 + i * PAGE, p, K_RX, inter, pool, "kernel text")
    for i, p in enumerate(RODATA):
        g.map4k(KR, L4m, KTEXT64 + 0x8000 + i * PAGE, p, K_RO, inter, pool, "kernel rodata")
    for i, p in enumerate(DATA):
        g.map4k(KR, L4m, KTEXT64 + 0xA000 + i * PAGE, p, K_RW, inter, pool, "kernel data")
    g.map4k(KR, L4m, KTEXT64 + 0x10000, L4, K_RO, inter, pool, "page table")
    # direct map: every populated pfn; page tables read-only (Xen refuses writable mappings of them)
    for p in sorted(p2m):
        is_table = p in tables
        g.map4k(KR, L4m, DM64 + (p << 12), p, K_RO if is_table else K_RW, inter, pool,
                "page table" if is_table else "direct map")
    # linear P2M list (vmalloc)
    g.map4k(KR, L4m, VMALLOC64, P2M_LIST, K_RW, inter, pool, "p2m list")
    # user process: user L3 shared by the process kernel L4 and the user L4 (slot 0 and 255)
    g.link(m(L4P), 0, m(L3U), inter(0) | A)
    g.link(m(L4U), 0, m(L3U), inter(0) | A)
    UR = ["vcpu1.cr3", "vcpu1.cr1"]
    g.map4k(UR, m(L4U), 0x400000, UTEXT, U_RX, inter, pool, "user text")
    g.map4k(UR, m(L4U), 0x401000, UTEXT + 1, U_RX, inter, pool, "user text")
    g.map4k(UR, m(L4U), 0x600000, UDATA, U_RW, inter, pool, "user data")
    g.map4k(UR, m(L4U), 0x7FFFFFFDE000, USTACK, U_RW, inter, pool, "user stack")
    g.map4k(UR, m(L4U), 0x7FFFFFFDF000, USTACK + 1, U_RW, inter, pool, "user stack")
    # process kernel L4: kernel slots copied from init_top_pgt, user slots 0 and 255 shared via L4U
    for s in range(272, 512):
        e = g.get_entry(L4m, s)
        if e:
            g.set_entry(m(L4P), s, e)
    g.set_entry(m(L4P), 255, g.get_entry(m(L4U), 255))
    for l4 in (L4m, m(L4P), m(L4U)):
        xen_slots(l4)
    # injected: PML4E with PS=1 in the process user L4 (Xen would refuse it): reserved
    rsv_va = 0x0000010000000000
    g.set_entry(m(L4U), 2, (m(0x1F) << 12) | P | RW | US | A | PS)
    g.problems.append({"root": "vcpu1.cr1", "va_start": rsv_va, "va_end": rsv_va + (1 << 39),
                       "level": "PML4E", "reason": "reserved", "injected": True})

    # ---- Linux P2M list, frame lists, variables ----------------------------------------------------
    p2m_size = 512                                        # ALIGN(nr_pages, P2M_PER_PAGE)
    for pfn in range(p2m_size):
        g.write(P2M_LIST, pfn * 8, p2m.get(pfn, U64), 8)
    g.write(FL, 0, m(P2M_LIST), 8)
    g.write(FLL, 0, m(FL), 8)
    invalid = [p for p in range(p2m_size) if p not in p2m]
    syms = {
        "_text": KTEXT64, "_stext": KTEXT64, "startup_xen": KTEXT64 + 0x100,
        "xen_hypervisor_callback": KTEXT64 + 0x2000, "xen_failsafe_callback": KTEXT64 + 0x2100,
        "entry_SYSCALL_64": KTEXT64 + 0x2200, "asm_exc_page_fault": KTEXT64 + 0x3000,
        "default_idle": KTEXT64 + 0x1200, "_etext": KTEXT64 + 0x8000,
        "xen_p2m_addr": KTEXT64 + 0xA000, "xen_p2m_size": KTEXT64 + 0xA008,
        "xen_max_p2m_pfn": KTEXT64 + 0xA010, "max_pfn": KTEXT64 + 0xA018,
        "HYPERVISOR_shared_info": KTEXT64 + 0xA020, "init_mm": KTEXT64 + 0xA100,
        "init_top_pgt": KTEXT64 + 0x10000,
    }
    types = {n: "T" for n in ("_text", "_stext", "startup_xen", "xen_hypervisor_callback",
                               "xen_failsafe_callback", "entry_SYSCALL_64", "asm_exc_page_fault",
                               "default_idle", "_etext")}
    MM_PGD = 0x50                                        # invented mm_struct.pgd offset
    values = {"xen_p2m_addr": VMALLOC64, "xen_p2m_size": p2m_size, "xen_max_p2m_pfn": p2m_size,
              "max_pfn": NPFN, "HYPERVISOR_shared_info": 0xFFFFFFFFFF5FD000,
              "init_mm.pgd": syms["init_top_pgt"]}
    d0 = DATA[0]
    for n in ("xen_p2m_addr", "xen_p2m_size", "xen_max_p2m_pfn", "max_pfn", "HYPERVISOR_shared_info"):
        g.write(d0, syms[n] - (KTEXT64 + 0xA000), values[n], 8)
    g.write(d0, 0x100 + MM_PGD, values["init_mm.pgd"], 8)

    # ---- vcpus -----------------------------------------------------------------------------------
    def stack_top(p):
        return DM64 + (p << 12) + PAGE
    traps = [{"vector": 14, "flags": 0, "cs": 0xE033, "address": syms["asm_exc_page_fault"]},
             {"vector": 13, "flags": 0, "cs": 0xE033, "address": KTEXT64 + 0x3100},
             {"vector": 3, "flags": 3, "cs": 0xE033, "address": KTEXT64 + 0x3200}]
    traps = sorted(traps, key=lambda t: t["vector"])
    trap_ctxt = [next((t for t in traps if t["vector"] == v), {}) for v in range(256)]
    common = dict(cr0=CR0, cr4=CR4, event_callback_eip=syms["xen_hypervisor_callback"],
                  failsafe_callback_eip=syms["xen_failsafe_callback"],
                  syscall_callback_eip=syms["entry_SYSCALL_64"], vm_assist=0x4, kernel_ss=0xE02B,
                  gdt_ents=16, trap_ctxt=trap_ctxt)
    cr2_1 = 0x600010
    v0 = dict(common, id=0, rip=syms["default_idle"] + 0x14, rsp=stack_top(KSTACK0) - 0x1A8,
              rflags=0x246, cs=0xE033, ss=0xE02B, rbp=stack_top(KSTACK0) - 0x100, rax=0, rdi=1,
              kernel_sp=stack_top(KSTACK0), flags=VGCF_i387_valid | VGCF_in_kernel | VGCF_online,
              ctrlreg=[CR0, 0, 0, m(L4) << 12, CR4, 0, 0, 0], gdt_frames=[m(GDT0)],
              gs_base_kernel=DM64 + (0x60 << 12))
    v1 = dict(common, id=1, rip=0x401234, rsp=0x7FFFFFFDFE40, rflags=0x202, cs=0xE033, ss=0xE02B,
              rax=0x3C, kernel_sp=stack_top(KSTACK1), flags=VGCF_i387_valid | VGCF_online,
              ctrlreg=[CR0, m(L4U) << 12, cr2_1, m(L4P) << 12, CR4, 0, 0, 0], gdt_frames=[m(GDT1)],
              fs_base=0x7F0000001000, gs_base_kernel=0, gs_base_user=0)
    vcpus = [v0, v1]
    roots = [("vcpu0.cr3", m(L4)), ("vcpu1.cr3", m(L4P)), ("vcpu1.cr1", m(L4U))]
    shared = _shared_info_64(NPFN, m(FLL), m(L4) << 12, VMALLOC64, 0, [0, cr2_1])

    # ---- walks -------------------------------------------------------------------------------------
    W = []
    R0, R1U = roots[0][1], roots[2][1]

    def e(root, va, why, **kw):
        return g.expect(W, dict(roots)[root], root, va, why, **kw)
    e("vcpu0.cr3", DM64 + (5 << 12) + 0x10, "direct map: va = PAGE_OFFSET + pfn<<12 reads pfn 5", pfn=5)
    e("vcpu0.cr3", DM64 + (0x0A << 12) + 0xFF8, "direct map of a frame above 4 GiB (pfn 0x0a)", pfn=0x0A)
    e("vcpu0.cr3", DM64 + (L4 << 12), "direct map of the L4 itself: read-only", pfn=L4)
    e("vcpu0.cr3", DM64 + (0xF3 << 12), "direct map of a pfn in the P2M hole", stop="not-present", level="PTE")
    e("vcpu0.cr3", DM64 + (0x100 << 12), "beyond the last pfn: PTE not present", stop="not-present", level="PTE")
    e("vcpu0.cr3", KTEXT64 + 0x1234, "kernel text: RO, executable, _PAGE_GUEST_KERNEL", pfn=TEXT[1])
    e("vcpu0.cr3", syms["xen_p2m_addr"], "the variable xen_p2m_addr (kernel .data)", pfn=DATA[0])
    e("vcpu0.cr3", syms["init_top_pgt"], "init_top_pgt through the kernel image mapping", pfn=L4)
    e("vcpu0.cr3", VMALLOC64 + 0x10 * 8, "linear P2M list entry of pfn 0x10", pfn=P2M_LIST)
    e("vcpu0.cr3", RO_MPT64 + m(5) * 8, "RO M2P (Xen slot 256): its L3 is Xen's, not in the dump",
      stop="not-in-dump", level="PDPTE")
    lin = LINEAR_PT64 | 258 << 30 | 258 << 21 | 258 << 12
    e("vcpu0.cr3", canon(lin), "Xen's linear slot 258 four times: the L4 itself", ma=m(L4) << 12)
    dmva = DM64 + (5 << 12)
    pte_va = canon(LINEAR_PT64 | (dmva >> 9 & ((1 << 39) - 1) & ~7))
    e("vcpu0.cr3", pte_va, "linear slot: the PTE mapping DM+pfn 5", ma=None)
    e("vcpu0.cr3", 0x400000, "user text is not mapped in init_top_pgt", stop="not-present", level="PML4E")
    e("vcpu1.cr3", 0x400010, "process kernel L4: user text", pfn=UTEXT)
    e("vcpu1.cr1", 0x600008, "process user L4 (ctrlreg[1]): user data", pfn=UDATA)
    e("vcpu1.cr1", 0x7FFFFFFDFE40, "user stack (vcpu1 rsp)", pfn=USTACK + 1)
    e("vcpu1.cr1", DM64 + 0x1000, "the user L4 has no kernel mappings", stop="not-present", level="PML4E")
    e("vcpu1.cr3", DM64 + (0x42 << 12), "process kernel L4: direct map shared with init_top_pgt", pfn=0x42)
    e("vcpu1.cr1", rsv_va + 0x1000, "injected PML4E with PS=1", stop="reserved", level="PML4E")
    e("vcpu1.cr1", 0x0000800000000000, "non-canonical", stop="non-canonical")
    wk = {(w["root"], w["va"]): w for w in W}
    w = wk[("vcpu0.cr3", pte_va)]
    dm_l1 = g.walk(R0, dmva)["levels"][3]["mfn"]
    assert w["ma"] == (dm_l1 << 12) + 5 * 8 and w["writable"] and not w["user"]
    assert int.from_bytes(g.read_ma(w["ma"], 8), "little") & FRAME == m(5) << 12

    # ---- independent check of the intent ------------------------------------------------------------
    def skip(lvl, i, va):
        return lvl == 0 and (256 <= i < 272 or (i == 2))
    for rname, rmfn in roots:
        found = g.enumerate(rmfn, skip)
        want = {va: m(pfn) for va, (pfn, _) in g.intent.get(rname, {}).items()}
        assert found == want, (rname, set(found) ^ set(want))

    pages = g.pages(roots)
    data = g.data(R0, "vcpu0.cr3", [DM64 + (5 << 12), KTEXT64 + 0x1000, VMALLOC64, syms["xen_p2m_addr"],
                                    DM64 + (0x0A << 12) + 0x800])
    data += g.data(R1U, "vcpu1.cr1", [0x600000, 0x7FFFFFFDF000])
    vinfo = []
    for v, lmfn in ((v0, m(L4)), (v1, m(L4P))):
        vinfo.append({"id": v["id"], "cr3": v["ctrlreg"][3], "l4_mfn": lmfn, "l4_pfn": g.m2p[lmfn],
                      "cr1": v["ctrlreg"][1], "user_l4_mfn": (v["ctrlreg"][1] >> 12) or None,
                      "cr0": v["ctrlreg"][0], "cr2": v["ctrlreg"][2], "cr4": v["ctrlreg"][4],
                      "rip": v["rip"], "rsp": v["rsp"], "rflags": v["rflags"], "cs": v["cs"], "ss": v["ss"],
                      "kernel_ss": v["kernel_ss"], "kernel_sp": v["kernel_sp"], "flags": v["flags"],
                      "in_kernel": bool(v["flags"] & VGCF_in_kernel), "gdt_frames": v["gdt_frames"],
                      "fs_base": v.get("fs_base", 0), "gs_base_kernel": v.get("gs_base_kernel", 0),
                      "event_callback_eip": v["event_callback_eip"]})
    return dict(
        name="pv-x86_64", g=g, guest_width=8, machine="x86_64", mode="4level", vcpus=vcpus, vinfo=vinfo,
        shared=shared, walks=W, pages=pages, data=data, symbols=syms, types=types, values=values,
        linux_p2m={"va": VMALLOC64, "size": p2m_size, "entry_size": 8, "invalid_pfns": invalid,
                   "invalid_ranges": _intervals(invalid), "list_pfns": [P2M_LIST],
                   "list_mfns": [m(P2M_LIST)], "frame_list_list_mfn": m(FLL), "frame_list_mfn": m(FL)},
        shared_info={"max_pfn": NPFN, "pfn_to_mfn_frame_list_list": m(FLL), "p2m_cr3": m(L4) << 12,
                     "p2m_vaddr": VMALLOC64, "p2m_generation": 0, "arch_offset": 3088,
                     "vcpu_cr2": [0, cr2_1]},
        struct_offsets={"mm_struct.pgd": MM_PGD},
        xen_slots={"256": "RO M2P L3 (Xen frame)", "258": "linear: the L4 itself",
                   "260": "per-domain L3 (Xen frame)", "261": "RW M2P L3 (Xen frame)",
                   "262": "Xen direct map L3 (Xen frame)"},
        roots=roots, problems=g.problems)


# =================================================================================================
def build_i386_pae():
    NPFN, HOLE = 256, set(range(0xE0, 0xE4))
    p2m = mfn_layout(NPFN, HOLE, 0x3C000, 0x180000, extra_high=(0x10, 0x15), extra_low=(0x11,))
    g = Guest(4, "pae", NPFN, p2m, tag=0x32)
    L3S = g.claim(0x10, "swapper_pg_dir (L3)")
    L3P = g.claim(0x11, "process L3")
    KPMD, KPMD_P = g.claim(0x14, "swapper kernel pmd (L2 for 3-4 GiB, pae_xen_l2)"), g.claim(0x15, "process kernel pmd copy (pae_xen_l2)")
    UPMD0, UPMD1, UPMD2 = g.claim(0x16, "process pmd 0"), g.claim(0x17, "process pmd 1 (empty)"), g.claim(0x1C, "process pmd 2")
    TEXT = [g.claim(p, "kernel text") for p in range(0x20, 0x28)]
    RODATA = [g.claim(p, "kernel rodata") for p in (0x28, 0x29)]
    DATA = [g.claim(p, "kernel data") for p in (0x2A, 0x2B)]
    P2M_LIST = g.claim(0x30, "linear P2M list page (xen_p2m_addr)")
    FLL, FL = g.claim(0x32, "pfn_to_mfn_frame_list_list"), g.claim(0x33, "pfn_to_mfn_frame_list")
    UTEXT, UDATA, USTACK = g.claim(0x40, "user text"), g.claim(0x42, "user data"), g.claim(0x44, "user stack")
    g.claim(0x41, "user text"), g.claim(0x45, "user stack")
    KSTACK0, KSTACK1 = g.claim(0x51, "vcpu0 kernel stack"), g.claim(0x53, "vcpu1 kernel stack")
    GDT0, GDT1 = g.claim(0x55, "vcpu0 GDT"), g.claim(0x56, "vcpu1 GDT")
    pool_pfns = [p for p in range(0x18, 0x20) if p != 0x1C]
    pool = iter(pool_pfns)
    for p in range(NPFN):
        if p in p2m and p not in g.role and p not in pool_pfns:
            g.claim(p, "data")
    tables = {L3S, L3P, KPMD, KPMD_P, UPMD0, UPMD1, UPMD2} | set(pool_pfns)
    for p in p2m:
        if p not in tables and p not in (P2M_LIST, FLL, FL, GDT0, GDT1, DATA[0]):
            g.pattern(p)
    m = g.mfn
    XEN_M2P = [0x9000 * 2, 0x9200 * 2]                       # 2 MiB-aligned Xen frames (compat M2P)
    for x in XEN_M2P:
        g.xen[x] = "compat M2P 2 MiB page"

    L3_FLAGS = P | RW | US | A          # Linux writes P; Xen adds RW|US (adjust_guest_l3e); A by hardware
    KPMD_FLAGS = P | RW | A | D         # _KERNPG_TABLE
    UPMD_FLAGS = P | RW | US | A | D    # _PAGE_TABLE
    K_RW, K_RO, K_RX = P | RW | A | D | NX, P | A | NX, P | A
    U_RW, U_RX = P | RW | US | A | D | NX, P | US | A
    g.link(m(L3S), 3, m(KPMD), L3_FLAGS)
    for i, pmd in enumerate((UPMD0, UPMD1, UPMD2, KPMD_P)):
        g.link(m(L3P), i, m(pmd), L3_FLAGS)
    inter_k = lambda lvl: KPMD_FLAGS  # noqa: E731
    inter_u = lambda lvl: UPMD_FLAGS  # noqa: E731
    KR = ["vcpu0.cr3", "vcpu1.cr3"]
    S = m(L3S)
    # direct map (kernel lowmem): text RX, rodata RO, tables RO, the rest RW NX
    for p in sorted(p2m):
        if p in TEXT:
            leaf, kind = K_RX, "kernel text"
        elif p in RODATA:
            leaf, kind = K_RO, "kernel rodata"
        elif p in tables:
            leaf, kind = K_RO, "page table"
        else:
            leaf, kind = K_RW, "direct map"
        g.map4k(KR, S, PAGE_OFFSET32 + (p << 12), p, leaf, inter_k, pool, kind)
    g.map4k(KR, S, P2M_VA32, P2M_LIST, K_RW, inter_k, pool, "p2m list")
    # Xen's compat M2P in the pae_xen_l2 slots (428 = 0xF5800000 >> 21 & 511)
    first_xen_slot = COMPAT_M2P32 >> 21 & 511
    assert first_xen_slot == 428
    for i, x in enumerate(XEN_M2P):
        g.set_entry(m(KPMD), first_xen_slot + i, (x << 12) | P | US | A | PS)
    # process kernel pmd: a copy of swapper's (Linux PV PAE does not share the kernel pmd)
    g.mem[KPMD_P][:] = g.mem[KPMD]
    # user mappings (vcpu1 only)
    UR = ["vcpu1.cr3"]
    g.map4k(UR, m(L3P), 0x08048000, UTEXT, U_RX, inter_u, pool, "user text")
    g.map4k(UR, m(L3P), 0x08049000, UTEXT + 1, U_RX, inter_u, pool, "user text")
    g.map4k(UR, m(L3P), 0x0804A000, UDATA, U_RW, inter_u, pool, "user data")
    g.map4k(UR, m(L3P), 0xBFFFE000, USTACK, U_RW, inter_u, pool, "user stack")
    g.map4k(UR, m(L3P), 0xBFFFF000, USTACK + 1, U_RW, inter_u, pool, "user stack")

    p2m_size = 1024                                      # ALIGN(256, P2M_PER_PAGE = 1024)
    for pfn in range(p2m_size):
        g.write(P2M_LIST, pfn * 4, p2m.get(pfn, U32), 4)
    g.write(FL, 0, m(P2M_LIST), 4)
    g.write(FLL, 0, m(FL), 4)
    invalid = [p for p in range(p2m_size) if p not in p2m]
    base = PAGE_OFFSET32
    syms = {
        "_text": base + (TEXT[0] << 12), "_stext": base + (TEXT[0] << 12),
        "startup_xen": base + (TEXT[0] << 12) + 0x100, "default_idle": base + (TEXT[0] << 12) + 0x1200,
        "xen_hypervisor_callback": base + (TEXT[0] << 12) + 0x2000,
        "xen_failsafe_callback": base + (TEXT[0] << 12) + 0x2100,
        "page_fault": base + (TEXT[0] << 12) + 0x3000, "_etext": base + (TEXT[-1] << 12) + PAGE,
        "xen_p2m_addr": base + (DATA[0] << 12), "xen_p2m_size": base + (DATA[0] << 12) + 4,
        "xen_max_p2m_pfn": base + (DATA[0] << 12) + 8, "max_pfn": base + (DATA[0] << 12) + 12,
        "HYPERVISOR_shared_info": base + (DATA[0] << 12) + 16, "init_mm": base + (DATA[0] << 12) + 0x100,
        "swapper_pg_dir": base + (L3S << 12),
    }
    types = {n: "T" for n in ("_text", "_stext", "startup_xen", "default_idle", "xen_hypervisor_callback",
                               "xen_failsafe_callback", "page_fault", "_etext")}
    types["swapper_pg_dir"] = "B"
    MM_PGD = 0x28                                        # invented mm_struct.pgd offset (i386)
    values = {"xen_p2m_addr": P2M_VA32, "xen_p2m_size": p2m_size, "xen_max_p2m_pfn": p2m_size,
              "max_pfn": NPFN, "HYPERVISOR_shared_info": 0xFFBFD000, "init_mm.pgd": syms["swapper_pg_dir"]}
    for n in ("xen_p2m_addr", "xen_p2m_size", "xen_max_p2m_pfn", "max_pfn", "HYPERVISOR_shared_info"):
        g.write(DATA[0], syms[n] - (base + (DATA[0] << 12)), values[n], 4)
    g.write(DATA[0], 0x100 + MM_PGD, values["init_mm.pgd"], 4)

    def stack_top(p):
        return base + (p << 12) + PAGE
    trap_ctxt = [{"vector": 14, "flags": 0, "cs": 0xE019, "address": syms["page_fault"]} if v == 14 else {}
                 for v in range(256)]
    common = dict(event_callback_cs=0xE019, event_callback_eip=syms["xen_hypervisor_callback"],
                  failsafe_callback_cs=0xE019, failsafe_callback_eip=syms["xen_failsafe_callback"],
                  vm_assist=0xC, kernel_ss=0xE021, gdt_ents=32, trap_ctxt=trap_ctxt)
    cr2_1 = 0x0804A010
    v0 = dict(common, id=0, rip=syms["default_idle"] + 0x11, rsp=stack_top(KSTACK0) - 0x7C, rflags=0x246,
              cs=0xE019, ss=0xE021, ds=0x7B, es=0x7B, fs=0xD8, gs=0, rbp=stack_top(KSTACK0) - 0x40,
              kernel_sp=stack_top(KSTACK0), flags=VGCF_i387_valid | VGCF_in_kernel | VGCF_online,
              ctrlreg=[CR0, 0, 0, rot_cr3(m(L3S)), CR4, 0, 0, 0], gdt_frames=[m(GDT0)])
    v1 = dict(common, id=1, rip=0x08048123, rsp=0xBFFFEF00, rflags=0x202, cs=0xE02B, ss=0xE033,
              ds=0x7B, es=0x7B, fs=0, gs=0x33, rax=4, kernel_sp=stack_top(KSTACK1),
              flags=VGCF_i387_valid | VGCF_online, ctrlreg=[CR0, 0, cr2_1, rot_cr3(m(L3P)), CR4, 0, 0, 0],
              gdt_frames=[m(GDT1)])
    assert m(L3S) >> 20 and not m(L3P) >> 20               # rotation matters for vcpu0 only
    vcpus = [v0, v1]
    roots = [("vcpu0.cr3", m(L3S)), ("vcpu1.cr3", m(L3P))]
    shared = _shared_info_32(NPFN, m(FLL), rot_cr3(m(L3S)), P2M_VA32, 0, [0, cr2_1])

    W = []

    def e(root, va, why, **kw):
        return g.expect(W, dict(roots)[root], root, va, why, **kw)
    e("vcpu0.cr3", base + (5 << 12) + 0x10, "direct map: 0xc0000000 + pfn<<12 reads pfn 5", pfn=5)
    e("vcpu0.cr3", base + (0x0A << 12) + 0xFF8, "direct map of a frame above 4 GiB (pfn 0x0a)", pfn=0x0A)
    e("vcpu0.cr3", base + (L3S << 12), "swapper_pg_dir (L3 above 4 GiB) via the direct map", pfn=L3S)
    e("vcpu0.cr3", syms["_text"] + 0x1234, "kernel text", pfn=TEXT[1])
    e("vcpu0.cr3", syms["xen_p2m_addr"], "the variable xen_p2m_addr", pfn=DATA[0])
    e("vcpu0.cr3", base + (0xE1 << 12), "direct map of a pfn in the P2M hole", stop="not-present", level="PTE")
    e("vcpu0.cr3", P2M_VA32 + 0x10 * 4, "linear P2M list entry of pfn 0x10", pfn=P2M_LIST)
    e("vcpu0.cr3", COMPAT_M2P32 + m(5) * 4, "Xen's compat M2P (2 MiB page of a Xen frame, not in the dump)",
      ma=(XEN_M2P[0] << 12) + ((m(5) * 4) & 0x1FFFFF))
    e("vcpu0.cr3", 0xF6000000 + 0x10, "compat M2P slot 432: empty", stop="not-present", level="PDE")
    e("vcpu0.cr3", 0x08048000, "swapper_pg_dir has no user PDPTEs", stop="not-present", level="PDPTE")
    e("vcpu1.cr3", 0x08048010, "user text", pfn=UTEXT)
    e("vcpu1.cr3", 0x0804A010, "user data (vcpu1 cr2)", pfn=UDATA)
    e("vcpu1.cr3", 0xBFFFEF00, "user stack (vcpu1 esp)", pfn=USTACK)
    e("vcpu1.cr3", 0x40000000, "PDPTE 1 -> an empty pmd", stop="not-present", level="PDE")
    e("vcpu1.cr3", base + (0x42 << 12), "process kernel pmd copy: direct map", pfn=0x42)
    wk = {w["va"]: w for w in W}
    assert wk[COMPAT_M2P32 + m(5) * 4]["in_dump"] is False and wk[COMPAT_M2P32 + m(5) * 4]["page_size"] == 1 << 21

    def skip(lvl, i, va):
        return lvl == 1 and va >= COMPAT_M2P32
    for rname, rmfn in roots:
        found = g.enumerate(rmfn, skip)
        want = {va: m(pfn) for va, (pfn, _) in g.intent.get(rname, {}).items()}
        assert found == want, (rname, set(found) ^ set(want))
    pages = g.pages(roots)
    data = g.data(roots[0][1], "vcpu0.cr3", [base + (5 << 12), syms["_text"] + 0x1000, P2M_VA32,
                                             syms["xen_p2m_addr"], base + (0x0A << 12) + 0x800])
    data += g.data(roots[1][1], "vcpu1.cr3", [0x0804A000, 0xBFFFF000])
    vinfo = []
    for v, lmfn in ((v0, m(L3S)), (v1, m(L3P))):
        vinfo.append({"id": v["id"], "cr3": v["ctrlreg"][3], "l3_mfn": lmfn, "l3_pfn": g.m2p[lmfn],
                      "cr1": v["ctrlreg"][1], "cr0": v["ctrlreg"][0], "cr2": v["ctrlreg"][2],
                      "cr4": v["ctrlreg"][4], "rip": v["rip"], "rsp": v["rsp"], "rflags": v["rflags"],
                      "cs": v["cs"], "ss": v["ss"], "kernel_ss": v["kernel_ss"], "kernel_sp": v["kernel_sp"],
                      "flags": v["flags"], "in_kernel": bool(v["flags"] & VGCF_in_kernel),
                      "gdt_frames": v["gdt_frames"], "event_callback_eip": v["event_callback_eip"]})
    return dict(
        name="pv-i386-pae", g=g, guest_width=4, machine="i386", mode="pae", vcpus=vcpus, vinfo=vinfo,
        shared=shared, walks=W, pages=pages, data=data, symbols=syms, types=types, values=values,
        linux_p2m={"va": P2M_VA32, "size": p2m_size, "entry_size": 4, "invalid_pfns": invalid,
                   "invalid_ranges": _intervals(invalid), "list_pfns": [P2M_LIST],
                   "list_mfns": [m(P2M_LIST)], "frame_list_list_mfn": m(FLL), "frame_list_mfn": m(FL)},
        shared_info={"max_pfn": NPFN, "pfn_to_mfn_frame_list_list": m(FLL), "p2m_cr3": rot_cr3(m(L3S)),
                     "p2m_vaddr": P2M_VA32, "p2m_generation": 0, "arch_offset": 2316,
                     "vcpu_cr2": [0, cr2_1]},
        struct_offsets={"mm_struct.pgd": MM_PGD},
        xen_slots={"pae_xen_l2 428-429": "compat M2P, 2 MiB pages of Xen frames (P|US|A|PS)"},
        roots=roots, problems=g.problems)


BUILDERS = {"pv-x86_64": build_x86_64, "pv-i386-pae": build_i386_pae}


def write(name, out):
    spec = BUILDERS[name]()
    g = spec["g"]
    core = name + ".xc"
    res = write_xc_core(os.path.join(out, core), guest_width=spec["guest_width"], machine=spec["machine"],
                        pages=g.dump_pages(), vcpus=spec["vcpus"], shared_info=spec["shared"])
    files = [core, name + ".json", name + ".map"]
    with open(os.path.join(out, name + ".map"), "w") as f:
        f.write(_map_text(spec["symbols"], spec["types"]))
    man = {
        "core": core, "guest_width": spec["guest_width"], "machine": spec["machine"], "mode": spec["mode"],
        "nr_pages": len(g.p2m), "nr_vcpus": len(spec["vcpus"]), "pfn_count": g.npfn,
        "p2m": [[p, g.p2m[p]] for p in sorted(g.p2m)],
        "sections": res["sections"], "file_size": res["size"],
        "xen_version": {"major": 4, "minor": 17, "extra": ".0", "magic": 0xF00FEBED, "format_version": 1},
        "vcpus": spec["vinfo"], "walks": spec["walks"], "pages": spec["pages"], "data": spec["data"],
        "linux_p2m": spec["linux_p2m"], "symbols": spec["symbols"], "symbol_values": spec["values"],
        "struct_offsets": spec["struct_offsets"], "shared_info": spec["shared_info"],
        "roots": {n: r for n, r in spec["roots"]}, "problems": spec["problems"],
        "xen_frames": {str(k): v for k, v in sorted(g.xen.items())}, "xen_slots": spec["xen_slots"],
        "frames": [{"pfn": p, "mfn": g.p2m[p], "role": g.role.get(p, "data")} for p in sorted(g.p2m)],
    }
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(man, f, sort_keys=True, indent=1)
        f.write("\n")
    return files
