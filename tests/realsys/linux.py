"""Boot Debian's own kernels under QEMU (TCG) with a busybox initramfs, ready for truth and dumps.

    vm = boot_linux("x86_64", la57=True)     # returns a running, booted VM (see vm.VM)
    vm.qmp("stop"); vm.hmp("info tlb"); vm.qmp("dump-guest-memory", ...)

The initramfs loads ``qemu_fw_cfg`` (so the guest hands its VMCOREINFO to QEMU's ``-device
vmcoreinfo``, which then lands in the dumps), starts a few processes, and prints a marker.
"""
import collections
import functools
import glob
import os
import subprocess

from . import vm as V

READY = "XENSCOPE-READY"
ARCHES = {
    # arch: (QEMU binary, kernel metapackage, busybox package)
    "x86_64": ("qemu-system-x86_64", "linux-image-amd64", None),
    "i386": ("qemu-system-i386", "linux-image-686-pae:i386", "busybox-static:i386"),
}
# Debian's kernel series this tier boots: name -> Kernel(arch, Debian release or None for the
# machine's own apt sources (bookworm), metapackage, pae, version). Other releases come through
# realsys.debian's private sources list. ``pae`` False: Debian's non-PAE i386 kernel
# (linux-image-686), which never sets CR4.PAE: real 2-level paging. ``version``: the metapackage's
# version to follow (None: the release's newest). Trixie ships no i386 kernel (its lists know no
# linux-image-686*:i386), so 6.12 is x86_64 only. Bullseye's i386 kernels are pinned to its last
# point release's 5.10.223-1 (ABI 5.10.0-32): bullseye-security's newer 5.10.262-1 i386 files
# (image and -dbg) are listed but not served by deb.debian.org as this machine reaches it (404).
Kernel = collections.namedtuple("Kernel", "arch release meta pae version", defaults=(True, None))
KERNELS = {
    "6.1": Kernel("x86_64", None, "linux-image-amd64"),
    "6.1-pae": Kernel("i386", None, "linux-image-686-pae:i386"),
    "6.1-686": Kernel("i386", None, "linux-image-686:i386", pae=False),
    "5.10": Kernel("x86_64", "bullseye", "linux-image-amd64"),
    "5.10-pae": Kernel("i386", "bullseye", "linux-image-686-pae:i386", version="5.10.223-1"),
    "5.10-686": Kernel("i386", "bullseye", "linux-image-686:i386", pae=False, version="5.10.223-1"),
    "6.12": Kernel("x86_64", "trixie", "linux-image-amd64"),
}
DEFAULT_KERNEL = {"x86_64": "6.1", "i386": "6.1-pae"}


def kernel_root(arch, kernel=None):
    """The unpacked image package of ``kernel`` (a :data:`KERNELS` name; by default the arch's
    bookworm kernel)."""
    karch, release, meta, _, version = KERNELS[kernel or DEFAULT_KERNEL[arch]]
    if karch != arch:
        raise ValueError(f"kernel {kernel} is {karch}, not {arch}")
    if release is None:
        return V.extract(V.kernel_package(meta))
    from . import debian
    return debian.release_extract(release, meta, version)


@functools.lru_cache(maxsize=None)
def kernel_files(arch, kernel=None):
    """(vmlinuz path, modules dir, System.map path, release) of Debian's kernel for ``arch``
    (``kernel``: a :data:`KERNELS` name, by default bookworm's). Found once per process: following
    a metapackage asks apt (about 6 s for another release's private lists), and tests ask often."""
    root = kernel_root(arch, kernel)
    vmlinuz = sorted(glob.glob(os.path.join(root, "boot", "vmlinuz-*")))[0]
    release = os.path.basename(vmlinuz)[len("vmlinuz-"):]
    moddir = os.path.join(root, "lib", "modules", release)
    if not os.path.isdir(moddir):                  # trixie's merged /usr: /usr/lib/modules
        moddir = os.path.join(root, "usr", "lib", "modules", release)
    return vmlinuz, moddir, os.path.join(root, "boot", f"System.map-{release}"), release


def busybox(arch):
    pkg = ARCHES[arch][2]
    if pkg is None:
        return "/bin/busybox"
    return os.path.join(V.extract(pkg), "bin", "busybox")


def module_bytes(moddir, rel):
    """The ELF of a module (``rel`` relative to ``moddir``, or absolute), decompressed when the
    package ships it as ``.ko.xz`` (trixie) or ``.ko.zst``: busybox's insmod hands the file to
    init_module(), which takes an ELF."""
    import lzma
    path = os.path.join(moddir, rel)
    if os.path.exists(path):
        return open(path, "rb").read()
    if os.path.exists(path + ".xz"):
        return lzma.decompress(open(path + ".xz", "rb").read())
    if os.path.exists(path + ".zst"):
        return subprocess.run(["zstd", "-dc", path + ".zst"], check=True, capture_output=True).stdout
    raise FileNotFoundError(path)


