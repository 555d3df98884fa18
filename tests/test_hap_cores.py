"""A translated guest's P2M in both of Xen's formats (p2m-pt/NPT, EPT) and the nested walk through it, on
the cores cores/builder/hapguest.py writes from the formats' sources (independent of xenstructs)."""
import json
import os

import pytest

from xenstructs.errors import NotInDump
from xenstructs.paging import Paging, root_from_cr3
from xenstructs.paging.nested import GuestMemory, stage2, walk_nested
from xenstructs.targets import open_dump
from xenstructs.xen import ept, npt
from xenstructs.xen.hvm import P2M, Vcpu
from xenstructs.xen.p2m_types import type_name

CORES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cores")


@pytest.fixture(scope="module", params=["npt", "ept"])
def hap(request):
    with open(os.path.join(CORES, f"hap-{request.param}.json")) as f:
        man = json.load(f)
    target = open_dump(os.path.join(CORES, man["core"]))
    fmt = npt.Format() if man["format"] == "npt" else ept.Format(ept.layout_for("4.17.0"))
    p2m = P2M(target, fmt, man["root_mfn"], "manifest")
    guest = GuestMemory(target, p2m, [Vcpu(0, 0, dict(man["guest"]), "manifest")], "test")
    yield man, p2m, guest
    target.close()


def test_every_gfn(hap):
    man, p2m, _ = hap
    for e in man["p2m"]:
        for gfn in (e["gfn"], e["gfn"] + (1 << e["order"]) - 1):
            t = p2m.translate(gfn)
            assert t.entry is not None and t.type_name == "p2m_" + e["type"], (hex(gfn), t)
            want = None if e["mfn"] is None else e["mfn"] + gfn - e["gfn"]
            assert t.mfn == (want if t.entry.present else None), (hex(gfn), e, t)
    assert p2m.translate(0x250).stop == "not-present"
    assert p2m.translate(1 << 40).stop == "out-of-range"


def test_leaves(hap):
    man, p2m, _ = hap
    got = [(x.gfn, x.order if x.entry.present else 0, type_name(x.entry.type)) for x in p2m.leaves().leaves]
    want = [(e["gfn"], e["order"], "p2m_" + e["type"]) for e in man["p2m"]]
    assert got == want


def test_nested_walks(hap):
    man, p2m, guest = hap
    regs = man["guest"]
    paging = Paging("4level", root_from_cr3(regs["cr3"], "4level"), nxe=True)
    for truth in man["walks"]:
        w, stages = walk_nested(guest, paging, truth["va"])
        assert [(lv.name, lv.table) for lv in w.levels] == [(x["level"], x["table_gpa"]) for x in truth["levels"]]
        for s, x in zip(stages["tables"], truth["levels"]):
            assert (s.mfn, s.p2m_type) == (x["table_mfn"], x["table_type"] and "p2m_" + x["table_type"])
        assert w.pa == truth["gpa"], hex(truth["va"])
        if truth["gpa"] is None:
            assert w.stop == truth["stop"]
            continue
        assert stages["page"].mfn == truth["mfn"] and stages["page"].p2m_type == (
            truth["type"] and "p2m_" + truth["type"])
        if "bytes" in truth:
            assert guest.read_phys(w.pa, 32).hex() == truth["bytes"]
        elif truth["mfn"] is None:
            with pytest.raises(NotInDump, match="P2M entry not present"):
                guest.read_phys(w.pa, 8)


def test_marker_and_saved_registers(hap):
    man, _, guest = hap
    from xenstructs.context import resolve
    from xenstructs.paging import read_virt
    ctx = resolve(guest, cpu=0)
    assert ctx.paging.mode == "4level" and ctx.cr3 == man["guest"]["cr3"]
    m = man["marker"]
    assert read_virt(guest, m["va"], len(m["text"]), ctx.paging, None).decode() == m["text"]
    assert stage2(guest.p2m, m["gpa"]).mfn == m["mfn"]


