"""Session fixtures of the real-system tier shared between test modules."""
import os
import time

import pytest

from realsys.xendomu import boot_xen_with_domu
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


@pytest.fixture(scope="session")
def domu(tmp_path_factory):
    """Debian's Xen 4.17 with dom0 running its toolstack and a paused PV domU it made and dumped with
    ``xl dump-core`` (realsys.xendomu): one boot for test_xen_domu_boot.py and test_xen_domu_p2m.py."""
    t0 = time.time()
    d = boot_xen_with_domu(str(tmp_path_factory.mktemp("xendomu")))
    d.t0 = t0
    yield d
    d.close()


@pytest.fixture(scope="session")
def host_dump(domu):
    """QEMU's dump of the whole machine, taken after the xl dump-core (the domU still paused)."""
    path = os.path.join(domu.dir, "host.elf")
    domu.host_dump(path)
    yield path
    os.remove(path)                 # ~800 MB; pytest keeps its last three tmp dirs


@pytest.fixture(scope="session")
def xs(domu, host_dump):
    """(xl dump-core target, host dump target, XenHost with Debian's xen-syms symbols)."""
    from xenstructs.targets import open_dump
    from xenstructs.xen.host import open_host
    xc = open_dump(domu.xc_core_path)
    ht = open_dump(host_dump)
    host = open_host(ht, syms=domu.host.xen_syms_symtab or domu.host.xen_map)
    yield xc, ht, host
    xc.close()
    ht.close()


def pytest_collection_modifyitems(config, items):
    """Tests a module declares for some architectures only (``fn.arches``, see
    test_linux_dumps.only_on) are not generated for the other shapes of its ``system`` fixture
    (reported as deselected, with the reason in the test's docstring): no skip stands for a check."""
    keep, drop = [], []
    for item in items:
        arches = getattr(getattr(item, "function", None), "arches", None)
        shape = getattr(getattr(item, "callspec", None), "params", {}).get("system")
        shapes = getattr(item.module, "SHAPES", {})
        if arches and shape in shapes and shapes[shape]["arch"] not in arches:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
