"""The library's gdbsx target (xenstructs/targets/gdbsx.py) without gdb.

Its callables are served from the bundled PV guest cores by the RSP stub's own reader
(tests/gdbsx_stub.py ``XcCore``: struct only, walks vCPU 0's tables like Xen's ``dbg_pv_va2mfn()``),
the same answers gdb gets in tests/test_gdbsx.py; the manifests (cores/pv-*.json) are the truth.
``Guest.overlay`` adds 8-byte values the dump cannot hold (Xen's RO M2P, a page_offset_base).
"""

import json
import os
import re
import subprocess
import sys
import types

import pytest

from gdbsx_stub import GdbsxStub, XcCore
from conftest import CORES, TOP
from xenstructs import context as ctxmod
from xenstructs.errors import NoRegister, NotInDump, Unsupported, XenscopeError
from xenstructs.linux.memory_layout import DIRECT_MAP_SIZE, PAGE_OFFSET_DEFAULT, START_KERNEL_MAP
from xenstructs.linux.tasks import mm_root
from xenstructs.paging import Paging, walk
from xenstructs.target import CpuState
from xenstructs.targets import gdbsx
from xenstructs.targets.gdbsx import GdbsxTarget
from xenstructs.xen.release import LINEAR_PT_SLOT, RO_MPT_VIRT_START

CORE = os.path.join(CORES, "pv-x86_64.xc")
SYMS = os.path.join(CORES, "pv-x86_64.map")
SYMS_I386 = os.path.join(CORES, "pv-i386-pae.map")
ROOT = "vcpu0.cr3"

# read budgets (host reads, failed ones included), measured on pv-x86_64
ROOT_READS_MAX = 6          # xen_p2m_addr/size (2), L4[258] (1), RO M2P probe (1), P2M list (1), read back (1)
WALK_READS_MAX = 4          # one 8-byte read per level
WALKS_TOTAL_MAX = 24        # the vCPU 0 walks of the manifest (gdb: 21 m packets)


def manifest(name="pv-x86_64"):
    with open(os.path.join(CORES, f"{name}.json")) as f:
        return json.load(f)


MAN = manifest()


@pytest.fixture(scope="module")
def core():
    return XcCore(CORE)


class Guest:
    """The host side: ``read_virtual``, ``lookup_symbol`` (the host's own table, empty unless a
    test fills ``symbols``), ``evaluate`` and ``registers`` over a core, counting every read."""

    def __init__(self, core):
        self.core = core
        self.symbols = {}
        self.values = {}            # expression -> value (debug information)
        self.overlay = {}           # va -> 8-byte value served instead of the core's
        self.reads = []             # (va, size) of every read asked, failed ones included
        self.evaluated = []
        self.register_calls = 0

    def read_virtual(self, va, size):
        self.reads.append((va, size))
        if size == 8 and va in self.overlay:
            return self.overlay[va].to_bytes(8, "little")
        data = self.core.read_va(va, size)
        if data is None:
            raise NotInDump(va, "va", gdbsx.READ_FAILED)
        return data

    def lookup_symbol(self, name):
        return self.symbols.get(name)

    def evaluate(self, expression):
        self.evaluated.append(expression)
        return self.values.get(expression)

    def registers(self):
        """What gdb gets from gdbsx's g packet: general registers only."""
        self.register_calls += 1
        out = []
        for i, vcpu in enumerate(self.core.vcpus):
            regs = {name: vcpu["regs"][name] for name in ("rip", "rsp", "rflags", "cs")}
            out.append(CpuState(i, regs, {name: "stub register" for name in regs}))
        return out


@pytest.fixture
def guest(core):
    return Guest(core)


def target_of(guest, syms=SYMS, machine="x86_64"):
    t = GdbsxTarget(guest.read_virtual, guest.lookup_symbol, evaluate=guest.evaluate,
                    registers=guest.registers, machine=machine)
    t.set_kernel_syms(syms)
    return t


def root_maddr(name=ROOT):
    return MAN["roots"][name] << 12


def l4_pfn():
    return MAN["vcpus"][0]["l4_pfn"]


