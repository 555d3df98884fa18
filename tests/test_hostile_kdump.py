"""Hostile kdump-compressed files: xenscope refuses each in one line, and no process dies.

The corpus (tests/kdumpcorpus.py) corrupts real files (makedumpfile's, QEMU's, and makedumpfile's
re-laid in the i386 layout) field by field: header_version, block_size, bitmap_blocks,
sub_hdr_size, max_mapnr(_64), the note/VMCOREINFO/eraseinfo areas, VMCOREINFO and .note.Xen
contents, page descriptors, truncations, random bytes after the magic, a big-endian header and the
flattened form. Each file goes through:

* Debian's libkdumpfile directly, in a limited child: the record of what the library itself does
  (docs/libkdumpfile-crashes.md); the crashes named there must still happen, or the record is stale;
* the CLI (a child under RLIMIT_AS 2 GiB, RLIMIT_CPU and a 60 s wall clock): one stderr line naming
  the field, exit 2, no traceback, for one file of each class from each base;
* ``xenscope check`` over the whole corpus, real gdb (``set xen dump F`` + ``xen info`` on every
  file in one session) and real crash (``xen check`` in-process): every file refused, the
  debugger session goes on;
* ``check`` with the validator switched off in its children: the files that crash libkdumpfile are
  reported "crashed", the good dumps of the same batch exactly as when checked alone.
"""

import json
import os
import subprocess

import pytest

import elfbytes
import kdumpcorpus
from conftest import CORES
from crashutil import CRASH, run_crash
from gdbutil import run_gdb, venv_python
from hostile import cli, probe_libkdumpfile, run_limited

PAGE = 4096
# corruption class -> what the refusal must name
NAMES = {"header_version": "header_version", "block_size": "block_size",
         "bitmap_blocks": "bitmap_blocks", "sub_hdr_size": "sub_hdr_size",
         "max_mapnr": "max_mapnr", "size_note": "size_note", "offset_note": "offset_note",
         "vmcoreinfo_area": "vmcoreinfo", "eraseinfo": "eraseinfo", "vmcoreinfo": "VMCOREINFO",
         "note_xen": ".note.Xen", "descriptor": "page descriptor", "truncated": "truncated",
         "random": "kdump header", "big_endian": "big-endian", "flattened": "flattened",
         "layout": "misread"}
# What Debian's libkdumpfile 0.5.1-1 does with these files handed to it directly (see
# docs/libkdumpfile-crashes.md): re-run `python tests/hostile.py DIR` when it changes.
LIBKDUMPFILE_VERSION = "0.5.1-1"
LIBKDUMPFILE_CRASHES = {
    "mdf64-block_size-0": "signal SIGSEGV",           # any rejected header: kdump_free()
    "mdf64-header_version-m1": "signal SIGSEGV",
    "mdf64-truncated-100": "signal SIGSEGV",
    "mdf64-size_note-64MiB": "signal SIGBUS",          # note area mapped beyond the end
    "mdf64-vmcoreinfo_area-size-64MiB": "signal SIGBUS",
    "mdf64-vmcoreinfo-key-9MiB": "signal SIGSEGV",     # alloca() of the key
    "mdf64-vmcoreinfo-pagesize-empty": "signal SIGSEGV",
    "mdf64-descriptor-size-64k": "signal SIGBUS",      # compressed page read past the end
    "qemu-descriptor-off-eof": "signal SIGBUS",
    "mdf64-layout-usec-8192": "signal SIGSEGV",        # a sound header read as the 32-bit one
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    work = tmp_path_factory.mktemp("kdump-corpus")
    cases = kdumpcorpus.corpus(str(tmp_path_factory.mktemp("kdump-work")))
    return str(work), {c.name: (c, c.write(str(work))) for c in cases}


def test_corpus_covers_every_class(corpus):
    _, cases = corpus
    classes = {c.klass for c, _ in cases.values()}
    assert classes == set(NAMES), classes ^ set(NAMES)
    assert len(cases) >= 180


def test_libkdumpfile_still_crashes_where_recorded(corpus):
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "python3-libkdumpfile"],
                             capture_output=True, text=True).stdout
    assert version == LIBKDUMPFILE_VERSION, (
        f"python3-libkdumpfile is {version!r}, the record is of {LIBKDUMPFILE_VERSION}: re-run "
        "`python tests/hostile.py DIR` and update docs/libkdumpfile-crashes.md and this table")
    _, cases = corpus
    for name, verdict in LIBKDUMPFILE_CRASHES.items():
        case, path = cases[name]
        got = probe_libkdumpfile(path, case.read, seconds=30)
        assert got.verdict == verdict, (name, got.verdict, got.stdout[-300:])


