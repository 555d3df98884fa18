"""Walker and enumerator on tiny hand-laid tables (MemoryTarget), values worked out by hand.

The synthetic cores (tests/test_cores.py) and real kernels (later tier) are the broader truth;
these pin the rules: rights across levels, large pages, reserved bits, holes, recursion, bounds.
"""
import struct

import pytest

from xenstructs.paging import Paging, walk, enumerate_mappings, coalesce, canonical, read_virt
from xenstructs.target import MemoryTarget
from xenstructs.errors import XenscopeError


def table(entries, size=8):
    buf = bytearray(4096)
    for idx, val in entries.items():
        struct.pack_into("<Q" if size == 8 else "<I", buf, idx * size, val)
    return bytes(buf)


P, RW, US, PS = 1, 2, 4, 0x80
XD = 1 << 63


def four_level():
    # PML4 @0x1000; PML4[0] -> PDPT @0x2000 (RW, no US); PML4[511] -> PDPT @0x5000 (RW|US)
    # PDPT@0x2000[0] -> PD @0x3000; PDPT@0x2000[1] = 1 GiB page at 0x40000000 (RW)
    # PD@0x3000[0] -> PT @0x4000 (XD); PD@0x3000[1] = 2 MiB page at 0x200000 (read-only)
    # PT@0x4000[0] = 0x6000 RW|US; [1] = 0x7000 RW; [2] not present; [3] -> 0x9000 present but
    # PT@0x4000[4] = reserved bit 51? no: maxphyaddr 40 makes bit 45 reserved
    # PDPT@0x5000[511] -> PD @0x8000 which is NOT in memory (hole)
    mem = {
        0x1000: table({0: 0x2000 | P | RW, 511: 0x5000 | P | RW | US, 510: 0x1000 | P | RW}),
        0x2000: table({0: 0x3000 | P | RW | US, 1: 0x40000000 | P | RW | PS}),
        0x3000: table({0: 0x4000 | P | RW | US | XD, 1: 0x200000 | P | US | PS}),
        0x4000: table({0: 0x6000 | P | RW | US, 1: 0x7000 | P | RW, 3: 0x9000 | P, 4: 1 << 45 | 0xa000 | P}),
        0x5000: table({511: 0x8000 | P | RW | US}),
        0x6000: bytes(range(256)) * 16,
        0x7000: b"\x77" * 4096,
    }
    return MemoryTarget(mem)


def test_rights_across_levels():
    t = four_level()
    pg = Paging("4level", 0x1000, nxe=True, maxphyaddr=40)
    w = walk(t, pg, 0x0123)
    assert w.pa == 0x6123 and w.page_size == 4096
    assert (w.writable, w.user, w.nx) == (True, False, True)   # US dropped by PML4E, XD from PDE
    assert [lv.name for lv in w.levels] == ["PML4E", "PDPTE", "PDE", "PTE"]
    w = walk(t, pg, 0x40001234)
    assert w.pa == 0x40001234 and w.page_size == 1 << 30 and w.writable and not w.nx
    w = walk(t, pg, 0x200000 + 0x1234)
    assert w.pa == 0x201234 and w.page_size == 1 << 21 and not w.writable


def test_stop_reasons():
    t = four_level()
    pg = Paging("4level", 0x1000, nxe=True, maxphyaddr=40)
    assert (walk(t, pg, 0x2000).stop, walk(t, pg, 0x2000).stop_level) == ("not-present", "PTE")
    w = walk(t, pg, 0x4000)
    assert (w.stop, w.stop_level) == ("reserved", "PTE")
    w = walk(t, pg, 0xffffffffc0000000)
    assert (w.stop, w.stop_level) == ("not-in-dump", "PDE")
    assert walk(t, pg, 0x0000800000000000).stop == "non-canonical"
    assert walk(t, Paging("4level", 0x1000, nxe=False), 0x0).stop == "reserved"  # XD w/o NXE


def test_recursive_entry_walks_like_the_cpu():
    t = four_level()
    pg = Paging("4level", 0x1000, maxphyaddr=40)
    # PML4[510] -> PML4: va with indexes 510,510,510,0 reads PML4 as PDPT, PD, then PT[0] -> PDPT 0x2000
    va = canonical((510 << 39) | (510 << 30) | (510 << 21) | (0 << 12) | 0x10, "4level")
    w = walk(t, pg, va)
    assert w.pa == 0x2010 and w.levels[1].recursive