def p2m_list_va():
    return MAN["linux_p2m"]["va"]


def whole_list_reads(guest):
    return [r for r in guest.reads if r == (p2m_list_va(), MAN["linux_p2m"]["size"] * 8)]


# -- the module ---------------------------------------------------------------------------------

def test_imports_without_gdb():
    src = open(os.path.join(TOP, "xenstructs", "targets", "gdbsx.py")).read()
    assert not re.search(r"^\s*(import gdb|from gdb)", src, re.M)
    r = subprocess.run([sys.executable, "-c", "import sys, xenstructs.targets.gdbsx; "
                        "assert 'gdb' not in sys.modules"], cwd=TOP, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=TOP))
    assert r.returncode == 0, r.stderr


def test_probe_reply_is_gdbsx_s():
    """What the stub (gdbsx's _do_qRcmd_req()) answers to the probe, and to pgd3."""
    stub = types.SimpleNamespace(pgd3val=0)
    reply = GdbsxStub._monitor(stub, gdbsx.PROBE_COMMAND).encode("latin-1").hex()
    assert gdbsx.answers_like_gdbsx(reply)
    assert not gdbsx.answers_like_gdbsx(GdbsxStub._monitor(stub, "pgd3 0x1000").encode().hex())
    assert not gdbsx.answers_like_gdbsx("")
    assert not gdbsx.answers_like_gdbsx(None)
    assert not gdbsx.answers_like_gdbsx("E01x")


# -- the page-table root ------------------------------------------------------------------------

def test_kernel_root_through_xens_linear_slot(guest):
    """init_top_pgt's kernel-image pfn is not in the P2M of this dump: the L4's self-reference in
    Xen's linear slot places it, checked by reading it back through the direct map."""
    t = target_of(guest)
    va = MAN["symbols"]["init_top_pgt"]
    image_pfn = (va - START_KERNEL_MAP) >> 12
    assert image_pfn not in {pfn for pfn, _ in MAN["p2m"]}
    root, source = t.kernel_root()
    assert root == root_maddr()
    assert source == (f"init_top_pgt {va:#x} (kernel-syms pv-x86_64.map): its Xen linear slot "
                      f"L4[{LINEAR_PT_SLOT}] holds its own mfn {root >> 12:#x} (pfn {l4_pfn():#x}, read "
                      f"back through the direct map); (va - __START_KERNEL_map + phys_base 0x0) >> 12 "
                      f"= pfn {image_pfn:#x} is not in the P2M")
    assert len(guest.reads) <= ROOT_READS_MAX, guest.reads
    assert t.stats["virt_reads"] == len(guest.reads) - 1        # the RO M2P probe failed
    asked = len(guest.reads)
    assert t.kernel_root() == (root, source) and len(guest.reads) == asked     # cached
    assert t.missing_hint() is None


def test_kernel_root_by_the_p2m_from_a_direct_map_address(guest):
    """The host's symbol table wins over kernel-syms; a direct-map address goes through the P2M,
    confirmed by the linear slot."""
    t = target_of(guest)
    va = PAGE_OFFSET_DEFAULT + (l4_pfn() << 12)
    guest.symbols["init_top_pgt"] = va
    root, source = t.kernel_root()
    assert root == root_maddr()
    assert source == (f"init_top_pgt {va:#x} (the host's symbol table): pfn {l4_pfn():#x} = "
                      f"(va - PAGE_OFFSET {PAGE_OFFSET_DEFAULT:#x}) >> 12, mfn {root >> 12:#x} by "
                      f"the guest's P2M, confirmed by its Xen linear slot L4[{LINEAR_PT_SLOT}]")
    assert not whole_list_reads(guest)          # no inverse needed


