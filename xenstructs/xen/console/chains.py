"""Causal chains of mm.c messages: one refused page-table request, from the request (a pin) down
through every table Xen was validating to the one entry, and the page it named, that failed.

What Xen prints for one request, innermost first (xen/arch/x86/mm.c, 4.4-4.20): pinning table C
as an L3 validates each of its entries (``promote_l3_table``, ``alloc_l3_table`` before 4.14);
an L3 entry takes an L2 type reference on the page it points at (``get_page_from_l3e`` ->
``get_page_and_type``), which validates that page B as an L2, whose entries take L1 type
references on the pages they point at. When page A cannot become an L1 (``_get_page_type``:
"Bad type (saw <A's type_info> != exp <L1>)", e.g. A is still mapped writable), the failure
climbs back up, each level printing as it returns:

    Bad type (saw e400000000000001 != exp 2000000000000000) for mfn A    A is writable
    Attempt to create linear p.t. with write perms                      B's entry retried as linear
    Failure -22 in promote_l2_table: slot N                             B's slot N refused
    Error while validating mfn B ... for type 4000000000000000          B cannot be an L2
    Attempt to create linear p.t. with write perms                      C's entry retried as linear
    Failure -22 in promote_l3_table: slot M                             C's slot M refused
    Error while validating mfn C ... for type 6000000000000000          C cannot be an L3
    Error -22 while pinning mfn C                                       the request

"Attempt to create linear p.t." (``get_lN_linear_pagetable``) is printed when the lower-level
reference failed with -EINVAL and the entry has RW set: Xen then tries the entry as a linear
(recursive) mapping of a table of its own level, and refuses it because such mappings must be
read-only. It is a consequence of the failure before it; it is the cause only when that failure
was a Bad type that saw a table of the entry's own level (a real RW linear mapping).

:class:`ChainBuilder` reads the decoded messages in order (per domain/vcpu context) and returns
the chains: ``{"path": [table nodes, outermost first], "root": the first message (the cause),
"request": the pin, "lines": [...]}``.
"""

import bisect

MAX_CHAINS = 200
WINDOW = 40                 # messages of one request are at most this many lines apart
LEAVES = ("bad_type", "bad_flags", "l1e_ref_error", "page_ref", "get_page_error", "io_map",
          "type_overflow", "global_kernel")
STEPS = ("linear_pt", "table_failure")
REQUESTS = {"not_pinned": "unpin", "already_pinned": "pin"}   # refused by themselves
CHAIN_KINDS = LEAVES + STEPS + ("validate_error", "pin_error") + tuple(REQUESTS)


class _Context:
    """What one vcpu printed since its last finished request."""

    def __init__(self):
        self.items = []          # leaves and steps not yet closed by a validate_error
        self.node = None         # the last closed table node, waiting for its parent or a pin
        self.last = 0


