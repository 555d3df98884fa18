"""Each PV domain's P2M on the real Xen host (Debian's Xen 4.17.7, dom0 with Debian's toolstack, a
paused PV domU; the session fixtures of realsys/conftest.py, one boot shared with
test_xen_domu_boot.py), with the guest's symbol file given and with none.

Truth that does not come from xenscope:

* the domU's shared_info page is the one Xen's toolstack dumped (xl dump-core's ``.xen_shared_info``:
  libxc maps the frame ``XEN_DOMCTL_getdomaininfo`` names), dom0's is the one Xen told dom0
  (``start_info.shared_info``, read through dom0's ``xen_start_info`` of its /proc/kallsyms);
* the domU's P2M is the one the toolstack dumped (``.xen_p2m``, made by libxc from the same
  shared_info rules), dom0's is its kernel's own list (``xen_p2m_addr``/``xen_p2m_size``);
* dom0's foreign entries are the domU's rings xenstore names, each backed by the grant Xen's ABI
  reserves for it; a copy of the dump with three corrupted entries: exactly those are found.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from realsys.xendomu import DOMU_MEM_MB

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INVALID = (1 << 64) - 1
P2M_BUDGET = 0.5                  # seconds: a 256 MiB dom0's P2M read and checked (issue 15)


def _xen_syms(domu):
    return domu.host.xen_syms_symtab or domu.host.xen_map


def _cli(*args):
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", *map(str, args)], capture_output=True, text=True,
                       cwd=TOP, timeout=600)
    return r, time.perf_counter() - t0


def _p2m_check(dump, domu, symbols):
    """p2m-check with dom0's System.map (``symbols``: --domain 0 --kernel-syms) or with no guest
    symbol file (every PV domain, each by its shared_info): ``(exit code, {domain: result}, seconds)``."""
    guest = ["--domain", 0, "--kernel-syms", domu.dom0_system_map] if symbols else []
    r, took = _cli("p2m-check", dump, *guest, "--xen-syms", _xen_syms(domu), "--limit", 0, "--json")
    assert r.returncode in (0, 1), r.stderr
    res = json.loads(r.stdout)
    if symbols:
        return r.returncode, {0: res}, took
    assert not res["errors"] and not res["skipped"], (res["errors"], res["skipped"])
    return r.returncode, {d["domain"]: d for d in res["domains"]}, took


def _findings(res):
    return {k: sorted((x["pfn"], x["mfn"]) for x in v) for k, v in res["findings"].items() if v}


def section_table(path):
    """``{name: (file offset, size)}`` of an ELF64 file's sections, read here with struct."""
    with open(path, "rb") as f:
        eh = f.read(64)
        shoff, = struct.unpack_from("<Q", eh, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", eh, 0x3a)
        f.seek(shoff)
        hdrs = [struct.unpack_from("<IIQQQQ", f.read(shentsize)) for _ in range(shnum)]
        f.seek(hdrs[shstrndx][4])
        names = f.read(hdrs[shstrndx][5])
    return {names[h[0]:names.index(b"\0", h[0])].decode(): (h[4], h[5]) for h in hdrs}


def _section(path, name):
    """Bytes of an ELF section."""
    table = section_table(path)
    if name not in table:
        raise AssertionError(f"no section {name} in {path}")
    offset, size = table[name]
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def _symbol(system_map, name):
    for line in open(system_map):
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise AssertionError(f"{name} not in {system_map}")


@pytest.fixture(scope="module")
def pages(xs):
    from xenstructs.xen import p2m as P
    from xenstructs.xen.shared_info import SharedInfoPages
    _, _, host = xs
    sp = SharedInfoPages(host, P.owners_from_host(host)[2])
    return sp, {d.id: d for d in sp.domains}


def test_shared_info_pages_are_the_ones_xen_and_the_toolstack_name(xs, domu, pages):
    """struct domain's shared_info (the table's row of the release, +16 for 4.17.7, checked on this dump): the domU's
    page is byte for byte the page xl dump-core wrote; dom0's frame is the machine address Xen gave
    dom0 in start_info.shared_info (read through xen_start_info of dom0's kallsyms)."""
    from xenstructs.paging import Paging
    from realsys.test_xen_domu_boot import release_row
    from xenstructs.xen import p2m as P
    from xenstructs.xen.p2m_list import read_va_pages
    _, ht, host = xs
    sp, doms = pages
    off, why = sp.offset()
    # from xen-syms' DWARF where Debian's -dbg package carries it (4.20), else from the table
    source = "DWARF" if domu.host.files.get("xen_syms") else f"table: Xen {domu.release}"
    assert off == release_row(host.version).shared_info and source in why, why
    assert sp.widths == {0: 8, domu.domid: 8}
    domu_page = host.read_va(host.read_u64(doms[domu.domid].struct_va + off), 4096)
    assert domu_page == _section(domu.xc_core_path, ".xen_shared_info")
    arch = sp.arch(doms[0])
    pg = Paging("4level", arch.p2m_cr3 & ~0xFFF)
    start_info = P.read_virt_u64(ht, pg, _symbol(domu.dom0_system_map, "xen_start_info"), "xen_start_info")
    raw = read_va_pages(ht, pg, start_info, 48, "start_info")
    assert raw.startswith(b"xen-3.0-x86_64"), raw[:32]
    assert struct.unpack_from("<Q", raw, 40)[0] == host.va_to_maddr(host.read_u64(doms[0].struct_va + off))


def test_each_p2m_by_shared_info_is_the_toolstacks_and_the_kernels(xs, domu, pages):
    """The domU's P2M by its shared_info, under the toolstack's rule (valid entries naming a frame
    below max_page), is xl dump-core's .xen_p2m; dom0's is its kernel's xen_p2m_addr list, whose
    pages past shared_info's max_pfn are Linux's shared placeholders only."""
    from xenstructs.paging import Paging
    from xenstructs.xen import p2m_list as L
    from xenstructs.xen.shared_info import read_p2m
    xc, ht, host = xs
    sp, doms = pages
    got, why = read_p2m(ht, sp.arch(doms[domu.domid]), host.max_page)
    assert "virtually mapped list" in why and len(got.entries) == DOMU_MEM_MB << 8
    mine = np.where(got.entries < np.uint64(host.max_page), got.entries, np.uint64(INVALID))
    assert np.array_equal(mine, np.asarray(xc.p2m_array(), np.uint64))
    assert ((got.entries == np.uint64(INVALID)) | (got.entries < np.uint64(host.max_page))).all()
    arch = sp.arch(doms[0])
    d0, _ = read_p2m(ht, arch, host.max_page)
    pg = Paging("4level", arch.p2m_cr3 & ~0xFFF)
    va, size = L.linux_p2m_location(ht, pg, domu.dom0_system_map)
    kernel = L.read_linear(ht, pg, va, size)                   # the whole 1 GiB area, no end given
    assert size == 0x8000000 and len(kernel.entries) <= arch.max_pfn == len(d0.entries)
    assert np.array_equal(kernel.entries, d0.entries[:len(kernel.entries)])
    assert (d0.entries[len(kernel.entries):] == np.uint64(INVALID)).all()
    assert d0.placeholders.tolist() == kernel.placeholders.tolist() != []   # dom0's p2m_identity range


def test_p2m_check_with_and_without_symbol_files(xs, domu, host_dump, tmp_path, pages):
    """p2m-check with dom0's System.map and with no guest symbol file: the same findings for dom0
    (clean: its two grant mappings of the domU's rings are foreign-allowed, granted), the domU clean,
    provenance "from shared_info"; then three entries of dom0's list corrupted in a copy: exactly
    those (and the frames they named, now orphans) are found both ways; each run timed."""
    times = {}
    code_s, with_syms, times["symbols"] = _p2m_check(host_dump, domu, True)
    code_n, without, times["none"] = _p2m_check(host_dump, domu, False)
    assert code_s == code_n == 0 and set(without) == {0, domu.domid}
    assert _findings(with_syms[0]) == _findings(without[0])
    assert "xen_p2m_addr/xen_p2m_size" in with_syms[0]["sources"]["p2m"]
    for d in without.values():
        assert d["sources"]["p2m"].startswith("from shared_info: the virtually mapped list"), d["sources"]
    assert not any(without[domu.domid]["counts"].values()), without[domu.domid]["counts"]
    allowed = without[0]["findings"]["foreign-allowed"]
    assert {x["mfn"] for x in allowed} == {domu.rings["store"], domu.rings["console"]}, allowed
    assert all(x["foreign_bit"] and x["basis"] == "granted" for x in allowed), allowed
    assert {k for k, v in without[0]["counts"].items() if v} == {"identity", "foreign-allowed"}
    a, b, c, want = _corrupt(xs, domu, host_dump, tmp_path / "corrupt.elf", pages)
    for symbols in (True, False):
        code, res, times[f"corrupt, {'symbols' if symbols else 'none'}"] = _p2m_check(
            str(tmp_path / "corrupt.elf"), domu, symbols)
        got = {k: v for k, v in _findings(res[0]).items() if k not in ("identity", "foreign-allowed")}
        assert code == 1 and got == want, (symbols, got)
        if not symbols:
            assert not any(res[domu.domid]["counts"].values())
    os.unlink(tmp_path / "corrupt.elf")
    print("\np2m-check on the real host dump, seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))


def _corrupt(xs, domu, host_dump, bad, pages):
    """A copy of the dump with three of dom0's P2M entries changed (an mfn past max_page, a domU
    frame without FOREIGN_FRAME_BIT, INVALID): ``(pfn a, b, c, the findings expected)``."""
    from xenstructs.paging import Paging, walk
    from xenstructs.xen import p2m_list as L
    xc, ht, host = xs
    sp, doms = pages
    pg = Paging("4level", sp.arch(doms[0]).p2m_cr3 & ~0xFFF)   # swapper_pg_dir (start_info checked above)
    va, size = L.linux_p2m_location(ht, pg, domu.dom0_system_map)
    p2m = L.p2m_from_linux(ht, pg, va, size)
    valid = [i for i in range(1000, 20000) if int(p2m[i]) < host.max_page][:50]
    a, b, c = valid[3], valid[17], valid[40]
    domu_mfn = int(xc.p2m_array()[5])
    shutil.copyfile(host_dump, bad)
    with open(bad, "r+b") as f:
        for pfn, value in ((a, host.max_page + 0x1000), (b, domu_mfn), (c, INVALID)):
            f.seek(_file_offset(str(bad), walk(ht, pg, va + 8 * pfn).pa))
            f.write(struct.pack("<Q", value))
    orphans = sorted((pfn, int(p2m[pfn])) for pfn in (a, b, c))        # the frames the entries named
    return a, b, c, {"beyond-max": [(a, host.max_page + 0x1000)], "foreign": [(b, domu_mfn)],
                     "invalid-in-range": [(c, None)], "m2p-orphan": orphans}      # INVALID: mfn null


def _file_offset(path, maddr):
    """File offset of a machine address in an ELF dump, from its program headers (read here with
    struct, independently of xenstructs' reader)."""
    with open(path, "rb") as f:
        eh = f.read(64)
        phoff, = struct.unpack_from("<Q", eh, 32)
        phentsize, phnum = struct.unpack_from("<HH", eh, 54)
        f.seek(phoff)
        ph = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, _, p_offset, _, p_paddr, p_filesz = struct.unpack_from("<IIQQQQ", ph, i * phentsize)
        if p_type == 1 and p_paddr <= maddr < p_paddr + p_filesz:
            return p_offset + maddr - p_paddr
    raise AssertionError(f"maddr {maddr:#x} not in {path}")


def test_dom0_p2m_read_and_checked_within_budget(xs, domu):
    """dom0's P2M (384 MiB of RAM here; a 1 GiB virtual area, 0x8000000 entries) read by its
    shared_info and checked in <= 0.5 s, the host already open (best of 3); the same through its
    kernel symbols for comparison."""
    from xenstructs.xen.p2m_sources import HostContext, P2MOptions, _check_sources, find_sources
    _, ht, _ = xs
    ctx = HostContext(ht, P2MOptions(xen_syms=_xen_syms(domu)))
    ctx.shared_info().offset()
    ctx.access()
    took = {}
    for name, opts in (("shared_info", P2MOptions(domain=0)),
                       ("kernel symbols", P2MOptions(domain=0, kernel_syms=domu.dom0_system_map))):
        best = None
        for _ in range(3):
            t0 = time.perf_counter()
            src = find_sources(ht, opts, ctx=ctx)
            res = _check_sources(ht, src, opts)
            best = min(best or 1e9, time.perf_counter() - t0)
        assert res["problems"] == 0 and res["pfns"] == 0x28000, (name, res["counts"])
        took[name] = best
    print("\ndom0 P2M read + check, seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in took.items()))
    assert took["shared_info"] <= P2M_BUDGET, took


def test_check_gives_the_same_p2m_answer_with_and_without_symbol_files(domu, host_dump):
    """`xenscope check` on the host dump with dom0's System.map and without: the p2m check runs, is
    ok, covers both PV domains from shared_info and says the same."""
    out = {}
    for name, extra in (("symbols", ["--kernel-syms", domu.dom0_system_map]), ("none", [])):
        r, took = _cli("check", host_dump, "--xen-syms", _xen_syms(domu), *extra, "--json")
        rep = json.loads(r.stdout)[0]
        out[name] = next(c for c in rep["checks"] if c["name"] == "p2m")
        assert out[name]["status"] == "ok", out[name]
        assert "every PV domain's P2M (d0, d1) from shared_info" in out[name]["summary"], out[name]["summary"]
    assert out["symbols"]["findings"] == out["none"]["findings"] == []
    assert out["symbols"]["summary"].replace(f", dom0's by {domu.dom0_system_map}", "") == out["none"]["summary"]


def test_p2m_check_with_no_symbol_file_at_all(domu, host_dump):
    """No Xen symbols either: Xen's symbols and version come from the dump itself, and the answer is
    the one given with every symbol file."""
    r, _ = _cli("p2m-check", host_dump, "--limit", 0, "--json")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    res = json.loads(r.stdout)
    _, want, _ = _p2m_check(host_dump, domu, False)
    assert {d["domain"]: _findings(d) for d in res["domains"]} == {k: _findings(v) for k, v in want.items()}


def test_xl_dump_core_own_p2m_with_and_without_symbol_files(domu):
    """p2m-check of the domU's xl dump-core file: its own P2M list, found by its System.map or, with
    none, by the dump's .xen_shared_info (the toolstack's rules), against the frames the dump holds:
    clean both ways."""
    res = {}
    for name, extra in (("symbols", ["--kernel-syms", domu.dom0_system_map]), ("none", [])):
        r, _ = _cli("p2m-check", domu.xc_core_path, *extra, "--limit", 0, "--json")
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr
        res[name] = json.loads(r.stdout)
        assert not any(res[name]["counts"].values()), res[name]["counts"]
    assert res["none"]["sources"]["p2m"].startswith("the guest's own P2M list from shared_info: the virtually")
    assert res["symbols"]["pfns"] == res["none"]["pfns"] == DOMU_MEM_MB << 8


WANTS_A_FILE = ("--xen-syms", "--kernel-syms", "System.map", "symbol file", "give ")


def test_check_with_nothing_given_answers_as_with_every_symbol_file(domu, host_dump):
    """``check HOST_DUMP`` with no option on the real host (dom0 + the paused domU): every check runs,
    none is "n.a." for want of a symbol file, the statuses and findings are those of a run given
    Debian's xen-syms and dom0's System.map, in the same time or less (one second of noise allowed
    on a loaded 2-core machine). The times are printed (pytest -s) for the closing note."""
    runs = {}
    for name, extra in (("nothing", []), ("symbols", ["--xen-syms", _xen_syms(domu),
                                                      "--kernel-syms", domu.dom0_system_map])):
        r, took = _cli("check", host_dump, *extra, "--no-siblings", "--jobs", 1, "--json")
        assert r.returncode in (0, 1), r.stderr
        runs[name] = ({c["name"]: c for c in json.loads(r.stdout)[0]["checks"]}, took)
    bare, given = runs["nothing"][0], runs["symbols"][0]
    for check in bare.values():
        assert not (check["status"] == "n.a." and any(w in check["summary"] for w in WANTS_A_FILE)), check
    assert {n: c["status"] for n, c in bare.items()} == {n: c["status"] for n, c in given.items()}
    assert {n: c["findings"] for n, c in bare.items()} == {n: c["findings"] for n, c in given.items()}
    print(f"\ncheck of the real host dump: nothing given {runs['nothing'][1]:.2f} s, "
          f"xen-syms + System.map {runs['symbols'][1]:.2f} s", end="")
    assert runs["nothing"][1] <= 1.5 * runs["symbols"][1] + 1.0, (runs["nothing"][1], runs["symbols"][1])
