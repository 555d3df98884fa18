"""The kernel's own types from the dump: its BTF blob (``CONFIG_DEBUG_INFO_BTF``), decoded.

The kernel links its BTF into its image between ``__start_BTF`` and ``__stop_BTF`` (section
``.BTF``, read-only data, so it is in every dump that holds the kernel). :class:`Btf` decodes a
blob (format: :mod:`xenstructs.formats.btf`): one pass over the type section finds where each
type id starts; the structs asked for are then found by name and their members resolved the way
C does it: members of anonymous structs and unions are members of the enclosing struct, a member's
type goes through typedef/const/volatile/restrict/type-tag, arrays have ``nelems`` elements.

:func:`profile_from_btf` gives a :class:`~.profile.Profile` with the same keys
:meth:`~.profile.Profile.from_dwarf` reads from a vmlinux's DWARF.
"""

import numpy as np

from ..errors import XenscopeError
from ..formats.btf import (BTF_MAGIC, EXTRA_TABLE, KIND, KIND_NAMES, MODIFIERS, BtfArray, BtfHeader,
                           BtfMember)

MAX_BTF_BYTES = 256 << 20
MAX_DEPTH = 32                   # typedef chains and anonymous nesting deeper than this are corrupt
STRUCTS = (KIND["STRUCT"], KIND["UNION"])
SIZED = (KIND["INT"], KIND["ENUM"], KIND["STRUCT"], KIND["UNION"], KIND["FLOAT"], KIND["ENUM64"])


class BtfError(XenscopeError):
    """A BTF blob that cannot be decoded."""


