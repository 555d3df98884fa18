"""xenscope on Debian's other Xen releases: 4.20 (trixie, dom0 and domU Linux 6.12) and 4.14 (bullseye,
Linux 5.10), each booted from Debian's own packages (realsys.debian's private sources list) with a PV
dom0 under QEMU (TCG), ``-cpu max,-smap`` as the 4.17 tier (realsys.xenhost: TCG's SMAP breaks every
PV dom0's first iretq, whatever the release), running the release's own toolstack (xen-utils-4.20 with
trixie's glibc, xen-utils-4.14 with bullseye's: realsys.xendomu) which makes, pauses and dumps
(``xl dump-core``) a PV domU.

One boot per release: the host image, the domU's xl dump-core and every fact below come from it. The
domU tests of the 4.17 tier (test_xen_domu_boot.py, test_xen_domu_p2m.py: the xc core's layout and
notes against the release, its pages against the host image, P2M/M2P/owners, walks, dmesg against the
domU's console, its own P2M, pt-audit's granted ring mappings against xenstore and the toolstack's
/proc/PID/maps, struct domain offsets, ``check``) run here again, on each release, through this
module's ``domu``/``host_dump``/``xs``/``core`` fixtures. The truth, printed by Xen or read by QEMU
before the dump, never by xenscope:
- Xen's debug keys: ``q`` (each domain's nr_pages/xenheap_pages/max_pages and the caf/taf of the
  xen-heap pages it lists), ``0`` (dom0's CR3), ``H`` (the free pages of each heap zone), ``m`` (the
  free kB of the Xen and domain heaps), ``d`` (register dumps whose call traces Xen symbolised itself);
- the frame table as QEMU's ``memsave`` copies it out of Xen's own mapping once the VM is stopped
  (the independent census: PGC_state, bits 58-59 of count_info, ``PG_mask(3, 6)`` since the XSA-402
  change ae09597da3 that 4.14.6 carries, as in xen/arch/x86/include/asm/mm.h of Debian's 4.17 source
  and of Xen's master; free is 3) and its words QEMU's ``x`` reads for dom0's L4;
- Xen's boot lines ``Dom0 alloc.: A->B`` and ``Loaded kernel: V->W``: the PV dom0 builder
  (xen/arch/x86/pv/dom0_build.c) gives dom0's pfn p the machine frame A/4096 + p and writes the M2P
  alike, so dom0's kernel image pages have a known P2M and M2P;
- the xen-syms of the release's ``-dbg`` package (symbols; 4.20's carries DWARF) -- bullseye ships no
  -dbg package of Xen 4.14, so there the symbols are judged by Xen's own symbolised call traces only;
- Xen's com1 lines for ``dmesg``; dom0's own /proc/modules and process list for ``tasks``,
  ``modules`` and ``modcheck`` of the dom0 kernel in the host image (through dom0's CR3 as the ``0``
  key printed it: symbols and types from that kernel's kallsyms and BTF, found in the image); the
  domU's, printed by its init on its console, for the same commands on its xl dump-core with nothing
  given, and in the host image through the vCPU's CR3 the toolstack saved (``.xen_prstatus``).
"""
import bisect
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from realsys import linux as L
from realsys.linux import comm_matches
from realsys.xendomu import DOMU_MEM_MB, MEM_MB, Guest, boot_xen_with_domu
from realsys.xenhost import FRAMETABLE_VIRT_START, PAGE_INFO_SIZE, XEN_RELEASES, elf_symtab, parse_q
from realsys import test_xen_domu_boot, test_xen_domu_p2m
from realsys.test_xen_domu_boot import parse_xc_core

