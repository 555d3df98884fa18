"""Every loaded module of a Linux kernel (the modules list), with its memory regions."""
from xenstructs.api import for_each_module, open_dump, open_kernel

kernel = open_kernel(open_dump("cores/mod-x86_64.core"), vmlinux="cores/mod-x86_64.vmlinux")
modules = for_each_module(kernel)
for module in modules:
    regions = ", ".join(f"{r.name} {r.va:#x}+{r.size:#x}" for r in module.regions)
    print(f"{module.name} at {module.address:#x}: {len(module.pages)} pages ({regions})")
