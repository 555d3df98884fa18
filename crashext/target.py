"""A :class:`~xenstructs.target.Target` over what crash has open: every read goes through crash's
``readmem()`` (its dump formats and caches), symbols are crash's (relocated for KASLR), registers
come from the QEMU CPU notes crash parsed, VMCOREINFO from crash's reader.

Registers and notes crash does not hand out (NT_PRSTATUS, Xen's crash notes, VMCOREINFO_XEN) are
read from the dump file's own headers by xenscope's reader when that is cheap (ELF, and
kdump-compressed that is not in makedumpfile's flattened form); memory is never read that way.

Physical reads are crash's ``PHYSADDR``, except where the page tables hold machine addresses:
a Xen dom0 kernel dump (crash's ``XEN()``) reads ``XENMACHADDR``; in crash's Xen hypervisor mode
(``crash xen-syms vmcore``) physical already is machine memory.
"""

from collections.abc import Mapping

from xenstructs.errors import NotInDump, XenscopeError
from xenstructs.formats.vmcoreinfo import VmcoreInfo
from xenstructs.linux.tasks import mm_root
from xenstructs.target import PAGE_SIZE, CpuState, Target

MAX_CPUS = 8192


class _CrashVmcoreLines(Mapping):
    """VMCOREINFO keys looked up through crash (``pc->read_vmcoreinfo``) on first use."""

    def __init__(self, C):
        self._C = C
        self._seen = {}

    def __getitem__(self, key):
        if key not in self._seen:
            self._seen[key] = self._C.vmcoreinfo(key)
        if self._seen[key] is None:
            raise KeyError(key)
        return self._seen[key]

    def __iter__(self):                  # only what was asked so far: crash has no key list
        return iter([k for k, v in self._seen.items() if v is not None])

    def __len__(self):
        return sum(v is not None for v in self._seen.values())


class CrashVmcoreInfo(VmcoreInfo):
    def __init__(self, C):
        self.lines = _CrashVmcoreLines(C)

    def __repr__(self):
        return "VmcoreInfo(through crash)"


