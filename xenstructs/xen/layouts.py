"""Xen x86_64 ``struct page_info`` layouts and the PGT_*/PGC_* bits, per exact Xen release.

Source: ``xen/include/asm-x86/mm.h`` (<= 4.16) / ``xen/arch/x86/include/asm/mm.h`` (4.17+) at the
release tags; summary in the shared reference ``xen-facts.md`` section 1. Bit numbers are
``PG_shift(idx) = 64 - idx``. The bits changed on stable branches through the XSA-402 backports,
so the exact point release decides:

* type_info: T1 4.4-4.9 (4-bit type at 60); T2 4.10 .. 4.13.4/4.14.5/4.15.2/4.16.1 (3-bit type at
  61, PGT_locked bit 60); T3 4.17+ and 4.13.5+/4.14.6+/4.15.3+/4.16.2+ (adds PGT_non_coherent bit 55).
* count_info: C1 4.4-4.13.4 (cacheattr 58-60); C2 4.14.0-4.14.5/4.15.0-4.15.2/4.16.0-4.16.1
  (PGC_extra bit 54); C3 4.17.x and 4.14.6+/4.15.3+/4.16.2+; C3' 4.13.5+ (C3 without PGC_extra);
  C4 4.18-4.21 (PGC_extra 61, PGC_shadowed_pt 57 only with CONFIG_SHADOW_PAGING);
  C5 4.22+ (commit cbb484d008: PGC_need_scrub gets its own bit 57, PGC_shadowed_pt moves to 56).

Pure Python; never imports gdb.
"""

from dataclasses import dataclass, field

from ..errors import XenscopeError
from .release import NEWEST_KNOWN, parse_version

# --- domain ids (xen/include/public/xen.h) -------------------------------------------------
DOMID_FIRST_RESERVED = 0x7FF0
DOMID_SELF = 0x7FF0
DOMID_IO = 0x7FF1
DOMID_XEN = 0x7FF2
DOMID_COW = 0x7FF3
DOMID_INVALID = 0x7FF4
DOMID_IDLE = 0x7FFF

_DOMID_NAMES = {
    DOMID_SELF: "dom_self", DOMID_IO: "dom_io", DOMID_XEN: "dom_xen", DOMID_COW: "dom_cow",
    DOMID_INVALID: "dom_invalid", DOMID_IDLE: "dom_idle",
}


def domid_name(domid):
    """``"d0"``, ``"d12"``, or the name of a special domain (``"dom_xen"``, ``"dom_io"``, ...)."""
    if not isinstance(domid, int) or not 0 <= domid <= 0xFFFF:
        raise XenscopeError(f"domain id {domid!r} is not a 16-bit number")
    if domid in _DOMID_NAMES:
        return _DOMID_NAMES[domid]
    if domid >= DOMID_FIRST_RESERVED:
        return f"domid {domid:#x}"
    return f"d{domid}"


def _bit(n):
    return 1 << n


# --- layouts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TypeLayout:
    """PGT_* bits of ``type_info``. ``types`` maps names to the masked PGT_* values."""
    name: str
    type_shift: int
    type_mask: int
    types: dict = field(hash=False)
    flags: dict = field(hash=False)
    count_mask: int = 0


@dataclass(frozen=True)
class CountLayout:
    """PGC_* bits of ``count_info``.

    ``need_scrub_bit``: mask of PGC_need_scrub -- equal to PGC_allocated (bit 63) from 4.10 to 4.21
    (meaningful only on a free page), its own bit from 4.22, 0 before 4.10.
    """
    name: str
    flags: dict = field(hash=False)
    cacheattr_mask: int = 0
    state_mask: int = 0
    states: dict = field(hash=False, default_factory=dict)
    count_mask: int = 0
    need_scrub_bit: int = 0


_T_FLAGS_COMMON = {"pinned": _bit(59), "validated": _bit(58), "pae_xen_l2": _bit(57), "partial": _bit(56)}

T1 = TypeLayout(
    "T1", 60, 0xF << 60,
    {"none": 0, "l1": 1 << 60, "l2": 2 << 60, "l3": 3 << 60, "l4": 4 << 60,
     "seg_desc": 5 << 60, "writable": 7 << 60, "shared": 8 << 60},
    {"locked": _bit(55), **_T_FLAGS_COMMON},
    (1 << 55) - 1)

_T23_TYPES = {"none": 0, "l1": 1 << 61, "l2": 2 << 61, "l3": 3 << 61, "l4": 4 << 61,
              "seg_desc": 5 << 61, "writable": 7 << 61, "shared": 6 << 61}

