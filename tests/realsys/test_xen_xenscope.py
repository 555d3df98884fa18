"""xenscope on a real Xen host: Debian's Xen 4.17 with a PV dom0 under QEMU, dumped with QEMU.

The truth comes from Xen itself, not from xenscope: its ``q`` debug key prints caf/taf of the
pages it lists (for dom0: the xen-heap pages assigned to it), its ``0`` key prints dom0's CR3,
``q`` prints each domain's nr_pages, and QEMU's monitor reads Xen's frame table directly.
"""
import json
import os
import re
import subprocess
import sys

import pytest

from gdbutil import run_gdb
from realsys.xenhost import boot_xen_host, parse_q
from xenstructs.targets import open_dump
from xenstructs.xen.host import open_host
from xenstructs.xen import frames as F
from xenstructs.xen.ptaudit import audit

P2M_PREFIX = 0x20000     # dom0 has 256 MiB (0x10000 pfns) plus holes: the list's populated start


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def xen(tmp_path_factory):
    d = tmp_path_factory.mktemp("xenhost")
    port = free_port()
    h = boot_xen_host(workdir=str(d), timeout=180, mem=512, qemu_args=("-gdb", f"tcp:127.0.0.1:{port}"))
    try:
        facts = h.collect()
        q = parse_q(facts["key_q"])
        cr3 = facts["dom0_cr3"]
        qemu_l4 = h.page_info(cr3 >> 12)           # QEMU's own read of Xen's frame table
        syms = h.xen_syms_symtab or h.xen_map          # Debian's xen-syms: symbols, no DWARF
        # dom0's P2M variables from its own /proc/kallsyms, for the live p2m-check below
        ksyms = h.dom0_shell("grep -E ' (xen_p2m_addr|xen_p2m_size)$' /proc/kallsyms")
        kmap = d / "dom0.map"
        kmap.write_text("".join(ln.strip() + "\n" for ln in ksyms.splitlines() if ln.strip().endswith(
            ("xen_p2m_addr", "xen_p2m_size"))))
        live = run_gdb(f"target remote 127.0.0.1:{port}",
                       f"xen p2m-check --domain 0 --kernel-syms {kmap} --p2m-entries {P2M_PREFIX:#x} "
                       f"--cr3 {cr3:#x} --xen-syms {syms} --json",
                       "detach", timeout=600)
        # and with no guest symbol file: every PV domain (dom0 alone here), its P2M by its shared_info
        live_none = run_gdb(f"target remote 127.0.0.1:{port}", f"xen p2m-check --xen-syms {syms} --json",
                            "detach", timeout=600)
        path = h.dump(str(d / "xen.elf"))
        console = h.console
    finally:
        h.close()
    t = open_dump(path)
    host = open_host(t, syms=syms)
    yield {"host": host, "q": q, "cr3": cr3, "qemu_l4": qemu_l4, "path": path, "syms": syms, "target": t,
           "live_p2m": live, "live_p2m_none": live_none, "kmap": str(kmap), "console": console, "xen_map": h.xen_map,
           "banner": h.xen_version["banner"]}
    t.close()
    os.unlink(path)


def test_version_and_layout(xen):
    h = xen["host"]
    assert h.version and h.version.startswith("4.17"), h.describe()
    assert h.layout.name.startswith("T3/C3"), h.describe()


def test_dom0_cr3_frame(xen):
    """xen page of dom0's CR3 frame: L4, pinned, validated, owner 0; same words QEMU reads."""
    pg = xen["host"].page(xen["cr3"] >> 12)
    assert (pg["count_info"], pg["type_info"]) == xen["qemu_l4"]
    assert pg["type"]["type"] == "l4" and "pinned" in pg["type"]["flags"] and "validated" in pg["type"]["flags"]
    assert pg["owner"] == 0 and pg["count"]["state"] == "inuse"


def test_xen_pages_match_q(xen):
    """Every XenPage line Xen's q key printed: same count_info/type_info, owned by that domain."""
    lines = xen["q"]["xen_pages"]
    assert lines, "q printed no XenPage lines"
    for p in lines:
        pg = xen["host"].page(p["mfn"])
        assert (pg["count_info"], pg["type_info"]) == (p["caf"], p["taf"]), p
        assert pg["owner"] == p["domid"] and "xen_heap" in pg["count"]["flags"], (p, pg["owner"])


