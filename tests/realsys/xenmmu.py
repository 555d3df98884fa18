"""Xen PV MMU failures provoked on a real Xen host, with what Xen printed and what was asked.

    run = provoke(workdir, flavour="debug")     # or "release": Debian's own build, same version
    run["scenarios"]["cascade_l3"]              # {"report": {...}, "xen_lines": [...], "text": ...}
    run["console_path"], run["dump"]            # the whole console; QMP dump of the whole host

One boot of Xen + dom0 (:mod:`realsys.xenhost`) whose initramfs loads ``xsmmu.ko`` (built at test
time against Debian's headers of the booted kernel: :mod:`realsys.kmodule`, source in
``xsmmu/xsmmu.c``). Each scenario is one ``echo NAME > /proc/xsmmu; cat /proc/xsmmu`` in dom0's
shell: the module issues the hypercalls (``HYPERVISOR_mmuext_op``, ``HYPERVISOR_mmu_update``,
``HYPERVISOR_update_va_mapping``) and reports what it asked ("key=value" lines: mfns, slots,
entries, VAs, the machine address of each PTE, each hypercall's rc): the injected truth. What
Xen printed for a scenario is the ``(XEN)`` lines between the shell's begin and end markers (one
serial byte stream carries both, in order). After the last scenario: the page_info of every mfn a
scenario named, read by QEMU's monitor from Xen's frame table, dom0's P2M symbols from its
/proc/kallsyms, then a QMP dump of the whole machine.

The debug flavour boots :func:`realsys.xendebug.debug_hypervisor` (CONFIG_DEBUG=y from Debian's
source); the release flavour boots Debian's hypervisor package of the same version.
"""
import os
import re
import time

from . import kmodule as K
from . import vm as V
from . import xendebug as D
from . import xendomu as U
from . import xenhost as X

MODULE_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xsmmu", "xsmmu.c")
SCENARIOS = ("pin_writable_l1", "cascade_l2", "cascade_l3", "bad_l1_flags", "bad_l1_flags_update",
             "bad_l2_flags", "unpin_not_pinned", "p2m_wrong_mfn")
DOMU_SCENARIOS = ("foreign_self", "foreign_dom0")   # run by the domU on a dom0 frame
SLOT_N, SLOT_M, SLOT_K = 0x123, 0x45, 0x7        # xsmmu.c: the L2 slot -> A, L3 slot -> B, bad slot
XEN_LINE = re.compile(r"^\(XEN\) .*$", re.M)
DOMU_LOG = "/var/log/xen/console/guest-domu.log"


def parse_report(text):
    """The module's "key=value" lines as a dict (numbers as ints)."""
    report = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_0-9]+)=(\S+)", line.strip())
        if match:
            key, value = match.groups()
            try:
                report[key] = int(value, 0)
            except ValueError:
                report[key] = value
    return report


def _mfns(report):
    return sorted({value for key, value in report.items() if key.endswith("_mfn") and isinstance(value, int)})


