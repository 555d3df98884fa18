"""Every kernel symbol from the dump itself: the kernel's own kallsyms tables, decoded.

The tables (built by the kernel's ``scripts/kallsyms.c``, read by ``kernel/kallsyms.c``):

* ``kallsyms_num_syms``: ``unsigned int`` N.
* ``kallsyms_names``: N entries ``[len][len token bytes]``; from Linux 6.1 a ``len`` of 0x80 or
  more is "big": two ULEB128 bytes, ``(b0 & 0x7f) | b1 << 7``. Each token byte indexes
  ``kallsyms_token_index`` (256 ``u16``), an offset into ``kallsyms_token_table`` (NUL-terminated
  strings). The first expanded character is the ``nm`` type letter, the rest the name.
* addresses, by kernel generation: ``kallsyms_addresses`` (N ``unsigned long``; no
  ``CONFIG_KALLSYMS_BASE_RELATIVE``); ``kallsyms_offsets`` (N ``int``) with
  ``kallsyms_relative_base``: ``base + (u32)off``, except with ``CONFIG_KALLSYMS_ABSOLUTE_PERCPU``
  (x86_64 SMP until its per-CPU rework) where ``off >= 0`` is the absolute (per-CPU) address and
  a negative ``off`` means ``base - 1 - off``; the newest kernels drop the base: each ``int`` is
  relative to its own address (``offset_to_ptr``), or, on non-relocatable 32-bit kernels, the
  address itself. The variant is told from the data (a negative offset can only be the per-CPU
  rule) and checked against VMCOREINFO's own ``SYMBOL()`` lines (``_stext``...).

Linux >= 6.0 names the tables in VMCOREINFO (``SYMBOL(kallsyms_names)``...). Older kernels, and
a dom0 inside a Xen host dump (whose VMCOREINFO is not in the dump's notes), are handled by
:mod:`.kallsyms_shape`, which finds the same tables by their shape.

Decoding is vectorised: one pass over the length bytes finds where each name starts, then every
token of every name is expanded by one ``bytes.join`` (about 0.1 s for 100k symbols).
"""

from dataclasses import dataclass, field

import numpy as np

from ..errors import XenscopeError

MAX_SYMBOLS = 4 << 20            # more than any kernel has
MAX_NAMES_BYTES = 64 << 20
TYPE_LETTERS = frozenset(b"ABCDGINPRSTUVWabcdginprstuvw")      # nm's letters the kernel keeps
# VMCOREINFO symbols that kallsyms also lists: the decoded addresses must equal them
CROSS_CHECK = ("_stext", "init_uts_ns", "swapper_pg_dir", "init_top_pgt", "vmap_area_list",
               "node_online_map", "prb", "printk_rb_static", "clear_seq", "node_data", "log_buf",
               "mem_map", "contig_page_data")
TABLES = ("kallsyms_names", "kallsyms_num_syms", "kallsyms_token_table", "kallsyms_token_index")


class KallsymsError(XenscopeError):
    """The kallsyms tables are absent, unreadable or do not decode consistently."""


@dataclass
class Kallsyms:
    """Decoded kallsyms: parallel ``addresses`` (uint64 array), ``names``, ``types`` (one letter
    per symbol), in the kernel's order (by address); ``how`` says how the tables were found and
    the addresses decoded, ``tables`` where each table is."""
    addresses: np.ndarray
    names: list
    types: str
    how: str = ""
    tables: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.names)

    def table(self):
        """``{name: address}``; the first (lowest) of a repeated name wins, as ``kallsyms_lookup_name``."""
        out = {}
        for name, addr in zip(reversed(self.names), reversed(self.addresses.tolist())):
            out[name] = addr
        return out

    def text_pairs(self):
        """``(address, name or None)`` for :meth:`xenstructs.stack.TextSymbols.add` (None: not text)."""
        return [(a, n if t in "Tt" else None)
                for a, n, t in zip(self.addresses.tolist(), self.names, self.types)]

    def lines(self):
        """``/proc/kallsyms``-style lines ``ADDRESS TYPE NAME`` (the kernel's own symbols)."""
        return [f"{a:016x} {t} {n}" for a, t, n in zip(self.addresses.tolist(), self.types, self.names)]


# ---------------------------------------------------------------------------------------------
# Decoding (pure functions over bytes: the unit tests feed them tables built from the format)
# ---------------------------------------------------------------------------------------------

def tokens_of(token_table, token_index):
    """The 256 tokens (bytes) of ``kallsyms_token_table`` indexed by ``kallsyms_token_index``.

    :raises KallsymsError: an index outside the table or a token without its NUL
    """
    idx = np.frombuffer(bytes(token_index[:512]), dtype="<u2").tolist()
    if len(idx) != 256:
        raise KallsymsError("kallsyms_token_index is not 256 entries")
    out = []
    for off in idx:
        end = token_table.find(b"\0", off)
        if off >= len(token_table) or end < 0:
            raise KallsymsError(f"kallsyms token at offset {off} is outside kallsyms_token_table")
        out.append(bytes(token_table[off:end]))
    return out


