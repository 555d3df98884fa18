"""Reading a PV guest's P2M entries out of memory: Linux's virtually mapped list, the start_info
array, and (for :mod:`.shared_info`) any list whose pages are known by their machine frames.

A Linux PV guest maps its P2M list in a virtual area sized for the largest guest it could grow to (a
256 MiB dom0 has a 1 GiB area, ``xen_p2m_size`` = 0x8000000 entries) and maps two shared read-only
pages wherever it has no P2M page of its own: ``p2m_missing`` and ``p2m_identity`` (both filled with
INVALID_P2M_ENTRY; Linux's ``get_phys_to_machine()`` tells them apart by the page, arch/x86/xen/p2m.c).
:func:`assemble` reads such a list from the machine frame of each of its pages: a frame that backs
several list pages, or a read-only mapped page of INVALID entries, is such a *placeholder*: read
once, the same answer (no frame) for every pfn it covers, never a finding of its own; the list ends
after its last page of its own. A shared page holding anything but INVALID entries (a corrupt
mapping) is repeated into every page it backs, so the check sees what the guest would read.

Entries are returned as uint64 in Linux's 64-bit encoding; a 32-bit guest's entries are widened
(INVALID ~0, FOREIGN_FRAME_BIT 31 -> 63, IDENTITY_FRAME_BIT 30 -> 62).
"""

from dataclasses import dataclass, field

import numpy as np

from ..errors import NotInDump, XenscopeError

U64 = np.uint64
PAGE = 4096
INVALID_P2M_ENTRY = (1 << 64) - 1
MAX_ENTRIES = 1 << 32                  # a P2M list longer than 16 TiB of guest memory is refused


@dataclass
class ListRead:
    """A P2M read from guest memory.

    ``entries``: uint64 by pfn from 0, up to the list's last page of its own; ``placeholders``:
    ``(k, 2)`` array of ``[first_pfn, end_pfn)`` ranges covered by shared placeholder pages (their
    entries read INVALID); ``shared``: ``{frame maddr: pages it backs}`` for every shared frame
    read; ``length``: pfns the source describes (before the shared tail was dropped); ``notes``:
    what was found on the way (one sentence each)."""
    entries: np.ndarray
    placeholders: np.ndarray
    shared: dict = field(default_factory=dict)
    length: int = 0
    notes: list = field(default_factory=list)

    def placeholder_text(self):
        """One sentence on the placeholder pages, or None when there are none."""
        if not len(self.placeholders):
            return None
        pfns = int((self.placeholders[:, 1] - self.placeholders[:, 0]).sum())
        frames = ", ".join(f"{f >> 12:#x}" for f in sorted(self.shared))
        return (f"{pfns:#x} pfns in {len(self.placeholders)} range(s) read through shared read-only placeholder "
                f"page(s) (frame(s) {frames}; Linux's p2m_missing/p2m_identity: no frame, read once, no finding)")


def widen32(raw):
    """32-bit guest entries (uint32 array) in the 64-bit encoding."""
    e = raw.astype(U64)
    out = (e & U64(0x3FFFFFFF)) | ((e >> U64(31)) << U64(63)) | (((e >> U64(30)) & U64(1)) << U64(62))
    out[raw == np.uint32(0xFFFFFFFF)] = U64(INVALID_P2M_ENTRY)
    return out


def _decode(buf, width):
    """Entries of list bytes as uint64 (64-bit: a read-only view of ``buf``, no copy)."""
    raw = np.frombuffer(buf, "<u8" if width == 8 else "<u4")
    return raw if width == 8 else widen32(raw)


