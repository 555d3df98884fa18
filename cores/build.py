#!/usr/bin/env python3
"""Build the bundled synthetic cores and their JSON manifests.

    python cores/build.py [--out DIR] [--check]

Writes every core and manifest into cores/ (or DIR). ``--check`` rebuilds into a temporary
directory and compares byte for byte with the bundled files (exit 1 on any difference).
"""

import argparse
import filecmp
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from builder.elfcore_writer import VADDR_BASE, write_elf_core  # noqa: E402
from builder.pagetables import PageTables, PhysMem, coalesce, A, RW, US, P, PS, XD  # noqa: E402
from builder import hapguest, xenhost  # noqa: E402
from builder import kernelcores  # noqa: E402
from builder import pvguest  # noqa: E402

K, M, G = 1 << 10, 1 << 20, 1 << 30
CR0 = 0x80050033                      # PG|AM|WP|NE|ET|MP|PE
CR4_PSE, CR4_PAE, CR4_PGE, CR4_OSFX, CR4_LA57, CR4_PCIDE = 0x10, 0x20, 0x80, 0x600, 0x1000, 0x20000
EFER_LONG = 0xD01                     # SCE|LME|LMA|NXE
EFER_NXE = 0x800
KMAP = 0xFFFFFFFF80000000             # __START_KERNEL_map


def _regs(cr3, cr4, efer, rip, rsp, cr2=0, cs=0x10, rflags=0x246):
    return {"cr0": CR0, "cr2": cr2, "cr3": cr3, "cr4": cr4, "efer": efer, "rip": rip, "rsp": rsp,
            "rflags": rflags, "cs": cs}


def _cpu(regs, ss=0x18, ds=0, **more):
    cpu = {k: v for k, v in regs.items() if k != "efer"}
    cpu.update(ss=ss, ds=ds, es=ds, **more)
    return cpu


def _data(pt, vas):
    out = []
    for va in vas:
        w = pt.walk(va)
        raw = pt.mem.read(w["pa"], 16)
        assert raw is not None, hex(va)
        out.append({"va": va, "hex": raw.hex()})
    return out


def _vmcoreinfo(lines):
    text = "".join(f"{k}={v}\n" for k, v in lines)
    return text, {k: v for k, v in lines}


