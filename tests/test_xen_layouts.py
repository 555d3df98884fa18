"""xenstructs.xen.layouts / dwarf against bits written out by hand from Xen's asm-x86/mm.h.

Every expected value below is typed in from the headers at the release tags (see
../shared/reference/xen-facts.md section 1 and the Xen tags RELEASE-4.4.0 ... RELEASE-4.22.0),
never computed by the module under test. PG_shift(idx) = 64 - idx.
"""
import shutil
import struct
import subprocess
from types import SimpleNamespace

import pytest

from xenstructs.errors import XenscopeError
from xenstructs.formats.vmcoreinfo import parse_vmcoreinfo
from xenstructs.xen import layouts as L

# ---------------------------------------------------------------- independent statement of the bits
T1_BITS = dict(type_mask=0xF000000000000000, type_shift=60,
               types={"none": 0, "l1": 0x1000000000000000, "l2": 0x2000000000000000,
                      "l3": 0x3000000000000000, "l4": 0x4000000000000000,
                      "seg_desc": 0x5000000000000000, "writable": 0x7000000000000000,
                      "shared": 0x8000000000000000},
               flags={"locked": 0x0080000000000000, "pinned": 0x0800000000000000,
                      "validated": 0x0400000000000000, "pae_xen_l2": 0x0200000000000000,
                      "partial": 0x0100000000000000},
               count_mask=0x007FFFFFFFFFFFFF)
T23_TYPES = {"none": 0, "l1": 0x2000000000000000, "l2": 0x4000000000000000, "l3": 0x6000000000000000,
             "l4": 0x8000000000000000, "seg_desc": 0xA000000000000000,
             "writable": 0xE000000000000000, "shared": 0xC000000000000000}
T2_BITS = dict(type_mask=0xE000000000000000, type_shift=61, types=T23_TYPES,
               flags={"locked": 0x1000000000000000, "pinned": 0x0800000000000000,
                      "validated": 0x0400000000000000, "pae_xen_l2": 0x0200000000000000,
                      "partial": 0x0100000000000000},
               count_mask=0x00FFFFFFFFFFFFFF)
T3_BITS = dict(type_mask=0xE000000000000000, type_shift=61, types=T23_TYPES,
               flags={"locked": 0x1000000000000000, "pinned": 0x0800000000000000,
                      "validated": 0x0400000000000000, "pae_xen_l2": 0x0200000000000000,
                      "partial": 0x0100000000000000, "non_coherent": 0x0080000000000000},
               count_mask=0x007FFFFFFFFFFFFF)

STATES_LOW = {"inuse": 0, "offlining": 0x0080000000000000, "offlined": 0x0100000000000000,
              "free": 0x0180000000000000}
STATES_HIGH = {"inuse": 0, "offlining": 0x0400000000000000, "offlined": 0x0800000000000000,
               "free": 0x0C00000000000000}