def expected_name(case):
    """What the refusal of ``case`` names: its class's field (a flattened file that holds a bad
    kdump header: that header's field)."""
    return "block_size" if case.name == "flat-bad-kdump" else NAMES[case.klass]


def _one_per_class(cases):
    seen, out = set(), []
    for case, path in cases.values():
        key = (case.name.split("-", 1)[0], case.klass)
        if key not in seen:
            seen.add(key)
            out.append((case, path))
    return out


def test_cli_refuses_one_of_each_class_in_one_line(corpus):
    _, cases = corpus
    picked = _one_per_class(cases)
    assert len(picked) >= 40
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:         # each run is its own limited child process
        runs = list(pool.map(lambda cp: cli("read-phys", cp[1], hex(cp[0].read), "16"), picked))
    for (case, _), r in zip(picked, runs):
        assert r.one_line, (case.name, r.verdict, r.stderr[-500:], r.stdout[-200:])
        assert expected_name(case) in r.stderr, (case.name, r.stderr)
        assert r.seconds < 30, (case.name, r.seconds)


def test_check_refuses_the_whole_corpus(corpus):
    directory, cases = corpus
    r = cli("check", "--json", "--jobs", "2", "--no-siblings", directory, seconds=120)
    assert r.returncode == 2, r.stderr[-500:]
    reports = json.loads(r.stdout)
    assert len(reports) == len(cases)
    for rep in reports:
        case = cases[os.path.basename(rep["dump"])][0]
        assert rep["kind"] == "unreadable", rep
        (only,) = rep["checks"]
        assert "crashed" not in only["summary"] and "\n" not in only["summary"], only
        assert expected_name(case) in only["summary"], (case.name, only["summary"])


def test_gdb_survives_every_file(corpus):
    _, cases = corpus
    commands = []
    for i, (_, path) in enumerate(cases.values()):
        commands += [f"set xen dump {path}", "xen info", f"echo survived-{i}\\n"]
    r = run_gdb(*commands, timeout=600)
    assert r.returncode == 0, r.output[-2000:]
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output[-2000:]
    for i in range(len(cases)):
        assert f"survived-{i}\n" in r.stdout, (i, r.output[-2000:])
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("xen info: ")]
    assert len(errors) == len(cases), r.stderr[-2000:]


def test_crash_survives_every_file(corpus):
    assert CRASH, "Debian's crash is not installed (./setup.sh installs it)"
    directory, cases = corpus
    r = run_crash(os.path.join(CORES, "mod-x86_64.vmlinux"), os.path.join(CORES, "x86_64-4level.core"),
                  [f"xen check --json --no-siblings {directory}", "eval 6*7"], options=("--minimal",))
    assert r.returncode == 0, r.output[-2000:]
    reports = json.loads(r.outputs[0])
    assert len(reports) == len(cases)
    assert all(rep["kind"] == "unreadable" for rep in reports)
    assert "42" in r.outputs[1], r.output[-1000:]


# -- the good files, and the files kept open ---------------------------------------------------

@pytest.fixture(scope="module")
def good(tmp_path_factory):
    work = tmp_path_factory.mktemp("kdump-good")
    out = {}
    for name, data in kdumpcorpus.good(str(work)).items():
        out[name] = str(work / name)
        with open(out[name], "wb") as f:
            f.write(data)
    return out


def test_good_files_read_like_the_source(good):
    """The makedumpfile bases (64-bit and re-laid i386 layout, plain and flattened) give back the
    ELF input's pages; QEMU's gives what libkdumpfile itself reads from it."""
    from xenstructs.targets import open_dump
    _, mem = elfbytes.makedumpfile_input()
    for name in ("mdf64", "mdf32", "mdf64-flat"):
        t = open_dump(good[name])
        for pa in (0x5000, 0x7000, 0x101000):
            base = 0 if pa < 0x100000 else 0x100000
            assert t.read_phys(pa, PAGE) == mem[base][pa - base:pa - base + PAGE], (name, hex(pa))
        t.close()
    import kdumpfile
    lib = kdumpfile.kdumpfile(good["qemu"])
    t = open_dump(good["qemu"])
    for pa in (0xf0000, 0xfffff000):
        assert t.read_phys(pa, PAGE) == bytes(lib.read(kdumpfile.KDUMP_MACHPHYSADDR, pa, PAGE))
    assert t.facts["machine"] == "x86_64" and t.cpus()[0].regs.get("eip") is not None
    t.close()


