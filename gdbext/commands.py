"""gdb commands: ``xen`` and one ``xen NAME`` per entry of :data:`xenstructs.commands.COMMANDS`,
plus ``set/show xen debug|mode|cr3|dump|kernel-syms``.

This module adapts input and output only: :class:`GdbFront` tells the shared
:func:`~xenstructs.commands.execute.execute` how gdb differs from the CLI (gdb expressions wherever
an address is, the target from :mod:`gdbext.target`, defaults from ``set xen ...``, kernel types
from gdb's symbol file, output through ``gdb.write``, errors as ``gdb.GdbError``).

Loading must stay cheap (gdb start-up): gdb needs each command's help text at registration, so
the parsers (:mod:`xenstructs.commands`) are imported then; that module imports nothing heavy
(numpy, tabulate and pwntools are imported on a command's first use).
"""

import os

import gdb

_HERE = os.path.dirname(os.path.abspath(__file__))
_CHECKOUT = os.path.dirname(_HERE)
MODES = ("auto", "2level", "pae", "4level", "5level")
HELP_COLUMNS = "80"


# ---------------------------------------------------------------------------------------------
# Command descriptions (name, summary, help text, options) from the shared parsers
# ---------------------------------------------------------------------------------------------

def _build_specs():
    """Describe every command from its parser (imports xenstructs.commands)."""
    library = _library()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS          # argparse wraps to the terminal width otherwise
    try:
        specs = []
        for cmd in library.debugger_commands().values():
            p = cmd.parser(f"xen {cmd.name}")
            acts = p._actions
            specs.append({
                "name": cmd.name, "summary": cmd.summary, "help": p.format_help(),
                "options": sorted(s for a in acts for s in a.option_strings),
                "valued": sorted(s for a in acts if a.nargs != 0 for s in a.option_strings),
                "choices": {s: [str(c) for c in a.choices] for a in acts if a.choices
                            for s in a.option_strings},
                "positionals": [{"dest": a.dest, "choices": [str(c) for c in a.choices] if a.choices else None,
                                 "expr": a.type in (library.address, library.va_range)}
                                for a in acts if not a.option_strings],
            })
        return specs
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


# ---------------------------------------------------------------------------------------------
# The library, imported on first use
# ---------------------------------------------------------------------------------------------

_lib = None


def _library():
    global _lib
    if _lib is None:
        try:
            from xenstructs import commands as library
        except ImportError as e:
            from xenstructs.venv import fix_hint
            raise gdb.GdbError(f"xenscope: cannot import the library ({e}); {fix_hint(_CHECKOUT)}")
        _lib = library
    return _lib


def _gdb_target():
    from .target import get_target
    return get_target(PARAMS["dump"].value or "", PARAMS["kernel-syms"].value or "")


def _front():
    """The :class:`~xenstructs.commands.execute.Front` of gdb (made once, on first use)."""
    global _front_object
    if _front_object is None:
        from xenstructs.commands.execute import Front

        class GdbFront(Front):
            prog, error_prefix = "xen", "xen "
            interrupted_format = "{prefix}{name}: interrupted"
            internal_format = "xenscope internal error: {error} (set xen debug on for the traceback)"
            dump_argument, can_fork = False, False
            fills = ("mode", "cr3", "cpu")
            host_errors, host_label = (gdb.error,), "gdb"

            @property
            def debug(self):
                return bool(PARAMS["debug"].value)

            def evaluate(self, text):
                return evaluate(text)

            def session_target(self):
                return _gdb_target()

            def fill_defaults(self, args, missing, target):
                return _fill_defaults(args, missing, target)

            def kernel(self, target, args):
                from .kernel_types import kernel
                return kernel(target, args)

            def write(self, text):
                gdb.write(text + "\n")

        _front_object = GdbFront()
    return _front_object


_front_object = None


def evaluate(text):
    """An address argument that is not plain hex: evaluate it as a gdb expression
    (``$pc``, ``$cr3``, ``&init_mm``, ``0x1000 + 8*3``) and return it as an unsigned 64-bit int."""
    import argparse
    try:
        v = gdb.parse_and_eval(text)
        code = v.type.strip_typedefs().code
        if code not in (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_PTR, gdb.TYPE_CODE_ENUM, gdb.TYPE_CODE_BOOL,
                        gdb.TYPE_CODE_CHAR, gdb.TYPE_CODE_FLAGS):
            raise argparse.ArgumentTypeError(f"{text!r} is a {v.type}, not an address or number")
        if code == gdb.TYPE_CODE_INT and v.type.strip_typedefs().is_signed and int(v) < 0:
            raise argparse.ArgumentTypeError(f"{text!r} is negative ({int(v)}): an address or count is >= 0")
        try:
            n = int(v.cast(gdb.lookup_type("unsigned long long")))
        except gdb.error:                   # flags types (cr0, efer) do not cast
            n = int(v.format_string(format="x"), 16)
    except gdb.error as e:
        raise argparse.ArgumentTypeError(f"cannot evaluate {text!r}: {e}")
    return n & ((1 << 64) - 1)


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------