C_BITS = {
    "C1": dict(flags={"allocated": 1 << 63, "xen_heap": 1 << 62, "page_table": 1 << 61, "broken": 1 << 57},
               cacheattr_mask=0x1C00000000000000, state_mask=0x0180000000000000, states=STATES_LOW,
               count_mask=0x007FFFFFFFFFFFFF),
    "C2": dict(flags={"allocated": 1 << 63, "xen_heap": 1 << 62, "page_table": 1 << 61, "broken": 1 << 57,
                      "extra": 1 << 54},
               cacheattr_mask=0x1C00000000000000, state_mask=0x0180000000000000, states=STATES_LOW,
               count_mask=0x003FFFFFFFFFFFFF),
    "C3": dict(flags={"allocated": 1 << 63, "xen_heap": 1 << 62, "page_table": 1 << 61, "broken": 1 << 60,
                      "extra": 1 << 57},
               cacheattr_mask=0, state_mask=0x0C00000000000000, states=STATES_HIGH,
               count_mask=0x01FFFFFFFFFFFFFF),
    "C3'": dict(flags={"allocated": 1 << 63, "xen_heap": 1 << 62, "page_table": 1 << 61, "broken": 1 << 60},
                cacheattr_mask=0, state_mask=0x0C00000000000000, states=STATES_HIGH,
                count_mask=0x03FFFFFFFFFFFFFF),
    "C4": dict(flags={"allocated": 1 << 63, "xen_heap": 1 << 62, "extra": 1 << 61, "broken": 1 << 60,
                      "shadowed_pt": 1 << 57},
               cacheattr_mask=0, state_mask=0x0C00000000000000, states=STATES_HIGH,
               count_mask=0x01FFFFFFFFFFFFFF),
    "C4-noshadow": dict(flags={"allocated": 1 << 63, "xen_heap": 1 << 62, "extra": 1 << 61,
                               "broken": 1 << 60},
                        cacheattr_mask=0, state_mask=0x0C00000000000000, states=STATES_HIGH,
                        count_mask=0x03FFFFFFFFFFFFFF),
    # 4.22.0 (commit cbb484d008): PGC_need_scrub = PG_mask(1, 7), PGC_shadowed_pt = PG_mask(1, 8)
    "C5": dict(flags={"allocated": 1 << 63, "xen_heap": 1 << 62, "extra": 1 << 61, "broken": 1 << 60,
                      "need_scrub": 1 << 57, "shadowed_pt": 1 << 56},
               cacheattr_mask=0, state_mask=0x0C00000000000000, states=STATES_HIGH,
               count_mask=0x00FFFFFFFFFFFFFF),
    "C5-noshadow": dict(flags={"allocated": 1 << 63, "xen_heap": 1 << 62, "extra": 1 << 61,
                               "broken": 1 << 60, "need_scrub": 1 << 57},
                        cacheattr_mask=0, state_mask=0x0C00000000000000, states=STATES_HIGH,
                        count_mask=0x01FFFFFFFFFFFFFF),
}

# version -> (type layout, count layout)
BOUNDARIES = {
    "4.4.0": ("T1", "C1"), "4.6.0": ("T1", "C1"), "4.9.4": ("T1", "C1"),
    "4.10.0": ("T2", "C1"), "4.12.3": ("T2", "C1"), "4.13.0": ("T2", "C1"), "4.13.4": ("T2", "C1"),
    "4.13.5": ("T3", "C3'"), "4.14.0": ("T2", "C2"), "4.14.5": ("T2", "C2"), "4.14.6": ("T3", "C3"),
    "4.15.0": ("T2", "C2"), "4.15.2": ("T2", "C2"), "4.15.3": ("T3", "C3"),
    "4.16.0": ("T2", "C2"), "4.16.1": ("T2", "C2"), "4.16.2": ("T3", "C3"),
    "4.17.0": ("T3", "C3"), "4.17.7": ("T3", "C3"), "4.18.0": ("T3", "C4"), "4.19.0": ("T3", "C4"),
    "4.21.0": ("T3", "C4"), "4.22.0": ("T3", "C5"),
}


@pytest.mark.parametrize("name,bits", [("T1", T1_BITS), ("T2", T2_BITS), ("T3", T3_BITS)])
def test_type_layout_tables(name, bits):
    tl = L.TYPE_LAYOUTS[name]
    assert tl.name == name
    assert tl.type_mask == bits["type_mask"] and tl.type_shift == bits["type_shift"]
    assert tl.types == bits["types"]
    assert tl.flags == bits["flags"]
    assert tl.count_mask == bits["count_mask"]


@pytest.mark.parametrize("name", sorted(C_BITS))
def test_count_layout_tables(name):
    cl, bits = L.COUNT_LAYOUTS[name], C_BITS[name]
    assert cl.name == name
    assert cl.flags == bits["flags"]
    assert cl.cacheattr_mask == bits["cacheattr_mask"]
    assert cl.state_mask == bits["state_mask"] and cl.states == bits["states"]
    assert cl.count_mask == bits["count_mask"]