def provoke(workdir, flavour="debug", scenarios=SCENARIOS, domu=True):
    """Boot the ``flavour`` hypervisor, run ``scenarios`` in dom0, then (``domu``) Debian's
    toolstack, a PV domU that runs :data:`DOMU_SCENARIOS` on a frame of dom0, and dom0's
    ``foreign_self`` on a frame of the domU; dump; return the run (see the module doc)."""
    started = time.time()
    hypervisor = D.debug_hypervisor() if flavour == "debug" else None
    version = hypervisor["version"] if hypervisor else D.choose_version()[0]
    module = K.build_module(MODULE_SOURCE, "xsmmu")
    code = open(module, "rb").read()
    files, modules, init, mem, xen_args = {}, (), "", 512, X.XEN_ARGS
    if domu:
        files, modules, init, _ = U.dom0_extra(version)
        files["boot/domu-initrd.gz"] = (0o100644, domu_initramfs(code))
        mem, xen_args = U.MEM_MB, X.XEN_ARGS.replace("dom0_mem=256M,max:256M",
                                                    f"dom0_mem={U.DOM0_MEM_MB}M,max:{U.DOM0_MEM_MB}M")
    files["lib/xsmmu.ko"] = (0o100644, code)
    prepared = time.time() - started
    host = X.boot_xen_host(workdir=os.path.join(workdir, "vm"), version=version, hypervisor=hypervisor,
                           mem=mem, xen_args=xen_args, extra_files=files, extra_modules=modules,
                           extra_init=init + "\ninsmod /lib/xsmmu.ko && echo XSMMU-LOADED")
    try:
        run = {"flavour": flavour, "version": version, "xen_version": host.xen_version,
               "hypervisor": hypervisor, "xen_syms": host.xen_syms_symtab, "xen_map": host.xen_map,
               "boot_seconds": host.boot_seconds, "prepare_seconds": prepared, "module": module,
               "scenarios": {}, "timings": {}}
        if "XSMMU-LOADED" not in host.console:
            raise RuntimeError(f"xsmmu.ko did not load; console tail:\n{host.console[-2000:]}")
        t = time.time()
        for name in scenarios:
            _scenario(host, run, name, f"echo {name} > /proc/xsmmu; cat /proc/xsmmu")
        run["timings"]["dom0_scenarios"] = time.time() - t
        if domu:
            _domu(host, run)
        _collect(host, run)
        t = time.time()
        run["dump"] = host.dump(os.path.join(workdir, f"xen-{flavour}.elf"))
        run["timings"]["dump"] = time.time() - t
    finally:
        host.close()
    _save(run, host.console, workdir)
    run["total_seconds"] = time.time() - started
    return run


def _scenario(host, run, name, command):
    text = host.dom0_shell(command)
    run["scenarios"][name] = {"report": parse_report(text), "text": text, "xen_lines": XEN_LINE.findall(text),
                              "domain": 0}


def _save(run, console, workdir):
    run["console"] = console
    run["console_path"] = os.path.join(workdir, f"console-{run['flavour']}.log")
    with open(run["console_path"], "w") as f:
        f.write(console)
    for name, scenario in run["scenarios"].items():
        scenario["path"] = os.path.join(workdir, f"{run['flavour']}-{name}.log")
        with open(scenario["path"], "w") as f:
            f.write(scenario["text"])


# ---------------------------------------------------------------- the domU

def domu_initramfs(module):
    """The domU's initramfs: xsmmu.ko, then each of DOMU_SCENARIOS on the dom0 frame its kernel
    command line names for it (``xsmmu_foreign_self=MFN xsmmu_foreign_dom0=MFN``), each report
    between markers, then the ready marker xendomu's ``/xs/run wait`` looks for."""
    runs = "\n".join(f'mfn=$(sed -n "s/.*xsmmu_{name}=\\([0-9a-fx]*\\).*/\\1/p" /proc/cmdline); '
                      f'echo "XSMMU-BEGIN {name}"; echo "{name} $mfn" > /proc/xsmmu; cat /proc/xsmmu; '
                      f'echo "XSMMU-END {name}"' for name in DOMU_SCENARIOS)
    init = "\n".join([
        "#!/bin/busybox sh",
        "/bin/busybox --install -s /bin",
        "mount -t proc proc /proc",
        "mount -t devtmpfs dev /dev",
        "insmod /lib/xsmmu.ko",
        runs,
        f"echo {U.DOMU_READY} $(uname -r)",
        "sleep 100000 &",
        "while true; do sleep 3600; done",
    ]) + "\n"
    return V.busybox_initramfs(init, extra={"lib": (0o40755, None), "lib/xsmmu.ko": (0o100644, module)})


