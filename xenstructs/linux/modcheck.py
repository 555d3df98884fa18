"""Is every module page mapped alike in every task's page directory?

For each page (of every module, and optionally every vmalloc area) and each distinct task page
directory, the page must be mapped as in the reference directory ``init_mm.pgd``: present, to the
same frame, with the same effective rights (RW, US, NX). On i386 (2-level, and PAE with an
unshared kernel PMD, e.g. Xen PV) a task's kernel half is a copy, synced lazily by
``vmalloc_fault()`` or eagerly by ``vmalloc_sync_all()``/``arch_sync_kernel_mappings()``; a
directory copied before a module's page table existed lacks the PDE (xen-facts §7.5).

**Where a walk diverges.** Walking the task's and the reference tables side by side for one page,
the level where they diverge is the first one whose entries differ in anything but the address of
the next table (the Accessed and Dirty bits are ignored). Entries equal there mean the whole
subtree is shared, so the page cannot differ; entries that differ only in the next table's
address (the PAE kernel PMD copies) send both walks one level down.

Two implementations give the same :class:`Findings`:

* :func:`exhaustive` walks every page in every directory (vectorised, but per page);
* :func:`fast` compares the top-level entries covering the pages against the reference, goes down
  only where they differ in the next table's address, and walks pages only under entries that
  diverge. On x86_64 (kernel half shared) it reads one entry per directory.
"""

from dataclasses import dataclass, field
from typing import List

import numpy as np

from .. import decode
from ..errors import XenscopeError
from ..paging import GEOMETRY, Paging, read_entries, translate_many

KINDS = ("missing", "different-frame", "different-rights")
AD_MASK = np.uint64(~0x60 & ((1 << 64) - 1))      # Accessed, Dirty: set by the CPU per copy
MAX_PAGES = 1 << 22                               # 16 GiB of 4 KiB pages per check
ROOT_CHUNK = 64                                   # directories walked together by exhaustive()


@dataclass
class Findings:
    """Per (directory, page) results as parallel arrays, sorted by (root index, page index).

    ``roots[root_idx]`` is the directory, ``vas[page_idx]`` the page, ``level`` the index in
    ``decode.LEVELS[mode]`` where the walk diverges, ``kind`` an index into :data:`KINDS`.
    """
    mode: str
    roots: np.ndarray
    vas: np.ndarray
    root_idx: np.ndarray
    page_idx: np.ndarray
    level: np.ndarray
    kind: np.ndarray

    def __len__(self):
        return len(self.root_idx)

    def as_set(self):
        """``{(root, va, level, kind)}`` with names, for comparisons."""
        names = decode.LEVELS[self.mode]
        return {(int(self.roots[r]), int(self.vas[p]), decode.ENTRY_NAMES[names[lv]], KINDS[k])
                for r, p, lv, k in zip(self.root_idx.tolist(), self.page_idx.tolist(),
                                       self.level.tolist(), self.kind.tolist())}


def _geometry(mode):
    esize, shifts, widths, bits = GEOMETRY[mode]
    return esize, shifts, widths


def _can_be_large(paging, li):
    name = decode.LEVELS[paging.mode][li]
    return (name == "PD" and not (paging.mode == "2level" and not paging.cr4 & decode.CR4_PSE)) or \
           (name == "PDPT" and paging.mode in ("4level", "5level"))


def _compare_level(paging, li, te, tmiss, re, rmiss):
    """Classify entries of one level: ``(same, descend, diverged)`` boolean arrays."""
    names = decode.LEVELS[paging.mode]
    fmask = np.uint64(decode.frame_mask(paging.mode, paging.maxphyaddr))
    mt, mr = te & AD_MASK, re & AD_MASK
    same = (mt == mr) & ~tmiss & ~rmiss
    last = li == len(names) - 1
    if last:
        descend = np.zeros(len(te), bool)
    else:
        tp = (te & np.uint64(1)) != 0
        rp = (re & np.uint64(1)) != 0
        leaf_t = ((te & np.uint64(0x80)) != 0) if _can_be_large(paging, li) else np.zeros(len(te), bool)
        flags_equal = ((mt ^ mr) & ~fmask) == 0
        descend = ~same & ~tmiss & ~rmiss & tp & rp & ~leaf_t & flags_equal
    diverged = ~same & ~descend
    return same, descend, diverged


