"""P2M <-> M2P cross-check of a PV guest, over whole tables with numpy.

The P2M (a guest's pfn -> mfn list, Linux ``xen_p2m_addr[pfn]``) and Xen's M2P (mfn -> pfn) must
be inverses of each other for every frame the guest owns; this is what Linux's ``mfn_to_pfn()``
checks one frame at a time (reference §6.1). :func:`check` does it for every pfn at once: no
Python loop per pfn, so a 64 GiB guest (16 M pfns) takes well under a second.

Entry encoding (Linux ``asm/xen/page.h``, reference §6.1): ``INVALID_P2M_ENTRY`` = ~0,
``FOREIGN_FRAME_BIT`` = bit 63 (a frame of another domain, grant-mapped), ``IDENTITY_FRAME_BIT`` =
bit 62 (non-RAM 1:1 ranges); the mfn is the entry with both bits cleared. M2P values with the top
bit set are not pfns (``INVALID_M2P_ENTRY`` ~0, ``SHARED_M2P_ENTRY`` ~0-1, reference §2.2).

Classes of findings (:data:`CLASSES`); every pfn lands in at most one P2M-side class, so one fault
is counted once (precedence: beyond-max, foreign, identity, duplicate, mismatch):

``beyond-max``        the entry names an mfn >= ``max_mfn``; ``other`` = max_mfn
``foreign``           FOREIGN_FRAME_BIT set, or (with ``owners``) the frame's owner is not ``me``;
                      ``other`` = the raw owner (with owners) else the M2P value
``identity``          IDENTITY_FRAME_BIT set (informational, not a problem); ``other`` = raw entry
``duplicate``         two or more pfns name the same mfn: one row per pfn, ``other`` = how many
                      pfns share it (the dict lists them all, ``pfns``)
``mismatch``          pfn -> mfn -> M2P pfn' != pfn; ``other`` = pfn' (~0 when M2P says invalid)
``invalid-in-range``  INVALID inside the populated range (below the highest pfn whose entry names
                      one of the domain's own frames — foreign and identity entries, which Linux
                      places in ballooned pfns above its RAM, do not extend it — or inside
                      ``populated``); ``mfn`` = ~0, ``other`` = end of the range
``m2p-orphan``        (needs ``owners``/``me``) a frame owned by the domain that no P2M entry maps:
                      ``pfn`` = what the M2P says for it, ``other`` = the P2M entry at that pfn
                      (~0 when beyond the list). A frame that a mismatched/foreign entry does map
                      is not an orphan (that entry is already reported).
"""

from dataclasses import dataclass, field

import numpy as np

from ..errors import NotInDump, XenscopeError
from . import p2m_owners
from .p2m_list import (MAX_ENTRIES, START_INFO, linux_p2m_end, linux_p2m_location, p2m_from_linux,
                       p2m_from_symbols, read_virt_u64, start_info_mfn_list)
from .p2m_owners import OWN_OTHER, FrameOwners, owner_codes

# the list readers live in p2m_list; these names stay importable from here
READERS = (MAX_ENTRIES, START_INFO, linux_p2m_end, linux_p2m_location, p2m_from_linux, p2m_from_symbols,
           read_virt_u64, start_info_mfn_list)
U64 = np.uint64
INVALID_P2M_ENTRY = (1 << 64) - 1
FOREIGN_FRAME_BIT = 1 << 63
IDENTITY_FRAME_BIT = 1 << 62
MFN_MASK = (1 << 62) - 1
INVALID_M2P_ENTRY = (1 << 64) - 1
SHARED_M2P_ENTRY = (1 << 64) - 2
UNKNOWN_OWNER = p2m_owners.UNKNOWN_OWNER   # in ``owners``: a frame whose owner is not known
PAGE = 4096

CLASSES = ("mismatch", "beyond-max", "duplicate", "foreign", "foreign-allowed", "identity", "invalid-in-range",
           "m2p-orphan")
INFORMATIONAL = ("identity", "foreign-allowed")
OTHER_NAME = {"mismatch": "m2p", "beyond-max": "max_mfn", "duplicate": "count", "foreign": "owner",
              "identity": "entry", "invalid-in-range": "range_end", "m2p-orphan": "p2m"}


