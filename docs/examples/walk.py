"""Translate single addresses, keeping every level: the per-address call a script makes in a loop."""
from xenstructs.api import open_dump, resolve, walk

target = open_dump("cores/x86_64-4level.core")
paging = resolve(target).paging
walks = {}
for va in (0x600008, 0xFFFF888040123456, 0x402000, 0xFFFFC90000600000):
    w = walks[va] = walk(target, paging, va)
    if w.ok:
        rights = ("W" if w.writable else "-") + ("U" if w.user else "-") + ("X" if not w.nx else "-")
        print(f"{va:#x} -> {w.pa:#x} ({w.page_size >> 10} KiB page, {rights})")
    else:
        print(f"{va:#x}: {w.describe_stop()}")
    for level in w.levels:
        entry = "not in the dump" if level.entry is None else f"{level.entry:#018x}"
        print(f"    {level.name:5} table {level.table:#x} [{level.index:3}] = {entry}")
