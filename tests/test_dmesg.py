"""The console a dump holds, decoded from buffers laid out here as the C sources lay them out.

* Xen's console ring (xen/drivers/char/console.c, 4.4-4.20): ``conring`` (a pointer to the ring),
  ``conring_size`` (a power of two), ``conringc``/``conringp`` (u32 consumer/producer: character i
  lives at ``conring[i & (conring_size - 1)]``).
* Linux's printk_ringbuffer (kernel/printk/printk_ringbuffer.[ch], 5.10+): descriptors with
  ``state_var`` = id | state << (BITS_PER_LONG - 2), data blocks ``{unsigned long id; char data[]}``
  at ``begin`` or, when they would pass the array's end, whole at index 0; offsets as Debian 6.1's
  VMCOREINFO gives them (x86_64 and i386, copied from the kernel's own notes below).
* log_buf (3.5-5.9): ``struct printk_log`` records, a zero ``len`` wraps to index 0.

The real systems' consoles are the truth in tests/realsys (test_linux_dumps, test_linux_faults,
test_xen_xenscope, test_xen_smap_crash, test_xen_mmu_failures); here the formats' corners: wrapped
rings and blocks, a cut first line, stale descriptors, 32-bit longs, corrupt values.
"""
import io
import json
import struct

import pytest

from xenstructs.cli import run as cli_run
from xenstructs.errors import NotInDump, XenscopeError
from xenstructs.formats.vmcoreinfo import parse_vmcoreinfo
from xenstructs.linux import printk
from xenstructs.xen import conring

# VMCOREINFO lines of Debian's 6.1.0-57 kernels (x86_64 and 686-pae), as their dumps hold them
VMCOREINFO_64 = """SIZE(printk_ringbuffer)=88 OFFSET(printk_ringbuffer.desc_ring)=0
OFFSET(printk_ringbuffer.text_data_ring)=48 OFFSET(printk_ringbuffer.fail)=80 SIZE(prb_desc_ring)=48
OFFSET(prb_desc_ring.count_bits)=0 OFFSET(prb_desc_ring.descs)=8 OFFSET(prb_desc_ring.infos)=16
OFFSET(prb_desc_ring.head_id)=24 OFFSET(prb_desc_ring.tail_id)=32 SIZE(prb_desc)=24
OFFSET(prb_desc.state_var)=0 OFFSET(prb_desc.text_blk_lpos)=8 SIZE(prb_data_blk_lpos)=16
OFFSET(prb_data_blk_lpos.begin)=0 OFFSET(prb_data_blk_lpos.next)=8 SIZE(printk_info)=88
OFFSET(printk_info.seq)=0 OFFSET(printk_info.ts_nsec)=8 OFFSET(printk_info.text_len)=16
OFFSET(printk_info.caller_id)=20 OFFSET(printk_info.dev_info)=24 SIZE(prb_data_ring)=32
OFFSET(prb_data_ring.size_bits)=0 OFFSET(prb_data_ring.data)=8 OFFSET(prb_data_ring.head_lpos)=16
OFFSET(prb_data_ring.tail_lpos)=24 SIZE(atomic_long_t)=8 OFFSET(atomic_long_t.counter)=0"""
VMCOREINFO_32 = """SIZE(printk_ringbuffer)=44 OFFSET(printk_ringbuffer.desc_ring)=0
OFFSET(printk_ringbuffer.text_data_ring)=24 OFFSET(printk_ringbuffer.fail)=40 SIZE(prb_desc_ring)=24
OFFSET(prb_desc_ring.count_bits)=0 OFFSET(prb_desc_ring.descs)=4 OFFSET(prb_desc_ring.infos)=8
OFFSET(prb_desc_ring.head_id)=12 OFFSET(prb_desc_ring.tail_id)=16 SIZE(prb_desc)=12
OFFSET(prb_desc.state_var)=0 OFFSET(prb_desc.text_blk_lpos)=4 SIZE(prb_data_blk_lpos)=8
OFFSET(prb_data_blk_lpos.begin)=0 OFFSET(prb_data_blk_lpos.next)=4 SIZE(printk_info)=88
OFFSET(printk_info.seq)=0 OFFSET(printk_info.ts_nsec)=8 OFFSET(printk_info.text_len)=16
OFFSET(printk_info.caller_id)=20 OFFSET(printk_info.dev_info)=24 SIZE(prb_data_ring)=16
OFFSET(prb_data_ring.size_bits)=0 OFFSET(prb_data_ring.data)=4 OFFSET(prb_data_ring.head_lpos)=8
OFFSET(prb_data_ring.tail_lpos)=12 SIZE(atomic_long_t)=4 OFFSET(atomic_long_t.counter)=0"""


