"""xen stack: synthetic stacks on a MemoryTarget (symbolization, bounds, frames) and the CLI on a core."""

import io
import json
import os
import struct

import pytest

from xenstructs.cli import run as cli_run
from xenstructs.errors import XenscopeError
from xenstructs.paging import Paging
from xenstructs.stack import TextSymbols, scan_stack
from xenstructs.target import CpuState, MemoryTarget

from conftest import CORES

STACK_VA = 0xFFFFC90000010000          # a 16 KiB-aligned stack block: pages at pa 0x10000..0x13000
STACK_PA = 0x10000
P = 0x3                                 # present | writable
SYSTEM_MAP = """\
ffffffff81000000 T _stext
ffffffff81001000 T do_syscall_64
ffffffff81001200 t clear_user
ffffffff81001300 T schedule
ffffffff81002000 D some_data
ffffffff81003000 T _etext
"""


def ptable(entries):
    b = bytearray(4096)
    for i, v in entries.items():
        struct.pack_into("<Q", b, 8 * i, v)
    return bytes(b)


def target(words, sp_off=0, cpus=True):
    """4-level tables mapping STACK_VA..+16K to STACK_PA; ``words`` written from STACK_VA + sp_off."""
    pml4, pdpt, pd, pt = 0x1000, 0x2000, 0x3000, 0x4000
    va = STACK_VA
    idx = [(va >> s) & 0x1FF for s in (39, 30, 21, 12)]
    pages = {pml4: ptable({idx[0]: pdpt | P}), pdpt: ptable({idx[1]: pd | P}),
             pd: ptable({idx[2]: pt | P}), pt: ptable({idx[3] + k: (STACK_PA + 0x1000 * k) | P for k in range(5)})}
    raw = bytearray(0x5000)   # a 5th page mapped past the block: the scan must not read it
    struct.pack_into(f"<{len(words)}Q", raw, sp_off, *words)
    for k in range(5):
        pages[STACK_PA + 0x1000 * k] = bytes(raw[0x1000 * k:0x1000 * (k + 1)])
    cpu = CpuState(0, {"cr3": pml4, "cr0": 0x80000011, "cr4": 0x20, "efer": 0xD00,
                       "rsp": STACK_VA + sp_off, "rip": 0xFFFFFFFF81001305, "cs": 0x10},
                   {"rsp": "test"})
    t = MemoryTarget(pages, [cpu] if cpus else [])
    t.facts["machine"] = "x86_64"
    return t, Paging("4level", pml4)


@pytest.fixture
def smap(tmp_path):
    p = tmp_path / "System.map"
    p.write_text(SYSTEM_MAP)
    return str(p)


def test_symbolization_exact(smap):
    s = TextSymbols.from_files([smap])
    assert s.name(0xFFFFFFFF81001243) == "clear_user+0x43/0x100"
    assert s.name(0xFFFFFFFF81001000) == "do_syscall_64+0x0/0x200"
    assert s.name(0xFFFFFFFF81003000) is None            # _etext bounds the text
    assert s.name(0xFFFFFFFF80FFFFFF) is None
    assert "some_data" not in s.names and s.name(0xFFFFFFFF81002010) is None    # D: not text, ends schedule


def test_scan_finds_return_addresses(smap):
    words = [0x1234, 0xFFFFFFFF81001243, 0xFFFF888000001000, 0xFFFFFFFF81001010, 0xFFFFFFFF81002010]
    t, pg = target(words, sp_off=0x100)
    r = scan_stack(t, pg, STACK_VA + 0x100, "x86_64", TextSymbols.from_files([smap]))
    got = [(e["va"] - STACK_VA, e["symbol"]) for e in r["entries"]]
    assert got == [(0x108, "clear_user+0x43/0x100"), (0x118, "do_syscall_64+0x10/0x200")]
    assert r["stack_end"] == STACK_VA + 0x4000 and r["words"] == (0x4000 - 0x100) // 8