# the 4.17 tier's domU tests (and the fixture they need), run here on each release with this
# module's fixtures (see above): pytest collects them from this module's namespace
REUSED = {
    test_xen_domu_boot: ("test_xl_list_shows_paused_domu", "test_domu_console",
                         "test_dmesg_of_the_xl_dump_core_is_the_domus_console",
                         "test_xc_core_is_elf_core_with_xen_sections", "test_xc_core_notes",
                         "test_system_map_and_banner_page", "test_host_dump_agrees_with_xc_core",
                         "test_xenscope_reads_the_xc_core", "test_xenscope_p2m_m2p_owners_and_pages_agree_with_the_host",
                         "test_xenscope_walks_the_domu_kernel_in_both_dumps",
                         "test_domu_own_p2m_agrees_with_its_xl_dump_core",
                         "test_check_over_the_real_dumps_of_a_healthy_host",
                         "test_pt_audit_names_the_ring_mappings_as_granted",
                         "test_struct_offsets_of_the_table_hold_on_the_real_dump"),
    test_xen_domu_p2m: ("pages", "test_shared_info_pages_are_the_ones_xen_and_the_toolstack_name",
                        "test_each_p2m_by_shared_info_is_the_toolstacks_and_the_kernels",
                        "test_xl_dump_core_own_p2m_with_and_without_symbol_files"),
}
for _module, _names in REUSED.items():
    globals().update({name: getattr(_module, name) for name in _names})
from xenstructs.targets import open_dump
from xenstructs.xen import frames as F
from xenstructs.xen.host import open_host
from xenstructs.xen.ptaudit import audit

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASES = ("4.14", "4.20")
# struct page_info layouts of each release (xen/layouts.py's names), read from its mm.h: 4.14.6 has
# the XSA-402 backport (PGT_non_coherent 55, PGC bits of 4.17: C3); 4.20 has PGC_extra at bit 61 (C4)
LAYOUTS = {"4.14": "T3/C3", "4.20": "T3/C4"}
STATE_SHIFT, STATE_FREE = 58, 3          # PGC_state = PG_mask(3, 6): bits 58-59, free = 3
DOMU_MODULES = ("kernel/lib/crc7.ko", "kernel/lib/crc8.ko")
# the domU's own lists, on its console: the truth for tasks/modules of its kernel
DOMU_LISTS = ("echo DOMU-MODS-BEGIN; cat /proc/modules; echo DOMU-MODS-END\n"
              "echo DOMU-PIDS-BEGIN; for p in /proc/[0-9]*; do echo ${p#/proc/} $(cat $p/comm); done; "
              "echo DOMU-PIDS-END")


def domu_guest(release):
    """The PV domU: the release's kernel, two modules loaded (crc7, crc8), its lists printed."""
    _, moddir, _, _ = L.kernel_files("x86_64", XEN_RELEASES[release][1])
    files = {"lib": (0o40755, None)}
    lines = []
    for rel in DOMU_MODULES:
        files[f"lib/{os.path.basename(rel)}"] = (0o100644, L.module_bytes(moddir, rel))
        lines.append(f"insmod /lib/{os.path.basename(rel)}")
    return Guest(domu_files=files, domu_init="\n".join(lines + [DOMU_LISTS]))


@pytest.fixture(scope="module", params=RELEASES)
def rel(request, tmp_path_factory):
    """Boot the release with its toolstack, make and dump-core the PV domU, collect Xen's and QEMU's
    truth, dump the host; yield it all; delete the dump."""
    release = request.param
    d = tmp_path_factory.mktemp(f"xen-{release}")
    t0 = time.time()
    u = boot_xen_with_domu(str(d / "domu"), timeout=400, release=release, guest=domu_guest(release))
    u.t0 = t0
    h = u.host
    try:
        boot = h.boot_seconds
        facts = h.collect()
        facts["key_H"] = h.debug_key("H")
        facts["key_m"] = h.debug_key("m", needle="Physical memory information:")
        facts["qemu_l4"] = h.page_info(facts["dom0_cr3"] >> 12)
        facts["proc_modules"] = h.dom0_shell("cat /proc/modules")
        facts["dom0_end"] = int(h.dom0_shell("grep ' _end$' /proc/kallsyms").split()[0], 16)
        facts["pids"] = h.dom0_shell("for p in /proc/[0-9]*; do echo ${p#/proc/} $(cat $p/comm); done")
        path = u.host_dump(str(d / "xen.elf"))
        frames = raw_frame_table(h, str(d / "frametable.bin"))
        console = h.console
        files = h.files
    finally:
        h.close()
    target = open_dump(path)
    yield {"release": release, "facts": facts, "q": parse_q(facts["key_q"]), "path": path, "target": target,
           "frames": frames, "console": console, "files": files, "boot_seconds": boot, "domu": u,
           "seconds": time.time() - t0}
    target.close()
    os.unlink(path)


