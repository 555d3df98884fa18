"""Real kernels as the judge: Debian's kernels under QEMU (TCG), QEMU's monitor as the truth.

For each shape (bookworm's 6.1: 4-level, 5-level, KASLR, PTI, i386 PAE, i386 non-PAE (2-level);
bullseye's 5.10: 4-level, and KASLR with PTI on an LA57 CPU (still 4-level: built without
CONFIG_X86_5LEVEL), i386 PAE and non-PAE (2-level); trixie's 6.12 (no i386 kernel in trixie):
4-level, 5-level, and 5-level with KASLR and PTI) one boot
(test_the_shape_has_its_features: the guest really runs with what its shape asks): pause over QMP,
take QEMU's ``info registers``, ``info tlb``, ``info mem`` and ``gva2gpa`` for a sample, dump the
guest as ELF and as kdump-zlib (QEMU 7.2 writes makedumpfile's flattened form), then require that
xenscope, from both dumps, translates every ``info tlb`` page identically and lists nothing QEMU
does not, that its ``maps`` ranges equal ``info mem``'s, and that ``gva2gpa`` agrees.

Known gaps of QEMU's monitor, compensated here and nowhere else (never by loosening a comparison):
- PAE: ``info tlb`` prints ``pte & ~0xfff`` (``~0xfffff`` for 2 MiB pages), so the NX bit 63 stays in
  its physical-address column; we clear bit 63 of QEMU's column before comparing.
- LA57: QEMU 7.2's ``info mem`` prints nothing, so there ``info tlb`` and ``gva2gpa`` are the truth.
- ``info tlb`` shows the leaf entry's own flags, ``info mem`` the user/write rights combined over
  the levels and no NX: flags are compared with our leaf ``entry``, ranges with ``--ignore-pa
  --ignore-nx``.
"""
import os
import random
import re
import time

import numpy as np
import pytest

from xenstructs.context import resolve, _kernel_root
from xenstructs.paging import Paging, coalesce, enumerate_mappings, root_from_cr3, walk
from xenstructs.targets import open_dump

from realsys.linux import KALLSYMS_INIT, boot_linux, comm_matches, guest_pids, kallsyms_serial
from realsys.linuxtruth import (PTI_INIT, expected_mode, kaslr_offset, kernel_variables, leaf_flags,
                                paging_mode, parse_mem, parse_registers, parse_tlb, proc_modules, pti_lines)

SHAPES = {
    "x86_64-4level": dict(arch="x86_64"),
    "x86_64-5level": dict(arch="x86_64", la57=True),
    "x86_64-kaslr": dict(arch="x86_64", kaslr=True),
    "x86_64-pti": dict(arch="x86_64", pti=True),
    "i386-pae": dict(arch="i386"),
    "i386-2level": dict(arch="i386", kernel="6.1-686"),
    # bullseye's i386 kernels (trixie ships none: its lists know no linux-image-686*:i386)
    "i386-5.10-pae": dict(arch="i386", kernel="5.10-pae"),
    "i386-5.10-2level": dict(arch="i386", kernel="5.10-686"),
    "x86_64-5.10": dict(arch="x86_64", kernel="5.10"),
    "x86_64-6.12": dict(arch="x86_64", kernel="6.12"),
    "x86_64-6.12-5level": dict(arch="x86_64", kernel="6.12", la57=True),
    # one boot for several features. 5.10 cannot have 5-level paging: bullseye's kernel is built
    # without CONFIG_X86_5LEVEL, so on the LA57 CPU it runs 4-level paging (what
    # test_the_shape_has_its_features requires: CR4.LA57 clear); 5-level with KASLR and PTI is 6.12's
    "x86_64-5.10-kaslr-pti": dict(arch="x86_64", kernel="5.10", la57=True, kaslr=True, pti=True),
    "x86_64-6.12-5level-kaslr-pti": dict(arch="x86_64", kernel="6.12", la57=True, kaslr=True, pti=True),
}
# modules every guest loads besides qemu_fw_cfg: /proc/modules (names, sizes) judges `modules`
MODULES = ("kernel/lib/crc7.ko", "kernel/lib/crc8.ko")
PROC_MODULES = "echo MODS-BEGIN; cat /proc/modules; echo MODS-END"
SAMPLE = 300


