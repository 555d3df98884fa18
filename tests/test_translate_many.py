"""translate_many() gives exactly walk()'s answer, address by address, and the manifests' truth.

Every bundled core: all manifest walks, every mapped page at random offsets, problem ranges, and
random unmapped, out-of-range and non-canonical addresses. Hand-laid tables (as in
test_paging_unit.py): rights, large pages, PSE/PSE-36, PAE, reserved bits, holes, recursion,
partly held table pages, misaligned roots, slow (caching) targets and chunking.
"""
import json
import os
import struct

import numpy as np
import pytest

from xenstructs import decode as D
from xenstructs.context import resolve
from xenstructs.errors import NotInDump
from xenstructs.paging import (Paging, STOP_CODES, canonical, translate_many, walk)
from xenstructs.target import MemoryTarget
from xenstructs.targets import open_dump

from conftest import CORES, MANIFESTS

P, RW, US, PS = 1, 2, 4, 0x80
XD = 1 << 63


def table(entries, size=8):
    buf = bytearray(4096)
    for idx, val in entries.items():
        struct.pack_into("<Q" if size == 8 else "<I", buf, idx * size, val)
    return bytes(buf)


def check_against_walk(t, pg, vas, chunk=None):
    """translate_many(vas) equals walk() on every element, field by field; returns the result."""
    vas = np.asarray(vas, dtype=np.uint64)
    tr = translate_many(t, pg, vas, chunk=chunk)
    assert len(tr) == len(vas)
    assert tr.va.tolist() == vas.tolist()
    for i, va in enumerate(vas.tolist()):
        w = walk(t, pg, va)
        got = (tr.pa[i] if tr.ok[i] else None, tr.page_size[i] if tr.ok[i] else None,
               tr.stop_name(i), tr.stop_level_name(i))
        assert got == (w.pa, w.page_size, w.stop, w.stop_level), hex(va)
        assert bool(tr.ok[i]) == w.ok, hex(va)
        if w.ok:
            assert (bool(tr.rw[i]), bool(tr.us[i]), bool(tr.nx[i])) == (w.writable, w.user, w.nx), hex(va)
        else:
            assert tr.pa[i] == 0 and tr.page_size[i] == 0
    return tr


def random_vas(rng, mode, n):
    """Random addresses over the whole 64-bit range, the mode's width and near its edges."""
    bits = {"2level": 32, "pae": 32, "4level": 48, "5level": 57}[mode]
    full = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    inside = rng.integers(0, 2**bits, n, dtype=np.uint64)
    canon = np.array([canonical(int(v), mode) for v in inside], np.uint64)
    edges = [0, (1 << bits) - 1, 1 << (bits - 1), (1 << (bits - 1)) - 1, 2**64 - 1, 1 << 32, (1 << 32) - 1]
    return np.concatenate([full, inside, canon, np.array(edges, np.uint64)])


# ---------------------------------------------------------------------------------------------
# Bundled cores
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=MANIFESTS)
def core(request):
    with open(os.path.join(CORES, request.param)) as f:
        man = json.load(f)
    t = open_dump(os.path.join(CORES, man["core"]))
    yield man, t
    t.close()


def core_vas(man, rng):
    vas = [w["va"] for w in man["walks"]]
    for p in man["pages"]:
        vas += [p["va"], p["va"] + p["size"] - 1]
        vas += [p["va"] + int(o) for o in rng.integers(0, p["size"], 8)]
    for p in man["problems"]:
        vas += [p["va_start"], p["va_end"] - 1]
        vas += [p["va_start"] + int(o) for o in rng.integers(0, p["va_end"] - p["va_start"], 8, dtype=np.uint64)]
    return np.concatenate([np.array(vas, np.uint64), random_vas(rng, man["mode"], 3000)])


def test_cores_match_walk(core):
    man, t = core
    pg = resolve(t).paging
    rng = np.random.default_rng(1)
    vas = core_vas(man, rng)
    tr = check_against_walk(t, pg, vas)
    reasons = {STOP_CODES[c] for c in np.unique(tr.stop).tolist()}
    assert None in reasons and len(reasons) >= 3        # translations and several kinds of failure
    # chunked processing gives the same arrays
    tr2 = translate_many(t, pg, vas, chunk=97)
    for f in ("pa", "page_size", "ok", "rw", "us", "nx", "stop", "stop_level"):
        assert getattr(tr2, f).tolist() == getattr(tr, f).tolist(), f


