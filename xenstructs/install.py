"""Where xenscope is installed, and what a debugger needs to load it (``gdbinit``, ``crash-extension``).

The *root* is the directory holding ``xenstructs/``, ``gdbext/`` and ``crashext/`` side by side:
a checkout, or the ``site-packages`` a wheel was installed into (the wheel keeps the top-level
layout). gdb and Debian's crash both embed ``/usr/bin/python3``; the dependencies must be installed
for that Python: in a venv made from it (Debian's system pip refuses to install, PEP 668), found as
:func:`xenstructs.venv.venv_for` says. Standard library only.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig

from .errors import XenscopeError
from .venv import installed_venv, is_checkout, venv_for

SYSTEM_PYTHON = "/usr/bin/python3"           # the Python Debian's gdb and crash embed
CRASH_DEFS = "/usr/include/crash/defs.h"     # Debian package crash
DEFAULT_VENV = "~/.local/share/xenscope/venv"


def root():
    """The directory holding ``xenstructs/``, ``gdbext/`` and ``crashext/``."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gdb_line(where=None):
    """The one line that loads xenscope into gdb's own Python."""
    return f"source {os.path.join(where or root(), 'gdbext', 'xenscope.py')}"


def install_source():
    """What ``pip install`` should be given to install this xenscope again: the wheel or directory
    it came from (PEP 610's ``direct_url.json``), else the project name."""
    try:
        from importlib.metadata import PackageNotFoundError, distribution
        text = distribution("xenscope").read_text("direct_url.json")
    except (ImportError, PackageNotFoundError):
        text = None
    url = json.loads(text).get("url", "") if text else ""
    if url.startswith("file://"):
        return url[len("file://"):]
    return url or "xenscope"


def venv_commands(source=None, venv=DEFAULT_VENV):
    """The exact commands that make a venv from gdb's Python and install xenscope into it."""
    return [f"{SYSTEM_PYTHON} -m venv --system-site-packages {venv}",
            f"{venv}/bin/pip install {source or install_source()}",
            f"{venv}/bin/xenscope gdbinit"]


def gdb_python(gdb="gdb"):
    """``{version, executable}`` of the Python ``gdb`` embeds, or None when gdb is not installed."""
    path = shutil.which(gdb)
    if path is None:
        return None
    script = "python import sys; print('PY', '%d.%d.%d' % sys.version_info[:3], sys.executable)"
    r = _run([path, "-nx", "-batch", "-ex", script])
    for line in r.stdout.splitlines():
        if line.startswith("PY "):
            _, version, executable = line.split(" ", 2)
            return {"gdb": path, "version": version, "executable": executable}
    return {"gdb": path, "version": None, "executable": None,
            "error": _last_line(r) or "gdb has no Python"}


def gdb_loads(line, gdb="gdb"):
    """Load xenscope in a throw-away ``gdb -nx -batch`` with ``line``: None when ``help xen`` then
    works, else the reason gdb printed (its "xenscope: not loaded: ..." line)."""
    r = _run([shutil.which(gdb) or gdb, "-nx", "-batch", "-ex", line, "-ex", "help xen"])
    text = r.stdout + r.stderr
    for row in text.splitlines():
        if row.startswith("xenscope: not loaded:"):
            return row[len("xenscope: not loaded:"):].strip().rstrip(".")
    if "xen walk" not in text:
        return _last_line(r) or "gdb did not register the xen commands"
    return None


def gdbinit(check=True):
    """Everything ``xenscope gdbinit`` says (see :mod:`xenstructs.commands.install`)."""
    here = root()
    venv, how = venv_for(here)
    result = {"line": gdb_line(here), "root": here, "checkout": is_checkout(here), "venv": venv,
              "venv_source": how, "python": "%d.%d.%d" % sys.version_info[:3],
              "python_executable": sys.executable, "gdb": None, "loads": None, "why": None, "fix": []}
    if not check:
        return result
    result["gdb"] = gdb_python()
    if result["gdb"] is None:
        result["why"] = "gdb is not installed (apt-get install gdb)"
    elif result["gdb"]["version"] is None:
        result["why"] = f"gdb has no usable Python: {result['gdb']['error']}"
    else:
        result["why"] = gdb_loads(result["line"])
        result["loads"] = result["why"] is None
    if result["loads"] is False:
        result["fix"] = (["./setup.sh"] if result["checkout"] else venv_commands())
    return result


