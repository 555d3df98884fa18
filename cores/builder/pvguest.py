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
from dataclasses import dataclass, field

from .xccore_writer import write_xc_core

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
        for offset in range(0, PAGE, 8):
            word = (0x5E << 56) | (self.tag << 48) | (pfn << 12) | offset
            page[offset:offset + 8] = word.to_bytes(8, "little")

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

    def get_entry(self, table_mfn, index):
        page = self.page_of_mfn(table_mfn)
        return None if page is None else int.from_bytes(page[index * 8:index * 8 + 8], "little")

    def set_entry(self, table_mfn, index, value):
        page = self.page_of_mfn(table_mfn)
        assert page is not None and 0 <= index < 512
        page[index * 8:index * 8 + 8] = (value & U64).to_bytes(8, "little")

    def link(self, table_mfn, index, child_mfn, flags):
        assert not (self.get_entry(table_mfn, index) or 0) & P, (hex(table_mfn), index)
        self.set_entry(table_mfn, index, (child_mfn << 12) | flags)

    def ensure(self, root_mfn, va, lvl_target, table_flags, pool):
        """mfn of the table holding the level-``lvl_target`` entry for ``va``; intermediate tables
        are taken from ``pool`` (an iterator of pfns) and linked with ``table_flags(lvl)``."""
        table = root_mfn
        for lvl in range(lvl_target):
            index = self.idx(va, lvl)
            entry = self.get_entry(table, index)
            if not entry & P:
                pfn = self.claim(next(pool), f"{self.names[lvl + 1][:-1]} table")
                self.link(table, index, self.mfn(pfn), table_flags(lvl))
                table = self.mfn(pfn)
            else:
                assert not entry & PS
                table = (entry & FRAME) >> 12
        return table

    def map4k(self, roots, root_mfn, va, pfn, leaf, table_flags, pool, kind="data"):
        table = self.ensure(root_mfn, va, len(self.names) - 1, table_flags, pool)
        index = self.idx(va, len(self.names) - 1)
        self.link(table, index, self.mfn(pfn), leaf)
        for root in roots:
            self.intent.setdefault(root, {})[va] = (pfn, kind)

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
        table = root_mfn
        for lvl, name in enumerate(self.names):
            index = self.idx(va, lvl)
            entry = self.get_entry(table, index)
            out["levels"].append({"entry": name, "mfn": table, "pfn": self.m2p.get(table), "index": index,
                                  "value": entry})
            if entry is None:
                out.update(stop="not-in-dump", level=name)
                return out
            if not entry & P:
                out.update(stop="not-present", level=name)
                return out
            last = lvl == len(self.names) - 1
            large = bool(entry & PS) and not last and (name == "PDE" or
                                                       (name == "PDPTE" and self.mode == "4level"))
            reserved = 0
            if name == "PML4E":
                reserved |= PS
            if self.mode == "pae" and name == "PDPTE":
                reserved |= NX
            if large:
                reserved |= ((1 << self.shifts[lvl]) - 1) & ~((1 << 13) - 1)
            if entry & reserved:
                out.update(stop="reserved", level=name)
                return out
            if not (self.mode == "pae" and name == "PDPTE"):
                rw &= bool(entry & RW)
                us &= bool(entry & US)
                nx |= bool(entry & NX)
            if large or last:
                size = 1 << self.shifts[lvl]
                frame = (entry & FRAME) & ~(size - 1)
                ma = frame + (va & (size - 1))
                pfn = self.m2p.get(ma >> 12)
                out.update(ma=ma, pfn=pfn, page_size=size, level=name, writable=rw, user=us, nx=nx,
                           kernel_only=bool(entry & GUEST_KERNEL), in_dump=pfn is not None)
                return out
            table = (entry & FRAME) >> 12
        raise AssertionError

    def expect(self, walks, root_mfn, root_name, va, why, stop=None, level=None, pfn=None, ma=None):
        walk = self.walk(root_mfn, va, root_name, why)
        assert walk["stop"] == stop, (hex(va), walk, stop)
        if level is not None:
            assert walk["level"] == level, (hex(va), walk["level"], level)
        if pfn is not None:
            assert walk["pfn"] == pfn and walk["ma"] == (self.mfn(pfn) << 12) + (va & 0xFFF), (hex(va), walk, pfn)
        if ma is not None:
            assert walk["ma"] == ma, (hex(va), walk, hex(ma))
        walks.append(walk)
        return walk

    def pages(self, roots):
        """Every intended 4 KiB guest mapping of each root, with the rights the CPU would apply."""
        out = []
        for root_name, root_mfn in roots:
            for va, (pfn, kind) in sorted(self.intent.get(root_name, {}).items()):
                walk = self.walk(root_mfn, va)
                assert walk["ma"] == self.mfn(pfn) << 12 and walk["page_size"] == PAGE, (root_name, hex(va), walk)
                out.append({"root": root_name, "va": va, "ma": walk["ma"], "pfn": pfn, "size": PAGE,
                            "writable": walk["writable"], "user": walk["user"], "nx": walk["nx"],
                            "kernel_only": walk["kernel_only"], "kind": kind})
        return out

    def enumerate(self, root_mfn, skip):
        """Independent check of ``pages``: every present 4 KiB leaf reachable from ``root_mfn``
        (``skip(lvl, index, va_base)`` prunes Xen's slots and injected entries)."""
        found = {}

        def visit(table, lvl, base):
            for index in range(1 << self.widths[lvl]):
                va = base + (index << self.shifts[lvl])
                if skip(lvl, index, va):
                    continue
                entry = self.get_entry(table, index)
                if entry is None or not entry & P:
                    continue
                if lvl == len(self.names) - 1:
                    found[canon(va) if self.mode == "4level" else va] = (entry & FRAME) >> 12
                else:
                    assert not entry & PS
                    visit((entry & FRAME) >> 12, lvl + 1, va)
        visit(root_mfn, 0, 0)
        return found

    def data(self, root_mfn, root_name, vas):
        out = []
        for va in vas:
            walk = self.walk(root_mfn, va)
            raw = self.read_ma(walk["ma"], 16)
            assert raw is not None
            out.append({"root": root_name, "va": va, "hex": raw.hex()})
        return out

    def dump_pages(self):
        return [(pfn, self.p2m[pfn], bytes(self.mem[pfn])) for pfn in sorted(self.p2m)]


