"""The running kernel through ``/proc/kcore``, read-only (``xenscope info /proc/kcore``, as drgn does).

``/proc/kcore`` is an ELF core the kernel makes up on each read: one ``PT_LOAD`` per region of its
``kclist`` (kernel text, vmalloc, modules, vmemmap, and each range of System RAM at its direct-map
address). ``p_vaddr`` is always the virtual address; ``p_paddr`` is the physical one where the
kernel gives it (System RAM: ``__pa``; kernel text: ``__pa_symbol``), else ``-1``. The physical
view of this target is the segments with a physical address; the file cannot be mmapped, so every
read is a ``pread``. Never written to: the file is opened ``O_RDONLY``.

* VMCOREINFO: the note kcore carries (Linux >= 4.19), else the note ``/sys/kernel/vmcoreinfo``
  points at (its physical address and size), read through kcore's physical view.
* CR3: none per CPU (kcore's ``NT_PRSTATUS`` is an empty placeholder): the kernel's own root,
  ``init_top_pgt`` from VMCOREINFO (:func:`xenstructs.context.resolve`).
* Symbols: VMCOREINFO, then ``/proc/kallsyms`` (:meth:`KcoreTarget.own_kallsyms` for the zero-set-up
  code in :mod:`xenstructs.linux.fromdump`); types: ``/sys/kernel/btf/vmlinux`` (:meth:`own_btf`).

Opening says in one line what denies it: no ``CONFIG_PROC_KCORE``, not root (``CAP_SYS_RAWIO``),
kernel lockdown (confidentiality); hidden kallsyms addresses (``kptr_restrict``) are said by the
commands that need them. In a Xen PV domain kcore's "physical" addresses are pseudo-physical while
page-table entries hold machine frames: the target then reads machine addresses through the inverse
of the kernel's P2M (:mod:`.kcore_pv`; walks name each table's pfn through ``m2p``), or, when the P2M
cannot be read, :meth:`KcoreTarget.paging_refusal` says why walks are refused; :meth:`KcoreTarget.
info_notes` says what is and is not reachable read-only (Xen's M2P is not).
"""

import os

from ..errors import BadDump, NotInDump, XenscopeError
from ..formats.vmcoreinfo import MAX_VMCOREINFO, parse_vmcoreinfo
from ..target import CpuState
from .elfcore import ElfCoreTarget

KCORE = "/proc/kcore"
SYS = {"vmcoreinfo": "/sys/kernel/vmcoreinfo", "btf": "/sys/kernel/btf/vmlinux", "kallsyms": "/proc/kallsyms",
       "lockdown": "/sys/kernel/security/lockdown", "guest_type": "/sys/hypervisor/guest_type",
       "hypervisor": "/sys/hypervisor/type", "capabilities": "/proc/xen/capabilities",
       "online": "/sys/devices/system/cpu/online", "kptr_restrict": "/proc/sys/kernel/kptr_restrict"}
NO_PADDR = (1 << 64) - 1                 # p_paddr of a segment without a physical address
MAX_BTF = 256 << 20


def is_kcore(path):
    """Whether ``path`` names the running kernel's ``/proc/kcore``."""
    try:
        return os.path.realpath(path) == KCORE
    except (TypeError, ValueError):
        return False


