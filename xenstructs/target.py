"""The one interface every analysis reads through.

A :class:`Target` answers raw questions only: bytes of physical (or machine) memory, registers of
each CPU, symbols, and *facts* (hints such as VMCOREINFO, the ELF machine, where a register came
from). It knows nothing about Xen or Linux. Hosts implement four small methods:

``_read_phys(addr, size)``
    bytes at a physical address; raise :class:`~xenstructs.errors.NotInDump` for a hole.
``phys_ranges()``
    the ``[start, end)`` physical ranges the target holds (may be empty when unknown, e.g. live).
``cpus()``
    a list of :class:`CpuState`, one per CPU, with whatever registers the host knows.
``symbol(name)``
    a symbol's address or ``None``.

A host may also override :meth:`Target.batch`, which a front end enters around one whole command
(the gdb layer does): a remote host sets up its reading mode once there instead of per read.

Everything else (bounded reads, whole-table caching for slow hosts, integer helpers) is shared here.
A host whose memory cannot change while it is open (a dump file) sets ``fixed``: :func:`walk
<xenstructs.paging.walk>` then keeps the whole tables it reads (bounded). A live host sets ``live``
and calls :meth:`Target.invalidate` when the memory may have changed.
Virtual reads go through :mod:`xenstructs.paging`, never through a host, except hosts that can only
read virtual memory (gdbsx), which override :meth:`Target.read_virt`.
"""

from collections import OrderedDict
import contextlib
from dataclasses import dataclass, field
import struct

from .errors import NotInDump, XenscopeError

PAGE_SIZE = 4096
MAX_READ = 64 << 20          # one read never exceeds 64 MiB: absurd sizes are refused, not attempted
TABLE_CACHE_PAGES = 4096     # 16 MiB of cached 4 KiB tables at most (slow hosts only)


@dataclass
class CpuState:
    """Registers of one CPU as the target knows them.

    ``regs`` maps lower-case register names (``cr0``, ``cr3``, ``cr4``, ``efer``, ``rip``, ``rsp``,
    ``rflags``, ``cs`` ...) to integers; ``source`` maps the same names to a short text saying where
    each value came from (``"QEMU CPU note"``, ``"--cr3 option"``, ``"inferred from e_machine"``).
    """
    index: int
    regs: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)

    def get(self, name):
        return self.regs.get(name)