def series(system):
    """``(major, minor)`` of the booted kernel, from the release of Debian's image package."""
    from realsys.linux import kernel_files
    release = kernel_files(system["cfg"]["arch"], system["cfg"].get("kernel"))[3]
    return tuple(int(part) for part in release.split("-")[0].split(".")[:2])


def kallsyms_via(system):
    """Where the kernel's VMCOREINFO names the kallsyms tables (Linux 6.0+: SYMBOL(kallsyms_names)
    ...); bullseye's 5.10 predates it, so there they are found by their shape in the image."""
    return "kallsyms found by shape" if series(system) < (6, 0) else "kallsyms via VMCOREINFO"


KMSG = 3                 # lines the guest writes to /dev/kmsg at level 2 (shown: the boot has loglevel=3)


def kmsg_lines(vm):
    """The guest's shell writes KMSG lines to the kernel log at level 2 (KERN_CRIT: above the
    console's loglevel=3, so the serial console shows them too) and says when it is done."""
    vm.send("mount -t devtmpfs dev /dev 2>/dev/null; for i in $(seq %d); do echo \"<2>XENSCOPE-KMSG $i\" "
            "> /dev/kmsg; done; echo \"XENSCOPE-KMSG-\"'DONE'\n" % KMSG)
    vm.wait_for("XENSCOPE-KMSG-DONE", timeout=60)
    time.sleep(0.3)


