"""kallsyms and BTF decoders on small tables built here from the formats' own descriptions
(scripts/kallsyms.c's output rules, Documentation/bpf/btf.rst), not from the decoders."""
import struct

import numpy as np
import pytest

from xenstructs.formats.vmcoreinfo import parse_vmcoreinfo
from xenstructs.linux.btf import Btf, BtfError, find_btf, profile_from_btf
from xenstructs.linux.kallsyms import (KallsymsError, decode_addresses, decode_names, from_vmcoreinfo,
                                       tokens_of)

# --------------------------------------------------------------------------------------------
# kallsyms: a token table where byte c is the character c for the characters used, and a few
# bytes stand for longer strings (as scripts/kallsyms.c's compression leaves them)
# --------------------------------------------------------------------------------------------
MULTI = {0x80: b"Tstart", 0x81: b"_of", 0x82: b"dma", 0x83: b"Dinit_", 0x84: b"t__"}


def token_tables():
    tokens = []
    for c in range(256):
        tokens.append(MULTI.get(c, bytes([c]) if 0x21 <= c < 0x7F else b"?"))
    table, index = b"", []
    for t in tokens:
        index.append(len(table))
        table += t + b"\0"
    return table, struct.pack("<256H", *index), tokens


def encode(pieces, big):
    """One kallsyms_names entry: ULEB128 length (two bytes for "big" entries), then token bytes."""
    body = bytes(pieces)
    n = len(body)
    if n <= 0x7F:
        return bytes([n]) + body
    assert big and n <= 0x3FFF
    return bytes([(n & 0x7F) | 0x80, n >> 7]) + body


LONG = "x" * 200                                        # a "big" symbol: 201 tokens
SYMS = [  # (type+name as token bytes, expected type, expected name)
    (b"\x80", "T", "start"),
    (b"Tfoo\x81bar", "T", "foo_ofbar"),
    (b"\x83task", "D", "init_task"),
    (b"\x84x", "t", "__x"),
    (b"b\x82_buf", "b", "dma_buf"),
    (b"d" + LONG.encode(), "d", LONG),
]


def names_blob(big=True):
    return b"".join(encode(p, big) for p, _, _ in SYMS)


def test_names_expand_with_big_lengths():
    table, index, tokens = token_tables()
    got_tokens = tokens_of(table, index)
    assert got_tokens == tokens
    types, names, end = decode_names(names_blob() + b"\0" * 8, len(SYMS), got_tokens, big=True)
    assert types == "".join(t for _, t, _ in SYMS)
    assert names == [n for _, _, n in SYMS]
    assert end == len(names_blob())


def test_big_lengths_read_as_one_byte_do_not_decode():
    table, index, tokens = token_tables()
    with pytest.raises(KallsymsError):
        decode_names(names_blob(), len(SYMS), tokens, big=False)


def test_names_running_past_the_table_are_refused():
    table, index, tokens = token_tables()
    with pytest.raises(KallsymsError, match="ends"):
        decode_names(names_blob()[:-5], len(SYMS), tokens, big=True)
    with pytest.raises(KallsymsError, match="not a symbol count"):
        decode_names(names_blob(), 0, tokens, big=True)


BASE = 0xFFFFFFFF81000000
ADDRS = [0x0, 0x1000, 0x2A000, BASE, BASE + 0x40, BASE + 0x1234560]      # per-CPU first, as on x86_64


def test_absolute_percpu_offsets():
    # scripts/kallsyms.c --absolute-percpu: per-CPU symbols store their address, the others
    # relative_base - addr - 1 (negative)
    raw = struct.pack("<6i", *[a if a < BASE else BASE - a - 1 for a in ADDRS])
    addrs, rule = decode_addresses(raw, "relative", base=BASE)
    assert addrs.tolist() == ADDRS and "per-CPU" in rule


def test_base_relative_and_place_relative_offsets():
    kernel = ADDRS[3:]
    raw = struct.pack("<3i", *[a - BASE for a in kernel])
    assert decode_addresses(raw, "relative", base=BASE)[0].tolist() == kernel
    table_va = BASE + 0x2000000
    raw = struct.pack("<3i", *[a - (table_va + 4 * i) for i, a in enumerate(kernel)])
    assert decode_addresses(raw, "place-relative", table_va=table_va)[0].tolist() == kernel
    raw = struct.pack("<3Q", *kernel)
    assert decode_addresses(raw, "absolute")[0].tolist() == kernel
    raw32 = struct.pack("<2I", 0xC1000000, 0xC1000040)
    assert decode_addresses(raw32, "u32", pointer_size=4)[0].tolist() == [0xC1000000, 0xC1000040]