def test_cores_match_manifest_walks(core):
    man, t = core
    pg = resolve(t).paging
    tr = translate_many(t, pg, [w["va"] for w in man["walks"]])
    for i, w in enumerate(man["walks"]):
        assert (int(tr.pa[i]) if tr.ok[i] else None) == w["pa"], w
        assert tr.stop_name(i) == w["stop"], w
        if w["stop"] not in (None, "non-canonical"):
            assert tr.stop_level_name(i) == w["level"], w
        if w["pa"] is not None:
            assert tr.page_size[i] == w["page_size"], w
            assert (bool(tr.rw[i]), bool(tr.us[i]), bool(tr.nx[i])) == (w["writable"], w["user"], w["nx"]), w


def test_cores_match_manifest_pages(core):
    man, t = core
    pg = resolve(t).paging
    rng = np.random.default_rng(2)
    pages = man["pages"]
    offs = [int(rng.integers(0, p["size"])) for p in pages]
    tr = translate_many(t, pg, [p["va"] + o for p, o in zip(pages, offs)])
    assert tr.ok.all()
    got = [{"va": int(v) - o, "pa": int(a) - o, "size": int(s), "writable": bool(w), "user": bool(u), "nx": bool(x)}
           for v, a, s, w, u, x, o in zip(tr.va, tr.pa, tr.page_size, tr.rw, tr.us, tr.nx, offs)]
    assert got == pages


def test_cores_unmapped_never_translate(core):
    """Random addresses outside every manifest page never translate; inside one they always do."""
    man, t = core
    pg = resolve(t).paging
    rng = np.random.default_rng(3)
    vas = random_vas(rng, man["mode"], 5000)
    tr = translate_many(t, pg, vas)
    starts = np.array([p["va"] for p in man["pages"]], np.uint64)
    ends = starts + np.array([p["size"] for p in man["pages"]], np.uint64)
    k = np.searchsorted(starts, vas, side="right") - 1
    inside = (k >= 0) & (vas < ends[np.maximum(k, 0)])
    assert (tr.ok == inside).all()


# ---------------------------------------------------------------------------------------------
# Hand-laid tables
# ---------------------------------------------------------------------------------------------

def four_level_mem():
    # as test_paging_unit.four_level: rights across levels, 1 GiB and 2 MiB pages, reserved bit
    # (maxphyaddr 40), a table missing from memory (PD @0x8000) and a recursive PML4 slot (510)
    return {
        0x1000: table({0: 0x2000 | P | RW, 511: 0x5000 | P | RW | US, 510: 0x1000 | P | RW,
                       5: 0x2000 | P | PS}),                     # PS in a PML4E: reserved
        0x2000: table({0: 0x3000 | P | RW | US, 1: 0x40000000 | P | RW | PS,
                       2: 0x80000000 | P | PS | 0x2000,          # 1 GiB page with reserved low bits
                       3: 0xC0000000 | P | PS | 0x1000}),        # 1 GiB page with PAT (fine)
        0x3000: table({0: 0x4000 | P | RW | US | XD, 1: 0x200000 | P | US | PS,
                       2: 0x400000 | P | PS | XD | RW}),
        0x4000: table({0: 0x6000 | P | RW | US, 1: 0x7000 | P | RW, 3: 0x9000 | P,
                       4: 1 << 45 | 0xa000 | P, 5: 0xb000 | P | 0xF00, 6: 0xc000 | 0xFFE}),
        0x5000: table({511: 0x8000 | P | RW | US, 0: 0x3000 | P | US}),
    }


def dense_vas(rng, n=4000):
    """Addresses around every interesting slot of the hand-laid tables, plus random ones."""
    vas = []
    for l4 in (0, 5, 510, 511, 1, 256):
        for l3 in (0, 1, 2, 3, 4, 510, 511):
            for l2 in (0, 1, 2, 3, 510):
                for l1 in (0, 1, 2, 3, 4, 5, 6, 7, 511):
                    v = l4 << 39 | l3 << 30 | l2 << 21 | l1 << 12
                    vas += [canonical(v, "4level"), canonical(v | 0xABC, "4level"), v]
    return np.concatenate([np.array(vas, np.uint64), random_vas(rng, "4level", n)])


