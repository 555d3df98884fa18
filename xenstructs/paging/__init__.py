"""x86 page-table walks in every mode (2-level, PAE, 4-level, 5-level), as the CPU does them.

:func:`walk` translates one virtual address and keeps every level (:mod:`.walk`);
:func:`enumerate_mappings` lists an address space by reading whole tables with numpy (QEMU
``info tlb`` style pages) and :func:`coalesce` merges them into ranges (``info mem`` style)
(:mod:`.mappings`); :func:`translate_many` translates millions of addresses at once (:mod:`.many`);
:mod:`.model` holds what they share: :class:`Paging`, the modes' geometry, reserved bits, the
stop reasons. Addresses are named by space: ``va`` (virtual), ``pa`` (physical in the target;
machine memory for a Xen host dump).

Where a walk stops it says why (:data:`STOP_REASONS`). A hole in the dump (``not-in-dump``) is never
reported as ``not-present``.
"""

from .mappings import Mappings, Range, Ranges, coalesce, enumerate_mappings, first_mappings, mapping_limit
from .many import STOP_CODES, Translations, read_entries, translate_many
from .model import GEOMETRY, MAX_TABLES, STOP_REASONS, Paging, canonical, reserved_mask, root_from_cr3
from .walk import Level, Walk, read_virt, translate, walk

__all__ = ["GEOMETRY", "MAX_TABLES", "STOP_CODES", "STOP_REASONS", "Level", "Mappings", "Paging", "Range",
           "Ranges", "Translations", "Walk", "canonical", "coalesce", "enumerate_mappings", "first_mappings",
           "mapping_limit", "read_entries", "read_virt", "reserved_mask", "root_from_cr3", "translate",
           "translate_many", "walk"]
