"""Memory follows the dump's RAM, not its claims: each command runs in a child process whose
address space is capped (``RLIMIT_AS``), and must still give the builder's answers.

- the bundled Xen 4.6 host core (80 MiB of RAM described, ``max_page`` 0x1001000 because of a PDX
  hole) answers ``frames --summary`` and ``domains`` as its manifest says, with and without the
  .map (without it, the frame table used to be indexed by 16 M mfns: 5-6 GB);
- page tables that share their lower tables (4 table pages, 512^4 mappings) give the
  "too many mappings" problem, and ``maps --limit 5`` its 5 lines, quickly;
- a corrupted ``max_page`` (patched in a copy of the core, where the manifest's symbol says it
  lives) gives one line and exit 2; a large but possible one changes no answer and no memory.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import time

import pytest

from conftest import CORES, TOP

LIMIT = 1 << 30                       # address space of each child: 1 GiB
CORE = os.path.join(CORES, "xen-4.6-host.core")
MAP = os.path.join(CORES, "xen-4.6-host.map")

CHILD = """
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
sys.argv = ["xenscope"] + sys.argv[1:]
runpy.run_module("xenstructs.cli", run_name="__main__")
"""


def limited(*argv, timeout=60):
    """Run ``xenscope ARGV`` with its address space capped at :data:`LIMIT`: (result, seconds)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", CHILD.format(limit=LIMIT), *map(str, argv)], capture_output=True,
                       text=True, cwd=TOP, timeout=timeout, env=env)
    return r, time.monotonic() - t0


