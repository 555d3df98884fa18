"""xenscope's scripting API: what a script imports, from one place.

    from xenstructs.api import open_dump, resolve, walk

    target = open_dump("vmcore")
    paging = resolve(target).paging
    print(hex(walk(target, paging, 0xffffffff81000000).pa))

:data:`FUNCTIONS` are the functions a script calls (open a dump, resolve a context, walk one address
or many, list mappings, decode a Xen frame's ``page_info``, check a PV domain's P2M, list Linux
tasks and modules, run every check on a dump); :data:`CLASSES` the objects they return. docs/api.md
is generated from their docstrings (``docs/generate.py``), each function with a runnable example
(``docs/examples/NAME.py``, on a bundled core) that the test suite runs and checks against the
core's manifest (``tests/test_api_examples.py``).

Every error a bad input or a bad dump can cause is a :class:`XenscopeError` (a hole in the dump:
:class:`NotInDump`) with a one-line message; nothing here imports gdb.
"""

from .check import CheckResult, DumpReport, Options as CheckOptions, check_dump
from .context import Context, resolve
from .errors import NotInDump, XenscopeError
from .linux.kernel import Kernel, open_kernel
from .linux.modules import Module, Region, for_each_module
from .linux.tasks import Task, for_each_task
from .paging import (Level, Mappings, Paging, Range, Ranges, Translations, Walk, coalesce, enumerate_mappings,
                     read_virt, translate_many, walk)
from .target import Target
from .targets import open_dump
from .xen.host import XenHost, open_host


def page_info(host, mfn):
    """Decode the ``struct page_info`` of machine frame ``mfn`` on a Xen host, as ``xenscope page`` does.

    The layout (which bits mean what) is the host's release's (``host.layout``, chosen when the
    host was opened: :func:`open_host`).

    :param host: a :class:`XenHost` (:func:`open_host`)
    :param mfn: the machine frame number
    :return: a dict: ``mfn``, ``pdx``, ``page_info_va`` (where the record is in Xen's frame table),
        ``count_info`` and ``type_info`` (the raw words), ``count`` (decoded ``count_info``: ``state``
        such as ``inuse``/``free``, ``count``, ``flags``, ``text``), ``type`` (decoded ``type_info``:
        ``type`` such as ``writable``/``l1``...``l4``/``none``, ``count``, ``flags`` such as
        ``validated``/``pinned``, ``text``), ``domain_raw`` (the owner field as stored), ``owner``
        (the owning domain's id, dom_xen/dom_io/dom_cow's included; None when the frame is free or
        the field names no domain), ``owner_name`` (``d0``, ``dom_io``, ``anonymous``...) and
        ``m2p`` (the frame's M2P entry: a guest pfn, or None)
    :raises XenscopeError: ``mfn`` at or beyond ``max_page``, or its record is not in the dump
    """
    return host.page(mfn)


def p2m_check(target, domain=None, xen_syms=None, xen=None, kernel_syms=None, host=None, p2m_va=None,
              p2m_entries=None, cr3=None, cpu=0):
    """Cross-check PV domains' P2M with Xen's M2P and the frames' owners, as ``xenscope p2m-check`` does.

    On a Xen host dump without ``domain``, every PV domain is checked, each P2M found through its
    ``shared_info`` as the toolstack finds it; on an ``xl dump-core`` file, the guest's own P2M
    (M2P and owners from ``host``, a Xen host dump of the same moment, when given).

    :param target: a Xen host dump or an ``xl dump-core`` file (:func:`open_dump`)
    :param domain: check this domain only (its id); default every PV domain
    :param xen_syms: xen-syms (ELF), its ``.map``, or a Xen profile; default: the dump's own
        symbol table
    :param xen: the Xen release (``"4.17.3"``) when the dump does not say
    :param kernel_syms: dom0's System.map (where dom0's P2M list is, instead of its shared_info)
    :param host: for an ``xl dump-core`` file: the path of a Xen host dump for M2P and owners
    :param p2m_va: virtual address of the P2M list (instead of finding it)
    :param p2m_entries: its number of entries
    :param cr3: the page tables to read the list through (default: the domain's own)
    :param cpu: the CPU whose registers reach Xen's page tables
    :return: the ``p2m-check`` command's JSON object as a dict. Every domain: ``domains`` (one
        element per domain checked), ``skipped`` and ``errors`` (domains not checked, and why),
        ``counts`` and ``problems`` (summed), ``xen`` and ``sources`` (where each input came from);
        one domain: the domain's element itself. An element has ``domain``, ``pfns``, ``counts`` (class ->
        number), ``problems`` (findings that are not informational), ``summary`` (class -> one
        line) and ``findings`` (class -> list of dicts with ``pfn``, ``mfn`` and what the class
        needs: ``m2p`` for ``mismatch``, ``owner_id``/``owner_name`` for ``foreign``...). Classes:
        ``mismatch``, ``beyond-max``, ``duplicate``, ``foreign``, ``foreign-allowed``, ``identity``,
        ``invalid-in-range``, ``m2p-orphan`` (README "p2m-check").
    :raises XenscopeError: the P2M, the M2P or the owners cannot be found (the message says which
        option to give)
    """
    from .xen.p2m_sources import P2MOptions, check_p2m
    return check_p2m(target, P2MOptions(domain=domain, kernel_syms=kernel_syms, p2m_va=p2m_va,
                                        p2m_entries=p2m_entries, cr3=cr3, cpu=cpu, host=host, xen=xen,
                                        xen_syms=xen_syms))


__all__ = [
    # functions: a runnable example of each in docs/examples/NAME.py
    "open_dump", "resolve", "walk", "translate_many", "enumerate_mappings", "coalesce", "read_virt",
    "open_host", "page_info", "p2m_check", "open_kernel", "for_each_task", "for_each_module", "check_dump",
    # what they return and raise
    "Target", "Context", "Paging", "Walk", "Level", "Translations", "Mappings", "Ranges", "Range",
    "XenHost", "Kernel", "Task", "Module", "Region", "DumpReport", "CheckResult", "CheckOptions",
    "XenscopeError", "NotInDump",
]
FUNCTIONS = tuple(__all__[:__all__.index("Target")])
CLASSES = tuple(__all__[len(FUNCTIONS):])
