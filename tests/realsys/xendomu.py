"""A real PV domU made by Debian's own toolstack inside the Xen host of :mod:`realsys.xenhost`,
dumped with ``xl dump-core`` and carried out of the VM.

    d = boot_xen_with_domu(workdir)
    d.host                 # the XenHost (still running; the domU is paused)
    d.domid, d.xl_list     # the domU's id, what `xl list` printed
    d.xc_core_path         # the `xl dump-core` file (ELF ET_CORE, .note.Xen, .xen_p2m, .xen_pages)
    d.domu_console         # the domU's console (hvc0) as xenconsoled logged it
    d.dom0_system_map      # System.map of the dom0/domU kernel (see below)
    d.host_dump(path)      # QMP dump of the whole machine, domU still paused
    d.timings              # seconds per step

How: dom0's initramfs (xenhost.dom0_initramfs with extra files) carries ``xl``, ``xenstored``
(the C one), ``xen-init-dom0`` and ``xenconsoled`` from ``xen-utils-4.17`` at the hypervisor's own
Debian version, the libraries they need (found by reading DT_NEEDED recursively, taken from the
Debian packages' .debs: Xen's own libraries, glibc, libgcc_s (dlopen'ed by glibc for
pthread_cancel), libuuid, libyajl, liblzma, libzstd, zlib), the Xen device modules (privcmd,
evtchn, gntdev, gntalloc, xenfs) and virtio_blk with its dependencies (read from each module's
``.modinfo`` ``depends=``: the package has no modules.dep), Debian's kernel and a busybox
initramfs for the domU, and the xl config. On the serial console dom0 then runs /xs/run STEP:
``toolstack`` (xenstored, xen-init-dom0, xenconsoled), ``create`` (xl create), ``wait`` (the domU's
marker in xenconsoled's log), ``pause``, ``rings`` (the domU's store and console ring-refs from
xenstore, and xenstored's and xenconsoled's /dev/xen/gntdev mappings: ``d.rings``,
``d.gntdev_maps``; dom0's /proc/xen/capabilities: ``d.dom0_capabilities``), ``dump`` (xl dump-core
into dom0's RAM, then busybox ``tar`` of the core and of /proc/kallsyms onto the raw second disk,
/dev/vda). The host reads the tar back from the disk image.

System.map: Debian's kernel package ships only a placeholder System.map (the real one is in the
~860 MB -dbg package), so ``dom0_system_map`` is written from dom0's /proc/kallsyms (read as root,
nokaslr: the addresses of the very kernel the domU also boots with nokaslr), core-kernel lines only
(no ``[module]`` ones), sorted by address, in System.map's "address type name" form.
"""
import os
import re
import struct
import tarfile
import time

from . import linux as L
from . import vm as V
from . import xenhost as X

MULTIARCH = "lib/x86_64-linux-gnu"
DOMU_NAME = "domu"
DOMU_MEM_MB = 128
DOMU_READY = "XENSCOPE-DOMU-UP"
DOMU_ARGS = "console=hvc0 loglevel=4 nokaslr"



def xen_bin(release="4.17"):
    """Where Debian puts a Xen release's tools."""
    return f"/usr/lib/xen-{release}/bin"


XEN_BIN = xen_bin()


def xen_packages(release="4.17"):
    """Xen's tools and libraries of ``release``, taken at the hypervisor's Debian version (bullseye's
    4.14 still calls its xenstore library libxenstore3.0)."""
    return (f"xen-utils-{release}", "xen-utils-common", "xenstore-utils", f"libxenmisc{release}",
            "libxencall1", "libxendevicemodel1", "libxenevtchn1", "libxenforeignmemory1",
            "libxengnttab1", "libxenhypfs1", "libxentoolcore1", "libxentoollog1",
            "libxenstore3.0" if release == "4.14" else "libxenstore4")


# the C libraries they need that busybox does not bring (the newest of the Xen release's Debian
# release: trixie's tools need trixie's glibc)
OTHER_PACKAGES = ("libc6", "libgcc-s1", "libuuid1", "libyajl2", "liblzma5", "libzstd1", "zlib1g")


