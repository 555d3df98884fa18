"""What the Xen release changes for a page fault: whether Xen clears SMEP/SMAP while 32-bit PV guest
code runs (reference §7.4)."""

import re
from typing import Optional

from ..errors import XenscopeError

FIX_COMMIT = "ea3e8edfdb \"x86: suppress SMEP and SMAP while running 32-bit PV guest code\""
FIXED_IN = {(4, 5): (4, 5, 4), (4, 6): (4, 6, 3)}    # the backports of FIX_COMMIT
FIRST_FIXED = (4, 7, 0)                                 # FIX_COMMIT itself
XEN_SMAP_SINCE = (4, 5, 0)                              # Xen turns SMAP on for itself


def parse_version(text):
    """``"4.6.3"`` / ``"4.7"`` / ``"4.5.0-rc"`` -> ``(4, 6, 3)``; a bad string is a XenscopeError."""
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    if not m:
        raise XenscopeError(f"not a Xen version: {text!r} (expected X.Y or X.Y.Z, e.g. 4.6.3)")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def xen_clears_smep_smap_for_pv32(version: Optional[str]) -> Optional[bool]:
    """True when this Xen clears CR4.SMEP/SMAP while 32-bit PV guest code runs (4.5.4+, 4.6.3+,
    4.7.0+), False when it does not, None when the version is unknown.

    :raises XenscopeError: ``version`` is not a Xen version
    """
    if version is None:
        return None
    release = parse_version(version)
    if release >= FIRST_FIXED:
        return True
    fixed_in = FIXED_IN.get(release[:2])
    return fixed_in is not None and release >= fixed_in


def predates_xen_smap(version: str) -> bool:
    """True for a Xen older than 4.5.0, the first to use SMAP itself."""
    return parse_version(version) < XEN_SMAP_SINCE
