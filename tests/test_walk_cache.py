"""walk() on a dump keeps the tables and regions it reads (xenstructs/paging/plan.py): the answers,
level by level, equal those of a walk reading every entry alone, and the independent numpy
translate_many(); the caches stay bounded, are dropped by invalidate(), never kept on a live
target, and a Paging changed after a walk is walked by its new rules.

The hand-laid tables are test_translate_many.py's (rights, 1 GiB/2 MiB/4 MiB pages, PSE-36, PAE
with a 32-byte aligned root, reserved bits, holes, a recursive slot, a partly held table page).
"""
import numpy as np
import pytest

from xenstructs import decode as D
from xenstructs.paging import Paging, canonical, walk
from xenstructs.paging import plan as plan_module
from xenstructs.target import MemoryTarget

from test_translate_many import (P, PS, RW, US, XD, PartialTarget, check_against_walk, dense_vas,
                                 four_level_mem, random_vas, table)


class DumpLike(MemoryTarget):
    """A MemoryTarget declared unchanging, as a dump file is: walk() keeps what it reads."""
    fixed = True


def two_level_mem():
    return {0x1000: table({0: 0x2000 | P | RW | US, 1: 0x800000 | P | PS | US,
                           2: 0xC00000 | P | PS | RW | (0x3 << 13), 3: 0x1000000 | P | PS | 1 << 21}, 4),
            0x2000: table({5: 0x3000 | P | US, 6: 0x4000 | P | RW}, 4)}


def pae_mem():
    import struct
    pdpt = bytearray(4096)
    struct.pack_into("<Q", pdpt, 0x20, 0x2000 | P | 0x20)          # A set: a CR3-load warning
    struct.pack_into("<Q", pdpt, 0x28, 0x2000 | P | RW)            # reserved in a walk: no
    struct.pack_into("<Q", pdpt, 0x38, 0x3000 | P)
    return {0x1000: bytes(pdpt),
            0x2000: table({0: 0x4000 | P | RW | US, 1: 0x200000 | P | PS | US}),
            0x3000: table({0: 0x40000000 | P | RW | PS | XD, 1: 0x4000 | P | XD}),
            0x4000: table({0: 0x5000 | P | US, 1: 0x6000 | P | RW | XD, 2: 1 << 50 | 0x7000 | P})}


SHAPES = {
    "4level": (four_level_mem, lambda: Paging("4level", 0x1000, nxe=True, maxphyaddr=40),
               lambda rng: dense_vas(rng, 2000)),
    "4level-nonxe": (four_level_mem, lambda: Paging("4level", 0x1000, nxe=False, maxphyaddr=52),
                     lambda rng: dense_vas(rng, 500)),
    "2level-pse36": (two_level_mem, lambda: Paging("2level", 0x1000, nxe=False, cr4=D.CR4_PSE, maxphyaddr=40),
                     lambda rng: np.concatenate([np.array([(pd << 22) | (pt << 12) | 0x321 for pd in range(6)
                                                           for pt in (0, 5, 6, 7)], np.uint64),
                                                 random_vas(rng, "2level", 500)])),
    "pae": (pae_mem, lambda: Paging("pae", 0x1020, nxe=True, maxphyaddr=40),
            lambda rng: np.concatenate([np.array([(a << 30) | (b << 21) | (c << 12) | 0x45 for a in range(4)
                                                  for b in range(3) for c in range(4)], np.uint64),
                                        random_vas(rng, "pae", 500)])),
}


def same_walk(a, b):
    """Every field and every level (entries, tables, indexes, recursion, warnings) equal."""
    assert a == b
    assert [(lv.recursive, lv.warning, lv.decoded) for lv in a.levels] == \
           [(lv.recursive, lv.warning, lv.decoded) for lv in b.levels]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_kept_tables_walk_as_entries_read_alone(shape):
    make_mem, make_paging, make_vas = SHAPES[shape]
    alone, kept = MemoryTarget(make_mem()), DumpLike(make_mem())
    vas = make_vas(np.random.default_rng(11)).tolist()
    for rounds in range(2):                       # cold, then every table and region kept
        for va in vas:
            same_walk(walk(alone, make_paging(), va), walk(kept, make_paging(), va))
    assert kept.stats["reads"] < alone.stats["reads"] / 4
    names = [n for n in vars(kept) if n.startswith("_walk_regions")]
    assert names and vars(kept)[names[0]], "no region was kept"
    check_against_walk(kept, make_paging(), np.array(vas, np.uint64))


