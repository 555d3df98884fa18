"""A small x86 page-table assembler that records, from its own intent, what is true.

Independent of ``xenstructs`` (it is the truth that package is tested against). Rules used
(Intel SDM vol. 3A ch. 4; shared/reference/xen-facts.md §7.1):

* effective rights: writable = RW at every level, user = US at every level, nx = XD at any level
  (only with 8-byte entries and EFER.NXE=1); PAE PDPTEs carry no rights bits.
* reserved bits of a present entry (MAXPHYADDR = 52 unless told): 2-level 4 MiB PDE bit 21 (and PSE-36
  bits above MAXPHYADDR); PAE: bits MAXPHYADDR..62 everywhere, PDPTE bit 63 (bits 1, 2, 5-8 only at CR3 load); 64-bit: bits
  MAXPHYADDR..51, PS in a PML4E/PML5E; large pages: frame bits 13..(size bits - 1); bit 63 without NXE.
* a 64-bit address is canonical when bits 63..(va_bits - 1) are equal.
"""

PAGE = 0x1000
P, RW, US, PWT, PCD, A, D, PS, G = 1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0x100
XD = 1 << 63

# entry size, entry names top-down, VA shift per level, index bits per level, VA bits
GEOMETRY = {
    "2level": (4, ("PDE", "PTE"), (22, 12), (10, 10), 32),
    "pae": (8, ("PDPTE", "PDE", "PTE"), (30, 21, 12), (2, 9, 9), 32),
    "4level": (8, ("PML4E", "PDPTE", "PDE", "PTE"), (39, 30, 21, 12), (9, 9, 9, 9), 48),
    "5level": (8, ("PML5E", "PML4E", "PDPTE", "PDE", "PTE"), (48, 39, 30, 21, 12), (9, 9, 9, 9, 9), 57),
}


class PhysMem:
    """Sparse physical memory: pages that exist (and are written to the dump) plus an allocator."""

    def __init__(self, alloc_base):
        self.pages = {}            # pfn -> bytearray(4096)
        self.next = alloc_base

    def alloc(self):
        """A fresh zeroed page (in the dump) from the allocator."""
        while self.next >> 12 in self.pages:
            self.next += PAGE
        pa = self.next
        self.pages[pa >> 12] = bytearray(PAGE)
        self.next += PAGE
        return pa

    def add(self, pa, data=None):
        assert pa % PAGE == 0 and pa >> 12 not in self.pages, hex(pa)
        self.pages[pa >> 12] = bytearray(data if data is not None else PAGE)
        return pa

    def pattern(self, pa, tag):
        """Fill page ``pa`` (created when absent) with u64 words ``0x5e<<56 | tag<<48 | address``."""
        if pa >> 12 not in self.pages:
            self.add(pa)
        page = self.pages[pa >> 12]
        for i in range(0, PAGE, 8):
            page[i:i + 8] = ((0x5E << 56) | (tag << 48) | (pa + i)).to_bytes(8, "little")
        return pa

    def has(self, pa):
        return pa >> 12 in self.pages

    def read(self, pa, n):
        page = self.pages.get(pa >> 12)
        if page is None:
            return None
        off = pa & (PAGE - 1)
        assert off + n <= PAGE
        return bytes(page[off:off + n])

    def write(self, pa, data):
        page = self.pages[pa >> 12]
        off = pa & (PAGE - 1)
        page[off:off + len(data)] = data

    def segments(self):
        return [(pfn << 12, bytes(self.pages[pfn])) for pfn in sorted(self.pages)]

    def ranges(self):
        out = []
        for pfn in sorted(self.pages):
            if out and out[-1][1] == pfn << 12:
                out[-1][1] += PAGE
            else:
                out.append([pfn << 12, (pfn + 1) << 12])
        return out