@pytest.mark.parametrize("nxe,maxphyaddr", [(True, 40), (False, 40), (True, 52), (True, 36)])
def test_four_level_hand_laid(nxe, maxphyaddr):
    t = MemoryTarget(four_level_mem())
    pg = Paging("4level", 0x1000, nxe=nxe, maxphyaddr=maxphyaddr)
    tr = check_against_walk(t, pg, dense_vas(np.random.default_rng(4)))
    if nxe and maxphyaddr == 40:
        tr = translate_many(t, pg, [0x123, 0x40001234, 0x201234, 0x2000, 0x4000,
                                    0xffffffffc0000000, 0x0000800000000000, 5 << 39])
        assert tr.pa[:3].tolist() == [0x6123, 0x40001234, 0x201234]
        assert tr.page_size[:3].tolist() == [4096, 1 << 30, 1 << 21]
        assert (tr.rw[0], tr.us[0], tr.nx[0]) == (True, False, True)
        assert [tr.stop_name(i) for i in range(3, 8)] == ["not-present", "reserved", "not-in-dump",
                                                          "non-canonical", "reserved"]
        assert [tr.stop_level_name(i) for i in range(3, 8)] == ["PTE", "PTE", "PDE", None, "PML4E"]


def test_recursive_slot():
    t = MemoryTarget(four_level_mem())
    pg = Paging("4level", 0x1000, maxphyaddr=40)
    va = canonical((510 << 39) | (510 << 30) | (510 << 21) | 0x10, "4level")
    tr = check_against_walk(t, pg, [va])
    assert tr.pa[0] == 0x2010


def test_five_level():
    mem = {0x1000: table({0: 0x2000 | P | RW | US, 300: 0x2000 | P | RW, 7: 0x2000 | P | PS}),
           0x2000: table({0: 0x3000 | P | RW | US, 9: 0x9000 | P}),
           0x3000: table({0: 0x40000000 | P | RW | US | PS, 1: 0x4000 | P | RW}),
           0x4000: table({0: 0x100000 | P | US | PS | XD}),
           0x5000: table({})}
    t = MemoryTarget(mem)
    pg = Paging("5level", 0x1000, nxe=True)
    vas = []
    for l5 in (0, 300, 7, 511, 1):
        for l4 in (0, 9, 1):
            for l3 in (0, 1, 2):
                for l2 in (0, 1):
                    v = l5 << 48 | l4 << 39 | l3 << 30 | l2 << 21 | 0x1234
                    vas += [canonical(v, "5level"), v]
    check_against_walk(t, pg, np.concatenate([np.array(vas, np.uint64),
                                              random_vas(np.random.default_rng(5), "5level", 2000)]))


@pytest.mark.parametrize("cr4", [0, D.CR4_PSE])
@pytest.mark.parametrize("maxphyaddr", [32, 36, 40, 52])
def test_two_level_pse_and_pse36(cr4, maxphyaddr):
    # PD: [0] -> PT; [1] 4 MiB page; [2] PSE-36 page above 4 GiB; [3] bit 21 set (reserved);
    # [4] PS set pointing at a PT (a table when PSE is off); [5] absent
    mem = {0x1000: table({0: 0x2000 | P | RW | US, 1: 0x800000 | P | PS | US,
                          2: 0xC00000 | P | PS | RW | (0x3 << 13), 3: 0x1000000 | P | PS | 1 << 21,
                          4: 0x2000 | P | PS | RW}, 4),
           0x2000: table({5: 0x3000 | P | US, 6: 0x4000 | P | RW}, 4)}
    t = MemoryTarget(mem)
    pg = Paging("2level", 0x1000, nxe=False, cr4=cr4, maxphyaddr=maxphyaddr)
    vas = [(pd << 22) | (pt << 12) | 0x321 for pd in range(8) for pt in (0, 5, 6, 7, 1023)]
    vas += [1 << 32, 2**64 - 1, (1 << 32) - 1]
    check_against_walk(t, pg, np.concatenate([np.array(vas, np.uint64),
                                              random_vas(np.random.default_rng(6), "2level", 1000)]))


