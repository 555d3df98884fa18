"""A debug Xen (``CONFIG_DEBUG=y``) built from Debian's own source package, hypervisor only.

Why: Debian's Xen is a release build. In release builds ``gdprintk()`` is an empty inline
(``xen/include/xen/lib.h``: ``#ifdef NDEBUG ... gdprintk(...) {}``), so every mm.c message a
refused page-table request would print (``Bad type``, ``Attempt to create linear p.t.``,
``Failure in promote_lN_table``, ``Error while validating``, ``Error while pinning``, ``Bad Ln
flags``, ``mfn not pinned``...) is silent there. The debug build prints them.

    hv = debug_hypervisor()               # {"version", "xen", "xen_gz", "xen_syms", "xen_map",
                                          #  "config", "config_hash", "build_seconds", ...}
    host = xenhost.boot_xen_host(version=hv["version"], hypervisor=hv)

How: ``apt-get source`` through a private sources list (``deb-src`` lines for bookworm and
bookworm-security, lists and archives in the cache: the machine's apt sources are never
touched); ``dpkg-source -x`` applies Debian's patches; the configuration is the one Debian's
hypervisor package of that version ships (``boot/xen-4.17-amd64.config``) with ``CONFIG_DEBUG=y``,
completed by ``make olddefconfig`` (which turns on what DEBUG implies by default: DEBUG_INFO,
FRAME_POINTER, DEBUG_LOCKS, VERBOSE_DEBUG, SCRUB_DEBUG, XMEM_POOL_POISON, and the options
Debian's release config only lacks because they are hidden without DEBUG/EXPERT); then
``make -C xen`` with debian/rules' hypervisor make arguments (CC/LD, XEN_TARGET_ARCH, the
file-prefix maps, DEB_VERSION for the banner). The result (``xen``: the multiboot ELF QEMU boots,
``xen.gz``, ``xen-syms`` WITH DWARF, ``xen-syms.map``, ``.config``) is cached under
``~/.cache/xenscope/xen-debug/<version>-<config hash>/``, built in a temporary directory and
renamed into place (a killed build leaves no half cache). ~100 s on 2 cores.

Which version: the one the tier boots (``xenhost.xen_version()``) when its source package can be
fetched. When it cannot (here: deb.debian.org serves bookworm-security's binary packages but
answers 404 for its source files), the newest version whose source AND binary packages (the
hypervisor and its -dbg, to compare with the release build) can be fetched is used, and
``reason`` says why; the caller then boots the release build of that same version.
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
from . import xenhost as X

SOURCE_PACKAGE = "xen"
SOURCES = (
    "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    "http://deb.debian.org/debian bookworm main\n"
    "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    "http://deb.debian.org/debian-security bookworm-security main\n")
MAKE_ARGS = ("CC=x86_64-linux-gnu-gcc", "LD=x86_64-linux-gnu-ld", "XEN_COMPILE_ARCH=x86_64",
             "XEN_TARGET_ARCH=x86_64")
MAINTAINER = "xenscope debug build <xenscope@invalid>"


class SourceUnavailable(RuntimeError):
    """Debian's source package of a version cannot be fetched."""


# ---------------------------------------------------------------- apt, privately

def _apt_root():
    return os.path.join(V.CACHE, "apt-src")


def _apt():
    from .debian import PrivateApt
    return PrivateApt(_apt_root(), SOURCES)


def _apt_options():
    return _apt().options()


def _apt_update(force=False):
    """apt-get update of the private deb-src lists (once; again when ``force``)."""
    _apt().update(force)


def source_versions():
    """Versions of Debian's ``xen`` source package the private lists know, newest first."""
    _apt_update()
    out = V.sh("apt-cache", *_apt_options(), "showsrc", SOURCE_PACKAGE).stdout
    versions = {line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith("Version:")}
    ordered = []
    while versions:
        best = X._newest(versions)
        ordered.append(best)
        versions.discard(best)
    return ordered


def fetch_source(version):
    """The unpacked, patched source tree of ``xen`` at ``version`` (cached); SourceUnavailable
    when apt cannot download it."""
    out = os.path.join(V.CACHE, "xen-src", version)
    if os.path.isdir(out):
        return out
    _apt_update()
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    run = subprocess.run(["apt-get", *_apt_options(), "source", "--download-only", "-q",
                          f"{SOURCE_PACKAGE}={version}"], cwd=tmp, capture_output=True,
                         text=True)
    dsc = glob.glob(os.path.join(tmp, "*.dsc"))
    if run.returncode != 0 or not dsc:
        shutil.rmtree(tmp, ignore_errors=True)
        errors = [line for line in (run.stderr + run.stdout).splitlines() if line.startswith("E:")]
        raise SourceUnavailable(f"apt-get source {SOURCE_PACKAGE}={version} failed: "
                                + ("; ".join(errors[:2]) or run.stderr[-500:]))
    V.sh("dpkg-source", "-x", dsc[0], "tree", cwd=tmp)
    os.rename(tmp, out)
    return out


def _binaries_available(version):
    """Whether apt can fetch the hypervisor and its -dbg package at ``version``."""
    for package in (X.XEN_PKG, X.DBG_PKG):
        if version not in X._versions(package):
            return False
    return True


