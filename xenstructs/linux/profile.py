"""Structure offsets and symbols of one Linux build: a small :class:`Profile`.

A real vmlinux is hundreds of MB of DWARF; the kernel helpers need about thirty numbers from it.
:meth:`Profile.from_dwarf` reads them once with pyelftools (only the compilation units needed,
most likely ones first, stopping as soon as every wanted struct is found) and
:meth:`Profile.to_json` saves them with the build-id and banner, so the CLI (``xenscope profile
VMLINUX -o FILE``) and gdb reuse the file. gdb, which has the types already, builds one with
:meth:`Profile.from_callable`. A user can write one by hand (JSON, see :meth:`Profile.to_dict`).

Offsets are keyed ``"struct.member"`` (``"task_struct.pid"``); ``sizes`` holds ``sizeof`` of the
structs (``"module_memory"``), of some members (``"task_struct.comm"``) and array lengths
(``"module.mem.count"``). Symbols are link-time addresses (add the KASLR offset).

The module's memory regions exist in three variants, told apart by which offsets exist
(:attr:`Profile.module_variant`):

* ``old`` (Linux <= 4.4): ``module_core``/``core_size``, ``module_init``/``init_size``
* ``layout`` (4.5 - 6.3): ``core_layout``/``init_layout`` of ``struct module_layout {base, size}``
* ``mem`` (6.4+): ``mem[MOD_MEM_NUM_TYPES]`` of ``struct module_memory {base, size}``
"""

from dataclasses import dataclass, field
import json
import re

from ..errors import XenscopeError
from ..inputs import open_regular

MAX_PROFILE_BYTES = 64 << 20

PROFILE_FORMAT = "xenscope-linux-profile"
PROFILE_VERSION = 1

# struct -> members wanted (dotted paths allowed); those a build lacks are left out.
WANTED = {
    "task_struct": ("tasks", "pid", "tgid", "comm", "mm", "active_mm"),
    "mm_struct": ("pgd",),
    "module": ("list", "name", "state", "mem", "core_layout", "init_layout", "module_core",
               "core_size", "module_init", "init_size", "kallsyms"),
    "mod_kallsyms": ("symtab", "num_symtab", "strtab", "typetab"),
    "module_layout": ("base", "size"),
    "module_memory": ("base", "size"),
    "vmap_area": ("va_start", "va_end", "list", "rb_node", "vm"),
}
# sizes of members kept besides the structs' own sizes
MEMBER_SIZES = ("task_struct.comm", "task_struct.pid", "module.name", "module.core_size",
                "module_layout.size", "module_memory.size")
REQUIRED_STRUCTS = ("task_struct", "mm_struct", "module")
OPTIONAL_STRUCTS = ("vmap_area", "mod_kallsyms")
# Compilation units that define the wanted structs in every kernel: read these first.
LIKELY_CUS = ("init/main.c", "kernel/module/main.c", "kernel/module.c", "mm/vmalloc.c", "kernel/fork.c")
OPTIONAL_CU_BUDGET = 64           # CUs read after the required structs are found, for optional ones

SYMBOLS = ("init_task", "init_mm", "modules", "vmap_area_list", "vmap_area_root", "swapper_pg_dir",
           "init_top_pgt", "init_level4_pgt", "_stext", "_text", "linux_banner", "phys_base",
           "page_offset_base")
MOD_MEM_NAMES = ("text", "data", "rodata", "ro_after_init", "init_text", "init_data", "init_rodata")