def vmcoreinfo(text, **symbols):
    lines = text.split() + [f"SYMBOL({name})={va:x}" for name, va in symbols.items()]
    return parse_vmcoreinfo("\n".join(lines))


class Memory:
    """Virtual memory made of regions ``{va: bytearray}``; a read outside them is NotInDump."""

    def __init__(self):
        self.regions = {}

    def put(self, va, data):
        self.regions[va] = bytearray(data)

    def read(self, va, size):
        for start, data in self.regions.items():
            if start <= va and va + size <= start + len(data):
                return bytes(data[va - start:va - start + size])
        raise NotInDump(va, "va")


# ---------------------------------------------------------------------------------------------
# Xen's console ring
# ---------------------------------------------------------------------------------------------

RING_VA = 0xFFFF830012340000
VARS = {"conring": 0xFFFF82D04045ED68, "conring_size": 0xFFFF82D04045ED60, "conringc": 0xFFFF82D0405899D4,
        "conringp": 0xFFFF82D0405899D0}


class Host:
    """What read_conring uses of a XenHost: symbols and Xen virtual reads."""

    def __init__(self, ring, size, consumer, producer, names=None):
        self.memory = Memory()
        self.symbols = {(names or {}).get(k, k): va for k, va in VARS.items()}
        self.memory.put(RING_VA, ring)
        self.memory.put(VARS["conring"], struct.pack("<Q", RING_VA))
        self.memory.put(VARS["conring_size"], struct.pack("<I", size))
        self.memory.put(VARS["conringp"], struct.pack("<II", producer, consumer))   # conringp, conringc

    def read_va(self, va, size):
        return self.memory.read(va, size)

    def read_u64(self, va):
        return struct.unpack("<Q", self.read_va(va, 8))[0]

    def read_u32(self, va):
        return struct.unpack("<I", self.read_va(va, 4))[0]


def ring_of(text, size, start=0):
    """A ring of ``size`` bytes after Xen printed ``text`` from producer ``start`` on (conring_puts)."""
    ring = bytearray(b"\xee" * size)
    for i, ch in enumerate(text.encode()):
        ring[(start + i) & (size - 1)] = ch
    producer = (start + len(text)) & 0xFFFFFFFF
    consumer = max(start, producer - size) if producer >= start else (producer - size) & 0xFFFFFFFF
    return ring, producer, consumer


def test_ring_not_wrapped_is_the_whole_text():
    text = "(XEN) Xen version 4.17.7 (Debian)\n(XEN) Bootloader: qemu\n"
    ring, p, c = ring_of(text, 1 << 14)
    r = conring.read_conring(Host(ring, 1 << 14, c, p))
    assert r.text == text and r.first_line == "complete" and r.dropped == 0
    assert r.lines() == ["(XEN) Xen version 4.17.7 (Debian)", "(XEN) Bootloader: qemu"]
    assert "nothing dropped since boot" in r.describe()


def test_full_ring_wraps_and_its_first_line_may_be_cut():
    lines = [f"(XEN) line {i:05d}\n" for i in range(2000)]            # 36000 bytes through 16 KiB
    text = "".join(lines)
    ring, p, c = ring_of(text, 1 << 14)
    r = conring.read_conring(Host(ring, 1 << 14, c, p))
    assert r.held == 1 << 14 and r.text == text[-(1 << 14):] and r.dropped == len(text) - (1 << 14)
    assert r.first_line == "unknown" and "may be cut" in r.describe()
    assert r.lines()[-1] == "(XEN) line 01999"


