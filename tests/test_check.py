"""xenscope check: batch checks over the bundled cores (manifests under cores/ say what is wrong)."""

import glob
import json
import os
import subprocess
import sys

import pytest

from xenstructs.check import Options, check_dump, check_many, exit_status

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORES = os.path.join(TOP, "cores")
DUMPS = sorted(glob.glob(os.path.join(CORES, "*.core")) + glob.glob(os.path.join(CORES, "*.xc")))


def cli(*argv):
    return subprocess.run([sys.executable, "-m", "xenstructs.cli", "check", *map(str, argv)],
                          capture_output=True, text=True, cwd=TOP)


def by_name(rep):
    return {c.name: c for c in rep.checks}


@pytest.fixture(scope="module")
def reports():
    return check_many(DUMPS, jobs=1)


def test_every_core_checked(reports):
    assert [r.dump for r in reports] == DUMPS
    for r in reports:
        assert r.readable
        assert [c.name for c in r.checks] == ["paging", "xen-frames", "p2m", "modcheck", "faults", "console"]
        assert all(c.status in ("ok", "findings", "error", "n.a.") for c in r.checks)


def test_paging_problems_match_manifests(reports):
    for r in reports:
        if not r.dump.endswith(".core"):
            continue
        man = json.load(open(r.dump[:-len(".core")] + ".json"))
        if "problems" not in man:
            continue
        c = by_name(r)["paging"]
        want = sorted((p["reason"], p["level"], p["va_start"], p["va_end"]) for p in man["problems"])
        got = sorted((f["kind"], f["level"], f["va_start"], f["va_end"]) for f in c.findings)
        assert got == want, r.dump
        assert c.status == ("findings" if want else "ok")


def test_x86_64_4level(reports):
    c = by_name(next(r for r in reports if r.dump.endswith("x86_64-4level.core")))["paging"]
    assert {f["kind"] for f in c.findings} == {"reserved", "loop", "not-in-dump"}


def test_xen_hosts_pt_audit(reports):
    for r in reports:
        if "xen-" not in os.path.basename(r.dump):
            continue
        assert r.kind == "xen-host"
        c = by_name(r)["xen-frames"]
        assert c.status == "findings"
        kinds = {f["kind"] for f in c.findings}
        assert {"writable-as-table", "linear-rw", "table-mapped-rw", "foreign-reference"} <= kinds
        # no --kernel-syms: dom0's P2M found by its shared_info, its injected faults found (d1 publishes none)
        p2m, man = by_name(r)["p2m"], json.load(open(r.dump[:-len(".core")] + ".json"))
        want = sorted((f["class"], f["pfn"]) for f in man["p2m"]["faults"] if f["class"] != "identity")
        assert p2m.status == "findings" and "every PV domain's P2M (d0) from shared_info" in p2m.summary
        assert sorted((f["kind"], f["pfn"]) for f in p2m.findings) == want, p2m.findings
    f = by_name(next(r for r in reports if r.dump.endswith("xen-4.6-host.core")))["faults"]
    assert f.status == "findings" and "0xffff82e000080000" in f.summary       # xen-4.6-host.log
    f = by_name(next(r for r in reports if r.dump.endswith("xen-4.17-host.core")))["faults"]
    assert f.status == "n.a."


def test_pv_p2m_holes(reports):
    for r in reports:
        if not r.dump.endswith(".xc"):
            continue
        assert r.kind == "xl-dump-core"
        c = by_name(r)["p2m"]
        assert c.status == "findings" and c.findings
        assert all(f["kind"] == "invalid-in-range" for f in c.findings)
        assert by_name(r)["xen-frames"].status == "n.a."


def test_not_applicable_without_options(reports):
    for r in reports:
        assert by_name(r)["modcheck"].status == "n.a."
        if r.kind not in ("xen-host", "xl-dump-core"):
            assert by_name(r)["xen-frames"].status == "n.a." and by_name(r)["p2m"].status == "n.a."


def test_parallel_equals_sequential(reports):
    par = check_many(DUMPS, jobs=4)
    assert [r.as_dict() for r in par] == [r.as_dict() for r in reports]


def _bad_files(tmp_path):
    good = os.path.join(CORES, "x86_64-4level.core")
    trunc = tmp_path / "truncated.core"
    trunc.write_bytes(open(good, "rb").read()[:200])
    text = tmp_path / "notes.txt"
    text.write_text("not a dump\n")
    return trunc, text