# =================================================================================================
SHARED_INFO_ARCH_64, SHARED_INFO_ARCH_32 = 3088, 2316       # offsetof(shared_info, arch)


def _shared_info_64(max_pfn, fll, p2m_cr3, p2m_vaddr, gen, cr2s):
    page = bytearray(PAGE)
    for i, cr2 in enumerate(cr2s):                       # vcpu_info[i]: upcall_mask @1, arch.cr2 @16
        page[i * 64 + 1] = 1
        struct.pack_into("<Q", page, i * 64 + 16, cr2)
    struct.pack_into("<III", page, 3072, 2, 1700000000, 0)    # wc_version, wc_sec, wc_nsec
    struct.pack_into("<6Q", page, SHARED_INFO_ARCH_64, max_pfn, fll, 0, p2m_cr3, p2m_vaddr, gen)
    return bytes(page)


def _shared_info_32(max_pfn, fll, p2m_cr3, p2m_vaddr, gen, cr2s):
    page = bytearray(PAGE)
    for i, cr2 in enumerate(cr2s):                       # vcpu_info[i]: arch.cr2 @8
        page[i * 64 + 1] = 1
        struct.pack_into("<I", page, i * 64 + 8, cr2)
    struct.pack_into("<III", page, 2304, 2, 1700000000, 0)
    struct.pack_into("<7I", page, SHARED_INFO_ARCH_32, max_pfn, fll, 0, p2m_cr3, p2m_vaddr, gen, 0)
    return bytes(page)


def _map_text(symbols, types):
    rows = sorted((va, types.get(name, "D"), name) for name, va in symbols.items())
    digits = 16 if max(va for va, _, _ in rows) >> 32 else 8
    return "".join(f"{va:0{digits}x} {letter} {name}\n" for va, letter, name in rows)


def _intervals(values):
    out = []
    for value in sorted(values):
        if out and out[-1][1] == value:
            out[-1][1] += 1
        else:
            out.append([value, value + 1])
    return out


# =================================================================================================
# Both guests: 256 pfns; these have the same role in each (the page tables differ: see each builder)
NPFN = 256
TEXT_PFNS = list(range(0x20, 0x28))
RODATA_PFNS = [0x28, 0x29]
DATA_PFNS = [0x2A, 0x2B]                # the first holds the variables (xen_p2m_addr, ..., init_mm)
P2M_LIST, FRAME_LIST_LIST, FRAME_LIST = 0x30, 0x32, 0x33
USER_TEXT, USER_DATA, USER_STACK = 0x40, 0x42, 0x44      # user text and stack: two pages each
KERNEL_STACKS, GDTS = (0x51, 0x53), (0x55, 0x56)          # per vcpu

# x86_64: the page tables it starts with, the pool of intermediate tables, Xen's own frames
X64_L4, X64_PROCESS_L4, X64_USER_L4, X64_USER_L3 = 0x10, 0x11, 0x12, 0x13
X64_POOL = list(range(0x18, 0x20)) + list(range(0x70, 0x78))
X64_XEN_FRAMES = {"ro_m2p_l3": 0x8001, "perdomain_l3": 0x8003, "rw_m2p_l3": 0x8005, "directmap_l3": 0x8007}
X64_TABLE = P | RW | US | A | D         # _PAGE_TABLE; Xen: US on L2-L4, A on L4

# i386 PAE: likewise
PAE_SWAPPER_L3, PAE_PROCESS_L3, PAE_KERNEL_PMD, PAE_PROCESS_KERNEL_PMD = 0x10, 0x11, 0x14, 0x15
PAE_USER_PMDS = (0x16, 0x17, 0x1C)      # process pmds 0, 1 (empty), 2
PAE_POOL = [pfn for pfn in range(0x18, 0x20) if pfn != 0x1C]
PAE_XEN_M2P = [0x9000 * 2, 0x9200 * 2]  # 2 MiB-aligned Xen frames (compat M2P)


@dataclass
class PvDump:
    """What the steps of a PV builder hand on to each other and to :func:`write`."""
    name: str
    machine: str
    guest: Guest
    pool: object                        # iterator of pfns for intermediate tables
    table_pfns: set                     # every page-table pfn (read-only in the direct map)
    linux_p2m: dict = None              # Linux P2M list
    symbols: dict = None                # symbols
    types: dict = None
    values: dict = None
    struct_offsets: dict = None
    vcpus: list = None                  # vcpus (what write_xc_core writes)
    vinfo: list = None                  # ... (the manifest's view)
    roots: list = None                  # ... [(name, root table mfn)]
    shared: bytes = None                # ... shared_info page
    shared_info: dict = None            # ... (the manifest's view)
    walks: list = field(default_factory=list)   # walks
    pages: list = None                  # intent check
    data: list = None
    xen_slots: dict = None

    def root(self, name):
        return dict(self.roots)[name]

    def expect(self, root, va, why, **kw):
        return self.guest.expect(self.walks, self.root(root), root, va, why, **kw)


def _claim_common(guest, table_pfns, pool_pfns):
    """After the builder's own tables: the roles both guests share; every other populated pfn
    (but the table pool) is "data"; all but tables and the pages written later get the pattern."""
    for pfn in TEXT_PFNS:
        guest.claim(pfn, "kernel text")
    for pfn in RODATA_PFNS:
        guest.claim(pfn, "kernel rodata")
    for pfn in DATA_PFNS:
        guest.claim(pfn, "kernel data")
    guest.claim(P2M_LIST, "linear P2M list page (xen_p2m_addr)")
    guest.claim(FRAME_LIST_LIST, "pfn_to_mfn_frame_list_list")
    guest.claim(FRAME_LIST, "pfn_to_mfn_frame_list")
    for pfn, role in ((USER_TEXT, "user text"), (USER_DATA, "user data"), (USER_STACK, "user stack"),
                      (USER_TEXT + 1, "user text"), (USER_STACK + 1, "user stack")):
        guest.claim(pfn, role)
    for vcpu in (0, 1):
        guest.claim(KERNEL_STACKS[vcpu], f"vcpu{vcpu} kernel stack")
    for vcpu in (0, 1):
        guest.claim(GDTS[vcpu], f"vcpu{vcpu} GDT")
    for pfn in range(guest.npfn):
        if pfn in guest.p2m and pfn not in guest.role and pfn not in pool_pfns:
            guest.claim(pfn, "data")
    tables = set(table_pfns) | set(pool_pfns)
    for pfn in guest.p2m:
        if pfn not in tables and pfn not in (P2M_LIST, FRAME_LIST_LIST, FRAME_LIST, *GDTS, DATA_PFNS[0]):
            guest.pattern(pfn)
    return tables