def _kinds(ref, tr, sel_ref):
    """Kind code per page (-1: no finding) from the reference's and the task's translations."""
    r_ok = ref.ok[sel_ref]
    kind = np.full(len(tr), -1, np.int8)
    missing = r_ok & ~tr.ok
    frame = r_ok & tr.ok & (tr.pa != ref.pa[sel_ref])
    rights = r_ok & tr.ok & ~frame & ((tr.rw != ref.rw[sel_ref]) | (tr.us != ref.us[sel_ref]) |
                                      (tr.nx != ref.nx[sel_ref]))
    kind[rights] = 2
    kind[frame] = 1
    kind[missing] = 0
    return kind


def _prepare(ref, roots, vas):
    vas = np.unique(np.asarray(vas, dtype=np.uint64) & np.uint64(~0xFFF & ((1 << 64) - 1)))
    if len(vas) > MAX_PAGES:
        raise XenscopeError(f"{len(vas)} pages to check (limit {MAX_PAGES}): narrow it with --range or --module")
    roots = np.asarray(sorted(set(int(r) for r in roots)), dtype=np.uint64)
    return vas, roots


def _paging_for(ref, root):
    return Paging(ref.mode, int(root), ref.nxe, ref.maxphyaddr, ref.cr4)


def _empty(ref, roots, vas):
    z = np.zeros(0, np.int64)
    return Findings(ref.mode, roots, vas, z, z, np.zeros(0, np.int8), np.zeros(0, np.int8))


def _collect(ref, roots, vas, parts):
    if not parts:
        return _empty(ref, roots, vas)
    r = np.concatenate([p[0] for p in parts])
    pg = np.concatenate([p[1] for p in parts])
    lv = np.concatenate([p[2] for p in parts])
    kd = np.concatenate([p[3] for p in parts])
    order = np.lexsort((pg, r))
    return Findings(ref.mode, roots, vas, r[order], pg[order], lv[order].astype(np.int8), kd[order])


def exhaustive(target, ref, roots, vas):
    """Check every page ``vas`` in every directory ``roots`` by walking each (root, page) pair:
    each page is translated in full in every directory and compared with the reference; the level
    comes from walking both directories' entries side by side, page by page.

    :param ref: :class:`~xenstructs.paging.Paging` of the reference directory
    :param roots: table addresses of the task directories (duplicates are merged)
    :return: :class:`Findings`
    """
    vas, roots = _prepare(ref, roots, vas)
    if not len(vas) or not len(roots):
        return _empty(ref, roots, vas)
    esize, shifts, widths = _geometry(ref.mode)
    nlev = len(shifts)
    fmask = np.uint64(decode.frame_mask(ref.mode, ref.maxphyaddr))
    rtr = translate_many(target, ref, vas)
    # the reference's entries per level, once
    ref_ent, ref_miss = [], []
    tab = np.full(len(vas), ref.root, np.uint64)
    for li in range(nlev):
        idx = (vas >> np.uint64(shifts[li])) & np.uint64((1 << widths[li]) - 1)
        e, m = read_entries(target, tab + idx * np.uint64(esize), esize)
        ref_ent.append(e)
        ref_miss.append(m)
        tab = e & fmask
    parts = []
    npg = len(vas)
    for c0 in range(0, len(roots), ROOT_CHUNK):
        rs = roots[c0:c0 + ROOT_CHUNK]
        ridx = np.repeat(np.arange(c0, c0 + len(rs)), npg)
        pidx = np.tile(np.arange(npg), len(rs))
        tab = np.repeat(rs, npg)
        level = np.full(len(ridx), -1, np.int16)
        active = np.ones(len(ridx), bool)
        for li in range(nlev):
            a = np.nonzero(active)[0]
            if not len(a):
                break
            va = vas[pidx[a]]
            idx = (va >> np.uint64(shifts[li])) & np.uint64((1 << widths[li]) - 1)
            te, tm = read_entries(target, tab[a] + idx * np.uint64(esize), esize)
            same, descend, diverged = _compare_level(ref, li, te, tm, ref_ent[li][pidx[a]], ref_miss[li][pidx[a]])
            level[a[diverged]] = li
            active[a[~descend]] = False
            tab[a[descend]] = te[descend] & fmask
        for k, root in enumerate(rs.tolist()):
            # every page translated in full, whatever the entries said
            tr = translate_many(target, _paging_for(ref, root), vas)
            kind = _kinds(rtr, tr, np.arange(npg))
            f = np.nonzero(kind >= 0)[0]
            if not len(f):
                continue
            lv = level[k * npg + f]
            if (lv < 0).any():
                raise AssertionError("a page differs under entries equal to the reference's")
            parts.append((np.full(len(f), c0 + k, np.int64), f, lv, kind[f]))
    return _collect(ref, roots, vas, parts)


