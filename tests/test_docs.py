"""docs/commands.md (from the argparse parsers) and docs/gallery.md (real runs on the bundled cores)
are what docs/generate.py produces now: the reference and the gallery cannot drift from the code."""
import os
import subprocess
import sys

from conftest import TOP


def test_docs_are_in_sync():
    r = subprocess.run([sys.executable, os.path.join(TOP, "docs", "generate.py"), "--check"], capture_output=True,
                       text=True, cwd=TOP, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_command_is_documented_and_the_readme_links_the_docs():
    from xenstructs.commands import COMMANDS
    ref = open(os.path.join(TOP, "docs", "commands.md")).read()
    assert all(f"## {name}\n" in ref for name in COMMANDS)
    readme = open(os.path.join(TOP, "README.md")).read()
    assert "docs/commands.md" in readme and "docs/gallery.md" in readme and "docs/api.md" in readme
    from xenstructs import api
    text = open(os.path.join(TOP, "docs", "api.md")).read()
    assert all(f"### {name}\n" in text for name in api.__all__)
