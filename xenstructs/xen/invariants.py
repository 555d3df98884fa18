"""``struct domain`` / ``struct vcpu`` member offsets found in the dump itself, from what must hold in
any running Xen (used when neither DWARF nor a profile gives them; tests check them against both).

Each rule names the values it reads and keeps an offset only when exactly one fits (every domain or
vCPU it can check must agree); otherwise the member stays unknown and ``why`` says so:

* ``domain.domain_id``: the special domains at the symbols ``dom_xen``, ``dom_io`` (and ``dom_cow``)
  hold DOMID_XEN 0x7FF2, DOMID_IO 0x7FF1 (DOMID_COW 0x7FF3), and the idle domain DOMID_IDLE 0x7FFF;
* ``vcpu.domain``, ``domain.vcpu``, ``domain.max_vcpus``: ``idle_vcpu[0]`` (a symbol) points at a
  vCPU of the idle domain, whose ``vcpu`` array IS ``idle_vcpu`` (``idle_domain->vcpu = idle_vcpu``,
  ``max_vcpus = nr_cpu_ids``: xen/common/sched/core.c, schedule.c before 4.13); ``max_vcpus`` is
  looked for among the first members only (it follows ``domain_id`` from 4.10);
* ``vcpu.vcpu_id``: every vCPU found sits at its own index of its domain's array;
* ``domain.next_in_list``: ``domain_list`` names the real domain of the lowest id, each the next by id,
  the last NULL (two domains at least);
* ``domain.shared_info``: a pointer to a page from the Xen heap that the domain owns and was given
  (``PGC_allocated``: ``share_xen_page_with_guest``);
* ``domain.tot_pages``, ``xenheap_pages``, ``max_pages``: the frame census per owner -- the frames a
  domain owns with ``PGC_allocated``, without and with ``PGC_xen_heap`` -- is ``tot_pages`` and
  ``xenheap_pages``, which follows it (4.6-4.20, then ``outstanding_pages``, then ``max_pages``) or
  comes five members later (4.4-4.5: ``outstanding_pages``, ``max_pages``, ``shr_pages``,
  ``paged_pages``); ``max_pages`` must be at least ``tot_pages`` (xen/include/xen/sched.h);
* ``vcpu.arch.cr3``: the CPU's CR3 is the value its current vCPU (``per_cpu(curr_vcpu)``: the
  symbols ``per_cpu__curr_vcpu`` and ``__per_cpu_offset``) saved to load (``write_ptbase``).
"""

import struct
from dataclasses import dataclass, field

from ..errors import XenscopeError
from .layouts import DOMID_COW, DOMID_FIRST_RESERVED, DOMID_IDLE, DOMID_IO, DOMID_XEN, parse_page_info

DISCOVERABLE = frozenset({"domain.domain_id", "domain.vcpu", "domain.max_vcpus", "domain.next_in_list",
                          "domain.tot_pages", "domain.xenheap_pages", "domain.max_pages", "domain.shared_info",
                          "vcpu.domain", "vcpu.vcpu_id", "vcpu.arch.cr3"})
DOMAIN_SPAN = 4096            # bytes of struct domain searched (4.17: 3.6 KiB ... with the arch part)
VCPU_SPAN = 8192              # bytes of struct vcpu searched (its arch part holds the saved state)
HEAD_SPAN = 64                # the first members (vcpu_id, processor, vcpu_info, domain, ...)


@dataclass
class Found:
    """``values``: ``{struct: {member: offset}}`` found; ``why``: ``{"struct.member": text}`` for each,
    also for those not found."""
    values: dict = field(default_factory=dict)
    why: dict = field(default_factory=dict)

    def set(self, struct_name, member, offset, text):
        self.values.setdefault(struct_name, {})[member] = offset
        self.why[f"{struct_name}.{member}"] = text

    def miss(self, struct_name, member, text):
        self.why[f"{struct_name}.{member}"] = "not found: " + text

    def get(self, struct_name, member):
        return self.values.get(struct_name, {}).get(member)


def _read(host, va, size):
    try:
        return host.read_va(va, size)
    except XenscopeError:
        return None


def _pointer(host, va):
    raw = _read(host, va, 8)
    return struct.unpack("<Q", raw)[0] if raw else None