@dataclass
class Findings:
    """One class of findings as parallel uint64 arrays (plus class-specific extra columns)."""
    pfn: np.ndarray
    mfn: np.ndarray
    other: np.ndarray
    extra: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.pfn)


def _empty():
    z = np.zeros(0, U64)
    return Findings(z, z, z)


def _value_or_none(v, invalid=INVALID_M2P_ENTRY):
    return None if v == invalid else v


@dataclass
class P2MReport:
    """What :func:`check` found: ``findings[class]`` (:class:`Findings`), counts, sentences."""
    pfns: int
    max_mfn: int
    populated_end: int
    have_owners: bool
    findings: dict

    @property
    def counts(self):
        return {c: len(self.findings[c]) for c in CLASSES}

    @property
    def problems(self):
        """Number of findings that are problems (every class but ``identity``)."""
        return sum(len(f) for c, f in self.findings.items() if c not in INFORMATIONAL)

    @property
    def ok(self):
        return self.problems == 0

    def as_dicts(self, cls, limit=None):
        """The first ``limit`` findings of class ``cls`` (all when None) as plain dicts (ints, None
        for ~0 where it means "no value")."""
        f = self.findings[cls]
        n = len(f) if limit is None else min(limit, len(f))
        pfn, mfn, other = (a[:n].tolist() for a in (f.pfn, f.mfn, f.other))
        extra = {k: v[:n].tolist() for k, v in f.extra.items()}
        groups = {}
        if cls == "duplicate" and n:
            want = np.unique(f.mfn[:n])
            sel = np.isin(f.mfn, want)
            for p, m in zip(f.pfn[sel].tolist(), f.mfn[sel].tolist()):
                groups.setdefault(m, []).append(p)
        out = []
        for i in range(n):
            d = {"class": cls, "pfn": _value_or_none(pfn[i]), "mfn": _value_or_none(mfn[i])}
            o = other[i]
            if cls in ("foreign", "foreign-allowed"):
                d["owner"] = o if self.have_owners else None
                d["m2p"] = _value_or_none(extra["m2p"][i])
                d["foreign_bit"] = bool(extra["foreign_bit"][i])
            elif cls == "duplicate":
                d["pfns"] = sorted(groups[mfn[i]])
                d["m2p"] = _value_or_none(extra["m2p"][i])
            elif cls in ("mismatch",):
                d["m2p"] = o
                d["m2p_text"] = m2p_text(o)
            elif cls == "m2p-orphan":
                d["p2m"] = _value_or_none(o, INVALID_P2M_ENTRY)
                d["m2p_text"] = m2p_text(pfn[i])
            else:
                d[OTHER_NAME[cls]] = o
            out.append(d)
        return out

    def to_json(self, limit=None):
        """Counts, one sentence per class and the findings (all of them when ``limit`` is None)."""
        return {"pfns": self.pfns, "max_mfn": self.max_mfn, "populated_end": self.populated_end,
                "have_owners": self.have_owners, "counts": self.counts, "problems": self.problems,
                "summary": self.summary(), "findings": {c: self.as_dicts(c, limit) for c in CLASSES}}

    def summary(self):
        """One sentence per class: ``{class: text}``."""
        s = {}
        c = self.counts
        s["mismatch"] = (f"{c['mismatch']} pfn(s) name a frame whose M2P entry names another pfn (or is invalid)"
                         if c["mismatch"] else "every P2M entry of the domain's own frames is mirrored by the M2P")
        s["beyond-max"] = f"{c['beyond-max']} entr(y/ies) name an mfn >= max_mfn {self.max_mfn:#x}"
        s["duplicate"] = (f"{c['duplicate']} pfn(s) share {len(np.unique(self.findings['duplicate'].mfn))} "
                          f"mfn(s) with another pfn")
        fo = self.findings["foreign"]
        nbit = int(np.count_nonzero(fo.extra["foreign_bit"])) if len(fo) else 0
        s["foreign"] = (f"{c['foreign']} entr(y/ies) name frames of another domain "
                        f"({nbit} marked FOREIGN_FRAME_BIT, {c['foreign'] - nbit} without it"
                        + ("" if self.have_owners else "; owners unknown: only the bit is checked") + ")")
        s["foreign-allowed"] = (f"{c['foreign-allowed']} entr(y/ies) name another domain's frame that a grant or "
                                f"the domain's privilege allows (informational)")
        s["identity"] = f"{c['identity']} identity (1:1, non-RAM) entr(y/ies) (informational)"
        s["invalid-in-range"] = (f"{c['invalid-in-range']} INVALID entr(y/ies) inside the populated range "
                                 f"[0, {self.populated_end:#x})")
        s["m2p-orphan"] = (f"{c['m2p-orphan']} frame(s) owned by the domain that the P2M does not map"
                           if self.have_owners else "not checked (needs the frame owners)")
        return s


