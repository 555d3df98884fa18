"""kdump-compressed dumps (makedumpfile, QEMU ``dump-guest-memory -z/-l/-s``) via libkdumpfile.

Pages are read with libkdumpfile in its machine-physical space (``KDUMP_MACHPHYSADDR``): the
physical memory of a bare-metal or guest dump, machine memory of a Xen host dump. It needs no
address-translation setup, unlike ``KDUMP_KPHYSADDR``. Excluded or absent pages raise
:class:`~xenstructs.errors.NotInDump`.

Before libkdumpfile sees the file, :func:`~.kdump_validate.validate_kdump` checks every field it
trusts (header, sub-header, note area, bitmaps, every page descriptor) against the file's size:
libkdumpfile crashes the process on a file that lies (docs/libkdumpfile-crashes.md).

The flattened form (``makedumpfile -F``, QEMU 7.2's kdump output) is first reassembled into an
unnamed temporary file (in ``$XENSCOPE_TMPDIR`` when set), copying in bounded chunks and reading
record headers in bulk; empty records, offsets and the reassembled size are bounded.

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
from ..inputs import open_regular
from ..target import PAGE_SIZE, CpuState, Target
from .elfcore import analyse_notes
from .kdump_validate import validate_kdump

UTS_MACHINES = {"x86_64": "x86_64", "i386": "i386", "i486": "i386", "i586": "i386", "i686": "i386"}

KDUMPFILE_FIX = ("apt-get install python3-libkdumpfile (and make sure the venv was created "
                 "with --system-site-packages)")
FLAT_SIGNATURE = b"makedumpfile"
FLAT_HEADER_SIZE = 4096                 # MAX_SIZE_MDF_HEADER
FLAT_END = (-1, -1)
FLAT_MAX_OFFSET = 1 << 50               # 1 PiB: any record beyond this is corrupt
FLAT_MAX_EMPTY = 1 << 12                # records of size 0 (makedumpfile writes none)
FLAT_SLACK = 64 << 20                   # holes the reassembled file may have beyond the flattened size
COPY_CHUNK = 1 << 20
MAX_RANGES = 1 << 20
_RECORD = struct.Struct(">qq")


def import_kdumpfile():
    """Import libkdumpfile's binding or raise :class:`XenscopeError` saying how to install it."""
    try:
        import kdumpfile
    except ImportError:
        raise XenscopeError(f"libkdumpfile's Python binding is missing: {KDUMPFILE_FIX}") from None
    return kdumpfile


def _temporary(tmpdir):
    try:
        return tempfile.TemporaryFile(dir=tmpdir)
    except OSError as e:
        raise BadDump(f"cannot create a temporary file in {tmpdir or tempfile.gettempdir()}: "
                      f"{e.strerror or e} (set XENSCOPE_TMPDIR)") from None


def _flat_header(path, src):
    head = src.read(FLAT_HEADER_SIZE)
    if len(head) < 32:
        raise BadDump(f"{path}: truncated flattened header ({len(head)} bytes)")
    sig = head[:16].split(b"\0", 1)[0]
    ftype, _version = struct.unpack(">qq", head[16:32])
    if sig != FLAT_SIGNATURE or ftype != 1:
        raise BadDump(f"{path}: bad flattened header (signature {sig!r}, type {ftype})")
    if len(head) < FLAT_HEADER_SIZE:
        raise BadDump(f"{path}: truncated flattened header ({len(head)} of "
                      f"{FLAT_HEADER_SIZE} bytes)")


class _FlatRecords:
    """The records of a flattened file, read in :data:`COPY_CHUNK` pieces (many small records per
    read); each record's data is copied to ``out`` at its offset. Bounded: records of size 0 (at
    most :data:`FLAT_MAX_EMPTY`), offsets (:data:`FLAT_MAX_OFFSET`) and the reassembled extent
    (the flattened size plus :data:`FLAT_SLACK`)."""

    def __init__(self, path, src, out):
        self.path, self.src, self.out = path, src, out
        self.total = os.fstat(src.fileno()).st_size
        self.buf, self.at, self.pos = b"", 0, FLAT_HEADER_SIZE
        self.records = self.empty = self.extent = 0

    def _take(self, n):
        """Up to ``n`` bytes from the stream (fewer only at its end)."""
        if self.at + n > len(self.buf):
            self.buf = self.buf[self.at:] + self.src.read(max(COPY_CHUNK, n))
            self.at = 0
        piece = self.buf[self.at:self.at + n]
        self.at += len(piece)
        self.pos += len(piece)
        return piece

    def copy_all(self):
        while True:
            rec = self._take(16)
            if len(rec) < 16:
                raise BadDump(f"{self.path}: truncated flattened file: record {self.records} "
                              f"header at offset {self.pos - len(rec)} is cut off (no end marker)")
            off, size = _RECORD.unpack(rec)
            if (off, size) == FLAT_END:
                return
            self._check(off, size)
            self._copy(off, size)
            self.records += 1

    def _check(self, off, size):
        n, where = self.records, self.pos - 16
        if off < 0 or size < 0 or off + size > FLAT_MAX_OFFSET:
            raise BadDump(f"{self.path}: flattened record {n} at offset {where} is corrupt "
                          f"(offset {off}, size {size})")
        if size > self.total - self.pos:
            raise BadDump(f"{self.path}: truncated flattened file: record {n} needs bytes "
                          f"{self.pos}..{self.pos + size}, file has {self.total}")
        if size == 0:
            self.empty += 1
            if self.empty > FLAT_MAX_EMPTY:
                raise BadDump(f"{self.path}: corrupt flattened file: more than {FLAT_MAX_EMPTY} "
                              f"empty records (record {n} at offset {where})")
        self.extent = max(self.extent, off + size)
        if self.extent > self.total + FLAT_SLACK:
            raise BadDump(f"{self.path}: corrupt flattened file: record {n} at offset {where} "
                          f"reaches byte {off + size} of the dump, far beyond the "
                          f"{self.total}-byte flattened file")

    def _copy(self, off, size):
        self.out.seek(off)
        while size:
            chunk = self._take(min(size, COPY_CHUNK))
            if not chunk:
                raise BadDump(f"{self.path}: truncated flattened file in record {self.records}")
            self.out.write(chunk)
            size -= len(chunk)