def test_entry_fields(hap):
    man, p2m, _ = hap
    marker = p2m.translate(man["marker"]["gpa"] >> 12).entry
    mmio = p2m.translate(0xFEE00).entry
    grant = p2m.translate(0x300).entry
    paged = p2m.translate(0x220).entry
    assert marker.writable and not marker.nx and not marker.recalc
    assert p2m.translate(man["recalc_gfn"]).entry.recalc and "recalc" in p2m.translate(man["recalc_gfn"]).entry.flags()
    assert not paged.recalc
    assert grant.writable and grant.nx
    assert not paged.present and paged.type_name == "p2m_ram_paged"
    if man["format"] == "npt":
        assert "PCD" in mmio.flags() and "NX" in grant.flags() and "PCD" not in marker.flags()
        assert paged.mfn == (1 << 40) - 1                       # INVALID_MFN clipped (p2m_l1e_from_pfn)
    else:
        assert (marker.memory_type, mmio.memory_type, marker.access) == ("WB", "UC", "rwx")
        assert "ipat" in marker.flags() and "sve" in marker.flags() and marker.valid
        eptp = ept.Eptp(man["eptp"])
        assert (eptp.mfn, eptp.levels, eptp.memory_type, eptp.ad) == (man["root_mfn"], 4, "WB", True)
        assert not ept.decode(1 << 63, 1).valid                  # suppress-#VE alone: an empty entry


def test_ept_4_20_layout():
    with open(os.path.join(CORES, "hap-ept.json")) as f:
        man = json.load(f)
    assert ept.layout_for("4.20.4") is ept.NEW and ept.layout_for("4.19.6") is ept.OLD
    for e in man["ept_4_20"]:
        new, old = ept.decode(e["raw"], 1, ept.NEW), ept.decode(e["raw"], 1, ept.OLD)
        assert new.type_name == "p2m_" + e["type"] and new.access == e["access"]
        assert ("pw" in new.flags()) == e["pw"]
        assert old.access != e["access"]          # read with 4.17's layout the access field is wrong


def test_npt_flags_words():
    assert npt.pte_flags(0x8000000000000000 | 0x67) == 0x800067
    assert npt.entry_type(0) == 1 and npt.entry_type(0x67) == 0
    assert npt.entry_type((5 << 52) | 0x77) == 5


class _Offsets:
    def get(self, struct_name, member):
        return {"domain.options": 0, "domain.arch.paging.mode": 4, "domain.arch.emulation_flags": 8}.get(
            f"{struct_name}.{member}")


class _Host:
    """A struct domain of three words: options, arch.paging.mode, arch.emulation_flags."""

    def __init__(self, options, mode, emulation):
        self.words = {0: options, 4: mode, 8: emulation}

    def struct_offsets(self, *want):
        return _Offsets()

    def read_u32(self, va):
        return self.words[va]


@pytest.mark.parametrize("options,mode,emulation,want", [
    (0, 0, 0, ("PV", "PV", [])),
    (0, 1 << 20 | 1 << 12, 0, ("PV", "shadow", ["shadow", "log_dirty"])),   # a PV guest in live migration
    (1, 1 << 21 | 0x7 << 11, 1, ("PVH", "HAP", ["hap", "refcounts", "log_dirty", "translate"])),
    (3, 0x206800, 0x1, ("PVH", "HAP", ["hap", "refcounts", "translate", "external"])),  # the real PVH domU's
    (1, 1 << 20 | 1 << 13, 0x3FF, ("HVM", "shadow", ["shadow", "translate"])),   # X86_EMU_ALL & ~VPCI
])
def test_domain_kind(options, mode, emulation, want):
    from types import SimpleNamespace
    from xenstructs.xen.hvm import kind
    k = kind(_Host(options, mode, emulation), SimpleNamespace(struct_va=0, id=1))
    assert (k.type, k.paging, k.paging_words()) == want