def test_scan_is_bounded(smap):
    t, pg = target([0xFFFFFFFF81001243] * 8, sp_off=0x3FF0)
    r = scan_stack(t, pg, STACK_VA + 0x3FF0, "x86_64", TextSymbols.from_files([smap]))
    assert r["words"] == 2 and r["stack_end"] == STACK_VA + 0x4000      # stops at the block end
    t, pg = target([0xFFFFFFFF81001243] * 8, sp_off=0x100)
    r = scan_stack(t, pg, STACK_VA + 0x100, "x86_64", TextSymbols.from_files([smap]), depth=3)
    assert r["words"] == 3 and len(r["entries"]) == 3


def test_bad_sp_is_one_clear_error():
    t, pg = target([])
    with pytest.raises(XenscopeError) as e:
        scan_stack(t, pg, 0xFFFFC90000100000, "x86_64")
    assert "stack pointer 0xffffc90000100000 is not mapped" in str(e.value)
    assert "\n" not in str(e.value)


def test_pt_regs_frame(smap):
    # ... orig_ax, rip, cs, rflags, rsp, ss
    words = [0xFFFFFFFFFFFFFFFF, 0xFFFFFFFF81001243, 0x10, 0x246, STACK_VA + 0x3000, 0x18]
    t, pg = target(words, sp_off=0x200)
    r = scan_stack(t, pg, STACK_VA + 0x200, "x86_64", TextSymbols.from_files([smap]))
    (f,) = r["frames"]
    assert f["va"] == STACK_VA + 0x208 and f["pt_regs_va"] == STACK_VA + 0x208 - 128
    assert f["rip"] == 0xFFFFFFFF81001243 and f["cs"] == 0x10 and f["mode"] == "kernel"
    assert f["xen_pv"] is None


def test_user_frame_and_noise_rejected():
    words = [0x401000, 0x33, 0x202, 0x7FFFFFFFE000, 0x2B, 0, 0x10, 0x246, 0x8000000000000000, 0x18]
    t, pg = target(words, sp_off=0x200)
    r = scan_stack(t, pg, STACK_VA + 0x200, "x86_64")
    assert [(f["va"] - STACK_VA, f["mode"]) for f in r["frames"]] == [(0x200, "user")]


def test_xen_pv_rcx_r11_frame(smap):
    # Xen create_bounce_frame for a 64-bit PV guest: rcx, r11, rip, cs (upcall mask in bits 32-39), rflags, rsp, ss
    words = [0xAAAA, 0x246, 0xFFFFFFFF81001243, (1 << 32) | 0xE033, 0x246, STACK_VA + 0x3000, 0xE02B]
    t, pg = target(words, sp_off=0x300)
    r = scan_stack(t, pg, STACK_VA + 0x300, "x86_64", TextSymbols.from_files([smap]))
    (f,) = r["frames"]
    assert f["va"] == STACK_VA + 0x310 and f["cs"] == 0xE033
    pv = f["xen_pv"]
    assert pv["rcx"] == 0xAAAA and pv["rcx_va"] == STACK_VA + 0x300
    assert pv["r11"] == 0x246 and pv["r11_va"] == STACK_VA + 0x308 and pv["upcall_mask"] == 1


def test_command_text_and_json(smap, monkeypatch):
    from xenstructs.commands import COMMANDS
    cmd = COMMANDS["stack"]
    words = [0xAAAA, 0x246, 0xFFFFFFFF81001243, 0xE033, 0x246, STACK_VA + 0x3000, 0xE02B]
    t, _ = target(words, sp_off=0x300)
    args = cmd.parser("xen stack").parse_args(["--symbols", smap])
    res = cmd.run(t, args)
    text = cmd.render(res, args)
    assert text.splitlines()[0].endswith("schedule+0x5/0xd00")
    assert "clear_user+0x43/0x100" in text and "Xen 64-bit PV bounce frame: rcx 0xaaaa" in text
    json.dumps(res)
    assert all(isinstance(e["va"], int) for e in res["entries"])


def _cli(argv):
    out = io.StringIO()
    return cli_run(argv, out=out), out.getvalue()


def test_cli_on_core_without_symbols():
    core = os.path.join(CORES, "x86_64-4level.core")
    rc, out = _cli(["stack", core])
    assert rc == 0 and out.startswith("ip  0xffffffff81001234") and "no --symbols" in out
    rc, out = _cli(["stack", core, "--json", "--depth", "4"])
    r = json.loads(out)
    assert rc == 0 and r["words"] == 4 and r["sp"] == 0xFFFFC90000003F00 and r["ip_symbol"] is None


