"""kallsyms tables found by their shape in the kernel image, for kernels whose VMCOREINFO does not
name them (Linux < 6.0) or whose VMCOREINFO is not in the dump (a dom0 inside a Xen host dump).

``scripts/kallsyms.c`` writes the tables into ``.rodata``, each label aligned (8 bytes on 64-bit
kernels, 4 on 32-bit). ``kallsyms_token_table`` is always followed by ``kallsyms_token_index``;
``kallsyms_num_syms`` is always followed by ``kallsyms_names``, and the names by
``kallsyms_markers`` (one ``u32`` names offset every 256 symbols, the first 0). The address table
moved over the years: before ``kallsyms_num_syms`` (``kallsyms_addresses``, or ``kallsyms_offsets``
then ``kallsyms_relative_base``) up to 6.x, after ``kallsyms_token_index`` in the newest kernels.

The search, each step checked by the next:

1. ``kallsyms_token_index``: 256 ``u16``, the first 0, strictly increasing by 2..64 (a token and
   its NUL); the token table ends right before it, every token NUL-terminated at the offsets the
   index gives.
2. ``kallsyms_names``: a ``u32`` N (1000..4M) at an aligned spot before the token table whose next
   aligned bytes decode as N names with that token table, and whose markers follow them.
3. the addresses: each layout above is decoded, and the one kept is sorted and puts
   ``linux_banner`` on the text "Linux version " (kernels listing text only: ``_stext`` on a mapped
   page below the tables), and agrees with VMCOREINFO when there is one.
"""

import numpy as np

from .kallsyms import (CROSS_CHECK, KallsymsError, Kallsyms, TYPE_LETTERS, decode_addresses,
                       decode_names, name_starts, pick_addresses, tokens_of)

KERNEL_MAP = {8: (0xFFFFFFFF80000000, 1 << 30), 4: (0xC0000000, 256 << 20)}   # where the image is mapped
CHUNK = 16 << 20
NAMES_WINDOW = 16 << 20          # kallsyms_names start at most this far before the token table
MIN_SYMS, MAX_SYMS = 1000, 4 << 20


