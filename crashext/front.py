"""``xen SUBCOMMAND [options]`` inside crash: the same declarations and the same
:func:`~xenstructs.commands.execute.execute` as the CLI and gdb; :class:`CrashFront` says only what
is crash's: the target, the defaults, kernel types, the error lines and the output stream.

Defaults taken from crash: ``--cpu`` is the CPU of crash's current context; ``--cr3`` is the
current context's ``mm->pgd`` when it has one (``set PID`` then ``xen walk UVADDR`` walks that
task's tables, as crash's ``vtop`` does), else the CPU's CR3 (QEMU notes), else VMCOREINFO's
kernel root. In hypervisor mode, ``--xen-syms`` defaults to the xen-syms crash was started with.

:func:`invoke` never raises: it returns ``None`` or the one-line error the bridge gives to crash's
``error()``. Set ``XENSCOPE_DEBUG=1`` in the environment to print tracebacks of internal errors.
"""

import sys

_C = None            # the bridge's _crash module
_target = None


def attach(C):
    """Called by the bridge after loading: remember ``_crash``."""
    global _C, _target
    _C, _target = C, None


def detach():
    """``extend -u``: drop every reference to the bridge (its code is about to be unmapped)."""
    global _C, _target
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
    lines += [f"    {c.name:<10} {c.summary}" for c in C.debugger_commands().values()]
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
    out += [f"  xen {c.name:<10} {c.summary}" for c in C.debugger_commands().values()]
    return "\n".join(out)


def _get_target():
    global _target
    if _target is None:
        from .target import CrashTarget
        _target = CrashTarget(_C)
    return _target


def _crash_defaults(args, missing, target):
    """Fill --cpu, --cr3, --xen-syms and --kernel-syms from crash when the user gave none
    (``missing``); returns ``{option: source text}`` for the ones the result should credit."""
    filled = {}
    ctx = _C.context() if target is not None else None
    if "cpu" in missing and ctx is not None and ctx["cpu"] < len(target.cpus()):
        args.cpu = ctx["cpu"]
    if target is None:
        return filled
    # p2m-check without --domain checks every PV domain by its shared_info: crash's symbols and
    # context (one kernel's) only say where a named domain's list is
    named = getattr(args, "domain", 0) is not None
    # walk/maps/vtop --domain D: a translated guest's walk starts at its vCPU's saved CR3, not crash's
    guest = getattr(args, "guest_domain", None) is not None
    if "cr3" in missing and args.cr3 is None and not target.hypervisor and named and not guest:
        cr3, why = target.context_root(_C.member_offset)
        if cr3 is not None:
            args.cr3, filled["cr3"] = cr3, why
    if "xen_syms" in missing and args.xen_syms is None and target.hypervisor:
        args.xen_syms = target.crash["namelist"]
    if "kernel_syms" in missing and args.kernel_syms is None and not target.hypervisor and named:
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


def _front():
    from xenstructs.commands.execute import Front

    class CrashFront(Front):
        prog, error_prefix = "xen", ""               # crash prints "xen: " before an error itself
        interrupted_format = "{name}: interrupted"
        internal_format = ("xenscope internal error in {name}: {error} "
                           "(XENSCOPE_DEBUG=1 in crash's environment prints the traceback)")
        dump_argument, can_fork = False, False
        fills = ("cpu", "cr3", "xen_syms", "kernel_syms")

        def session_target(self):
            return _get_target()

        def fill_defaults(self, args, missing, target):
            return _crash_defaults(args, missing, target)

        def kernel(self, target, args):
            from .kernel_types import kernel
            return kernel(_C, target, args)

        def write(self, text):
            print(text)
    return CrashFront()


def _run(argv):
    from xenstructs.commands.execute import execute
    C = _commands()
    if not argv or argv[0] in ("help", "-h", "--help"):
        if len(argv) > 1 and argv[1] in C.debugger_commands():
            argv = [argv[1], "--help"]
        else:
            print(_overview())
            return
    cmd = C.debugger_commands().get(argv[0])
    if cmd is None:
        raise C.UsageError(f"unknown subcommand {argv[0]!r}: see `xen help`")
    execute(cmd, argv[1:], _front())


def invoke(argv):
    """Run ``xen ARGV...``; ``None`` on success, else the error text for crash."""
    from xenstructs.commands.execute import CommandFailed
    if _C is None:
        return "xenscope is detached from crash (extend it again)"
    old = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = _CrashOut()
    try:
        _run(list(argv))
        return None
    except CommandFailed as e:
        return e.text
    except Exception as e:                   # never a traceback into crash's session
        return str(e) or type(e).__name__
    finally:
        try:
            sys.stdout.flush()
        except Exception:                    # noqa: BLE001 - a closed pipe
            pass
        sys.stdout, sys.stderr = old
