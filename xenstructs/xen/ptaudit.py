"""PV page-table audit: check offline what Xen enforces on a PV domain's page tables.

From each pinned table of the domain (Linux PV guests pin every PGD they use), walk down as Xen
validates (``alloc_l4_table`` ... ``get_page_from_l1e``) and report, with the path (domain, L4 mfn,
slot chain) and what Xen would have logged (reference §3.2):

- ``writable-as-table``: an entry names a frame as a lower-level table, but the frame is typed
  writable (``Bad type (saw <taf> != exp <lN type>)``);
- ``type-mismatch`` / ``not-validated``: the frame has another table type, or is not validated;
- ``linear-rw``: an entry points at a table of its own level (a linear page table) with RW set
  (``Attempt to create linear p.t. with write perms``);
- ``table-mapped-rw``: an L1 entry maps a page-table frame read-write (Xen refuses the writable
  type reference: ``Bad type (saw <lN taf> != exp <writable>)``);
- ``foreign-reference``: an entry names a frame owned by another domain, and neither the mapping
  domain's privilege nor a grant explains it (:mod:`.grants`). An L1 entry of a privileged domain
  (control or hardware domain, or the owner's device model) or one backed by an active grant entry of
  the owner (a grant mapping: xenconsoled's and xenstored's mappings of a guest's rings) is
  legitimate: it is listed apart, as ``informational`` with its ``basis`` (``privileged`` or
  ``granted``), and is no finding. A foreign frame used as a page table (levels 2-4) is always a
  finding: Xen types tables only for their owner. Frames of dom_io (I/O memory a domain with iomem
  permission may map) and read-only mappings of dom_xen and dom_cow (shared) frames are not reported;
- ``type-count``: a table's type count differs from the references found (+1 when pinned; an L4
  may hold up to two more, one per CR3 of a vCPU running on it: kernel and user tables).

Xen's own slots 256-271 of each L4 are not audited (Xen fills them).
"""

from dataclasses import dataclass, field

from ..errors import NotInDump, XenscopeError
from . import layouts

XEN_L4_SLOTS = range(256, 272)
CR3_REFS = 2            # type references an L4 may hold beyond the ones found: vCPU CR3s (kernel, user)
MAX_TABLES = 1 << 18
LEVEL_TYPE = {4: "l4", 3: "l3", 2: "l2", 1: "l1"}


@dataclass
class Finding:
    kind: str
    domain: int
    l4_mfn: int
    path: list                      # [["L4", slot], ["L3", slot], ...]
    mfn: int                        # the frame the finding is about
    details: str
    xen_would_say: str = ""
    basis: str = None               # informational foreign references: "privileged" or "granted"

    @property
    def va(self):
        """The virtual address the entry maps (or the table it names covers), when the path starts
        at an L4; else None."""
        if not self.path or self.path[0][0] != "L4":
            return None
        va = 0
        for level, slot in self.path:
            va |= slot << (12 + 9 * (int(level[1:]) - 1))
        return va | 0xFFFF000000000000 if va >> 47 else va

    @property
    def label(self):
        """The kind, with the basis of an informational one: ``foreign-reference (granted)``."""
        return f"{self.kind} ({self.basis})" if self.basis else self.kind

    def as_dict(self):
        return {"kind": self.kind, "domain": self.domain, "l4_mfn": self.l4_mfn,
                "path": [list(p) for p in self.path], "mfn": self.mfn, "details": self.details,
                "xen_would_say": self.xen_would_say, "basis": self.basis, "va": self.va}


@dataclass
class Audit:
    domain: int
    tables: int = 0
    roots: list = field(default_factory=list)
    findings: list = field(default_factory=list)
    informational: list = field(default_factory=list)   # legitimate foreign references (Finding.basis)
    access: object = None           # the grants.ForeignAccess the foreign references were judged with
    cr3_refs: int = 0               # L4 type references explained as vCPU CR3s


def _frame_info(cols, index, mfn):
    i = index.get(mfn)
    if i is None:
        return None
    return {k: cols[k][i] for k in ("type", "type_count", "validated", "pinned", "domain", "state",
                                     "type_info", "count_info", "present")}


def audit_domain(host, cols, domid, access=None):
    """Audit the PV page tables of domain ``domid`` (cols: :func:`frames.classify` output; access:
    :func:`.grants.read_foreign_access` of the host, read here when not given)."""
    if access is None:
        from .grants import read_foreign_access
        access = read_foreign_access(host)
    return _DomainAudit(host, cols, domid, access).run()