def _linux_p2m(dump, va, size):
    """Linux's linear P2M list (``size`` entries, INVALID beyond and in the hole) at ``va`` and its
    3-level frame list."""
    guest = dump.guest
    width = guest.width
    for pfn in range(size):
        guest.write(P2M_LIST, pfn * width, guest.p2m.get(pfn, (1 << 8 * width) - 1), width)
    guest.write(FRAME_LIST, 0, guest.mfn(P2M_LIST), width)
    guest.write(FRAME_LIST_LIST, 0, guest.mfn(FRAME_LIST), width)
    invalid = [pfn for pfn in range(size) if pfn not in guest.p2m]
    dump.linux_p2m = {"va": va, "size": size, "entry_size": width, "invalid_pfns": invalid,
                      "invalid_ranges": _intervals(invalid), "list_pfns": [P2M_LIST],
                      "list_mfns": [guest.mfn(P2M_LIST)], "frame_list_list_mfn": guest.mfn(FRAME_LIST_LIST),
                      "frame_list_mfn": guest.mfn(FRAME_LIST)}


def _variables(dump, shared_info_va, pgd, mm_pgd):
    """The P2M variables, max_pfn, HYPERVISOR_shared_info and init_mm.pgd (at the invented offset
    ``mm_pgd``), written in the kernel .data page that starts at xen_p2m_addr."""
    guest, symbols = dump.guest, dump.symbols
    size = dump.linux_p2m["size"]
    dump.struct_offsets = {"mm_struct.pgd": mm_pgd}
    dump.values = {"xen_p2m_addr": dump.linux_p2m["va"], "xen_p2m_size": size, "xen_max_p2m_pfn": size,
                   "max_pfn": guest.npfn, "HYPERVISOR_shared_info": shared_info_va, "init_mm.pgd": pgd}
    page_va = symbols["xen_p2m_addr"]
    for name in ("xen_p2m_addr", "xen_p2m_size", "xen_max_p2m_pfn", "max_pfn", "HYPERVISOR_shared_info"):
        guest.write(DATA_PFNS[0], symbols[name] - page_va, dump.values[name], guest.width)
    guest.write(DATA_PFNS[0], symbols["init_mm"] - page_va + mm_pgd, pgd, guest.width)


def _shared_info(dump, p2m_cr3, cr2s):
    guest = dump.guest
    frame_list_list = guest.mfn(FRAME_LIST_LIST)
    pack, arch_offset = ((_shared_info_64, SHARED_INFO_ARCH_64) if guest.width == 8 else
                         (_shared_info_32, SHARED_INFO_ARCH_32))
    dump.shared = pack(guest.npfn, frame_list_list, p2m_cr3, dump.linux_p2m["va"], 0, cr2s)
    dump.shared_info = {"max_pfn": guest.npfn, "pfn_to_mfn_frame_list_list": frame_list_list,
                        "p2m_cr3": p2m_cr3, "p2m_vaddr": dump.linux_p2m["va"], "p2m_generation": 0,
                        "arch_offset": arch_offset, "vcpu_cr2": cr2s}


def _vcpu_records(dump, root_level):
    """The manifest's view of each vcpu; ``root_level`` "l4" or "l3" names its ctrlreg[3] table."""
    guest, records = dump.guest, []
    for vcpu, (_, root_mfn) in zip(dump.vcpus, dump.roots):
        ctrlreg = vcpu["ctrlreg"]
        records.append({
            "id": vcpu["id"], "cr3": ctrlreg[3], f"{root_level}_mfn": root_mfn,
            f"{root_level}_pfn": guest.m2p[root_mfn], "cr1": ctrlreg[1], "cr0": ctrlreg[0], "cr2": ctrlreg[2],
            "cr4": ctrlreg[4], "rip": vcpu["rip"], "rsp": vcpu["rsp"], "rflags": vcpu["rflags"],
            "cs": vcpu["cs"], "ss": vcpu["ss"], "kernel_ss": vcpu["kernel_ss"], "kernel_sp": vcpu["kernel_sp"],
            "flags": vcpu["flags"], "in_kernel": bool(vcpu["flags"] & VGCF_in_kernel),
            "gdt_frames": vcpu["gdt_frames"], "event_callback_eip": vcpu["event_callback_eip"]})
    return records


def _check_intent(dump, skip, samples):
    """Independent check of the intent (every present leaf reachable from each root, ``skip``
    pruning Xen's slots and injected entries, is one the builder meant), then the manifest's pages
    and 16-byte data samples (``samples``: [(root name, [va])])."""
    guest = dump.guest
    for root_name, root_mfn in dump.roots:
        found = guest.enumerate(root_mfn, skip)
        want = {va: guest.mfn(pfn) for va, (pfn, _) in guest.intent.get(root_name, {}).items()}
        assert found == want, (root_name, set(found) ^ set(want))
    dump.pages = guest.pages(dump.roots)
    dump.data = []
    for root_name, vas in samples:
        dump.data += guest.data(dump.root(root_name), root_name, vas)


