"""Who may reference another domain's frames: privileged domains and grant mappings, read from a
Xen host dump.

A PV domain's page table may legitimately name a frame that another domain owns:

* **privileged**: ``get_page_from_l1e`` (xen/arch/x86/mm.c) accepts a frame whose real owner is not
  the mapping's page owner when ``xsm_priv_mapping(XSM_TARGET, pg_owner, real_owner)`` passes: for
  the dummy XSM policy that is the control domain (``is_control_domain(d)`` = ``d->is_privileged``)
  or a device model whose ``d->target`` is the owner. Xen's toolstack in dom0 maps guests' frames so
  (privcmd's ``mmu_update`` with a foreign domain). The hardware domain (``hardware_domain``) is
  counted as privileged too: it is normally the same domain 0.
* **granted**: a grant mapping (``GNTTABOP_map_grant_ref`` with ``GNTMAP_host_map``) of a frame the
  owner granted. Xen counts it in the granting domain's active grant entry
  (``struct active_grant_entry``: ``pin`` = 4 byte-wide counters, host writable in bits 0-7, host
  read-only in bits 8-15; ``domid`` = the grantee; ``mfn`` = the frame). xenconsoled and xenstored
  map a guest's console and xenstore rings so (``GNTTAB_RESERVED_CONSOLE`` 0 and ``_XENSTORE`` 1).

:class:`ForeignAccess` reads both from the dump; :meth:`ForeignAccess.judge` says whether one foreign
reference is legitimate and why. Where a fact cannot be read (no offsets for the release, a check
on the dump fails), ``notes`` say what was used instead; nothing is guessed silently.

Facts come from the dump: ``hardware_domain`` (a ``struct domain *`` variable: needs xen-syms or
its .map, or the image's own symbol table), each domain's ``struct domain`` at the offsets of xen-syms'
DWARF or a profile (:meth:`~.host.XenHost.struct_offsets`), else of :mod:`.domain_layouts`, its ``grant_table`` (checked by the table's back-pointer ``gt->domain``),
the active entries ``gt->active[i][j]`` (``ACGNT_PER_PAGE = PAGE_SIZE / sizeof(entry)`` per page,
``nr_grant_frames * (4096 / 8)`` entries for grant table v1, ``/ 16`` for v2).
"""

import struct
from dataclasses import dataclass, field

from ..errors import XenscopeError
from . import domain_layouts
from .layouts import DOMID_FIRST_RESERVED

PIN_HOST_WRITABLE = 0xFF            # GNTPIN_hstw_mask
PIN_HOST_READONLY = 0xFF00          # GNTPIN_hstr_mask
MAX_GRANT_FRAMES = 4096             # sanity bound of nr_grant_frames (Xen's default limit is 64)
PAGE = 4096


@dataclass
class Grant:
    """One active grant entry: ``granter`` domain id, ``ref``, ``grantee`` domain id, ``mfn``, ``pin``."""
    granter: int
    ref: int
    grantee: int
    mfn: int
    pin: int

    @property
    def host_writable(self):
        return self.pin & PIN_HOST_WRITABLE

    @property
    def host_readonly(self):
        return (self.pin & PIN_HOST_READONLY) >> 8

    def text(self):
        return (f"grant ref {self.ref} of d{self.granter} to d{self.grantee} (pin {self.pin:#x}: "
                f"{self.host_writable} writable, {self.host_readonly} read-only host mapping(s))")

    def as_dict(self):
        return {"granter": self.granter, "ref": self.ref, "grantee": self.grantee, "mfn": self.mfn,
                "pin": self.pin}


