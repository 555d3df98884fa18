"""Load xenscope into gdb:  (gdb) source <checkout>/gdbext/xenscope.py

Finds the checkout from this file's location and the virtual environment holding the
dependencies: $XENSCOPE_VENV if set (``none`` = use gdb's Python as it is, for distro installs),
else <checkout>/.venv, made by <checkout>/setup.sh. The venv must be made for the Python gdb embeds
(same major.minor). When anything is missing, one message says what to run and nothing else is
registered. Loading imports no analysis code (numpy etc. are imported on a command's first use).
"""


def _xenscope_load():
    import importlib.util
    import os
    import site
    import sys

    import gdb

    here = os.path.dirname(os.path.realpath(__file__))
    checkout = os.path.dirname(here)
    setup = os.path.join(checkout, "setup.sh")
    pyver = f"{sys.version_info[0]}.{sys.version_info[1]}"

    def refuse(why):
        gdb.write(f"xenscope: not loaded: {why}.\n"
                  f"xenscope: run {setup} (it creates the venv for gdb's Python {pyver}), "
                  f"then source {os.path.join(here, 'xenscope.py')} again.\n", gdb.STDERR)

    env = os.environ.get("XENSCOPE_VENV")
    venv = os.path.abspath(os.path.expanduser(env)) if env else os.path.join(checkout, ".venv")
    if env and env.lower() == "none":
        venv = None
    if venv is not None:
        what = f"$XENSCOPE_VENV ({venv})" if env else f"the venv {venv}"
        if not os.path.isdir(venv):
            return refuse(f"{what} does not exist")
        sitedir = os.path.join(venv, "lib", f"python{pyver}", "site-packages")
        if not os.path.isdir(sitedir):
            lib = os.path.join(venv, "lib")
            made = sorted(d[6:] for d in (os.listdir(lib) if os.path.isdir(lib) else [])
                          if d.startswith("python"))
            if made:
                return refuse(f"{what} was made for Python {', '.join(made)} but gdb embeds Python {pyver}")
            return refuse(f"{what} is not a Python virtual environment (no lib/python{pyver}/site-packages)")
        if sitedir not in sys.path:
            site.addsitedir(sitedir)         # runs its .pth files
    # pwntools (hexdumps) sets up the terminal on import, which fails on gdb's stdout (no fileno)
    os.environ.setdefault("PWNLIB_NOTERM", "1")
    if checkout in sys.path:
        sys.path.remove(checkout)
    sys.path.insert(0, checkout)

    missing = [mod for mod, pkg in (("construct", "construct"), ("tabulate", "tabulate"),
                                    ("numpy", "numpy"), ("elftools", "pyelftools"),
                                    ("pwnlib", "pwntools"))
               if importlib.util.find_spec(mod) is None]
    if missing:
        return refuse("missing Python package(s) " + ", ".join(missing)
                      + (f" in {venv}" if venv else " (XENSCOPE_VENV=none: gdb's own Python)"))
    try:
        import gdbext.commands
        gdbext.commands.register()
    except Exception as e:       # never a traceback at load time
        return refuse(f"loading failed: {type(e).__name__}: {e}")


_xenscope_load()
del _xenscope_load