def initramfs(arch, modules=(), extra_init="", kernel=None):
    """An initramfs for ``arch`` that insmods ``modules`` (paths relative to the modules dir)."""
    _, moddir, _, _ = kernel_files(arch, kernel)
    files = {"lib": (0o40755, None)}
    lines = []
    for i, rel in enumerate(("kernel/drivers/firmware/qemu_fw_cfg.ko",) + tuple(modules)):
        name = f"lib/m{i}-{os.path.basename(rel)}"
        files[name] = (0o100644, module_bytes(moddir, rel))
        lines.append(f"insmod /{name}")
    init = "\n".join([
        "#!/bin/busybox sh",
        "/bin/busybox --install -s /bin",
        "mount -t proc proc /proc",
        "mount -t sysfs sys /sys",
        # /dev/null for the shell's background jobs (their stdin): under trixie's 6.12 "sleep &"
        # fails ("can't open '/dev/null'"); bookworm's guests stay as they were (a mount changes
        # where the fault module's page lands: its nx class needs a 4 KiB direct-map page)
        "mount -t devtmpfs dev /dev" if KERNELS[kernel or DEFAULT_KERNEL[arch]].release == "trixie" else "",
        *lines,
        # a non-interactive shell's background job opens /dev/null for its stdin: without it the
        # sleeps die at once ("can't open '/dev/null'")
        "[ -e /dev/null ] || mknod /dev/null c 1 3",
        "sleep 100000 &",
        "sleep 100001 &",
        # tests list the guest's processes: wait (at most 10 s) until both sleeps have exec'd (a
        # loaded host can catch a forked child still named sh)
        "n=0; while [ $n -lt 100 ] && [ $(cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^sleep$') -lt 2 ]; "
        "do sleep 0.1; n=$((n+1)); done",
        "cat /proc/self/maps > /dev/null",
        extra_init,
        f"echo {READY}",
        "exec sh",
    ]) + "\n"
    bb = open(busybox(arch), "rb").read()
    base = V.busybox_initramfs(init, extra=files)
    return base if arch == "x86_64" else V.newc(_with_busybox(init, files, bb))


def _with_busybox(init, files, bb):
    out = {"bin": (0o40755, None), "proc": (0o40755, None), "sys": (0o40755, None),
           "dev": (0o40755, None), "tmp": (0o40755, None),
           "bin/busybox": (0o100755, bb), "init": (0o100755, init.encode())}
    out.update(files)
    return out


def boot_linux(arch="x86_64", la57=False, kaslr=False, pti=False, mem=256, modules=(),
               gdb_port=None, extra_append="", cpu=None, timeout=240, extra_init="", ready=READY,
               qemu_args=(), kernel=None):
    """Boot Debian's kernel for ``arch``; return the VM once the console printed ``ready`` (by
    default the initramfs's marker, printed after ``extra_init``). ``modules``: paths relative to
    the kernel's modules dir, or absolute; ``qemu_args``: more QEMU arguments; ``kernel``: a
    :data:`KERNELS` name (by default bookworm's kernel for ``arch``)."""
    qemu = ARCHES[arch][0]
    vmlinuz, _, _, _ = kernel_files(arch, kernel)
    v = None
    workdir = V.tempfile.mkdtemp(prefix="xenscope-vm-")
    rd = os.path.join(workdir, "initrd.gz")
    with open(rd, "wb") as f:
        f.write(initramfs(arch, modules, extra_init, kernel))
    append = ["console=ttyS0", "panic=-1", "quiet", "loglevel=3"]
    append.append("kaslr" if kaslr else "nokaslr")
    append.append("pti=on" if pti else "pti=off")
    if extra_append:
        append.append(extra_append)
    if cpu is None:
        cpu = "qemu64,+la57" if la57 else ("qemu64" if arch == "x86_64" else "qemu32,+pae,+nx")
        if not KERNELS[kernel or DEFAULT_KERNEL[arch]].pae:
            # the non-PAE kernel never sets CR4.PAE; qemu32 without PAE (and so without NX, which
            # only PAE entries carry) is the CPU it was built for, and keeps QEMU's info tlb
            # printing 2-level entries
            cpu = "qemu32,-pae"
    args = ["-accel", "tcg", "-m", str(mem), "-cpu", cpu, "-kernel", vmlinuz, "-initrd", rd,
            "-append", " ".join(append), "-device", "vmcoreinfo"]
    if gdb_port is not None:
        args += ["-gdb", f"tcp:127.0.0.1:{gdb_port}"]
    v = V.VM(qemu, args + list(qemu_args), workdir=workdir)
    try:
        v.boot_seconds = v.wait_for(ready, timeout=timeout)
    except BaseException:
        v.close()
        raise
    return v


