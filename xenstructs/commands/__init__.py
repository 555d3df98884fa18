"""Every subcommand, declared once, on its run function, with its arguments as data.

::

    @command("walk", "Walk the page tables for one virtual address and show every level.",
             arguments=[arg("va", type=address, help="virtual address (hex)"), PAGING],
             render=render_walk)
    def walk_cmd(target, args):
        ...                   # returns a plain result (dict); never prints

``run(target, args)`` returns the result; ``render(result, args)`` turns it into text; ``--json``
prints the result itself (numbers as integers, keys named by address space: ``va``, ``pa``,
``pfn``...; schemas in README.md); ``status(result)`` is the CLI's exit status (0 clean, 1 findings).
``target`` says where the command's target comes from: ``"required"`` (the CLI's DUMP argument,
gdb's inferior, crash's dump), ``"optional"`` (a DUMP argument the command declares itself, else the
host's own target, else none) or ``None`` (no target).

Every host (the CLI, gdb, crash) runs a command the same way: :func:`.execute.execute` with its
:class:`.execute.Front` (see that module). This package holds the declarations' vocabulary
(:func:`arg`, :func:`group`, :func:`exclusive`, :func:`command`, the argument types); one module per
subject declares its commands (:mod:`.paging`: info, walk, vtop, maps, pte, decode, read-phys; ...).
Importing the package imports them all, in the order ``help xen`` lists them. Nothing heavy is
imported here (gdb reads the help texts at start-up): numpy, tabulate and pwntools load on first use.
"""

import argparse
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..errors import UsageError  # noqa: F401 (the commands raise it; hosts catch it)


def tabulate(*args, **kw):
    """tabulate.tabulate, imported on first use (loading the commands in gdb stays cheap)."""
    from tabulate import tabulate as _tabulate
    return _tabulate(*args, **kw)


# ---------------------------------------------------------------------------------------------
# Arguments as data
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Argument:
    """One ``add_argument(*names, **options)``."""
    names: tuple
    options: dict

    def add_to(self, parser):
        parser.add_argument(*self.names, **self.options)


@dataclass(frozen=True)
class Group:
    """An argument group (a titled block of ``--help``)."""
    title: str
    arguments: tuple

    def add_to(self, parser):
        g = parser.add_argument_group(self.title)
        for a in self.arguments:
            a.add_to(g)


@dataclass(frozen=True)
class Exclusive:
    """Mutually exclusive arguments."""
    arguments: tuple

    def add_to(self, parser):
        g = parser.add_mutually_exclusive_group()
        for a in self.arguments:
            a.add_to(g)


def arg(*names, **options):
    """An argument: the same parameters as ``argparse.ArgumentParser.add_argument``."""
    return Argument(names, options)


def group(title, *arguments):
    """A titled group of :func:`arg` (and :func:`exclusive`) entries."""
    return Group(title, arguments)


def exclusive(*arguments):
    """Arguments of which at most one may be given."""
    return Exclusive(arguments)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

TARGETS = ("required", "optional", None)


