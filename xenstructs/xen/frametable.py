"""Reading Xen's frame table (the ``struct page_info`` array) for the frames that exist.

Xen maps the frame table only where there is RAM (``init_frametable`` maps a chunk per valid PDX
group), so the records worth reading are those of the frame-table pages Xen's page tables map and
the dump holds: :func:`frame_arrays` enumerates those mappings over the frame-table range of the
asked mfns (one :func:`~xenstructs.paging.enumerate_mappings` pass), intersects them with the
dump's physical ranges, and decodes the records with a structured numpy view, a bounded chunk at a
time. Memory therefore follows what the dump holds, never ``max_page`` (a value read from the
dump, which a PDX hole or a corruption can make huge).

PDX compression (reference §1.5) removes the hole bits of an mfn: the pdx of a valid mfn is its
rank among valid mfns, so the number of valid mfns below ``n`` is the pdx of the first valid mfn at
or above ``n`` (:func:`valid_below`).
"""

from ..errors import NotInDump, XenscopeError

CHUNK_RECORDS = 1 << 15          # records decoded together (1-1.5 MiB of frame table per read)
LIVE_RECORDS = 1 << 28           # without a memory map (live stubs): at most 1 TiB of RAM's records
MAX_FRAMES = 1 << 40             # x86 machine addresses have at most 52 bits: 2^40 4-KiB frames
PAGE = 4096


def _hole(pdx):
    """``(bottom bits, hole bits)`` of the PDX masks (0 hole bits when there is no compression)."""
    if not pdx.hole_shift:
        return 0, 0
    return (pdx.bottom_mask + 1).bit_length() - 1, pdx.hole_shift


def masks_consistent(pdx):
    """Whether the masks have Xen's shape (``pfn_pdx_add_region``/``pfn_pdx_hole_setup``): a
    bottom mask of low bits, then ``hole_shift`` hole bits, the top mask everything above."""
    if not pdx.hole_shift:
        return True
    bottom = pdx.bottom_mask
    if bottom & (bottom + 1) or not 0 < pdx.hole_shift < 64:
        return False
    nbits = (bottom + 1).bit_length() - 1
    if nbits + pdx.hole_shift >= 64:
        return False
    return pdx.top_mask == ((1 << 64) - 1) & ~((1 << (nbits + pdx.hole_shift)) - 1)


def next_valid(pdx, mfn):
    """The first mfn at or above ``mfn`` that PDX compression can represent (hole bits clear)."""
    low, hole = _hole(pdx)
    if hole and (mfn >> low) & ((1 << hole) - 1):
        return ((mfn >> (low + hole)) + 1) << (low + hole)
    return mfn


def valid_below(pdx, mfn):
    """How many valid mfns lie below ``mfn``: the pdx of the next valid one."""
    return pdx.pfn_to_pdx(next_valid(pdx, mfn))


def _empty(missing=0):
    import numpy as np
    z = np.zeros(0, np.uint64)
    return {"mfn": z, "pdx": z, "count_info": z, "type_info": z, "domain": z, "present": np.zeros(0, bool),
            "missing": missing}


def record_dtype(layout):
    """A structured dtype over one ``struct page_info`` (the three words the analyses decode)."""
    import numpy as np
    o = layout.offsets
    width = "<u8" if layout.domain_width == 8 else "<u4"
    return np.dtype({"names": ["count_info", "type_info", "domain"], "formats": ["<u8", "<u8", width],
                     "offsets": [o["count_info"], o["type_info"], o["domain"]],
                     "itemsize": layout.page_info_size})


def _held(target, pieces):
    """``pieces`` (va, pa, n) cut to the dump's physical ranges (unchanged when it has none)."""
    import bisect
    ranges = sorted(target.phys_ranges())
    if not ranges:
        return pieces, None
    starts = [r[0] for r in ranges]
    out = []
    for va, pa, n in pieces:
        i = max(0, bisect.bisect_right(starts, pa) - 1)
        while i < len(ranges) and ranges[i][0] < pa + n:
            lo, hi = max(pa, ranges[i][0]), min(pa + n, ranges[i][1])
            if lo < hi:
                out.append((va + lo - pa, lo, hi - lo))
            i += 1
    return out, sum(e - s for s, e in ranges)


def mapped_pieces(host, va_lo, va_hi):
    """The parts of Xen virtual ``[va_lo, va_hi)`` that Xen's page tables map and the dump holds:
    ``([(va, maddr, length)] sorted by va, bytes the dump holds or None when unknown)``. Refuses mappings that hold more bytes than the dump
    (aliased tables: the records could not all be distinct)."""
    from ..paging import enumerate_mappings
    maps = enumerate_mappings(host.t, host.paging, va_lo, va_hi)
    for a, b, level, why, _ in maps.problems:
        if why == "too-many-mappings":
            raise XenscopeError(f"Xen's frame-table mappings: too many mappings at {level} "
                                f"({a:#x}-{b:#x}): shared tables?")
    pieces = []
    for va, pa, size in zip(maps.va.tolist(), maps.pa.tolist(), maps.size.tolist()):
        lo, hi = max(va, va_lo), min(va + size, va_hi)
        if lo < hi:
            pieces.append((lo, pa + lo - va, hi - lo))
    pieces, ram = _held(host.t, pieces)
    total = sum(n for _, _, n in pieces)
    if ram is not None and total > ram:
        raise XenscopeError(f"Xen's page tables map {total >> 20} MiB of frame table held by the dump, more "
                            f"than the {ram >> 20} MiB it holds: the mappings alias (corrupt page tables)")
    return pieces, ram