class _Param(gdb.Parameter):
    def __init__(self, name, pclass, *rest):
        super().__init__(f"xen {name}", gdb.COMMAND_DATA, pclass, *rest)
        self.xname = name

    def get_set_string(self):
        return ""

    def get_show_string(self, svalue):
        return f"xen {self.xname} is {svalue!r}." if svalue != "" else f"xen {self.xname} is not set."


class DebugParam(_Param):
    """Print Python tracebacks of xenscope internal errors."""
    set_doc = "Set whether xenscope internal errors print their Python traceback."
    show_doc = "Show whether xenscope internal errors print their Python traceback."

    def __init__(self):
        super().__init__("debug", gdb.PARAM_BOOLEAN)
        self.value = False

    def get_show_string(self, svalue):
        return f"xenscope tracebacks are {svalue}."


class ModeParam(_Param):
    """Paging mode used when a command gets no --mode: auto (from CR0/CR4/EFER), 2level, pae,
    4level or 5level."""
    set_doc = "Set the paging mode xen commands use when no --mode is given."
    show_doc = "Show the paging mode xen commands use when no --mode is given."

    def __init__(self):
        super().__init__("mode", gdb.PARAM_ENUM, MODES)
        self.value = "auto"


class Cr3Param(_Param):
    """CR3 used when a command gets no --cr3 (hex or a gdb expression); empty: from the target."""
    set_doc = "Set the CR3 xen commands use when no --cr3 is given (empty: from the target)."
    show_doc = "Show the CR3 xen commands use when no --cr3 is given."

    def __init__(self):
        super().__init__("cr3", gdb.PARAM_STRING)
        self.value = ""
        self._good = ""

    def get_set_string(self):
        """Refuse a value that is not an address now, not at the next command (keep the last good one)."""
        if self.value.strip():
            from xenstructs.commands.execute import using
            try:
                with using(_front()):
                    _library().address(self.value)
            except Exception as e:
                bad, self.value = self.value, self._good
                raise gdb.GdbError(f"xen cr3: {bad.strip()!r}: {e}")
        self._good = self.value
        return ""


class _FileParam(_Param):
    """A file-name parameter that refuses a file that does not exist (keeps the last good one)."""

    def __init__(self, name):
        super().__init__(name, gdb.PARAM_OPTIONAL_FILENAME)
        self.value = ""
        self._good = ""

    def get_set_string(self):
        path = os.path.expanduser(self.value or "")
        if path and not os.path.isfile(path):
            self.value = self._good
            raise gdb.GdbError(f"xen {self.xname}: no such file: {path}")
        self._good = self.value or ""
        return ""


class DumpParam(_FileParam):
    """Dump file xen commands read instead of gdb's inferior (ELF vmcore or kdump-compressed,
    including files gdb cannot open itself); empty: use what gdb has open."""
    set_doc = "Set the dump file xen commands read instead of gdb's inferior (empty: gdb's)."
    show_doc = "Show the dump file xen commands read instead of gdb's inferior."

    def __init__(self):
        super().__init__("dump")


class KernelSymsParam(_FileParam):
    """The guest kernel's System.map (or vmlinux) for live targets that give neither CR3 nor
    physical reads (Xen's gdbsx): xenscope finds init_top_pgt and the P2M list there.
    Symbols of a vmlinux loaded with `file` are used first; empty: none."""
    set_doc = "Set the guest kernel's System.map/vmlinux used on gdbsx (empty: none)."
    show_doc = "Show the guest kernel's System.map/vmlinux used on gdbsx."

    def __init__(self):
        super().__init__("kernel-syms")


PARAMS = {}


class SetXen(gdb.Command):
    """Set xenscope parameters: debug, mode, cr3, dump, kernel-syms."""

    def __init__(self):
        super().__init__("set xen", gdb.COMMAND_DATA, gdb.COMPLETE_NONE, True)


class ShowXen(gdb.Command):
    """Show xenscope parameters: debug, mode, cr3, dump, kernel-syms."""

    def __init__(self):
        super().__init__("show xen", gdb.COMMAND_DATA, gdb.COMPLETE_NONE, True)

    def invoke(self, arg, from_tty):
        if arg.strip():
            raise gdb.GdbError(f"unknown xen parameter {arg.strip()!r}: {', '.join(PARAMS)}")
        for name in PARAMS:
            gdb.execute(f"show xen {name}")


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