def test_incomplete_dump_keeps_the_pages_before_the_cut(good, tmp_path):
    """makedumpfile marks a dump it could not finish (DUMP_DH_COMPRESSED_INCOMPLETE): the pages
    whose data is there are read, the rest are not in the dump; unmarked, the same file is refused."""
    from xenstructs.errors import BadDump, NotInDump
    from xenstructs.targets import open_dump
    base = kdumpcorpus.Base("mdf64", open(good["mdf64"], "rb").read(), 64)
    cut = base.data[:len(base.data) - 3000]
    marked = kdumpcorpus.Base("mdf64", cut, 64).with_field("status", base.fields["status"] | 0x8)
    (tmp_path / "cut").write_bytes(cut)
    (tmp_path / "marked").write_bytes(marked)
    with pytest.raises(BadDump, match="truncated"):
        open_dump(str(tmp_path / "cut"))
    _, mem = elfbytes.makedumpfile_input()
    t = open_dump(str(tmp_path / "marked"))
    assert t.facts["incomplete"]
    assert t.read_phys(0x5000, PAGE) == mem[0][0x5000:0x6000]
    last_pfn = int(base.dumped_pfns()[-1])
    with pytest.raises(NotInDump, match="incomplete"):
        t.read_phys(last_pfn * PAGE, PAGE)
    assert t.phys_ranges()[-1][1] <= last_pfn * PAGE


# -- check keeps libkdumpfile out of the process that must survive ------------------------------

def test_check_batch_with_crashing_dumps(corpus, good, tmp_path, monkeypatch):
    """Validation off in the children (monkeypatched before they fork): the dumps that crash
    libkdumpfile are reported "crashed", exit 2; the good dumps of the batch as when alone."""
    import xenstructs.targets.kdump as kdump_target
    from xenstructs.check import check_many, exit_status
    directory, cases = corpus
    batch = tmp_path / "batch"
    batch.mkdir()
    goods = {"a-4level.core": os.path.join(CORES, "x86_64-4level.core"),
             "b-xen.core": os.path.join(CORES, "xen-4.6-host.core"),
             "c-mdf64.kdump": good["mdf64"]}
    crashing = {"d-segv": cases["mdf64-vmcoreinfo-key-9MiB"][1],
                "e-bus": cases["mdf64-size_note-64MiB"][1]}
    for name, src in {**goods, **crashing}.items():
        os.symlink(src, batch / name)
    for ext in (".map", ".log"):                        # the Xen host dump's symbols and log
        os.symlink(os.path.join(CORES, "xen-4.6-host" + ext), batch / ("b-xen" + ext))
    alone = {os.path.basename(r.dump): r.as_dict()
             for r in check_many([str(batch / n) for n in goods], jobs=1, isolate=False)}

    real = kdump_target.validate_kdump

    def permissive(fd, path):
        try:
            return real(fd, path)
        except Exception:
            from xenstructs.targets.kdump_validate import KdumpLayout
            return KdumpLayout(64, None, None, 0, 0, 0, 0)
    monkeypatch.setattr(kdump_target, "validate_kdump", permissive)
    for jobs in (1, 2):
        reports = check_many([str(batch)], jobs=jobs)
        got = {os.path.basename(r.dump): r for r in reports}
        assert exit_status(reports) == 2
        for name in goods:
            assert got[name].as_dict() == alone[name], name
        assert got["d-segv"].checks[0].summary == "the kdump library crashed on it (signal 11, SIGSEGV)"
        assert got["e-bus"].checks[0].summary == "the kdump library crashed on it (signal 7, SIGBUS)"
        assert all(got[n].kind == "unreadable" for n in crashing)


def test_check_cli_with_one_job_survives_a_crash(corpus, tmp_path):
    """The CLI's own children: a dump that kills its child (a segfault raised inside it, as
    libkdumpfile's would be) is one unreadable report; the other dump is checked; exit 2."""
    script = ("import os, signal, sys, xenstructs.targets.kdump as k\n"
              "def boom(fd, path):\n"
              "    os.kill(os.getpid(), signal.SIGSEGV)\n"
              "k.validate_kdump = boom\n"
              "from xenstructs.cli import main\n"
              "sys.argv[0] = 'xenscope'\n"
              "sys.exit(main())\n")
    _, cases = corpus
    r = run_limited([venv_python(), "-c", script, "check", "--jobs", "1", "--json",
                     os.path.join(CORES, "x86_64-4level.core"), cases["mdf64-block_size-0"][1]])
    assert r.returncode == 2, (r.verdict, r.stderr[-800:])
    a, b = json.loads(r.stdout)
    assert a["kind"] == "linux" and b["kind"] == "unreadable"
    assert b["checks"][0]["summary"] == "the kdump library crashed on it (signal 11, SIGSEGV)"