# ---------------------------------------------------------------------------------------------
def core_2level():
    mem = PhysMem(0x100000)
    pt = PageTables("2level", mem, nxe=False, pse=True)
    mem.pattern(0x1000, 1)                          # a pattern page at 0x1000 (in the dump)
    dpage = lambda: mem.pattern(mem.alloc(), 1)  # noqa: E731
    # kernel lowmem (direct map 0xc0000000 + pa): two 4 MiB pages, all in-dump pages lie below 8 MiB
    pt.map(0xC0000000, 0, 4 * M, rw=True, us=False, global_=True)
    pt.map(0xC0400000, 0x400000, 4 * M, rw=True, us=False, global_=True)
    # PSE-36: 4 MiB page at physical 0x1_0040_0000 (PDE bit 13 = physical bit 32)
    pt.map(0xE0000000, 0x100400000, 4 * M, rw=True, us=False)
    # 4 MiB PDE with bit 21 set: reserved
    t, i = pt.map(0xE0400000, 0x800000, 4 * M, rw=True, us=False)
    pt.set_entry(t, i, pt.get_entry(t, i) | 1 << 21, problem="reserved")
    # user program: text RO, data RW, a not-present PTE (PROT_NONE-like bits, P=0), stack
    text, data, stack = dpage(), dpage(), dpage()
    pt.map(0x08048000, text, 4 * K, rw=False, us=True)
    pt.map(0x08049000, data, 4 * K, rw=True, us=True)
    t, i = pt.entry_ref(0x0804A000, "PTE")
    pt.set_entry(t, i, 0x12345000 | 0x100 | US | RW)
    pt.map(0xBFFFE000, stack, 4 * K, rw=True, us=True)
    # intermediate PDE without RW (leaf RW) and without US (leaf US)
    a, b = dpage(), dpage()
    pt.map(0x08400000, a, 4 * K, rw=True, us=True)
    pt.tweak(0x08400000, "PDE", clear=RW)
    pt.map(0x08800000, b, 4 * K, rw=True, us=True)
    pt.tweak(0x08800000, "PDE", clear=US)
    # supervisor 4 KiB pages (vmalloc-like), two physically contiguous then a discontinuity
    v0, v1 = dpage(), dpage()
    dpage()
    v2 = dpage()
    pt.map(0xF8000000, v0, 4 * K, rw=True, us=False, global_=True)
    pt.map(0xF8001000, v1, 4 * K, rw=True, us=False, global_=True)
    pt.map(0xF8002000, v2, 4 * K, rw=True, us=False, global_=True)
    pt.map(0xF8003000, dpage(), 4 * K, rw=False, us=False)

    e = pt.expect
    e(0x08048010, "user text: 4 KiB, read-only, user", pa=text + 0x10)
    e(0x08049ff8, "user data: 4 KiB, writable, user", pa=data + 0xFF8)
    e(0xBFFFE800, "user stack", pa=stack + 0x800)
    e(0x08400123, "PDE without RW: leaf RW but not writable", pa=a + 0x123)
    e(0x08800000, "PDE without US: leaf US but supervisor", pa=b)
    e(0xC0001000, "lowmem 4 MiB page (direct map)", pa=0x1000)
    e(0xC0412345, "second lowmem 4 MiB page", pa=0x412345)
    e(0xE0012345, "PSE-36 4 MiB page above 4 GiB", pa=0x100412345)
    e(0xF8001008, "supervisor 4 KiB page", pa=v1 + 8)
    e(0xF8003000, "supervisor read-only 4 KiB page")
    e(0x0804A000, "PTE not present (other bits set)", stop="not-present", level="PTE")
    e(0x10000000, "PDE not present", stop="not-present", level="PDE")
    e(0xFFFFF000, "top page: PDE not present", stop="not-present", level="PDE")
    e(0xE0400000, "4 MiB PDE with bit 21 (reserved)", stop="reserved", level="PDE")
    regs = _regs(pt.root, CR4_PSE | CR4_PGE, 0, rip=0xC1000000 + 0x1234, rsp=0xC17FFF00,
                 cr2=0x0804A000, cs=0x60)
    cpus = [_cpu(regs, ss=0x68, ds=0x7B)]
    return dict(name="i386-2level", machine="i386", mode="2level", pt=pt, regs=regs, cpus=cpus,
                data=_data(pt, [0xC0001000, 0x08049000, 0xF8001010, 0xC0000000 + v2]))