def reassemble_flattened(path, tmpdir=None):
    """Rebuild the kdump-compressed file held in flattened file ``path``.

    :return: an unnamed temporary file (open, ``w+b``) holding the result.
    :raises BadDump: bad header, negative or absurd record, too many empty records, a record far
        beyond the file's size, truncated data, no end marker.
    """
    tmpdir = tmpdir or os.environ.get("XENSCOPE_TMPDIR") or None
    with open_regular(path, error=BadDump) as src:
        _flat_header(path, src)
        out = _temporary(tmpdir)
        try:
            _FlatRecords(path, src, out).copy_all()
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
    except (OSError, OverflowError, ValueError):
        return b""


def _note_machine(notes, machine):
    """The layout of the NT_PRSTATUS notes: QEMU writes i386 ones for a CPU not in long mode (a
    real-mode or 32-bit guest) even when the header says x86_64; their size tells."""
    for name, ntype, desc in notes:
        if name == "CORE" and ntype == elf.NT_PRSTATUS:
            if len(desc) == elf.PrStatus32.sizeof():
                return "i386"
            if len(desc) == elf.PrStatus64.sizeof():
                return "x86_64"
    return machine


class KdumpTarget(Target):
    """A kdump-compressed (or flattened) dump read through libkdumpfile, once
    :func:`~.kdump_validate.validate_kdump` has accepted it."""

    fixed = True             # a file: its memory never changes (a live view sets live)

    def __init__(self, path):
        super().__init__()
        kdumpfile = import_kdumpfile()
        self._exc = kdumpfile.exceptions
        self.path = path
        self._tmp = None
        self._kd = None
        self._pfn_limit = None
        with open_regular(path, error=BadDump) as f:
            head = f.read(16)
        flattened = head.startswith(FLAT_SIGNATURE)
        try:
            if flattened:
                self._tmp = reassemble_flattened(path)
                fd = self._tmp.fileno()
                head = _pread(fd, 0, 16)
                if not head.startswith((b"KDUMP   ", b"DISKDUMP")):
                    raise BadDump(f"{path}: flattened file does not hold a kdump-compressed dump "
                                  f"(reassembled data starts with {head[:8]!r})")
                self._load(kdumpfile, f"/proc/self/fd/{fd}", fd)
            else:
                with open_regular(path, error=BadDump) as f:
                    self._load(kdumpfile, path, f.fileno())
        except BaseException:
            self.close()
            raise
        self.kind = ("kdump-compressed, flattened (libkdumpfile)" if flattened
                     else "kdump-compressed (libkdumpfile)")
        self.facts["flattened"] = flattened

    def _load(self, kdumpfile, open_path, fd):
        lay = validate_kdump(fd, self.path)
        self._pfn_limit = lay.pfn_limit
        self.facts["incomplete"] = lay.incomplete
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
            machine = UTS_MACHINES.get(lay.machine, machine)
        self._read_notes(fd, lay, machine)
        self.facts.update({
            "format": "kdump-compressed", "machine": machine, "elfclass": lay.bits,
            "xen": bool(self._attr("xen.type", 0)) or self.facts["xen_notes"],
            "description": self._attr("file.description"), "page_size": self.page_size,
            "max_pfn": self.max_pfn,
        })

    def _read_notes(self, fd, lay, machine):
        """CPUs and facts from the validated note area (else libkdumpfile's ``cpu.N.reg``), and
        VMCOREINFO from libkdumpfile, the notes, or the version-3 area, first found."""
        notes = []
        if lay.notes:
            try:
                notes = list(elf.iter_notes(_pread(fd, *lay.notes), f"{self.path}: note area"))
            except BadDump:
                notes = []
        note_machine = _note_machine(notes, machine if machine in ("x86_64", "i386") else "x86_64")
        if notes:
            cpus, facts = analyse_notes(notes, note_machine, lay.bits)
        else:
            cpus, facts = [], {"notes": [], "qemu_notes": False, "xen_notes": False,
                               "vmcoreinfo": None, "xen_crash_info": None}
        self._cpus = cpus or self._attr_cpus()
        vmci = None
        for key in ("linux.vmcoreinfo.raw", "xen.vmcoreinfo.raw"):
            raw = self._attr(key)
            if raw is not None:
                vmci = parse_vmcoreinfo(bytes(raw))
                break
        if vmci is None:
            vmci = facts.get("vmcoreinfo")
        if vmci is None and lay.vmcoreinfo:
            vmci = parse_vmcoreinfo(_pread(fd, *lay.vmcoreinfo))
        self.facts.update(facts)
        self.facts["vmcoreinfo"] = vmci

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
        if self._pfn_limit is not None and addr + size > self._pfn_limit * self.page_size:
            cut = self._pfn_limit * self.page_size
            if addr < cut:
                self._read_phys(addr, cut - addr)          # a hole before the cut is named first
            raise NotInDump(max(addr, cut), what="its data is missing: the dump is flagged "
                            "incomplete (makedumpfile ran out of space)")
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
            for limit in (self.max_pfn, self._pfn_limit):
                if limit:
                    end = min(end, limit)
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
