"""Xen struct offsets: shipped profiles (xenstructs/xen/profile.py), their agreement with the
per-release table (domain_layouts.py), bad profile files, and the dump's own invariants
(invariants.py) on the synthetic host cores, whose builder's manifest holds the offsets it used."""
import json
import os
from types import SimpleNamespace

import pytest

from conftest import CORES
from xenstructs.errors import XenscopeError
from xenstructs.targets import open_dump
from xenstructs.xen import domain_layouts, invariants, profile
from xenstructs.xen.host import open_host
from xenstructs.xen.release import parse_version
from xenstructs.xen.structs import profile_of

TABLE = {"grant_table": ("domain", "grant_table"), "is_privileged": ("domain", "is_privileged"),
         "target": ("domain", "target"), "gt_version": ("grant_table", "gt_version"),
         "gt_nr_grant_frames": ("grant_table", "nr_grant_frames"), "gt_active": ("grant_table", "active"),
         "gt_domain": ("grant_table", "domain"), "act_size": ("active_grant_entry", "size"),
         "act_pin": ("active_grant_entry", "pin"), "act_domid": ("active_grant_entry", "domid"),
         "act_mfn": ("active_grant_entry", "mfn")}


def test_shipped_profiles_load_and_are_keyed_by_build_id():
    shipped = profile.shipped()
    assert shipped, "no profile shipped in xenstructs/xen/profiles"
    for build_id, prof in shipped.items():
        assert len(build_id) == 40 and int(build_id, 16) >= 0
        assert {"domain", "vcpu", "grant_table", "active_grant_entry", "page_info"} <= set(prof.structs)
        assert prof.structs["domain"]["domain_id"] == 0 and "checked:" in prof.made_from


def test_shipped_profiles_agree_with_the_release_table():
    """The gcc-computed table (defconfig builds) and the DWARF of Debian's build: one answer."""
    for prof in set(profile.shipped().values()):
        rows = [r for r in domain_layouts.exact_candidates(prof.xen) if not r.debug]
        assert len(rows) == 1, (prof.xen, [r.name for r in rows])
        for field, (struct_name, member) in TABLE.items():
            assert getattr(rows[0], field) == prof.structs[struct_name][member], (prof.xen, field)
        assert parse_version(prof.xen).point is not None


@pytest.mark.parametrize("text, why", [
    ("not json", "not JSON"), ('{"format": "other"}', "not a xenscope Xen profile"),
    ('{"format": "xenscope-xen-profile/1", "build_ids": []}', "needs 'structs'"),
    ('{"format": "xenscope-xen-profile/1", "build_ids": [], "structs": {"domain": {"tot_pages": -1}}}',
     "small non-negative"),
    ('{"format": "xenscope-xen-profile/1", "build_ids": [], "structs": {"domain": {"tot_pages": true}}}',
     "small non-negative")])
def test_a_bad_profile_is_refused_in_one_line(tmp_path, text, why):
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(XenscopeError, match=why):
        profile.load(str(path))


def test_a_profile_of_another_build_is_refused(tmp_path):
    prof = profile.XenProfile("4.17.5", ["aa" * 20], {"domain": {"domain_id": 0}}, path=str(tmp_path / "p.json"))
    with pytest.raises(XenscopeError, match="but the dump's Xen is build-id"):
        profile_of(SimpleNamespace(profile=prof, build_id="bb" * 20))
    assert profile_of(SimpleNamespace(profile=None, build_id=None)) == (None, "no build-id note found in the image")


def test_a_user_profile_is_taken_from_xen_syms(tmp_path):
    """``--xen-syms FILE.json``: the offsets of a profile (the synthetic 4.17 core has no build-id note,
    so the profile's own build-ids are not checked against it); symbols then come from the dump."""
    man = json.load(open(os.path.join(CORES, "xen-4.17-host.json")))
    path = tmp_path / "p.json"
    profile.XenProfile("4.17.0", [], {"domain": man["domain_offsets"]}).to_json(str(path))
    t = open_dump(os.path.join(CORES, "xen-4.17-host.core"))
    try:
        bare = open_host(t, syms=os.path.join(CORES, "xen-4.17-host.map"))
        assert all(d.extra.get("tot_pages") is None for d in bare.domains())     # invented offsets: not found
        h = open_host(t, syms=str(path))
        got = {d.id: (d.extra.get("tot_pages"), d.extra.get("max_pages")) for d in h.domains()}
        for d in man["domains"]:
            if d["id"] < 0x7FF0:
                assert got[d["id"]] == (d["tot_pages"], d["max_pages"]), d
        assert "profile p.json (Xen 4.17.0, build-id ?): domain.max_pages" in h.sources["structs"], h.sources
    finally:
        t.close()


@pytest.mark.parametrize("core", ["xen-4.17-host", "xen-4.6-host"])
def test_invariants_find_what_the_builder_put(core):
    """The builder's struct domain (invented offsets) holds the ids and a shared_info pointer: the dump
    search finds domain_id and shared_info at the builder's offsets; tot_pages (not followed by
    xenheap_pages there) is not claimed."""
    man = json.load(open(os.path.join(CORES, core + ".json")))
    t = open_dump(os.path.join(CORES, core + ".core"))
    try:
        h = open_host(t, syms=os.path.join(CORES, core + ".map"))
        found = invariants.discover(h)
        first = man["domains"][0]
        assert found.get("domain", "domain_id") == 0
        si = found.get("domain", "shared_info")
        assert si is not None and h.va_to_maddr(h.read_u64(first["struct_va"] + si)) == first["shared_info_maddr"]
        assert found.get("domain", "tot_pages") is None and "not found" in found.why["domain.tot_pages"]
        assert found.get("domain", "next_in_list") == h.struct_offsets().get("domain", "next_in_list")
    finally:
        t.close()
