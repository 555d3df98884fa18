"""Frame owners for the P2M check (:func:`.p2m.check`): a dense table indexed by mfn (tests,
benchmarks, small machines) or the sparse :class:`FrameOwners` of a host dump, which holds only the
frames whose ``page_info`` the dump has, so that its size follows the dump's RAM and not
``max_page`` (a PDX hole puts the top frame far above the RAM's size).

Both answer through the same small interface (:func:`owner_codes`): a code per mfn (the domain's
own frame, another owner's, unknown), a mark per owned frame that some P2M entry uses, and the
owned frames never marked (``m2p-orphan`` candidates).
"""

import numpy as np

U64 = np.uint64
UNKNOWN_OWNER = (1 << 64) - 1          # a frame whose owner is not known (page_info not in the dump)
OWN_ME, OWN_OTHER, OWN_UNKNOWN = 0, 1, 2


class FrameOwners:
    """Raw owners of the frames a host dump describes.

    :param mfn: sorted uint64 mfns whose ``page_info`` the dump holds
    :param raw: their raw owners (0 for free frames)
    :param xenheap: bool, PGC_xen_heap frames in use
    :param max_page: Xen's ``max_page``: mfns at or above it read :data:`UNKNOWN_OWNER`
    :param hole_mask: mfn bits PDX compression drops: an mfn with one of them set is no frame
                      (owner 0, as a free frame); any other mfn without a record reads
                      :data:`UNKNOWN_OWNER` (its frame-table page is not in the dump)
    """

    def __init__(self, mfn, raw, xenheap, max_page, hole_mask=0):
        self.mfn, self.raw, self.xenheap = mfn, raw, xenheap
        self.max_page, self.hole_mask = max_page, hole_mask

    def __len__(self):
        return self.max_page

    def positions(self, mfns):
        """``(index into mfn, hit)`` for each of ``mfns``."""
        mfns = np.asarray(mfns, U64)
        if not len(self.mfn):
            return np.zeros(len(mfns), np.intp), np.zeros(len(mfns), bool)
        pos = np.searchsorted(self.mfn, mfns)
        pos = np.minimum(pos, len(self.mfn) - 1)
        return pos, self.mfn[pos] == mfns

    def lookup(self, mfns):
        """Raw owners of ``mfns`` (uint64; see the class docstring for frames without a record)."""
        mfns = np.asarray(mfns, U64)
        pos, hit = self.positions(mfns)
        out = np.full(len(mfns), UNKNOWN_OWNER, U64)
        if self.hole_mask:
            out[(mfns < U64(self.max_page)) & ((mfns & U64(self.hole_mask)) != 0)] = 0
        out[hit] = self.raw[pos[hit]]
        return out

    def __getitem__(self, mfn):
        return int(self.lookup([mfn])[0])


def owner_of(owners, mfn):
    """The raw owner of one mfn from a dense table or a :class:`FrameOwners` (None when unknown)."""
    if owners is None or not 0 <= mfn < 1 << 64:
        return None
    if isinstance(owners, FrameOwners):
        return owners[mfn]
    return int(owners[mfn]) if mfn < len(owners) else None


class _Dense:
    """Codes and marks as byte-per-frame tables indexed by mfn."""

    def __init__(self, owners, me, xenheap):
        from .p2m import _lookup
        self._lookup = _lookup
        self.owners = np.asarray(owners, U64)
        self.ocode = (self.owners != U64(me)).view(np.uint8)       # OWN_ME 0, OWN_OTHER 1
        unknown = np.flatnonzero(self.owners == U64(UNKNOWN_OWNER)) if U64(me) != U64(UNKNOWN_OWNER) else []
        if len(unknown):
            self.ocode[unknown] = OWN_UNKNOWN
        self.mark = np.zeros(len(self.owners), bool)
        if xenheap is not None:
            xh = np.asarray(xenheap, bool)[:len(self.mark)]
            self.mark[:len(xh)] |= xh                    # "accounted for": never orphans

    def covers(self, max_mfn):
        return len(self.ocode) >= max_mfn

    def code(self, mfns, bounded=False):
        return self._lookup(self.ocode, mfns, OWN_UNKNOWN, bounded)

    def use(self, mfns, bounded=False):
        if not bounded:
            mfns = mfns[mfns < U64(len(self.mark))]
        self.mark[mfns.view(np.int64)] = True

    def raw(self, mfns):
        return self._lookup(self.owners, mfns, UNKNOWN_OWNER)

    def orphans(self):
        return np.flatnonzero((self.ocode == OWN_ME) & ~self.mark).astype(U64)


class _Sparse:
    """Codes and marks per frame of a :class:`FrameOwners`, found by binary search."""

    def __init__(self, owners, me, xenheap=None):
        self.owners = owners
        self.me = U64(me)
        self.ocode = (owners.raw != self.me).view(np.uint8)
        self.mark = np.asarray(owners.xenheap, bool).copy()

    def covers(self, max_mfn):
        return False

    def code(self, mfns, bounded=False):
        raw = self.owners.lookup(mfns)
        out = (raw != self.me).view(np.uint8)
        out[raw == U64(UNKNOWN_OWNER)] = OWN_UNKNOWN if self.me != U64(UNKNOWN_OWNER) else OWN_ME
        return out

    def use(self, mfns, bounded=False):
        pos, hit = self.owners.positions(mfns)
        self.mark[pos[hit]] = True

    def raw(self, mfns):
        return self.owners.lookup(mfns)

    def orphans(self):
        return self.owners.mfn[(self.ocode == OWN_ME) & ~self.mark]


def owner_codes(owners, me, xenheap=None):
    """The code/mark interface over ``owners`` (a dense table by mfn or a :class:`FrameOwners`)."""
    if isinstance(owners, FrameOwners):
        return _Sparse(owners, me)
    return _Dense(owners, me, xenheap)
