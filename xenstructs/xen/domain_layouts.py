"""``struct domain`` / ``struct grant_table`` / ``struct active_grant_entry`` offsets per Xen release
(x86_64), for dumps whose xen-syms has no DWARF (Debian's has none: only ``.symtab``) and no profile:
:func:`select` takes them from xen-syms' DWARF or a profile first (``host.struct_offsets``,
:mod:`.structs`: one source for every struct offset), this table only when neither gives them.

``struct domain``'s ``shared_info`` (the page each guest shares with Xen, where the toolstack finds a
PV guest's P2M: :mod:`.shared_info`) is at +16 in every release 4.14.0-4.19.6 and +24 in 4.20 (a
``unique_id`` was added before it), release and debug builds alike.

How the values were found: for every release tag 4.14.0 .. 4.20.4 of the public Xen repository, the
hypervisor was configured (``make defconfig``, which at a RELEASE tag is a release build,
``CONFIG_DEBUG`` off), its generated headers built, and ``xen/common/grant_table.c`` compiled by gcc
12 with ``offsetof``/``sizeof`` of every member below appended (struct grant_table and struct
active_grant_entry are private to that file): ``tests/realsys/xen_struct_offsets.py``. Debug builds
(defconfig plus ``CONFIG_DEBUG=y``: the grant table's lock gains ``percpu_owner``, locks gain debug
fields, the active entry ``gfn``) were computed for 21 tags: the first and last of each series and
some between (the rows marked debug). The point releases differ: backports moved these members within
a series (release builds: 4.14.0 -> 4.14.1 -> 4.14.3, 4.15.0 -> 4.15.1, 4.18.4 -> 4.18.5, 4.19.1 ->
4.19.2), so a row spans only consecutive tags that were each computed and agree. Debian's own build configurations give the
defconfig values: ``xen-hypervisor-4.14-amd64`` 4.14.6-1 (bullseye), ``-4.17-amd64``
4.17.7+13-g2445b30a44-0+deb12u1 (bookworm), ``-4.20-amd64`` 4.20.4+63-g7abfd2bce2-0+deb13u1 (trixie),
each ``/boot/xen-*.config`` compiled at the matching tag.

Verified against a real dump (tests/realsys/test_xen_domu_boot.py, test_xen_domu_p2m.py): Debian's
4.17.7 release build with a PV domU made by its toolstack: ``shared_info`` (+16) of the domU names the
page ``xl dump-core`` wrote as ``.xen_shared_info`` (byte for byte), dom0's the machine address Xen
gave dom0 in ``start_info.shared_info``; ``is_privileged`` (+465) is 1 in dom0 and 0 in the domU,
``d->grant_table`` (+264) points at a table whose ``domain`` (+128) points back, and the domU's
active entries 0 and 1 name the console and xenstore ring frames that ``xenstore-read`` prints, pinned
by dom0 (``domid`` 0). The other rows are compiled, not seen in a dump: :func:`select` checks each
against the dump (grant-table back-pointers; for a row of another point release also
``is_privileged``) before it is used.

A config option can move these members (e.g. ``CONFIG_MEM_SHARING``/``CONFIG_MEM_PAGING`` add
counters before ``next_in_list``; ``CONFIG_HAS_PASSTHROUGH``'s ``struct domain_iommu`` sits before
``is_privileged``): a build whose layout is not listed fails the check, and the audit then says so.
"""

from dataclasses import dataclass

from ..errors import XenscopeError
from .release import parse_version


@dataclass(frozen=True)
class DomainLayout:
    """Offsets of one release range and build (``debug``): ``struct domain`` members
    ``shared_info``, ``grant_table``, ``is_privileged``, ``target``; ``struct grant_table`` members ``gt_version``,
    ``nr_grant_frames``, ``active``, ``domain`` (the back-pointer); ``struct active_grant_entry``
    size and members ``pin``, ``domid``, ``mfn``."""
    first: tuple
    last: tuple
    debug: bool
    shared_info: int
    grant_table: int
    is_privileged: int
    target: int
    gt_version: int
    gt_nr_grant_frames: int
    gt_active: int
    gt_domain: int
    act_size: int
    act_pin: int
    act_domid: int
    act_mfn: int
    label: str = ""

    @property
    def name(self):
        if self.label:
            return self.label
        first = ".".join(map(str, self.first))
        last = ".".join(map(str, self.last))
        return (first if first == last else f"{first}-{last}") + (" debug" if self.debug else " release")

    def covers(self, version):
        """True when the parsed ``version`` (a :class:`~.release.XenVersion`) is in this range; an
        unknown point release matches every range of its X.Y."""
        if version.point is None:
            return self.first[:2] <= (version.major, version.minor) <= self.last[:2]
        return self.first <= version.triple <= self.last


