"""xenscope on Debian's other Xen releases: 4.20 (trixie, dom0 Linux 6.12) and 4.14 (bullseye, dom0
Linux 5.10), each booted from Debian's own packages (realsys.debian's private sources list) with a PV
dom0 under QEMU (TCG), ``-cpu max,-smap`` as the 4.17 tier (realsys.xenhost: TCG's SMAP breaks every
PV dom0's first iretq, whatever the release).

One boot per release. The truth, printed by Xen or read by QEMU before the dump, never by xenscope:
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
  key printed it: symbols and types from that kernel's kallsyms and BTF, found in the image).
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

from realsys.linux import comm_matches
from realsys.xenhost import FRAMETABLE_VIRT_START, PAGE_INFO_SIZE, boot_xen_host, elf_symtab, parse_q
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


@pytest.fixture(scope="module", params=RELEASES)
def rel(request, tmp_path_factory):
    """Boot the release, collect Xen's and QEMU's truth, dump; yield it all; delete the dump."""
    release = request.param
    d = tmp_path_factory.mktemp(f"xen-{release}")
    t0 = time.time()
    h = boot_xen_host(workdir=str(d / "vm"), timeout=400, mem=512, release=release)
    try:
        boot = time.time() - t0
        facts = h.collect()
        facts["key_H"] = h.debug_key("H")
        facts["key_m"] = h.debug_key("m", needle="Physical memory information:")
        facts["qemu_l4"] = h.page_info(facts["dom0_cr3"] >> 12)
        facts["proc_modules"] = h.dom0_shell("cat /proc/modules")
        facts["dom0_end"] = int(h.dom0_shell("grep ' _end$' /proc/kallsyms").split()[0], 16)
        facts["pids"] = h.dom0_shell("for p in /proc/[0-9]*; do echo ${p#/proc/} $(cat $p/comm); done")
        path = h.dump(str(d / "xen.elf"))
        frames = raw_frame_table(h, str(d / "frametable.bin"))
        console = h.console
        files = h.files
    finally:
        h.close()
    target = open_dump(path)
    yield {"release": release, "facts": facts, "q": parse_q(facts["key_q"]), "path": path, "target": target,
           "frames": frames, "console": console, "files": files, "boot_seconds": boot,
           "seconds": time.time() - t0}
    target.close()
    os.unlink(path)


def raw_frame_table(host, path):
    """``{"caf": array, "taf": array}`` of the frame table of the guest's 512 MiB as QEMU's memsave
    copies it through Xen's own mapping (the VM is stopped)."""
    count = 512 << 20 >> 12
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
    assert set(rel["q"]["domains"]) == {0} and {0x7FF2, 0x7FF1} <= set(doms)


def test_pt_audit_of_dom0_is_clean(rel, host):
    (a,) = audit(host, 0)
    assert a.roots and a.tables > 10
    assert not a.findings, [f.as_dict() for f in a.findings[:5]]


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
    """No symbol file: dom0 is the one PV domain, its P2M found by its shared_info, clean (its only
    findings the identity entries of Linux's non-RAM pfns)."""
    res = cli_json("p2m-check", rel["path"], "--limit", "0")
    assert [x["domain"] for x in res["domains"]] == [0] and not res["errors"], res.get("errors")
    d0 = res["domains"][0]
    assert d0["problems"] == 0 and {k for k, v in d0["counts"].items() if v} <= {"identity"}, d0["counts"]
    assert d0["pfns"] >= rel["q"]["domains"][0]["nr_pages"]


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
