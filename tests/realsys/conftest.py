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
