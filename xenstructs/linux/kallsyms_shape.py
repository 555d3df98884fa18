"""kallsyms tables found by their shape in the kernel image (kernels without them in VMCOREINFO)."""

from .kallsyms import KallsymsError


def find_kallsyms(mem, vi=None):
    """Not written yet."""
    raise KallsymsError("VMCOREINFO does not locate the kallsyms tables (Linux < 6.0, or no VMCOREINFO)")
