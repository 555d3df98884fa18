"""Who may reference another domain's frames, in the synthetic Xen host cores: domain privilege and
grant tables (the builder's own facts; independent of ``xenstructs``).

Facts (Xen's sources): ``is_control_domain(d)`` is ``d->is_privileged`` and ``is_hardware_domain(d)``
is ``d == hardware_domain`` (xen/include/xen/sched.h, 4.5+); a PV L1 entry naming a frame of another
domain is accepted by ``get_page_from_l1e`` (xen/arch/x86/mm.c) for a privileged page owner
(``xsm_priv_mapping``), and a grant mapping counts in the granting domain's active entry
(``struct active_grant_entry`` in xen/common/grant_table.c: ``pin`` bits 0-7 = host writable
mappings, ``domid`` = the grantee, ``mfn``).

Offsets of Xen 4.17.0's release build (``make defconfig`` at tag RELEASE-4.17.0, then gcc 12's
``offsetof``/``sizeof`` of these members compiled into xen/common/grant_table.c, where struct
grant_table and struct active_grant_entry are defined): ``struct domain``: ``grant_table`` +264,
``auto_node_affinity`` +464, ``is_privileged`` +465, ``creation_finished`` +468, ``target`` +472;
``struct grant_table``: ``gt_version`` +28, ``nr_grant_frames`` +40, ``active`` +72, ``domain``
+128; ``struct active_grant_entry`` (40 bytes): ``pin`` +0, ``domid`` +4, ``mfn`` +24. The 4.6 core
has none of these (no facts for 4.6): only ``hardware_domain``.

What the cores hold:
* both: ``hardware_domain`` -> d0; d1 (unprivileged) maps dom0 pfn 24 read-write at 0x405000
  without a grant (an injected violation, no references taken);
* 4.17: ``is_privileged`` 1 in d0, 0 in d1; a grant table per domain (v1, one frame: 512 entries,
  102 per active page, 6 active pages); dom0 grants its pfn 25 to d1 (ref 8, pin 1 = one host
  writable mapping) and d1 maps it read-write at 0x406000 (a legitimate mapping: it takes a general
  and a writable type reference, as ``map_grant_ref`` does).
"""

import struct

GRANT_LAYOUT = {
    "4.17": {"grant_table": 264, "auto_node_affinity": 464, "is_privileged": 465, "creation_finished": 468,
             "target": 472, "gt_version": 28, "gt_nr_grant_frames": 40, "gt_active": 72, "gt_domain": 128,
             "act_size": 40, "act_pin": 0, "act_domid": 4, "act_mfn": 24},
    "4.6": None,
}
ENTRIES_PER_FRAME_V1 = 4096 // 8            # grant_entry_v1_t: 8 bytes
UNPRIVILEGED_SLOT, GRANTED_SLOT = 5, 6      # d1's user L1 (0x400000): 0x405000, 0x406000
UNPRIVILEGED_PFN, GRANTED_PFN = 24, 25      # dom0 pfns
GRANT_REF = 8


def inject(dump, l1_user):
    """d1's two references to dom0 frames: one without a grant (a violation), and on 4.17 one
    granted; sets ``dump.foreign`` (what the manifest records)."""
    dom0, domu = dump.dom0, dump.domu
    unpriv = dom0.mfn(UNPRIVILEGED_PFN)
    entry = domu.map(l1_user, UNPRIVILEGED_SLOT, unpriv, rw=True, user=True, legit=False)
    dump.foreign = {"unprivileged": {"mfn": unpriv, "entry": entry, "slot": UNPRIVILEGED_SLOT,
                                     "va": 0x400000 + UNPRIVILEGED_SLOT * 0x1000, "l1": l1_user}}
    if GRANT_LAYOUT[dump.key]:
        granted = dom0.mfn(GRANTED_PFN)
        entry = domu.map(l1_user, GRANTED_SLOT, granted, rw=True, user=True)
        dump.foreign["granted"] = {"mfn": granted, "entry": entry, "slot": GRANTED_SLOT,
                                   "va": 0x400000 + GRANTED_SLOT * 0x1000, "l1": l1_user,
                                   "grant": {"granter": 0, "ref": GRANT_REF, "grantee": 1, "mfn": granted,
                                             "pin": 1}}