def _row(first, last, debug, domain, gt, act):
    return DomainLayout(tuple(map(int, first.split("."))), tuple(map(int, last.split("."))), debug,
                        *domain, *gt, *act)


# first, last release, debug build, domain (shared_info, grant_table, is_privileged, target),
# grant_table (gt_version, nr_grant_frames, active, domain), active_grant_entry (size, pin, domid, mfn);
# every release tag 4.14.0-4.20.4 computed (release builds); debug builds at the tags named
LAYOUTS = (
    _row("4.14.0", "4.14.0", False, (16, 264, 465, 472), (24, 36, 64, 80), (40, 0, 4, 24)),
    _row("4.14.0", "4.14.0", True, (16, 264, 465, 472), (32, 44, 72, 88), (48, 0, 4, 24)),
    _row("4.14.1", "4.14.2", False, (16, 272, 473, 480), (24, 36, 64, 80), (40, 0, 4, 24)),
    _row("4.14.1", "4.14.1", True, (16, 272, 473, 480), (32, 44, 72, 88), (48, 0, 4, 24)),
    _row("4.14.3", "4.14.6", False, (16, 272, 473, 480), (24, 36, 64, 120), (40, 0, 4, 24)),
    _row("4.14.3", "4.14.3", True, (16, 272, 473, 480), (32, 44, 72, 128), (48, 0, 4, 24)),
    _row("4.14.6", "4.14.6", True, (16, 272, 473, 480), (32, 44, 72, 128), (48, 0, 4, 24)),
    _row("4.15.0", "4.15.0", False, (16, 272, 473, 480), (24, 36, 64, 80), (40, 0, 4, 24)),
    _row("4.15.0", "4.15.0", True, (16, 272, 473, 480), (32, 44, 72, 88), (48, 0, 4, 24)),
    _row("4.15.1", "4.15.7", False, (16, 272, 473, 480), (24, 36, 64, 120), (40, 0, 4, 24)),
    _row("4.15.1", "4.15.1", True, (16, 272, 473, 480), (32, 44, 72, 128), (48, 0, 4, 24)),
    _row("4.15.6", "4.15.7", True, (16, 272, 473, 480), (32, 44, 72, 128), (48, 0, 4, 24)),
    _row("4.16.0", "4.16.7", False, (16, 272, 473, 480), (28, 40, 72, 128), (40, 0, 4, 24)),
    _row("4.16.0", "4.16.0", True, (16, 272, 473, 480), (36, 48, 80, 136), (48, 0, 4, 24)),
    _row("4.16.7", "4.16.7", True, (16, 272, 473, 480), (36, 48, 80, 136), (48, 0, 4, 24)),
    _row("4.17.0", "4.17.7", False, (16, 264, 465, 472), (28, 40, 72, 128), (40, 0, 4, 24)),
    _row("4.17.0", "4.17.0", True, (16, 264, 465, 472), (36, 48, 80, 136), (48, 0, 4, 24)),
    _row("4.17.7", "4.17.7", True, (16, 264, 465, 472), (36, 48, 80, 136), (48, 0, 4, 24)),
    _row("4.18.0", "4.18.4", False, (16, 264, 465, 472), (28, 40, 72, 128), (32, 0, 4, 16)),
    _row("4.18.0", "4.18.0", True, (16, 264, 465, 472), (36, 48, 80, 136), (40, 0, 4, 16)),
    _row("4.18.5", "4.18.6", False, (16, 264, 441, 448), (28, 40, 72, 104), (32, 0, 4, 16)),
    _row("4.18.6", "4.18.6", True, (16, 264, 441, 448), (36, 48, 80, 112), (40, 0, 4, 16)),
    _row("4.19.0", "4.19.1", False, (16, 264, 473, 480), (20, 32, 64, 120), (32, 0, 4, 16)),
    _row("4.19.0", "4.19.0", True, (16, 272, 489, 496), (36, 48, 80, 136), (40, 0, 4, 16)),
    _row("4.19.2", "4.19.6", False, (16, 264, 449, 456), (20, 32, 64, 96), (32, 0, 4, 16)),
    _row("4.19.4", "4.19.6", True, (16, 272, 465, 472), (36, 48, 80, 112), (40, 0, 4, 16)),
    _row("4.20.0", "4.20.4", False, (24, 272, 457, 464), (20, 32, 64, 96), (32, 0, 4, 16)),
    _row("4.20.0", "4.20.0", True, (24, 280, 473, 480), (36, 48, 80, 112), (40, 0, 4, 16)),
    _row("4.20.3", "4.20.4", True, (24, 280, 473, 480), (36, 48, 80, 112), (40, 0, 4, 16)),
)