class _DomainAudit:
    """One domain's walk from its pinned roots: each table's entries judged (:meth:`_leaf` for what
    an entry maps, :meth:`_table` for a lower table), then each table's type count."""

    def __init__(self, host, cols, domid, access):
        import numpy as np
        from .frames import STATES, TYPES, FrameIndex
        self.host, self.cols, self.domid, self.lay = host, cols, domid, host.layout
        doms = {d.id: d for d in host.domains()}
        if domid not in doms:
            raise XenscopeError(f"domain {domid} not found (domains: {', '.join(str(i) for i in sorted(doms))})")
        self.me = doms[domid].pickled
        self.index = FrameIndex(cols["mfn"])
        owned = (cols["domain"] == np.uint64(self.me)) & (cols["state"] != STATES.index("free")) & cols["present"]
        self.roots = []
        for lvl in (4, 3, 2, 1):
            sel = owned & cols["pinned"] & (cols["type"] == TYPES.index(LEVEL_TYPE[lvl]))
            self.roots += [(lvl, int(m)) for m in cols["mfn"][sel].tolist()]
        self.audit = Audit(domid, roots=[{"level": f"L{l}", "mfn": m} for l, m in self.roots], access=access)
        self.refs = {}                   # table mfn -> references as a table found
        self.rw_maps = {}                # frame -> RW mappings found in L1s
        self.seen = set()

    def run(self):
        for lvl, mfn in self.roots:
            self.visit(lvl, mfn, mfn if lvl == 4 else 0, [])
        self._type_counts()
        return self.audit

    def add(self, kind, l4, path, mfn, details, say=""):
        self.audit.findings.append(Finding(kind, self.domid, l4, list(path), mfn, details, say))

    def pfn_of(self, mfn):
        v = self.host.m2p(mfn)
        return "?" if v is None else f"{v:x}"

    def bad_type(self, info, want_type, mfn):
        """Xen's get_page_type() message for ``mfn`` taken as ``want_type``."""
        return (f"Bad type (saw {int(info['type_info']):016x} != exp {self.lay.type.types[want_type]:016x}) "
                f"for mfn {mfn:x} (pfn {self.pfn_of(mfn)})")

    def foreign(self, level, slot, e, l4, here, target, other):
        """A foreign frame: judged by :mod:`.grants` when mapped (a leaf), always a finding as a table."""
        owner = other.name if other else "anonymous"
        text = f"L{level}[{slot}] = {e:#x} names mfn {target:#x} owned by {owner}, not d{self.domid}"
        say = f"Error pfn {target:x}: rd=d{self.domid} od={other.name if other else '?'} (get_page)"
        if not (level == 1 or (level in (2, 3) and e & 0x80)):
            self.add("foreign-reference", l4, here, target, text + f" (as an L{level - 1} table: Xen types "
                     "tables only for their owner)", say)
            return
        basis, why = self.audit.access.judge(self.domid, target, other.id if other else None, bool(e & 2))
        if basis:
            self.audit.informational.append(Finding("foreign-reference", self.domid, l4, list(here), target,
                                                    f"{text}: {why}", "", basis))
        else:
            self.add("foreign-reference", l4, here, target, f"{text}: {why}", say)

    def visit(self, level, mfn, l4, path):
        import numpy as np
        from .frames import STATES
        if (level, mfn) in self.seen:
            return
        self.seen.add((level, mfn))
        self.audit.tables += 1
        if self.audit.tables > MAX_TABLES:
            raise XenscopeError(f"more than {MAX_TABLES} tables in domain {self.domid}: tables loop or are absurd")
        try:
            ents = np.frombuffer(self.host.t.read_table(mfn << 12), "<u8")
        except NotInDump:
            self.add("not-in-dump", l4, path, mfn, f"L{level} table mfn {mfn:#x} is not in the dump")
            return
        for slot in np.nonzero(ents & np.uint64(1))[0].tolist():
            if level == 4 and slot in XEN_L4_SLOTS:
                continue
            e = int(ents[slot])
            target = (e & 0x000FFFFFFFFFF000) >> 12
            here = path + [[f"L{level}", slot]]
            info = _frame_info(self.cols, self.index, target)
            owner_ok = info is not None and int(info["domain"]) == self.me and STATES[info["state"]] != "free"
            other = self.host.owner(int(info["domain"])) if info is not None else None
            io_page = other is not None and other.id == layouts.DOMID_IO      # MMIO/ROM: iomem permission
            shared_ro = other is not None and other.id in (layouts.DOMID_XEN, layouts.DOMID_COW) and not e & 2
            if info is not None and not owner_ok and STATES[info["state"]] != "free" \
                    and not io_page and not shared_ro:
                self.foreign(level, slot, e, l4, here, target, other)
            if level == 1 or (level == 2 and e & 0x80):
                self._leaf(level, slot, e, l4, here, target, info)
            else:
                self._table(level, slot, e, l4, here, target, info)

    def _leaf(self, level, slot, e, l4, here, target, info):
        """An entry that maps ``target``: a table mapped read-write is a finding."""
        from .frames import STATES, TYPES
        if e & 2 and info is not None and TYPES[info["type"]] in ("l1", "l2", "l3", "l4") \
                and STATES[info["state"]] != "free":
            self.add("table-mapped-rw", l4, here, target,
                     f"L{level}[{slot}] maps mfn {target:#x}, an {TYPES[info['type']].upper()} table, read-write",
                     self.bad_type(info, "writable", target))
        if e & 2:
            self.rw_maps[target] = self.rw_maps.get(target, 0) + 1

    def _table(self, level, slot, e, l4, here, target, info):
        """An entry that names ``target`` as the next lower table: its type must be that level's."""
        from .frames import TYPES
        want = level - 1
        if info is None:
            self.add("not-in-dump", l4, here, target, f"L{level}[{slot}] names mfn {target:#x}: no page_info")
            return
        t = TYPES[info["type"]] if info["type"] >= 0 else "unknown"
        if t == LEVEL_TYPE[level]:             # linear (recursive) page table entry
            if e & 2:
                self.add("linear-rw", l4, here, target,
                         f"L{level}[{slot}] = {e:#x} points at L{level} table mfn {target:#x} with RW set",
                         "Attempt to create linear p.t. with write perms")
            return
        self.refs[target] = self.refs.get(target, 0) + 1
        if t == "writable" and int(info["type_count"]):
            self.add("writable-as-table", l4, here, target,
                     f"L{level}[{slot}] uses mfn {target:#x} as an L{want} table, but it is mapped writable "
                     f"(type count {int(info['type_count'])})", self.bad_type(info, LEVEL_TYPE[want], target))
            return
        if t != LEVEL_TYPE[want]:
            self.add("type-mismatch", l4, here, target,
                     f"L{level}[{slot}] uses mfn {target:#x} as an L{want} table, but its type is {t}",
                     self.bad_type(info, LEVEL_TYPE[want], target))
            return
        if not info["validated"]:
            self.add("not-validated", l4, here, target,
                     f"L{want} table mfn {target:#x} is not validated (type_info {int(info['type_info']):#x})")
        self.visit(want, target, l4, here)

    def _type_counts(self):
        """Each table's references (+1 pinned) against its type count."""
        from .frames import TYPES
        for (lvl, mfn) in sorted(self.seen):
            info = _frame_info(self.cols, self.index, mfn)
            if info is None or TYPES[info["type"]] != LEVEL_TYPE[lvl]:
                continue
            want = self.refs.get(mfn, 0) + (1 if info["pinned"] else 0)
            have = int(info["type_count"])
            if lvl == 4 and 0 < have - want <= CR3_REFS:
                self.audit.cr3_refs += have - want      # a vCPU's CR3 (kernel and user tables) holds one each
                continue
            if want != have:
                self.add("type-count", 0, [], mfn,
                         f"L{lvl} table mfn {mfn:#x}: type count {have}, references found {want} ({have - want:+d})")


def audit(host, domain=None):
    """Audit every PV domain with pinned tables (or only ``domain``); returns a list of Audit, each
    with ``access`` (the :class:`.grants.ForeignAccess` it was judged with) set."""
    from .frames import classify
    from .grants import read_foreign_access
    cols = classify(host, host.frame_arrays())
    ids = [domain] if domain is not None else [d.id for d in host.domains() if d.id < layouts.DOMID_SELF]
    access = read_foreign_access(host)
    return [audit_domain(host, cols, i, access) for i in ids]
