"""Merge the pages of an address space into ranges of equal rights (QEMU info mem style)."""
from xenstructs.api import coalesce, enumerate_mappings, open_dump, resolve

target = open_dump("cores/x86_64-4level.core")
paging = resolve(target).paging
ranges = list(coalesce(enumerate_mappings(target, paging)))
for r in ranges[:5]:
    rights = ("u" if r.user else "-") + "r" + ("w" if r.writable else "-") + ("-" if r.nx else "x")
    print(f"{r.va_start:#x}-{r.va_end:#x} {rights} -> {r.pa_start:#x} ({r.pages} pages)")
print(f"... {len(ranges)} ranges")