@pytest.fixture(scope="module", params=sorted(SHAPES))
def system(request, tmp_path_factory):
    """Boot one shape, collect QEMU's truth, dump it twice; yield everything; delete the dumps."""
    shape = request.param
    cfg = SHAPES[shape]
    d = tmp_path_factory.mktemp(shape)
    ksyms = str(d / "kallsyms.txt")
    vm = boot_linux(**cfg, modules=MODULES, extra_init=f"{KALLSYMS_INIT}; {PROC_MODULES}; {PTI_INIT}",
                    qemu_args=kallsyms_serial(ksyms))
    try:
        kmsg_lines(vm)
        vm.qmp("stop")
        regs = parse_registers(vm.hmp("info registers"))
        mode = paging_mode(cfg["arch"], regs["cr4"])
        t0 = time.perf_counter()
        tlb = parse_tlb(vm.hmp("info tlb"), mode == "pae")
        tlb_seconds = time.perf_counter() - t0
        # where the kernel put its direct map (KASLR moves it): its own variables, read by QEMU
        bases = kernel_variables(vm, ksyms, tlb, ("page_offset_base", "vmalloc_base")) \
            if cfg["arch"] == "x86_64" else {}
        mem = parse_mem(vm.hmp("info mem"))
        rnd = random.Random(shape)
        mapped = sorted(tlb)
        sample = rnd.sample(mapped, min(SAMPLE, len(mapped)))
        sample = [va + rnd.randrange(0, 4096) & ~7 for va in sample]
        top = (1 << 32) if cfg["arch"] == "i386" else (1 << 47)
        sample += [rnd.randrange(0, top) & ~0xfff for _ in range(SAMPLE // 3)]   # mostly unmapped
        gva = {}
        for va in sample:
            out = vm.hmp(f"gva2gpa {va:#x}").strip()
            gva[va] = int(out.split()[-1], 16) if out.startswith("gpa:") else None
        elf = str(d / "dump.elf")
        kdump = str(d / "dump.kdump")
        vm.qmp("dump-guest-memory", paging=False, protocol=f"file:{elf}")
        vm.qmp("dump-guest-memory", paging=False, protocol=f"file:{kdump}", format="kdump-zlib")
        console = vm.read_console().decode(errors="replace")
    finally:
        vm.close()
    truth = dict(shape=shape, cfg=cfg, regs=regs, mode=mode, bases=bases, tlb=tlb, tlb_seconds=tlb_seconds,
                 mem=mem, gva=gva, elf=elf, kdump=kdump, kallsyms=ksyms, pids=guest_pids(console),
                 console=console, modules=proc_modules(console), pti=pti_lines(console))
    yield truth
    for p in (elf, kdump, ksyms):
        if os.path.exists(p):
            os.unlink(p)


@pytest.fixture(scope="module")
def dumps(system):
    targets = {"elf": open_dump(system["elf"]), "kdump": open_dump(system["kdump"])}
    yield targets
    for t in targets.values():
        t.close()


def pages_of(target):
    ctx = resolve(target)
    return ctx, enumerate_mappings(target, ctx.paging)


def test_the_shape_has_its_features(system):
    """The guest runs with what its shape asks, judged from outside xenscope: the paging mode by
    QEMU's CR4 (5-level only from a kernel built with CONFIG_X86_5LEVEL), KASLR by the guest's
    /proc/kallsyms against Debian's System.map (without it: the direct map at its fixed base, by the
    kernel's own page_offset_base), PTI by the kernel's "page tables isolation: enabled" line."""
    cfg = system["cfg"]
    assert system["mode"] == expected_mode(cfg, _kernel_config(system)), hex(system["regs"]["cr4"])
    offset = _kaslr_offset(system)
    assert bool(offset) == bool(cfg.get("kaslr")), hex(offset)
    if cfg["arch"] == "x86_64" and not cfg.get("kaslr"):
        fixed = {"4level": 0xffff888000000000, "5level": 0xff11000000000000}[system["mode"]]
        assert system["bases"]["page_offset_base"] == fixed, system["bases"]
    assert ("page tables isolation: enabled" in system["pti"]) == bool(cfg.get("pti")), system["pti"]
    bases = " ".join(f"{k}={v:#x}" for k, v in system["bases"].items())
    print(f"\nFEATURES {system['shape']}: {system['mode']} (CR4 {system['regs']['cr4']:#x}, CR3 "
          f"{system['regs']['cr3']:#x}), kernel moved {offset:#x}, {bases}, PTI {system['pti']}")


def test_registers_and_mode(system, dumps):
    regs = system["regs"]
    want_mode = system["mode"]                    # by QEMU's CR4 (PAE, LA57)
    for kind, t in dumps.items():
        ctx = resolve(t)
        assert ctx.paging.mode == want_mode, kind
        assert ctx.cr3 == regs["cr3"], kind
        assert ctx.regs["cr0"] == regs["cr0"] and ctx.regs["cr4"] == regs["cr4"], kind
        # EFER is in no dump note: our stated assumption about NXE must hold on the real system
        assert ctx.paging.nxe == bool(regs["efer"] >> 11 & 1), (kind, hex(regs["efer"]))
    assert system["kdump"] and dumps["kdump"].kind.startswith("kdump-compressed, flattened")


@pytest.mark.parametrize("kind", ["elf", "kdump"])
def test_every_tlb_page_translates_identically(system, dumps, kind):
    ctx, m = pages_of(dumps[kind])
    tlb = system["tlb"]
    ours = dict(zip(m.va.tolist(), zip(m.pa.tolist(), m.size.tolist(), m.entry.tolist())))
    assert set(ours) == set(tlb), (len(set(ours) - set(tlb)), len(set(tlb) - set(ours)))
    bad = [va for va, (pa, size, entry) in ours.items()
           if tlb[va][0] != pa or tlb[va][1] != leaf_flags(entry, size)]
    assert not bad, [(hex(v), ours[v], tlb[v]) for v in bad[:5]]
    assert not [p for p in m.problems if p[3] != "loop"], m.problems[:5]


def test_ranges_equal_info_mem(system, dumps):
    if system["mode"] == "5level":
        assert system["mem"] == []          # QEMU 7.2 prints nothing under LA57: tlb is the truth
        return
    ctx, m = pages_of(dumps["elf"])
    ours = [(r.va_start, r.va_end, r.user, r.writable) for r in coalesce(m, ignore_pa=True, ignore_nx=True)]
    assert ours == system["mem"]


def test_gva2gpa_sample(system, dumps):
    for kind, t in dumps.items():
        pg = resolve(t).paging
        wrong = [(hex(va), pa) for va, pa in system["gva"].items() if walk(t, pg, va).pa != pa]
        assert not wrong, (kind, wrong[:5])
    assert sum(pa is not None for pa in system["gva"].values()) >= SAMPLE


def test_kernel_root_from_vmcoreinfo(system, dumps):
    """Without CPU registers: the kernel's page tables found from VMCOREINFO (KASLR offsets included)
    map every kernel page of ``info tlb`` to the same frame."""
    t = dumps["elf"]
    vi = t.facts["vmcoreinfo"]
    assert vi is not None and vi.osrelease
    assert (vi.kerneloffset or 0) == _kaslr_offset(system), hex(vi.kerneloffset or 0)
    machine = t.facts["machine"]
    root, why = _kernel_root(t, machine)
    assert root is not None, why
    mode = system["mode"]
    pg = Paging(mode, root_from_cr3(root, mode), nxe=True)
    kstart = 0xC0000000 if machine == "i386" else (1 << 63)
    kernel = {va: v for va, v in system["tlb"].items() if va >= kstart}
    if system["cfg"].get("pti") and system["regs"]["cr3"] & 0x1000:
        # CR3 is the PTI user PGD: its kernel half is the small trampoline subset
        for va, (pa, _) in kernel.items():
            assert walk(t, pg, va).pa == pa, hex(va)
        return
    m = enumerate_mappings(t, pg, kstart)
    ours = dict(zip(m.va.tolist(), m.pa.tolist()))
    assert ours == {va: pa for va, (pa, _) in kernel.items()}


def test_pti_user_and_kernel_pgds(system, dumps):
    if not system["cfg"].get("pti"):
        return
    t = dumps["elf"]
    cr3, mode = system["regs"]["cr3"], system["mode"]          # QEMU's CR3 and CR4.LA57
    user, kern = (cr3 | 0x1000), (cr3 & ~0x1000)
    pu = Paging(mode, root_from_cr3(user, mode))
    pk = Paging(mode, root_from_cr3(kern, mode))
    mu = enumerate_mappings(t, pu, 1 << 63)
    mk = enumerate_mappings(t, pk, 1 << 63)
    # every kernel address the user PGD maps, the kernel PGD maps to the same frame (entry text,
    # cpu_entry_area, per-CPU TSS pages, and the kernel text itself when the CPU has no PCID) ...
    for va in mu.va.tolist():
        assert walk(t, pu, va).pa == walk(t, pk, va).pa, hex(va)
    # ... but of the direct map only a few per-CPU pages, where the kernel PGD maps all of RAM
    # the direct map up to the vmalloc area, where the kernel's own variables put them (KASLR moves both)
    direct_map = (system["bases"]["page_offset_base"], system["bases"]["vmalloc_base"])

    def direct_bytes(m):
        sel = (m.va >= np.uint64(direct_map[0])) & (m.va < np.uint64(direct_map[1]))
        return int(m.size[sel].sum())
    assert direct_bytes(mk) >= 200 << 20, direct_bytes(mk)           # the guest has 256 MiB
    assert 0 < direct_bytes(mu) <= 64 << 10, direct_bytes(mu)


# --------------------------------------------------------------------------------------------
# Symbols and types from the dump alone (kallsyms via VMCOREINFO, BTF), judged against the
# guest's own /proc/kallsyms and process list, Debian's -dbg System.map and DWARF
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["elf", "kdump"])
def test_kallsyms_from_the_dump_equal_the_guests_proc_kallsyms(system, dumps, kind):
    from xenstructs.linux.profile import Symbols
    from realsys.linux import read_guest_kallsyms
    t0 = time.perf_counter()
    syms = Symbols.from_dump(dumps[kind])
    seconds = time.perf_counter() - t0
    k = syms.kallsyms
    truth = read_guest_kallsyms(system["kallsyms"])
    assert len(truth) > 40000          # Debian's i386 kernel lists text only (no CONFIG_KALLSYMS_ALL)
    assert list(zip(k.addresses.tolist(), k.types, k.names)) == truth      # address, type, name, order
    text_only = "# CONFIG_KALLSYMS_ALL is not set" in _kernel_config(system)     # Debian's i386 kernel
    assert syms.source == f"from the dump ({kallsyms_via(system)}" + (
        ", text symbols only: CONFIG_KALLSYMS_ALL off)" if text_only else ")") and syms.relocated
    print(f"\nTIMING kallsyms {system['shape']} {kind}: {len(k)} symbols in {seconds:.3f} s")
    assert seconds < 5


def only_on(*arches):
    """Generate the test only for the ``system`` shapes of these architectures (the hook in
    realsys/conftest.py deselects the others; each test's docstring says why)."""
    def mark(fn):
        fn.arches = arches
        return fn
    return mark


def test_kallsyms_equal_debians_system_map(system, dumps):
    """Every decoded symbol is in the -dbg System.map (link-time: KERNELOFFSET taken off), per-CPU
    symbols typed 'A' as scripts/kallsyms.c makes them; what System.map has beyond them is what
    scripts/kallsyms.c leaves out (absolute symbols, the kallsyms_* tables)."""
    from xenstructs.linux.profile import Symbols
    from realsys.linux import DEFAULT_KERNEL
    from realsys.linuxfaults import debug_system_map
    k = Symbols.from_dump(dumps["elf"]).kallsyms
    offset = _kaslr_offset(system)
    kernel = system["cfg"].get("kernel") or DEFAULT_KERNEL[system["cfg"]["arch"]]
    smap = [(int(a, 16), t, n) for a, t, n in (ln.split() for ln in open(debug_system_map(kernel)))]
    exact = set(smap)
    by_name = {(a, n) for a, _, n in smap}
    percpu_end = next(a for a, _, n in smap if n == "__per_cpu_end")
    ours = [(a - offset if a >= 1 << 63 else a, t, n)
            for a, t, n in zip(k.addresses.tolist(), k.types, k.names)]
    wrong = [s for s in ours if s not in exact and not (s[0] <= percpu_end and s[1] == "A" and
                                                        (s[0], s[2]) in by_name)]
    # 5.10's scripts/kallsyms.c keeps the compiler's local .L labels (1237 .LC* here, the guest's
    # /proc/kallsyms lists them too: the test above) that scripts/mksysmap's grep (" \.L") drops
    local = [s for s in wrong if s[2].startswith(".L")]
    assert not local or series(system) == (5, 10), local[:5]
    wrong = [s for s in wrong if not s[2].startswith(".L")]
    assert not wrong, wrong[:5]
    decoded = {(a, n) for a, _, n in ours}
    left = [s for s in smap if (s[0], s[2]) not in decoded]
    if "# CONFIG_KALLSYMS_ALL is not set" in _kernel_config(system):       # Debian's i386 kernels
        # scripts/kallsyms.c keeps text symbols only: every T/t of the kernel's text is decoded
        stext, etext = (next(a for a, _, n in smap if n == name) for name in ("_stext", "_etext"))
        text = [s for s in left if s[1] in "Tt" and stext <= s[0] < etext]
        assert not text and len(ours) > 40000, text[:5]
        return
    assert all(t in "Aa" or n.startswith("kallsyms_") for _, t, n in left), left[:5]
    assert len(left) < 100


@only_on("x86_64")
def test_btf_offsets_equal_the_dwarf_offsets(system, dumps):
    """Every offset and size the library uses, from the dump's BTF, equals the -dbg vmlinux's DWARF.
    x86_64 only: Debian's i386 kernel has no BTF (test_tasks_modules_modcheck_from_the_dump_alone
    checks that xenscope says so)."""
    from xenstructs.linux.profile import Profile
    from realsys.linux import debug_profile
    t0 = time.perf_counter()
    btf = Profile.from_btf(dumps["kdump"])
    seconds = time.perf_counter() - t0
    dwarf = Profile.from_json(debug_profile(system["cfg"].get("kernel")))
    assert len(dwarf.offsets) >= 15 and len(dwarf.sizes) >= 8
    assert {k: btf.offsets.get(k) for k in dwarf.offsets} == dwarf.offsets
    assert {k: btf.sizes.get(k) for k in dwarf.sizes} == dwarf.sizes
    assert btf.meta["source"].startswith("offsets from BTF in the dump")
    print(f"\nTIMING BTF {system['shape']}: {btf.meta['btf']['types']} types in {seconds:.3f} s")


def _cli(*argv):
    """``(status, stdout, stderr, seconds)`` of one in-process CLI run."""
    import contextlib
    import io
    from xenstructs.cli import run
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err):
        status = run(list(argv), out)
    return status, out.getvalue(), err.getvalue(), time.perf_counter() - t0


