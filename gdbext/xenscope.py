"""Load xenscope into gdb:  (gdb) source <checkout>/gdbext/xenscope.py

Finds the checkout from this file's location and the virtual environment holding the
dependencies: $XENSCOPE_VENV if set (``none`` = use gdb's Python as it is, for distro installs),
else <checkout>/.venv, made by <checkout>/setup.sh. The venv must be made for the Python gdb embeds
(same major.minor). When anything is missing, one message says what to run and nothing else is
registered. Loading imports no analysis code (numpy etc. are imported on a command's first use).
"""


def _xenscope_load():
    import os
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

    if checkout not in sys.path:
        sys.path.insert(0, checkout)
    try:
        from xenstructs.venv import activate      # standard library only
    except Exception as e:
        return refuse(f"cannot read {checkout}/xenstructs ({type(e).__name__}: {e})")
    why = activate(checkout)
    if why:
        return refuse(why)
    try:
        import gdbext.commands
        gdbext.commands.register()
    except Exception as e:       # never a traceback at load time
        return refuse(f"loading failed: {type(e).__name__}: {e}")


_xenscope_load()
del _xenscope_load