def programs(release="4.17"):
    """dom0's toolstack programs of ``release``."""
    x = xen_bin(release)
    return (f"{x}/xl", f"{x}/xenstored", f"{x}/xen-init-dom0", f"{x}/xenconsoled", "/usr/bin/xenstore")


PROGRAMS = programs()
XENSTORE_LINKS = ("xenstore-ls", "xenstore-read", "xenstore-list", "xenstore-write")
# not in any DT_NEEDED, dlopen'ed by glibc (pthread_cancel/pthread_exit unwind): xl aborts without
DLOPENED = ("libgcc_s.so.1",)
DOM0_MODULES = ("xen-privcmd", "xenfs", "xen-evtchn", "xen-gntdev", "xen-gntalloc",
                "virtio_pci", "virtio_blk")
# dom0 holds the ~130 MB core in RAM (a tmpfs) besides its initramfs, and xl create needs
# ~110 MB while it unpacks the domU kernel: with dom0_mem=256M the OOM killer takes xl
DOM0_MEM_MB = 384
MEM_MB = 768
DISK_MB = 256


# ---------------------------------------------------------------- ELF, read by hand

def _sections(data):
    """{name: (sh_type, offset, size, link)} of an ELF64 little-endian file."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError("not ELF64")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3a)
    hdrs = [struct.unpack_from("<IIQQQQII", data, shoff + i * shentsize) for i in range(shnum)]
    stroff = hdrs[shstrndx][4]
    out = {}
    for name, typ, _, _, off, size, link, _ in hdrs:
        end = data.index(b"\0", stroff + name)
        out[data[stroff + name:end].decode()] = (typ, off, size, link, hdrs)
    return out


def dt_needed(path):
    """DT_NEEDED sonames and PT_INTERP of an ELF64 file (what ``ldd`` would start from)."""
    data = open(path, "rb").read()
    secs = _sections(data)
    needed = []
    if ".dynamic" in secs:
        _, off, size, link, hdrs = secs[".dynamic"]
        stroff = hdrs[link][4]
        for i in range(0, size, 16):
            tag, val = struct.unpack_from("<qQ", data, off + i)
            if tag == 0:
                break
            if tag == 1:
                needed.append(data[stroff + val:data.index(b"\0", stroff + val)].decode())
    interp = None
    if ".interp" in secs:
        _, off, size, _, _ = secs[".interp"]
        interp = data[off:off + size].rstrip(b"\0").decode()
    return needed, interp


def modinfo(data):
    """A kernel module's .modinfo (``data``: its ELF bytes) as {key: [values]}."""
    _, off, size, _, _ = _sections(data)[".modinfo"]
    out = {}
    for item in data[off:off + size].split(b"\0"):
        if b"=" in item:
            k, v = item.decode(errors="replace").split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def module_closure(moddir, names):
    """Paths (relative to ``moddir``) of ``names`` and their ``depends=``, dependencies first (a
    module the kernel has built in is left out)."""
    index = {}
    for root, _, fns in os.walk(os.path.join(moddir, "kernel")):
        for fn in fns:
            base = re.sub(r"\.(xz|zst)$", "", fn)         # trixie ships .ko.xz
            if base.endswith(".ko"):
                index[base[:-3].replace("-", "_")] = os.path.relpath(os.path.join(root, base), moddir)
    builtin = set()
    if os.path.exists(os.path.join(moddir, "modules.builtin")):     # e.g. trixie's virtio_pci
        builtin = {os.path.basename(line.strip())[:-3].replace("-", "_")
                   for line in open(os.path.join(moddir, "modules.builtin")) if line.strip()}
    order, seen = [], set()

    def visit(name):
        key = name.replace("-", "_")
        if key in seen or (key in builtin and key not in index):
            return
        if key not in index:
            raise RuntimeError(f"module {name} not in {moddir} (built in? check modules.builtin)")
        seen.add(key)
        deps = modinfo(L.module_bytes(moddir, index[key])).get("depends", [""])[0]
        for d in filter(None, deps.split(",")):
            visit(d)
        order.append(index[key])

    for n in names:
        visit(n)
    return order


# ---------------------------------------------------------------- packages -> files

