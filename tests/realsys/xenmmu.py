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
from . import xendebug as D
from . import xenhost as X

MODULE_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xsmmu", "xsmmu.c")
SCENARIOS = ("pin_writable_l1", "cascade_l2", "cascade_l3", "bad_l1_flags", "bad_l1_flags_update",
             "bad_l2_flags", "unpin_not_pinned", "p2m_wrong_mfn")
SLOT_N, SLOT_M, SLOT_K = 0x123, 0x45, 0x7        # xsmmu.c: the L2 slot -> A, L3 slot -> B, bad slot
XEN_LINE = re.compile(r"^\(XEN\) .*$", re.M)


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


def provoke(workdir, flavour="debug", scenarios=SCENARIOS):
    """Boot the ``flavour`` hypervisor, run ``scenarios``, dump; return the run (see module doc)."""
    started = time.time()
    hypervisor = D.debug_hypervisor() if flavour == "debug" else None
    version = hypervisor["version"] if hypervisor else D.choose_version()[0]
    module = K.build_module(MODULE_SOURCE, "xsmmu")
    prepared = time.time() - started
    host = X.boot_xen_host(workdir=os.path.join(workdir, "vm"), version=version, hypervisor=hypervisor,
                           extra_files={"lib/xsmmu.ko": (0o100644, open(module, "rb").read())},
                           extra_init="insmod /lib/xsmmu.ko && echo XSMMU-LOADED")
    try:
        run = {"flavour": flavour, "version": version, "xen_version": host.xen_version,
               "hypervisor": hypervisor, "xen_syms": host.xen_syms_symtab, "xen_map": host.xen_map,
               "boot_seconds": host.boot_seconds, "prepare_seconds": prepared, "module": module,
               "scenarios": {}}
        if "XSMMU-LOADED" not in host.console:
            raise RuntimeError(f"xsmmu.ko did not load; console tail:\n{host.console[-2000:]}")
        t = time.time()
        for name in scenarios:
            text = host.dom0_shell(f"echo {name} > /proc/xsmmu; cat /proc/xsmmu")
            run["scenarios"][name] = {"report": parse_report(text), "text": text,
                                      "xen_lines": XEN_LINE.findall(text)}
        run["scenario_seconds"] = time.time() - t
        _collect(host, run)
        t = time.time()
        run["dump"] = host.dump(os.path.join(workdir, f"xen-{flavour}.elf"))
        run["dump_seconds"] = time.time() - t
    finally:
        host.close()
    run["console"] = host.console
    run["console_path"] = os.path.join(workdir, f"console-{flavour}.log")
    with open(run["console_path"], "w") as f:
        f.write(run["console"])
    for name, scenario in run["scenarios"].items():
        scenario["path"] = os.path.join(workdir, f"{flavour}-{name}.log")
        with open(scenario["path"], "w") as f:
            f.write(scenario["text"])
    run["total_seconds"] = time.time() - started
    return run


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
