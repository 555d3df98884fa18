"""Privilege and grants (xenstructs/xen/grants.py, domain_layouts.py): the per-release offset table,
the verdict on one foreign reference, and what happens when the table does not fit a dump."""
import dataclasses
import os

import pytest

from conftest import CORES
from xenstructs.targets import open_dump
from xenstructs.xen import domain_layouts
from xenstructs.xen.grants import ForeignAccess, Grant, read_foreign_access
from xenstructs.xen.host import open_host
from xenstructs.xen.ptaudit import audit

LAST_POINT = {14: 6, 15: 7, 16: 7, 17: 7, 18: 6, 19: 6, 20: 4}     # the last tags of each series


@pytest.mark.parametrize("minor", sorted(LAST_POINT))
def test_every_point_release_has_one_release_row(minor):
    for point in range(LAST_POINT[minor] + 1):
        rows = domain_layouts.exact_candidates(f"4.{minor}.{point}")
        assert [r.debug for r in rows if not r.debug] == [False], (f"4.{minor}.{point}", [r.name for r in rows])
    last = domain_layouts.exact_candidates(f"4.{minor}.{LAST_POINT[minor]}")
    assert [r.debug for r in last] == [False, True], [r.name for r in last]      # the last tag's debug build


def test_candidates_of_an_unknown_point_release_and_of_other_releases():
    rows = domain_layouts.candidates("4.17")
    assert rows == domain_layouts.exact_candidates("4.17")
    assert {r.name for r in rows} == {r.name for r in domain_layouts.LAYOUTS if r.first[:2] == (4, 17)}
    near = domain_layouts.candidates("4.17.99")                 # a point release the table lacks
    assert domain_layouts.exact_candidates("4.17.99") == [] and near and near[0].last[:2] == (4, 17)
    assert domain_layouts.candidates("4.6.0") == [] and domain_layouts.candidates("4.22.0") == []


def _access(**kw):
    return ForeignAccess(**kw)


def test_judge():
    g = Grant(granter=1, ref=0, grantee=0, mfn=0x28002, pin=0x2)            # 2 host writable mappings
    ro = Grant(granter=1, ref=5, grantee=2, mfn=0x500, pin=0x100)           # 1 host read-only mapping
    a = _access(grants={(0x28002, 0): [g], (0x500, 2): [ro]}, grant_tables=[1], privileged={},
                targets={3: 1})
    assert a.judge(0, 0x28002, 1, writable=True) == ("granted", g.text())
    assert a.judge(2, 0x500, 1, writable=False)[0] == "granted"
    basis, why = a.judge(2, 0x500, 1, writable=True)                       # RW through a read-only grant
    assert basis is None and "allows no writable host mapping" in why
    assert a.judge(3, 0x600, 1, writable=True)[0] == "privileged"          # d3's d->target is d1
    basis, why = a.judge(2, 0x600, 1, writable=False)
    assert basis is None and "no active grant of d1 names mfn 0x600 for d2" in why
    a.privileged[2] = "control domain (is_privileged)"
    assert a.judge(2, 0x600, 1, writable=True) == ("privileged", "d2 is privileged: control domain (is_privileged)")
    assert "grant table was not read" in a.judge(4, 0x600, 7, writable=True)[1]


@pytest.fixture
def host17():
    core = os.path.join(CORES, "xen-4.17-host.core")
    t = open_dump(core)
    yield open_host(t, syms=core[:-len(".core")] + ".map")
    t.close()


def test_a_layout_that_does_not_fit_is_not_used(host17, monkeypatch):
    """Offsets of another build (the grant table's back-pointer elsewhere) fail the dump's check:
    grants are not read, is_privileged is not used, and the granted mapping is then a finding whose
    text says why; the hardware domain still comes from hardware_domain."""
    wrong = tuple(dataclasses.replace(r, gt_domain=r.gt_domain + 8) for r in domain_layouts.LAYOUTS)
    monkeypatch.setattr(domain_layouts, "LAYOUTS", wrong)
    access = read_foreign_access(host17)
    assert access.layout is None and not access.grants
    assert any("no layout of Xen 4.17.0" in n for n in access.notes), access.notes
    assert access.privileged == {0: "hardware domain (hardware_domain)"}
    found = [f for a in audit(host17) for f in a.findings if f.kind == "foreign-reference"]
    assert len(found) == 2 and all("grant table was not read" in f.details for f in found)


def test_without_symbols_domain_0_is_assumed(host17, monkeypatch):
    monkeypatch.delitem(host17.symbols, "hardware_domain")
    monkeypatch.setattr(domain_layouts, "LAYOUTS", ())
    access = read_foreign_access(host17)
    assert list(access.privileged) == [0] and "assumed" in access.privileged[0]
    assert any(n.startswith("assumed: domain 0 is the control domain") for n in access.notes)


def test_a_neighbouring_point_release_is_used_only_when_the_dump_confirms_it(host17, monkeypatch):
    """The 4.17.0 core with only a 4.17.7 row: its offsets are 4.17.0's, so the dump confirms it
    (back-pointers, is_privileged); the same row with is_privileged moved is refused."""
    row = next(r for r in domain_layouts.LAYOUTS if r.covers(domain_layouts.parse_version("4.17.7")) and not r.debug)
    moved = dataclasses.replace(row, first=(4, 17, 7), last=(4, 17, 7))
    monkeypatch.setattr(domain_layouts, "LAYOUTS", (moved,))
    access = read_foreign_access(host17)
    assert access.layout == moved and "the nearest tabulated one" in access.notes[0], access.notes
    assert "control domain (is_privileged)" in access.privileged[0]
    monkeypatch.setattr(domain_layouts, "LAYOUTS", (dataclasses.replace(moved, is_privileged=moved.is_privileged + 2),))
    access = read_foreign_access(host17)
    assert access.layout is None and access.privileged == {0: "hardware domain (hardware_domain)"}
