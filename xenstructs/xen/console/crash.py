"""Xen's crash blocks in a console log: the register dump (``----[ Xen-... ]----``, CPU, RIP/CS,
RFLAGS and CONTEXT, the general registers, cr0/cr4, cr3/cr2, segments), the guest's stack words,
Xen's call trace, and the lines that lead to it: ``dNvM Unhandled: vec 14, #PF[...]`` and its page
walk, a page walk printed by a fixup, ``domain_crash_sync called from entry.S: fault at ...``,
``Domain N (vcpu#M) crashed on cpu#C``, ``Xen SMAP violation``, ``FATAL PAGE FAULT``.

:class:`CrashReader` reads line by line (the annotator and the fault-log reader feed it) and
:meth:`CrashReader.finish` returns one dict per register dump, with ``access``: who made the access
that ended in the crash, and the fault's inputs for ``xenscope fault``.

Who made the access (Xen 4.17.7 sources, ``xen/arch/x86``; checked on real crashes):

* ``CONTEXT: hypervisor``: the registers are Xen's own (``show_registers`` of Xen's frame).
* ``CONTEXT: pv guest (dNvM)``: the registers are the guest's, saved when it entered Xen; cr0, cr3
  and cr4 are read from the CPU, cr2 is the vCPU's (``arch_get_cr2``: the guest's last fault address).
* ``domain_crash_sync ... fault at`` (``asm_domain_crash_synchronous``) prints one of: a
  ``create_bounce_frame`` check that failed (``create_bounce_frame_bad_sp``, or
  ``create_bounce_frame_bad_bounce_ip`` when the guest registered no handler: then ``Unhandled:``
  was printed first by ``pv_inject_event``) -- no access faulted; or ``last_extable_addr`` after a
  fixup: a store of the bounce frame on the guest's stack faulted in Xen, and the fixup
  (``domain_crash_page_fault_Nx8``, ``compat_crash_page_fault*``) printed the page walk of the
  address just before. Since 4.14 (c65da4f721) ``last_extable_addr`` is the fixup label itself
  (``domain_crash_page_fault_6x8``: the 6th word, SS); before, the faulting store in
  ``create_bounce_frame``.
"""

import re

from .lines import split_context
from .messages import parse_message

MAX_CRASHES = 20          # register dumps kept
BLOCK_LINES = 200         # a register dump never runs longer
LEAD_LINES = 40           # lines before a dump whose walks / Unhandled / domain_crash_sync belong to it
STACK_WORDS = 64          # guest stack words kept per dump

_GPRS = re.compile(r"\b(r[a-d]x|r[sd]i|r[bs]p|r\d+|fsb|gsb|gss|e[a-d]x|e[sd]i|e[bs]p):\s+([0-9a-fA-F]+)")
_CALL = re.compile(r"^\s*\[<([0-9a-fA-F]+)>\]\s+(?:[RS]\s+)?(\S+)")
_WORDS = re.compile(r"^\s+((?:[0-9a-fA-F]{8,16}\s*)+)$")
_HEX_LINE = re.compile(r"^\s*(?:<?[0-9a-fA-F]{2,16}>?\s*)+$")
_STACK_NOTES = ("Stack empty", "Fault while accessing", "Guest-inaccessible", "User mode stack",
                "Inaccessible guest")
_FATAL = re.compile(r"(?:Xen |fatal )SM([AE])P violation|FATAL PAGE FAULT|FATAL TRAP")
_BOUNCE_SYMBOLS = ("create_bounce_frame", "compat_create_bounce_frame")
_FIXUP_LABELS = re.compile(r"(domain_crash_page_fault_(\d)x8|compat_crash_page_fault(?:_(\d))?|dom_crash_sync_extable)")
AFTER_KINDS = ("walk", "fatal_pf", "fatal_trap", "fatal", "panic", "xen_smap", "error_code")
CRASH_KINDS = ("unhandled", "domain_crash_sync", "domain_crashed", "xen_smap", "fatal_pf", "fatal_trap",
               "fatal", "panic")