def _mapped_runs(mem):
    """``[(va, size)]`` of the mapped parts of the kernel image window."""
    start, size = KERNEL_MAP[mem.ptr_size]
    pages = start + np.arange(size // 4096, dtype=np.uint64) * np.uint64(4096)
    from ..paging import translate_many
    ok = translate_many(mem.target, mem.paging, pages).ok
    runs = []
    edges = np.flatnonzero(np.diff(np.concatenate(([0], ok.astype(np.int8), [0]))))
    for a, b in zip(edges[0::2], edges[1::2]):
        runs.append((start + int(a) * 4096, int(b - a) * 4096))
    return runs


def _chunks(mem, runs):
    """``(va, bytes)`` of ``runs`` in steps of CHUNK, each read NAMES_WINDOW further: the names and
    the token table after them (found together in one read) may straddle a step's end (Debian's
    5.10: names from ...81f73698, the token table at ...820bca98)."""
    for va, size in runs:
        for off in range(0, size, CHUNK):
            n = min(CHUNK + NAMES_WINDOW + 4096, size - off)
            try:
                yield va + off, mem.read(va + off, n)
            except KallsymsError:
                continue
            except Exception:                          # noqa: BLE001 - a hole in the dump: skip it
                continue


def find_token_index(data, align):
    """Offsets in ``data`` where a ``kallsyms_token_index`` (and the token table before it) fits;
    ``[(index offset, table offset)]``."""
    if len(data) < 1024:
        return []
    w = np.frombuffer(data[:len(data) // 2 * 2], dtype="<u2")
    pos = np.flatnonzero((w[:-2] == 0) & (w[1:-1] >= 2) & (w[1:-1] <= 64) & (w[2:] > w[1:-1]))
    pos = pos[(pos * 2) % align == 0]
    pos = pos[pos + 256 <= len(w)]
    for k in range(1, 255):                             # narrow down entry by entry, all at once
        d = w[pos + k + 1].astype(np.int64) - w[pos + k]
        pos = pos[(d >= 2) & (d <= 64)]
        if not len(pos):
            return []
    out = []
    for p in pos.tolist():
        idx = w[p:p + 256]
        if len(idx) < 256:
            continue
        d = np.diff(idx.astype(np.int64))
        if (d < 2).any() or (d > 64).any():
            continue
        table = _token_table_before(data, p * 2, idx)
        if table is not None:
            out.append((p * 2, table))
    return out


def _token_table_before(data, index_off, idx):
    """Offset of the token table that ends right before ``index_off`` (within the alignment)."""
    last = int(idx[-1])
    for end in range(index_off, max(index_off - 8, 0), -1):
        if data[end - 1] != 0 or data[end - 2] == 0:        # a token's NUL, not alignment padding
            continue
        nul = data.rfind(b"\0", 0, end - 1)          # the NUL before the last token
        start = nul + 1 - last
        if start < 0:
            return None
        marks = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)
        if (marks[idx[1:].astype(np.int64) - 1] == 0).all() and np.count_nonzero(marks == 0) == 256:
            return start
        return None
    return None


def find_names(data, base_va, tokens, table_off, align):
    """``(num_syms offset, names offset, count, big, types, names, end)`` of the ``kallsyms_names``
    in ``data`` before ``table_off`` (the token table), or None."""
    lo = max(0, table_off - NAMES_WINDOW)
    lo += -lo % align
    region = np.frombuffer(data, dtype=np.uint8, count=table_off - lo, offset=lo)
    if len(region) < 16:
        return None
    u32 = np.frombuffer(region[:len(region) // 4 * 4].tobytes(), dtype="<u4")
    typed = np.array([bool(t) and t[0] in TYPE_LETTERS for t in tokens])
    step = align // 4
    cand = np.flatnonzero((u32 >= MIN_SYMS) & (u32 <= MAX_SYMS))
    cand = cand[cand % step == 0]
    cand = cand[_plausible_names(region, cand * 4 + align, typed)]
    for c in cand.tolist():
        names_off = lo + c * 4 + align
        count = int(u32[c])
        for big in (True, False):
            hit = _try_names(data, names_off, table_off, count, tokens, big, align)
            if hit is not None:
                return (lo + c * 4, names_off, count, big) + hit
    return None


def _plausible_names(region, offs, typed):
    """Which ``offs`` (into ``region``) start two entries that begin with a type letter."""
    n = len(region)
    keep = np.zeros(len(offs), dtype=bool)
    ok = offs + 3 < n
    first = region[np.minimum(offs, n - 1)].astype(np.int64)
    small = ok & (first >= 1) & (first < 0x80)
    tok = region[np.minimum(offs + 1, n - 1)]
    nxt = offs + 1 + first
    inside = small & (nxt + 2 < n)
    second = region[np.minimum(nxt, n - 1)]
    keep |= inside & typed[tok] & (second >= 1) & typed[region[np.minimum(nxt + 1, n - 1)]]
    keep |= ok & (first >= 0x80) & typed[region[np.minimum(offs + 2, n - 1)]]
    return keep


def _try_names(data, names_off, table_off, count, tokens, big, align):
    try:
        starts, _, _ = name_starts(data[names_off:names_off + 4096], min(count, 64), big)
        types, names, end = decode_names(data[names_off:table_off], count, tokens, big)
        starts, _, _ = name_starts(data[names_off:table_off], count, big)
    except KallsymsError:
        return None
    markers_off = names_off + end
    markers_off += -markers_off % align
    nmark = (count + 255) // 256
    want = starts[::256].astype("<u4").tobytes()
    if data[markers_off:markers_off + 4 * nmark] != want:
        return None
    return types, names, end


def find_kallsyms(mem, vi=None, runs=None):
    """:class:`~.kallsyms.Kallsyms` found by shape in the kernel image read through ``mem``
    (``runs``: the ``[(va, size)]`` to search; default: the mapped parts of the image window).

    :raises KallsymsError: when no table set is found or none decodes consistently
    """
    align = 8 if mem.ptr_size == 8 else 4
    for va, data in _chunks(mem, _mapped_runs(mem) if runs is None else runs):
        for index_off, table_off in find_token_index(data, align):
            tokens = tokens_of(data[table_off:index_off], data[index_off:index_off + 512])
            found = find_names(data, va, tokens, table_off, align)
            if found is None:
                continue
            num_off, names_off, count, big, types, names, _ = found
            where = {"kallsyms_num_syms": va + num_off, "kallsyms_names": va + names_off,
                     "kallsyms_token_table": va + table_off, "kallsyms_token_index": va + index_off}
            addrs, rule, more = _addresses(mem, where, count, names, vi)
            where.update(more)
            return Kallsyms(addrs, names, types, f"kallsyms found by shape ({rule})", where)
    raise KallsymsError("no kallsyms tables found in the kernel image (VMCOREINFO does not locate "
                        "them: Linux < 6.0, or no VMCOREINFO in the dump)")


def _addresses(mem, where, count, names, vi):
    """``(addresses, rule, {table: va})`` from the first address layout that checks out."""
    ps, align = mem.ptr_size, (8 if mem.ptr_size == 8 else 4)
    num = where["kallsyms_num_syms"]
    layouts = []
    base_va = num - ps                                             # offsets, relative_base, num_syms
    offsets_va = base_va - (count * 4 + (-count * 4) % align)
    layouts.append(("relative", {"kallsyms_offsets": offsets_va, "kallsyms_relative_base": base_va}))
    layouts.append(("absolute", {"kallsyms_addresses": num - count * ps}))
    after = where["kallsyms_token_index"] + 512
    after += -after % align                                        # newest: offsets after the index
    rel_after = after + count * 4
    rel_after += -rel_after % align
    layouts.append(("relative", {"kallsyms_offsets": after, "kallsyms_relative_base": rel_after}))
    layouts.append(("place-relative", {"kallsyms_offsets": after}))
    candidates, tables = [], []
    for kind, at in layouts:
        try:
            if kind == "absolute":
                raw = mem.read(at["kallsyms_addresses"], count * ps)
                cand = decode_addresses(raw, kind, pointer_size=ps)
            else:
                raw = mem.read(at["kallsyms_offsets"], count * 4)
                base = mem.ptr(at["kallsyms_relative_base"]) if "kallsyms_relative_base" in at else None
                cand = decode_addresses(raw, kind, base, at["kallsyms_offsets"], ps)
        except Exception:                              # noqa: BLE001 - not there: the next layout
            continue
        if _plausible(mem, cand[0], names, where["kallsyms_names"]):
            candidates.append(cand)
            tables.append(at)
    checks = {n: vi.symbol(n) for n in CROSS_CHECK if vi is not None and vi.symbol(n) is not None}
    addrs, rule = pick_addresses(candidates, names, checks)
    return addrs, rule, tables[[r for _, r in candidates].index(rule)]


def _plausible(mem, addrs, names, names_va):
    """``linux_banner`` decodes to the text "Linux version "; a kernel whose kallsyms list text only
    (no ``CONFIG_KALLSYMS_ALL``): ``_stext`` decodes to a mapped page below the tables, at most
    1 GiB below (the tables are in the image's read-only data, after its text)."""
    try:
        if "linux_banner" in names:
            return mem.read(int(addrs[names.index("linux_banner")]), 14) == b"Linux version "
        stext = int(addrs[names.index("_stext")])
        mem.read(stext, 1)
        return stext < names_va < stext + (1 << 30)
    except Exception:                                  # noqa: BLE001 - not there or unreadable
        return False