def _cli_json(*argv):
    import json
    status, out, err, seconds = _cli(*argv, "--json")
    assert status in (0, 1), err
    return status, json.loads(out), seconds


def _kernel_config(system):
    """The booted kernel's .config, as Debian's image package ships it."""
    from realsys.linux import kernel_files
    vmlinuz, _, _, release = kernel_files(system["cfg"]["arch"], system["cfg"].get("kernel"))
    return open(os.path.join(os.path.dirname(vmlinuz), f"config-{release}")).read()


def _kaslr_offset(system):
    """How far KASLR moved the guest's kernel: its /proc/kallsyms against Debian's System.map."""
    from realsys.linux import DEFAULT_KERNEL
    from realsys.linuxfaults import debug_system_map
    cfg = system["cfg"]
    return kaslr_offset(system["kallsyms"], debug_system_map(cfg.get("kernel") or DEFAULT_KERNEL[cfg["arch"]]))


def _answers(result):
    """A command's JSON without where things came from and how long it took."""
    return {k: v for k, v in result.items() if k not in ("kernel", "seconds")}


@pytest.mark.parametrize("kind", ["elf", "kdump"])
def test_tasks_modules_modcheck_from_the_dump_alone(system, kind):
    """tasks/modules/modcheck with no file equal the same commands given Debian's -dbg profile and
    System.map; the tasks are the guest's processes; the provenance says "from the dump". Debian's
    i386 kernels have no BTF: there the commands say so in one line, and with the -dbg files they
    answer what the guest printed."""
    from realsys.linux import DEFAULT_KERNEL, debug_profile
    from realsys.linuxfaults import debug_system_map
    path = system[kind]
    kernel = system["cfg"].get("kernel") or DEFAULT_KERNEL[system["cfg"]["arch"]]
    files = ["--profile", debug_profile(kernel), "--system-map", debug_system_map(kernel)]
    got = {}
    if system["cfg"]["arch"] == "i386":
        assert "# CONFIG_DEBUG_INFO_BTF is not set" in _kernel_config(system)
        for cmd in ("tasks", "modules", "modcheck"):
            status, _, err, _ = _cli(cmd, path)
            assert status == 2 and "CONFIG_DEBUG_INFO_BTF" in err and len(err.splitlines()) == 1, err
            _, got[cmd], _ = _cli_json(cmd, path, *files)
            assert got[cmd]["kernel"]["sources"]["types"].startswith("DWARF of")
    for cmd in ("tasks", "modules", "modcheck") if system["cfg"]["arch"] == "x86_64" else ():
        status, alone, seconds = _cli_json(cmd, path)
        src = alone["kernel"]["sources"]
        assert src["symbols"] == f"from the dump ({kallsyms_via(system)})", src
        assert src["types"].startswith("offsets from BTF in the dump"), src
        fstatus, given, fseconds = _cli_json(cmd, path, *files)
        assert (fstatus, _answers(given)) == (status, _answers(alone)), cmd
        assert given["kernel"]["sources"]["types"].startswith("DWARF of")
        print(f"\nTIMING {cmd} {system['shape']} {kind}: from the dump {seconds:.2f} s, "
              f"with symbol files {fseconds:.2f} s")
        got[cmd] = alone
    seen = {t["pid"]: t["comm"] for t in got["tasks"]["tasks"]}
    lasting = {p: c for p, c in system["pids"].items() if p != 1 and c not in ("cat", "sh")}
    assert len(lasting) > 10 and list(lasting.values()).count("sleep") >= 2
    for pid, comm in lasting.items():
        assert comm_matches(comm, seen.get(pid, "")), (pid, comm, seen.get(pid))
    # /proc/modules: the same modules in the list's order, each of the size the kernel reports
    # (core + init layouts before 6.4, the sum of module->mem[] after)
    assert [n for n, _ in system["modules"]] == [m["name"] for m in got["modules"]["modules"]]
    assert {"qemu_fw_cfg", "crc7", "crc8"} == {n for n, _ in system["modules"]}
    sizes = {m["name"]: sum(r["size"] for r in m["regions"]) for m in got["modules"]["modules"]}
    assert sizes == dict(system["modules"]), (sizes, system["modules"])
    assert got["modcheck"]["modules"] == 3 and not got["modcheck"]["list_errors"]