def test_cli_bad_sp_exits_2(capsys):
    core = os.path.join(CORES, "x86_64-4level.core")
    rc, _ = _cli(["stack", core, "--sp", "0xffff000000000000"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "stack pointer" in err


# Real shapes from Debian 6.1's oopses (tests/realsys/test_linux_faults.py checks them on the dumps):
# a module's /proc/kallsyms lines, a kernel frame whose rip is a user page (SMEP), a 5-level stack.
KALLSYMS_MODULE = """\
ffffffffc021d000 t faultmod_write\t[faultmod]
ffffffffc021d0f0 t report_kernel\t[faultmod]
ffffffffc021d420 t faultmod_smep\t[faultmod]
ffffffffc021d490 t faultmod_smap\t[faultmod]
ffffffffc021f000 r CSWTCH.93\t[faultmod]
"""


def test_module_symbols_as_the_kernel_prints_them(smap, tmp_path):
    ksyms = tmp_path / "faultmod.kallsyms"
    ksyms.write_text(KALLSYMS_MODULE)
    s = TextSymbols.from_files([smap, str(ksyms)])
    assert s.name(0xFFFFFFFFC021D09F) == "faultmod_write+0x9f/0xf0 [faultmod]"
    assert s.name(0xFFFFFFFFC021D4CC) == "faultmod_smap+0x3c/0x1b70 [faultmod]"    # up to CSWTCH.93
    assert s.name(0xFFFFFFFFC021F008) is None and s.name(0xFFFFFFFFC0220000) is None
    assert s.name(0xFFFFFFFF81001243) == "clear_user+0x43/0x100"                  # the kernel's still
    # a return address at a function's first byte belongs to the call before it (%pB)
    assert s.backtrace_name(0xFFFFFFFFC021D420) == "report_kernel+0x330/0x330 [faultmod]"
    assert s.backtrace_name(0xFFFFFFFFC021D09F) == "faultmod_write+0x9f/0xf0 [faultmod]"


def test_kernel_frame_with_a_user_rip_and_five_level_stacks():
    from xenstructs.stack import _frame64
    # SMEP: "RIP: 0010:0x7fc47d7f9000", "RSP: 0018:ffffc9000059bbf0 EFLAGS: 00000246"
    words = [(1 << 64) - 1, 0x7FC47D7F9000, 0x10, 0x246, 0xFFFFC9000059BBF0, 0x18]
    f = _frame64(words, 1, 0xFFFFC9000059BBC0, "4level")
    assert f["rip"] == 0x7FC47D7F9000 and f["mode"] == "kernel" and f["orig_ax"] == (1 << 64) - 1
    # 5-level: "RSP: 0018:ffa0000000013b60" is canonical only with 57-bit addresses
    words = [(1 << 64) - 1, 0xFFFFFFFFC02184CC, 0x10, 0x246, 0xFFA0000000013B60, 0x18]
    assert _frame64(words, 1, 0xFFA0000000013B00, "5level")["rsp"] == 0xFFA0000000013B60
    assert _frame64(words, 1, 0xFFA0000000013B00, "4level") is None
    words[4] = 0x7FFE508C9268                      # the kernel never runs on a user stack
    assert _frame64(words, 1, 0xFFA0000000013B00, "5level") is None


def test_kernel_exception_frame_with_its_registers(smap):
    from xenstructs.stack import PT_REGS64, kernel_exception_frame
    regs = dict.fromkeys(PT_REGS64, 0)
    regs.update(rbx=0x7F49D5E28000, orig_ax=(1 << 64) - 1, rip=0xFFFFFFFF81001243, cs=0x10, rflags=0x246,
                rsp=STACK_VA + 0x3000, ss=0x18)
    irq = [0xAAAA] * 15 + [(1 << 64) - 0x21, 0xFFFFFFFF81001300, 0x10, 0x246, STACK_VA + 0x3000, 0x18]
    words = irq + [regs[name] for name in PT_REGS64]      # an interrupt below, the exception above
    t, pg = target(words, sp_off=0x200)
    f = kernel_exception_frame(t, pg, STACK_VA + 0x200)
    assert f["pt_regs_va"] == STACK_VA + 0x200 + 8 * len(irq) and f["registers"] == regs
