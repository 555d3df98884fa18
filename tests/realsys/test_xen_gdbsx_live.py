"""Live for real (issue 17): real gdb with xenscope on a real gdbsx attached to a real PV domU, and
on QEMU's gdbstub of the whole Xen host, judged by Xen's own tools and by the dumps of that pause.

One boot for the whole module (the session fixture ``xen_gdbsx_live``: realsys/gdbsxlive.py): a debug
build of Debian's Xen 4.17.5 (Debian's release builds have no gdbsx support: realsys/xengdbsx.py),
dom0 with Debian's toolstack and ``xen-utils``, a paused 64-bit PV domU (Debian's amd64 kernel),
gdbsx built from the same release's source (realsys/gdbsx_build.py) running in dom0.

Truth that does not come from xenscope:

* Xen's tools in dom0, run at that pause: ``xenctx`` (registers, ``-S`` stack), ``xen-mfndump
  dump-p2m``/``dump-m2p``/``dump-ptes``/``lookup-pte`` (the walks, down from an L4 and up from a
  user page);
* what the domU itself printed before it was paused: ``/proc/modules``, every pid and comm, one
  sleep's ``/proc/PID/maps`` and ``/proc/PID/pagemap`` (its pfns);
* the ``xl dump-core`` of the same pause, read by the RSP stub's own parser (tests/gdbsx_stub.py:
  ``struct`` only): every packet gdb sent the real gdbsx is replayed on the stub serving that dump,
  and every reply must be the real one (the stub is checked against the real gdbsx, not only the
  client);
* the Xen host dump QEMU wrote in the stop of the gdbstub session (``monitor dump-guest-memory``),
  read by the CLI: what the Xen commands said live must be what they say on it.

Packet counts are part of the contract: each command's remote packets (gdb's own log, split at
``qXenscopeMark`` packets: tests/rsplog.py) are bounded here.
"""
import json
import os
import re
import struct
import subprocess
import sys

import pytest

import rsplog
from gdbsx_stub import GdbsxStub, XcCore
from realsys import xentools as T
from realsys.gdbsxlive import START_KERNEL_MAP
from xenstructs.targets import gdbsx

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PFN_MASK = (1 << 55) - 1
PRESENT_IN_RAM = 1 << 63                  # /proc/PID/pagemap bit 63
ENTRY_MFN = ((1 << 52) - 1) & ~0xFFF

# budgets (remote packets per command, gdb's own included), measured on this host: see the tests
WALK_FIRST_MAX_EXTRA = 12                 # the first walk: the P2M list (its own packets) + this
WALK_MAX = 8                              # a later walk of new tables: one m per level + gdb's 2
WALK_AGAIN_MAX = 2                        # a cached walk: gdb's qfThreadInfo/qsThreadInfo only
INFO_MAX = 20
TASKS_MAX = 520
MODULES_MAX = 30
MODCHECK_MAX = 480
MAPS_MAX = 20                             # xen maps --pages: whole tables in 0x7ff-byte m packets
STACK_MAX = 10
P2M_MAX = 2                               # the list is cached: no m packet
QEMU_MAX = {"domains": 6600, "summary": 3400, "page": 50, "page_root": 50, "p2m_check": 3700}
TIER_MAX_SECONDS = 420                    # boot, tools, both gdb sessions, the dumps: measured 150 s
                                          # alone, 210-235 s with five other helpers' QEMUs running


@pytest.fixture(scope="module")
def live(xen_gdbsx_live):
    return xen_gdbsx_live


def judge(live, name):
    with open(live["files"][f"judge/{name}"], errors="replace") as f:
        return f.read()


def output(live, label, session="gdbsx"):
    return live[session]["outputs"][label]


def as_json(text):
    """A command's JSON (the first output of a session carries gdb's connection lines first)."""
    return json.loads(text if text.startswith("{") else text[text.index("\n{") + 1:])


def logged_length(reply):
    """The length of a reply gdb logged (it shortens long ones: rsplog.same_reply)."""
    shortened = re.match(r"^(.*) \[(\d+) bytes omitted\]$", reply)
    return len(reply) if not shortened else len(shortened.group(1)) + int(shortened.group(2))


def packets(live, label, session="gdbsx"):
    return live[session]["packets"][label]


def m_packets(live, label, session="gdbsx"):
    return rsplog.memory_reads(packets(live, label, session))