def test_kernel_root_from_init_mm_pgd_when_no_root_symbol(guest, tmp_path):
    syms = tmp_path / "System.map"
    syms.write_text("".join(f"{MAN['symbols'][n]:016x} D {n}\n" for n in ("xen_p2m_addr", "xen_p2m_size")))
    t = target_of(guest, str(syms))
    pointer = MAN["symbols"]["init_mm"] + MAN["struct_offsets"]["mm_struct.pgd"]
    guest.values["&init_mm.pgd"] = pointer        # an address: gdb reads no memory for it
    root, source = t.kernel_root()
    assert root == root_maddr()
    assert source.startswith(f"init_mm.pgd {MAN['symbol_values']['init_mm.pgd']:#x} "
                             "(the host's debug information): its Xen linear slot")
    assert guest.evaluated == ["&init_mm.pgd"]
    assert (pointer, 8) in guest.reads            # the pointer read like every read (counted)


def test_kernel_root_from_an_unreadable_init_mm_pgd(guest, tmp_path):
    syms = tmp_path / "System.map"
    syms.write_text("".join(f"{MAN['symbols'][n]:016x} D {n}\n" for n in ("xen_p2m_addr", "xen_p2m_size")))
    t = target_of(guest, str(syms))
    guest.values["&init_mm.pgd"] = 0x1000        # user space: no table maps it
    with pytest.raises(NoRegister, match=r"^init_mm.pgd at 0x1000 cannot be read through gdbsx; "
                       r"give --cr3 MADDR$"):
        t.kernel_root()


def test_kernel_root_that_cannot_be_placed(guest):
    """A root symbol on a page that is neither the direct map nor the kernel image, whose entry 258
    is no self-reference (the P2M list: entry 258 is INVALID_P2M_ENTRY)."""
    t = target_of(guest)
    guest.symbols["init_top_pgt"] = p2m_list_va()
    want = (f"cannot place init_top_pgt {p2m_list_va():#x} (the host's symbol table) in machine memory: "
            "not a direct-map or kernel-image address, not in the guest's P2M, and its "
            f"L4[{LINEAR_PT_SLOT}] is not a self-reference (names mfn 0xffffffffff, not one of the "
            "guest's frames); give --cr3 MADDR")
    with pytest.raises(NoRegister) as e:
        t.kernel_root()
    assert str(e.value) == want
    assert t.missing_hint() == want
    cpus = t.cpus()
    assert "cr3" not in cpus[0].regs and cpus[0].regs["cr4"] == gdbsx.ASSUMED_REGISTERS[1][1]


def test_without_kernel_symbols_every_answer_says_what_to_set(guest):
    t = target_of(guest, "")
    with pytest.raises(NoRegister) as e:
        t.kernel_root()
    assert str(e.value) == gdbsx.NEED_SYMS
    assert t.missing_hint() == gdbsx.NEED_SYMS
    assert "`set xen kernel-syms /path/to/System.map`" in gdbsx.NEED_SYMS
    with pytest.raises(NoRegister, match=r"\(xen_p2m_addr, xen_p2m_size: the guest's P2M list\)"):
        t.read_phys(root_maddr(), 8)
    assert guest.evaluated == ["&init_mm.pgd"]
    assert guest.reads == [(RO_MPT_VIRT_START + 8 * (root_maddr() >> 12), 8)]   # the M2P view tried
    notes = t.info_notes()
    assert notes[2] == f"P2M: unknown ({gdbsx.NEED_SYMS} (xen_p2m_addr, xen_p2m_size: the guest's P2M list))"
    assert notes[3] == (f"vCPU 0 (the tables gdbsx walks) runs on L4 maddr {root_maddr():#x} (Xen's "
                        f"linear slot {LINEAR_PT_SLOT})")       # readable without symbols


def test_a_32bit_guest_is_refused_before_any_read(guest):
    """gdbsx on a 32-bit PV guest (pv-i386-pae's symbols): no root search, no assumed registers."""
    t = target_of(guest, SYMS_I386, machine="i386")
    with pytest.raises(Unsupported, match=r"only 64-bit PV guests are handled \(32-bit: give --cr3 and --mode pae on a dump\)"):
        t.kernel_root()
    assert t.missing_hint().startswith("gdbsx: only 64-bit PV guests")
    assert guest.reads == []
    cpus = t.cpus()
    assert sorted(cpus[0].regs) == ["cs", "rflags", "rip", "rsp"]
    assert t.symbol("swapper_pg_dir") == manifest("pv-i386-pae")["symbols"]["swapper_pg_dir"]


