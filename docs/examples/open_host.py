"""Open a Xen host dump: its release, page_info layout, frame table and domains."""
from xenstructs.api import open_dump, open_host

host = open_host(open_dump("cores/xen-4.17-host.core"), syms="cores/xen-4.17-host.map")
print(f"Xen {host.version}, page_info layout {host.layout.name} ({host.selection.why})")
print(f"frame table at {host.frametable:#x}, max_page {host.max_page:#x}")
domains = host.domains()
for d in domains:
    print(f"  {d.name}: id {d.id}, struct domain at {d.struct_va:#x}")
