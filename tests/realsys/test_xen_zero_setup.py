"""Xen host dumps read with no symbol file at all: Xen's own symbol table, version and structure
offsets from the dump (xenstructs/xen/symbols.py, image.py, identify.py, structs.py, invariants.py).

The hosts are the session's Xen PV MMU runs (realsys.conftest: Debian's 4.17.5 release build, and
the debug build of the same source, each with dom0 and a PV domU), booted once for the tier. Truth,
none of it from xenscope: the xen-syms each hypervisor was linked with (Debian's -dbg package's
``.symtab``; the debug build's own), the banner Xen printed on the serial console, Xen's ``q`` key
(each domain's nr_pages/max_pages), Xen's ``0`` key (dom0's CR3 = its vCPU's guest_table), QEMU's CPU
state in the dump (the CR3 loaded), the DWARF of the builds: the debug build's xen-syms, and Debian's
release rebuilt from its source package with ``-g`` (realsys.xenprofile: byte-identical code).
"""
import json
import os
import subprocess
import sys
import time

import pytest

from realsys import xenprofile
from realsys.xenhost import elf_symtab, parse_q
from xenstructs.targets import open_dump
from xenstructs.xen import identify, invariants, layouts, profile
from xenstructs.xen.dwarf import offsets_from_xen_syms
from xenstructs.xen.host import open_host

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAVOURS = ("release", "debug")
TIMINGS = {}


@pytest.fixture(scope="module", params=FLAVOURS)
def run(request):
    r = request.getfixturevalue(f"xen_mmu_{request.param}")
    t = open_dump(r["dump"])
    t0 = time.perf_counter()
    host = open_host(t)
    TIMINGS[f"{request.param}: open with nothing"] = time.perf_counter() - t0
    yield dict(r, host=host, target=t, q=parse_q(r["key_q"]))
    t.close()


def cli(*argv):
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", *map(str, argv)], capture_output=True, text=True,
                       cwd=TOP, timeout=600)
    return r, time.perf_counter() - t0


def test_the_image_s_symbol_table_is_xen_syms_symbol_table(run):
    h = run["host"]
    assert h.sources["symbols"].startswith("the image's own symbol table"), h.sources
    got = {(va, name) for va, _, name in h.symbol_table.entries}
    want = elf_symtab(run["xen_syms"])
    assert got == want, (len(got), len(want), sorted(want - got)[:5], sorted(got - want)[:5])


def test_the_version_is_the_banner_s(run):
    h = run["host"]
    assert h.version == run["xen_version"]["banner"], (h.version, run["xen_version"])
    assert "xen_major_version" in h.sources["version"]
    assert h.selection.layout == layouts.layout_for_version(run["xen_version"]["banner"])


def test_the_frame_table_alone_identifies_the_layout(run):
    """Forgetting the version: the layout the frame table fits decodes every frame as the banner's."""
    h = run["host"]
    banner = layouts.layout_for_version(run["xen_version"]["banner"])
    sel = identify.identify_layout(open_host(run["target"]))
    assert sel.version is None and "identified from the frame table" in sel.why
    assert sel.layout == banner or banner.name in sel.why.split("; not ")[0], sel.why
    assert "not T1/C1" in sel.why and "not T2/C2" in sel.why, sel.why
    assert h.layout == banner          # the host itself took the image's version

def test_domains_pages_are_xen_s_q(run):
    """tot_pages/max_pages of every domain Xen's q key listed, from the dump alone."""
    doms = {d.id: d for d in run["host"].domains()}
    q = run["q"]["domains"]
    assert set(q) <= set(doms) and len(q) == 2, (sorted(q), sorted(doms))
    for domid, facts in q.items():
        assert doms[domid].extra["tot_pages"] == facts["nr_pages"], (domid, doms[domid].extra, facts)
        assert doms[domid].extra["max_pages"] == facts["max_pages"], (domid, doms[domid].extra, facts)
    src = run["host"].sources["structs"]
    want = "shipped profile debian-" if run["flavour"] == "release" else "found in the dump"
    assert want in src, src


def _invariants_agree(found, reference, what):
    for struct_name, members in found.values.items():
        for member, off in members.items():
            assert reference[struct_name][member] == off, (what, struct_name, member, off)