class FakeMemory:
    """Kernel memory: {va: bytes} regions; reads outside them fail as the real reader does."""
    ptr_size = 8

    def __init__(self, regions):
        self.regions = regions

    def read(self, va, size):
        for start, data in self.regions.items():
            if start <= va and va + size <= start + len(data):
                return data[va - start:va - start + size]
        from xenstructs.errors import XenscopeError
        raise XenscopeError(f"kernel va {va:#x} does not translate")

    def u32(self, va):
        return int.from_bytes(self.read(va, 4), "little")

    def ptr(self, va):
        return int.from_bytes(self.read(va, 8), "little")

    def cstring(self, va, limit=512):
        for start, data in self.regions.items():
            if start <= va < start + len(data):
                return data[va - start:].split(b"\0", 1)[0][:limit]
        return b""


def kernel_image(stext_seen):
    """The tables laid out as scripts/kallsyms.c does (6.1 order, .balign 8) at ROD, and a
    VMCOREINFO naming them; SYMBOL(_stext) is ``stext_seen``."""
    rod = 0xFFFFFFFF82000000
    table, index, _ = token_tables()
    syms = [(ADDRS[i], p) for i, (p, _, _) in enumerate(SYMS)]
    img = b""
    where = {}

    def label(name):
        nonlocal img
        img += b"\0" * (-len(img) % 8)
        where[name] = rod + len(img)
    label("kallsyms_offsets")
    img += struct.pack(f"<{len(syms)}i", *[a if a < BASE else BASE - a - 1 for a, _ in syms])
    label("kallsyms_relative_base")
    img += struct.pack("<Q", BASE)
    label("kallsyms_num_syms")
    img += struct.pack("<I", len(syms))
    label("kallsyms_names")
    img += names_blob()
    label("kallsyms_markers")
    img += struct.pack("<I", 0)
    label("kallsyms_token_table")
    img += table
    label("kallsyms_token_index")
    img += index
    vi = "OSRELEASE=6.1.0-test\n" + "".join(f"SYMBOL({k})={v:x}\n" for k, v in where.items())
    vi += f"SYMBOL(_stext)={stext_seen:x}\n"
    return FakeMemory({rod: img + b"\0" * 64}), parse_vmcoreinfo(vi)


def test_from_vmcoreinfo_end_to_end(monkeypatch):
    import xenstructs.linux.kallsyms as K
    monkeypatch.setattr(K, "CROSS_CHECK", K.CROSS_CHECK + ("init_task",))
    mem, vi = kernel_image(BASE)
    vi.lines["SYMBOL(init_task)"] = f"{ADDRS[2]:x}"              # VMCOREINFO agrees
    k = from_vmcoreinfo(mem, vi)
    assert k.names == [n for _, _, n in SYMS] and k.addresses.tolist() == ADDRS
    assert k.table()["init_task"] == ADDRS[2] and "VMCOREINFO" in k.how
    assert k.text_pairs()[0] == (0, "start") and k.text_pairs()[2] == (ADDRS[2], None)


def test_from_vmcoreinfo_refuses_tables_that_disagree_with_vmcoreinfo(monkeypatch):
    import xenstructs.linux.kallsyms as K
    monkeypatch.setattr(K, "CROSS_CHECK", K.CROSS_CHECK + ("init_task",))
    mem, vi = kernel_image(BASE)
    vi.lines["SYMBOL(init_task)"] = f"{BASE + 0x1000:x}"
    with pytest.raises(KallsymsError, match="init_task decodes to 0x2a000 but the dump says 0xffffffff81001000"):
        from_vmcoreinfo(mem, vi)


def test_from_vmcoreinfo_without_the_tables():
    mem, _ = kernel_image(BASE)
    with pytest.raises(KallsymsError, match="from 6.0"):
        from_vmcoreinfo(mem, parse_vmcoreinfo("OSRELEASE=5.10.0\n"))


# --------------------------------------------------------------------------------------------
# BTF: a blob written from Documentation/bpf/btf.rst
# --------------------------------------------------------------------------------------------

