"""Xen's gdbsx as a :class:`~xenstructs.target.Target`: a 64-bit PV guest's machine memory through
guest-virtual reads, the only memory gdbsx serves.

gdbsx (Xen's ``tools/debugger/gdbsx``; reference §6.2) answers gdb's ``m`` packets by walking vCPU
0's page tables in Xen, and gives nothing else: no physical reads, no CR0/CR3/CR4/EFER. This target
rebuilds what the library needs from that one primitive and the guest kernel's symbols:

- machine frame -> pfn: Xen's read-only M2P (``RO_MPT_VIRT_START``, L4 slot 256, guest-visible),
  checked against the guest's P2M list like Linux's ``mfn_to_pfn()``; when that cannot be read (a real
  gdbsx cannot: Xen maps the M2P with 2 MiB pages and gdbsx's walk refuses PSE) or gives garbage, the
  inverse of the guest's P2M list (``xen_p2m_addr``, read once, inverted with numpy). Linux sizes that
  list for memory hotplug (``xen_p2m_size`` is 2^27 entries on Debian's kernel: a 1 GiB virtual area,
  almost all of it the shared ``p2m_missing`` page); only the first ``xen_p2m_last_pfn`` entries can
  name a frame (``alloc_p2m()`` raises it whenever it populates a page of the list), so that many are
  read when the symbol is known;
- pfn -> bytes: the kernel's direct map (``page_offset_base``, else Linux's default PAGE_OFFSET)
  + ``pfn << 12``;
- the kernel's page-table root: the machine address of ``init_top_pgt`` (or ``init_level4_pgt``,
  ``swapper_pg_dir``, ``init_mm.pgd``), placed through the P2M or through Xen's linear page-table
  slot (``LINEAR_PT_SLOT``: entry 258 of every PV L4 maps that L4 itself);
- CR0/CR4/EFER assumed for a 64-bit PV guest.

32-bit PV guests are refused before any read (their P2M entries, M2P view and direct map differ;
no Xen or Linux Debian ships runs one: Debian's Xen 4.17 is built without CONFIG_PV32 and its 686
kernels without CONFIG_XEN_PV).

Walks read single entries (cached until :meth:`GdbsxTarget.invalidate`: the host calls it when the
guest stops or resumes); enumerations read whole tables (``slow``).

The host gives plain callables (gdb's adapter is ``gdbext/target.py``; the unit tests serve them
from an ``xl dump-core`` file):

``read_virtual(va, size) -> bytes``
    guest-virtual bytes through vCPU 0's tables (gdb's ``read_memory``); on failure raise
    :class:`~xenstructs.errors.NotInDump` (``NotInDump(va, "va", READ_FAILED)``).
``lookup_symbol(name) -> int | None``
    the host's own symbol table, asked before the kernel-syms file (:meth:`set_kernel_syms`).
``evaluate(expression) -> int | None`` (optional)
    a C expression's value from the host's debug information; only ``&init_mm.pgd`` is asked (an
    address: no memory is read to evaluate it), when no root symbol is known; the pointer itself is
    read with ``read_virtual``, counted like every other read.
``registers() -> [CpuState]`` (optional)
    the general registers the host has, one :class:`~xenstructs.target.CpuState` per vCPU.

No gdb here: this module is imported and tested without it.
"""

import os

from .. import decode
from ..errors import NoRegister, NotInDump, Unsupported, XenscopeError
from ..linux.memory_layout import (DIRECT_MAP_SIZE, KERNEL_START_48, PAGE_OFFSET_DEFAULT,
                                   START_KERNEL_MAP)
from ..target import PAGE_SIZE, Target
from ..xen.p2m import FOREIGN_FRAME_BIT, IDENTITY_FRAME_BIT
from ..xen.release import LINEAR_PT_SLOT, RO_MPT_VIRT_END, RO_MPT_VIRT_START, pml4_addr

KIND = "gdbsx (guest-virtual reads only; PV guest: MFN page tables via the guest's M2P view/P2M)"
READ_FAILED = "gdbsx could not read it through vCPU 0's page tables"
GDB_M_PACKET_BYTES = 164        # gdb's m packets on gdbsx: its g reply's size (no PacketSize from gdbsx)
M_PACKET_BYTES = 0x7FF          # the largest m gdbsx answers within its 4096-byte packet buffer: 2
                                # hex digits a byte and the NUL (gx_main.c process_m_request())

