"""The fuzzing tier: every parser and reader meets hostile input (hypothesis, derandomized).

The contract (:mod:`fuzzutil`): a result or a XenscopeError (an argparse error for argument
types), within a time and a memory bound — never another exception, a signal, a hang or memory
that grows with the input's claims. Dumps are the bundled cores with bytes flipped (in the headers
and notes, or anywhere) and cut short; every user-facing command is then run on them through the
CLI's own entry point (``xenstructs.cli.run``), whose only failure mode must be one line and exit 2.
"""
import io
import os
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CORES
from fuzzutil import contract

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=25,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# per kind of dump: (bundled core, the commands run on each mutated copy)
KINDS = {
    "elf-4level": ("x86_64-4level.core", [["info"], ["walk", "@", "ffff888000001000"], ["maps", "@", "--limit", "40"],
                                          ["vtop", "@", "ffffffff81000000", "0"], ["read-phys", "@", "0", "64"],
                                          ["stack", "@"], ["fault", "@", "--error", "2"]]),
    "elf-i386": ("i386-pae.core", [["info"], ["maps", "@", "--limit", "40"], ["walk", "@", "c0001000"]]),
    "xen-host": ("xen-4.17-host.core", [["info"], ["frames", "@", "--summary"], ["domains"], ["page", "@", "1010"],
                                        ["pt-audit"], ["refs", "@", "1010"], ["m2p", "@", "1010"]]),
    "xl-dump-core": ("pv-x86_64.xc", [["info"], ["walk", "@", "ffff880000001000"], ["p2m-check"], ["p2m", "@", "1"],
                                      ["m2p", "@", "1000"], ["maps", "@", "--limit", "40"]]),
    "kernel-objects": ("mod-x86_64.core", [["tasks", "@", "--vmlinux", os.path.join(CORES, "mod-x86_64.vmlinux")],
                                           ["modcheck", "@", "--vmlinux", os.path.join(CORES, "mod-x86_64.vmlinux")]]),
}


def _argv(cmd, path):
    return [cmd[0], path] + cmd[2:] if len(cmd) > 1 and cmd[1] == "@" else [cmd[0], path] + cmd[1:]


def _run_commands(path, commands):
    """Every command through the CLI: exit 0/1, or 2 with one line; never an internal error."""
    from xenstructs.cli import run
    for cmd in commands:
        err = io.StringIO()
        old = sys.stderr
        sys.stderr = err
        try:
            status = run(_argv(cmd, path), out=io.StringIO())
        finally:
            sys.stderr = old
        text = err.getvalue()
        if status not in (0, 1, 2) or "internal error" in text or len(text.splitlines()) > 1:
            raise RuntimeError(f"{cmd}: exit {status}: {text[:2000]}")


@st.composite
def mutations(draw, size):
    """``(cut, [(offset, byte)...])``: where the copy ends, and the bytes replaced before that."""
    cut = draw(st.one_of(st.just(size), st.integers(0, size)))
    region = draw(st.sampled_from(["headers", "anywhere"]))
    top = max(1, min(cut, 8192) if region == "headers" else cut)
    edits = draw(st.lists(st.tuples(st.integers(0, top - 1), st.integers(0, 255)), min_size=1, max_size=24))
    return cut, edits


def _mutated(core, cut, edits):
    data = bytearray(open(os.path.join(CORES, core), "rb").read()[:cut])
    for offset, value in edits:
        if offset < len(data):
            data[offset] = value
    fd, path = tempfile.mkstemp(prefix="fuzz-", suffix=os.path.splitext(core)[1])
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_mutated_dumps_keep_the_contract(kind):
    core, commands = KINDS[kind]
    size = os.path.getsize(os.path.join(CORES, core))

    @FUZZ
    @given(mutations(size))
    def check(mutation):
        path = _mutated(core, *mutation)
        try:
            contract(lambda: _run_commands(path, commands), seconds=60)
        finally:
            os.unlink(path)
    check()