T2 = TypeLayout("T2", 61, 0x7 << 61, dict(_T23_TYPES),
                {"locked": _bit(60), **_T_FLAGS_COMMON}, (1 << 56) - 1)
T3 = TypeLayout("T3", 61, 0x7 << 61, dict(_T23_TYPES),
                {"locked": _bit(60), **_T_FLAGS_COMMON, "non_coherent": _bit(55)}, (1 << 55) - 1)


def _states(shift):
    return {"inuse": 0, "offlining": 1 << shift, "offlined": 2 << shift, "free": 3 << shift}


def _c1(need_scrub):
    return CountLayout("C1", {"allocated": _bit(63), "xen_heap": _bit(62), "page_table": _bit(61),
                              "broken": _bit(57)},
                       7 << 58, 3 << 55, _states(55), (1 << 55) - 1,
                       _bit(63) if need_scrub else 0)


C1_OLD = _c1(False)          # 4.4 - 4.9: no PGC_need_scrub
C1 = _c1(True)               # 4.10 - 4.13.4
C2 = CountLayout("C2", {"allocated": _bit(63), "xen_heap": _bit(62), "page_table": _bit(61),
                        "broken": _bit(57), "extra": _bit(54)},
                 7 << 58, 3 << 55, _states(55), (1 << 54) - 1, _bit(63))
C3 = CountLayout("C3", {"allocated": _bit(63), "xen_heap": _bit(62), "page_table": _bit(61),
                        "broken": _bit(60), "extra": _bit(57)},
                 0, 3 << 58, _states(58), (1 << 57) - 1, _bit(63))
C3P = CountLayout("C3'", {"allocated": _bit(63), "xen_heap": _bit(62), "page_table": _bit(61),
                          "broken": _bit(60)},
                  0, 3 << 58, _states(58), (1 << 58) - 1, _bit(63))
C4 = CountLayout("C4", {"allocated": _bit(63), "xen_heap": _bit(62), "extra": _bit(61),
                        "broken": _bit(60), "shadowed_pt": _bit(57)},
                 0, 3 << 58, _states(58), (1 << 57) - 1, _bit(63))
C4_NOSHADOW = CountLayout("C4-noshadow", {"allocated": _bit(63), "xen_heap": _bit(62),
                                          "extra": _bit(61), "broken": _bit(60)},
                          0, 3 << 58, _states(58), (1 << 58) - 1, _bit(63))
C5 = CountLayout("C5", {"allocated": _bit(63), "xen_heap": _bit(62), "extra": _bit(61),
                        "broken": _bit(60), "need_scrub": _bit(57), "shadowed_pt": _bit(56)},
                 0, 3 << 58, _states(58), (1 << 56) - 1, _bit(57))
C5_NOSHADOW = CountLayout("C5-noshadow", {"allocated": _bit(63), "xen_heap": _bit(62),
                                          "extra": _bit(61), "broken": _bit(60),
                                          "need_scrub": _bit(57)},
                          0, 3 << 58, _states(58), (1 << 57) - 1, _bit(57))

TYPE_LAYOUTS = {"T1": T1, "T2": T2, "T3": T3}
COUNT_LAYOUTS = {"C1": C1, "C2": C2, "C3": C3, "C3'": C3P, "C4": C4, "C4-noshadow": C4_NOSHADOW,
                 "C5": C5, "C5-noshadow": C5_NOSHADOW}

OFFSETS_DEFAULT = {"list": 0, "count_info": 8, "type_info": 16, "domain": 24, "last": 28}
OFFSETS_BIGMEM = {"list": 0, "count_info": 16, "type_info": 24, "domain": 32, "last": 40}


@dataclass(frozen=True, repr=False)
class Layout:
    type: TypeLayout
    count: CountLayout
    bigmem: bool = False

    @property
    def page_info_size(self):
        return 48 if self.bigmem else 32

    @property
    def offsets(self):
        return dict(OFFSETS_BIGMEM if self.bigmem else OFFSETS_DEFAULT)

    @property
    def domain_width(self):
        return 8 if self.bigmem else 4

    @property
    def name(self):
        return f"{self.type.name}/{self.count.name}" + ("+BIGMEM" if self.bigmem else "")

    def __str__(self):
        return self.name

    def __repr__(self):
        return f"<Layout {self.name}>"


@dataclass
class Selection:
    layout: Layout
    version: "str | None"
    why: str


# --- versions ----------------------------------------------------------------------------------
# (minor, first point release with XSA-402) for the branches that got the backport
_XSA402 = {13: 5, 14: 6, 15: 3, 16: 2}