def test_check_runs_modcheck_with_no_option(system):
    _, reports, _ = _cli_json("check", system["elf"], "--jobs", "1")
    checks = {c["name"]: c for c in reports[0]["checks"]}
    if "# CONFIG_DEBUG_INFO_BTF is not set" in _kernel_config(system):       # Debian's i386 kernel
        assert checks["modcheck"]["status"] == "n.a." and "CONFIG_DEBUG_INFO_BTF" in checks["modcheck"]["summary"]
        return
    assert checks["modcheck"]["status"] == "ok", checks["modcheck"]
    assert "from the dump" in checks["modcheck"]["summary"]


def test_kallsyms_found_by_shape_equal_the_vmcoreinfo_ones(system, dumps):
    """Without VMCOREINFO's help (older kernels, a dom0 in a host dump) the tables are found by
    their shape in the kernel image: the same tables, the same symbols."""
    from xenstructs.linux.fromdump import memory_of
    from xenstructs.linux.kallsyms import from_vmcoreinfo
    from xenstructs.linux.kallsyms_shape import find_kallsyms
    from realsys.linux import read_guest_kallsyms
    t = dumps["elf"]
    mem = memory_of(t)
    t0 = time.perf_counter()
    found = find_kallsyms(mem)
    seconds = time.perf_counter() - t0
    if kallsyms_via(system) == "kallsyms found by shape":
        # no kallsyms in this kernel's VMCOREINFO: Debian's -dbg System.map places the tables
        from realsys.linuxfaults import debug_system_map
        smap = {n: int(a, 16) for a, _, n in (ln.split() for ln in open(debug_system_map(system["cfg"]["kernel"])))}
        offset = _kaslr_offset(system)                  # the tables moved with the kernel (KASLR)
        assert found.tables == {k: smap[k] + offset for k in found.tables} and len(found.tables) >= 6
    else:
        named = from_vmcoreinfo(mem, t.facts["vmcoreinfo"])
        assert {k: found.tables[k] for k in named.tables} == named.tables
    assert list(zip(found.addresses.tolist(), found.types, found.names)) == read_guest_kallsyms(system["kallsyms"])
    assert found.how.startswith("kallsyms found by shape")
    print(f"\nTIMING kallsyms by shape {system['shape']}: {seconds:.2f} s")
    assert seconds < 20