def _runs(pieces):
    """VA-contiguous runs of pieces: ``[(va_start, va_end, [(va, pa, n)...])]``."""
    runs = []
    for va, pa, n in pieces:
        if runs and runs[-1][1] == va:
            runs[-1][1] = va + n
            runs[-1][2].append((va, pa, n))
        else:
            runs.append([va, va + n, [(va, pa, n)]])
    return runs


def _read_span(target, run_pieces, va0, va1):
    """Bytes of ``[va0, va1)`` from a run's pieces, and the va pages that could not be read (left
    zero): a piece the dump turns out not to hold is read again a page at a time."""
    buf = bytearray(va1 - va0)
    bad = []
    for va, pa, n in run_pieces:
        lo, hi = max(va, va0), min(va + n, va1)
        if lo >= hi:
            continue
        try:
            buf[lo - va0:hi - va0] = target.read_phys(pa + lo - va, hi - lo)
            continue
        except NotInDump:
            pass
        page = lo
        while page < hi:
            nxt = min(hi, (page & ~(PAGE - 1)) + PAGE)
            try:
                buf[page - va0:nxt - va0] = target.read_phys(pa + page - va, nxt - page)
            except NotInDump:
                bad.append(page >> 12)
            page = nxt
    return bytes(buf), bad


def _decode(host, data, bad, va0, first_pdx, dtype, mfn_lo, mfn_hi):
    """Columns of the records in ``data`` (records from ``first_pdx``), minus those touching a bad
    page or outside ``[mfn_lo, mfn_hi)``."""
    import numpy as np
    rec = np.frombuffer(data, dtype)
    pdx = np.arange(first_pdx, first_pdx + len(rec), dtype=np.uint64)
    mfn = _pdx_to_mfn(host.pdx, pdx)
    keep = (mfn >= np.uint64(mfn_lo)) & (mfn < np.uint64(mfn_hi))
    if bad:
        size = dtype.itemsize
        start = np.arange(len(rec), dtype=np.uint64) * np.uint64(size) + np.uint64(va0)
        badpages = np.asarray(bad, np.uint64)
        keep &= ~np.isin(start >> np.uint64(12), badpages)
        keep &= ~np.isin((start + np.uint64(size - 1)) >> np.uint64(12), badpages)
    return {"mfn": mfn[keep], "pdx": pdx[keep], "count_info": rec["count_info"][keep].astype(np.uint64),
            "type_info": rec["type_info"][keep].astype(np.uint64), "domain": rec["domain"][keep].astype(np.uint64)}


def _pdx_to_mfn(p, pdx):
    import numpy as np
    if not p.hole_shift:
        return pdx.copy()
    return (pdx & np.uint64(p.bottom_mask)) | ((pdx << np.uint64(p.hole_shift)) & np.uint64(p.top_mask))


def frame_arrays(host, start=0, count=None):
    """``count_info``, ``type_info`` and raw owner of the frames in ``[start, start+count)`` (and
    below ``max_page``) whose ``page_info`` Xen maps and the dump holds, as numpy arrays sorted by
    mfn, with ``mfn``, ``pdx``, ``present`` (all True) and ``missing``: how many PDX-valid frames
    of the range have no record in the dump (not mapped by Xen, or not in the dump).

    The whole table (``start`` 0, no ``count``) is read once per host (one command: a live target
    is stopped while it runs) and handed out read-only."""
    if start == 0 and count is None:
        cached = getattr(host, "_all_frame_arrays", None)
        if cached is None:
            cached = _frame_arrays(host, 0, None)
            for value in cached.values():
                if hasattr(value, "flags"):
                    value.flags.writeable = False
            host._all_frame_arrays = cached
        return cached
    return _frame_arrays(host, start, count)


def _frame_arrays(host, start, count):
    import numpy as np
    size = host.layout.page_info_size
    end = host.max_page if count is None else min(host.max_page, start + max(0, count))
    start = max(0, start)
    if end <= start:
        return _empty()
    pdx_lo, pdx_hi = valid_below(host.pdx, start), valid_below(host.pdx, end)
    ft = host.frametable
    pieces, ram = mapped_pieces(host, ft + pdx_lo * size, ft + pdx_hi * size)
    cap = LIVE_RECORDS if ram is None else None
    dtype = record_dtype(host.layout)
    parts, total = [], 0
    for va0, va1, run in _runs(pieces):
        r0 = max(pdx_lo, -(-(va0 - ft) // size))
        r1 = min(pdx_hi, (va1 - ft) // size)
        for a in range(r0, r1, CHUNK_RECORDS):
            b = min(r1, a + CHUNK_RECORDS)
            data, bad = _read_span(host.t, run, ft + a * size, ft + b * size)
            part = _decode(host, data, bad, ft + a * size, a, dtype, start, end)
            total += len(part["mfn"])
            if cap is not None and total > cap:
                raise XenscopeError(f"more than {cap} frame-table records mapped: the page tables are absurd")
            parts.append(part)
    if not parts:
        return _empty(pdx_hi - pdx_lo)
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["present"] = np.ones(len(out["mfn"]), bool)
    out["missing"] = (pdx_hi - pdx_lo) - len(out["mfn"])
    return out