def test_vcpu0_root_is_read_through_the_linear_slot(guest):
    t = target_of(guest, "")
    assert t.vcpu0_root() == root_maddr()
    four_deep = gdbsx.linear_self_address()
    assert guest.reads == [(four_deep + 8 * LINEAR_PT_SLOT, 8)]
    for level in range(4):                       # the slot taken at every level
        assert four_deep >> (12 + 9 * level) & 511 == LINEAR_PT_SLOT
    assert t.vcpu0_root() == root_maddr() and len(guest.reads) == 1


def test_vcpu0_root_unreadable(guest):
    t = target_of(guest)
    four_deep = gdbsx.linear_self_address() + 8 * LINEAR_PT_SLOT
    guest.overlay[four_deep] = 0                 # not present
    assert t.vcpu0_root() is None
    assert f"vCPU 0's L4: unknown (Xen's linear slot {LINEAR_PT_SLOT} not readable)" in t.info_notes()


# -- page_offset ----------------------------------------------------------------------------------

def test_page_offset_default_and_page_offset_base(guest):
    t = target_of(guest)
    assert t.page_offset() == (PAGE_OFFSET_DEFAULT, f"default {PAGE_OFFSET_DEFAULT:#x} (no page_offset_base symbol)")
    where = MAN["symbols"]["_text"]              # any address: the overlay answers there
    for value, taken in ((PAGE_OFFSET_DEFAULT + (5 << 30), True), (PAGE_OFFSET_DEFAULT + 4096, False),
                         (1 << 30, False)):
        t = target_of(guest)
        guest.symbols["page_offset_base"] = where
        guest.overlay[where] = value
        got = t.page_offset()
        assert got == ((value, "page_offset_base (the host's symbol table)") if taken else
                       (PAGE_OFFSET_DEFAULT, f"default {PAGE_OFFSET_DEFAULT:#x} (no page_offset_base symbol)"))
    t = target_of(guest)
    guest.symbols["page_offset_base"] = RO_MPT_VIRT_START         # unreadable: the default
    del guest.overlay[where]
    assert t.page_offset()[0] == PAGE_OFFSET_DEFAULT


# -- P2M and M2P ------------------------------------------------------------------------------

def test_p2m_entries_match_the_manifest(guest):
    t = target_of(guest)
    lp = MAN["linux_p2m"]
    assert t.p2m_location() == (lp["va"], lp["size"], "xen_p2m_addr/xen_p2m_size (kernel-syms pv-x86_64.map)")
    before = len(guest.reads)
    for pfn, mfn in MAN["p2m"]:
        assert t.p2m(pfn) == mfn, pfn
    assert len(guest.reads) - before == len(MAN["p2m"])        # one 8-byte read each
    assert all(size == 8 for _, size in guest.reads)
    for pfn in lp["invalid_pfns"]:
        assert t.p2m(pfn) is None, pfn
    asked = len(guest.reads)
    assert t.p2m(lp["size"]) is None and t.p2m(-1) is None and t.p2m(MAN["p2m"][0][0]) == MAN["p2m"][0][1]
    assert len(guest.reads) == asked                          # beyond the list, and cached: no read