@pytest.mark.parametrize("version", sorted(BOUNDARIES))
def test_version_boundaries(version):
    t, c = BOUNDARIES[version]
    lay = L.layout_for_version(version)
    assert (lay.type.name, lay.count.name) == (t, c)
    assert lay.name == f"{t}/{c}" and not lay.bigmem and lay.page_info_size == 32


def test_version_string_forms():
    assert L.layout_for_version("4.17.7+13-g2445b30a44").name == "T3/C3"
    assert L.layout_for_version("4.13.5-pre").name == "T3/C3'"
    assert L.layout_for_version("4.13.4-pre").name == "T2/C1"
    assert L.layout_for_version("4.14").name == "T2/C2"           # .0
    assert L.layout_for_version("4.18", shadow_paging=False).name == "T3/C4-noshadow"
    assert L.layout_for_version("4.22.0", shadow_paging=False).name == "T3/C5-noshadow"
    assert L.layout_for_version("4.17.0-unstable").name == "T3/C3"
    lay = L.layout_for_version("4.17.3", bigmem=True)
    assert lay.name == "T3/C3+BIGMEM" and lay.page_info_size == 48 and lay.domain_width == 8
    assert lay.offsets["count_info"] == 16 and lay.offsets["type_info"] == 24 and lay.offsets["domain"] == 32
    lay = L.layout_for_version("4.6.0")
    assert lay.offsets["count_info"] == 8 and lay.offsets["type_info"] == 16 and lay.offsets["domain"] == 24
    assert lay.domain_width == 4


@pytest.mark.parametrize("bad", ["4.3.4", "3.4", "4", "", "four.six", "4.x.1", None, 4.6, "4.6.0rc"])
def test_bad_versions(bad):
    with pytest.raises(XenscopeError):
        L.layout_for_version(bad)


def test_no_bigmem_before_46():
    with pytest.raises(XenscopeError, match="4.6"):
        L.layout_for_version("4.5.0", bigmem=True)


# ------------------------------------------------------------------------- worked example (§1.6)
def test_worked_example_t1():
    lay = L.layout_for_version("4.6")
    d = L.decode_type(0x7400000000000001, lay)
    assert d["type"] == "writable" and d["flags"] == ["validated"] and d["count"] == 1
    assert d["type_value"] == 0x7000000000000000
    assert d["text"] == "writable page, validated, type count 1"
    d = L.decode_type(0x1000000000000000, lay)
    assert d["type"] == "l1" and d["flags"] == [] and d["count"] == 0
    d = L.decode_type(0x3000000000000000, lay)
    assert d["type"] == "l3" and d["count"] == 0
    d = L.decode_type(0x2000000000000001, lay)          # taf: L2 count 1, not validated
    assert d["type"] == "l2" and d["count"] == 1
    assert "validated" not in d["flags"] and "partial" not in d["flags"] and "pinned" not in d["flags"]
    c = L.decode_count(0x8000000000000003, lay)
    assert c["flags"] == ["allocated"] and c["state"] == "inuse" and c["count"] == 3
    assert c["cacheattr"] == 0
    assert c["text"] == "allocated, in use, count 3"


def test_worked_example_new_layouts():
    d = L.decode_type(0xe400000000000001, L.layout_for_version("4.17"))
    assert (d["type"], d["flags"], d["count"]) == ("writable", ["validated"], 1)
    # same number under T2/T3: 0x2000.. is L1, 0x1000.. alone is "locked, type none"
    assert L.decode_type(0x2000000000000000, L.layout_for_version("4.10"))["type"] == "l1"
    d = L.decode_type(0x1000000000000000, L.layout_for_version("4.10"))
    assert d["type"] == "none" and d["flags"] == ["locked"]


def test_real_4177_dom0_cr3_frame():
    lay = L.layout_for_version("4.17.7")
    d = L.decode_type(0x8c00000000000002, lay)
    assert (d["type"], d["flags"], d["count"]) == ("l4", ["pinned", "validated"], 2)
    c = L.decode_count(0x8000000000000004, lay)
    assert (c["flags"], c["state"], c["count"], c["cacheattr"]) == (["allocated"], "inuse", 4, None)