class BtfWriter:
    def __init__(self):
        self.types, self.strings, self.count = b"", b"\0", 0

    def s(self, name):
        if not name:
            return 0
        key = name.encode() + b"\0"
        pos = self.strings.find(b"\0" + key)
        if pos >= 0:
            return pos + 1
        self.strings += key
        return len(self.strings) - len(key)

    def add(self, name, kind, vlen, size_or_type, extra=b"", flag=0):
        self.types += struct.pack("<III", self.s(name), flag << 31 | kind << 24 | vlen, size_or_type) + extra
        self.count += 1
        return self.count

    def int_(self, name, size, bits):
        return self.add(name, 1, 0, size, struct.pack("<I", bits))

    def struct_(self, name, size, members, kind=4, flag=0):
        extra = b"".join(struct.pack("<III", self.s(n), t, off) for n, t, off in members)
        return self.add(name, kind, len(members), size, extra, flag)

    def blob(self, magic=0xEB9F, version=1):
        hdr = struct.pack("<HBBIIIII", magic, version, 0, 24, 0, len(self.types), len(self.types), len(self.strings))
        return hdr + self.types + self.strings


def kernel_btf():
    w = BtfWriter()
    int_ = w.int_("int", 4, 32)
    uint = w.int_("unsigned int", 4, 32)
    char = w.int_("char", 1, 8)
    ulong = w.int_("long unsigned int", 8, 64)
    pid_t = w.add("pid_t", 8, 0, int_)                              # typedef
    cpid = w.add("", 10, 0, pid_t)                                  # const pid_t
    w.add("", 9, 0, cpid)                                           # volatile const pid_t (unused)
    comm = w.add("", 3, 0, 0, struct.pack("<III", char, int_, 16))  # char[16]
    name = w.add("", 3, 0, 0, struct.pack("<III", char, int_, 56))
    list_head = w.struct_("list_head", 16, [])
    mm_fwd = w.add("mm_struct", 7, 0, 0)                            # forward declaration first
    mm_ptr = w.add("", 2, 0, mm_fwd)
    lh_ptr = w.add("", 2, 0, list_head)
    # task_struct { long state; anonymous struct { struct list_head tasks; union { pid_t pid; int x; }; };
    #               const pid_t tgid; unsigned flags:3 (kind_flag bitfield); char comm[16]; mm; active_mm }
    anon_union = w.struct_("", 4, [("pid", pid_t, 0), ("x", int_, 0)], kind=5)
    anon_struct = w.struct_("", 24, [("tasks", list_head, 0), ("", anon_union, 128)])
    task = w.struct_("task_struct", 96, [("state", ulong, 0), ("", anon_struct, 64), ("tgid", cpid, 256),
                                         ("flags", uint, 3 << 24 | 288), ("comm", comm, 320),
                                         ("mm", mm_ptr, 448), ("active_mm", mm_ptr, 512)], flag=1)
    w.struct_("mm_struct", 64, [("mmap", lh_ptr, 0), ("pgd", ulong, 72 * 8)])
    layout = w.struct_("module_layout", 16, [("base", lh_ptr, 0), ("size", uint, 64)])
    w.struct_("module", 400, [("state", int_, 0), ("list", list_head, 64), ("name", name, 192),
                              ("core_layout", layout, 640), ("init_layout", layout, 768)])
    return w, task


def test_btf_members_as_c_lays_them_out():
    w, task = kernel_btf()
    b = Btf(w.blob())
    assert len(b) == w.count and b.find("task_struct") == task
    assert b.find("mm_struct") != b.find("mm_struct", (7,))                     # the definition, not the fwd
    assert b.member_offset("task_struct", "tasks") == 8                         # anonymous struct at 64 bits
    assert b.member_offset("task_struct", "pid") == 24                          # ... union inside it at +128
    assert b.member_offset("task_struct", "tgid") == 32
    assert b.member_offset("task_struct", "flags") == 36                        # kind_flag: size 3, bit 288
    assert b.member_offset("task_struct", "nothing") is None
    assert b.member_offset("module", "core_layout.size") == 88
    off, mtype = b.member_path(task, "comm")
    assert off == 40 and b.size(mtype) == 16 and b.size(b.member_path(task, "tgid")[1]) == 4
    assert b.size(b.member_path(task, "mm")[1]) == 8 and Btf(w.blob(), 4).size(b.member_path(task, "mm")[1]) == 4