@pytest.fixture(scope="module")
def domu(rel):
    """The release's paused PV domU (realsys.xendomu.DomU; its host is gone, its files stay)."""
    return rel["domu"]


@pytest.fixture(scope="module")
def host_dump(rel):
    return rel["path"]


@pytest.fixture(scope="module")
def xs(rel, host):
    """(xl dump-core target, host dump target, XenHost), as realsys/conftest.py's for 4.17."""
    xc = open_dump(rel["domu"].xc_core_path)
    yield xc, rel["target"], host
    xc.close()


@pytest.fixture(scope="module")
def core(domu):
    return parse_xc_core(domu.xc_core_path)


def raw_frame_table(host, path):
    """``{"caf": array, "taf": array}`` of the frame table of the guest's RAM as QEMU's memsave
    copies it through Xen's own mapping (the VM is stopped)."""
    count = MEM_MB << 20 >> 12
    # QMP, not HMP: HMP's expression parser reads "SIZE /path" as a division
    host.vm.qmp("memsave", val=FRAMETABLE_VIRT_START - (1 << 64), size=count * PAGE_INFO_SIZE,   # an int64
                filename=path)
    words = np.fromfile(path, dtype="<u8").reshape(-1, PAGE_INFO_SIZE // 8)
    os.unlink(path)
    return {"caf": words[:, 1], "taf": words[:, 2]}


def cli(*argv):
    return subprocess.run([sys.executable, "-m", "xenstructs.cli", *map(str, argv)], capture_output=True,
                          text=True, cwd=TOP, timeout=900)


def cli_json(*argv):
    r = cli(*argv, "--json")
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def host(rel):
    return open_host(rel["target"], syms=rel["files"]["xen_syms_symtab"])


def heap_free_pages(text):
    """Sum of the ``heap[node=N][zone=Z] -> P pages`` lines of Xen's ``H`` key."""
    return sum(int(p) for p in re.findall(r"heap\[node=\d+\]\[zone=\d+\] -> (\d+) pages", text))


def test_booted_release_and_layout(rel, host):
    banner = re.search(r"Xen version (\S+) \(Debian ([^)]+)\)", rel["console"])
    assert banner and banner.group(1).startswith(rel["release"] + ".") and banner.group(2) == rel["files"]["version"]
    assert host.version == banner.group(1), host.describe()
    assert host.layout.name.startswith(LAYOUTS[rel["release"]]), host.describe()
    print(f"\nTIMING Xen {banner.group(1)}: boot {rel['boot_seconds']:.0f} s")


def test_dom0_l4_page_is_what_qemu_reads(rel, host):
    cr3 = rel["facts"]["dom0_cr3"]
    pg = host.page(cr3 >> 12)
    assert (pg["count_info"], pg["type_info"]) == rel["facts"]["qemu_l4"]
    assert rel["facts"]["qemu_l4"][1] >> 61 == 4                 # PGT_l4_page_table, every release here
    assert pg["type"]["type"] == "l4" and {"pinned", "validated"} <= set(pg["type"]["flags"])
    assert pg["owner"] == 0 and pg["count"]["state"] == "inuse"


def test_xen_pages_match_q(rel, host):
    lines = rel["q"]["xen_pages"]
    assert lines, "q printed no XenPage lines"
    for p in lines:
        pg = host.page(p["mfn"])
        assert (pg["count_info"], pg["type_info"]) == (p["caf"], p["taf"]), p
        assert pg["owner"] == p["domid"] and "xen_heap" in pg["count"]["flags"]


def test_free_frames_are_xens_heap_and_the_raw_census(rel, host):
    """Free frames: xenscope's census = the sum of Xen's H key = its m key's heaps (kB / 4) = the
    frames whose PGC_state is free in QEMU's copy of the frame table; and frame for frame, the
    count_info/type_info xenscope read equal QEMU's copy."""
    cols = host.frame_arrays()
    census = F.census(host, F.classify(host, cols))
    heap = heap_free_pages(rel["facts"]["key_H"])
    kb = [int(k) for k in re.findall(r"(?:Xen|Dom) heap: (\d+)kB free", rel["facts"]["key_m"])]
    # frames past RAM's end: init_frametable fills the rest of the table's last chunk with ~0 bytes
    ram_end = max(int(end, 16) + 1 for end in re.findall(r"\(XEN\)\s+\[[0-9a-f]+, ([0-9a-f]+)\] \(usable\)",
                                                       rel["console"])) >> 12
    raw = {k: v[:ram_end] for k, v in rel["frames"].items()}
    assert (rel["frames"]["caf"][ram_end:] == np.uint64((1 << 64) - 1)).all()
    raw_free = int(((raw["caf"] >> np.uint64(STATE_SHIFT)) & np.uint64(3) == STATE_FREE).sum())
    assert census["states"]["free"] == heap == sum(kb) // 4 == raw_free, (census["states"], heap, kb, raw_free)
    mfn = cols["mfn"][cols["present"]]
    inside = mfn < len(raw["caf"])
    assert inside.sum() > 100000
    assert np.array_equal(cols["count_info"][cols["present"]][inside], raw["caf"][mfn[inside]])
    assert np.array_equal(cols["type_info"][cols["present"]][inside], raw["taf"][mfn[inside]])
    assert census["free_with_references_count"] == 0 and census["missing"] == 0


def test_domains_and_census_match_q(rel, host):
    c = F.census(host, F.classify(host, host.frame_arrays()))
    doms = {d["id"]: d for d in cli_json("domains", rel["path"])["domains"]}
    for domid, q in rel["q"]["domains"].items():
        assert (doms[domid]["tot_pages"], doms[domid]["max_pages"]) == (q["nr_pages"], q["max_pages"])
        assert c["allocated_by_owner"][f"d{domid}"] == q["nr_pages"] + q["xenheap_pages"]
    assert set(rel["q"]["domains"]) == {0, rel["domu"].domid} and {0x7FF2, 0x7FF1} <= set(doms)


def test_pt_audit_of_each_domain_is_clean(rel, host):
    for domid in (0, rel["domu"].domid):
        (a,) = audit(host, domid)
        assert a.roots and a.tables > 10
        assert not a.findings, (domid, [f.as_dict() for f in a.findings[:5]])


def dom0_alloc(console):
    """(first machine frame of dom0's initial allocation, first and last+1 pfn of its kernel image)
    from Xen's boot lines ``Dom0 alloc.: A->B`` and ``Loaded kernel: V->W`` (pfn = (V - 2^64 + 2 GiB)
    / 4096: Linux's __START_KERNEL_map is where Xen's dom0 builder puts pfn 0)."""
    alloc = int(re.search(r"Dom0 alloc\.:\s+([0-9a-f]+)->", console).group(1), 16)
    lo, hi = (int(x, 16) for x in re.search(r"Loaded kernel: ([0-9a-f]+)->([0-9a-f]+)", console).groups())
    base = 0xffffffff80000000
    return alloc >> 12, (lo - base) >> 12, (hi - base) >> 12


def test_p2m_and_m2p_of_dom0s_kernel_are_what_the_dom0_builder_made(rel):
    """dom0's kernel pages: P2M pfn -> A + pfn and M2P back, as Xen's dom0 builder wrote them."""
    spfn, lo, hi = dom0_alloc(rel["console"])
    entries = []
    for start in range(lo, hi, 4096):                       # p2m --count takes at most 4096
        entries += cli_json("p2m", rel["path"], f"{start:x}", "--count", min(4096, hi - start))["entries"]
    assert [(e["pfn"], e["mfn"], e["m2p"], e["owner_id"]) for e in entries] == \
        [(pfn, spfn + pfn, pfn, 0) for pfn in range(lo, hi)]
    (m,) = cli_json("m2p", rel["path"], f"{spfn + lo:x}")["entries"]
    assert m == {"mfn": spfn + lo, "pfn": lo}
    got = cli_json("m2p", rel["path"], "--range", f"{spfn + lo:x}-{spfn + hi:x}")["entries"]
    assert [(x["mfn"], x["pfn"]) for x in got] == [(spfn + p, p) for p in range(lo, hi)]


def test_walks_of_dom0s_kernel_reach_the_frames_the_dom0_builder_gave(rel):
    """Walks through machine frames: dom0's kernel image, from Xen's "Loaded kernel" start to the
    kernel's own _end (dom0's /proc/kallsyms; Linux unmaps the rest of Xen's boot area), walked in
    the host image from dom0's CR3, lands on the machine frame A/4096 + pfn, byte offset kept."""
    from xenstructs.paging import Paging, root_from_cr3, walk
    spfn, lo, _ = dom0_alloc(rel["console"])
    end = (rel["facts"]["dom0_end"] - 0xffffffff80000000 + 0xfff) >> 12
    paging = Paging("4level", root_from_cr3(rel["facts"]["dom0_cr3"], "4level"), nxe=True)
    wrong = []
    for pfn in range(lo, end):
        va = 0xffffffff80000000 + (pfn << 12) + (pfn * 8 & 0xfff)
        if walk(rel["target"], paging, va).pa != ((spfn + pfn) << 12) + (pfn * 8 & 0xfff):
            wrong.append(hex(va))
    assert end - lo > 4000 and not wrong, (end - lo, wrong[:5])


def test_p2m_check_of_every_pv_domain_is_clean(rel):
    """No symbol file: dom0 and the domU, each P2M found by its shared_info, clean (dom0's only
    findings the identity entries of Linux's non-RAM pfns and its granted mappings of the domU's
    rings, informational)."""
    res = cli_json("p2m-check", rel["path"], "--limit", "0")
    domid = rel["domu"].domid
    assert [x["domain"] for x in res["domains"]] == [0, domid] and not res["errors"], res.get("errors")
    d0, du = res["domains"]
    assert d0["problems"] == 0 and {k for k, v in d0["counts"].items() if v} <= {"identity", "foreign-allowed"}, \
        d0["counts"]
    assert d0["pfns"] >= rel["q"]["domains"][0]["nr_pages"]
    assert du["problems"] == 0 and not any(du["counts"].values()), du["counts"]
    assert du["pfns"] == DOMU_MEM_MB << 8                   # xl's memory = 128 (MB): its max_pfn


def call_traces(console):
    """``{(address, name, offset, size)}`` of every ``[<addr>] R|S name+off/size`` line and every
    ``Xen code around <addr> (name+off/size)`` Xen printed (its register dumps)."""
    out = set()
    for rx in (r"\[<([0-9a-f]{16})>\] [RS] (\S+)\+(0x[0-9a-f]+|0)/0x([0-9a-f]+)",   # "%pS": +0 or +0x..
               r"Xen code around <([0-9a-f]{16})> \((\S+)\+(0x[0-9a-f]+|0)/0x([0-9a-f]+)\)"):
        out |= {(int(a, 16), n, int(o, 16), int(s, 16)) for a, n, o, s in re.findall(rx, console)}
    return out


def test_symbols_against_xens_own_traces_and_the_dbg_xen_syms(rel):
    """The image's own symbol table (no file given) names every address of Xen's symbolised call
    traces (the 'd' key) as Xen did, name+offset/size; and equals the -dbg xen-syms' .symtab where
    Debian ships one (4.20; none for 4.14)."""
    bare = open_host(rel["target"])
    entries = sorted((va, name) for va, _, name in bare.symbol_table.entries)
    starts = [va for va, _ in entries]
    traces = call_traces(rel["console"])
    assert len(traces) >= 2, rel["facts"]["key_d"][-2000:]      # one CPU: the 'd' key's idle-loop trace
    for addr, name, off, size in traces:
        i = bisect.bisect_right(starts, addr) - 1
        nxt = next(va for va in starts[i + 1:] if va > starts[i])
        assert (entries[i][1], addr - starts[i], nxt - starts[i]) == (name, off, size), hex(addr)
    syms = rel["files"]["xen_syms_symtab"]
    if rel["release"] == "4.14":
        assert syms is None and "no xen-hypervisor-4.14-amd64-dbg" in rel["files"]["xen_syms_reason"]
        return
    assert set(entries) == elf_symtab(syms)
    assert bare.version == host_version(rel)


def host_version(rel):
    return re.search(r"Xen version (\S+) ", rel["console"]).group(1)


def test_dmesg_is_what_xen_printed(rel):
    got = cli_json("dmesg", rel["path"])
    lines = [ln[ln.index("(XEN)"):] for ln in rel["console"].replace("\r", "").splitlines() if "(XEN)" in ln]
    assert got["kind"] == "xen" and got["details"]["dropped"] == 0
    assert got["lines"] == lines, got["description"]


def test_dom0_tasks_modules_modcheck_in_the_host_image(rel):
    """dom0's kernel (6.12 on 4.20, 5.10 on 4.14) read in the host image through its CR3: its
    processes and modules (names, sizes: /proc/modules), and a clean modcheck."""
    cr3 = f"{rel['facts']['dom0_cr3']:#x}"
    got = {c: cli_json(c, rel["path"], "--cr3", cr3, "--mode", "4level") for c in ("tasks", "modules", "modcheck")}
    assert got["tasks"]["kernel"]["sources"]["symbols"] == "from the dump (kallsyms found by shape)"
    mods = [(ln.split()[0], int(ln.split()[1])) for ln in rel["facts"]["proc_modules"].splitlines() if ln.strip()]
    assert {"xenfs", "xen_privcmd"} <= {n for n, _ in mods}
    assert [(m["name"], sum(r["size"] for r in m["regions"])) for m in got["modules"]["modules"]] == mods
    seen = {t["pid"]: t["comm"] for t in got["tasks"]["tasks"]}
    listed = dict(ln.split(None, 1) for ln in rel["facts"]["pids"].splitlines() if len(ln.split()) == 2)
    lasting = {int(p): c for p, c in listed.items() if p != "1" and c not in ("cat", "sh")}
    assert len(lasting) > 10 and "sleep" in lasting.values()
    for pid, comm in lasting.items():
        assert comm_matches(comm, seen.get(pid, "")), (pid, comm, seen.get(pid))
    mc = got["modcheck"]
    assert mc["groups"] == [] and not mc["list_errors"] and mc["modules"] == len(mods)


def console_list(console, name):
    """The lines the domU's init printed between DOMU-NAME-BEGIN and DOMU-NAME-END."""
    text = console.replace("\r", "")
    return text.split(f"DOMU-{name}-BEGIN\n", 1)[1].split(f"DOMU-{name}-END", 1)[0].splitlines()


def check_kernel_lists(got, pids, modules):
    """tasks/modules/modcheck results against the guest's own /proc lists."""
    mods = [(ln.split()[0], int(ln.split()[1])) for ln in modules if ln.strip()]
    assert {n for n, _ in mods} == {"crc7", "crc8"}, modules
    assert [(m["name"], sum(r["size"] for r in m["regions"])) for m in got["modules"]["modules"]] == mods
    seen = {t["pid"]: t["comm"] for t in got["tasks"]["tasks"]}
    listed = dict(ln.split(None, 1) for ln in pids if len(ln.split()) == 2)
    lasting = {int(p): c for p, c in listed.items() if c not in ("cat", "sh")}
    assert len(lasting) > 10
    for pid, comm in lasting.items():
        assert comm_matches(comm, seen.get(pid, "")), (pid, comm, seen.get(pid))
    mc = got["modcheck"]
    assert mc["groups"] == [] and not mc["list_errors"] and mc["modules"] == len(mods)


def test_domu_tasks_modules_modcheck_in_its_xl_dump_core_with_nothing_given(rel):
    """The domU's kernel (the release's Linux) in its xl dump-core, no option: symbols and types found
    in the dump; its processes and modules are those its init listed on its console."""
    u = rel["domu"]
    got = {c: cli_json(c, u.xc_core_path) for c in ("tasks", "modules", "modcheck")}
    assert got["tasks"]["kernel"]["sources"]["symbols"].startswith("from the dump"), got["tasks"]["kernel"]
    check_kernel_lists(got, console_list(u.domu_console, "PIDS"), console_list(u.domu_console, "MODS"))


def test_domu_tasks_modules_modcheck_in_the_host_image_through_its_saved_cr3(rel, xs):
    """The same kernel objects read in the host image, through the machine frames of the domU's page
    tables from the CR3 the toolstack saved in the xl dump-core (.xen_prstatus)."""
    xc, _, _ = xs
    u = rel["domu"]
    cr3 = f"{xc.cpus()[0].regs['cr3']:#x}"
    got = {c: cli_json(c, rel["path"], "--cr3", cr3, "--mode", "4level") for c in ("tasks", "modules", "modcheck")}
    check_kernel_lists(got, console_list(u.domu_console, "PIDS"), console_list(u.domu_console, "MODS"))
    assert {t["pid"]: t["comm"] for t in got["tasks"]["tasks"]} == \
        {t["pid"]: t["comm"] for t in cli_json("tasks", u.xc_core_path)["tasks"]}


def test_boot_and_dumps_time(rel):
    u = rel["domu"]
    summary = ", ".join(f"{k} {v:.1f}" for k, v in u.timings.items())
    print(f"\nTIMING Xen {rel['release']} + PV domU: {rel['seconds']:.0f} s to the host dump ({summary})")
    assert rel["seconds"] < 400, summary


def test_xen_commands_inside_crash_agree_with_the_cli(rel):
    """Debian's crash (bookworm's) in minimal mode on the release's host image, with its dom0 kernel's
    vmlinux (the release's Linux -dbg package): physical reads are machine reads through crash's
    readmem(); xenscope's commands print there what the CLI prints, and dom0's L4 page is what QEMU
    read of the frame table."""
    from crashutil import run_crash
    from realsys.linux import debug_vmlinux
    mfn = rel["facts"]["dom0_cr3"] >> 12
    cases = [["page", f"{mfn:x}", "--json"], ["frames", "--summary"], ["domains"], ["m2p", f"{mfn:x}"],
             ["p2m-check", "--json"]]
    r = run_crash(debug_vmlinux(XEN_RELEASES[rel["release"]][1]), rel["path"],
                  [" ".join(["xen"] + c) for c in cases], options=("--minimal",))
    assert r.returncode == 0 and "shared object loaded" in r.stdout, r.output
    for c, out in zip(cases, r.outputs):
        want = cli(c[0], rel["path"], *c[1:])
        assert out == want.stdout, (c, out, want.stdout + want.stderr)
    page = json.loads(r.outputs[0])
    page = page["pages"][0] if "pages" in page else page
    assert (page["count_info"], page["type_info"]) == rel["facts"]["qemu_l4"]