def test_module_symbols_equal_the_guests_proc_kallsyms(system, dumps):
    """Each module's own symbols (module->kallsyms, types through the dump's BTF) are the
    ``[module]`` lines of the guest's /proc/kallsyms (the type's case there says exported or not)."""
    if "# CONFIG_DEBUG_INFO_BTF is not set" in _kernel_config(system):      # Debian's i386 kernel
        # no struct module layout from the dump: the module list is refused, saying why, in one line
        status, _, err, _ = _cli("modules", system["kdump"])
        assert status == 2 and "CONFIG_DEBUG_INFO_BTF" in err and len(err.splitlines()) == 1, err
        return
    from xenstructs.linux.kernel import open_kernel
    from xenstructs.linux.modsyms import module_symbols
    from xenstructs.linux.modules import for_each_module
    kernel = open_kernel(dumps["kdump"])
    ours = {(a, t.lower(), n, m.name) for m in for_each_module(kernel) for a, t, n in module_symbols(kernel, m.address)}
    truth = set()
    for line in open(system["kallsyms"], errors="replace").read().replace("\r", "").splitlines():
        parts = line.split()
        if len(parts) == 4:
            truth.add((int(parts[0], 16), parts[1].lower(), parts[2], parts[3].strip("[]")))
    assert len(truth) > 20 and ours == truth