def ok_json(r):
    assert r.returncode in (0, 1), (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr, r.stderr[-2000:]
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def manifest():
    with open(os.path.join(CORES, "xen-4.6-host.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("syms", [[], ["--xen-syms", MAP]], ids=["without-map", "with-map"])
def test_frames_summary_and_domains_of_the_pdx_host(manifest, syms):
    census = ok_json(limited("frames", CORE, "--summary", "--json", *syms)[0])["census"]
    want = {k: v for k, v in manifest["census"].items() if k != "free"}
    assert census["by_owner"] == want
    assert census["states"]["free"] == manifest["free_frames"]
    doms = ok_json(limited("domains", CORE, "--json", *syms)[0])["domains"]
    got = {(d["id"], d["struct_va"]): d["frames"] for d in doms}
    for d in manifest["domains"]:
        owned = sum(manifest["census"][d["name"] if d["id"] >= 0x7FF0 else f"d{d['id']}"].values())
        assert got.get((d["id"], d["struct_va"])) == owned, (d, got)


# -- page tables that share lower tables ----------------------------------------------------------

def _dag_core(path):
    """An x86_64 ELF core whose 4-level tables are 4 pages, each entry of each pointing at the next
    (PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000 -> page 0x5000): 512^4 4 KiB mappings."""
    sys.path.insert(0, TOP)
    from cores.builder.elfcore_writer import write_elf_core
    from test_paging_unit import table
    present_rw = 0x3
    mem = [(0x1000 * level, table({i: 0x1000 * (level + 1) | present_rw for i in range(512)}))
           for level in (1, 2, 3, 4)] + [(0x5000, b"\x55" * 4096)]
    write_elf_core(path, machine="x86_64", segments=mem,
                   cpus=[dict(cr0=0x80000011, cr3=0x1000, cr4=0x20)])
    return 512 ** 4


@pytest.fixture(scope="module")
def dag(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("dag") / "dag.core")
    _dag_core(path)
    return path


def test_shared_tables_stop_with_too_many_mappings(dag):
    r, secs = limited("maps", dag, "--json")
    res = ok_json(r)
    assert [p["reason"] for p in res["problems"]] == ["too-many-mappings"]
    assert res["page_count"] <= (1 << 22) and secs < 20, (res["page_count"], secs)
    r, secs = limited("check", dag, "--json")
    paging = {c["name"]: c for c in ok_json(r)[0]["checks"]}["paging"]
    assert paging["status"] == "findings" and {f["kind"] for f in paging["findings"]} == {"too-many-mappings"}
    assert secs < 30, secs


def test_maps_limit_bounds_the_work(dag):
    r, secs = limited("maps", dag, "--limit", "5", "--pages")
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("0x")]
    assert [int(ln.split()[0], 16) for ln in rows] == [i * 4096 for i in range(5)]
    assert all(int(ln.split()[1], 16) == 0x5000 for ln in rows)
    assert secs < 10, secs
    r, secs = limited("maps", dag, "--limit", "5")
    assert r.returncode == 0 and secs < 10, (r.stderr, secs)
    # every page maps the same frame: no two pages are physically contiguous, one range each
    assert len([ln for ln in r.stdout.splitlines() if ln.startswith("0x")]) == 5


# -- max_page claims ---------------------------------------------------------------------------------

def _file_offset(path, maddr):
    """File offset of machine address ``maddr`` in an ELF64 core (PT_LOAD p_paddr), read here."""
    with open(path, "rb") as f:
        head = f.read(64)
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        p_type, _, p_offset, _, p_paddr, p_filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
        if p_type == 1 and p_paddr <= maddr < p_paddr + p_filesz:
            return p_offset + maddr - p_paddr
    raise AssertionError(f"maddr {maddr:#x} not in {path}")


def _with_max_page(manifest, tmp_path, value):
    """A copy of the 4.6 host core whose ``max_page`` variable holds ``value``."""
    maddr = manifest["symbols"]["max_page"] - manifest["xen_virt_start"] + manifest["xen_phys_start"]
    path = str(tmp_path / f"max_page-{value:x}.core")
    shutil.copy(CORE, path)
    off = _file_offset(path, maddr)
    with open(path, "r+b") as f:
        f.seek(off)
        assert struct.unpack("<Q", f.read(8))[0] == manifest["max_page"]
        f.seek(off)
        f.write(struct.pack("<Q", value))
    return path


@pytest.mark.parametrize("value", [1 << 41, 0])
def test_absurd_max_page_values(manifest, tmp_path, value):
    path = _with_max_page(manifest, tmp_path, value)
    r, _ = limited("frames", path, "--summary", "--xen-syms", MAP)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and lines == [f"xenscope frames: max_page {value:#x} read from the dump is absurd "
                                           "(x86 machine frames stop at 0x10000000000): a corrupt image?"], r.stderr


def test_absurd_max_page_is_one_line_everywhere(manifest, tmp_path):
    value = (1 << 64) - 1
    path = _with_max_page(manifest, tmp_path, value)
    p2m = manifest["p2m"]
    l4 = next(d["l4_mfn"] for d in manifest["domains"] if d["id"] == p2m["domain"])
    for argv in (["frames", path, "--summary"], ["pt-audit", path, "--xen-syms", MAP],
                 ["p2m-check", path, "--xen-syms", MAP, "--domain", p2m["domain"], "--p2m-va", hex(p2m["va"]),
                  "--p2m-entries", p2m["pfn_count"], "--cr3", hex(l4 << 12)]):
        r, _ = limited(*argv)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and "max_page" in lines[0], (argv, r.returncode, r.stderr)
    # domains lists the domains all the same and says why the frame counts are missing; page says
    # it for the frame asked (its errors are per frame)
    why = f"max_page {value:#x} read from the dump is absurd"
    r, _ = limited("domains", path, "--xen-syms", MAP)
    assert r.returncode == 0 and not r.stderr and f"frame counts unavailable: {why}" in r.stdout, r.stderr
    r, _ = limited("page", path, "0x100", "--json")
    assert ok_json(r)["pages"][0]["error"].startswith(why), r.stdout


def test_large_possible_max_page_changes_no_answer(manifest, tmp_path):
    # 2^32 frames (16 TiB) fits Xen's 128 GiB frame table: a claim, not an allocation
    path = _with_max_page(manifest, tmp_path, 1 << 32)
    census = ok_json(limited("frames", path, "--summary", "--json", "--xen-syms", MAP)[0])["census"]
    assert census["by_owner"] == {k: v for k, v in manifest["census"].items() if k != "free"}


# -- compressed DWARF: the size a section inflates to is a claim ---------------------------------

def _compressed_object(tmp_path):
    """A small ELF object whose DWARF gcc compressed (SHF_COMPRESSED, zlib), and where its
    .debug_info's Elf64_Chdr.ch_size lies in the file (found with readelf, not with xenstructs)."""
    src = tmp_path / "t.c"
    src.write_text("struct page_info { unsigned long a, count_info; };\nstruct page_info x;\n")
    obj = tmp_path / "t.o"
    subprocess.run(["gcc", "-g", "-c", "-gz=zlib", str(src), "-o", str(obj)], check=True)
    out = subprocess.run(["readelf", "-S", "-W", str(obj)], capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.split("]")[-1].split()[:1] == [".debug_info"])
    fields = line.split("]")[-1].split()
    assert "C" in fields[6], line                       # the compressed flag
    return obj, int(fields[3], 16) + 8                   # ch_type, ch_reserved, then ch_size


@pytest.mark.parametrize("claim", [1 << 40, 16], ids=["huge-claim", "inflates-past-its-claim"])
def test_compressed_dwarf_is_bounded(tmp_path, claim):
    sys.path.insert(0, TOP)
    from xenstructs.errors import XenscopeError
    from xenstructs.formats.dwarf import dwarf_of
    obj, at = _compressed_object(tmp_path)
    with dwarf_of(str(obj), "no DWARF") as (_, dwarf):          # intact: read as usual
        assert sum(1 for _ in dwarf.iter_CUs()) == 1
    with open(obj, "r+b") as f:
        f.seek(at)
        f.write(struct.pack("<Q", claim))
    with pytest.raises(XenscopeError, match=r"\.debug_info (claims|inflates)"):
        with dwarf_of(str(obj), "no DWARF"):
            pass
