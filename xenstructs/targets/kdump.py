"""kdump-compressed dumps (makedumpfile, QEMU ``dump-guest-memory -z/-l/-s``) via libkdumpfile.

Pages are read with libkdumpfile in its machine-physical space (``KDUMP_MACHPHYSADDR``): the
physical memory of a bare-metal or guest dump, machine memory of a Xen host dump. It needs no
address-translation setup, unlike ``KDUMP_KPHYSADDR``. Excluded or absent pages raise
:class:`~xenstructs.errors.NotInDump`.

The flattened form (``makedumpfile -F``, QEMU 7.2's kdump output) is first reassembled into an
unnamed temporary file (in ``$XENSCOPE_TMPDIR`` when set), copying in bounded chunks.

Registers and notes: the ELF notes stored after the sub-header (``offset_note``/``size_note``,
header version ≥ 4) are parsed like an ELF core's, so QEMU CPU notes (CR0/CR3/CR4) and Xen crash
notes are used; otherwise libkdumpfile's ``cpu.N.reg.*`` attributes.
"""

import os
import struct
import tempfile

from ..errors import BadDump, NotInDump, XenscopeError
from ..formats import elf
from ..formats.vmcoreinfo import parse_vmcoreinfo
from ..target import PAGE_SIZE, CpuState, Target
from .elfcore import analyse_notes

KDUMPFILE_FIX = ("apt-get install python3-libkdumpfile (and make sure the venv was created "
                 "with --system-site-packages)")
FLAT_SIGNATURE = b"makedumpfile"
FLAT_HEADER_SIZE = 4096                 # MAX_SIZE_MDF_HEADER
FLAT_END = (-1, -1)
FLAT_MAX_OFFSET = 1 << 50               # 1 PiB: any record beyond this is corrupt
COPY_CHUNK = 1 << 20
MAX_NOTE_BYTES = 64 << 20
MAX_RANGES = 1 << 20
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8     # makedumpfile ran out of space: later pages are missing

# disk_dump_header fields after utsname (x86_64 vs i386: struct timeval is 16 vs 8 bytes).
_HDR_LAYOUT = {64: 424, 32: 412}        # offset of ``status``; block_size, sub_hdr_size follow
# kdump_sub_header: (offset_vmcoreinfo, size_vmcoreinfo, offset_note, size_note) offsets, widths
_SUB_LAYOUT = {64: ((32, 8), (40, 8), (48, 8), (56, 8)), 32: ((20, 8), (28, 4), (32, 8), (40, 4))}


def import_kdumpfile():
    """Import libkdumpfile's binding or raise :class:`XenscopeError` saying how to install it."""
    try:
        import kdumpfile
    except ImportError:
        raise XenscopeError(f"libkdumpfile's Python binding is missing: {KDUMPFILE_FIX}") from None
    return kdumpfile