def test_census(xen):
    h = xen["host"]
    cols = F.classify(h, h.frame_arrays())
    c = F.census(h, cols)
    assert c["missing"] == 0
    assert c["free_with_references_count"] == 0, c["free_with_references"][:8]
    d0 = c["by_owner"]["d0"]
    # q's nr_pages (tot_pages) counts dom0's allocated pages, xenheap_pages its xen-heap pages
    nr = xen["q"]["domains"][0]["nr_pages"]
    xenheap = xen["q"]["domains"][0]["xenheap_pages"]
    assert c["allocated_by_owner"]["d0"] == nr + xenheap, (c["allocated_by_owner"], nr, xenheap)
    assert d0.get("l4", 0) >= 1 and d0.get("l1", 0) > 10
    assert "dom_xen" in c["by_owner"], list(c["by_owner"])


def test_special_owners_decode(xen):
    h = xen["host"]
    cols = F.classify(h, h.frame_arrays())
    for name, domid in (("dom_xen", 0x7FF2), ("dom_io", 0x7FF1)):
        mask = F.select(h, cols, owner=name)
        if name == "dom_io" and not mask.any():
            continue                                  # dom_io may own no RAM frame in this guest
        assert mask.any(), name
        mfn = int(cols["mfn"][mask][0])
        assert h.page(mfn)["owner"] == domid


def test_pt_audit_dom0_is_clean(xen):
    (a,) = audit(xen["host"], 0)
    assert a.roots and a.tables > 10
    assert not a.findings, [f.as_dict() for f in a.findings[:5]]


def test_cli_frames_summary(xen):
    args = [sys.executable, "-m", "xenstructs.cli", "frames", xen["path"], "--summary", "--json"]
    if xen["syms"]:
        args += ["--xen-syms", xen["syms"]]
    r = subprocess.run(args, capture_output=True, text=True, cwd=TOP, timeout=300)
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)["census"]
    assert "d0" in c["by_owner"] and c["free_with_references_count"] == 0


def test_live_p2m_check_in_gdb_on_qemu_and_on_the_dump(xen):
    """p2m-check of dom0 live, in gdb attached to QEMU's gdbstub of the running Xen host (physical
    reads through Qqemu.PhyMemMode), then on the dump taken right after: both clean (dom0 alone
    has no foreign mappings), over the same P2M."""
    r = xen["live_p2m"]
    assert r.returncode == 0 and "Traceback" not in r.output, r.output[-3000:]
    live = json.loads(r.stdout[r.stdout.index("{"):r.stdout.rindex("}") + 1])
    assert not any(v for k, v in live["counts"].items() if k != "identity"), live["counts"]
    args = [sys.executable, "-m", "xenstructs.cli", "p2m-check", xen["path"], "--domain", "0", "--kernel-syms",
            xen["kmap"], "--p2m-entries", hex(P2M_PREFIX), "--cr3", hex(xen["cr3"]), "--xen-syms", xen["syms"],
            "--json"]
    d = subprocess.run(args, capture_output=True, text=True, cwd=TOP, timeout=600)
    assert d.returncode == 0, d.stdout[-2000:] + d.stderr
    dump = json.loads(d.stdout)
    # the same P2M live and dumped; its shared tail (Linux's p2m_missing pages) is not materialised
    assert dump["pfns"] == live["pfns"] and 0x10000 < dump["pfns"] <= P2M_PREFIX and dump["counts"] == live["counts"]
    assert live["counts"]["identity"] > 0              # the 1:1 (non-RAM) entries were seen live too



