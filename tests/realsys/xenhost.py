"""Boot Debian's Xen 4.17 with a PV dom0 under QEMU (TCG), for truth about a real hypervisor.

    host = boot_xen_host()                  # Xen + dom0 (Debian's kernel, busybox initramfs)
    host.debug_key("q")                     # what Xen prints for a debug key
    parse_q(host.debug_key("q"))            # {"domains": {0: {...}}, ...}
    host.dom0_shell("cat /sys/hypervisor/version/major")
    host.dump(path)                         # QMP stop + dump-guest-memory (ELF, paging=False)
    host.close()
    boot_xen_host(extra_files=..., extra_modules=..., extra_init=..., qemu_args=[...])
                                            # more in dom0's initramfs, more QEMU devices
                                            # (realsys.xendomu: Debian's toolstack + a domU)

How it boots: QEMU's multiboot loader (``-kernel`` is the gunzipped ``/boot/xen-4.17-amd64.gz``
of ``xen-hypervisor-4.17-amd64``; ``-initrd "<vmlinuz> <dom0 args>,<initramfs>"`` gives the two
multiboot modules; commas inside a module's command line are doubled). ``-cpu max,-smap``
(:data:`CPU_MODEL`): with TCG's SMAP dom0 dies early in boot -- QEMU 7.2's IRET reads its frame with
supervisor accesses that SMAP checks, so dom0's first ``iretq`` at CPL 3 (sync_core) takes a #PF it
has no handler for yet (tests/realsys/test_xen_smap_crash.py boots ``cpu="max"`` on purpose,
``until=CRASHED``). Xen's console is com1 (QEMU's serial on a pipe), dom0's is
hvc0 (through Xen's console), so one byte stream carries both: Xen's lines start with ``(XEN)``.
Three Ctrl-A switch serial input between dom0 and Xen (Xen then takes single debug keys); the
serial is ``-serial stdio`` without QEMU's mux, so Ctrl-A reaches the guest unchanged. Typing to
dom0 goes in small chunks: Xen buffers only 128 bytes of serial input for dom0.
Boot to dom0's shell: ~8 s here; the whole test module (boot, keys, dump) ~20 s.

Versions: both ``xen-hypervisor-4.17-amd64`` and its ``-dbg`` package are fetched at one version
(``apt-get download pkg=VERSION``), the newest version apt knows for both unless the cache already
holds a matching pair (or $XENSCOPE_XEN_VERSION names one). Debian's ``-dbg`` package ships
``/usr/lib/debug/boot/xen-syms-4.17-amd64`` with ``.symtab`` but NO DWARF (Debian builds Xen
without debug info; checked for 4.17.5+72-g01140da4e8-1 and 4.17.7+13-g2445b30a44-0+deb12u1), so
``XenHost.xen_syms`` is None and ``xen_syms_reason`` says why; ``xen_syms_symtab`` is that ELF
(symbols only) and ``xen_map`` its System.map (``xen-syms-4.17-amd64.map``, also from -dbg: the
hypervisor package itself ships no map).

What Xen 4.17's ``q`` key prints (xen/common/keyhandler.c dump_domains, per domain in the domain
list, i.e. real domains only, not DOMID_XEN/IO/COW nor the idle domain)::

    (XEN) General information for domain 0:
    (XEN)     refcnt=3 dying=0 pause_count=0
    (XEN)     nr_pages=65536 xenheap_pages=2 dirty_cpus={} max_pages=65536
    (XEN)     handle=00000000-... vm_assist=0000002d
    (XEN) Rangesets belonging to domain 0: ...
    (XEN) Memory pages belonging to domain 0:
    (XEN)     DomPage list too long to display
    (XEN)     XenPage 000000000001fdb5: caf=c000000000000002, taf=e400000000000002
    (XEN)     XenPage 000000000001fd67: caf=c000000000000002, taf=e400000000000002
    (XEN) NODE affinity for domain 0: [0]
    (XEN) VCPU information and callbacks for domain 0: ...
    (XEN) Notifying guest 0:0 (virq 1, port 0)
    (XEN) Shared frames 0 -- Saved frames 0

``dump_pageframe_info`` (xen/arch/x86/domain.c) prints ``DomPage <mfn>: caf=<count_info>,
taf=<type_info>`` lines ONLY when the domain has fewer than 10 pages (or is dying-dead); then all
its pages except that only the first 16 of type PGT_none and of PGT_writable_page are shown.
Otherwise it prints "DomPage list too long to display". So for a running dom0 the per-page lines are
the ``XenPage`` ones (xenheap pages shared with the domain: shared_info, ...) and ``ExtraPage``
ones (none for a PV dom0); ``%p`` prints the mfn as 16 hex digits. The page_info of any other page (e.g. dom0's L4) is read here from the
frame table with QEMU's ``x`` monitor command instead (:meth:`XenHost.page_info`).
"""
import glob
import gzip
import os
import re
import shutil
import subprocess
import time