def reassemble_flattened(path, tmpdir=None):
    """Rebuild the kdump-compressed file held in flattened file ``path``.

    :return: an unnamed temporary file (open, ``w+b``) holding the result.
    :raises BadDump: bad header, negative or absurd record, truncated data, no end marker.
    """
    tmpdir = tmpdir or os.environ.get("XENSCOPE_TMPDIR") or None
    try:
        src = open(path, "rb")
    except OSError as e:
        raise BadDump(f"{path}: cannot open: {e.strerror or e}") from None
    with src:
        total = os.fstat(src.fileno()).st_size
        head = src.read(FLAT_HEADER_SIZE)
        if len(head) < 32:
            raise BadDump(f"{path}: truncated flattened header ({len(head)} bytes)")
        sig = head[:16].split(b"\0", 1)[0]
        ftype, version = struct.unpack(">qq", head[16:32])
        if sig != FLAT_SIGNATURE or ftype != 1:
            raise BadDump(f"{path}: bad flattened header (signature {sig!r}, type {ftype})")
        if len(head) < FLAT_HEADER_SIZE:
            raise BadDump(f"{path}: truncated flattened header ({len(head)} of "
                          f"{FLAT_HEADER_SIZE} bytes)")
        try:
            out = tempfile.TemporaryFile(dir=tmpdir)
        except OSError as e:
            raise BadDump(f"cannot create a temporary file in {tmpdir or tempfile.gettempdir()}: "
                          f"{e.strerror or e} (set XENSCOPE_TMPDIR)") from None
        try:
            pos = FLAT_HEADER_SIZE
            n = 0
            while True:
                rec = src.read(16)
                if len(rec) < 16:
                    raise BadDump(f"{path}: truncated flattened file: record {n} header at "
                                  f"offset {pos} is cut off (no end marker)")
                off, size = struct.unpack(">qq", rec)
                pos += 16
                if (off, size) == FLAT_END:
                    break
                if off < 0 or size < 0 or off + size > FLAT_MAX_OFFSET:
                    raise BadDump(f"{path}: flattened record {n} at offset {pos - 16} is corrupt "
                                  f"(offset {off}, size {size})")
                if size > total - pos:
                    raise BadDump(f"{path}: truncated flattened file: record {n} needs bytes "
                                  f"{pos}..{pos + size}, file has {total}")
                out.seek(off)
                left = size
                while left:
                    chunk = src.read(min(left, COPY_CHUNK))
                    if not chunk:
                        raise BadDump(f"{path}: truncated flattened file in record {n}")
                    out.write(chunk)
                    left -= len(chunk)
                pos += size
                n += 1
            out.flush()
        except OSError as e:
            out.close()
            raise BadDump(f"cannot write the reassembled dump in "
                          f"{tmpdir or tempfile.gettempdir()}: {e.strerror or e} "
                          "(set XENSCOPE_TMPDIR to a larger file system)") from None
        except BaseException:
            out.close()
            raise
    return out


def _pread(fd, off, size):
    try:
        return os.pread(fd, size, off)
    except OSError:
        return b""


def _header_class(head):
    """32 or 64: which ``disk_dump_header`` layout the file uses, or ``None``.

    Not the machine: QEMU 7.2 writes the 64-bit layout (and ELF64 notes) for i386 guests too
    (seen in dumps of Debian's 686-pae kernel), so the layout whose ``block_size`` is a sane power
    of two and whose ``sub_hdr_size`` is positive wins, 64-bit first.
    """
    for cls in (64, 32):
        block_size, sub_hdr_size = struct.unpack_from("<ii", head, _HDR_LAYOUT[cls] + 4)
        if 512 <= block_size <= 1 << 20 and not block_size & (block_size - 1) and sub_hdr_size >= 1:
            return cls
    return None


def header_layout(fd):
    """``(status, block_size, minimum file size)`` from a kdump-compressed header, or ``None``.

    The minimum size covers the header, sub-header and bitmap blocks (``data_offset``).
    """
    head = _pread(fd, 0, 512)
    if len(head) < 464 or head[:8] not in (b"KDUMP   ", b"DISKDUMP"):
        return None
    cls = _header_class(head)
    if cls is None:
        return None
    status, block_size, sub_hdr_size, bitmap_blocks = struct.unpack_from("<Iiii", head, _HDR_LAYOUT[cls])
    if block_size <= 0 or sub_hdr_size < 0 or bitmap_blocks < 0:
        return None
    return status, block_size, (1 + sub_hdr_size + bitmap_blocks) * block_size


def header_machine(fd):
    """``x86_64`` or ``i386`` from the header's ``utsname.machine``, or ``None``."""
    head = _pread(fd, 0, 512)
    if len(head) < 464 or head[:8] not in (b"KDUMP   ", b"DISKDUMP"):
        return None
    m = head[12 + 4 * 65:12 + 5 * 65].split(b"\0", 1)[0]
    return {b"x86_64": "x86_64", b"i386": "i386", b"i486": "i386", b"i586": "i386",
            b"i686": "i386"}.get(m)


