"""GdbTarget: lets the library read what gdb has open.

- a core file (``gdb -c FILE`` / ``core-file FILE``): gdb maps core segments by p_vaddr, not by
  physical address, so the file itself is reopened with :func:`xenstructs.targets.open_dump`;
- ``set xen dump FILE``: that file, whatever gdb has open (kdump-compressed files gdb cannot read);
- a remote stub: registers from gdb's frames; physical memory through QEMU's ``Qqemu.PhyMemMode``
  when the stub is QEMU's; on Xen's gdbsx machine memory of the PV guest through guest-virtual
  reads of the kernel's direct map (:class:`xenstructs.targets.gdbsx.GdbsxTarget`, built here from
  gdb's memory reads, symbols and frames: :class:`GdbsxGdbTarget`); otherwise
  :class:`~xenstructs.errors.Unsupported`. Inside
  :meth:`GdbTarget.batch` (one xen command) the mode is switched on once and back to 0 at the end;
  a read outside a batch switches it on and off around itself.

Targets are built once and reused: file targets until the file changes, the live target per
connection (its register and table caches are dropped on every stop/continue, see :func:`invalidate`).
"""

import contextlib
import os
import re

import gdb

from xenstructs.errors import NotInDump, Unsupported, XenscopeError
from xenstructs.target import CpuState, Target
from xenstructs.targets import gdbsx

NO_TARGET = "no target: open a core (gdb -c FILE), attach to a stub, or `set xen dump FILE`"

# Registers read from gdb frames (gdb name -> library name).
REGISTERS = (("cr0", "cr0"), ("cr2", "cr2"), ("cr3", "cr3"), ("cr4", "cr4"), ("efer", "efer"),
             ("rip", "rip"), ("rsp", "rsp"), ("eflags", "rflags"), ("cs", "cs"),
             ("eip", "eip"), ("esp", "esp"))

_cache = {}          # key -> target; at most one file target and one live target are kept


def _info_target():
    try:
        return gdb.execute("info target", to_string=True)
    except gdb.error:
        return ""


_CORE_RE = re.compile(r"Local core dump file:\s*\n\s*`(.+?)', file type ", re.S)


def core_path():
    """The core file gdb has open, or None."""
    conn = getattr(gdb.selected_inferior(), "connection", False)
    if conn is None:                  # gdb >= 12: no process-stratum target at all
        return None
    if conn is not False and conn.type != "core":
        return None
    found = _CORE_RE.search(_info_target())
    if not found:
        return None
    return os.path.abspath(found.group(1))


def _file_key(path):
    stat = os.stat(path)
    return (path, stat.st_mtime_ns, stat.st_size)


def _open_file(path, how):
    from xenstructs.targets import open_dump
    try:
        key = ("file", how) + _file_key(path)
    except OSError as e:
        raise XenscopeError(f"cannot open {path}: {e.strerror}")
    target = _cache.get(key)
    if target is None:
        drop(lambda cached: cached[0] == "file")
        target = open_dump(path)
        if how == "core":
            target.kind = f"gdb core file: {target.kind}"
        _cache[key] = target
    return target


def drop(which=lambda key: True):
    """Close and forget cached targets whose key matches ``which``."""
    for key in [key for key in _cache if which(key)]:
        try:
            _cache.pop(key).close()
        except Exception:
            pass


def invalidate(*_event):
    """gdb stopped or resumed: live memory and registers may have changed."""
    for target in _cache.values():
        if target.live:
            target.invalidate()


def get_target(dump="", kernel_syms=""):
    """The target commands read: ``set xen dump`` file, gdb's core file, or the live connection.

    ``kernel_syms``: ``set xen kernel-syms`` (the guest kernel's System.map or vmlinux), used on
    gdbsx to find the page tables and the P2M.

    :raises XenscopeError: when gdb has nothing open (the message says how to give a target).
    """
    if dump:
        return _open_file(os.path.abspath(os.path.expanduser(dump)), "dump")
    path = core_path()
    if path is not None:
        return _open_file(path, "core")
    inferior = gdb.selected_inferior()
    conn = getattr(inferior, "connection", None)
    if inferior.pid == 0 and (conn is None or conn.type == "core"):
        raise XenscopeError(NO_TARGET)
    num = getattr(conn, "num", None) if conn is not None else getattr(inferior, "connection_num", 0)
    ctype = conn.type if conn is not None else "remote"
    key = ("live", num, ctype, getattr(conn, "details", None))
    target = _cache.get(key)
    if target is None:
        drop(lambda cached: cached[0] == "live")
        target = _live_target(ctype, getattr(conn, "details", None))
        _cache[key] = target
    if isinstance(target, gdbsx.GdbsxTarget):
        target.set_kernel_syms(os.path.abspath(os.path.expanduser(kernel_syms)) if kernel_syms else "")
    return target


