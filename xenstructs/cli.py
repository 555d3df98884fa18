"""``xenscope SUBCOMMAND [DUMP] [options]``: the command-line front end.

Exit status: 0 success; 2 usage error or unreadable input (one line on stderr, never a traceback);
1 when a check found problems (the command's ``status``, e.g. ``p2m-check``); 130 interrupted.
Everything but the subcommand listing is :func:`~xenstructs.commands.execute.execute`'s.
"""

import sys

from .commands import COMMANDS
from .commands.execute import CommandFailed, Front, execute


def _usage():
    lines = ["usage: xenscope SUBCOMMAND [DUMP] [options]   (xenscope SUBCOMMAND --help for details)", "",
             "subcommands:"]
    lines += [f"  {c.name:<10} {c.summary}" for c in COMMANDS.values()]
    return "\n".join(lines)


def run(argv, out=sys.stdout):
    """Run one CLI invocation; return the exit status."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage(), file=out)
        return 0 if argv else 2
    cmd = COMMANDS.get(argv[0])
    if cmd is None:
        print(f"xenscope: unknown subcommand {argv[0]!r}\n{_usage()}", file=sys.stderr)
        return 2
    try:
        return execute(cmd, argv[1:], Front(out))
    except CommandFailed as e:
        print(e.text, file=sys.stderr)
        return e.status


def main():
    try:
        sys.exit(run(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()