def cli(*args):
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", *map(str, args)], capture_output=True,
                       text=True, cwd=TOP, timeout=600)
    assert r.returncode in (0, 1), r.stderr
    return r


@pytest.fixture(scope="module")
def core(live):
    return XcCore(live["files"]["domu.core"])


@pytest.fixture(scope="module")
def p2m(live):
    size, rows = T.dump_p2m(judge(live, "dump-p2m.txt"))
    assert size == live["p2m_entries"] and len(rows) == size
    return rows


@pytest.fixture(scope="module")
def m2p(live):
    return T.dump_m2p(judge(live, "dump-m2p.txt"))[1]


# -- the build and the sessions -----------------------------------------------------------------

def test_gdbsx_built_for_the_booted_release_and_attached(live):
    """gdbsx from the booted hypervisor's own source, against that release's domctl headers."""
    build, hyp = live["gdbsx_build"], live["hypervisor"]
    assert build["version"] == build["source_version"] == hyp["version"] == live["xen_version"]["debian"]
    assert live["xen_version"]["banner"] == "4.17.5" and hyp["flavour"] == "debug"
    domctl = open(os.path.join(build["headers"], "xen", "domctl.h")).read()
    assert f"#define XEN_DOMCTL_INTERFACE_VERSION 0x{build['interface_version']:08x}" in domctl
    assert os.path.exists(build["path"])
    for log in (live["gdbsx_log"], live["probes_log"]):
        assert "Hyp is NOT enabled" not in log
        assert "Remote debugging from host 10.0.2.2" in log, log
    for session in ("gdbsx", "probes"):
        text = live[session]["result"]["stdout"] + live[session]["result"]["stderr"]
        assert "Traceback" not in text and "Python Exception" not in text, text[-3000:]


def test_every_reply_of_the_real_gdbsx_is_the_stubs_on_the_dump_of_that_pause(live):
    """Replay every packet gdb sent the real gdbsx (both sessions) on the stub serving the domU's
    ``xl dump-core``: every reply is the real one. ``k`` (gdb's kill on exit) is the only packet
    with no logged reply: gdb does not wait for it (gdbsx prints "WARN: k pkt" and its reply fails)."""
    for session in ("gdbsx", "probes"):
        pairs = [pair for label in live[session]["packets"] for pair in packets(live, label, session)]
        sent = [packet for packet, _ in pairs if packet != "k"]
        stub = GdbsxStub(live["files"]["domu.core"])
        try:
            replies = rsplog.replay(stub.port, sent)
        finally:
            stub.close()
        real = [reply for packet, reply in pairs if packet != "k"]
        differ = [(packet, logged, mine) for packet, logged, mine in zip(sent, real, replies)
                  if not rsplog.same_reply(logged, mine)]
        assert not differ, differ[:10]
        assert len(sent) > (20 if session == "probes" else 1000)
    assert [packet for label in live["gdbsx"]["packets"] for packet, _ in packets(live, label)][-1] == "k"
    assert "WARN: k pkt:k" in live["gdbsx_log"]


def test_what_the_real_gdbsx_answers_to_the_probes(live):
    """The protocol facts the stub and the client rely on, as the real gdbsx answered them."""
    got = {label: pairs[0] for label, pairs in live["probes"]["packets"].items() if label.startswith("probe")}
    replies = {packet: reply for packet, reply in got.values()}
    for packet in ("qC", "qAttached", "qOffsets", "qSymbol::", "qXfer:features:read:target.xml:0,fff",
                   "vCont?", "p10", "P10=00", "Z0,ffffffff81000000,1", "z0,ffffffff81000000,1",
                   "QStartNoAckMode", "m0,0"):
        assert replies[packet] == "", packet          # unsupported: the empty reply
    qsupported = [reply for packet, reply in packets(live, "", "probes") if packet.startswith("qSupported")]
    assert qsupported == [""]                         # no PacketSize: gdb's m packets stay small
    assert got["probe7"] == ("Hg5", "OK") and got["probe8"] == ("g", "")     # no such vCPU: no check
    assert "ERROR:_get_vcpu_ctxt:Failed hcall to get vcpu ctxt. errno:22" in live["probes_log"]
    assert len(replies["g"]) == 2 * 164                # struct xg_gdb_regs64: 17 u64 + 7 u32
    assert logged_length(replies["mffffffff81000000,800"]) == 4096  # 0x800 bytes: answered
    assert replies["mFFFFFFFF81000000,8"] == "E01"    # only lowercase hex digits count
    assert live["probes_log"].count("Reply contains invalid hex digit") == 8
    assert replies["m0,8"] == replies["mffff800000000000,8"] == "E01"   # RO M2P: 2 MiB pages
    assert replies["T5"] == replies["T0"] == "OK"
    assert bytes.fromhex(replies["qRcmd,6d6f6e"]) == b"Bad monitor command\n"
    assert bytes.fromhex(replies["qRcmd,706764332030"]) == b"Invalid  pgd3val 0000000000000000\n"
    assert packets(live, "detach", "probes") == [("D", None)]   # gdbsx leaves before its OK
    assert "Remote connection closed" in live["probes"]["result"]["stderr"]