def test_profile_from_btf_has_the_dwarf_keys():
    w, _ = kernel_btf()
    p = profile_from_btf(Btf(w.blob()), {"source": "test"})
    assert p.offsets["task_struct.pid"] == 24 and p.offsets["task_struct.comm"] == 40
    assert p.offsets["task_struct.active_mm"] == 64 and p.offsets["mm_struct.pgd"] == 72
    assert p.sizes["task_struct.comm"] == 16 and p.sizes["task_struct.comm.count"] == 16
    assert p.sizes["task_struct.pid"] == 4 and p.sizes["module.name"] == 56
    assert p.sizes["task_struct"] == 96 and p.module_variant == "layout"
    assert p.offsets["module_layout.size"] == 8 and p.sizes["module_layout.size"] == 4


def test_bad_btf_blobs_are_refused():
    w, _ = kernel_btf()
    with pytest.raises(BtfError, match="magic"):
        Btf(w.blob(magic=0x1234))
    with pytest.raises(BtfError, match="version"):
        Btf(w.blob(version=2))
    with pytest.raises(BtfError, match="runs past"):
        Btf(w.blob()[:-10])
    w.add("bad", 31, 0, 0)
    with pytest.raises(BtfError, match="unknown kind 31"):
        Btf(w.blob())
    w2 = BtfWriter()
    w2.types = struct.pack("<III", 0, 4 << 24 | 5, 8)                        # 5 members announced, none
    with pytest.raises(BtfError, match="ends inside"):
        Btf(w2.blob())


def test_a_typedef_loop_is_refused():
    w = BtfWriter()
    w.add("a", 8, 0, 2)
    w.add("b", 8, 0, 1)
    b = Btf(w.blob())
    with pytest.raises(BtfError, match="deeper"):
        b.strip(1)
    assert np.all(b.kinds[1:] == 8)


# --------------------------------------------------------------------------------------------
# Found by shape: 1200 symbols laid out as scripts/kallsyms.c does (6.1 order, .balign 8),
# somewhere in a kernel image, with no VMCOREINFO to name them; and a 32-bit kernel's tables
# (BITS_PER_LONG 32: "#define PTR .long", "#define ALGN .balign 4") of a 5.10 kernel listing text
# only (no CONFIG_KALLSYMS_ALL: no linux_banner, _stext places the image; one-byte lengths)
# --------------------------------------------------------------------------------------------

class FakeMemory32(FakeMemory):
    """A 32-bit kernel's memory: pointers are 4 bytes."""
    ptr_size = 4

    def ptr(self, va):
        return int.from_bytes(self.read(va, 4), "little")


def shaped_image(start=0xFFFFFFFF81000000, ptr_size=8):
    table, index, _ = token_tables()
    align, text_only = ptr_size, ptr_size == 4
    banner_va = start + 0x100
    names = [(start + 0x1000 + 0x10 * i, f"Tsym{i:04d}") for i in range(1200)]
    names.insert(3, (start, "T_stext") if text_only else (banner_va, "Dlinux_banner"))
    names.sort()
    img = bytearray(b"\x55" * 0x200)
    img[0x100:0x100 + 20] = b"Linux version 9.9.9\0"

    def label():
        img.extend(b"\0" * (-len(img) % align))
        return start + len(img)
    label()
    img += struct.pack(f"<{len(names)}i", *[a - start for a, _ in names])
    label()
    img += struct.pack("<Q" if ptr_size == 8 else "<I", start)
    label()
    img += struct.pack("<I", len(names))
    label()
    offs = []
    for _, n in names:
        offs.append(len(img))
        img += encode(n.encode(), big=not text_only)
    first = offs[0]
    label()
    img += struct.pack(f"<{(len(names) + 255) // 256}I", *[o - first for o in offs[::256]])
    label()
    img += table
    label()
    img += index
    img += b"\x01" * 64
    memory = (FakeMemory32 if ptr_size == 4 else FakeMemory)({start: bytes(img)})
    return memory, [(start, len(img))], names


@pytest.mark.parametrize("start, ptr_size", [(0xFFFFFFFF81000000, 8), (0xC1000000, 4)])
def test_kallsyms_found_by_shape(start, ptr_size):
    from xenstructs.linux.kallsyms_shape import find_kallsyms
    mem, runs, names = shaped_image(start, ptr_size)
    k = find_kallsyms(mem, runs=runs)
    assert k.names == [n[1:] for _, n in names] and k.addresses.tolist() == [a for a, _ in names]
    assert k.types == "".join(n[0] for _, n in names) and k.how.startswith("kallsyms found by shape")
    assert k.tables["kallsyms_relative_base"] - k.tables["kallsyms_offsets"] >= 4 * len(names)
    # the base is one pointer (PTR) right before kallsyms_num_syms
    assert k.tables["kallsyms_num_syms"] - k.tables["kallsyms_relative_base"] == ptr_size


