"""Xen's x86 P2M types and access rights (``p2m_type_t`` in ``asm-x86/p2m.h``, ``p2m_access_t`` in
``xen/mem_access.h``): the numbers both P2M formats (:mod:`.npt`, :mod:`.ept`) store in their entries.

The numbering is the same in 4.14.0, 4.17.0, 4.20.0-rc5 and master (checked in each release's
p2m.h). Groups as p2m.h defines them: ``P2M_RAM_TYPES`` (RAM that maps a machine frame of the
domain), the grant types, foreign maps.
"""

P2M_TYPES = ("ram_rw", "invalid", "ram_logdirty", "ram_ro", "mmio_dm", "mmio_direct", "populate_on_demand",
             "grant_map_rw", "grant_map_ro", "ram_paging_out", "ram_paged", "ram_paging_in", "ram_shared",
             "ram_broken", "map_foreign", "ioreq_server")
NUMBER = {name: i for i, name in enumerate(P2M_TYPES)}
# P2M_RAM_TYPES: ram_rw, logdirty, ro, paging_out, paged, paging_in, shared, ioreq_server
RAM = frozenset(("ram_rw", "ram_logdirty", "ram_ro", "ram_paging_out", "ram_paged", "ram_paging_in",
                 "ram_shared", "ioreq_server"))
GRANT = frozenset(("grant_map_rw", "grant_map_ro"))
# types whose frame is not there (p2m_type_to_flags: no PRESENT); paged-out frames have no mfn
NOT_BACKED = frozenset(("invalid", "mmio_dm", "populate_on_demand", "ram_paging_out", "ram_paged",
                        "ram_paging_in"))
# p2m_access_t (mem_access.h): r=1, w=2, x=4 combined, then the special values (r_pw: 4.20 and later)
ACCESS = {0: "n", 1: "r", 2: "w", 3: "rw", 4: "x", 5: "rx", 6: "wx", 7: "rwx", 8: "rx2rw", 9: "n2rwx",
          10: "r_pw"}


def type_name(number):
    """``p2m_<name>`` of a type number, or ``p2m_type_<n>`` for a number Xen does not define."""
    if 0 <= number < len(P2M_TYPES):
        return "p2m_" + P2M_TYPES[number]
    return f"p2m_type_{number}"


class EntryNames:
    """What both formats' decoded entries (:class:`.npt.Entry`, :class:`.ept.Entry`: ``type``,
    ``level``, ``leaf``) say the same way."""

    @property
    def type_name(self):
        return type_name(self.type)

    @property
    def page_order(self):
        """log2 of the pages a leaf maps (0, 9, 18), None for a table entry."""
        return 9 * (self.level - 1) if self.leaf else None