def core_pae():
    mem = PhysMem(0x100000)
    pt = PageTables("pae", mem, nxe=True, root_offset=0x20)     # PDPT at offset 0x20 of its page
    mem.pattern(0x1000, 2)
    dpage = lambda: mem.pattern(mem.alloc(), 2)  # noqa: E731
    # kernel: lowmem 2 MiB pages (direct map), one executable, one NX; a 2 MiB page above 4 GiB
    pt.map(0xC0000000, 0, 2 * M, rw=True, us=False, global_=True)
    pt.map(0xC0200000, 0x200000, 2 * M, rw=True, us=False, nx=True, global_=True)
    pt.map(0xC0400000, 0x100000000, 2 * M, rw=False, us=False, nx=True)
    # user: text RX, data RW NX, stack RW NX, not-present PTE
    text, data, stack = dpage(), dpage(), dpage()
    pt.map(0x08048000, text, 4 * K, rw=False, us=True)
    pt.map(0x08049000, data, 4 * K, rw=True, us=True, nx=True)
    t, i = pt.entry_ref(0x0804A000, "PTE")
    pt.set_entry(t, i, XD | 0x7654000 | RW | US)
    pt.map(0x7FFFE000, stack, 4 * K, rw=True, us=True, nx=True)
    # PDPTE[1] region: intermediate XD, intermediate RW dropped, intermediate US dropped, 2 MiB user
    a, b, c = dpage(), dpage(), dpage()
    pt.map(0x40000000, a, 4 * K, rw=True, us=True, nx=False)
    pt.tweak(0x40000000, "PDE", set_=XD)
    pt.map(0x40200000, b, 4 * K, rw=True, us=True, nx=False)
    pt.tweak(0x40200000, "PDE", clear=RW)
    pt.map(0x40400000, c, 4 * K, rw=True, us=True, nx=False)
    pt.tweak(0x40400000, "PDE", clear=US)
    pt.map(0x40600000, 0x30000000, 2 * M, rw=True, us=True, nx=True)
    # PDPTE[2] with RW (bit 1) and A (bit 5) set: reserved for MOV CR3 (#GP), not for the walk,
    # which QEMU's TCG does through it (and it sets A itself in every PDPTE it uses)
    w = dpage()
    pt.map(0x80000000, w, 4 * K, rw=True, us=True)
    t, i = pt.entry_ref(0x80000000, "PDPTE")
    pt.set_entry(t, i, pt.get_entry(t, i) | RW | A)
    # vmalloc: supervisor NX page; a PDE whose page table is not in the dump
    v = dpage()
    pt.map(0xF7000000, v, 4 * K, rw=True, us=False, nx=True, global_=True)
    t, i = pt.entry_ref(0xF8000000, "PDE")
    pt.set_entry(t, i, 0x7FF00000 | P | RW | A, problem="not-in-dump")

    e = pt.expect
    e(0x08048000, "user text: 4 KiB, read-only, executable", pa=text)
    e(0x08049010, "user data: NX leaf", pa=data + 0x10)
    e(0x7FFFEFF0, "user stack", pa=stack + 0xFF0)
    e(0x40000008, "XD on the PDE only: page is NX", pa=a + 8)
    e(0x40200000, "PDE without RW", pa=b)
    e(0x40400000, "PDE without US", pa=c)
    e(0x40712345, "2 MiB user page", pa=0x30112345)
    e(0xC0001000, "lowmem 2 MiB page, executable", pa=0x1000)
    e(0xC0300000, "lowmem 2 MiB page, NX", pa=0x300000)
    e(0xC0400010, "2 MiB page above 4 GiB", pa=0x100000010)
    e(0xF7000000, "supervisor NX 4 KiB page", pa=v)
    e(0x0804A000, "PTE not present (XD and frame bits set)", stop="not-present", level="PTE")
    e(0x20000000, "PDE not present", stop="not-present", level="PDE")
    e(0x80000000, "PDPTE with RW and A set: still walked (checked only at CR3 load)", pa=w)
    e(0xF8000000, "page table not in the dump", stop="not-in-dump", level="PTE")
    regs = _regs(pt.root, CR4_PAE | CR4_PSE | CR4_PGE, EFER_NXE, rip=0xC0101234, rsp=0xC01FFF00,
                 cr2=0xF8000000, cs=0x60)
    cpus = [_cpu(regs, ss=0x68, ds=0x7B)]
    return dict(name="i386-pae", machine="i386", mode="pae", pt=pt, regs=regs, cpus=cpus,
                data=_data(pt, [0xC0001000, 0x08049000, 0x40000000, 0xF7000ff0]))


