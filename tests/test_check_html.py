"""``check --html``: the page headless Chromium renders says what the batch found, and draws it.

Truths: the builder's manifests under cores/ (each Xen host's frame census and domains, each paging
core's ranges and problems), the ``--json`` of the same run (statuses, findings' texts), and the
pixels of Chromium's screenshot (the charts are drawn, not only declared)."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import pngpixels
from addrmap import check_map, rights
from htmldom import dom

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORES = os.path.join(TOP, "cores")


def chromium(*options):
    path = shutil.which("chromium")
    assert path, "chromium is not installed: ./setup.sh installs the Debian package chromium"
    return subprocess.run([sys.executable, os.path.join(TOP, "docs", "report_screenshot.py"), *options],
                          capture_output=True, text=True, cwd=TOP, timeout=300)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``check --html --json`` over every bundled dump, a truncated core and a text file."""
    tmp = tmp_path_factory.mktemp("html")
    (tmp / "truncated.core").write_bytes(open(os.path.join(CORES, "x86_64-4level.core"), "rb").read()[:200])
    (tmp / "notes.txt").write_text("not a dump\n")
    html = tmp / "report.html"
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", "check", CORES, str(tmp / "truncated.core"),
                        str(tmp / "notes.txt"), "--html", str(html), "--json"],
                       capture_output=True, text=True, cwd=TOP)
    assert r.returncode == 2, r.stderr
    page = html.read_text()
    return json.loads(r.stdout), page, dom(html)


def sections(root):
    return {s.attrs["data-dump"]: s for s in root.find("section", class_="dump")}


def manifest(dump):
    path = os.path.splitext(dump)[0] + ".json"
    return json.load(open(path)) if os.path.exists(path) else None


def test_self_contained(run):
    _, page, _ = run
    assert not re.search(r"<(script|link|img|iframe|object)\b", page)
    assert "http://" not in page and "https://" not in page and "url(" not in page


def test_a_row_per_dump_with_its_checks(run):
    reports, _, root = run
    rows = root.find("tr", class_="dump")
    assert [r.attrs["data-dump"] for r in rows] == [d["dump"] for d in reports]
    for row, d in zip(rows, reports):
        cells = {c.attrs["data-check"]: c for c in row.find("td") if "data-check" in c.attrs}
        assert {n: c.attrs["data-status"] for n, c in cells.items()} == {c["name"]: c["status"] for c in d["checks"]}
        for c in d["checks"]:
            assert cells[c["name"]].attrs["title"] == c["summary"]


def test_findings_expand_to_their_details(run):
    reports, _, root = run
    by_dump = sections(root)
    assert set(by_dump) == {d["dump"] for d in reports}
    for d in reports:
        checks = {c.attrs["data-check"]: c for c in by_dump[d["dump"]].find("details", class_="check")}
        for c in d["checks"]:
            node = checks[c["name"]]
            assert node.attrs["data-status"] == c["status"]
            assert ("open" in node.attrs) == (c["status"] in ("findings", "error"))
            findings = node.find("details", class_="finding")
            assert [f.find("summary")[0].text for f in findings] == [f["text"] for f in c["findings"]]
            for shown, f in zip(findings, c["findings"]):
                fields = {tr.find("td")[0].text for tr in shown.find("tr")}
                assert fields == set(f) - {"text"}
    unreadable = by_dump[next(d["dump"] for d in reports if d["dump"].endswith("notes.txt"))]
    assert unreadable.attrs["data-kind"] == "unreadable"


def test_census_bars_are_the_manifest_census(run):
    _, _, root = run
    hosts = [s for d, s in sections(root).items() if os.path.basename(d).startswith("xen-")]
    assert len(hosts) == 2
    for sec in hosts:
        want = manifest(sec.attrs["data-dump"])
        census = {(owner, kind, n) for owner, types in want["census"].items() if owner != "free"
                  for kind, n in types.items()}
        got = {(r.attrs["data-owner"], r.attrs["data-type"], int(r.attrs["data-count"]))
               for r in sec.find("rect", class_="seg")}
        assert got == census
        assert f"free {want['free_frames']}" in sec.text