from . import linux as L
from . import vm as V

XEN_PKG = "xen-hypervisor-4.17-amd64"
DBG_PKG = XEN_PKG + "-dbg"
# Xen releases this tier boots: release -> (Debian release to fetch from through realsys.debian's
# private sources list, None for the machine's own bookworm; the Linux series of that Debian
# release, booted as dom0, see realsys.linux.KERNELS)
XEN_RELEASES = {"4.17": (None, "6.1"), "4.20": ("trixie", "6.12"), "4.14": ("bullseye", "5.10")}
READY = "XENSCOPE-DOM0-READY"
CRASHED = "Hardware Dom0 crashed"         # Xen's last line when dom0 crashes (noreboot: QEMU stays up)
CPU_MODEL = "max,-smap"
SWITCH = "\x01\x01\x01"
# Xen's command line. noreboot: a crash stays on screen (and QEMU's -no-reboot would exit anyway).
XEN_ARGS = ("console=com1 com1=115200,8n1 dom0_mem=256M,max:256M dom0_max_vcpus=1 "
            "loglvl=all guest_loglvl=all noreboot conring_size=1M")
DOM0_ARGS = "console=hvc0 earlyprintk=xen loglevel=4 nokaslr"
FRAMETABLE_VIRT_START = 0xffff82e000000000   # Xen 4.17 x86_64, no PDX compression hole here
PAGE_INFO_SIZE = 32                          # struct page_info: list, count_info, type_info, v, ...
PGT_TYPES = {0: "none", 1: "l1", 2: "l2", 3: "l3", 4: "l4", 5: "seg_desc", 6: "shared",
             7: "writable"}


# ---------------------------------------------------------------- packages

def _versions(pkg):
    out = V.sh("apt-cache", "madison", pkg).stdout
    return [line.split("|")[1].strip() for line in out.splitlines() if line.count("|") >= 2]


def _vkey(a, b):
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0


def _newest(versions):
    best = None
    for v in versions:
        if best is None or _vkey(v, best):
            best = v
    return best


def _deb_name(pkg, version):
    return f"{pkg}_{version.replace(':', '%3a')}_amd64.deb"


def _debdir():
    d = os.path.join(V.CACHE, "debs")
    os.makedirs(d, exist_ok=True)
    return d


def xen_version():
    """The Debian version at which both the hypervisor and its -dbg package are (to be) cached."""
    if os.environ.get("XENSCOPE_XEN_VERSION"):
        return os.environ["XENSCOPE_XEN_VERSION"]
    d = _debdir()
    cached = set()
    for p in glob.glob(os.path.join(d, f"{XEN_PKG}_*_amd64.deb")):
        ver = os.path.basename(p)[len(XEN_PKG) + 1:-len("_amd64.deb")].replace("%3a", ":")
        if os.path.exists(os.path.join(d, _deb_name(DBG_PKG, ver))):
            cached.add(ver)
    if cached:
        return _newest(cached)
    both = set(_versions(XEN_PKG)) & set(_versions(DBG_PKG))
    if not both:
        raise RuntimeError(f"apt knows no version at which both {XEN_PKG} and {DBG_PKG} exist "
                           f"(apt-cache madison); is bookworm (and bookworm-security) in sources?")
    return _newest(both)


def deb_at(pkg, version):
    """Path of the cached .deb of ``pkg`` at exactly ``version`` (apt-get download pkg=version)."""
    d = _debdir()
    path = os.path.join(d, _deb_name(pkg, version))
    if not os.path.exists(path):
        V.sh("apt-get", "download", "-q", f"{pkg}={version}", cwd=d)
    if not os.path.exists(path):
        raise RuntimeError(f"apt-get download {pkg}={version} produced no {path}")
    return path