def _four_level(tag, alloc_base, phys_base, kaslr, pcid):
    """The 4-level scenario, placed at ``alloc_base`` (the PML4 is the first page allocated)."""
    mem = PhysMem(alloc_base)
    pt = PageTables("4level", mem, nxe=True)
    pml4 = pt.root
    mem.pattern(0x1000, tag)
    mem.pattern(0x2000, tag)
    dpage = lambda: mem.pattern(mem.alloc(), tag)  # noqa: E731
    dm = 0xFFFF888000000000
    # direct map: 4 KiB pages for pa 0..0x8000 (0x1000, 0x2000 in the dump), a 2 MiB page over the
    # tables and data pages, a 1 GiB page at 1 GiB
    for pa in range(0, 0x8000, 0x1000):
        pt.map(dm + pa, pa, 4 * K, rw=True, us=False, nx=True, global_=True)
    pt.map(dm + alloc_base, alloc_base, 2 * M, rw=True, us=False, nx=True, global_=True)
    pt.map(dm + 1 * G, 1 * G, 1 * G, rw=True, us=False, nx=True, global_=True)
    # kernel image: text (RX) and data (RW NX, holds init_top_pgt = the PML4)
    stext = 0xFFFFFFFF81000000 + kaslr
    top_va = KMAP + pml4 - phys_base
    assert top_va == 0xFFFFFFFF82200000 + kaslr
    pt.map(stext, stext - KMAP + phys_base, 2 * M, rw=False, us=False, global_=True)
    pt.map(top_va, pml4, 2 * M, rw=True, us=False, nx=True, global_=True)
    # user process
    text, rodata, data, stack = dpage(), dpage(), dpage(), dpage()
    pt.map(0x400000, text, 4 * K, rw=False, us=True)
    pt.map(0x401000, rodata, 4 * K, rw=False, us=True, nx=True)
    t, i = pt.entry_ref(0x402000, "PTE")
    pt.set_entry(t, i, XD | 0x12345000 | 0x100 | US)                 # PROT_NONE-like, P=0
    pt.map(0x600000, data, 4 * K, rw=True, us=True, nx=True)
    pt.map(0x7FFFFFFDE000, stack, 4 * K, rw=True, us=True, nx=True)
    pt.map(0x7F0000000000, alloc_base + 0x1400000, 2 * M, rw=True, us=True, nx=True)
    pt.map(0x200000000000, 2 * G, 1 * G, rw=False, us=True, nx=True)   # user 1 GiB page
    # intermediate entries that change rights: PDPTE without RW, PML4E without US, PDE with XD
    a, b, c0 = dpage(), dpage(), dpage()
    pt.map(0x100000000000, a, 4 * K, rw=True, us=True)
    pt.tweak(0x100000000000, "PDPTE", clear=RW)
    pt.map(0x180000000000, b, 4 * K, rw=True, us=True)
    pt.tweak(0x180000000000, "PML4E", clear=US)
    vm = 0xFFFFC90000000000
    c1, c2 = dpage(), dpage()
    dpage()
    c3 = dpage()
    pt.map(vm, c0, 4 * K, rw=True, us=False)
    pt.tweak(vm, "PDE", set_=XD)
    pt.map(vm + 0x1000, c1, 4 * K, rw=True, us=False)                 # c0,c1,c2 contiguous
    pt.map(vm + 0x2000, c2, 4 * K, rw=True, us=False)
    pt.map(vm + 0x3000, c3, 4 * K, rw=True, us=False)                 # physical gap
    pt.map(vm + 0x4000, dpage(), 4 * K, rw=False, us=False)
    # reserved: a 2 MiB PDE with bit 13 set; a PML4E with PS=1 (its subtree is unusable)
    t, i = pt.map(vm + 0x400000, alloc_base + 0x1600000, 2 * M, rw=True, us=False, nx=True)
    pt.set_entry(t, i, pt.get_entry(t, i) | 1 << 13, problem="reserved")
    pt.map(0x640000000000, dpage(), 4 * K, rw=True, us=True)
    t, i = pt.entry_ref(0x640000000000, "PML4E")
    pt.set_entry(t, i, pt.get_entry(t, i) | PS, problem="reserved")
    # page table not in the dump
    t, i = pt.entry_ref(vm + 0x600000, "PDE")
    pt.set_entry(t, i, 0x7FFF0000 | P | RW | A, problem="not-in-dump")
    # recursive slot: PML4[510] -> PML4 (a linear page table)
    pt.set_entry(pml4, 510, pml4 | P | RW | A | XD, problem="loop")
    pdpt_hi = pt.get_entry(pml4, 511) & 0x000FFFFFFFFFF000

    e = pt.expect
    e(0x400000, "user text: 4 KiB, read-only, executable", pa=text)
    e(0x401100, "user rodata: NX", pa=rodata + 0x100)
    e(0x600008, "user data: writable NX", pa=data + 8)
    e(0x7F0000123456, "user 2 MiB page", pa=alloc_base + 0x1523456)
    e(0x200012345678, "user 1 GiB page, read-only", pa=2 * G + 0x12345678)
    e(0x100000000010, "PDPTE without RW: leaf RW but not writable", pa=a + 0x10)
    e(0x180000000000, "PML4E without US: leaf US but supervisor", pa=b)
    e(vm + 0x1008, "PDE with XD: leaf executable but NX", pa=c1 + 8)
    e(dm + 0x1000, "direct map 4 KiB page (gdb p_vaddr view agrees)", pa=0x1000)
    e(dm + text + 0x10, "direct map 2 MiB page over tables and data", pa=text + 0x10)
    e(dm + G + 0x123456, "direct map 1 GiB page", pa=G + 0x123456)
    e(top_va, "init_top_pgt through the kernel image mapping: the PML4", pa=pml4)
    e(0x402000, "PTE not present (other bits set)", stop="not-present", level="PTE")
    e(0x300000000000, "PML4E not present", stop="not-present", level="PML4E")
    e(0x640000000000, "PML4E with PS=1: reserved", stop="reserved", level="PML4E")
    e(vm + 0x400000, "2 MiB PDE with bit 13: reserved", stop="reserved", level="PDE")
    e(vm + 0x600000, "page table not in the dump", stop="not-in-dump", level="PTE")
    e(0xFFFFFF7FBFDFE000, "recursive PML4[510] four times: the PML4 itself", pa=pml4)
    e(0xFFFFFF7FBFDFF000, "recursive PML4[510] x3 then [511]: the kernel PDPT", pa=pdpt_hi)
    e(0x0000800000000000, "non-canonical", stop="non-canonical")
    regs = _regs(pml4 | pcid, CR4_PSE | CR4_PAE | CR4_PGE | CR4_OSFX | (CR4_PCIDE if pcid else 0),
                 EFER_LONG, rip=stext + 0x1234, rsp=0xFFFFC90000003F00, cr2=vm + 0x600000)
    cpus = [_cpu(regs, gs_base=0xFFFF88807FC00000),
            _cpu(dict(regs, rip=stext + 0x5678, rsp=0xFFFFC90000001F00, cr2=0), gs_base=0xFFFF88807FD00000)]
    vmci = [("OSRELEASE", "6.1.0-synthetic"), ("PAGESIZE", "4096"),
            ("SYMBOL(_stext)", f"{stext:x}"), ("NUMBER(phys_base)", str(phys_base)),
            ("SYMBOL(init_top_pgt)", f"{top_va:x}"), ("NUMBER(pgtable_l5_enabled)", "0"),
            ("KERNELOFFSET", f"{kaslr:x}")]
    return dict(pt=pt, regs=regs, cpus=cpus, vmci=vmci, symbols={"_stext": stext, "init_top_pgt": top_va},
                data=_data(pt, [dm + 0x1000, 0x600000, vm + 0x1000, dm + text + 0x10]))