def test_cleared_ring_says_whether_the_first_line_is_cut():
    """xl dmesg -c moves conringc up: the byte before it is still in the ring."""
    text = "(XEN) one\n(XEN) two\n(XEN) three\n"
    ring, p, _ = ring_of(text, 1 << 14)
    whole = conring.read_conring(Host(ring, 1 << 14, text.index("(XEN) two"), p))
    assert whole.text == "(XEN) two\n(XEN) three\n" and whole.first_line == "complete"
    cut = conring.read_conring(Host(ring, 1 << 14, text.index("two"), p))
    assert cut.text == "two\n(XEN) three\n" and cut.first_line == "cut" and "is cut" in cut.describe()


def test_producer_past_2_to_the_32():
    """conringp/conringc are u32 counters: they wrap, the ring does not care."""
    text = "(XEN) after four GiB of output\n"
    ring, p, c = ring_of(text, 1 << 14, start=0xFFFFFFF0)
    assert p < c
    r = conring.read_conring(Host(ring, 1 << 14, c, p))
    assert r.text.endswith(text) and r.held == 1 << 14


def test_file_local_names_of_the_map_and_embedded_table():
    text = "(XEN) hello\n"
    ring, p, c = ring_of(text, 1 << 14)
    names = {k: f"drivers/char/console.c#{k}" for k in VARS}
    r = conring.read_conring(Host(ring, 1 << 14, c, p, names))
    assert r.text == text and r.symbols["conring"] == "drivers/char/console.c#conring"
    assert conring.find_symbol({"a.c#conring": 1, "b.c#conring": 2}, "conring") == (None, None)


@pytest.mark.parametrize("size, c, p, pointer, words", [
    (3 << 12, 0, 10, RING_VA, "not a power of two"),
    (1 << 31, 0, 10, RING_VA, "not a power of two"),
    (1 << 14, 0, (1 << 14) + 1, RING_VA, "is more than conring_size"),
    (1 << 14, 0, 10, 0x1234, "no Xen virtual address")])
def test_impossible_rings_are_one_error(size, c, p, pointer, words):
    host = Host(b"x" * (1 << 14), size, c, p)
    host.memory.put(VARS["conring"], struct.pack("<Q", pointer))
    with pytest.raises(XenscopeError, match=words):
        conring.read_conring(host)


def test_missing_symbol_and_missing_ring():
    host = Host(b"x" * (1 << 14), 1 << 14, 0, 10)
    del host.symbols["conringp"]
    with pytest.raises(XenscopeError, match="symbol conringp is not in"):
        conring.read_conring(host)
    host = Host(b"x" * 100, 1 << 14, 0, 1 << 13)
    with pytest.raises(XenscopeError, match="not in the dump"):
        conring.read_conring(host)


# ---------------------------------------------------------------------------------------------
# Linux's printk_ringbuffer
# ---------------------------------------------------------------------------------------------

PRB_PTR, PRB = 0x10000, 0x10100
DESCS, INFOS, DATA = 0x20000, 0x30000, 0x40000


