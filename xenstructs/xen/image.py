"""Xen's own image (text, rodata, data) as the dump holds it, found without any symbol file.

x86 Xen links its image at ``XEN_VIRT_START`` (4.14+: 0xffff82d040000000, older 0xffff82d080000000)
and runs it from machine address ``xen_phys_start``: for an image address ``va``, the machine address
is ``va - XEN_VIRT_START + xen_phys_start`` (``__pa()`` of an image address, asm/page.h). So the image
is one machine-contiguous block; after boot its ``.init.*`` sections are unmapped (freed) and some
pages of the 1 GiB image area map other frames (the per-CPU stubs near ``XEN_VIRT_END``).

:func:`read_images` finds it either through Xen's page tables (any CPU's CR3: every PV guest's L4
carries Xen's slots, slot 261 included) -- at each XEN_VIRT_START, the ranges whose machine address
follows the first executable range linearly are the image, and they give ``xen_phys_start`` -- or,
with no page tables, physically from a ``xen_phys_start`` the crash note gave. Reads are bounded by
:data:`IMAGE_MAX`. :func:`build_id` finds its ``.note.gnu.build-id``
(``NT_GNU_BUILD_ID``, the same bytes as the xen-syms ELF note: ``__note_gnu_build_id_start``).
"""

import re
from dataclasses import dataclass

from ..errors import NotInDump, XenscopeError
from .release import XEN_VIRT_START_NEW, XEN_VIRT_START_OLD

IMAGE_AREA = 1 << 30           # XEN_VIRT_START .. XEN_VIRT_END: text, data, bss, the per-CPU stubs
IMAGE_MAX = 64 << 20           # a Xen image (text to bss end) is a few MiB: read at most this much
XEN_IMG_OFFSET = 2 << 20       # the image's first byte (``_stext``) sits 2 MiB above XEN_VIRT_START
GNU_BUILD_ID_NOTE = re.compile(rb"\x04\x00\x00\x00([\x08-\x40])\x00\x00\x00\x03\x00\x00\x00GNU\x00", re.S)


@dataclass
class XenImage:
    """Where Xen's image is, and the bytes of it read so far.

    ``origin`` is XEN_VIRT_START (``SYMBOLS_ORIGIN``: symbol offsets count from it), ``phys_start``
    the machine address of ``origin`` (``xen_phys_start``), ``runs`` the image's mapped ranges as
    ``(va_start, va_end, read_only)`` (one range when read physically), ``how`` where it was found.
    ``data``/``va``: the bytes of the ranges :meth:`load` read (``data[i]`` is at ``va + i``, zero
    between ranges); ``mapped``: those ranges."""
    origin: int
    phys_start: int
    runs: list
    how: str
    target: object = None
    va: int = 0
    data: bytes = b""
    mapped: list = None

    def load(self, read_only=True):
        """Read the read-only data ranges (``.rodata``, where the symbol table and the build-id note
        are), or every range when ``read_only`` is False or none is read-only; returns self."""
        runs = [(s, e) for s, e, ro in self.runs if ro or not read_only] or [(s, e) for s, e, _ in self.runs]
        if self.mapped == runs:
            return self
        start, end = runs[0][0], runs[-1][1]
        data = bytearray(end - start)
        for s, e in runs:
            data[s - start:e - start] = self.target.read_phys(s - self.origin + self.phys_start, e - s)
        self.va, self.data, self.mapped = start, bytes(data), runs
        return self

    def holds(self, va, size=1):
        """True when ``[va, va+size)`` lies within one range read."""
        return any(s <= va and va + size <= e for s, e in self.mapped or ())

    def read(self, va, size):
        """The image's bytes at ``va`` (XenscopeError outside what was read)."""
        if not self.holds(va, size):
            raise XenscopeError(f"Xen va {va:#x} (+{size}) is not in the image read from the dump")
        off = va - self.va
        return self.data[off:off + size]


def _mapped_runs(target, paging, origin):
    """``[(va_start, va_end, pa_start, read_only, executable)]``: the physically contiguous mapped runs of
    the image area at ``origin``."""
    from ..paging.mappings import coalesce, enumerate_mappings
    m = enumerate_mappings(target, paging, origin, origin + IMAGE_AREA, max_mappings=IMAGE_AREA >> 12)
    return [(r.va_start, r.va_end, r.pa_start, not r.writable and r.nx, not r.nx) for r in coalesce(m)
            if r.pa_start is not None]


def _from_page_tables(target, paging):
    """The candidate images through the page tables, one per XEN_VIRT_START (4.14+'s first): at each,
    the runs whose machine address is linear with the first executable one (before 4.14 the 1 GiB at
    4.14's XEN_VIRT_START held the read-only compat M2P: never executable)."""
    out = []
    for origin in (XEN_VIRT_START_NEW, XEN_VIRT_START_OLD):
        runs = _mapped_runs(target, paging, origin)
        text = [r for r in runs if r[4]]
        if not text:
            continue
        delta = text[0][2] - text[0][0]
        image = [(s, e, ro) for s, e, pa, ro, _ in runs if pa - s == delta and abs(e - text[0][0]) <= IMAGE_MAX]
        phys = (origin + delta) & ((1 << 64) - 1)
        how = (f"Xen's page tables: the image mapped at {origin:#x} (XEN_VIRT_START) is at machine "
               f"{phys:#x}")
        out.append(XenImage(origin, phys, image, how, target))
    return out