def read_header_notes(fd):
    """Raw VMCOREINFO and ELF notes of a kdump-compressed file: ``(elfclass, vmcoreinfo, notes)``.

    Any value may be ``None`` when the header is too old or inconsistent; never raises for bad
    headers (libkdumpfile is the judge of the file as a whole).
    """
    head = _pread(fd, 0, 512)
    if len(head) < 464 or head[:8] not in (b"KDUMP   ", b"DISKDUMP"):
        return None, None, None
    version = struct.unpack_from("<i", head, 8)[0]
    elfclass = _header_class(head)
    if elfclass is None:
        return None, None, None
    status_off = _HDR_LAYOUT[elfclass]
    block_size, sub_hdr_size = struct.unpack_from("<ii", head, status_off + 4)
    if version < 3 or block_size < 512 or block_size > 1 << 20 or block_size & (block_size - 1) \
            or sub_hdr_size < 1:
        return elfclass, None, None
    sub = _pread(fd, block_size, 128)
    lay = _SUB_LAYOUT[elfclass]
    get = [int.from_bytes(sub[o:o + w], "little") if len(sub) >= o + w else 0 for o, w in lay]
    vmci = notes = None
    if get[1] and get[1] <= MAX_NOTE_BYTES:
        vmci = _pread(fd, get[0], get[1])
    if version >= 4 and get[3] and get[3] <= MAX_NOTE_BYTES:
        notes = _pread(fd, get[2], get[3])
    return elfclass, vmci, notes


