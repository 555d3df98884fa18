"""xenscope in the real gdb on Xen's gdbsx: a PV guest's machine memory through guest-virtual reads.

The stub (tests/gdbsx_stub.py) answers like gdbsx for cores/pv-x86_64.xc: general registers only,
``m`` packets walked through vCPU 0's tables, E01 where gdbsx fails, nothing physical. The
manifest (cores/pv-x86_64.json) is the truth; the System.map (cores/pv-x86_64.map) is what a user
gives with ``set xen kernel-syms``. Packet counts are part of the contract: they are printed and
bounded here.
"""
import json
import os

import pytest

from gdbsx_stub import GdbsxStub
from gdbutil import GDB, TOP, run_gdb

assert GDB is not None, "gdb is not installed: ./setup.sh installs it"

CORES = os.path.join(TOP, "cores")
CORE = os.path.join(CORES, "pv-x86_64.xc")
SYMS = os.path.join(CORES, "pv-x86_64.map")
DIRECT_MAP = (0xFFFF888000000000, 0xFFFF888000100000)
ROOT = "vcpu0.cr3"

# budgets: measured with gdb 13. gdb's own m packets carry at most 164 bytes (gdbsx sends no
# PacketSize); reads longer than that are xenscope's own m packets of up to 0x7ff bytes.
# measured: setup 19, walks 21 in all (13 walks), again 0, maps 12 (4 whole tables x 3)
WALK_FIRST_MAX = 4          # one 8-byte m packet per level read, at most
WALKS_TOTAL_MAX = 24        # the 13 vCPU 0 walks of the manifest, first time
WALK_AGAIN_MAX = 0          # entries are cached until gdb stops or resumes
SETUP_MAX = 20              # first command with symbols: gdb's own frame reads for 2 vCPUs (10),
                            # M2P probe (1), xen_p2m_addr/size (2), P2M list (4 KiB: 3), root (2),
                            # vCPU 0's L4 through the linear slot (1)
MAPS_MAX = 12               # L4, L3, L2, L1 of the direct map read whole (3 packets each)


def manifest():
    with open(os.path.join(CORES, "pv-x86_64.json")) as f:
        return json.load(f)


def connect(port):
    return ["set architecture i386:x86-64", f"target remote 127.0.0.1:{port}"]


def session(commands, setup=()):
    """Run ``setup`` then ``commands`` (label, command) against a fresh stub; return (stub, result,
    {label: stdout of the command}, {label: packets it cost})."""
    stub = GdbsxStub(CORE)
    argv = connect(stub.port) + list(setup)
    for label, c in commands:
        argv += [f"python gdb.execute('maintenance packet qXenscopeMark:{label}', to_string=True)", c,
                 "echo @@@\\n"]
    argv.append("python gdb.execute('maintenance packet qXenscopeMark:end', to_string=True)")
    try:
        r = run_gdb(*argv)
    finally:
        stub.close()
    assert "Traceback" not in r.output and stub.error is None, (r.output, stub.error)
    outs = r.stdout.split("@@@\n")
    # outs[0] holds the connection banner + the first command's output
    texts = {}
    for (label, _), text in zip(commands, outs):
        texts[label] = text
    packets = dict(stub.segments())
    return stub, r, texts, packets


def js(text):
    return json.loads(text[text.index("{"):])


def m_packets(pkts):
    return [p for p in pkts if p.startswith("m")]


@pytest.fixture(scope="module")
def run():
    man = manifest()
    walks = [w for w in man["walks"] if w["root"] == ROOT]
    cmds = [("info", "xen info --json"), ("info-text", "xen info")]
    cmds += [(f"walk{i}", f"xen walk {w['va']:#x} --json") for i, w in enumerate(walks)]
    cmds += [(f"again{i}", f"xen walk {w['va']:#x} --json") for i, w in enumerate(walks)]
    cmds += [("maps", f"xen maps --range {DIRECT_MAP[0]:#x}-{DIRECT_MAP[1]:#x} --pages --json")]
    data = [d for d in man["data"] if d["root"] == ROOT]
    pages = [p for p in man["pages"] if p["root"] == ROOT]
    mas = []
    for i, d in enumerate(data):
        page = next(p for p in pages if p["va"] <= d["va"] < p["va"] + p["size"])
        ma = page["ma"] + d["va"] - page["va"]
        mas.append(ma)
        cmds.append((f"data{i}", f"xen read-phys {ma:#x} {len(d['hex']) // 2} --json"))
    cmds += [("p2m", "xen p2m 0 --count 8 --json"), ("p2mcheck", "xen p2m-check --json --limit 0")]
    stub, r, texts, packets = session(cmds, setup=[f"set xen kernel-syms {SYMS}"])
    return {"man": man, "walks": walks, "data": data, "mas": mas, "pages": pages, "stub": stub,
            "r": r, "texts": texts, "packets": packets}


