"""Symbols and types of a Linux dump taken from the dump alone, once per target.

* :func:`kallsyms_of` — every kernel symbol: the kallsyms tables located by VMCOREINFO (Linux >= 6.0)
  or, without them, by their shape in the kernel image (:mod:`.kallsyms_shape`).
* :func:`btf_profile_of` — the structure offsets: the BTF blob between ``__start_BTF`` and
  ``__stop_BTF`` (or found by its header in the image); :func:`btf_of` — the whole decoded BTF.

Both read through the kernel's own page tables (:func:`~.vmem.kernel_paging`) and are cached per
target object, so ``check`` and one command pay for them once. Their ``source`` strings are what
the outputs print: ``from the dump (kallsyms via VMCOREINFO)``, ``offsets from BTF in the dump``.
"""

import time
import weakref

from ..errors import XenscopeError
from .kallsyms import KallsymsError, from_vmcoreinfo
from .vmem import VirtualMemory, kernel_paging, pointer_size

_CACHE = weakref.WeakKeyDictionary()


def _entry(target):
    try:
        return _CACHE.setdefault(target, {})
    except TypeError:                         # a target that cannot be weakly referenced
        return {}


def memory_of(target, resolve_args=None):
    """The :class:`~.vmem.VirtualMemory` of the kernel image of ``target`` (cached)."""
    e = _entry(target)
    if "memory" not in e:
        paging, why = kernel_paging(target, resolve_args)
        e["memory"] = VirtualMemory(target, paging, pointer_size(target, paging))
        e["memory_why"] = why
    return e["memory"]


def kallsyms_of(target, resolve_args=None):
    """The :class:`~.kallsyms.Kallsyms` of the Linux kernel in ``target`` (cached, failures too).

    :raises KallsymsError: saying why the tables were not found or did not decode
    """
    e = _entry(target)
    if "kallsyms" not in e:
        t0 = time.perf_counter()
        try:
            e["kallsyms"] = _load_kallsyms(target, memory_of(target, resolve_args))
        except XenscopeError as err:
            e["kallsyms"] = err if isinstance(err, KallsymsError) else KallsymsError(str(err))
        e["kallsyms_seconds"] = time.perf_counter() - t0
    if isinstance(e["kallsyms"], Exception):
        raise e["kallsyms"]
    return e["kallsyms"]


def _load_kallsyms(target, mem):
    own = getattr(target, "own_kallsyms", None)        # a live kernel's /proc/kallsyms
    if own is not None:
        try:
            return own()
        except KallsymsError:                           # hidden (kptr_restrict=2): the tables in memory
            pass
    vi = target.facts.get("vmcoreinfo")
    if vi is not None and vi.symbol("kallsyms_names") is not None:
        return from_vmcoreinfo(mem, vi)
    from .kallsyms_shape import find_kallsyms
    return find_kallsyms(mem, vi)


def btf_range(target, symbols=None, resolve_args=None):
    """``(start, stop, where)`` of the kernel's BTF: ``__start_BTF``/``__stop_BTF`` from the
    dump's kallsyms, else from ``symbols`` (a :class:`~.profile.Symbols`, KASLR from VMCOREINFO)."""
    try:
        table = kallsyms_of(target, resolve_args).table()
        if "__start_BTF" in table and "__stop_BTF" in table:
            return table["__start_BTF"], table["__stop_BTF"], "kallsyms"
    except KallsymsError:
        pass
    if symbols is not None and "__start_BTF" in symbols and "__stop_BTF" in symbols:
        vi = target.facts.get("vmcoreinfo")
        off = 0 if symbols.relocated else ((vi.kerneloffset if vi is not None else None) or 0)
        return symbols.get("__start_BTF") + off, symbols.get("__stop_BTF") + off, symbols.source
    from .btf import find_btf
    found = find_btf(memory_of(target, resolve_args))
    if found is None:
        raise XenscopeError("no BTF in the dump: no BTF blob in the kernel image (a kernel built "
                            "without CONFIG_DEBUG_INFO_BTF)")
    return found[0], found[1], "its header in the kernel image"


def btf_of(target, symbols=None, resolve_args=None):
    """The decoded :class:`~.btf.Btf` of the kernel in ``target`` (cached): every type, for code
    that needs more than :data:`~.profile.WANTED` (``btf.member_offset("maple_node", "slot")``).

    :raises XenscopeError: when the dump holds no BTF
    """
    from .btf import Btf, read_btf
    e = _entry(target)
    own = getattr(target, "own_btf", None)              # a live kernel's /sys/kernel/btf/vmlinux
    if "btf" not in e and own is not None:
        try:
            blob, where = own()
            e["btf_range"] = (0, len(blob), where)
            e["btf"] = Btf(blob, 8)
        except XenscopeError as err:
            e["btf"] = err
    if "btf" not in e:
        try:
            e["btf_range"] = btf_range(target, symbols, resolve_args)
            start, stop, _ = e["btf_range"]
            e["btf"] = read_btf(memory_of(target, resolve_args), start, stop)
        except XenscopeError as err:
            e["btf"] = err
    if isinstance(e["btf"], Exception):
        raise e["btf"]
    return e["btf"]


def btf_profile_of(target, symbols=None, resolve_args=None):
    """A :class:`~.profile.Profile` from the kernel's BTF in ``target`` (cached).

    :raises XenscopeError: no BTF located, or it lacks the structs needed
    """
    from .btf import profile_from_btf
    e = _entry(target)
    if "btf_profile" not in e:
        t0 = time.perf_counter()
        try:
            btf = btf_of(target, symbols, resolve_args)
            start, stop, where = e["btf_range"]
            vi = target.facts.get("vmcoreinfo")
            where_text = (f"offsets from the running kernel's BTF ({where}, {stop - start} bytes, {len(btf)} types)"
                          if start == 0 else f"offsets from BTF in the dump ({stop - start} bytes, {len(btf)} "
                          f"types at {start:#x}, located by {where})")
            meta = {"source": where_text,
                    "btf": {"start": start, "stop": stop, "types": len(btf)},
                    "kernel_version": vi.osrelease if vi is not None else None,
                    "build_id": vi.get("BUILD-ID") if vi is not None else None}
            e["btf_profile"] = profile_from_btf(btf, meta)
        except XenscopeError as err:
            e["btf_profile"] = err
        e["btf_seconds"] = time.perf_counter() - t0
    p = e["btf_profile"]
    if isinstance(p, Exception):
        raise p
    return type(p)(dict(p.offsets), dict(p.sizes), dict(p.symbols), dict(p.meta))   # callers add to it


def timings(target):
    """Seconds spent decoding kallsyms and BTF for ``target`` (None for what was not done)."""
    e = _entry(target)
    return {"kallsyms": e.get("kallsyms_seconds"), "btf": e.get("btf_seconds")}


def guest_kernel_symbols(target, paging, pointer_size=8):
    """``{name: address}`` of the Linux kernel whose page tables are ``paging`` in ``target`` (e.g.
    a PV dom0 inside a Xen host dump, whose VMCOREINFO is not in the dump's notes): its kallsyms
    tables found by shape (:func:`~.kallsyms_shape.find_kallsyms`), decoded. For ``p2m-check``'s
    ``xen_p2m_addr``/``xen_p2m_size``/``xen_start_info`` without a System.map.

    :raises KallsymsError: when the tables are not found
    """
    from .kallsyms_shape import find_kallsyms
    return find_kallsyms(VirtualMemory(target, paging, pointer_size)).table()
