"""Synthetic Linux guest cores with kernel objects, a compiled symbol file and module mappings
(``mod-i386-2level``, ``mod-i386-pae``, ``mod-x86_64``, ``mod-corrupt-tasks``).

Independent of ``xenstructs``. The kernel's types and globals are C (``cores/kernel/minikernel.{h,c}``)
compiled with ``gcc -g`` and linked at kernel addresses (``vmlinux-*.lds``) into ``mod-*.vmlinux``, an
ELF with DWARF that gdb loads like a vmlinux. Symbol addresses come from that ELF's symbol table
(parsed here); member offsets and sizes come from gcc itself: ``cores/kernel/offsets.c`` is compiled
to an object whose ``.xoffsets`` section holds ``offsetof``/``sizeof`` values (no DWARF reader is
involved). This module then lays out, in the dump, what a running kernel would hold: the task list,
mm_structs and their page directories, modules and vmap areas.

The seed (shared/reference/xen-facts.md §7.5): on 32-bit kernels the kernel part of every PGD is a
copy of ``swapper_pg_dir`` taken at fork (2-level: the PDEs; PAE with an unshared kernel PMD, as Xen
PV: the kernel PMD page). A module loaded later that needs a new PDE/PMD entry gets it only in
``init_mm.pgd``; the PGDs of tasks forked before lack it. Truth for ``findings`` is an exhaustive
per-page, per-PGD comparison of module pages against ``init_mm.pgd`` over this builder's own memory.
"""

import json
import os
import shutil
import struct
import subprocess
import tempfile

from .elfcore_writer import write_elf_core
from .pagetables import PageTables, PhysMem, P, RW

PAGE = 0x1000
K, M, G = 1 << 10, 1 << 20, 1 << 30
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KDIR = os.path.join(HERE, "kernel")
SRC_PREFIX = "/usr/src/minikernel"           # what DWARF says instead of our checkout's path

CR0 = 0x80050033
CR4_PSE, CR4_PAE, CR4_PGE, CR4_OSFX = 0x10, 0x20, 0x80, 0x600
EFER_LONG, EFER_NXE = 0xD01, 0x800
PF_KTHREAD = 0x00200000

# Pinned compiler flags: the vmlinux must be byte-identical on every rebuild (build.py --check).
CFLAGS = ["-g", "-gdwarf-4", "-O0", "-std=gnu11", "-ffreestanding", "-nostdinc", "-fno-ident",
          "-fno-pic", "-fno-pie", "-fno-common", "-fno-asynchronous-unwind-tables",
          "-fno-unwind-tables", "-fno-eliminate-unused-debug-types", "-fno-stack-protector",
          "-fno-builtin", "-frandom-seed=minikernel",
          f"-fdebug-prefix-map={KDIR}={SRC_PREFIX}", f"-ffile-prefix-map={KDIR}={SRC_PREFIX}"]
VARIANTS = {
    "i386-2level": dict(cflags=["-m32", "-march=i686"], ld="elf_i386", lds="vmlinux-i386.lds"),
    "i386-pae": dict(cflags=["-m32", "-march=i686", "-DCONFIG_X86_PAE"], ld="elf_i386",
                     lds="vmlinux-i386.lds"),
    "x86_64": dict(cflags=["-m64", "-mcmodel=kernel", "-mno-red-zone", "-DMOD_MEM"], ld="elf_x86_64",
                   lds="vmlinux-x86_64.lds"),
}


# ---------------------------------------------------------------------------------------------
# compiling and reading the ELF (our own minimal parser: section headers and .symtab only)
def _run(cmd):
    subprocess.run(cmd, cwd=KDIR, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C",
                        "SOURCE_DATE_EPOCH": "0"})


def compile_variant(variant, vmlinux_path):
    """Compile and link ``minikernel.c`` for ``variant`` into ``vmlinux_path``; compile ``offsets.c``.
    Returns ``(elf_bytes_of_vmlinux, offsets dict)``."""
    v = VARIANTS[variant]
    gcc = shutil.which("gcc")
    with tempfile.TemporaryDirectory() as tmp:
        obj, off_obj = os.path.join(tmp, "minikernel.o"), os.path.join(tmp, "offsets.o")
        _run([gcc, *CFLAGS, *v["cflags"], "-c", "minikernel.c", "-o", obj])
        _run([gcc, *CFLAGS, *v["cflags"], "-c", "offsets.c", "-o", off_obj])
        _run(["ld", "-m", v["ld"], "-T", v["lds"], "--build-id=none", "-nostdlib", "-static",
              "-z", "noexecstack", "-o", vmlinux_path, obj])
        with open(off_obj, "rb") as f:
            off_elf = f.read()
    with open(vmlinux_path, "rb") as f:
        elf = f.read()
    offsets = {}
    data = Elf(off_elf).section(".xoffsets")[1]
    for i in range(0, len(data), 56):
        name = data[i:i + 48].split(b"\0")[0].decode()
        offsets[name] = struct.unpack_from("<Q", data, i + 48)[0]
    return elf, offsets