def _heap_page(host, role):
    mfn = host.claim(next(host.heap_pool), role, xen_heap=True, write=True)
    return mfn, host.directmap_va(mfn << 12)


def _grant_table(host, name, lay, grants):
    """struct grant_table of domain ``name`` (v1, one frame), its active array and pages; ``grants``:
    (ref, grantee, mfn, pin) to write. Returns the table's virtual address."""
    gt_mfn, gt_va = _heap_page(host, f"struct grant_table {name}")
    array_mfn, array_va = _heap_page(host, f"grant table {name}: active array")
    per_page = 4096 // lay["act_size"]
    pages = [_heap_page(host, f"grant table {name}: active page {i}")
             for i in range(-(-ENTRIES_PER_FRAME_V1 // per_page))]
    for i, (_, va) in enumerate(pages):
        host.write_u64((array_mfn << 12) + 8 * i, va)
    for ref, grantee, mfn, pin in grants:
        page_mfn, _ = pages[ref // per_page]
        at = (page_mfn << 12) + (ref % per_page) * lay["act_size"]
        host.mem.write(at + lay["act_pin"], struct.pack("<I", pin))
        host.mem.write(at + lay["act_domid"], struct.pack("<H", grantee))
        host.write_u64(at + lay["act_mfn"], mfn)
    gt = gt_mfn << 12
    host.mem.write(gt + lay["gt_version"], struct.pack("<I", 1))
    host.mem.write(gt + lay["gt_nr_grant_frames"], struct.pack("<I", 1))
    host.write_u64(gt + lay["gt_active"], array_va)
    host.write_u64(gt + lay["gt_domain"], host.domains[name]["va"])
    return gt_va


def write_domains(dump):
    """4.17: each guest's is_privileged (and the bools around it) and grant table."""
    host, lay = dump.host, GRANT_LAYOUT[dump.key]
    if not lay:
        return
    granted = dump.foreign["granted"]["grant"]
    for name, privileged in (("d0", 1), ("d1", 0)):
        ma = host.domains[name]["maddr"]
        host.mem.write(ma + lay["auto_node_affinity"], bytes([1, privileged]))
        host.mem.write(ma + lay["creation_finished"], bytes([1]))
        grants = [(granted["ref"], granted["grantee"], granted["mfn"], granted["pin"])] if name == "d0" else []
        host.write_u64(ma + lay["grant_table"], _grant_table(host, name, lay, grants))


def manifest(dump, l4_of):
    """The manifest's ``foreign`` record: privilege, grants, and what pt-audit must say about each
    foreign reference (``violation``: a finding; ``informational``: legitimate, with its basis)."""
    rec = {"hardware_domain": 0, "control_domains": [0] if GRANT_LAYOUT[dump.key] else None,
           "layout": GRANT_LAYOUT[dump.key], "grants": []}
    unpriv = dump.foreign["unprivileged"]
    path = [[4, 0], [3, 0], [2, 2]]
    rec["violation"] = {"kind": "foreign-reference", "domain": 1, "l4_mfn": l4_of("d1"),
                        "path": path + [[1, unpriv["slot"]]], "mfn": unpriv["mfn"], "target_mfn": unpriv["mfn"],
                        "table_mfn": unpriv["l1"], "entry": unpriv["entry"], "va": unpriv["va"],
                        "details": f"d1 (unprivileged) L1 mfn {unpriv['l1']:#x} slot {unpriv['slot']} maps dom0 "
                                   f"pfn {UNPRIVILEGED_PFN} (mfn {unpriv['mfn']:#x}) read-write, no grant"}
    if "granted" in dump.foreign:
        g = dump.foreign["granted"]
        rec["grants"] = [g["grant"]]
        rec["granted"] = {"kind": "foreign-reference", "basis": "granted", "domain": 1, "l4_mfn": l4_of("d1"),
                          "path": path + [[1, g["slot"]]], "mfn": g["mfn"], "entry": g["entry"], "va": g["va"],
                          "details": f"d1 maps dom0 pfn {GRANTED_PFN} (mfn {g['mfn']:#x}) read-write through "
                                     f"dom0's grant ref {GRANT_REF}"}
    return rec