def test_decode_count_states_and_flags():
    c1 = L.layout_for_version("4.10.0")
    c = L.decode_count(0x8000000000000000 | 0x0180000000000000, c1)    # free + bit 63
    assert c["state"] == "free" and c["flags"] == ["need_scrub"]
    c = L.decode_count(0x8000000000000000 | 0x0180000000000000, L.layout_for_version("4.9.0"))
    assert c["flags"] == ["allocated"]                                 # no need_scrub before 4.10
    c = L.decode_count(0xC000000000000000 | 0x0C00000000000000, L.layout_for_version("4.17.0"))
    assert c["state"] == "free" and c["flags"] == ["need_scrub", "xen_heap"]
    c = L.decode_count(0x0800000000000000, L.layout_for_version("4.17.0"))
    assert c["state"] == "offlined"
    c = L.decode_count(0x0400000000000000 | 1 << 60, L.layout_for_version("4.18.0"))
    assert c["state"] == "offlining" and c["flags"] == ["broken"]
    c = L.decode_count(1 << 63 | 0x0800000000000000 | 5, c1)           # cacheattr 2 in C1
    assert c["cacheattr"] == 2 and c["state"] == "inuse" and c["count"] == 5
    c = L.decode_count(1 << 54 | 1 << 63 | 1, L.layout_for_version("4.14.0"))
    assert c["flags"] == ["allocated", "extra"] and c["count"] == 1
    c = L.decode_count(1 << 61 | 1 << 63 | 1, L.layout_for_version("4.19.0"))
    assert c["flags"] == ["allocated", "extra"]
    c = L.decode_count(1 << 57 | 1 << 63 | 1, L.layout_for_version("4.19.0"))
    assert c["flags"] == ["allocated", "shadowed_pt"] and c["count"] == 1
    c = L.decode_count(1 << 57 | 1 << 63 | 1, L.layout_for_version("4.19.0", shadow_paging=False))
    assert c["flags"] == ["allocated"] and c["count"] == (1 << 57) + 1
    c = L.decode_count(1 << 63 | 1 << 57 | 0x0C00000000000000, L.layout_for_version("4.22.0"))
    assert c["state"] == "free" and c["flags"] == ["allocated", "need_scrub"]


def test_decode_type_unknown_and_range():
    d = L.decode_type(0x6000000000000000, L.layout_for_version("4.4"))
    assert d["type"] == "unknown(6)"
    d = L.decode_type(0x0080000000000003, L.layout_for_version("4.17.0"))
    assert d["flags"] == ["non_coherent"] and d["count"] == 3
    d = L.decode_type(0x0080000000000003, L.layout_for_version("4.16.1"))
    assert d["flags"] == [] and d["count"] == 0x0080000000000003
    with pytest.raises(XenscopeError):
        L.decode_type(1 << 64, L.layout_for_version("4.17"))
    with pytest.raises(XenscopeError):
        L.decode_count(-1, L.layout_for_version("4.17"))


# ------------------------------------------------------------------------------------ guessing
@pytest.mark.parametrize("exp,want", [
    (0x1000000000000000, "T1"), (0x3000000000000000, "T1"), (0x5000000000000000, "T1"),
    (0x7000000000000000, "T1"), (0x2200000000000000, "T1"),
    (0x6000000000000000, "T2/T3"), (0xA000000000000000, "T2/T3"), (0xE000000000000000, "T2/T3"),
    (0xC000000000000000, "T2/T3"), (0x4200000000000000, "T2/T3"),
    # valid in both (T1 l2/l4/shared = T2 l1/l2/l4) -> undecided without saw
    (0x2000000000000000, None), (0x4000000000000000, None), (0x8000000000000000, None),
    (0, None), (0x1000000000000001, None), (0x1400000000000000, None), (0x0200000000000000, None),
    (0x1200000000000000, None), (1 << 64, None), (-1, None),
])
def test_guess_from_exp(exp, want):
    assert L.guess_from_exp(exp) == want


