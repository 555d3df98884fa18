"""Xen's console log: annotate it (``xenscope log``: every mm.c / traps.c message that carries numbers
gets one plain sentence with the numbers decoded, then a summary per message kind, per mfn and per
domain/vcpu, and "the likely story"), and read a fault from it (``xenscope fault --log``).

* :mod:`.lines` -- one console line: the "(XEN)" / timestamp / "<N>" prefixes, the "Xen version"
  banner, the gdprintk/gprintk ``file.c:NNN:dN`` / ``dNvM`` context, bounded line reading. The only
  copies of these regexes in xenscope.
* :mod:`.messages` -- every message kind, each declared once: regex, fields, summary name and the
  function that explains it.
* :mod:`.sentences` -- wording the explanations share (page_info states, M2P values, errno names,
  24-bit PTE flags, page-table entries, domains, Xen's regions).
* :mod:`.annotate` -- the :class:`Annotator`, the layout choice, :func:`annotate_file`,
  :func:`annotate_lines`.
* :mod:`.story` -- the likely story: rules over the annotator's summary.
* :mod:`.faultlog` -- :func:`parse_log` / :func:`read_log`, the fault-log reader of ``fault --log``.
* :mod:`.crash`, :mod:`.crashstory` -- Xen's crash blocks (the register dump, ``domain_crash_sync``,
  ``Unhandled``, the fixup's page walk): whose registers, who made the access, its story.

Adding a message kind is one declaration in :mod:`.messages`: an ``@message(kind, summary name,
keyword, regex, fields)`` decorator on the function that explains it, e.g.::

    # mm.c get_page_from_mfn()
    @message("page_ref", "Could not get page ref", "Could not get page ref",
             r"Could not get page ref for (?:pfn|mfn) " + HEX,
             lambda g: {"mfn": hex_int(g[0])})
    def _page_ref(fields, pages):
        return {}, f"Xen could not take a reference on mfn {fields['mfn']:#x} ..."

The annotator, the summaries and :data:`KIND_TEXT` pick it up; a story rule for it goes in
:mod:`.story`.
"""

from .annotate import Annotator, annotate_file, annotate_lines, choose_layout, prescan
from .faultlog import parse_log, read_log
from .lines import MAX_LINE, banner_version, iter_lines, split_context, strip_prefix
from .messages import BY_KIND, KIND_TEXT, MESSAGES, parse_message
from .sentences import decode_flags24, pfn_text, va_region
from .story import explain_walk

__all__ = ["Annotator", "annotate_file", "annotate_lines", "choose_layout", "prescan", "parse_log", "read_log",
           "MAX_LINE", "banner_version", "iter_lines", "split_context", "strip_prefix", "BY_KIND", "KIND_TEXT",
           "MESSAGES", "parse_message", "decode_flags24", "pfn_text", "va_region", "explain_walk"]
