"""Out-of-tree Linux kernel modules built at test time against Debian's own headers of the
kernel the real-system tier boots (``linux-headers-<abi>-amd64`` at the image package's version).

    ko = build_module("/path/to/dir/with/name.c", "name")     # cached .ko path

The three header packages (``linux-headers-<abi>-amd64``, ``linux-headers-<abi>-common``,
``linux-kbuild-<x.y>``) are unpacked together once into the cache (their relative symlinks then
resolve); the arch package's Makefile includes the common one by its absolute /usr/src path, so
the unpacked copy's include line is pointed at the unpacked common tree. The compiler is the
one the kernel was built with (``gcc-12`` on bookworm: the headers' .kernelvariables), which is
the machine's gcc. Built modules are cached by kernel release + the source's hash.
"""
import glob
import hashlib
import os
import shutil
import subprocess
import tempfile

from . import linux as L
from . import vm as V
from . import xenhost as X


def _image_version(package):
    out = V.sh("apt-cache", "show", package).stdout
    versions = [line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith("Version:")]
    if not versions:
        raise RuntimeError(f"apt-cache show {package} gives no Version")
    return X._newest(versions)


def _deb(package, version):
    """The cached .deb of ``package`` at exactly ``version`` (amd64 or all)."""
    d = X._debdir()
    stem = f"{package}_{version.replace(':', '%3a')}_"
    hits = glob.glob(os.path.join(d, stem + "*.deb"))
    if not hits:
        V.sh("apt-get", "download", "-q", f"{package}={version}", cwd=d)
        hits = glob.glob(os.path.join(d, stem + "*.deb"))
    if not hits:
        raise RuntimeError(f"apt-get download {package}={version} produced no {stem}*.deb")
    return hits[0]


def headers_tree(arch="x86_64"):
    """Directory to pass as ``make -C`` for modules of Debian's booted kernel (unpacked once)."""
    _, _, _, release = L.kernel_files(arch)
    version = _image_version(f"linux-image-{release}")
    abi = release.rsplit("-", 1)[0]                          # 6.1.0-57
    kbuild = "linux-kbuild-" + ".".join(release.split(".")[:2])
    packages = (f"linux-headers-{release}", f"linux-headers-{abi}-common", kbuild)
    root = os.path.join(V.CACHE, "kheaders", f"{release}_{version}")
    tree = os.path.join(root, "usr", "src", f"linux-headers-{release}")
    if not os.path.isdir(root):
        tmp = root + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        for package in packages:
            V.sh("dpkg-deb", "-x", _deb(package, version), tmp)
        makefile = os.path.join(tmp, "usr", "src", f"linux-headers-{release}", "Makefile")
        text = open(makefile).read()
        fixed = text.replace("include /usr/src/", f"include {root}/usr/src/")
        if fixed == text:
            raise RuntimeError(f"{makefile} does not include /usr/src/...: {text!r}")
        with open(makefile, "w") as f:
            f.write(fixed)
        os.rename(tmp, root)
    return tree


def build_module(source, name, arch="x86_64"):
    """Path of ``name``.ko built from the C file ``source`` (cached by release + source hash)."""
    _, _, _, release = L.kernel_files(arch)
    code = open(source, "rb").read()
    digest = hashlib.sha256(code).hexdigest()[:16]
    out = os.path.join(V.CACHE, "modules", f"{name}-{release}-{digest}.ko")
    if os.path.exists(out):
        return out
    tree = headers_tree(arch)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xenscope-kmod-") as work:
        shutil.copy(source, os.path.join(work, f"{name}.c"))
        with open(os.path.join(work, "Kbuild"), "w") as f:
            f.write(f"obj-m := {name}.o\nccflags-y := -Werror\n")
        run = subprocess.run(["make", "-C", tree, f"M={work}", "modules"],
                             capture_output=True, text=True)
        built = glob.glob(os.path.join(work, f"{name}.ko"))
        if run.returncode != 0 or not built:
            raise RuntimeError(f"building {name}.ko against {tree} failed:\n{run.stdout[-3000:]}"
                               f"\n{run.stderr[-3000:]}")
        shutil.copy(built[0], out + ".tmp")
        os.rename(out + ".tmp", out)
    return out
