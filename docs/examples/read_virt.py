"""Read virtual memory through the page tables (a hole or an unmapped page is an error that says where)."""
from xenstructs.api import XenscopeError, open_dump, read_virt, resolve

target = open_dump("cores/x86_64-4level.core")
paging = resolve(target).paging
data = read_virt(target, 0x600000, 16, paging, paging.mode)
print(f"16 bytes at 0x600000: {data.hex()}")
try:
    read_virt(target, 0xFFFFC90000600000, 8, paging, paging.mode)
except XenscopeError as e:
    error = str(e)
    print(error)