def extract_at(pkg, version):
    path = deb_at(pkg, version)
    out = os.path.join(V.CACHE, "unpacked", os.path.basename(path)[:-4])
    if not os.path.isdir(out):
        tmp = out + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        V.sh("dpkg-deb", "-x", path, tmp)
        os.rename(tmp, out)
    return out


def has_dwarf(elf):
    out = V.sh("readelf", "-SW", elf).stdout
    return ".debug_info" in out


def _release_packages(release):
    """(hypervisor root, -dbg root or None, Debian version, why no -dbg) of a Xen release fetched
    from another Debian release (:data:`XEN_RELEASES`); the newest version there."""
    from . import debian
    dist = XEN_RELEASES[release][0]
    pkg = f"xen-hypervisor-{release}-amd64"
    version = debian.versions(dist, pkg)[0]
    root = debian.unpack(debian.release_deb(dist, pkg, version))
    if version not in debian.versions(dist, pkg + "-dbg"):
        return root, None, version, (f"Debian {dist} has no {pkg}-dbg at {version} (its Xen "
                                     f"packaging ships no -dbg package): no xen-syms")
    return root, debian.unpack(debian.release_deb(dist, pkg + "-dbg", version)), version, None


def xen_files(version=None, release="4.17"):
    """Dict of the hypervisor (gunzipped), xen-syms, map and version, unpacked in the cache
    (``release``: a key of :data:`XEN_RELEASES`)."""
    name = f"xen-{release}-amd64"
    if release == "4.17":
        version = version or xen_version()
        root, dbg, no_dbg = extract_at(XEN_PKG, version), extract_at(DBG_PKG, version), None
    else:
        root, dbg, version, no_dbg = _release_packages(release)
    gz = os.path.join(root, "boot", f"{name}.gz")
    xen = os.path.join(root, "boot", name)
    if not os.path.exists(xen):
        with gzip.open(gz) as f, open(xen + ".tmp", "wb") as o:
            shutil.copyfileobj(f, o)
        os.rename(xen + ".tmp", xen)
    syms = os.path.join(dbg or "/nonexistent", "usr", "lib", "debug", "boot", f"xen-syms-{release}-amd64")
    xmap = syms + ".map"
    out = {"version": version, "release": release, "xen": xen,
           "config": os.path.join(root, "boot", f"{name}.config"),
           "xen_syms_symtab": syms if os.path.exists(syms) else None,
           "xen_map": xmap if os.path.exists(xmap) else None}
    if no_dbg:
        out["xen_syms"], out["xen_syms_reason"] = None, no_dbg
    elif not os.path.exists(syms):
        out["xen_syms"], out["xen_syms_reason"] = None, f"{DBG_PKG} {version} ships no {syms}"
    elif not has_dwarf(syms):
        out["xen_syms"] = None
        out["xen_syms_reason"] = (f"xen-hypervisor-{release}-amd64-dbg {version}'s xen-syms-{release}-amd64 "
                                  f"({os.path.getsize(syms)} bytes) has .symtab but no DWARF "
                                  f"(no .debug_* sections): Debian builds Xen without -g")
    else:
        out["xen_syms"], out["xen_syms_reason"] = syms, None
    return out


def elf_symtab(path):
    """``{(address, name)}`` of an ELF's ``.symtab`` as Xen's tools/symbols.c names them: a local
    symbol is ``FILE#name`` after the last STT_FILE before it; sections, files, undefined and
    absolute symbols are not in Xen's table."""
    from elftools.elf.elffile import ELFFile
    out, current = set(), None
    with open(path, "rb") as f:
        for sym in ELFFile(f).get_section_by_name(".symtab").iter_symbols():
            kind, bind = sym["st_info"]["type"], sym["st_info"]["bind"]
            if kind == "STT_FILE":
                current = sym.name or None
                continue
            if kind == "STT_SECTION" or not sym.name or sym["st_shndx"] in ("SHN_UNDEF", "SHN_ABS"):
                continue
            out.add((sym["st_value"], f"{current}#{sym.name}" if bind == "STB_LOCAL" and current else sym.name))
    return out


# ---------------------------------------------------------------- dom0 initramfs