def test_bad_dumps_exit_2_others_reported(tmp_path):
    trunc, text = _bad_files(tmp_path)
    good = [os.path.join(CORES, "x86_64-4level.core"), os.path.join(CORES, "pv-x86_64.xc")]
    r = cli(good[0], trunc, text, good[1], "--json", "--jobs", "2")
    assert r.returncode == 2, r.stderr
    data = json.loads(r.stdout)
    assert [d["dump"] for d in data] == [good[0], str(trunc), str(text), good[1]]
    assert data[2]["kind"] == "unreadable" and data[2]["checks"][0]["status"] == "error"
    assert data[1]["kind"] == "unreadable" or any(c["status"] == "error" for c in data[1]["checks"])
    assert any(c["status"] == "findings" for c in data[0]["checks"])
    assert any(c["status"] == "findings" for c in data[3]["checks"])
    assert r.stderr == ""                     # piped: no progress bar


def test_directory_and_exit_statuses(tmp_path):
    trunc, text = _bad_files(tmp_path)
    # a directory: files that do not start like a dump (notes, logs, maps) are passed over;
    # a dump that is broken is reported unreadable and makes the exit status 2
    rep = check_many([tmp_path], jobs=1)
    assert [os.path.basename(r.dump) for r in rep] == ["truncated.core"]
    assert exit_status(rep) == 2
    # named explicitly, the text file is reported too
    rep = check_many([trunc, text], jobs=1)
    assert sorted(os.path.basename(r.dump) for r in rep) == ["notes.txt", "truncated.core"]
    assert all(r.kind == "unreadable" for r in rep)
    assert cli(os.path.join(CORES, "x86_64-4level.core")).returncode == 1
    assert cli(os.path.join(CORES, "x86_64-5level.core")).returncode == 0


def test_json_schema():
    r = cli(os.path.join(CORES, "xen-4.17-host.core"), os.path.join(CORES, "pv-i386-pae.xc"), "--json")
    assert r.returncode == 1
    for d in json.loads(r.stdout):
        assert set(d) == {"dump", "kind", "checks"}
        for c in d["checks"]:
            assert set(c) == {"name", "status", "summary", "findings"}
            for f in c["findings"]:
                assert "kind" in f and "text" in f
        json.dumps(d)


def test_table_output_and_no_progress_when_piped():
    r = cli(os.path.join(CORES, "xen-4.6-host.core"), "--jobs", "1")
    assert r.returncode == 1 and r.stderr == ""
    assert "xen-frames" in r.stdout and "details:" in r.stdout and "linear-rw" in r.stdout


def test_check_error_is_contained(monkeypatch):
    import xenstructs.check as C

    def boom(*a):
        raise RuntimeError("injected")
    monkeypatch.setattr(C, "_check_paging", boom)
    rep = check_dump(os.path.join(CORES, "pv-x86_64.xc"))
    c = by_name(rep)
    assert c["paging"].status == "error" and "injected" in c["paging"].summary
    assert c["p2m"].status == "findings"


def test_modcheck_with_vmlinux():
    rep = check_dump(os.path.join(CORES, "mod-x86_64.core"),
                     Options(vmlinux=os.path.join(CORES, "mod-x86_64.vmlinux")))
    assert by_name(rep)["modcheck"].status in ("ok", "findings")


def test_bundled_cores_directory():
    """The cores/ directory: the dumps are checked, the manifests, maps, logs and vmlinux files
    beside them are passed over; every dump is readable."""
    rep = check_many([CORES], jobs=2)
    names = {os.path.basename(r.dump) for r in rep}
    assert {"x86_64-4level.core", "xen-4.6-host.core", "pv-x86_64.xc"} <= names
    assert not any(n.endswith((".json", ".map", ".log", ".vmlinux")) for n in names)
    assert exit_status(rep) == 1


def test_console_check_names_every_request_xen_refused():
    """The console beside a dump (here given with --log): a real debug Xen's log of the dom0 requests
    the test module made (tests/data/xenlogs/xen-4.17.5-debug-mmu.json says what it asked and what
    Xen answered): every refused request (rc < 0) is one finding with its root cause."""
    import json as _json
    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "xenlogs")
    reports = _json.load(open(os.path.join(data, "xen-4.17.5-debug-mmu.json")))["reports"]
    refused = sorted(name for name, r in reports.items() if r.get("result", 0) < 0)
    rep = check_dump(os.path.join(CORES, "x86_64-4level.core"),
                     Options(log=os.path.join(data, "xen-4.17.5-debug-mmu.log")))
    console = by_name(rep)["console"]
    assert console.status == "findings"
    pins = {r["pin_mfn"] for r in reports.values() if r.get("pin_rc", 0) < 0 and "pin_mfn" in r}
    found = {f["request"]["mfn"] for f in console.findings if f["request"] and f["request"]["kind"] == "pin"}
    assert pins and pins == found, (pins, found)
    assert len(console.findings) == len(refused), (refused, [f["text"][:60] for f in console.findings])
