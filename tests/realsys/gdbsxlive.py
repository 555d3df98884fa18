"""Everything the live tier collects on its one host (:mod:`realsys.xengdbsx`), in one pass.

    facts = collect(workdir)        # boots, collects, closes the VM; a dict (see :func:`collect`)

Order, all at one pause of the domU (``xl pause``; gdbsx's own pause comes and goes with each
session, the toolstack's stays): Xen's tools in dom0 (xenctx, xen-mfndump dump-p2m/dump-m2p, then
dump-ptes walks down from two L4s and lookup-pte walks up from a user page of the domU's sleep),
``xl dump-core`` carried out with every tool output; then real gdb with the extension on the real
gdbsx (every command, each after a mark: :mod:`rsplog`), a second session of protocol probes that
ends with ``detach``; then gdb on QEMU's gdbstub of the whole host (the Xen commands), which dumps
the machine (``monitor dump-guest-memory``) in the same stop.

What is walked: ``linux_banner`` (kernel image), its direct-map alias (``PAGE_OFFSET`` of a nokaslr
x86_64 kernel, 0xffff888000000000, + its pfn), the domU's first module (/proc/modules) from
``init_top_pgt``'s frame (its mfn from dump-p2m), ``linux_banner`` again from vCPU 0's L4
(xenctx's cr3), and the sleep's first user page, whose tables lookup-pte finds upwards.
"""
import os
import re
import subprocess
import sys
import time

from . import linux as L
from . import vm as V
from . import xengdbsx as G

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGE_OFFSET = 0xFFFF888000000000          # x86_64 4-level, nokaslr (the domU's command line)
START_KERNEL_MAP = 0xFFFFFFFF80000000
PFN_MASK = (1 << 55) - 1                  # /proc/PID/pagemap: bits 0-54
SYMBOLS = ("linux_banner", "init_top_pgt", "_text", "_etext", "xen_p2m_last_pfn", "page_offset_base")
KERNEL_MAP_BYTES = 4 << 20                # xen maps over the first 4 MiB of the kernel image