class KdumpTarget(Target):
    """A kdump-compressed (or flattened) dump read through libkdumpfile."""

    def __init__(self, path):
        super().__init__()
        kdumpfile = import_kdumpfile()
        self._exc = kdumpfile.exceptions
        self.path = path
        self._tmp = None
        self._kd = None
        try:
            with open(path, "rb") as f:
                head = f.read(16)
        except OSError as e:
            raise BadDump(f"{path}: cannot open: {e.strerror or e}") from None
        flattened = head.startswith(FLAT_SIGNATURE)
        try:
            if flattened:
                self._tmp = reassemble_flattened(path)
                open_path = f"/proc/self/fd/{self._tmp.fileno()}"
                fd = self._tmp.fileno()
                head = _pread(fd, 0, 16)
                if not head.startswith((b"KDUMP   ", b"DISKDUMP")):
                    raise BadDump(f"{path}: flattened file does not hold a kdump-compressed dump "
                                  f"(reassembled data starts with {head[:8]!r})")
                self._load(kdumpfile, open_path, fd)
            else:
                with open(path, "rb") as f:
                    self._load(kdumpfile, path, f.fileno())
        except BaseException:
            self.close()
            raise
        self.kind = ("kdump-compressed, flattened (libkdumpfile)" if flattened
                     else "kdump-compressed (libkdumpfile)")
        self.facts["flattened"] = flattened

    def _load(self, kdumpfile, open_path, fd):
        lay = header_layout(fd)
        size = os.fstat(fd).st_size
        if lay is not None and lay[2] > size:
            raise BadDump(f"{self.path}: truncated: the header and bitmaps need {lay[2]} bytes, "
                          f"file has {size}")
        self.facts["incomplete"] = bool(lay and lay[0] & DUMP_DH_COMPRESSED_INCOMPLETE)
        try:
            self._kd = kdumpfile.kdumpfile(open_path)
        except self._exc.KDumpBaseException as e:
            raise BadDump(f"{self.path}: libkdumpfile cannot open it: {e}") from None
        except (OSError, TypeError, ValueError) as e:
            raise BadDump(f"{self.path}: libkdumpfile cannot open it: {e}") from None
        self._space = kdumpfile.KDUMP_MACHPHYSADDR
        self.page_size = self._attr("arch.page_size", PAGE_SIZE)
        self.max_pfn = self._attr("max_pfn", 0)
        arch = self._attr("arch.name")
        machine = {"x86_64": "x86_64", "ia32": "i386", "i386": "i386"}.get(arch, arch)
        if machine not in ("x86_64", "i386"):
            # QEMU's kdump files leave libkdumpfile without an arch: the header's utsname says it
            machine = header_machine(fd) or machine
        xen_type = self._attr("xen.type", 0)

        elfclass, vmci_raw, notes_raw = read_header_notes(fd)
        notes = []
        if notes_raw:
            try:
                notes = list(elf.iter_notes(notes_raw, f"{self.path}: note area"))
            except BadDump:
                notes = []
        cpus, facts = analyse_notes(notes, machine if machine in ("x86_64", "i386") else
                                    "x86_64", elfclass or (64 if machine == "x86_64" else 32)) \
            if notes else ([], {"notes": [], "qemu_notes": False, "xen_notes": False,
                                "vmcoreinfo": None, "xen_crash_info": None})
        if not cpus:
            cpus = self._attr_cpus()
        self._cpus = cpus
        vmci = None
        for key in ("linux.vmcoreinfo.raw", "xen.vmcoreinfo.raw"):
            raw = self._attr(key)
            if raw is not None:
                vmci = parse_vmcoreinfo(bytes(raw))
                break
        if vmci is None:
            vmci = facts.get("vmcoreinfo")
        if vmci is None and vmci_raw:
            vmci = parse_vmcoreinfo(vmci_raw)
        self.facts.update(facts)
        self.facts.update({
            "format": "kdump-compressed", "machine": machine, "elfclass": elfclass,
            "vmcoreinfo": vmci, "xen": bool(xen_type) or facts["xen_notes"],
            "description": self._attr("file.description"), "page_size": self.page_size,
            "max_pfn": self.max_pfn,
        })

    def _attr(self, key, default=None):
        try:
            return self._kd.attr[key]
        except (KeyError, self._exc.KDumpBaseException):
            return default
        except Exception:
            return default

    def _attr_cpus(self):
        cpus = []
        n = self._attr("cpu.number", 0) or 0
        for i in range(min(n, 65536)):
            cpu = CpuState(i)
            regs = self._attr(f"cpu.{i}.reg")
            if regs is not None:
                for name in list(regs.keys()):
                    v = self._attr(f"cpu.{i}.reg.{name}")
                    if isinstance(v, int):
                        cpu.regs[name.lower()] = v
                        cpu.source[name.lower()] = "NT_PRSTATUS"
            for alias, name in (("rip", "eip"), ("rsp", "esp"), ("rflags", "eflags")):
                if alias not in cpu.regs and name in cpu.regs:
                    cpu.regs[alias] = cpu.regs[name]
                    cpu.source[alias] = cpu.source[name]
            cpus.append(cpu)
        return cpus

    # -- Target -------------------------------------------------------------------------------
    def _read_phys(self, addr, size):
        if size == 0:
            return b""
        try:
            return bytes(self._kd.read(self._space, addr, size))
        except self._exc.KDumpBaseException:
            pass
        # Find the first page that is not there, and say why.
        ps = self.page_size
        a = addr
        while a < addr + size:
            n = min(addr + size - a, ps - a % ps)
            try:
                self._kd.read(self._space, a, n)
            except (self._exc.NoDataException, self._exc.AddressTranslationException) as e:
                raise NotInDump(a, what=str(e).lower()) from None
            except self._exc.KDumpBaseException as e:
                raise BadDump(f"{self.path}: cannot read pa {a:#x}: {e}") from None
            a += n
        raise BadDump(f"{self.path}: libkdumpfile failed a read at pa {addr:#x} (+{size}) that "
                      "succeeds page by page")

    def phys_ranges(self):
        """Runs of pages held by the file (libkdumpfile's ``file.pagemap``: excluded pages are not)."""
        pm = self._attr("file.pagemap")
        if pm is None:
            return []
        out, pfn, ps = [], 0, self.page_size
        while len(out) < MAX_RANGES:
            try:
                start = pm.find_set(pfn)
            except self._exc.KDumpBaseException:
                break
            end = pm.find_clear(start)
            if self.max_pfn:
                end = min(end, self.max_pfn)
            if end <= start:
                break
            out.append((start * ps, end * ps))
            pfn = end
        return out

    def close(self):
        self._kd = None
        if self._tmp is not None:
            self._tmp.close()
            self._tmp = None

    def __repr__(self):
        return f"<KdumpTarget {self.path!r} {self.kind}>"
