"""A loaded module's own symbols: ``module->kallsyms`` (``struct mod_kallsyms``), as the kernel's
``module_get_kallsym()`` reads them for ``/proc/kallsyms``.

``symtab`` is an array of ``num_symtab`` ELF symbols (``Elf64_Sym``: ``st_name`` u32 at 0,
``st_value`` u64 at 8, 24 bytes; ``Elf32_Sym``: ``st_value`` u32 at 4, 16 bytes), ``strtab`` their
names, ``typetab`` one ``nm`` type letter per symbol. Symbols with an empty name are not listed
(``/proc/kallsyms`` skips them too).
"""

import numpy as np

from ..errors import XenscopeError

MAX_MODULE_SYMBOLS = 1 << 20
MAX_STRTAB = 16 << 20


def module_symbols(kernel, mod):
    """``[(address, type, name)]`` of the module at ``mod`` (``struct module *``).

    :raises XenscopeError: when the profile lacks ``module.kallsyms``/``mod_kallsyms`` offsets or
        the tables are unreadable or absurd
    """
    k = kernel
    ks = k.read_ptr(mod + k.profile.offset("module.kallsyms"))
    if not ks:
        return []
    num = k.read_u32(ks + k.profile.offset("mod_kallsyms.num_symtab"))
    if num > MAX_MODULE_SYMBOLS:
        raise XenscopeError(f"module at {mod:#x}: {num} symbols is absurd")
    if num == 0:
        return []
    symtab = k.read_ptr(ks + k.profile.offset("mod_kallsyms.symtab"))
    strtab = k.read_ptr(ks + k.profile.offset("mod_kallsyms.strtab"))
    types = k.read(k.read_ptr(ks + k.profile.offset("mod_kallsyms.typetab")), num)
    if k.ptr_size == 8:
        dt = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"),
                       ("value", "<u8"), ("size", "<u8")])
    else:
        dt = np.dtype([("name", "<u4"), ("value", "<u4"), ("size", "<u4"), ("info", "u1"),
                       ("other", "u1"), ("shndx", "<u2")])
    syms = np.frombuffer(k.read(symtab, num * dt.itemsize), dtype=dt)
    end = int(syms["name"].max()) + 1
    if end > MAX_STRTAB:
        raise XenscopeError(f"module at {mod:#x}: string table of {end:#x} bytes is absurd")
    strings = k.read(strtab, end + 256)
    out = []
    for off, value, letter in zip(syms["name"].tolist(), syms["value"].tolist(), types):
        name = strings[off:strings.find(b"\0", off)].decode("utf-8", "replace") if off else ""
        if name:
            out.append((value, chr(letter), name))
    return out