@dataclass
class Command:
    """A declared subcommand (see the module docstring)."""
    name: str
    summary: str
    run: Callable                      # run(target, args) -> result
    render: Callable                   # render(result, args) -> str
    arguments: tuple = ()
    status: Optional[Callable] = None  # status(result) -> exit status (0 when not given)
    target: Optional[str] = "required"
    host_notes: bool = False           # the host's notes about its target join the result (info)
    cli_only: bool = False             # not a debugger command (installing: gdbinit, crash-extension)
    dump_help: str = field(default="dump file: ELF vmcore or kdump-compressed (plain or flattened), or "
                                   "/proc/kcore (the running kernel, as root)")

    @property
    def needs_target(self):
        return self.target == "required"

    def exit_status(self, result):
        """The exit status of a successful run: ``status(result)``, 0 when not given."""
        return int(self.status(result)) if self.status is not None else 0

    def parser(self, prog, dump=False):
        """The argparse parser; ``dump=True`` (the CLI) adds the DUMP argument of a command whose
        target is required."""
        p = XenArgumentParser(prog=prog, description=self.summary,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        if dump and self.needs_target:
            p.add_argument("dump", help=self.dump_help)
        for a in self.arguments:
            a.add_to(p)
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        return p


COMMANDS = {}


def command(name, summary, arguments=(), render=None, status=None, target="required", host_notes=False,
            cli_only=False):
    """Declare a subcommand on its run function ``run(target, args) -> result``.

    :param arguments: :func:`arg`, :func:`group`, :func:`exclusive` entries (lists may nest)
    :param render: ``render(result, args) -> str``
    :param status: ``status(result) -> int``, the exit status (default 0)
    :param target: ``"required"``, ``"optional"`` or ``None`` (see the module docstring)
    :param host_notes: the host's notes about its target are added as ``result["notes"]``
    :param cli_only: only the CLI has it (gdb and crash do not list or run it)
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}")

    def declare(run):
        COMMANDS[name] = Command(name, summary, run, render, tuple(_flatten(arguments)), status,
                                 target, host_notes, cli_only=cli_only)
        return run
    return declare


def debugger_commands():
    """``{name: Command}`` of the commands gdb and crash have (all but the CLI-only ones)."""
    return {name: c for name, c in COMMANDS.items() if not c.cli_only}


def _flatten(items):
    for a in items:
        if isinstance(a, (list, tuple)):
            yield from _flatten(a)
        else:
            yield a


class XenArgumentParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so a debugger keeps running on a usage error."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status=0, message=None):
        if message:
            raise UsageError(message.strip())
        raise HelpShown()


class HelpShown(Exception):
    """``--help`` was printed; nothing more to do."""


def output(cmd, result, args):
    """The text every front end prints for a result: JSON with ``--json``, else the command's
    rendering, followed (``host_notes`` commands: info) by the host's notes in ``result["notes"]``;
    None when the command has written its output itself as it went (``check --json-lines``)."""
    if args.json:
        import json
        return json.dumps(result, indent=1, sort_keys=True)
    text = cmd.render(result, args)
    if text is None:
        return None
    if cmd.host_notes and isinstance(result, dict) and result.get("notes"):
        text += "".join(f"\nnote: {n}" for n in result["notes"])
    return text


# ---------------------------------------------------------------------------------------------
# Argument types. Expressions (``$rip``, ``&init_mm``) are the active front's to evaluate.
# ---------------------------------------------------------------------------------------------

U64_MAX = (1 << 64) - 1
_HEX = frozenset("0123456789abcdefABCDEF")
_SHOWN = 40                                   # characters of a bad value quoted in a message


def _shown(text):
    """A bad value as it is quoted in one error line: repr, and cut when long."""
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")


def address(text):
    """An address or entry value: hex with or without ``0x`` (as crash takes them), or, where the
    host evaluates expressions (gdb), any expression it can evaluate (``$cr2``, ``&init_mm``).
    ASCII hex digits only (``_`` and ``` ` ``` separators allowed), 0 .. 2^64-1."""
    t = text.strip().replace("_", "").replace("`", "")
    digits = t[2:] if t[:2].lower() == "0x" else t
    if not digits or not set(digits) <= _HEX:
        from .execute import active_front
        value = active_front().evaluate(text)
    else:
        value = int(digits, 16)
    if not 0 <= value <= U64_MAX:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is out of range (0 .. 2^64-1)")
    return value


def number(text):
    """A count or index: decimal, or hex with ``0x``; ASCII digits only, 0 .. 2^64-1."""
    t = text.strip()
    hexa = t[:2].lower() == "0x"
    digits = t[2:] if hexa else t
    allowed = _HEX if hexa else frozenset("0123456789")
    if not digits or not set(digits) <= allowed:
        raise argparse.ArgumentTypeError(f"not a number: {_shown(text)} (a count: decimal, or hex with 0x)")
    value = int(digits, 16 if hexa else 10)
    if value > U64_MAX:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is out of range (0 .. 2^64-1)")
    return value


def va_range(text):
    """``A-B`` (hex, end exclusive) or ``A+SIZE``."""
    try:
        if "+" in text:
            a, n = text.split("+", 1)
            start = address(a)
            end = start + address(n)
        else:
            a, b = text.split("-", 1)
            start, end = address(a), address(b)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"not a range A-B or A+SIZE: {_shown(text)}")
    if end <= start:
        raise argparse.ArgumentTypeError(f"empty range {_shown(text)}: the end must be above the start")
    if end > U64_MAX + 1:
        raise argparse.ArgumentTypeError(f"range {_shown(text)} ends beyond 2^64")
    return start, end


# Subject modules register their commands on import (kept last: they use the names above).
from . import paging  # noqa: E402,F401
from . import xen  # noqa: E402,F401
from . import xenlog  # noqa: E402,F401
from . import p2m  # noqa: E402,F401
from . import fault  # noqa: E402,F401
from . import linux  # noqa: E402,F401
from . import stack  # noqa: E402,F401
from . import dmesg  # noqa: E402,F401
from . import check  # noqa: E402,F401
from . import install  # noqa: E402,F401