def _only(candidates):
    """The one offset in ``candidates`` (a set), else None."""
    return next(iter(candidates)) if len(candidates) == 1 else None


def _words(host, va, span, fmt):
    """``(offset, value)`` of every aligned word of ``span`` bytes at ``va`` (none when unreadable)."""
    raw = _read(host, va, span)
    if raw is None:
        return []
    size = struct.calcsize(fmt)
    return list(zip(range(0, span, size), struct.unpack(f"<{span // size}{fmt}", raw)))


def _domain_id(host, found):
    """``domain.domain_id`` from the special domains' ids (see the module docstring)."""
    specials = [(sym, domid) for sym, domid in (("dom_xen", DOMID_XEN), ("dom_io", DOMID_IO), ("dom_cow", DOMID_COW))
                if sym in host.symbols]
    fits, used = None, []
    for sym, domid in specials:
        va = _pointer(host, host.symbols[sym])
        if not va:
            continue
        here = {off for off, v in _words(host, va, 256, "H") if v == domid}
        fits = here if fits is None else fits & here
        used.append(f"{sym} {domid:#x}")
    off = _only(fits or set())
    if off is None or len(used) < 2:
        found.miss("domain", "domain_id", f"the special domains ({', '.join(used) or 'no symbol'}) "
                   f"agree on {len(fits or ())} offsets")
        return None
    found.set("domain", "domain_id", off, f"+{off}: where {' and '.join(used)} hold their ids")
    return off


def _idle(host, found, id_off):
    """``vcpu.domain``, ``domain.vcpu`` (and ``max_vcpus``) from ``idle_vcpu``; the idle domain's va."""
    table = host.symbols.get("idle_vcpu")
    v0 = _pointer(host, table) if table is not None else None
    if not v0:
        found.miss("domain", "vcpu", "no idle_vcpu symbol or idle_vcpu[0]")
        return None
    back = set()
    for off, va in _words(host, v0, HEAD_SPAN, "Q"):
        raw = _read(host, va + id_off, 2) if va >> 47 == 0x1FFFF else None
        if raw and struct.unpack("<H", raw)[0] == DOMID_IDLE:
            back.add((off, va))
    if len(back) != 1:
        found.miss("vcpu", "domain", f"idle_vcpu[0] holds {len(back)} pointers to a domain with DOMID_IDLE")
        return None
    (dom_off, idle), = back
    found.set("vcpu", "domain", dom_off, f"+{dom_off}: idle_vcpu[0] points at the idle domain (id {DOMID_IDLE:#x})")
    arrays = {off for off, v in _words(host, idle, DOMAIN_SPAN, "Q") if v == table}
    off = _only(arrays)
    if off is None:
        found.miss("domain", "vcpu", f"the idle domain holds idle_vcpu's address at {len(arrays)} offsets")
        return idle
    found.set("domain", "vcpu", off, f"+{off}: the idle domain's vCPU array is idle_vcpu")
    if "nr_cpu_ids" in host.symbols:
        raw = _read(host, host.symbols["nr_cpu_ids"], 4)
        n = struct.unpack("<I", raw)[0] if raw else None
        near = {o for o, v in _words(host, idle, 32, "I") if v == n and o != off and o != off + 4}
        if _only(near) is not None:
            found.set("domain", "max_vcpus", _only(near), f"+{_only(near)}: the idle domain's first members hold "
                                                          f"nr_cpu_ids {n} there alone (4.10+: after domain_id)")
        else:
            found.miss("domain", "max_vcpus", f"nr_cpu_ids {n} at {len(near)} offsets of the idle domain's first "
                       "members (4.10+: after domain_id; older releases have it further)")
    return idle


def _vcpus(host, domain_va, array_off, count=64):
    """The vCPU pointers of a domain's array (up to ``count``, stopping at the first NULL)."""
    array = _pointer(host, domain_va + array_off)
    out = []
    while array and len(out) < count:
        v = _pointer(host, array + 8 * len(out))
        if not v:
            break
        out.append(v)
    return out


