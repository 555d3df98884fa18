"""Which page tables to walk, in which mode, and where each value came from."""
from xenstructs.api import open_dump, resolve

target = open_dump("cores/x86_64-4level.core")
context = resolve(target)
paging = context.paging
print(f"{paging.mode} paging, CR3 {context.cr3:#x}: top table at {paging.root:#x}, EFER.NXE={paging.nxe}")
for name, source in context.sources.items():
    print(f"  {name}: {source}")