def m2p_text(v):
    if v == INVALID_M2P_ENTRY:
        return "invalid"
    if v == SHARED_M2P_ENTRY:
        return "shared (dom_cow)"
    if v >> 63:
        return f"not a pfn ({v:#x})"
    return f"{v:#x}"


def _lookup(table, idx, fill, bounded=False):
    """``table[idx]`` for a numpy table (any dtype; ``fill`` beyond its end) or a callable
    (sparse source, returns uint64). ``bounded``: the caller knows every index is in the table."""
    idx = np.asarray(idx, U64)
    if callable(table):
        return np.asarray(table(idx), U64)
    ii = idx.view(np.int64)
    if bounded or (len(idx) and int(idx.max()) < len(table)):
        return table.take(ii)
    out = np.full(len(idx), fill, table.dtype)
    ok = idx < U64(len(table))
    out[ok] = table.take(ii[ok])
    return out


CHUNK = 1 << 18                        # entries classified together (temporaries stay in cache)


def _entry_masks(e):
    """Decode P2M entries: ``(mfn, inv, fbit, ident, named)``."""
    inv = e == U64(INVALID_P2M_ENTRY)
    top = e >> U64(62)
    fbit = (top >= U64(2)) & ~inv
    ident = top == U64(1)
    return e & U64(MFN_MASK), inv, fbit, ident, ~(inv | ident)


class _Chunks:
    """Per-chunk pass over the P2M: everything that needs one look at each entry.

    Fast path: ``max_mfn`` < 2**62, so ``entry < max_mfn`` alone says "names an existing frame,
    no flag bit"; only the other entries (usually few) are decoded one class at a time."""

    def __init__(self, p2m, m2p, max_mfn, codes):
        self.p2m, self.m2p, self.max_mfn, self.codes = p2m, m2p, max_mfn, codes
        self.ar = np.arange(min(CHUNK, len(p2m)), dtype=U64)
        # tables at least max_mfn long need no bounds check per lookup
        self.m2p_bounded = not callable(m2p) and len(m2p) >= max(max_mfn, 1)     # index 0 stands in for beyond-max
        self.ocode_bounded = codes is not None and codes.covers(max_mfn)

    def __call__(self, a):
        e = self.p2m[a:a + CHUNK]
        n = len(e)
        mx = U64(self.max_mfn)
        ok = e < mx
        z = np.zeros(0, np.intp)
        res = {"beyond": z, "foreign": z, "identity": z, "inv": z, "foreign_back": np.zeros(0, U64)}
        bad = z if ok.all() else np.flatnonzero(~ok)
        if len(bad):
            mc = np.where(ok, e, U64(0))
            bm, binv, bfb, bident, bnamed = _entry_masks(e[bad])
            res["beyond"] = bad[bnamed & (bm >= mx)] + a
            res["identity"] = bad[bident] + a
            res["inv"] = bad[binv] + a
            fb = bad[bnamed & bfb & (bm < mx)]       # FOREIGN_FRAME_BIT entries naming real frames
        else:
            mc = e
            fb = z
        back = _lookup(self.m2p, mc, INVALID_M2P_ENTRY, self.m2p_bounded)
        cand = (back - U64(a)) != self.ar[:n]            # back != pfn (mod 2**64)
        if len(bad):
            cand &= ok
        fo = z
        if self.codes is not None:
            other = self.codes.code(mc, self.ocode_bounded) == OWN_OTHER
            if len(bad):
                other &= ok
            if other.any():
                fo = np.flatnonzero(other)
                cand[fo] = False
            self.codes.use(mc[ok] if len(bad) else mc, self.ocode_bounded)
        mi = np.flatnonzero(cand)
        if len(fb) or len(fo):
            fbm = e[fb] & U64(MFN_MASK)
            if self.codes is not None and len(fb):
                self.codes.use(fbm)
            fall = np.union1d(fo, fb)
            res["foreign"] = fall + a
            fm = np.where(ok[fall], e[fall], e[fall] & U64(MFN_MASK))
            res["foreign_back"] = _lookup(self.m2p, fm, INVALID_M2P_ENTRY)
        # the populated range ends after the last entry naming one of the domain's own frames:
        # foreign mappings (Linux puts them in ballooned pfns above its RAM) do not extend it
        own = ok.copy()
        if len(fo):
            own[fo] = False
        last = a + n - 1 - int(np.argmax(own[::-1])) if own.any() else -1
        res.update(mi=mi + a, mi_back=back[mi], last=last)
        return res


