"""GdbTarget: lets the library read what gdb has open.

- a core file (``gdb -c FILE`` / ``core-file FILE``): gdb maps core segments by p_vaddr, not by
  physical address, so the file itself is reopened with :func:`xenstructs.targets.open_dump`;
- ``set xen dump FILE``: that file, whatever gdb has open (kdump-compressed files gdb cannot read);
- a remote stub: registers from gdb's frames; physical memory through QEMU's ``Qqemu.PhyMemMode``
  when the stub is QEMU's; on Xen's gdbsx (:class:`GdbsxTarget`) machine memory of the PV guest
  through guest-virtual reads of the kernel's direct map; otherwise
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

from xenstructs import decode as D
from xenstructs.errors import NoRegister, NotInDump, Unsupported, XenscopeError
from xenstructs.target import PAGE_SIZE, CpuState, Target

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
        t = _live_target(ctype, getattr(conn, "details", None))
        _cache[key] = t
    if isinstance(t, GdbsxTarget):
        t.set_kernel_syms(os.path.abspath(os.path.expanduser(kernel_syms)) if kernel_syms else "")
    return t


def _live_target(ctype, details):
    """Which live target this is: QEMU's gdbstub (``qqemu.PhyMemMode`` answered), Xen's gdbsx
    (QEMU's packet unanswered, no ``$cr3`` register, and ``monitor`` answered the way only gdbsx
    answers: hex of ``Bad monitor command``), or any other stub (registers only)."""
    t = GdbTarget(ctype, details)
    if t.qemu or ctype not in ("remote", "extended-remote"):
        return t
    try:
        has_cr3 = _reg_int(gdb.selected_frame(), "cr3") is not None
    except gdb.error:
        has_cr3 = False
    if not has_cr3 and GdbsxTarget.probe():
        return GdbsxTarget(ctype, details)
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
    threads_are_cpus = False      # QEMU (and gdbsx): one gdb thread per vCPU

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
        threads = sorted(inf.threads(), key=lambda t: t.num) if self.qemu or self.threads_are_cpus else []
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
        if cur is None or not (self.qemu or self.threads_are_cpus):
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


# ---------------------------------------------------------------------------------------------
# Xen's gdbsx: guest-virtual reads only
# ---------------------------------------------------------------------------------------------

GDBSX_KIND = "gdbsx (guest-virtual reads only; PV guest: MFN page tables via the guest's M2P view/P2M)"
GDBSX_PROBE = "xenscope-probe"              # gdbsx answers any monitor command but pgd3 like this:
GDBSX_BAD_MONITOR = "Bad monitor command\n"  # gx_main.c _do_qRcmd_req(), hex-encoded, no O packet
PAGE_OFFSET = 0xFFFF888000000000            # x86_64 direct map without KASLR (page_offset_base)
START_KERNEL_MAP = 0xFFFFFFFF80000000       # __START_KERNEL_map
RO_M2P = 0xFFFF800000000000                 # MACH2PHYS_VIRT_START (64-bit PV), L4 slot 256
RO_M2P_ENTRIES = (0xFFFF804000000000 - RO_M2P) >> 3
LINEAR_SLOT = 258                           # Xen's linear page-table slot: L4[258] maps the L4
FRAME_MASK = 0x000FFFFFFFFFF000
P2M_FLAG_BITS = 3 << 62                     # FOREIGN_FRAME_BIT, IDENTITY_FRAME_BIT (and INVALID)
MAX_P2M_INVERSE = 1 << 21                   # entries read for the inverse P2M (16 MiB, 8 GiB guest)
MAX_ENTRY_CACHE = 1 << 16
NEED_SYMS = ("gdbsx gives no CR3 and no physical reads: xenscope finds the page tables and the P2M "
             "from the guest kernel's symbols; `set xen kernel-syms /path/to/System.map` (or load "
             "the guest's vmlinux with `file`), or give --cr3 MADDR")


class GdbsxTarget(GdbTarget):
    """Xen's gdbsx serving a 64-bit PV guest: gdb's ``m`` packets read guest-virtual memory
    through vCPU 0's page tables, and nothing else (no physical reads, no CR0/CR3/CR4/EFER).

    :meth:`read_phys` works on **machine** addresses, like an ``xl dump-core`` of the guest: an
    mfn becomes a pfn through the guest's M2P view (the read-only M2P Xen maps at
    0xffff800000000000, checked against the guest's P2M), or, when that cannot be read or gives
    garbage, the inverse of the guest's own P2M list (``xen_p2m_addr``/``xen_p2m_size``, read
    once, inverted with numpy); the pfn is read at the kernel direct map (``page_offset_base``, else
    0xffff888000000000) + ``pfn << 12``. The page-table root is the machine address of
    ``init_top_pgt`` (or ``swapper_pg_dir``, ``init_mm.pgd``). Walks read single entries (cached
    until gdb stops or resumes); enumerations whole tables (``slow``).
    """

    threads_are_cpus = True       # gdbsx: thread N-1 is vCPU N-1 (qfThreadInfo "m0,1,..l")

    def __init__(self, ctype, details):
        super().__init__(ctype, details, qemu=False)
        self.kind = GDBSX_KIND + (f" {details}" if details else "")
        self.facts.update(stub="gdbsx", guest="pv", space="machine")
        self.syms_path = ""
        self._map = {}
        self.m2p_view = None       # None: not tried; True: readable; else why it is not used
        self.stats.update(virt_reads=0, virt_bytes=0, m2p_reads=0)
        self._reset()

    @staticmethod
    def probe():
        """True when the stub answers ``monitor`` like gdbsx (any command but ``pgd3``)."""
        try:
            ans = GdbTarget._packet("qRcmd," + GDBSX_PROBE.encode().hex())
        except gdb.error:
            return False
        try:
            return bytes.fromhex(ans or "").decode("latin-1") == GDBSX_BAD_MONITOR
        except ValueError:
            return False

    def _reset(self):
        self._entries = {}         # (maddr, size) -> entry value (walks)
        self._m2p = {}             # mfn -> pfn or None
        self._p2m = {}             # pfn -> mfn or None (single entries)
        self._p2m_arr = None       # the whole P2M list (numpy), once the inverse was needed
        self._inverse = None       # (mfns sorted, their pfns)
        self._p2m_loc = None       # (va, size, source)
        self._root = None          # (maddr, source) or the XenscopeError finding it raised
        self._page_offset = None   # (value, source)
        self._vcpu0_root = None

    def invalidate(self):
        super().invalidate()
        self._reset()

    # -- symbols -------------------------------------------------------------------------------
    def set_kernel_syms(self, path):
        if path == self.syms_path:
            return
        self._map = {}
        if path:
            from xenstructs.xen.host import load_symbols
            self._map = load_symbols(path)
        self.syms_path = path
        self._reset()
        self._cpus = None          # their CR3 comes from the symbols

    def _sym(self, name):
        """``(address, where it came from)`` or ``(None, None)``: gdb's symbol table first."""
        va = GdbTarget.symbol(self, name)
        if va is not None:
            return va, "gdb's symbol table"
        va = self._map.get(name)
        if va is not None:
            return va, f"kernel-syms {os.path.basename(self.syms_path)}"
        return None, None

    def symbol(self, name):
        return self._sym(name)[0]

    # -- guest-virtual reads (the only thing gdbsx does) ----------------------------------------
    def _vread(self, va, size):
        try:
            data = bytes(gdb.selected_inferior().read_memory(va, size))
        except gdb.MemoryError:
            raise NotInDump(va, "va", "gdbsx could not read it through vCPU 0's page tables")
        self.stats["virt_reads"] += 1
        self.stats["virt_bytes"] += size
        return data

    def _u64(self, va):
        return int.from_bytes(self._vread(va, 8), "little")

    def page_offset(self):
        """``(PAGE_OFFSET, source)``: ``page_offset_base``'s value when the symbol is known."""
        if self._page_offset is None:
            va, where = self._sym("page_offset_base")
            val, src = PAGE_OFFSET, "default 0xffff888000000000 (no page_offset_base symbol)"
            if va is not None:
                try:
                    v = self._u64(va)
                    if v >= RO_M2P and not v & ((1 << 30) - 1):
                        val, src = v, f"page_offset_base ({where})"
                except NotInDump:
                    pass
            self._page_offset = (val, src)
        return self._page_offset

    # -- P2M and M2P -----------------------------------------------------------------------------
    def p2m_location(self):
        """``(xen_p2m_addr, xen_p2m_size, source)`` of the guest's linear P2M list."""
        if self._p2m_loc is None:
            a, where = self._sym("xen_p2m_addr")
            n, _ = self._sym("xen_p2m_size")
            if a is None or n is None:
                raise NoRegister(NEED_SYMS + " (xen_p2m_addr, xen_p2m_size: the guest's P2M list)")
            va, size = self._u64(a), self._u64(n)
            if not va or va & 7 or not 0 < size <= 1 << 40:
                raise XenscopeError(f"xen_p2m_addr {va:#x} / xen_p2m_size {size:#x} do not describe a P2M list")
            self._p2m_loc = (va, size, f"xen_p2m_addr/xen_p2m_size ({where})")
        return self._p2m_loc

    @staticmethod
    def _p2m_value(v):
        return None if v & P2M_FLAG_BITS else v

    def p2m(self, pfn):
        """Machine frame of ``pfn`` by the guest's P2M list, or None (hole, identity, beyond)."""
        if self._p2m_arr is not None:
            return self._p2m_value(int(self._p2m_arr[pfn])) if 0 <= pfn < len(self._p2m_arr) else None
        if pfn in self._p2m:
            return self._p2m[pfn]
        va, size, _ = self.p2m_location()
        mfn = None
        if 0 <= pfn < size:
            try:
                mfn = self._p2m_value(self._u64(va + 8 * pfn))
            except NotInDump:
                mfn = None
        self._p2m[pfn] = mfn
        return mfn

    def _build_inverse(self):
        import numpy as np
        va, size, src = self.p2m_location()
        if size > MAX_P2M_INVERSE:
            raise XenscopeError(f"the guest's P2M list has {size} entries: inverting more than "
                                f"{MAX_P2M_INVERSE} over gdbsx is refused")
        arr = np.frombuffer(self._vread(va, size * 8), "<u8")
        ok = np.nonzero((arr & np.uint64(P2M_FLAG_BITS)) == 0)[0]
        mfns = arr[ok]
        order = np.argsort(mfns, kind="stable")
        self._p2m_arr = arr
        self._inverse = (mfns[order], ok[order])

    def m2p(self, mfn):
        """Pseudo-physical frame of machine frame ``mfn``, or None when the guest does not own it.

        The RO M2P first (one 8-byte read, checked with the P2M like Linux's ``mfn_to_pfn()``),
        then the inverse of the P2M list (built once)."""
        if mfn in self._m2p:
            return self._m2p[mfn]
        pfn = None
        if self.m2p_view in (None, True) and 0 <= mfn < RO_M2P_ENTRIES:
            try:
                v = self._u64(RO_M2P + 8 * mfn)
                self.stats["m2p_reads"] += 1
            except NotInDump:
                self.m2p_view = ("unreadable: Xen's RO M2P (0xffff800000000000, L4 slot 256) does "
                                 "not translate through gdbsx here")
            else:
                if not v >> 63 and self.p2m(v) == mfn:
                    pfn, self.m2p_view = v, True
        if pfn is None:
            if self._inverse is None:
                self._build_inverse()
            import numpy as np
            keys, pfns = self._inverse
            i = int(np.searchsorted(keys, np.uint64(mfn))) if 0 <= mfn < 1 << 52 else len(keys)
            if i < len(keys) and int(keys[i]) == mfn:
                pfn = int(pfns[i])
        if len(self._m2p) > MAX_ENTRY_CACHE:
            self._m2p.clear()
        self._m2p[mfn] = pfn
        return pfn

    # -- machine memory ----------------------------------------------------------------------------
    def _read_phys(self, addr, size):
        po, _ = self.page_offset()
        out = bytearray()
        while size:
            off = addr & (PAGE_SIZE - 1)
            n = min(size, PAGE_SIZE - off)
            pfn = self.m2p(addr >> 12)
            if pfn is None:
                raise NotInDump(addr, "ma", f"machine frame {addr >> 12:#x} is not one of the guest's "
                                "pages (gdbsx reads guest-virtual memory only: Xen's and other "
                                "domains' frames are out of reach)")
            out += self._vread(po + (pfn << 12) + off, n)
            addr += n
            size -= n
        return bytes(out)

    def read_entry(self, entry_addr, size):
        key = (entry_addr, size)
        v = self._entries.get(key)
        if v is None:
            v = super().read_entry(entry_addr, size)
            if len(self._entries) > MAX_ENTRY_CACHE:
                self._entries.clear()
            self._entries[key] = v
        return v

    def read_virt(self, va, size, root, mode):
        """Through vCPU 0's tables when ``root`` is theirs (one gdb read), else by walking."""
        r = getattr(root, "root", root)
        if r == self.vcpu0_root():
            return self._vread(va, size)
        return super().read_virt(va, size, root, mode)

    # -- page-table roots --------------------------------------------------------------------------
    def kernel_root(self):
        """``(machine address, source)`` of the kernel's top page table; raises with what to set."""
        if self._root is None:
            try:
                self._root = self._find_root()
            except XenscopeError as e:
                self._root = e
        if isinstance(self._root, XenscopeError):
            raise self._root
        return self._root

    def _find_root(self):
        if self.facts.get("machine") != "x86_64":
            raise Unsupported("gdbsx: only 64-bit PV guests are handled (32-bit: give --cr3 and --mode pae)")
        name = va = where = None
        for n in ("init_top_pgt", "init_level4_pgt", "swapper_pg_dir"):
            va, where = self._sym(n)
            if va is not None:
                name = n
                break
        if va is None:
            try:
                v = gdb.parse_and_eval("init_mm.pgd")
                va = int(v.cast(gdb.lookup_type("unsigned long long")))
                name, where = "init_mm.pgd", "gdb's debug information"
            except gdb.error:
                raise NoRegister(NEED_SYMS)
        po, _ = self.page_offset()
        what = f"{name} {va:#x} ({where})"
        pfn_c = how = None
        if po <= va < po + (1 << 46):
            pfn_c, how = (va - po) >> 12, f"(va - PAGE_OFFSET {po:#x}) >> 12"
        elif va >= START_KERNEL_MAP:
            pb_va, _ = self._sym("phys_base")
            phys_base = self._u64(pb_va) if pb_va is not None else 0
            pfn_c = (va - START_KERNEL_MAP + phys_base) & ((1 << 64) - 1)
            pfn_c >>= 12
            how = f"(va - __START_KERNEL_map + phys_base {phys_base:#x}) >> 12"
        mfn_c = self.p2m(pfn_c) if pfn_c is not None else None
        try:
            e = self._u64(va + 8 * LINEAR_SLOT)
        except NotInDump:
            e = None
        slot = (e & FRAME_MASK) >> 12 if e is not None and e & 1 else None
        if mfn_c is not None and slot in (None, mfn_c):
            check = ", confirmed by its Xen linear slot L4[258]" if slot else ""
            return mfn_c << 12, f"{what}: pfn {pfn_c:#x} = {how}, mfn {mfn_c:#x} by the guest's P2M{check}"
        if slot is not None:
            pfn_s = self.m2p(slot)
            if pfn_s is not None and self._u64(po + (pfn_s << 12) + 8 * LINEAR_SLOT) == e:
                src = (f"{what}: its Xen linear slot L4[258] holds its own mfn {slot:#x} (pfn {pfn_s:#x}, "
                       "read back through the direct map)")
                if pfn_c is not None:
                    src += (f"; {how} = pfn {pfn_c:#x} " + ("is not in the P2M" if mfn_c is None else
                                                             f"gives mfn {mfn_c:#x}, another page"))
                return slot << 12, src
        raise NoRegister(f"cannot place {what} in machine memory: {how or 'not a direct-map or kernel-image address'}"
                         f" gives pfn {pfn_c if pfn_c is None else hex(pfn_c)}, not in the guest's P2M, and "
                         "its L4[258] is not a self-reference; give --cr3 MADDR")

    def vcpu0_root(self):
        """Machine address of the L4 vCPU 0 runs on (the one gdbsx walks): Xen's linear slot read
        four times deep maps that L4, whose entry 258 holds its own mfn. None if unreadable."""
        if self._vcpu0_root is None:
            s = LINEAR_SLOT
            va = 0xFFFF000000000000 | s << 39 | s << 30 | s << 21 | s << 12
            try:
                e = self._u64(va + 8 * s)
                self._vcpu0_root = (e & FRAME_MASK) if e & 1 else False
            except NotInDump:
                self._vcpu0_root = False
        return self._vcpu0_root or None

    def missing_hint(self):
        """Why no CR3 could be given (the root search's error), for a command's error message."""
        try:
            self.kernel_root()
        except XenscopeError as e:
            return str(e)
        return None

    # -- registers ---------------------------------------------------------------------------------
    def cpus(self):
        """gdb's registers (general ones only on gdbsx) plus what gdbsx cannot give: CR3 from the
        kernel symbols, CR0/CR4/EFER assumed for a 64-bit PV guest."""
        if self._cpus is not None:
            return self._cpus
        cpus = super().cpus()
        if self.facts.get("machine") != "x86_64":
            return cpus
        try:
            root, src = self.kernel_root()
        except XenscopeError:
            root = src = None
        for c in cpus:
            if root is not None and "cr3" not in c.regs:
                c.regs["cr3"], c.source["cr3"] = root, f"kernel symbols: {src}"
            for reg, val, why in (
                    ("cr0", D.CR0_PG | D.CR0_WP | 1,
                     "assumed: gdbsx gives no CR0; a PV guest runs under Xen's CR0 (PE, WP, PG)"),
                    ("cr4", D.CR4_PAE,
                     "assumed: gdbsx gives no CR4; a 64-bit PV guest runs in long mode: 4-level paging "
                     "(PAE; LA57 not assumed: give --mode 5level)"),
                    ("efer", D.EFER_LME | D.EFER_LMA | D.EFER_NXE,
                     "assumed: gdbsx gives no EFER; long mode, NXE=1 (give --efer)")):
                if reg not in c.regs:
                    c.regs[reg], c.source[reg] = val, why
        self._cpus = cpus
        return cpus

    def info_notes(self):
        """What ``xen info`` adds on gdbsx: where things come from and what cannot be done."""
        po, po_src = self.page_offset()
        notes = [f"memory: guest-virtual reads only (gdb m packets, walked by Xen through vCPU 0's "
                 f"tables); machine address -> pfn -> direct map {po:#x} ({po_src}) + pfn << 12"]
        if self.m2p_view is True:
            notes.append("mfn -> pfn: the guest's M2P view (RO M2P at 0xffff800000000000), checked against its P2M")
        elif self.m2p_view:
            notes.append(f"mfn -> pfn: M2P view {self.m2p_view}; using the inverse of the guest's P2M list")
        try:
            va, size, src = self.p2m_location()
            notes.append(f"P2M: list at {va:#x}, {size} entries ({src})")
        except XenscopeError as e:
            notes.append(f"P2M: unknown ({e})")
        v0 = self.vcpu0_root()
        try:
            same = v0 == self.kernel_root()[0]
        except XenscopeError:
            same = None
        rel = {True: ": the kernel root used as CR3", False: ": not the kernel root (a process's "
               "tables; give --cr3 to walk them)", None: ""}[same]
        notes.append(f"vCPU 0 (the tables gdbsx walks) runs on L4 maddr {v0:#x} (Xen's linear slot 258){rel}"
                     if v0 else "vCPU 0's L4: unknown (Xen's linear slot 258 not readable)")
        notes.append("cannot: physical reads of frames the guest does not own (Xen's, other domains'); "
                     "CR0/CR3/CR4/EFER (assumed, mode 4level); reads through 2M/1G guest mappings "
                     "(gdbsx refuses PSE); other vCPUs' address spaces (gdbsx walks vCPU 0's; "
                     "give --cr3 MADDR for another root)")
        notes.append(f"reads so far: {self.stats['virt_reads']} virtual reads, {self.stats['virt_bytes']} bytes")
        return notes
