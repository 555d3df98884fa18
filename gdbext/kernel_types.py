"""Kernel types from gdb: when gdb has a vmlinux (or our mini vmlinux) loaded, the kernel commands
(tasks, modules, modcheck) take structure offsets and symbols from gdb's own types instead of
reading DWARF again. Only adapts: the analysis is xenstructs.linux's."""

import gdb


def _struct(name):
    return gdb.lookup_type(f"struct {name}").strip_typedefs()


def _field(t, name):
    """(offset in bytes, type) of member ``name`` of struct type ``t``, looking inside anonymous
    unions and structs as C does."""
    for f in t.fields():
        if f.name == name:
            return f.bitpos // 8, f.type
        if not f.name and f.type.strip_typedefs().code in (gdb.TYPE_CODE_UNION, gdb.TYPE_CODE_STRUCT):
            inner = _field(f.type.strip_typedefs(), name)
            if inner is not None:
                return f.bitpos // 8 + inner[0], inner[1]
    return None


def offset_of(struct, member):
    found = _field(_struct(struct), member)
    return None if found is None else found[0]


def size_of(name):
    if "." in name:
        struct, member = name.split(".", 1)
        found = _field(_struct(struct), member)
        return None if found is None else found[1].sizeof
    return _struct(name).sizeof


def symbol_of(name):
    sym = gdb.lookup_global_symbol(name) or gdb.lookup_static_symbol(name)
    if sym is None:
        return None
    return int(sym.value().address.cast(gdb.lookup_type("unsigned long long")))


def has_kernel_types():
    try:
        _struct("task_struct")
        return True
    except gdb.error:
        return False


def kernel(target, args):
    """``Front.kernel`` of gdb: a Kernel over gdb's types, or None to let the command ask for
    --vmlinux/--profile."""
    from xenstructs.commands.linux import resolve_args
    from xenstructs.linux.kernel import Kernel
    from xenstructs.linux.profile import Profile, Symbols
    if not has_kernel_types():
        return None
    profile = Profile.from_callable(offset_of, size_of, symbol_of,
                                    meta={"source": f"gdb types of {gdb.current_progspace().filename}"})
    symbols = Symbols.from_file(args.system_map) if args.system_map else None
    return Kernel(target, profile, symbols, kaslr_offset=args.kaslr_offset, resolve_args=resolve_args(args))
