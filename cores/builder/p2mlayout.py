"""A Linux PV guest's virtually mapped P2M area, laid out the way Linux lays it out (not bundled; built
in memory for bench/p2m.py and tests/test_p2m_shared_info.py).

Independent of ``xenstructs``. What Linux does (arch/x86/xen/p2m.c, ``xen_vmalloc_p2m_tree``,
``xen_rebuild_p2m_list``, ``alloc_p2m``; Linux 6.1):

* the area is a vmalloc area aligned to 1 GiB, sized for the largest guest (``P2M_LIMIT``: a 256 MiB
  dom0 gets 1 GiB, 0x8000000 entries);
* each 512-pfn chunk of the list is a page of its own, unless every entry of it is INVALID (then the
  shared page ``p2m_missing`` is mapped there) or every entry is an identity one (the shared page
  ``p2m_identity``); both shared pages hold INVALID_P2M_ENTRY only and are mapped read-only
  (PAGE_KERNEL_RO), the guest's own list pages read-write (PAGE_KERNEL);
* a whole 2 MiB of the area (512 chunks) that is all missing or all identity is mapped by one shared
  L1 page (``p2m_missing_pte`` / ``p2m_identity_pte``), whose 512 entries all map the shared page;
* ``shared_info.arch.max_pfn`` is ``xen_p2m_last_pfn``, the end of the part with pages of its own.

Entry encoding (asm/xen/page.h): INVALID ~0, FOREIGN_FRAME_BIT bit 63, IDENTITY_FRAME_BIT bit 62.
"""

import numpy as np

PAGE = 0x1000
PER_PAGE = 512
AREA_VA = 0xFFFFC90000000000
INVALID = (1 << 64) - 1
FOREIGN = 1 << 63
IDENTITY = 1 << 62
TABLE = 0x067                          # P|RW|US|A|D: a guest's intermediate entries
OWN = 0x8000000000000063               # PAGE_KERNEL: P|RW|A|D|NX
SHARED = 0x8000000000000061            # PAGE_KERNEL_RO: P|A|D|NX
RAM_MFN_BASE = 0x200000                # machine frames the RAM entries name (not in memory)