@dataclass
class Profile:
    """Offsets, sizes, link-time symbols and where they came from.

    >>> p = Profile({"task_struct.pid": 1208}, meta={"source": "hand"})
    >>> p.offset("task_struct.pid")
    1208
    """
    offsets: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)
    symbols: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    # -- access -------------------------------------------------------------------------------
    def offset(self, key):
        """Offset of ``"struct.member"``.

        :raises XenscopeError: naming the key and the profile's source when it is not known.
        """
        v = self.offsets.get(key)
        if v is None:
            raise XenscopeError(f"the kernel profile ({self.meta.get('source', '?')}) has no offset "
                                f"for {key}: give a vmlinux with DWARF (--vmlinux) or a complete --profile")
        return v

    def has(self, key):
        return key in self.offsets

    def size(self, key, default=None):
        return self.sizes.get(key, default)

    @property
    def module_variant(self):
        """``mem`` (6.4+), ``layout`` (4.5-6.3), ``old`` (<= 4.4), or None when unknown."""
        if "module.mem" in self.offsets and "module_memory.base" in self.offsets:
            return "mem"
        if "module.core_layout" in self.offsets and "module_layout.base" in self.offsets:
            return "layout"
        if "module.module_core" in self.offsets:
            return "old"
        return None

    # -- JSON ---------------------------------------------------------------------------------
    def to_dict(self):
        return {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "meta": dict(self.meta),
                "offsets": dict(sorted(self.offsets.items())), "sizes": dict(sorted(self.sizes.items())),
                "symbols": dict(sorted(self.symbols.items()))}

    def to_json(self, path=None):
        """The profile as JSON text; written to ``path`` too when given."""
        text = json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"
        if path is not None:
            try:
                with open(path, "w") as f:
                    f.write(text)
            except OSError as e:
                raise XenscopeError(f"cannot write {path}: {e.strerror}") from None
        return text

    @classmethod
    def from_dict(cls, d, source="dict"):
        if not isinstance(d, dict) or not isinstance(d.get("offsets", {}), dict):
            raise XenscopeError(f"{source}: not a kernel profile (a JSON object with \"offsets\")")
        if d.get("format", PROFILE_FORMAT) != PROFILE_FORMAT:
            raise XenscopeError(f"{source}: format {d.get('format')!r} is not {PROFILE_FORMAT}")

        def ints(name):
            out = {}
            for k, v in (d.get(name) or {}).items():
                if isinstance(v, str):
                    try:
                        v = int(v, 0)
                    except ValueError:
                        v = None
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    raise XenscopeError(f"{source}: {name}[{k!r}] = {v!r} is not a non-negative integer")
                out[str(k)] = v
            return out
        meta = dict(d.get("meta") or {})
        meta.setdefault("source", source)
        return cls(ints("offsets"), ints("sizes"), ints("symbols"), meta)

    @classmethod
    def from_json(cls, path):
        """Read a profile written by :meth:`to_json` (or by hand: ``offsets`` is enough)."""
        try:
            with open_regular(path, "r", errors="replace") as f:
                text = f.read(MAX_PROFILE_BYTES + 1)
            if len(text) > MAX_PROFILE_BYTES:
                raise XenscopeError(f"profile {path} is over {MAX_PROFILE_BYTES >> 20} MiB: not "
                                    "a profile (xenscope profile writes a few KiB)")
            d = json.loads(text)
        except OSError as e:
            raise XenscopeError(f"cannot read profile {path}: {e.strerror}") from None
        except ValueError as e:
            raise XenscopeError(f"profile {path} is not JSON: {e}") from None
        p = cls.from_dict(d, source=str(path))
        p.meta["file"] = str(path)
        return p

    # -- gdb ----------------------------------------------------------------------------------
    @classmethod
    def from_callable(cls, offset_of, size_of=None, symbol_of=None, meta=None):
        """Build a profile by asking: ``offset_of(struct, member) -> int`` (None or an exception
        when the member does not exist), ``size_of("struct")``/``size_of("struct.member")`` and
        ``symbol_of(name)`` likewise. The gdb layer passes functions over ``gdb.lookup_type``.
        """
        def ask(fn, *a):
            if fn is None:
                return None
            try:
                v = fn(*a)
            except Exception:                       # noqa: BLE001 - "not there" in any form
                return None
            return int(v) if v is not None else None
        offsets, sizes, symbols = {}, {}, {}
        for struct, members in WANTED.items():
            s = ask(size_of, struct)
            if s is not None:
                sizes[struct] = s
            for m in members:
                v = ask(offset_of, struct, m)
                if v is not None:
                    offsets[f"{struct}.{m}"] = v
        for key in MEMBER_SIZES + ("module.mem",):
            s = ask(size_of, key)
            if s is not None:
                sizes[key] = s
        if "module.mem" in sizes and sizes.get("module_memory"):
            sizes["module.mem.count"] = sizes.pop("module.mem") // sizes["module_memory"]
        else:
            sizes.pop("module.mem", None)
        for name in SYMBOLS:
            v = ask(symbol_of, name)
            if v is not None:
                symbols[name] = v
        m = {"source": "callable"}
        m.update(meta or {})
        return cls(offsets, sizes, symbols, m)

    # -- DWARF --------------------------------------------------------------------------------
    @classmethod
    def from_dwarf(cls, path, symbols=True):
        """Read the offsets from the DWARF (4 or 5) of ``path`` (a vmlinux, or any ELF with the
        structs), plus its symbols, build-id and banner. Reads only the compilation units needed.

        :raises XenscopeError: no DWARF, or no definition of ``task_struct``/``mm_struct``/``module``.
        """
        return _from_dwarf(cls, path, symbols)

    # -- BTF ----------------------------------------------------------------------------------
    @classmethod
    def from_btf(cls, target, symbols=None, resolve_args=None):
        """The offsets from the kernel's own BTF in the dump ``target`` (``__start_BTF`` ..
        ``__stop_BTF``, located by the dump's kallsyms, else by ``symbols``); no symbols.
        ``meta["source"]`` starts with "offsets from BTF in the dump".

        :raises XenscopeError: no BTF in the dump, or not the structs needed
        """
        from .fromdump import btf_profile_of
        return btf_profile_of(target, symbols, resolve_args)


