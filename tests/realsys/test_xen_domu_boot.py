"""A real PV domU under Debian's Xen 4.17, made by Debian's own toolstack in dom0 and dumped with
``xl dump-core``; the dump carried out of the VM over a raw virtio disk (realsys.xendomu).

One boot for the session (the ``domu``, ``host_dump`` and ``xs`` fixtures are realsys/conftest.py's,
shared with test_xen_domu_p2m.py). Checked here without xenscope: ``xl list`` shows the domU (paused),
what it printed on its console, the xc core's ELF layout (ET_CORE, no program headers, Xen's
sections) and its Xen notes (PV magic, 128 MB of pages), the p2m and pages agree with the kernel's
System.map (linux_banner on its pfn), and a QMP dump of the whole machine taken afterwards holds
the same bytes at each sampled page's machine frame (the domU stays paused).
"""
import os
import struct
import time

import pytest

from realsys.xendomu import DOMU_MEM_MB, DOMU_NAME, DOMU_READY, MEM_MB, parse_xl_list

BUDGET = 240                        # seconds, boot to host dump; ~45 s here
XC_CORE_MAGIC = 0xF00FEBED          # PV (xen/include/public/elfnote.h: HVM is 0xF00FEBEE)
XEN_ELFNOTE_DUMPCORE_NONE = 0x2000000
XEN_ELFNOTE_DUMPCORE_HEADER = 0x2000001
XEN_ELFNOTE_DUMPCORE_XEN_VERSION = 0x2000002
XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION = 0x2000003
START_KERNEL_MAP = 0xffffffff80000000


@pytest.fixture(scope="module")
def core(domu):
    return parse_xc_core(domu.xc_core_path)