class Ring:
    """A printk_ringbuffer laid out as printk_ringbuffer.c does (``long`` 8 or 4 bytes)."""

    def __init__(self, long, count_bits=3, size_bits=7):
        self.long, self.count_bits, self.size_bits = long, count_bits, size_bits
        self.layout = printk.prb_layout(vmcoreinfo(VMCOREINFO_64 if long == 8 else VMCOREINFO_32, prb=PRB_PTR))
        self.word = "<Q" if long == 8 else "<I"
        count, desc, info = 1 << count_bits, self.layout["prb_desc"], self.layout["printk_info"]
        self.descs, self.infos = bytearray(count * desc), bytearray(count * info)
        self.data = bytearray(1 << size_bits)
        self.head = self.tail = None

    def state_var(self, rid, state):
        return rid | state << (8 * self.long - 2)

    def put(self, rid, seq, text, begin, state=2, level=6, ts=0, wrap=False, block_id=None):
        """Descriptor ``rid`` -> record ``seq`` whose block starts at lpos ``begin`` (``wrap``: stored
        at index 0, the next wrap)."""
        lay, count = self.layout, 1 << self.count_bits
        index = rid & (count - 1)
        size = (self.long + len(text) + self.long - 1) // self.long * self.long
        data_size = 1 << self.size_bits
        if wrap:
            next_lpos = (begin // data_size + 1) * data_size + size
            at = 0
        else:
            next_lpos, at = begin + size, begin % data_size
        struct.pack_into(self.word, self.data, at, rid if block_id is None else block_id)
        self.data[at + self.long:at + self.long + len(text)] = text.encode()
        self.desc(index, self.state_var(rid, state), begin, next_lpos)
        info = index * lay["printk_info"]
        struct.pack_into("<QQHBBI", self.infos, info, seq, ts, len(text), 0, level << 5, 0)

    def desc(self, index, state_var, begin, next_lpos):
        at = index * self.layout["prb_desc"]
        lpos = at + self.layout["prb_desc.text_blk_lpos"]
        struct.pack_into(self.word, self.descs, at, state_var)
        struct.pack_into("<" + self.word[1] * 2, self.descs, lpos, begin, next_lpos)

    def memory(self, head_id, tail_id):
        mem = Memory()
        w = self.word[1]
        mem.put(PRB_PTR, struct.pack(self.word, PRB))
        lay = self.layout
        desc, text = PRB + lay["printk_ringbuffer.desc_ring"], PRB + lay["printk_ringbuffer.text_data_ring"]
        rb = bytearray(128)
        struct.pack_into("<I", rb, desc - PRB, self.count_bits)
        for key, value in (("descs", DESCS), ("infos", INFOS), ("head_id", head_id), ("tail_id", tail_id)):
            struct.pack_into("<" + w, rb, desc - PRB + lay[f"prb_desc_ring.{key}"], value)
        struct.pack_into("<I", rb, text - PRB, self.size_bits)
        struct.pack_into("<" + w, rb, text - PRB + lay["prb_data_ring.data"], DATA)
        mem.put(PRB, rb)
        mem.put(DESCS, self.descs)
        mem.put(INFOS, self.infos)
        mem.put(DATA, self.data)
        return mem

    def read(self, head_id, tail_id):
        return printk.read_ringbuffer(self.memory(head_id, tail_id), PRB_PTR, self.layout)


@pytest.mark.parametrize("long", [8, 4])
def test_ringbuffer_in_order_with_a_wrapped_block(long):
    """Records seq 10..13 in ids 10..13 (descriptors 2..5 of 8) of a 256-byte text ring from its 15th
    wrap on; the last block would pass the end of the array and is stored whole at index 0, its id
    also at its begin."""
    r = Ring(long, size_bits=8)
    texts = ["Linux version 6.1.0", "Command line: quiet", "a line\nand its second line", "wrapped at the end"]
    sizes = [(long + len(text) + long - 1) // long * long for text in texts]
    lpos = 16 * 256 - sum(sizes[:3]) - long           # the fourth block does not fit before the end
    for step, (text, size) in enumerate(zip(texts, sizes)):
        rid = 10 + step
        wrap = (lpos % 256) + size > 256
        r.put(rid, 10 + step, text, lpos, ts=1_500_000_000 * step + 123456, wrap=wrap, level=step)
        if wrap:
            struct.pack_into(r.word, r.data, lpos % 256, rid)
        lpos = ((lpos // 256 + 1) * 256 + size) if wrap else lpos + size
    assert lpos == 16 * 256 + sizes[3]
    log = r.read(13, 10)
    assert [rec.text for rec in log.records] == texts and [rec.seq for rec in log.records] == [10, 11, 12, 13]
    assert [rec.level for rec in log.records] == [0, 1, 2, 3] and not log.skipped
    assert log.lines() == ["[    0.000123] Linux version 6.1.0", "[    1.500123] Command line: quiet",
                           "[    3.000123] a line", "[    3.000123] and its second line",
                           "[    4.500123] wrapped at the end"]
    assert "seq 10-13" in log.describe()


def test_ringbuffer_skips_stale_and_unfinished_descriptors():
    r = Ring(8)
    r.put(20, 5, "kept", 0)
    r.put(21, 6, "being written", 16, state=0)                          # reserved
    r.put(22, 7, "old data", 40, block_id=14)                           # its block now another's
    r.put(23, 8, "kept too", 64)
    r.desc(0, r.state_var(16, 2), 80, 96)                               # descriptor 24's slot: id 16
    r.put(25, 9, "given up", 96, state=3)                               # reusable
    log = r.read(25, 20)
    assert [rec.text for rec in log.records] == ["kept", "kept too"]
    assert log.skipped == {"reserved": 1, "text overwritten": 1, "overwritten descriptor": 1, "reusable": 1}
    assert "passed over" in log.describe()


def test_ringbuffer_initial_tail_is_no_record():
    """DESC0_SV: the last descriptor, reusable, data-less (FAILED_LPOS): the tail until the ring fills."""
    r = Ring(8)
    r.desc(7, r.state_var(7, 3), 1, 1)
    r.put(8, 0, "first", 0)
    log = r.read(8, 7)
    assert [rec.text for rec in log.records] == ["first"] and not log.skipped


@pytest.mark.parametrize("count_bits, head, tail, words", [
    (40, 1, 0, "no ring's"), (3, 100, 0, "more than the 8 descriptors")])
def test_ringbuffer_impossible_values(count_bits, head, tail, words):
    r = Ring(8)
    r.count_bits = count_bits
    with pytest.raises(XenscopeError, match=words):
        printk.read_ringbuffer(r.memory(head, tail), PRB_PTR, r.layout)


def test_default_layout_is_debians_vmcoreinfo():
    """The offsets used without VMCOREINFO are the x86_64 kernel's own."""
    assert printk.prb_layout(vmcoreinfo(VMCOREINFO_64, prb=1)) == printk.PRB_X86_64


def test_read_printk_chooses_from_vmcoreinfo_and_symbols():
    r = Ring(8)
    r.put(1, 0, "hello", 0)
    mem = r.memory(1, 1)
    log = printk.read_printk(mem, vmcoreinfo(VMCOREINFO_64, prb=PRB_PTR))
    assert [x.text for x in log.records] == ["hello"] and log.sources["offsets"] == "VMCOREINFO"
    log = printk.read_printk(mem, None, symbols={"prb": PRB_PTR})
    assert [x.text for x in log.records] == ["hello"] and "assumed" in log.sources["offsets"]
    with pytest.raises(XenscopeError, match="no VMCOREINFO"):
        printk.read_printk(mem, None)
    with pytest.raises(XenscopeError, match="describes none"):
        printk.read_printk(mem, parse_vmcoreinfo("OSRELEASE=6.1.0\n"))


# ---------------------------------------------------------------------------------------------
# log_buf: 3.5 - 5.9, and before
# ---------------------------------------------------------------------------------------------

LOG_VMCOREINFO = ("SIZE(printk_log)=16 OFFSET(printk_log.ts_nsec)=0 OFFSET(printk_log.len)=8 "
                  "OFFSET(printk_log.text_len)=10 OFFSET(printk_log.dict_len)=12")
LOG_SYMS = {"log_buf": 0x1000, "log_buf_len": 0x1008, "log_first_idx": 0x100C, "log_next_idx": 0x1010}
BUF = 0x8000


def printk_log(ts, text, level=6, dict_text=b""):
    """struct printk_log (16 bytes) + text + dict, padded to 8 (LOG_ALIGN)."""
    body = text.encode() + dict_text
    size = (16 + len(body) + 7) // 8 * 8
    return struct.pack("<QHHHBB", ts, size, len(text), len(dict_text), 0, level << 5) + body + \
        b"\0" * (size - 16 - len(body))


def test_log_buf_records_wrap_at_a_zero_len():
    length = 128
    buf = bytearray(length)
    first = 56
    a, b, c = printk_log(1_000, "old one"), printk_log(2_000_000_000, "then this", level=3, dict_text=b"K=V"), \
        printk_log(3_000_000_000, "after the wrap")
    buf[first:first + len(a)] = a
    buf[first + len(a):first + len(a) + len(b)] = b                # ends at 112: 16 bytes left, len 0 there
    buf[0:len(c)] = c
    mem = Memory()
    mem.put(BUF, buf)
    mem.put(0x1000, struct.pack("<QIII", BUF, length, first, len(c)))
    vi = vmcoreinfo(LOG_VMCOREINFO, **LOG_SYMS)
    log = printk.read_printk(mem, vi)
    assert log.kind == "log_buf" and [r.text for r in log.records] == ["old one", "then this", "after the wrap"]
    assert [r.level for r in log.records] == [6, 3, 6]
    assert log.lines() == ["[    0.000001] old one", "[    2.000000] then this", "[    3.000000] after the wrap"]
    mem.put(0x1000, struct.pack("<QIII", BUF, length, first, 8))    # log_next_idx inside a record
    log = printk.read_printk(mem, vi)
    assert len(log.records) == 3 and "comes back to index 0x0 without reaching log_next_idx 0x8" in log.describe()
    mem.put(0x1000, struct.pack("<QIII", BUF, length, 120, 8))     # no room for a header at 120
    with pytest.raises(XenscopeError, match="breaks at index 0x78 without reaching"):
        printk.read_printk(mem, vi)


def test_unstructured_log_buf_before_3_5():
    length, text = 64, b"<6>first line\n<4>second line\n<6>third line, after the wrap\n"
    buf = bytearray(length)
    end = len(text) + 10                                             # 10 characters before were overwritten
    full = b"x" * 10 + text
    for i, ch in enumerate(full):
        buf[i % length] = ch
    mem = Memory()
    mem.put(BUF, buf)
    mem.put(0x1000, struct.pack("<QIII", BUF, length, end, end))
    vi = vmcoreinfo("", log_buf=0x1000, log_buf_len=0x1008, log_end=0x100C, logged_chars=0x1010)
    log = printk.read_printk(mem, vi)
    assert log.kind == "log_buf (unstructured)" and log.raw == full[-length:].decode()
    assert log.lines()[-1] == "<6>third line, after the wrap"


# ---------------------------------------------------------------------------------------------
# The command on dumps without a console it can read: one line, exit 2
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("core, words", [
    ("cores/x86_64-4level.core", "VMCOREINFO describes none"),
    ("cores/xen-4.17-host.core", "symbol conring is not in"),
    ("cores/pv-x86_64.xc", "no VMCOREINFO")])
def test_dmesg_without_a_console_is_one_error(core, words):
    import os
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    err = io.StringIO()
    out = io.StringIO()
    import contextlib
    with contextlib.redirect_stderr(err):
        rc = cli_run(["dmesg", os.path.join(top, core)], out=out)
    assert rc == 2 and words in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1, err.getvalue()


def test_log_takes_a_file_or_a_dump():
    err = io.StringIO()
    import contextlib
    with contextlib.redirect_stderr(err):
        assert cli_run(["log"], out=io.StringIO()) == 2
    assert "--from-dump" in err.getvalue()


def test_check_says_why_the_dumps_console_is_not_read(tmp_path):
    import os
    from xenstructs.check import Options, check_dump
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rep = check_dump(os.path.join(top, "cores/xen-4.17-host.core"), Options(siblings=False))
    checks = {c.name: c for c in rep.checks}
    assert checks["console"].status == checks["faults"].status == "n.a."
    assert "symbol conring is not in" in checks["console"].summary, checks["console"].summary
    rep = check_dump(os.path.join(top, "cores/pv-x86_64.xc"), Options(siblings=False))
    assert "no VMCOREINFO" in {c.name: c for c in rep.checks}["faults"].summary
    json.dumps(rep.as_dict())


@pytest.mark.parametrize("change, words", [
    ("OFFSET(printk_info.seq)=1000", "does not fit SIZE"), ("SIZE(prb_desc)=4", "does not fit SIZE"),
    ("OFFSET(prb_desc_ring.descs)=-8", "no printk structure's"),
    ("OFFSET(prb_data_blk_lpos.next)=64", "no unsigned long pair's")])
def test_vmcoreinfo_offsets_no_kernel_has(change, words):
    """VMCOREINFO is input too: offsets outside their struct are one error, not a crash."""
    key = change.split("=")[0]
    text = " ".join(line for line in VMCOREINFO_64.split() if not line.startswith(key + "=")) + " " + change
    with pytest.raises(XenscopeError, match=words):
        printk.prb_layout(vmcoreinfo(text, prb=PRB_PTR))
    bad = LOG_VMCOREINFO.replace("OFFSET(printk_log.dict_len)=12", "OFFSET(printk_log.dict_len)=15")
    with pytest.raises(XenscopeError, match="does not fit"):
        printk.log_layout(vmcoreinfo(bad))