def _workers():
    import os
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def check(p2m, m2p, max_mfn, owners=None, me=None, populated=None, xenheap=None, partial=False, placeholders=None):
    """Cross-check a P2M list against the M2P (and the frame owners when given).

    :param p2m: uint64 array indexed by pfn (``INVALID_P2M_ENTRY`` for missing entries)
    :param m2p: uint64 array indexed by mfn, or a callable ``f(mfn uint64 array) -> values`` for
                sparse sources (mfns beyond an array read as ``INVALID_M2P_ENTRY``)
    :param max_mfn: first mfn that does not exist (Xen's ``max_page``)
    :param owners: optional uint64 array of raw page owners indexed by mfn (0: none/free,
                   :data:`UNKNOWN_OWNER`: not known), or a sparse :class:`FrameOwners`; enables
                   owner checks and ``m2p-orphan``
    :param me: this domain's raw owner value (with ``owners``)
    :param populated: ``N`` (pfns [0, N)) or ``(start, end)``: where INVALID entries are findings;
                      default: below the highest pfn whose entry names a frame
    :param xenheap: optional bool array by mfn: Xen heap frames Xen shares with their owner
                    (``shared_info``: owned by the domain, M2P invalid, mapped by machine address,
                    never in the P2M), which are therefore not ``m2p-orphan``
    :param partial: ``p2m`` is only the first entries of a longer list: owned frames whose M2P pfn
                    lies beyond it are not judged (not ``m2p-orphan``)
    :param placeholders: optional ``(k, 2)`` array of ``[first, end)`` pfn ranges the guest covers with
                    a shared placeholder page (Linux's ``p2m_missing``/``p2m_identity``:
                    :mod:`.p2m_list`): their INVALID entries are by design, not ``invalid-in-range``
    :return: :class:`P2MReport`

    Work is done :data:`CHUNK` entries at a time (on up to 4 threads: numpy releases the GIL),
    one random gather into the M2P (and one into a byte-per-frame owner code) per entry.
    """
    p2m = np.ascontiguousarray(np.asarray(p2m, U64).ravel())
    n = len(p2m)
    max_mfn = int(max_mfn)
    m2p = m2p if callable(m2p) else np.asarray(m2p, U64)
    codes = None
    if owners is not None:
        if me is None:
            raise XenscopeError("check(): owners given without me (the domain's raw owner value)")
        codes = owner_codes(owners, me, xenheap)
    job = _Chunks(p2m, m2p, max_mfn, codes)
    starts = range(0, n, CHUNK)
    nw = _workers() if n > CHUNK else 1
    if nw > 1:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(nw) as ex:
            parts = list(ex.map(job, starts))
    else:
        parts = [job(a) for a in starts]

    def cat(key, dtype=np.intp):
        arrs = [p[key] for p in parts]
        return np.concatenate(arrs).astype(dtype) if arrs else np.zeros(0, dtype)
    mi, mb = cat("mi"), cat("mi_back", U64)
    last = max([p["last"] for p in parts], default=-1)

    # Consistent entries (M2P names the pfn back) never share an mfn with each other, so duplicates
    # are found among the mismatched entries and the partners the M2P names for them.
    mm = p2m[mi] & U64(MFN_MASK)
    part = mb[mb < U64(n)].astype(np.intp)
    if len(part):
        pe = p2m[part]
        pmfn, _, pfb, _, pnamed = _entry_masks(pe)
        pok = pnamed & ~pfb & (pmfn < U64(max_mfn))
        if codes is not None:
            pok &= codes.code(np.where(pok, pmfn, U64(0))) != OWN_OTHER
        pok &= np.isin(pmfn, mm)
        part = part[pok]
    grp = np.unique(np.concatenate([mi, part]))
    gm = p2m[grp] & U64(MFN_MASK)
    _, ginv, gcnt = np.unique(gm, return_inverse=True, return_counts=True)
    cnt = gcnt[ginv.ravel()]
    dup = grp[cnt > 1]
    dup_cnt = cnt[cnt > 1].astype(U64)
    order = np.lexsort((dup, gm[cnt > 1]))           # grouped by mfn, then pfn
    dup, dup_cnt = dup[order], dup_cnt[order]
    keep = ~np.isin(mi, dup)
    mis, mis_back = mi[keep], mb[keep]

    if populated is None:
        lo, hi = 0, last + 1
    elif isinstance(populated, tuple):
        lo, hi = max(0, int(populated[0])), max(0, min(n, int(populated[1])))
    else:
        lo, hi = 0, max(0, min(n, int(populated)))
    invi = cat("inv")
    invi = invi[(invi >= lo) & (invi < hi)]
    if placeholders is not None and len(placeholders) and len(invi):
        invi = invi[~_in_ranges(invi, placeholders)]

    def col(idx, what):
        return (p2m[idx] & U64(MFN_MASK)) if what == "mfn" else idx.astype(U64)
    f = {}
    b = cat("beyond")
    f["beyond-max"] = Findings(col(b, "pfn"), col(b, "mfn"), np.full(len(b), max_mfn, U64))
    fo = cat("foreign")
    fo_mfn = col(fo, "mfn")
    fo_bit = (p2m[fo] >> U64(63)).astype(bool)
    fo_back = cat("foreign_back", U64)
    fo_other = codes.raw(fo_mfn) if codes is not None else fo_back
    f["foreign"] = Findings(col(fo, "pfn"), fo_mfn, fo_other, extra={"foreign_bit": fo_bit, "m2p": fo_back})
    f["foreign-allowed"] = _empty()          # filled by whoever knows grants and privileges (p2m_sources)
    idn = cat("identity")
    f["identity"] = Findings(col(idn, "pfn"), col(idn, "mfn"), p2m[idn])
    f["duplicate"] = Findings(col(dup, "pfn"), col(dup, "mfn"), dup_cnt,
                              extra={"m2p": _lookup(m2p, col(dup, "mfn"), INVALID_M2P_ENTRY)})
    f["mismatch"] = Findings(col(mis, "pfn"), col(mis, "mfn"), mis_back)
    f["invalid-in-range"] = Findings(col(invi, "pfn"), np.full(len(invi), INVALID_P2M_ENTRY, U64),
                                     np.full(len(invi), hi, U64))
    f["m2p-orphan"] = _orphans(p2m, m2p, codes, partial) if codes is not None else _empty()
    return P2MReport(pfns=n, max_mfn=max_mfn, populated_end=max(0, hi), have_owners=owners is not None,
                     findings={c: f[c] for c in CLASSES})