def test_m2p_by_inverting_the_p2m_list(guest):
    """The dump has no Xen frames: the RO M2P is unreadable, tried once, then the list is read
    whole once and inverted."""
    t = target_of(guest)
    pairs = MAN["p2m"]
    for pfn, mfn in pairs:
        assert t.m2p(mfn) == pfn, mfn
    owned = {mfn for _, mfn in pairs}
    for mfn in range(0, max(owned) + 64, 997):
        assert (t.m2p(mfn) is None) == (mfn not in owned)
    assert t.m2p(1 << 60) is None
    assert t.m2p_view.startswith(f"unreadable: Xen's RO M2P ({RO_MPT_VIRT_START:#x}, L4 slot 256)")
    assert len(whole_list_reads(guest)) == 1
    assert [va for va, _ in guest.reads if va >= RO_MPT_VIRT_START and va < PAGE_OFFSET_DEFAULT] == \
        [RO_MPT_VIRT_START + 8 * pairs[0][1]]
    assert t.stats["m2p_reads"] == 0
    # the list read for the inverse answers the P2M too, with no more reads
    asked = len(guest.reads)
    assert [t.p2m(pfn) for pfn, _ in pairs] == [mfn for _, mfn in pairs] and len(guest.reads) == asked
    assert ("mfn -> pfn: M2P view unreadable: Xen's RO M2P (0xffff800000000000, L4 slot 256) does not "
            "translate through gdbsx here; using the inverse of the guest's P2M list") in t.info_notes()


def test_m2p_by_xens_ro_m2p_view(guest):
    """Where Xen's RO M2P answers (a real gdbsx), it is used, checked against single P2M entries,
    and the list is never read whole."""
    pairs = MAN["p2m"]
    for pfn, mfn in pairs:
        guest.overlay[RO_MPT_VIRT_START + 8 * mfn] = pfn
    t = target_of(guest)
    for pfn, mfn in pairs:
        assert t.m2p(mfn) == pfn, mfn
    assert t.m2p_view is True and t.stats["m2p_reads"] == len(pairs)
    assert not whole_list_reads(guest)
    assert t.kernel_root()[0] == root_maddr()
    assert ("mfn -> pfn: the guest's M2P view (RO M2P at 0xffff800000000000), checked against its P2M"
            in t.info_notes())


def test_a_garbage_m2p_view_falls_back_to_the_inverse(guest):
    pairs = MAN["p2m"]
    for pfn, mfn in pairs:
        guest.overlay[RO_MPT_VIRT_START + 8 * mfn] = pfn + 1      # the P2M check refuses it
    guest.overlay[RO_MPT_VIRT_START + 8 * pairs[1][1]] = 1 << 63  # !VALID_M2P
    t = target_of(guest)
    for pfn, mfn in pairs:
        assert t.m2p(mfn) == pfn, mfn
    # the first answer the P2M refuses marks the view garbage: it is not asked again
    assert t.m2p_view == (f"garbage: Xen's RO M2P ({RO_MPT_VIRT_START:#x}) does not give pfn "
                          f"{pairs[0][0]:#x} for the guest's mfn {pairs[0][1]:#x}")
    assert t.stats["m2p_reads"] == 1
    assert len(whole_list_reads(guest)) == 1
    assert f"mfn -> pfn: M2P view {t.m2p_view}; using the inverse of the guest's P2M list" in t.info_notes()


def _map_with_last_pfn(tmp_path):
    """pv-x86_64's System.map plus ``xen_p2m_last_pfn`` (at max_pfn's address: its value 0x100)."""
    syms = tmp_path / "System.map"
    syms.write_text(open(SYMS).read() + f"{MAN['symbols']['max_pfn']:016x} D xen_p2m_last_pfn\n")
    return str(syms)


def test_the_p2m_list_is_read_up_to_xen_p2m_last_pfn(guest, tmp_path):
    """Linux sizes xen_p2m_size for hotplug (Debian's kernel: 2^27 entries, seen on a real domU);
    only the first xen_p2m_last_pfn entries can name a frame: that many are read."""
    last = MAN["symbol_values"]["max_pfn"]
    assert 0 < last < MAN["linux_p2m"]["size"]
    t = target_of(guest, _map_with_last_pfn(tmp_path))
    va, size, source = t.p2m_location()
    assert (va, size) == (p2m_list_va(), last)
    assert source.endswith(f"; its first xen_p2m_last_pfn {last:#x} entries")
    pfn, mfn = next((pfn, mfn) for pfn, mfn in MAN["p2m"] if pfn < last)
    assert t.m2p(mfn) == pfn
    assert (p2m_list_va(), last * 8) in guest.reads and not whole_list_reads(guest)
    guest.overlay[MAN["symbols"]["max_pfn"]] = MAN["linux_p2m"]["size"] + 1      # beyond the list: ignored
    t = target_of(guest, _map_with_last_pfn(tmp_path))
    assert t.p2m_location()[1] == MAN["linux_p2m"]["size"]