def package_roots(version=None, release="4.17"):
    """{package: unpacked root}: Xen's at the hypervisor's version, the others at apt's (4.17,
    bookworm: the machine's own apt) or the newest of the release's Debian release (its private
    sources list, realsys.debian)."""
    dist = X.XEN_RELEASES[release][0]
    if dist is None:
        version = version or X.xen_version()
        roots = {p: X.extract_at(p, version) for p in xen_packages(release)}
        roots.update({p: V.extract(p) for p in OTHER_PACKAGES})
        return roots
    from . import debian
    version = version or X.xen_files(release=release)["version"]
    roots = {p: debian.release_extract(dist, p, version) for p in xen_packages(release)}
    roots.update({p: debian.release_extract(dist, p) for p in OTHER_PACKAGES})
    return roots


def _resolve(root, path):
    """Follow symlinks of ``path`` (absolute, inside the package root ``root``)."""
    for _ in range(20):
        full = root + path
        if not os.path.islink(full):
            return full if os.path.isfile(full) else None
        target = os.readlink(full)
        path = target if target.startswith("/") else os.path.normpath(
            os.path.join(os.path.dirname(path), target))
    return None


def _find(roots, path):
    """(package, file) of ``path`` in the unpacked packages; also under /usr (trixie's merged /usr
    ships the dynamic loader as /usr/lib64/ld-linux-x86-64.so.2)."""
    for candidate in (path, "/usr" + path) if not path.startswith("/usr/") else (path,):
        for pkg, root in roots.items():
            full = _resolve(root, candidate)
            if full:
                return pkg, full
    return None, None


def toolstack_files(roots, programs=PROGRAMS):
    """({cpio path: (mode, bytes)}, manifest) for ``programs`` and the libraries they need.

    Libraries are resolved by soname in /lib/x86_64-linux-gnu and /usr/lib/x86_64-linux-gnu of
    the unpacked packages and shipped as regular files in /lib/x86_64-linux-gnu (the dynamic
    loader as /lib64/ld-linux-x86-64.so.2). A soname that no package provides is an error.
    """
    files, manifest, todo, libs = {}, {"programs": {}, "libraries": {}}, [], {}
    for prog in programs:
        pkg, full = _find(roots, prog)
        if not full:
            raise RuntimeError(f"{prog} is in none of {sorted(roots)}")
        files[prog.lstrip("/")] = (0o100755, open(full, "rb").read())
        manifest["programs"][prog] = pkg
        todo.append(full)
    interps = set()
    for soname in DLOPENED:
        libs.setdefault(soname, None)
    while todo:
        needed, interp = dt_needed(todo.pop())
        if interp:
            interps.add(interp)
        for so in needed:
            if so not in libs:
                libs[so] = None
                pkg, full = _find(roots, f"/{MULTIARCH}/{so}")
                if not full:
                    pkg, full = _find(roots, f"/usr/{MULTIARCH}/{so}")
                if not full:
                    raise RuntimeError(f"no package of {sorted(roots)} provides {so}")
                libs[so] = (pkg, full)
                todo.append(full)
    for so in DLOPENED:
        pkg, full = _find(roots, f"/{MULTIARCH}/{so}")
        if not full:
            raise RuntimeError(f"no package provides {so} (dlopen'ed by glibc)")
        libs[so] = (pkg, full)
    for so, (pkg, full) in sorted(libs.items()):
        files[f"{MULTIARCH}/{so}"] = (0o100755, open(full, "rb").read())
        manifest["libraries"][so] = pkg
    for interp in interps:
        pkg, full = _find(roots, interp)
        if not full:
            raise RuntimeError(f"no package provides the dynamic loader {interp}")
        files[interp.lstrip("/")] = (0o100755, open(full, "rb").read())
        manifest["libraries"][interp] = pkg
    for link in XENSTORE_LINKS:
        files[f"usr/bin/{link}"] = (0o120777, b"xenstore")
    xlconf = _resolve(roots["xen-utils-common"], "/etc/xen/xl.conf")
    if xlconf:
        files["etc/xen/xl.conf"] = (0o100644, open(xlconf, "rb").read())
    manifest["packages"] = sorted({p for p in manifest["programs"].values()} |
                                  {p for p in manifest["libraries"].values()} |
                                  ({"xen-utils-common"} if xlconf else set()))
    return files, manifest