# ---------------------------------------------------------------------------------------------
# DWARF reader
# ---------------------------------------------------------------------------------------------

def _array_count(die):
    """Element count of an array type DIE (first dimension), or None."""
    for sub in die.iter_children():
        if sub.tag != "DW_TAG_subrange_type":
            continue
        a = sub.attributes
        if "DW_AT_count" in a and isinstance(a["DW_AT_count"].value, int):
            return a["DW_AT_count"].value
        if "DW_AT_upper_bound" in a and isinstance(a["DW_AT_upper_bound"].value, int):
            return a["DW_AT_upper_bound"].value + 1
        return None
    return None


def _struct_info(die, members):
    from ..xen.dwarf import _member_path, _strip, _type_size
    offsets, sizes = {}, {}
    sname = _dname(die)
    sizes[sname] = die.attributes["DW_AT_byte_size"].value
    for m in members:
        r = _member_path(die, m)
        if r is None:
            continue
        off, member = r
        offsets[f"{sname}.{m}"] = off
        if "DW_AT_type" not in member.attributes:
            continue
        t = member.get_DIE_from_attribute("DW_AT_type")
        sz = _type_size(t)
        st = _strip(t)
        if st is not None and st.tag == "DW_TAG_array_type":
            count = _array_count(st)
            if count is not None:
                sizes[f"{sname}.{m}.count"] = count
            el = _type_size(st.get_DIE_from_attribute("DW_AT_type")) if "DW_AT_type" in st.attributes else None
            if sz is None and el is not None and count is not None:
                sz = el * count
        if sz is not None and f"{sname}.{m}" in MEMBER_SIZES + ("module.mem",):
            sizes[f"{sname}.{m}"] = sz
    sizes.pop("module.mem", None)
    return offsets, sizes