def test_gdbsx_told_32_on_this_64bit_guest(live):
    """``gdbsx -a DOMID 32`` on a 64-bit PV guest: gdbsx does not check the width; its g reply is
    struct xg_gdb_regs32 filled from the 64-bit context read as a 32-bit one (the stub, told 32,
    gives the same bytes from the dump), rip is missing, gdb's p packet is not supported, and gdb
    gives up attaching ("PC register is not available"): xenscope says there is no target, in one
    line per command."""
    session = live["width32"]["result"]
    pairs = rsplog.exchanges(session["stderr"])
    registers = [reply for packet, reply in pairs if packet == "g"]
    assert len(registers) == 1 and len(registers[0]) == 2 * 16 * 4
    assert ("p10", "") in pairs
    stub = GdbsxStub(live["files"]["domu.core"], bits=32)
    try:
        assert rsplog.replay(stub.port, [packet for packet, _ in pairs]) == [reply for _, reply in pairs]
    finally:
        stub.close()
    assert "PC register is not available" in session["stderr"]
    for command in ("info", "stack"):
        assert (f"xen {command}: no target: open a core (gdb -c FILE), attach to a stub, or `set xen dump "
                "FILE`") in session["stderr"]
    assert "Traceback" not in session["stderr"] + session["stdout"]
    assert "Remote debugging from host 10.0.2.2" in live["width32_log"]


def test_the_ro_m2p_is_mapped_with_2mib_pages_in_the_domus_l4(live):
    """Why the M2P view cannot be read through gdbsx: slot 256 of the domU's L4 (dump-ptes)
    leads to an L2 of PSE entries (read on the host dump: Xen's own tables are not the domU's)."""
    root = T.dump_ptes(judge(live, f"dump-ptes-{live['root_mfn']:x}.txt"))
    assert root["level"] == 4 and root["entries"][256] & 1
    r = cli("walk", live["host_dump"], "0xffff800000000000", "--cr3", hex(live["root_mfn"] << 12), "--json")
    walk = json.loads(r.stdout)
    assert walk["levels"][0]["entry"] == root["entries"][256]
    assert walk["page_size"] == 2 << 20 and walk["levels"][-1]["level"] == "PDE", walk["levels"]


# -- registers and the stack ---------------------------------------------------------------------

def test_registers_are_xenctxs_and_the_dumps(live, core):
    """gdb's ``info registers`` (gdbsx's g packet) = xenctx's vCPU 0 = the dump's prstatus."""
    gdb = T.gdb_registers(output(live, "regs"))
    ctx = T.xenctx_registers(judge(live, "xenctx-a.txt"))
    assert list(ctx) == [0]
    names = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
             "r14", "r15", "rip")
    for name in names:
        assert gdb[name] == ctx[0][name] == core.vcpus[0]["regs"][name], name
    assert gdb["eflags"] == ctx[0]["flags"] == core.vcpus[0]["regs"]["rflags"]
    for name in ("cs", "ss", "ds", "es", "fs", "gs"):
        assert gdb[name] == ctx[0][name] == core.vcpus[0]["regs"][name], name


def test_control_registers_are_xenctxs(live):
    """xenctx's cr0, cr3, cr4 of vCPU 0 are what xenscope reads in the dump of that pause; what
    xenscope assumes on gdbsx (which gives no control register) holds in them: every assumed bit set."""
    ctx = T.xenctx_registers(judge(live, "xenctx-a.txt"))[0]
    offline = json.loads(cli("info", live["files"]["domu.core"], "--json").stdout)
    assert (offline["cr0"], offline["cr3"], offline["cr4"]) == (ctx["cr0"], ctx["cr3"], ctx["cr4"])
    assumed = as_json(output(live, "info"))
    for register in ("cr0", "cr4"):
        assert assumed["sources"][register].startswith("assumed: gdbsx gives no")
        assert assumed[register] & ctx[register] == assumed[register], register


