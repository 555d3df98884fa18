"""Running a declared command on any host: one :func:`execute` for the CLI, gdb and crash.

A host describes itself with a :class:`Front` (the CLI uses the class as it is; gdb and crash
subclass it): how usage and error lines start, where a command's target comes from, which options
it fills from its own session (gdb's ``set xen cr3``, crash's current context), how it evaluates
expressions, where kernel types come from, where text goes. :func:`execute` does the rest for every
host, in one place: parsing, the target, the host's defaults, the run, the target's notes and
hints, rendering, and turning every failure into one line (:class:`CommandFailed`).

While a command runs, its front is the *active* one (:func:`active_front`): the argument types
use it to evaluate expressions, the kernel commands to ask for the host's kernel types.
"""

import argparse
import contextvars
import os
import sys

from ..errors import NoRegister, XenscopeError
from . import HelpShown, UsageError, output


MAX_ERROR = 2000                   # characters of an error line (a 20 MB input line is not echoed)


def one_line(text, limit=MAX_ERROR):
    """``text`` as one printable line: control characters (a newline in a path) escaped, cut at
    ``limit`` characters."""
    out = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text[:limit + 1])
    return out if len(out) <= limit else out[:limit] + "..."


class CommandFailed(Exception):
    """A command failed: ``text`` is the one line a host shows, ``status`` the CLI's exit status."""

    def __init__(self, text, status=2):
        text = one_line(text)
        super().__init__(text)
        self.text, self.status = text, status


class Front:
    """What a host gives the commands. The defaults are the CLI's."""
    prog = "xenscope"                  # usage lines: "xenscope walk: ..."
    error_prefix = "xenscope "         # error lines: "xenscope walk: <message>"
    interrupted_format = "xenscope: interrupted"
    internal_format = ("xenscope internal error in {name}: {error} "
                       "(XENSCOPE_DEBUG=1 in the environment prints the traceback)")
    dump_argument = True               # required targets come from a DUMP argument
    fills = ()                         # options the host fills when the user gives none (dests)
    host_errors = ()                   # the host's own exception classes, shown as "<label>: <text>"
    host_label = ""
    can_fork = True                    # worker processes are safe (not inside a debugger)

    def __init__(self, out=None):
        self.out = out

    @property
    def debug(self):
        """Print the traceback of an internal error (to stderr) before its one line."""
        return bool(os.environ.get("XENSCOPE_DEBUG"))

    def evaluate(self, text):
        """An address argument that is not plain hex (gdb evaluates expressions)."""
        from . import _shown
        raise argparse.ArgumentTypeError(f"not a hex number: {_shown(text)}")

    def session_target(self):
        """A debugger's own target (gdb's inferior, crash's dump); the CLI has none."""
        return None

    def target(self, cmd, args):
        """The target of a command whose target is required: the CLI opens its DUMP argument."""
        if self.dump_argument:
            from ..targets import open_dump
            return open_dump(args.dump)
        return self.session_target()

    def release(self, target):
        """The command is done with ``target``: the CLI closes what it opened; debuggers keep theirs."""
        if self.dump_argument:
            target.close()

    def fill_defaults(self, args, missing, target):
        """Fill the options in ``missing`` (dests of :attr:`fills` the user did not give) from the
        host; return ``{option: where from}`` for those the result should credit."""
        return {}

    def kernel(self, target, args):
        """A :class:`~xenstructs.linux.kernel.Kernel` over the host's own kernel types, or None."""
        return None

    def write(self, text):
        (self.out or sys.stdout).write(text + "\n")    # one write (json.dump's many are slow)

    def flush(self):
        """Push what was written out now (a line of a stream, e.g. ``check --json-lines``)."""
        stream = self.out or sys.stdout
        if hasattr(stream, "flush"):
            stream.flush()


_ACTIVE = contextvars.ContextVar("xenscope_front", default=None)
_CLI = Front()
_UNSET = object()


def active_front():
    """The front of the command that is running (the CLI's outside :func:`execute`)."""
    return _ACTIVE.get() or _CLI


class using:
    """``with using(front):`` makes ``front`` the active one outside a command (a host checking a
    setting with the commands' own argument types, e.g. gdb's ``set xen cr3 $cr3``)."""

    def __init__(self, front):
        self.front = front

    def __enter__(self):
        self.token = _ACTIVE.set(self.front)
        return self.front

    def __exit__(self, *exc):
        _ACTIVE.reset(self.token)
        return False