def _dirs(paths):
    out = {}
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out["/".join(parts[:i])] = (0o40755, None)
    return out


# ---------------------------------------------------------------- domU and dom0 contents

def domu_initramfs(extra_files=None, extra_init=""):
    """The domU's initramfs; ``extra_files`` (``{path: (mode, bytes)}``) added, ``extra_init``
    (shell lines) run before the ready marker."""
    init = "\n".join([
        "#!/bin/busybox sh",
        "/bin/busybox --install -s /bin",
        "mount -t proc proc /proc",
        "mount -t devtmpfs dev /dev",
        # kernel lines at level 2 (shown under loglevel=4): the truth for dmesg of the dump-core
        "for i in 1 2 3; do echo \"<2>XENSCOPE-KMSG $i\" > /dev/kmsg; done",
        extra_init,
        f"echo {DOMU_READY} $(uname -r) $(cat /proc/cmdline)",
        "sleep 100000 &",
        "while true; do sleep 3600; done",
    ]) + "\n"
    return V.busybox_initramfs(init, extra=extra_files)


class Guest:
    """What kind of domU to make (the default: a PV one): ``kind`` (xl's ``type``), ``cpu`` (QEMU's
    ``-cpu`` for the host, None: xenhost's), ``domu_files``/``domu_init`` (see :func:`domu_initramfs`),
    ``programs`` (dom0's toolstack programs; None: :func:`programs` of the release), ``after_pause(d)`` (called once the domU is paused,
    before its dump-core), ``create_wait``, ``boot_wait``, ``dump_wait`` (seconds ``xl create``, the
    domU's ready marker and ``xl dump-core`` with the carrying out may take), ``xl_extra`` (more lines
    of the xl config), ``dump_core`` (False: no ``xl dump-core``: the caller dumps, its own way);
    ``modules`` (dom0's kernel modules, with their ``depends=``), ``domu_initrd`` (a whole initramfs
    for the domU instead of :func:`domu_initramfs`), ``extra_roots`` (``{name: directory laid out like
    /}`` where ``programs`` are also looked for, e.g. a program built here), ``extra_files`` (more
    dom0 files, ``{path: (mode, bytes)}``)."""

    def __init__(self, kind="pv", cpu=None, domu_files=None, domu_init="", programs=None,
                 after_pause=None, create_wait=180, boot_wait=150, dump_wait=300, xl_extra="",
                 dump_core=True, modules=DOM0_MODULES, domu_initrd=None, extra_roots=None, extra_files=None):
        self.kind, self.cpu, self.domu_files, self.domu_init = kind, cpu, domu_files, domu_init
        self.programs, self.after_pause, self.boot_wait = programs, after_pause, boot_wait
        self.create_wait, self.dump_wait = create_wait, dump_wait
        self.xl_extra, self.dump_core = xl_extra, dump_core
        self.modules, self.domu_initrd = modules, domu_initrd
        self.extra_roots, self.extra_files = extra_roots or {}, extra_files or {}


def xl_config(kind="pv", extra=""):
    return extra + "\n".join([
        f'name = "{DOMU_NAME}"',
        f'type = "{kind}"',
        'kernel = "/boot/vmlinuz"',
        'ramdisk = "/boot/domu-initrd.gz"',
        f'extra = "{DOMU_ARGS}"',
        f"memory = {DOMU_MEM_MB}",
        f"maxmem = {DOMU_MEM_MB}",
        "vcpus = 1",
        'on_crash = "preserve"',
        "disk = []",
        "vif = []",
    ]) + "\n"