def core_4level():
    d = _four_level(3, alloc_base=0x2A00000, phys_base=0x800000, kaslr=0, pcid=0x001)
    return dict(d, name="x86_64-4level", machine="x86_64", mode="4level")


def core_kdump():
    d = _four_level(5, alloc_base=0x3A200000, phys_base=0x1A000000, kaslr=0x1E000000, pcid=0)
    return dict(d, name="x86_64-kdump", machine="x86_64", mode="4level", qemu_notes=False)


def core_5level():
    mem = PhysMem(0x1000000)
    pt = PageTables("5level", mem, nxe=True)
    mem.pattern(0x1000, 4)
    mem.pattern(0x2000, 4)
    dpage = lambda: mem.pattern(mem.alloc(), 4)  # noqa: E731
    dm = 0xFF11000000000000                      # 5-level Linux direct map (PML5 slot 0x111)
    for pa in (0x1000, 0x2000):
        pt.map(dm + pa, pa, 4 * K, rw=True, us=False, nx=True, global_=True)
    pt.map(dm + 0x1000000, 0x1000000, 2 * M, rw=True, us=False, nx=True, global_=True)
    pt.map(dm + G, G, G, rw=True, us=False, nx=True, global_=True)
    pt.map(0xFFFFFFFF81000000, 0x1800000, 2 * M, rw=False, us=False, global_=True)
    text, stack, hi, hi2 = dpage(), dpage(), dpage(), dpage()
    pt.map(0x400000, text, 4 * K, rw=False, us=True)
    pt.map(0x7FFFFFFDE000, stack, 4 * K, rw=True, us=True, nx=True)
    pt.map(0x0001000000000000, hi, 4 * K, rw=True, us=True, nx=True)   # PML5 slot 1: 57-bit only
    pt.map(0x00FF7FFFFFFFF000, hi2, 4 * K, rw=True, us=True)          # PML5 slot 255
    pt.tweak(0x00FF7FFFFFFFF000, "PML5E", clear=RW)
    e = pt.expect
    e(0x400010, "user text", pa=text + 0x10)
    e(0x7FFFFFFDEFF8, "user stack", pa=stack + 0xFF8)
    e(0x0001000000000100, "PML5 slot 1 (beyond 48 bits)", pa=hi + 0x100)
    e(0x00FF7FFFFFFFF000, "PML5E without RW", pa=hi2)
    e(dm + 0x1000, "5-level direct map 4 KiB page", pa=0x1000)
    e(dm + text + 8, "direct map 2 MiB page over tables and data", pa=text + 8)
    e(dm + G + 0x3FFFFFF8, "1 GiB page", pa=2 * G - 8)
    e(0xFFFFFFFF81000010, "kernel text, PML5 slot 511", pa=0x1800010)
    e(0x0080000000000000, "PML5E not present", stop="not-present", level="PML5E")
    e(dm + (5 << 39), "PML4E not present under a present PML5E", stop="not-present", level="PML4E")
    e(0x0100000000000000, "non-canonical (bit 56 set, 63..57 clear)", stop="non-canonical")
    e(0xFE00000000000000, "non-canonical (bits 63..57 set, 56 clear)", stop="non-canonical")
    regs = _regs(pt.root, CR4_PSE | CR4_PAE | CR4_PGE | CR4_OSFX | CR4_LA57, EFER_LONG,
                 rip=0xFFFFFFFF81001234, rsp=0xFF11000001003F00)
    return dict(name="x86_64-5level", machine="x86_64", mode="5level", pt=pt, regs=regs,
                cpus=[_cpu(regs)], vaddr_base=dm,
                data=_data(pt, [dm + 0x1000, 0x0001000000000000, dm + text + 0x20]))