def read_text(path, limit=1 << 16):
    """A small system file's text, or None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode(errors="replace")
    except OSError:
        return None


def denied(path, err):
    """The one line saying why opening ``path`` (``/proc/kcore``) failed."""
    if isinstance(err, FileNotFoundError):
        return (f"{path} does not exist: this kernel is built without CONFIG_PROC_KCORE, so its memory "
                "cannot be read live (take a dump instead)")
    if isinstance(err, PermissionError):
        lockdown = read_text(SYS["lockdown"])
        if lockdown is not None and "[confidentiality]" in lockdown:
            return (f"{path}: permission denied: the kernel is locked down ([confidentiality] in "
                    f"{SYS['lockdown']}, e.g. Secure Boot): it refuses /proc/kcore even to root")
        if os.geteuid() != 0:
            return f"{path}: permission denied: reading the running kernel needs root (CAP_SYS_RAWIO)"
        if lockdown is None:
            return (f"{path}: permission denied to root: kernel lockdown (confidentiality; "
                    f"{SYS['lockdown']} is not readable here to tell: mount securityfs), or CAP_SYS_RAWIO "
                    "is missing (a container?), or a security module refuses it")
        return (f"{path}: permission denied to root: CAP_SYS_RAWIO is missing (a container?) or a "
                "security module refuses it (lockdown is not the reason: "
                f"{lockdown.strip()})")
    return f"cannot open {path}: {err.strerror or err}"


class _Pread:
    """``data[a:b]`` of a file descriptor through ``pread`` (kcore cannot be mmapped)."""

    def __init__(self, fd, path):
        self.fd, self.path = fd, path

    def __getitem__(self, where):
        start, stop = where.start or 0, where.stop
        out = bytearray()
        while start + len(out) < stop:
            try:
                chunk = os.pread(self.fd, stop - start - len(out), start + len(out))
            except OSError as e:
                raise NotInDump(start, "offset", f"{self.path}: {e.strerror or e}") from None
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class KcoreTarget(ElfCoreTarget):
    """The running kernel, read-only, through ``/proc/kcore`` (see the module docstring)."""

    live = True

    def __init__(self, path=KCORE, system=None):
        """``system``: the paths of :data:`SYS` to read instead (tests of a kcore-shaped file)."""
        # ElfCoreTarget's __init__ maps the file; kcore is read with pread instead
        from ..target import Target
        Target.__init__(self)
        self.path = path
        self.system = dict(SYS, **(system or {}))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise BadDump(denied(path, e)) from None
        self._file = None
        self._mm = _Pread(fd, path)
        self._size = os.fstat(fd).st_size or (1 << 63)
        try:
            self._load()
            self._live_facts()
        except BaseException:
            self.close()
            raise

    # -- segments -------------------------------------------------------------------------------
    def _index_segments(self, phdrs):
        """Physical view: the segments the kernel gave a physical address; every segment is also
        kept by virtual address (:meth:`read_kcore_virt`, :meth:`segments`)."""
        from ..formats import elf
        loads = [(i, ph) for i, ph in enumerate(phdrs) if ph.p_type == elf.PT_LOAD]
        self._virt = sorted((ph.p_vaddr, ph.p_vaddr + ph.p_memsz, ph.p_offset,
                             None if ph.p_paddr == NO_PADDR else ph.p_paddr) for _, ph in loads)
        physical = [ph for _, ph in loads if ph.p_paddr != NO_PADDR and ph.p_memsz]
        if not physical or all(ph.p_paddr == 0 for ph in physical):
            raise BadDump(f"{self.path}: no segment has a physical address (a kernel older than 4.x "
                          "gives none): nothing to walk page tables with")
        super()._index_segments(physical)

    def pseudo_ranges(self):
        """kcore's physical ranges (pseudo-physical in a Xen PV domain)."""
        return ElfCoreTarget.phys_ranges(self)

    def pseudo_of(self, va):
        """The (pseudo-)physical address kcore gives kernel virtual ``va``, or None."""
        for start, end, _, pa in self._virt:
            if pa is not None and start <= va < end:
                return pa + va - start
        return None

    def phys_ranges(self):
        machine = getattr(self, "_machine", None)
        return machine.machine_ranges() if machine is not None else self.pseudo_ranges()

    def _read_phys(self, addr, size):
        machine = getattr(self, "_machine", None)
        if machine is None:
            return ElfCoreTarget._read_phys(self, addr, size)
        return machine.read(lambda pa, n: ElfCoreTarget._read_phys(self, pa, n), addr, size)

    def segments(self):
        """``[(va_start, va_end, pa_start or None)]`` of every kcore segment, by virtual address."""
        return [(s, e, pa) for s, e, _, pa in self._virt]

    def read_kcore_virt(self, va, size):
        """``size`` bytes at kernel virtual ``va`` as kcore gives them (no page-table walk)."""
        for start, end, off, _ in self._virt:
            if start <= va and va + size <= end:
                return self._mm[off + va - start:off + va - start + size]
        raise NotInDump(va, "va", "in no /proc/kcore segment")

    # -- what the running system says -----------------------------------------------------------
    def _live_facts(self):
        self.kind = "live kernel (/proc/kcore, read-only)"
        online = read_text(self.system["online"]) or "0"
        self._cpus = [CpuState(i) for i in _cpu_list(online)] or [CpuState(0)]
        self.facts["vmcoreinfo_source"] = "kcore's VMCOREINFO note"
        if self.facts.get("vmcoreinfo") is None:
            self.facts["vmcoreinfo"] = self._sys_vmcoreinfo()
        self.facts["xen_guest"] = _xen_guest(self.system)
        if self.facts["xen_guest"] and self.facts["xen_guest"]["type"] == "PV":
            self._machine_view()

    def _machine_view(self):
        """A PV domain: reads in machine addresses through its P2M's inverse (:mod:`.kcore_pv`)."""
        from .kcore_pv import MachineView
        try:
            machine = MachineView(self)
            cr3, why = machine.kernel_root(self)
        except XenscopeError as e:
            self._machine_error = str(e)
            return
        self._machine, self.m2p = machine, machine.pfn
        self._held_bytes = False
        for cpu in self._cpus:
            cpu.regs["cr3"], cpu.source["cr3"] = cr3, why

    def _sys_vmcoreinfo(self):
        """VMCOREINFO from the note ``/sys/kernel/vmcoreinfo`` points at (``PA SIZE``), or None."""
        where = self.system["vmcoreinfo"]
        text = read_text(where)
        try:
            pa, size = (int(x, 16) for x in text.split()[:2])
        except (AttributeError, ValueError):
            self.facts["vmcoreinfo_source"] = f"none (no note in {self.path}, {where} unreadable)"
            return None
        note = self.read_phys(pa, min(size, MAX_VMCOREINFO))
        from ..formats import elf
        notes = list(elf.iter_notes(note, where))
        if not notes:
            return None
        self.facts["vmcoreinfo_source"] = f"{where} (the note at pa {pa:#x})"
        return parse_vmcoreinfo(notes[0][2])

    def symbol(self, name):
        """VMCOREINFO's ``SYMBOL(name)``, else ``/proc/kallsyms``'s."""
        value = super().symbol(name)
        if value is None:
            try:
                value = self.own_kallsyms().table().get(name)
            except XenscopeError:
                value = None
        return value

    def own_kallsyms(self):
        """The kernel's own symbols from ``/proc/kallsyms`` (a :class:`~xenstructs.linux.kallsyms.
        Kallsyms`, module symbols left out), read once.

        :raises KallsymsError: unreadable, or every address hidden (``kptr_restrict``, not root)
        """
        cached = getattr(self, "_kallsyms", None)
        if cached is None:
            try:
                cached = _kallsyms(self.system["kallsyms"], self.system["kptr_restrict"])
            except XenscopeError as e:
                cached = e
            self._kallsyms = cached
        if isinstance(cached, Exception):
            raise cached
        return cached

    def own_btf(self):
        """``(blob, where)``: the running kernel's BTF from ``/sys/kernel/btf/vmlinux``.

        :raises XenscopeError: when the kernel exposes none (CONFIG_DEBUG_INFO_BTF off)
        """
        path = self.system["btf"]
        try:
            with open(path, "rb") as f:
                blob = f.read(MAX_BTF + 1)
        except OSError as e:
            raise XenscopeError(f"no BTF: cannot read {path} ({e.strerror or e}; a kernel built "
                                "without CONFIG_DEBUG_INFO_BTF)") from None
        if len(blob) > MAX_BTF:
            raise XenscopeError(f"{path} is larger than {MAX_BTF} bytes")
        return blob, path

    own_p2m_view = "kcore"

    def own_p2m_sources(self, opts, src, first=0, count=None):
        """``p2m-check`` on a running PV dom0: the kernel's P2M read through kcore, Xen's M2P mapped
        read-only through privcmd (:mod:`.privcmd`); no frame owners (Xen's frame table is not mapped)."""
        machine = getattr(self, "_machine", None)
        if machine is None:
            raise XenscopeError("p2m-check on /proc/kcore needs a running Xen PV domain whose P2M was read"
                                + (f" ({self._machine_error})" if getattr(self, "_machine_error", None) else ""))
        from .privcmd import read_m2p
        m2p, max_page, device = read_m2p()
        guest = self.facts.get("xen_guest") or {}
        src.domain = 0 if guest.get("dom0") else None
        src.size = machine.entries
        src.p2m = machine.p2m[first:None if count is None else first + count]
        src.first_pfn = first
        src.m2p, src.max_mfn = m2p, max_page
        src.why.update(p2m=f"the running kernel's P2M (xen_p2m_addr {machine.p2m_va:#x}, {machine.entries:#x} "
                           "entries) read through /proc/kcore",
                       m2p=f"Xen's M2P mapped read-only through {device} (max_page {max_page:#x})",
                       owners="unavailable (Xen's frame table is not mapped from a live domain): owner "
                              "checks skipped")

    def paging_refusal(self):
        """Why page tables cannot be walked here, or None: in a Xen PV domain they hold machine
        frames, while kcore reads pseudo-physical memory."""
        guest = self.facts.get("xen_guest")
        if guest and guest["type"] == "PV" and getattr(self, "_machine", None) is None:
            return ("a Xen PV domain: its page tables hold machine frames but /proc/kcore reads "
                    "pseudo-physical memory, and the kernel's P2M could not be read to translate them "
                    f"({getattr(self, '_machine_error', 'unknown')}): take a dump (xl dump-core, or the host's)")
        return None

    def info_notes(self):
        """What ``info`` adds on the running kernel: sources, and what cannot be reached."""
        phys = [s for s in self._virt if s[3] is not None]
        notes = [f"read-only: {self.path} opened O_RDONLY; the kernel runs on, so values may change "
                 "between two reads",
                 f"{len(self._virt)} kcore segments, {len(phys)} with a physical address (System RAM at "
                 "the direct map, kernel text); vmalloc, modules and vmemmap only by virtual address",
                 f"VMCOREINFO: {self.facts.get('vmcoreinfo_source')}; CR3: the kernel's init_top_pgt (kcore "
                 "has no per-CPU registers: give --cr3 for a process's tables)"]
        notes.append(_kallsyms_note(self))
        btf = self.system["btf"]
        notes.append(f"types: {btf}" if os.path.exists(btf) else f"types: no {btf} (no BTF): give --vmlinux")
        guest = self.facts.get("xen_guest")
        if guest:
            notes += _xen_notes(guest, getattr(self, "_machine", None))
        return notes

    def close(self):
        mm = getattr(self, "_mm", None)
        if mm is not None:
            mm.close()
        self._mm = None

    def __repr__(self):
        return f"<KcoreTarget {self.path!r}>"