_DEBUG_KEY = re.compile(r"'(.)' pressed -> ")      # keyhandler.c: a register dump asked for, not a crash
STORE_WORDS = {0: "RCX", 1: "R11", 2: "RIP (or the error code)", 3: "CS", 4: "RFLAGS", 5: "RSP", 6: "SS"}


class CrashReader:
    """Feed console lines (:meth:`feed`), then :meth:`finish` for the crash dicts."""

    def __init__(self):
        self.crashes = []
        self._block = None            # the register dump being read
        self._section = None          # "stack", "trace" or "xen": guest stack words, call trace, Xen stack
        self._events = []             # recent lead events: walks, Unhandled, domain_crash_sync, crashed
        self._walk = None

    def feed(self, line_no, body):
        """One line, prefixes already stripped (:func:`.lines.strip_prefix`)."""
        if self._block is not None and self._in_block(line_no, body):
            return
        key = _DEBUG_KEY.search(body)
        if key:
            self._event(line_no, "debug_key", {"key": key.group(1)}, None)
            return
        if not any(word in body for word in ("Xen", "crash", "Unhandled", "L1[", "L2[", "L3[", "L4[",
                                             "walk", "FATAL", "SM", "Panic", "error_code")):
            return
        context, rest = split_context(body)
        parsed = parse_message(rest)
        if parsed is None:
            if _FATAL.search(rest):
                self._event(line_no, "fatal", {"text": _FATAL.search(rest).group(0)}, context)
            return
        kind, fields = parsed
        if kind == "crash_header":
            self._open(line_no, fields)
        elif kind == "walk_start":
            self._walk = {"line_no": line_no, "last": line_no, "va": fields["va"], "levels": []}
            self._event(line_no, "walk", self._walk, context)
        elif kind == "walk_entry" and self._walk is not None and line_no - self._walk["last"] <= 2:
            self._walk["levels"].append(fields)
            self._walk["last"] = line_no
        elif kind in ("unhandled", "domain_crash_sync", "domain_crashed", "xen_smap", "fatal_pf", "fatal_trap",
                      "panic", "error_code"):
            self._event(line_no, kind, fields, context)

    def _event(self, line_no, kind, fields, context):
        self._events = [event for event in self._events if line_no - event["line_no"] <= LEAD_LINES][-30:]
        self._events.append({"line_no": line_no, "kind": kind, "fields": fields, "context": context})
        if self.crashes and kind in AFTER_KINDS:
            last = self.crashes[-1]
            if line_no - last["line_no"] <= BLOCK_LINES and last["context"] == "hypervisor":
                last["after"].append({"line_no": line_no, "kind": kind, "fields": fields})

    # -- the register dump -------------------------------------------------------------------
    def _open(self, line_no, fields):
        if len(self.crashes) >= MAX_CRASHES:
            return
        lead = [event for event in self._events if line_no - event["line_no"] <= LEAD_LINES]
        kinds = {event["kind"] for event in lead}
        asked = "debug_key" in kinds and not kinds & set(CRASH_KINDS)
        self._block = {"line_no": line_no, "version": fields["version"], "debug": fields["debug"],
                       "debug_key": asked,
                       "cpu": None, "context": None, "vcpu": None, "registers": {}, "rip_symbol": None,
                       "call_trace": [], "guest_stack": None, "lead": lead, "after": [], "last": line_no}
        self._events = []
        self._section = None
        self.crashes.append(self._block)

    def _in_block(self, line_no, body):
        """Read ``body`` into the open dump; False (and the dump closed) when it is not part of it."""
        block = self._block
        if line_no - block["line_no"] > BLOCK_LINES:
            self._block = None
            return False
        if self._section == "stack" and self._stack_words(block, body):
            return True
        if self._section == "trace":
            call = _CALL.match(body)
            if call:
                block["call_trace"].append({"address": int(call.group(1), 16), "symbol": call.group(2)})
                return True
        pairs = _GPRS.findall(body) if self._section is None else []
        block["registers"].update((name, int(value, 16)) for name, value in pairs)
        parsed = parse_message(body)
        if parsed is not None:
            return self._block_message(block, *parsed)
        if body.startswith(("Xen code around", "Xen stack trace from")):
            self._section = "xen"             # Xen's code bytes and stack words: not kept
            return True
        if pairs or (self._section == "xen" and _HEX_LINE.match(body)):
            return True
        self._block = None
        return False

    @staticmethod
    def _stack_words(block, body):
        """The guest stack's words (and Xen's "Stack empty." / "Fault while accessing ..." notes)."""
        stack = block["guest_stack"]
        words = _WORDS.match(" " + body)
        if words:
            stack["words"].extend(int(word, 16) for word in words.group(1).split()[:STACK_WORDS - len(stack["words"])])
            return True
        text = body.strip()
        if text.startswith(_STACK_NOTES):
            stack["note"] = text
            return True
        return False

    def _block_message(self, block, kind, fields):
        registers = block["registers"]
        if kind == "crash_cpu":
            block["cpu"] = fields["cpu"]
        elif kind == "crash_rip":
            registers.update(rip=fields["rip"], cs=fields["cs"])
            block["rip_symbol"] = fields["symbol"]
        elif kind == "crash_rflags":
            registers["rflags"] = fields["rflags"]
            block["context"], block["vcpu"] = fields["context"], fields["vcpu"]
        elif kind in ("crash_cr0_cr4", "crash_cr3_cr2", "crash_segments"):
            registers.update(fields)
        elif kind == "guest_stack":
            block["guest_stack"] = {"sp": fields["sp"], "ss": fields["ss"], "words": [], "note": None}
            self._section = "stack"
        elif kind == "xen_call_trace":
            self._section = "trace"
        else:
            self._block = None
            return False
        return True

    def finish(self):
        """The crash dicts (:func:`.crashstory.describe`), in log order."""
        from .crashstory import describe
        return [describe(block) for block in self.crashes if not block["debug_key"]]