def parse_xc_core(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, \
        f"{path}: not an ELF64 little-endian file: {data[:8]!r}"
    e_type, = struct.unpack_from("<H", data, 16)
    phoff, shoff = struct.unpack_from("<QQ", data, 32)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", data, 54)
    hdrs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    stroff = hdrs[shstrndx][4]
    secs = {}
    for name, typ, _, _, off, size, _, _, _, entsize in hdrs:
        n = data[stroff + name:data.index(b"\0", stroff + name)].decode()
        secs[n] = {"type": typ, "offset": off, "size": size, "entsize": entsize}
    notes = []
    if ".note.Xen" in secs:
        off, end = secs[".note.Xen"]["offset"], secs[".note.Xen"]["offset"] + \
            secs[".note.Xen"]["size"]
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", data, off)
            off += 12
            name = data[off:off + namesz].rstrip(b"\0").decode()
            off += (namesz + 3) & ~3
            notes.append((name, ntype, data[off:off + descsz]))
            off += (descsz + 3) & ~3
    return {"data": data, "e_type": e_type, "phoff": phoff, "phnum": phnum, "sections": secs,
            "notes": notes, "size": len(data)}


def core_page(core, pfn):
    """(gmfn, page bytes) of ``pfn`` in an xc core, through .xen_p2m."""
    p2m, pages = core["sections"][".xen_p2m"], core["sections"][".xen_pages"]
    data = core["data"]
    for i in range(p2m["size"] // 16):
        p, mfn = struct.unpack_from("<QQ", data, p2m["offset"] + 16 * i)
        if p == pfn:
            off = pages["offset"] + 4096 * i
            return mfn, data[off:off + 4096]
    raise AssertionError(f"pfn {pfn:#x} is not in .xen_p2m")


def symbol(system_map, name):
    for line in open(system_map):
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise AssertionError(f"{name} not in {system_map}")


def host_loads(path):
    with open(path, "rb") as fh:
        ehdr = fh.read(64)
        assert ehdr[:4] == b"\x7fELF" and struct.unpack_from("<H", ehdr, 16)[0] == 4
        phoff, = struct.unpack_from("<Q", ehdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
        fh.seek(phoff)
        loads = []
        for _ in range(phnum):
            p_type, _, off, _, paddr, filesz, _, _ = struct.unpack("<IIQQQQQQ",
                                                                 fh.read(phentsize)[:56])
            if p_type == 1:
                loads.append((paddr, off, filesz))
    return loads


def host_read(path, loads, pa, n):
    for paddr, off, filesz in loads:
        if paddr <= pa and pa + n <= paddr + filesz:
            with open(path, "rb") as fh:
                fh.seek(off + pa - paddr)
                return fh.read(n)
    raise AssertionError(f"machine address {pa:#x} not in the host dump")


def test_xl_list_shows_paused_domu(domu):
    rows = parse_xl_list(domu.xl_list)
    assert "Domain-0" in rows and rows["Domain-0"]["id"] == 0, domu.xl_list
    assert DOMU_NAME in rows, domu.xl_list
    r = rows[DOMU_NAME]
    assert r["id"] == domu.domid >= 1 and r["vcpus"] == 1, domu.xl_list
    assert r["mem"] == DOMU_MEM_MB, domu.xl_list
    assert "p" in r["state"], f"the domU is not paused:\n{domu.xl_list}"
    after = parse_xl_list(domu.xl_list_after_dump)
    assert "p" in after[DOMU_NAME]["state"], domu.xl_list_after_dump


def test_domu_console(domu):
    assert DOMU_READY in domu.domu_console, domu.domu_console
    assert "nokaslr" in domu.domu_console and domu.manifest["kernel"] in domu.domu_console


def test_dmesg_of_the_xl_dump_core_is_the_domus_console(domu):
    """An xl dump-core file holds no VMCOREINFO: with the kernel's symbols (``prb`` in the System.map
    written from /proc/kallsyms), and with nothing given (the dump's own kallsyms), the
    printk_ringbuffer's offsets from the kernel's BTF in the dump (5.10's differ from 6.1's: no
    last_finalized_id), ``dmesg`` reads the PV domU's printk buffer through its page tables (machine
    frames, through the dump's P2M). Its records of a level under the domU's loglevel=4 are the
    kernel's lines of the domU's console (hvc0) as xenconsoled logged them, in order (the KMSG lines
    its init wrote at level 2 among them); the boot's first record is there."""
    import json
    import re
    import subprocess
    import sys
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    runs = []
    for given in (["--system-map", domu.dom0_system_map], []):
        r = subprocess.run([sys.executable, "-m", "xenstructs.cli", "dmesg", domu.xc_core_path, *given, "--json"],
                           capture_output=True, text=True, cwd=top, timeout=300)
        assert r.returncode == 0, r.stderr
        runs.append(json.loads(r.stdout))
    got, bare = runs
    assert bare["lines"] == got["lines"] and "prb from the dump's kallsyms" in bare["description"]
    records = got["details"]["records"]
    assert records[0]["seq"] == 0 and records[0]["text"].startswith("Linux version ")
    assert "offsets from the kernel's BTF in the dump" in got["description"], got["description"]

    def lines(record):
        ts = record["ts_nsec"]
        return [f"[{ts // 10**9:5d}.{ts % 10**9 // 1000:06d}] {line}" for line in record["text"].split("\n")]
    stamp = re.compile(r"\[\s*\d+\.\d{6}\] ")
    console = [line[m.start():] for line in domu.domu_console.replace("\r", "").splitlines()
               for m in [stamp.search(line)] if m]
    shown = [line for record in records if record["level"] < 4 for line in lines(record)]
    assert console == shown, (console[-3:], shown[-3:])
    assert [line.split("] ", 1)[1] for line in console[-3:]] == [f"XENSCOPE-KMSG {i}" for i in (1, 2, 3)]


def test_xc_core_is_elf_core_with_xen_sections(domu, core):
    assert core["e_type"] == 4, f"e_type {core['e_type']} is not ET_CORE"
    assert core["phnum"] == 0 and core["phoff"] == 0, (core["phnum"], core["phoff"])
    secs = core["sections"]
    for name in (".shstrtab", ".note.Xen", ".xen_prstatus", ".xen_p2m", ".xen_pages"):
        assert name in secs, f"no {name} in {sorted(secs)}"
    assert ".xen_pfn" not in secs, "a .xen_pfn section is HVM's, not PV's"
    assert secs[".note.Xen"]["type"] == 7                     # SHT_NOTE
    assert core["size"] == domu.xc_core_size_in_dom0, (core["size"], domu.xc_core_size_in_dom0)
    assert core["size"] == max(s["offset"] + s["size"] for s in secs.values())


def test_xc_core_notes(domu, core):
    notes = {t: desc for name, t, desc in core["notes"] if name == "Xen"}
    assert XEN_ELFNOTE_DUMPCORE_NONE in notes, core["notes"]
    assert XEN_ELFNOTE_DUMPCORE_HEADER in notes, core["notes"]
    magic, nr_vcpus, nr_pages, page_size = struct.unpack_from(
        "<QQQQ", notes[XEN_ELFNOTE_DUMPCORE_HEADER])
    assert magic == XC_CORE_MAGIC, f"xch_magic {magic:#x}"
    assert nr_vcpus == 1 and page_size == 4096, (nr_vcpus, page_size)
    want = DOMU_MEM_MB << 8
    assert want * 0.95 <= nr_pages <= want, f"nr_pages {nr_pages}, {DOMU_MEM_MB} MB is {want}"
    secs = core["sections"]
    assert secs[".xen_pages"]["size"] == nr_pages * 4096
    assert secs[".xen_p2m"]["size"] == nr_pages * 16
    major, minor = struct.unpack_from("<QQ", notes[XEN_ELFNOTE_DUMPCORE_XEN_VERSION])
    assert f"{major}.{minor}" == domu.release, (major, minor)
    fmt, = struct.unpack_from("<Q", notes[XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION])
    assert fmt == 1, fmt


def test_system_map_and_banner_page(domu, core):
    sm = domu.dom0_system_map
    assert symbol(sm, "_text") == 0xffffffff81000000          # nokaslr
    banner = symbol(sm, "linux_banner")
    pfn = (banner - START_KERNEL_MAP) >> 12
    _, page = core_page(core, pfn)
    text = page[banner & 0xfff:(banner & 0xfff) + 80]
    assert text.startswith(b"Linux version " + domu.manifest["kernel"].encode()), text


def test_host_dump_agrees_with_xc_core(domu, core, host_dump):
    loads = host_loads(host_dump)
    assert loads and sum(n for _, _, n in loads) >= (MEM_MB - 1) << 20, loads
    sm = domu.dom0_system_map
    pfns = [(symbol(sm, "linux_banner") - START_KERNEL_MAP) >> 12]
    text = (symbol(sm, "_text") - START_KERNEL_MAP) >> 12
    pfns += [text + i * 37 for i in range(32)]                  # kernel text: never written
    for pfn in pfns:
        mfn, page = core_page(core, pfn)
        assert host_read(host_dump, loads, mfn << 12, 4096) == page, \
            f"pfn {pfn:#x} (mfn {mfn:#x}) differs between the xc core and the host dump"


def test_total_time(domu, host_dump):
    took = time.time() - domu.t0
    t = domu.timings
    summary = ", ".join(f"{k} {v:.1f}" for k, v in t.items())
    print(f"\nxendomu: {took:.1f} s end to end ({summary}); core "
          f"{os.path.getsize(domu.xc_core_path)} bytes, host dump "
          f"{os.path.getsize(host_dump)} bytes, dom0 initramfs "
          f"{domu.initramfs_bytes} bytes")
    assert took < BUDGET, f"boot + domU + dump-core + host dump took {took:.0f} s: {summary}"


# ---------------------------------------------------------------------------------------------
# xenscope on the same machine: the xl dump-core file against the whole-machine dump
# ---------------------------------------------------------------------------------------------

INVALID = (1 << 64) - 1


def test_xenscope_reads_the_xc_core(xs, domu):
    xc, _, _ = xs
    assert xc.facts["format"] == "xc_core" and xc.facts["guest"] == "pv"
    assert xc.facts["nr_pages"] == DOMU_MEM_MB * 256
    assert xc.facts["xen_version"].startswith(domu.release + ".")
    assert xc.cpus()[0].regs["cr3"] & 0xFFF == 0


def test_xenscope_p2m_m2p_owners_and_pages_agree_with_the_host(xs, domu):
    """The dump's P2M against Xen's M2P and frame owners in the host dump, and every page's
    bytes in both files."""
    import numpy as np
    from xenstructs.xen import frames as F
    xc, ht, host = xs
    p2m = xc.p2m_array()
    pfns = np.nonzero(p2m != np.uint64(INVALID))[0]
    mfns = p2m[pfns]
    assert len(pfns) == DOMU_MEM_MB * 256
    m2p = host.m2p_array(0, host.max_page)
    assert (m2p[mfns.astype(np.int64)] == pfns.astype(np.uint64)).all()
    cols = F.classify(host, host.frame_arrays())
    names = F.owner_names(host, np.unique(cols["domain"][mfns.astype(np.int64)]))
    assert set(names.values()) == {f"d{domu.domid}"}, names
    differ = [int(p) for p, m in zip(pfns.tolist(), mfns.tolist())
              if xc.read_pfn(p, 0, 4096) != ht.read_phys(m << 12, 4096)]
    assert not differ, f"{len(differ)} pages differ, e.g. pfns {differ[:5]}"


def test_xenscope_walks_the_domu_kernel_in_both_dumps(xs, domu):
    """vCPU 0's page tables hold machine frames: the same walk through the xl dump-core file and
    through the host's machine memory reaches the same frame and bytes (linux_banner)."""
    from xenstructs.context import resolve
    from xenstructs.paging import read_virt, walk
    xc, ht, _ = xs
    syms = {}
    with open(domu.dom0_system_map) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                syms.setdefault(parts[2], int(parts[0], 16))
    pg = resolve(xc).paging
    for name in ("linux_banner", "_stext", "init_task"):
        va = syms[name]
        a, b = walk(xc, pg, va), walk(ht, pg, va)
        assert a.pa is not None and a.pa == b.pa, (name, a.describe_stop(), b.describe_stop())
        assert read_virt(xc, va, 64, pg, pg.mode) == read_virt(ht, va, 64, pg, pg.mode)
    assert read_virt(xc, syms["linux_banner"], 14, pg, pg.mode) == b"Linux version "


def test_modcheck_and_tasks_on_the_pv_domu(xs, domu, tmp_path):
    """Kernel objects and modcheck on the real PV guest's xl dump-core file: page tables with
    machine frames, offsets from Debian's -dbg vmlinux (xenscope profile), symbols from kallsyms."""
    import json
    import subprocess
    import sys
    from realsys.linux import debug_vmlinux
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    prof = str(tmp_path / "profile.json")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "xenstructs.cli", *args], capture_output=True, text=True,
                              cwd=top, timeout=600)
    r = cli("profile", debug_vmlinux(), "-o", prof)
    assert r.returncode == 0, r.stderr
    common = ["--profile", prof, "--system-map", domu.dom0_system_map, "--json"]
    r = cli("tasks", domu.xc_core_path, *common)
    assert r.returncode == 0, r.stderr
    tasks = json.loads(r.stdout)["tasks"]
    assert tasks[0]["pid"] == 0 and any(t["pid"] == 1 for t in tasks) and len(tasks) > 20
    r = cli("modcheck", domu.xc_core_path, "--vmalloc", *common)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout)
    assert res["groups"] == [] and res["checked_pgds"] >= 2 and res["checked_pages"] > 10000