def choose_version(wanted=None):
    """``(version, reason)``: ``wanted`` (default: the version the tier boots) when its source
    can be fetched, else the newest fetchable one with binaries; reason None when it is wanted."""
    wanted = wanted or X.xen_version()
    try:
        fetch_source(wanted)
        return wanted, None
    except SourceUnavailable as e:
        first_error = str(e)
    for version in source_versions():
        if version == wanted or not _binaries_available(version):
            continue
        try:
            fetch_source(version)
        except SourceUnavailable:
            continue
        return version, (f"the source of {wanted} (the version the tier boots) cannot be fetched "
                         f"({first_error}); built and booted {version} instead, release and "
                         f"debug alike")
    raise SourceUnavailable(f"no version of Debian's {SOURCE_PACKAGE} source can be fetched "
                            f"with its binary packages ({first_error})")


# ---------------------------------------------------------------- the build

def debug_config(release_config):
    """Debian's release .config text with CONFIG_DEBUG=y (before olddefconfig)."""
    text = open(release_config).read()
    if "# CONFIG_DEBUG is not set" not in text:
        raise RuntimeError(f"{release_config} has no '# CONFIG_DEBUG is not set' line")
    return text.replace("# CONFIG_DEBUG is not set", "CONFIG_DEBUG=y")


def _make_args(version, tree, cflags="", maintainer=MAINTAINER):
    return list(MAKE_ARGS) + [
        f"EXTRA_CFLAGS_XEN_CORE={cflags}-ffile-prefix-map={tree}=. -fdebug-prefix-map={tree}=.",
        f"DEB_VERSION={version}", f"DEB_MAINTAINER={maintainer}"]


def debian_identity(tree):
    """``(maintainer, environment)`` as debian/rules sets them: DEB_MAINTAINER from debian/control,
    XEN_BUILD_DATE/TIME from the changelog's date (SOURCE_DATE_EPOCH): what the banner and
    ``xen_compile_*`` show in Debian's own binary, so a rebuild puts .rodata at the same addresses."""
    control = open(os.path.join(tree, "debian", "control")).read()
    maintainer = re.search(r"^Maintainer: (.*)$", control, re.M).group(1).strip()
    epoch = V.sh("dpkg-parsechangelog", "-l", os.path.join(tree, "debian", "changelog"),
                 "-STimestamp").stdout.strip()
    env = {"LC_ALL": "C", "TZ": "UTC"}
    date = subprocess.run(["date", "-u", "-d", f"@{epoch}"], capture_output=True, text=True, env=env)
    clock = subprocess.run(["date", "-u", "-d", f"@{epoch}", "+%T"], capture_output=True, text=True, env=env)
    return maintainer, {"XEN_BUILD_DATE": date.stdout.strip(), "XEN_BUILD_TIME": clock.stdout.strip(),
                        "SOURCE_DATE_EPOCH": epoch}


def _build(version, config_text, out, cflags="", as_debian=False):
    """Build into a temporary copy of the source tree; move the results to ``out``. ``cflags``
    (e.g. ``"-g "``) go before the file-prefix maps in EXTRA_CFLAGS_XEN_CORE; ``as_debian``: with
    Debian's maintainer and build date (:func:`debian_identity`) instead of xenscope's."""
    source = fetch_source(version)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=os.path.basename(out) + ".build-", dir=parent)
    try:
        tree = os.path.join(work, "tree")
        shutil.copytree(os.path.join(source, "tree"), tree, symlinks=True)
        with open(os.path.join(tree, "xen", ".config"), "w") as f:
            f.write(config_text)
        maintainer, identity = debian_identity(tree) if as_debian else (MAINTAINER, {})
        args = _make_args(version, tree, cflags, maintainer)
        env = dict(os.environ, WGET="/bin/false", GIT="/bin/false", **identity)
        for target in (["olddefconfig"], [f"-j{os.cpu_count() or 2}"]):
            run = subprocess.run(["make", "-C", "xen", *target, *args], cwd=tree, env=env,
                                 capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"make {' '.join(target)} of Xen {version} failed:\n"
                                   f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        result = os.path.join(work, "result")
        os.makedirs(result)
        for name in ("xen", "xen.gz", "xen-syms", "xen-syms.map", ".config"):
            shutil.copy(os.path.join(tree, "xen", name), os.path.join(result, name))
        os.rename(result, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def debug_hypervisor(version=None):
    """The debug build of ``version`` (default :func:`choose_version`), built once and cached.

    A dict for ``xenhost.boot_xen_host(hypervisor=...)``: ``xen`` (multiboot ELF), ``xen_gz``,
    ``xen_syms`` (ELF with DWARF), ``xen_map``, ``config`` (the final .config), ``version``,
    ``config_hash``, ``flavour`` "debug", ``build_seconds`` (None when it came from the cache),
    ``reason`` (why not the booted version, else None), ``release_config``.
    """
    version, reason = (version, None) if version else choose_version()
    release = X.xen_files(version)
    config_text = debug_config(release["config"])
    digest = hashlib.sha256((config_text + " ".join(MAKE_ARGS)).encode()).hexdigest()[:12]
    out = os.path.join(V.CACHE, "xen-debug", f"{version}-{digest}")
    seconds = None
    if not os.path.isdir(out):
        started = time.time()
        _build(version, config_text, out)
        seconds = time.time() - started
    return {"version": version, "flavour": "debug", "config_hash": digest, "reason": reason,
            "xen": os.path.join(out, "xen"), "xen_gz": os.path.join(out, "xen.gz"),
            "xen_syms": os.path.join(out, "xen-syms"), "xen_map": os.path.join(out, "xen-syms.map"),
            "config": os.path.join(out, ".config"), "release_config": release["config"],
            "build_seconds": seconds, "dir": out}