def _in_ranges(idx, ranges):
    """Bool per index: inside one of the sorted, disjoint ``[first, end)`` ``ranges``."""
    ranges = np.asarray(ranges, np.int64).reshape(-1, 2)
    pos = np.searchsorted(ranges[:, 0], idx, side="right") - 1
    ok = pos >= 0
    inside = np.zeros(len(idx), bool)
    inside[ok] = idx[ok] < ranges[pos[ok], 1]
    return inside


def _orphans(p2m, m2p, codes, partial):
    """Frames owned by the domain that no P2M entry maps: ``pfn`` = their M2P value, ``other`` =
    the P2M entry at that pfn (~0 beyond the list)."""
    n = len(p2m)
    owned = codes.orphans()
    ob = _lookup(m2p, owned, INVALID_M2P_ENTRY)
    at = np.full(len(owned), INVALID_P2M_ENTRY, U64)
    ok = ob < U64(n)
    at[ok] = p2m[ob[ok].astype(np.intp)]
    if partial:
        keep = ok | (ob >> U64(63) != 0)             # M2P pfn inside the list, or not a pfn at all
        ob, owned, at = ob[keep], owned[keep], at[keep]
    return Findings(ob, owned, at)


# ---------------------------------------------------------------------------------------------
# Sources (reading a guest's list out of memory: p2m_list; kept here under their old names)
# ---------------------------------------------------------------------------------------------

