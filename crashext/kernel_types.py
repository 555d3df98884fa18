"""Kernel types from crash: the kernel commands (tasks, modules, modcheck) take structure offsets
from crash's ``MEMBER_OFFSET``/``STRUCT_SIZE``/``MEMBER_SIZE`` and symbols from crash (already
relocated for KASLR) when neither --vmlinux nor --profile is given. Only adapts."""

from xenstructs.linux.profile import SYMBOLS, Profile, Symbols


def _size_of(C):
    def size_of(name):
        if "." in name:
            return C.member_size(*name.split(".", 1))
        return C.struct_size(name)
    return size_of


def kernel(C, target, args):
    """A Kernel over crash's types (``Front.kernel`` of crash), or None in hypervisor mode (no
    Linux kernel there)."""
    from xenstructs.commands.linux import resolve_args
    from xenstructs.linux.kernel import Kernel
    if getattr(target, "hypervisor", False) or C.struct_size("task_struct") is None:
        return None
    src = f"crash's types of {target.crash['namelist']}"
    profile = Profile.from_callable(C.member_offset, _size_of(C), None, meta={"source": src})
    table = {n: C.symbol(n) for n in SYMBOLS}
    symbols = Symbols({n: v for n, v in table.items() if v is not None}, True, "crash symbols")
    if args.system_map:
        symbols = Symbols.from_file(args.system_map)
    return Kernel(target, profile, symbols, kaslr_offset=args.kaslr_offset, resolve_args=resolve_args(args))