# gdbsx answers every monitor command but ``pgd3`` with this text, hex-encoded as the whole reply
# (gx_main.c _do_qRcmd_req(), no O packet): a probe no other stub answers the same way.
PROBE_COMMAND = "xenscope-probe"
BAD_MONITOR_REPLY = "Bad monitor command\n"

PAGE_SHIFT = 12
L4_SHIFT = 39
ENTRIES_PER_TABLE = 512
ENTRY_SIZE = 8                               # 64-bit PV: every table entry and P2M entry
ENTRY_FRAME_MASK = decode.frame_mask("4level")   # bits 12-51 of an entry: the frame it points to
PRESENT = 1
CR0_PE = 1
RO_MPT_SLOT = RO_MPT_VIRT_START >> L4_SHIFT & (ENTRIES_PER_TABLE - 1)
RO_MPT_ENTRIES = (RO_MPT_VIRT_END - RO_MPT_VIRT_START) // ENTRY_SIZE
VALID_M2P_TOP_BIT = 63                       # VALID_M2P(e): top bit clear
P2M_FLAG_BITS = FOREIGN_FRAME_BIT | IDENTITY_FRAME_BIT       # Linux's P2M flags (INVALID_P2M_ENTRY has both)
PAGE_OFFSET_ALIGN = 1 << 30                  # KASLR moves page_offset_base in whole 1 GiB steps
MAX_P2M_SIZE = 1 << 40                       # a larger xen_p2m_size is not a P2M list
MAX_FRAME = 1 << 52                          # 52-bit machine addresses
MAX_P2M_INVERSE = 1 << 21                    # entries read for the inverse P2M (16 MiB, 8 GiB guest)
MAX_ENTRY_CACHE = 1 << 16                    # cached entries and M2P answers, each
U64_MASK = (1 << 64) - 1

ROOT_SYMBOLS = ("init_top_pgt", "init_level4_pgt", "swapper_pg_dir")
ROOT_EXPRESSION = "init_mm.pgd"
ROOT_POINTER_EXPRESSION = "&init_mm.pgd"        # its address: gdb computes it without reading memory
ONLY_64BIT = "gdbsx: only 64-bit PV guests are handled (32-bit: give --cr3 and --mode pae on a dump)"
NEED_SYMS = ("gdbsx gives no CR3 and no physical reads: xenscope finds the page tables and the P2M "
             "from the guest kernel's symbols; `set xen kernel-syms /path/to/System.map` (or load "
             "the guest's vmlinux with `file`), or give --cr3 MADDR")

# What gdbsx cannot give and a 64-bit PV guest always has: (register, value, why)
ASSUMED_REGISTERS = (
    ("cr0", decode.CR0_PG | decode.CR0_WP | CR0_PE,
     "assumed: gdbsx gives no CR0; a PV guest runs under Xen's CR0 (PE, WP, PG)"),
    ("cr4", decode.CR4_PAE,
     "assumed: gdbsx gives no CR4; a 64-bit PV guest runs in long mode: 4-level paging "
     "(PAE; LA57 not assumed: give --mode 5level)"),
    ("efer", decode.EFER_LME | decode.EFER_LMA | decode.EFER_NXE,
     "assumed: gdbsx gives no EFER; long mode, NXE=1 (give --efer)"))


def answers_like_gdbsx(reply_hex):
    """True when ``reply_hex``, a stub's reply to ``qRcmd`` of :data:`PROBE_COMMAND`, is gdbsx's."""
    try:
        return bytes.fromhex(reply_hex or "").decode("latin-1") == BAD_MONITOR_REPLY
    except ValueError:
        return False


def is_hex(text):
    """Whether ``text`` is only (lowercase) hex digits: an ``m`` reply's data, not ``E01``."""
    return all(ch in "0123456789abcdef" for ch in text)


def linear_self_address(slot=LINEAR_PT_SLOT):
    """Virtual address of the L4 a vCPU runs on, seen through Xen's linear page-table slot: the
    slot taken four times deep maps that L4 itself as a data page."""
    return pml4_addr(slot) | slot << 30 | slot << 21 | slot << PAGE_SHIFT