def execute(cmd, argv, front):
    """Run ``cmd`` (a :class:`~xenstructs.commands.Command`) with ``argv`` on ``front``.

    :returns: the exit status of a successful run (0, or 1 when the command found problems)
    :raises CommandFailed: with the one line to show (usage, input, host or internal errors)
    """
    token = _ACTIVE.set(front)
    try:
        return _execute(cmd, argv, front)
    except HelpShown:
        return 0
    except BrokenPipeError:                 # the reader went away (| head): not an error
        return 0
    except UsageError as e:
        raise CommandFailed(_usage_line(str(e), cmd, front)) from None
    except XenscopeError as e:
        raise CommandFailed(f"{front.error_prefix}{cmd.name}: {e}") from None
    except KeyboardInterrupt:
        raise CommandFailed(front.interrupted_format.format(prefix=front.error_prefix, name=cmd.name),
                            130) from None
    except front.host_errors as e:
        raise CommandFailed(f"{front.error_prefix}{cmd.name}: {front.host_label}: {e}") from None
    except Exception as e:                  # a bug: one line, the traceback only on request
        if front.debug:
            import traceback
            sys.stderr.write(traceback.format_exc())
        error = f"{type(e).__name__}: {e}"
        raise CommandFailed(front.internal_format.format(name=cmd.name, error=error)) from None
    finally:
        _ACTIVE.reset(token)


def _usage_line(text, cmd, front):
    """argparse's lines start with the parser's prog ("xen walk: ..."): the host's error prefix
    instead; a command's own usage messages get the same start."""
    head = f"{front.prog} {cmd.name}"
    if text.startswith(head):
        return front.error_prefix + text[len(front.prog) + 1:]
    return f"{front.error_prefix}{cmd.name}: {text}"


def _execute(cmd, argv, front):
    args, missing = _parse(cmd.parser(f"{front.prog} {cmd.name}", dump=front.dump_argument),
                           argv, front.fills)
    target, release = _target(cmd, args, front)
    try:
        credits = front.fill_defaults(args, missing, target)
        result = _run(cmd, target, args)
        if cmd.host_notes and isinstance(result, dict) and hasattr(target, "info_notes"):
            result["notes"] = target.info_notes()
        credit_defaults(result, credits)
        text = output(cmd, result, args)
        if text is not None:
            front.write(text)
        return cmd.exit_status(result)
    finally:
        if target is not None and release is not None:
            release(target)


def _parse(parser, argv, fills):
    """Parse ``argv``; return ``(args, the dests of fills the user did not give)``."""
    defaults = {a.dest: a.default for a in parser._actions}
    mine = [d for d in fills if d in defaults]
    parser.set_defaults(**{d: _UNSET for d in mine})
    args = parser.parse_args(argv)
    missing = set()
    for d in mine:
        if getattr(args, d) is _UNSET:
            setattr(args, d, defaults[d])
            missing.add(d)
    return args, missing


def _target(cmd, args, front):
    """``(target, how to release it)`` for ``cmd``."""
    if cmd.target == "required":
        return front.target(cmd, args), front.release
    if cmd.target == "optional":
        if getattr(args, "dump", None):
            from ..targets import open_dump
            return open_dump(args.dump), lambda t: t.close()
        try:
            return front.session_target(), None
        except XenscopeError:
            return None, None
    return None, None


def _run(cmd, target, args):
    """The run, in one batch of reads (a QEMU stub enters physical mode once); a missing CR3 on
    a target that knows why (gdbsx) is explained by the target."""
    hint = getattr(target, "missing_hint", None)
    batch = getattr(target, "batch", None)
    with batch() if batch is not None else _nothing():
        try:
            result = cmd.run(target, args)
        except NoRegister as e:
            why = hint() if hint is not None and "CR3" in str(e) else None
            if why:
                raise NoRegister(why) from None
            raise
    if hint is not None and isinstance(result, dict) and "CR3" in result.get("paging_error", ""):
        result["paging_error"] = hint() or result["paging_error"]
    return result


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def credit_defaults(result, given):
    """A host filled options the user did not give (``given``: option -> where from, e.g.
    ``{"cr3": "`set xen cr3`"}``): say so where the result says "--OPTION option"."""
    sources = result.get("sources") if isinstance(result, dict) else None
    if isinstance(sources, dict):
        for k, why in given.items():
            if sources.get(k) == f"--{k} option":
                sources[k] = why
