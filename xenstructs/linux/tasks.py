"""Tasks: the ``init_task.tasks`` list, and the page directory each task runs on.

Only thread-group leaders are on ``tasks`` (threads share their leader's ``mm``), which is all a
page-table check needs. ``init_task`` (pid 0, ``swapper``) is listed first.
"""

from dataclasses import dataclass
from typing import Optional

from ..errors import XenscopeError
from . import MAX_ENTRIES, Walked, list_for_each


@dataclass
class Task:
    """One ``struct task_struct``.

    ``pgd`` is ``mm->pgd``, or ``active_mm->pgd`` for a kernel thread (``mm == NULL``);
    ``pgd_from`` says which (``"mm"``, ``"active_mm"`` or None when neither is set);
    ``root`` is the table address (the CR3 value without PCID), None when ``pgd`` does not translate.
    """
    address: int
    pid: int
    tgid: Optional[int]
    comm: str
    mm: int
    active_mm: int
    pgd: Optional[int] = None
    pgd_from: Optional[str] = None
    root: Optional[int] = None
    error: Optional[str] = None

    def as_dict(self):
        return {"task": self.address, "pid": self.pid, "tgid": self.tgid, "comm": self.comm, "mm": self.mm,
                "active_mm": self.active_mm, "pgd": self.pgd, "pgd_from": self.pgd_from, "cr3": self.root,
                "error": self.error}


def task_from_address(kernel, addr):
    """Read the :class:`Task` at ``addr`` (``struct task_struct *``), with its page directory.

    :raises XenscopeError: when the task_struct itself is unreadable.
    """
    k = kernel
    tgid = k.member(addr, "task_struct.tgid") if k.profile.has("task_struct.tgid") else None
    t = Task(addr, k.member(addr, "task_struct.pid"), tgid, k.member(addr, "task_struct.comm"),
             k.member(addr, "task_struct.mm"), k.member(addr, "task_struct.active_mm"))
    mm, t.pgd_from = (t.mm, "mm") if t.mm else (t.active_mm, "active_mm") if t.active_mm else (0, None)
    if mm:
        try:
            t.pgd = mm_pgd(k, mm)
            t.root = k.pgd_paging(t.pgd).root
        except XenscopeError as e:
            t.error = str(e)
    return t


def mm_pgd(kernel, mm):
    """``mm->pgd``.

    :param mm: ``struct mm_struct *``
    """
    return kernel.member(mm, "mm_struct.pgd")


def mm_root(mm, pgd_offset, machine, read_kernel, kernel_to_phys):
    """``(root, pgd)`` of the address space ``mm`` (``struct mm_struct *``), for a host that reads
    and translates kernel addresses itself (crash: ``KVADDR`` reads and ``kvtop``): ``mm->pgd``
    read at ``mm + pgd_offset`` (``offsetof(struct mm_struct, pgd)``, a pointer of ``machine``),
    and ``root``, the physical address of that page directory: the CR3 value without PCID.

    :param read_kernel: ``(va, size) -> bytes``, or None when unreadable
    :param kernel_to_phys: ``va -> physical address``, or None when it does not translate
    :return: ``(None, None)`` when ``mm`` is NULL (a kernel thread), the offset unknown, or
             ``mm->pgd`` unreadable or untranslatable
    """
    if not mm or pgd_offset is None:
        return None, None
    raw = read_kernel(mm + pgd_offset, 8 if machine == "x86_64" else 4)
    if raw is None:
        return None, None
    pgd = int.from_bytes(raw, "little")
    root = kernel_to_phys(pgd)
    if root is None:
        return None, None
    return root, pgd


def for_each_task(kernel, max_entries=MAX_ENTRIES, strict=False):
    """Every task on ``init_task.tasks``, ``init_task`` first, as :class:`Task` objects.

    >>> [(t.pid, t.comm) for t in for_each_task(kernel)][:2]      # doctest: +SKIP
    [(0, 'swapper/0'), (1, 'systemd')]

    :return: :class:`~xenstructs.linux.Walked`; ``.error`` is where the list broke, if it did
    :raises ListError: when ``strict`` and the list is broken
    """
    k = kernel
    init_task = k.symbol("init_task")
    off = k.profile.offset("task_struct.tasks")
    nodes = list_for_each(k, init_task + off, "init_task.tasks", max_entries, strict)
    out = Walked([task_from_address(k, init_task)])
    for node in nodes:
        out.append(task_from_address(k, node - off))
    out.error = nodes.error
    return out
