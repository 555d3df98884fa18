"""Xen's gdbsx, built at test time from Debian's source package of Xen, for dom0 of the booted release.

    built = build_gdbsx(version)      # {"path", "version", "headers", "key", "build_seconds", "sources"}

Debian ships no gdbsx (no package carries ``tools/debugger/gdbsx``). Its sources are the five C files
of ``tools/debugger/gdbsx`` (``gx/``: the RSP server; ``xg/``: the domctl layer) in Debian's ``xen``
source package (:func:`realsys.xendebug.fetch_source`, private apt lists). gdbsx links no Xen
library: ``xg/xg_main.c`` issues its hypercalls itself through ``/dev/xen/privcmd``
(``IOCTL_PRIVCMD_HYPERCALL``: ``XEN_DOMCTL_gdbsx_guestmemio``, ``getvcpucontext``, ...), so what must
match the hypervisor is the domctl ABI it is compiled with: ``XEN_DOMCTL_INTERFACE_VERSION`` (Xen
refuses a domctl of another version with -EACCES) and the layout of ``struct xen_domctl``. Those come
from the public headers of ``libxen-dev`` at the booted release's Debian version (``apt-get download
libxen-dev=VERSION`` into the cache: no system install). The compile is gdbsx's Makefiles' (``gx/*.c``
and ``xg/xg_main.c`` with ``-D__XEN_TOOLS__`` and the public headers) without Xen's tools build system,
which would need the whole tree configured.

Cached under ``~/.cache/xenscope/gdbsx/<version>-<key>/gdbsx`` (key: a hash of the sources, the
headers' domctl.h and the compiler flags), built in a temporary directory and renamed into place.
"""
import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time

from . import vm as V
from . import xendebug as D
from . import xenhost as X

HEADERS_PACKAGE = "libxen-dev"
SOURCES = ("gx/gx_comm.c", "gx/gx_main.c", "gx/gx_utils.c", "gx/gx_local.c", "xg/xg_main.c")
CFLAGS = ("-O2", "-g", "-std=gnu99", "-Wall", "-Wno-unused-but-set-variable", "-D__XEN_TOOLS__")


def headers(version):
    """The include directory of ``libxen-dev`` at ``version`` (unpacked in the cache)."""
    return os.path.join(X.extract_at(HEADERS_PACKAGE, version), "usr", "include")


def interface_version(include_dir):
    """``XEN_DOMCTL_INTERFACE_VERSION`` as the headers define it."""
    text = open(os.path.join(include_dir, "xen", "domctl.h")).read()
    found = re.search(r"#define XEN_DOMCTL_INTERFACE_VERSION\s+(0x[0-9a-fA-F]+)", text)
    if not found:
        raise RuntimeError(f"{include_dir}/xen/domctl.h defines no XEN_DOMCTL_INTERFACE_VERSION")
    return int(found.group(1), 16)


def _key(source_dir, include_dir):
    digest = hashlib.sha256(" ".join(CFLAGS).encode())
    for rel in SOURCES + ("xg/xg_public.h", "gx/gx.h"):
        digest.update(open(os.path.join(source_dir, rel), "rb").read())
    digest.update(open(os.path.join(include_dir, "xen", "domctl.h"), "rb").read())
    return digest.hexdigest()[:12]


def build_gdbsx(version, source_version=None):
    """gdbsx built from ``source_version``'s tree (default ``version``) against ``libxen-dev`` at
    ``version``: the hypervisor's release. Built once and cached (see the module doc)."""
    source_version = source_version or version
    source_dir = os.path.join(D.fetch_source(source_version), "tree", "tools", "debugger", "gdbsx")
    include_dir = headers(version)
    key = _key(source_dir, include_dir)
    out = os.path.join(V.CACHE, "gdbsx", f"{version}-{key}")
    path = os.path.join(out, "gdbsx")
    seconds = None
    if not os.path.exists(path):
        started = time.time()
        _compile(source_dir, include_dir, out)
        seconds = time.time() - started
    return {"path": path, "version": version, "source_version": source_version, "headers": include_dir,
            "interface_version": interface_version(include_dir), "key": key, "build_seconds": seconds,
            "sources": [os.path.join(source_dir, rel) for rel in SOURCES]}


def _compile(source_dir, include_dir, out):
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=os.path.basename(out) + ".build-", dir=parent)
    try:
        result = os.path.join(work, "result")
        os.makedirs(result)
        argv = ["gcc", *CFLAGS, f"-I{include_dir}", "-o", os.path.join(result, "gdbsx"),
                *(os.path.join(source_dir, rel) for rel in SOURCES)]
        run = subprocess.run(argv, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"building gdbsx failed ({' '.join(argv)}):\n{run.stderr[-3000:]}")
        with open(os.path.join(result, "build.txt"), "w") as f:
            f.write(" ".join(argv) + "\n" + run.stderr)
        shutil.rmtree(out, ignore_errors=True)
        os.rename(result, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cached_builds():
    """Paths of every gdbsx build in the cache."""
    return sorted(glob.glob(os.path.join(V.CACHE, "gdbsx", "*", "gdbsx")))
