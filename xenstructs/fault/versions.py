"""What the Xen release changes for a page fault: whether Xen clears SMEP/SMAP while 32-bit PV guest
code runs (reference §7.4). Versions are parsed by :func:`xenstructs.xen.release.parse_version`."""

from typing import Optional

from ..xen.release import parse_version

FIX_COMMIT = "ea3e8edfdb \"x86: suppress SMEP and SMAP while running 32-bit PV guest code\""
FIXED_IN = {(4, 5): (4, 5, 4), (4, 6): (4, 6, 3)}    # the backports of FIX_COMMIT
FIRST_FIXED = (4, 7, 0)                                 # FIX_COMMIT itself
XEN_SMAP_SINCE = (4, 5, 0)                              # Xen turns SMAP on for itself


def xen_clears_smep_smap_for_pv32(version: Optional[str]) -> Optional[bool]:
    """True when this Xen clears CR4.SMEP/SMAP while 32-bit PV guest code runs (4.5.4+, 4.6.3+,
    4.7.0+), False when it does not, None when the version is unknown.

    :raises XenscopeError: ``version`` is not a Xen version (or older than 4.4)
    """
    if version is None:
        return None
    release = parse_version(version).triple
    if release >= FIRST_FIXED:
        return True
    fixed_in = FIXED_IN.get(release[:2])
    return fixed_in is not None and release >= fixed_in


def predates_xen_smap(version: str) -> bool:
    """True for a Xen older than 4.5.0, the first to use SMAP itself."""
    return parse_version(version).triple < XEN_SMAP_SINCE