def test_p2m_lists_refused(guest):
    where = MAN["symbols"]["xen_p2m_size"]
    guest.overlay[where] = gdbsx.MAX_P2M_INVERSE + 1
    t = target_of(guest)
    with pytest.raises(XenscopeError, match=f"has {gdbsx.MAX_P2M_INVERSE + 1} entries: reading more "
                       f"than {gdbsx.MAX_P2M_INVERSE} over gdbsx is refused"):
        t.m2p(MAN["p2m"][0][1])
    guest.overlay[where] = 0
    t = target_of(guest)
    with pytest.raises(XenscopeError, match=f"xen_p2m_addr {p2m_list_va():#x} / xen_p2m_size 0x0 do "
                       "not describe a P2M list"):
        t.p2m_location()


# -- reads and walks --------------------------------------------------------------------------

def test_walks_of_kernel_addresses_match_the_manifest(guest):
    t = target_of(guest)
    ctx = ctxmod.resolve(t)
    assert (ctx.paging.mode, ctx.paging.root) == ("4level", root_maddr())
    walks = [w for w in MAN["walks"] if w["root"] == ROOT]
    assert len(walks) >= 10
    total = 0
    for w in walks:
        before = len(guest.reads)
        got = walk(t, ctx.paging, w["va"])
        cost = len(guest.reads) - before
        assert (got.pa, got.stop) == (w["ma"], w["stop"]), w
        if w["stop"] is not None:
            assert got.stop_level == w["level"], w
        else:
            assert t.m2p(got.pa >> 12) == w["pfn"]
            assert (got.writable, got.user, got.nx) == (w["writable"], w["user"], w["nx"]), w
            assert [t.m2p(lv.table >> 12) for lv in got.levels] == [lv["pfn"] for lv in w["levels"]], w
        assert cost <= min(sum(lv.entry is not None for lv in got.levels), WALK_READS_MAX), (w, cost)
        for va, size in guest.reads[before:]:       # one entry at a time, through the direct map
            assert size == 8 and PAGE_OFFSET_DEFAULT <= va < PAGE_OFFSET_DEFAULT + DIRECT_MAP_SIZE, hex(va)
        total += cost
        before = len(guest.reads)
        assert walk(t, ctx.paging, w["va"]) == got and len(guest.reads) == before    # cached
    assert total <= WALKS_TOTAL_MAX


