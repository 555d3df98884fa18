"""The console text a dump holds, whatever the dump: Xen's console ring on a Xen host, the kernel's
printk buffer on a Linux dump (``xen dmesg``, ``log --from-dump``, ``check``'s faults/console).

Which one (:func:`dump_console`): an ``xl dump-core`` file is a Linux guest's; a dump whose
VMCOREINFO is Xen's (``SYMBOL(frame_table)``) is a Xen host's; a dump whose VMCOREINFO is Linux's is
a Linux kernel's; otherwise (a QEMU dump of a Xen host has no VMCOREINFO) Xen's ring is looked for,
and then, with kernel symbols given, the kernel's buffer. The result always says where the text
came from (:attr:`DumpConsole.description`).
"""

import struct
from dataclasses import dataclass, field

from .errors import XenscopeError


@dataclass
class DumpConsole:
    """Console text read from a dump: ``kind`` (``xen`` or ``linux``), ``description`` (one line:
    the buffer, its size, what was lost, the symbols' and offsets' sources), ``lines`` (the text as
    the console printed it), ``details`` (the ring's or buffer's JSON), ``name`` (a short name for
    summaries: "Xen's console ring in the dump")."""
    kind: str
    name: str
    description: str
    lines: list
    details: dict = field(default_factory=dict)

    def as_dict(self):
        return {"kind": self.kind, "name": self.name, "description": self.description, "lines": list(self.lines),
                "details": self.details}


def xen_console(host):
    """:class:`DumpConsole` of a XenHost's console ring (:func:`.xen.conring.read_conring`)."""
    from .xen.conring import read_conring
    ring = read_conring(host)
    details = ring.as_dict()
    details["symbols_source"] = getattr(host, "sources", {}).get("symbols")
    source = f"; symbols from {details['symbols_source']}" if details["symbols_source"] else ""
    return DumpConsole("xen", "Xen's console ring in the dump", ring.describe() + source, ring.lines(), details)


def linux_console(target, symbols=None, cpu=0):
    """:class:`DumpConsole` of a Linux dump's printk buffer (:func:`.linux.printk.printk_of_target`)."""
    from .linux.printk import printk_of_target
    log = printk_of_target(target, symbols=symbols, cpu=cpu)
    details = log.as_dict()
    sources = "; ".join(f"{k} from {v}" for k, v in log.sources.items())
    return DumpConsole("linux", "the kernel's printk buffer in the dump", f"{log.describe()}; {sources}",
                       log.lines(), details)


def console_of_kind(target, kind, host=None):
    """``(DumpConsole, None)`` for a dump of ``check``'s ``kind`` (its XenHost ``host`` when a Xen
    host), or ``(None, why not)``: what ``check`` reads when no log is beside the dump."""
    try:
        if host is not None:
            return xen_console(host), None
        if kind == "linux":
            return linux_console(target), None
    except XenscopeError as e:
        return None, str(e)
    if kind == "xl-dump-core":
        try:
            return linux_console(target), None      # the guest's own kallsyms and BTF
        except XenscopeError as e:
            return None, f"an xl dump-core file has no VMCOREINFO, and the guest's printk buffer: {e}"
    return None, "the dump is neither a Xen host nor a Linux dump with VMCOREINFO"


class XenMemory:
    """Xen's virtual memory for the console ring when :class:`~.xen.host.XenHost` cannot be made (it
    needs the Xen version, which may be known only from the ring): CPU ``cpu``'s page tables (Xen's
    own, or a PV guest's L4, which carries Xen's slots), symbols from ``syms`` and VMCOREINFO_XEN."""

    def __init__(self, target, syms=None, cpu=0):
        from .context import resolve
        from .xen.host import load_symbols
        self.t = target
        self.symbols, self.sources = {}, {}
        if syms:
            self.symbols.update(load_symbols(syms))
            self.sources["symbols"] = syms
        vi = target.facts.get("vmcoreinfo")
        if vi is not None and vi.symbol("frame_table") is not None:
            for name, va in vi.symbols().items():
                self.symbols.setdefault(name, va)
            self.sources.setdefault("symbols", "VMCOREINFO_XEN")
        ctx = resolve(target, cpu=cpu)
        if ctx.paging.mode not in ("4level", "5level"):
            raise XenscopeError(f"CPU {cpu} is in {ctx.paging.mode} paging: no 64-bit Xen runs there")
        self.paging = ctx.paging

    def read_va(self, va, size):
        from .paging import walk
        out = bytearray()
        while size > 0:
            n = min(size, 0x1000 - (va & 0xFFF))
            found = walk(self.t, self.paging, va)
            if found.pa is None:
                raise XenscopeError(f"Xen va {va:#x} does not translate: {found.describe_stop()}")
            out += self.t.read_phys(found.pa, n)
            va, size = va + n, size - n
        return bytes(out)

    def read_u64(self, va):
        return struct.unpack("<Q", self.read_va(va, 8))[0]

    def read_u32(self, va):
        return struct.unpack("<I", self.read_va(va, 4))[0]


def _xen(target, xen_syms, xen, cpu):
    """Xen's ring through a XenHost, else through :class:`XenMemory`; raises the host's error when
    neither finds it."""
    from .xen.host import open_host
    try:
        return xen_console(open_host(target, version=xen, syms=xen_syms, cpu=cpu))
    except XenscopeError as e:
        first = e
    try:
        return xen_console(XenMemory(target, xen_syms, cpu))
    except XenscopeError as e:
        if str(e) == str(first):
            raise
        raise XenscopeError(f"{e} (through a XenHost: {first})") from None


def dump_console(target, xen_syms=None, xen=None, system_map=None, cpu=0):
    """The :class:`DumpConsole` of ``target`` (see the module docstring for which buffer).

    :param xen_syms: xen-syms or its .map (Xen's symbols); ``xen``: the Xen version (``--xen``)
    :param system_map: the kernel's System.map or kallsyms, for a Linux dump without VMCOREINFO
    :raises XenscopeError: no console found; the message says what was tried
    """
    symbols = _kernel_symbols(system_map)
    vi = target.facts.get("vmcoreinfo")
    if target.facts.get("format") == "xc_core":
        return linux_console(target, symbols, cpu)
    if vi is not None and vi.symbol("frame_table") is not None:
        return _xen(target, xen_syms, xen, cpu)
    if vi is not None or symbols:
        return linux_console(target, symbols, cpu)
    try:
        return _xen(target, xen_syms, xen, cpu)
    except XenscopeError as e:
        raise XenscopeError(f"{e}; as a Linux dump: it has no VMCOREINFO (give --system-map for prb)") from None


def _kernel_symbols(path):
    if not path:
        return None
    from .linux.profile import Symbols
    from .linux.printk import printk_symbols
    return printk_symbols(Symbols.from_file(path))
