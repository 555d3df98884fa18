"""vmalloc areas: ``vmap_area_list`` (sorted list, <= 6.8) or the ``vmap_area_root`` red-black tree.

Kernels from 6.9 keep busy areas in per-node trees (``vmap_nodes``), which this module does not
read yet: :func:`for_each_vmap_area` then raises, naming the missing symbols.
"""

from dataclasses import dataclass

from ..errors import XenscopeError
from . import MAX_ENTRIES, ListError, Walked, list_for_each


@dataclass
class VmapArea:
    """One ``struct vmap_area``: ``[va_start, va_end)`` (the end includes the guard page)."""
    address: int
    va_start: int
    va_end: int

    @property
    def pages(self):
        return range(self.va_start & ~0xFFF, (self.va_end + 0xFFF) & ~0xFFF, 4096)

    def as_dict(self):
        return {"vmap_area": self.address, "va_start": self.va_start, "va_end": self.va_end,
                "pages": len(self.pages)}


def _area(kernel, addr):
    return VmapArea(addr, kernel.member(addr, "vmap_area.va_start"), kernel.member(addr, "vmap_area.va_end"))


def for_each_vmap_area(kernel, max_entries=MAX_ENTRIES, strict=False):
    """Every busy vmalloc area, in address order, as :class:`VmapArea` objects.

    Walks ``vmap_area_list`` when the kernel has it, else the ``vmap_area_root`` rb-tree in order.

    :return: :class:`~xenstructs.linux.Walked` (``.error`` where the walk broke)
    :raises XenscopeError: when neither symbol is known
    """
    k = kernel
    head = k.symbol("vmap_area_list", required=False)
    if head is not None and k.profile.has("vmap_area.list"):
        off = k.profile.offset("vmap_area.list")
        nodes = list_for_each(k, head, "vmap_area_list", max_entries, strict)
        out = Walked(_area(k, n - off) for n in nodes)
        out.error = nodes.error
        return out
    root = k.symbol("vmap_area_root", required=False)
    if root is not None and k.profile.has("vmap_area.rb_node"):
        return _rb_walk(k, root, max_entries, strict)
    raise XenscopeError("no vmap_area_list or vmap_area_root (with its vmap_area offsets) known: "
                        "kernels from 6.9 keep vmalloc areas in vmap_nodes, not read yet")


def _rb_walk(k, root, max_entries, strict):
    """In-order walk of the rb-tree at ``root`` (``struct rb_root``); rb_node is
    ``{__rb_parent_color, rb_right, rb_left}``."""
    off = k.profile.offset("vmap_area.rb_node")
    right, left = k.ptr_size, 2 * k.ptr_size
    out = Walked()
    seen = set()
    stack = []
    try:
        node = k.read_ptr(root)
    except XenscopeError:
        out.error = ListError("vmap_area_root", root, "rb_node", None, "unreadable", 0)
        if strict:
            raise out.error
        return out
    parent, field = root, "rb_node"
    try:
        while stack or node:
            while node:
                if node in seen:
                    raise ListError("vmap_area_root", parent, field, node, "loop", len(out))
                if len(seen) >= max_entries:
                    raise ListError("vmap_area_root", parent, field, node, "too-long", len(out))
                seen.add(node)
                stack.append(node)
                try:
                    parent, field, node = node, "rb_left", k.read_ptr(node + left)
                except XenscopeError:
                    raise ListError("vmap_area_root", parent, field, node, "unreadable", len(out)) from None
            node = stack.pop()
            out.append(_area(k, node - off))
            parent, field, node = node, "rb_right", k.read_ptr(node + right)
    except ListError as e:
        if strict:
            raise
        out.error = e
    return out