def classify_sync(sync, walks, unhandled):
    """What a ``domain_crash_sync`` line means: ``fixup`` (a store of the bounce frame faulted in
    Xen; ``walk`` is the page walk the fixup printed), ``no-handler`` (no handler registered:
    ``Unhandled`` came first), ``check`` (a bad stack pointer or null selector), ``selector`` (a
    segment load of the compat bounce frame faulted) or ``unknown``; with the bounce frame's store
    index when the fixup label names it."""
    symbol = (sync["fields"].get("symbol") or "").split("#")[-1]
    name = symbol.split("+")[0]
    walk = next((event["fields"] for event in reversed(walks)
                 if event["fields"]["last"] >= sync["line_no"] - 1 and not _after_unhandled(event, unhandled)),
                None)
    label = _FIXUP_LABELS.match(name)
    out = {"line_no": sync["line_no"], "address": sync["fields"]["address"], "symbol": sync["fields"].get("symbol"),
           "path": "unknown", "store": None, "walk": None}
    if label and label.group(1) == "dom_crash_sync_extable":
        out["path"] = "selector"
    elif label:
        out.update(path="fixup", walk=walk,
                   store=int(label.group(2)) if label.group(2) else (int(label.group(3)) if label.group(3) else None))
    elif name in _BOUNCE_SYMBOLS and walk is not None:
        out.update(path="fixup", walk=walk)
    elif name in _BOUNCE_SYMBOLS:
        out["path"] = "no-handler" if unhandled is not None else "check"
    return out


def _after_unhandled(walk_event, unhandled):
    """True when the walk is the one ``pv_inject_event`` printed right after an Unhandled #PF line."""
    return unhandled is not None and walk_event["line_no"] == unhandled["line_no"] + 1


__all__ = ["CrashReader", "classify_sync", "STORE_WORDS"]
