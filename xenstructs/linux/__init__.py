"""Linux kernel objects read from a dump: tasks, modules, vmalloc areas, and the module-mapping check.

Modules, one per subject (drgn helpers style):

:mod:`.profile`
    :class:`~.profile.Profile`: the few structure offsets and symbols needed, from a vmlinux's DWARF
    (pyelftools, read once and saved as a small JSON keyed by build-id/banner), from a JSON file,
    or from a callable (the gdb layer answers with gdb's own types). :class:`~.profile.Symbols`
    from vmlinux, System.map, kallsyms text or VMCOREINFO.
:mod:`.fromdump`, :mod:`.kallsyms`, :mod:`.kallsyms_shape`, :mod:`.btf`, :mod:`.vmem`
    symbols and types from the dump alone: the kernel's kallsyms tables (located by VMCOREINFO, or
    by their shape in the kernel image) and its BTF blob (``__start_BTF``), read through the
    kernel's own page tables; what :func:`~.kernel.open_kernel` uses when no file is given.
:mod:`.kernel`
    :class:`~.kernel.Kernel`: kernel virtual memory read through the reference page tables
    (``init_mm.pgd``), KASLR offset, ``member(addr, "task_struct.pid")``.
:mod:`.tasks`, :mod:`.modules`, :mod:`.vmalloc`
    bounded list walks (``init_task.tasks``, ``modules``, ``vmap_area_list``/``vmap_area_root``).
    A walk that meets a corrupt pointer or a loop stops and says where (:class:`ListError`).
:mod:`.modcheck`
    is every module page mapped alike in every task's page directory? (:func:`~.modcheck.fast`,
    :func:`~.modcheck.exhaustive`).

Failure modes shared by every helper: a pointer that does not translate through the reference
tables raises :class:`~xenstructs.errors.XenscopeError` naming the address; a list that breaks
returns what was walked so far with ``.error`` set (or raises it with ``strict=True``).
"""

from ..errors import XenscopeError


class ListError(XenscopeError):
    """A kernel list could not be walked to its end.

    ``address`` is the node whose pointer is bad (or where a loop was detected), ``field`` the
    member (``next``/``prev``), ``value`` the pointer read there (None when unreadable), ``reason``
    one of ``unreadable``, ``bad-prev``, ``loop``, ``too-long``, ``null``.
    """

    def __init__(self, what, address, field, value, reason, walked):
        self.what, self.address, self.field, self.value = what, address, field, value
        self.reason, self.walked = reason, walked
        val = "unreadable" if value is None else f"{value:#x}"
        text = {"unreadable": f"{field} pointer {val} does not translate",
                "bad-prev": f"{field} = {val} but its prev does not point back",
                "loop": f"{field} = {val} leads back into the list before reaching its head (loop)",
                "too-long": f"more than {walked} entries (bound reached)",
                "null": f"{field} pointer is NULL"}[reason]
        super().__init__(f"{what}: list broken at {address:#x} after {walked} entries: {text}")

    def as_dict(self):
        return {"list": self.what, "address": self.address, "field": self.field, "value": self.value,
                "reason": self.reason, "walked": self.walked, "message": str(self)}


class Walked(list):
    """A list of walked objects with ``.error``: None, or the :class:`ListError` that stopped it."""

    error = None


MAX_ENTRIES = 1 << 20            # no kernel list is walked further than this many entries


def list_for_each(kernel, head, what="list", max_entries=MAX_ENTRIES, strict=False):
    """Addresses of the nodes of the circular ``struct list_head`` list at ``head`` (head excluded),
    in ``next`` order, like the kernel's ``list_for_each()``.

    Every node's ``next`` must translate and its ``next->prev`` point back; a node met twice, a
    NULL pointer or more than ``max_entries`` nodes stop the walk.

    :param head: ``struct list_head *`` (kernel virtual address)
    :return: :class:`Walked` of node addresses; ``.error`` is the :class:`ListError`, if any
    :raises ListError: instead, when ``strict``
    """
    held = kernel.target.held_bytes()
    if held is not None:                 # every node is two distinct pointers the dump holds
        max_entries = min(max_entries, held // (2 * kernel.ptr_size))
    out = Walked()
    seen = {head}
    prev = head
    try:
        node = kernel.read_ptr(head)
    except XenscopeError:
        return _fail(out, ListError(what, head, "next", None, "unreadable", 0), strict)
    while node != head:
        if node == 0:
            return _fail(out, ListError(what, prev, "next", 0, "null", len(out)), strict)
        if node in seen:
            return _fail(out, ListError(what, prev, "next", node, "loop", len(out)), strict)
        if len(out) >= max_entries:
            return _fail(out, ListError(what, prev, "next", node, "too-long", len(out)), strict)
        try:
            nxt = kernel.read_ptr(node)
            back = kernel.read_ptr(node + kernel.ptr_size)
        except XenscopeError:
            return _fail(out, ListError(what, prev, "next", node, "unreadable", len(out)), strict)
        if back != prev:
            return _fail(out, ListError(what, prev, "next", node, "bad-prev", len(out)), strict)
        seen.add(node)
        out.append(node)
        prev, node = node, nxt
    return out


def _fail(out, err, strict):
    if strict:
        raise err
    out.error = err
    return out