class GdbsxTarget(Target):
    """Xen's gdbsx serving a 64-bit PV guest; built from the host's callables (module docstring).

    :meth:`read_phys` works on **machine** addresses, like an ``xl dump-core`` of the guest;
    :meth:`m2p` and :meth:`p2m` convert frames; :meth:`kernel_root` finds the kernel's top table.

    :param machine: ``"x86_64"`` or ``"i386"`` (the host's architecture), or None when unknown
    :param host: who answers :func:`lookup_symbol`/:func:`evaluate`, for the sources texts
    """

    kind = KIND
    live = True
    slow = True

    def __init__(self, read_virtual, lookup_symbol, evaluate=None, registers=None, machine=None,
                 host="the host"):
        super().__init__()
        self._read_virtual = read_virtual
        self._lookup_symbol = lookup_symbol
        self._evaluate = evaluate
        self._registers = registers
        self.host = host
        if machine is not None:
            self.facts["machine"] = machine
        self.facts.update(stub="gdbsx", guest="pv", space="machine")
        self.syms_path = ""
        self._kernel_syms = {}
        self._cpus = None
        self.m2p_view = None       # None: not tried; True: readable; else why it is not used
        self.stats.update(virt_reads=0, virt_bytes=0, m2p_reads=0)
        self._reset()

    def _reset(self):
        self._entries = {}               # (maddr, size) -> entry value (walks)
        self._m2p = {}                   # mfn -> pfn or None
        self._p2m = {}                   # pfn -> mfn or None (single entries)
        self._p2m_list = None            # the whole P2M list (numpy), once the inverse was needed
        self._inverse = None             # (mfns sorted, their pfns)
        self._p2m_location = None        # (va, size, source)
        self._root = None                # (maddr, source) or the XenscopeError finding it raised
        self._page_offset = None         # (value, source)
        self._vcpu0_root = None          # maddr, or False when unreadable

    def invalidate(self):
        """The guest ran: forget cached entries, frames, the root and the registers."""
        super().invalidate()
        self._reset()
        self._cpus = None

    # -- symbols -------------------------------------------------------------------------------
    def set_kernel_syms(self, path):
        """Use the guest kernel's System.map or vmlinux at ``path`` ("" for none)."""
        if path == self.syms_path:
            return
        self._kernel_syms = {}
        if path:
            from ..xen.host import load_symbols
            self._kernel_syms = load_symbols(path)
        self.syms_path = path
        self._reset()
        self._cpus = None          # their CR3 comes from the symbols

    def _symbol_and_source(self, name):
        """``(address, where it came from)`` or ``(None, None)``: the host's symbol table first."""
        va = self._lookup_symbol(name)
        if va is not None:
            return va, f"{self.host}'s symbol table"
        va = self._kernel_syms.get(name)
        if va is not None:
            return va, f"kernel-syms {os.path.basename(self.syms_path)}"
        return None, None

    def symbol(self, name):
        return self._symbol_and_source(name)[0]

    # -- guest-virtual reads (the only thing gdbsx does) ----------------------------------------
    def read_guest_virtual(self, va, size):
        """``size`` bytes at guest-virtual ``va`` through vCPU 0's tables (one host read)."""
        data = self._read_virtual(va, size)
        self.stats["virt_reads"] += 1
        self.stats["virt_bytes"] += size
        return data

    def _read_u64(self, va):
        return int.from_bytes(self.read_guest_virtual(va, ENTRY_SIZE), "little")

    def page_offset(self):
        """``(PAGE_OFFSET, source)``: ``page_offset_base``'s value when the symbol is known."""
        if self._page_offset is None:
            va, where = self._symbol_and_source("page_offset_base")
            value = PAGE_OFFSET_DEFAULT
            source = f"default {PAGE_OFFSET_DEFAULT:#x} (no page_offset_base symbol)"
            if va is not None:
                try:
                    base = self._read_u64(va)
                    if base >= KERNEL_START_48 and not base % PAGE_OFFSET_ALIGN:
                        value, source = base, f"page_offset_base ({where})"
                except NotInDump:
                    pass
            self._page_offset = (value, source)
        return self._page_offset

    # -- P2M and M2P -----------------------------------------------------------------------------
    def _require_64bit(self):
        """Refuse a guest that is not 64-bit before anything is read for it (module doc)."""
        if self.facts.get("machine") != "x86_64":
            raise Unsupported(ONLY_64BIT)

    def p2m_location(self):
        """``(xen_p2m_addr, entries, source)`` of the guest's linear P2M list: ``xen_p2m_size``
        entries, or only the first ``xen_p2m_last_pfn`` when that symbol is known (module doc)."""
        if self._p2m_location is None:
            self._require_64bit()
            addr_va, where = self._symbol_and_source("xen_p2m_addr")
            size_va, _ = self._symbol_and_source("xen_p2m_size")
            if addr_va is None or size_va is None:
                raise NoRegister(NEED_SYMS + " (xen_p2m_addr, xen_p2m_size: the guest's P2M list)")
            try:
                va, size = self._read_u64(addr_va), self._read_u64(size_va)
            except NotInDump as e:
                raise XenscopeError(f"cannot read xen_p2m_addr/xen_p2m_size ({where}): {e}") from None
            if not va or va % ENTRY_SIZE or not 0 < size <= MAX_P2M_SIZE:
                raise XenscopeError(f"xen_p2m_addr {va:#x} / xen_p2m_size {size:#x} do not describe a P2M list")
            source = f"xen_p2m_addr/xen_p2m_size ({where})"
            last = self._p2m_last_pfn(size)
            if last is not None:
                size, source = last, source + f"; its first xen_p2m_last_pfn {last:#x} entries"
            self._p2m_location = (va, size, source)
        return self._p2m_location

    def _p2m_last_pfn(self, size):
        """``xen_p2m_last_pfn`` when known, readable and within the list, else None."""
        last_va, _ = self._symbol_and_source("xen_p2m_last_pfn")
        if last_va is None:
            return None
        try:
            last = self._read_u64(last_va)
        except NotInDump:
            return None
        return last if 0 < last <= size else None

    @staticmethod
    def _p2m_value(entry):
        return None if entry & P2M_FLAG_BITS else entry

    def p2m(self, pfn):
        """Machine frame of ``pfn`` by the guest's P2M list, or None (hole, identity, beyond)."""
        if self._p2m_list is not None:
            if 0 <= pfn < len(self._p2m_list):
                return self._p2m_value(int(self._p2m_list[pfn]))
            return None
        if pfn in self._p2m:
            return self._p2m[pfn]
        va, size, _ = self.p2m_location()
        mfn = None
        if 0 <= pfn < size:
            try:
                mfn = self._p2m_value(self._read_u64(va + ENTRY_SIZE * pfn))
            except NotInDump:
                mfn = None
        self._p2m[pfn] = mfn
        return mfn

    def p2m_list(self):
        """The guest's whole P2M list (numpy ``<u8``), read once (one host read) and cached."""
        import numpy as np
        if self._p2m_list is None:
            va, size, _ = self.p2m_location()
            if size > MAX_P2M_INVERSE:
                raise XenscopeError(f"the guest's P2M list has {size} entries: reading more than "
                                    f"{MAX_P2M_INVERSE} over gdbsx is refused (a System.map with "
                                    "xen_p2m_last_pfn bounds it to the populated part)")
            self._p2m_list = np.frombuffer(self.read_guest_virtual(va, size * ENTRY_SIZE), "<u8")
        return self._p2m_list

    def _build_inverse(self):
        import numpy as np
        entries = self.p2m_list()
        pfns = np.nonzero((entries & np.uint64(P2M_FLAG_BITS)) == 0)[0]
        mfns = entries[pfns]
        order = np.argsort(mfns, kind="stable")
        self._inverse = (mfns[order], pfns[order])

    own_p2m_view = "gdbsx"

    def own_p2m_sources(self, opts, src, first, count):
        """Fill ``src`` (:class:`xenstructs.xen.p2m_sources.P2MSources`) for the P2M commands:
        :func:`xenstructs.targets.gdbsx_p2m.own_p2m_sources`."""
        from .gdbsx_p2m import own_p2m_sources
        own_p2m_sources(self, opts, src, first, count)

    def _m2p_view(self, mfn):
        """``(pfn or None, checked)``: ``mfn``'s pfn by Xen's RO M2P when the guest's P2M confirms
        it; ``checked`` False when the view did not answer for it. :attr:`m2p_view` notes whether the
        view answers (True), or why it is not used."""
        if self.m2p_view not in (None, True) or not 0 <= mfn < RO_MPT_ENTRIES:
            return None, False
        try:
            value = self._read_u64(RO_MPT_VIRT_START + ENTRY_SIZE * mfn)
            self.stats["m2p_reads"] += 1
        except NotInDump:
            self.m2p_view = (f"unreadable: Xen's RO M2P ({RO_MPT_VIRT_START:#x}, L4 slot {RO_MPT_SLOT}) "
                             "does not translate through gdbsx here")
            return None, False
        if not value >> VALID_M2P_TOP_BIT and self.p2m(value) == mfn:
            self.m2p_view = True
            return value, True
        return None, False

    def _distrust_view(self, mfn, pfn):
        """The view answered for ``mfn`` with no pfn the P2M confirms, yet the P2M's inverse says it
        is the guest's ``pfn``: a view never confirmed is garbage and is not asked again (instead of
        one wasted read per frame)."""
        if pfn is not None and self.m2p_view is None:
            self.m2p_view = (f"garbage: Xen's RO M2P ({RO_MPT_VIRT_START:#x}) does not give pfn {pfn:#x} "
                             f"for the guest's mfn {mfn:#x}")

    def _m2p_inverse(self, mfn):
        """``mfn``'s pfn by the inverse of the P2M list (built at the first call), or None."""
        import numpy as np
        if self._inverse is None:
            self._build_inverse()
        mfns, pfns = self._inverse
        i = int(np.searchsorted(mfns, np.uint64(mfn))) if 0 <= mfn < MAX_FRAME else len(mfns)
        if i < len(mfns) and int(mfns[i]) == mfn:
            return int(pfns[i])
        return None

    def m2p(self, mfn):
        """Pseudo-physical frame of machine frame ``mfn``, or None when the guest does not own it.

        The RO M2P first (one 8-byte read, checked with the P2M like Linux's ``mfn_to_pfn()``),
        then the inverse of the P2M list (built once)."""
        if mfn in self._m2p:
            return self._m2p[mfn]
        self._require_64bit()
        pfn, checked = self._m2p_view(mfn)
        if not checked:
            pfn = self._m2p_inverse(mfn)
            self._distrust_view(mfn, pfn)
        if len(self._m2p) > MAX_ENTRY_CACHE:
            self._m2p.clear()
        self._m2p[mfn] = pfn
        return pfn

    # -- machine memory ----------------------------------------------------------------------------
    def _read_phys(self, addr, size):
        self._require_64bit()
        page_offset, _ = self.page_offset()
        out = bytearray()
        while size:
            offset = addr & (PAGE_SIZE - 1)
            length = min(size, PAGE_SIZE - offset)
            pfn = self.m2p(addr >> PAGE_SHIFT)
            if pfn is None:
                raise NotInDump(addr, "ma", f"machine frame {addr >> PAGE_SHIFT:#x} is not one of the "
                                "guest's pages (gdbsx reads guest-virtual memory only: Xen's and other "
                                "domains' frames are out of reach)")
            out += self.read_guest_virtual(page_offset + (pfn << PAGE_SHIFT) + offset, length)
            addr += length
            size -= length
        return bytes(out)

    def read_entry(self, entry_addr, size):
        key = (entry_addr, size)
        value = self._entries.get(key)
        if value is None:
            value = super().read_entry(entry_addr, size)
            if len(self._entries) > MAX_ENTRY_CACHE:
                self._entries.clear()
            self._entries[key] = value
        return value

    def read_virt(self, va, size, root, mode):
        """Through vCPU 0's tables when ``root`` is theirs (one host read), else by walking."""
        root_maddr = getattr(root, "root", root)
        if root_maddr == self.vcpu0_root():
            return self.read_guest_virtual(va, size)
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

    def _read_or_none(self, va):
        try:
            return self._read_u64(va)
        except NotInDump:
            return None

    def _root_symbol(self):
        """``(name, va, where)`` of the kernel's top table: a root symbol, else ``init_mm.pgd``'s
        value (its address from the host's debug information, the pointer read like any read)."""
        for name in ROOT_SYMBOLS:
            va, where = self._symbol_and_source(name)
            if va is not None:
                return name, va, where
        pointer = self._evaluate(ROOT_POINTER_EXPRESSION) if self._evaluate is not None else None
        if pointer is None:
            raise NoRegister(NEED_SYMS)
        va = self._read_or_none(pointer)
        if not va:
            raise NoRegister(f"{ROOT_EXPRESSION} at {pointer:#x} cannot be read through gdbsx; give --cr3 MADDR")
        return ROOT_EXPRESSION, va, f"{self.host}'s debug information"

    def _pfn_of_kernel_address(self, va):
        """``(pfn, how)`` of a direct-map or kernel-image address, ``(None, why not)`` otherwise."""
        page_offset, _ = self.page_offset()
        if page_offset <= va < page_offset + DIRECT_MAP_SIZE:
            return (va - page_offset) >> PAGE_SHIFT, f"(va - PAGE_OFFSET {page_offset:#x}) >> 12"
        if va >= START_KERNEL_MAP:
            phys_base_va, _ = self._symbol_and_source("phys_base")
            phys_base = self._read_or_none(phys_base_va) if phys_base_va is not None else 0
            if phys_base is None:
                return None, f"phys_base at {phys_base_va:#x} cannot be read"
            pfn = ((va - START_KERNEL_MAP + phys_base) & U64_MASK) >> PAGE_SHIFT
            return pfn, f"(va - __START_KERNEL_map + phys_base {phys_base:#x}) >> 12"
        return None, "not a direct-map or kernel-image address"

    def _slot_entry(self, va):
        """``(entry, mfn, why not)`` of Xen's linear slot of the L4 at ``va``: ``mfn`` None when
        the entry is unreadable or not present."""
        entry = self._read_or_none(va + ENTRY_SIZE * LINEAR_PT_SLOT)
        if entry is None or not entry & PRESENT:
            return entry, None, "not present" if entry is not None else "unreadable"
        return entry, (entry & ENTRY_FRAME_MASK) >> PAGE_SHIFT, None

    def _self_reference_pfn(self, entry, mfn, page_offset):
        """``(pfn, why not)``: the pfn of the slot's frame ``mfn`` when that frame, read back
        through the direct map, holds the same ``entry`` in its own slot (a self-reference)."""
        try:
            pfn = self.m2p(mfn)
        except XenscopeError as e:
            return None, f"names mfn {mfn:#x} whose pfn is unknown ({e})"
        if pfn is None:
            return None, f"names mfn {mfn:#x}, not one of the guest's frames"
        back = self._read_or_none(page_offset + (pfn << PAGE_SHIFT) + ENTRY_SIZE * LINEAR_PT_SLOT)
        if back != entry:
            return None, f"names mfn {mfn:#x} (pfn {pfn:#x}) whose own slot differs"
        return pfn, None

    def _find_root(self):
        """The kernel's top table in machine memory: its pfn through the P2M, confirmed by (or,
        failing that, taken from) the self-reference in Xen's linear slot of that L4 (an M2P
        lookup, hence the P2M's inverse, only in that second case). Every read is guarded: what
        fails is said in the error."""
        self._require_64bit()
        name, va, where = self._root_symbol()
        page_offset, _ = self.page_offset()
        what = f"{name} {va:#x} ({where})"
        linear = f"L4[{LINEAR_PT_SLOT}]"
        pfn, how = self._pfn_of_kernel_address(va)
        mfn = self.p2m(pfn) if pfn is not None else None
        entry, slot_mfn, why = self._slot_entry(va)
        if mfn is not None and slot_mfn in (None, mfn):
            check = f", confirmed by its Xen linear slot {linear}" if slot_mfn else ""
            return mfn << PAGE_SHIFT, f"{what}: pfn {pfn:#x} = {how}, mfn {mfn:#x} by the guest's P2M{check}"
        slot_pfn = None
        if slot_mfn is not None:
            slot_pfn, why = self._self_reference_pfn(entry, slot_mfn, page_offset)
        if slot_pfn is not None:
            source = (f"{what}: its Xen linear slot {linear} holds its own mfn {slot_mfn:#x} "
                      f"(pfn {slot_pfn:#x}, read back through the direct map)")
            if pfn is not None:
                source += (f"; {how} = pfn {pfn:#x} " + ("is not in the P2M" if mfn is None else
                                                       f"gives mfn {mfn:#x}, another page"))
            return slot_mfn << PAGE_SHIFT, source
        placed = f"{how} gives pfn {pfn:#x}" if pfn is not None else how
        raise NoRegister(f"cannot place {what} in machine memory: {placed}, not in the guest's P2M, and "
                         f"its {linear} is not a self-reference ({why}); give --cr3 MADDR")

    def vcpu0_root(self):
        """Machine address of the L4 vCPU 0 runs on (the one gdbsx walks): Xen's linear slot read
        four times deep maps that L4, whose entry 258 holds its own mfn. None if unreadable."""
        if self._vcpu0_root is None and self.facts.get("machine") != "x86_64":
            self._vcpu0_root = False           # a 32-bit guest has no slot 258 to read
        if self._vcpu0_root is None:
            try:
                entry = self._read_u64(linear_self_address() + ENTRY_SIZE * LINEAR_PT_SLOT)
                self._vcpu0_root = (entry & ENTRY_FRAME_MASK) if entry & PRESENT else False
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
        """The host's registers (general ones only on gdbsx) plus what gdbsx cannot give: CR3 from
        the kernel symbols, CR0/CR4/EFER assumed for a 64-bit PV guest. Cached until invalidated."""
        if self._cpus is not None:
            return self._cpus
        cpus = list(self._registers()) if self._registers is not None else []
        self._cpus = cpus
        if self.facts.get("machine") != "x86_64":
            return cpus
        try:
            root, source = self.kernel_root()
        except XenscopeError:
            root = source = None
        for cpu in cpus:
            if root is not None and "cr3" not in cpu.regs:
                cpu.regs["cr3"], cpu.source["cr3"] = root, f"kernel symbols: {source}"
            for register, value, why in ASSUMED_REGISTERS:
                if register not in cpu.regs:
                    cpu.regs[register], cpu.source[register] = value, why
        return cpus

    def info_notes(self):
        """What ``xen info`` adds on gdbsx: where things come from and what cannot be done."""
        page_offset, page_offset_source = self.page_offset()
        notes = [f"memory: guest-virtual reads only (gdb m packets, walked by Xen through vCPU 0's "
                 f"tables); machine address -> pfn -> direct map {page_offset:#x} ({page_offset_source})"
                 " + pfn << 12"]
        if self.m2p_view is True:
            notes.append(f"mfn -> pfn: the guest's M2P view (RO M2P at {RO_MPT_VIRT_START:#x}), "
                         "checked against its P2M")
        elif self.m2p_view:
            notes.append(f"mfn -> pfn: M2P view {self.m2p_view}; using the inverse of the guest's P2M list")
        try:
            va, size, source = self.p2m_location()
            notes.append(f"P2M: list at {va:#x}, {size} entries ({source})")
        except XenscopeError as e:
            notes.append(f"P2M: unknown ({e})")
        notes.append(self._vcpu0_note())
        notes.append("cannot: physical reads of frames the guest does not own (Xen's, other domains'); "
                     "CR0/CR3/CR4/EFER (assumed, mode 4level); reads through 2M/1G guest mappings "
                     "(gdbsx refuses PSE); other vCPUs' address spaces (gdbsx walks vCPU 0's; "
                     "give --cr3 MADDR for another root)")
        notes.append(f"reads so far: {self.stats['virt_reads']} virtual reads, {self.stats['virt_bytes']} bytes")
        return notes

    def _vcpu0_note(self):
        vcpu0 = self.vcpu0_root()
        try:
            same = vcpu0 == self.kernel_root()[0]      # asked even when vCPU 0's L4 is unknown
        except XenscopeError:
            same = None
        if not vcpu0:
            return f"vCPU 0's L4: unknown (Xen's linear slot {LINEAR_PT_SLOT} not readable)"
        relation = {True: ": the kernel root used as CR3",
                    False: ": not the kernel root (a process's tables; give --cr3 to walk them)",
                    None: ""}[same]
        return (f"vCPU 0 (the tables gdbsx walks) runs on L4 maddr {vcpu0:#x} "
                f"(Xen's linear slot {LINEAR_PT_SLOT}){relation}")


__all__ = ["GdbsxTarget", "KIND", "READ_FAILED", "PROBE_COMMAND", "answers_like_gdbsx", "is_hex", "NEED_SYMS",
           "GDB_M_PACKET_BYTES", "M_PACKET_BYTES"]