# =================================================================================================
def _x86_64_guest():
    p2m = mfn_layout(NPFN, set(range(0xF0, 0xF8)), 0x2A000, 0x140000, extra_high=(0x10, 0x16),
                     extra_low=(0x11,))
    guest = Guest(8, "4level", NPFN, p2m, tag=0x64)
    guest.claim(X64_L4, "init_top_pgt (L4)")
    guest.claim(X64_PROCESS_L4, "process kernel L4")
    guest.claim(X64_USER_L4, "process user L4")
    guest.claim(X64_USER_L3, "user L3 (shared by process kernel/user L4)")
    tables = _claim_common(guest, {X64_L4, X64_PROCESS_L4, X64_USER_L4, X64_USER_L3}, X64_POOL)
    for role, mfn in X64_XEN_FRAMES.items():         # Xen's frames (not guest pages: not in the dump)
        guest.xen[mfn] = role
    return PvDump("pv-x86_64", "x86_64", guest, iter(X64_POOL), tables)


def _x86_64_table_flags(level):
    return X64_TABLE


# 64-bit PV leaf flags after adjust_guest_l1e (kernel: US | _PAGE_GUEST_KERNEL; user: US | G)
X64_KERNEL_RW = P | RW | A | D | NX | US | GUEST_KERNEL
X64_KERNEL_RO = P | A | NX | US | GUEST_KERNEL
X64_KERNEL_RX = P | A | US | GUEST_KERNEL
X64_USER_RW = P | RW | US | A | D | NX | G
X64_USER_RX = P | US | A | G


def _x86_64_kernel_mappings(dump):
    """init_top_pgt: kernel image (one L1 covers 0xffffffff81000000-0xffffffff811fffff), direct map
    of every populated pfn (page tables read-only: Xen refuses writable mappings of them), the
    linear P2M list (vmalloc)."""
    guest, pool = dump.guest, dump.pool
    l4 = guest.mfn(X64_L4)
    roots = ["vcpu0.cr3", "vcpu1.cr3"]                  # init_top_pgt and the process kernel L4
    for i, pfn in enumerate(TEXT_PFNS):
        guest.map4k(roots, l4, KTEXT64 + i * PAGE, pfn, X64_KERNEL_RX, _x86_64_table_flags, pool, "kernel text")
    for i, pfn in enumerate(RODATA_PFNS):
        guest.map4k(roots, l4, KTEXT64 + 0x8000 + i * PAGE, pfn, X64_KERNEL_RO, _x86_64_table_flags, pool,
                    "kernel rodata")
    for i, pfn in enumerate(DATA_PFNS):
        guest.map4k(roots, l4, KTEXT64 + 0xA000 + i * PAGE, pfn, X64_KERNEL_RW, _x86_64_table_flags, pool,
                    "kernel data")
    guest.map4k(roots, l4, KTEXT64 + 0x10000, X64_L4, X64_KERNEL_RO, _x86_64_table_flags, pool, "page table")
    for pfn in sorted(guest.p2m):
        is_table = pfn in dump.table_pfns
        guest.map4k(roots, l4, DM64 + (pfn << 12), pfn, X64_KERNEL_RO if is_table else X64_KERNEL_RW,
                    _x86_64_table_flags, pool, "page table" if is_table else "direct map")
    guest.map4k(roots, l4, VMALLOC64, P2M_LIST, X64_KERNEL_RW, _x86_64_table_flags, pool, "p2m list")


def _x86_64_process(dump):
    """The user process: a user L3 shared by the process kernel L4 and the user L4 (slots 0 and
    255); the process kernel L4 copies init_top_pgt's kernel slots; Xen's slots in every L4; and an
    injected PML4E with PS=1 in the user L4 (Xen would refuse it): reserved."""
    guest, pool = dump.guest, dump.pool
    mfn = guest.mfn
    init_l4, process_l4, user_l4 = mfn(X64_L4), mfn(X64_PROCESS_L4), mfn(X64_USER_L4)
    guest.link(process_l4, 0, mfn(X64_USER_L3), X64_TABLE | A)
    guest.link(user_l4, 0, mfn(X64_USER_L3), X64_TABLE | A)
    roots = ["vcpu1.cr3", "vcpu1.cr1"]
    for va, pfn, flags, kind in ((0x400000, USER_TEXT, X64_USER_RX, "user text"),
                                 (0x401000, USER_TEXT + 1, X64_USER_RX, "user text"),
                                 (0x600000, USER_DATA, X64_USER_RW, "user data"),
                                 (0x7FFFFFFDE000, USER_STACK, X64_USER_RW, "user stack"),
                                 (0x7FFFFFFDF000, USER_STACK + 1, X64_USER_RW, "user stack")):
        guest.map4k(roots, user_l4, va, pfn, flags, _x86_64_table_flags, pool, kind)
    for slot in range(272, 512):
        entry = guest.get_entry(init_l4, slot)
        if entry:
            guest.set_entry(process_l4, slot, entry)
    guest.set_entry(process_l4, 255, guest.get_entry(user_l4, 255))
    for l4 in (init_l4, process_l4, user_l4):
        _x86_64_xen_slots(guest, l4)
    reserved_va = 0x0000010000000000
    guest.set_entry(user_l4, 2, (mfn(0x1F) << 12) | P | RW | US | A | PS)
    guest.problems.append({"root": "vcpu1.cr1", "va_start": reserved_va, "va_end": reserved_va + (1 << 39),
                           "level": "PML4E", "reason": "reserved", "injected": True})
    dump.xen_slots = {"256": "RO M2P L3 (Xen frame)", "258": "linear: the L4 itself",
                      "260": "per-domain L3 (Xen frame)", "261": "RW M2P L3 (Xen frame)",
                      "262": "Xen direct map L3 (Xen frame)"}


def _x86_64_xen_slots(guest, l4):
    guest.set_entry(l4, 256, (X64_XEN_FRAMES["ro_m2p_l3"] << 12) | HV_RO | US)   # RO M2P, guest-readable
    guest.set_entry(l4, 258, (l4 << 12) | HV_RW)                                  # linear page tables
    guest.set_entry(l4, 260, (X64_XEN_FRAMES["perdomain_l3"] << 12) | HV_RW)
    guest.set_entry(l4, 261, (X64_XEN_FRAMES["rw_m2p_l3"] << 12) | HV)
    guest.set_entry(l4, 262, (X64_XEN_FRAMES["directmap_l3"] << 12) | HV)