def test_domu_own_p2m_agrees_with_its_xl_dump_core(domu):
    """The real domU's own P2M list (xen_p2m_addr, read through its MFN page tables in the xl
    dump-core file) against the frames the dump says it held: clean."""
    import json
    import subprocess
    import sys
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", "p2m-check", domu.xc_core_path, "--kernel-syms",
                        domu.dom0_system_map, "--json"], capture_output=True, text=True, cwd=top, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    res = json.loads(r.stdout)
    assert "own P2M list" in res["sources"]["p2m"] and not any(res["counts"].values())


def xen_syms_args(domu):
    """``--xen-syms FILE`` of the booted release (none for bullseye's 4.14: no -dbg package)."""
    syms = domu.host.xen_syms_symtab or domu.host.xen_map
    return ["--xen-syms", syms] if syms else []


def _cli(*args, timeout=900):
    import json
    import subprocess
    import sys
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", *args, "--json"], capture_output=True, text=True,
                       cwd=top, timeout=timeout)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else None), r.stderr


def test_check_over_the_real_dumps_of_a_healthy_host(xs, domu, host_dump):
    """`xenscope check` over the real host dump (Xen, dom0 with Debian's toolstack, the running PV domU)
    and the domU's xl dump-core: a healthy host, so exit 0. Every check that applies runs and is ok
    (modcheck of the domU's kernel with its own kallsyms and BTF);
    dom0's mappings of the domU's rings are counted as informational (granted) references."""
    code, out, err = _cli("check", host_dump, domu.xc_core_path, *xen_syms_args(domu),
                          "--kernel-syms", domu.dom0_system_map)
    assert out is not None, err
    res = {d["kind"]: d for d in out}
    assert set(res) == {"xen-host", "xl-dump-core"}
    st = {(k, c["name"]): c for k, d in res.items() for c in d["checks"]}
    for key in (("xen-host", "paging"), ("xen-host", "xen-frames"), ("xen-host", "p2m"),
                ("xl-dump-core", "paging"), ("xl-dump-core", "p2m"), ("xl-dump-core", "modcheck")):
        assert st[key]["status"] == "ok", (key, st[key]["summary"], st[key]["findings"][:5])
    frames = st[("xen-host", "xen-frames")]
    assert "0 free frame(s) with references" in frames["summary"] and " 0 finding(s)" in frames["summary"]
    assert "informational: foreign-reference (granted) " in frames["summary"], frames["summary"]
    assert code == 0, (code, err, [(k, c["status"], c["summary"]) for k, c in st.items()])


