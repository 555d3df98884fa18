"""A real HVM domU on Debian's Xen 4.17 with hardware-assisted paging (TCG's SVM + NPT, as for the PVH
domU of :mod:`realsys.xenpvh`), with its device model: Debian's QEMU for Xen in dom0, hvmloader and
SeaBIOS, the kernel booted directly by QEMU's ``-kernel``.

    h = boot_xen_with_hvm(workdir)
    h.domu                  # the realsys.xendomu.DomU (host running, domU paused; no dump-core)
    h.marker                # {"va", "gpa", "pfn", "text"}: what the guest's own witness printed
    h.host_image            # the host's memory (QMP dump-guest-memory) taken while the domU was paused
    h.hvmctx, h.saved       # xen-hvmctx's text for the domU and its CR0/CR3/CR4/EFER
    h.key_q                 # Xen's 'q' key (domains, their Xen/extra pages, ioreq server ranges)
    h.iomem                 # the guest's /proc/iomem
    h.qemu_cmdline          # the device model's command line as libxl started it (/proc/PID/cmdline)

How: dom0's initramfs (realsys.xendomu) also carries ``/usr/libexec/xen-qemu-system-i386`` (the path
Debian's libxl has compiled in; Debian's ``qemu-system-xen`` package) with the libraries it needs
(:data:`DM_PACKAGES`, resolved by their DT_NEEDED like the toolstack's), ``hvmloader`` (at
``/usr/lib/xen-4.17/boot``, from ``xen-utils-4.17``), SeaBIOS (``/usr/share/seabios/bios-256k.bin``,
the path Debian's libxl loads for ``bios = "seabios"``, from ``seabios``), and from
``qemu-system-data`` the option ROM QEMU's ``-kernel`` hands to SeaBIOS (``linuxboot_dma.bin``;
``linuxboot.bin`` when fw_cfg DMA is missing) and the keymap ``en-us`` (QEMU 7.2 stops with "-vnc
none: could not read keymap file: 'en-us'" without it, although no display is used). The xl config
is realsys.xendomu's with ``type = "hvm"``, the guest's console on its emulated serial port
(``console=ttyS0``; ``serial = "file:..."``: QEMU writes what the guest sends to the file realsys.xendomu's
``wait`` step reads; the guest writes nothing to its PV console hvc0), no VGA, VNC or SDL.

Measured on the 2-core machine: dom0 booted in 14 s, ``xl create`` 6 s (hvmloader's and SeaBIOS'
lines go to Xen's console as ``(d1) ...``), the guest's ready marker ~55 s after ``xl create``; the
whole boot_xen_with_hvm 72-90 s (runs of tests/realsys/test_xen_hvm.py: 78, 84, 94 and 99 s, the last
beside another helper's QEMU). The domU is not dumped with ``xl dump-core`` (it maps every gfn one by one: minutes);
the test module works on the host image only.
"""
import os
import re
import secrets

from . import vm as V
from . import xendomu as D
from . import xenhost as X
from . import xenpvh as P

DEVICE_MODEL = "/usr/libexec/xen-qemu-system-i386"
HVMLOADER = "/usr/lib/xen-4.17/boot/hvmloader"
SEABIOS = "/usr/share/seabios/bios-256k.bin"
QEMU_DATA = ("linuxboot_dma.bin", "linuxboot.bin", "keymaps/en-us")
# the device model and the packages of the libraries it needs besides the toolstack's (every soname
# of its DT_NEEDED closure: realsys.xendomu.toolstack_files fails on any soname none of them has)
DM_PACKAGES = ("qemu-system-xen", "libpixman-1-0", "libspice-server1", "libjpeg62-turbo", "libusb-1.0-0",
               "libfdt1", "libglib2.0-0", "libpcre2-8-0", "libudev1", "libssl3", "libopus0",
               "libgstreamer1.0-0", "libgstreamer-plugins-base1.0-0", "liborc-0.4-0", "liblz4-1",
               "libsasl2-2", "libstdc++6", "libffi8", "libunwind8", "libdw1", "libelf1", "libbz2-1.0")
HVM_ARGS = "console=ttyS0 loglevel=4 nokaslr"
XL_HVM = "\n".join(['device_model_version = "qemu-xen"',
                    'serial = "file:/var/log/xen/console/guest-domu.log"',
                    'vga = "none"', "vnc = 0", "sdl = 0", "nographic = 1"]) + "\n"
# dom0 runs QEMU besides the toolstack (and keeps no dump-core in RAM): measured with these
DOM0_MEM_MB = 512
MEM_MB = 1024
# seconds, bounds for a loaded machine (measured: create 6 s, the marker ~55 s after it)
HVM_CREATE_WAIT = 300
HVM_BOOT_WAIT = 600


def _file(root, path, mode=0o100644):
    full = root + path
    if not os.path.isfile(full):
        raise RuntimeError(f"{path} is not in {root}")
    return (mode, open(full, "rb").read())


