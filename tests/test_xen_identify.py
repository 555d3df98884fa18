"""The page_info layout identified from the frame table alone (xenstructs/xen/identify.py), when
neither the crash note, --xen, the image's version functions nor the console banner says the version:
on the synthetic host cores, against the layout their builder wrote (the manifest)."""
import json
import os

import pytest

from conftest import CORES, XEN_MANIFESTS
from xenstructs.targets import open_dump
from xenstructs.xen.host import open_host


@pytest.mark.parametrize("manifest", XEN_MANIFESTS)
def test_the_frame_table_alone_names_the_builder_s_layout(manifest):
    man = json.load(open(os.path.join(CORES, manifest)))
    want = f"{man['layout']['type']}/{man['layout']['count']}"
    core = os.path.join(CORES, manifest[:-len(".json")] + ".core")
    t = open_dump(core)
    try:
        t.facts.pop("xen_crash_info")                # what the builder's crash note would tell
        h = open_host(t, syms=core[:-len(".core")] + ".map")
        assert h.version is None and h.sources.get("version") is None
        why = h.selection.why
        assert why.startswith("identified from the frame table"), why
        # the builder's layout, or one that decodes every frame of the core alike (named in why)
        alike = why.split("; not ")[0]
        assert h.layout.name == want or f"{want} (" in alike, (want, why)
        assert "not " in why                         # the other families were refused, with a reason
        census = {d.id for d in h.domains()}
        assert {d["id"] for d in man["domains"]} <= census
    finally:
        t.close()


def test_a_frame_table_nothing_fits_is_refused_in_one_line(tmp_path):
    """Every pinned frame's type made unknown: no layout fits; the error says what to give."""
    from xenstructs.errors import XenscopeError
    from xenstructs.xen import identify
    core = os.path.join(CORES, "xen-4.17-host.core")
    t = open_dump(core)
    try:
        t.facts.pop("xen_crash_info")
        h = open_host(t, syms=core[:-len(".core")] + ".map", version="4.17.0")
        real = h.frame_arrays

        def scrambled(*a, **k):
            arr = real(*a, **k)
            arr["count_info"] = arr["count_info"] | (1 << 40)          # every count >= 2^32
            return arr
        h.frame_arrays = scrambled
        with pytest.raises(XenscopeError, match="no page_info layout fits its .* give it with --xen"):
            identify.identify_layout(h)
    finally:
        t.close()
