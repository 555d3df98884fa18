"""The data of ``check --html``'s pictures of one dump, taken from the commands' own JSON results.

:func:`gather` runs, on the dump a check has open, the commands whose JSON the report draws:

* ``maps`` (every dump with an address space): ``{mode, cr3, ranges, problems}`` of ``maps --json``
  (the report's address-space map: a strip per top-level slot, ranges coloured by rights);
* ``frames --summary`` (Xen host dumps): its ``census`` and ``max_page`` (the census bar chart);
* ``domains`` (Xen host dumps): its ``domains`` list (the domains table and chart).

Each command that fails gives ``{"error": message}`` in its place instead; none stops the others.
"""

MAPS_KEYS = ("mode", "cr3", "ranges", "problems", "range_count")


def command_result(name, target, argv):
    """The JSON result of xenscope command ``name`` with options ``argv`` on the open ``target``
    (what ``xenscope NAME DUMP ARGV --json`` prints for the same dump)."""
    from .commands import COMMANDS
    cmd = COMMANDS[name]
    args = cmd.parser(f"xenscope {name}").parse_args(list(argv))
    return cmd.run(target, args)


def _guarded(name, target, argv, keys):
    try:
        result = command_result(name, target, argv)
    except KeyboardInterrupt:
        raise
    except BaseException as e:              # noqa: BLE001 - a picture missing is said, not fatal
        return {"error": (str(e) or type(e).__name__).splitlines()[0]}
    return {k: result.get(k) for k in keys}


def gather(target, kind, syms=None):
    """``{"maps": ..., "frames": ..., "domains": ...}`` of one dump (the last two on Xen host
    dumps only); ``syms`` is the Xen symbol file the check opened the host with (None: none)."""
    views = {"maps": _guarded("maps", target, [], MAPS_KEYS)}
    if kind == "xen-host":
        xen = ["--xen-syms", syms] if syms else []
        views["frames"] = _guarded("frames", target, ["--summary"] + xen, ("census", "max_page"))
        views["domains"] = _guarded("domains", target, xen, ("domains",))
    return views
