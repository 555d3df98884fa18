"""The kernel's printk buffer in a dump: what ``dmesg`` would print, as the console printed it.

Three formats, chosen by what VMCOREINFO (``kernel/printk/printk.c`` ``log_buf_vmcoreinfo_setup``)
describes; every offset comes from it (a dump without VMCOREINFO, such as an xl dump-core file: from
the kernel's BTF in the dump, else :data:`PRB_X86_64`, Debian 6.1's DWARF):

* **printk_ringbuffer** (Linux 5.10+, ``kernel/printk/printk_ringbuffer.[ch]``): ``SYMBOL(prb)`` is
  the pointer to a ``struct printk_ringbuffer``: a descriptor ring (``count_bits``, ``descs``,
  ``infos``, ``head_id``, ``tail_id``) and a text data ring (``size_bits``, ``data``, ``head_lpos``,
  ``tail_lpos``). Every id from ``tail_id`` to ``head_id`` names descriptor ``id & (count - 1)``; its
  ``state_var`` holds the id (low bits) and the state (top two bits: 0 reserved, 1 committed,
  2 finalized, 3 reusable): committed and finalized records with a matching id are read. The text
  block ``[begin, next)`` starts with the descriptor's id (an ``unsigned long``); a block that would
  pass the array's end is stored whole at index 0 (``get_data``: ``begin`` one wrap behind
  ``next``); the text is its first ``info.text_len`` bytes. ``printk_info`` holds ``seq``, ``ts_nsec``,
  ``text_len``; the level is the top three bits of the byte after ``facility``
  (``u16 text_len; u8 facility; u8 flags:5, level:3; u32 caller_id``: used when ``caller_id`` is
  where that layout puts it).
* **log_buf** (3.5 - 5.9): ``SYMBOL(log_buf)`` is the pointer to the buffer, ``log_buf_len``,
  ``log_first_idx``, ``log_next_idx`` (u32s); records ``struct printk_log`` (``struct log`` before
  3.11: ``ts_nsec``, ``len``, ``text_len``, ``dict_len``, then ``facility``, ``flags:5, level:3``) each
  followed by its text; a ``len`` of 0 sends the reader back to index 0.
* **log_buf, unstructured** (before 3.5): the characters ``[log_end - logged_chars, log_end)`` of a
  ring of ``log_buf_len`` bytes, as printed (``<N>`` levels included).

A record's text may hold several lines: the console prints each with the record's prefix
``[%5lu.%06lu] `` (``print_time``, ``CONFIG_PRINTK_TIME``), which :func:`console_lines` reproduces.
"""

import struct
from dataclasses import dataclass, field
from typing import List, Optional

from ..errors import NotInDump, XenscopeError

MAX_DESC_BITS = 24                 # 16 M descriptors: far beyond log_buf_len's 2 GiB / 32 bytes a record
MAX_DATA_BITS = 31                 # LOG_BUF_LEN_MAX
MAX_READ = 512 << 20               # bytes read for one buffer, at most
STATES = {0: "reserved", 1: "committed", 2: "finalized", 3: "reusable"}
FAILED_LPOS = 1                    # a data-less block (the initial tail descriptor has it)

# struct offsets of 5.18+ on x86_64 (Debian 6.1.0's DWARF), for dumps with neither VMCOREINFO nor BTF.
# 5.10-5.17 differ: prb_desc_ring has no last_finalized_id (added in 5.18 by "printk: ringbuffer: Improve
# prb_next_seq() performance"), so text_data_ring is at 40 (Debian 5.10's BTF, a real xl dump-core)
PRB_X86_64 = {
    "long": 8, "printk_ringbuffer.desc_ring": 0, "printk_ringbuffer.text_data_ring": 48,
    "prb_desc_ring.count_bits": 0, "prb_desc_ring.descs": 8, "prb_desc_ring.infos": 16,
    "prb_desc_ring.head_id": 24, "prb_desc_ring.tail_id": 32,
    "prb_desc": 24, "prb_desc.state_var": 0, "prb_desc.text_blk_lpos": 8,
    "prb_data_blk_lpos.begin": 0, "prb_data_blk_lpos.next": 8,
    "printk_info": 88, "printk_info.seq": 0, "printk_info.ts_nsec": 8, "printk_info.text_len": 16,
    "printk_info.caller_id": 20,
    "prb_data_ring.size_bits": 0, "prb_data_ring.data": 8, "prb_data_ring.head_lpos": 16,
    "prb_data_ring.tail_lpos": 24,
}
PRB_KEYS = tuple(k for k in PRB_X86_64 if k != "long")
# the members of each struct PRB_KEYS names, as the kernel's BTF is asked for them
PRB_STRUCTS = {}
for _key in PRB_KEYS:
    if "." in _key:
        PRB_STRUCTS.setdefault(_key.split(".")[0], []).append(_key.split(".", 1)[1])
