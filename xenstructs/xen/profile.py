"""Xen profiles: the structure offsets of one hypervisor build, keyed by its build-id.

A profile is a small JSON file (``FORMAT``)::

    {"format": "xenscope-xen-profile/1", "xen": "4.17.5", "build_ids": ["39a640e6..."],
     "structs": {"domain": {"size": 3712, "domain_id": 0, "tot_pages": 88, ...}, "vcpu": {...},
                 "page_info": {...}, "grant_table": {...}, "active_grant_entry": {...}},
     "made_from": "how it was made and checked"}

``xenscope profile XEN-SYMS`` makes one from a xen-syms with DWARF (:func:`from_xen_syms`); give it to the
Xen commands with ``--xen-syms FILE.json``. Profiles shipped in ``xenstructs/xen/profiles/`` are found by
the build-id of the dump's own image (:func:`shipped`): a dump of such a build needs no file at all.
"""

import json
import os

from ..errors import XenscopeError

FORMAT = "xenscope-xen-profile/1"
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profiles")
MAX_PROFILE = 1 << 20


class XenProfile:
    """One profile: ``xen`` (version), ``build_ids``, ``structs`` (``{struct: {member: offset}}``),
    ``made_from`` (text), ``path`` (the file, or None)."""

    def __init__(self, xen, build_ids, structs, made_from="", path=None):
        self.xen, self.build_ids, self.structs = xen, list(build_ids), structs
        self.made_from, self.path = made_from, path

    @property
    def name(self):
        where = os.path.basename(self.path) if self.path else "profile"
        return f"{where} (Xen {self.xen or '?'}, build-id {self.build_ids[0][:12] if self.build_ids else '?'})"

    def to_dict(self):
        return {"format": FORMAT, "xen": self.xen, "build_ids": self.build_ids, "structs": self.structs,
                "made_from": self.made_from}

    def to_json(self, path):
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1, sort_keys=True)
            f.write("\n")


def _checked(data, path):
    """A :class:`XenProfile` from parsed JSON ``data``, refused unless it has the profile's shape."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise XenscopeError(f"{path}: not a xenscope Xen profile (format {FORMAT})")
    structs = data.get("structs")
    ids = data.get("build_ids")
    if not isinstance(structs, dict) or not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise XenscopeError(f"{path}: a Xen profile needs 'structs' and 'build_ids'")
    for name, members in structs.items():
        if not isinstance(members, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 20 for v in members.values()):
            raise XenscopeError(f"{path}: struct {name!r}: offsets must be small non-negative integers")
    return XenProfile(data.get("xen"), ids, structs, str(data.get("made_from") or ""), path)


def load(path):
    """The :class:`XenProfile` in ``path`` (a JSON file)."""
    from ..inputs import require_regular
    require_regular(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PROFILE + 1)
    except OSError as e:
        raise XenscopeError(f"cannot read {path}: {e.strerror}")
    if len(raw) > MAX_PROFILE:
        raise XenscopeError(f"{path}: more than {MAX_PROFILE} bytes: not a Xen profile")
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise XenscopeError(f"{path}: not JSON ({e})")
    return _checked(data, path)


def is_profile(path):
    """Whether ``path`` starts like JSON (a profile) rather than an ELF or a ``.map`` (refused
    unless it is a regular file: a FIFO would block the read)."""
    from ..inputs import require_regular
    require_regular(path)
    try:
        with open(path, "rb") as f:
            return f.read(64).lstrip()[:1] == b"{"
    except OSError:
        return False


_SHIPPED = None


def shipped():
    """``{build-id: XenProfile}`` of the profiles shipped with xenscope."""
    global _SHIPPED
    if _SHIPPED is None:
        out = {}
        for name in sorted(os.listdir(SHIPPED)) if os.path.isdir(SHIPPED) else ():
            if name.endswith(".json"):
                prof = load(os.path.join(SHIPPED, name))
                for build_id in prof.build_ids:
                    out[build_id] = prof
        _SHIPPED = out
    return _SHIPPED


def _elf_reader(elf):
    """``read(va, size)`` over an ELF's allocated sections (for the version functions)."""
    sections = [s for s in elf.iter_sections() if s["sh_flags"] & 2 and s["sh_type"] == "SHT_PROGBITS"]

    def read(va, size):
        for s in sections:
            if s["sh_addr"] <= va and va + size <= s["sh_addr"] + s["sh_size"]:
                data = s.data()
                return data[va - s["sh_addr"]:va - s["sh_addr"] + size]
        raise XenscopeError(f"{va:#x} is in no section of the ELF file")
    return read


def elf_facts(path):
    """``(build-id hex or None, version or None)`` of a xen-syms ELF: its ``NT_GNU_BUILD_ID`` note and
    what its xen_major/minor/extra_version functions return."""
    from elftools.elf.elffile import ELFFile
    from .image import version_from_code
    from .symbols import load_symbols
    build_id = None
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for section in elf.iter_sections():
            if section["sh_type"] != "SHT_NOTE":
                continue
            for note in section.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID":
                    build_id = note["n_desc"]
        version = version_from_code(_elf_reader(elf), load_symbols(path))
    return build_id, version[0] if version else None


def from_xen_syms(path):
    """The :class:`XenProfile` of a xen-syms with DWARF (the build-id and version its ELF carries)."""
    from .dwarf import GRANTS, WANTED, offsets_from_xen_syms
    structs = offsets_from_xen_syms(path, dict(WANTED, **GRANTS), no_dwarf=(
        "symbols only (a distribution's xen-syms): a profile needs the xen-syms of a build with debug "
        "info; without one, the Xen commands find the offsets they need in the dump itself"))
    missing = [s for s in ("domain", "vcpu") if s not in structs]
    if missing:
        raise XenscopeError(f"{path}: its DWARF defines no struct {', '.join(missing)}")
    build_id, version = elf_facts(path)
    if not build_id:
        raise XenscopeError(f"{path}: no GNU build-id note: a profile could not be matched to a dump")
    return XenProfile(version, [build_id], structs, f"DWARF of {os.path.basename(path)}")


def is_xen_syms(path):
    """Whether ``path`` is a Xen hypervisor ELF (its symbol table has ``xen_major_version``); a path
    that is not a regular file is refused (XenscopeError)."""
    from ..inputs import require_regular
    require_regular(path)
    try:
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return False
            f.seek(0)
            table = ELFFile(f).get_section_by_name(".symtab")
            return table is not None and bool(table.get_symbol_by_name("xen_major_version"))
    except (OSError, ELFError):
        return False