def _read_runs(target, frames, pages, what, out, per_page, width):
    """Read list ``pages`` (sorted indices) from their ``frames`` into ``out``, consecutive machine
    pages of consecutive list pages in one read."""
    from ..target import MAX_READ
    if not len(pages):
        return
    pa = frames[pages].astype(np.int64)
    brk = np.flatnonzero((np.diff(pa) != PAGE) | (np.diff(pages) != 1)) + 1
    maxp = MAX_READ // PAGE
    for s, e in zip(np.concatenate([[0], brk]).tolist(), np.concatenate([brk, [len(pages)]]).tolist()):
        for a in range(s, e, maxp):
            b = min(e, a + maxp)
            first = int(pages[a])
            try:
                buf = target.read_phys(int(pa[a]), (b - a) * PAGE)
            except NotInDump:
                raise XenscopeError(f"{what}: list page {first} is at address {int(pa[a]):#x}, which is not in "
                                    "the dump") from None
            out[first * per_page:(first + b - a) * per_page] = _decode(buf, width)


def _ranges(mask, per_page):
    """``[first_pfn, end_pfn)`` ranges of the True pages of ``mask``."""
    if not mask.any():
        return np.zeros((0, 2), np.int64)
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return np.stack([starts, ends], axis=1).astype(np.int64) * per_page


def assemble(target, frames, what, width=8, writable=None, length=None):
    """The list whose page ``i`` is at machine address ``frames[i]`` (uint64 array), as a
    :class:`ListRead` (see the module docstring); ``writable``: optional bool per page (how the
    guest maps it: read-only pages of INVALID entries are placeholders); ``length``: pfns the
    source describes (default: every page's)."""
    per_page = PAGE // width
    pages = len(frames)
    frames = np.asarray(frames, U64)
    _, index, counts = np.unique(frames, return_inverse=True, return_counts=True)
    repeated = counts[index.ravel()] > 1
    suspect = repeated if writable is None else repeated | ~np.asarray(writable, bool)
    shared, placeholder, notes = {}, np.zeros(pages, bool), []
    contents = {}
    for frame in np.unique(frames[suspect]).tolist():
        try:
            data = _decode(target.read_phys(frame, PAGE), width)
        except NotInDump:
            raise XenscopeError(f"{what}: a list page is at address {frame:#x}, which is not in the dump") from None
        where = np.flatnonzero(frames == U64(frame))
        if (data == U64(INVALID_P2M_ENTRY)).all():
            placeholder[where] = True
            shared[frame] = len(where)
        elif len(where) > 1:
            contents[frame] = data
            notes.append(f"frame {frame >> 12:#x} backs {len(where)} list pages and holds entries: every pfn it "
                         "covers reads them (a corrupt list mapping?)")
    own = np.flatnonzero(~placeholder)
    end = int(own[-1]) + 1 if len(own) else 0
    _check_materialised(target, len(own))
    out = np.empty(end * per_page, U64)                # every page below end is written once
    for first, stop in _ranges(placeholder[:end], per_page).tolist():
        out[first:stop] = U64(INVALID_P2M_ENTRY)
    plain = own[~np.isin(frames[own], np.fromiter(contents, U64, len(contents)))] if contents else own
    _read_runs(target, frames, plain, what, out, per_page, width)
    for frame, data in contents.items():
        for page in np.flatnonzero(frames[:end] == U64(frame)).tolist():
            out[page * per_page:(page + 1) * per_page] = data
    ranges = _ranges(placeholder[:end], per_page)
    return ListRead(out, ranges, shared, pages * per_page if length is None else length, notes)


def _check_materialised(target, pages):
    """The pages of its own a list has must be a number the dump's memory can explain: at most 4
    list pages per page the dump holds, plus 64 MiB."""
    held = target.held_bytes()
    if held is not None and pages * PAGE > 4 * held + (64 << 20):
        raise XenscopeError(f"P2M list: {pages} pages of entries of its own ({pages * PAGE >> 20} MiB) for a dump "
                            f"that holds {held >> 20} MiB: a corrupt size or list?")