def dom0_files():
    """``{cpio path: (mode, bytes)}``: hvmloader, SeaBIOS and QEMU's data files, from Debian's packages."""
    xen_utils = X.extract_at("xen-utils-4.17", P.XEN_VERSION)
    data = V.extract("qemu-system-data")
    files = {HVMLOADER.lstrip("/"): _file(xen_utils, HVMLOADER),
             SEABIOS.lstrip("/"): _file(V.extract("seabios"), SEABIOS)}
    for name in QEMU_DATA:
        files[f"usr/share/qemu/{name}"] = _file(data, f"/usr/share/qemu/{name}")
    return files


def xl_config():
    """realsys.xendomu's xl config with ``type = "hvm"``, the serial console and the device model's options."""
    text = D.xl_config("hvm")
    if D.DOMU_ARGS not in text:
        raise RuntimeError("realsys.xendomu.xl_config has no DOMU_ARGS line")
    return text.replace(D.DOMU_ARGS, HVM_ARGS) + XL_HVM


def parse_q_domain(text, domid):
    """From Xen's 'q' key, for ``domid``: ``{"paging": "hap refcounts translate external",
    "ioreq_memory": [(first, last)]}`` (the ``paging assistance:`` words; the byte ranges of the
    device model's ioreq server's ``memory`` rangeset, inclusive)."""
    m = re.search(rf"General information for domain {domid}:(.*?)(?:General information for domain|\Z)",
                  text, re.S)
    if not m:
        raise RuntimeError(f"Xen's 'q' printed nothing for domain {domid}")
    block = m.group(1)
    paging = re.search(r"paging assistance: ([^\n]*)", block)
    memory = re.search(r"ioreq_server \d+ memory \{([^}]*)\}", block)
    ranges = []
    for item in (memory.group(1).split(",") if memory else []):
        first, _, last = item.strip().partition("-")
        ranges.append((int(first, 16), int(last or first, 16)))
    return {"paging": paging.group(1).strip() if paging else None, "ioreq_memory": ranges}


class HVM(P.PVH):
    def __init__(self, domu, marker_text):
        super().__init__(domu, marker_text)
        self.key_q = self.qemu_cmdline = None


def _after_pause(hvm, workdir):
    def hook(d):
        hvm.hvmctx = D._step(d, "hvmctx", f"{P.HVMCTX} {d.domid}; echo XS-OK hvmctx", 60, "XS-OK hvmctx")
        hvm.saved = P.parse_hvmctx(hvm.hvmctx)
        out = D._step(d, "device_model", f"p=$(xenstore-read /local/domain/{d.domid}/image/device-model-pid) && "
                      "tr '\\0' ' ' < /proc/$p/cmdline && echo && echo XS-OK dm", 60, "XS-OK dm")
        hvm.qemu_cmdline = out.split("XS-OK dm")[0].strip()
        hvm.key_q = d.host.debug_key("q")
        hvm.host_image = d.host_dump(os.path.join(workdir, "host.elf"))
        d.host.resume()
    return hook


def boot_xen_with_hvm(workdir, timeout=300, version=P.XEN_VERSION):
    """Boot Xen (SVM, HAP) + dom0 with the device model, create an HVM domU running the marker, pause
    it, read xen-hvmctx and Xen's 'q', dump the host; return an :class:`HVM` (no dump-core)."""
    os.makedirs(workdir, exist_ok=True)
    marker_text = f"XENSCOPE-HVM-MARKER-{secrets.token_hex(8)}"
    hvm = HVM(None, marker_text)
    extra = dom0_files()
    extra["etc/xen/domu.cfg"] = (0o100644, xl_config().encode())
    guest = D.Guest(kind="hvm", cpu=P.CPU_MODEL,
                    domu_files={"marker": (0o100755, open(P.marker_binary(), "rb").read())},
                    domu_init=P._domu_init(marker_text), programs=D.PROGRAMS + (P.HVMCTX, DEVICE_MODEL),
                    after_pause=_after_pause(hvm, workdir), create_wait=HVM_CREATE_WAIT,
                    boot_wait=HVM_BOOT_WAIT, dump_core=False,
                    extra_roots={p: V.extract(p) for p in DM_PACKAGES}, extra_files=extra)
    hvm.domu = D.boot_xen_with_domu(workdir, timeout=timeout, version=version, guest=guest,
                                    mem=MEM_MB, dom0_mem=DOM0_MEM_MB)
    console = hvm.domu.domu_console
    hvm.marker = P.parse_marker(console)
    if hvm.marker["text"] != marker_text:
        raise RuntimeError(f"the marker printed {hvm.marker['text']!r}, not {marker_text!r}")
    hvm.iomem = "\n".join(line.split("XS-IOMEM ", 1)[1] for line in console.splitlines() if "XS-IOMEM " in line)
    return hvm
