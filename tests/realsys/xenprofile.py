"""Debian's RELEASE Xen rebuilt from its own source package with debug info: the DWARF behind
xenscope's shipped Xen profiles (``xenstructs/xen/profiles/``).

    built = release_with_dwarf("4.17.5+72-g01140da4e8-1")   # {"xen_syms", "xen", "xen_map", "config",
                                                             #  "version", "build_seconds", "dir"}

Debian builds Xen without ``-g`` (its ``-dbg`` xen-syms has ``.symtab`` only), so no structure offsets
can be read from what it ships. This build is Debian's: the source package (``apt-get source`` through
the private lists of :mod:`.xendebug`, Debian's patches applied), the package's own
``boot/xen-4.17-amd64.config`` unchanged (``CONFIG_DEBUG`` off: a release build), debian/rules' make
arguments, plus ``-g`` in ``EXTRA_CFLAGS_XEN_CORE`` (the way debian/rules passes its own flags there).
``-g`` does not change the code gcc generates, so the result must be Debian's binary with DWARF:
:func:`same_code` checks that every symbol of the rebuilt xen-syms sits at the address Debian's -dbg
xen-syms gives it, and that the image's text and read-only data are byte for byte the same except for
the compile date/time and the build-id. Cached under
``~/.cache/xenscope/xen-release-g/<version>-<config hash>/`` (built in a temporary directory, renamed
into place). ~2-4 minutes on 2 cores.

``CONFIG_DEBUG_INFO`` is not used: Kconfig hides it unless DEBUG or EXPERT is set, and setting EXPERT
would change the configuration Debian built.
"""
import hashlib
import os
import time

from . import vm as V
from . import xendebug as D
from . import xenhost as X

CFLAGS = "-g "


def release_with_dwarf(version):
    """The release build of Debian's ``version`` with DWARF (built once, cached): a dict with
    ``xen_syms`` (ELF with DWARF), ``xen`` (the multiboot image), ``xen_map``, ``config``, ``version``,
    ``build_seconds`` (None from the cache) and ``dir``."""
    release = X.xen_files(version)
    config_text = open(release["config"]).read()
    digest = hashlib.sha256((config_text + " ".join(D.MAKE_ARGS) + CFLAGS + "as-debian").encode()).hexdigest()[:12]
    out = os.path.join(V.CACHE, "xen-release-g", f"{version}-{digest}")
    seconds = None
    if not os.path.isdir(out):
        started = time.time()
        D._build(version, config_text, out, cflags=CFLAGS, as_debian=True)
        seconds = time.time() - started
    return {"version": version, "xen_syms": os.path.join(out, "xen-syms"), "xen": os.path.join(out, "xen"),
            "xen_map": os.path.join(out, "xen-syms.map"), "config": os.path.join(out, ".config"),
            "build_seconds": seconds, "dir": out, "debian": release}


def _symbols(path):
    out = {}
    for line in V.sh("nm", path).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.setdefault(parts[2], int(parts[0], 16))
    return out


def _sections(path):
    """``{name: bytes}`` of an ELF's allocated sections with contents (pyelftools)."""
    from elftools.elf.elffile import ELFFile
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return {sec.name: sec.data() for sec in elf.iter_sections()
                if sec["sh_flags"] & 2 and sec["sh_type"] != "SHT_NOBITS"}


def same_code(built):
    """``(equal, text)``: whether the rebuilt xen-syms is Debian's binary plus DWARF -- every symbol
    of Debian's -dbg xen-syms at the same address, and every allocated section (text, rodata, init,
    data) byte for byte the same, the build-id note apart (it hashes the debug sections too)."""
    ours, theirs = _symbols(built["xen_syms"]), _symbols(built["debian"]["xen_syms_symtab"])
    moved = sorted(n for n, va in theirs.items() if ours.get(n) != va)
    extra = sorted(set(ours) - set(theirs))
    if moved or extra:
        return False, (f"{len(moved)} of Debian's {len(theirs)} symbols differ (e.g. {moved[:5]}), "
                       f"{len(extra)} extra (e.g. {extra[:5]})")
    mine, debian = _sections(built["xen_syms"]), _sections(built["debian"]["xen_syms_symtab"])
    compared = sorted(n for n in debian if n != ".note.gnu.build-id")
    differ = [n for n in compared if mine.get(n) != debian[n]]
    if differ or set(mine) != set(debian):
        return False, f"sections {differ or sorted(set(mine) ^ set(debian))} differ from Debian's xen-syms"
    size = sum(len(debian[n]) for n in compared)
    return True, (f"all {len(theirs)} symbols of Debian's xen-syms at the same addresses and its "
                  f"{', '.join(compared)} ({size} bytes) identical")


def profile_path(version):
    """Where xenscope ships the profile of Debian's ``version``."""
    from xenstructs.xen.profile import SHIPPED
    return os.path.join(SHIPPED, f"debian-{version}-amd64.json")


def make_profile(version):
    """The profile of Debian's release build of ``version``: the rebuilt xen-syms' DWARF, keyed by
    Debian's build-id (and the rebuild's), after :func:`same_code` said the code is Debian's."""
    from xenstructs.xen.profile import elf_facts, from_xen_syms
    built = release_with_dwarf(version)
    same, how = same_code(built)
    if not same:
        raise RuntimeError(f"the rebuild of {version} is not Debian's binary: {how}")
    prof = from_xen_syms(built["xen_syms"])
    debian_id, debian_version = elf_facts(built["debian"]["xen_syms_symtab"])
    if debian_version != prof.xen:
        raise RuntimeError(f"Debian's xen-syms says Xen {debian_version}, the rebuild {prof.xen}")
    prof.build_ids = [debian_id] + prof.build_ids
    prof.made_from = (f"Debian's xen {version} source package, its own release .config "
                      f"(xen-hypervisor-4.17-amd64 {version}), debian/rules' make arguments plus -g "
                      f"(tests/realsys/xenprofile.py); checked: {how}")
    return prof


if __name__ == "__main__":
    import sys
    for wanted in sys.argv[1:]:
        made = make_profile(wanted)
        made.to_json(profile_path(wanted))
        print(profile_path(wanted), made.build_ids)