LOG_KEYS = ("ts_nsec", "len", "text_len", "dict_len")


@dataclass
class Record:
    """One printk record: ``seq`` (None when the format has none), ``ts_nsec``, ``level`` (0-7, None
    when not known), ``text`` (may hold several lines)."""
    seq: Optional[int]
    ts_nsec: Optional[int]
    level: Optional[int]
    text: str

    def as_dict(self):
        return {"seq": self.seq, "ts_nsec": self.ts_nsec, "level": self.level, "text": self.text}


@dataclass
class PrintkLog:
    """The records of a dump's printk buffer, oldest first, and how they were found.

    ``kind``: ``printk_ringbuffer``, ``log_buf`` or ``log_buf (unstructured)``; ``where``: one line
    (the buffer's address and size); ``sources``: where the symbols and offsets came from;
    ``skipped``: records passed over, by reason; ``raw``: the unstructured buffer's text; ``notes``:
    what else the reader met (a broken record chain)."""
    kind: str
    where: str
    records: List[Record] = field(default_factory=list)
    sources: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    raw: Optional[str] = None
    notes: List[str] = field(default_factory=list)

    def lines(self):
        """The buffer as the console printed it: :func:`console_lines`, or the raw text's lines."""
        if self.raw is not None:
            return self.raw.splitlines()
        return console_lines(self.records)

    def describe(self):
        out = f"Linux's printk buffer ({self.kind}) {self.where}: {len(self.records)} record(s)"
        seqs = [r.seq for r in self.records if r.seq is not None]
        if seqs:
            out += f", seq {seqs[0]}-{seqs[-1]}"
            missing = seqs[-1] - seqs[0] + 1 - len(seqs)
            out += f", {missing} missing in between" if missing else ""
        if self.skipped:
            out += "; passed over: " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        return "; ".join([out] + self.notes)

    def as_dict(self):
        return {"kind": self.kind, "where": self.where, "sources": dict(self.sources),
                "skipped": dict(self.skipped), "notes": list(self.notes), "records": [r.as_dict() for r in self.records],
                "description": self.describe()}


def console_lines(records):
    """Each record's lines as the console prints them: ``[%5lu.%06lu] `` then the line."""
    out = []
    for rec in records:
        prefix = "" if rec.ts_nsec is None else \
            f"[{rec.ts_nsec // 1000000000:5d}.{rec.ts_nsec % 1000000000 // 1000:06d}] "
        out += [prefix + line for line in rec.text.split("\n")]
    return out


# ---------------------------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------------------------

def prb_layout(vmcoreinfo):
    """The printk_ringbuffer offsets VMCOREINFO gives (``{"long": size, "S.m": offset, "S": size}``),
    or None when it does not describe one."""
    if vmcoreinfo is None or vmcoreinfo.symbol("prb") is None:
        return None
    out = {"long": vmcoreinfo.size("atomic_long_t")}
    for key in PRB_KEYS:
        value = vmcoreinfo.offset(*key.split(".")) if "." in key else vmcoreinfo.size(key)
        if value is None:
            raise XenscopeError(f"VMCOREINFO has SYMBOL(prb) but no {'OFFSET' if '.' in key else 'SIZE'}({key})")
        out[key] = value
    if out["long"] is None:
        out["long"] = 8 if out["prb_desc"] >= 24 else 4     # state_var + two unsigned longs
    _check_prb_layout(out)
    return out