def _dname(die):
    a = die.attributes.get("DW_AT_name")
    if a is None:
        return None
    v = a.value
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def _elf_meta(elf):
    """(build-id hex or None, {wanted symbol: address}, banner text or None)."""
    build_id = None
    sec = elf.get_section_by_name(".note.gnu.build-id")
    if sec is not None:
        for note in sec.iter_notes():
            if note["n_type"] == "NT_GNU_BUILD_ID":
                build_id = note["n_desc"] if isinstance(note["n_desc"], str) else bytes(note["n_desc"]).hex()
    syms = {}
    symtab = elf.get_section_by_name(".symtab")
    if symtab is not None:
        wanted = set(SYMBOLS)
        for s in symtab.iter_symbols():
            if s.name in wanted and s.name not in syms and s["st_shndx"] != "SHN_UNDEF":
                syms[s.name] = s["st_value"]
    banner = None
    if "linux_banner" in syms:
        addr = syms["linux_banner"]
        for sec in elf.iter_sections():
            a, n = sec["sh_addr"], sec["sh_size"]
            if a and a <= addr < a + n and sec["sh_type"] != "SHT_NOBITS":
                data = sec.data()[addr - a:addr - a + 512]
                banner = data.split(b"\0", 1)[0].decode("utf-8", "replace") or None
                break
    return build_id, syms, banner


def kernel_version_of(banner):
    """``"6.1.0-18-amd64"`` from ``"Linux version 6.1.0-18-amd64 (...)"``, or None."""
    m = re.match(r"Linux version (\S+)", banner or "")
    return m.group(1) if m else None


def _from_dwarf(cls, path, want_symbols):
    from ..formats.dwarf import dwarf_of
    offsets, sizes, found = {}, {}, set()
    with dwarf_of(path, "build with CONFIG_DEBUG_INFO, or use the distribution's debug package "
                        "(vmlinux-dbg)") as (elf, dwarf):
        cus = list(dwarf.iter_CUs())
        names = []
        for cu in cus:
            try:
                names.append(_dname(cu.get_top_DIE()) or "")
            except Exception:                    # noqa: BLE001 - a CU we cannot parse: try it last
                names.append("")

        def rank(i):
            for r, likely in enumerate(LIKELY_CUS):
                if names[i].endswith(likely):
                    return r
            return len(LIKELY_CUS)
        order = sorted(range(len(cus)), key=rank)
        need = set(REQUIRED_STRUCTS)
        budget, ncus = None, 0
        for i in order:
            ncus += 1
            for die in cus[i].get_top_DIE().iter_children():
                if die.tag != "DW_TAG_structure_type":
                    continue
                name = _dname(die)
                if name not in WANTED or name in found:
                    continue
                if "DW_AT_declaration" in die.attributes or "DW_AT_byte_size" not in die.attributes:
                    continue
                o, s = _struct_info(die, WANTED[name])
                offsets.update(o)
                sizes.update(s)
                found.add(name)
                if name == "module":
                    if "module.mem" in o:
                        need.add("module_memory")
                    elif "module.core_layout" in o:
                        need.add("module_layout")
            if need <= found:
                if all(s in found for s in OPTIONAL_STRUCTS):
                    break
                budget = OPTIONAL_CU_BUDGET if budget is None else budget - 1
                if budget <= 0:
                    break
        missing = [s for s in need if s not in found]
        if missing:
            raise XenscopeError(f"{path}: no definition of struct {', '.join(sorted(missing))} in "
                                f"its DWARF (not a vmlinux?)")
        build_id, syms, banner = _elf_meta(elf) if want_symbols else (None, {}, None)
        dwarf_version = cus[order[0]].header["version"] if cus else None
    # drop struct sizes of variants this build does not use
    meta = {"source": f"DWARF of {path}", "vmlinux": str(path), "build_id": build_id, "banner": banner,
            "kernel_version": kernel_version_of(banner), "dwarf_version": dwarf_version,
            "cus_read": ncus, "cus_total": len(cus)}
    return cls(offsets, sizes, syms, meta)


