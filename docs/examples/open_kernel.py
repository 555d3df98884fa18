"""A Linux kernel in a dump: symbols and structure offsets (here from a vmlinux with DWARF; with no
file at all they come from the dump's kallsyms and BTF on Linux >= 6.0)."""
from xenstructs.api import open_dump, open_kernel

kernel = open_kernel(open_dump("cores/mod-x86_64.core"), vmlinux="cores/mod-x86_64.vmlinux")
facts = kernel.describe()
print(f"Linux {facts['kernel_version']}, {facts['mode']} paging, init_mm.pgd table at {facts['reference_root']:#x}")
init_task = kernel.symbol("init_task")
print(f"init_task at {init_task:#x}; its comm: {kernel.read_str(kernel.member_addr(init_task, 'task_struct.comm'))!r}")
for what, source in facts["sources"].items():
    print(f"  {what}: {source}")