def entries(regions, max_pfn, seed=0):
    """Expected list entries ``[0, max_pfn)``: ``regions`` = [(first, end, kind)] with kind ``ram``
    (machine frames in shuffled 2 MiB extents), ``identity`` (IDENTITY_FRAME(pfn)), ``foreign``
    (FOREIGN_FRAME of frames below RAM_MFN_BASE); everything else INVALID."""
    rng = np.random.default_rng(seed)
    out = np.full(max_pfn, INVALID, np.uint64)
    extents = rng.permutation(-(-max_pfn // 512) * 2).astype(np.uint64)      # each used once
    used = 0
    for first, end, kind in regions:
        pfns = np.arange(first, end, dtype=np.uint64)
        if kind == "ram":
            n = -(-len(pfns) // 512)
            ext, used = extents[used:used + n], used + n
            mfn = np.repeat(ext * np.uint64(512), 512)[:len(pfns)] + np.tile(np.arange(512, dtype=np.uint64),
                                                                               len(ext))[:len(pfns)]
            out[first:end] = mfn + np.uint64(RAM_MFN_BASE)
        elif kind == "identity":
            out[first:end] = pfns | np.uint64(IDENTITY)
        elif kind == "foreign":
            out[first:end] = (pfns & np.uint64(0xFFFF)) | np.uint64(FOREIGN | 0x1000)
    return out


class _Memory:
    def __init__(self):
        self.pages, self.next = {}, 0x1000

    def alloc(self, data=None):
        pa = self.next
        self.next += PAGE
        self.pages[pa] = data
        return pa


def build(regions, max_pfn, area_entries=1 << 27, seed=0):
    """The guest's memory as ``{machine address: 4 KiB bytes}`` and a manifest: ``root`` (its L4, what
    ``p2m_cr3`` names), ``va``, ``size`` (area entries), ``max_pfn``, ``entries`` (what Linux means, up
    to max_pfn), ``read`` (what the list's memory holds: INVALID under the shared pages), ``own_pages`` (list pages of its own), ``missing``/``identity`` (the shared pages'
    machine addresses), ``shared_l1`` (the shared L1 pages')."""
    want = entries(regions, max_pfn, seed)
    mem = _Memory()
    shared = {kind: mem.alloc(np.full(PER_PAGE, INVALID, np.uint64).astype("<u8").tobytes())
              for kind in ("missing", "identity")}
    shared_l1 = {kind: mem.alloc(np.full(PER_PAGE, shared[kind] | SHARED, np.uint64).astype("<u8").tobytes())
                 for kind in ("missing", "identity")}
    chunks = area_entries // PER_PAGE
    kinds = np.zeros(chunks, np.int8)                  # 0 missing, 1 identity, 2 own
    page_pa = np.zeros(chunks, np.uint64)
    for c in range(-(-max_pfn // PER_PAGE)):
        e = want[c * PER_PAGE:(c + 1) * PER_PAGE]
        if len(e) == PER_PAGE and (e == np.uint64(INVALID)).all():
            continue
        if len(e) == PER_PAGE and ((e >> np.uint64(62)) == 1).all() and \
                (e & np.uint64((1 << 62) - 1) == np.arange(c * PER_PAGE, (c + 1) * PER_PAGE, dtype=np.uint64)).all():
            kinds[c] = 1
            continue
        page = np.full(PER_PAGE, INVALID, np.uint64)
        page[:len(e)] = e
        kinds[c], page_pa[c] = 2, mem.alloc(page.astype("<u8").tobytes())
    own = int((kinds == 2).sum())
    read = want.copy()                                 # what the list's memory holds
    for c in np.flatnonzero(kinds[:-(-max_pfn // PER_PAGE)] != 2).tolist():
        read[c * PER_PAGE:(c + 1) * PER_PAGE] = np.uint64(INVALID)
    l2_entries = []
    for pmd in range(chunks // PER_PAGE):
        k = kinds[pmd * PER_PAGE:(pmd + 1) * PER_PAGE]
        if (k == 0).all() or (k == 1).all():
            l2_entries.append(shared_l1["missing" if k[0] == 0 else "identity"] | TABLE)
            continue
        pte = np.where(k == 2, page_pa[pmd * PER_PAGE:(pmd + 1) * PER_PAGE] | np.uint64(OWN),
                       np.where(k == 1, np.uint64(shared["identity"] | SHARED), np.uint64(shared["missing"] | SHARED)))
        l2_entries.append(mem.alloc(pte.astype(np.uint64).astype("<u8").tobytes()) | TABLE)
    l2_pages = []
    for g in range(0, len(l2_entries), PER_PAGE):
        table = np.zeros(PER_PAGE, np.uint64)
        table[:len(l2_entries[g:g + PER_PAGE])] = l2_entries[g:g + PER_PAGE]
        l2_pages.append(mem.alloc(table.astype("<u8").tobytes()))
    l3 = np.zeros(PER_PAGE, np.uint64)
    first_l3 = (AREA_VA >> 30) & 511
    for i, pa in enumerate(l2_pages):
        l3[first_l3 + i] = pa | TABLE
    l3_pa = mem.alloc(l3.astype("<u8").tobytes())
    l4 = np.zeros(PER_PAGE, np.uint64)
    l4[(AREA_VA >> 39) & 511] = l3_pa | TABLE
    root = mem.alloc(l4.astype("<u8").tobytes())
    return mem.pages, {"root": root, "va": AREA_VA, "size": area_entries, "max_pfn": max_pfn, "entries": want, "read": read,
                       "own_pages": own, "missing": shared["missing"], "identity": shared["identity"],
                       "shared_l1": shared_l1}


def dom0_regions(ram_pfns=0x10000, max_pfn=0x28000):
    """A dom0 like the real one the tests boot (Debian's Xen 4.17, dom0_mem=256M): RAM with a 1:1
    hole below 1 MiB, an identity range above RAM (the host's non-RAM, whole chunks: shared
    ``p2m_identity``), pages of its own with INVALID entries (balloon space) up to ``max_pfn``, and
    two foreign (grant-mapped ring) entries at its end."""
    hole = 0x200 * (-(-ram_pfns // 0x200)) + 0x200
    return [(0, 0x9F, "ram"), (0x9F, 0x100, "identity"), (0x100, ram_pfns, "ram"),
            (hole, hole + 0x8400, "identity"), (max_pfn - 2, max_pfn, "foreign")]
