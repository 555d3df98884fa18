"""Session fixtures of the real-system tier shared between test modules."""
import pytest

from realsys.xenmmu import provoke


@pytest.fixture(scope="session")
def xen_mmu_debug(tmp_path_factory):
    """Xen PV MMU failures provoked from dom0 on the debug build of Debian's Xen (one boot, every
    scenario; see realsys.xenmmu): ``{"scenarios": {name: {"report", "xen_lines", "path"}},
    "console_path", "dump", "xen_syms" (with DWARF), "page_info", "dom0_p2m_symbols", ...}``. The
    dump and the logs stay for the whole session (pt-audit, xen refs, check, p2m-check tests)."""
    return provoke(str(tmp_path_factory.mktemp("xenmmu-debug")), "debug")


@pytest.fixture(scope="session")
def xen_mmu_release(tmp_path_factory):
    """The same requests on Debian's release build of the same version (no gdprintk output)."""
    return provoke(str(tmp_path_factory.mktemp("xenmmu-release")), "release")


@pytest.fixture(scope="session")
def xen_gdbsx_live(tmp_path_factory):
    """One Xen host for the live tier (realsys.gdbsxlive.collect): a real gdbsx on a paused PV domU,
    Xen's tools' outputs, the domU's xl dump-core, QEMU's gdbstub sessions and the host dump taken in
    that stop. The host dump (~800 MB) is removed at the end of the session."""
    import os
    from realsys.gdbsxlive import collect
    facts = collect(str(tmp_path_factory.mktemp("xengdbsx")))
    yield facts
    if os.path.exists(facts.get("host_dump", "")):
        os.unlink(facts["host_dump"])