@dataclass
class ForeignAccess:
    """Privileged domains and active grants of a host (see the module docstring).

    ``privileged``: domain id -> why (``control domain (is_privileged)``, ``hardware domain``);
    ``targets``: domain id -> the domain id its ``d->target`` names; ``grants``: (mfn, grantee) ->
    [Grant]; ``grant_tables``: domain ids whose grant table was read; ``layout``: the
    :class:`~.domain_layouts.DomainLayout` used (None: none fits); ``notes``: how each fact was found
    and what was assumed."""
    privileged: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)
    grants: dict = field(default_factory=dict)
    grant_tables: list = field(default_factory=list)
    layout: object = None
    notes: list = field(default_factory=list)

    def judge(self, mapper, mfn, owner, writable):
        """``(basis, text)`` for a page-table entry of domain ``mapper`` that names frame ``mfn`` of
        domain ``owner`` (``writable``: the entry has RW): ``basis`` is ``"granted"``,
        ``"privileged"`` or None (a finding), ``text`` says why."""
        for g in self.grants.get((mfn, mapper), ()):
            if g.host_writable or (not writable and g.host_readonly):
                return "granted", g.text()
        if mapper in self.privileged:
            return "privileged", f"d{mapper} is privileged: {self.privileged[mapper]}"
        if owner is not None and self.targets.get(mapper) == owner:
            return "privileged", f"d{mapper} is d{owner}'s device model (d->target)"
        held = self.grants.get((mfn, mapper))
        if held:
            return None, (f"{held[0].text()} allows no writable host mapping" if writable
                          else f"{held[0].text()} holds no host mapping")
        if owner in self.grant_tables:
            return None, f"no active grant of d{owner} names mfn {mfn:#x} for d{mapper}, and d{mapper} is unprivileged"
        return None, f"d{mapper} is unprivileged; d{owner}'s grant table was not read"

    def as_dict(self):
        return {"privileged": [{"domain": d, "why": w} for d, w in sorted(self.privileged.items())],
                "targets": [{"domain": d, "target": t} for d, t in sorted(self.targets.items())],
                "grant_tables": sorted(self.grant_tables),
                "grants": [g.as_dict() for gs in self.grants.values() for g in gs],
                "layout": self.layout.name if self.layout else None, "notes": list(self.notes)}


def _domains(host):
    return [d for d in host.domains() if 0 <= d.id < DOMID_FIRST_RESERVED]


def _known_domain_offsets(host):
    """``struct domain`` members ``is_privileged``, ``grant_table``, ``target`` from xen-syms' DWARF or
    a profile (:meth:`~.host.XenHost.struct_offsets`), with ``"where"``: the text of their source."""
    offsets = host.struct_offsets("domain.is_privileged", "domain.grant_table", "domain.target")
    out = {}
    for member in ("is_privileged", "grant_table", "target"):
        source = offsets.source("domain", member)
        if source in ("dwarf", "profile"):
            out[member] = offsets.get("domain", member)
            out["where"] = offsets.sources[source]
    return out


def _bools_ok(host, domains, offset):
    """The bools ``auto_node_affinity .. creation_finished`` around ``is_privileged`` are 0 or 1 in
    every domain (a check that the offset lands on them)."""
    for d in domains:
        try:
            raw = host.read_va(d.struct_va + offset - 1, 5)
        except XenscopeError:
            return False
        if any(b > 1 for b in raw):
            return False
    return True


def _privilege(host, access, domains, layout, dwarf):
    """Fill ``access.privileged`` and ``access.targets``."""
    by_va = {d.struct_va: d.id for d in domains}
    hw = host.symbols.get("hardware_domain")
    if hw is not None:
        try:
            va = host.read_u64(hw)
        except XenscopeError as e:
            access.notes.append(f"hardware_domain unreadable ({e})")
        else:
            if va in by_va:
                access.privileged[by_va[va]] = "hardware domain (hardware_domain)"
                access.notes.append(f"hardware domain d{by_va[va]}: the variable hardware_domain")
            else:
                access.notes.append(f"hardware_domain = {va:#x} names no domain of the domain list")
    off = dwarf.get("is_privileged", layout.is_privileged if layout else None)
    where = dwarf.get("where") if "is_privileged" in dwarf else (f"layout {layout.name}" if layout else None)
    if off is not None and _bools_ok(host, domains, off):
        for d in domains:
            if host.read_va(d.struct_va + off, 1)[0]:
                why = "control domain (is_privileged)"
                access.privileged[d.id] = why + (f"; {access.privileged[d.id]}" if d.id in access.privileged else "")
        access.notes.append(f"control domains: struct domain is_privileged at +{off} ({where})")
        _targets(host, access, domains, dwarf.get("target", layout.target if layout else None), by_va)
    elif off is not None:
        access.notes.append(f"is_privileged at +{off} ({where}) does not hold booleans in every domain: not used")
    if not access.privileged:
        if any(d.id == 0 for d in domains):
            access.privileged[0] = ("domain 0, assumed the control domain (neither is_privileged nor "
                                    "hardware_domain could be read)")
        access.notes.append("assumed: domain 0 is the control domain (no is_privileged offset for this "
                            "release and no hardware_domain symbol: give xen-syms or its .map)")