def test_guess_with_saw():
    assert L.guess_from_exp(0x2000000000000000, saw=0x7400000000000001) == "T1"
    assert L.guess_from_exp(0x2000000000000000, saw=0xe400000000000001) == "T2/T3"
    assert L.guess_from_exp(0x2000000000000000, saw=0x4400000000000001) is None


# ------------------------------------------------------------------------------------ selection
def test_select_preference_order():
    s = L.select_layout(version="4.6.0", crash_info={"major": 4, "minor": 17, "extra": ".3"})
    assert s.version == "4.17.3" and s.layout.name == "T3/C3"
    assert s.why.startswith("Xen 4.17.3 from the dump's crash-info note")
    s = L.select_layout(version="4.6.0", bad_type_exp=0xE000000000000000)
    assert s.version == "4.6.0" and s.why == "--xen 4.6.0" and s.layout.name == "T1/C1"
    s = L.select_layout(bad_type_exp=0x1000000000000000)
    assert s.version is None and s.layout.type.name == "T1" and s.why.startswith("guessed:")
    assert "T1" in s.why
    s = L.select_layout(bad_type_exp=0xE000000000000000)
    assert s.layout.type.name == "T3" and "T2/T3" in s.why
    with pytest.raises(XenscopeError, match="--xen"):
        L.select_layout()
    with pytest.raises(XenscopeError, match="--xen"):
        L.select_layout(bad_type_exp=0x2000000000000000)


def test_select_crash_info_forms():
    s = L.select_layout(crash_info={"major": 4, "minor": 16, "extra": b".1\0\0"})
    assert s.layout.name == "T2/C2"
    s = L.select_layout(crash_info={"major": 4, "minor": 16, "extra": ".2-pre"})
    assert s.layout.name == "T3/C3" and "pre" in s.why
    s = L.select_layout(crash_info={"major": 4, "minor": 14})
    assert s.layout.name == "T2/C2" and "point release" in s.why
    with pytest.raises(XenscopeError):
        L.select_layout(crash_info={"major": "x"})


def test_select_point_release_note():
    assert "point release" in L.select_layout(version="4.15").why
    assert "point release" not in L.select_layout(version="4.17").why
    assert "point release" not in L.select_layout(version="4.15.3").why


VMCI_DEFAULT = "SIZE(page_info)=32\nOFFSET(page_info.count_info)=8\nOFFSET(page_info._domain)=24\n"
VMCI_BIGMEM = "SIZE(page_info)=48\nOFFSET(page_info.count_info)=16\nOFFSET(page_info._domain)=32\n"


def test_select_vmcoreinfo():
    s = L.select_layout(version="4.17.3", vmcoreinfo=parse_vmcoreinfo(VMCI_BIGMEM))
    assert s.layout.bigmem and s.layout.name == "T3/C3+BIGMEM"
    s = L.select_layout(version="4.17.3", vmcoreinfo=parse_vmcoreinfo(VMCI_DEFAULT), bigmem=True)
    assert not s.layout.bigmem and "VMCOREINFO" in s.why
    s = L.select_layout(version="4.17.3", vmcoreinfo=parse_vmcoreinfo("OSRELEASE=6.1\n"), bigmem=True)
    assert s.layout.bigmem
    bad = parse_vmcoreinfo("SIZE(page_info)=32\nOFFSET(page_info.count_info)=16\n")
    with pytest.raises(XenscopeError, match=r"OFFSET\(page_info.count_info\)=16.*8"):
        L.select_layout(version="4.17.3", vmcoreinfo=bad)
    with pytest.raises(XenscopeError, match="SIZE"):
        L.select_layout(version="4.17.3", vmcoreinfo=parse_vmcoreinfo("SIZE(page_info)=40\n"))
    # any object with size/offset/get works
    fake = SimpleNamespace(size=lambda n: 48, offset=lambda s, m: {"count_info": 16, "_domain": 32}[m],
                           get=lambda k, d=None: d)
    assert L.select_layout(version="4.19.0", vmcoreinfo=fake).layout.name == "T3/C4+BIGMEM"