def test_read_phys_of_machine_addresses(guest):
    t = target_of(guest)
    pages = [p for p in MAN["pages"] if p["root"] == ROOT]
    for d in (d for d in MAN["data"] if d["root"] == ROOT):
        page = next(p for p in pages if p["va"] <= d["va"] < p["va"] + p["size"])
        ma = page["ma"] + d["va"] - page["va"]
        assert t.read_phys(ma, len(d["hex"]) // 2).hex() == d["hex"], d
    with pytest.raises(NotInDump, match=r"ma 0x1000 is not in the dump \(machine frame 0x1 is not one of "
                       "the guest's pages \\(gdbsx reads guest-virtual memory only"):
        t.read_phys(0x1000, 16)


def test_read_phys_across_a_machine_page_boundary(guest):
    """Each machine page is found by its own pfn (this guest has no two adjacent machine frames):
    the first is read at its direct-map address, the read stops at the frame that is not the guest's."""
    t = target_of(guest)
    owned = {mfn for _, mfn in MAN["p2m"]}
    pfn, mfn = next((pfn, mfn) for pfn, mfn in MAN["p2m"] if mfn + 1 not in owned)
    with pytest.raises(NotInDump) as e:
        t.read_phys((mfn << 12) + 4090, 12)
    assert e.value.addr == (mfn + 1) << 12
    assert guest.reads[-1] == (PAGE_OFFSET_DEFAULT + (pfn << 12) + 4090, 6)
    assert t.read_phys((mfn << 12) + 4090, 6) == guest.core.frame(mfn)[4090:]


def test_virtual_reads_on_vcpu0s_root_are_one_host_read(guest):
    t = target_of(guest)
    d = next(d for d in MAN["data"] if d["root"] == ROOT)
    paging = ctxmod.resolve(t).paging
    t.vcpu0_root()
    before = len(guest.reads)
    assert t.read_virt(d["va"], 16, paging, None).hex() == d["hex"]
    assert guest.reads[before:] == [(d["va"], 16)]
    # another root is walked over machine reads
    user = next(w for w in MAN["walks"] if w["root"] == "vcpu1.cr3" and w["ma"] is not None)
    other = Paging("4level", root_maddr("vcpu1.cr3"), nxe=True)
    before = len(guest.reads)
    t.read_virt(user["va"], 8, other, None)
    assert (user["va"], 8) not in guest.reads[before:] and len(guest.reads) - before >= 2


# -- registers, notes -------------------------------------------------------------------------

def test_cpus_add_what_gdbsx_cannot_give(guest):
    t = target_of(guest)
    cpus = t.cpus()
    assert len(cpus) == MAN["nr_vcpus"]
    root, source = t.kernel_root()
    for cpu, vcpu in zip(cpus, MAN["vcpus"]):
        assert cpu.regs["rip"] == vcpu["rip"] and cpu.source["rip"] == "stub register"
        assert (cpu.regs["cr3"], cpu.source["cr3"]) == (root, f"kernel symbols: {source}")
        assert cpu.regs["cr0"] == 0x80010001 and cpu.source["cr0"].startswith("assumed: gdbsx gives no CR0")
        assert cpu.regs["cr4"] == 0x20 and cpu.source["cr4"].startswith("assumed: gdbsx gives no CR4")
        assert cpu.regs["efer"] == 0xD00 and cpu.source["efer"].startswith("assumed: gdbsx gives no EFER")
    assert t.cpus() is cpus and guest.register_calls == 1


def test_registers_the_host_has_win(guest):
    host_registers = guest.registers

    def registers():
        cpus = host_registers()
        cpus[0].regs["cr3"], cpus[0].source["cr3"] = root_maddr("vcpu1.cr3"), "stub register"
        return cpus
    guest.registers = registers
    t = target_of(guest)
    cpus = t.cpus()
    assert (cpus[0].regs["cr3"], cpus[1].regs["cr3"]) == (root_maddr("vcpu1.cr3"), root_maddr())


def test_info_notes(guest):
    t = target_of(guest)
    t.cpus()
    notes = t.info_notes()
    lp = MAN["linux_p2m"]
    assert notes == [
        "memory: guest-virtual reads only (gdb m packets, walked by Xen through vCPU 0's tables); machine "
        f"address -> pfn -> direct map {PAGE_OFFSET_DEFAULT:#x} (default {PAGE_OFFSET_DEFAULT:#x} (no "
        "page_offset_base symbol)) + pfn << 12",
        "mfn -> pfn: M2P view unreadable: Xen's RO M2P (0xffff800000000000, L4 slot 256) does not translate "
        "through gdbsx here; using the inverse of the guest's P2M list",
        f"P2M: list at {lp['va']:#x}, {lp['size']} entries (xen_p2m_addr/xen_p2m_size (kernel-syms pv-x86_64.map))",
        f"vCPU 0 (the tables gdbsx walks) runs on L4 maddr {root_maddr():#x} (Xen's linear slot 258): the kernel "
        "root used as CR3",
        "cannot: physical reads of frames the guest does not own (Xen's, other domains'); CR0/CR3/CR4/EFER "
        "(assumed, mode 4level); reads through 2M/1G guest mappings (gdbsx refuses PSE); other vCPUs' address "
        "spaces (gdbsx walks vCPU 0's; give --cr3 MADDR for another root)",
        f"reads so far: {t.stats['virt_reads']} virtual reads, {t.stats['virt_bytes']} bytes"]
    assert t.stats["virt_reads"] == len(guest.reads) - 1         # the failed RO M2P probe
    assert t.stats["virt_bytes"] == sum(size for _, size in guest.reads) - 8


def test_info_notes_when_vcpu0_runs_another_l4(guest):
    t = target_of(guest)
    guest.overlay[gdbsx.linear_self_address() + 8 * LINEAR_PT_SLOT] = root_maddr("vcpu1.cr3") | 0x63
    assert (f"vCPU 0 (the tables gdbsx walks) runs on L4 maddr {root_maddr('vcpu1.cr3'):#x} (Xen's linear "
            "slot 258): not the kernel root (a process's tables; give --cr3 to walk them)") in t.info_notes()


# -- caches -------------------------------------------------------------------------------------

def test_invalidate_forgets_entries_frames_root_and_registers(guest):
    t = target_of(guest)
    va = next(w["va"] for w in MAN["walks"] if w["root"] == ROOT and w["ma"] is not None)
    paging = ctxmod.resolve(t).paging
    first = walk(t, paging, va)
    asked = len(guest.reads)
    assert walk(t, paging, va) == first and len(guest.reads) == asked
    t.invalidate()
    assert guest.register_calls == 1
    paging = ctxmod.resolve(t).paging                   # registers and the root again
    assert guest.register_calls == 2 and paging.root == root_maddr()
    assert len(whole_list_reads(guest)) == 2             # the inverse is built again
    asked = len(guest.reads)
    assert walk(t, paging, va) == first
    assert 0 < len(guest.reads) - asked <= WALK_READS_MAX


def test_kernel_syms_change_resets(guest):
    t = target_of(guest)
    root = t.kernel_root()
    t.cpus()
    t.set_kernel_syms(SYMS)                  # the same file: nothing forgotten
    asked = len(guest.reads)
    assert t.kernel_root() == root and len(guest.reads) == asked and guest.register_calls == 1
    t.set_kernel_syms("")
    with pytest.raises(NoRegister):
        t.kernel_root()
    assert "cr3" not in t.cpus()[0].regs and guest.register_calls == 2
    assert t.symbol("init_top_pgt") is None
    t.set_kernel_syms(SYMS)
    assert t.kernel_root() == root and t.symbol("init_top_pgt") == MAN["symbols"]["init_top_pgt"]


def test_entry_cache_is_bounded(guest, monkeypatch):
    monkeypatch.setattr(gdbsx, "MAX_ENTRY_CACHE", 1)
    t = target_of(guest)
    paging = ctxmod.resolve(t).paging
    va = next(w["va"] for w in MAN["walks"] if w["root"] == ROOT and w["ma"] is not None)
    first = walk(t, paging, va)
    asked = len(guest.reads)
    assert walk(t, paging, va) == first
    assert len(guest.reads) > asked                     # the cache was cleared on the way


# -- Linux: a task's root from mm->pgd (crash's context, moved out of crashext) ----------------

def test_mm_root_of_init_mm(guest):
    t = target_of(guest)
    paging = ctxmod.resolve(t).paging

    def read_kernel(va, size):
        try:
            return t.read_guest_virtual(va, size)
        except NotInDump:
            return None

    def kernel_to_phys(va):
        return walk(t, paging, va).pa
    init_mm = MAN["symbols"]["init_mm"]
    offset = MAN["struct_offsets"]["mm_struct.pgd"]
    assert mm_root(init_mm, offset, "x86_64", read_kernel, kernel_to_phys) == \
        (root_maddr(), MAN["symbol_values"]["init_mm.pgd"])
    assert mm_root(0, offset, "x86_64", read_kernel, kernel_to_phys) == (None, None)
    assert mm_root(init_mm, None, "x86_64", read_kernel, kernel_to_phys) == (None, None)
    assert mm_root(init_mm, offset, "x86_64", lambda va, size: None, kernel_to_phys) == (None, None)
    assert mm_root(init_mm, offset, "x86_64", read_kernel, lambda va: None) == (None, None)
    sizes = []
    mm_root(init_mm, offset, "i386", lambda va, size: sizes.append(size) or bytes(size), lambda va: 0)
    assert sizes == [4]