def fast(target, ref, roots, vas):
    """Same result as :func:`exhaustive`, reading only the entries that cover the pages, level by
    level, below entries that differ from the reference in their next table's address only;
    pages are walked only under entries that diverge.
    """
    vas, roots = _prepare(ref, roots, vas)
    if not len(vas) or not len(roots):
        return _empty(ref, roots, vas)
    esize, shifts, widths = _geometry(ref.mode)
    nlev = len(shifts)
    fmask = np.uint64(decode.frame_mask(ref.mode, ref.maxphyaddr))
    prefixes = [np.unique(vas >> np.uint64(s)) for s in shifts]      # sorted; monotone in va
    page_prefix = [vas >> np.uint64(s) for s in shifts]
    # level-0 nodes: every directory x every top-level entry covering a page
    p0 = prefixes[0]
    node_root = np.repeat(np.arange(len(roots)), len(p0))
    node_pref = np.tile(p0, len(roots))
    node_ttab = np.repeat(roots, len(p0))
    node_rtab = np.full(len(node_root), ref.root, np.uint64)
    div_root, div_lo, div_hi, div_lv = [], [], [], []
    for li in range(nlev):
        if not len(node_root):
            break
        idx = (node_pref & np.uint64((1 << widths[li]) - 1)) * np.uint64(esize)
        te, tm = read_entries(target, node_ttab + idx, esize)
        re, rm = read_entries(target, node_rtab + idx, esize)
        same, descend, diverged = _compare_level(ref, li, te, tm, re, rm)
        if diverged.any():
            d = np.nonzero(diverged)[0]
            div_root.append(node_root[d])
            div_lo.append(np.searchsorted(page_prefix[li], node_pref[d], "left"))
            div_hi.append(np.searchsorted(page_prefix[li], node_pref[d], "right"))
            div_lv.append(np.full(len(d), li, np.int16))
        if not descend.any() or li + 1 >= nlev:
            break
        d = np.nonzero(descend)[0]
        child = prefixes[li + 1]
        parent = child >> np.uint64(widths[li + 1])
        lo = np.searchsorted(parent, node_pref[d], "left")
        hi = np.searchsorted(parent, node_pref[d], "right")
        cnt = hi - lo
        rep = np.repeat(np.arange(len(d)), cnt)
        offs = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        node_root = node_root[d][rep]
        node_pref = child[lo[rep] + offs]
        node_ttab = (te[d] & fmask)[rep]
        node_rtab = (re[d] & fmask)[rep]
    if not div_root:
        return _empty(ref, roots, vas)
    dr = np.concatenate(div_root)
    dlo, dhi, dlv = np.concatenate(div_lo), np.concatenate(div_hi), np.concatenate(div_lv)
    rtr = None
    parts = []
    order = np.argsort(dr, kind="stable")
    dr, dlo, dhi, dlv = dr[order], dlo[order], dhi[order], dlv[order]
    bounds = np.flatnonzero(np.diff(dr)) + 1
    for grp in np.split(np.arange(len(dr)), bounds):
        if not len(grp):
            continue
        cnt = dhi[grp] - dlo[grp]
        pidx = np.repeat(dlo[grp], cnt) + (np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt))
        lv = np.repeat(dlv[grp], cnt)
        if not len(pidx):
            continue
        if rtr is None:
            rtr = translate_many(target, ref, vas)
        r = int(dr[grp[0]])
        tr = translate_many(target, _paging_for(ref, roots[r]), vas[pidx])
        kind = _kinds(rtr, tr, pidx)
        f = kind >= 0
        if f.any():
            parts.append((np.full(int(f.sum()), r, np.int64), pidx[f], lv[f], kind[f]))
    return _collect(ref, roots, vas, parts)


