"""Opening the DWARF of an ELF file (vmlinux, xen-syms, an object) with pyelftools, once for all readers."""

from contextlib import contextmanager
import struct
import zlib

from ..errors import XenscopeError
from ..inputs import open_regular

MAX_DEBUG_SECTION = 2 << 30      # bytes one compressed DWARF section may expand to
SHF_COMPRESSED = 0x800


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
            check_compressed(f, elf, path)
            yield elf, elf.get_dwarf_info(relocate_dwarf_sections=elf["e_type"] == "ET_REL")
        except XenscopeError:
            raise
        except Exception as e:                   # pyelftools raises assorted errors on junk
            raise XenscopeError(f"cannot read the DWARF of {path}: {type(e).__name__}: {e}") from None


def _zlib_start(f, sec, elfclass):
    """``(claimed size, offset of the zlib stream)`` of a compressed section, or None."""
    off = sec["sh_offset"]
    f.seek(off)
    if sec.name.startswith(".zdebug"):                 # GNU: "ZLIB" + big-endian size
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"ZLIB":
            return None
        return struct.unpack(">Q", head[4:])[0], off + 12
    head = f.read(24 if elfclass == 64 else 12)        # gABI Elf_Chdr: type, (reserved), size, align
    if elfclass == 64 and len(head) == 24:
        ch_type, _, size, _ = struct.unpack("<IIQQ", head)
    elif elfclass == 32 and len(head) == 12:
        ch_type, size, _ = struct.unpack("<III", head)
    else:
        return None
    return (size, off + len(head)) if ch_type == 1 else None


def check_compressed(f, elf, path):
    """Refuse compressed DWARF sections that would expand past :data:`MAX_DEBUG_SECTION` (or past
    their own header's claim): each is inflated here in bounded steps, its output counted and
    dropped, before pyelftools inflates it whole."""
    for sec in elf.iter_sections():
        if not sec.name.startswith((".debug", ".zdebug")):
            continue
        if not (sec.name.startswith(".zdebug") or sec["sh_flags"] & SHF_COMPRESSED):
            continue
        start = _zlib_start(f, sec, elf.elfclass)
        if start is None:
            continue                                   # pyelftools refuses what it cannot read
        claimed, at = start
        limit = min(claimed, MAX_DEBUG_SECTION)
        if claimed > MAX_DEBUG_SECTION:
            raise XenscopeError(f"{path}: {sec.name} claims {claimed} bytes uncompressed (limit {MAX_DEBUG_SECTION})")
        inflate, total, left = zlib.decompressobj(), 0, sec["sh_size"] - (at - sec["sh_offset"])
        f.seek(at)
        while left > 0 and total <= limit:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
            while chunk and total <= limit:
                total += len(inflate.decompress(chunk, 1 << 22))
                chunk = inflate.unconsumed_tail
        if total > limit:
            raise XenscopeError(f"{path}: {sec.name} inflates to more than the {claimed} bytes its header "
                                "claims: refused")
