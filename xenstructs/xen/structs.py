"""The structure offsets of one Xen host, each with where it came from: the one place every analysis
asks (``host.structs.get("domain", "tot_pages")``).

Sources, first that knows a member wins:

1. xen-syms' DWARF (``--xen-syms`` of a build with debug info);
2. VMCOREINFO_XEN (a Xen kdump: ``OFFSET(domain.domain_id)``, ``next_in_list``);
3. a profile (:mod:`.profile`): ``--xen-syms FILE.json``, or one shipped with xenscope for the build-id
   of the dump's own image;
4. the dump itself (:mod:`.invariants`), for what none of those gives.

``struct grant_table``/``active_grant_entry`` and the privilege members also have the per-release table
of :mod:`.domain_layouts` (checked against the dump there) when none of these gives them.
"""

from dataclasses import dataclass, field

from ..errors import XenscopeError

VMCOREINFO_MEMBERS = ("domain_id", "next_in_list", "max_vcpus", "vcpu", "shared_info", "tot_pages",
                      "max_pages", "is_privileged", "grant_table")


@dataclass
class StructOffsets:
    """``values``: ``{struct: {member: offset}}``; ``origin``: ``{"struct.member": source name}``;
    ``sources``: ``{source name: text}``; ``notes``: disagreements between sources."""
    values: dict = field(default_factory=dict)
    origin: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    found: object = None            # the :class:`~.invariants.Found` of the dump search, when run

    def add(self, offsets, name, text):
        """Take the members of ``offsets`` (``{struct: {member: offset}}``) not known yet from ``name``."""
        took = 0
        for struct_name, members in (offsets or {}).items():
            for member, off in members.items():
                key = f"{struct_name}.{member}"
                if key in self.origin:
                    have = self.values[struct_name][member]
                    if have != off and member != "size":
                        self.notes.append(f"{key}: +{have} ({self.origin[key]}) but +{off} in {name}")
                    continue
                self.values.setdefault(struct_name, {})[member] = off
                self.origin[key] = name
                took += 1
        if took:
            self.sources[name] = text

    def get(self, struct_name, member):
        return self.values.get(struct_name, {}).get(member)

    def source(self, struct_name, member):
        return self.origin.get(f"{struct_name}.{member}")

    def describe(self):
        """One line: each source and the members it gave."""
        parts = []
        for name, text in self.sources.items():
            members = sorted(k for k, v in self.origin.items() if v == name and not k.endswith(".size"))
            if len(members) > 12:
                structs = sorted({m.split(".", 1)[0] for m in members})
                parts.append(f"{text}: {len(members)} members of struct {', '.join(structs)}")
            else:
                parts.append(f"{text}: {', '.join(members)}")
        return "; ".join(parts + self.notes) or "none known"


def _vmcoreinfo(vi):
    out = {}
    for member in VMCOREINFO_MEMBERS:
        off = vi.offset("domain", member)
        if off is not None:
            out.setdefault("domain", {})[member] = off
    return out


def profile_of(host):
    """The profile that applies to ``host``: the one given (``--xen-syms FILE.json``), else the
    shipped one for its image's build-id; ``(profile or None, why)``."""
    from . import profile
    given = getattr(host, "profile", None)
    build_id = host.build_id
    if given is not None:
        if build_id and given.build_ids and build_id not in given.build_ids:
            raise XenscopeError(f"{given.path}: a profile of build-id {given.build_ids[0]}, but the dump's Xen "
                                f"is build-id {build_id}")
        return given, f"profile {given.name}"
    if build_id is None:
        return None, "no build-id note found in the image"
    found = profile.shipped().get(build_id)
    if found is None:
        return None, f"no shipped profile for build-id {build_id}"
    return found, f"shipped profile {found.name}"


def resolve(host, want=None):
    """The :class:`StructOffsets` of ``host``; ``want``: ``"struct.member"`` names the caller needs
    (the dump is searched only for those none of the other sources gives; None: every rule)."""
    s = StructOffsets()
    if host.dwarf:
        s.add({k: v for k, v in host.dwarf.items() if k != "page_info"}, "dwarf", f"{host.syms_path} DWARF")
    if host.vi is not None:
        s.add(_vmcoreinfo(host.vi), "vmcoreinfo", "VMCOREINFO_XEN")
    try:
        prof, why = profile_of(host)
    except XenscopeError as e:
        prof, why = None, str(e)
        s.notes.append(why)
    if prof is not None:
        from .dwarf import check_layout
        bad = check_layout(host.layout, prof.structs) if getattr(host, "layout", None) else []
        if bad:
            raise XenscopeError(f"{why} disagrees with layout {host.layout.name}: {bad[0]}")
        s.add(prof.structs, "profile", why)
    from .invariants import DISCOVERABLE, discover
    missing = [w for w in (want or ()) if s.get(*w.split(".", 1)) is None and w in DISCOVERABLE]
    if want is None or missing:
        found = discover(host, None if want is None else missing)
        s.add(found.values, "dump", "found in the dump")
        s.found = found
    return s