def prb_layout_of_btf(btf, long_size=8):
    """The printk_ringbuffer offsets from the kernel's own BTF (``{"long": size, "S.m": offset, "S":
    size}``, as :func:`prb_layout`): the truth for a dump without VMCOREINFO.

    :raises XenscopeError: a struct or member the BTF does not have
    """
    from .btf import struct_info
    out = {"long": long_size}
    for name, members in PRB_STRUCTS.items():
        offsets, sizes = struct_info(btf, name, members, ())
        if offsets is None:
            raise XenscopeError(f"the kernel's BTF has no struct {name}")
        out.update(offsets)
        out[name] = sizes[name]
    missing = [k for k in PRB_KEYS if k not in out]
    if missing:
        raise XenscopeError(f"the kernel's BTF lacks {', '.join(missing)}")
    _check_prb_layout(out)
    return out


def _check_prb_layout(layout):
    """Refuse offsets no kernel has (each member inside its struct): VMCOREINFO is input too."""
    long = layout["long"]
    fields = {"prb_desc": (("state_var", long), ("text_blk_lpos", 2 * long)),
              "printk_info": (("seq", 8), ("ts_nsec", 8), ("text_len", 2), ("caller_id", 4))}
    for name, members in fields.items():
        size = layout[name]
        for member, width in members:
            if not 0 <= layout[f"{name}.{member}"] <= size - width:
                raise XenscopeError(f"VMCOREINFO: OFFSET({name}.{member}) {layout[f'{name}.{member}']} does not fit "
                                    f"SIZE({name}) {size}")
    for key in PRB_KEYS:
        if not 0 <= layout[key] < 4096:
            raise XenscopeError(f"VMCOREINFO: {key} = {layout[key]} is no printk structure's")
    if layout["prb_data_blk_lpos.begin"] > long or layout["prb_data_blk_lpos.next"] > long:
        raise XenscopeError("VMCOREINFO: prb_data_blk_lpos offsets are no unsigned long pair's")


def log_layout(vmcoreinfo):
    """``(struct name, {"size": n, member: offset})`` of the 3.5-5.9 record header, or None."""
    for name in ("printk_log", "log"):
        size = vmcoreinfo.size(name) if vmcoreinfo is not None else None
        if size is not None:
            out = {"size": size}
            for member, width in zip(LOG_KEYS, (8, 2, 2, 2)):
                out[member] = vmcoreinfo.offset(name, member)
                if out[member] is None:
                    raise XenscopeError(f"VMCOREINFO has SIZE({name}) but no OFFSET({name}.{member})")
                if not 0 <= out[member] <= size - width or size > 4096:
                    raise XenscopeError(f"VMCOREINFO: OFFSET({name}.{member}) {out[member]} does not fit "
                                        f"SIZE({name}) {size}")
            return name, out
    return None


# ---------------------------------------------------------------------------------------------
# printk_ringbuffer (5.10+)
# ---------------------------------------------------------------------------------------------

class _Reader:
    """Kernel memory through ``memory.read(va, size)``, with the kernel's ``unsigned long``."""

    def __init__(self, memory, long_size):
        if long_size not in (4, 8):
            raise XenscopeError(f"printk buffer: an unsigned long of {long_size} bytes?")
        self.memory, self.long = memory, long_size
        self.fmt = "<Q" if long_size == 8 else "<I"

    def read(self, va, size, what):
        if size > MAX_READ:
            raise XenscopeError(f"printk buffer: {what} would be {size} bytes: a corrupt image?")
        try:
            return self.memory.read(va, size)
        except NotInDump as e:
            raise XenscopeError(f"printk buffer: {what} at {va:#x} is not in the dump ({e})") from None

    def word(self, va, what):
        return struct.unpack(self.fmt, self.read(va, self.long, what))[0]

    def u32(self, va, what):
        return struct.unpack("<I", self.read(va, 4, what))[0]


def _data_block(data, size_bits, begin, next_lpos, long_size):
    """``(offset of the block's id in data, data size)`` as ``get_data`` finds it, or None."""
    size = 1 << size_bits
    if begin & 1 and next_lpos & 1:
        return None                                  # data-less (or failed) block
    if begin >> size_bits == next_lpos >> size_bits and begin < next_lpos:
        start, length = begin & (size - 1), next_lpos - begin
    elif (begin + size) >> size_bits == next_lpos >> size_bits:
        start, length = 0, next_lpos & (size - 1)    # wrapped: stored whole at index 0
    else:
        return None
    if begin % long_size or next_lpos % long_size or length < long_size or start + length > len(data):
        return None
    return start, length - long_size


