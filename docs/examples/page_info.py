"""Decode Xen's struct page_info of machine frames: type, counts, state, owner, M2P."""
from xenstructs.api import open_dump, open_host, page_info

host = open_host(open_dump("cores/xen-4.17-host.core"), syms="cores/xen-4.17-host.map")
frames = {mfn: page_info(host, mfn) for mfn in (0x0, 0x200B, 0x2015, 0x2022)}
for mfn, frame in frames.items():
    print(f"mfn {mfn:#x}: owner {frame['owner_name']}, M2P pfn {frame['m2p']}")
    print(f"    count_info {frame['count_info']:#018x}: {frame['count']['text']}")
    print(f"    type_info  {frame['type_info']:#018x}: {frame['type']['text']}")
