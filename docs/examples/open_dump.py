"""Open a dump and ask it raw questions: what it is, the memory it holds, a CPU's registers."""
from xenstructs.api import open_dump

target = open_dump("cores/x86_64-4level.core")
print(target.kind, "of an", target.facts["machine"], "machine")
memory = target.phys_ranges()
print("physical memory held:", ", ".join(f"[{start:#x}, {end:#x})" for start, end in memory))
cpu = target.cpu(0)
print(f"CPU 0: CR3 {cpu.regs['cr3']:#x} ({cpu.source['cr3']}), CR4 {cpu.regs['cr4']:#x}")
first_bytes = target.read_phys(memory[0][0], 16)
target.close()