def _targets(host, access, domains, offset, by_va):
    if offset is None:
        return
    for d in domains:
        try:
            va = host.read_u64(d.struct_va + offset)
        except XenscopeError:
            continue
        if va in by_va and by_va[va] != d.id:
            access.targets[d.id] = by_va[va]


def _grant_table(host, d, layout, gt_off):
    """The grant table of domain ``d`` as (version, nr_grant_frames, active array va), or None
    (no table); raises XenscopeError when the back-pointer check fails."""
    gt = host.read_u64(d.struct_va + gt_off)
    if not gt:
        return None
    back = host.read_u64(gt + layout.gt_domain)
    if back != d.struct_va:
        raise XenscopeError(f"d{d.id}: grant_table {gt:#x} +{layout.gt_domain} names {back:#x}, not the "
                            f"domain ({d.struct_va:#x})")
    version = host.read_u32(gt + layout.gt_version)
    frames = host.read_u32(gt + layout.gt_nr_grant_frames)
    if frames > MAX_GRANT_FRAMES:
        raise XenscopeError(f"d{d.id}: nr_grant_frames {frames} is absurd")
    return version, frames, host.read_u64(gt + layout.gt_active)


def _active_entries(host, d, layout, version, frames, active):
    """Every active grant entry of domain ``d`` with a nonzero pin."""
    import numpy as np
    entries = frames * (PAGE // (16 if version == 2 else 8))
    per_page = PAGE // layout.act_size
    pages = (entries + per_page - 1) // per_page
    if not pages:
        return []
    ptrs = struct.unpack(f"<{pages}Q", host.read_va(active, 8 * pages))
    dtype = np.dtype({"names": ["pin", "domid", "mfn"], "formats": ["<u4", "<u2", "<u8"],
                      "offsets": [layout.act_pin, layout.act_domid, layout.act_mfn],
                      "itemsize": layout.act_size})
    out = []
    for i, ptr in enumerate(ptrs):
        rows = np.frombuffer(host.read_va(ptr, per_page * layout.act_size), dtype)
        for j in np.nonzero(rows["pin"])[0].tolist():
            ref = i * per_page + j
            if ref < entries:
                r = rows[j]
                out.append(Grant(d.id, ref, int(r["domid"]), int(r["mfn"]), int(r["pin"])))
    return out


def _grants(host, access, domains, layout, dwarf):
    """Fill ``access.grants`` from every domain's active grant entries."""
    if layout is None:
        access.notes.append("grant tables not read: no struct offsets known for this Xen release")
        return
    gt_off = dwarf.get("grant_table", layout.grant_table)
    for d in domains:
        try:
            table = _grant_table(host, d, layout, gt_off)
            if table is None:
                continue
            for g in _active_entries(host, d, layout, *table):
                access.grants.setdefault((g.mfn, g.grantee), []).append(g)
            access.grant_tables.append(d.id)
        except XenscopeError as e:
            access.notes.append(f"grant table of d{d.id} not read: {e}")
    n = sum(len(v) for v in access.grants.values())
    access.notes.append(f"grants: {n} active entr{'y' if n == 1 else 'ies'} in the grant tables of "
                        + (", ".join(f"d{i}" for i in access.grant_tables) or "no domain")
                        + f" (struct grant_table at d->grant_table +{gt_off}, layout {layout.name})")


def read_foreign_access(host):
    """:class:`ForeignAccess` of ``host`` (a :class:`~.host.XenHost`)."""
    access = ForeignAccess()
    domains = _domains(host)
    dwarf = _known_domain_offsets(host)
    layout, why = domain_layouts.select(host, domains, dwarf.get("grant_table"))
    access.layout = layout
    access.notes.append(why)
    _privilege(host, access, domains, layout, dwarf)
    _grants(host, access, domains, layout, dwarf)
    return access
