"""``xen SUBCOMMAND [options]`` inside crash: the same parsers, runs and renderings as the CLI and
gdb (:mod:`xenstructs.commands`); only the target, the defaults and the output stream are crash's.

Defaults taken from crash: ``--cpu`` is the CPU of crash's current context; ``--cr3`` is the
current context's ``mm->pgd`` when it has one (``set PID`` then ``xen walk UVADDR`` walks that
task's tables, as crash's ``vtop`` does), else the CPU's CR3 (QEMU notes), else VMCOREINFO's
kernel root. In hypervisor mode, ``--xen-syms`` defaults to the xen-syms crash was started with.

:func:`invoke` never raises: it returns ``None`` or the one-line error the bridge gives to crash's
``error()``. Set ``XENSCOPE_DEBUG=1`` in the environment to print tracebacks of internal errors.
"""

import contextlib
import os
import sys

_C = None            # the bridge's _crash module
_target = None


def attach(C):
    """Called by the bridge after loading: remember ``_crash``, register the kernel provider."""
    global _C, _target
    from xenstructs import commands
    from . import kernel
    _C, _target = C, None
    commands.kernel.kernel_provider = kernel.provider(C)
    commands.current_target = _get_target            # `xen fault` reads crash's dump


def detach():
    """``extend -u``: drop every reference to the bridge (its code is about to be unmapped)."""
    global _C, _target
    from xenstructs import commands
    commands.kernel.kernel_provider = None
    commands.current_target = None
    _C, _target = None, None


class _CrashOut:
    """sys.stdout/stderr during a command: text goes to crash's ``fp`` (pipes, redirection)."""

    def write(self, text):
        return _C.write(text)

    def flush(self):
        _C.flush()

    def isatty(self):
        return False


def _commands():
    from xenstructs import commands
    return commands


def help_lines():
    """crash's help text for ``xen`` (name, summary, synopsis, description lines)."""
    C = _commands()
    lines = ["xen", "xenscope: Xen page_info, P2M/M2P, page tables, faults and modules on crash's dump",
             "SUBCOMMAND [options]   (xen SUBCOMMAND --help for each one's options)",
             "  Runs xenscope's analyses on what crash has open: every read goes through crash's",
             "  readmem(), symbols and structure offsets are crash's, registers come from the QEMU",
             "  CPU notes. The same subcommands, options and output as xenscope's CLI and gdb's",
             "  `xen` commands; output goes to crash's output stream, so pipes work.",
             "",
             "  Defaults from crash: --cpu is the current context's CPU; --cr3 the current",
             "  context's mm->pgd (use `set PID` first to walk a user task's tables), else the",
             "  CPU's CR3; in hypervisor mode --xen-syms is the xen-syms crash was started with.",
             "", "  Subcommands:"]
    lines += [f"    {c.name:<10} {c.summary}" for c in C.COMMANDS.values()]
    lines += ["", "EXAMPLES",
              "  Walk a kernel address and compare with crash's own vtop:\n",
              "    crash> xen walk ffffffff81000000",
              "    crash> vtop ffffffff81000000\n",
              "  Check every module page in every task's page directory, as JSON:\n",
              "    crash> xen modcheck --json",
              "\n  On a Xen host image (crash --minimal DOM0-VMLINUX DUMP; or hypervisor mode,",
              "  crash XEN-SYMS DUMP, which needs a xen-syms with DWARF):\n",
              "    crash> xen frames --summary --xen-syms xen-syms-4.17-amd64",
              "    crash> xen p2m-check --domain 0 --xen-syms xen-syms-4.17-amd64 | grep mismatch"]
    return lines


def _overview():
    C = _commands()
    out = ["xenscope subcommands (xen NAME --help for details):"]
    out += [f"  xen {c.name:<10} {c.summary}" for c in C.COMMANDS.values()]
    return "\n".join(out)


def _get_target():
    global _target
    if _target is None:
        from .target import CrashTarget
        _target = CrashTarget(_C)
    return _target


