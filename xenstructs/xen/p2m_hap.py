"""``p2m-check`` of a translated (HVM/PVH) domain: its P2M as Xen keeps it (NPT/p2m-pt or EPT tables,
:mod:`.hvm`) against Xen's M2P and the frame table's owners and states.

Every 4 KiB guest frame the P2M maps is one row (a superpage gives 512 or 262144). Classes:

===============  =======  ===============================================================================
mismatch         problem  RAM entry on a frame of the domain whose M2P entry is not this gfn (Xen sets
                          the M2P of every RAM page it adds to a translated P2M: ``set_gpfn_from_mfn``)
foreign          problem  a RAM type (``p2m_ram_rw``, ``_logdirty``, ``_ro``, ...: not a grant nor a
                          foreign map) on a frame another domain owns
free             problem  a RAM or grant entry on a frame the frame table says is free
beyond-max       problem  a RAM, grant or foreign entry on a frame at or beyond ``max_page``
duplicate        problem  one frame mapped as RAM by two gfns (``p2m_ram_shared`` excepted)
grant            info     ``p2m_grant_map_rw/ro`` and ``p2m_map_foreign``: frames of other domains, by design
mmio             info     ``p2m_mmio_direct``: device memory (no RAM frame, no M2P)
not-backed       info     typed entries without a frame: populate-on-demand, paged out, mmio_dm, ...
recalc           info     entries whose type Xen recalculates on next use (log-dirty/type changes)
===============  =======  ===============================================================================
"""

import numpy as np

from ..errors import XenscopeError
from . import p2m_types

CLASSES = ("mismatch", "foreign", "free", "beyond-max", "duplicate", "grant", "mmio", "not-backed", "recalc")
INFORMATIONAL = ("grant", "mmio", "not-backed", "recalc")
MAX_FRAMES = 1 << 26                 # 256 GiB of guest memory per check


def _rows(p2m):
    """``(gfn, mfn, type, recalc, absent, leaves)``: arrays with one row per 4 KiB frame of a present
    leaf (a superpage spread over its frames), the typed non-present entries as :class:`~.p2m_tables.Leaf`
    objects, and the :class:`~.p2m_tables.LeafArrays`."""
    from .p2m_tables import Leaf
    found = p2m.leaf_arrays()
    sel = found.present
    count = np.int64(1) << found.order[sel].astype(np.int64)
    total = int(count.sum())
    if total > MAX_FRAMES:
        raise XenscopeError(f"the P2M maps more than {MAX_FRAMES} frames: refusing to check it whole")
    row = np.repeat(np.arange(len(count)), count)
    offset = (np.arange(total) - np.repeat(np.cumsum(count) - count, count)).astype(np.uint64)
    absent = [Leaf(int(g), 0, p2m.format.decode(int(r), int(lv)))
              for g, r, lv in zip(found.gfn[~sel].tolist(), found.raw[~sel].tolist(), found.level[~sel].tolist())]
    return (found.gfn[sel][row] + offset, found.mfn[sel][row] + offset, found.type[sel][row],
            found.recalc[sel][row], absent, found)


def _type_mask(types, names):
    return np.isin(types, [p2m_types.NUMBER[n] for n in names])


def check_translated(host, dom, p2m, kind):
    """The ``p2m-check`` result of translated domain ``dom`` (its :class:`~.hvm.P2M` and :class:`~.hvm.Kind`)."""
    from .frames import STATES, classify
    gfn, mfn, types, recalc, absent, found = _rows(p2m)
    cols = classify(host, host.frame_arrays())
    pos = np.searchsorted(cols["mfn"], mfn)
    pos_ok = pos < len(cols["mfn"])
    known = np.zeros(len(mfn), bool)
    known[pos_ok] = cols["mfn"][pos[pos_ok]] == mfn[pos_ok]
    safe = np.where(known, pos, 0)
    owner = np.where(known, cols["domain"][safe] if len(cols["mfn"]) else 0, 0).astype(np.uint64)
    free = known & (cols["state"][safe] == STATES.index("free")) if len(cols["mfn"]) else known
    max_page = host.max_page
    m2p = host.m2p_array(0, max_page)
    below = mfn < np.uint64(max_page)
    back = np.where(below, m2p[np.where(below, mfn, 0).astype(np.int64)], np.uint64((1 << 64) - 1))
    ram = _type_mask(types, p2m_types.RAM)
    grant = _type_mask(types, ("grant_map_rw", "grant_map_ro", "map_foreign"))
    mmio = _type_mask(types, ("mmio_direct",))
    mine = owner == np.uint64(dom.pickled)
    masks = {
        "mismatch": ram & mine & (back != gfn),
        "foreign": ram & known & ~free & ~mine,
        "free": (ram | grant) & free,
        "beyond-max": (ram | grant) & ~below,
        "duplicate": _duplicates(mfn, ram & ~_type_mask(types, ("ram_shared",))),
        "grant": grant, "mmio": mmio, "recalc": recalc,
    }
    findings = {c: _findings(c, m, gfn, mfn, types, owner, back, host) for c, m in masks.items()}
    findings["not-backed"] = [{"pfn": x.gfn, "mfn": None, "p2m_type": x.entry.type_name, "entry": x.entry.raw}
                              for x in absent]
    counts = {c: len(findings[c]) for c in CLASSES}
    return {"domain": dom.id, "translated": True, "type": kind.type, "paging": kind.paging,
            "p2m_format": p2m.format.title, "frames": int(len(gfn)), "tables": found.tables,
            "table_problems": found.problems, "max_mfn": max_page, "counts": counts, "findings": findings,
            "problems": sum(counts[c] for c in CLASSES if c not in INFORMATIONAL) + len(found.problems),
            "sources": {"p2m": p2m.source, "m2p": "Xen's M2P (RDWR_MPT_VIRT_START)",
                        "owners": "Xen's frame table"}, "format": "xen-host"}


def _duplicates(mfn, mask):
    out = np.zeros(len(mfn), bool)
    if mask.any():
        sel = np.nonzero(mask)[0]
        values, counts = np.unique(mfn[sel], return_counts=True)
        out[sel[np.isin(mfn[sel], values[counts > 1])]] = True
    return out


def _findings(cls, mask, gfn, mfn, types, owner, back, host, limit=100000):
    rows = []
    for i in np.nonzero(mask)[0][:limit].tolist():
        d = host.owner(int(owner[i])) if int(owner[i]) else None
        m2p = int(back[i])
        rows.append({"pfn": int(gfn[i]), "mfn": int(mfn[i]), "p2m_type": p2m_types.type_name(int(types[i])),
                     "owner": d.id if d else None, "owner_name": d.name if d else "anonymous",
                     "m2p": None if m2p >> 63 else m2p})
    return rows


def finding_text(cls, f):
    """One line of a translated domain's finding."""
    if f["mfn"] is None:
        return f"gfn {f['pfn']:#x}: {f['p2m_type']} (entry {f['entry']:#x})"
    m2p = "-" if f["m2p"] is None else f"{f['m2p']:#x}"
    return f"gfn {f['pfn']:#x} -> mfn {f['mfn']:#x} {f['p2m_type']}: owner {f['owner_name']}, M2P {m2p}"