def test_offsets_profile_invariants_and_dwarf_agree(run):
    """Release: the shipped profile (keyed by Debian's build-id) == a fresh extraction from the DWARF of
    Debian's source rebuilt with -g (byte-identical code) == what the dump's invariants find. Debug:
    the debug xen-syms' DWARF == the invariants. And in both: dom0's vCPU 0 holds, at the offsets
    found, the CR3 Xen's '0' key printed (guest_table) and the CR3 QEMU's CPU state has loaded."""
    h = run["host"]
    found = invariants.discover(h)
    wanted = {"domain.domain_id", "domain.vcpu", "domain.max_vcpus", "domain.next_in_list", "domain.tot_pages",
              "domain.xenheap_pages", "domain.max_pages", "domain.shared_info", "vcpu.domain", "vcpu.arch.cr3"}
    assert wanted <= {f"{s}.{m}" for s, ms in found.values.items() for m in ms}, found.why
    if run["flavour"] == "release":
        shipped = profile.shipped()[h.build_id]
        rebuilt = xenprofile.make_profile(run["version"])
        assert rebuilt.structs == shipped.structs and rebuilt.build_ids == shipped.build_ids
        reference = shipped.structs
    else:
        reference = offsets_from_xen_syms(run["xen_syms"])
    _invariants_agree(found, reference, run["flavour"])
    d0 = [d for d in h.domains() if d.id == 0][0]
    v0 = h.read_u64(h.read_u64(d0.struct_va + reference["domain"]["vcpu"]))
    assert h.read_u64(v0 + reference["vcpu"]["arch.guest_table"]) << 12 == run["dom0_cr3"]
    assert h.read_u64(v0 + reference["vcpu"]["domain"]) == d0.struct_va


COMMANDS = (["domains"], ["frames", "--summary"], ["pt-audit"], ["refs", "@cr3"], ["page", "@cr3", "--count", "4"])


def _comparable(name, out):
    out = json.loads(out)
    out.get("xen", {}).pop("sources", None)
    if name == "pt-audit":
        out["foreign_access"].pop("notes")
        out["foreign_access"].pop("layout")
    return out


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_commands_answer_the_same_with_and_without_xen_syms(run, command):
    args = [a.replace("@cr3", f"{run['dom0_cr3'] >> 12:x}") for a in command]
    bare, t_bare = cli(args[0], run["dump"], *args[1:], "--json")
    given, t_given = cli(args[0], run["dump"], *args[1:], "--json", "--xen-syms", run["xen_syms"])
    assert bare.returncode == given.returncode == 0, bare.stderr + given.stderr
    assert _comparable(args[0], bare.stdout) == _comparable(args[0], given.stdout)
    sources = json.loads(bare.stdout)["xen"]["sources"]
    assert sources["symbols"].startswith("the image's own symbol table"), sources
    TIMINGS[f"{run['flavour']} {args[0]}: nothing / --xen-syms"] = (t_bare, t_given)
    # the bar: with nothing given, in the same time or less (one more second allowed for the
    # noise of a loaded 2-core machine)
    assert t_bare <= 1.5 * t_given + 1.0, (t_bare, t_given)


@pytest.fixture(scope="module", autouse=True)
def timings():
    """Print the module's timings at its end (pytest -s shows them; the closing report quotes them)."""
    yield
    for what, seconds in sorted(TIMINGS.items()):
        print(f"\n{what}: " + (" / ".join(f"{s:.2f} s" for s in seconds) if isinstance(seconds, tuple)
                               else f"{seconds:.2f} s"), end="")


def test_a_profile_made_with_xenscope_profile_serves_the_dump(xen_mmu_debug, tmp_path):
    """``xenscope profile XEN-SYMS -o FILE`` on the debug build's xen-syms (with DWARF; Debian's release
    xen-syms has none, its shipped profile is checked above), then the Xen commands with ``--xen-syms
    FILE``: its build-id is the dump's (readelf's note of the file is the truth), its offsets the
    DWARF's, and the answers the ones of the bare dump."""
    run = xen_mmu_debug
    t = open_dump(run["dump"])
    try:
        build_id = open_host(t).build_id
    finally:
        t.close()
    out = tmp_path / "debug.json"
    made, _ = cli("profile", run["xen_syms"], "-o", out)
    assert made.returncode == 0, made.stderr
    notes = subprocess.run(["readelf", "-n", run["xen_syms"]], capture_output=True, text=True).stdout
    prof = profile.load(str(out))
    assert prof.build_ids == [build_id] and f"Build ID: {build_id}" in notes
    assert prof.structs["domain"] == offsets_from_xen_syms(run["xen_syms"])["domain"]
    bare, _ = cli("domains", run["dump"], "--json")
    given, _ = cli("domains", run["dump"], "--json", "--xen-syms", out)
    assert bare.returncode == given.returncode == 0, bare.stderr + given.stderr
    assert _comparable("domains", bare.stdout) == _comparable("domains", given.stdout)
    assert "profile debug.json" in json.loads(given.stdout)["xen"]["sources"]["structs"]