def kernel_profile():
    """``xenscope profile`` of Debian's -dbg vmlinux, made once and cached (~20 s to make)."""
    vmlinux = L.debug_vmlinux()
    out = os.path.join(V.CACHE, "profiles", f"gdbsx-{os.path.basename(vmlinux)}-{os.path.getsize(vmlinux)}.json")
    if not os.path.exists(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tmp = out + ".tmp"
        subprocess.run([sys.executable, "-m", "xenstructs.cli", "profile", vmlinux, "-o", tmp], cwd=TOP,
                       check=True, capture_output=True, timeout=900)
        os.rename(tmp, out)
    return out


def system_map(kallsyms, path):
    """A System.map (address-sorted "address type name" lines) from dom0's /proc/kallsyms."""
    lines = []
    for line in open(kallsyms, errors="replace"):
        parts = line.split()
        if len(parts) == 3:
            lines.append((int(parts[0], 16), line.strip()))
    with open(path, "w") as f:
        f.write("".join(line + "\n" for _, line in sorted(lines)))
    return path


def _judges(run, facts):
    """Xen's tools in dom0: registers, P2M, M2P, then the walks down and up."""
    out = run.tools()
    facts["vcpu0_cr3"] = int(re.search(r"cr3: ([0-9a-f]+)", out).group(1), 16)
    syms = facts["symbols"] = run.symbols(SYMBOLS)
    banner_pfn = (syms["linux_banner"] - START_KERNEL_MAP) >> 12
    root_pfn = (syms["init_top_pgt"] - START_KERNEL_MAP) >> 12
    guest = facts["guest"]
    user_va = guest["maps"][0][0]
    user_pfn = guest["pagemap"][user_va] & PFN_MASK
    lines = run.p2m([banner_pfn, root_pfn, user_pfn])
    facts.update(banner_pfn=banner_pfn, root_pfn=root_pfn, root_mfn=lines[root_pfn][0], user_va=user_va,
                 user_pfn=user_pfn, user_mfn=lines[user_pfn][0], p2m_lines=lines)
    module_va = min(address for _, address in guest["modules"].values())
    facts["kernel_vas"] = {"banner": syms["linux_banner"], "direct": PAGE_OFFSET + (banner_pfn << 12) +
                           (syms["linux_banner"] & 0xFFF), "module": module_va}
    facts["down"] = {name: run.walk_down(facts["root_mfn"], va) for name, va in facts["kernel_vas"].items()}
    facts["down"]["vcpu0_banner"] = run.walk_down(facts["vcpu0_cr3"] >> 12, syms["linux_banner"])
    facts["up"] = run.walk_up(facts["user_mfn"], user_va)


def gdbsx_commands(facts):
    """(label, command) of the main session on the real gdbsx."""
    smap, prof = facts["system_map"], facts["profile"]
    kernel = f"--profile {prof} --system-map {smap}"
    cmds = [("syms", f"set xen kernel-syms {smap}"), ("info", "xen info --json"), ("info_text", "xen info"),
            ("regs", "info registers")]
    for name, va in facts["kernel_vas"].items():
        cmds += [(f"walk_{name}", f"xen walk {va:#x} --json"), (f"again_{name}", f"xen walk {va:#x} --json")]
    cmds.append(("walk_vcpu0_banner", f"xen walk {facts['symbols']['linux_banner']:#x} --cr3 "
                                      f"{facts['vcpu0_cr3']:#x} --json"))
    for l4 in facts["user_l4s"]:
        cmds.append((f"walk_user_{l4:x}", f"xen walk {facts['user_va']:#x} --cr3 {l4 << 12:#x} --json"))
    text = facts["symbols"]["_text"]
    first = facts["user_va"]
    cmds += [("tasks", f"xen tasks {kernel} --json"), ("modules", f"xen modules {kernel} --json"),
             ("modcheck", f"xen modcheck {kernel} --json"), ("stack", f"xen stack --symbols {smap} --json"),
             ("stack_text", f"xen stack --symbols {smap}"),
             ("read_root", f"xen read-phys {facts['root_mfn'] << 12:#x} 4096 --json"),
             ("read_user", f"xen read-phys {facts['user_mfn'] << 12:#x} 256 --json"),
             ("maps_kernel", f"xen maps --range {text:#x}-{text + KERNEL_MAP_BYTES:#x} --pages --json"),
             ("maps_user", f"xen maps --cr3 {facts['user_l4s'][0] << 12:#x} --range {first:#x}-"
                           f"{first + G.PAGEMAP_PAGES * 4096:#x} --pages --json")]
    last = facts["p2m_entries"]
    for pfn in sorted({0, facts["root_pfn"], facts["user_pfn"], last - 64}):
        cmds.append((f"p2m_{pfn:x}", f"xen p2m {pfn:#x} --count 64 --json"))
    cmds += [("p2m_check", "xen p2m-check --json --limit 0"), ("p2m_check_text", "xen p2m-check")]
    return cmds


PROBES = ("?", "qC", "qAttached", "qOffsets", "qSymbol::", "qXfer:features:read:target.xml:0,fff", "vCont?",
          "Hg5", "g", "Hg0", "g", "Hc-1", "p10", "P10=00", "m0,8", "m0,0", "mffffffff81000000,800",
          "mFFFFFFFF81000000,8", "mffff800000000000,8", "Z0,ffffffff81000000,1", "z0,ffffffff81000000,1",
          "T5", "T0", "QStartNoAckMode", "qRcmd,6d6f6e", "qRcmd,706764332030", "qRcmd,7067643320")


def _gdbsx_sessions(run, facts):
    import rsplog
    connect = ["set architecture i386:x86-64"]

    def main(port):
        return rsplog.marked_session(connect + [f"target remote 127.0.0.1:{port}"], gdbsx_commands(facts))

    def probes(port):
        cmds = [(f"probe{i}", f"maintenance packet {p}") for i, p in enumerate(PROBES)] + [("detach", "detach")]
        return rsplog.marked_session(connect + [f"target remote 127.0.0.1:{port}"], cmds, timeout=300)
    started = time.time()
    (facts["gdbsx"], facts["gdbsx_log"]) = _session(run.gdbsx_session(main))
    facts["timings"]["gdbsx_session"] = time.time() - started
    (facts["probes"], facts["probes_log"]) = _session(run.gdbsx_session(probes))

    def width32(port):
        """gdbsx told the wrong width (32 on this 64-bit guest): what it answers, what xenscope says."""
        cmds = [("g", "maintenance packet g"), ("m", "maintenance packet mffffffff81000000,8"),
                ("regs", "info registers rip rsp"), ("info", "xen info --json"), ("stack", "xen stack"),
                ("detach", "detach")]
        return rsplog.marked_session(connect + [f"target remote 127.0.0.1:{port}", f"set xen kernel-syms "
                                                f"{facts['system_map']}"], cmds, timeout=300)
    (facts["width32"], facts["width32_log"]) = _session(run.gdbsx_session(width32, bits=32))


def _session(pair):
    (result, outputs, packets), stub_log = pair
    return _kept(result, outputs, packets), stub_log


def _kept(result, outputs, packets):
    """A gdb session as plain data: its output per label, the packets per label, the whole output."""
    return {"result": {"stdout": result.stdout, "stderr": result.stderr, "returncode": result.returncode},
            "outputs": outputs, "packets": packets}


def qemu_commands(facts, host_dump):
    xen = f"--xen-syms {facts['xen_syms']}"
    return [("domains", f"xen domains {xen} --json"), ("summary", f"xen frames --summary {xen} --json"),
            ("page", f"xen page {facts['vcpu0_cr3'] >> 12:#x} --count 2 {xen} --json"),
            ("page_root", f"xen page {facts['root_mfn']:#x} {xen} --json"),
            ("p2m_check", f"xen p2m-check --domain {facts['domid']} --kernel-syms {facts['system_map']} "
                          f"--cr3 {facts['vcpu0_cr3']:#x} {xen} --json --limit 0"),
            ("dump", f"monitor dump-guest-memory {host_dump}")]


def collect(workdir):
    """Boot, collect (module doc), close; a dict of what every test reads."""
    started = time.time()
    run = G.boot(workdir)
    facts = {"timings": run.timings, "domid": run.domid, "gdbsx_build": run.gdbsx, "hypervisor": run.hypervisor,
             "xen_syms": run.hypervisor["xen_syms"], "guest": G.parse_domu_console(run.domu.domu_console),
             "xen_version": run.host.xen_version, "manifest": run.domu.manifest}
    try:
        _judges(run, facts)
        facts["user_l4s"] = sorted({table for table, _, _ in facts["up"][-1]["chain"]})
        run.carry()
        facts["files"] = dict(run.files)
        facts["system_map"] = system_map(run.files["kallsyms"], os.path.join(workdir, "System.map"))
        facts["profile"] = kernel_profile()
        facts["p2m_entries"] = int(re.search(r"P2M size: = (\d+)", run.text("judge/dump-p2m.txt")).group(1))
        _gdbsx_sessions(run, facts)
        import rsplog
        facts["host_dump"] = os.path.join(workdir, "host.elf")
        t = time.time()
        result, outputs, packets = rsplog.marked_session([f"target remote 127.0.0.1:{run.qemu_port}"],
                                                         qemu_commands(facts, facts["host_dump"]), timeout=1200)
        facts["qemu"] = _kept(result, outputs, packets)
        facts["timings"]["qemu_session"] = time.time() - t
        facts["console"] = run.host.console
    finally:
        run.close()
    facts["timings"]["total"] = time.time() - started
    return facts