def name_starts(names, count, big):
    """``(starts, header sizes, end)``: where each of ``count`` entries of ``names`` begins, its
    length-header size (1, or 2 for a "big" entry when ``big``), and the offset after the last.

    :raises KallsymsError: when the entries run past the end of ``names``
    """
    starts = np.empty(count, dtype=np.int64)
    heads = np.ones(count, dtype=np.int8)
    data = names
    limit = len(data)
    off = 0
    for i in range(count):
        if off >= limit:
            raise KallsymsError(f"kallsyms_names ends after {i} of {count} symbols")
        n = data[off]
        starts[i] = off
        if big and n & 0x80:
            if off + 1 >= limit:
                raise KallsymsError(f"kallsyms_names ends inside symbol {i}")
            n = (n & 0x7F) | (data[off + 1] << 7)
            heads[i] = 2
            off += 2 + n
        else:
            off += 1 + n
        if n == 0:
            raise KallsymsError(f"kallsyms symbol {i} has length 0")
    if off > limit:
        raise KallsymsError(f"kallsyms_names ends inside symbol {count - 1}")
    return starts, heads, off


def expand(ids, tokens):
    """``b"".join(tokens[i] for i in ids)``, with numpy: every output byte gathered at once."""
    flat = np.frombuffer(b"".join(tokens), dtype=np.uint8)
    lengths = np.array([len(t) for t in tokens], dtype=np.int64)
    firsts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    per = lengths[ids]
    total = int(per.sum())
    out_starts = np.cumsum(per) - per                   # where each token lands in the output
    shift = np.repeat(firsts[ids] - out_starts, per)
    return flat[np.arange(total, dtype=np.int64) + shift].tobytes()


def decode_names(names, count, tokens, big):
    """``(types, names, end)`` of ``count`` compressed entries of ``names`` (bytes).

    :raises KallsymsError: when an entry does not expand to a type letter and a name
    """
    if not 0 < count <= MAX_SYMBOLS:
        raise KallsymsError(f"kallsyms_num_syms = {count} is not a symbol count")
    starts, heads, end = name_starts(names, count, big)
    ids = np.frombuffer(names[:end], dtype=np.uint8).astype(np.int16)
    ids[starts] = 256                                   # the separator token
    second = starts[heads == 2] + 1
    ids[second] = 257                                   # a big entry's second length byte
    parts = expand(ids, list(tokens) + [b"\0", b""]).split(b"\0")[1:]
    if len(parts) != count:
        raise KallsymsError(f"kallsyms names expand to {len(parts)} entries, not {count}")
    types = bytes(p[0] if p else 0 for p in parts)
    bad = next((i for i, p in enumerate(parts) if len(p) < 2 or p[0] not in TYPE_LETTERS), None)
    if bad is not None:
        raise KallsymsError(f"kallsyms symbol {bad} expands to {parts[bad][:40]!r}: no type letter and name")
    return types.decode("ascii"), [p[1:].decode("utf-8", "replace") for p in parts], end


def decode_addresses(raw, kind, base=None, table_va=None, pointer_size=8):
    """Addresses (uint64 array) from the raw address table ``raw`` (bytes) of one ``kind``:

    * ``"absolute"``: ``kallsyms_addresses``, pointers of ``pointer_size``;
    * ``"relative"``: ``kallsyms_offsets`` with ``base`` = ``kallsyms_relative_base`` (the
      absolute-per-CPU rule when any offset is negative);
    * ``"place-relative"``: ``kallsyms_offsets`` at ``table_va``, each relative to itself;
    * ``"u32"``: ``kallsyms_offsets`` holding the addresses (non-relocatable 32-bit kernels).

    :return: ``(addresses, rule)`` where rule names the arithmetic used
    """
    mask = np.uint64((1 << (8 * pointer_size)) - 1)
    if kind == "absolute":
        arr = np.frombuffer(raw, dtype="<u8" if pointer_size == 8 else "<u4").astype(np.uint64)
        return arr, "kallsyms_addresses"
    off = np.frombuffer(raw, dtype="<i4").astype(np.int64)
    if kind == "relative":
        if (off < 0).any():
            rel = (np.uint64(base) - np.uint64(1) - off.astype(np.uint64)) & mask
            out = np.where(off >= 0, off.astype(np.uint64), rel)
            return out, "absolute per-CPU: offset >= 0 absolute, else relative_base - 1 - offset"
        return (np.uint64(base) + (off & 0xFFFFFFFF).astype(np.uint64)) & mask, "relative_base + (u32)offset"
    if kind == "place-relative":
        places = np.uint64(table_va) + np.arange(len(off), dtype=np.uint64) * np.uint64(4)
        return (places + off.astype(np.uint64)) & mask, "&offset + offset (place-relative)"
    if kind == "u32":
        return (off & 0xFFFFFFFF).astype(np.uint64), "(u32)offset"
    raise ValueError(kind)


def big_names(osrelease):
    """Whether ``kallsyms_names`` uses the two-byte "big" lengths (Linux >= 6.1), by release text;
    None when it does not say."""
    import re
    m = re.match(r"(\d+)\.(\d+)", osrelease or "")
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2))) >= (6, 1)