def candidates(version):
    """The layouts to try for ``version`` (a string like ``4.17.7``): those whose release range covers
    it (release builds first), then the other rows of the same X.Y, nearest point release first (a
    point release the table lacks; :func:`select` uses one only when the dump confirms it)."""
    v = parse_version(version)
    exact = sorted((r for r in LAYOUTS if r.covers(v)), key=lambda r: r.debug)
    point = v.point or 0

    def distance(r):
        return 0 if r.first[2] <= point <= r.last[2] else min(abs(r.first[2] - point), abs(r.last[2] - point))
    near = sorted((r for r in LAYOUTS if r not in exact and r.first[:2] == (v.major, v.minor)),
                  key=lambda r: (distance(r), r.debug))
    return exact + near


def exact_candidates(version):
    """Only the layouts whose release range covers ``version``."""
    v = parse_version(version)
    return [r for r in candidates(version) if r.covers(v)]


def _backpointers(host, domains, layout, grant_table=None):
    """Number of domains whose grant table points back at them at ``layout``'s offsets (``d->grant_table``
    at ``grant_table`` when given: xen-syms' DWARF); -1 when one does not."""
    good = 0
    for d in domains:
        try:
            gt = host.read_u64(d.struct_va + (layout.grant_table if grant_table is None else grant_table))
            if not gt:
                continue
            if host.read_u64(gt + layout.gt_domain) != d.struct_va:
                return -1
        except XenscopeError:
            return -1
        good += 1
    return good


def _privilege_fits(host, domains, layout):
    """For a layout of another point release: the bools around ``is_privileged`` are 0/1 in every
    domain and the hardware domain's ``is_privileged`` is 1 (when ``hardware_domain`` is known)."""
    hw = None
    if "hardware_domain" in host.symbols:
        try:
            hw = host.read_u64(host.symbols["hardware_domain"])
        except XenscopeError:
            hw = None
    for d in domains:
        try:
            raw = host.read_va(d.struct_va + layout.is_privileged - 1, 5)
        except XenscopeError:
            return False
        if any(b > 1 for b in raw) or (d.struct_va == hw and raw[1] != 1):
            return False
    return True


_STRUCT_MEMBERS = (("domain", "shared_info"), ("domain", "grant_table"), ("domain", "is_privileged"),
                   ("domain", "target"),
                   ("grant_table", "gt_version"), ("grant_table", "nr_grant_frames"), ("grant_table", "active"),
                   ("grant_table", "domain"), ("active_grant_entry", "size"), ("active_grant_entry", "pin"),
                   ("active_grant_entry", "domid"), ("active_grant_entry", "mfn"))


def from_struct_offsets(offsets):
    """A :class:`DomainLayout` of every member from one DWARF or profile source (``offsets``: a
    :class:`~.structs.StructOffsets`), or None when they do not give them all."""
    sources = {offsets.source(s, m) for s, m in _STRUCT_MEMBERS}
    if len(sources) != 1 or sources & {None, "dump", "vmcoreinfo"}:
        return None
    source = sources.pop()
    values = [offsets.get(s, m) for s, m in _STRUCT_MEMBERS]
    return DomainLayout((0, 0, 0), (0, 0, 0), False, *values, label=offsets.sources[source])


def select(host, domains, grant_table=None):
    """``(layout, why)``: the first candidate layout of the host's Xen release whose grant tables
    point back at their domains in this dump (a layout of another point release must also fit
    ``is_privileged``: :func:`_privilege_fits`), or ``(None, why not)``; ``grant_table``: the offset
    of ``d->grant_table`` when known otherwise (DWARF)."""
    structs = getattr(host, "struct_offsets", None)
    known = from_struct_offsets(structs(*(f"{s}.{m}" for s, m in _STRUCT_MEMBERS))) if structs else None
    if known is not None:
        n = _backpointers(host, domains, known)
        if n >= 0:
            return known, (f"struct domain offsets: {known.name} (grant-table back-pointers of {n} domain(s) "
                           "check out in this dump)")
    if not host.version:
        return None, "struct domain offsets: the Xen version is not known (give --xen)"
    try:
        rows = candidates(host.version)
        exact = exact_candidates(host.version)
    except XenscopeError as e:
        return None, f"struct domain offsets: {e}"
    if not rows:
        return None, f"struct domain offsets: none known for Xen {host.version} (table: 4.14-4.20)"
    tried = []
    for row in rows:
        n = _backpointers(host, domains, row, grant_table)
        if n > 0 and row in exact:
            return row, (f"struct domain offsets: layout {row.name} (grant-table back-pointers of {n} "
                         f"domain(s) check out in this dump)")
        if n > 0 and _privilege_fits(host, domains, row):
            return row, (f"struct domain offsets: layout {row.name}, the nearest tabulated one (none for "
                         f"{host.version}'s own point release); its grant-table back-pointers ({n} domain(s)) "
                         "and is_privileged check out in this dump")
        tried.append(row.name)
    return None, (f"struct domain offsets: no layout of Xen {host.version} ({', '.join(tried)}) fits this "
                  "dump (grant-table back-pointers do not check out): a build with other options")