# ---------------------------------------------------------------------------------------------
# The report: findings grouped by module, top-level entry, level and kind, with an explanation
# ---------------------------------------------------------------------------------------------

@dataclass
class Group:
    module: str
    top_index: int
    top_entry: str                   # name of the top-level entry kind (PDE, PDPTE, PML4E, PML5E)
    level: str                       # where the walks diverge (PDE, PTE...)
    kind: str
    entries: List[int]               # indexes (in their table) of the diverging entries
    va_start: int
    va_end: int                      # end of the last page (exclusive)
    pages: int
    tasks: list                      # [(pid, comm)]
    pgds: int                        # distinct directories
    explanation: str = ""

    def as_dict(self):
        return {"module": self.module, "top_index": self.top_index, "top_entry": self.top_entry,
                "level": self.level, "kind": self.kind, "entries": self.entries, "va_start": self.va_start,
                "va_end": self.va_end, "pages": self.pages, "task_pids": [p for p, _ in self.tasks],
                "tasks": [[p, c] for p, c in self.tasks], "pgds": self.pgds, "explanation": self.explanation}


@dataclass
class ModcheckReport:
    mode: str
    reference_root: int
    groups: List[Group] = field(default_factory=list)
    checked_pages: int = 0
    checked_pgds: int = 0
    unmapped_in_reference: dict = field(default_factory=dict)   # label -> pages the reference lacks too

    @property
    def ok(self):
        return not self.groups


def explain(mode, level, kind, entries, ntasks, top_level):
    """One sentence: what differs and the fix a kernel engineer would think of."""
    ent = ", ".join(f"{e:#x}" for e in entries[:4]) + (" ..." if len(entries) > 4 else "")
    who = f"{ntasks} task PGD{'s' if ntasks != 1 else ''}"
    leaf = level == "PTE"
    if kind == "missing" and not leaf and mode in ("2level", "pae"):
        return (f"{level} {ent} missing in {who} created before the module's page table existed: "
                f"vmalloc_sync_all() (vmalloc_sync_mappings()/arch_sync_kernel_mappings()) not run for "
                f"them; the kernel would fix it in vmalloc_fault(), a debugger on their CR3 cannot read "
                f"the module (walk init_mm.pgd instead, gdbsx: monitor pgd3)")
    if kind == "missing" and not leaf:
        return (f"{level} {ent} missing in {who}: the kernel half of these PGDs was not copied from "
                f"init_mm (pgd_alloc()/sync_global_pgds()); on x86_64 those entries are preallocated, "
                f"so this PGD page is corrupt or not a PGD")
    if kind == "missing":
        return (f"PTE {ent} missing in {who} that reach another page table than init_mm's: their "
                f"{'PDE' if mode != '5level' else 'upper entry'} is a stale copy pointing to an old "
                f"page table; re-sync it from init_mm.pgd (vmalloc_sync_one())")
    if kind == "different-frame":
        return (f"{level} {ent} maps other frames in {who} than init_mm: a stale "
                f"{'page table' if leaf else 'entry'} left from an earlier mapping of this range "
                f"(vunmap without vmalloc_sync_unmappings()/a missed TLB-and-copy update); copy the entry "
                f"from init_mm.pgd")
    return (f"{level} {ent} gives other rights (RW/US/NX) in {who} than init_mm: a set_memory_ro/nx/x() "
            f"(module RO/NX protection) change reached init_mm but not these copies "
            f"(cpa updates pgd_list copies only when the kernel PMD is not shared); copy from init_mm.pgd")