class Target:
    """What every analysis reads through: a dump file (:func:`~xenstructs.targets.open_dump`), or a
    debugger's live view (gdb, crash).

    A script asks it raw questions: :meth:`read_phys` (bytes of physical memory, machine memory on
    a Xen host; :class:`~xenstructs.errors.NotInDump` for a hole), :meth:`phys_ranges` (what it
    holds), :meth:`cpu` (a CPU's registers and where each came from), :meth:`symbol` and
    ``facts`` (format hints: ``machine``, ``vmcoreinfo``...); ``kind`` says what it is. Virtual
    memory is read through :mod:`xenstructs.paging`. A host implements the four methods the
    module docstring lists."""

    kind = "target"          # human-readable kind, e.g. "ELF vmcore (QEMU dump-guest-memory)"
    path = None              # file the target reads, when there is one
    slow = False             # True for remote hosts: whole 4 KiB tables are cached there
    live = False             # True when the target runs and can change (cache dropped on stop)
    fixed = False            # True when the memory cannot change while open (a dump file): walk()
                             # then keeps whole tables (paging.walk.WALK_TABLES, until invalidate())

    def __init__(self):
        self.facts = {}      # format-specific hints, e.g. {"vmcoreinfo": {...}, "machine": "x86_64"}
        self._tables = OrderedDict()
        self.stats = {"reads": 0, "bytes": 0, "table_hits": 0}

    # -- to be implemented by hosts -------------------------------------------------------------
    def _read_phys(self, addr, size):
        raise NotInDump(addr)

    def phys_ranges(self):
        """The ``[start, end)`` physical ranges the target holds, sorted (empty when unknown: live)."""
        return []

    def cpus(self):
        """A :class:`CpuState` per CPU, with whatever registers the target knows (may be empty)."""
        return getattr(self, "_cpus", None) or []

    def symbol(self, name):
        """A symbol's address; the base answers from VMCOREINFO when the target has one."""
        vi = self.facts.get("vmcoreinfo")
        return vi.symbol(name) if vi is not None else None

    def close(self):
        """Release the file or connection (the target is not used afterwards)."""

    @contextlib.contextmanager
    def batch(self):
        """Context of one command's reads: hosts with a per-read set-up cost (a mode to switch on
        a remote stub) do it once here and undo it on exit, even on error. Nests; default: nothing."""
        yield self

    # -- shared ----------------------------------------------------------------------------------
    def read_phys(self, addr, size):
        """Return ``size`` bytes of physical memory at ``addr``.

        :raises NotInDump: when any byte is not held by the target.
        :raises XenscopeError: for a negative or absurd size.
        """
        if size < 0 or size > MAX_READ:
            raise XenscopeError(f"refusing to read {size} bytes (limit {MAX_READ})")
        if addr < 0 or addr + size > 1 << 64:
            raise NotInDump(addr)
        self.stats["reads"] += 1
        self.stats["bytes"] += size
        return self._read_phys(addr, size)

    def read_u64(self, addr):
        """The little-endian 64-bit value at physical ``addr``."""
        return struct.unpack("<Q", self.read_phys(addr, 8))[0]

    def read_u32(self, addr):
        """The little-endian 32-bit value at physical ``addr``."""
        return struct.unpack("<I", self.read_phys(addr, 4))[0]

    def read_table(self, table_addr):
        """Return the whole 4 KiB page at ``table_addr`` (page-aligned down); cached on slow hosts."""
        base = table_addr & ~(PAGE_SIZE - 1)
        if not self.slow:
            return self.read_phys(base, PAGE_SIZE)
        data = self._tables.get(base)
        if data is not None:
            self._tables.move_to_end(base)
            self.stats["table_hits"] += 1
            return data
        data = self.read_phys(base, PAGE_SIZE)
        self._tables[base] = data
        if len(self._tables) > TABLE_CACHE_PAGES:
            self._tables.popitem(last=False)
        return data

    def read_entry(self, entry_addr, size):
        """Read one page-table entry (4 or 8 bytes). Uses a cached whole table when there is one,
        otherwise reads just the entry: isolated lookups over a slow stub stay cheap."""
        base = entry_addr & ~(PAGE_SIZE - 1)
        data = self._tables.get(base)
        if data is not None:
            off = entry_addr - base
            raw = data[off:off + size]
        else:
            raw = self.read_phys(entry_addr, size)
        return int.from_bytes(raw, "little")

    def invalidate(self):
        """Forget cached memory (a live target resumed)."""
        self._tables.clear()
        for name in [name for name in self.__dict__ if name.startswith("_walk_")]:   # paging.plan's
            del self.__dict__[name]

    def cpu(self, index=0):
        """CPU ``index``'s :class:`CpuState` (an empty one when the target knows no CPU).

        :raises XenscopeError: ``index`` beyond the CPUs the target has
        """
        cpus = self.cpus()
        if not cpus:
            return CpuState(index)
        if index < 0 or index >= len(cpus):
            raise XenscopeError(f"no CPU {index}: the target has {len(cpus)} CPU(s)")
        return cpus[index]

    def holds(self, addr):
        """Whether physical ``addr`` is in the target: True/False, or None when the target cannot
        tell without reading (no memory map: live stubs). Hosts that can probe cheaply override it."""
        ranges = self.phys_ranges()
        if not ranges:
            return None
        return any(s <= addr < e for s, e in ranges)

    def held_bytes(self):
        """Bytes of memory the target holds (the sum of :meth:`phys_ranges`), None when it has no
        memory map (live stubs): what bounds on work and memory are scaled by. Computed once."""
        held = getattr(self, "_held_bytes", False)
        if held is False:
            ranges = self.phys_ranges()
            held = sum(end - start for start, end in ranges) if ranges else None
            self._held_bytes = held
        return held

    def in_memory(self, addr):
        """True if ``addr`` lies in a known physical range (always True when ranges are unknown)."""
        return self.holds(addr) is not False

    def read_virt(self, va, size, root, mode):
        """Read virtual memory by walking the page tables at ``root`` (see :mod:`paging`)."""
        from .paging import read_virt
        return read_virt(self, va, size, root, mode)


class MemoryTarget(Target):
    """A target made from a dict ``{page-aligned address: bytes}`` (tests, benchmarks, builders)."""

    kind = "memory"

    def __init__(self, pages=None, cpus=None):
        super().__init__()
        self.pages = dict(pages or {})
        self._cpus = list(cpus or [])

    def _read_phys(self, addr, size):
        out = bytearray()
        while size:
            base = addr & ~(PAGE_SIZE - 1)
            off = addr - base
            n = min(size, PAGE_SIZE - off)
            page = self.pages.get(base)
            if page is None:
                raise NotInDump(addr)
            out += page[off:off + n]
            addr += n
            size -= n
        return bytes(out)

    def phys_ranges(self):
        return [(a, a + PAGE_SIZE) for a in sorted(self.pages)]

    def cpus(self):
        return self._cpus
