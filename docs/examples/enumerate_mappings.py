"""Every mapped page of an address space (QEMU info tlb style), and the ranges the CPU could not walk."""
from xenstructs.api import enumerate_mappings, open_dump, resolve

target = open_dump("cores/x86_64-4level.core")
paging = resolve(target).paging
mappings = enumerate_mappings(target, paging)
print(f"{len(mappings)} pages, {mappings.tables} tables read")
for va, pa, size in list(zip(mappings.va.tolist(), mappings.pa.tolist(), mappings.size.tolist()))[:3]:
    print(f"  {va:#x} -> {pa:#x} ({size >> 10} KiB)")
for va_start, va_end, level, reason, entry in mappings.problems:
    print(f"  {va_start:#x}-{va_end:#x}: {reason} at {level}")