def _x86_64_symbols(dump):
    dump.symbols = {
        "_text": KTEXT64, "_stext": KTEXT64, "startup_xen": KTEXT64 + 0x100,
        "xen_hypervisor_callback": KTEXT64 + 0x2000, "xen_failsafe_callback": KTEXT64 + 0x2100,
        "entry_SYSCALL_64": KTEXT64 + 0x2200, "asm_exc_page_fault": KTEXT64 + 0x3000,
        "default_idle": KTEXT64 + 0x1200, "_etext": KTEXT64 + 0x8000,
        "xen_p2m_addr": KTEXT64 + 0xA000, "xen_p2m_size": KTEXT64 + 0xA008,
        "xen_max_p2m_pfn": KTEXT64 + 0xA010, "max_pfn": KTEXT64 + 0xA018,
        "HYPERVISOR_shared_info": KTEXT64 + 0xA020, "init_mm": KTEXT64 + 0xA100,
        "init_top_pgt": KTEXT64 + 0x10000,
    }
    dump.types = {name: "T" for name in ("_text", "_stext", "startup_xen", "xen_hypervisor_callback",
                                         "xen_failsafe_callback", "entry_SYSCALL_64", "asm_exc_page_fault",
                                         "default_idle", "_etext")}


def _x86_64_vcpus(dump):
    """vcpu0 idles in the kernel on init_top_pgt; vcpu1 is in user mode (process kernel L4 in
    ctrlreg[3], user L4 in ctrlreg[1])."""
    symbols, mfn = dump.symbols, dump.guest.mfn

    def stack_top(pfn):
        return DM64 + (pfn << 12) + PAGE

    traps = [{"vector": 14, "flags": 0, "cs": 0xE033, "address": symbols["asm_exc_page_fault"]},
             {"vector": 13, "flags": 0, "cs": 0xE033, "address": KTEXT64 + 0x3100},
             {"vector": 3, "flags": 3, "cs": 0xE033, "address": KTEXT64 + 0x3200}]
    traps = sorted(traps, key=lambda trap: trap["vector"])
    trap_ctxt = [next((trap for trap in traps if trap["vector"] == vector), {}) for vector in range(256)]
    common = dict(cr0=CR0, cr4=CR4, event_callback_eip=symbols["xen_hypervisor_callback"],
                  failsafe_callback_eip=symbols["xen_failsafe_callback"],
                  syscall_callback_eip=symbols["entry_SYSCALL_64"], vm_assist=0x4, kernel_ss=0xE02B,
                  gdt_ents=16, trap_ctxt=trap_ctxt)
    vcpu1_cr2 = 0x600010
    stack0, stack1 = KERNEL_STACKS
    vcpu0 = dict(common, id=0, rip=symbols["default_idle"] + 0x14, rsp=stack_top(stack0) - 0x1A8,
                 rflags=0x246, cs=0xE033, ss=0xE02B, rbp=stack_top(stack0) - 0x100, rax=0, rdi=1,
                 kernel_sp=stack_top(stack0), flags=VGCF_i387_valid | VGCF_in_kernel | VGCF_online,
                 ctrlreg=[CR0, 0, 0, mfn(X64_L4) << 12, CR4, 0, 0, 0], gdt_frames=[mfn(GDTS[0])],
                 gs_base_kernel=DM64 + (0x60 << 12))
    vcpu1 = dict(common, id=1, rip=0x401234, rsp=0x7FFFFFFDFE40, rflags=0x202, cs=0xE033, ss=0xE02B,
                 rax=0x3C, kernel_sp=stack_top(stack1), flags=VGCF_i387_valid | VGCF_online,
                 ctrlreg=[CR0, mfn(X64_USER_L4) << 12, vcpu1_cr2, mfn(X64_PROCESS_L4) << 12, CR4, 0, 0, 0],
                 gdt_frames=[mfn(GDTS[1])], fs_base=0x7F0000001000, gs_base_kernel=0, gs_base_user=0)
    dump.vcpus = [vcpu0, vcpu1]
    dump.roots = [("vcpu0.cr3", mfn(X64_L4)), ("vcpu1.cr3", mfn(X64_PROCESS_L4)),
                  ("vcpu1.cr1", mfn(X64_USER_L4))]
    _shared_info(dump, mfn(X64_L4) << 12, [0, vcpu1_cr2])
    dump.vinfo = _vcpu_records(dump, "l4")
    for record, vcpu in zip(dump.vinfo, dump.vcpus):
        record.update(user_l4_mfn=(vcpu["ctrlreg"][1] >> 12) or None, fs_base=vcpu.get("fs_base", 0),
                      gs_base_kernel=vcpu.get("gs_base_kernel", 0))