def dom0_initramfs(extra_files=None, extra_modules=(), extra_init="", kernel=None):
    """dom0's initramfs: busybox, xen-privcmd + xenfs (xenfs on /proc/xen), then READY.

    ``extra_files`` (``{path: (mode, bytes)}``, as :func:`vm.newc`) are added to the archive;
    ``extra_modules`` (paths relative to the kernel's modules dir, in load order) are insmod'ed
    after xenfs; ``extra_init`` (shell lines) runs after /proc/xen is mounted, before READY;
    ``kernel``: the dom0 kernel's :data:`realsys.linux.KERNELS` name (bookworm's by default).
    """
    _, moddir, _, _ = L.kernel_files("x86_64", kernel)
    files = {"lib": (0o40755, None), "proc/xen": (0o40755, None)}
    lines = []
    base = ("kernel/drivers/xen/xen-privcmd.ko", "kernel/drivers/xen/xenfs/xenfs.ko")
    for i, rel in enumerate(base + tuple(m for m in extra_modules if m not in base)):
        name = f"lib/m{i}-{os.path.basename(rel)}"
        files[name] = (0o100644, L.module_bytes(moddir, rel))
        lines.append(f"insmod /{name}")
    init = "\n".join([
        "#!/bin/busybox sh",
        "/bin/busybox --install -s /bin",
        "mount -t proc proc /proc",
        "mount -t sysfs sys /sys",
        "mount -t devtmpfs dev /dev",
        *lines,
        "mount -t xenfs xenfs /proc/xen",
        extra_init,
        "sleep 100000 &",
        f"echo {READY}",
        "exec sh",
    ]) + "\n"
    files.update(extra_files or {})
    return V.busybox_initramfs(init, extra=files)


# ---------------------------------------------------------------- parsing

_PAGE = re.compile(r"\(XEN\)\s+(DomPage|XenPage|ExtraPage) ([0-9a-f]+): caf=([0-9a-f]+), "
                   r"taf=([0-9a-f]+)")


def decode_page(caf, taf):
    """Xen 4.17 x86 count_info / type_info fields (xen/arch/x86/include/asm/mm.h)."""
    return {"type": PGT_TYPES[taf >> 61], "pinned": bool(taf >> 59 & 1),
            "validated": bool(taf >> 58 & 1), "type_count": taf & ((1 << 55) - 1),
            "allocated": bool(caf >> 63 & 1), "xen_heap": bool(caf >> 62 & 1),
            "page_table": bool(caf >> 61 & 1), "count": caf & ((1 << 57) - 1)}


def parse_q(text):
    """The output of Xen 4.17's ``q`` key as ``{"domains": {domid: {...}}, "xen_pages": [...]}``.

    Per domain: ``pages`` (DomPage lines: [{mfn, caf, taf}]), ``xen_pages`` (XenPage lines),
    ``extra_pages``, ``too_long`` (Xen said "DomPage list too long to display"), and the totals
    ``nr_pages``, ``xenheap_pages``, ``max_pages``, ``refcnt``, ``dying``, ``pause_count``.
    The top-level ``xen_pages`` is every XenPage line of all domains, with its ``domid``.
    """
    doms, dom, section, xen_pages = {}, None, None, []
    kinds = {"DomPage": "pages", "XenPage": "xen_pages", "ExtraPage": "extra_pages"}
    for line in text.splitlines():
        m = re.search(r"General information for domain (\d+):", line)
        if m:
            dom = doms.setdefault(int(m.group(1)), {"pages": [], "xen_pages": [],
                                                    "extra_pages": [], "too_long": False})
            continue
        m = re.search(r"Memory pages belonging to domain (\d+):", line)
        if m:
            section = doms.setdefault(int(m.group(1)), {"pages": [], "xen_pages": [],
                                                        "extra_pages": [], "too_long": False})
            continue
        if dom is not None:
            for key in ("refcnt", "dying", "pause_count", "nr_pages", "xenheap_pages",
                        "max_pages"):
                m = re.search(rf"\b{key}=(-?\d+)", line)
                if m and "VCPU" not in line and key not in dom:
                    dom[key] = int(m.group(1))
        if section is not None:
            if "DomPage list too long to display" in line:
                section["too_long"] = True
            m = _PAGE.search(line)
            if m:
                page = {"mfn": int(m.group(2), 16), "caf": int(m.group(3), 16),
                        "taf": int(m.group(4), 16)}
                section[kinds[m.group(1)]].append(page)
                if m.group(1) == "XenPage":
                    domid = [k for k, v in doms.items() if v is section][0]
                    xen_pages.append(dict(page, domid=domid))
        if re.search(r"NODE affinity for domain", line):
            section = None
    return {"domains": doms, "xen_pages": xen_pages}