class _P2MHost:
    """A domain whose struct p2m_domain has ``eptp`` (and phys_table 0x100): what domain_p2m reads."""

    class _Structs:
        def get(self, struct_name, member):
            return {"domain.arch.p2m": 0, "p2m_domain.domain": 8, "p2m_domain.phys_table": 16,
                    "p2m_domain.ept": 24}.get(f"{struct_name}.{member}")

    def __init__(self, eptp):
        self.words = {0x5000: 0x1000, 0x1008: 0x5000, 0x1010: 0x100, 0x1018: eptp}
        self.t, self.version = None, "4.17.5"

    def struct_offsets(self, *want):
        return self._Structs()

    def read_u64(self, va):
        return self.words[va]


@pytest.mark.parametrize("eptp,paging,want", [
    (0x100000 | 6 | 3 << 3 | 1 << 6, "HAP", "ept"),     # Intel HAP: the EPTP names the root
    (0, "HAP", "npt"),                                  # AMD HAP: p2m->ept stays zero
    (0x100000 | 6 | 3 << 3, "shadow", "npt"),           # shadow mode uses p2m-pt on any CPU
])
def test_p2m_format_choice(eptp, paging, want):
    from types import SimpleNamespace
    from xenstructs.xen.hvm import Kind, domain_p2m
    p2m = domain_p2m(_P2MHost(eptp), SimpleNamespace(id=1, struct_va=0x5000),
                     Kind("HVM", paging, 1, 0x3FF, 0))
    assert p2m.format.name == want and p2m.root_mfn == 0x100


@pytest.mark.parametrize("module", [npt, ept])
def test_columns_decode_a_table_as_decode_decodes_each_entry(module):
    """The whole-table decoder (used to enumerate a P2M) says what the entry decoder says, entry for
    entry, at every level, for random entries with the bits the formats use set and clear."""
    import numpy as np
    rng = np.random.default_rng(16)
    words = rng.integers(0, 1 << 63, 4096, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 4096).astype(np.uint64)
    words[::7] = 0
    words[1::11] &= np.uint64(~0x7 & (1 << 64) - 1)              # not present (no P / no R, W, X)
    words[2::13] &= np.uint64(0x000FFFFFFFFFFFFF)                 # no type bits: p2m_ram_rw (NPT)
    for level in (1, 2, 3, 4):
        cols = module.columns(words, level)
        for i, raw in enumerate(words.tolist()):
            e = module.decode(raw, level)
            holds = e.valid if module is ept else e.type != 1
            assert (bool(cols["present"][i]), bool(cols["leaf"][i]), int(cols["mfn"][i]), int(cols["type"][i]),
                    bool(cols["recalc"][i]), bool(cols["holds"][i])) == \
                (e.present, e.leaf, e.mfn, e.type, bool(e.recalc), holds), (level, hex(raw))


def test_rows_spread_every_leaf_over_its_frames(hap):
    """p2m-check's rows of a translated P2M: one per 4 KiB frame of each present leaf of the builder's
    manifest (a 2 MiB leaf gives 512 consecutive gfn/mfn pairs), its type on each; the typed
    non-present entries apart."""
    import numpy as np
    from xenstructs.xen.p2m_hap import _rows
    man, p2m, _ = hap
    gfn, mfn, types, _, absent, _ = _rows(p2m)
    present = [e for e in man["p2m"] if "mfn" in e and e["mfn"] is not None]
    want = [(e["gfn"] + i, e["mfn"] + i, "p2m_" + e["type"]) for e in present for i in range(1 << e["order"])]
    assert list(zip(gfn.tolist(), mfn.tolist(), [type_name(t) for t in types.tolist()])) == want
    assert gfn.dtype == mfn.dtype == np.uint64
    assert [(x.gfn, type_name(x.entry.type)) for x in absent] == \
        [(e["gfn"], "p2m_" + e["type"]) for e in man["p2m"] if e not in present]