def _cpu_list(text):
    """CPU numbers of a ``0-3,5`` list."""
    out = []
    for part in text.strip().split(","):
        if not part:
            continue
        a, _, b = part.partition("-")
        try:
            out += list(range(int(a), int(b or a) + 1))
        except ValueError:
            return []
    return out


def _kallsyms(path, kptr_restrict):
    """A :class:`~xenstructs.linux.kallsyms.Kallsyms` of the kernel's own lines of ``path``."""
    import numpy as np
    from ..linux.kallsyms import Kallsyms, KallsymsError
    text = read_text(path, 256 << 20)
    if text is None:
        raise KallsymsError(f"cannot read {path}")
    addresses, names, types = [], [], []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:            # module, bpf and ftrace lines end with [name]
            continue
        try:
            addresses.append(int(parts[0], 16))
        except ValueError:
            continue
        types.append(parts[1][:1])
        names.append(parts[2])
    if not names:
        raise KallsymsError(f"{path} lists no kernel symbol")
    if not any(addresses):
        restrict = (read_text(kptr_restrict) or "?").strip()
        raise KallsymsError(f"{path} hides every address (kptr_restrict={restrict}"
                            f"{'' if os.geteuid() == 0 else ', not root'}): give --system-map or run as root")
    return Kallsyms(np.array(addresses, dtype=np.uint64), names, "".join(types), how=f"{path} (the running kernel)")