# ---------------------------------------------------------------------------------------------
# From VMCOREINFO
# ---------------------------------------------------------------------------------------------

def read_token_tables(mem, table_va, index_va):
    """The 256 tokens, read from the dump."""
    index = mem.read(index_va, 512)
    last = int.from_bytes(index[510:512], "little")
    # the last token ends with the table: read up to it plus the longest token a name can need
    table = mem.read(table_va, last + 1)
    rest = mem.cstring(table_va + last, 1024)
    return tokens_of(table[:last] + rest + b"\0", index)


def read_names(mem, names_va, count, tokens, big, limit_va=None):
    """``(types, names, end)`` read from ``names_va``; the read stops at ``limit_va`` (the next
    table, when it follows) or grows until every entry is in."""
    size = (limit_va - names_va) if limit_va and 0 < limit_va - names_va <= MAX_NAMES_BYTES \
        else min(MAX_NAMES_BYTES, count * 24)
    while True:
        data = mem.read(names_va, size)
        try:
            return decode_names(data, count, tokens, big)
        except KallsymsError as e:
            if "ends" not in str(e) or size >= MAX_NAMES_BYTES or limit_va:
                raise
            size = min(MAX_NAMES_BYTES, size * 2)


def from_vmcoreinfo(mem, vi):
    """:class:`Kallsyms` of the kernel whose VMCOREINFO is ``vi``, read through ``mem``
    (:class:`~.vmem.VirtualMemory`).

    :raises KallsymsError: VMCOREINFO lacks the tables (Linux < 6.0), or they do not decode, or
        the result disagrees with VMCOREINFO's other symbols
    """
    where = {name: vi.symbol(name) for name in TABLES + ("kallsyms_offsets", "kallsyms_relative_base",
                                                          "kallsyms_addresses")}
    missing = [n for n in TABLES if where[n] is None]
    if missing or (where["kallsyms_offsets"] is None and where["kallsyms_addresses"] is None):
        raise KallsymsError(f"VMCOREINFO has no SYMBOL({(missing or ['kallsyms_offsets'])[0]}) "
                            f"(Linux {vi.osrelease or '?'}; the tables are in VMCOREINFO from 6.0)")
    count = mem.u32(where["kallsyms_num_syms"])
    if not 0 < count <= MAX_SYMBOLS:
        raise KallsymsError(f"kallsyms_num_syms = {count} at {where['kallsyms_num_syms']:#x} is not a symbol count")
    tokens = read_token_tables(mem, where["kallsyms_token_table"], where["kallsyms_token_index"])
    big = big_names(vi.osrelease)
    limit = where["kallsyms_token_table"] if where["kallsyms_token_table"] > where["kallsyms_names"] else None
    types, names, _ = read_names(mem, where["kallsyms_names"], count, tokens, True if big is None else big, limit)
    candidates = _address_candidates(mem, where, count)
    checks = {n: vi.symbol(n) for n in CROSS_CHECK if vi.symbol(n) is not None}
    addrs, rule = pick_addresses(candidates, names, checks)
    tables = {k: v for k, v in where.items() if v is not None}
    return Kallsyms(addrs, names, types, f"kallsyms via VMCOREINFO ({rule})", tables)


def _address_candidates(mem, where, count):
    """``[(addresses, rule)]`` for every decoding the located tables allow."""
    ps = mem.ptr_size
    if where["kallsyms_addresses"] is not None:
        return [decode_addresses(mem.read(where["kallsyms_addresses"], count * ps), "absolute", pointer_size=ps)]
    raw = mem.read(where["kallsyms_offsets"], count * 4)
    if where["kallsyms_relative_base"] is not None:
        base = mem.ptr(where["kallsyms_relative_base"])
        return [decode_addresses(raw, "relative", base, pointer_size=ps)]
    out = [decode_addresses(raw, "place-relative", table_va=where["kallsyms_offsets"], pointer_size=ps)]
    if ps == 4:
        out.append(decode_addresses(raw, "u32", pointer_size=ps))
    return out


def pick_addresses(candidates, names, checks):
    """The first candidate ``(addresses, rule)`` that is sorted and agrees with ``checks``
    (``{name: address}`` known independently, e.g. VMCOREINFO's ``SYMBOL()`` lines).

    :raises KallsymsError: naming the first disagreement when none fits
    """
    index = {}
    for i, n in enumerate(names):
        index.setdefault(n, i)
    why = "no address decoding"
    for addrs, rule in candidates:
        if not _sorted_unsigned(addrs):
            why = f"{rule}: addresses not in ascending order"
            continue
        bad = [(n, int(addrs[index[n]]), v) for n, v in checks.items() if n in index and int(addrs[index[n]]) != v]
        if bad:
            n, got, want = bad[0]
            why = f"{rule}: {n} decodes to {got:#x} but the dump says {want:#x}"
            continue
        return addrs, rule
    raise KallsymsError(f"the kallsyms address table does not decode: {why}")


def _sorted_unsigned(addrs):
    return bool((addrs[1:] >= addrs[:-1]).all())