def _layout_key(major, minor, point):
    """(type layout, count layout base name) for an exact release."""
    p = point or 0
    if major > 4 or minor >= 22:
        return T3, "C5"
    if minor >= 18:
        return T3, "C4"
    if minor == 17:
        return T3, C3
    if minor in _XSA402:
        if p >= _XSA402[minor]:
            return T3, (C3P if minor == 13 else C3)
        return T2, (C1 if minor == 13 else C2)
    if minor >= 10:
        return T2, C1
    return T1, C1_OLD


def layout_for_version(version, bigmem=False, shadow_paging=True):
    """The :class:`Layout` of Xen ``version`` ("X.Y", "X.Y.Z", "4.17.7+13-g...", "4.13.5-pre").

    "X.Y" without point release means X.Y.0. ``bigmem``: built with CONFIG_BIGMEM (4.6+).
    ``shadow_paging``: CONFIG_SHADOW_PAGING (only matters for 4.18+).
    """
    major, minor, point, _ = parse_version(version)
    if bigmem and (major, minor) < (4, 6):
        raise XenscopeError(f"Xen {version.strip()} has no CONFIG_BIGMEM (it appeared in 4.6.0)")
    t, c = _layout_key(major, minor, point)
    if isinstance(c, str):
        c = COUNT_LAYOUTS[c if shadow_paging else c + "-noshadow"]
    return Layout(t, c, bool(bigmem))


def version_note(version):
    """A caveat about ``version`` for Selection.why, or ``""``."""
    major, minor, point, tail = parse_version(version)
    notes = []
    if point is None and major == 4 and minor in _XSA402:
        notes.append(f"no point release given for {major}.{minor}, assuming {major}.{minor}.0; the point "
                     f"release matters ({major}.{minor}.{_XSA402[minor]}+ has the XSA-402 layout)")
    elif point is not None and tail.lower().startswith("-pre") and major == 4 \
            and _XSA402.get(minor) == point:
        notes.append(f"{major}.{minor}.{point}-pre is a development tree that may predate the XSA-402 "
                     f"backport; assuming {major}.{minor}.{point}")
    if (major, minor) > NEWEST_KNOWN:
        notes.append(f"Xen {major}.{minor} is newer than {NEWEST_KNOWN[0]}.{NEWEST_KNOWN[1]}, "
                     f"assuming its layout")
    return "; ".join(notes)


# --- guessing from a "Bad type" exp value --------------------------------------------------------
_PAE = 1 << 57


def guess_from_exp(exp, saw=None):
    """"T1" or "T2/T3" from the ``exp`` of ``Bad type (saw S != exp E)``, or None.

    ``exp`` is a requested type: a PGT_* type value, optionally with PGT_pae_xen_l2 (only ever with an
    L2 type). Type numbers 1/3/5/7 at bit 60 (or L2|pae 0x22...) are T1 only; 6/A/C/E at the top nibble
    (or L2|pae 0x42...) are T2/T3 only. 0x2.., 0x4.., 0x8.. are valid in both (T1 l2/l4/shared, T2 l1/l2/l4):
    then ``saw`` (the page's type_info from the same line) decides if its top nibble can only be
    one of them, else None.
    """
    if not isinstance(exp, int) or exp < 0 or exp >> 64:
        return None
    pae = exp & _PAE
    rest = exp & ~_PAE
    if rest & ((1 << 60) - 1) or rest == 0:
        return None
    nib = rest >> 60
    if pae:
        return {2: "T1", 4: "T2/T3"}.get(nib)
    if nib in (1, 3, 5, 7):
        return "T1"
    if nib in (6, 0xA, 0xC, 0xE):
        return "T2/T3"
    if nib in (2, 4, 8) and isinstance(saw, int) and 0 <= saw < 1 << 64:
        snib = saw >> 60
        if snib in (1, 3, 5, 7):          # T1 types; on T2/T3 this would need PGT_locked set
            return "T1"
        if snib in (6, 9, 0xA, 0xB, 0xC, 0xD, 0xE, 0xF):   # not a T1 type number
            return "T2/T3"
    return None


# --- choosing ----------------------------------------------------------------------------------
def _vmcoreinfo_bigmem(vmcoreinfo):
    size = vmcoreinfo.size("page_info")
    if size is None:
        return None
    if size not in (32, 48):
        raise XenscopeError(f"VMCOREINFO says SIZE(page_info)={size}, expected 32 or 48 (BIGMEM)")
    return size == 48