def _ring(reader, base, layout):
    """The descriptor ring's and text ring's fields of the printk_ringbuffer at ``base``."""
    desc = base + layout["printk_ringbuffer.desc_ring"]
    text = base + layout["printk_ringbuffer.text_data_ring"]
    ring = {"count_bits": reader.u32(desc + layout["prb_desc_ring.count_bits"], "count_bits"),
            "descs": reader.word(desc + layout["prb_desc_ring.descs"], "descs"),
            "infos": reader.word(desc + layout["prb_desc_ring.infos"], "infos"),
            "head_id": reader.word(desc + layout["prb_desc_ring.head_id"], "head_id"),
            "tail_id": reader.word(desc + layout["prb_desc_ring.tail_id"], "tail_id"),
            "size_bits": reader.u32(text + layout["prb_data_ring.size_bits"], "size_bits"),
            "data": reader.word(text + layout["prb_data_ring.data"], "data")}
    if not 0 < ring["count_bits"] <= MAX_DESC_BITS or not 0 < ring["size_bits"] <= MAX_DATA_BITS:
        raise XenscopeError(f"printk buffer: count_bits {ring['count_bits']} / size_bits {ring['size_bits']} "
                            f"read from the dump are no ring's: a corrupt image or wrong symbols?")
    id_mask = (1 << (8 * reader.long - 2)) - 1
    span = (ring["head_id"] - ring["tail_id"]) & id_mask
    if span >= 1 << ring["count_bits"]:
        raise XenscopeError(f"printk buffer: head_id {ring['head_id']:#x} - tail_id {ring['tail_id']:#x} is more "
                            f"than the {1 << ring['count_bits']} descriptors: a corrupt image?")
    ring["span"], ring["id_mask"] = span, id_mask
    return ring


def _record(info, layout, text):
    """A :class:`Record` from one ``printk_info`` (bytes) and its text."""
    seq = struct.unpack_from("<Q", info, layout["printk_info.seq"])[0]
    ts = struct.unpack_from("<Q", info, layout["printk_info.ts_nsec"])[0]
    level = None
    text_len = layout["printk_info.text_len"]
    if layout["printk_info.caller_id"] == text_len + 4:     # u16 text_len, u8 facility, u8 flags:5 level:3
        # (caller_id fits SIZE(printk_info): _check_prb_layout)
        level = info[text_len + 3] >> 5
    return Record(seq, ts, level, text.decode("utf-8", "replace"))


def read_ringbuffer(memory, prb_pointer, layout):
    """:class:`PrintkLog` of the printk_ringbuffer the pointer at ``prb_pointer`` points to."""
    reader = _Reader(memory, layout["long"])
    base = reader.word(prb_pointer, "prb")
    ring = _ring(reader, base, layout)
    count = 1 << ring["count_bits"]
    desc_size, info_size = layout["prb_desc"], layout["printk_info"]
    descs = reader.read(ring["descs"], count * desc_size, "the descriptor array")
    infos = reader.read(ring["infos"], count * info_size, "the printk_info array")
    data = reader.read(ring["data"], 1 << ring["size_bits"], "the text data ring")
    word = struct.Struct(reader.fmt)
    lpos = layout["prb_desc.text_blk_lpos"]
    shift = 8 * reader.long - 2
    log = PrintkLog("printk_ringbuffer", f"at {base:#x} ({count} descriptors, {len(data)} bytes of text)")
    for step in range(ring["span"] + 1):
        rid = (ring["tail_id"] + step) & ring["id_mask"]
        index = rid & (count - 1)
        at = index * desc_size
        state_var = word.unpack_from(descs, at + layout["prb_desc.state_var"])[0]
        begin = word.unpack_from(descs, at + lpos + layout["prb_data_blk_lpos.begin"])[0]
        next_lpos = word.unpack_from(descs, at + lpos + layout["prb_data_blk_lpos.next"])[0]
        state = STATES[state_var >> shift & 3]
        if state_var & ring["id_mask"] != rid:
            state = "overwritten descriptor"
        if state == "reusable" and begin == next_lpos == FAILED_LPOS:
            continue                                 # the initial tail (DESC0_SV): no record
        if state not in ("committed", "finalized"):
            log.skipped[state] = log.skipped.get(state, 0) + 1
            continue
        info = infos[index * info_size:(index + 1) * info_size]
        text_len = struct.unpack_from("<H", info, layout["printk_info.text_len"])[0]
        block = _data_block(data, ring["size_bits"], begin, next_lpos, reader.long)
        if block is None and begin & 1 and next_lpos & 1:
            log.records.append(_record(info, layout, b""))          # a data-less record
            continue
        if block is None or word.unpack_from(data, block[0])[0] != rid or block[1] < text_len:
            log.skipped["text overwritten"] = log.skipped.get("text overwritten", 0) + 1
            continue
        start = block[0] + reader.long
        log.records.append(_record(info, layout, data[start:start + text_len]))
    log.records.sort(key=lambda r: r.seq)
    return log