def _va(path):
    """The virtual address of a pt-audit path [["L4", i], ["L3", j], ...] (computed here, 4-level)."""
    shift = {"L4": 39, "L3": 30, "L2": 21, "L1": 12}
    va = sum(slot << shift[level] for level, slot in path)
    return va | 0xFFFF000000000000 if va >> 47 else va


def test_pt_audit_names_the_ring_mappings_as_granted(xs, domu, host_dump):
    """pt-audit on the real host: no findings; dom0's references to d1's frames are exactly the
    domU's xenstore and console rings, as xenstore records them (ring-ref: machine frames of a PV
    guest), each mapped by the process the toolstack says maps it (the user address falls in
    xenstored's / xenconsoled's /dev/xen/gntdev mapping, /proc/PID/maps) and in dom0's kernel (gntdev
    maps the page there too), each backed by the grant Xen's ABI reserves for it
    (GNTTAB_RESERVED_CONSOLE 0, GNTTAB_RESERVED_XENSTORE 1: xen/include/public/grant_table.h)."""
    code, out, err = _cli("pt-audit", host_dump, *xen_syms_args(domu), "--limit", "0")
    assert code == 0 and out is not None, err
    doms = {d["domain"]: d for d in out["domains"]}
    assert set(doms) == {0, domu.domid}
    assert all(not d["findings"] for d in doms.values()), [d["findings"][:3] for d in doms.values()]
    assert not doms[domu.domid]["informational"]
    info = doms[0]["informational"]
    rings = {domu.rings["store"]: "xenstored", domu.rings["console"]: "xenconsoled"}
    reserved = {domu.rings["console"]: 0, domu.rings["store"]: 1}
    assert {f["mfn"] for f in info} == set(rings), (info, domu.rings)
    assert {f["basis"] for f in info} == {"granted"} and {f["kind"] for f in info} == {"foreign-reference"}
    for f in info:
        assert f"grant ref {reserved[f['mfn']]} of d{domu.domid} to d0 " in f["details"], f
    for mfn, program in rings.items():
        vas = [_va(f["path"]) for f in info if f["mfn"] == mfn]
        user = [va for va in vas if va < 1 << 47]
        maps = [m for m in domu.gntdev_maps if m["program"] == program]
        assert len(user) == 1 and any(m["start"] <= user[0] < m["end"] for m in maps), (program, hex(mfn), vas, maps)
        assert len(vas) == 2 and any(va >= 0xFFFF800000000000 for va in vas), vas   # the kernel's mapping
    access = out["foreign_access"]
    assert [p["domain"] for p in access["privileged"]] == [0], access
    assert {(g["granter"], g["ref"], g["grantee"], g["mfn"]) for g in access["grants"]} == \
        {(domu.domid, ref, 0, mfn) for mfn, ref in reserved.items()}, access["grants"]