def qemu_page_faults(text):
    """Every #PF in QEMU's interrupt log (``-d int`` / HMP ``log int``), as QEMU raised it:
    ``[{"error", "cpl", "cs", "ip", "sp", "cr2"}]`` (the error code as the CPU pushed it)."""
    rx = re.compile(r"v=0e e=([0-9a-f]+) i=\d cpl=(\d) IP=([0-9a-f]+):([0-9a-f]+) pc=[0-9a-f]+ "
                    r"SP=[0-9a-f]+:([0-9a-f]+) CR2=([0-9a-f]+)")
    return [{"error": int(m.group(1), 16), "cpl": int(m.group(2)), "cs": int(m.group(3), 16),
             "ip": int(m.group(4), 16), "sp": int(m.group(5), 16), "cr2": int(m.group(6), 16)}
            for m in rx.finditer(text)]


# ---------------------------------------------------------------- the host

class XenHost:
    def __init__(self, vm, files, boot_seconds):
        self.vm = vm
        self.files = files
        self.boot_seconds = boot_seconds
        self.xen_syms = files["xen_syms"]
        self.xen_syms_reason = files["xen_syms_reason"]
        self.xen_syms_symtab = files["xen_syms_symtab"]
        self.xen_map = files["xen_map"]
        self.flavour = files.get("flavour", "release")
        text = self.console
        m = re.search(r"Xen version (\d+\.\d+\.\d+\S*) \(([^)]*)\)", text)
        self.xen_version = {"debian": files["version"], "banner": m.group(1) if m else None,
                            "banner_line": m.group(0) if m else None}
        self._n = 0
        self._to_xen = False

    @property
    def console(self):
        return self.vm.read_console().decode(errors="replace")

    def _mark(self):
        return len(self.vm.read_console())

    def _wait_quiet(self, start, needle, timeout, quiet):
        t0 = time.time()
        seen, last_len, last_t = False, -1, time.time()
        while time.time() - t0 < timeout:
            buf = self.vm.read_console()[start:]
            if not seen and needle.encode() in buf:
                seen = True
            if len(buf) != last_len:
                last_len, last_t = len(buf), time.time()
            elif seen and time.time() - last_t >= quiet:
                return buf.decode(errors="replace")
            if self.vm.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = self.vm.read_console()[-2000:].decode(errors="replace")
        raise RuntimeError(f"Xen did not answer with {needle!r} in {timeout} s; tail:\n{tail}")

    def _input_to(self, xen):
        if self._to_xen == xen:
            return
        start = self._mark()
        self.vm.send(SWITCH)
        want = "Serial input to Xen" if xen else "Serial input to DOM0"
        self._wait_quiet(start, want, 30, 0.2)
        self._to_xen = xen

    def debug_key(self, key, timeout=60, quiet=1.0, needle=None):
        """Type ``key`` to Xen (switching serial input to Xen and back); return what it printed
        (``needle``: the text that says Xen answered; by default "'KEY' pressed", which most
        handlers print first; 'm' prints "Physical memory information:" only)."""
        self._input_to(True)
        try:
            start = self._mark()
            self.vm.send(key)
            return self._wait_quiet(start, needle or f"'{key}' pressed", timeout, quiet)
        finally:
            self._input_to(False)

    def dom0_shell(self, cmd, timeout=60):
        """Run ``cmd`` in dom0's busybox shell; return its output (``\r`` removed).

        The command is bracketed by two echoed markers, quoted so that the tty's echo of the typed
        line (which the console may wrap anywhere) never matches them.
        """
        self._input_to(False)
        self._n += 1
        n = self._n
        start = self._mark()
        self._type(f"echo \"XS\"'BEGIN'{n}; {cmd}; echo \"XS\"'DONE'{n}\n")
        pat = re.compile(rf"XSBEGIN{n}\r*\n(.*?)XSDONE{n}\r*\n", re.S)
        t0 = time.time()
        while time.time() - t0 < timeout:
            m = pat.search(self.vm.read_console()[start:].decode(errors="replace"))
            if m:
                return m.group(1).replace("\r", "")
            if self.vm.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"dom0 shell did not finish {cmd!r} in {timeout} s; tail:\n"
                           f"{self.console[-2000:]}")

    def _type(self, text, chunk=32, pause=0.15):
        """Type into dom0 slowly: Xen keeps only 128 bytes of serial input for dom0
        (SERIAL_RX_SIZE in xen/drivers/char/console.c) and drops the rest if dom0 lags."""
        for i in range(0, len(text), chunk):
            self.vm.send(text[i:i + chunk])
            if i + chunk < len(text):
                time.sleep(pause)

    def dom0_cr3(self):
        """Machine address of dom0 vCPU0's page-table root, from Xen's ``0`` key."""
        m = re.search(r"cr3: ([0-9a-f]{16})", self.debug_key("0"))
        if not m:
            raise RuntimeError("Xen's '0' key printed no cr3 for dom0")
        return int(m.group(1), 16)

    def collect(self):
        """Facts from dom0 and Xen before a dump (also kept as ``self.facts``)."""
        f = {}
        f["sys_hypervisor"] = self.dom0_shell(
            "for f in type guest_type uuid version/major version/minor version/extra "
            "properties/capabilities properties/virtual_start properties/pagesize "
            "properties/changeset compilation/compiler; do echo \"$f=$(cat /sys/hypervisor/$f)\"; "
            "done")
        f["proc_xen_capabilities"] = self.dom0_shell("cat /proc/xen/capabilities").strip()
        f["meminfo"] = self.dom0_shell("head -3 /proc/meminfo")
        f["iomem"] = self.dom0_shell("cat /proc/iomem")
        f["key_q"] = self.debug_key("q")
        f["key_0"] = self.debug_key("0")
        f["key_d"] = self.debug_key("d")
        m = re.search(r"cr3: ([0-9a-f]{16})", f["key_0"])
        f["dom0_cr3"] = int(m.group(1), 16) if m else None
        self.facts = f
        return f

    def page_info(self, mfn):
        """(count_info, type_info) of ``mfn`` read from Xen's frame table with QEMU's ``x``.

        Works in either vCPU context: a PV guest's L4 carries Xen's slots, the frame table too.
        """
        va = FRAMETABLE_VIRT_START + mfn * PAGE_INFO_SIZE
        out = self.vm.hmp(f"x /4gx {va:#x}")
        words = [int(w, 16) for line in out.splitlines() if ":" in line
                 for w in re.findall(r"0x([0-9a-f]+)", line.split(":", 1)[1])]
        if len(words) != 4:
            raise RuntimeError(f"cannot read page_info of mfn {mfn:#x}: {out!r}")
        return words[1], words[2]

    def dump(self, path, fmt="elf"):
        """Pause (QMP ``stop``) and dump guest-physical memory (``paging=False``); return the path.

        ``fmt``: "elf" or QEMU's kdump formats ("kdump-zlib", ...). The VM stays paused: after it,
        ``registers()`` shows whichever context the vCPU was in (Xen, e.g. its idle loop, or
        dom0's kernel/user: see ``context()``); ``resume()`` continues.
        """
        self.vm.qmp("stop")
        self.vm.qmp("dump-guest-memory", paging=False, protocol=f"file:{path}", format=fmt)
        return path

    def resume(self):
        self.vm.qmp("cont")

    def registers(self):
        return self.vm.hmp("info registers")

    def context(self, regs=None):
        """"xen" or "dom0" for the paused vCPU, from its CS (Xen runs in ring 0, a 64-bit PV
        guest's kernel and user in ring 3: selectors e033/e02b are Xen's FLAT_RING3_*)."""
        regs = regs or self.registers()
        cs = int(re.search(r"^CS =([0-9a-f]{4})", regs, re.M).group(1), 16)
        return "xen" if cs & 3 == 0 else "dom0"

    def close(self):
        self.vm.close()


