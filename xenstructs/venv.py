"""Make a debugger's embedded Python see xenscope's dependencies (gdb's and crash's loaders).

gdb and crash both embed Debian's ``/usr/bin/python3``. ``root`` is the directory holding
``xenstructs/``, ``gdbext/`` and ``crashext/``: a checkout, or the ``site-packages`` a wheel was
installed into. The dependencies are found (:func:`venv_for`) in ``$XENSCOPE_VENV`` if set
(``none``: the embedded Python as it is), else, for an install into a virtual environment, that
environment, else, for a checkout, ``<checkout>/.venv`` (made by ``setup.sh``), else (an install
into a system directory) the embedded Python as it is. Imports only the standard library: it runs
before the dependencies are reachable.
"""

import importlib.util
import os
import site
import sys

REQUIRED = (("construct", "construct"), ("tabulate", "tabulate"), ("numpy", "numpy"),
            ("elftools", "pyelftools"), ("pwnlib", "pwntools"))


def is_checkout(root):
    """``root`` is a source checkout (it has ``setup.sh``), not an installed package."""
    return os.path.isfile(os.path.join(root, "setup.sh"))


def installed_venv(root):
    """The virtual environment whose ``lib/pythonX.Y/site-packages`` is ``root``, else None."""
    prefix = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(root))))
    return prefix if os.path.isfile(os.path.join(prefix, "pyvenv.cfg")) else None


def venv_for(root):
    """``(venv or None, how it was chosen)``: where the dependencies of ``root`` live."""
    env = os.environ.get("XENSCOPE_VENV")
    if env and env.lower() == "none":
        return None, "XENSCOPE_VENV=none"
    if env:
        venv = os.path.abspath(os.path.expanduser(env))
        return venv, f"$XENSCOPE_VENV ({venv})"
    venv = installed_venv(root)
    if venv is not None:
        return venv, f"the venv {venv} xenscope is installed in"
    if is_checkout(root):
        venv = os.path.join(root, ".venv")
        return venv, f"the venv {venv}"
    return None, "the debugger's own Python (xenscope is installed outside a venv)"


def fix_hint(root):
    """What to run when loading fails: ``setup.sh`` in a checkout, ``xenscope gdbinit`` otherwise."""
    if is_checkout(root):
        return f"run {os.path.join(root, 'setup.sh')}"
    venv = installed_venv(root)
    cli = os.path.join(venv, "bin", "xenscope") if venv else "xenscope"
    return f"run `{cli} gdbinit` (it says what gdb's Python needs)"


def activate(root):
    """Add the dependencies' site-packages and ``root`` to ``sys.path``.

    :returns: ``None`` when every dependency is importable, else one sentence saying why not.
    """
    pyver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    venv, what = venv_for(root)
    if venv is not None:
        why = _add_venv(venv, what, pyver)
        if why:
            return why
    # pwntools (hexdumps) sets up the terminal on import, which fails on a debugger's stdout
    os.environ.setdefault("PWNLIB_NOTERM", "1")
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    missing = [pkg for mod, pkg in REQUIRED if importlib.util.find_spec(mod) is None]
    if missing:
        return "missing Python package(s) " + ", ".join(missing) + f" (dependencies from {what})"
    return None


def _add_venv(venv, what, pyver):
    """Add ``venv``'s site-packages (and its .pth files); one sentence when it cannot serve."""
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
    return None