RUN = r"""#!/bin/sh
# dom0's steps, one per call: /xs/run STEP [ARGS]
X=@XEN_BIN@
LOG=/var/log/xen/console/guest-domu.log
case "$1" in
toolstack)
    mkdir -p /var/run/xen /var/run/xenstored /var/lib/xen /var/lib/xenstored \
        /var/log/xen/console /var/lock /var/lib/xen/dump /dev/pts
    # xenconsoled gives each domU console a pty (libxl waits for its tty path in xenstore)
    grep -q " /dev/pts " /proc/mounts || mount -t devpts devpts /dev/pts
    $X/xenstored --pid-file /var/run/xen/xenstored.pid || exit 1
    for i in $(seq 200); do [ -S /var/run/xenstored/socket ] && break; usleep 50000; done
    [ -S /var/run/xenstored/socket ] || { echo "XS-FAIL xenstored socket"; exit 1; }
    $X/xen-init-dom0 2>&1 || { echo "XS-FAIL xen-init-dom0"; exit 1; }
    $X/xenconsoled --pid-file=/var/run/xen/xenconsoled.pid --log=guest \
        --log-dir=/var/log/xen/console || { echo "XS-FAIL xenconsoled"; exit 1; }
    echo "XS-OK toolstack"
    ;;
create)
    $X/xl create /etc/xen/domu.cfg 2>&1 && echo "XS-OK create"
    ;;
wait)
    for i in $(seq $2); do grep -q XENSCOPE-DOMU-UP $LOG 2>/dev/null && break; sleep 1; done
    grep -a XENSCOPE-DOMU-UP $LOG && echo "XS-OK wait"
    ;;
pause)
    $X/xl pause domu 2>&1 && $X/xl list 2>&1 && echo "XS-OK pause"
    ;;
rings)
    # the toolstack's view of the domU's rings: their frames (xenstore) and the processes mapping them
    echo "XS-RING store $(xenstore-read /local/domain/$2/store/ring-ref)" \
        "console $(xenstore-read /local/domain/$2/console/ring-ref)"
    for n in xenstored xenconsoled; do
        for p in $(pidof $n); do grep /dev/xen/gntdev /proc/$p/maps | sed "s|^|XS-MAP $n $p |"; done
    done
    echo "XS-CAPS $(cat /proc/xen/capabilities)"
    echo "XS-OK rings"
    ;;
dump)
    # the initramfs' rootfs is a tmpfs of half of dom0's RAM, mostly taken: a tmpfs of its own
    mkdir -p /out && mount -t tmpfs -o size=220m out /out && cd /out || exit 1
    $X/xl dump-core domu /out/domu.core 2>&1 || { echo "XS-FAIL dump-core"; df /out; exit 1; }
    grep -v '\[' /proc/kallsyms | sort > /out/kallsyms
    echo "XS-SIZE core $(stat -c %s domu.core) kallsyms $(stat -c %s kallsyms)"
    tar -cf /dev/vda domu.core kallsyms && sync || { echo "XS-FAIL tar"; exit 1; }
    free | grep -i mem; echo "XS-OK dump"
    ;;
*)
    echo "XS-FAIL unknown step $1"
    ;;
esac
"""


def dom0_extra(version=None, guest=None, release="4.17"):
    """(files, modules, init lines, manifest) to add to xenhost's dom0 initramfs (``release``: the
    Xen release; its Debian release's kernel is dom0's and the domU's)."""
    guest = guest or Guest()
    vmlinuz, moddir, _, kernel = L.kernel_files("x86_64", X.XEN_RELEASES[release][1])
    roots = package_roots(version, release)
    roots.update(guest.extra_roots)
    files, manifest = toolstack_files(roots, guest.programs or programs(release))
    files["boot/vmlinuz"] = (0o100644, open(vmlinuz, "rb").read())
    files["boot/domu-initrd.gz"] = (0o100644, guest.domu_initrd or domu_initramfs(guest.domu_files,
                                                                                  guest.domu_init))
    files["etc/xen/domu.cfg"] = (0o100644, xl_config(guest.kind, guest.xl_extra).encode())
    files["xs/run"] = (0o100755, RUN.replace("@XEN_BIN@", xen_bin(release)).encode())
    files.update(guest.extra_files)
    files.update(_dirs(files))
    modules = module_closure(moddir, guest.modules)
    manifest["modules"] = modules
    manifest["kernel"] = kernel
    manifest["release"] = release
    init = f"export PATH=/bin:/usr/bin:/usr/sbin:{xen_bin(release)}"
    return files, modules, init, manifest


# ---------------------------------------------------------------- the domU