def _kallsyms_note(target):
    try:
        k = target.own_kallsyms()
        return f"symbols: {target.system['kallsyms']} ({len(k)} kernel symbols)"
    except XenscopeError as e:
        return f"symbols: VMCOREINFO only ({e})"


def _xen_guest(system):
    """``{type, dom0}`` when this kernel runs on Xen (``/sys/hypervisor``), else None."""
    if (read_text(system["hypervisor"]) or "").strip() != "xen":
        return None
    kind = (read_text(system["guest_type"]) or "unknown").strip()
    caps = read_text(system["capabilities"])
    return {"type": kind, "dom0": None if caps is None else "control_d" in caps}


def _xen_notes(guest, machine):
    who = {True: "dom0", False: "a domU", None: "dom0 or a domU (mount xenfs on /proc/xen to tell)"}[guest["dom0"]]
    if guest["type"] != "PV":
        return [f"Xen {guest['type']} guest ({who}): its page tables hold guest-physical frames, walked as usual"]
    if machine is not None:
        view = (f"addresses are machine addresses: walks and reads go through the inverse of the kernel's P2M "
                f"(xen_p2m_addr {machine.p2m_va:#x}, {machine.entries} entries, read through kcore): the "
                "domain's own frames only, Xen's and other domains' are not reachable")
    else:
        view = "the kernel's P2M could not be read: walks are refused"
    return [f"Xen PV guest ({who}): page tables hold machine frames; kcore reads pseudo-physical memory",
            view,
            "Xen's M2P: no kcore segment; p2m-check maps it read-only through privcmd (XENMEM_machphys_mfn_list, "
            "then DOMID_XEN's frames, PROT_READ: a privileged domain, dom0, may), as libxc's xc_map_m2p does; "
            "Xen's frame table is not mapped, so owner checks (m2p-orphan) need a dump"]


__all__ = ["KcoreTarget", "is_kcore", "KCORE"]