def test_domains_are_the_manifest_domains(run):
    _, _, root = run
    for dump, sec in sections(root).items():
        if not os.path.basename(dump).startswith("xen-"):
            continue
        rows = {(int(r.attrs["data-id"]), r.attrs["data-name"]) for r in sec.find("tr", class_="domain")}
        assert rows == {(d["id"], d["name"]) for d in manifest(dump)["domains"]}


def test_address_map_strips_are_the_manifest_ranges(run):
    """Each range of a paging core's manifest is drawn in its lane (supervisor/user) and colour class
    (its rights), cut at the top-level slots; each problem as a mark; nothing else is drawn."""
    _, _, root = run
    checked = 0
    for dump, sec in sections(root).items():
        want = manifest(dump)
        if not want or "ranges" not in want:
            continue
        truth = [("user" if r["user"] else "kernel", rights(r["writable"], r["nx"]), r["va_start"], r["va_end"])
                 for r in want["ranges"]] + [("problem", "problem", p["va_start"], p["va_end"]) for p in want["problems"]]
        assert check_map(sec, want["mode"], truth) == 0, dump          # few ranges: drawn one by one
        checked += 1
    assert checked == 5


def test_address_map_of_many_pages_by_column(run):
    """The PV guests' dumps (hundreds of 4 KiB pages in one slot: drawn by pixel column): every page
    of vcpu0's tables in the manifest (and the PAE guest's L2 slots Xen fills), in its lane and rights;
    the 64-bit guest's problem marks are
    Xen's L4 slots the manifest names (not in the guest's dump, and the linear slot's loop)."""
    _, _, root = run
    by_dump = sections(root)
    for name in ("pv-x86_64", "pv-i386-pae"):
        dump = next(d for d in by_dump if os.path.basename(d) == name + ".xc")
        want = manifest(dump)
        truth = [("user" if p["user"] else "kernel", rights(p["writable"], p["nx"]), p["va"], p["va"] + p["size"])
                 for p in want["pages"] if p["root"] == "vcpu0.cr3"]
        for key, what in want["xen_slots"].items():      # the PAE guest's L2 slots Xen fills: 2 MiB P|US|A|PS
            if key.startswith("pae_xen_l2 "):
                assert "P|US|A|PS" in what
                first, last = map(int, key.split()[1].split("-"))
                truth += [("user", "x", 0xc0000000 + i * (2 << 20), 0xc0000000 + (i + 1) * (2 << 20))
                          for i in range(first, last + 1)]
        assert check_map(by_dump[dump], want["mode"], truth, lanes=("kernel", "user")) >= 1, name
    sec = by_dump[next(d for d in by_dump if os.path.basename(d) == "pv-x86_64.xc")]
    marks = {int(b.attrs["data-va-start"], 16) >> 39 & 511 for b in sec.find("rect", class_="range")
             if b.attrs["data-lane"] == "problem"}
    assert marks == {int(k) for k in manifest(os.path.join(CORES, "pv-x86_64.xc"))["xen_slots"]}


def test_screenshot_draws_the_charts(tmp_path):
    """docs/report_screenshot.py (the README's picture) renders the report in Chromium; its pixels
    hold the census bars (the 675 anonymous frames' grey bar is 520 x 16 px), the slot strips' grey
    and every rights colour of the legend and the maps."""
    png = tmp_path / "report.png"
    r = chromium("--out", str(png))
    assert r.returncode == 0, r.stderr
    pixels = pngpixels.read_png(str(png))
    assert pixels.shape[:2] == (1900, 1280)
    assert pngpixels.colour_count(pixels, "#bdbdbd") > 520 * 16          # census: the type "none"
    assert pngpixels.colour_count(pixels, "#fd8d3c") > 250 * 16          # census: dom_io's writable frames
    assert pngpixels.colour_count(pixels, "#f4f4f4") > 760 * 28 * 5      # >= 5 slot strips on the screen
    for colour in ("#d62728", "#ff7f0e", "#1f77b4", "#8c8c8c"):
        assert pngpixels.colour_count(pixels, colour) > 121, colour      # more than its legend key


def test_bad_html_path_refused_before_checking(tmp_path):
    r = subprocess.run([sys.executable, "-m", "xenstructs.cli", "check", os.path.join(CORES, "x86_64-5level.core"),
                        "--html", str(tmp_path / "missing" / "r.html")], capture_output=True, text=True, cwd=TOP)
    assert r.returncode == 2 and r.stdout == "" and "--html: no directory" in r.stderr