# ---------------------------------------------------------------------------------------------
# Parsers on raw bytes and text
# ---------------------------------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=4096))
def test_vmcoreinfo_parser(data):
    def parse():
        from xenstructs.formats.vmcoreinfo import parse_vmcoreinfo
        info = parse_vmcoreinfo(data)
        for name in ("OSRELEASE", "PAGESIZE", "KERNELOFFSET"):
            info.get(name)
        info.symbol("init_top_pgt")
        info.number("phys_base")
    contract(parse)


@FUZZ
@given(st.binary(max_size=2048))
def test_elf_note_parser(data):
    def parse():
        from xenstructs.formats.elf import iter_notes
        list(iter_notes(data))
    contract(parse)


@FUZZ
@given(st.text(max_size=60))
def test_number_parsers(text):
    def parse():
        from xenstructs.commands import address, number, va_range
        from xenstructs.xen.release import parse_version
        for fn in (address, number, va_range, parse_version):
            try:
                fn(text)
            except Exception as e:            # the argparse/Xenscope errors are the contract
                if type(e).__name__ not in ("ArgumentTypeError", "XenscopeError"):
                    raise
    contract(parse)


LOG_LINES = [line for name in sorted(os.listdir(os.path.join(TOP, "tests", "data", "xenlogs")))
             for line in open(os.path.join(TOP, "tests", "data", "xenlogs", name), errors="replace")][:400]


@st.composite
def log_lines(draw):
    """Real console lines with hex numbers, words and bytes replaced, cut, or repeated."""
    lines = draw(st.lists(st.sampled_from(LOG_LINES), min_size=1, max_size=40))
    out = []
    for line in lines:
        how = draw(st.sampled_from(["keep", "cut", "number", "junk", "repeat"]))
        if how == "cut":
            line = line[:draw(st.integers(0, len(line)))]
        elif how == "number":
            line = line.replace(draw(st.sampled_from(["0", "1", "2", "f"])),
                                draw(st.sampled_from(["ffffffffffffffff", "-1", "0x", "99999999999999999999"])))
        elif how == "junk":
            line = line + draw(st.text(max_size=30))
        elif how == "repeat":
            out += [line] * draw(st.integers(1, 50))
        out.append(line)
    return out


@FUZZ
@given(log_lines())
def test_console_annotator_and_fault_reader(lines):
    def parse():
        from xenstructs.xen.console import annotate_lines, parse_log
        annotate_lines(lines)
        parse_log(lines)
    contract(parse)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 511), st.integers(0, 7), st.integers(0, 0xFFF)),
                max_size=64), st.sampled_from(["2level", "pae", "4level", "5level"]))
def test_page_table_enumeration_on_hostile_tables(entries, mode):
    """Eight table pages whose entries point at each other at random (loops, shared tables,
    reserved bits, large pages): enumeration and walks stay bounded."""
    def enumerate_them():
        from xenstructs.paging import Paging, enumerate_mappings, walk
        from xenstructs.target import MemoryTarget
        pages = {0x1000 * (k + 1): bytearray(4096) for k in range(8)}
        width = 4 if mode == "2level" else 8
        for table, slot, target, flags in entries:
            value = (0x1000 * (target + 1)) | flags | 1
            pages[0x1000 * (table + 1)][slot * width % 4096:slot * width % 4096 + width] = \
                value.to_bytes(8, "little")[:width]
        memory = MemoryTarget({base: bytes(page) for base, page in pages.items()})
        paging = Paging(mode, 0x1000)
        enumerate_mappings(memory, paging)
        walk(memory, paging, 0xFFFFFFFF81000000 if mode in ("4level", "5level") else 0xC0001000)
    contract(enumerate_them, seconds=30)


@FUZZ
@given(st.lists(st.integers(0, (1 << 64) - 1), max_size=256), st.lists(st.integers(0, (1 << 64) - 1), max_size=256),
       st.integers(0, 1 << 40))
def test_p2m_check_on_hostile_tables(p2m, m2p, max_mfn):
    def check():
        import numpy as np
        from xenstructs.xen.p2m import check
        check(np.asarray(p2m, np.uint64), np.asarray(m2p, np.uint64), max_mfn).to_json()
    contract(check)
