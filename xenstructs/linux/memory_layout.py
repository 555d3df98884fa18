"""Linux's x86 virtual memory layout: the fixed addresses xenscope relies on, defined once.

Source: Linux ``Documentation/arch/x86/x86_64/mm.rst`` and ``arch/x86/include/asm/page_64_types.h``,
``pgtable_64_types.h`` (x86_64, 4-level; 5-level only where named ``_57``); ``arch/x86/Kconfig`` ``PAGE_OFFSET`` (i386, the default
3G/1G split).
"""

START_KERNEL_MAP = 0xFFFFFFFF80000000      # x86_64 __START_KERNEL_map: the kernel image mapping
MODULES_END = 0xFFFFFFFFFF000000           # x86_64 (4-level) end of the module area
PAGE_OFFSET_DEFAULT = 0xFFFF888000000000   # x86_64 direct map without KASLR (page_offset_base)
DIRECT_MAP_SIZE = 1 << 46                  # x86_64 (4-level): the direct map spans 64 TiB
I386_PAGE_OFFSET = 0xC0000000              # i386 PAGE_OFFSET of the default 3G/1G split
USER_END_48 = 0x0000800000000000           # x86_64 with 48-bit addresses: user space ends here
KERNEL_START_48 = 0xFFFF800000000000       # ... and the canonical kernel half starts here
USER_END_57 = 0x0100000000000000           # x86_64 with 5-level paging (57-bit addresses): user space ends here
KERNEL_START_57 = 0xFF00000000000000       # ... and the canonical kernel half starts here