class XenPrefix(gdb.Command):
    """xenscope: page tables, physical memory and x86 decoders for Xen/Linux debugging.

Reads gdb's core file, a QEMU gdbstub (physical memory through Qqemu.PhyMemMode), Xen's gdbsx
(a PV guest's machine memory through guest-virtual reads; needs `set xen kernel-syms System.map`
or a loaded vmlinux), or the dump given with `set xen dump FILE`. Every subcommand takes --help
and --json. Parameters: set xen debug|mode|cr3|dump|kernel-syms (see `show xen`)."""

    def __init__(self, specs):
        super().__init__("xen", gdb.COMMAND_DATA, gdb.COMPLETE_COMMAND, True)
        self.specs = specs

    def invoke(self, arg, from_tty):
        if arg.strip():
            raise gdb.GdbError(f"unknown xen subcommand {arg.split()[0]!r}: see `help xen`")
        lines = ["xenscope subcommands (help xen NAME for details):"]
        lines += [f"  xen {s['name']:<10} {s['summary']}" for s in self.specs]
        gdb.write("\n".join(lines) + "\n")


class XenSubcommand(gdb.Command):
    spec = None

    def __init__(self):
        super().__init__(f"xen {self.spec['name']}", gdb.COMMAND_DATA)
        self.name = self.spec["name"]

    def invoke(self, arg, from_tty):
        self.dont_repeat()
        library = _library()
        from xenstructs.commands.execute import CommandFailed, execute
        try:
            argv = gdb.string_to_argv(arg)
        except gdb.error as e:
            raise gdb.GdbError(f"xen {self.name}: {e}")
        try:
            execute(library.COMMANDS[self.name], argv, _front())
        except CommandFailed as e:
            raise gdb.GdbError(e.text)

    def complete(self, text, word):
        s = self.spec
        cur = "" if not text or text[-1].isspace() else text.split()[-1]
        cut = max(len(cur) - len(word or ""), 0)      # gdb's word may stop at '-'

        def offer(cands):
            return [c[cut:] for c in cands if c.startswith(cur)]

        if cur.startswith("-"):
            return offer(s["options"])
        try:
            toks = gdb.string_to_argv(text[:len(text) - len(cur)])
        except gdb.error:
            return []
        if toks and toks[-1] in s["valued"]:
            if toks[-1] in s["choices"]:
                return offer(s["choices"][toks[-1]])
            return gdb.COMPLETE_EXPRESSION
        npos, skip = 0, False
        for t in toks:
            if skip:
                skip = False
            elif t.startswith("-") and len(t) > 1 and not t[1:2].isdigit():
                skip = t in s["valued"]
            else:
                npos += 1
        pos = s["positionals"]
        if npos < len(pos):
            if pos[npos]["choices"]:
                return offer(pos[npos]["choices"])
            if pos[npos]["expr"]:
                return gdb.COMPLETE_EXPRESSION
        return []


def _fill_defaults(args, missing, target):
    """``--mode``/``--cr3`` from ``set xen mode|cr3``, ``--cpu`` from gdb's selected thread."""
    library = _library()
    credits = {}
    if "mode" in missing and PARAMS["mode"].value != "auto":
        args.mode = credits["mode"] = PARAMS["mode"].value
    if "cr3" in missing and PARAMS["cr3"].value:
        try:
            args.cr3 = credits["cr3"] = library.address(PARAMS["cr3"].value)
        except Exception as e:
            raise library.UsageError(f"set xen cr3: {e}")
    if "cpu" in missing:
        selected = getattr(target, "selected_cpu", None)
        if selected is not None:
            args.cpu = selected()
    return {k: f"`set xen {k}`" for k in credits}


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------

_registered = False


def register():
    """Register the commands, parameters and event handlers (once per gdb session)."""
    global _registered
    if _registered:
        return
    specs = _build_specs()
    XenPrefix(specs)
    for s in specs:
        doc = f"{s['summary']}\n\n{s['help'].rstrip()}"
        cls = type(f"Xen_{s['name'].replace('-', '_')}", (XenSubcommand,), {"__doc__": doc, "spec": s})
        cls()
    SetXen()
    ShowXen()
    for cls in (DebugParam, ModeParam, Cr3Param, DumpParam, KernelSymsParam):
        p = cls()
        PARAMS[p.xname] = p

    def invalidate(*_):
        from . import target
        target.invalidate()

    def forget(*_):
        from . import target
        target.drop()

    gdb.events.stop.connect(invalidate)
    gdb.events.cont.connect(invalidate)
    for ev in ("exited", "connection_removed"):
        if hasattr(gdb.events, ev):
            getattr(gdb.events, ev).connect(forget)
    _registered = True