class Elf:
    """Just enough ELF32/ELF64 little-endian parsing: sections and symbols."""

    def __init__(self, blob):
        assert blob[:4] == b"\x7fELF" and blob[5] == 1
        self.blob = blob
        self.is64 = blob[4] == 2
        if self.is64:
            shoff, = struct.unpack_from("<Q", blob, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", blob, 0x3A)
        else:
            shoff, = struct.unpack_from("<I", blob, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", blob, 0x2E)
        self.sections = []
        for i in range(shnum):
            o = shoff + i * shentsize
            if self.is64:
                name, typ, flags, addr, off, size, link, _, _, entsize = struct.unpack_from("<IIQQQQIIQQ", blob, o)
            else:
                name, typ, flags, addr, off, size, link, _, _, entsize = struct.unpack_from("<IIIIIIIIII", blob, o)
            self.sections.append(dict(name_off=name, type=typ, flags=flags, addr=addr, off=off, size=size,
                                      link=link, entsize=entsize))
        strs = self.sections[shstrndx]
        for s in self.sections:
            s["name"] = self._str(strs, s["name_off"])

    def _str(self, sec, off):
        start = sec["off"] + off
        return self.blob[start:self.blob.index(b"\0", start)].decode()

    def section(self, name):
        s = next(s for s in self.sections if s["name"] == name)
        data = None if s["type"] == 8 else self.blob[s["off"]:s["off"] + s["size"]]   # SHT_NOBITS
        return s, data

    def symbols(self):
        symtab = next(s for s in self.sections if s["type"] == 2)
        strtab = self.sections[symtab["link"]]
        out = {}
        for o in range(symtab["off"], symtab["off"] + symtab["size"], symtab["entsize"]):
            if self.is64:
                name, info, _, shndx, value, size = struct.unpack_from("<IBBHQQ", self.blob, o)
            else:
                name, value, size, info, _, shndx = struct.unpack_from("<IIIBBH", self.blob, o)
            n = self._str(strtab, name)
            if n and info & 0xF in (0, 1, 2) and shndx != 0:        # NOTYPE/OBJECT/FUNC, defined
                out[n] = value
        return out

    def alloc_sections(self):
        return [(s["addr"], s["size"], None if s["type"] == 8 else self.blob[s["off"]:s["off"] + s["size"]])
                for s in self.sections if s["flags"] & 2 and s["size"]]            # SHF_ALLOC


# ---------------------------------------------------------------------------------------------
def _rooted(mode, mem, root, nxe):
    """A PageTables over ``mem`` whose root table is the existing page ``root``."""
    class _Fixed:
        @staticmethod
        def alloc():
            return root
    pt = PageTables(mode, _Fixed(), nxe=nxe)
    pt.mem = mem
    return pt


ARCH = {
    # image physical base 16 MiB; direct map; where kernel half of the top level starts;
    # lowmem end (i386) / RAM mapped in the direct map (x86_64)
    "i386": dict(kimage=0xC1000000, dm=0xC0000000, kbase_pa=0x1000000, ptr=4),
    "x86_64": dict(kimage=0xFFFFFFFF81000000, dm=0xFFFF888000000000, kbase_pa=0x1000000, ptr=8),
}
I386_LOWMEM_END = 0xF7800000          # high_memory (896 MiB lowmem minus the vmalloc reserve)
I386_VMALLOC = 0xF8000000             # VMALLOC_START = high_memory + 8 MiB: modules live here
X86_MODULES = 0xFFFFFFFFA0000000      # MODULES_VADDR
X86_VMALLOC = 0xFFFFC90000000000      # VMALLOC_START
NOT_IN_DUMP = 0x10000000              # frames of big vmalloc areas: RAM, but not in the sparse dump


class Kernel:
    def __init__(self, name, variant, mode, elf_blob, offsets, version):
        self.name, self.variant, self.mode, self.version = name, variant, mode, version
        self.arch = "x86_64" if mode == "4level" else "i386"
        a = ARCH[self.arch]
        self.dm, self.kimage, self.kbase_pa, self.ptr = a["dm"], a["kimage"], a["kbase_pa"], a["ptr"]
        self.off = offsets
        self.elf = Elf(elf_blob)
        self.sym = self.elf.symbols()
        banner_sec = self.elf.section(".rodata")
        self.mem = PhysMem(0x2000000)
        self.modnext = 0x3000000                # module frames: contiguous blocks, one page apart
        self.nxe = mode != "2level"
        # the kernel image: every page of every allocated section
        img = {}
        for addr, size, data in self.elf.alloc_sections():
            for pva in range(addr & ~(PAGE - 1), addr + size, PAGE):
                img.setdefault(pva, bytearray(PAGE))
            if data:
                for i, b in enumerate(data):
                    img[(addr + i) & ~(PAGE - 1)][(addr + i) & (PAGE - 1)] = b
        self.image_pages = sorted(img)
        assert self.image_pages == list(range(self.kimage, self.image_pages[-1] + PAGE, PAGE))
        for pva in self.image_pages:
            self.mem.add(self.kpa(pva), img[pva])
        banner = self.read_cstr_elf(banner_sec, self.sym["linux_banner"])
        assert f"Linux version {version} " in banner, banner
        self.banner = banner
        top = self.sym["init_top_pgt" if self.arch == "x86_64" else "swapper_pg_dir"]
        self.ref = _rooted(mode, self.mem, self.kpa(top), self.nxe)
        self.ref_va = top
        self.slab_page, self.slab_off = None, PAGE
        self.modules = []                       # dicts, in load order
        self.vmap = []                          # (va_start, va_end, what)
        self.tasks = []                         # dicts, in fork order (init_task first)
        self.mms = {}                           # mm va -> dict(pgd_va, pgd_pa, owner pid)
        self.vblocks = {}                       # physical start of a module block -> its va
        self.fork_stamp = 0
        self.events = []
        self._map_kernel()
        self.init_mm = self.sym["init_mm"]
        self.mms[self.init_mm] = dict(pgd_va=top, pgd_pa=self.kpa(top), users=1)

    # -- addresses ----------------------------------------------------------------------------
    def kpa(self, va):
        """Physical address of a kernel image address."""
        assert self.kimage <= va < self.image_pages[-1] + PAGE, hex(va)
        return va - self.kimage + self.kbase_pa

    def pa(self, va):
        w = self.ref.walk(va)
        assert w["pa"] is not None, (hex(va), w)
        return w["pa"]

    def read_cstr_elf(self, sec_data, va):
        s, data = sec_data
        o = va - s["addr"]
        return data[o:data.index(b"\0", o)].decode()

    def wr(self, va, value, size=None):
        size = size or self.ptr
        self.mem.write(self.pa(va), int(value).to_bytes(size, "little"))

    def wbytes(self, va, b):
        self.mem.write(self.pa(va), b)

    def rd(self, va, size=None):
        size = size or self.ptr
        return int.from_bytes(self.mem.read(self.pa(va), size), "little")

    def o(self, name):
        return self.off[name]

    # -- kernel page tables -------------------------------------------------------------------
    def _map_kernel(self):
        ref = self.ref
        if self.mode == "2level":
            for va in range(self.dm, I386_LOWMEM_END, 4 * M):
                ref.map(va, va - self.dm, 4 * M, rw=True, us=False, global_=True)
        elif self.mode == "pae":
            for va in range(self.dm, I386_LOWMEM_END, 2 * M):
                ref.map(va, va - self.dm, 2 * M, rw=True, us=False, nx=(va != self.dm), global_=True)
        else:
            for pa in range(0, 1 * G, 2 * M):                                  # 1 GiB of RAM
                ref.map(self.dm + pa, pa, 2 * M, rw=True, us=False, nx=True, global_=True)
            ref.map(self.kimage, self.kbase_pa, 2 * M, rw=True, us=False, global_=True)

    def kmalloc(self, size, align=64):
        """A slab object in the direct map (objects never straddle a page)."""
        size = (size + align - 1) & ~(align - 1)
        assert size <= PAGE
        if self.slab_off + size > PAGE:
            self.slab_page, self.slab_off = self.mem.alloc(), 0
        va = self.dm + self.slab_page + self.slab_off
        self.slab_off += size
        return va

    def page_va(self):
        """A fresh zeroed page; its direct-map address."""
        return self.dm + self.mem.alloc()

    # -- vmalloc ------------------------------------------------------------------------------
    def vm_area(self, start_hint, npages, what, frames=None, rw=True, nx=True, gap_after=True):
        """Reserve and map ``npages`` at the lowest free address >= ``start_hint`` (one guard page
        after each area, counted in its vmap_area like Linux). Returns the va."""
        va = start_hint
        for s, e, _ in sorted(self.vmap):
            if va < e and s < va + (npages + 1) * PAGE:
                va = e
        if frames is None:
            frames = [NOT_IN_DUMP + ((va - start_hint) >> 12) * PAGE + i * PAGE for i in range(npages)]
        for i, f in enumerate(frames):
            self.ref.map(va + i * PAGE, f, 4 * K, rw=rw, us=False, nx=nx and self.nxe, global_=True)
        self.vmap.append((va, va + (npages + 1) * PAGE, what))
        return va

    def mod_block(self, npages, tag):
        """Physically contiguous module frames, not adjacent to anything else in the dump."""
        pa = self.modnext
        for i in range(npages):
            self.mem.pattern(pa + i * PAGE, tag)
        self.modnext += (npages + 1) * PAGE
        assert self.modnext < NOT_IN_DUMP
        return pa

    def load_module(self, name, sections, tag):
        """``sections``: list of (kind, npages) in core-layout order (text, rodata, ro_after_init,
        data). i386 (core_layout): one vmalloc area; x86_64 (mem[]): one area per kind."""
        rights = {"text": (False, False), "rodata": (False, True), "ro_after_init": (False, True),
                  "data": (True, True)}
        base_hint = I386_VMALLOC if self.arch == "i386" else X86_MODULES
        mod = dict(name=name, regions=[], pages=[], load_seq=len(self.events))
        if self.arch == "i386":
            n = sum(c for _, c in sections)
            pa = self.mod_block(n, tag)
            va = self.vm_area(base_hint, n, "module " + name, frames=[pa + i * PAGE for i in range(n)])
            # rights per page (the area was mapped RW; set them per section)
            i = 0
            sizes = {}
            for kind, cnt in sections:
                rw, nx = rights[kind]
                for j in range(cnt):
                    t, idx = self.ref.entry_ref(va + (i + j) * PAGE, "PTE")
                    leaf = self.ref.leaf_value(pa + (i + j) * PAGE, 4 * K, rw=rw, nx=nx and self.nxe, global_=True)
                    self.ref.set_entry(t, idx, leaf)
                    mod["pages"].append(va + (i + j) * PAGE)
                i += cnt
                sizes[kind] = i * PAGE
            self.vblocks[pa] = va
            mod["regions"].append(dict(kind="core", base=va, size=n * PAGE))
            mod["layout"] = dict(base=va, size=n * PAGE, text_size=sizes["text"], ro_size=sizes["rodata"],
                                 ro_after_init_size=sizes.get("ro_after_init", sizes["rodata"]))
            data_va = va + (n - dict(sections)["data"]) * PAGE
        else:
            mod["mem"] = {}
            for kind, cnt in sections:
                pa = self.mod_block(cnt, tag)
                rw, nx = rights[kind]
                va = self.vm_area(base_hint, cnt, f"module {name} {kind}",
                                  frames=[pa + i * PAGE for i in range(cnt)], rw=rw, nx=nx)
                self.vblocks[pa] = va
                mod["regions"].append(dict(kind=kind, base=va, size=cnt * PAGE))
                mod["pages"] += [va + i * PAGE for i in range(cnt)]
                mod["mem"][kind] = (va, cnt * PAGE)
            data_va = mod["mem"]["data"][0]
        mod["module_va"] = data_va + 0x100             # __this_module, in the module's data
        self.modules.append(mod)
        self.events.append(("module", name))
        return mod

    # -- tasks --------------------------------------------------------------------------------
    def new_mm(self, owner_pid):
        """A user mm with its own PGD: kernel half copied from the reference now (fork time)."""
        mm = self.kmalloc(self.o("sizeof.mm_struct"))
        pgd = self.page_va()
        ppa = pgd - self.dm
        pt = _rooted(self.mode, self.mem, ppa, self.nxe)
        ref_root = self.ref.root
        if self.mode == "2level":
            for i in range(768, 1024):
                pt.set_entry(ppa, i, self.ref.get_entry(ref_root, i))
        elif self.mode == "pae":
            for i in range(3):                          # preallocated user PMDs
                pmd = self.mem.alloc()
                pt.table_info[pmd] = (1, i << 30)
                pt.set_entry(ppa, i, pmd | P)
            kpmd = self.mem.alloc()                     # unshared kernel PMD: a copy
            src = self.ref.get_entry(ref_root, 3) & 0xFFFFF000
            self.mem.write(kpmd, self.mem.read(src, PAGE))
            pt.table_info[kpmd] = (1, 3 << 30)
            pt.set_entry(ppa, 3, kpmd | P)
        else:
            for i in range(256, 512):
                pt.set_entry(ppa, i, self.ref.get_entry(ref_root, i))
        text = self.user_text
        uva = 0x08048000 if self.arch == "i386" else 0x400000
        pt.map(uva, text, 4 * K, rw=False, us=True)
        self.mms[mm] = dict(pgd_va=pgd, pgd_pa=ppa, users=1, owner=owner_pid, pt=pt, born=self.fork_stamp)
        return mm

    def fork(self, pid, comm, kind, mm=None, active_mm=None, parent=None):
        """kind: 'user' (own mm unless ``mm`` given: vfork), 'kthread' (mm NULL; active_mm given or
        init_mm)."""
        self.fork_stamp += 1
        va = self.sym["init_task"] if kind == "idle" else self.kmalloc(self.o("sizeof.task_struct"))
        if kind == "user":
            if mm is None:
                mm = self.new_mm(pid)
            else:
                self.mms[mm]["users"] += 1
            active_mm = mm
        else:
            mm = None
            active_mm = active_mm or self.init_mm
        t = dict(pid=pid, comm=comm, kind=kind, task_va=va, mm=mm, active_mm=active_mm,
                 parent=parent, seq=len(self.events))
        self.tasks.append(t)
        self.events.append(("fork", pid))
        return t

    def task(self, pid):
        return next(t for t in self.tasks if t["pid"] == pid)

    # -- writing the objects ------------------------------------------------------------------
    def write_objects(self, links=None):
        """Write tasks, mms, modules, vmap areas and the list heads into memory. ``links``:
        optional dict task_va -> (next, prev) overriding the task list pointers (corruption)."""
        o = self.o
        tasks = self.tasks
        head = self.sym["init_task"] + o("task_struct.tasks")
        nodes = [t["task_va"] + o("task_struct.tasks") for t in tasks]
        for i, t in enumerate(tasks):
            va = t["task_va"]
            nxt, prv = nodes[(i + 1) % len(nodes)], nodes[i - 1]
            if links and va in links:
                nxt, prv = links[va]
            self.wr(va + o("task_struct.tasks") + o("list_head.next"), nxt)
            self.wr(va + o("task_struct.tasks") + o("list_head.prev"), prv)
            self.wr(va + o("task_struct.mm"), t["mm"] or 0)
            self.wr(va + o("task_struct.active_mm"), t["active_mm"])
            self.wr(va + o("task_struct.pid"), t["pid"], 4)
            self.wr(va + o("task_struct.tgid"), t["pid"], 4)
            self.wr(va + o("task_struct.flags"), PF_KTHREAD if t["kind"] in ("kthread", "idle") else 0x400100, 4)
            parent = self.task(t["parent"])["task_va"] if t["parent"] is not None else va
            self.wr(va + o("task_struct.real_parent"), parent)
            self.wr(va + o("task_struct.group_leader"), va)
            self.wbytes(va + o("task_struct.comm"), t["comm"].encode().ljust(16, b"\0")[:16])
        assert nodes[0] == head
        for mm, m in self.mms.items():
            self.wr(mm + o("mm_struct.pgd"), m["pgd_va"])
            self.wr(mm + o("mm_struct.mm_users"), m["users"], 4)
            self.wr(mm + o("mm_struct.mm_count"), 1, 4)
            if m.get("owner") is not None:
                self.wr(mm + o("mm_struct.owner"), self.task(m["owner"])["task_va"])
        # modules: list_add at the head of `modules` (newest first), like add_unformed_module()
        mhead = self.sym["modules"]
        order = list(reversed(self.modules))
        mnodes = [mhead] + [m["module_va"] + o("module.list") for m in order]
        for m in self.modules:
            va = m["module_va"]
            self.wbytes(va, bytes(o("sizeof.module")))                   # the struct over pattern data
            self.wr(va + o("module.state"), 0, 4)                       # MODULE_STATE_LIVE
            self.wbytes(va + o("module.name"), m["name"].encode().ljust(o("MODULE_NAME_LEN"), b"\0"))
            if "layout" in m:
                cl = va + o("module.core_layout")
                L = m["layout"]
                self.wr(cl + o("module_layout.base"), L["base"])
                for f in ("size", "text_size", "ro_size", "ro_after_init_size"):
                    self.wr(cl + o(f"module_layout.{f}"), L[f], 4)
                # init_layout: freed after init (base NULL, sizes 0): memory is already zero
            else:
                kinds = ("text", "data", "rodata", "ro_after_init", "init_text", "init_data", "init_rodata")
                for i, kind in enumerate(kinds):
                    base, size = m["mem"].get(kind, (0, 0))
                    e = va + o("module.mem") + i * o("sizeof.module_memory")
                    self.wr(e + o("module_memory.base"), base)
                    self.wr(e + o("module_memory.size"), size, 4)
        # link after the structs are written (they are laid over pattern data, list included)
        for i, n in enumerate(mnodes):
            self.wr(n + o("list_head.next"), mnodes[(i + 1) % len(mnodes)])
            self.wr(n + o("list_head.prev"), mnodes[i - 1])
        # vmap areas: sorted list
        vhead = self.sym["vmap_area_list"]
        areas = sorted(self.vmap)
        vnodes = [vhead]
        for s, e, _ in areas:
            va = self.kmalloc(o("sizeof.vmap_area"))
            self.wr(va + o("vmap_area.va_start"), s)
            self.wr(va + o("vmap_area.va_end"), e)
            vnodes.append(va + o("vmap_area.list"))
        for i, n in enumerate(vnodes):
            self.wr(n + o("list_head.next"), vnodes[(i + 1) % len(vnodes)])
            self.wr(n + o("list_head.prev"), vnodes[i - 1])

    # -- truth --------------------------------------------------------------------------------
    def pgd_of(self, t):
        return self.mms[t["mm"] or t["active_mm"]]

    def _diverge(self, root, va):
        """First entry on the walk of ``va`` where ``root``'s tree differs from the reference:
        (level name, index path). PAE PDPTEs are skipped: a task's PDPTE[3] always points to its
        own copy of the kernel PMD (unshared kernel PMD), so the walk goes on in both copies."""
        ref = self.ref
        ta, tb = ref.root, root
        path = []
        for lvl, name in enumerate(ref.names):
            idx = ref.index(va, lvl)
            path.append(idx)
            ea, eb = ref.get_entry(ta, idx), ref.get_entry(tb, idx)
            if self.mode == "pae" and lvl == 0 and ea & P and eb & P:
                ta, tb = ref._addr(ea, lvl, False), ref._addr(eb, lvl, False)
                continue
            if ea != eb:
                return name, path
            if not ea & P or ref._is_large(ea, lvl) or lvl == len(ref.names) - 1:
                return None, path
            ta = tb = ref._addr(ea, lvl, False)
        return None, path

    def findings(self):
        """Exhaustive: every module page, every task's PGD (mm or active_mm) against init_mm.pgd."""
        ref = self.ref
        by_pgd = {}
        for t in self.tasks:
            m = self.pgd_of(t)
            if m["pgd_pa"] != ref.root:
                by_pgd.setdefault(m["pgd_pa"], []).append(t["pid"])
        groups = {}
        linux = {("2level", "PDE"): "pgd", ("pae", "PDE"): "pmd", ("pae", "PDPTE"): "pgd"}
        for ppa, pids in sorted(by_pgd.items()):
            pt = _rooted(self.mode, self.mem, ppa, self.nxe)
            for mod in self.modules:
                for va in mod["pages"]:
                    r, w = ref.walk(va), pt.walk(va)
                    assert r["pa"] is not None
                    if w["pa"] is None:
                        kind, level = "missing", w["level"]
                        path = [pt.index(va, i) for i in range(ref.names.index(level) + 1)]
                    elif w["pa"] != r["pa"]:
                        kind, level = "different-frame", ref.names[-1]
                    elif (w["writable"], w["user"], w["nx"]) != (r["writable"], r["user"], r["nx"]):
                        kind, level = "different-rights", ref.names[-1]
                    else:
                        continue
                    if kind != "missing":
                        assert w["page_size"] == PAGE
                        path = [pt.index(va, i) for i in range(len(ref.names))]
                    dlevel, dpath = self._diverge(ppa, va)
                    lvl_i = ref.names.index(level)
                    shift = ref.shifts[lvl_i]
                    estart = va & ~((1 << shift) - 1)
                    key = (mod["name"], kind, level, path[0])
                    g = groups.setdefault(key, dict(pgds={}, entries={}, diverge=set()))
                    g["pgds"].setdefault(ppa, set()).add(va)
                    g["entries"][tuple(path)] = (estart, estart + (1 << shift))
                    g["diverge"].add((dlevel, tuple(dpath)))
        out = []
        for (mname, kind, level, top), g in sorted(groups.items()):
            pagesets = {frozenset(v) for v in g["pgds"].values()}
            # one finding per (module, kind, level, top entry, set of pages)
            for ps in sorted(pagesets, key=lambda s: sorted(s)):
                pgds = sorted(p for p, v in g["pgds"].items() if frozenset(v) == ps)
                pids = sorted(pid for p in pgds for pid in by_pgd[p])
                ents = sorted(k for k in g["entries"] if any(
                    g["entries"][k][0] <= va < g["entries"][k][1] for va in ps))
                out.append({
                    "module": mname, "kind": kind, "level": level,
                    "linux_level": linux.get((self.mode, level), level.lower().rstrip("e")),
                    "top_index": top, "task_pids": pids,
                    "pgds": [{"pa": p, "va": self.dm + p} for p in pgds],
                    "entries": [{"index_path": list(k), "va_start": g["entries"][k][0],
                                 "va_end": g["entries"][k][1]} for k in ents],
                    "diverges_at": [{"level": lv, "index_path": list(pth)} for lv, pth in sorted(g["diverge"])],
                    "pages": len(ps), "page_vas": sorted(ps),
                })
        return out

    def walk_list(self):
        """Follow init_task.tasks both ways over our own memory, as a checker would: stop at the
        head (done), at a node already seen (loop), or where node->next->prev != node (or the
        reverse) or the pointer cannot be read (bad-link)."""
        o = self.o
        head = self.sym["init_task"] + o("task_struct.tasks")
        byn = {t["task_va"] + o("task_struct.tasks"): t for t in self.tasks}
        res, errs = {}, []
        for d, fwd, back in (("next", "list_head.next", "list_head.prev"),
                             ("prev", "list_head.prev", "list_head.next")):
            seen, pids, n = {head}, [], head
            while True:
                nxt = self.rd(n + o(fwd))
                if nxt == head:
                    break
                cur = byn.get(n)
                at = dict(direction=d, field="tasks." + d, task_va=cur["task_va"] if cur else None,
                          pid=cur["pid"] if cur else None, found=nxt)
                if nxt in seen:
                    t = byn[nxt]
                    errs.append(dict(at, kind="loop", loops_to_pid=t["pid"], loops_to_task=t["task_va"]))
                    break
                w = self.ref.walk(nxt) if nxt < (1 << self.ptr * 8) else {"pa": None}
                back_val = self.rd(nxt + o(back)) if w["pa"] is not None and self.mem.has(w["pa"]) else None
                if back_val != n:
                    errs.append(dict(at, kind="bad-link", target_in_dump=back_val is not None,
                                     target_back_pointer=back_val))
                    break
                seen.add(nxt)
                pids.append(byn[nxt]["pid"])
                n = nxt
            res[d] = pids
        return res, errs


# ---------------------------------------------------------------------------------------------
# scenarios
KTHREADS_EARLY = [(2, "kthreadd"), (3, "rcu_gp"), (4, "rcu_par_gp"), (6, "kworker/0:0H"),
                  (8, "mm_percpu_wq"), (9, "ksoftirqd/0"), (10, "rcu_sched"), (11, "migration/0"),
                  (13, "kdevtmpfs"), (17, "xenbus"), (18, "xenwatch"), (24, "khungtaskd"),
                  (31, "kswapd0")]


def scenario_i386(name, variant, mode, elf, off, version):
    k = Kernel(name, variant, mode, elf, off, version)
    k.user_text = k.mem.pattern(k.mem.alloc(), 7)
    span = (4 if mode == "2level" else 2) * M           # what one PDE maps
    k.fork(0, "swapper", "idle")
    k.vm_area(I386_VMALLOC, 2, "vmalloc")              # early boot: creates the first vmalloc PDE
    k.fork(1, "systemd", "user", parent=0)
    for pid, comm in KTHREADS_EARLY:
        k.fork(pid, comm, "kthread", parent=2 if pid != 2 else 0)
    # modules loaded by udev, all inside the first vmalloc PDE
    k.fork(160, "systemd-journal", "user", parent=1)
    k.fork(182, "systemd-udevd", "user", parent=1)
    k.load_module("xen_blkfront", [("text", 4), ("rodata", 2), ("ro_after_init", 1), ("data", 2)], 0x11)
    k.load_module("xen_netfront", [("text", 5), ("rodata", 2), ("data", 3)], 0x12)
    k.load_module("crc32c_generic", [("text", 1), ("rodata", 1), ("data", 1)], 0x13)
    # a large vmalloc buffer fills the first PDE up to 2 pages (+ guard) below its end
    used = max(e for _, e, _ in k.vmap)
    fill = (I386_VMALLOC + span - 3 * PAGE - used) // PAGE
    k.vm_area(I386_VMALLOC, fill, "vmalloc (buffer)")
    k.fork(402, "dhclient", "user", parent=1)
    k.fork(455, "sshd", "user", parent=1)
    k.fork(460, "agetty", "user", parent=1)
    k.fork(501, "bash", "user", parent=455)
    k.fork(503, "sh", "user", mm=k.task(501)["mm"], parent=501)         # vfork child: bash's mm
    k.fork(520, "kworker/u2:1", "kthread", active_mm=k.task(460)["mm"], parent=2)
    k.fork(540, "cron", "user", parent=1)
    # the seed: tracehook straddles the PDE boundary; its second part needs a NEW PDE/PMD entry,
    # created in swapper_pg_dir only
    ref_top = k.ref.get_entry(*k.ref.entry_ref(I386_VMALLOC + span, "PDE"))
    assert not ref_top & P
    th = k.load_module("tracehook", [("text", 4), ("rodata", 1), ("data", 3)], 0x14)
    assert th["regions"][0]["base"] == I386_VMALLOC + span - 2 * PAGE
    k.vm_area(I386_VMALLOC, 2, "vmalloc")                                # lands after tracehook
    k.fork(610, "kworker/0:2", "kthread", active_mm=k.task(501)["mm"], parent=2)   # lazy TLB: bash's mm
    k.fork(812, "perf", "user", parent=501)
    k.fork(813, "sleep", "user", parent=812)
    k.fork(815, "kworker/0:3", "kthread", active_mm=k.task(812)["mm"], parent=2)
    k.fork(830, "sshd", "user", parent=455)
    # a stale copy: pid 830's first vmalloc PDE points to a private copy of the page table that
    # maps one xen_netfront data page to an old frame (2-level) / read-only (PAE)
    stale = k.mms[k.task(830)["mm"]]
    pt = stale["pt"]
    net = next(m for m in k.modules if m["name"] == "xen_netfront")
    victim = net["pages"][-1]
    t, i = pt.entry_ref(victim, "PDE")
    old_pt = pt.get_entry(t, i) & 0xFFFFF000
    copy = k.mem.alloc()
    k.mem.write(copy, k.mem.read(old_pt, PAGE))
    pt.set_entry(t, i, (pt.get_entry(t, i) & 0xFFF) | copy)
    pte_i = pt.index(victim, len(pt.names) - 1)
    e = int.from_bytes(k.mem.read(copy + pte_i * pt.esize, pt.esize), "little")
    if mode == "2level":
        oldframe = k.mem.pattern(k.mem.alloc(), 0x15)
        e = (e & 0xFFF) | oldframe
    else:
        e &= ~RW
    k.mem.write(copy + pte_i * pt.esize, e.to_bytes(pt.esize, "little"))
    k.write_objects()
    cur = k.task(501)                                                    # bash is running
    fault = th["pages"][3]                                               # tracehook text, new PDE
    return k, dict(current=cur, rip=fault + 0x1A4, cr2=fault + 0x1A4, stale_pid=830, stale_va=victim)


def scenario_x86_64(name, elf, off, version, corrupt=False):
    k = Kernel(name, "x86_64", "4level", elf, off, version)
    k.user_text = k.mem.pattern(k.mem.alloc(), 7)
    k.fork(0, "swapper/0", "idle")
    k.vm_area(X86_VMALLOC, 4, "vmalloc")
    k.fork(1, "systemd", "user", parent=0)
    for pid, comm in KTHREADS_EARLY[:8]:
        k.fork(pid, comm, "kthread", parent=2 if pid != 2 else 0)
    k.load_module("xen_blkfront", [("text", 3), ("rodata", 2), ("ro_after_init", 1), ("data", 2)], 0x21)
    k.fork(170, "systemd-journal", "user", parent=1)
    k.load_module("xen_netfront", [("text", 4), ("rodata", 1), ("data", 2)], 0x22)
    k.fork(401, "dhclient", "user", parent=1)
    k.fork(455, "sshd", "user", parent=1)
    k.fork(501, "bash", "user", parent=455)
    k.vm_area(X86_VMALLOC, 600, "vmalloc (buffer)")
    k.load_module("tracehook", [("text", 2), ("rodata", 1), ("data", 2)], 0x23)
    k.fork(520, "kworker/u2:1", "kthread", active_mm=k.task(501)["mm"], parent=2)
    k.fork(812, "perf", "user", parent=501)
    k.fork(813, "sleep", "user", parent=812)
    links, plan = None, None
    if corrupt:
        for pid, comm in ((900, "cron"), (901, "atd"), (902, "rsyslogd"), (903, "nginx"), (904, "nginx")):
            k.fork(pid, comm, "user", parent=1)
        o = k.o
        node = lambda t: t["task_va"] + o("task_struct.tasks")  # noqa: E731
        ts = k.tasks
        n = len(ts)
        g_i, l_i, loop_to = 9, 12, 15                  # tasks[g].next -> garbage, tasks[l].prev -> tasks[15]
        garbage = k.dm + k.mem.pattern(k.mem.alloc(), 0x66) + 0x2A8
        links = {}
        for i, t in enumerate(ts):
            nxt, prv = node(ts[(i + 1) % n]), node(ts[i - 1])
            if i == g_i:
                nxt = garbage
            if i == l_i:
                prv = node(ts[loop_to])
            links[t["task_va"]] = (nxt, prv)
        plan = dict(g=ts[g_i], l=ts[l_i], loop_to=ts[loop_to], garbage=garbage,
                    unreachable=[t["pid"] for t in ts[g_i + 1:l_i]])
    k.write_objects(links)
    cur = k.task(501)
    th = next(m for m in k.modules if m["name"] == "tracehook")
    return k, dict(current=cur, rip=th["pages"][0] + 0x40, cr2=0, plan=plan)


# ---------------------------------------------------------------------------------------------
CORES = {
    "mod-i386-2level": dict(variant="i386-2level", mode="2level", version="4.19.0-xenscope"),
    "mod-i386-pae": dict(variant="i386-pae", mode="pae", version="4.19.0-xenscope-pae"),
    "mod-x86_64": dict(variant="x86_64", mode="4level", version="6.6.0-xenscope"),
    "mod-corrupt-tasks": dict(variant="x86_64", mode="4level", version="6.6.0-xenscope",
                              vmlinux="mod-x86_64.vmlinux", corrupt=True),
}


def _vmcoreinfo(k):
    o = k.o
    lines = [("OSRELEASE", k.version), ("PAGESIZE", "4096")]
    if k.arch == "x86_64":
        lines += [("SYMBOL(init_top_pgt)", f"{k.sym['init_top_pgt']:x}")]
    else:
        lines += [("SYMBOL(swapper_pg_dir)", f"{k.sym['swapper_pg_dir']:x}")]
    lines += [("SYMBOL(_stext)", f"{k.sym['_stext']:x}"), ("SYMBOL(vmap_area_list)", f"{k.sym['vmap_area_list']:x}"),
              ("OFFSET(list_head.next)", str(o("list_head.next"))),
              ("OFFSET(list_head.prev)", str(o("list_head.prev"))),
              ("OFFSET(vmap_area.va_start)", str(o("vmap_area.va_start"))),
              ("OFFSET(vmap_area.list)", str(o("vmap_area.list")))]
    if k.mode == "pae":
        lines.append(("CONFIG_X86_PAE", "y"))
    if k.arch == "x86_64":
        lines += [("NUMBER(phys_base)", "0"), ("NUMBER(pgtable_l5_enabled)", "0"), ("KERNELOFFSET", "0")]
    return "".join(f"{a}={b}\n" for a, b in lines), dict(lines)


def write(name, out, vmlinux_cache):
    """Build one core; returns the files written (the vmlinux only by the core that owns it)."""
    spec = CORES[name]
    vmname = spec.get("vmlinux", f"{name}.vmlinux")
    files = []
    if vmname not in vmlinux_cache:
        vpath = os.path.abspath(os.path.join(out, vmname))
        vmlinux_cache[vmname] = compile_variant(spec["variant"], vpath)
        files.append(vmname)
    elf, off = vmlinux_cache[vmname]
    if spec["mode"] == "4level":
        k, run = scenario_x86_64(name, elf, off, spec["version"], corrupt=spec.get("corrupt", False))
    else:
        k, run = scenario_i386(name, spec["variant"], spec["mode"], elf, off, spec["version"])
    cur = run["current"]
    cr3 = k.pgd_of(cur)["pgd_pa"]
    if k.arch == "x86_64":
        cr4, efer = CR4_PSE | CR4_PAE | CR4_PGE | CR4_OSFX, EFER_LONG
        rsp = k.dm + 0x2FFFF00
        cpus = [dict(cr0=CR0, cr2=run["cr2"], cr3=cr3, cr4=cr4, rip=run["rip"], rsp=rsp, rflags=0x246,
                     cs=0x10, ss=0x18, ds=0, es=0, gs_base=0xFFFF88803FC00000)]
    else:
        cr4 = CR4_PSE | CR4_PGE | (CR4_PAE if k.mode == "pae" else 0)
        efer = EFER_NXE if k.mode == "pae" else 0
        rsp = k.dm + 0x2FFFF00
        cpus = [dict(cr0=CR0, cr2=run["cr2"], cr3=cr3, cr4=cr4, rip=run["rip"], rsp=rsp, rflags=0x10046,
                     cs=0x60, ss=0x68, ds=0x7B, es=0x7B)]
    vtext, vmci = _vmcoreinfo(k)
    img_pa = k.kbase_pa

    def vaddr_of(pa):
        if pa == img_pa:
            return k.kimage
        if pa in k.vblocks:
            return k.vblocks[pa]
        return k.dm + pa

    path = os.path.join(out, name + ".core")
    res = write_elf_core(path, machine=k.arch, segments=k.mem.segments(), cpus=cpus, vmcoreinfo=vtext,
                         qemu_notes=True, vaddr_of=vaddr_of)
    assert res["memory"] == k.mem.ranges()
    # every image/module run must start where vaddr_of expects (nothing adjacent)
    starts = {s for s, _ in res["memory"]}
    assert img_pa in starts and all(pa in starts for pa in k.vblocks)
    walks, list_errors = k.walk_list()
    if run.get("plan"):
        p = run["plan"]
        o = k.o
        want = [dict(direction="next", field="tasks.next", task_va=p["g"]["task_va"], pid=p["g"]["pid"],
                     found=p["garbage"], kind="bad-link", target_in_dump=True,
                     target_back_pointer=k.rd(p["garbage"] + o("list_head.prev"))),
                dict(direction="prev", field="tasks.prev", task_va=p["l"]["task_va"], pid=p["l"]["pid"],
                     found=p["loop_to"]["task_va"] + o("task_struct.tasks"), kind="loop",
                     loops_to_pid=p["loop_to"]["pid"], loops_to_task=p["loop_to"]["task_va"])]
        assert list_errors == want, (list_errors, want)
        reach = set(walks["next"]) | set(walks["prev"]) | {0}
        assert sorted(t["pid"] for t in k.tasks if t["pid"] not in reach) == sorted(p["unreachable"])
    else:
        assert not list_errors and walks["next"] == [t["pid"] for t in k.tasks[1:]]
    findings = k.findings()
    o = k.o
    offsets = {n: v for n, v in sorted(k.off.items())}
    tasks = []
    for t in k.tasks:
        m = k.pgd_of(t)
        tasks.append({"pid": t["pid"], "comm": t["comm"], "kind": t["kind"], "task_va": t["task_va"],
                      "mm": t["mm"], "active_mm": t["active_mm"], "pgd_va": m["pgd_va"], "pgd_pa": m["pgd_pa"],
                      "forked_after": [e[1] for e in k.events[:t["seq"]] if e[0] == "module"]})
    modules = []
    for mod in k.modules:
        d = {"name": mod["name"], "module_va": mod["module_va"], "regions": mod["regions"],
             "pages": len(mod["pages"]), "list_va": mod["module_va"] + o("module.list")}
        if "layout" in mod:
            d["core_layout"] = mod["layout"]
            d["init_layout"] = {"base": 0, "size": 0}
        modules.append(d)
    man = {
        "core": name + ".core", "vmlinux": vmname, "machine": k.arch, "mode": k.mode,
        "kernel_version": k.version, "linux_banner": k.banner,
        "module_layout": "mem" if k.arch == "x86_64" else "core_layout",
        "registers": dict(cpus[0], efer=efer), "current_pid": cur["pid"],
        "memory": res["memory"],
        "tasks": tasks, "task_walk": walks, "list_errors": list_errors,
        "modules": modules,
        "modules_list_order": [m["name"] for m in reversed(k.modules)],
        "vmalloc": [{"va_start": s, "va_end": e, "what": w} for s, e, w in sorted(k.vmap)],
        "reference_pgd": {"va": k.ref_va, "pa": k.ref.root},
        "findings": findings,
        "symbols": {n: k.sym[n] for n in sorted(k.sym) if n[0] != "_" or n in ("_text", "_stext", "_end")},
        "offsets": offsets,
        "vmcoreinfo": vmci,
    }
    if k.arch == "i386":
        man["stale_copy"] = {"pid": run["stale_pid"], "va": run["stale_va"]}
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(man, f, sort_keys=True, indent=1)
        f.write("\n")
    return files + [name + ".core", name + ".json"]


def write_all(out):
    cache = {}
    files = []
    for name in CORES:
        files += write(name, out, cache)
    return files