CORES = (core_2level, core_pae, core_4level, core_5level, core_kdump)
XEN_CORES = ("4.6", "4.17")           # builder/xenhost.py: xen-<ver>-host.{core,json,map[,log]}
# builder/kernelcores.py: mod-*.{core,json} and the gcc-compiled mod-*.vmlinux (needs gcc -m32 and ld)
PV_CORES = ("pv-x86_64", "pv-i386-pae")  # builder/pvguest.py: xl dump-core files <name>.{xc,json,map}
HAP_CORES = ("npt", "ept")            # builder/hapguest.py: hap-<fmt>.{core,json}: a translated guest's P2M


def build_one(fn, out):
    spec = fn()
    pt = spec["pt"]
    name = spec["name"]
    vmci_text, vmci = _vmcoreinfo(spec["vmci"]) if spec.get("vmci") else (None, None)
    qemu = spec.get("qemu_notes", True)
    res = write_elf_core(os.path.join(out, name + ".core"), machine=spec["machine"],
                         segments=pt.mem.segments(), cpus=spec["cpus"], vmcoreinfo=vmci_text,
                         qemu_notes=qemu, vaddr_base=spec.get("vaddr_base", VADDR_BASE[spec["machine"]]))
    assert res["memory"] == pt.mem.ranges()
    pages = pt.pages()
    man = {
        "core": name + ".core", "machine": spec["machine"], "mode": spec["mode"], "qemu_notes": qemu,
        "registers": spec["regs"], "maxphyaddr": pt.maxphyaddr, "memory": res["memory"],
        "pages": pages, "ranges": coalesce(pages), "walks": pt.walks,
        "problems": pt.check_problems(), "data": spec["data"],
    }
    if vmci is not None:
        man["vmcoreinfo"] = vmci
        man["symbols"] = spec["symbols"]
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(man, f, sort_keys=True, indent=1)
        f.write("\n")
    return [name + ".core", name + ".json"]


def build_all(out):
    files = []
    for fn in CORES:
        files += build_one(fn, out)
    for key in XEN_CORES:
        files += xenhost.write(key, out)
    for name in PV_CORES:
        files += pvguest.write(name, out)
    for fmt in HAP_CORES:
        files += hapguest.write(fmt, out)
    files += kernelcores.write_all(out)
    return files


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=HERE, help="output directory (default: cores/)")
    ap.add_argument("--check", action="store_true",
                    help="rebuild into a temp dir and compare byte for byte with the bundled files")
    args = ap.parse_args(argv)
    if not args.check:
        os.makedirs(args.out, exist_ok=True)
        for f in build_all(args.out):
            print(f"{f}: {os.path.getsize(os.path.join(args.out, f))} bytes")
        return 0
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for f in build_all(tmp):
            ref = os.path.join(args.out, f)
            if not os.path.exists(ref) or not filecmp.cmp(ref, os.path.join(tmp, f), shallow=False):
                print(f"DIFFERS: {f}")
                bad = 1
    print("bundled cores are up to date" if not bad else "bundled cores differ: run python cores/build.py")
    return bad


if __name__ == "__main__":
    sys.exit(main())
