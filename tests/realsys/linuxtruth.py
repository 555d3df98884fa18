"""What a booted Linux guest is, from outside xenscope: QEMU's monitor text, the guest's console
and /proc/kallsyms, Debian's .config and -dbg System.map (test_linux_dumps.py judges with these).

    regs = parse_registers(vm.hmp("info registers")); paging_mode("x86_64", regs["cr4"])
    kernel_variables(vm, kallsyms, tlb, ("page_offset_base",))    # read by QEMU, placed by kallsyms
"""
import re

from realsys.linux import DEFAULT_KERNEL, KERNELS, read_guest_kallsyms

X86_CR4_PAE = 1 << 5
X86_CR4_LA57 = 1 << 12
# the guest prints its page-table-isolation lines (pr_info: under the console's loglevel=3)
# between markers, without dmesg's "[seconds] " (the console's kernel lines are judged apart)
PTI_INIT = "echo PTI-BEGIN; dmesg | grep -o 'page tables isolation: .*'; echo PTI-END"


def parse_registers(text):
    regs = {}
    for name in ("CR0", "CR2", "CR3", "CR4", "EFER"):
        m = re.search(rf"\b{name}=([0-9a-f]+)", text)
        if m:
            regs[name.lower()] = int(m.group(1), 16)
    return regs


def parse_tlb(text, pae):
    """{va: (pa, flags)} from ``info tlb`` lines ``VA: PA XGPDACTUW``."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"([0-9a-f]+): ([0-9a-f]+) ([-XGPDACTUW]{9})$", line.strip())
        if m:
            pa = int(m.group(2), 16)
            if pae:
                pa &= ~(1 << 63)          # QEMU leaves NX in the PAE address column (test_linux_dumps)
            out[int(m.group(1), 16)] = (pa, m.group(3))
    return out


def parse_mem(text):
    """[(start, end, user, write)] from ``info mem`` lines ``START-END SIZE urw``."""
    out = []
    for line in text.splitlines():
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) [0-9a-f]+ ([-u])r([-w])$", line.strip())
        if m:
            out.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3) == "u", m.group(4) == "w"))
    return out


def leaf_flags(entry, size):
    """The nine flag letters QEMU prints for a leaf entry (same order as its print_pte)."""
    bits = [(63, "X"), (8, "G"), (7, "P"), (6, "D"), (5, "A"), (4, "C"), (3, "T"), (2, "U"), (1, "W")]
    if size == 4096:                  # QEMU prints 4 KiB PTEs with the PAT/PS bit cleared
        entry &= ~0x80
    return "".join(ch if entry >> b & 1 else "-" for b, ch in bits)


def paging_mode(arch, cr4):
    """The paging mode the CPU runs in, by its CR4 (QEMU's ``info registers``)."""
    if arch == "i386":
        return "pae" if cr4 & X86_CR4_PAE else "2level"
    return "5level" if cr4 & X86_CR4_LA57 else "4level"


def expected_mode(cfg, config):
    """The paging mode a shape asks for: an LA57 CPU gets 5-level paging only from a kernel built
    with CONFIG_X86_5LEVEL (bullseye's 5.10 is not); i386: PAE but for a non-PAE 686 kernel
    (``KERNELS[...].pae`` False)."""
    if cfg["arch"] == "i386":
        return "pae" if KERNELS[cfg.get("kernel") or DEFAULT_KERNEL["i386"]].pae else "2level"
    return "5level" if cfg.get("la57") and "CONFIG_X86_5LEVEL=y" in config else "4level"


def proc_modules(console):
    """``[(name, size)]`` of the guest's /proc/modules, in its order (the kernel's module list)."""
    text = re.search(r"MODS-BEGIN\r?\n(.*?)MODS-END", console, re.S).group(1)
    return [(ln.split()[0], int(ln.split()[1])) for ln in text.splitlines() if ln.strip()]


def pti_lines(console):
    """The guest's "page tables isolation: ..." lines of its printk buffer (see :data:`PTI_INIT`)."""
    text = re.search(r"PTI-BEGIN\r?\n(.*?)PTI-END", console, re.S).group(1)
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def kernel_variables(vm, kallsyms, tlb, names):
    """``{name: value}`` of 8-byte kernel variables: placed by the guest's /proc/kallsyms, translated
    by QEMU's ``info tlb`` (the kernel image is one linear mapping: the VA-PA distance of any mapped
    page of its text), read by QEMU's ``xp``. Works under the PTI user PGD too (which maps the text)."""
    symbols = {name: address for address, _, name in read_guest_kallsyms(kallsyms)}
    text, etext = symbols["_text"], symbols["_etext"]
    distance = next(pa - va for va, (pa, _) in sorted(tlb.items()) if text <= va < etext)
    out = {}
    for name in names:
        line = vm.hmp(f"xp /1gx {symbols[name] + distance:#x}")
        out[name] = int(line.split(":")[1].split()[0], 16)
    return out


def kaslr_offset(kallsyms, system_map):
    """How far the guest's kernel moved from its link address: ``_text`` of its /proc/kallsyms minus
    ``_text`` of Debian's -dbg System.map."""
    linked = next(int(a, 16) for a, _, n in (ln.split() for ln in open(system_map)) if n == "_text")
    return next(a for a, _, n in read_guest_kallsyms(kallsyms) if n == "_text") - linked