def report(findings, ref, page_labels, root_tasks, unmapped=None):
    """Group :class:`Findings` into a :class:`ModcheckReport`.

    :param page_labels: label (module name) of each page of ``findings.vas``
    :param root_tasks: ``{root: [(pid, comm), ...]}``
    """
    mode = findings.mode
    esize, shifts, widths = _geometry(mode)
    names = decode.LEVELS[mode]
    rep = ModcheckReport(mode, ref.root, checked_pages=len(findings.vas), checked_pgds=len(findings.roots),
                         unmapped_in_reference=dict(unmapped or {}))
    if not len(findings):
        return rep
    vas = findings.vas
    va = vas[findings.page_idx]
    top = ((va >> np.uint64(shifts[0])) & np.uint64((1 << widths[0]) - 1)).astype(np.int64)
    groups = {}
    for i, (r, p, lv, k, t) in enumerate(zip(findings.root_idx.tolist(), findings.page_idx.tolist(),
                                             findings.level.tolist(), findings.kind.tolist(), top.tolist())):
        key = (page_labels[p], t, lv, k)
        g = groups.setdefault(key, (set(), set()))
        g[0].add(r)
        g[1].add(p)
    for (label, t, lv, k), (rs, ps) in groups.items():
        pv = sorted(int(vas[p]) for p in ps)
        ents = sorted({(x >> shifts[lv]) & ((1 << widths[lv]) - 1) for x in pv})
        tasks = sorted({tk for r in rs for tk in root_tasks.get(int(findings.roots[r]), [])})
        level = decode.ENTRY_NAMES[names[lv]]
        g = Group(label, t, decode.ENTRY_NAMES[names[0]], level, KINDS[k], ents, pv[0], pv[-1] + 4096, len(pv),
                  tasks, len(rs))
        g.explanation = explain(mode, level, KINDS[k], ents, len(rs), lv == 0)
        rep.groups.append(g)
    rep.groups.sort(key=lambda g: (g.module, g.va_start, g.level, g.kind))
    return rep


# ---------------------------------------------------------------------------------------------
# From a Kernel: which pages, which directories
# ---------------------------------------------------------------------------------------------