def m2p_reader(host):
    """A sparse M2P source for :func:`check`: reads only the M2P pages holding the asked mfns
    (translated together with :func:`translate_many`); unmapped parts read as invalid."""
    from ..paging import translate_many
    from .release import RDWR_MPT_VIRT_START
    max_page = host.max_page

    def lookup(mfns):
        mfns = np.asarray(mfns, U64)
        out = np.full(len(mfns), INVALID_M2P_ENTRY, U64)
        ok = mfns < U64(max_page)
        pages, inv = np.unique(mfns[ok] >> U64(9), return_inverse=True)
        if not len(pages):
            return out
        tr = translate_many(host.t, host.paging, pages * U64(PAGE) + U64(RDWR_MPT_VIRT_START))
        table = np.full((len(pages), 512), INVALID_M2P_ENTRY, U64)
        for i in np.flatnonzero(tr.ok).tolist():
            try:
                table[i] = np.frombuffer(host.t.read_phys(int(tr.pa[i]), PAGE), "<u8")
            except NotInDump:
                continue
        out[ok] = table[inv.ravel(), (mfns[ok] & U64(511)).astype(np.intp)]
        return out
    return lookup


def owners_from_host(host):
    """The frames' owners for :func:`check` as a sparse :class:`FrameOwners` (only the frames whose
    page_info the dump holds): frames in use carry their owner, free frames 0, frames whose
    page_info is not in the dump :data:`UNKNOWN_OWNER`, mfns PDX compression cannot represent 0.

    :return: ``(owners, xenheap, cols)``: ``xenheap`` is None (PGC_xen_heap frames in use are in
             ``owners.xenheap``); ``cols`` are :func:`frames.classify`'s columns."""
    from .frames import STATES, classify
    cols = classify(host, host.frame_arrays())
    present = cols["present"]
    inuse = present & (cols["state"] != STATES.index("free"))
    raw = np.where(inuse, cols["domain"], U64(0))[present]
    p = host.pdx
    hole = ((1 << 64) - 1) & ~(p.bottom_mask | p.top_mask) if p.hole_shift else 0
    owners = FrameOwners(cols["mfn"][present], raw, (inuse & cols["xen_heap"])[present], host.max_page, hole)
    return owners, None, cols


def inverse_m2p(p2m):
    """An M2P made from a P2M alone (an xl dump-core without its host): a sparse callable mapping
    each mfn the P2M names to the lowest pfn naming it, everything else to invalid."""
    p2m = np.asarray(p2m, U64)
    inv = p2m == U64(INVALID_P2M_ENTRY)
    ident = (p2m >> U64(62)) == U64(1)
    idx = np.flatnonzero(~(inv | ident))
    keys = p2m[idx] & U64(MFN_MASK)
    order = np.lexsort((idx, keys))
    keys, vals = keys[order], idx[order].astype(U64)

    def lookup(mfns):
        mfns = np.asarray(mfns, U64)
        pos = np.searchsorted(keys, mfns)
        pos_c = np.minimum(pos, max(0, len(keys) - 1))
        hit = (pos < len(keys)) & (keys[pos_c] == mfns) if len(keys) else np.zeros(len(mfns), bool)
        return np.where(hit, vals[pos_c] if len(keys) else U64(0), U64(INVALID_M2P_ENTRY)).astype(U64)
    return lookup