def _crash_defaults(args, target, cpu_default):
    """Fill --cpu, --cr3, --xen-syms and --kernel-syms from crash when the user gave none;
    returns ``{option: source text}`` for the ones the result should credit."""
    filled = {}
    dests = vars(args)
    ctx = _C.context() if target is not None else None
    if "cpu" in dests and args.cpu is None:
        known = ctx is not None and ctx["cpu"] < len(target.cpus())
        args.cpu = ctx["cpu"] if known else cpu_default
    if target is None:
        return filled
    if "cr3" in dests and args.cr3 is None and not target.hypervisor:
        cr3, why = target.context_root(_C.member_offset)
        if cr3 is not None:
            args.cr3, filled["cr3"] = cr3, why
    if "xen_syms" in dests and args.xen_syms is None and target.hypervisor:
        args.xen_syms = target.crash["namelist"]
    if "kernel_syms" in dests and args.kernel_syms is None and not target.hypervisor:
        found = {n: _C.symbol(n) for n in ("xen_p2m_addr", "xen_p2m_size", "xen_start_info")}
        syms = _CrashSymbols({n: v for n, v in found.items() if v is not None},
                             f"crash's symbols ({target.crash['namelist']})")
        if syms:                             # a Linux PV kernel (dom0): its P2M list, by crash's symbols
            args.kernel_syms = syms
    return filled


class _CrashSymbols(dict):
    """Kernel symbols looked up in crash, where a command takes a System.map path (the path is
    only ever printed: str() says where they came from)."""

    def __init__(self, table, source):
        super().__init__(table)
        self.source = source

    def __str__(self):
        return self.source


def _run(argv):
    C = _commands()
    if not argv or argv[0] in ("help", "-h", "--help"):
        if len(argv) > 1 and argv[1] in C.COMMANDS:
            argv = [argv[1], "--help"]
        else:
            print(_overview())
            return
    cmd = C.COMMANDS.get(argv[0])
    if cmd is None:
        raise C.UsageError(f"unknown subcommand {argv[0]!r}: see `xen help`")
    p = cmd.parser(f"xen {cmd.name}")
    cpu_default = p.get_default("cpu")
    if any(a.dest == "cpu" for a in p._actions):
        p.set_defaults(cpu=None)             # None: not given, crash's context decides
    args = p.parse_args(argv[1:])
    target = _get_target() if cmd.needs_target else None
    filled = _crash_defaults(args, target, cpu_default)
    with target.batch() if target is not None else contextlib.nullcontext():
        result = cmd.run(target, args)
    C.credit_defaults(result, filled)
    if cmd.name == "info" and isinstance(result, dict) and target is not None:
        result["notes"] = target.info_notes()
    print(C.output(cmd, result, args))


def invoke(argv):
    """Run ``xen ARGV...``; ``None`` on success, else the error text for crash."""
    C = _commands()
    if _C is None:
        return "xenscope is detached from crash (extend it again)"
    name = argv[0] if argv else "xen"
    old = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = _CrashOut()
    try:
        _run(list(argv))
        return None
    except C.HelpShown:
        return None
    except C.UsageError as e:
        msg = str(e)                         # crash prefixes "xen: " itself
        return msg[4:] if msg.startswith("xen ") else msg
    except C.XenscopeError as e:
        return f"{name}: {e}"
    except KeyboardInterrupt:
        return f"{name}: interrupted"
    except BrokenPipeError:
        return None
    except Exception as e:                   # never a traceback into crash's session
        if os.environ.get("XENSCOPE_DEBUG"):
            import traceback
            traceback.print_exc()
        return (f"xenscope internal error in {name}: {type(e).__name__}: {e} "
                "(XENSCOPE_DEBUG=1 in crash's environment prints the traceback)")
    finally:
        try:
            sys.stdout.flush()
        except Exception:                    # noqa: BLE001 - a closed pipe
            pass
        sys.stdout, sys.stderr = old
