"""Bad input inside real gdb: each case is one gdb error line, gdb keeps running, no traceback."""
import os

from gdbutil import TOP, run_gdb
import elfbytes

CORE = os.path.join(TOP, "cores", "x86_64-4level.core")


def gdb_error(setup, command):
    """Run ``command`` after ``setup`` in gdb; return its error line (and check gdb went on)."""
    r = run_gdb(*setup, command, "echo still-running\\n")
    assert r.returncode == 0, r.output
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    assert "still-running" in r.stdout, r.output
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("xen")]
    assert len(errs) == 1, r.stderr
    return errs[0]


def test_truncated_dump(tmp_path):
    bad = tmp_path / "trunc.core"
    bad.write_bytes(open(CORE, "rb").read()[:40000])
    assert "truncated" in gdb_error([f"set xen dump {bad}"], "xen walk ffff888000001000")


def test_not_a_dump(tmp_path):
    bad = tmp_path / "text.core"
    bad.write_text("not a dump at all\n" * 20)
    assert "not a" in gdb_error([f"set xen dump {bad}"], "xen info")


def test_overlapping_segments(tmp_path):
    bad = tmp_path / "over.core"
    bad.write_bytes(elfbytes.elf_core([(0x1000, b"\1" * 0x2000), (0x2000, b"\2" * 0x2000)]))
    assert "overlap" in gdb_error([f"set xen dump {bad}"], "xen maps")


def test_address_outside_the_dump():
    assert "not in the dump" in gdb_error([f"core-file {CORE}"], "xen read-phys 0xdead00000000 16")


def test_cr3_outside_memory():
    assert "outside the dump" in gdb_error([f"core-file {CORE}"], "xen walk 1000 --cr3 0x7ff000000")


def test_loop_is_reported_not_followed():
    r = run_gdb(f"core-file {CORE}", "xen maps", timeout=60)
    assert r.returncode == 0 and "page table loop" in r.stdout, r.output


def test_bad_arguments():
    assert "cannot evaluate 'nosuchsymbol'" in gdb_error([f"core-file {CORE}"], "xen walk nosuchsymbol")
    assert "invalid choice" in gdb_error([f"core-file {CORE}"], "xen maps --mode 3level")
