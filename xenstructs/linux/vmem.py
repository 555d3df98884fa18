"""Kernel virtual memory read in bulk through one set of page tables, before any symbol is known.

:class:`VirtualMemory` is what the kallsyms and BTF readers use: it translates every page of a
range at once (:func:`~xenstructs.paging.translate_many`) and reads the physical runs, so a few MB
of tables cost a few table-page reads. :func:`kernel_paging` picks the tables: the kernel's own
top table from VMCOREINFO (``init_top_pgt``/``swapper_pg_dir``: the whole kernel half even when the
dump's CPU was on a PTI user directory), else the dump CPU's CR3.
"""

import numpy as np

from ..errors import NotInDump, XenscopeError

PAGE = 4096
MAX_READ = 256 << 20            # no single table read is larger than this


class VirtualMemory:
    """Reads of kernel virtual memory through ``paging``; ``read(va, size) -> bytes``.

    :raises XenscopeError: naming the first page that does not translate or is not in the dump
    """

    def __init__(self, target, paging, pointer_size=8):
        self.target, self.paging, self.ptr_size = target, paging, pointer_size
        self._pages = {}

    def _translate(self, first, count):
        from ..paging import translate_many
        need = [first + i * PAGE for i in range(count) if first + i * PAGE not in self._pages]
        if need:
            t = translate_many(self.target, self.paging, np.array(need, dtype=np.uint64))
            for va, ok, pa, size in zip(need, t.ok.tolist(), t.pa.tolist(), t.page_size.tolist()):
                self._pages[va] = (pa & ~(PAGE - 1)) if ok else None

    def read(self, va, size):
        if size < 0 or size > MAX_READ:
            raise XenscopeError(f"kernel read of {size:#x} bytes at {va:#x} refused (over {MAX_READ >> 20} MiB)")
        first = va & ~(PAGE - 1)
        count = (va + size - first + PAGE - 1) // PAGE
        self._translate(first, count)
        out = bytearray()
        run_pa, run_len, pos = None, 0, va
        end = va + size
        while pos < end:
            page = pos & ~(PAGE - 1)
            pa = self._pages.get(page)
            if pa is None:
                raise XenscopeError(f"kernel va {pos:#x} does not translate through the tables at "
                                    f"{self.paging.root:#x}")
            n = min(end - pos, page + PAGE - pos)
            addr = pa + (pos - page)
            if run_pa is not None and run_pa + run_len == addr:
                run_len += n
            else:
                if run_pa is not None:
                    out += self._phys(run_pa, run_len)
                run_pa, run_len = addr, n
            pos += n
        if run_pa is not None:
            out += self._phys(run_pa, run_len)
        return bytes(out)

    def _phys(self, pa, n):
        try:
            return self.target.read_phys(pa, n)
        except NotInDump:
            raise XenscopeError(f"kernel memory at pa {pa:#x} (+{n:#x}) is not in the dump") from None

    def u32(self, va):
        return int.from_bytes(self.read(va, 4), "little")

    def ptr(self, va):
        return int.from_bytes(self.read(va, self.ptr_size), "little")

    def cstring(self, va, limit=512):
        """The NUL-terminated bytes at ``va`` (at most ``limit``; stops at an untranslated page)."""
        out = b""
        while len(out) < limit:
            n = min(limit - len(out), PAGE - (va & (PAGE - 1)))
            chunk = self.read(va, n)
            cut = chunk.find(b"\0")
            if cut >= 0:
                return out + chunk[:cut]
            out += chunk
            va += n
        return out


def kernel_paging(target, resolve_args=None):
    """``(paging, why)``: the tables to read the kernel image through (see the module docstring).

    :raises XenscopeError: when neither VMCOREINFO nor the CPU give any tables
    """
    from ..context import _kernel_root, resolve
    from ..paging import Paging, root_from_cr3
    ctx = resolve(target, **dict(resolve_args or {}))
    if (resolve_args or {}).get("cr3") is None:
        root, why = _kernel_root(target, target.facts.get("machine"))
        if root is not None and target.holds(root) is not False:
            p = ctx.paging
            return Paging(p.mode, root_from_cr3(root, p.mode), p.nxe, p.maxphyaddr, p.cr4), why
    return ctx.paging, f"CR3 {ctx.cr3:#x} ({ctx.sources.get('cr3')})"


def pointer_size(target, paging):
    machine = target.facts.get("machine")
    return {"x86_64": 8, "i386": 4}.get(machine) or (8 if paging.mode in ("4level", "5level") else 4)
