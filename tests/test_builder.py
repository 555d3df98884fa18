"""The bundled cores are exactly what the builder makes (one command regenerates them byte for byte)."""
import os
import subprocess
import sys

from conftest import TOP


def test_bundled_cores_are_reproducible():
    r = subprocess.run([sys.executable, os.path.join(TOP, "cores", "build.py"), "--check"],
                       capture_output=True, text=True, timeout=300, cwd=TOP)
    assert r.returncode == 0, r.stdout + r.stderr


def test_big_core_is_deterministic(tmp_path):
    sys.path.insert(0, TOP)
    from cores.builder.big import build_big_core
    a, b = tmp_path / "a.core", tmp_path / "b.core"
    ma = build_big_core(str(a), n_ptes=1 << 14)
    mb = build_big_core(str(b), n_ptes=1 << 14)
    assert ma == mb and a.read_bytes() == b.read_bytes()