# ---------------------------------------------------------------------------------------------
# Symbols
# ---------------------------------------------------------------------------------------------

@dataclass
class Symbols:
    """Symbol addresses and whether they are already relocated (runtime values: kallsyms,
    VMCOREINFO) or link-time (vmlinux, System.map: add the KASLR offset). ``kallsyms`` is the
    decoded :class:`~.kallsyms.Kallsyms` when the table came from the dump."""
    table: dict = field(default_factory=dict)
    relocated: bool = False
    source: str = "none"
    kallsyms: object = None

    def get(self, name):
        return self.table.get(name)

    def __contains__(self, name):
        return name in self.table

    @classmethod
    def from_text(cls, text, relocated, source):
        """Parse ``ADDRESS TYPE NAME [\\[module\\]]`` lines (System.map, /proc/kallsyms); module
        symbols and unparsable lines are skipped, the first definition of a name wins."""
        table = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or len(parts) > 3 and parts[3].startswith("["):
                continue
            try:
                addr = int(parts[0], 16)
            except ValueError:
                continue
            if parts[1] in ("U", "u", "w", "v") and addr == 0:
                continue
            table.setdefault(parts[2], addr)
        return cls(table, relocated, source)

    @classmethod
    def from_file(cls, path, relocated=None):
        """System.map (link-time) or a saved /proc/kallsyms (runtime; told apart by its name or,
        failing that, by lower-case ``t`` symbols with ``[module]`` suffixes)."""
        try:
            with open_regular(path, "r", errors="replace") as f:
                text = f.read(64 << 20)
        except OSError as e:
            raise XenscopeError(f"cannot read {path}: {e.strerror}") from None
        if relocated is None:
            relocated = "kallsyms" in str(path) or bool(re.search(r"^\S+ \w \S+\s+\[\S+\]$", text, re.M))
        s = cls.from_text(text, relocated, f"{'kallsyms' if relocated else 'System.map'} {path}")
        if not s.table:
            raise XenscopeError(f"{path}: no symbols (expected 'ADDRESS TYPE NAME' lines)")
        return s

    @classmethod
    def from_dump(cls, target, resolve_args=None):
        """Every kernel symbol from the dump itself: its kallsyms tables (runtime addresses).
        ``source`` is "from the dump (kallsyms via VMCOREINFO)" (or "... found by shape").

        :raises XenscopeError: (a :class:`~.kallsyms.KallsymsError`) saying why not
        """
        from .fromdump import kallsyms_of
        k = kallsyms_of(target, resolve_args)
        table = k.table()
        note = ", text symbols only: CONFIG_KALLSYMS_ALL off" if _text_only(k, table) else ""
        where = "the running kernel" if hasattr(target, "own_kallsyms") else "the dump"
        return cls(table, True, f"from {where} ({k.how.split(' (')[0]}{note})", k)

    @classmethod
    def from_vmcoreinfo(cls, vi):
        return cls(vi.symbols(), True, "VMCOREINFO")

    @classmethod
    def from_profile(cls, profile):
        return cls(dict(profile.symbols), False, profile.meta.get("source", "profile"))


def _text_only(kallsyms, table):
    """Whether every symbol is in ``[_stext, _etext]`` or ``[_sinittext, _einittext]``: what
    ``scripts/kallsyms.c`` keeps without ``--all-symbols`` (``CONFIG_KALLSYMS_ALL`` off)."""
    import numpy as np
    ends = [table.get(n) for n in ("_stext", "_etext", "_sinittext", "_einittext")]
    if None in ends:
        return False
    a = kallsyms.addresses
    inside = ((a >= np.uint64(ends[0])) & (a <= np.uint64(ends[1]))) | \
        ((a >= np.uint64(ends[2])) & (a <= np.uint64(ends[3])))
    return bool(inside.all())