# ---------------------------------------------------------------------------------------------
# The printk buffer in the dump against the serial console
# ---------------------------------------------------------------------------------------------

STAMP = re.compile(r"\[\s*\d+\.\d{6}\] ")


def printed(console):
    """The kernel's lines on the serial console (each from its "[seconds] " on; \r removed)."""
    out = []
    for line in console.replace("\r", "").splitlines():
        m = STAMP.search(line)
        if m:
            out.append(line[m.start():])
    return out


def as_console(record):
    """A record as Linux's console prints it (print_time: "[%5lu.%06lu] " before each line)."""
    ts = record["ts_nsec"]
    return [f"[{ts // 10**9:5d}.{ts % 10**9 // 1000:06d}] {line}" for line in record["text"].split("\n")]


@pytest.mark.parametrize("kind", ["elf", "kdump"])
def test_dmesg_is_what_the_console_printed(system, dumps, kind):
    """``dmesg`` of the dump: the printk buffer from the boot's first record (the ring holds the whole
    boot: sequence numbers from 0, none missing); the records of a level under the console's
    loglevel=3 are exactly the kernel's lines on the serial console, in order (the KMSG lines the
    guest wrote at level 2 among them); every record is printed as the console prints it."""
    from xenstructs.dumpconsole import dump_console
    c = dump_console(dumps[kind])
    records = c.details["records"]
    assert [r["seq"] for r in records] == list(range(len(records))), c.description
    assert records[0]["text"].startswith("Linux version ") and c.kind == "linux"
    shown = [line for r in records if r["level"] < 3 for line in as_console(r)]
    console = printed(system["console"])
    assert console == shown, (console[-5:], shown[-5:])
    assert [line.split("] ", 1)[1] for line in console[-KMSG:]] == [f"XENSCOPE-KMSG {i}" for i in range(1, KMSG + 1)]
    assert c.lines == [line for r in records for line in as_console(r)]
    assert "VMCOREINFO" in c.description and "printk_ringbuffer" in c.description


