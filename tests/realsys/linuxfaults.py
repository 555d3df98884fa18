"""Real kernel page faults: Debian's x86_64 kernel under QEMU (TCG, ``-cpu max``: SMEP, SMAP, LA57)
provokes one fault of a chosen class with a test module, panics on the oops and is dumped.

    ko = faultmod_ko()                      # built once against linux-headers-<abi>-amd64, cached
    case = provoke("smap", workdir)         # boot, fault, panic, dump: a FaultCase

The module (``faultmod/faultmod.c``) is built at test time against Debian's own headers of the
booted kernel (``linux-headers-<abi>-amd64``, ``-common`` and ``linux-kbuild``, fetched with
``apt-get download`` and unpacked into the cache: nothing is installed); the .ko is cached keyed by
the kernel release and the hash of the module's source. The guest runs
``echo CLASS > /proc/xenscope_fault`` from its init shell, with ``oops=panic`` (sets panic_on_oops); QEMU's pvpanic
device (``-action panic=pause``) stops the machine inside ``panic()`` before it re-enables
interrupts, so CPU 0's registers and stack in the dump are the panic path's, on the stack of the
task that oopsed. The truth kept for the tests is what the guest printed: its console (the oops)
and the module's own marker line with the state it injected.
"""
import glob
import hashlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

from . import vm as V
from .linux import kernel_files, boot_linux

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "faultmod")
# class -> extra kernel arguments: -cpu max has LA57, so half the classes boot 4-level (no5lvl)
CLASSES = {"smap": "", "smep": "no5lvl", "nx": "", "rodata": "no5lvl", "notpresent": "", "reserved": "no5lvl"}
GO = "XENSCOPE-FAULT-GO"
MARK = "XENSCOPE-FAULTMOD"
PVPANIC = ("kernel/drivers/misc/pvpanic/pvpanic.ko", "kernel/drivers/misc/pvpanic/pvpanic-mmio.ko")


def _headers_packages(release):
    """The Debian packages a module build needs for ``release`` (e.g. 6.1.0-57-amd64)."""
    abi, _, flavour = release.rpartition("-")
    series = ".".join(abi.split(".")[:2])
    return [f"linux-headers-{release}", f"linux-headers-{abi}-common", f"linux-kbuild-{series}"]


def headers_tree(release):
    """Debian's headers for ``release`` unpacked (with linux-kbuild) into one cached tree; returns
    the build directory (``usr/src/linux-headers-<release>``). Its Makefile includes the -common
    tree by an absolute /usr/src path: rewritten to point inside the tree."""
    out = os.path.join(V.CACHE, "headers", release)
    build = os.path.join(out, "usr", "src", f"linux-headers-{release}")
    if os.path.isdir(build):
        return build
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for package in _headers_packages(release):
        V.sh("dpkg-deb", "-x", V.deb(package), tmp)
    makefile = os.path.join(tmp, "usr", "src", f"linux-headers-{release}", "Makefile")
    text = open(makefile).read()
    text = re.sub(r"^include /usr/src/", "include " + os.path.join(out, "usr", "src", ""), text, flags=re.M)
    open(makefile, "w").write(text)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    os.rename(tmp, out)
    return build


def _source_hash():
    digest = hashlib.sha256()
    for name in sorted(os.listdir(SOURCE)):
        digest.update(name.encode() + b"\0" + open(os.path.join(SOURCE, name), "rb").read())
    return digest.hexdigest()[:16]