def _check_vmcoreinfo(layout, vmcoreinfo):
    want = layout.offsets
    for member, key in (("count_info", "count_info"), ("_domain", "domain")):
        got = vmcoreinfo.offset("page_info", member)
        if got is not None and got != want[key]:
            raise XenscopeError(
                f"VMCOREINFO OFFSET(page_info.{member})={got} does not match layout {layout.name} "
                f"(offset {want[key]})")


def _crash_info_version(crash_info):
    try:
        major, minor = int(crash_info["major"]), int(crash_info["minor"])
    except (KeyError, TypeError, ValueError):
        raise XenscopeError("the dump's Xen crash-info note has no usable major/minor version") from None
    extra = crash_info.get("extra") or ""
    if isinstance(extra, (bytes, bytearray)):
        extra = bytes(extra).split(b"\0", 1)[0].decode("ascii", "replace")
    extra = str(extra).strip()
    if extra and extra[0] not in ".-+~_":
        extra = ""
    return f"{major}.{minor}{extra}"


def select_layout(version=None, vmcoreinfo=None, crash_info=None, bad_type_exp=None, bigmem=None,
                  shadow_paging=True, bad_type_saw=None, version_source=None):
    """Pick the layout: the dump's crash-info note, else ``version`` (--xen), else a guess from a
    "Bad type" exp value. VMCOREINFO_XEN decides BIGMEM (SIZE(page_info)) and is checked against the
    result. ``version_source`` says where ``version`` came from when not from --xen (e.g. the
    banner in Xen's console ring). Returns a :class:`Selection`; raises XenscopeError if nothing
    decides."""
    notes = []
    dump_bigmem = _vmcoreinfo_bigmem(vmcoreinfo) if vmcoreinfo is not None else None
    if dump_bigmem is not None:
        if bigmem is not None and bool(bigmem) != dump_bigmem:
            notes.append(f"BIGMEM={'on' if dump_bigmem else 'off'} from VMCOREINFO overrides the option")
        use_bigmem = dump_bigmem
    else:
        use_bigmem = bool(bigmem)

    chosen = None
    if crash_info is not None:
        chosen = _crash_info_version(crash_info)
        why = f"Xen {chosen} from the dump's crash-info note"
        if version is not None and str(version).strip() != chosen:
            notes.append(f"--xen {version} ignored")
    elif version is not None:
        chosen = str(version).strip()
        why = f"Xen {chosen} from {version_source}" if version_source else f"--xen {chosen}"

    if chosen is not None:
        layout = layout_for_version(chosen, use_bigmem, shadow_paging)
        note = version_note(chosen)
        if note:
            notes.insert(0, note)
        sel_version = chosen
    elif bad_type_exp is not None:
        g = guess_from_exp(bad_type_exp, bad_type_saw)
        if g is None:
            raise XenscopeError(
                f"cannot tell the Xen version from exp {bad_type_exp:#018x} (valid in both the <= 4.9 and "
                f">= 4.10 type layouts); give it with --xen X.Y.Z")
        if g == "T1":
            layout = layout_for_version("4.9", use_bigmem, shadow_paging)
            why = f"guessed: exp {bad_type_exp:#x} is a T1 type (Xen <= 4.9)"
        else:
            layout = layout_for_version("4.17", use_bigmem, shadow_paging)
            why = (f"guessed: exp {bad_type_exp:#x} is a T2/T3 type (Xen >= 4.10); count_info bits assume "
                   f"4.17 (T3/C3), give --xen X.Y.Z for the exact ones")
        sel_version = None
    else:
        raise XenscopeError("the Xen version is not known from the dump; give it with --xen X.Y.Z")

    if vmcoreinfo is not None:
        _check_vmcoreinfo(layout, vmcoreinfo)
        if dump_bigmem is not None:
            notes.append(f"SIZE(page_info)={layout.page_info_size} from VMCOREINFO")
    if notes:
        why += " (" + "; ".join(notes) + ")"
    return Selection(layout, sel_version, why)


# --- decoding ----------------------------------------------------------------------------------
_TYPE_TEXT = {"none": "no type", "l1": "L1 page table", "l2": "L2 page table", "l3": "L3 page table",
              "l4": "L4 page table", "seg_desc": "descriptor (GDT/LDT) page", "writable": "writable page",
              "shared": "shared (copy-on-write) page"}
_STATE_TEXT = {"inuse": "in use", "offlining": "offlining", "offlined": "offlined", "free": "free"}
_CFLAG_TEXT = {"xen_heap": "xen heap", "page_table": "shadowed page table",
               "shadowed_pt": "shadowed page table", "extra": "extra (not refcounted)",
               "need_scrub": "needs scrubbing"}