@pytest.mark.parametrize("nxe", [True, False])
def test_pae(nxe):
    # PDPT 32-byte aligned inside a page: [0] -> PD @0x2000, [1] reserved bit 1, [3] -> PD @0x3000
    pdpt = bytearray(4096)
    struct.pack_into("<Q", pdpt, 0x20, 0x2000 | P)
    struct.pack_into("<Q", pdpt, 0x28, 0x2000 | P | RW)
    struct.pack_into("<Q", pdpt, 0x38, 0x3000 | P)
    mem = {0x1000: bytes(pdpt),
           0x2000: table({0: 0x4000 | P | RW | US, 1: 0x200000 | P | PS | US, 2: 0x400000 | P | PS | 0x2000}),
           0x3000: table({0: 0x40000000 | P | RW | PS | XD, 1: 0x4000 | P | XD}),
           0x4000: table({0: 0x5000 | P | US, 1: 0x6000 | P | RW | XD, 2: 1 << 50 | 0x7000 | P})}
    t = MemoryTarget(mem)
    pg = Paging("pae", 0x1020, nxe=nxe, maxphyaddr=40)
    vas = [(a << 30) | (b << 21) | (c << 12) | 0x45 for a in range(4) for b in (0, 1, 2, 3) for c in (0, 1, 2, 3)]
    tr = check_against_walk(t, pg, np.concatenate([np.array(vas + [1 << 32], np.uint64),
                                                   random_vas(np.random.default_rng(7), "pae", 1000)]))
    assert tr.ok.any()


class PartialTarget(MemoryTarget):
    """Holds only the first half of page 0x3000 (a segment ending inside a table page)."""

    def _read_phys(self, addr, size):
        if addr < 0x4000 and addr + size > 0x3800:
            raise NotInDump(max(addr, 0x3800))
        return super()._read_phys(addr, size)


def test_partly_held_table_page():
    mem = four_level_mem()
    mem[0x3000] = table({0: 0x4000 | P | RW | US, 1: 0x200000 | P | US | PS, 300: 0x4000 | P})
    t = PartialTarget(mem)
    pg = Paging("4level", 0x1000, maxphyaddr=40)
    tr = check_against_walk(t, pg, [0x1000, 0x201000, 300 << 21, 0x3000])
    assert tr.ok.tolist() == [True, True, False, True]
    assert tr.stop_name(2) == "not-in-dump" and tr.stop_level_name(2) == "PDE"


def test_misaligned_root():
    """A root not aligned on the entry size (a hand-given CR3) reads entries as walk() does."""
    mem = four_level_mem()
    t = MemoryTarget(mem)
    for root in (0x1004, 0x1ffc, 0x1001):
        pg = Paging("4level", root, maxphyaddr=52)
        check_against_walk(t, pg, dense_vas(np.random.default_rng(8), 200))


def test_slow_target_reads_each_table_once():
    mem = four_level_mem()
    t = MemoryTarget(mem)
    t.slow = True
    pg = Paging("4level", 0x1000, maxphyaddr=40)
    vas = np.arange(0, 8 << 12, 7, dtype=np.uint64)        # 4681 addresses through the same tables
    tr = translate_many(t, pg, vas)
    assert tr.ok.sum() > 0
    assert t.stats["reads"] == 4                             # PML4, PDPT, PD and PT: one read each
    check_against_walk(t, pg, vas[::50])


def test_input_forms_and_empty():
    t = MemoryTarget(four_level_mem())
    pg = Paging("4level", 0x1000, maxphyaddr=40)
    assert len(translate_many(t, pg, [])) == 0
    tr = translate_many(t, pg, [0x123])
    assert tr.pa.tolist() == [0x6123] and tr.stop.dtype == np.uint8
    assert translate_many(t, pg, np.array([[0x123, 0x1123]], np.uint64)).pa.tolist() == [0x6123, 0x7123]


def test_elf_core_chunks_and_large_input(core):
    """Hundreds of thousands of addresses, in small chunks, equal the one-chunk answer."""
    man, t = core
    pg = resolve(t).paging
    rng = np.random.default_rng(9)
    base = np.array([p["va"] for p in man["pages"]], np.uint64)
    vas = base[rng.integers(0, len(base), 200_000)] + rng.integers(0, 4096, 200_000, dtype=np.uint64)
    a = translate_many(t, pg, vas)
    b = translate_many(t, pg, vas, chunk=65536)
    assert a.ok.all() and a.pa.tolist() == b.pa.tolist()
    sample = rng.integers(0, len(vas), 500)
    check_against_walk(t, pg, vas[sample])
