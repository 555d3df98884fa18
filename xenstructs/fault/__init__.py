"""Explain one x86 page fault: which architectural rule fired, with Xen PV specifics.

Inputs are whatever is known about the faulting vCPU (:class:`FaultState`: CR2, the error code,
IP, CS, CR0/CR3/CR4, EFER, EFLAGS, PKRU, the paging mode, page-table entries, the Xen version and
the kind of guest), each with the source it came from. Nothing missing is assumed silently: a rule
that needs a missing piece is ``not-evaluated`` and says which piece.

:func:`explain` infers the access (:mod:`.access`: who made it, CPL, user or supervisor, implicit,
read/write/fetch, shadow stack, and why it believes each), the view of the walk (:mod:`.walk`) and the
context (:mod:`.context`: mode, EFER.NXE, CR0.WP, CR4, EFLAGS, PKRU, Xen version); then runs the rules
of :data:`.rules.RULES` in the order the CPU applies them (SDM vol. 3A §4.6-4.7): present at every
level, reserved bits, write vs RW (CR0.WP for supervisor writes), user vs US, fetch vs XD, SMEP, SMAP,
protection keys, shadow stack; then names one cause. Xen PV rules (reference xen-facts.md §2.2,
§7.4): a 32-bit PV kernel runs in ring 1, so its accesses are supervisor accesses, and Xen
4.5.0-4.5.3 / 4.6.0-4.6.2 leave SMEP/SMAP on while it runs (fixed by ea3e8edfdb in 4.7.0, backported
to 4.5.4 and 4.6.3: :mod:`.versions`); a 64-bit PV kernel runs in ring 3, so the CPU sees user
accesses (Xen resets the error code's U bit to the guest's mode when it reflects the fault).

Adding a rule is one function ``rule(access, walk, context) -> Verdict`` in :mod:`.rules` and one
row in the table ``RULES`` at the end of that file (xenstructs/fault/rules.py); conditions shared by
several rules are in :mod:`.conditions`.

Files: ``state.py`` (FaultState, Explanation, error-code bits), ``access.py``, ``assumptions.py`` (when
no rule fires: the inputs assumed and the rules that fire with the other value), ``walk.py``,
``context.py``, ``conditions.py``, ``rules.py``, ``explainer.py`` (:func:`explain`), ``insn.py``
(hex bytes, capstone), ``versions.py`` (the Xen releases that matter), ``case.py`` (:func:`~.case.explain_fault`: one fault's inputs gathered from options, a
log and a dump, as the ``fault`` command and ``xenscope check`` use it). Console and oops excerpts
are read by :mod:`xenstructs.xen.console.faultlog`. Pure Python: no gdb. Capstone (installed with pwntools) is imported only to disassemble.
"""

from .access import Access
from .explainer import explain
from .insn import disassemble, parse_hex_bytes
from ..xen.console.faultlog import parse_log, read_log
from .rules import RULES, Verdict
from .state import ENTRY_ORDER, GUEST_TEXT, GUESTS, Explanation, FaultState
from .versions import FIX_COMMIT, xen_clears_smep_smap_for_pv32

__all__ = ["Access", "ENTRY_ORDER", "Explanation", "FIX_COMMIT", "FaultState", "GUESTS", "GUEST_TEXT", "RULES",
           "Verdict", "disassemble", "explain", "parse_hex_bytes", "parse_log", "read_log",
           "xen_clears_smep_smap_for_pv32"]
