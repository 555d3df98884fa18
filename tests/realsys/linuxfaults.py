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
CLASSES = ("smap", "smep", "nx", "rodata", "notpresent", "reserved")
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


def system_map():
    """Debian's System.map of the booted kernel (from the image package)."""
    return kernel_files("x86_64")[2]


def cleanup(cases):
    for case in cases:
        for path in glob.glob(os.path.splitext(case.dump)[0] + ".*"):
            os.unlink(path)