def test_live_p2m_check_without_symbol_files_in_gdb_and_on_the_dump(xen):
    """The same with no guest symbol file, live in gdb and on the dump: dom0 (256 MiB, the issue's
    real layout: a 1 GiB virtual P2M area) is the one PV domain, its P2M found by its shared_info up
    to arch.max_pfn, clean, and its identity entries are the prefix read's below max_pfn."""
    r = xen["live_p2m_none"]
    assert r.returncode == 0 and "Traceback" not in r.output, r.output[-3000:]
    live = json.loads(r.stdout[r.stdout.index("{"):r.stdout.rindex("}") + 1])
    d = subprocess.run([sys.executable, "-m", "xenstructs.cli", "p2m-check", xen["path"], "--xen-syms", xen["syms"],
                        "--json", "--limit", "0"], capture_output=True, text=True, cwd=TOP, timeout=600)
    assert d.returncode == 0, d.stdout[-2000:] + d.stderr
    dump = json.loads(d.stdout)
    for res in (live, dump):
        assert [x["domain"] for x in res["domains"]] == [0] and not res["errors"], res.get("errors")
        d0 = res["domains"][0]
        assert d0["sources"]["p2m"].startswith("from shared_info: the virtually mapped list"), d0["sources"]
        assert d0["problems"] == 0 and {k for k, v in d0["counts"].items() if v} == {"identity"}, d0["counts"]
    assert live["domains"][0]["pfns"] == dump["domains"][0]["pfns"] >= 0x10000
    prefix = json.loads(subprocess.run(
        [sys.executable, "-m", "xenstructs.cli", "p2m-check", xen["path"], "--domain", "0", "--kernel-syms",
         xen["kmap"], "--p2m-entries", hex(P2M_PREFIX), "--cr3", hex(xen["cr3"]), "--xen-syms", xen["syms"],
         "--json", "--limit", "0"], capture_output=True, text=True, cwd=TOP, timeout=600).stdout)
    # the toolstack's rule: the P2M is max_pfn entries long (xc_domain_nr_gpfns); Linux's list page
    # holding max_pfn goes on with identity entries to its end, which the prefix read sees too
    end = dump["domains"][0]["pfns"]
    mine = sorted(x["pfn"] for x in dump["domains"][0]["findings"]["identity"])
    theirs = sorted(x["pfn"] for x in prefix["findings"]["identity"])
    assert mine == [p for p in theirs if p < end] and all(p < -(-end // 512) * 512 for p in theirs if p >= end)


# ---------------------------------------------------------------------------------------------
# The same dump inside Debian's crash utility (crashext/xenscope.so)
# ---------------------------------------------------------------------------------------------

def cli(*argv):
    return subprocess.run([sys.executable, "-m", "xenstructs.cli", *map(str, argv)], capture_output=True,
                          text=True, cwd=TOP, timeout=600)


def test_crash_hypervisor_mode_needs_dwarf_debian_does_not_ship(xen):
    """``crash xen-syms vmcore`` is crash's Xen hypervisor mode. crash reads Xen's structures from
    xen-syms' DWARF before it opens the dump; Debian builds Xen without -g, so crash refuses its
    xen-syms outright. Should a future package carry DWARF, the hypervisor-mode run must agree
    with the CLI instead."""
    from crashutil import run_crash
    from realsys.xenhost import xen_files
    files = xen_files()
    syms = files["xen_syms_symtab"]
    cmds = ["xen frames --summary", f"xen page {xen['cr3'] >> 12:x}"]
    r = run_crash(syms, xen["path"], cmds)
    if files["xen_syms"] is None:
        assert r.returncode != 0 and "no debugging data available" in r.output, r.output
        return
    assert r.returncode == 0, r.output
    for c, out in zip(cmds, r.outputs):
        want = cli(*c.split()[1:2], xen["path"], *c.split()[2:], "--xen-syms", syms)
        assert out == want.stdout, (c, out, want.stdout)


def test_xen_commands_inside_crash_agree_with_the_cli(xen):
    """crash has no hypervisor mode for Debian's Xen (above), but its minimal mode opens the host
    image with dom0's vmlinux: physical reads are then machine reads of the whole host through
    crash's readmem(), and dom0's P2M variables come from crash's symbols."""
    from crashutil import run_crash
    from realsys.linux import debug_vmlinux
    syms, path, mfn = xen["syms"], xen["path"], xen["cr3"] >> 12
    xs = ["--xen-syms", syms]
    cases = [["page", f"{mfn:x}"] + xs, ["page", f"{mfn:x}", "--json"] + xs, ["frames", "--summary"] + xs,
             ["frames", "--type", "l4", "--owner", "0"] + xs, ["domains"] + xs, ["m2p", f"{mfn:x}"] + xs,
             ["walk", "ffff830000000000"]]
    p2m = ["p2m-check", "--domain", "0", "--p2m-entries", hex(P2M_PREFIX), "--json"] + xs
    every = ["p2m-check", "--json"] + xs               # no --domain: every PV domain by its shared_info
    r = run_crash(debug_vmlinux(), path, [" ".join(["xen"] + c) for c in cases + [p2m, every]] + ["xen info"],
                  options=("--minimal",))
    assert r.returncode == 0 and "shared object loaded" in r.stdout, r.output
    for c, out in zip(cases, r.outputs):
        want = cli(c[0], path, *c[1:])
        assert out == want.stdout, (c, out, want.stdout + want.stderr)
    page = json.loads(r.outputs[1])["pages"][0] if "pages" in json.loads(r.outputs[1]) else json.loads(r.outputs[1])
    assert (page["count_info"], page["type_info"]) == xen["qemu_l4"]      # QEMU's read of the frame table
    got = json.loads(r.outputs[len(cases)])
    want = json.loads(cli("p2m-check", path, *p2m[1:], "--kernel-syms", xen["kmap"]).stdout)
    assert got["findings"] == want["findings"] and got["counts"] == want["counts"], (got["counts"], want["counts"])
    assert got["problems"] == 0 and got["pfns"] == want["pfns"] and 0x10000 < got["pfns"] <= P2M_PREFIX
    assert r.outputs[len(cases) + 1] == cli(*every[:1], path, *every[1:]).stdout     # crash fills no symbols
    info = r.outputs[-1]
    assert "minimal mode" in info and "readmem(PHYSADDR)" in info and "QEMU CPU note" in info, info


def test_refs_of_dom0s_l4_on_the_real_host(xen):
    """The reverse map of dom0's L4 (its CR3 as Xen's debug key printed it): Xen's own linear slot
    258 (init_xen_l4_slots writes it in every PV L4) is found and noted; dom0's direct map maps the
    table read-only (a PV guest may not write its page tables: Xen would refuse the RW reference);
    the whole host is searched in well under the issue's one second per host (vectorised)."""
    import time
    from xenstructs.xen.refs import reverse_map
    l4 = xen["cr3"] >> 12
    t0 = time.perf_counter()
    r = reverse_map(xen["host"], [l4])
    seconds = time.perf_counter() - t0
    linear = [x for x in r["references"] if x["linear"]]
    assert [(x["table_mfn"], x["slot"]) for x in linear] == [(l4, 258)]
    guest = [x for x in r["references"] if x["level"] == 1 and x["domain"] == 0]
    assert guest and not any(x["writable"] for x in guest), guest
    assert r["tables"] > 100 and seconds < 3, (r["tables"], seconds)


def test_dom0_kallsyms_found_in_the_host_dump(xen):
    """No System.map: dom0's kallsyms tables, found by shape in its kernel image through its own
    page tables (CR3 as Xen's debug key printed it), give the P2M variables dom0's /proc/kallsyms
    listed (what p2m-check reads with --kernel-syms)."""
    import time
    from xenstructs.linux.fromdump import guest_kernel_symbols
    from xenstructs.paging import Paging, root_from_cr3
    want = {}
    for line in open(xen["kmap"]):
        addr, _, name = line.split()
        want[name] = int(addr, 16)
    assert set(want) == {"xen_p2m_addr", "xen_p2m_size"}
    t0 = time.perf_counter()
    table = guest_kernel_symbols(xen["target"], Paging("4level", root_from_cr3(xen["cr3"], "4level"), nxe=True))
    seconds = time.perf_counter() - t0
    assert {n: table.get(n) for n in want} == want
    assert len(table) > 50000 and "xen_start_info" in table
    print(f"\nTIMING dom0 kallsyms by shape in the host dump: {len(table)} symbols in {seconds:.2f} s")


# ---------------------------------------------------------------------------------------------
# Xen's console ring in the dump against the serial console
# ---------------------------------------------------------------------------------------------

def xen_lines(console):
    """What Xen printed on its serial console (com1): the lines from their "(XEN)" on (dom0's hvc0
    output shares the byte stream: a line may start with some of it), \r removed."""
    out = []
    for line in console.replace("\r", "").splitlines():
        if "(XEN)" in line:
            out.append(line[line.index("(XEN)"):])
    return out


@pytest.mark.parametrize("symbols", ["xen-syms", "map"])
def test_dmesg_is_what_xen_printed(xen, symbols):
    """``dmesg`` of the host dump: Xen's console ring, line for line what Xen printed on com1 since
    boot (conring_size=1M holds it all: nothing dropped, the first line whole), with the symbols of
    Debian's xen-syms or of its .map (file-local names ``drivers/char/console.c#conring``)."""
    syms = xen["syms"] if symbols == "xen-syms" else xen["xen_map"]
    r = cli("dmesg", xen["path"], "--xen-syms", syms, "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["kind"] == "xen" and got["details"]["dropped"] == 0 and got["details"]["first_line"] == "complete"
    assert got["lines"] == xen_lines(xen["console"]), got["description"]
    assert got["lines"][0].startswith("(XEN) Xen version 4.17") and syms in got["description"]
    text = cli("dmesg", xen["path"], "--xen-syms", syms).stdout.splitlines()
    assert text[0] == got["description"] and text[1:] == got["lines"]


def test_check_reads_the_console_ring_without_a_log(xen, tmp_path):
    """``check`` with no log beside the dump: the console check reads Xen's console ring in the dump
    and finds what it finds in the serial console's text (``check --log``): nothing, on this healthy
    host (the fixture's ``d`` debug key printed register dumps: asked for, no crash), and faults
    finds no page fault in it."""
    log = tmp_path / "serial.log"
    log.write_text(xen["console"].replace("\r", ""))
    alone, with_log = (json.loads(cli("check", xen["path"], "--xen-syms", xen["syms"], "--no-siblings", "--json",
                                      *extra).stdout)[0] for extra in ((), ("--log", str(log))))
    alone, with_log = ({c["name"]: c for c in r["checks"]} for r in (alone, with_log))
    assert alone["console"]["summary"].startswith("Xen's console ring in the dump: ")

    def same(findings):          # the line numbers differ: the serial has dom0's lines too
        return [dict({k: v for k, v in f.items() if k not in ("source", "lines")},
                     text=re.sub(r"^lines? [\d-]+", "", f["text"])) for f in findings]
    assert same(alone["console"]["findings"]) == same(with_log["console"]["findings"])
    assert alone["console"]["status"] == with_log["console"]["status"] == "ok", alone["console"]
    assert {f["source"] for f in alone["console"]["findings"]} <= {"dump"}
    assert alone["faults"] == {"name": "faults", "status": "n.a.", "findings": [],
                               "summary": "Xen's console ring in the dump: no page fault in it"}


# ---------------------------------------------------------------------------------------------
# The same dump with no symbol file: Xen's own symbol table, version and struct offsets
# (tests/realsys/test_xen_zero_setup.py does the same on the 4.17.5 release and debug builds)
# ---------------------------------------------------------------------------------------------

def test_no_symbol_file_symbols_version_and_page_counts(xen):
    """Debian's 4.17.7: no source package to rebuild, so no shipped profile; every symbol of its
    -dbg xen-syms comes from the image's own table, the version equals the banner Xen printed, and
    each domain's tot_pages/max_pages (found in the dump: frame census, special domains' ids) equal
    Xen's q key."""
    from realsys.xenhost import elf_symtab
    bare = open_host(xen["target"])
    got = {(va, name) for va, _, name in bare.symbol_table.entries}
    assert got == elf_symtab(xen["syms"]), len(got)
    assert {(va, n) for va, _, n in bare.symbol_table.entries} == {
        (int(a, 16), n) for a, _, n in (line.split() for line in open(xen["xen_map"]))}
    assert bare.version == xen["banner"] and "xen_major_version" in bare.sources["version"]
    assert bare.xen_phys_start == xen["host"].xen_phys_start and bare.build_id
    doms = {d.id: d.extra for d in bare.domains()}
    for domid, facts in xen["q"]["domains"].items():
        assert (doms[domid]["tot_pages"], doms[domid]["max_pages"]) == (facts["nr_pages"], facts["max_pages"])
    assert bare.sources["structs"].startswith("found in the dump"), bare.sources


def test_the_issue_s_page_command_needs_nothing(xen):
    """``xenscope page DUMP MFN`` on the real 4.17.7 host image: no --xen, no xen-syms."""
    r = cli("page", xen["path"], f"{xen['cr3'] >> 12:x}", "--json")
    assert r.returncode == 0, r.stderr
    page = json.loads(r.stdout)
    assert page["xen"]["version"] == xen["banner"] and "xen_major_version" in page["xen"]["layout_why"]
    assert (page["pages"][0]["count_info"], page["pages"][0]["type_info"]) == xen["qemu_l4"]


@pytest.mark.parametrize("command", (["domains"], ["frames", "--summary"], ["pt-audit"], ["refs", "@l4"],
                                     ["page", "@l4", "--count", "4"]), ids=lambda c: c[0])
def test_commands_answer_the_same_without_xen_syms(xen, command):
    args = [a.replace("@l4", f"{xen['cr3'] >> 12:x}") for a in command]
    bare = cli(args[0], xen["path"], *args[1:], "--json")
    given = cli(args[0], xen["path"], *args[1:], "--json", "--xen-syms", xen["syms"])
    assert bare.returncode == given.returncode == 0, bare.stderr + given.stderr
    outs = [json.loads(r.stdout) for r in (bare, given)]
    assert outs[0]["xen"]["sources"]["symbols"].startswith("the image's own symbol table")
    for out in outs:
        out["xen"].pop("sources")
    assert outs[0] == outs[1]