class Btf:
    """A decoded BTF blob; ``pointer_size`` is the target's (BTF does not record it).

    >>> b = Btf(blob)                                           # doctest: +SKIP
    >>> b.member_offset("task_struct", "pid")                   # doctest: +SKIP
    2456

    :raises BtfError: bad magic or version, sections outside the blob, a type of unknown kind
    """

    def __init__(self, blob, pointer_size=8):
        self.pointer_size = pointer_size
        if len(blob) < BtfHeader.sizeof():
            raise BtfError(f"BTF blob of {len(blob)} bytes is shorter than its header")
        h = BtfHeader.parse(blob)
        if h.magic != BTF_MAGIC:
            raise BtfError(f"BTF magic {h.magic:#06x} is not {BTF_MAGIC:#06x}")
        if h.version != 1 or h.hdr_len < BtfHeader.sizeof():
            raise BtfError(f"BTF version {h.version}, header length {h.hdr_len}: not BTF version 1")
        base = h.hdr_len
        for name, off, n in (("type", h.type_off, h.type_len), ("string", h.str_off, h.str_len)):
            if base + off + n > len(blob):
                raise BtfError(f"BTF {name} section ({off:#x}+{n:#x}) runs past the blob ({len(blob):#x} bytes)")
        if h.type_len % 4 or (base + h.type_off) % 4:
            raise BtfError("BTF type section is not made of 32-bit words")
        self.header = h
        self.strings = bytes(blob[base + h.str_off:base + h.str_off + h.str_len])
        self.words = np.frombuffer(blob, dtype="<u4", count=h.type_len // 4, offset=base + h.type_off)
        self.raw = bytes(blob[base + h.type_off:base + h.type_off + h.type_len])
        self._scan()

    def _scan(self):
        """Where each type id starts (in words); its kind, vlen, name offset and size/type."""
        w = self.words.tolist()
        n = len(w)
        starts = [0]                                 # id 0: void
        i = 0
        while i + 3 <= n:
            info = w[i + 1]
            kind = (info >> 24) & 0x1F
            fixed, per = EXTRA_TABLE[kind]
            if fixed is None:
                raise BtfError(f"BTF type {len(starts)} has unknown kind {kind}: cannot parse past it")
            starts.append(i)
            i += 3 + fixed + per * (info & 0xFFFF)
        if i != n:
            raise BtfError(f"BTF type section ends inside type {len(starts)}")
        self.starts = np.array(starts, dtype=np.int64)
        idx = self.starts[1:]
        info = self.words[idx + 1]
        self.name_offs = np.concatenate(([0], self.words[idx]))
        self.kinds = np.concatenate(([0], (info >> 24) & 0x1F)).astype(np.int8)
        self.vlens = np.concatenate(([0], info & 0xFFFF)).astype(np.int64)
        self.kind_flags = np.concatenate(([0], info >> 31)).astype(np.int8)
        self.size_or_type = np.concatenate(([0], self.words[idx + 2])).astype(np.int64)

    def __len__(self):
        return len(self.starts) - 1

    # -- names and types ----------------------------------------------------------------------
    def string(self, off):
        if not 0 <= off < len(self.strings):
            raise BtfError(f"BTF string offset {off:#x} outside the string section")
        end = self.strings.find(b"\0", off)
        return self.strings[off:end if end >= 0 else None].decode("utf-8", "replace")

    def name(self, tid):
        return self.string(int(self.name_offs[tid]))

    def kind(self, tid):
        return KIND_NAMES.get(int(self.kinds[tid]), "VOID" if tid == 0 else "?")

    def _check(self, tid):
        if not 0 < tid < len(self.starts):
            raise BtfError(f"BTF type id {tid} out of range (1..{len(self)})")

    def find(self, name, kinds=STRUCTS):
        """Id of the first type named ``name`` of one of ``kinds`` (a definition, not a forward
        declaration), or None."""
        key = b"\0" + name.encode() + b"\0"
        pos = self.strings.find(key)
        if pos < 0:
            return None
        off = pos + 1
        hits = np.nonzero((self.name_offs == off) & np.isin(self.kinds, kinds))[0]
        return int(hits[0]) if len(hits) else None

    def strip(self, tid):
        """Through typedef/const/volatile/restrict/type tags to the real type (0: void)."""
        for _ in range(MAX_DEPTH):
            if tid == 0 or int(self.kinds[tid]) not in MODIFIERS:
                return tid
            tid = int(self.size_or_type[tid])
            if tid:
                self._check(tid)
        raise BtfError(f"BTF type chain deeper than {MAX_DEPTH} at id {tid}")

    def array(self, tid):
        """``(element type id, nelems)`` of the ARRAY ``tid``."""
        self._check(tid)
        base = self._data(tid)
        a = BtfArray.parse(self.raw[base:base + 12])
        return a.type, a.nelems

    def _data(self, tid):
        """Byte offset, in the type section, of ``tid``'s kind-specific data."""
        return (int(self.starts[tid]) + 3) * 4

    def size(self, tid, depth=0):
        """``sizeof`` the type ``tid`` (None for void, functions and forward declarations)."""
        tid = self.strip(tid)
        if tid == 0 or depth > MAX_DEPTH:
            return None
        k = int(self.kinds[tid])
        if k in SIZED:
            return int(self.size_or_type[tid])
        if k == KIND["PTR"]:
            return self.pointer_size
        if k == KIND["ARRAY"]:
            el, n = self.array(tid)
            es = self.size(el, depth + 1)
            return None if es is None else es * n
        return None

    def members(self, tid):
        """``[(name, type id, bit offset, bitfield size)]`` of the STRUCT/UNION ``tid``."""
        self._check(tid)
        if int(self.kinds[tid]) not in STRUCTS:
            raise BtfError(f"BTF type {tid} ({self.kind(tid)}) is not a struct or union")
        flag = bool(self.kind_flags[tid])
        base = self._data(tid)
        out = []
        for i in range(int(self.vlens[tid])):
            m = BtfMember.parse(self.raw[base + 12 * i:base + 12 * i + 12])
            bits, off = (m.offset >> 24, m.offset & 0xFFFFFF) if flag else (0, m.offset)
            out.append((self.string(m.name_off), m.type, off, bits))
        return out

    def find_member(self, tid, name, depth=0):
        """``(bit offset, member type id)`` of member ``name`` of the struct/union ``tid``,
        looking into anonymous struct/union members as C does; None when absent."""
        if depth > MAX_DEPTH:
            raise BtfError(f"BTF anonymous members nested deeper than {MAX_DEPTH}")
        for mname, mtype, off, _ in self.members(tid):
            if mname == name:
                return off, mtype
            if not mname:
                inner = self.strip(mtype)
                if inner and int(self.kinds[inner]) in STRUCTS:
                    hit = self.find_member(inner, name, depth + 1)
                    if hit is not None:
                        return off + hit[0], hit[1]
        return None

    def member_path(self, tid, path):
        """``(byte offset, member type id)`` of ``"a.b.c"`` in the struct ``tid``, or None."""
        off, cur, mtype = 0, tid, None
        for part in path.split("."):
            cur = self.strip(cur)
            if not cur or int(self.kinds[cur]) not in STRUCTS:
                return None
            hit = self.find_member(cur, part)
            if hit is None:
                return None
            off += hit[0]
            cur = mtype = hit[1]
        return off // 8, mtype

    def member_offset(self, struct, path):
        """Byte offset of ``path`` in ``struct`` (by name), or None."""
        tid = self.find(struct)
        r = self.member_path(tid, path) if tid is not None else None
        return None if r is None else r[0]


# ---------------------------------------------------------------------------------------------
# A Profile from BTF
# ---------------------------------------------------------------------------------------------

def struct_info(btf, name, members, member_sizes):
    """``(offsets, sizes)`` of struct ``name`` as :func:`~.profile._struct_info` gives them from DWARF:
    each member's offset, the struct's size, array counts, and the sizes in ``member_sizes``."""
    tid = btf.find(name, (KIND["STRUCT"],))
    if tid is None:
        return None, None
    offsets, sizes = {}, {name: int(btf.size_or_type[tid])}
    for m in members:
        r = btf.member_path(tid, m)
        if r is None:
            continue
        off, mtype = r
        key = f"{name}.{m}"
        offsets[key] = off
        real = btf.strip(mtype)
        if real and int(btf.kinds[real]) == KIND["ARRAY"]:
            sizes[f"{key}.count"] = btf.array(real)[1]
        if key in member_sizes:
            sz = btf.size(mtype)
            if sz is not None:
                sizes[key] = sz
    return offsets, sizes


def profile_from_btf(btf, meta=None):
    """A :class:`~.profile.Profile` (offsets and sizes; no symbols) from ``btf``.

    :raises XenscopeError: when the BTF lacks ``task_struct``, ``mm_struct`` or ``module``
    """
    from .profile import MEMBER_SIZES, REQUIRED_STRUCTS, WANTED, Profile
    offsets, sizes, found = {}, {}, set()
    for name, members in WANTED.items():
        o, s = struct_info(btf, name, members, MEMBER_SIZES)
        if o is None:
            continue
        offsets.update(o)
        sizes.update(s)
        found.add(name)
    missing = [s for s in REQUIRED_STRUCTS if s not in found]
    if missing:
        raise XenscopeError(f"the kernel's BTF has no struct {', '.join(missing)}")
    if "module.mem" in offsets and "module_memory" in sizes and "module.mem.count" not in sizes:
        raise XenscopeError("the kernel's BTF gives struct module.mem without its length")
    m = {"source": "BTF"}
    m.update(meta or {})
    return Profile(offsets, sizes, {}, m)


def read_btf(mem, start, stop):
    """The BTF blob between ``__start_BTF`` and ``__stop_BTF`` read through ``mem``, decoded."""
    if not start or stop <= start or stop - start > MAX_BTF_BYTES:
        raise BtfError(f"__start_BTF {start:#x} / __stop_BTF {stop:#x} do not delimit a BTF blob")
    return Btf(mem.read(start, stop - start), mem.ptr_size)


# magic 0xeB9F, version 1, flags 0, hdr_len 24, type_off 0: how every vmlinux BTF blob starts
BTF_START = b"\x9f\xeb\x01\x00\x18\x00\x00\x00\x00\x00\x00\x00"


def find_btf(mem, runs=None):
    """``(start, stop)`` of the first BTF blob in the kernel image read through ``mem`` (a header
    whose string section follows its type section), or None. For kernels whose kallsyms do not
    list ``__start_BTF`` (``CONFIG_KALLSYMS_ALL`` off)."""
    from .kallsyms_shape import _chunks, _mapped_runs
    for va, data in _chunks(mem, _mapped_runs(mem) if runs is None else runs):
        pos = data.find(BTF_START)
        while pos >= 0:
            if pos + 24 <= len(data):
                h = BtfHeader.parse(data[pos:pos + 24])
                if h.str_off == h.type_len and 0 < h.type_len + h.str_len <= MAX_BTF_BYTES:
                    return va + pos, va + pos + 24 + h.str_off + h.str_len
            pos = data.find(BTF_START, pos + 1)
    return None