# ------------------------------------------------------------------------------ domids
def test_domids():
    assert (L.DOMID_SELF, L.DOMID_IO, L.DOMID_XEN, L.DOMID_COW, L.DOMID_INVALID, L.DOMID_IDLE) == \
        (0x7FF0, 0x7FF1, 0x7FF2, 0x7FF3, 0x7FF4, 0x7FFF)
    assert L.domid_name(0) == "d0" and L.domid_name(17) == "d17"
    assert L.domid_name(0x7FF2) == "dom_xen" and L.domid_name(0x7FF1) == "dom_io"
    assert L.domid_name(0x7FF3) == "dom_cow" and L.domid_name(0x7FFF) == "dom_idle"
    with pytest.raises(XenscopeError):
        L.domid_name(0x10000)


# ------------------------------------------------------------------------------ struct page_info
def test_parse_page_info_32():
    lay = L.layout_for_version("4.17.7")
    raw = struct.pack("<IIQQII", 0x1234, 0x5678, 0x8000000000000004, 0x8c00000000000002, 0x42a1b, 0x77)
    assert len(raw) == 32 and L.page_info_struct(lay).sizeof() == 32
    p = L.parse_page_info(raw + b"junk", lay)
    assert p["list_next"] == 0x1234 and p["list_prev"] == 0x5678 and p["up"] == 0x0000567800001234
    assert p["count_info"] == 0x8000000000000004 and p["type_info"] == 0x8c00000000000002
    assert p["domain"] == 0x42a1b and p["last"] == 0x77
    assert p["type"]["type"] == "l4" and p["count"]["count"] == 4
    with pytest.raises(XenscopeError, match="32 bytes"):
        L.parse_page_info(raw[:31], lay)


def test_parse_page_info_48_bigmem():
    lay = L.layout_for_version("4.6.0", bigmem=True)
    raw = struct.pack("<QQQQQQ", 0xffff830012345000, 0xffff830000000000 | 0x100,
                      0x8000000000000003, 0x7400000000000001, 0x1_0000_0042, 0x1122334455)
    assert len(raw) == 48 and L.page_info_struct(lay).sizeof() == 48
    p = L.parse_page_info(raw, lay)
    assert p["up"] == 0xffff830012345000
    assert p["count_info"] == 0x8000000000000003 and p["type_info"] == 0x7400000000000001
    assert p["domain"] == 0x1_0000_0042 and p["last"] == 0x1122334455
    assert p["type"]["text"] == "writable page, validated, type count 1"
    assert p["count"]["text"] == "allocated, in use, count 3"


# ------------------------------------------------------------------------------ DWARF
C_SRC = r"""
typedef unsigned short domid_t;
typedef unsigned long paddr_t;
#ifdef BIGMEM
typedef unsigned long __pdx_t;
struct page_list_entry { struct page_info *next, *prev; };
#else
typedef unsigned int __pdx_t;
struct page_list_entry { __pdx_t next, prev; };
#endif
struct page_info {
    union { struct page_list_entry list; paddr_t up; };
    unsigned long count_info;
    union {
        struct { unsigned long type_info; } inuse;
        struct { unsigned long type:5, pinned:1, head:1, count:49; } sh;
        union { struct { unsigned int first_dirty; _Bool need_tlbflush; unsigned char scrub_state; };
                unsigned long val; } free;
    } u;
    union {
        struct { __pdx_t _domain; } inuse;
        struct { __pdx_t back; } sh;
        struct { unsigned int order; } free;
    } v;
    union {
        unsigned int tlbflush_timestamp;
        struct { unsigned short nr_validated_ptes:10, :5, partial_flags:1; short linear_pt_count; };
        __pdx_t next_shadow;
    };
};
struct cpu_user_regs { unsigned long r[21]; };
struct arch_vcpu { void *fpu_ctxt; struct cpu_user_regs user_regs; unsigned long guest_table; unsigned long cr3; };
struct domain;
struct vcpu { int vcpu_id; int processor; void *vcpu_info; struct domain *domain; struct arch_vcpu arch; };
struct domain {
    domid_t domain_id;
    unsigned int max_vcpus;
    struct vcpu **vcpu;
    void *shared_info;
    unsigned int tot_pages, max_pages;
    struct domain *next_in_list;
};
struct page_info frame_table_sample[2];
struct domain dom_sample;
struct vcpu vcpu_sample;
"""