class ChainBuilder:
    """Feed every decoded message (:meth:`feed`) and each suppression notice (:meth:`gap`) in log
    order; :meth:`finish` returns the chains."""

    def __init__(self, level_of):
        """``level_of(type_info) -> 1..4 or None`` (the page_info layout's PGT_lN types)."""
        self.level_of = level_of
        self.contexts = {}
        self.chains = []
        self.dropped = 0
        self.gaps = []           # line numbers of "messages suppressed" notices
        self.last_line = None    # of the last chain message, any context

    def gap(self, line_no):
        """Xen's rate limit dropped messages here: what each vcpu printed before it is told on its
        own (the messages that linked it to what follows may be the dropped ones)."""
        self.gaps.append(line_no)
        for key, state in self.contexts.items():
            before = len(self.chains)
            self._flush(state, _key_context(key))
            if state.last == self.last_line:         # its next message may be among the dropped
                for chain in self.chains[before:]:
                    chain["gap_after"] = line_no

    def feed(self, line_no, kind, fields, context):
        if kind not in CHAIN_KINDS:
            return
        if len(self.chains) >= MAX_CHAINS:            # bounded: only count the requests beyond
            if kind in ("validate_error", "pin_error") or kind in REQUESTS:
                self.dropped += 1
            return
        self.last_line = line_no
        key = (str(context["domain"]), context["vcpu"]) if context else None
        state = self.contexts.setdefault(key, _Context())
        if line_no - state.last > WINDOW:
            self._flush(state, context)
        state.last = line_no
        message = {"line_no": line_no, "kind": kind, "fields": fields}
        if kind in LEAVES:
            leaves = _leaves(state.items)
            if state.node is not None or (leaves and (fields.get("mfn") is None
                                                      or leaves[-1]["fields"].get("mfn") != fields["mfn"])):
                self._flush(state, context)          # the previous request ended unexplained
            state.items.append(message)             # same mfn: a follow-up (Bad type, Error getting mfn)
        elif kind in STEPS:
            state.items.append(message)
        elif kind == "validate_error":
            self._close_table(state, message, context)
        elif kind in REQUESTS:
            self._flush(state, context)
            self._emit([], [message], [message["line_no"]], dict(message, request=REQUESTS[kind]), context)
        else:
            self._pin(state, message, context)

    def _close_table(self, state, message, context):
        """An "Error while validating": the table node, with the messages that explain it."""
        fields, items = message["fields"], state.items
        failure = next((item for item in reversed(items) if item["kind"] == "table_failure"), None)
        level = self.level_of(fields["type"]) or (failure and failure["fields"]["level"])
        node = {"mfn": fields["mfn"], "pfn": fields["pfn"], "level": level, "type": fields["type"],
                "caf": fields["caf"], "taf": fields["taf"], "line_no": message["line_no"],
                "slot": failure["fields"]["slot"] if failure else None,
                "rc": failure["fields"].get("rc") if failure else None,
                "failure_line": failure["line_no"] if failure else None,
                "linear_lines": [item["line_no"] for item in items if item["kind"] == "linear_pt"],
                "linear_disabled": any(item["kind"] == "linear_pt" and item["fields"]["disabled"]
                                       for item in items),
                "child": None, "leaves": _leaves(items)}
        below = state.node
        if not node["leaves"] and below is not None and failure is not None and level \
                and below["level"] == level - 1:
            node["child"] = below                     # the table below failed first, inside this one
        elif below is not None:
            self._emit_node(below, None, context)     # an unrelated earlier failure
        node["lines"] = sorted(set((below["lines"] if node["child"] else [])
                                   + [item["line_no"] for item in items] + [message["line_no"]]))
        state.items, state.node = [], node

    def _pin(self, state, message, context):
        mfn = message["fields"]["mfn"]
        if state.node is not None and state.node["mfn"] == mfn:
            node, state.node = state.node, None
            self._emit_node(node, message, context)
            return
        leaves = _leaves(state.items)
        if leaves and leaves[0]["fields"].get("mfn") == mfn:      # the page itself was refused
            items, state.items = state.items, []
            self._emit([], items, [item["line_no"] for item in items], message, context)
            return
        self._flush(state, context)
        self._emit([], [], [], message, context)

    def _flush(self, state, context):
        """Emit what a request left without a pin (mmu_update, a new baseptr...)."""
        if state.node is not None:
            self._emit_node(state.node, None, context)
            state.node = None
        if _leaves(state.items):
            self._emit([], state.items, [item["line_no"] for item in state.items], None, context)
        state.items = []

    def _emit_node(self, node, request, context):
        path = [node]
        while path[-1]["child"] is not None:
            path.append(path[-1]["child"])
        self._emit(path, path[-1]["leaves"], node["lines"], request, context)

    def _emit(self, path, items, lines, request, context):
        """One chain: ``path`` outermost table first, ``items`` the innermost messages (leaves first)."""
        if len(self.chains) >= MAX_CHAINS:
            self.dropped += 1
            return
        leaves = _leaves(items)
        lines = sorted(set(lines + ([request["line_no"]] if request else [])
                           + [leaf["line_no"] for leaf in leaves]))
        chain = {"line_no": lines[0] if lines else None, "last_line": lines[-1] if lines else None,
                 "lines": lines, "context": _context(context),
                 "path": [{key: value for key, value in node.items() if key not in ("child", "leaves", "lines")}
                          for node in path],
                 "root": leaves[0] if leaves else None, "leaves": leaves, "request": None,
                 "linear_lines": [] if path else [item["line_no"] for item in items
                                                  if item["kind"] == "linear_pt"],
                 "gap_before": self._gap_before(lines[0]) if lines else None, "gap_after": None}
        if request is not None:
            chain["request"] = {"kind": request.get("request", "pin"), "mfn": request["fields"]["mfn"],
                                "line_no": request["line_no"], "rc": request["fields"].get("rc")}
        self.chains.append(chain)

    def _gap_before(self, first):
        """The line of a "messages suppressed" notice just before ``first`` (within WINDOW), or None."""
        at = bisect.bisect_left(self.gaps, first)
        return self.gaps[at - 1] if at and first - self.gaps[at - 1] <= WINDOW else None

    def finish(self):
        """Every chain, in the order their first line appeared."""
        for key, state in self.contexts.items():
            self._flush(state, _key_context(key))
        self.contexts = {}
        return sorted(self.chains, key=lambda chain: chain["line_no"] or 0)


def _key_context(key):
    return None if key is None else {"domain": key[0], "vcpu": key[1]}


def _leaves(items):
    return [item for item in items if item["kind"] in LEAVES or item["kind"] in REQUESTS]


def _context(context):
    if not context:
        return None
    domain = context["domain"]
    return {"domain": int(domain) if isinstance(domain, str) and domain.isdigit() else domain,
            "vcpu": context["vcpu"]}