# ---------------------------------------------------------------------------------------------
# log_buf (3.5 - 5.9) and the unstructured log_buf before it
# ---------------------------------------------------------------------------------------------

def read_log_buf(memory, symbols, header, long_size=8):
    """:class:`PrintkLog` of the 3.5-5.9 ``log_buf``; ``header`` is :func:`log_layout`'s result."""
    name, fields = header
    reader = _Reader(memory, long_size)
    buf = reader.word(symbols["log_buf"], "log_buf")
    length = reader.u32(symbols["log_buf_len"], "log_buf_len")
    first = reader.u32(symbols["log_first_idx"], "log_first_idx")
    end = reader.u32(symbols["log_next_idx"], "log_next_idx")
    if not 0 < length <= 1 << MAX_DATA_BITS or first >= length or end >= length:
        raise XenscopeError(f"printk buffer: log_buf_len {length:#x}, log_first_idx {first:#x}, log_next_idx "
                            f"{end:#x} read from the dump are no buffer's: a corrupt image?")
    data = reader.read(buf, length, "log_buf")
    log = PrintkLog("log_buf", f"at {buf:#x} ({length} bytes, records struct {name})")
    size, idx, seen = fields["size"], first, set()
    for _ in range(length // max(size, 1) + 2):
        if idx == end:
            return log
        if idx + size > length or idx in seen:
            break
        seen.add(idx)
        rec_len = struct.unpack_from("<H", data, idx + fields["len"])[0]
        if rec_len == 0:                                 # the end of the buffer: wrap to 0
            idx = 0
            continue
        text_len = struct.unpack_from("<H", data, idx + fields["text_len"])[0]
        if rec_len < size + text_len or idx + rec_len > length:
            break
        ts = struct.unpack_from("<Q", data, idx + fields["ts_nsec"])[0]
        level = data[idx + fields["dict_len"] + 3] >> 5 \
            if fields["text_len"] + 2 == fields["dict_len"] and fields["dict_len"] + 4 <= size else None
        text = data[idx + size:idx + size + text_len].decode("utf-8", "replace")
        log.records.append(Record(None, ts, level, text))
        idx += rec_len
    how = "comes back to" if idx in seen else "breaks at"
    problem = f"the record chain of log_buf {how} index {idx:#x} without reaching log_next_idx {end:#x}"
    if not log.records:
        raise XenscopeError(f"printk buffer: {problem}: a corrupt image?")
    log.notes.append(problem + ": the records after it are not read")
    return log


def read_old_log_buf(memory, symbols, long_size=8):
    """:class:`PrintkLog` of the unstructured ``log_buf`` of kernels before 3.5 (its raw text)."""
    reader = _Reader(memory, long_size)
    buf = reader.word(symbols["log_buf"], "log_buf")
    length = reader.u32(symbols["log_buf_len"], "log_buf_len")
    end = reader.u32(symbols["log_end"], "log_end")
    logged = reader.u32(symbols["logged_chars"], "logged_chars") if "logged_chars" in symbols else length
    if not 0 < length <= 1 << MAX_DATA_BITS or length & (length - 1):
        raise XenscopeError(f"printk buffer: log_buf_len {length:#x} read from the dump is no buffer's")
    data = reader.read(buf, length, "log_buf")
    held = min(logged, length, end)
    start = (end - held) & (length - 1)
    text = (data[start:] + data[:start])[:held] if start + held > length else data[start:start + held]
    log = PrintkLog("log_buf (unstructured)", f"at {buf:#x} ({length} bytes)", raw=text.decode("utf-8", "replace"))
    return log


# ---------------------------------------------------------------------------------------------
# Kernel memory, and which buffer
# ---------------------------------------------------------------------------------------------

class KernelMemory:
    """Kernel virtual memory of a dump through one set of page tables (``paging``); ``source`` says
    which. Reads a page at a time; translations are cached."""

    def __init__(self, target, paging, source):
        self.target, self.paging, self.source = target, paging, source
        self._pages = {}

    def translate(self, va):
        from ..paging import walk
        base = self._pages.get(va >> 12)
        if base is None:
            found = walk(self.target, self.paging, va & ~0xFFF)
            if found.pa is None:
                raise XenscopeError(f"kernel va {va:#x} does not translate: {found.describe_stop()}")
            base = self._pages[va >> 12] = found.pa
        return base + (va & 0xFFF)

    def read(self, va, size):
        out = bytearray()
        while size > 0:
            n = min(size, 4096 - (va & 0xFFF))
            out += self.target.read_phys(self.translate(va), n)
            va, size = va + n, size - n
        return bytes(out)


def kernel_memory(target, probe, cpu=0):
    """The :class:`KernelMemory` of the first address space that maps ``probe`` (a kernel symbol's
    address): CPU ``cpu``'s CR3 (its task may run on a PTI user page directory, which maps no kernel
    data), then VMCOREINFO's kernel page directory (``init_top_pgt`` / ``swapper_pg_dir``)."""
    from ..context import _kernel_root, resolve
    from ..paging import walk
    tried = []
    spaces = []
    try:
        ctx = resolve(target, cpu=cpu)
        spaces.append((ctx.paging, f"CR3 {ctx.cr3:#x} ({ctx.sources.get('cr3')})"))
    except XenscopeError as e:
        tried.append(str(e))
    root, why = _kernel_root(target, target.facts.get("machine"))
    if root is not None:
        try:
            ctx = resolve(target, cpu=cpu, cr3=root)
            spaces.append((ctx.paging, f"CR3 {root:#x} ({why})"))
        except XenscopeError as e:
            tried.append(str(e))
    for paging, source in spaces:
        found = walk(target, paging, probe)
        if found.pa is not None:
            return KernelMemory(target, paging, source)
        tried.append(f"{source}: {found.describe_stop()}")
    raise XenscopeError(f"the kernel's address {probe:#x} translates in no address space of the dump ("
                        + "; ".join(tried) + ")")


def long_size_of(target, vmcoreinfo=None):
    """The kernel's ``unsigned long``: VMCOREINFO SIZE(long), else the dump's machine."""
    if vmcoreinfo is not None and vmcoreinfo.size("long"):
        return vmcoreinfo.size("long")
    return 4 if target.facts.get("machine") == "i386" else 8


def printk_of_target(target, symbols=None, cpu=0):
    """:func:`read_printk` of a Linux dump (VMCOREINFO, else ``symbols``, else the dump's own kallsyms),
    read through the first address space that maps the buffer's symbol; the offsets of a dump without
    VMCOREINFO from the kernel's BTF in the dump when it has one. The log's ``sources`` say which."""
    vi = target.facts.get("vmcoreinfo")
    known, given_source = dict(symbols or {}), "the symbols given"
    if vi is None and not known:
        known, given_source = _dump_symbols(target)
    known.update(_vmcoreinfo_symbols(vi))
    probe = next((known[n] for n in ("prb", "log_buf") if n in known), None)
    if probe is None and vi is None and not symbols:
        raise XenscopeError("no printk buffer found: the dump has no VMCOREINFO, no symbols were given and its own "
                            "kallsyms tables were not found (give the kernel's System.map or kallsyms)")
    if probe is None:
        return read_printk(None, vi, known)              # raises: says what is missing
    memory = kernel_memory(target, probe, cpu)
    long_size = long_size_of(target, vi)
    layout = None
    if prb_layout(vi) is None and "prb" in known:
        layout = _btf_layout(target, long_size)
    log = read_printk(memory, vi, known, long_size, layout, given_source)
    log.sources["memory"] = memory.source
    return log


def _dump_symbols(target):
    """(the printk symbols of the dump's own kallsyms, their source), or ({}, None) without them."""
    from .profile import Symbols
    try:
        table = Symbols.from_dump(target)
    except XenscopeError:
        return {}, None
    return printk_symbols(table), "the dump's kallsyms"


def printk_symbols(table):
    """``{name: address}`` of the printk buffer's :data:`SYMBOLS` in a :class:`~.profile.Symbols`."""
    return {name: table.get(name) for name in SYMBOLS if name in table}


def _btf_layout(target, long_size):
    """``(layout, source)`` from the kernel's BTF in the dump, or ``(None, why not)``."""
    from .fromdump import btf_of
    try:
        return prb_layout_of_btf(btf_of(target), long_size), "the kernel's BTF in the dump"
    except XenscopeError as e:
        return None, str(e)


SYMBOLS = ("prb", "log_buf", "log_buf_len", "log_first_idx", "log_next_idx", "log_end", "logged_chars")


def _vmcoreinfo_symbols(vmcoreinfo):
    """The printk symbols VMCOREINFO names, each looked up by name (a VMCOREINFO read through crash
    lists only the keys asked for so far)."""
    if vmcoreinfo is None:
        return {}
    found = {name: vmcoreinfo.symbol(name) for name in SYMBOLS}
    return {name: va for name, va in found.items() if va is not None}


def read_printk(memory, vmcoreinfo=None, symbols=None, long_size=8, btf_layout=None,
                symbols_source="the symbols given"):
    """The dump's printk buffer, in whichever format VMCOREINFO (else ``symbols`` with ``layout``)
    describes.

    :param memory: kernel virtual memory: ``read(va, size) -> bytes`` (raises NotInDump/XenscopeError)
    :param symbols: ``{name: runtime address}`` for dumps without VMCOREINFO (System.map, kallsyms)
    :param btf_layout: ``(offsets, source)`` of the printk_ringbuffer for ``symbols`` (the kernel's BTF),
        or ``(None, why not)``/None: the x86_64 5.18+ offsets are assumed (:data:`PRB_X86_64`)
    :raises XenscopeError: no buffer described, or a buffer no kernel can have
    """
    given = dict(symbols or {})
    vi_symbols = _vmcoreinfo_symbols(vmcoreinfo)
    layout = prb_layout(vmcoreinfo)
    if layout is not None:
        log = read_ringbuffer(memory, vi_symbols["prb"], layout)
        log.sources = {"symbols": "VMCOREINFO SYMBOL(prb)", "offsets": "VMCOREINFO"}
        return log
    header = log_layout(vmcoreinfo)
    names = ("log_buf", "log_buf_len", "log_first_idx", "log_next_idx")
    if header is not None and all(n in vi_symbols for n in names):
        log = read_log_buf(memory, vi_symbols, header, long_size)
        log.sources = {"symbols": "VMCOREINFO SYMBOL(log_buf...)", "offsets": f"VMCOREINFO SIZE({header[0]})"}
        return log
    old = ("log_buf", "log_buf_len", "log_end")
    if all(n in vi_symbols for n in old):
        log = read_old_log_buf(memory, vi_symbols, long_size)
        log.sources = {"symbols": "VMCOREINFO SYMBOL(log_buf, log_end...)"}
        return log
    offsets, why = btf_layout or (None, None)
    if "prb" in given and offsets is not None:
        log = read_ringbuffer(memory, given["prb"], offsets)
        log.sources = {"symbols": f"prb from {symbols_source}", "offsets": f"{why} (no VMCOREINFO)"}
        return log
    if "prb" in given and long_size == 8:
        log = read_ringbuffer(memory, given["prb"], PRB_X86_64)
        log.sources = {"symbols": f"prb from {symbols_source}",
                       "offsets": "assumed: Linux 5.18+ x86_64 layout (no VMCOREINFO" +
                                  (f"; no BTF: {why})" if why else ")")}
        return log
    if vmcoreinfo is None:
        raise XenscopeError("no printk buffer found: the dump has no VMCOREINFO and no prb symbol was given "
                            "(give the kernel's System.map or kallsyms)")
    raise XenscopeError("no printk buffer found: the dump's VMCOREINFO describes none (no SYMBOL(prb) with its "
                        "offsets, no SYMBOL(log_buf) with SIZE(printk_log))")
