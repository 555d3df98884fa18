"""Deterministic builders of small synthetic x86 ELF cores with known page tables.

Independent of ``xenstructs`` on purpose: this is the truth the walker is tested against.
"""

from .elfcore_writer import write_elf_core  # noqa: F401
