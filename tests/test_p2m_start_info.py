"""The start_info.mfn_list P2M source: a PV guest's initial P2M, found through xen_start_info."""
import numpy as np
import pytest

from xenstructs.paging import Paging
from xenstructs.target import MemoryTarget
from xenstructs.xen import p2m as P

VA = 0xFFFF888000000000          # a direct map: pml4 273 -> pdpt -> pd -> pt at 0x4000


def target(n, values, magic=b"xen-3.0-x86_64"):
    pages = {}

    def table(pa, entries):
        buf = bytearray(4096)
        for i, v in entries.items():
            buf[i * 8:i * 8 + 8] = v.to_bytes(8, "little")
        pages[pa] = bytes(buf)
    table(0x1000, {273: 0x2000 | 3})
    table(0x2000, {0: 0x3000 | 3})
    table(0x3000, {0: 0x4000 | 3})
    table(0x4000, {1: 0x10000 | 3, 2: 0x11000 | 3, 3: 0x12000 | 3})
    var = bytearray(4096)                                  # page 1: xen_start_info -> page 2
    var[0:8] = (VA + 0x2000).to_bytes(8, "little")
    pages[0x10000] = bytes(var)
    si = bytearray(4096)                                   # page 2: struct start_info
    si[0:len(magic)] = magic
    si[32:40] = n.to_bytes(8, "little")                    # nr_pages
    si[104:112] = (VA + 0x3000).to_bytes(8, "little")      # mfn_list
    pages[0x11000] = bytes(si)
    pages[0x12000] = np.asarray(values, "<u8").tobytes().ljust(4096, b"\0")
    return MemoryTarget(pages), Paging("4level", 0x1000)


def test_mfn_list_through_xen_start_info(tmp_path):
    vals = np.arange(300, dtype=np.uint64) + np.uint64(0x5000)
    t, pg = target(300, vals)
    smap = tmp_path / "System.map"
    smap.write_text(f"{VA + 0x1000:016x} D xen_start_info\n")
    assert P.linux_p2m_location(t, pg, str(smap)) == (VA + 0x3000, 300)
    assert np.array_equal(P.p2m_from_symbols(t, pg, str(smap)), vals)


def test_not_a_start_info(tmp_path):
    t, pg = target(300, np.zeros(300, np.uint64), magic=b"garbage")
    with pytest.raises(P.XenscopeError, match="magic"):
        P.start_info_mfn_list(t, pg, VA + 0x1000)