def _vcpu_id(host, found, domains):
    """``vcpu.vcpu_id``: the int every vCPU holds equal to its index in its domain's array."""
    array_off, dom_off = found.get("domain", "vcpu"), found.get("vcpu", "domain")
    if array_off is None or dom_off is None:
        found.miss("vcpu", "vcpu_id", "the vCPU arrays are not known")
        return
    fits, seen = None, 0
    for d in domains:
        for i, v in enumerate(_vcpus(host, d.struct_va, array_off)):
            if _pointer(host, v + dom_off) != d.struct_va:
                continue
            here = {off for off, val in _words(host, v, HEAD_SPAN, "I") if val == i}
            fits = here if fits is None else fits & here
            seen += 1
    off = _only(fits or set())
    if off is None:
        found.miss("vcpu", "vcpu_id", f"{seen} vCPU(s) agree on {len(fits or ())} offsets holding their index")
        return
    found.set("vcpu", "vcpu_id", off, f"+{off}: each of {seen} vCPU(s) holds its index there")


def _next_in_list(host, found, domains):
    """``domain.next_in_list``: ``domain_list`` starts at the lowest real domain and each links to the
    next by id (domain_create keeps the list sorted), the last to NULL; needs two domains to tell."""
    head = _pointer(host, host.symbols["domain_list"]) if "domain_list" in host.symbols else None
    if len(domains) < 2 or head != domains[0].struct_va:
        found.miss("domain", "next_in_list", f"{len(domains)} real domain(s) own frames (two are needed), "
                   "domain_list " + ("names the first" if head == (domains[0].struct_va if domains else None)
                                     else "does not name the first"))
        return
    fits = None
    for d, after in zip(domains, domains[1:] + [None]):
        want = after.struct_va if after else 0
        here = {off for off, v in _words(host, d.struct_va, DOMAIN_SPAN, "Q") if v == want}
        fits = here if fits is None else fits & here
    off = _only(fits)
    if off is None:
        found.miss("domain", "next_in_list", f"{len(fits)} offsets link the {len(domains)} domains in id order")
        return
    found.set("domain", "next_in_list", off, f"+{off}: links domain_list's {len(domains)} domains in id order")


def _census(cols, layout):
    """``{owner raw value: (allocated non-xen-heap frames, allocated xen-heap frames)}``."""
    import numpy as np
    from .frames import STATES
    mine = cols["present"] & (cols["state"] != STATES.index("free")) & cols["allocated"]
    extra = layout.count.flags.get("extra", 0)
    if extra:
        mine &= (cols["count_info"] & np.uint64(extra)) == 0
    out = {}
    for heap in (False, True):
        sel = mine & (cols["xen_heap"] == heap)
        raws, counts = np.unique(cols["domain"][sel], return_counts=True)
        for raw, n in zip(raws.tolist(), counts.tolist()):
            pair = out.setdefault(raw, [0, 0])
            pair[heap] = n
    return out


@dataclass
class _Domain:
    id: int
    struct_va: int
    pickled: int


def _real_domains(host, census, id_off):
    """The real domains (ids below 0x7FF0) that own allocated frames, read at ``domain_id``."""
    out = []
    for raw in sorted(census):
        va = host.directmap + (raw << 12)
        got = _read(host, va + id_off, 2) if raw else None
        if got is not None and struct.unpack("<H", got)[0] < DOMID_FIRST_RESERVED:
            out.append(_Domain(struct.unpack("<H", got)[0], va, raw))
    return sorted(out, key=lambda d: d.id)


# where xenheap_pages and max_pages follow tot_pages: 4.6+ (tot, xenheap, outstanding, max) and
# 4.4-4.5 (tot, outstanding, max, shr_pages, paged_pages, xenheap)
PAGE_ORDERS = (("4.6+", 4, 12), ("4.4-4.5", 20, 8))


def _pages(host, found, domains, census):
    """``tot_pages``/``xenheap_pages``/``max_pages`` from the census (see the module docstring)."""
    fits, used = set(), [f"d{d.id} {census.get(d.pickled, (0, 0))[0]}+{census.get(d.pickled, (0, 0))[1]}"
                         for d in domains]
    for order, heap_at, max_at in PAGE_ORDERS:
        here = None
        for d in domains:
            tot, heap = census.get(d.pickled, (0, 0))
            words = dict(_words(host, d.struct_va, DOMAIN_SPAN, "I"))
            mine = {off for off, v in words.items() if v == tot and words.get(off + heap_at) == heap
                    and words.get(off + max_at, -1) >= tot}
            here = mine if here is None else here & mine
        fits |= {(order, heap_at, max_at, off) for off in here or ()}
    if len(fits) != 1 or not domains:
        found.miss("domain", "tot_pages", f"the census ({', '.join(used)}) fits {len(fits)} offsets")
        return
    (order, heap_at, max_at, off), = fits
    found.set("domain", "tot_pages", off, f"+{off}: the frames each domain owns ({', '.join(used)} allocated, "
                                          f"then from the Xen heap) are there and {heap_at} bytes on")
    found.set("domain", "xenheap_pages", off + heap_at, f"+{off + heap_at}: the census' Xen-heap frames, "
                                                        f"{heap_at} bytes after tot_pages (Xen {order} order)")
    found.set("domain", "max_pages", off + max_at, f"+{off + max_at}: {max_at} bytes after tot_pages (Xen {order} "
                                                   "order), at least tot_pages in every domain")


