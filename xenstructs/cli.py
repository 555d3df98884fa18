"""``xenscope SUBCOMMAND [DUMP] [options]``: the command-line front end.

Exit status: 0 success; 2 usage error or unreadable input (one line on stderr, never a traceback);
1 when a check found problems (the command's ``status``, e.g. ``p2m-check``).
"""

import sys

from .commands import COMMANDS, HelpShown, UsageError, output
from .errors import XenscopeError


def _usage():
    lines = ["usage: xenscope SUBCOMMAND [DUMP] [options]   (xenscope SUBCOMMAND --help for details)", "",
             "subcommands:"]
    for c in COMMANDS.values():
        lines.append(f"  {c.name:<10} {c.summary}")
    lines.append(f"  {'check':<10} Run every applicable check on many dumps (DUMP... | DIR); exit 1 findings, 2 unreadable.")
    return "\n".join(lines)


def run(argv, out=sys.stdout):
    """Run one CLI invocation; return the exit status."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage(), file=out)
        return 0 if argv else 2
    name = argv[0]
    if name == "check":             # a batch over several dumps: not a one-dump Command
        from .checkcli import run as check_run
        try:
            return check_run(argv[1:], out=out)
        except KeyboardInterrupt:
            print("xenscope: interrupted", file=sys.stderr)
            return 130
    cmd = COMMANDS.get(name)
    if cmd is None:
        print(f"xenscope: unknown subcommand {name!r}\n{_usage()}", file=sys.stderr)
        return 2
    target = None
    try:
        args = cmd.parser(f"xenscope {cmd.name}", dump=True).parse_args(argv[1:])
        if cmd.needs_target:
            from .targets import open_dump
            target = open_dump(args.dump)
        result = cmd.run(target, args)
        out.write(output(cmd, result, args) + "\n")      # one write (json.dump's many are slow)
        return cmd.exit_status(result)
    except HelpShown:
        return 0
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return 2
    except XenscopeError as e:
        print(f"xenscope {name}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xenscope: interrupted", file=sys.stderr)
        return 130
    finally:
        if target is not None:
            target.close()


def main():
    try:
        sys.exit(run(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()