@pytest.fixture(scope="module")
def dask_scheduler():
    """A real Dask LocalCluster of 2 worker processes on this machine (tests/dask_cluster.py)."""
    from dask_cluster import cluster
    with cluster(2) as address:
        yield address


def test_check_on_dask_and_the_html_map_of_the_real_dumps(system, dask_scheduler, tmp_path):
    """``check`` of both real dumps on a Dask LocalCluster equals the local run (JSON, exit status and
    the HTML page); the page's address-space map of the ELF dump, rendered by Chromium, shows what
    QEMU's ``info mem`` lists (each range in its lane, user or supervisor, writable where it is) and
    nothing else; under LA57 (QEMU 7.2's ``info mem`` prints nothing) every ``info tlb`` page's
    column is drawn instead."""
    import json
    import subprocess
    import sys
    from addrmap import SLOT_SIZES, check_map
    from htmldom import dom
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    dumps = [system["elf"], system["kdump"]]

    def check(html, *extra):
        return subprocess.run([sys.executable, "-m", "xenstructs.cli", "check", *dumps, "--json", "--html",
                               str(tmp_path / html), *extra], capture_output=True, text=True, cwd=top,
                              env=dict(os.environ, PYTHONPATH=top))
    local, dask = check("local.html", "--jobs", "2"), check("dask.html", "--dask", dask_scheduler)
    assert local.returncode in (0, 1), local.stderr
    assert dask.returncode == local.returncode and dask.stdout == local.stdout, dask.stderr
    assert [r["kind"] for r in json.loads(local.stdout)] == ["linux", "linux"]

    def page(name):
        return re.sub(r"Written [0-9-]+ [0-9:]+ UTC", "Written", (tmp_path / name).read_text())
    assert page("dask.html") == page("local.html")
    sec = next(s for s in dom(tmp_path / "local.html").find("section", class_="dump")
               if s.attrs["data-dump"] == system["elf"])
    mode = system["mode"]                          # QEMU's CR4 says which paging the strips use
    if mode != "5level":
        truth = [("user" if user else "kernel", "w" if write else "r", a, b) for a, b, user, write in system["mem"]]
        binned = check_map(sec, mode, truth, lanes=("kernel", "user"), rank={"r": 1, "w": 2},
                           classify=lambda rights: "w" if "w" in rights else "r")
        print(f"\nHTML MAP {system['shape']}: {len(truth)} info mem ranges, {binned} strip(s) by column")
        return
    assert system["mem"] == []                     # QEMU 7.2 prints nothing under LA57: tlb is the truth
    size, width = SLOT_SIZES[mode], int(sec.find("rect", class_="strip")[0].attrs["width"])
    drawn = {}
    for strip in sec.find("div", class_="slot"):
        base = int(strip.attrs["data-base"], 16)
        cols = drawn.setdefault(base, set())
        for box in strip.find("rect", class_="range"):
            if box.attrs["data-lane"] == "problem":
                continue
            if "data-col-start" in box.attrs:
                cols.update(range(int(box.attrs["data-col-start"]), int(box.attrs["data-col-end"])))
            else:
                a, b = int(box.attrs["data-va-start"], 16) - base, int(box.attrs["data-va-end"], 16) - base
                cols.update(range(a * width // size, max(a * width // size + 1, -(-b * width // size))))
    for va in system["tlb"]:
        base = va - va % size
        assert (va - base) * width // size in drawn.get(base, ()), hex(va)