def faultmod_ko():
    """The test module built against the booted kernel's headers; cached by release and source hash."""
    release = kernel_files("x86_64")[3]
    out = os.path.join(V.CACHE, "faultmod", f"{release}-{_source_hash()}")
    ko = os.path.join(out, "faultmod.ko")
    if os.path.exists(ko):
        return ko
    build = headers_tree(release)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(SOURCE, tmp)
    r = subprocess.run(["make", "-C", build, f"M={tmp}", "modules"], capture_output=True, text=True)
    if r.returncode != 0 or not os.path.exists(os.path.join(tmp, "faultmod.ko")):
        raise RuntimeError(f"building faultmod.ko failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    os.rename(tmp, out)
    return ko


@dataclass
class FaultCase:
    """One provoked fault: the dump, the console log beside it (``<dump stem>.log``), the module's
    kallsyms lines (from the guest's /proc/kallsyms before the fault), the marker's fields, and
    what the boot and the fault took."""
    name: str
    dump: str
    log: str
    console: str
    kallsyms: str
    marker: dict
    seconds: float


def _marker(console, name):
    """The module's ``XENSCOPE-FAULTMOD class=NAME k=v ...`` line as a dict of strings."""
    for line in console.splitlines():
        if f"{MARK} class={name} " in line and "did not fault" not in line:
            text = line[line.index(MARK) + len(MARK):]
            return dict(token.split("=", 1) for token in text.split() if "=" in token)
    raise RuntimeError(f"no {MARK} line for {name} on the console")


def _wait_panicked(vm, timeout):
    """Wait until QEMU reports the guest panicked (pvpanic); the console tail on failure."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        vm.read_console()
        if vm.qmp("query-status")["status"] == "guest-panicked":
            return
        if b"did not fault" in vm.console or vm.proc.poll() is not None:
            break
        time.sleep(0.2)
    tail = vm.read_console()[-3000:].decode(errors="replace")
    raise RuntimeError(f"the guest did not panic in {timeout} s; console tail:\n{tail}")


def provoke(name, workdir, extra_append="", timeout=300):
    """Boot, have the module provoke fault ``name``, wait for the panic, dump; a :class:`FaultCase`.

    ``extra_append``: more kernel arguments (e.g. ``no5lvl`` for 4-level paging on ``-cpu max``).
    """
    ko = faultmod_ko()
    init = ("echo KSYMS-BEGIN; grep '\\[faultmod\\]' /proc/kallsyms; echo KSYMS-END; "
            f"echo {GO}; sh -c 'echo {name} > /proc/xenscope_fault'")
    t0 = time.time()
    vm = boot_linux("x86_64", cpu="max", modules=PVPANIC + (ko,), extra_init=init, ready=GO,
                    extra_append=" ".join(filter(None, ["oops=panic", "panic=0", extra_append])),
                    qemu_args=["-device", "pvpanic", "-action", "panic=pause"], timeout=timeout)
    try:
        _wait_panicked(vm, timeout)
        dump = os.path.join(workdir, f"{name}.elf")
        vm.qmp("dump-guest-memory", paging=False, protocol=f"file:{dump}")
        console = vm.read_console().decode(errors="replace").replace("\r\n", "\n")
    finally:
        vm.close()
    log = os.path.join(workdir, f"{name}.log")
    with open(log, "w") as f:
        f.write(console)
    syms = re.search(r"KSYMS-BEGIN\n(.*?)KSYMS-END", console, re.S).group(1)
    return FaultCase(name=name, dump=dump, log=log, console=console, kallsyms=syms,
                     marker=_marker(console, name), seconds=time.time() - t0)


def debug_system_map(kernel=None):
    """Debian's real System.map of the booted kernel (the image package ships a stub): extracted
    once from its -dbg package, which lists it before the vmlinux (tar stops there)."""
    from .linux import DEFAULT_KERNEL, KERNELS, debug_deb
    release = kernel_files(KERNELS[kernel or DEFAULT_KERNEL["x86_64"]].arch, kernel)[3]
    out = os.path.join(V.CACHE, "system-map", f"System.map-{release}")
    if os.path.exists(out):
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    member = f"./usr/lib/debug/boot/System.map-{release}"
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", debug_deb(kernel)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    with open(out + ".tmp", "wb") as f:
        subprocess.run(["tar", "-x", "-O", "--occurrence=1", member], stdin=tar.stdout, stdout=f, check=True)
    tar.stdout.close()
    tar.wait()
    if os.path.getsize(out + ".tmp") == 0:
        raise RuntimeError(f"no {member} in the -dbg package")
    os.rename(out + ".tmp", out)
    return out


def provoke_all(workdir, jobs=2):
    """Every class of :data:`CLASSES`, ``jobs`` guests side by side; ``{name: FaultCase}``."""
    from concurrent.futures import ThreadPoolExecutor
    faultmod_ko()                      # build once, before the guests race for it
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {name: pool.submit(provoke, name, workdir, extra) for name, extra in CLASSES.items()}
        return {name: future.result() for name, future in futures.items()}


def cleanup(cases):
    for case in cases:
        for path in glob.glob(os.path.splitext(case.dump)[0] + ".*"):
            os.unlink(path)


# --- what the kernel printed: the truth, read without xenscope -----------------------------

_STAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
_FRAME = re.compile(r"^\s*(\? )?(\S+\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[\w+\])?)\s*$")
_KERNEL_LINES = {
    "address": re.compile(r"BUG: (?:unable to handle page fault for address|kernel NULL pointer dereference, "
                          r"address): ([0-9a-f]+)"),
    "access": re.compile(r"#PF: (supervisor|user) (read access|write access|instruction fetch) in (kernel|user) mode"),
    "error": re.compile(r"#PF: error_code\(0x([0-9a-f]+)\) - (.+)$"),
    "walk": re.compile(r"^(PGD [0-9a-f]+.*)$"),
    "rip": re.compile(r"^RIP: ([0-9a-f]{4}):(.+)$"),
    "rsp": re.compile(r"^RSP: ([0-9a-f]{4}):([0-9a-f]+) EFLAGS: ([0-9a-f]+)"),
    "cr": re.compile(r"^CR2: ([0-9a-f]+) CR3: ([0-9a-f]+) CR4: ([0-9a-f]+)"),
    "special": re.compile(r"^(kernel tried to execute NX-protected page|unable to execute userspace code \(SMEP\?\))"),
    "panic": re.compile(r"^Kernel panic - not syncing: (.+)$"),
}


def kernel_report(console):
    """The first oops on ``console`` as the kernel printed it: the faulting address, the access
    line, the error code and the kernel's class text, the page-table dump (``{"PGD": v, ...}``),
    RIP (``cs``, ``rip`` text), RSP and EFLAGS, CR2/CR3/CR4, the NX/SMEP line, the panic reason
    and the Call Trace (``[(unreliable, "func+0xoff/0xsize [mod]")]``, in the kernel's order)."""
    out, inside = {"trace": []}, False
    for raw in console.splitlines():
        line = _STAMP.sub("", raw.rstrip())
        if line.startswith("Call Trace:") and "trace_done" not in out:
            inside = True
            continue
        if inside:
            if "</TASK>" in line:
                inside, out["trace_done"] = False, True
            elif _FRAME.match(line):
                m = _FRAME.match(line)
                out["trace"].append((bool(m.group(1)), m.group(2)))
            continue
        for name, regex in _KERNEL_LINES.items():
            m = regex.search(line)
            if m and name not in out:
                out[name] = m.groups()
    walk = out.get("walk", ("",))[0].split()
    out["entries"] = {walk[i]: int(walk[i + 1], 16) for i in range(0, len(walk) - 1, 2)}
    return out


def kernel_class(report):
    """The fault class from the kernel's own lines alone (what it printed, not what we injected):
    its NX/SMEP line, the error code's P/RSVD/W bits, and a supervisor read of a user address with
    P=1 (SMAP: the kernel prints no line of its own for it)."""
    error = int(report["error"][0], 16)
    special = report.get("special", ("",))[0]
    if special.startswith("unable to execute userspace code"):
        return "smep"
    if special.startswith("kernel tried to execute NX-protected"):
        return "nx"
    if error & 0x8:
        return "reserved"
    if not error & 0x1:
        return "notpresent"
    if error & 0x2:
        return "rodata"
    if int(report["address"][0], 16) < (1 << 63):
        return "smap"
    raise AssertionError(f"no class for the kernel's lines {report}")