def _x86_64_walks(dump):
    guest, symbols, mfn, expect = dump.guest, dump.symbols, dump.guest.mfn, dump.expect
    expect("vcpu0.cr3", DM64 + (5 << 12) + 0x10, "direct map: va = PAGE_OFFSET + pfn<<12 reads pfn 5", pfn=5)
    expect("vcpu0.cr3", DM64 + (0x0A << 12) + 0xFF8, "direct map of a frame above 4 GiB (pfn 0x0a)", pfn=0x0A)
    expect("vcpu0.cr3", DM64 + (X64_L4 << 12), "direct map of the L4 itself: read-only", pfn=X64_L4)
    expect("vcpu0.cr3", DM64 + (0xF3 << 12), "direct map of a pfn in the P2M hole", stop="not-present",
           level="PTE")
    expect("vcpu0.cr3", DM64 + (0x100 << 12), "beyond the last pfn: PTE not present", stop="not-present",
           level="PTE")
    expect("vcpu0.cr3", KTEXT64 + 0x1234, "kernel text: RO, executable, _PAGE_GUEST_KERNEL", pfn=TEXT_PFNS[1])
    expect("vcpu0.cr3", symbols["xen_p2m_addr"], "the variable xen_p2m_addr (kernel .data)", pfn=DATA_PFNS[0])
    expect("vcpu0.cr3", symbols["init_top_pgt"], "init_top_pgt through the kernel image mapping", pfn=X64_L4)
    expect("vcpu0.cr3", VMALLOC64 + 0x10 * 8, "linear P2M list entry of pfn 0x10", pfn=P2M_LIST)
    expect("vcpu0.cr3", RO_MPT64 + mfn(5) * 8, "RO M2P (Xen slot 256): its L3 is Xen's, not in the dump",
           stop="not-in-dump", level="PDPTE")
    linear_l4_va = LINEAR_PT64 | 258 << 30 | 258 << 21 | 258 << 12
    expect("vcpu0.cr3", canon(linear_l4_va), "Xen's linear slot 258 four times: the L4 itself",
           ma=mfn(X64_L4) << 12)
    pfn5_va = DM64 + (5 << 12)
    pte_va = canon(LINEAR_PT64 | (pfn5_va >> 9 & ((1 << 39) - 1) & ~7))
    expect("vcpu0.cr3", pte_va, "linear slot: the PTE mapping DM+pfn 5", ma=None)
    expect("vcpu0.cr3", 0x400000, "user text is not mapped in init_top_pgt", stop="not-present", level="PML4E")
    expect("vcpu1.cr3", 0x400010, "process kernel L4: user text", pfn=USER_TEXT)
    expect("vcpu1.cr1", 0x600008, "process user L4 (ctrlreg[1]): user data", pfn=USER_DATA)
    expect("vcpu1.cr1", 0x7FFFFFFDFE40, "user stack (vcpu1 rsp)", pfn=USER_STACK + 1)
    expect("vcpu1.cr1", DM64 + 0x1000, "the user L4 has no kernel mappings", stop="not-present", level="PML4E")
    expect("vcpu1.cr3", DM64 + (0x42 << 12), "process kernel L4: direct map shared with init_top_pgt",
           pfn=0x42)
    expect("vcpu1.cr1", 0x0000010000000000 + 0x1000, "injected PML4E with PS=1", stop="reserved",
           level="PML4E")
    expect("vcpu1.cr1", 0x0000800000000000, "non-canonical", stop="non-canonical")
    walk = {(walk["root"], walk["va"]): walk for walk in dump.walks}[("vcpu0.cr3", pte_va)]
    pfn5_l1 = guest.walk(dump.root("vcpu0.cr3"), pfn5_va)["levels"][3]["mfn"]
    assert walk["ma"] == (pfn5_l1 << 12) + 5 * 8 and walk["writable"] and not walk["user"]
    assert int.from_bytes(guest.read_ma(walk["ma"], 8), "little") & FRAME == mfn(5) << 12


def _x86_64_skip(level, index, va):
    """Xen's slots and the injected PML4E (slot 2) are not the builder's mappings."""
    return level == 0 and (256 <= index < 272 or (index == 2))


def build_x86_64():
    dump = _x86_64_guest()
    _x86_64_kernel_mappings(dump)
    _x86_64_process(dump)
    _linux_p2m(dump, VMALLOC64, 512)                    # ALIGN(nr_pages, P2M_PER_PAGE)
    _x86_64_symbols(dump)
    _variables(dump, 0xFFFFFFFFFF5FD000, dump.symbols["init_top_pgt"], mm_pgd=0x50)
    _x86_64_vcpus(dump)
    _x86_64_walks(dump)
    _check_intent(dump, _x86_64_skip,
                  [("vcpu0.cr3", [DM64 + (5 << 12), KTEXT64 + 0x1000, VMALLOC64, dump.symbols["xen_p2m_addr"],
                                  DM64 + (0x0A << 12) + 0x800]),
                   ("vcpu1.cr1", [0x600000, 0x7FFFFFFDF000])])
    return dump


# =================================================================================================
def _i386_guest():
    p2m = mfn_layout(NPFN, set(range(0xE0, 0xE4)), 0x3C000, 0x180000, extra_high=(0x10, 0x15),
                     extra_low=(0x11,))
    guest = Guest(4, "pae", NPFN, p2m, tag=0x32)
    guest.claim(PAE_SWAPPER_L3, "swapper_pg_dir (L3)")
    guest.claim(PAE_PROCESS_L3, "process L3")
    guest.claim(PAE_KERNEL_PMD, "swapper kernel pmd (L2 for 3-4 GiB, pae_xen_l2)")
    guest.claim(PAE_PROCESS_KERNEL_PMD, "process kernel pmd copy (pae_xen_l2)")
    for pfn, role in zip(PAE_USER_PMDS, ("process pmd 0", "process pmd 1 (empty)", "process pmd 2")):
        guest.claim(pfn, role)
    tables = _claim_common(guest, {PAE_SWAPPER_L3, PAE_PROCESS_L3, PAE_KERNEL_PMD, PAE_PROCESS_KERNEL_PMD,
                                   *PAE_USER_PMDS}, PAE_POOL)
    for frame in PAE_XEN_M2P:
        guest.xen[frame] = "compat M2P 2 MiB page"
    return PvDump("pv-i386-pae", "i386", guest, iter(PAE_POOL), tables)


PAE_L3 = P | RW | US | A                # Linux writes P; Xen adds RW|US (adjust_guest_l3e); A by hardware
PAE_KERNEL_TABLE = P | RW | A | D       # _KERNPG_TABLE
PAE_USER_TABLE = P | RW | US | A | D    # _PAGE_TABLE
PAE_KERNEL_RW, PAE_KERNEL_RO, PAE_KERNEL_RX = P | RW | A | D | NX, P | A | NX, P | A
PAE_USER_RW, PAE_USER_RX = P | RW | US | A | D | NX, P | US | A


def _i386_kernel_table_flags(level):
    return PAE_KERNEL_TABLE


def _i386_user_table_flags(level):
    return PAE_USER_TABLE


