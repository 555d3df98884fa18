"""Make a debugger's embedded Python see xenscope's dependencies (gdb's and crash's loaders).

gdb and crash both embed Debian's ``/usr/bin/python3``; the dependencies live in a venv made from
it by ``setup.sh``. The venv is ``$XENSCOPE_VENV`` if set (``none``: use the embedded Python as it
is, for distro installs), else ``<checkout>/.venv``. Imports only the standard library: it runs
before the dependencies are reachable.
"""

import importlib.util
import os
import site
import sys

REQUIRED = (("construct", "construct"), ("tabulate", "tabulate"), ("numpy", "numpy"),
            ("elftools", "pyelftools"), ("pwnlib", "pwntools"))


def activate(checkout):
    """Add the venv's site-packages and ``checkout`` to ``sys.path``.

    :returns: ``None`` when every dependency is importable, else one sentence saying why not.
    """
    pyver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    env = os.environ.get("XENSCOPE_VENV")
    venv = os.path.abspath(os.path.expanduser(env)) if env else os.path.join(checkout, ".venv")
    if env and env.lower() == "none":
        venv = None
    if venv is not None:
        what = f"$XENSCOPE_VENV ({venv})" if env else f"the venv {venv}"
        if not os.path.isdir(venv):
            return f"{what} does not exist"
        sitedir = os.path.join(venv, "lib", f"python{pyver}", "site-packages")
        if not os.path.isdir(sitedir):
            lib = os.path.join(venv, "lib")
            made = sorted(d[6:] for d in (os.listdir(lib) if os.path.isdir(lib) else [])
                          if d.startswith("python"))
            if made:
                return f"{what} was made for Python {', '.join(made)} but the debugger embeds Python {pyver}"
            return f"{what} is not a Python virtual environment (no lib/python{pyver}/site-packages)"
        if sitedir not in sys.path:
            site.addsitedir(sitedir)         # runs its .pth files
    # pwntools (hexdumps) sets up the terminal on import, which fails on a debugger's stdout
    os.environ.setdefault("PWNLIB_NOTERM", "1")
    if checkout in sys.path:
        sys.path.remove(checkout)
    sys.path.insert(0, checkout)
    missing = [pkg for mod, pkg in REQUIRED if importlib.util.find_spec(mod) is None]
    if missing:
        return ("missing Python package(s) " + ", ".join(missing)
                + (f" in {venv}" if venv else " (XENSCOPE_VENV=none: the debugger's own Python)"))
    return None
