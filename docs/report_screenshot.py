#!/usr/bin/env python3
"""Make docs/check-report.png, the README's picture of ``check --html``: the report of three bundled
cores (a Xen 4.17 host, a 4-level kernel core, a PV guest's xl dump-core file) rendered by headless
Chromium (``./setup.sh`` installs the ``chromium`` package).

    .venv/bin/python docs/report_screenshot.py [--out PNG] [--html FILE]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
DUMPS = ["cores/xen-4.17-host.core", "cores/x86_64-4level.core", "cores/pv-x86_64.xc"]
SIZE = (1280, 1900)


def chromium():
    """The headless browser: Debian's ``chromium``."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        sys.exit("chromium is not installed: ./setup.sh installs it (Debian package chromium)")
    return path


def browse(url, *options):
    """Run headless Chromium on ``url`` (no network: a proxy nobody serves) and return its stdout."""
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--proxy-server=127.0.0.1:9", f"--user-data-dir={profile}", *options, url],
                           capture_output=True, text=True, timeout=180)
    if r.returncode != 0:
        sys.exit(f"chromium failed ({r.returncode}): {r.stderr[-500:]}")
    return r.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "check-report.png"))
    parser.add_argument("--html", help="keep the report here (default: a temporary file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        html = os.path.abspath(args.html or os.path.join(tmp, "report.html"))
        subprocess.run([sys.executable, "-m", "xenstructs.cli", "check", *DUMPS, "--html", html],
                       cwd=TOP, stdout=subprocess.DEVNULL, check=False)
        if not os.path.isfile(html):
            sys.exit("check --html wrote no report")
        browse("file://" + html, f"--window-size={SIZE[0]},{SIZE[1]}", f"--screenshot={os.path.abspath(args.out)}")
    print(args.out)


if __name__ == "__main__":
    main()