def test_info_says_where_cr3_came_from_and_which_l4_vcpu0_runs_on(live):
    info = as_json(output(live, "info"))
    assert info["cr3"] == info["root_pa"] == live["root_mfn"] << 12        # dump-p2m of init_top_pgt's pfn
    ctx = T.xenctx_registers(judge(live, "xenctx-a.txt"))[0]
    vcpu0 = next(note for note in info["notes"] if note.startswith("vCPU 0"))
    assert f"L4 maddr {ctx['cr3']:#x}" in vcpu0                             # xenctx's cr3
    assert ("not the kernel root" in vcpu0) == (ctx["cr3"] != live["root_mfn"] << 12)
    assert info["cpus"] == 1 and info["machine"] == "x86_64"
    assert len(packets(live, "info")) <= INFO_MAX


def test_stack_is_xenctxs_kernel_text_words(live):
    """``xen stack`` lists the words of vCPU 0's stack that are kernel text (System.map's _stext to
    _etext); ``xenctx -S`` prints the same words as ``[<...>]`` (it also counts .init.text)."""
    out = as_json(output(live, "stack"))
    ctx = T.xenctx_registers(judge(live, "xenctx-a.txt"))[0]
    assert out["ip"] == ctx["rip"] and out["sp"] == ctx["rsp"]
    words = T.xenctx_stack_trace(judge(live, "xenctx-S.txt"))
    text_start, text_end = live["symbols"]["_text"], live["symbols"]["_etext"]
    want = [(address, value) for address, value, symbol in words
            if symbol is not None and address and text_start <= value < text_end]
    assert len(want) >= 5
    assert [(entry["va"], entry["value"]) for entry in out["entries"]] == want
    assert len(packets(live, "stack")) <= STACK_MAX and len(packets(live, "stack_text")) <= STACK_MAX


# -- walks: down with dump-ptes, up with lookup-pte ----------------------------------------------

def chain(walk):
    """A walk's ``[(table mfn, index, entry)]``, root first."""
    return [(level["table_pa"] >> 12, level["index"], level["entry"]) for level in walk["levels"]]


def test_kernel_walks_are_dump_ptes_chains(live, p2m):
    """``xen walk`` of the kernel image, its direct-map alias and a module from init_top_pgt's
    frame, and of the image from vCPU 0's L4 (xenctx's cr3): every level's table, index and entry
    is the one ``xen-mfndump dump-ptes`` printed; every table's pfn is dump-ptes' header's; the page
    is dump-p2m's frame of the pfn the kernel put it at."""
    labels = {"banner": "walk_banner", "direct": "walk_direct", "module": "walk_module",
              "vcpu0_banner": "walk_vcpu0_banner"}
    for name, label in labels.items():
        walk = as_json(output(live, label))
        down = live["down"][name]
        assert chain(walk) == [(mfn, index, entry) for _, mfn, index, entry, _ in down], name
        for level, (_, mfn, _, _, header) in zip(walk["levels"], down):
            assert header.startswith(f"pfn: {level['table_pfn']:#x}, mfn: {mfn:#x}"), (name, header)
        assert walk["stop"] is None and walk["page_size"] == 4096
    for name in ("banner", "direct"):
        walk = as_json(output(live, labels[name]))
        assert walk["pfn"] == live["banner_pfn"] and walk["pa"] >> 12 == p2m[live["banner_pfn"]][0]
    assert as_json(output(live, "walk_vcpu0_banner"))["cr3"] == T.xenctx_registers(
        judge(live, "xenctx-a.txt"))[0]["cr3"]