def test_enumeration_matches_walks_and_reports_problems():
    t = four_level()
    pg = Paging("4level", 0x1000, nxe=True, maxphyaddr=40)
    m = enumerate_mappings(t, pg)
    got = list(zip(m.va.tolist(), m.pa.tolist(), m.size.tolist()))
    assert (0x0, 0x6000, 4096) in got and (0x1000, 0x7000, 4096) in got and (0x3000, 0x9000, 4096) in got
    assert (0x200000, 0x200000, 1 << 21) in got and (0x40000000, 0x40000000, 1 << 30) in got
    for va, pa, size in got:
        w = walk(t, pg, va)
        assert (w.pa, w.page_size) == (pa, size)
    reasons = {(p[2], p[3]) for p in m.problems}
    assert ("PTE", "reserved") in reasons and ("PDE", "not-in-dump") in reasons and ("PML4E", "loop") in reasons
    # the filter keeps only pages starting in the range
    m2 = enumerate_mappings(t, pg, 0x1000, 0x4000)
    assert m2.va.tolist() == [0x1000, 0x3000]


def test_coalesce():
    t = four_level()
    pg = Paging("4level", 0x1000, nxe=True, maxphyaddr=40)
    m = enumerate_mappings(t, pg, 0, 0x2000)
    # 0x0 -> 0x6000 (w,s,nx) and 0x1000 -> 0x7000 (w,s,nx): contiguous va and pa, same rights
    rs = list(coalesce(m))
    assert len(rs) == 1 and rs[0].va_start == 0 and rs[0].va_end == 0x2000 and rs[0].pa_start == 0x6000


def test_read_virt_and_holes():
    t = four_level()
    pg = Paging("4level", 0x1000, maxphyaddr=40)
    assert read_virt(t, 0xff0, 0x20, pg, "4level") == bytes(range(0xf0, 0x100)) + b"\x77" * 0x10
    with pytest.raises(XenscopeError):
        read_virt(t, 0x2000, 8, pg, "4level")


def test_two_level_and_pae():
    # 2-level: PD @0x1000: [0] -> PT @0x2000 ; [1] = 4 MiB page at 0x800000 (PSE); PT[5] = 0x3000|P|US
    mem = {0x1000: table({0: 0x2000 | P | RW | US, 1: 0x800000 | P | PS | US}, 4),
           0x2000: table({5: 0x3000 | P | US}, 4)}
    t = MemoryTarget(mem)
    pg = Paging("2level", 0x1000, nxe=False, cr4=0x10)
    assert walk(t, pg, 0x5123).pa == 0x3123
    w = walk(t, pg, 0x400000 + 0x1234)
    assert w.pa == 0x801234 and w.page_size == 4 << 20 and not w.writable and w.user
    assert walk(t, pg, 1 << 32).stop == "out-of-range"
    m = enumerate_mappings(t, pg)
    assert list(zip(m.va.tolist(), m.pa.tolist())) == [(0x5000, 0x3000), (0x400000, 0x800000)]
    # PAE: PDPT at 0x1020 (32-byte aligned inside a page), PDPT[3] -> PD @0x2000, PD[0] 2 MiB NX page
    pd = table({0: 0x40000000 | P | RW | PS | XD})
    pdpt = bytearray(4096)
    struct.pack_into("<Q", pdpt, 0x20 + 3 * 8, 0x2000 | P)
    t = MemoryTarget({0x1000: bytes(pdpt), 0x2000: pd})
    pg = Paging("pae", 0x1020, nxe=True)
    w = walk(t, pg, 0xc0001000)
    assert w.pa == 0x40001000 and w.nx and w.writable and not w.user
    m = enumerate_mappings(t, pg)
    assert m.va.tolist() == [0xc0000000] and m.size.tolist() == [1 << 21]


def test_absurd_table_count_is_bounded(monkeypatch):
    # every entry of every table points at one shared table: past MAX_TABLES table reads the
    # enumeration stops (counted before the next level is built) with a too-many-mappings problem
    import xenstructs.paging.mappings as pgmod      # where enumeration reads the bound
    monkeypatch.setattr(pgmod, "MAX_TABLES", 10)
    mem = {0x1000: table({i: 0x2000 | P for i in range(512)}), 0x2000: table({i: 0x3000 | P for i in range(512)})}
    m = enumerate_mappings(MemoryTarget(mem), Paging("4level", 0x1000))
    assert m.tables == 1 and len(m) == 0
    assert [(p[0], p[2], p[3]) for p in m.problems] == [(0, "PML4E", "too-many-mappings")]
