"""Many translations at once (:func:`translate_many`): each distinct table page read once, the
walks done with numpy, millions of addresses per second; every element answers as :func:`walk`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:                # annotations only: numpy is imported where it is used
    import numpy as np

from .. import decode
from ..errors import NotInDump
from .model import GEOMETRY, PAGE, TABLE_CHUNK, reserved_mask


# Stop reasons of :func:`translate_many` as small integers (0: the address translated).
STOP_CODES = (None, "not-present", "reserved", "not-in-dump", "non-canonical", "out-of-range")
_STOP_CODE = {name: i for i, name in enumerate(STOP_CODES)}
TRANSLATE_CHUNK = 1 << 20        # addresses translated together (bounds the temporary arrays)


@dataclass
class Translations:
    """Results of :func:`translate_many` as parallel numpy arrays, one element per address.

    ``pa`` and ``page_size`` (uint64) are 0 where ``ok`` is False; ``rw``, ``us``, ``nx`` are the
    effective rights (as :class:`Walk` has them) and False on failures. ``stop`` holds an index
    into :data:`STOP_CODES` (0 when ``ok``) and ``stop_level`` the index of the level in
    ``decode.LEVELS[mode]`` where the walk stopped (-1 when it stopped before reading any entry,
    or did not stop).
    """
    mode: str
    va: np.ndarray
    pa: np.ndarray
    page_size: np.ndarray
    ok: np.ndarray
    rw: np.ndarray
    us: np.ndarray
    nx: np.ndarray
    stop: np.ndarray
    stop_level: np.ndarray

    def __len__(self):
        return len(self.va)

    def stop_name(self, i):
        """``walk(...).stop`` of element ``i`` (a key of :data:`STOP_REASONS`, or None)."""
        return STOP_CODES[int(self.stop[i])]

    def stop_level_name(self, i):
        """``walk(...).stop_level`` of element ``i`` (``"PDE"``...), or None."""
        lv = int(self.stop_level[i])
        return decode.ENTRY_NAMES[decode.LEVELS[self.mode][lv]] if lv >= 0 else None


def read_entries(target, eaddr, esize):
    """Entries at physical addresses ``eaddr`` (uint64 array): ``(values, missing mask)``.

    Each distinct 4 KiB page is read once through ``target.read_table`` (cached on slow hosts, a
    slice of the mmap on files) and the entries gathered with numpy, :data:`TABLE_CHUNK` pages at
    a time. Entries of pages that cannot be read whole (a hole, or a page only partly held) and
    entries that are not naturally aligned are read one by one with ``target.read_entry``, exactly
    as :func:`walk` reads them, so a partly held page behaves as it does there.
    """
    import numpy as np
    n = len(eaddr)
    vals = np.zeros(n, np.uint64)
    missing = np.zeros(n, bool)
    dtype = np.dtype("<u4") if esize == 4 else np.dtype("<u8")
    nent = PAGE // esize
    aligned = (eaddr & np.uint64(esize - 1)) == 0
    single = np.nonzero(~aligned)[0]
    sel_all = np.nonzero(aligned)[0] if len(single) else None
    ea = eaddr if sel_all is None else eaddr[sel_all]
    pages, inv = np.unique(ea >> np.uint64(12), return_inverse=True)
    inv = inv.ravel()
    off = ((ea & np.uint64(0xFFF)) // np.uint64(esize)).astype(np.intp)
    order = np.argsort(inv, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(inv, minlength=len(pages)))])
    zero = bytes(PAGE)
    bad_pages = []
    for b0 in range(0, len(pages), TABLE_CHUNK):
        raws = []
        for k, page in enumerate(pages[b0:b0 + TABLE_CHUNK].tolist(), b0):
            try:
                raws.append(target.read_table(page << 12))
            except NotInDump:
                raws.append(zero)
                bad_pages.append(k)
        buf = np.frombuffer(b"".join(raws), dtype=dtype).reshape(len(raws), nent)
        sel = order[bounds[b0]:bounds[min(b0 + TABLE_CHUNK, len(pages))]]
        got = buf[inv[sel] - b0, off[sel]]
        vals[sel if sel_all is None else sel_all[sel]] = got
    if bad_pages:
        idx = np.concatenate([order[bounds[k]:bounds[k + 1]] for k in bad_pages])
        single = np.concatenate([single, idx if sel_all is None else sel_all[idx]])
    if len(single):
        uniq, uinv = np.unique(eaddr[single], return_inverse=True)
        uvals = np.zeros(len(uniq), np.uint64)
        umiss = np.zeros(len(uniq), bool)
        for k, a in enumerate(uniq.tolist()):
            try:
                uvals[k] = target.read_entry(a, esize)
            except NotInDump:
                umiss[k] = True
        vals[single] = uvals[uinv.ravel()]
        missing[single] = umiss[uinv.ravel()]
    return vals, missing


def translate_many(target, paging, vas, chunk=None):
    """Translate many virtual addresses at once; element ``i`` answers as ``walk(target, paging,
    vas[i])`` does (``pa``, ``page_size``, rights, ``stop`` and ``stop_level``).

    Level by level for all addresses together: entry addresses are computed with numpy, each
    distinct table page is read once (:func:`read_entries`) and the rules of :func:`walk` are
    applied to whole arrays (present bit, reserved bits with the masks :func:`enumerate_mappings`
    uses, large pages in PDs and 64-bit PDPTs, PSE-36, PAE PDPTEs without rights, canonical
    form). Addresses are processed :data:`TRANSLATE_CHUNK` at a time, so memory stays bounded.

    :param vas: integers or a numpy array (taken as uint64)
    :return: :class:`Translations`
    """
    import numpy as np
    if isinstance(vas, (list, tuple, range)):
        vas = np.fromiter(vas, dtype=np.uint64, count=len(vas))
    vas = np.ascontiguousarray(np.asarray(vas, dtype=np.uint64).ravel())
    n = len(vas)
    chunk = chunk or TRANSLATE_CHUNK
    res = Translations(paging.mode, vas, np.zeros(n, np.uint64), np.zeros(n, np.uint64),
                       np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool),
                       np.zeros(n, np.uint8), np.full(n, -1, np.int8))
    for c0 in range(0, n, chunk):
        _translate_chunk(target, paging, vas, res, c0, min(n, c0 + chunk))
    return res


def _translate_chunk(target, paging, vas, res, c0, c1):
    import numpy as np
    u64 = np.uint64
    mode = paging.mode
    esize, shifts, widths, bits = GEOMETRY[mode]
    names = decode.LEVELS[mode]
    fmask = u64(decode.frame_mask(mode, paging.maxphyaddr))
    va = vas[c0:c1]
    idx = np.arange(c0, c1)
    if bits == 32:
        bad = va >> u64(32) != 0
        res.stop[idx[bad]] = _STOP_CODE["out-of-range"]
    else:
        low = va & u64((1 << bits) - 1)
        sign = (low >> u64(bits - 1)) & u64(1) != 0
        ext = np.where(sign, low | u64(((1 << 64) - 1) & ~((1 << bits) - 1)), low)
        bad = ext != va
        res.stop[idx[bad]] = _STOP_CODE["non-canonical"]
    keep = ~bad
    idx, va = idx[keep], va[keep]
    table = np.full(len(idx), paging.root, np.uint64)
    rw = np.ones(len(idx), bool)
    us = np.ones(len(idx), bool)
    nx = np.zeros(len(idx), bool)
    for li, (name, shift, width) in enumerate(zip(names, shifts, widths)):
        if not len(idx):
            return
        eaddr = table + ((va >> u64(shift)) & u64((1 << width) - 1)) * u64(esize)
        val, missing = read_entries(target, eaddr, esize)
        present = (val & u64(1)) != 0
        can_be_large = (name == "PD" and not (mode == "2level" and not paging.cr4 & decode.CR4_PSE)) or \
                       (name == "PDPT" and mode in ("4level", "5level"))
        large = present & ((val & u64(0x80)) != 0) if can_be_large else np.zeros(len(idx), bool)
        rsv = np.where(large, u64(reserved_mask(paging, name, True)),
                       u64(reserved_mask(paging, name, False)))
        reserved = present & ((val & rsv) != 0)
        stop = np.zeros(len(idx), np.uint8)
        stop[~present] = _STOP_CODE["not-present"]
        stop[reserved] = _STOP_CODE["reserved"]
        stop[missing] = _STOP_CODE["not-in-dump"]
        failed = stop != 0
        res.stop[idx[failed]] = stop[failed]
        res.stop_level[idx[failed]] = li
        if not (mode == "pae" and name == "PDPT"):      # PAE PDPTEs carry no rights
            rw &= (val & u64(2)) != 0
            us &= (val & u64(4)) != 0
            if esize == 8 and paging.nxe:
                nx |= (val >> u64(63)) != 0
        leaf = ~failed & (large if name != "PT" else True)
        if np.any(leaf):
            span = 1 << shift
            v = val[leaf]
            if mode == "2level" and name == "PD":
                base = (v & u64(0xFFC00000)) | (((v >> u64(13)) & u64(0xFF)) << u64(32))
            else:
                base = v & u64(int(fmask) & ~(span - 1))
            li_idx = idx[leaf]
            res.pa[li_idx] = base + (va[leaf] & u64(span - 1))
            res.page_size[li_idx] = span
            res.ok[li_idx] = True
            res.rw[li_idx], res.us[li_idx], res.nx[li_idx] = rw[leaf], us[leaf], nx[leaf]
        down = ~failed & ~leaf
        idx, va, rw, us, nx = idx[down], va[down], rw[down], us[down], nx[down]
        table = val[down] & fmask
    if len(idx):
        raise AssertionError("translation fell off the last level")
