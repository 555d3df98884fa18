"""Every subcommand, declared once: its argparse parser, the analysis it runs, how it renders.

The CLI (``xenscope NAME DUMP ...``), gdb (``xen NAME ...``) and later crash read these
declarations; they differ only in where the target comes from and where the text goes.
A command's ``run(target, args)`` returns a plain result (dict); ``render(result, args)`` turns
it into text; ``--json`` prints the result itself (numbers as integers, keys named by address
space: ``va``, ``pa``, ``pfn``...). The JSON schemas are documented in README.md.

This package holds the framework (registry, argument types); one module per subject declares
its commands (:mod:`.paging`: info, walk, vtop, maps, pte, decode, read-phys). Importing the
package imports them all, in the order ``help xen`` lists them.
"""

import argparse
from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import XenscopeError

def tabulate(*args, **kw):
    """tabulate.tabulate, imported on first use (loading the commands in gdb stays cheap)."""
    from tabulate import tabulate as _tabulate
    return _tabulate(*args, **kw)


@dataclass
class Command:
    name: str
    summary: str
    build: Callable            # build(parser) adds the command's arguments
    run: Callable              # run(target, args) -> dict
    render: Callable           # render(result, args) -> str
    needs_target: bool = True
    status: Optional[Callable] = None    # status(result) -> CLI exit status: 0 clean, 1 findings (gdb ignores it)

    def exit_status(self, result):
        """The CLI's exit status for a successful run: ``status(result)``, 0 when not given."""
        return int(self.status(result)) if self.status is not None else 0

    def parser(self, prog, dump=False):
        """The argparse parser; ``dump=True`` adds the CLI's DUMP argument first."""
        p = XenArgumentParser(prog=prog, description=self.summary,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        if dump and self.needs_target:
            p.add_argument("dump", help="dump file: ELF vmcore or kdump-compressed (plain or flattened)")
        self.build(p)
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        return p


class XenArgumentParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so gdb keeps running on a usage error."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")

    def exit(self, status=0, message=None):
        if message:
            raise UsageError(message.strip())
        raise HelpShown()


class UsageError(XenscopeError):
    """Wrong arguments: the CLI exits 2, gdb raises a gdb error."""


class HelpShown(Exception):
    """``--help`` was printed; nothing more to do."""


COMMANDS = {}


def command(name, summary, needs_target=True):
    """Declare a subcommand: decorate its ``build`` function; give ``run`` and ``render`` after."""
    def wrap(build):
        cmd = Command(name, summary, build, None, None, needs_target)
        COMMANDS[name] = cmd
        return cmd
    return wrap


def output(cmd, result, args):
    """The text every front end prints for a result: JSON with ``--json``, else the command's
    rendering, followed (``info``) by the host's notes in ``result["notes"]``."""
    if args.json:
        import json
        return json.dumps(result, indent=1, sort_keys=True)
    text = cmd.render(result, args)
    if cmd.name == "info" and isinstance(result, dict) and result.get("notes"):
        text += "".join(f"\nnote: {n}" for n in result["notes"])
    return text


def credit_defaults(result, given):
    """A front end filled options the user did not give (``given``: option -> where from, e.g.
    ``{"cr3": "`set xen cr3`"}``): say so where the result says "--OPTION option"."""
    sources = result.get("sources") if isinstance(result, dict) else None
    if isinstance(sources, dict):
        for k, why in given.items():
            if sources.get(k) == f"--{k} option":
                sources[k] = why


# ---------------------------------------------------------------------------------------------
# Argument types. A front end may set ``evaluate`` to parse expressions it knows ($rip, symbols).
# ---------------------------------------------------------------------------------------------

evaluate: Optional[Callable] = None

# A front end that has a target of its own (gdb's inferior, crash's dump) sets ``current_target``
# to a function returning it (or None): commands whose dump is optional (``fault``) use it when
# no DUMP is given.
current_target: Optional[Callable] = None


def front_target():
    """The front end's own target, or None (the CLI has none)."""
    if current_target is None:
        return None
    try:
        return current_target()
    except XenscopeError:
        return None


def address(text):
    """An address or entry value: hex with or without ``0x`` (as crash takes them), or, in gdb,
    any expression gdb can evaluate (``$cr2``, ``&init_mm``)."""
    t = text.strip().replace("_", "").replace("`", "")
    try:
        return int(t, 16) if not t.lower().startswith("0x") else int(t, 0)
    except ValueError:
        if evaluate is not None:
            return evaluate(text)
        raise argparse.ArgumentTypeError(f"not a hex number: {text!r}")


def number(text):
    """A count: decimal, or hex with ``0x``."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")


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
        raise argparse.ArgumentTypeError(f"not a range A-B or A+SIZE: {text!r}")
    if end <= start:
        raise argparse.ArgumentTypeError(f"empty range {text!r}: the end must be above the start")
    return start, end




# Subject modules register their commands on import (kept last: they use the names above).
from . import paging  # noqa: E402,F401
from . import xen  # noqa: E402,F401
from . import xenlog  # noqa: E402,F401
from . import p2m  # noqa: E402,F401
from . import fault  # noqa: E402,F401
from . import kernel  # noqa: E402,F401
from . import stack  # noqa: E402,F401