class DomU:
    def __init__(self, host, workdir):
        self.host = host
        self.dir = workdir
        self.timings = {}
        self.log = {}
        self.domid = None
        self.rings = None               # {"store": mfn, "console": mfn}: xenstore's ring-refs
        self.gntdev_maps = None         # xenstored's and xenconsoled's /dev/xen/gntdev mappings
        self.dom0_capabilities = None   # dom0's /proc/xen/capabilities ("control_d")
        self.xl_list = None
        self.xl_list_after_dump = None
        self.xc_core_path = None
        self.xc_core_size_in_dom0 = None
        self.domu_console = None
        self.dom0_system_map = None
        self.manifest = None
        self.disk = None
        self.release = "4.17"           # the Xen release (realsys.xenhost.XEN_RELEASES)

    def host_dump(self, path, fmt="elf"):
        """QMP stop + dump-guest-memory of the whole machine (the domU stays paused)."""
        t = time.time()
        out = self.host.dump(path, fmt=fmt)
        self.timings["host_dump"] = time.time() - t
        return out

    def close(self):
        self.host.close()


def _step(d, name, cmd, timeout, ok):
    t = time.time()
    out = d.host.dom0_shell(cmd, timeout=timeout)
    d.timings[name] = time.time() - t
    d.log[name] = out
    if ok not in out:
        raise RuntimeError(f"dom0 step {name!r} ({cmd}) failed; it printed:\n{out}\n"
                           f"console tail:\n{d.host.console[-1500:]}")
    return out