class PageTables:
    """Page tables of one address space in one paging mode, built in a :class:`PhysMem`.

    :param root_offset: PAE only: byte offset of the 32-byte PDPT inside its page (CR3 bits 5-11)
    """

    def __init__(self, mode, mem, nxe=True, pse=True, maxphyaddr=52, root_offset=0):
        self.mode = mode
        self.mem = mem
        self.nxe = nxe
        self.pse = pse
        self.maxphyaddr = maxphyaddr
        self.esize, self.names, self.shifts, self.widths, self.va_bits = GEOMETRY[mode]
        self.root = mem.alloc() + root_offset
        self.table_info = {self.root: (0, 0)}      # table pa -> (level index, va base)
        self.mappings = []                         # what map() was asked for
        self.problems = []
        self.walks = []

    # -- raw entries --------------------------------------------------------------------------
    def get_entry(self, table, index):
        raw = self.mem.read(table + index * self.esize, self.esize)
        return None if raw is None else int.from_bytes(raw, "little")

    def set_entry(self, table, index, value, problem=None):
        """Write a raw entry. ``problem`` ("reserved", "not-in-dump", "loop") records what an
        enumeration must report for it: reserved/loop at this entry's level, not-in-dump at the level
        of the (missing) table it points to; the VA span is this entry's span."""
        assert 0 <= index < 1 << self.widths[self.table_info[table][0]]
        self.mem.write(table + index * self.esize, value.to_bytes(self.esize, "little"))
        if problem:
            lvl, base = self.table_info[table]
            start = self.canonical(base + (index << self.shifts[lvl]))
            name = self.names[lvl + 1] if problem == "not-in-dump" else self.names[lvl]
            self.problems.append({"va_start": start, "va_end": start + (1 << self.shifts[lvl]),
                                  "level": name, "reason": problem})

    def canonical(self, va):
        if self.va_bits == 32:
            return va & 0xFFFFFFFF
        va &= (1 << self.va_bits) - 1
        if va >> (self.va_bits - 1) & 1:
            va |= ((1 << 64) - 1) ^ ((1 << self.va_bits) - 1)
        return va

    def index(self, va, level):
        return va >> self.shifts[level] & ((1 << self.widths[level]) - 1)

    def _level(self, name):
        return self.names.index(name)

    def _table_flags(self, level):
        """Flags of a new intermediate entry at ``level``: P|RW|US|A (PAE PDPTE: P only)."""
        if self.mode == "pae" and level == 0:
            return P
        return P | RW | US | A

    def table_for(self, va, level_name):
        """Physical address of the table holding the ``level_name`` entry for ``va``
        (intermediate tables are created as needed)."""
        target = self._level(level_name)
        table = self.root
        for lvl in range(target):
            idx = self.index(va, lvl)
            e = self.get_entry(table, idx)
            if not e & P:
                nt = self.mem.alloc()
                base = self.table_info[table][1] + (idx << self.shifts[lvl])
                self.table_info[nt] = (lvl + 1, base)
                self.set_entry(table, idx, nt | self._table_flags(lvl))
                table = nt
            else:
                assert not self._is_large(e, lvl), f"{va:#x}: large page at {self.names[lvl]}"
                table = self._addr(e, lvl, False)
        return table

    def entry_ref(self, va, level_name):
        """``(table, index)`` of the ``level_name`` entry for ``va``."""
        return self.table_for(va, level_name), self.index(va, self._level(level_name))

    def tweak(self, va, level_name, clear=0, set_=0):
        """Change bits of the existing entry for ``va`` at ``level_name`` (e.g. drop RW or US on an
        intermediate entry so the effective rights differ from the leaf's, or set XD)."""
        t, i = self.entry_ref(va, level_name)
        e = self.get_entry(t, i)
        assert e & P
        self.set_entry(t, i, (e & ~clear) | set_)

    # -- mapping ------------------------------------------------------------------------------
    def _leaf_level(self, size):
        for lvl, shift in enumerate(self.shifts):
            if 1 << shift == size:
                allowed = lvl == len(self.shifts) - 1 or self._large_ok(lvl)
                if allowed:
                    return lvl
        raise ValueError(f"{self.mode}: no {size:#x}-byte pages")

    def _large_ok(self, lvl):
        name = self.names[lvl]
        if name == "PDE":
            return self.mode != "2level" or self.pse
        return name == "PDPTE" and self.mode in ("4level", "5level")

    def _is_large(self, e, lvl):
        return bool(e & PS) and lvl < len(self.names) - 1 and self._large_ok(lvl)

    def _addr(self, e, lvl, large):
        if self.mode == "2level":
            if large:
                return (e & 0xFFC00000) | ((e >> 13 & 0xFF) << 32)
            return e & 0xFFFFF000
        a = e & ((1 << self.maxphyaddr) - 1) & ~0xFFF
        if large:
            a &= ~((1 << self.shifts[lvl]) - 1)
        return a

    def leaf_value(self, pa, size, rw=True, us=False, nx=False, global_=False, extra_bits=0):
        lvl = self._leaf_level(size)
        large = lvl < len(self.names) - 1
        v = P | A | D | (RW if rw else 0) | (US if us else 0) | (G if global_ else 0) | extra_bits
        if large:
            v |= PS
        if nx:
            assert self.esize == 8, "no NX in 2-level paging"
            v |= XD
        if self.mode == "2level" and large:
            assert pa < 1 << 40
            v |= (pa & 0xFFC00000) | ((pa >> 32 & 0xFF) << 13)
        else:
            v |= pa
        return v

    def map(self, va, pa, size, rw=True, us=False, nx=False, global_=False, extra_bits=0):
        """Map ``[va, va+size)`` to ``pa`` with one page of ``size`` (4 KiB, 2/4 MiB or 1 GiB)."""
        assert va % size == 0 and pa % size == 0, (hex(va), hex(pa), size)
        assert self.canonical(va) == va
        lvl = self._leaf_level(size)
        table = self.table_for(va, self.names[lvl])
        idx = self.index(va, lvl)
        assert not self.get_entry(table, idx) & P, f"{va:#x} already mapped"
        value = self.leaf_value(pa, size, rw, us, nx, global_, extra_bits)
        self.set_entry(table, idx, value)
        self.mappings.append({"va": va, "pa": pa, "size": size})
        return table, idx

    # -- truth --------------------------------------------------------------------------------
    def _reserved(self, e, lvl, large):
        name = self.names[lvl]
        if self.mode == "2level":
            if large:
                rsv = 1 << 21
                m = min(self.maxphyaddr, 40)
                rsv |= (0xFF << 13) & ~((1 << (13 + m - 32)) - 1)
                return e & rsv
            return 0
        if self.mode == "pae":
            rsv = ((1 << 63) - 1) & ~((1 << self.maxphyaddr) - 1)
            if name == "PDPTE":
                # During a walk only bit 63 and the bits above MAXPHYADDR count: bits 1, 2 and 5-8
                # are checked when CR3 is loaded (SDM 4.4.1, #GP), and QEMU's TCG walker ignores
                # them (it even sets A, bit 5, itself: target/i386/tcg/sysemu/excp_helper.c).
                rsv |= XD
        else:
            rsv = ((1 << 52) - 1) & ~((1 << self.maxphyaddr) - 1)
            if name in ("PML4E", "PML5E"):
                rsv |= PS
        if not self.nxe:
            rsv |= XD
        if large:
            rsv |= ((1 << self.shifts[lvl]) - 1) & ~((1 << 13) - 1)
        return e & rsv

    def walk(self, va):
        """Translate ``va`` as the CPU does, over this builder's own memory."""
        out = {"va": va, "pa": None, "page_size": None, "stop": None, "level": None,
               "writable": None, "user": None, "nx": None}
        if self.va_bits == 32:
            assert va >> 32 == 0
        elif self.canonical(va) != va:
            out["stop"] = "non-canonical"
            return out
        rw = us = True
        nx = False
        table = self.root
        for lvl, name in enumerate(self.names):
            e = self.get_entry(table, self.index(va, lvl))
            if e is None:
                out.update(stop="not-in-dump", level=name)
                return out
            if not e & P:
                out.update(stop="not-present", level=name)
                return out
            large = self._is_large(e, lvl)
            if self._reserved(e, lvl, large):
                out.update(stop="reserved", level=name)
                return out
            if not (self.mode == "pae" and name == "PDPTE"):
                rw &= bool(e & RW)
                us &= bool(e & US)
                nx |= self.esize == 8 and self.nxe and bool(e & XD)
            if large or lvl == len(self.names) - 1:
                size = 1 << self.shifts[lvl]
                out.update(pa=self._addr(e, lvl, large) + (va & (size - 1)), page_size=size,
                           writable=rw, user=us, nx=nx)
                return out
            table = self._addr(e, lvl, False)
        raise AssertionError("unreachable")

    def expect(self, va, why, stop=None, level=None, pa=None):
        """Record a walk of ``va``; asserts the builder's intent (stop, level, pa) holds."""
        w = self.walk(va)
        assert (w["stop"], w["level"]) == (stop, level), (hex(va), w, stop, level)
        if pa is not None:
            assert w["pa"] == pa, (hex(va), w, hex(pa))
        w["why"] = why
        self.walks.append(w)
        return w

    def pages(self):
        """Every page the CPU can use (from map() intent, minus pages a crafted entry cut off),
        with effective rights, sorted by va."""
        out = []
        for m in self.mappings:
            w = self.walk(m["va"])
            if w["pa"] != m["pa"] or w["page_size"] != m["size"]:
                continue
            out.append({"va": m["va"], "pa": m["pa"], "size": m["size"], "writable": w["writable"],
                        "user": w["user"], "nx": w["nx"]})
        out.sort(key=lambda p: p["va"])
        for a, b in zip(out, out[1:]):
            assert a["va"] + a["size"] <= b["va"], "overlapping mappings"
        return out

    def check_problems(self):
        """Each reserved / not-in-dump problem's first address must stop there when walked."""
        for p in self.problems:
            if p["reason"] in ("reserved", "not-in-dump"):
                w = self.walk(p["va_start"])
                assert (w["stop"], w["level"]) == (p["reason"], p["level"]), (p, w)
        return sorted(self.problems, key=lambda p: p["va_start"])


def coalesce(pages, ignore_pa=False):
    """Merge pages that are virtually (and, unless ``ignore_pa``, physically) contiguous with
    equal rights into ranges."""
    out = []
    for p in pages:
        r = out[-1] if out else None
        if (r and r["va_end"] == p["va"] and (ignore_pa or r["_pa_end"] == p["pa"])
                and (r["writable"], r["user"], r["nx"]) == (p["writable"], p["user"], p["nx"])):
            r["va_end"] += p["size"]
            r["_pa_end"] = p["pa"] + p["size"]
        else:
            out.append({"va_start": p["va"], "va_end": p["va"] + p["size"], "pa_start": p["pa"],
                        "_pa_end": p["pa"] + p["size"], "writable": p["writable"],
                        "user": p["user"], "nx": p["nx"]})
    for r in out:
        del r["_pa_end"]
    return out
