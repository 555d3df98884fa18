"""Debian's binary packages of other releases (bullseye, trixie) through a private apt sources list.

    path = release_deb("trixie", "xen-hypervisor-4.20-amd64")      # cached .deb
    root = release_extract("bullseye", "linux-image-amd64")        # unpacked once, in the cache

The machine's own apt sources (bookworm) are never touched: apt reads a sources list, lists and
cache of its own under ``$XENSCOPE_CACHE/apt-releases`` (``-o Dir::Etc::sourcelist=...
-o Dir::Etc::sourceparts=- -o Dir::State::Lists=... -o Dir::Cache=...``), updated once (the stamp
file ``updated``; delete it to refresh). A metapackage (``linux-image-amd64``) is followed to the
versioned package it depends on in that release. Downloads land in ``$XENSCOPE_CACHE/debs`` under
Debian's own file names (the version is in the name), so two releases never collide.
"""
import glob
import os
import shutil
import subprocess

from . import vm as V

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
RELEASES = ("bullseye", "trixie")
ARCHES = ("amd64", "i386")


def _root():
    return os.path.join(V.CACHE, "apt-releases")


def _sources():
    lines = []
    for rel in RELEASES:
        lines.append(f"deb [signed-by={KEYRING}] http://deb.debian.org/debian {rel} main")
        lines.append(f"deb [signed-by={KEYRING}] http://deb.debian.org/debian {rel}-updates main")
        lines.append(f"deb [signed-by={KEYRING}] http://deb.debian.org/debian-security "
                     f"{rel}-security main")
    return "\n".join(lines) + "\n"


class PrivateApt:
    """apt reading only a sources list, lists and cache of its own under ``root`` (never the
    machine's): ``sources`` is the sources.list text; ``arches``: the architectures it lists;
    ``own_status``: an empty dpkg status of its own (no package counts as installed)."""

    def __init__(self, root, sources, arches=None, own_status=False):
        self.root, self.sources, self.arches, self.own_status = root, sources, arches, own_status

    def options(self):
        """apt's options that make it read only our own sources list, lists and cache."""
        root = self.root
        out = ["-o", f"Dir::Etc::sourcelist={root}/sources.list", "-o", "Dir::Etc::sourceparts=-",
               "-o", f"Dir::State::Lists={root}/lists", "-o", f"Dir::Cache={root}/cache"]
        if self.arches:
            out += ["-o", f"APT::Architectures={','.join(self.arches)}"]
        out += ["-o", "APT::Sandbox::User=root"]
        if self.own_status:
            out += ["-o", f"Dir::State::status={root}/status"]
        return out

    def update(self, force=False):
        """apt-get update of the private lists (once: the stamp file ``updated``; again when ``force``)."""
        stamp = os.path.join(self.root, "updated")
        if os.path.exists(stamp) and not force:
            return
        for d in ("lists/partial", "cache/archives/partial"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        with open(os.path.join(self.root, "sources.list"), "w") as f:
            f.write(self.sources)
        if self.own_status:
            open(os.path.join(self.root, "status"), "a").close()
        V.sh("apt-get", *self.options(), "update", "-q")
        open(stamp, "w").close()


def _apt():
    return PrivateApt(_root(), _sources(), ARCHES, own_status=True)


def apt_options():
    """apt's options that make it read only our own sources list, lists and cache."""
    return _apt().options()


def apt_update(force=False):
    """apt-get update of the private lists (once; again when ``force``)."""
    _apt().update(force)


def versions(release, package):
    """Versions of ``package`` (``name`` or ``name:arch``) the private lists know in ``release``
    (its -updates and -security suites included), newest first."""
    apt_update()
    out = V.sh("apt-cache", *apt_options(), "madison", package).stdout
    found = []
    for line in out.splitlines():
        cols = [c.strip() for c in line.split("|")]
        suite = cols[2].split()[1].split("/")[0] if len(cols) >= 3 and len(cols[2].split()) > 1 else ""
        if suite == release or suite.startswith(release + "-"):
            found.append(cols[1])
    return sorted(set(found), key=_Version, reverse=True)


class _Version:
    def __init__(self, v):
        self.v = v

    def __lt__(self, other):
        return subprocess.run(["dpkg", "--compare-versions", self.v, "lt", other.v]).returncode == 0


def depends_on(release, meta, version=None):
    """The versioned package a metapackage (``linux-image-amd64``) depends on in ``release`` (in its
    newest version there unless ``version``)."""
    name, _, arch = meta.partition(":")
    ver = versions(release, meta)
    if not ver or (version is not None and version not in ver):
        raise RuntimeError(f"the {release} lists know no {meta}" + (f"={version}" if version else ""))
    out = V.sh("apt-cache", *apt_options(), "show", f"{meta}={version or ver[0]}").stdout
    for line in out.splitlines():
        if line.startswith("Depends:"):
            first = line.split(":", 1)[1].split(",")[0].split()[0]
            return first + (f":{arch}" if arch else "")
    raise RuntimeError(f"{meta}={ver[0]} depends on nothing")


def release_deb(release, package, version=None):
    """Path of the cached .deb of ``package`` (``name[:arch]``) from ``release`` (its newest
    version there unless ``version``); downloaded with the private lists on first use."""
    d = os.path.join(V.CACHE, "debs")
    os.makedirs(d, exist_ok=True)
    name, _, arch = package.partition(":")
    if version is None:
        known = versions(release, package)
        if not known:
            raise RuntimeError(f"the {release} lists know no {package}")
        version = known[0]
    quoted = version.replace(":", "%3a")
    hits = [p for p in (os.path.join(d, f"{name}_{quoted}_{a}.deb") for a in (arch or "amd64", "all"))
            if os.path.exists(p)]
    if not hits:
        tmp = os.path.join(d, f".dl-{name}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        V.sh("apt-get", *apt_options(), "download", "-q", f"{package}={version}", cwd=tmp)
        got = glob.glob(os.path.join(tmp, "*.deb"))
        if len(got) != 1:
            raise RuntimeError(f"apt-get download {package}={version} ({release}) gave {got}")
        final = os.path.join(d, os.path.basename(got[0]))
        os.rename(got[0], final)
        shutil.rmtree(tmp, ignore_errors=True)
        hits = [final]
    return hits[0]


def unpack(path):
    """Unpack a .deb once into the cache; return the directory."""
    out = os.path.join(V.CACHE, "unpacked", os.path.basename(path)[:-4])
    if not os.path.isdir(out):
        tmp = out + f".{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        V.sh("dpkg-deb", "-x", path, tmp)
        os.rename(tmp, out)
    return out


def release_extract(release, package, version=None):
    """:func:`release_deb` unpacked (a metapackage, of ``version`` if given, is followed to the
    package it depends on, of the same version)."""
    if package.split(":")[0] in ("linux-image-amd64", "linux-image-686", "linux-image-686-pae"):
        package = depends_on(release, package, version)
    return unpack(release_deb(release, package, version))