def release_row(version):
    """The domain_layouts release-build row of Xen ``version`` as its banner says it; a "-pre" banner
    is the stable branch after the last point release (Debian's 4.20.4+63 prints 4.20.5-pre): that
    release's row, the Debian build configuration the table was computed with."""
    import re
    from xenstructs.xen import domain_layouts
    pre = re.match(r"(\d+\.\d+)\.(\d+)-pre$", version)
    if pre:
        version = f"{pre.group(1)}.{int(pre.group(2)) - 1}"
    rows = [r for r in domain_layouts.exact_candidates(version) if not r.debug]
    assert len(rows) == 1, (version, rows)
    return rows[0]


def test_struct_offsets_of_the_table_hold_on_the_real_dump(xs, domu):
    """The domain_layouts row of the booted release, read here byte by byte: dom0's is_privileged is
    1 and the domU's 0 (xl made it without privilege; dom0 is the control domain: its
    /proc/xen/capabilities says control_d), the bools around it are 0/1, each grant table points back
    at its domain, and the domU's active entries 0 and 1 name xenstore's ring-refs, pinned by d0."""
    _, _, host = xs
    row = release_row(host.version)
    doms = {d.id: d for d in host.domains()}
    assert "control_d" in domu.dom0_capabilities, domu.dom0_capabilities
    for domid, want in ((0, 1), (domu.domid, 0)):
        raw = host.read_va(doms[domid].struct_va + row.is_privileged - 1, 5)
        assert raw[1] == want and all(b in (0, 1) for b in raw), (domid, raw)
        gt = host.read_u64(doms[domid].struct_va + row.grant_table)
        assert host.read_u64(gt + row.gt_domain) == doms[domid].struct_va
    gt = host.read_u64(doms[domu.domid].struct_va + row.grant_table)
    page = host.read_va(host.read_u64(host.read_u64(gt + row.gt_active)), 2 * row.act_size)
    for ref, ring in ((0, "console"), (1, "store")):
        e = page[ref * row.act_size:(ref + 1) * row.act_size]
        pin, domid = struct.unpack_from("<IH", e, row.act_pin)[0], struct.unpack_from("<H", e, row.act_domid)[0]
        assert struct.unpack_from("<Q", e, row.act_mfn)[0] == domu.rings[ring] and domid == 0 and pin, (ref, e.hex())
