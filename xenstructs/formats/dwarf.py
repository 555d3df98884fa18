"""Opening the DWARF of an ELF file (vmlinux, xen-syms, an object) with pyelftools, once for all readers."""

from contextlib import contextmanager

from ..errors import XenscopeError
from ..inputs import open_regular


@contextmanager
def dwarf_of(path, no_dwarf_hint):
    """Yield ``(elf, dwarf)`` (pyelftools' ELFFile and DWARFInfo) for ``path``.

    A linked image (vmlinux, xen-syms) carries its ``.rela.debug_*`` only because it was linked with
    --emit-relocs: its DWARF already holds final values, and applying them again in Python takes
    minutes on a 600 MB vmlinux, so only objects (ET_REL) are relocated. Every failure, inside the
    ``with`` body too, becomes one :class:`XenscopeError` line; ``no_dwarf_hint`` ends the message
    for a file without ``.debug_info``.
    """
    try:
        from elftools.elf.elffile import ELFFile
    except ImportError:                                              # pragma: no cover
        raise XenscopeError("reading DWARF needs pyelftools: run ./setup.sh") from None
    with open_regular(path) as f:
        try:
            elf = ELFFile(f)
            if not elf.has_dwarf_info() or elf.get_section_by_name(".debug_info") is None:
                raise XenscopeError(f"{path} has no DWARF debug info (.debug_info): {no_dwarf_hint}")
            yield elf, elf.get_dwarf_info(relocate_dwarf_sections=elf["e_type"] == "ET_REL")
        except XenscopeError:
            raise
        except Exception as e:                   # pyelftools raises assorted errors on junk
            raise XenscopeError(f"cannot read the DWARF of {path}: {type(e).__name__}: {e}") from None