def _compile(tmp_path, bigmem):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    src = tmp_path / "x.c"
    src.write_text(C_SRC)
    obj = tmp_path / ("big.o" if bigmem else "x.o")
    cmd = ["gcc", "-g", "-c", "-o", str(obj), str(src)] + (["-DBIGMEM"] if bigmem else [])
    subprocess.run(cmd, check=True)
    return obj


def test_dwarf_offsets_default(tmp_path):
    from xenstructs.xen import dwarf
    off = dwarf.offsets_from_xen_syms(_compile(tmp_path, False))
    pi = off["page_info"]
    assert pi == {"size": 32, "count_info": 8, "u": 16, "type_info": 16, "v": 24, "_domain": 24,
                  "_domain_size": 4}
    d = off["domain"]
    assert d["size"] == 40 and d["domain_id"] == 0 and d["max_vcpus"] == 4 and d["vcpu"] == 8
    assert d["shared_info"] == 16 and d["tot_pages"] == 24 and d["max_pages"] == 28
    assert d["next_in_list"] == 32 and "arch" not in d
    v = off["vcpu"]
    assert v["vcpu_id"] == 0 and v["processor"] == 4 and v["domain"] == 16 and v["arch"] == 24
    assert v["arch.user_regs"] == 32 and v["arch.guest_table"] == 32 + 168 and v["arch.cr3"] == 32 + 176
    assert "arch.guest_context" not in v
    assert dwarf.check_layout(L.layout_for_version("4.17.7"), off) == []
    bad = dwarf.check_layout(L.layout_for_version("4.17.7", bigmem=True), off)
    assert len(bad) == 5 and "sizeof(struct page_info) is 32 in xen-syms but 48" in bad[0]


def test_dwarf_offsets_bigmem(tmp_path):
    from xenstructs.xen import dwarf
    off = dwarf.offsets_from_xen_syms(_compile(tmp_path, True))
    assert off["page_info"] == {"size": 48, "count_info": 16, "u": 24, "type_info": 24, "v": 32,
                                "_domain": 32, "_domain_size": 8}
    assert dwarf.check_layout(L.layout_for_version("4.17.7", bigmem=True), off) == []
    assert len(dwarf.check_layout(L.layout_for_version("4.17.7"), off)) == 5


def test_dwarf_errors(tmp_path):
    from xenstructs.xen import dwarf
    with pytest.raises(XenscopeError, match="cannot open"):
        dwarf.offsets_from_xen_syms(tmp_path / "missing")
    junk = tmp_path / "junk"
    junk.write_bytes(b"not an elf at all" * 10)
    with pytest.raises(XenscopeError):
        dwarf.offsets_from_xen_syms(junk)
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    src = tmp_path / "y.c"
    src.write_text("int x;\n")
    subprocess.run(["gcc", "-c", "-o", str(tmp_path / "nodbg.o"), str(src)], check=True)
    with pytest.raises(XenscopeError, match="no DWARF debug info"):
        dwarf.offsets_from_xen_syms(tmp_path / "nodbg.o")
    subprocess.run(["gcc", "-g", "-c", "-o", str(tmp_path / "nopi.o"), str(src)], check=True)
    with pytest.raises(XenscopeError, match="page_info"):
        dwarf.offsets_from_xen_syms(tmp_path / "nopi.o")