def _domu(host, run):
    """Toolstack, a domU asked to map a frame of dom0, then dom0 asked to map a frame of the domU."""
    timings = run["timings"]
    targets = {"foreign_self": run["scenarios"]["bad_l1_flags_update"]["report"]["target_mfn"],
               "foreign_dom0": run["scenarios"]["pin_writable_l1"]["report"]["a_mfn"]}   # dom0's, kept
    t = time.time()
    _check(host.dom0_shell("/xs/run toolstack", timeout=90), "XS-OK toolstack")
    timings["toolstack"] = time.time() - t
    mark = len(host.console)
    t = time.time()
    extra = " ".join([U.DOMU_ARGS] + [f"xsmmu_{name}={mfn:#x}" for name, mfn in targets.items()])
    _check(host.dom0_shell(f"/usr/lib/xen-4.17/bin/xl create /etc/xen/domu.cfg 'extra=\"{extra}\"' "
                           f"&& echo XS-OK create", timeout=180), "XS-OK create")
    _check(host.dom0_shell("/xs/run wait 150", timeout=180), "XS-OK wait")
    timings["domu_create_and_scenarios"] = time.time() - t
    domid = U.parse_xl_list(host.dom0_shell("/usr/lib/xen-4.17/bin/xl list"))[U.DOMU_NAME]["id"]
    log = host.dom0_shell(f"cat {DOMU_LOG}", timeout=60).replace("\r", "")
    # the domU's mm.c lines (its boot prints others, e.g. emul-priv-op.c's RDMSR notices)
    xen = [line for line in XEN_LINE.findall(host.console[mark:].replace("\r", ""))
           if re.search(rf"\(XEN\) arch/x86/mm\.c:\d+:d{domid}v\d+ ", line)]
    # the domU ran its scenarios in order: Xen's lines up to the last naming foreign_self's frame
    # are foreign_self's, the rest foreign_dom0's
    named = [i for i, line in enumerate(xen) if re.search(rf"mfn 0*{targets['foreign_self']:x}\b", line)]
    split = named[-1] + 1 if named else 0
    for name, lines in zip(DOMU_SCENARIOS, (xen[:split], xen[split:])):
        match = re.search(rf"XSMMU-BEGIN {name}\n(.*?)XSMMU-END {name}", log, re.S)
        if not match:
            raise RuntimeError(f"the domU did not report {name}; its console:\n{log[-2000:]}")
        run["scenarios"][f"domu_{name}"] = {"report": parse_report(match.group(1)), "domain": domid,
                                           "xen_lines": lines, "text": "\n".join(lines + [match.group(1)])}
    run["domu"] = {"domid": domid, "console": log, "targets": targets, "xen_lines": xen}
    # dom0 asks for a frame of the domU with DOMID_SELF (the domU's own target page)
    domu_page = run["scenarios"]["domu_foreign_self"]["report"]["target_mfn"]
    _scenario(host, run, "foreign_self", f"echo foreign_self {domu_page:#x} > /proc/xsmmu; cat /proc/xsmmu")


def _check(out, ok):
    if ok not in out:
        raise RuntimeError(f"dom0 step failed (no {ok}):\n{out[-2000:]}")
    return out


def _collect(host, run):
    """Facts after the scenarios: page_info of every mfn named (QEMU's read of the frame table),
    dom0's P2M symbols (/proc/kallsyms) and CR3 (Xen's '0' key)."""
    pages = {}
    for scenario in run["scenarios"].values():
        for mfn in _mfns(scenario["report"]):
            pages[mfn] = host.page_info(mfn)
    run["page_info"] = pages
    kallsyms = host.dom0_shell("grep -E ' (xen_p2m_addr|xen_p2m_size|xen_max_p2m_pfn)$' /proc/kallsyms")
    run["dom0_p2m_symbols"] = {line.split()[2]: int(line.split()[0], 16) for line in kallsyms.splitlines()
                               if len(line.split()) == 3}
    run["dom0_cr3"] = host.dom0_cr3()
    run["key_q"] = host.debug_key("q")              # each domain's nr_pages/max_pages, as Xen counts them