def test_user_walks_are_lookup_pte_chains(live, p2m):
    """``xen walk`` of the sleep's first user page from every L4 that maps it (lookup-pte, upwards
    from the page's mfn, which is dump-p2m's frame of the pfn /proc/PID/pagemap gave): each level's
    (table, index, entry) is one lookup-pte printed for that level."""
    assert live["user_mfn"] == p2m[live["user_pfn"]][0]
    levels = [set(step["chain"]) for step in live["up"]]          # L1 first
    assert len(levels) == 4 and all(levels)
    for l4 in live["user_l4s"]:
        walk = as_json(output(live, f"walk_user_{l4:x}"))
        got = chain(walk)
        assert got[0][0] == l4
        for depth, link in enumerate(got):
            assert link in levels[3 - depth], (l4, depth, link)
        assert walk["pa"] >> 12 == live["user_mfn"] and walk["pfn"] == live["user_pfn"]


def test_walk_packet_budgets(live):
    """The first walk reads the guest's P2M list once (xen_p2m_last_pfn entries, in xenscope's own
    m packets of 0x7ff bytes: gdb's own would be 164 bytes each); every later walk of new tables
    costs one m packet per level not yet read; a walk again, none."""
    list_bytes = live["p2m_entries"] * 8
    first = m_packets(live, "walk_banner")
    assert len(first) <= -(-list_bytes // gdbsx.M_PACKET_BYTES) + WALK_FIRST_MAX_EXTRA, len(first)
    assert sum(length for _, length, _ in first) >= list_bytes
    assert max(length for _, length, _ in first) == gdbsx.M_PACKET_BYTES
    later = [label for label in live["gdbsx"]["packets"] if label.startswith("walk_") and label != "walk_banner"]
    assert len(later) >= 5
    for label in later:
        assert len(packets(live, label)) <= WALK_MAX, (label, packets(live, label))
    for label in live["gdbsx"]["packets"]:
        if label.startswith("again_"):
            assert not m_packets(live, label), label
            assert len(packets(live, label)) <= WALK_AGAIN_MAX, label


def test_walks_equal_the_clis_on_the_dump_of_that_pause(live):
    """The same walks by the CLI on the domU's ``xl dump-core`` (everything but the sources)."""
    root = hex(live["root_mfn"] << 12)
    for label, va in (("walk_banner", live["kernel_vas"]["banner"]), ("walk_module", live["kernel_vas"]["module"])):
        offline = json.loads(cli("walk", live["files"]["domu.core"], hex(va), "--cr3", root, "--json").stdout)
        got = as_json(output(live, label))
        for key in ("levels", "pa", "pfn", "space", "page_size", "writable", "user", "nx", "stop"):
            assert got[key] == offline[key], (label, key)


# -- memory, maps, P2M ------------------------------------------------------------------------------

def test_read_phys_is_dump_ptes_and_the_dumps_page(live, core):
    """``xen read-phys`` of init_top_pgt's frame: the 512 entries dump-ptes printed; of the user
    page: the dump's bytes of that frame."""
    root = as_json(output(live, "read_root"))
    entries = list(struct.unpack("<512Q", bytes.fromhex(root["hex"])))
    assert entries == T.dump_ptes(judge(live, f"dump-ptes-{live['root_mfn']:x}.txt"))["entries"]
    user = as_json(output(live, "read_user"))
    assert bytes.fromhex(user["hex"]) == core.frame(live["user_mfn"])[:256]
    assert user["hex"].startswith("7f454c46")          # busybox's ELF header: the sleep's first page
    assert len(packets(live, "read_root")) <= -(-4096 // gdbsx.M_PACKET_BYTES) + 2


def test_maps_of_the_kernel_image_are_dump_p2ms_frames(live, p2m):
    """Every 4 KiB page ``xen maps --pages`` lists over the kernel image's first 4 MiB is dump-p2m's
    frame of the pfn the image is loaded at (phys_base 0: (va - __START_KERNEL_map) >> 12)."""
    pages = as_json(output(live, "maps_kernel"))["pages"]
    assert len(pages) == 1024
    for page in pages:
        assert page["pa"] >> 12 == p2m[(page["va"] - START_KERNEL_MAP) >> 12][0], hex(page["va"])
    assert len(packets(live, "maps_kernel")) <= MAPS_MAX


def test_maps_of_the_sleep_are_its_pagemap(live, p2m):
    """The sleep's first pages from one of its L4s: a page is listed exactly when /proc/PID/pagemap
    has it in RAM, at dump-p2m's frame of its pfn."""
    pages = {page["va"]: page for page in as_json(output(live, "maps_user"))["pages"]}
    first = live["user_va"]
    resident = {va: entry & PFN_MASK for va, entry in live["guest"]["pagemap"].items()
                if entry & PRESENT_IN_RAM and first <= va < first + 32 * 4096}
    assert set(pages) == set(resident) and len(resident) >= 8
    for va, pfn in resident.items():
        assert pages[va]["pa"] >> 12 == p2m[pfn][0], hex(va)
        assert pages[va]["user"]
    assert len(packets(live, "maps_user")) <= MAPS_MAX


def test_p2m_windows_are_dump_p2m_and_dump_m2p(live, p2m, m2p):
    labels = [label for label in live["gdbsx"]["packets"] if label.startswith("p2m_") and label[4:5] != "c"]
    assert len(labels) == 4
    for label in labels:
        out = as_json(output(live, label))
        assert len(out["entries"]) == 64
        for entry in out["entries"]:
            assert entry["mfn"] == p2m[entry["pfn"]][0], entry
            assert entry["m2p"] == int(m2p[entry["mfn"]]), entry
        assert len(packets(live, label)) <= P2M_MAX


def test_p2m_check_on_gdbsx_finds_what_dump_p2m_and_dump_m2p_say(live, p2m, m2p):
    """p2m-check of the guest's own list: its size and its verdict (no duplicate, every frame mapped
    back) are dump-p2m's and dump-m2p's; what gdbsx cannot see is said in the sources."""
    out = as_json(output(live, "p2m_check"))
    assert out["format"] == "gdbsx" and out["pfns"] == live["p2m_entries"] == len(p2m)
    mfns = [row[0] for row in p2m.values()]
    assert len(set(mfns)) == len(mfns)
    assert all(int(m2p[mfn]) == pfn for pfn, (mfn, _, _) in p2m.items())
    assert not out["problems"] and not any(out["findings"].values())
    assert "gdbsx cannot read Xen's M2P" in out["sources"]["m2p"]
    assert len(packets(live, "p2m_check")) <= P2M_MAX


# -- kernel objects ----------------------------------------------------------------------------------

def test_modules_are_proc_modules(live):
    out = as_json(output(live, "modules"))
    got = {module["name"]: (module["regions"][0]["size"], module["regions"][0]["va"]) for module in out["modules"]}
    assert got == live["guest"]["modules"]
    assert len(packets(live, "modules")) <= MODULES_MAX


def test_tasks_are_the_domus_processes(live):
    """Every pid the domU listed, with its comm (task->comm: 15 characters; /proc adds a kworker's
    workqueue after '-'); the only others are the idle task and the shell loop's sleep, started
    after the listing."""
    tasks = {task["pid"]: task["comm"] for task in as_json(output(live, "tasks"))["tasks"]}
    listed = live["guest"]["pids"]
    for pid, comm in listed.items():
        assert pid in tasks, pid
        assert comm.startswith(tasks[pid]) and (len(tasks[pid]) == 15 or comm[len(tasks[pid]):][:1] in ("", "-"))
    extra = {pid: comm for pid, comm in tasks.items() if pid not in listed}
    assert extra.pop(0) == "swapper/0"
    assert set(extra.values()) == {"sleep"} and len(extra) == 1
    # every process's L4 (task cr3) maps the busybox page the sleep's pagemap named: lookup-pte found
    # it upwards (64-bit PV Linux gives each process a second, user-mode L4: the others)
    roots = {task["pid"]: task["cr3"] >> 12 for task in as_json(output(live, "tasks"))["tasks"] if task["mm"]}
    assert live["guest"]["pid"] in roots and len(roots) >= 5
    assert set(roots.values()) <= set(live["user_l4s"]) and len(live["user_l4s"]) == 2 * len(set(roots.values()))
    assert len(packets(live, "tasks")) <= TASKS_MAX


def test_tasks_and_modcheck_equal_the_clis_on_the_dump(live):
    kernel = ["--profile", live["profile"], "--system-map", live["system_map"], "--cr3", hex(live["root_mfn"] << 12)]
    offline = json.loads(cli("tasks", live["files"]["domu.core"], *kernel, "--json").stdout)
    assert as_json(output(live, "tasks"))["tasks"] == offline["tasks"]
    check = as_json(output(live, "modcheck"))
    assert check["ok"] and not check["groups"] and not check["list_errors"]
    no_mm = {task["pid"] for task in offline["tasks"] if not task["mm"] and not task["active_mm"]}
    assert check["modules"] == 2 and {task["pid"] for task in check["skipped_tasks"]} == no_mm
    assert check["tasks"] == len(offline["tasks"]) - len(no_mm) >= 5      # init, the sleeps, swapper
    assert len(packets(live, "modcheck")) <= MODCHECK_MAX


def test_xen_hvmctx_has_no_record_of_a_pv_guest(live):
    """xen-hvmctx reads HVM save records: a PV domU has none (no HVM/PVH guest in this tier)."""
    text = judge(live, "xen-hvmctx.txt")
    assert "can't get record length for dom 1" in text and text.rstrip().endswith("rc=1")


# -- QEMU's gdbstub on the whole host -----------------------------------------------------------------

def test_xen_commands_live_on_qemus_gdbstub_equal_the_host_dump(live):
    """``xen domains``, ``frames --summary``, ``page`` and ``p2m-check --domain`` live on QEMU's
    gdbstub say what the CLI says on the host dump QEMU wrote in that stop (only where CR3 came from
    differs); under packet budgets."""
    from realsys.gdbsxlive import qemu_commands
    for label, command in qemu_commands(live, live["host_dump"]):
        if label == "dump":
            continue
        words = command.split()[1:]
        offline = json.loads(cli(words[0], live["host_dump"], *words[1:]).stdout)
        got = as_json(output(live, label, "qemu"))
        assert got["xen"].pop("sources")["cr3"] == "gdb register ($cr3) (CPU 0)"
        assert offline["xen"].pop("sources")["cr3"] == "QEMU CPU note (CPU 0)"
        assert got == offline, label
        assert len(packets(live, label, "qemu")) <= QEMU_MAX[label], (label, len(packets(live, label, "qemu")))


def test_host_commands_are_xl_lists_and_dump_p2ms(live, p2m):
    """Live on the host: the domains are xl list's; init_top_pgt's frame is the domU's pinned L4
    (dump-p2m: "pinned L4"); p2m-check --domain 1 read the domU's list at dump-p2m's frames."""
    domains = {d["id"]: d for d in as_json(output(live, "domains", "qemu"))["domains"]}
    xl = {}
    for line in judge(live, "xl-list.txt").splitlines()[1:]:
        name, domid, mem = line.split()[:3]
        xl[int(domid)] = (name, int(mem))
    guests = {domid for domid, domain in domains.items() if domain["source"] == "domain_list"}
    assert guests == set(xl) == {0, live["domid"]}
    for domid, (_, mem) in xl.items():
        assert domains[domid]["tot_pages"] >> 8 == mem, domid       # MiB: 256 pages each
    page = as_json(output(live, "page_root", "qemu"))["pages"][0]
    assert p2m[live["root_pfn"]][2] == "pinned L4"
    assert page["mfn"] == live["root_mfn"] and page["owner"] == live["domid"] and page["m2p"] == live["root_pfn"]
    assert page["type"]["type"] == "l4" and "pinned" in page["type"]["flags"]
    check = as_json(output(live, "p2m_check", "qemu"))
    assert check["domain"] == live["domid"] and not check["problems"]


def test_the_tier_stays_small(live):
    """One boot for every test of the tier; its time is reported."""
    timings = live["timings"]
    print({name: round(seconds, 1) for name, seconds in timings.items()})
    assert timings["total"] < TIER_MAX_SECONDS


def test_refs_on_the_host_dump_are_lookup_ptes(live):
    """``xen refs`` (the reverse map) on the host dump, for every frame lookup-pte was asked about
    (the sleep's page, then the tables that map it, level by level): the domU's references are
    exactly the ones lookup-pte printed (it searches that domain's page tables only)."""
    files = {int(name[len("judge/lookup-pte-"):-4], 16): path for name, path in live["files"].items()
             if name.startswith("judge/lookup-pte-")}
    assert live["user_mfn"] in files and len(files) >= 10
    out = json.loads(cli("refs", live["host_dump"], *map(hex, sorted(files)), "--xen-syms", live["xen_syms"],
                         "--limit", 0, "--json").stdout)
    for mfn, path in files.items():
        theirs = sorted(T.lookup_pte(open(path).read()))
        ours = sorted((ref["table_mfn"], ref["slot"], ref["entry"]) for ref in out["references"]
                      if ref["mfn"] == mfn and ref["domain"] == live["domid"])
        assert theirs and ours == theirs, hex(mfn)