def _u64(value, what):
    if not isinstance(value, int) or value < 0 or value >> 64:
        raise XenscopeError(f"{what} {value!r} is not a 64-bit value")
    return value


def decode_type(value, layout):
    """Decode ``type_info`` under ``layout`` (a :class:`Layout` or :class:`TypeLayout`)."""
    tl = layout.type if isinstance(layout, Layout) else layout
    value = _u64(value, "type_info")
    tv = value & tl.type_mask
    name = next((n for n, v in tl.types.items() if v == tv), f"unknown({tv >> tl.type_shift})")
    flags = [n for n, m in tl.flags.items() if value & m]
    count = value & tl.count_mask
    text = ", ".join([_TYPE_TEXT.get(name, f"unknown type {tv >> tl.type_shift}")]
                     + [f.replace("_", " ") if f != "pae_xen_l2" else "PAE Xen L2" for f in flags]
                     + [f"type count {count}"])
    return {"value": value, "type": name, "type_value": tv, "type_index": tv >> tl.type_shift,
            "flags": flags, "count": count, "text": text}


def decode_count(value, layout):
    """Decode ``count_info`` under ``layout`` (a :class:`Layout` or :class:`CountLayout`)."""
    cl = layout.count if isinstance(layout, Layout) else layout
    value = _u64(value, "count_info")
    sv = value & cl.state_mask
    state = next(n for n, v in cl.states.items() if v == sv)
    flags = []
    for n, m in cl.flags.items():
        if not value & m:
            continue
        if n == "allocated" and state == "free" and cl.need_scrub_bit == m:
            n = "need_scrub"          # PGC_need_scrub aliases PGC_allocated on a free page (4.10-4.21)
        flags.append(n)
    count = value & cl.count_mask
    cacheattr = ((value & cl.cacheattr_mask) >> 58) if cl.cacheattr_mask else None
    parts = [_CFLAG_TEXT.get(f, f) for f in flags] + [_STATE_TEXT[state]]
    if cacheattr:
        parts.append(f"cacheattr {cacheattr}")
    parts.append(f"count {count}")
    return {"value": value, "flags": flags, "state": state, "count": count, "cacheattr": cacheattr,
            "text": ", ".join(parts)}


# --- struct page_info ----------------------------------------------------------------------------
_STRUCTS = {}


def page_info_struct(layout):
    """A construct Struct for one ``struct page_info`` (32 bytes, or 48 with BIGMEM)."""
    import construct          # here, not at the top: loading the commands (gdb start-up) stays cheap
    big = layout.bigmem if isinstance(layout, Layout) else bool(layout)
    if big not in _STRUCTS:
        word = construct.Int64ul if big else construct.Int32ul
        _STRUCTS[big] = construct.Struct(
            "list_next" / word,                 # page_list_entry.next (pdx; pointer with BIGMEM)
            "list_prev" / word,
            "up" / construct.Computed(lambda ctx: ctx.list_next if big else ctx.list_next | ctx.list_prev << 32),
            "count_info" / construct.Int64ul,
            "type_info" / construct.Int64ul,            # u.inuse.type_info (u.sh / u.free share the word)
            "domain" / word,                    # v.inuse._domain: pdx of the owner's struct domain page
            "last" / word,                      # tlbflush_timestamp / nr_validated_ptes... / next_shadow
        )
    return _STRUCTS[big]


def parse_page_info(data, layout):
    """Parse one ``struct page_info`` from ``data``; adds decoded ``"count"`` and ``"type"``."""
    size = layout.page_info_size
    if data is None or len(data) < size:
        raise XenscopeError(f"struct page_info needs {size} bytes, got {0 if data is None else len(data)}")
    c = page_info_struct(layout).parse(bytes(data[:size]))
    out = {k: v for k, v in c.items() if not k.startswith("_")}
    out["count"] = decode_count(out["count_info"], layout)
    out["type"] = decode_type(out["type_info"], layout)
    return out


__all__ = [
    "TypeLayout", "CountLayout", "Layout", "Selection", "layout_for_version", "select_layout",
    "guess_from_exp", "decode_type", "decode_count", "page_info_struct", "parse_page_info",
    "version_note", "domid_name", "DOMID_SELF", "DOMID_IO", "DOMID_XEN", "DOMID_COW",
    "DOMID_INVALID", "DOMID_IDLE", "T1", "T2", "T3", "C1", "C2", "C3", "C3P", "C4", "C4_NOSHADOW",
    "C5", "C5_NOSHADOW",
]