def _live_target(ctype, details):
    """Which live target this is: QEMU's gdbstub (``qqemu.PhyMemMode`` answered), Xen's gdbsx
    (QEMU's packet unanswered, no ``$cr3`` register, and ``monitor`` answered the way only gdbsx
    answers: hex of ``Bad monitor command``), or any other stub (registers only)."""
    target = GdbTarget(ctype, details)
    if target.qemu or ctype not in ("remote", "extended-remote"):
        return target
    try:
        has_cr3 = _register_int(gdb.selected_frame(), "cr3") is not None
    except gdb.error:
        has_cr3 = False
    if not has_cr3 and _gdbsx_probe():
        return GdbsxGdbTarget(details)
    return target


def _packet(text):
    """Send one remote packet (``maintenance packet``); the stub's reply, or None. With ``set debug
    remote 1``, gdb's log of the exchange (captured with the output) goes back to gdb's log stream,
    so a packet count from that log includes xenscope's own packets."""
    out = gdb.execute(f"maintenance packet {text}", to_string=True)
    log = [line for line in out.splitlines() if line.lstrip().startswith("[remote]")]
    if log:
        gdb.write("\n".join(log) + "\n", gdb.STDLOG)
    reply = re.search(r'received: "(.*)"', out)
    return reply.group(1) if reply else None


def _gdbsx_probe():
    """True when the stub answers ``monitor`` like gdbsx (any command but ``pgd3``)."""
    try:
        reply = _packet("qRcmd," + gdbsx.PROBE_COMMAND.encode().hex())
    except gdb.error:
        return False
    return gdbsx.answers_like_gdbsx(reply)


def _machine(arch_name):
    if "x86-64" in arch_name or "x86_64" in arch_name:
        return "x86_64"
    if arch_name.startswith("i386"):
        return "i386"
    return arch_name


def _selected_machine():
    """The library's machine name for gdb's selected frame's architecture, or None."""
    try:
        return _machine(gdb.selected_frame().architecture().name())
    except gdb.error:
        return None


def _register_int(frame, name):
    """A register's value as an unsigned int, or None when the stub does not provide it."""
    try:
        value = frame.read_register(name)
    except (ValueError, gdb.error):
        return None
    try:
        if value.is_optimized_out:
            return None
        number = int(value)
    except (gdb.error, TypeError, ValueError):
        try:                        # flags types (QEMU's cr0/cr4/efer) do not convert with int()
            number = int(value.format_string(format="x"), 16)
        except (gdb.error, ValueError):
            return None
    return number & ((1 << 64) - 1)


def _gdb_value(expression):
    """An expression's value as gdb evaluates it (debug information, symbols), or None."""
    try:
        value = gdb.parse_and_eval(expression)
        return int(value.cast(gdb.lookup_type("unsigned long long")))
    except gdb.error:
        return None


def _gdb_symbol(name):
    return _gdb_value(f"&'{name}'")


def _frame_cpus(all_threads):
    """One CpuState per gdb thread (``all_threads``: QEMU, gdbsx: one thread per vCPU, in thread
    order), else one for the selected thread; registers from each thread's newest frame."""
    inferior = gdb.selected_inferior()
    threads = sorted(inferior.threads(), key=lambda thread: thread.num) if all_threads else []
    current = gdb.selected_thread()
    if not threads and current is not None:
        threads = [current]
    try:
        frame0 = gdb.selected_frame()
    except gdb.error:
        frame0 = None
    cpus = []
    try:
        for index, thread in enumerate(threads):
            if thread != current:
                thread.switch()
            try:
                frame = gdb.newest_frame() if thread != current or frame0 is None else frame0
            except gdb.error:
                cpus.append(CpuState(index))
                continue
            regs, source = {}, {}
            for gdb_name, name in REGISTERS:
                value = _register_int(frame, gdb_name)
                if value is not None and name not in regs:
                    regs[name] = value
                    source[name] = f"gdb register (${gdb_name})"
            cpus.append(CpuState(index, regs, source))
    finally:
        if current is not None and current.is_valid():
            current.switch()
            if frame0 is not None and frame0.is_valid():
                frame0.select()
    return cpus


def _selected_cpu(all_threads):
    """Index of gdb's selected thread among the vCPUs (``all_threads``), else 0."""
    current = gdb.selected_thread()
    if current is None or not all_threads:
        return 0
    nums = sorted(thread.num for thread in gdb.selected_inferior().threads())
    return nums.index(current.num) if current.num in nums else 0