def check(kernel, modules=None, vmalloc=False, va_range=None, pid=None, method="fast", tasks=None,
          regions=None):
    """Run the check on a :class:`~xenstructs.linux.kernel.Kernel`.

    :param modules: names to check (default all); :param vmalloc: also every vmalloc area
    :param va_range: ``(start, end)``: only pages in it (and those not in any module are checked
        under the label ``range``); :param pid: only this task's directory
    :param tasks: the :class:`~.tasks.Task` list to use instead of walking ``init_task.tasks``
    :param regions: ``[(label, [page va, ...])]`` to check instead of walking ``modules``
    :return: ``(ModcheckReport, info dict)`` where info lists the list errors and skipped tasks
    """
    from .modules import for_each_module
    from .tasks import for_each_task
    from .vmalloc import for_each_vmap_area
    info = {"list_errors": [], "skipped_tasks": [], "modules": 0, "vmalloc_areas": 0}
    labelled = {}
    for label, pages in regions or ():
        info["modules"] += 1
        for p in pages:
            labelled.setdefault(int(p) & ~0xFFF, label)
    if regions is None and (modules is None or modules):
        mods = for_each_module(kernel)
        if mods.error is not None:
            info["list_errors"].append(mods.error.as_dict())
        want = set(modules) if modules else None
        found = set()
        for m in mods:
            if want is not None and m.name not in want:
                continue
            found.add(m.name)
            info["modules"] += 1
            for p in m.pages:
                labelled.setdefault(p, m.name)
        if want is not None and want - found:
            raise XenscopeError(f"no module named {', '.join(sorted(want - found))} on the modules list")
    if vmalloc:
        areas = for_each_vmap_area(kernel)
        if areas.error is not None:
            info["list_errors"].append(areas.error.as_dict())
        info["vmalloc_areas"] = len(areas)
        for a in areas:
            if len(a.pages) > MAX_PAGES:
                continue
            label = f"vmalloc {a.va_start:#x}-{a.va_end:#x}"
            for p in a.pages:
                labelled.setdefault(p, label)
    if va_range is not None:
        lo, hi = va_range
        if hi <= lo or (hi - lo) >> 12 > MAX_PAGES:
            raise XenscopeError(f"--range {lo:#x}-{hi:#x} is empty or larger than {MAX_PAGES} pages")
        labelled = {p: lab for p, lab in labelled.items() if lo <= p + 4096 and p < hi}
        for p in range(lo & ~0xFFF, hi, 4096):
            labelled.setdefault(p, f"range {lo:#x}-{hi:#x}")
    if tasks is None:
        tasks = for_each_task(kernel)
        if tasks.error is not None:
            info["list_errors"].append(tasks.error.as_dict())
    root_tasks = {}
    for t in tasks:
        if pid is not None and t.pid != pid:
            continue
        if t.root is None:
            info["skipped_tasks"].append({"pid": t.pid, "comm": t.comm,
                                          "why": t.error or "no mm and no active_mm"})
            continue
        root_tasks.setdefault(t.root, []).append((t.pid, t.comm))
    if pid is not None and not root_tasks and not info["skipped_tasks"]:
        raise XenscopeError(f"no task with pid {pid}")
    ref = kernel.paging
    roots = [r for r in root_tasks if r != ref.root]
    info["shared_with_reference"] = sorted(p for r, ts in root_tasks.items() if r == ref.root for p, _ in ts)
    vas = np.array(sorted(labelled), dtype=np.uint64)
    fn = fast if method == "fast" else exhaustive
    fnd = fn(kernel.target, ref, roots, vas)
    labels = [labelled[int(v)] for v in fnd.vas]
    unmapped = {}
    if len(fnd.vas):
        rt = translate_many(kernel.target, ref, fnd.vas)
        for lab, ok in zip(labels, rt.ok.tolist()):
            if not ok:
                unmapped[lab] = unmapped.get(lab, 0) + 1
    rep = report(fnd, ref, labels, root_tasks, unmapped)
    info["tasks"] = sum(len(v) for v in root_tasks.values())
    return rep, info


def modcheck_report(kernel, modules=None, vmalloc=False, va_range=None, pid=None, exhaustive=False):
    """:func:`check` as one plain dict (the ``modcheck`` command's JSON, README "modcheck")."""
    import time
    t0 = time.perf_counter()
    method = "exhaustive" if exhaustive else "fast"
    rep, info = check(kernel, modules=modules, vmalloc=vmalloc, va_range=va_range, pid=pid, method=method)
    return {"kernel": kernel.describe(), "ok": rep.ok and not info["list_errors"], "mode": rep.mode,
            "reference_root": rep.reference_root, "checked_pages": rep.checked_pages,
            "checked_pgds": rep.checked_pgds, "groups": [g.as_dict() for g in rep.groups],
            "unmapped_in_reference": rep.unmapped_in_reference, "list_errors": info["list_errors"],
            "skipped_tasks": info["skipped_tasks"], "tasks": info["tasks"], "modules": info["modules"],
            "vmalloc_areas": info["vmalloc_areas"], "shared_with_reference": info["shared_with_reference"],
            "method": method, "seconds": round(time.perf_counter() - t0, 3)}
