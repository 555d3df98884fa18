"""Loaded modules: the ``modules`` list and each module's memory regions, in all three layouts.

Regions by kernel version (:attr:`~.profile.Profile.module_variant`):

* ``old`` (<= 4.4): ``core`` = ``module_core``/``core_size``, ``init`` = ``module_init``/``init_size``
* ``layout`` (4.5 - 6.3): ``core`` = ``core_layout.{base,size}``, ``init`` = ``init_layout``
* ``mem`` (6.4+): ``mem[MOD_TEXT..MOD_INIT_RODATA]`` named ``text``, ``data``, ``rodata``,
  ``ro_after_init``, ``init_text``, ``init_data``, ``init_rodata``

Empty regions (size 0 or base NULL, e.g. ``init`` after loading) are left out.
"""

from dataclasses import dataclass, field
from typing import List

from ..errors import XenscopeError
from . import MAX_ENTRIES, Walked, list_for_each
from .profile import MOD_MEM_NAMES

PAGE = 4096
MAX_MODULE_SIZE = 1 << 30        # a region larger than this is corrupt, not listed


@dataclass
class Region:
    name: str
    va: int
    size: int

    @property
    def pages(self):
        """Virtual addresses of the 4 KiB pages the region touches."""
        return range(self.va & ~(PAGE - 1), (self.va + self.size + PAGE - 1) & ~(PAGE - 1), PAGE)


@dataclass
class Module:
    """One ``struct module``."""
    address: int
    name: str
    regions: List[Region] = field(default_factory=list)
    error: str = None

    @property
    def pages(self):
        """Sorted distinct page addresses of all regions."""
        return sorted({p for r in self.regions for p in r.pages})

    def as_dict(self):
        return {"module": self.address, "name": self.name, "pages": len(self.pages), "error": self.error,
                "regions": [{"name": r.name, "va": r.va, "size": r.size, "pages": len(r.pages)}
                            for r in self.regions]}


def module_regions(kernel, mod):
    """The non-empty memory regions of the module at ``mod`` as :class:`Region` objects.

    :param mod: ``struct module *``
    :raises XenscopeError: when the profile knows no region layout, or a size is absurd
    """
    k, p = kernel, kernel.profile
    variant = p.module_variant
    raw = []
    if variant == "mem":
        base = k.member_addr(mod, "module.mem")
        step = p.size("module_memory")
        count = p.size("module.mem.count", len(MOD_MEM_NAMES))
        if not step:
            raise XenscopeError("the kernel profile lacks sizeof(struct module_memory)")
        for i in range(count):
            m = base + i * step
            raw.append((MOD_MEM_NAMES[i] if i < len(MOD_MEM_NAMES) else f"mem{i}",
                        k.member(m, "module_memory.base"), k.member(m, "module_memory.size")))
    elif variant == "layout":
        for name in ("core", "init"):
            key = f"module.{name}_layout"
            if not p.has(key):
                continue
            lay = k.member_addr(mod, key)
            raw.append((name, k.member(lay, "module_layout.base"), k.member(lay, "module_layout.size")))
    elif variant == "old":
        for name in ("core", "init"):
            if p.has(f"module.module_{name}"):
                raw.append((name, k.member(mod, f"module.module_{name}"), k.member(mod, f"module.{name}_size")))
    else:
        raise XenscopeError("the kernel profile has no module region layout (module.mem, core_layout or "
                            "module_core)")
    out = []
    for name, va, size in raw:
        if not va or not size:
            continue
        if size > MAX_MODULE_SIZE:
            raise XenscopeError(f"module at {mod:#x}: region {name} size {size:#x} is absurd")
        out.append(Region(name, va, size))
    return out


def module_from_address(kernel, mod):
    """The :class:`Module` at ``mod`` (``struct module *``); a region error is kept in ``.error``."""
    m = Module(mod, kernel.member(mod, "module.name"))
    try:
        m.regions = module_regions(kernel, mod)
    except XenscopeError as e:
        m.error = str(e)
    return m


def for_each_module(kernel, max_entries=MAX_ENTRIES, strict=False):
    """Every module on the ``modules`` list, as :class:`Module` objects (``lsmod`` order).

    :return: :class:`~xenstructs.linux.Walked`; ``.error`` is where the list broke, if it did
    """
    k = kernel
    off = k.profile.offset("module.list")
    nodes = list_for_each(k, k.symbol("modules"), "modules", max_entries, strict)
    out = Walked(module_from_address(k, n - off) for n in nodes)
    out.error = nodes.error
    return out