def test_pae_warning_and_recursive_slot_survive_the_regions():
    t = DumpLike(pae_mem())
    pg = Paging("pae", 0x1020, nxe=True, maxphyaddr=40)
    for _ in range(2):
        w = walk(t, pg, 0x45)
        assert w.pa == 0x5045 and "reserved in a PAE PDPTE" in w.levels[0].warning
    t = DumpLike(four_level_mem())
    pg = Paging("4level", 0x1000, maxphyaddr=40)
    va = canonical((510 << 39) | (510 << 30) | (510 << 21) | 0x10, "4level")
    for _ in range(2):
        w = walk(t, pg, va)
        assert w.pa == 0x2010 and [lv.recursive for lv in w.levels] == [False, True, True, True]


def test_partly_held_table_page_and_misaligned_root():
    mem = four_level_mem()
    mem[0x3000] = table({0: 0x4000 | P | RW | US, 1: 0x200000 | P | US | PS, 300: 0x4000 | P})
    part = type("PartialDump", (PartialTarget,), {"fixed": True})(mem)
    pg = Paging("4level", 0x1000, maxphyaddr=40)
    for _ in range(2):
        assert [walk(part, pg, va).pa for va in (0x1000, 0x201000, 300 << 21)] == [0x7000, 0x201000, None]
        assert walk(part, pg, 300 << 21).stop_level == "PDE"
    for root in (0x1004, 0x1ffc):
        check_against_walk(DumpLike(four_level_mem()), Paging("4level", root), dense_vas(np.random.default_rng(8), 100))


def test_bounded_and_dropped_by_invalidate(monkeypatch):
    monkeypatch.setattr(plan_module, "WALK_TABLES", 2)
    monkeypatch.setattr(plan_module, "WALK_REGIONS", 3)
    t, alone = DumpLike(four_level_mem()), MemoryTarget(four_level_mem())
    pg = Paging("4level", 0x1000, nxe=True, maxphyaddr=40)
    vas = dense_vas(np.random.default_rng(12), 300).tolist()
    for va in vas + vas:
        same_walk(walk(t, pg, va), walk(alone, pg, va))
        kept = {n: len(v) for n, v in vars(t).items() if n.startswith("_walk_")}
        assert all(n <= (2 if name.startswith("_walk_tables") else 3) for name, n in kept.items()), kept
    # the memory under a kept table changes: kept until invalidate(), then read again
    assert walk(t, pg, 0x1123).pa == 0x7123
    t.pages[0x4000] = table({1: 0xd000 | P | RW})
    t.invalidate()
    assert not [n for n in vars(t) if n.startswith("_walk_")]
    assert walk(t, pg, 0x1123).pa == 0xd123


def test_live_or_changing_targets_keep_nothing():
    live = DumpLike(four_level_mem())
    live.live = True
    plain = MemoryTarget(four_level_mem())
    pg = Paging("4level", 0x1000, maxphyaddr=40)
    for t in (live, plain):
        assert walk(t, pg, 0x123).pa == 0x6123
        t.pages[0x4000] = table({0: 0xe000 | P})       # memory changes between two walks
        assert walk(t, pg, 0x123).pa == 0xe123
        assert not [n for n in vars(t) if n.startswith("_walk_")]


def test_a_changed_paging_is_walked_by_its_new_rules():
    t = DumpLike(four_level_mem())
    pg = Paging("4level", 0x1000, nxe=True, maxphyaddr=40)
    assert walk(t, pg, 0x123).nx is True
    pg.nxe = False                                   # XD set in the PDE: now a reserved bit
    w = walk(t, pg, 0x123)
    assert (w.stop, w.stop_level) == ("reserved", "PDE")
    pg.nxe, pg.root = True, 0x5000                   # another root: PML4[0] -> PD 0x3000 read as PDPT
    assert walk(t, pg, 0x123).pa == walk(MemoryTarget(four_level_mem()), Paging("4level", 0x5000, maxphyaddr=40),
                                         0x123).pa


def test_walk_objects():
    t = DumpLike(four_level_mem())
    w = walk(t, Paging("4level", 0x1000, maxphyaddr=40), 0x40001234)
    assert (w.ok, w.pa, w.page_size, w.describe_stop()) == (True, 0x40001234, 1 << 30, None)
    assert "pa=1073746484" in repr(w) and "PDPTE" in repr(w)
    w = walk(t, Paging("4level", 0x1000, maxphyaddr=40), 0x2000)
    assert not w.ok and w.describe_stop() == "entry not present at PTE"
    assert [lv.entry for lv in w.levels][-1] == 0