class CrashTarget(Target):
    """The dump (or live system) crash has open."""

    def __init__(self, C):
        super().__init__()
        self.C = C
        info = C.info()
        self.crash = info
        self.path = info["dumpfile"]
        self.hypervisor = bool(info["xen_hyper"])
        # a Xen kernel, or a dump with Xen notes outside hypervisor mode: crash's PHYSADDR is
        # dom0's pseudo-physical space there, and XENMACHADDR the machine memory page tables use
        self.memtype = (C.XENMACHADDR if (info["xen"] or info["xen_core"]) and not self.hypervisor
                        else C.PHYSADDR)
        mode = ("Xen hypervisor mode" if self.hypervisor else "Xen kernel" if info["xen"]
                else "minimal mode" if info["minimal"] else "kernel")
        if self.memtype == C.XENMACHADDR:
            mode += ", machine reads (XENMACHADDR)"
        self.kind = f"crash: {info['format']}, {mode}"
        self.facts["machine"] = {"X86_64": "x86_64", "X86": "i386"}.get(info["machine"], info["machine"].lower())
        self.facts["format"] = "crash"
        self._own = self._open_headers(self.path)
        own = self._own.facts if self._own is not None else {}
        for key in ("xen_crash_info", "xen_notes", "qemu_notes"):
            if key in own:
                self.facts[key] = own[key]
        vi = CrashVmcoreInfo(C)
        if own.get("vmcoreinfo") is not None:
            self.facts["vmcoreinfo"] = own["vmcoreinfo"]      # the whole note: symbols can be listed
        elif vi.get("OSRELEASE") is not None:
            self.facts["vmcoreinfo"] = vi
        self._cpus = None

    @staticmethod
    def _open_headers(path):
        """xenscope's own reader of the dump file, for its notes only; None when that would cost
        more than headers (flattened: reassembled in full) or the file is not one xenscope reads."""
        from xenstructs.targets import open_dump, sniff
        try:
            if not path or sniff(path).startswith(b"makedumpfile"):
                return None
            return open_dump(path)
        except (XenscopeError, OSError):
            return None

    def close(self):
        if self._own is not None:
            self._own.close()
            self._own = None

    # -- the host interface ------------------------------------------------------------------
    def _read_phys(self, addr, size):
        data = self.C.readmem(addr, self.memtype, size)
        if data is not None:
            return data
        # name the first page crash cannot read (only on failure: one read per page)
        a, end = addr, addr + size
        while a < end:
            n = min(end, (a & ~(PAGE_SIZE - 1)) + PAGE_SIZE) - a
            if self.C.readmem(a, self.memtype, n) is None:
                raise NotInDump(a)
            a += n
        raise NotInDump(addr)

    def cpus(self):
        """The QEMU CPU notes crash read; merged with what xenscope's reader finds in the file's
        notes (NT_PRSTATUS, Xen's crash notes), whose names for each register's source win, so
        that the same dump says the same thing in crash and in the CLI."""
        if self._cpus is None:
            out = []
            for i in range(MAX_CPUS):
                regs = self.C.qemu_cpu(i)
                if regs is None:
                    break
                out.append(CpuState(i, regs, {k: "QEMU CPU note" for k in regs}))
            own = list(self._own.cpus()) if self._own is not None else []
            for i, st in enumerate(own):
                if i < len(out):
                    out[i].regs.update(st.regs)
                    out[i].source.update(st.source)
                else:
                    out.append(CpuState(i, dict(st.regs), dict(st.source)))
            self._cpus = out
        return self._cpus

    def symbol(self, name):
        return self.C.symbol(name)

    def holds(self, addr):
        """crash keeps its memory map to itself: ask readmem() for one byte."""
        return self.C.readmem(addr, self.memtype, 1) is not None

    # -- crash's own views, for the front end ----------------------------------------------------
    # Walks never use crash's translation (KVADDR/UVADDR): xenscope walks the tables itself over
    # crash's physical reads, so `xen walk` can be judged by crash's `vtop`, and a broken table
    # shows as broken. crash's KVADDR serves only to find the current context's mm->pgd.
    def read_kvaddr(self, va, size):
        """Kernel-virtual bytes through crash's own translation (``KVADDR``), or ``None``."""
        return self.C.readmem(va, self.C.KVADDR, size)

    def context_root(self, kernel_offsets):
        """(CR3, source) of crash's current task context: its ``mm->pgd`` translated by crash, or
        ``(None, None)`` when the context has no mm (kernel threads, hypervisor mode)."""
        ctx = self.C.context()
        pgd_offset = kernel_offsets("mm_struct", "pgd")
        if not ctx:
            return None, None
        root, pgd = mm_root(ctx["mm"], pgd_offset, self.facts["machine"], self.read_kvaddr, self.C.kvtop)
        if root is None:
            return None, None
        return root, f"crash context: pid {ctx['pid']} ({ctx['comm']}) mm->pgd {pgd:#x}"

    def _registers_from(self):
        if not self.cpus():
            return "none (no QEMU notes in crash; no notes xenscope can read in the file)"
        if self.C.qemu_cpu(0) is not None:
            return "the QEMU CPU notes crash read" + (", and the file's other notes" if self._own else "")
        return "the dump file's notes, read by xenscope (crash keeps them to itself)"

    def info_notes(self):
        c = self.crash
        notes = [f"crash: {c['namelist']} {c['dumpfile']}; reads through readmem("
                 f"{'XENMACHADDR' if self.memtype == self.C.XENMACHADDR else 'PHYSADDR'}); "
                 f"registers: {self._registers_from()}"]
        ctx = self.C.context()
        if ctx:
            notes.append(f"crash context: pid {ctx['pid']} ({ctx['comm']}) on CPU {ctx['cpu']}"
                         + ("" if ctx["mm"] else ", no mm: kernel page tables"))
        return notes