def test_gdbsx_detected_and_info_says_what_it_cannot_do(run):
    info = js(run["texts"]["info"])
    man = run["man"]
    assert info["kind"].startswith("gdbsx (guest-virtual reads only; PV guest: MFN page tables via "
                                   "the guest's M2P view/P2M)"), info["kind"]
    assert info["machine"] == "x86_64" and info["cpus"] == man["nr_vcpus"]
    assert info["mode"] == "4level"
    assert info["cr3"] == man["roots"][ROOT] << 12 == info["root_pa"]
    src = info["sources"]
    assert src["cr3"].startswith("kernel symbols: init_top_pgt 0xffffffff81010000 (kernel-syms pv-x86_64.map)")
    assert "linear slot L4[258]" in src["cr3"] and "pfn 0x10" in src["cr3"]
    for reg in ("cr0", "cr4", "efer"):
        assert src[reg].startswith(f"assumed: gdbsx gives no {reg.upper()}"), src
    notes = "\n".join(info["notes"])
    assert "M2P view unreadable" in notes and "inverse of the guest's P2M list" in notes
    assert "list at 0xffffc90000000000, 512 entries" in notes
    assert f"runs on L4 maddr {man['roots'][ROOT] << 12:#x}" in notes and "the kernel root used as CR3" in notes
    assert "cannot: physical reads of frames the guest does not own" in notes
    text = run["texts"]["info-text"]
    assert "note: cannot:" in text and "(assumed: gdbsx gives no CR4" in text
    # what the stub saw: QEMU's packet asked once and unanswered, the monitor probe, no physical mode
    log = run["stub"].log
    assert log.count("qqemu.PhyMemMode") == 1 and not any(p.startswith("Qqemu") for p in log)
    assert any(p.startswith("qRcmd,") for p in log)
    assert not any(p.startswith(("M", "G", "Z")) for p in log)     # xenscope never writes


def test_walks_match_the_manifest(run):
    for i, w in enumerate(run["walks"]):
        res = js(run["texts"][f"walk{i}"])
        assert (res["pa"], res["stop"]) == (w["ma"], w["stop"]), (w, res)
        assert res["space"] == "machine"
        if w["stop"] is not None:
            assert res["stop_level"] == w["level"], (w, res)
        if w["ma"] is not None:
            assert res["pfn"] == w["pfn"], w
            assert (res["writable"], res["user"], res["nx"]) == (w["writable"], w["user"], w["nx"]), w
            assert [lv["table_pfn"] for lv in res["levels"]] == [lv["pfn"] for lv in w["levels"]], w
        again = js(run["texts"][f"again{i}"])
        assert again == res


def test_walk_packet_budget(run):
    pk = run["packets"]
    first = [len(m_packets(pk[f"walk{i}"])) for i in range(len(run["walks"]))]
    again = [len(m_packets(pk[f"again{i}"])) for i in range(len(run["walks"]))]
    setup = len(m_packets(pk["info"]))
    print(f"\ngdbsx m packets: first xen info (setup) {setup}; xen walk first {first} "
          f"(total {sum(first)}), again {again}; maps {len(m_packets(pk['maps']))}")
    assert setup <= SETUP_MAX, setup
    for i, w in enumerate(run["walks"]):
        res = js(run["texts"][f"walk{i}"])
        read = sum(1 for lv in res["levels"] if lv["entry"] is not None)
        assert first[i] <= min(read, WALK_FIRST_MAX), (w, first[i], read)
    assert sum(first) <= WALKS_TOTAL_MAX, first
    assert max(again) <= WALK_AGAIN_MAX, again
    assert js(run["texts"]["maps"])["tables"] == 4
    assert len(m_packets(pk["maps"])) <= MAPS_MAX
    # every m packet of a walk reads one 8-byte entry through the direct map
    for i in range(len(run["walks"])):
        for p in m_packets(pk[f"walk{i}"]):
            addr, n = (int(x, 16) for x in p[1:].split(","))
            assert n == 8 and DIRECT_MAP[0] <= addr < DIRECT_MAP[0] + (1 << 46), p