class GdbTarget(Target):
    """A live target through gdb: a QEMU gdbstub (physical reads), or another stub/process
    (registers only; physical reads raise Unsupported)."""

    live = True
    slow = True
    threads_are_cpus = False      # QEMU: one gdb thread per vCPU

    def __init__(self, ctype, details, qemu=None):
        super().__init__()
        self._phys = False            # xenscope switched the stub to physical mode (Qqemu.PhyMemMode:1)
        self._depth = 0               # nesting of batch()
        self.ctype = ctype
        self.details = details
        self.path = None
        if qemu is None:
            qemu = ctype in ("remote", "extended-remote") and self._qemu_phys_mode() is not None
        self.qemu = qemu
        where = f" {details}" if details else ""
        if self.qemu:
            self.kind = f"QEMU gdbstub (live){where}"
        elif ctype in ("remote", "extended-remote"):
            self.kind = f"gdb remote stub (live, not QEMU: registers only){where}"
        else:
            self.kind = f"gdb {ctype} target (live: registers only)"
        machine = _selected_machine()
        if machine is not None:
            self.facts["machine"] = machine
        self._cpus = None

    # -- QEMU physical-memory mode -----------------------------------------------------------
    @staticmethod
    def _qemu_phys_mode():
        try:
            reply = _packet("qqemu.PhyMemMode")
        except gdb.error:
            return None
        return reply if reply in ("0", "1") else None

    def _physical_mode(self):
        """Switch the stub to physical reads (one packet), unless it already is."""
        if self._phys:
            return
        if _packet("Qqemu.PhyMemMode:1") != "OK":
            raise Unsupported("QEMU refused physical-memory mode (Qqemu.PhyMemMode:1)")
        self._phys = True

    def _virtual_mode(self):
        """Give gdb its normal (virtual) memory view back, if xenscope switched it."""
        if not self._phys:
            return
        self._phys = False
        try:
            _packet("Qqemu.PhyMemMode:0")
        except gdb.error:             # connection gone: nothing left to restore
            pass

    @contextlib.contextmanager
    def batch(self):
        """One command's reads: physical mode is entered once, at the first read, and left on
        exit (also on error), instead of two extra round trips around every read. Register and
        frame work (:meth:`cpus`) switches back first, so gdb never unwinds in physical mode."""
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            if not self._depth:
                self._virtual_mode()

    def _read_phys(self, addr, size):
        if not self.qemu:
            what = "not QEMU's gdbstub" if self.ctype in ("remote", "extended-remote") else self.ctype
            raise Unsupported(f"physical reads are not available on this stub ({what}); "
                              "give a dump with `set xen dump FILE`")
        inferior = gdb.selected_inferior()
        try:
            self._physical_mode()
            try:
                return bytes(inferior.read_memory(addr, size))
            except gdb.MemoryError:
                raise NotInDump(addr, what="QEMU could not read it")
        finally:
            if not self._depth:
                self._virtual_mode()

    # -- registers ----------------------------------------------------------------------------
    def cpus(self):
        """One CpuState per thread (QEMU: per vCPU, in thread order); cached until the next stop."""
        if self._cpus is None:
            self._virtual_mode()          # frames may read stack/code memory: never in physical mode
            self._cpus = _frame_cpus(self.qemu or self.threads_are_cpus)
        return self._cpus

    def selected_cpu(self):
        """Index in :meth:`cpus` of gdb's selected thread (the default for --cpu), or 0."""
        return _selected_cpu(self.qemu or self.threads_are_cpus)

    def symbol(self, name):
        self._virtual_mode()
        return _gdb_symbol(name)

    def invalidate(self):
        super().invalidate()
        self._cpus = None


# ---------------------------------------------------------------------------------------------
# Xen's gdbsx: the library's target over gdb's guest-virtual reads
# ---------------------------------------------------------------------------------------------

def _read_guest_virtual(va, size):
    """gdbsx's one memory primitive: a read at guest-virtual ``va``. Small reads are gdb's (its m
    packets, at most 164 bytes each: gdbsx sends no PacketSize, so gdb keeps them to the size of
    its g reply); larger ones are xenscope's own m packets of up to :data:`gdbsx.M_PACKET_BYTES`
    (a 256 KiB P2M list: 129 packets instead of 1600)."""
    if size <= gdbsx.GDB_M_PACKET_BYTES:
        try:
            return bytes(gdb.selected_inferior().read_memory(va, size))
        except gdb.MemoryError:
            raise NotInDump(va, "va", gdbsx.READ_FAILED)
    out = bytearray()
    while len(out) < size:
        at = (va + len(out)) & ((1 << 64) - 1)
        count = min(gdbsx.M_PACKET_BYTES, size - len(out))
        reply = _packet(f"m{at:x},{count:x}")
        if reply is None or len(reply) != 2 * count or not gdbsx.is_hex(reply):
            raise NotInDump(at, "va", gdbsx.READ_FAILED)
        out += bytes.fromhex(reply)
    return bytes(out)


class GdbsxGdbTarget(gdbsx.GdbsxTarget):
    """:class:`xenstructs.targets.gdbsx.GdbsxTarget` over gdb: guest-virtual reads, symbols
    (``init_mm.pgd`` from debug information) and registers from gdb's frames; gdb's thread N-1 is
    vCPU N-1 (gdbsx's qfThreadInfo ``m0,1,..l``)."""

    def __init__(self, details):
        super().__init__(_read_guest_virtual, _gdb_symbol, evaluate=_gdb_value,
                         registers=lambda: _frame_cpus(True), machine=_selected_machine(), host="gdb")
        self.kind = gdbsx.KIND + (f" {details}" if details else "")

    def selected_cpu(self):
        """Index in :meth:`cpus` of gdb's selected thread (the default for --cpu)."""
        return _selected_cpu(True)