def hypervisor_files(version=None, hypervisor=None, release="4.17"):
    """:func:`xen_files` of ``version``, with the hypervisor replaced when ``hypervisor`` is given.

    ``hypervisor``: None (Debian's release build), or a dict with ``xen`` (the multiboot ELF to
    boot) and optionally ``xen_syms`` (ELF, with DWARF for a build of our own), ``xen_map``,
    ``flavour`` (e.g. the debug build of :func:`realsys.xendebug.debug_hypervisor`). Its
    ``version`` must be the Debian version whose packages (config, -dbg) describe it.
    """
    files = dict(xen_files(version, release), flavour="release")
    if hypervisor is None:
        return files
    if hypervisor.get("version", files["version"]) != files["version"]:
        raise RuntimeError(f"hypervisor built from {hypervisor['version']} but booting the "
                           f"packages of {files['version']}")
    files.update(xen=hypervisor["xen"], flavour=hypervisor.get("flavour", "custom"),
                 config=hypervisor.get("config", files["config"]))
    if hypervisor.get("xen_syms"):
        files.update(xen_syms=hypervisor["xen_syms"], xen_syms_symtab=hypervisor["xen_syms"],
                     xen_syms_reason=None, xen_map=hypervisor.get("xen_map"))
    return files


def boot_xen_host(workdir=None, timeout=240, mem=512, version=None, xen_args=XEN_ARGS,
                  dom0_args=DOM0_ARGS, extra_files=None, extra_modules=(), extra_init="",
                  qemu_args=(), cpu=CPU_MODEL, until=READY, hypervisor=None, release="4.17"):
    """Boot Xen with a PV dom0; return a :class:`XenHost` once the console shows ``until``.

    ``extra_files``, ``extra_modules``, ``extra_init``: see :func:`dom0_initramfs` (e.g. a
    toolstack and its libraries); ``qemu_args`` are appended to QEMU's command line (e.g. a
    second disk: ``["-drive", "file=disk.img,if=virtio,format=raw"]``, or QEMU's own interrupt
    log ``["-d", "int", "-D", path]``); ``cpu`` is QEMU's ``-cpu`` model; ``until`` the console text
    to wait for: dom0's shell (:data:`READY`), or :data:`CRASHED` for a boot that is meant to crash;
    ``hypervisor``: boot another build of the same version (see :func:`hypervisor_files`; the
    release by default); ``release``: the Xen release of :data:`XEN_RELEASES` (Debian's package of
    it, with its Debian release's kernel as dom0).
    """
    files = hypervisor_files(version, hypervisor, release)
    kernel = XEN_RELEASES[release][1]
    vmlinuz, _, _, _ = L.kernel_files("x86_64", kernel)
    workdir = workdir or V.tempfile.mkdtemp(prefix="xenscope-xen-")
    os.makedirs(workdir, exist_ok=True)
    rd = os.path.join(workdir, "dom0-initrd.gz")
    with open(rd, "wb") as f:
        f.write(dom0_initramfs(extra_files, extra_modules, extra_init, kernel))
    for p in (vmlinuz, rd):
        if "," in p or " " in p:
            raise RuntimeError(f"multiboot module path {p!r} has a comma or a space")
    modules = f"{vmlinuz} {dom0_args.replace(',', ',,')},{rd}"
    args = ["-accel", "tcg", "-cpu", cpu, "-smp", "1", "-m", str(mem),
            "-kernel", files["xen"], "-initrd", modules, "-append", xen_args] + list(qemu_args)
    t0 = time.time()
    vm = V.VM("qemu-system-x86_64", args, workdir=workdir)
    vm.command_line = ["qemu-system-x86_64", "-nographic", "-no-reboot", "-monitor", "none",
                       "-serial", "stdio", "-qmp", f"unix:{vm.qmp_path},server,nowait"] + args
    try:
        _wait_ready(vm, timeout, until)
    except BaseException:
        vm.close()
        raise
    return XenHost(vm, files, time.time() - t0)


def _wait_ready(vm, timeout, until=READY):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if until.encode() in vm.read_console():      # READY: /init's echo (the script is not echoed)
            time.sleep(0.3 if until != READY else 0)  # the rest of that line
            vm.read_console()
            return time.time() - t0
        if vm.proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = vm.console[-3000:].decode(errors="replace")
    raise RuntimeError(f"Xen/dom0 did not print {until} in {timeout} s "
                       f"(QEMU exit {vm.proc.poll()}); console tail:\n{tail}")