def test_read_phys_of_machine_addresses(run):
    for i, (d, ma) in enumerate(zip(run["data"], run["mas"])):
        res = js(run["texts"][f"data{i}"])
        assert (res["pa"], res["hex"]) == (ma, d["hex"]), d


def test_maps_of_the_direct_map(run):
    res = js(run["texts"]["maps"])
    want = [p for p in run["pages"] if DIRECT_MAP[0] <= p["va"] < DIRECT_MAP[1]]
    keys = ("va", "size", "writable", "user", "nx")
    got = [{**{k: p[k] for k in keys}, "ma": p["pa"]} for p in res["pages"]]
    assert got == [{**{k: p[k] for k in keys}, "ma": p["ma"]} for p in want]
    assert not res["problems"]


def test_without_kernel_symbols_the_error_says_what_to_set():
    stub, r, texts, packets = session([("info", "xen info"), ("walk", "xen walk 0xffff888000005010"),
                                       ("rp", "xen read-phys 0x2a188010 16"),
                                       ("bad", "set xen kernel-syms /no/such/System.map"),
                                       ("show", "show xen kernel-syms")])
    err = r.stderr
    assert "xen walk: gdbsx gives no CR3 and no physical reads" in err, err
    assert "`set xen kernel-syms /path/to/System.map`" in err
    assert "xen read-phys: gdbsx gives no CR3 and no physical reads" in err
    assert "xen kernel-syms: no such file: /no/such/System.map" in err
    assert "xen kernel-syms is not set" in texts["show"]
    assert "paging   gdbsx gives no CR3" in texts["info"]
    assert r.stdout.count("@@@") == 5


def test_explicit_cr3_and_a_user_root_still_need_the_p2m():
    """--cr3 of vCPU 1's process L4 (no kernel symbols for the root) walks it; a user address."""
    man = manifest()
    w = next(w for w in man["walks"] if w["root"] == "vcpu1.cr3" and w["ma"] is not None)
    cr3 = man["roots"]["vcpu1.cr3"] << 12
    stub, r, texts, packets = session([("walk", f"xen walk {w['va']:#x} --cr3 {cr3:#x} --json")],
                                      setup=[f"set xen kernel-syms {SYMS}"])
    res = js(texts["walk"])
    assert (res["pa"], res["stop"], res["sources"]["cr3"]) == (w["ma"], None, "--cr3 option")


def test_p2m_and_p2m_check_over_gdbsx(run):
    """The guest's own list read over gdbsx (cached by the walks: no m packet), checked against its own
    inverse: the holes below the last populated pfn are the manifest's invalid pfns."""
    man = run["man"]
    entries = js(run["texts"]["p2m"])["entries"]
    assert [(e["pfn"], e["mfn"]) for e in entries] == [tuple(pair) for pair in man["p2m"][:8]]
    check = js(run["texts"]["p2mcheck"])
    assert check["format"] == "gdbsx" and check["pfns"] == man["linux_p2m"]["size"]
    last = max(pfn for pfn, _ in man["p2m"])
    holes = [pfn for pfn in man["linux_p2m"]["invalid_pfns"] if pfn < last]
    assert [f["pfn"] for f in check["findings"]["invalid-in-range"]] == holes and holes
    assert {k for k, v in check["findings"].items() if v} == {"invalid-in-range"}
    assert "gdbsx cannot read Xen's M2P" in check["sources"]["m2p"]
    for label in ("p2m", "p2mcheck"):
        assert not m_packets(run["packets"][label]), label


def test_large_reads_are_xenscopes_own_m_packets():
    """A read longer than gdb's 164-byte m packets: xenscope's own m packets of 0x7ff bytes; one the
    stub answers E01 (an unmapped page in the range) fails the read at that packet's address."""
    va = 0xFFFFFFFF81000000                  # the kernel image: mapped through vCPU 0's tables
    probe = ("import gdbext.target as t, xenstructs.errors as e\n"
             f"print('LEN', len(t._read_guest_virtual({va:#x}, 0x1800)))\n"
             "try:\n"
             "    t._read_guest_virtual(0x1000, 0x1000)\n"
             "except e.NotInDump as x:\n"
             "    print('FAILED', x)\n")
    stub, r, texts, packets = session([("read", "python\n" + probe)])
    assert "LEN 6144" in r.stdout, r.output
    assert "FAILED" in r.stdout
    reads = [p for p in packets["read"] if p.startswith("m")]
    assert reads == [f"m{va:x},7ff", f"m{va + 0x7ff:x},7ff", f"m{va + 0xffe:x},7ff", f"m{va + 0x17fd:x},3",
                     "m1000,7ff"], reads