def test_no_kallsyms_in_an_image_without_them():
    from xenstructs.linux.kallsyms_shape import find_kallsyms
    mem = FakeMemory({0xFFFFFFFF81000000: bytes(range(256)) * 64})
    with pytest.raises(KallsymsError, match="no kallsyms tables found"):
        find_kallsyms(mem, runs=[(0xFFFFFFFF81000000, 256 * 64)])


def test_btf_found_by_its_header():
    w, _ = kernel_btf()
    blob = w.blob()
    mem = FakeMemory({0xFFFFFFFF82000000: b"\xaa" * 40 + blob + b"\0" * 16})
    start, stop = find_btf(mem, runs=[(0xFFFFFFFF82000000, 40 + len(blob) + 16)])
    assert (start, stop) == (0xFFFFFFFF82000000 + 40, 0xFFFFFFFF82000000 + 40 + len(blob))
    assert find_btf(FakeMemory({0: b"\0" * 4096}), runs=[(0, 4096)]) is None


def printk_btf(last_finalized_id):
    """The printk_ringbuffer structs of kernel/printk/printk_ringbuffer.h as C lays them out on x86_64:
    5.10-5.17 (no ``last_finalized_id`` in prb_desc_ring), 5.18+ (with it)."""
    w = BtfWriter()
    uint = w.int_("unsigned int", 4, 32)
    ulong = w.int_("long unsigned int", 8, 64)
    u64 = w.int_("u64", 8, 64)
    u16 = w.int_("u16", 2, 16)
    u32 = w.int_("u32", 4, 32)
    along = w.struct_("atomic_long_t", 8, [("counter", ulong, 0)])
    char_ptr = w.add("", 2, 0, w.int_("char", 1, 8))
    lpos = w.struct_("prb_data_blk_lpos", 16, [("begin", ulong, 0), ("next", ulong, 64)])
    desc = w.struct_("prb_desc", 24, [("state_var", along, 0), ("text_blk_lpos", lpos, 64)])
    info = w.struct_("printk_info", 88, [("seq", u64, 0), ("ts_nsec", u64, 64), ("text_len", u16, 128),
                                         ("caller_id", u32, 160)])
    ring = [("count_bits", uint, 0), ("descs", w.add("", 2, 0, desc), 64), ("infos", w.add("", 2, 0, info), 128),
            ("head_id", along, 192), ("tail_id", along, 256)] + ([("last_finalized_id", along, 320)]
                                                                   if last_finalized_id else [])
    desc_ring = w.struct_("prb_desc_ring", 48 if last_finalized_id else 40, ring)
    data_ring = w.struct_("prb_data_ring", 32, [("size_bits", uint, 0), ("data", char_ptr, 64),
                                                ("head_lpos", along, 128), ("tail_lpos", along, 192)])
    size = (48 if last_finalized_id else 40) + 32 + 8
    w.struct_("printk_ringbuffer", size, [("desc_ring", desc_ring, 0),
                                          ("text_data_ring", data_ring, (size - 40) * 8),
                                          ("fail", along, (size - 8) * 8)])
    return w


def test_printk_offsets_from_btf_follow_the_kernel_not_one_table():
    """Linux 5.10's prb_desc_ring lacks 5.18's last_finalized_id: the text ring moves from +48 to +40
    (seen on Debian 5.10's real BTF); a BTF without the structs is refused in one line."""
    from xenstructs.errors import XenscopeError
    from xenstructs.linux.printk import PRB_X86_64, prb_layout_of_btf
    old = prb_layout_of_btf(Btf(printk_btf(False).blob()))
    new = prb_layout_of_btf(Btf(printk_btf(True).blob()))
    assert old["printk_ringbuffer.text_data_ring"] == 40 and new["printk_ringbuffer.text_data_ring"] == 48
    assert {k: v for k, v in new.items() if k in PRB_X86_64} == PRB_X86_64
    with pytest.raises(XenscopeError, match="no struct printk_ringbuffer"):
        prb_layout_of_btf(Btf(kernel_btf()[0].blob()))
