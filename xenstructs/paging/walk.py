"""One walk, as the CPU does it: every level kept (:class:`Walk`), and reads through it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from .. import decode
from ..errors import NotInDump, XenscopeError
from .model import GEOMETRY, STOP_REASONS, Paging, canonical


@dataclass
class Level:
    """One step of a walk: which table, which index, what entry was found there."""
    name: str                    # entry name: PML5E PML4E PDPTE PDE PTE
    table: int                   # physical address of the table
    index: int
    entry_addr: int              # physical address of the entry
    entry: Optional[int] = None  # None when the table is not in the dump
    recursive: bool = False      # this table already appeared higher up in the same walk
    warning: Optional[str] = None
    paging: Optional["Paging"] = field(default=None, repr=False, compare=False)

    @property
    def decoded(self):
        """:func:`~xenstructs.decode.decode_entry` of the entry (computed on first use), or None."""
        if self.entry is None or self.paging is None:
            return None
        d = self.__dict__.get("_decoded")
        if d is None:
            pg = self.paging
            d = decode.decode_entry(self.entry, pg.mode, self.name, pg.nxe, pg.maxphyaddr, pg.cr4)
            self.__dict__["_decoded"] = d
        return d


@dataclass
class Walk:
    """The result of translating one virtual address."""
    va: int
    mode: str
    root: int
    levels: List[Level] = field(default_factory=list)
    pa: Optional[int] = None
    page_size: Optional[int] = None
    writable: Optional[bool] = None   # RW at every level
    user: Optional[bool] = None       # US at every level
    nx: Optional[bool] = None         # XD at any level while EFER.NXE=1
    stop: Optional[str] = None        # key of STOP_REASONS when the walk did not reach a page
    stop_level: Optional[str] = None

    @property
    def ok(self):
        return self.stop is None

    def describe_stop(self):
        if self.stop is None:
            return None
        where = f" at {self.stop_level}" if self.stop_level else ""
        return f"{STOP_REASONS[self.stop]}{where}"


def walk(target, paging, va):
    """Translate ``va`` through the tables at ``paging.root``, reading single entries.

    :return: :class:`Walk`; ``walk.pa`` is set when a page is mapped, else ``walk.stop`` says why.
    """
    mode = paging.mode
    esize, shifts, widths, bits = GEOMETRY[mode]
    res = Walk(va=va, mode=mode, root=paging.root)
    if bits == 32:
        if va >> 32:
            res.stop = "out-of-range"
            return res
    elif canonical(va, mode) != va:
        res.stop = "non-canonical"
        return res
    names = decode.LEVELS[mode]
    table = paging.root
    rw = us = True
    nx = False
    seen = set()
    for name, shift, width in zip(names, shifts, widths):
        idx = va >> shift & ((1 << width) - 1)
        entry_addr = table + idx * esize
        lvl = Level(decode.ENTRY_NAMES[name], table, idx, entry_addr)
        res.levels.append(lvl)
        # A table met again lower in the same walk is a recursive (self-referencing) entry, like
        # Xen's linear page-table slot. The CPU simply uses it as a lower-level table; so do we,
        # and say so. Only enumeration refuses to descend into it (it would list tables as pages).
        lvl.recursive = table in seen
        seen.add(table)
        try:
            value = target.read_entry(entry_addr, esize)
        except NotInDump:
            res.stop, res.stop_level = "not-in-dump", lvl.name
            return res
        lvl.entry = value
        lvl.paging = paging             # the full decode is made only when someone asks for it
        if not value & 1:
            res.stop, res.stop_level = "not-present", lvl.name
            return res
        if decode.reserved_bits(value, mode, name, paging.nxe, paging.maxphyaddr, paging.cr4):
            res.stop, res.stop_level = "reserved", lvl.name
            return res
        if mode == "pae" and name == "PDPT":              # PAE PDPTEs carry no rights
            load_rsv = decode.cr3_load_reserved_bits(value, mode, name)
            if load_rsv:
                lvl.warning = (f"bits {load_rsv:#x} are reserved in a PAE PDPTE: loading this CR3 "
                               "would raise #GP (QEMU's TCG sets A, bit 5, itself)")
        else:
            rw &= bool(value & 2)
            us &= bool(value & 4)
            nx |= paging.nxe and bool(value >> 63 & 1) and esize == 8
        large = decode.is_large(value, mode, name, paging.cr4)
        addr = decode.entry_address(value, mode, name, large, paging.maxphyaddr)
        if large or name == "PT":
            size = 1 << shift
            res.pa = addr + (va & (size - 1))
            res.page_size = size
            res.writable, res.user, res.nx = rw, us, nx
            return res
        table = addr
    raise AssertionError("walk fell off the last level")


def translate(target, paging, va):
    """Physical address of ``va`` or raise :class:`XenscopeError` saying where the walk stopped."""
    w = walk(target, paging, va)
    if w.pa is None:
        raise XenscopeError(f"va {va:#x} does not translate: {w.describe_stop()}")
    return w.pa


def read_virt(target, va, size, root, mode, nxe=True):
    """Read ``size`` bytes of virtual memory, page by page, through the tables at ``root``."""
    paging = root if isinstance(root, Paging) else Paging(mode, root, nxe)
    out = bytearray()
    while size > 0:
        pa = translate(target, paging, va)
        n = min(size, 0x1000 - (va & 0xFFF))
        out += target.read_phys(pa, n)
        va += n
        size -= n
    return bytes(out)
