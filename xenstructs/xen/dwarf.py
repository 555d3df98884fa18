"""Structure offsets from a hypervisor's ``xen-syms`` DWARF (pyelftools, imported lazily).

``offsets_from_xen_syms(path)`` returns::

    {"page_info": {"size": 32, "count_info": 8, "u": 16, "type_info": 16, "v": 24, "_domain": 24,
                   "_domain_size": 4},
     "domain": {"size": ..., "domain_id": 0, "next_in_list": ..., "tot_pages": ..., ...},
     "vcpu": {"size": ..., "vcpu_id": 0, "domain": ..., "arch.user_regs": ..., ...}}

Members the build does not have are left out. Compilation units are walked in order and the walk
stops as soon as complete definitions of all three structs are found (in a real xen-syms nearly
every CU includes ``xen/sched.h``, so that is after the first few).
"""
from ..errors import XenscopeError

# struct name -> {key: member path}
WANTED = {
    "page_info": {"count_info": "count_info", "u": "u", "type_info": "u.inuse.type_info", "v": "v",
                  "_domain": "v.inuse._domain"},
    "domain": {k: k for k in ("domain_id", "max_vcpus", "vcpu", "shared_info", "tot_pages", "xenheap_pages",
                              "outstanding_pages", "max_pages", "extra_pages", "next_in_list", "grant_table",
                              "is_dying", "is_privileged", "target", "guest_type", "options", "arch", "arch.paging.mode",
                              "arch.p2m", "arch.emulation_flags")},
    "vcpu": {k: k for k in ("vcpu_id", "processor", "vcpu_info", "domain", "arch", "arch.user_regs",
                            "arch.flags", "arch.guest_context", "arch.guest_table", "arch.guest_table_user",
                            "arch.cr3", "arch.pv", "arch.hvm.guest_cr", "arch.hvm.hw_cr",
                            "arch.hvm.guest_efer")},
    # the domain's P2M as Xen keeps it for a translated guest (asm/p2m.h): its root and, for EPT, the EPTP
    "p2m_domain": {k: k for k in ("domain", "p2m_class", "phys_table", "ept")},
}
# struct grant_table and struct active_grant_entry are private to xen/common/grant_table.c: only that
# compilation unit defines them (profiles read them; a command reading xen-syms does not wait for it)
GRANTS = {
    "grant_table": {k: k for k in ("gt_version", "nr_grant_frames", "active", "domain")},
    "active_grant_entry": {k: k for k in ("pin", "domid", "mfn")},
}


def _member_location(die):
    loc = die.attributes.get("DW_AT_data_member_location")
    if loc is None:
        return 0                                        # union members
    v = loc.value
    if isinstance(v, int):
        return v
    # DWARF 2 style: an expression, normally DW_OP_plus_uconst <n>
    if isinstance(v, (list, bytes, bytearray)) and len(v) >= 2 and v[0] == 0x23:
        n, shift = 0, 0
        for b in v[1:]:
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        return n
    return None


def _strip(die):
    """Follow typedef/const/volatile to the underlying type DIE."""
    seen = 0
    while die is not None and die.tag in ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type",
                                           "DW_TAG_restrict_type", "DW_TAG_atomic_type") and seen < 32:
        if "DW_AT_type" not in die.attributes:
            return None
        die = die.get_DIE_from_attribute("DW_AT_type")
        seen += 1
    return die


def _name(die):
    a = die.attributes.get("DW_AT_name")
    if a is None:
        return None
    v = a.value
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def _find_member(struct_die, name):
    """(offset, member DIE) of ``name`` in ``struct_die``, looking into anonymous struct/union members."""
    for child in struct_die.iter_children():
        if child.tag != "DW_TAG_member":
            continue
        off = _member_location(child)
        if off is None:
            continue
        cname = _name(child)
        if cname == name:
            return off, child
        if cname is None and "DW_AT_type" in child.attributes:
            inner = _strip(child.get_DIE_from_attribute("DW_AT_type"))
            if inner is not None and inner.tag in ("DW_TAG_structure_type", "DW_TAG_union_type"):
                found = _find_member(inner, name)
                if found is not None:
                    return off + found[0], found[1]
    return None


def _member_path(struct_die, path):
    off, die, member = 0, struct_die, None
    for part in path.split("."):
        found = _find_member(die, part)
        if found is None:
            return None
        off += found[0]
        member = found[1]
        die = _strip(member.get_DIE_from_attribute("DW_AT_type")) if "DW_AT_type" in member.attributes \
            else None
        if die is None:
            break
    return off, member


def _type_size(die):
    die = _strip(die)
    if die is None:
        return None
    a = die.attributes.get("DW_AT_byte_size")
    return a.value if a is not None else None


def _struct_offsets(struct_die, members):
    out = {"size": struct_die.attributes["DW_AT_byte_size"].value}
    for key, path in members.items():
        r = _member_path(struct_die, path)
        if r is not None:
            out[key] = r[0]
            if key == "_domain" and "DW_AT_type" in r[1].attributes:
                out["_domain_size"] = _type_size(r[1].get_DIE_from_attribute("DW_AT_type"))
    return out


NO_DWARF = "symbols only, e.g. a distribution's xen-syms; give the Xen version with --xen instead"


def offsets_from_xen_syms(path, wanted=None, no_dwarf=NO_DWARF):
    """Read struct page_info / domain / vcpu offsets (``wanted``: ``{struct: {key: member path}}``,
    default :data:`WANTED`; add :data:`GRANTS` for the grant structures) from the DWARF of ``path``;
    ``no_dwarf``: what the error says when it has none."""
    wanted = WANTED if wanted is None else wanted
    from ..formats.dwarf import dwarf_of
    with dwarf_of(path, no_dwarf) as (_, dwarf):
        found = {}
        for cu in dwarf.iter_CUs():
            top = cu.get_top_DIE()
            for die in top.iter_children():
                if die.tag != "DW_TAG_structure_type":
                    continue
                name = _name(die)
                if name not in wanted or name in found:
                    continue
                if "DW_AT_declaration" in die.attributes or "DW_AT_byte_size" not in die.attributes:
                    continue
                found[name] = _struct_offsets(die, wanted[name])
            if len(found) == len(wanted):
                break
    if "page_info" not in found:
        raise XenscopeError(f"{path} has no definition of struct page_info in its DWARF (not a xen-syms?)")
    return found


def check_layout(layout, offsets):
    """Compare a :class:`~xenstructs.xen.layouts.Layout` with ``offsets_from_xen_syms()`` output;
    returns a list of one-line mismatch descriptions (empty when they agree)."""
    pi = offsets.get("page_info") or {}
    want = layout.offsets
    out = []
    checks = [("size", "sizeof(struct page_info)", layout.page_info_size),
              ("count_info", "offset of count_info", want["count_info"]),
              ("type_info", "offset of u.inuse.type_info", want["type_info"]),
              ("_domain", "offset of v.inuse._domain", want["domain"]),
              ("_domain_size", "size of v.inuse._domain", layout.domain_width)]
    for key, what, expect in checks:
        got = pi.get(key)
        if got is not None and got != expect:
            out.append(f"{what} is {got} in xen-syms but {expect} in layout {layout.name}")
    return out
