"""GdbTarget: lets the library read what gdb has open.

- a core file (``gdb -c FILE`` / ``core-file FILE``): gdb maps core segments by p_vaddr, not by
  physical address, so the file itself is reopened with :func:`xenstructs.targets.open_dump`;
- ``set xen dump FILE``: that file, whatever gdb has open (kdump-compressed files gdb cannot read);
- a remote stub: registers from gdb's frames; physical memory through QEMU's ``Qqemu.PhyMemMode``
  when the stub is QEMU's, otherwise :class:`~xenstructs.errors.Unsupported`. Inside
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
    m = _CORE_RE.search(_info_target())
    if not m:
        return None
    return os.path.abspath(m.group(1))


def _file_key(path):
    st = os.stat(path)
    return (path, st.st_mtime_ns, st.st_size)


def _open_file(path, how):
    from xenstructs.targets import open_dump
    try:
        key = ("file", how) + _file_key(path)
    except OSError as e:
        raise XenscopeError(f"cannot open {path}: {e.strerror}")
    t = _cache.get(key)
    if t is None:
        drop(lambda k: k[0] == "file")
        t = open_dump(path)
        if how == "core":
            t.kind = f"gdb core file: {t.kind}"
        _cache[key] = t
    return t


def drop(which=lambda k: True):
    """Close and forget cached targets whose key matches ``which``."""
    for k in [k for k in _cache if which(k)]:
        try:
            _cache.pop(k).close()
        except Exception:
            pass


def invalidate(*_event):
    """gdb stopped or resumed: live memory and registers may have changed."""
    for k, t in _cache.items():
        if t.live:
            t.invalidate()


def get_target(dump=""):
    """The target commands read: ``set xen dump`` file, gdb's core file, or the live connection.

    :raises XenscopeError: when gdb has nothing open (the message says how to give a target).
    """
    if dump:
        return _open_file(os.path.abspath(os.path.expanduser(dump)), "dump")
    path = core_path()
    if path is not None:
        return _open_file(path, "core")
    inf = gdb.selected_inferior()
    conn = getattr(inf, "connection", None)
    if inf.pid == 0 and (conn is None or conn.type == "core"):
        raise XenscopeError(NO_TARGET)
    num = getattr(conn, "num", None) if conn is not None else getattr(inf, "connection_num", 0)
    ctype = conn.type if conn is not None else "remote"
    key = ("live", num, ctype, getattr(conn, "details", None))
    t = _cache.get(key)
    if t is None:
        drop(lambda k: k[0] == "live")
        t = GdbTarget(ctype, getattr(conn, "details", None))
        _cache[key] = t
    return t


def _machine(arch_name):
    if "x86-64" in arch_name or "x86_64" in arch_name:
        return "x86_64"
    if arch_name.startswith("i386"):
        return "i386"
    return arch_name


def _reg_int(frame, name):
    """A register's value as an unsigned int, or None when the stub does not provide it."""
    try:
        v = frame.read_register(name)
    except (ValueError, gdb.error):
        return None
    try:
        if v.is_optimized_out:
            return None
        n = int(v)
    except (gdb.error, TypeError, ValueError):
        try:                        # flags types (QEMU's cr0/cr4/efer) do not convert with int()
            n = int(v.format_string(format="x"), 16)
        except (gdb.error, ValueError):
            return None
    return n & ((1 << 64) - 1)


class GdbTarget(Target):
    """A live target through gdb: a QEMU gdbstub (physical reads), or another stub/process
    (registers only; physical reads raise Unsupported)."""

    live = True
    slow = True

    def __init__(self, ctype, details):
        super().__init__()
        self._phys = False            # xenscope switched the stub to physical mode (Qqemu.PhyMemMode:1)
        self._depth = 0               # nesting of batch()
        self.ctype = ctype
        self.details = details
        self.path = None
        self.qemu = ctype in ("remote", "extended-remote") and self._qemu_phys_mode() is not None
        where = f" {details}" if details else ""
        if self.qemu:
            self.kind = f"QEMU gdbstub (live){where}"
        elif ctype in ("remote", "extended-remote"):
            self.kind = f"gdb remote stub (live, not QEMU: registers only){where}"
        else:
            self.kind = f"gdb {ctype} target (live: registers only)"
        try:
            self.facts["machine"] = _machine(gdb.selected_frame().architecture().name())
        except gdb.error:
            pass
        self._cpus = None

    # -- QEMU physical-memory mode -----------------------------------------------------------
    @staticmethod
    def _packet(text):
        out = gdb.execute(f"maintenance packet {text}", to_string=True)
        m = re.search(r'received: "(.*)"', out)
        return m.group(1) if m else None

    def _qemu_phys_mode(self):
        try:
            ans = self._packet("qqemu.PhyMemMode")
        except gdb.error:
            return None
        return ans if ans in ("0", "1") else None

    def _physical_mode(self):
        """Switch the stub to physical reads (one packet), unless it already is."""
        if self._phys:
            return
        if self._packet("Qqemu.PhyMemMode:1") != "OK":
            raise Unsupported("QEMU refused physical-memory mode (Qqemu.PhyMemMode:1)")
        self._phys = True

    def _virtual_mode(self):
        """Give gdb its normal (virtual) memory view back, if xenscope switched it."""
        if not self._phys:
            return
        self._phys = False
        try:
            self._packet("Qqemu.PhyMemMode:0")
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
        inf = gdb.selected_inferior()
        try:
            self._physical_mode()
            try:
                return bytes(inf.read_memory(addr, size))
            except gdb.MemoryError:
                raise NotInDump(addr, what="QEMU could not read it")
        finally:
            if not self._depth:
                self._virtual_mode()

    # -- registers ----------------------------------------------------------------------------
    def cpus(self):
        """One CpuState per thread (QEMU: per vCPU, in thread order); cached until the next stop."""
        if self._cpus is not None:
            return self._cpus
        self._virtual_mode()          # frames may read stack/code memory: never in physical mode
        inf = gdb.selected_inferior()
        threads = sorted(inf.threads(), key=lambda t: t.num) if self.qemu else []
        cur = gdb.selected_thread()
        if not threads and cur is not None:
            threads = [cur]
        try:
            frame0 = gdb.selected_frame()
        except gdb.error:
            frame0 = None
        cpus = []
        try:
            for i, th in enumerate(threads):
                if th != cur:
                    th.switch()
                try:
                    frame = gdb.newest_frame() if th != cur or frame0 is None else frame0
                except gdb.error:
                    cpus.append(CpuState(i))
                    continue
                regs, src = {}, {}
                for gname, name in REGISTERS:
                    v = _reg_int(frame, gname)
                    if v is not None and name not in regs:
                        regs[name] = v
                        src[name] = f"gdb register (${gname})"
                cpus.append(CpuState(i, regs, src))
        finally:
            if cur is not None and cur.is_valid():
                cur.switch()
                if frame0 is not None and frame0.is_valid():
                    frame0.select()
        self._cpus = cpus
        return cpus

    def selected_cpu(self):
        """Index in :meth:`cpus` of gdb's selected thread (the default for --cpu), or 0."""
        cur = gdb.selected_thread()
        if cur is None or not self.qemu:
            return 0
        nums = sorted(t.num for t in gdb.selected_inferior().threads())
        return nums.index(cur.num) if cur.num in nums else 0

    def symbol(self, name):
        self._virtual_mode()
        try:
            v = gdb.parse_and_eval(f"&'{name}'")
            return int(v.cast(gdb.lookup_type("unsigned long long")))
        except gdb.error:
            return None

    def invalidate(self):
        super().invalidate()
        self._cpus = None
