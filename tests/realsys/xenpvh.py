"""A real PVH domU on Debian's Xen 4.17 with hardware-assisted paging (AMD SVM + nested paging, as
QEMU's TCG emulates them), for truth about a translated guest's two stages of paging.

    p = boot_xen_with_pvh(workdir)
    p.domu                  # the realsys.xendomu.DomU (host running, domU paused, dump-core taken)
    p.marker                # {"va", "gpa", "pfn", "text"}: what the guest's own witness printed
    p.host_image            # the host's memory (QMP dump-guest-memory), taken while the domU was paused
    p.hvmctx                # xen-hvmctx's text for the domU: the vCPU's saved CR0/CR3/CR4/EFER
    p.saved                 # {"cr0", "cr3", "cr4", "efer"} parsed from it
    p.iomem                 # the domU's /proc/iomem
    boot_xen_with_pvh(workdir, hap=False)   # the same domU in shadow mode (xl: hap = 0), no dump-core

How: the host is booted with ``-cpu`` :data:`CPU_MODEL` (SVM with NPT: TCG has no VMX); Xen prints
"HVM: SVM enabled" and "HVM: Hardware Assisted Paging (HAP) detected". The domU is Debian's kernel
(``CONFIG_XEN_PVH=y``) started by ``xl create`` with ``type = "pvh"`` (direct kernel boot, no device
model). Its initramfs runs ``pvhmarker/marker.c`` (built here with ``gcc -static``, cached): a page of
random bytes with the marker string at its start, at a fixed user VA; it prints that VA and its own
``/proc/self/pagemap`` entry (the guest frame), then spins, so that when the domain is paused the
vCPU's saved CR3 is most likely the marker process's (its user VA is then reachable from the saved
state; the page is also reachable at its kernel direct-map address from any CR3). The host image is
taken after ``xl pause`` and before ``xl dump-core`` (so the host's memory holds the page once:
the dump-core's copy is made afterwards in dom0's RAM).
"""
import hashlib
import os
import re
import secrets
import subprocess

from . import vm as V
from . import xendomu as D

CPU_MODEL = "qemu64,+svm,+npt,+nrip-save,+x2apic,+fsgsbase"
HERE = os.path.dirname(os.path.abspath(__file__))
MARKER_SOURCE = os.path.join(HERE, "pvhmarker", "marker.c")
HVMCTX = f"{D.XEN_BIN}/xen-hvmctx"
# seconds; measured on the 2-core machine: create 15 s, boot 30 s, dump-core 570 s (xl dump-core maps every
# gfn below the special pages at 0xfeff8 one by one: ~1 M foreign mappings); the bounds allow a loaded machine
PVH_CREATE_WAIT = 600
PVH_BOOT_WAIT = 600
PVH_DUMP_WAIT = 1800
# the Debian Xen whose struct offsets xenscope ships (xenstructs/xen/profiles/, made from the DWARF of
# Debian's release rebuilt with -g: tests/realsys/xenprofile.py): the vCPU's saved HVM state and the
# domain's P2M are read through it
XEN_VERSION = "4.17.5+72-g01140da4e8-1"


def marker_binary():
    """The marker program, built once per source (``gcc -static``) into the cache."""
    src = open(MARKER_SOURCE, "rb").read()
    key = hashlib.sha256(src).hexdigest()[:12]
    out = os.path.join(V.CACHE, "pvhmarker", f"marker-{key}")
    if not os.path.exists(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        tmp = out + ".tmp"
        subprocess.run(["gcc", "-static", "-O2", "-o", tmp, MARKER_SOURCE], check=True)
        os.rename(tmp, out)
    return out


def parse_marker(text):
    """``{"va", "pagemap", "present", "pfn", "gpa", "text"}`` from the marker program's line."""
    m = re.search(r"XENSCOPE-MARKER va=([0-9a-f]+) pagemap=([0-9a-f]{16}) marker=(\S+)", text)
    if not m:
        raise RuntimeError(f"the domU printed no marker line:\n{text[-2000:]}")
    entry = int(m.group(2), 16)
    pfn = entry & ((1 << 55) - 1)
    return {"va": int(m.group(1), 16), "pagemap": entry, "present": bool(entry >> 63 & 1), "pfn": pfn,
            "gpa": pfn << 12, "text": m.group(3)}


def parse_hvmctx(text):
    """The first CPU record of ``xen-hvmctx``: ``{"cr0", "cr2", "cr3", "cr4", "efer"}``."""
    out = {}
    for name in ("cr0", "cr2", "cr3", "cr4"):
        m = re.search(rf"\b{name}\s+0x([0-9a-f]+)", text)
        if m:
            out[name] = int(m.group(1), 16)
    m = re.search(r"\befer\s+0x([0-9a-f]+)", text)
    if m:
        out["efer"] = int(m.group(1), 16)
    if "cr3" not in out:
        raise RuntimeError(f"xen-hvmctx printed no cr3:\n{text[-2000:]}")
    return out


class PVH:
    def __init__(self, domu, marker_text):
        self.domu, self.marker_text = domu, marker_text
        self.marker = self.hvmctx = self.saved = self.host_image = self.iomem = None

    @property
    def host(self):
        return self.domu.host

    def close(self):
        self.domu.close()


def _domu_init(marker_text):
    return "\n".join([
        f"/marker {marker_text} > /tmp/marker.out &",
        "for i in $(seq 120); do grep -q XENSCOPE-MARKER /tmp/marker.out && break; sleep 1; done",
        "cat /tmp/marker.out",
        "sed 's/^/XS-IOMEM /' /proc/iomem",
    ])


def _after_pause(pvh, workdir):
    def hook(d):
        pvh.hvmctx = D._step(d, "hvmctx", f"{HVMCTX} {d.domid}; echo XS-OK hvmctx", 60, "XS-OK hvmctx")
        pvh.saved = parse_hvmctx(pvh.hvmctx)
        pvh.host_image = d.host_dump(os.path.join(workdir, "host.elf"))
        d.host.resume()
    return hook


def boot_xen_with_pvh(workdir, timeout=300, version=XEN_VERSION, hap=True):
    """Boot Xen (SVM, HAP) + dom0, create a PVH domU running the marker, pause it, dump the host,
    then ``xl dump-core`` it; return a :class:`PVH`. ``hap=False``: the domU in shadow mode (xl's
    ``hap = 0``), and no dump-core."""
    os.makedirs(workdir, exist_ok=True)
    marker_text = f"XENSCOPE-PVH-MARKER-{secrets.token_hex(8)}"
    pvh = PVH(None, marker_text)
    guest = D.Guest(kind="pvh", cpu=CPU_MODEL, domu_files={"marker": (0o100755, open(marker_binary(), "rb").read())},
                    domu_init=_domu_init(marker_text), programs=D.PROGRAMS + (HVMCTX,),
                    after_pause=_after_pause(pvh, workdir), create_wait=PVH_CREATE_WAIT, boot_wait=PVH_BOOT_WAIT,
                    dump_wait=PVH_DUMP_WAIT, xl_extra="" if hap else "hap = 0\n", dump_core=hap)
    pvh.domu = D.boot_xen_with_domu(workdir, timeout=timeout, version=version, guest=guest)
    console = pvh.domu.domu_console
    pvh.marker = parse_marker(console)
    if pvh.marker["text"] != marker_text:
        raise RuntimeError(f"the marker printed {pvh.marker['text']!r}, not {marker_text!r}")
    pvh.iomem = "\n".join(line.split("XS-IOMEM ", 1)[1] for line in console.splitlines() if "XS-IOMEM " in line)
    return pvh

