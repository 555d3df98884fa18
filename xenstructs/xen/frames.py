"""The frame table as a whole: classify every machine frame, query it, count it (census).

Works on the arrays of :meth:`XenHost.frame_arrays` with numpy: a host with millions of frames is
classified without a Python loop per frame. Names follow :mod:`xenstructs.xen.layouts`.
"""

TYPES = ("none", "l1", "l2", "l3", "l4", "seg_desc", "writable", "shared")
STATES = ("inuse", "offlining", "offlined", "free")


def classify(host, arr):
    """Decode the arrays of :meth:`XenHost.frame_arrays` into per-frame columns.

    :return: dict of numpy arrays: ``type`` (index into the layout's type names, or -1 for an
             unknown type value), ``state`` (index into :data:`STATES`), ``pinned``, ``validated``,
             ``type_count``, ``count``, ``xen_heap``, ``allocated``, plus the input columns.
    """
    import numpy as np
    lay = host.layout
    ti, ci = arr["type_info"], arr["count_info"]
    tval = (ti & np.uint64(lay.type.type_mask))
    type_idx = np.full(len(ti), -1, np.int16)
    for k, name in enumerate(TYPES):
        v = lay.type.types.get(name)
        if v is not None:
            type_idx[tval == np.uint64(v)] = k
    state_idx = np.zeros(len(ci), np.int8)
    sval = ci & np.uint64(lay.count.state_mask)
    for k, name in enumerate(STATES):
        state_idx[sval == np.uint64(lay.count.states[name])] = k

    def flag(word, table, name):
        m = table.get(name, 0)
        return (word & np.uint64(m)) != 0 if m else np.zeros(len(word), bool)
    out = dict(arr)
    out.update(type=type_idx, state=state_idx,
               pinned=flag(ti, lay.type.flags, "pinned"), validated=flag(ti, lay.type.flags, "validated"),
               type_count=ti & np.uint64(lay.type.count_mask), count=ci & np.uint64(lay.count.count_mask),
               xen_heap=flag(ci, lay.count.flags, "xen_heap"), allocated=flag(ci, lay.count.flags, "allocated"))
    return out


class FrameIndex:
    """Position of an mfn in columns sorted by mfn (:meth:`XenHost.frame_arrays`'s order), found
    by binary search: no Python object per frame."""

    def __init__(self, mfns):
        self.mfns = mfns

    def get(self, mfn, default=None):
        import numpy as np
        if not 0 <= mfn < 1 << 64:
            return default
        i = int(np.searchsorted(self.mfns, np.uint64(mfn)))
        return i if i < len(self.mfns) and int(self.mfns[i]) == mfn else default


def owner_names(host, raw_values):
    """``{raw owner value: name}`` for the distinct raw owners (``anonymous`` for 0)."""
    names = {}
    for raw in raw_values:
        raw = int(raw)
        if raw == 0:
            names[raw] = "anonymous"
            continue
        d = host.owner(raw)
        names[raw] = d.name if d is not None else f"{raw:#x}"
    return names


def select(host, cols, type=None, owner=None, pinned=False, state=None):
    """Boolean mask of the frames matching the filters (``owner`` is a domid or a name)."""
    import numpy as np
    mask = cols["present"].copy()
    if state is not None:
        mask &= cols["state"] == STATES.index(state)
    if type is not None:
        mask &= cols["type"] == TYPES.index(type)
        mask &= cols["state"] != STATES.index("free")
    if pinned:
        mask &= cols["pinned"]
    if owner is not None:
        want = str(owner)
        free = cols["state"] == STATES.index("free")
        raws = np.unique(cols["domain"][mask & ~free])
        names = owner_names(host, raws)
        from .layouts import domid_name
        alias = domid_name(_int(want)) if 0 <= _int(want) <= 0xFFFF else None
        ok = [r for r, nm in names.items() if nm in (want, f"d{want}", alias)]
        mask &= np.isin(cols["domain"], np.array(ok, np.uint64)) & ~free
    return mask


def _int(text):
    try:
        return int(text, 0)
    except (TypeError, ValueError):
        return -1


def census(host, cols):
    """Pages per owner x type for frames in use, frames per state, and inconsistencies:
    free frames that still hold references (a non-zero count in count_info)."""
    import numpy as np
    present = cols["present"]
    free = (cols["state"] == STATES.index("free")) & present
    inuse = present & ~free
    raws, inverse = np.unique(cols["domain"][inuse], return_inverse=True)
    names = owner_names(host, raws)
    types = cols["type"][inuse]
    table = {}
    for ri, raw in enumerate(raws.tolist()):
        sel = inverse == ri
        counts = np.bincount(types[sel] + 1, minlength=len(TYPES) + 1)
        row = {("unknown" if k == 0 else TYPES[k - 1]): int(c) for k, c in enumerate(counts) if c}
        name = names[raw]
        merged = table.setdefault(name, {})
        for k, c in row.items():
            merged[k] = merged.get(k, 0) + c
    alloc = {}
    for ri, raw in enumerate(raws.tolist()):
        n = int(cols["allocated"][inuse][inverse == ri].sum())
        alloc[names[raw]] = alloc.get(names[raw], 0) + n
    states = {STATES[k]: int(c) for k, c in enumerate(np.bincount(cols["state"][present], minlength=4)) if c}
    # a free frame's type_info is u.free (first_dirty, scrub state), not a type count: only the
    # reference count of count_info says whether something still holds the page
    bad_free = free & (cols["count"] != 0)
    return {"by_owner": table, "allocated_by_owner": alloc, "states": states, "frames": int(present.sum()),
            "missing": int(cols.get("missing", 0)) + int((~present).sum()),
            "free_with_references": [int(m) for m in cols["mfn"][bad_free][:100].tolist()],
            "free_with_references_count": int(bad_free.sum())}
