"""The reverse map of a Xen host dump: every page-table entry that names a machine frame.

``references(host, mfns)`` answers "who maps mfn A?" the way Xen's reference counts see it: every
present entry, at any level, of every frame the frame table types as a page table (``l1``..``l4``,
any owner: each PV domain's tables), plus Xen's own mappings in the hypervisor's L4 slots 256-271
(its page tables are Xen's, typed ``none``). Each reference says the domain owning the table,
the table's mfn and level, the slot, the entry, RW/US, and the virtual address(es) it maps,
found by following the tables' parents up to an L4 (a table reachable from several parents maps
several addresses; the first ``MAX_VAS`` are kept). An entry of an L4 that points at an L4 (Xen's
linear slot 258 of every PV L4 maps the L4 itself) is reported with ``linear`` set, never followed.

Vectorised: every typed table is read once (4 KiB each) into one array and searched with numpy;
a host of a few GiB is mapped in about a second. Xen's direct map maps every frame of RAM
read-write by design: it is summed up once (``xen_direct_map``), not listed.
"""

from ..errors import NotInDump
from .release import (DIRECTMAP_PV_SIZE, FIRST_XEN_SLOT, HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START,
                      LAST_XEN_SLOT, LINEAR_PT_SLOT)

ENTRIES = 512
FRAME_MASK = 0x000FFFFFFFFFF000
PRESENT, RW, USER, PSE = 1, 2, 4, 0x80
LEVEL_OF_TYPE = {"l1": 1, "l2": 2, "l3": 3, "l4": 4}
MAX_VAS = 4                       # addresses kept per reference (shared tables map many)
MAX_TABLES = 1 << 20              # 4 GiB of page tables: more is not a dump we can trust


def _typed_tables(cols):
    """``(mfns, levels, owners)`` of every frame typed as a page table (numpy arrays)."""
    import numpy as np
    from .frames import STATES, TYPES
    level = np.zeros(len(cols["mfn"]), np.int8)
    for name, lvl in LEVEL_OF_TYPE.items():
        level[cols["type"] == TYPES.index(name)] = lvl
    keep = (level > 0) & cols["present"] & (cols["state"] != STATES.index("free"))
    return cols["mfn"][keep], level[keep], cols["domain"][keep]


def _read_tables(target, mfns):
    """The tables as an ``(n, 512)`` uint64 array; rows of tables not in the dump are zero (and
    their indexes returned)."""
    import numpy as np
    held = target.held_bytes()
    limit = MAX_TABLES if held is None else min(MAX_TABLES, held >> 12)
    if len(mfns) > limit:
        from ..errors import XenscopeError
        raise XenscopeError(f"{len(mfns)} frames typed as page tables: more than {limit} (the pages the dump "
                            f"holds, at most {MAX_TABLES}), the frame table is not trustworthy")
    out = np.zeros((len(mfns), ENTRIES), np.uint64)
    missing = []
    for row, mfn in enumerate(mfns.tolist()):
        try:
            out[row] = np.frombuffer(target.read_table(mfn << 12), "<u8")
        except NotInDump:
            missing.append(mfn)
    return out, missing


def _parents(entries, mfns, levels):
    """``{child mfn: [(row, slot), ...]}``: non-leaf entries naming a table one level below.
    Linear entries (an L4 naming an L4) are left out."""
    import numpy as np
    row_of = {int(m): r for r, m in enumerate(mfns.tolist())}
    present = (entries & np.uint64(PRESENT)) != 0
    leaf = (entries & np.uint64(PSE)) != 0
    rows, slots = np.nonzero(present & ~(leaf & (levels[:, None] < 4)) & (levels[:, None] > 1))
    targets = (entries[rows, slots] & np.uint64(FRAME_MASK)) >> np.uint64(12)
    parents = {}
    for row, slot, target in zip(rows.tolist(), slots.tolist(), targets.tolist()):
        child = row_of.get(target)
        if child is not None and levels[child] == levels[row] - 1:
            parents.setdefault(target, []).append((row, slot))
    return parents


def _addresses(row, slot, mfns, levels, parents):
    """Virtual addresses the entry ``(row, slot)`` maps, following parents up to an L4."""
    paths = [(row, [slot])]
    done = []
    while paths and len(done) < MAX_VAS:
        row, chain = paths.pop()
        if levels[row] == 4:
            va = 0
            for lvl, idx in zip(range(4, 4 - len(chain), -1), chain[::-1]):
                va |= idx << (12 + 9 * (lvl - 1))
            done.append(va | 0xFFFF000000000000 if va >> 47 else va)
            continue
        for parent_row, parent_slot in parents.get(int(mfns[row]), [])[:MAX_VAS]:
            paths.append((parent_row, chain + [parent_slot]))
    return sorted(done)