# ---------------------------------------------------------------------------------------------
# crash
# ---------------------------------------------------------------------------------------------

def crash_paths(where=None):
    """``(C source, shared object, stamp file)`` of the crash bridge under ``where``."""
    base = os.path.join(where or root(), "crashext")
    return (os.path.join(base, "xenscope.c"), os.path.join(base, "xenscope.so"),
            os.path.join(base, ".xenscope.so.stamp"))


def system_python_var(name):
    """A ``sysconfig`` variable of :data:`SYSTEM_PYTHON` (crash embeds it, not this Python)."""
    if os.path.realpath(sys.executable) == os.path.realpath(SYSTEM_PYTHON):   # a venv made from it too
        return sysconfig.get_config_var(name)
    if not os.path.exists(SYSTEM_PYTHON):
        raise XenscopeError(f"{SYSTEM_PYTHON} is missing: crash embeds it (apt-get install python3)")
    r = _run([SYSTEM_PYTHON, "-c", f"import sysconfig; print(sysconfig.get_config_var({name!r}))"])
    return r.stdout.strip()


def crash_build_plan(where=None, defs=CRASH_DEFS):
    """What building the crash bridge needs; raises :class:`XenscopeError` naming what is missing."""
    src, so, stamp = crash_paths(where)
    if not os.path.isfile(src):
        raise XenscopeError(f"the crash bridge's source {src} is missing from this install")
    if not os.path.isfile(defs):
        raise XenscopeError(f"crash's {defs} is missing (apt-get install crash)")
    config = SYSTEM_PYTHON + "-config"
    if not os.path.exists(config):
        raise XenscopeError(f"{config} is missing (apt-get install python3-dev)")
    gcc = shutil.which("gcc")
    if gcc is None:
        raise XenscopeError("gcc is missing (apt-get install gcc libc6-dev)")
    pylib = system_python_var("INSTSONAME")
    digest = hashlib.sha256(open(src, "rb").read() + open(defs, "rb").read()).hexdigest()
    return {"source": src, "so": so, "stamp": stamp, "defs": defs, "gcc": gcc, "config": config,
            "pylib": pylib, "want": f"{digest}-{pylib}"}


def build_crash_extension(where=None, defs=CRASH_DEFS, force=False):
    """Build ``crashext/xenscope.so`` under ``where`` (the install) unless it is up to date: the
    bridge embedding :data:`SYSTEM_PYTHON`'s libpython, against crash's ``defs.h``.

    :returns: ``{so, built, command, line}`` (``line``: the ``extend`` line for crash)
    """
    plan = crash_build_plan(where, defs)
    so, stamp = plan["so"], plan["stamp"]
    if not os.access(os.path.dirname(so), os.W_OK):
        raise XenscopeError(f"cannot write {os.path.dirname(so)}: run this as the owner of the install")
    command = _gcc_command(plan, so + ".tmp")
    current = os.path.isfile(so) and _read(stamp) == plan["want"]
    if not current or force:
        r = _run(command)
        if r.returncode != 0:
            raise XenscopeError(f"gcc failed building {so}: {_last_line(r)}")
        os.replace(so + ".tmp", so)
        with open(stamp, "w") as f:
            f.write(plan["want"] + "\n")
    return {"so": so, "built": not current or force, "command": command, "line": f"extend {so}",
            "python_library": plan["pylib"], "defs": defs}


def _gcc_command(plan, output):
    includes = _run([plan["config"], "--includes"]).stdout.split()
    ldflags = _run([plan["config"], "--embed", "--ldflags"]).stdout.split()
    return ([plan["gcc"], "-shared", "-fPIC", "-O2", "-Wall", "-DX86_64",
             f'-DPYTHON_LIBRARY="{plan["pylib"]}"', f"-I{os.path.dirname(plan['defs'])}"]
            + includes + [plan["source"], "-o", output] + ldflags)


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _run(argv):
    """Run a helper program; its failure to start is a one-line error."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise XenscopeError(f"cannot run {argv[0]}: {e}") from None


def _last_line(r):
    lines = [x for x in (r.stderr or r.stdout or "").splitlines() if x.strip()]
    return lines[-1].strip() if lines else ""


__all__ = ["root", "gdb_line", "gdbinit", "build_crash_extension", "venv_commands", "installed_venv"]