def _shared_info(host, found, domains):
    """``domain.shared_info``: the one pointer to a Xen-heap page the domain owns."""
    fits = None
    for d in domains:
        here = set()
        for off, va in _words(host, d.struct_va, 256, "Q"):
            if va & 0xFFF or not host.directmap <= va < host.directmap + (1 << 42):
                continue
            try:
                mfn = host.pdx.directmapoff_to_maddr(va - host.directmap) >> 12
                page = parse_page_info(host.page_raw(mfn), host.layout)
            except XenscopeError:
                continue
            if page["domain"] == d.pickled and {"xen_heap", "allocated"} <= set(page["count"]["flags"]):
                here.add(off)
        fits = here if fits is None else fits & here
    off = _only(fits or set())
    if off is None:
        found.miss("domain", "shared_info", f"{len(fits or ())} offsets point at a Xen-heap page given to the domain")
        return
    found.set("domain", "shared_info", off, f"+{off}: points at a Xen-heap page given to each domain")


def _current_vcpu(host, cpu):
    per_cpu, offsets = host.symbols.get("per_cpu__curr_vcpu"), host.symbols.get("__per_cpu_offset")
    if per_cpu is None or offsets is None:
        return None
    delta = _pointer(host, offsets + 8 * cpu)
    return _pointer(host, (per_cpu + delta) & ((1 << 64) - 1)) if delta is not None else None


def _saved_cr3(host, found, cpu=0):
    """``vcpu.arch.cr3``: where the CPU's current vCPU holds the CR3 the CPU has loaded."""
    regs = host.t.cpu(cpu).regs if host.t.cpus() else {}
    cr3 = regs.get("cr3")
    v = _current_vcpu(host, cpu)
    if cr3 is None or not v:
        found.miss("vcpu", "arch.cr3", "no CR3 register in the dump or no per_cpu(curr_vcpu)")
        return
    here = {off for off, val in _words(host, v, VCPU_SPAN, "Q") if val == cr3}
    off = _only(here)
    if off is None:
        found.miss("vcpu", "arch.cr3", f"CPU {cpu}'s CR3 {cr3:#x} is at {len(here)} offsets of its vCPU {v:#x}")
        return
    found.set("vcpu", "arch.cr3", off, f"+{off}: CPU {cpu}'s current vCPU holds its CR3 {cr3:#x} there")


def discover(host, want=None):
    """:class:`Found` offsets of ``host`` (a :class:`~.host.XenHost`); ``want``: the ``"struct.member"``
    names needed (None: all of them): the rules that read other members are skipped. Reads the frame
    table once (the census and the domains that own frames), never ``host.domains()``."""
    from .frames import classify
    found = Found()
    id_off = _domain_id(host, found)
    if id_off is None:
        return found
    try:
        census = _census(classify(host, host.frame_arrays()), host.layout)
    except XenscopeError as e:
        found.miss("domain", "tot_pages", f"the frame table cannot be read ({e})")
        census = {}
    real = _real_domains(host, census, id_off)
    _idle(host, found, id_off)
    _vcpu_id(host, found, real)
    if want is None or "domain.next_in_list" in want:
        _next_in_list(host, found, real)
    if want is None or {"domain.tot_pages", "domain.xenheap_pages", "domain.max_pages"} & set(want):
        _pages(host, found, real, census)
    if want is None or "domain.shared_info" in want:
        _shared_info(host, found, real)
    if want is None or "vcpu.arch.cr3" in want:
        _saved_cr3(host, found)
    return found
