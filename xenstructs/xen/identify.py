"""Which ``struct page_info`` layout a Xen host's frame table itself fits, when nothing says the version.

The last rule of the layout choice (after the crash note, ``--xen``, the image's own version functions
and the console banner). Every known layout (:mod:`.layouts`: the type bits T1/T2/T3 and the count
bits C1..C5, with and without shadow paging) decodes the whole frame table, and a layout is kept when,
read with it, the frame table is one Xen could have written:

* **owners**: every frame in use with ``PGC_allocated`` (bit 63 in every layout) belongs to a domain
  -- its owner value names a xen-heap page that holds a domain id (``domain_id`` is the first member of
  ``struct domain``): a real domain, or dom_xen/dom_io/dom_cow;
* **pins**: every pinned frame (``PGT_pinned``, bit 59) is a page table, L1 to L4 (PV guests pin
  their roots, Linux also its L1s);
* **types**: no frame in use has a type value the layout does not define;
* **counts**: reference and type counts of frames in use are below 2^32 (a state or flag bit read as
  part of a count makes it huge);
* **locks**: at most one frame per CPU holds ``PGT_locked`` (a CPU holds it while it validates or
  invalidates one page table);
* **cache attributes** (C1/C2 only): no frame without an owner carries one (a free page of the
  C3+ layouts read as C1/C2 shows its state bits there).

The layouts that fit are compared frame by frame (state, type, pinned, validated, counts, xen heap):
when they decode this dump alike, the newest is taken and the others are named; when none fits or
those that fit disagree, the user must give ``--xen``.
"""

from ..errors import XenscopeError
from . import layouts
from .frames import STATES, TYPES, classify
from .layouts import DOMID_FIRST_RESERVED, DOMID_COW, DOMID_IO, DOMID_XEN, Layout, Selection

CANDIDATES = (  # oldest first; the newest of those that decode a dump alike is chosen
    ("4.4-4.9", layouts.T1, layouts.C1_OLD), ("4.10-4.13.4", layouts.T2, layouts.C1),
    ("4.14.0-4.14.5, 4.15.0-4.15.2, 4.16.0-4.16.1", layouts.T2, layouts.C2),
    ("4.13.5+", layouts.T3, layouts.C3P), ("4.17, 4.14.6+, 4.15.3+, 4.16.2+", layouts.T3, layouts.C3),
    ("4.18-4.21 without shadow paging", layouts.T3, layouts.C4_NOSHADOW),
    ("4.18-4.21", layouts.T3, layouts.C4),
    ("4.22+ without shadow paging", layouts.T3, layouts.C5_NOSHADOW), ("4.22+", layouts.T3, layouts.C5))
SPECIAL = (DOMID_XEN, DOMID_IO, DOMID_COW)
PAGE_TABLES = tuple(TYPES.index(t) for t in ("l1", "l2", "l3", "l4"))


class _Probe:
    """What :func:`~.frames.classify` needs of a host: the layout to decode with."""

    def __init__(self, layout):
        self.layout = layout


def _real_owners(host, cols, raws):
    """The raw owner values among ``raws`` that name a domain (see the module docstring)."""
    import numpy as np
    from .frames import FrameIndex
    index = FrameIndex(cols["mfn"])
    real = []
    for raw in raws.tolist():
        i = index.get(host.pdx.pdx_to_pfn(raw)) if raw else None
        if i is None or not cols["count_info"][i] >> np.uint64(62) & np.uint64(1):
            continue
        try:
            domid = int.from_bytes(host.read_va(host.directmap + (raw << 12), 2), "little")
        except XenscopeError:
            continue
        if domid < DOMID_FIRST_RESERVED or domid in SPECIAL:
            real.append(raw)
    return np.array(real, np.uint64)


