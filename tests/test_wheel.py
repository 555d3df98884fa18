"""xenscope without a checkout: the wheel, installed into a fresh venv made from /usr/bin/python3.

The wheel is built from the repository with ``python -m build`` (setuptools, reproducible with
SOURCE_DATE_EPOCH) out of a copy of the sources; it is installed outside the checkout into a venv
cached in ~/.cache/xenscope/wheel-venv keyed by the wheel's hash (complete only once its marker is
written). Its dependencies come from the same place ``setup.sh`` takes them (pip's configured index),
through a wheelhouse cached by the dependency list, so a rebuilt venv needs no network. Then the real
gdb loads the line ``xenscope gdbinit`` printed and the real crash the ``extend`` line
``xenscope crash-extension`` printed (after building the bridge into the install), nothing of the
checkout on any path: their output must equal the checkout's, and the walks the builder's manifest.
"""
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import zipfile

import pytest

from conftest import CORES, TOP
from crashutil import CRASH, EXTENSION, run_crash
from gdbutil import GDB, gdb_env, run_gdb, venv_python

CACHE = os.path.expanduser("~/.cache/xenscope")
SYSTEM_PYTHON = "/usr/bin/python3"
SOURCES = ("pyproject.toml", "README.md", "xenstructs", "gdbext", "crashext")
CORE = os.path.join(CORES, "x86_64-4level.core")
GDB_COMMANDS = ("xen info", "xen walk ffff888000001000", "xen maps --limit 12", "xen walk 400000 --json")


def _run(argv, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900, **kw)
    assert r.returncode == 0, f"{argv}: {r.stdout[-3000:]}{r.stderr[-3000:]}"
    return r


def build_wheel(work):
    """``python -m build`` on a copy of the sources (the checkout stays clean); the wheel's path."""
    src = os.path.join(work, "src")
    os.makedirs(src)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.so.tmp", ".xenscope.so.stamp", "*.egg-info")
    for name in SOURCES:
        path = os.path.join(TOP, name)
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(src, name), ignore=ignore)
        else:
            shutil.copy2(path, src)
    env = dict(os.environ, SOURCE_DATE_EPOCH="315532800")
    _run([venv_python(), "-m", "build", "--no-isolation", "--outdir", os.path.join(work, "dist"), src], env=env)
    wheels = [f for f in os.listdir(os.path.join(work, "dist")) if f.endswith(".whl")]
    assert len(wheels) == 1, wheels
    return os.path.join(work, "dist", wheels[0])


