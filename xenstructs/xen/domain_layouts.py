"""``struct domain`` / ``struct grant_table`` / ``struct active_grant_entry`` offsets per Xen release
(x86_64), for dumps whose xen-syms has no DWARF (Debian's has none: only ``.symtab``).

How the values were found: for each release tag of the public Xen repository, the hypervisor was
configured (``make defconfig``, which at a RELEASE tag is a release build, ``CONFIG_DEBUG`` off; and
the same plus ``CONFIG_DEBUG=y``: debug builds add ``percpu_owner`` to the grant table's lock, lock
debugging fields and ``gfn`` to the active entry), its generated headers built, and
``xen/common/grant_table.c`` compiled by gcc 12 with ``offsetof``/``sizeof`` of every member below
appended (the struct grant_table and active_grant_entry are private to that file). For 4.17.7 the
same was done with the ``.config`` Debian ships in ``xen-hypervisor-4.17-amd64``
(4.17.7+13-g2445b30a44-0+deb12u1): the values equal defconfig's. Releases between two computed
tags share the struct definitions (``struct grant_table``, ``struct active_grant_entry``, ``struct
domain`` up to ``is_privileged``, ``struct domain_iommu``, compared as text at every tag), which
is how the point-release ranges below were drawn. The maintainer's script is
``tests/realsys/xen_struct_offsets.py``.

Verified against a real dump (tests/realsys/test_xen_domu_boot.py): Debian's 4.17.7 release build
with a PV domU made by its toolstack: ``is_privileged`` (+465) is 1 in dom0 and 0 in the domU,
``d->grant_table`` (+264) points at a table whose ``domain`` (+128) points back, and the domU's
active entries 0 and 1 name the console and xenstore ring frames that ``xenstore-ls`` prints, pinned
by dom0 (``domid`` 0), with the pin counts of dom0's page-table entries that map them. The other
rows are compiled, not seen in a dump: :func:`select` checks each against the dump (grant-table
back-pointers) before it is used.

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
    ``grant_table``, ``is_privileged``, ``target``; ``struct grant_table`` members ``gt_version``,
    ``nr_grant_frames``, ``active``, ``domain`` (the back-pointer); ``struct active_grant_entry``
    size and members ``pin``, ``domid``, ``mfn``."""
    first: tuple
    last: tuple
    debug: bool
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

    @property
    def name(self):
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


# first, last release, debug build, domain (grant_table, is_privileged, target),
# grant_table (gt_version, nr_grant_frames, active, domain), active_grant_entry (size, pin, domid, mfn)
LAYOUTS = (
    _row("4.17.0", "4.17.6", False, (264, 465, 472), (28, 40, 72, 128), (40, 0, 4, 24)),
    _row("4.17.7", "4.17.7", False, (264, 465, 472), (28, 40, 72, 128), (40, 0, 4, 24)),
)


def candidates(version):
    """The layouts whose release range covers ``version`` (a string like ``4.17.7``), release builds
    first."""
    v = parse_version(version)
    rows = [r for r in LAYOUTS if r.covers(v)]
    return sorted(rows, key=lambda r: r.debug)


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


def select(host, domains, grant_table=None):
    """``(layout, why)``: the first candidate layout of the host's Xen release whose grant tables
    point back at their domains in this dump, or ``(None, why not)``; ``grant_table``: the offset of
    ``d->grant_table`` when known otherwise (DWARF)."""
    if not host.version:
        return None, "struct domain offsets: the Xen version is not known (give --xen)"
    try:
        rows = candidates(host.version)
    except XenscopeError as e:
        return None, f"struct domain offsets: {e}"
    if not rows:
        return None, f"struct domain offsets: none known for Xen {host.version} (table: 4.14-4.20)"
    tried = []
    for row in rows:
        n = _backpointers(host, domains, row, grant_table)
        if n > 0:
            return row, (f"struct domain offsets: layout {row.name} (grant-table back-pointers of {n} "
                         f"domain(s) check out in this dump)")
        tried.append(row.name)
    return None, (f"struct domain offsets: no layout of Xen {host.version} ({', '.join(tried)}) fits this "
                  "dump (grant-table back-pointers do not check out): a build with other options")