def debug_deb(kernel=None):
    """The cached -dbg .deb of a kernel of :data:`KERNELS` (by default bookworm's x86_64 one):
    Debian's vmlinux with DWARF and its real System.map; ~600-900 MB."""
    arch, dist = KERNELS[kernel or DEFAULT_KERNEL["x86_64"]][:2]
    _, _, _, release = kernel_files(arch, kernel)
    package = f"linux-image-{release}-dbg" + (":i386" if arch == "i386" else "")
    if dist is None:
        return V.deb(package)
    from . import debian
    return debian.release_deb(dist, package)


def debug_vmlinux(kernel=None):
    """Debian's vmlinux with DWARF for the booted kernel: extracted once from the -dbg package."""
    _, _, _, release = kernel_files(KERNELS[kernel or DEFAULT_KERNEL["x86_64"]].arch, kernel)
    out = os.path.join(V.CACHE, "vmlinux", f"vmlinux-{release}")
    if not os.path.exists(out):
        deb = debug_deb(kernel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tmp = out + ".tmp"
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-O", f"./usr/lib/debug/boot/vmlinux-{release}"], stdin=tar.stdout,
                       stdout=open(tmp, "wb"), check=True)
        tar.wait()
        os.rename(tmp, out)
    return out


# The guest's own kallsyms and process list, for tests that judge symbols and tasks read from dumps:
# /proc/kallsyms goes out on a second serial port into a file (4 MB in a few seconds), the process
# list on the console between markers.
# The listing waits (at most 10 s) until the two sleeps the initramfs forked have exec'd: a loaded
# host can catch a forked child still named sh.
KALLSYMS_INIT = ("[ -e /dev/ttyS1 ] || mknod /dev/ttyS1 c 4 65; cat /proc/kallsyms > /dev/ttyS1; n=0; while [ $n -lt 100 ] && "
                 "[ $(cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^sleep$') -lt 2 ]; do sleep 0.1; "
                 "n=$((n+1)); done; echo PIDS-BEGIN; "
                 "for p in /proc/[0-9]*; do echo ${p#/proc/} $(cat $p/comm); done; echo PIDS-END")


def kallsyms_serial(path):
    """QEMU arguments that write the guest's second serial port (ttyS1) to ``path``."""
    return ["-serial", f"file:{path}"]


def read_guest_kallsyms(path):
    """``[(address, type, name)]`` of the kernel's own lines of a /proc/kallsyms written by
    :data:`KALLSYMS_INIT` (module lines, ``[name]``, left out), in the file's order."""
    out = []
    for line in open(path, errors="replace").read().replace("\r", "").splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append((int(parts[0], 16), parts[1], parts[2]))
    return out


def guest_pids(console):
    """``{pid: comm}`` the guest listed between PIDS-BEGIN and PIDS-END."""
    import re
    m = re.search(r"PIDS-BEGIN\r?\n(.*?)PIDS-END", console, re.S)
    return {int(ln.split()[0]): ln.split()[1] for ln in m.group(1).splitlines() if len(ln.split()) == 2}


def debug_profile(kernel=None):
    """``xenscope profile`` of Debian's -dbg vmlinux (DWARF), made once (about 40 s) and cached."""
    import hashlib
    import json
    import sys
    from xenstructs.linux.profile import MEMBER_SIZES, WANTED
    _, _, _, release = kernel_files(KERNELS[kernel or DEFAULT_KERNEL["x86_64"]].arch, kernel)
    wanted = hashlib.sha1(json.dumps([WANTED, MEMBER_SIZES], sort_keys=True).encode()).hexdigest()[:10]
    out = os.path.join(V.CACHE, "profiles", f"profile-{release}-{wanted}.json")   # what xenscope asks
    if not os.path.exists(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        tmp = out + f".{os.getpid()}.tmp"
        subprocess.run([sys.executable, "-m", "xenstructs.cli", "profile", debug_vmlinux(kernel), "-o", tmp],
                       check=True, cwd=top, capture_output=True, timeout=900)
        os.rename(tmp, out)
    return out


def comm_matches(proc_comm, task_comm):
    """Is ``task_comm`` (task_struct.comm, read from a dump) the task whose /proc/PID/comm the guest
    printed as ``proc_comm``? /proc shows comm (at most 15 characters), and for a workqueue worker
    (wq_worker_comm) the comm followed by "-desc" or "+desc"; rescuers are "kworker/R-name" (6.9+)
    with no suffix."""
    if proc_comm[:15] == task_comm:
        return True
    rest = proc_comm[len(task_comm):]
    return proc_comm.startswith("kworker/") and proc_comm.startswith(task_comm) and rest[:1] in ("-", "+")