def _i386_kernel_mappings(dump):
    """The PDPTEs; the direct map of kernel lowmem (text RX, rodata RO, tables RO, the rest RW NX);
    the P2M list; Xen's compat M2P in the pae_xen_l2 slots (428 = 0xF5800000 >> 21 & 511); the
    process kernel pmd, a copy of swapper's (Linux PV PAE does not share the kernel pmd)."""
    guest, pool, mfn = dump.guest, dump.pool, dump.guest.mfn
    guest.link(mfn(PAE_SWAPPER_L3), 3, mfn(PAE_KERNEL_PMD), PAE_L3)
    for i, pmd in enumerate((*PAE_USER_PMDS, PAE_PROCESS_KERNEL_PMD)):
        guest.link(mfn(PAE_PROCESS_L3), i, mfn(pmd), PAE_L3)
    roots = ["vcpu0.cr3", "vcpu1.cr3"]
    swapper = mfn(PAE_SWAPPER_L3)
    for pfn in sorted(guest.p2m):
        if pfn in TEXT_PFNS:
            leaf, kind = PAE_KERNEL_RX, "kernel text"
        elif pfn in RODATA_PFNS:
            leaf, kind = PAE_KERNEL_RO, "kernel rodata"
        elif pfn in dump.table_pfns:
            leaf, kind = PAE_KERNEL_RO, "page table"
        else:
            leaf, kind = PAE_KERNEL_RW, "direct map"
        guest.map4k(roots, swapper, PAGE_OFFSET32 + (pfn << 12), pfn, leaf, _i386_kernel_table_flags, pool, kind)
    guest.map4k(roots, swapper, P2M_VA32, P2M_LIST, PAE_KERNEL_RW, _i386_kernel_table_flags, pool, "p2m list")
    first_xen_slot = COMPAT_M2P32 >> 21 & 511
    assert first_xen_slot == 428
    for i, frame in enumerate(PAE_XEN_M2P):
        guest.set_entry(mfn(PAE_KERNEL_PMD), first_xen_slot + i, (frame << 12) | P | US | A | PS)
    guest.mem[PAE_PROCESS_KERNEL_PMD][:] = guest.mem[PAE_KERNEL_PMD]
    dump.xen_slots = {"pae_xen_l2 428-429": "compat M2P, 2 MiB pages of Xen frames (P|US|A|PS)"}


def _i386_user_mappings(dump):
    """The user process (vcpu1 only)."""
    guest = dump.guest
    process_l3 = guest.mfn(PAE_PROCESS_L3)
    for va, pfn, flags, kind in ((0x08048000, USER_TEXT, PAE_USER_RX, "user text"),
                                 (0x08049000, USER_TEXT + 1, PAE_USER_RX, "user text"),
                                 (0x0804A000, USER_DATA, PAE_USER_RW, "user data"),
                                 (0xBFFFE000, USER_STACK, PAE_USER_RW, "user stack"),
                                 (0xBFFFF000, USER_STACK + 1, PAE_USER_RW, "user stack")):
        guest.map4k(["vcpu1.cr3"], process_l3, va, pfn, flags, _i386_user_table_flags, dump.pool, kind)


def _i386_symbols(dump):
    text, data = PAGE_OFFSET32 + (TEXT_PFNS[0] << 12), PAGE_OFFSET32 + (DATA_PFNS[0] << 12)
    dump.symbols = {
        "_text": text, "_stext": text, "startup_xen": text + 0x100, "default_idle": text + 0x1200,
        "xen_hypervisor_callback": text + 0x2000, "xen_failsafe_callback": text + 0x2100,
        "page_fault": text + 0x3000, "_etext": PAGE_OFFSET32 + (TEXT_PFNS[-1] << 12) + PAGE,
        "xen_p2m_addr": data, "xen_p2m_size": data + 4, "xen_max_p2m_pfn": data + 8, "max_pfn": data + 12,
        "HYPERVISOR_shared_info": data + 16, "init_mm": data + 0x100,
        "swapper_pg_dir": PAGE_OFFSET32 + (PAE_SWAPPER_L3 << 12),
    }
    dump.types = {name: "T" for name in ("_text", "_stext", "startup_xen", "default_idle",
                                         "xen_hypervisor_callback", "xen_failsafe_callback", "page_fault",
                                         "_etext")}
    dump.types["swapper_pg_dir"] = "B"


def _i386_vcpus(dump):
    """vcpu0 idles in the kernel on swapper_pg_dir (an L3 above 4 GiB: its ctrlreg[3] rotation
    matters); vcpu1 runs a user process on the process L3."""
    symbols, mfn = dump.symbols, dump.guest.mfn

    def stack_top(pfn):
        return PAGE_OFFSET32 + (pfn << 12) + PAGE

    trap_ctxt = [{"vector": 14, "flags": 0, "cs": 0xE019, "address": symbols["page_fault"]} if vector == 14
                 else {} for vector in range(256)]
    common = dict(event_callback_cs=0xE019, event_callback_eip=symbols["xen_hypervisor_callback"],
                  failsafe_callback_cs=0xE019, failsafe_callback_eip=symbols["xen_failsafe_callback"],
                  vm_assist=0xC, kernel_ss=0xE021, gdt_ents=32, trap_ctxt=trap_ctxt)
    vcpu1_cr2 = 0x0804A010
    stack0, stack1 = KERNEL_STACKS
    swapper, process = mfn(PAE_SWAPPER_L3), mfn(PAE_PROCESS_L3)
    vcpu0 = dict(common, id=0, rip=symbols["default_idle"] + 0x11, rsp=stack_top(stack0) - 0x7C,
                 rflags=0x246, cs=0xE019, ss=0xE021, ds=0x7B, es=0x7B, fs=0xD8, gs=0,
                 rbp=stack_top(stack0) - 0x40, kernel_sp=stack_top(stack0),
                 flags=VGCF_i387_valid | VGCF_in_kernel | VGCF_online,
                 ctrlreg=[CR0, 0, 0, rot_cr3(swapper), CR4, 0, 0, 0], gdt_frames=[mfn(GDTS[0])])
    vcpu1 = dict(common, id=1, rip=0x08048123, rsp=0xBFFFEF00, rflags=0x202, cs=0xE02B, ss=0xE033,
                 ds=0x7B, es=0x7B, fs=0, gs=0x33, rax=4, kernel_sp=stack_top(stack1),
                 flags=VGCF_i387_valid | VGCF_online, ctrlreg=[CR0, 0, vcpu1_cr2, rot_cr3(process), CR4, 0, 0, 0],
                 gdt_frames=[mfn(GDTS[1])])
    assert swapper >> 20 and not process >> 20               # rotation matters for vcpu0 only
    dump.vcpus = [vcpu0, vcpu1]
    dump.roots = [("vcpu0.cr3", swapper), ("vcpu1.cr3", process)]
    _shared_info(dump, rot_cr3(swapper), [0, vcpu1_cr2])
    dump.vinfo = _vcpu_records(dump, "l3")


