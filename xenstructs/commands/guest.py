"""``--domain D [--vcpu V]`` of the paging commands: run them on one translated (HVM/PVH) domain of a Xen
host dump, reading guest-physical memory through the domain's P2M (:mod:`~xenstructs.paging.nested`),
and add the second stage (machine frame, p2m type) to their results. Not a command module."""

from . import arg, group, number

DOMAIN = group(
    "a translated guest (HVM/PVH) of a Xen host dump",
    arg("--domain", dest="guest_domain", type=number, metavar="D",
        help="walk domain D: its vCPU's saved CR0/CR3/CR4/EFER, every guest table and page read through the "
             "domain's P2M (NPT/EPT); addresses are guest-physical (gpa), each with its machine frame"),
    arg("--vcpu", type=number, default=0, metavar="V", help="with --domain: the saved state of vCPU V (default 0)"),
    arg("--xen", metavar="VERSION", help="with --domain: Xen release (default: from the dump)"),
    arg("--xen-syms", metavar="PATH", help="with --domain: xen-syms with DWARF, or a Xen profile (default: the "
                                           "profile shipped for the dump's build-id)"))


def guest_target(target, args):
    """``(target, domain facts or None)``: with ``--domain``, the domain's
    :class:`~xenstructs.paging.nested.GuestMemory` and ``{"id", "type", "paging", "p2m", "format",
    "vcpu"}``; ``args.cpu`` becomes the vCPU."""
    if getattr(args, "guest_domain", None) is None:
        return target, None
    from ..xen.host import open_host
    from ..xen.hvm import guest_memory
    host = open_host(target, version=args.xen, syms=args.xen_syms, cpu=0)
    guest, dom, kind, p2m = guest_memory(host, args.guest_domain)
    args.cpu = args.vcpu
    facts = {"id": dom.id, "type": kind.type, "paging": kind.paging, "p2m": p2m.source,
             "format": p2m.format.title, "vcpu": args.vcpu}
    return guest, facts


def add_walk_stages(res, guest, w):
    """Each level of a walk result gets its table's machine frame and p2m type; the result its page's."""
    from ..paging.nested import stage2
    for lv, level in zip(w.levels, res["levels"]):
        s = stage2(guest.p2m, lv.table)
        level.update(table_mfn=s.mfn, table_p2m_type=s.p2m_type, table_p2m_stop=s.stop)
    page = stage2(guest.p2m, w.pa) if w.pa is not None else None
    res["stage2"] = page.as_dict() if page else None
    res["space"] = "guest-physical"


def stage2_of(guest, gpa):
    """``{"mfn", "maddr", "p2m_type", "stop"}`` of one guest-physical address."""
    from ..paging.nested import stage2
    s = stage2(guest.p2m, gpa)
    return {"mfn": s.mfn, "maddr": s.maddr, "p2m_type": s.p2m_type, "p2m_stop": s.stop}


def header(dom):
    """The line saying which domain and P2M a result was read through."""
    line = (f"domain {dom['id']} ({dom['type']}, {dom['paging']}), vCPU {dom['vcpu']}; P2M: {dom['format']}, "
            f"{dom['p2m']}")
    if dom["paging"] == "shadow":
        line += ("\nshadow paging: the guest's own tables and its P2M are followed; the shadow tables the CPU "
                 "really walks (Xen's private copies, hw_cr[3]) are not")
    return line