def list_frames(target, paging, va, pages, what="P2M list"):
    """``(maddr, writable)`` of each of ``pages`` list pages from ``va`` (one clear error when one
    does not translate)."""
    from ..paging import translate_many
    vas = np.arange(pages, dtype=U64) * U64(PAGE) + U64(va)
    tr = translate_many(target, paging, vas)
    bad = np.flatnonzero(~tr.ok)
    if len(bad):
        i = int(bad[0])
        lvl = tr.stop_level_name(i)
        raise XenscopeError(f"{what} at va {va:#x}: {len(bad)} of {pages} page(s) do not translate through "
                            f"the page tables at {paging.root:#x} (first: va {int(vas[i]):#x}, "
                            f"{tr.stop_name(i)}{' at ' + lvl if lvl else ''})")
    return tr.pa, tr.rw


def read_linear(target, paging, va, size, end=None, width=8, what="P2M list"):
    """A linear list of ``size`` entries at the page-aligned ``va`` (``end``: the guest's own last
    pfn + 1, e.g. ``shared_info.arch.max_pfn``: pages past it are not read) as a :class:`ListRead`."""
    if size <= 0 or size > MAX_ENTRIES:
        raise XenscopeError(f"P2M size {size} out of range (1..{MAX_ENTRIES})")
    if va & (PAGE - 1):
        raise XenscopeError(f"{what} va {va:#x} is not page aligned")
    per_page = PAGE // width
    count = size if end is None else max(1, min(size, end))
    frames, writable = list_frames(target, paging, va, (count + per_page - 1) // per_page, what)
    got = assemble(target, frames, what, width, writable, length=size)
    got.entries = got.entries[:count]
    ranges = np.minimum(got.placeholders, count)
    got.placeholders = ranges[ranges[:, 0] < ranges[:, 1]]
    return got


def read_va_pages(target, paging, va, nbytes, what):
    """Bytes ``[va, va+nbytes)`` through ``paging`` (one translation per page, contiguous machine
    pages read together); any untranslatable page is one clear error."""
    from ..target import MAX_READ
    first = va & ~(PAGE - 1)
    npages = (va + nbytes - first + PAGE - 1) // PAGE
    pa, _ = list_frames(target, paging, first, npages, what)
    buf = bytearray(npages * PAGE)
    brk = np.flatnonzero(np.diff(pa.astype(np.int64)) != PAGE) + 1 if npages > 1 else np.zeros(0, np.intp)
    starts = np.concatenate([[0], brk]).astype(np.intp).tolist()
    ends = np.concatenate([brk, [npages]]).astype(np.intp).tolist()
    maxp = MAX_READ // PAGE
    for s, e in zip(starts, ends):
        for a in range(s, e, maxp):
            b = min(e, a + maxp)
            try:
                buf[a * PAGE:b * PAGE] = target.read_phys(int(pa[a]), (b - a) * PAGE)
            except NotInDump:
                raise XenscopeError(f"{what}: va {first + a * PAGE:#x} maps address {int(pa[a]):#x}, "
                                    "which is not in the dump") from None
    off = va - first
    return bytes(buf[off:off + nbytes]) if off or len(buf) != nbytes else bytes(buf)


def p2m_from_linux(target, paging, p2m_list_va, size, end=None):
    """A Linux PV guest's linear P2M list (``xen_p2m_addr[0:size]``) read through ``paging``: a
    uint64 array indexed by pfn, up to ``size`` entries, shorter when the list ends in shared
    placeholder pages (:func:`read_linear`; ``end``: stop at the guest's last pfn + 1)."""
    if size <= 0 or size > MAX_ENTRIES:
        raise XenscopeError(f"P2M size {size} out of range (1..{MAX_ENTRIES})")
    if p2m_list_va & 7:
        raise XenscopeError(f"P2M list va {p2m_list_va:#x} is not 8-byte aligned")
    if p2m_list_va & (PAGE - 1):
        raw = read_va_pages(target, paging, p2m_list_va, size * 8, "P2M list")
        return np.frombuffer(raw, "<u8").astype(U64)
    return read_linear(target, paging, p2m_list_va, size, end).entries


def read_virt_u64(target, paging, va, what):
    return int(np.frombuffer(read_va_pages(target, paging, va, 8, what), "<u8")[0])


def linux_p2m_location(target, paging, syms):
    """``(xen_p2m_addr, xen_p2m_size)`` of a Linux PV kernel: its System.map (path or dict) gives
    the variables' addresses, their values are read through ``paging``."""
    syms = _symbols(syms)
    if ("xen_p2m_addr" not in syms or "xen_p2m_size" not in syms) and "xen_start_info" in syms:
        return start_info_mfn_list(target, paging, syms["xen_start_info"])
    for name in ("xen_p2m_addr", "xen_p2m_size"):
        if name not in syms:
            raise XenscopeError(f"symbol {name} not in the kernel's symbols (a Linux >= 3.19 PV kernel's "
                                "System.map is needed, or one with xen_start_info)")
    va = read_virt_u64(target, paging, syms["xen_p2m_addr"], "xen_p2m_addr")
    size = read_virt_u64(target, paging, syms["xen_p2m_size"], "xen_p2m_size")
    if not va or size == 0 or size > MAX_ENTRIES:
        raise XenscopeError(f"xen_p2m_addr {va:#x} / xen_p2m_size {size:#x} do not describe a P2M list")
    return va, size


def linux_p2m_end(target, paging, syms):
    """``xen_p2m_last_pfn`` (the pfn up to which Linux has ever given the list pages of its own, what
    it publishes as ``shared_info.arch.max_pfn``) when the symbols have it, else None."""
    syms = _symbols(syms)
    if "xen_p2m_last_pfn" not in syms:
        return None
    value = read_virt_u64(target, paging, syms["xen_p2m_last_pfn"], "xen_p2m_last_pfn")
    return value if 0 < value <= MAX_ENTRIES else None


def _symbols(syms):
    if isinstance(syms, str):
        from .host import load_symbols
        return load_symbols(syms)
    return syms


# struct start_info (xen/include/public/xen.h): nr_pages and mfn_list, 64-bit / 32-bit guests
START_INFO = {8: {"nr_pages": 32, "mfn_list": 104}, 4: {"nr_pages": 32, "mfn_list": 68}}


def start_info_mfn_list(target, paging, start_info_ptr_va, width=None):
    """``(mfn_list, nr_pages)`` from a PV guest's ``start_info`` (the P2M array Xen built at boot;
    reference §2.3): ``start_info_ptr_va`` is the address of the kernel variable ``xen_start_info``
    (a pointer). Before Linux 3.19 and for other PV kernels this is the P2M the guest started with."""
    width = width or (4 if target.facts.get("machine") == "i386" else 8)
    off = START_INFO[width]

    def word(va, what):
        raw = read_va_pages(target, paging, va, width, what)
        return int.from_bytes(raw, "little")
    si = word(start_info_ptr_va, "xen_start_info")
    if not si:
        raise XenscopeError("xen_start_info is NULL: no start_info to take mfn_list from")
    magic = read_va_pages(target, paging, si, 32, "start_info.magic").split(b"\0", 1)[0]
    if not magic.startswith(b"xen-"):
        raise XenscopeError(f"start_info at {si:#x} has no 'xen-' magic ({magic[:16]!r}): not a start_info")
    mfn_list = word(si + off["mfn_list"], "start_info.mfn_list")
    nr_pages = word(si + off["nr_pages"], "start_info.nr_pages")
    if not mfn_list or not nr_pages or nr_pages > MAX_ENTRIES:
        raise XenscopeError(f"start_info mfn_list {mfn_list:#x} / nr_pages {nr_pages:#x} do not describe a P2M")
    return mfn_list, nr_pages


def p2m_from_symbols(target, paging, syms):
    """The P2M list of a Linux PV guest found through ``xen_p2m_addr``/``xen_p2m_size`` (up to
    ``xen_p2m_last_pfn`` when the symbols have it)."""
    va, size = linux_p2m_location(target, paging, syms)
    return p2m_from_linux(target, paging, va, size, linux_p2m_end(target, paging, syms))
