"""Dump-file hosts of :class:`~xenstructs.target.Target`, chosen by :func:`open_dump`."""

from ..errors import BadDump
from ..inputs import open_regular

SNIFF_BYTES = 18                 # magic (16 for makedumpfile's header) and the ELF e_type


def sniff(path):
    """Return the first bytes of ``path``; a missing or unreadable file, or anything but a regular
    file (a FIFO would block, a device read forever: :func:`~xenstructs.inputs.open_regular`), is
    one :class:`BadDump`."""
    with open_regular(path, error=BadDump) as f:
        try:
            return f.read(SNIFF_BYTES)
        except OSError as e:
            raise BadDump(f"{path}: cannot read: {e.strerror or e}") from None


def looks_like_dump(path):
    """True when ``path`` starts like a dump this package reads (an ELF core, kdump-compressed,
    makedumpfile's flattened form): used to pick dumps out of a directory."""
    try:
        head = sniff(path)
    except BadDump:
        return False
    if head.startswith(b"\x7fELF"):
        return len(head) >= 18 and int.from_bytes(head[16:18], "little" if head[5] == 1 else "big") == 4
    return head.startswith((b"KDUMP   ", b"DISKDUMP", b"makedumpfile"))


def open_dump(path):
    """Open a dump file and return its :class:`~xenstructs.target.Target`.

    ``/proc/kcore`` → :class:`~.kcore.KcoreTarget` (the running kernel, read-only); ELF cores (``\\x7fELF``) → :class:`~.elfcore.ElfCoreTarget`, except ``xl dump-core`` files
    (ELF without program headers, with Xen dumpcore sections) → :class:`~.xccore.XcCoreTarget`;
    kdump-compressed (``KDUMP   ``/``DISKDUMP``) and makedumpfile's flattened form
    (``makedumpfile``) → :class:`~.kdump.KdumpTarget`. The pre-ELF xc_core format of Xen 3.0
    raises :class:`~xenstructs.errors.Unsupported`; anything else raises :class:`BadDump`.
    """
    from .kcore import is_kcore
    if is_kcore(path):
        from .kcore import KcoreTarget
        return KcoreTarget(path)
    head = sniff(path)
    if not head:
        raise BadDump(f"{path}: empty file")
    if head.startswith(b"\x7fELF"):
        from .xccore import XcCoreTarget, is_xc_core
        if is_xc_core(path):
            return XcCoreTarget(path)
        from .elfcore import ElfCoreTarget
        return ElfCoreTarget(path)
    if head.startswith((b"KDUMP   ", b"DISKDUMP", b"makedumpfile")):
        from .kdump import KdumpTarget
        return KdumpTarget(path)
    from .xccore import pre_elf_magic, refuse_pre_elf
    if pre_elf_magic(head):
        refuse_pre_elf(path, head)
    if len(head) < 4:
        raise BadDump(f"{path}: too short to be a dump ({len(head)} bytes: {head!r})")
    raise BadDump(f"{path}: not a known dump format (starts with {head[:8]!r}; expected ELF, "
                  "KDUMP, DISKDUMP or makedumpfile)")
