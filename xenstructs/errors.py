"""Exceptions that front ends turn into one clear line (CLI: exit 2; gdb: gdb.GdbError).

Every error a user can provoke with bad input derives from :class:`XenscopeError`; anything else
reaching a front end is a bug and is reported as such.
"""


class XenscopeError(Exception):
    """A problem with the input or the target, explained in one line."""


class BadDump(XenscopeError):
    """The dump file is unreadable: truncated, not a known format, corrupt headers."""


class NotInDump(XenscopeError):
    """The address is not backed by the dump (a hole), which says nothing about the page table."""

    def __init__(self, addr, space="pa", what=""):
        self.addr = addr
        self.space = space
        super().__init__(f"{space} {addr:#x} is not in the dump{(' (' + what + ')') if what else ''}")


class NoRegister(XenscopeError):
    """A register the analysis needs is not known for this target; the message says how to give it."""


class Unsupported(XenscopeError):
    """The target cannot do this (e.g. physical reads over gdbsx)."""


class UsageError(XenscopeError):
    """Wrong or missing arguments: the CLI exits 2, gdb raises a gdb error. The text is the message
    alone; front ends put "xenscope NAME: " (CLI), "xen NAME: " (gdb) or "NAME: " (crash) before it."""