def _i386_walks(dump):
    symbols, mfn, expect, base = dump.symbols, dump.guest.mfn, dump.expect, PAGE_OFFSET32
    expect("vcpu0.cr3", base + (5 << 12) + 0x10, "direct map: 0xc0000000 + pfn<<12 reads pfn 5", pfn=5)
    expect("vcpu0.cr3", base + (0x0A << 12) + 0xFF8, "direct map of a frame above 4 GiB (pfn 0x0a)", pfn=0x0A)
    expect("vcpu0.cr3", base + (PAE_SWAPPER_L3 << 12), "swapper_pg_dir (L3 above 4 GiB) via the direct map",
           pfn=PAE_SWAPPER_L3)
    expect("vcpu0.cr3", symbols["_text"] + 0x1234, "kernel text", pfn=TEXT_PFNS[1])
    expect("vcpu0.cr3", symbols["xen_p2m_addr"], "the variable xen_p2m_addr", pfn=DATA_PFNS[0])
    expect("vcpu0.cr3", base + (0xE1 << 12), "direct map of a pfn in the P2M hole", stop="not-present",
           level="PTE")
    expect("vcpu0.cr3", P2M_VA32 + 0x10 * 4, "linear P2M list entry of pfn 0x10", pfn=P2M_LIST)
    compat_m2p_va = COMPAT_M2P32 + mfn(5) * 4
    expect("vcpu0.cr3", compat_m2p_va, "Xen's compat M2P (2 MiB page of a Xen frame, not in the dump)",
           ma=(PAE_XEN_M2P[0] << 12) + ((mfn(5) * 4) & 0x1FFFFF))
    expect("vcpu0.cr3", 0xF6000000 + 0x10, "compat M2P slot 432: empty", stop="not-present", level="PDE")
    expect("vcpu0.cr3", 0x08048000, "swapper_pg_dir has no user PDPTEs", stop="not-present", level="PDPTE")
    expect("vcpu1.cr3", 0x08048010, "user text", pfn=USER_TEXT)
    expect("vcpu1.cr3", 0x0804A010, "user data (vcpu1 cr2)", pfn=USER_DATA)
    expect("vcpu1.cr3", 0xBFFFEF00, "user stack (vcpu1 esp)", pfn=USER_STACK)
    expect("vcpu1.cr3", 0x40000000, "PDPTE 1 -> an empty pmd", stop="not-present", level="PDE")
    expect("vcpu1.cr3", base + (0x42 << 12), "process kernel pmd copy: direct map", pfn=0x42)
    compat_m2p = {walk["va"]: walk for walk in dump.walks}[compat_m2p_va]
    assert compat_m2p["in_dump"] is False and compat_m2p["page_size"] == 1 << 21


def _i386_skip(level, index, va):
    """Xen's compat M2P slots are not the builder's mappings."""
    return level == 1 and va >= COMPAT_M2P32


def build_i386_pae():
    dump = _i386_guest()
    _i386_kernel_mappings(dump)
    _i386_user_mappings(dump)
    _linux_p2m(dump, P2M_VA32, 1024)                    # ALIGN(256, P2M_PER_PAGE = 1024)
    _i386_symbols(dump)
    _variables(dump, 0xFFBFD000, dump.symbols["swapper_pg_dir"], mm_pgd=0x28)
    _i386_vcpus(dump)
    _i386_walks(dump)
    _check_intent(dump, _i386_skip,
                  [("vcpu0.cr3", [PAGE_OFFSET32 + (5 << 12), dump.symbols["_text"] + 0x1000, P2M_VA32,
                                  dump.symbols["xen_p2m_addr"], PAGE_OFFSET32 + (0x0A << 12) + 0x800]),
                   ("vcpu1.cr3", [0x0804A000, 0xBFFFF000])])
    return dump


BUILDERS = {"pv-x86_64": build_x86_64, "pv-i386-pae": build_i386_pae}


def write(name, out):
    dump = BUILDERS[name]()
    guest = dump.guest
    core = name + ".xc"
    result = write_xc_core(os.path.join(out, core), guest_width=guest.width, machine=dump.machine,
                           pages=guest.dump_pages(), vcpus=dump.vcpus, shared_info=dump.shared)
    files = [core, name + ".json", name + ".map"]
    with open(os.path.join(out, name + ".map"), "w") as f:
        f.write(_map_text(dump.symbols, dump.types))
    manifest = {
        "core": core, "guest_width": guest.width, "machine": dump.machine, "mode": guest.mode,
        "nr_pages": len(guest.p2m), "nr_vcpus": len(dump.vcpus), "pfn_count": guest.npfn,
        "p2m": [[pfn, guest.p2m[pfn]] for pfn in sorted(guest.p2m)],
        "sections": result["sections"], "file_size": result["size"],
        "xen_version": {"major": 4, "minor": 17, "extra": ".0", "magic": 0xF00FEBED, "format_version": 1},
        "vcpus": dump.vinfo, "walks": dump.walks, "pages": dump.pages, "data": dump.data,
        "linux_p2m": dump.linux_p2m, "symbols": dump.symbols, "symbol_values": dump.values,
        "struct_offsets": dump.struct_offsets, "shared_info": dump.shared_info,
        "roots": dict(dump.roots), "problems": guest.problems,
        "xen_frames": {str(mfn): role for mfn, role in sorted(guest.xen.items())}, "xen_slots": dump.xen_slots,
        "frames": [{"pfn": pfn, "mfn": guest.p2m[pfn], "role": guest.role.get(pfn, "data")}
                   for pfn in sorted(guest.p2m)],
    }
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(manifest, f, sort_keys=True, indent=1)
        f.write("\n")
    return files