def parse_xl_list(text):
    """`xl list` rows as {name: {"id", "mem", "vcpus", "state"}}."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([-rbpscd]{6})\s+([\d.]+)\s*$", line)
        if m:
            rows[m.group(1)] = {"id": int(m.group(2)), "mem": int(m.group(3)),
                                "vcpus": int(m.group(4)), "state": m.group(5)}
    return rows


def parse_rings(text):
    """What the ``rings`` step printed: ``({"store": mfn, "console": mfn}, [{"program", "pid",
    "start", "end"}])``: the ring-ref values xenstore holds for the domU (a PV guest's are machine
    frames) and the /dev/xen/gntdev mappings of xenstored and xenconsoled (/proc/PID/maps)."""
    m = re.search(r"XS-RING store (\d+) console (\d+)", text)
    if not m:
        raise RuntimeError(f"the rings step printed no ring-refs:\n{text}")
    maps = [{"program": p, "pid": int(pid), "start": int(a, 16), "end": int(b, 16)}
            for p, pid, a, b in re.findall(r"XS-MAP (\S+) (\d+) ([0-9a-f]+)-([0-9a-f]+) ", text)]
    return {"store": int(m.group(1)), "console": int(m.group(2))}, maps


def boot_xen_with_domu(workdir, timeout=240, version=None, mem=MEM_MB, dom0_mem=DOM0_MEM_MB,
                       guest=None, hypervisor=None, qemu_args=(), release="4.17"):
    """Boot Xen + dom0 with Debian's toolstack, create, pause and dump-core a domU (``guest``: a
    :class:`Guest`, PV by default); return a :class:`DomU` (the host keeps running, the domU paused).
    ``hypervisor``: another build of ``version`` to boot (:func:`realsys.xenhost.boot_xen_host`);
    ``qemu_args``: more QEMU arguments (devices, a gdbstub); ``release``: the Xen release
    (realsys.xenhost.XEN_RELEASES), its tools at the hypervisor's Debian version."""
    t0 = time.time()
    guest = guest or Guest()
    os.makedirs(workdir, exist_ok=True)
    files, modules, init, manifest = dom0_extra(version, guest, release)
    disk = os.path.join(workdir, "carry.img")
    if "," in disk:
        raise RuntimeError(f"QEMU -drive file= path {disk!r} has a comma")
    with open(disk, "wb") as f:
        f.truncate(DISK_MB << 20)
    t_prep = time.time() - t0
    xen_args = X.XEN_ARGS.replace("dom0_mem=256M,max:256M",
                                  f"dom0_mem={dom0_mem}M,max:{dom0_mem}M")
    host = X.boot_xen_host(workdir=os.path.join(workdir, "vm"), timeout=timeout, mem=mem,
                           version=version, xen_args=xen_args, extra_files=files,
                           extra_modules=modules, extra_init=init, hypervisor=hypervisor, release=release,
                           qemu_args=["-drive", f"file={disk},if=virtio,format=raw", *qemu_args],
                           **({"cpu": guest.cpu} if guest.cpu else {}))
    d = DomU(host, workdir)
    d.manifest, d.disk, d.release = manifest, disk, release
    d.timings["prepare"] = t_prep
    d.timings["boot_xen_dom0"] = host.boot_seconds
    d.initramfs_bytes = os.path.getsize(os.path.join(workdir, "vm", "dom0-initrd.gz"))
    try:
        _step(d, "toolstack", "/xs/run toolstack", 90, "XS-OK toolstack")
        _step(d, "create", "/xs/run create", guest.create_wait, "XS-OK create")
        _step(d, "domu_boot", f"/xs/run wait {guest.boot_wait}", guest.boot_wait + 30, "XS-OK wait")
        d.domu_console = host.dom0_shell("cat /var/log/xen/console/guest-domu.log", timeout=60)
        out = _step(d, "pause", "/xs/run pause", 60, "XS-OK pause")
        d.xl_list = out
        rows = parse_xl_list(out)
        if DOMU_NAME not in rows:
            raise RuntimeError(f"`xl list` shows no {DOMU_NAME}:\n{out}")
        d.domid = rows[DOMU_NAME]["id"]
        out = _step(d, "rings", f"/xs/run rings {d.domid}", 60, "XS-OK rings")
        d.rings, d.gntdev_maps = parse_rings(out)
        m = re.search(r"XS-CAPS (.*)", out)
        d.dom0_capabilities = m.group(1).strip() if m else ""
        if guest.after_pause:
            guest.after_pause(d)
        if not guest.dump_core:
            d.timings["total"] = time.time() - t0
            return d
        out = _step(d, "dump_core", "/xs/run dump", guest.dump_wait, "XS-OK dump")
        m = re.search(r"XS-SIZE core (\d+) kallsyms (\d+)", out)
        d.xc_core_size_in_dom0 = int(m.group(1)) if m else None
        # xl dump-core neither pauses nor unpauses: the domU must still be paused
        d.xl_list_after_dump = _step(d, "list", f"{xen_bin(release)}/xl list", 60, "Domain-0")
        state = parse_xl_list(d.xl_list_after_dump).get(DOMU_NAME, {}).get("state", "")
        if "p" not in state:
            raise RuntimeError(f"{DOMU_NAME} is not paused after dump-core:\n"
                               f"{d.xl_list_after_dump}")
        t = time.time()
        _carry_out(d)
        d.timings["carry_out"] = time.time() - t
    except BaseException:
        host.close()
        raise
    d.timings["total"] = time.time() - t0
    return d


def _carry_out(d):
    """Read the tar dom0 wrote onto the raw disk: the core and the System.map."""
    with tarfile.open(d.disk, "r:") as tar:
        names = tar.getnames()
        for want in ("domu.core", "kallsyms"):
            if want not in names:
                raise RuntimeError(f"the disk's tar holds {names}, no {want}")
        core = os.path.join(d.dir, "domu.core")
        with tar.extractfile("domu.core") as src, open(core, "wb") as dst:
            while True:
                b = src.read(1 << 20)
                if not b:
                    break
                dst.write(b)
        syms = tar.extractfile("kallsyms").read().decode(errors="replace")
    if d.xc_core_size_in_dom0 is not None and os.path.getsize(core) != d.xc_core_size_in_dom0:
        raise RuntimeError(f"carried-out core has {os.path.getsize(core)} bytes, dom0 said "
                           f"{d.xc_core_size_in_dom0}")
    d.xc_core_path = core
    lines = []
    for line in syms.splitlines():
        parts = line.split()
        if len(parts) == 3:
            lines.append((int(parts[0], 16), line))
    d.dom0_system_map = os.path.join(d.dir, f"System.map-{d.manifest['kernel']}")
    with open(d.dom0_system_map, "w") as f:
        f.write("".join(line + "\n" for _, line in sorted(lines)))