def wheelhouse(wheel):
    """The dependencies' wheels, fetched once as ``setup.sh``'s pip would (cached by their list)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        requires = sorted(line for line in z.read(meta).decode().splitlines()
                          if line.startswith("Requires-Dist:") and "extra ==" not in line)
    key = hashlib.sha256("\n".join(requires).encode()).hexdigest()[:16]
    house = os.path.join(CACHE, "wheelhouse", key)
    if not os.path.isdir(house):
        os.makedirs(os.path.dirname(house), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f"{key}.tmp-", dir=os.path.dirname(house))
        deps = [line.split(":", 1)[1].strip() for line in requires]
        _run([venv_python(), "-m", "pip", "wheel", "-q", "-w", tmp, *deps])
        os.rename(tmp, house)
    return house


def installed_venv(wheel):
    """A venv made from /usr/bin/python3 with the wheel installed (cached by the wheel's hash; built
    under a lock, complete once its marker exists; venvs of other wheels unused for a day are removed:
    each is ~300 MB)."""
    import fcntl
    import time
    digest = hashlib.sha256(open(wheel, "rb").read()).hexdigest()[:16]
    base = os.path.join(CACHE, "wheel-venv")
    os.makedirs(base, exist_ok=True)
    venv = os.path.join(base, digest)
    marker = os.path.join(venv, ".xenscope-complete")
    with open(os.path.join(base, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isfile(marker):
            shutil.rmtree(venv, ignore_errors=True)
            _run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", venv])
            _run([os.path.join(venv, "bin", "pip"), "install", "-q", "--no-index", "--find-links",
                  wheelhouse(wheel), wheel])
            open(marker, "w").close()
        os.utime(marker)
        for other in os.listdir(base):
            used = os.path.join(base, other, ".xenscope-complete")
            path = os.path.join(base, other)
            if other != digest and os.path.isdir(path) and \
                    (not os.path.exists(used) or os.path.getmtime(used) < time.time() - 86400):
                shutil.rmtree(path, ignore_errors=True)
    return venv


@pytest.fixture(scope="module")
def install():
    """``(venv, a directory outside the checkout, the environment)`` of the installed wheel."""
    work = tempfile.mkdtemp(prefix="xenscope-wheel-")
    try:
        venv = installed_venv(build_wheel(work))
        env = {k: v for k, v in os.environ.items() if k not in ("XENSCOPE_VENV", "PYTHONPATH")}
        yield venv, work, env
    finally:
        shutil.rmtree(work, ignore_errors=True)


def xenscope(install, *args):
    venv, work, env = install
    return subprocess.run([os.path.join(venv, "bin", "xenscope"), *args], capture_output=True, text=True,
                          cwd=work, env=env, stdin=subprocess.DEVNULL, timeout=300)


def site_packages(venv):
    return os.path.join(venv, "lib", "python3.11", "site-packages")


def test_wheel_holds_the_fronts_and_the_bridge_source(install):
    venv = install[0]
    for rel in ("xenstructs/cli.py", "gdbext/xenscope.py", "crashext/front.py", "crashext/xenscope.c",
                "xenstructs/xen/profiles"):
        assert os.path.exists(os.path.join(site_packages(venv), rel)), rel
    assert os.path.isfile(os.path.join(venv, "bin", "xenscope"))


def test_gdbinit_line_loads_in_gdb_and_matches_the_checkout(install):
    venv, work, env = install
    r = xenscope(install, "gdbinit")
    assert r.returncode == 0, r.stdout + r.stderr
    line = r.stdout.splitlines()[0]
    assert line == f"source {site_packages(venv)}/gdbext/xenscope.py", r.stdout
    assert "# checked: " in r.stdout and "loads it" in r.stdout
    argv = [GDB, "-nx", "-batch", "-ex", "set width 0", "-ex", "set height 0", "-ex", line,
            "-ex", "python import xenstructs, gdbext; print('FROM', xenstructs.__file__, gdbext.__file__)",
            "-ex", f"core-file {CORE}"]
    for c in GDB_COMMANDS:
        argv += ["-ex", c]
    g = subprocess.run(argv, capture_output=True, text=True, cwd=work, env=dict(env, XDG_CACHE_HOME=work),
                       stdin=subprocess.DEVNULL, timeout=300)
    first, _, installed = g.stdout.partition("\n")
    assert first.startswith("FROM ") and TOP not in first and first.count(site_packages(venv)) == 2, g.stdout
    ref = run_gdb(*GDB_COMMANDS, core=CORE, env=gdb_env())
    assert ref.returncode == 0 and "not loaded" not in ref.output
    assert installed == ref.stdout and g.stderr == ref.stderr, (g.stdout, g.stderr, ref.output)
    walk = json.loads(installed[installed.index("{\n"):])
    truth = next(w for w in json.load(open(os.path.join(CORES, "x86_64-4level.json")))["walks"]
                 if w["va"] == 0x400000)
    assert (walk["pa"], walk["page_size"]) == (truth["pa"], truth["page_size"])


def test_gdbinit_says_when_gdbs_python_cannot_load_it(install):
    venv, work, env = install
    env = dict(env, XENSCOPE_VENV=os.path.join(work, "no-such-venv"))
    r = subprocess.run([os.path.join(venv, "bin", "xenscope"), "gdbinit"], capture_output=True, text=True,
                       cwd=work, env=env, stdin=subprocess.DEVNULL, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "# gdb cannot load it: $XENSCOPE_VENV" in r.stdout and "does not exist" in r.stdout, r.stdout
    assert "PEP 668" in r.stdout
    fix = [x[4:] for x in r.stdout.splitlines() if x.startswith("#   ")]
    assert fix[0] == "/usr/bin/python3 -m venv --system-site-packages ~/.local/share/xenscope/venv", fix
    assert fix[1].startswith("~/.local/share/xenscope/venv/bin/pip install /") and fix[1].endswith(".whl"), fix


def test_crash_extension_builds_into_the_install_and_matches_the_checkout(install):
    venv, work, env = install
    r = xenscope(install, "crash-extension", "--force")
    assert r.returncode == 0 and ": built (" in r.stdout, r.stdout + r.stderr
    line = r.stdout.splitlines()[0]
    so = os.path.join(site_packages(venv), "crashext", "xenscope.so")
    assert line == f"extend {so}" and os.path.isfile(so), r.stdout
    again = xenscope(install, "crash-extension")
    assert again.returncode == 0 and ": up to date (" in again.stdout, again.stdout
    commands = ["xen walk ffff888000001000", "xen modules", "xen info"]
    vmlinux, core = os.path.join(CORES, "mod-x86_64.vmlinux"), os.path.join(CORES, "mod-x86_64.core")
    mine = run_crash(vmlinux, core, commands, options=("--minimal",), extension=so, env=env)
    assert os.path.isfile(EXTENSION), "crashext/xenscope.so is not built (./setup.sh builds it)"
    ref = run_crash(vmlinux, core, commands, options=("--minimal",))
    assert "not loaded" not in mine.output and f"{so}: shared object loaded" in mine.output, mine.output
    assert mine.outputs == ref.outputs and None not in mine.outputs, (mine.outputs, ref.outputs)
    assert CRASH is not None
