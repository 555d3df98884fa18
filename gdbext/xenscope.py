"""Load xenscope into gdb:  (gdb) source <root>/gdbext/xenscope.py

``<root>`` is a checkout, or the site-packages a wheel was installed into (``xenscope gdbinit``
prints the line). Finds the root from this file's location and the dependencies as
:func:`xenstructs.venv.venv_for` says: $XENSCOPE_VENV if set (``none`` = gdb's Python as it is),
else the venv xenscope is installed in, else <checkout>/.venv made by <checkout>/setup.sh. The venv
must be made for the Python gdb embeds (same major.minor). When anything is missing, one message
says what to run and nothing else is registered. Loading imports no analysis code (numpy etc. are
imported on a command's first use).
"""


def _xenscope_load():
    import os
    import sys

    import gdb

    here = os.path.dirname(os.path.realpath(__file__))
    checkout = os.path.dirname(here)
    pyver = f"{sys.version_info[0]}.{sys.version_info[1]}"

    def refuse(why, hint=None):
        hint = hint or f"run {os.path.join(checkout, 'setup.sh')} (it creates the venv for gdb's Python {pyver})"
        gdb.write(f"xenscope: not loaded: {why}.\n"
                  f"xenscope: {hint}, then source {os.path.join(here, 'xenscope.py')} again.\n", gdb.STDERR)

    if checkout not in sys.path:
        sys.path.insert(0, checkout)
    try:
        from xenstructs.venv import activate, fix_hint      # standard library only
    except Exception as e:
        return refuse(f"cannot read {checkout}/xenstructs ({type(e).__name__}: {e})")
    why = activate(checkout)
    if why:
        return refuse(why, fix_hint(checkout))
    try:
        import gdbext.commands
        gdbext.commands.register()
    except Exception as e:       # never a traceback at load time
        return refuse(f"loading failed: {type(e).__name__}: {e}", fix_hint(checkout))


_xenscope_load()
del _xenscope_load