def _from_phys_start(target, phys_start, origin):
    """The image at ``xen_phys_start``: as far as the dump holds it from ``_stext``, 2 MiB at a time."""
    size = 0
    start = phys_start + XEN_IMG_OFFSET
    while size < IMAGE_MAX and target.holds(start + size) is not False:
        try:
            target.read_phys(start + size, 8)
        except NotInDump:
            break
        size += 2 << 20
    if not size:
        return None
    va = origin + XEN_IMG_OFFSET
    return XenImage(origin, phys_start, [(va, va + size, False)],
                    f"machine memory from xen_phys_start {phys_start:#x} (the crash note)", target)


def read_images(target, paging=None, phys_start=None, origin=None):
    """Where Xen's image may be (:class:`XenImage` candidates, nothing read yet): through ``paging``
    (Xen's page tables) when given, else at ``phys_start`` for ``origin`` (XEN_VIRT_START; 4.14+'s
    when None); empty when neither finds one."""
    if paging is not None and paging.mode in ("4level", "5level"):
        try:
            found = _from_page_tables(target, paging)
        except XenscopeError:
            found = []
        if found:
            return found
    if phys_start is not None:
        found = _from_phys_start(target, phys_start, origin or XEN_VIRT_START_NEW)
        return [found] if found is not None else []
    return []


def read_image(target, paging=None, phys_start=None, origin=None):
    """The first of :func:`read_images`, or None."""
    found = read_images(target, paging, phys_start, origin)
    return found[0] if found else None


def _note_at(data, off):
    """The build id of the GNU build-id note at ``data[off:]``, or None."""
    m = GNU_BUILD_ID_NOTE.match(data, off)
    if not m:
        return None
    size = m.group(1)[0]
    return data[m.end():m.end() + size].hex() if len(data) >= m.end() + size else None


def build_id(image, read=None, note_va=None):
    """``(hex build id, va of the note)`` of the image's ``NT_GNU_BUILD_ID`` note, or None.

    ``note_va``: ``__note_gnu_build_id_start`` when a symbol gives it (read there with ``read(va,
    size)``); else the image's read-only data (then all of it) is searched for the note's header
    (namesz 4, type 3, ``GNU``) at 4-byte alignment: one id must be found (several are refused)."""
    if note_va is not None and read is not None:
        try:
            got = _note_at(read(note_va, 16 + 64), 0)
        except XenscopeError:
            got = None
        if got:
            return got, note_va
    for read_only in (True, False):
        image.load(read_only)
        found = {}
        for m in GNU_BUILD_ID_NOTE.finditer(image.data):
            if m.start() % 4 == 0:
                found.setdefault(_note_at(image.data, m.start()), image.va + m.start())
        found.pop(None, None)
        if len(found) == 1:
            return next(iter(found.items()))
        if found:
            return None
    return None


ENDBR64 = b"\xf3\x0f\x1e\xfa"


def _skip_endbr(code):
    return code[4:] if code.startswith(ENDBR64) else code


def returned_constant(read, va):
    """The constant a tiny function at ``va`` returns (``[endbr64] mov $imm32, %eax``), or None;
    ``read(va, size)`` reads Xen's memory."""
    try:
        code = _skip_endbr(read(va, 16))
    except XenscopeError:
        return None
    return int.from_bytes(code[1:5], "little") if code[:1] == b"\xb8" else None


def returned_string(read, va):
    """The string a tiny function at ``va`` returns (``[endbr64] lea disp32(%rip), %rax``), or None."""
    try:
        raw = read(va, 16)
    except XenscopeError:
        return None
    code = _skip_endbr(raw)
    if code[:3] != b"\x48\x8d\x05":
        return None
    after = va + (len(raw) - len(code)) + 7
    target = (after + int.from_bytes(code[3:7], "little", signed=True)) & ((1 << 64) - 1)
    try:
        text = read(target, 64 - (target & 7))
    except XenscopeError:
        return None
    return text.split(b"\0", 1)[0].decode("utf-8", "replace")


def version_from_code(read, symbols):
    """``(version, why)`` from the image's own ``xen_major_version()``, ``xen_minor_version()`` and
    ``xen_extra_version()`` (xen/common/version.c: they return XEN_VERSION, XEN_SUBVERSION and the
    XEN_EXTRAVERSION string, what the ``xen_version`` hypercall answers), or None when the functions are
    not known or not of that shape."""
    where = {n: symbols.get(n) for n in ("xen_major_version", "xen_minor_version", "xen_extra_version")}
    if None in where.values():
        return None
    major = returned_constant(read, where["xen_major_version"])
    minor = returned_constant(read, where["xen_minor_version"])
    extra = returned_string(read, where["xen_extra_version"])
    if major is None or minor is None or not 3 <= major < 100 or not 0 <= minor < 100:
        return None
    extra = extra if extra and extra[0] in ".-+~_" and extra.isprintable() else ""
    return f"{major}.{minor}{extra}", ("the image's own xen_major_version/xen_minor_version/"
                                       "xen_extra_version (what the xen_version hypercall returns)")