def _table_references(host, cols, wanted, writable_only):
    import numpy as np
    mfns, levels, owners = _typed_tables(cols)
    entries, missing = _read_tables(host.t, mfns)
    present = (entries & np.uint64(PRESENT)) != 0
    named = (entries & np.uint64(FRAME_MASK)) >> np.uint64(12)
    hit = present & np.isin(named, np.asarray(sorted(wanted), np.uint64))
    if writable_only:
        hit &= (entries & np.uint64(RW)) != 0
    xen_slot = np.zeros(ENTRIES, bool)
    xen_slot[FIRST_XEN_SLOT:LAST_XEN_SLOT + 1] = True
    xen_slot[LINEAR_PT_SLOT] = False                  # Xen's linear slot maps the L4 itself: noted
    hit &= ~((levels[:, None] == 4) & xen_slot[None, :])       # Xen's other slots: by _xen_own
    parents = _parents(entries, mfns, levels) if hit.any() else {}
    l4_tables = set(mfns[levels == 4].tolist())
    out = []
    for row, slot in zip(*(a.tolist() for a in np.nonzero(hit))):
        entry = int(entries[row, slot])
        linear = levels[row] == 4 and int(named[row, slot]) in l4_tables
        owner = host.owner(int(owners[row]))
        out.append({"mfn": int(named[row, slot]), "domain": owner.id if owner else None,
                    "domain_name": owner.name if owner else "anonymous", "table_mfn": int(mfns[row]),
                    "level": int(levels[row]), "slot": slot, "entry": entry,
                    "writable": bool(entry & RW), "user": bool(entry & USER), "linear": bool(linear),
                    "vas": [] if linear else _addresses(row, slot, mfns, levels, parents)})
    return out, missing, len(mfns)


def _xen_own(host, wanted, writable_only):
    """Xen's own mappings of the frames in the hypervisor slots, the direct map left out."""
    import numpy as np
    from ..paging import enumerate_mappings
    maps = enumerate_mappings(host.t, host.paging, HYPERVISOR_VIRT_START, HYPERVISOR_VIRT_END)
    frames = maps.pa >> np.uint64(12)
    direct = (maps.va >= np.uint64(host.directmap)) & (maps.va < np.uint64(host.directmap + DIRECTMAP_PV_SIZE))
    hit = np.isin(frames, np.asarray(sorted(wanted), np.uint64)) & ~direct
    if writable_only:
        hit &= maps.rw
    out = [{"mfn": int(frames[i]), "domain": None, "domain_name": "Xen", "table_mfn": None, "level": None,
            "slot": None, "entry": int(maps.entry[i]), "writable": bool(maps.rw[i]), "user": bool(maps.us[i]),
            "linear": False, "vas": [int(maps.va[i])]} for i in np.nonzero(hit)[0].tolist()]
    in_direct = sorted(set(frames[direct].tolist()) & set(wanted))
    return out, in_direct


def references(host, mfns, writable_only=False, cols=None):
    """Every page-table entry of the host naming one of ``mfns`` (see the module docstring).

    :param host: a :class:`~xenstructs.xen.host.XenHost`
    :param writable_only: only entries with RW set
    :param cols: :func:`~xenstructs.xen.frames.classify` of the whole frame table, if already made
    :return: list of dicts ``{mfn, domain, domain_name, table_mfn, level, slot, entry, writable,
             user, linear, vas}`` (``domain``/``table_mfn``/``level``/``slot`` None for Xen's own),
             sorted by mfn, domain, level, table, slot
    """
    return reverse_map(host, mfns, writable_only, cols)["references"]


def reverse_map(host, mfns, writable_only=False, cols=None):
    """:func:`references` with what was searched: ``{references, tables, tables_not_in_dump,
    xen_direct_map}`` (the mfns Xen's direct map maps, as it maps all RAM)."""
    from .frames import classify
    wanted = {int(m) for m in mfns}
    if cols is None:
        cols = classify(host, host.frame_arrays())
    refs, missing, ntables = _table_references(host, cols, wanted, writable_only)
    own, in_direct = _xen_own(host, wanted, writable_only)
    refs += own
    refs.sort(key=lambda r: (r["mfn"], r["domain"] is None, r["domain"] or 0, r["level"] or 0,
                             r["table_mfn"] or 0, r["slot"] or 0, r["vas"]))
    return {"references": refs, "tables": ntables, "tables_not_in_dump": missing,
            "xen_direct_map": in_direct}

