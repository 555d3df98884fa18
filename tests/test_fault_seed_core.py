"""The SMAP seed, rebuilt as a synthetic 32-bit PAE PV guest (an xl dump-core file written by the
builder's own writer, cores/builder/xccore_writer.py, independent of xenstructs): vCPU 0 stopped in
clear_user (rep stosb) at c0617233 writing 0x805f3a0, whose PTE 0x800000007fffe067 allows a
user write; the guest's CR4 view has no SMAP; Xen's real CR4 does.

Xen 4.5.0 leaves SMAP on while 32-bit PV code runs: an SMAP violation at CPL 1 with AC=0. Xen 4.6.3
clears it: xenscope must say so and send the reader elsewhere."""
import json
import os
import struct
import subprocess
import sys

import pytest

from conftest import TOP

sys.path.insert(0, TOP)
from cores.builder.xccore_writer import write_xc_core  # noqa: E402

P, RW, US, A, D = 1, 2, 4, 0x20, 0x40
NX = 1 << 63
PAGE = 4096
# pfn -> mfn (machine frames; the L3 is above 4 GiB, so the rotated CR3 encoding matters)
L3, L2_USER, L2_KERN, L1_USER, L1_KERN, TEXT = range(6)
MFN = {L3: 0x123456, L2_USER: 0x2001, L2_KERN: 0x2002, L1_USER: 0x2003, L1_KERN: 0x2004, TEXT: 0x2005}
CR2, IP, PTE = 0x805F3A0, 0xC0617233, 0x800000007FFFE067


def table(entries):
    buf = bytearray(PAGE)
    for i, v in entries.items():
        struct.pack_into("<Q", buf, i * 8, v)
    return bytes(buf)


@pytest.fixture(scope="module")
def seed_core(tmp_path_factory):
    pages = {
        # PAE PDPT (Xen forces RW|US on a 32-bit PV guest's L3 entries: adjust_guest_l3e)
        L3: table({0: MFN[L2_USER] << 12 | P | RW | US, 3: MFN[L2_KERN] << 12 | P | RW | US}),
        L2_USER: table({(CR2 >> 21) & 511: MFN[L1_USER] << 12 | P | RW | US | A}),
        L2_KERN: table({(IP >> 21) & 511: MFN[L1_KERN] << 12 | P | RW | A}),
        L1_USER: table({(CR2 >> 12) & 511: PTE}),
        L1_KERN: table({(IP >> 12) & 511: MFN[TEXT] << 12 | P | A}),
    }
    text = bytearray(PAGE)
    text[IP & 0xFFF:(IP & 0xFFF) + 2] = b"\xf3\xaa"             # rep stosb (clear_user's store)
    pages[TEXT] = bytes(text)
    l3 = MFN[L3]
    cr3 = ((l3 << 12) | (l3 >> 20)) & 0xFFFFFFFF                 # xen_pfn_to_cr3 for 32-bit guests
    vcpu = {"eip": IP, "cs": 0xE019, "eflags": 0x246, "esp": 0xC1234F00, "ss": 0xE021, "edi": CR2,
            "ecx": 0xC60, "flags": 1 << 2,
            "ctrlreg": [0x8005003B, 0, CR2, cr3, 0x6F0, 0, 0, 0]}  # guest view of CR4: no SMAP
    path = str(tmp_path_factory.mktemp("seed") / "rhel6-pv32.xc")
    write_xc_core(path, guest_width=4, machine="i386",
                  pages=[(pfn, MFN[pfn], pages[pfn]) for pfn in sorted(pages)], vcpus=[vcpu],
                  shared_info=bytes(PAGE), xen_version=(4, 5, ".0"))
    return path


def fault(core, *extra):
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", "fault", core, "--error", "0x3",
                        "--cr4", "0x3406f0", *extra, "--json"], capture_output=True, text=True, cwd=TOP)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def rules(res):
    return {r["rule"]: r["status"] for r in res["rules"]}


def test_seed_on_xen_450_is_an_smap_violation(seed_core):
    res = fault(seed_core, "--xen", "4.5.0")
    assert rules(res)["smap"] == "fired"
    assert all(st == "passed" for rule, st in rules(res).items() if rule != "smap"), rules(res)
    assert res["cpl"] == 1 and "SMAP" in res["cause"] and "AC=0" in res["cause"]
    text = json.dumps(res)
    assert "rep stosb" in text                                    # the faulting store, disassembled


def test_seed_on_xen_463_points_elsewhere(seed_core):
    res = fault(seed_core, "--xen", "4.6.3")
    assert rules(res)["smap"] == "passed"
    assert "look elsewhere" in res["cause"]
