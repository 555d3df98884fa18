"""Decoders against values worked out by hand from the Intel SDM and ../shared/reference §7."""
import pytest

from xenstructs import decode as D
from xenstructs.errors import XenscopeError


def test_issue_example_pte():
    # DEVELOPERS/issue 2: 0x800000007fffe067 (PAE or 64-bit) is P RW US A D XD, frame 0x7fffe.
    for mode in ("pae", "4level", "5level"):
        d = D.decode_entry(0x800000007fffe067, mode, "PTE")
        assert d["flags"] == ["P", "RW", "US", "A", "D", "XD"]
        assert d["pfn"] == 0x7fffe and d["addr"] == 0x7fffe000
        assert d["reserved"] == 0 and d["present"] and d["leaf"]


def test_xd_reserved_without_nxe():
    d = D.decode_entry(0x800000007fffe067, "4level", "PTE", nxe=False)
    assert d["reserved"] == 1 << 63


def test_large_pages_and_pat():
    d = D.decode_entry(0x00000000400000e3, "4level", "PDPTE")   # P RW A D PS, 1 GiB at 1 GiB
    assert d["large"] and d["addr"] == 0x40000000 and "PS" in d["flags"]
    d = D.decode_entry(0x00000000002010e3 | 0x1000, "4level", "PDE")  # bit 12 = PAT on a large page
    assert "PAT" in d["flags"] and d["addr"] == 0x200000
    d = D.decode_entry(0x80 | 1, "4level", "PTE")                # bit 7 on a PTE is PAT
    assert "PAT" in d["flags"] and not d["large"]
    # 2 MiB page with bit 13 set: reserved (bits 20:13 must be 0)
    assert D.decode_entry(0x2000e3 | 0x2000, "4level", "PDE")["reserved"] == 0x2000
    # PS in a PML4E is reserved
    assert D.decode_entry(0x1000 | 0x83, "4level", "PML4E")["reserved"] == 0x80


def test_pae_pdpte_reserved_bits():
    assert D.decode_entry(0x1001, "pae", "PDPTE")["reserved"] == 0
    d = D.decode_entry(0x1023, "pae", "PDPTE")               # RW, A: reserved at MOV CR3 only
    assert d["reserved"] == 0 and d["reserved_at_cr3_load"] == 0x22
    assert D.decode_entry(0x1000 | 1 | 1 << 63, "pae", "PDPTE")["reserved"] == 1 << 63


def test_2level_pse36():
    # 4 MiB PDE: bits 31:22 addr, bits 20:13 = physical bits 39:32.
    v = 0x00400000 | (0x3 << 13) | 0x87
    d = D.decode_entry(v, "2level", "PDE")
    assert d["large"] and d["addr"] == 0x300400000
    assert D.decode_entry(v | 1 << 21, "2level", "PDE")["reserved"] == 1 << 21
    # without CR4.PSE, PS is ignored: the PDE points at a page table
    assert not D.decode_entry(v, "2level", "PDE", cr4=0)["large"]


def test_pkey_and_software_bits():
    d = D.decode_entry(1 | 0x5 << 59 | 1 << 52 | 1 << 9, "4level", "PTE")
    assert d["pkey"] == 5 and "SW52" in d["software"] and "AVL9" in d["software"]


def test_pf_error_codes():
    assert D.decode_pf(0x3)["flags"] == ["P", "W"]
    assert D.decode_pf(0x3)["text"] == "supervisor write access, permissions violation"
    assert D.decode_pf(0x14)["text"] == "user instruction fetch access, not-present page"
    assert D.decode_pf(0xd)["text"] == "user read access, reserved bit violation"
    assert D.decode_pf(0x25)["text"] == "user read access, protection keys violation"
    assert "SGX" in D.decode_pf(0x8000)["flags"]
    assert "xen:implicit" in D.decode_pf(1 << 18)["flags"]


def test_control_registers():
    assert D.decode_cr4(0x3406f0)["flags"] == ["PSE", "PAE", "MCE", "PGE", "OSFXSR", "OSXMMEXCPT",
                                               "OSXSAVE", "SMEP", "SMAP"]
    assert D.decode_cr0(0x80050033)["flags"] == ["PE", "MP", "ET", "NE", "WP", "AM", "PG"]
    assert D.decode_efer(0xd01)["flags"] == ["SCE", "LME", "LMA", "NXE"]
    assert D.decode_cr4(1 << 40)["unknown"] == 1 << 40


def test_mode_from_registers():
    assert D.mode_from_registers(0x80000011, 0x10, 0) == "2level"
    assert D.mode_from_registers(0x80000011, 0x30, 0x800) == "pae"
    assert D.mode_from_registers(0x80050033, 0x20, 0x500) == "4level"
    assert D.mode_from_registers(0x80050033, 0x1020, 0x500) == "5level"
    assert D.mode_from_registers(0x11, 0x20, 0x500) is None


@pytest.mark.parametrize("bad", [-1, 1 << 64, "x"])
def test_bad_values(bad):
    with pytest.raises(XenscopeError):
        D.decode_entry(bad, "4level", "PTE")


def test_bad_level_and_mode():
    with pytest.raises(XenscopeError):
        D.decode_entry(1, "4level", "PML5E")
    with pytest.raises(XenscopeError):
        D.decode_entry(1, "3level", "PTE")
    with pytest.raises(XenscopeError):
        D.decode_entry(1 << 40, "2level", "PTE")