def _fits(host, arr, layout, real):
    """``(decoded columns, [(rule, frames that break it)])`` of the frame table read with ``layout``."""
    import numpy as np
    cols = classify(_Probe(layout), arr)
    inuse = cols["present"] & (cols["state"] != STATES.index("free"))
    owned = ~np.isin(cols["domain"], real)
    broken = [("an allocated frame in use without a domain", inuse & cols["allocated"] & owned),
              ("a pinned frame that is not a page table",
               inuse & cols["pinned"] & ~np.isin(cols["type"], PAGE_TABLES)),
              ("a type value the layout does not define", inuse & (cols["type"] < 0)),
              ("a count of 2^32 or more", inuse & ((cols["count"] >> np.uint64(32)) != 0)),
              ("a type count of 2^32 or more", inuse & ((cols["type_count"] >> np.uint64(32)) != 0))]
    locked = layout.type.flags.get("locked", 0)
    if locked:
        held = inuse & ((arr["type_info"] & np.uint64(locked)) != 0)
        if int(held.sum()) > max(1, len(host.t.cpus())):
            broken.append(("PGT_locked (held only while a CPU validates it: at most one per CPU)", held))
    if layout.count.cacheattr_mask:
        attr = (arr["count_info"] & np.uint64(layout.count.cacheattr_mask)) != 0
        broken.append(("a cache attribute on a frame without an owner", inuse & attr & owned))
    return cols, [(rule, int(mask.sum())) for rule, mask in broken if mask.any()]


def _alike(first, other):
    """Whether two decodings of the frame table agree on every frame."""
    import numpy as np
    return all(np.array_equal(first[k], other[k]) for k in
               ("state", "type", "pinned", "validated", "type_count", "count", "xen_heap", "allocated"))


def _frames(host, bigmem):
    """The frame table's records, read with a provisional layout of the right record size."""
    from .release import directmap_start
    host.layout = Layout(layouts.T3, layouts.C3, bigmem)
    host.directmap = directmap_start(bigmem)
    host.frametable = host._frametable()
    host._max_page = None
    return host.frame_arrays()


def identify_layout(host, bigmem=False):
    """The :class:`~.layouts.Selection` whose layout the host's frame table fits (version None).

    :raises XenscopeError: no layout fits, or layouts that fit decode the frames differently
    """
    import numpy as np
    try:
        arr = _frames(host, bigmem)
    except XenscopeError as e:
        raise XenscopeError(f"the Xen version is not known from the dump and its frame table cannot be read "
                            f"to identify the page_info layout ({e}); give it with --xen X.Y.Z")
    if not len(arr["mfn"]):
        raise XenscopeError("the Xen version is not known from the dump and its frame table holds no frame; "
                            "give it with --xen X.Y.Z")
    real = _real_owners(host, arr, np.unique(arr["domain"]))
    fits, misfits = [], []
    for releases, type_layout, count_layout in CANDIDATES:
        layout = Layout(type_layout, count_layout, bigmem)
        cols, broken = _fits(host, arr, layout, real)
        if broken:
            misfits.append(f"{layout.name} ({releases}): {broken[0][1]} frame(s) with {broken[0][0]}")
        else:
            fits.append((layout, releases, cols))
    n = len(arr["mfn"])
    if not fits:
        raise XenscopeError(f"the Xen version is not known from the dump and no page_info layout fits its "
                            f"{n} frames ({'; '.join(misfits)}); give it with --xen X.Y.Z")
    chosen, releases, cols = fits[-1]
    differ = [layout.name for layout, _, other in fits[:-1] if not _alike(cols, other)]
    if differ:
        raise XenscopeError(f"the Xen version is not known from the dump and the page_info layouts "
                            f"{', '.join(differ + [chosen.name])} all fit its frame table but decode it "
                            f"differently; give it with --xen X.Y.Z")
    alike = [f"{layout.name} ({r})" for layout, r, _ in fits[:-1]]
    why = (f"identified from the frame table: layout {chosen.name} (Xen {releases}) fits all {n} frames "
           f"(owners are domains, pinned frames are page tables, counts are sane)")
    if alike:
        why += f"; {', '.join(alike)} decode every frame of this dump alike"
    why += "; " + "; ".join(f"not {m}" for m in misfits) if misfits else ""
    return Selection(chosen, None, why)
