"""The pictures of ``check --html`` as inline SVG (no script, no network): each takes a command's JSON
(:mod:`xenstructs.views`) and returns markup.

* :func:`census_chart`: ``frames --summary``'s census, one stacked bar per owner, a segment per type;
* :func:`domains_table`: ``domains``' list, a row per domain with a bar of the frames it owns;
* :func:`address_map`: ``maps``' ranges, a strip per top-level slot of the paging mode (PML4 slot of
  512 GiB in 4-level, PML5 slot of 256 TiB in 5-level, PDPT slot of 1 GiB in PAE, PGD slot of 4 MiB
  in 2-level), each range a box at its place in the slot, coloured by its rights (writable and
  executable, writable, executable, read-only), supervisor ranges above, user ranges below, the
  enumeration's problems as black marks. A strip of more than :data:`EXACT` pieces (a real kernel's
  direct map and vmalloc area: tens of thousands of ranges) is drawn by pixel column: a box per run
  of columns whose most permissive rights (writable and executable, then writable, then executable)
  are the same: at most 760 boxes per lane of a strip.

Every drawn box carries its numbers as ``data-*`` attributes and a ``<title>`` tooltip.
"""

from html import escape

TYPE_COLOURS = {"l1": "#9ecae1", "l2": "#6baed6", "l3": "#3182bd", "l4": "#08519c", "seg_desc": "#756bb1",
                "writable": "#fd8d3c", "shared": "#31a354", "none": "#bdbdbd"}
RIGHTS = (("wx", "writable and executable", "#d62728"), ("w", "writable, no-execute", "#ff7f0e"),
          ("x", "executable, read-only", "#1f77b4"), ("r", "read-only, no-execute", "#8c8c8c"))
RIGHTS_COLOURS = {key: colour for key, _, colour in RIGHTS}
SLOT_BITS = {"2level": (22, 1023), "pae": (30, 3), "4level": (39, 511), "5level": (48, 511)}
STRIP = 760                                 # px: the width of a whole slot
EXACT = 64                                  # pieces a strip draws one by one; more: by pixel column


def _attrs(**items):
    return "".join(f' {k.replace("_", "-")}="{escape(str(v))}"' for k, v in items.items())


def legend(entries):
    """A row of colour keys: ``entries`` of ``(label, colour)``."""
    return '<div class="legend">' + "".join(
        f'<span><i style="background:{colour}"></i>{escape(label)}</span>' for label, colour in entries) + "</div>"


def census_chart(census):
    """One stacked bar per owner (most frames first), a segment per page type, its count on the right."""
    owners = sorted(census["by_owner"].items(), key=lambda item: (-sum(item[1].values()), item[0]))
    most = max([sum(types.values()) for _, types in owners] or [1]) or 1
    row, label, width = 22, 110, 520
    out = [f'<svg class="census" width="{label + width + 70}" height="{row * len(owners) + 4}" role="img">']
    for i, (owner, types) in enumerate(owners):
        y, x = i * row + 2, label
        out.append(f'<text x="{label - 6}" y="{y + 14}" text-anchor="end">{escape(owner)}</text>')
        for kind in sorted(types, key=lambda t: list(TYPE_COLOURS).index(t) if t in TYPE_COLOURS else 99):
            n = types[kind]
            w = max(1.0, width * n / most)
            out.append(f'<rect class="seg"{_attrs(data_owner=owner, data_type=kind, data_count=n)} x="{x:.1f}" '
                       f'y="{y}" width="{w:.1f}" height="{row - 6}" fill="{TYPE_COLOURS.get(kind, "#636363")}">'
                       f'<title>{escape(owner)}: {n} {escape(kind)} frame(s)</title></rect>')
            x += w
        out.append(f'<text x="{x + 5:.1f}" y="{y + 14}">{sum(types.values())}</text>')
    out.append("</svg>")
    states = ", ".join(f"{k} {v}" for k, v in sorted(census.get("states", {}).items()))
    return ("".join(out) + legend([(t, c) for t, c in TYPE_COLOURS.items()])
            + f'<p class="caption">frames in use by owner and type; frame states: {escape(states)}</p>')


def domains_table(domains):
    """A row per domain (id, name, frames in use with a bar, tot_pages, max_pages, struct domain, source)."""
    most = max([d.get("frames") or 0 for d in domains] or [1]) or 1
    rows = []
    for d in domains:
        frames = d.get("frames")
        bar = "" if frames is None else (
            f'<svg width="160" height="12"><rect x="0" y="1" width="{max(1.0, 160 * frames / most):.1f}" '
            f'height="10" fill="#3182bd"><title>{frames} frame(s)</title></rect></svg>')
        va = d.get("struct_va")
        cells = [d.get("id"), d.get("name"), frames, d.get("tot_pages"), d.get("max_pages"),
                 None if va is None else f"{va:#x}", d.get("source")]
        rows.append(f'<tr class="domain"{_attrs(data_id=d.get("id"), data_name=d.get("name"))}>'
                    + "".join(f"<td>{'' if c is None else escape(str(c))}</td>" for c in cells[:3])
                    + f"<td>{bar}</td>"
                    + "".join(f"<td>{'' if c is None else escape(str(c))}</td>" for c in cells[3:]) + "</tr>")
    return ('<table class="domains"><thead><tr><th>id</th><th>name</th><th>frames</th><th></th>'
            "<th>tot_pages</th><th>max_pages</th><th>struct domain</th><th>found by</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def rights_of(rng):
    """``wx``, ``w``, ``x`` or ``r`` for a ``maps`` range (``nx`` null counts as executable)."""
    return ("w" if rng["writable"] else "") + ("" if rng.get("nx") else "x") or "r"


def slot_pieces(mode, start, end):
    """``[(slot index, slot base va, piece start, piece end)]``: ``[start, end)`` cut at the slots."""
    shift, mask = SLOT_BITS[mode]
    span = 1 << shift
    out = []
    while start < end:
        base = start & ~(span - 1)
        stop = min(end, base + span)
        out.append(((start >> shift) & mask, base, start, stop))
        start = stop
    return out


def address_map(maps):
    """A strip per top-level slot holding a range or a problem (see the module docstring)."""
    mode = maps.get("mode")
    if mode not in SLOT_BITS:
        return f'<p class="caption">no address-space map: paging mode {escape(str(mode))}</p>'
    span = 1 << SLOT_BITS[mode][0]
    slots = {}
    for rng in maps.get("ranges") or []:
        for index, base, a, b in slot_pieces(mode, rng["va_start"], rng["va_end"]):
            slots.setdefault((base, index), []).append(("user" if rng["user"] else "kernel", rights_of(rng), a, b, rng))
    for p in maps.get("problems") or []:
        for index, base, a, b in slot_pieces(mode, p["va_start"], p["va_end"]):
            slots.setdefault((base, index), []).append(("problem", p["reason"], a, b, p))
    rows = [_strip(index, base, span, boxes) for (base, index), boxes in sorted(slots.items())]
    head = (f'<p class="caption">{escape(mode)}, CR3 {maps.get("cr3", 0):#x}: {len(maps.get("ranges") or [])} '
            f'range(s) of equal rights in {len(slots)} top-level slot(s), each strip one slot of '
            f'{_size(span)} (supervisor above, user below); a strip of more than {EXACT} pieces is drawn '
            f"by pixel column, each in the most permissive rights mapped in it</p>")
    keys = [(text, colour) for _, text, colour in RIGHTS] + [("problem (reserved, not in dump, loop)", "#000")]
    return head + legend(keys) + '<div class="slots">' + "".join(rows) + "</div>"


LANES = {"kernel": (2, 13), "user": (16, 13), "problem": (30, 5)}       # y, height


def _strip(index, base, span, boxes):
    out = [f'<div class="slot"{_attrs(data_slot=index, data_base=f"{base:#x}")}>'
           f'<span class="slotname">slot {index}<br><code>{base:#018x}</code></span>'
           f'<svg width="{STRIP + 170}" height="36"><rect class="strip" x="0" y="1" width="{STRIP}" height="30" '
           f'fill="#f4f4f4"/>']
    mapped = [b - a for lane, _, a, b, _ in boxes if lane != "problem"]
    out.append(f'<text x="{STRIP + 8}" y="21">{len(mapped)} range(s), {_size(sum(mapped))}</text>')
    out += _exact(base, span, boxes) if len(boxes) <= EXACT else _binned(base, span, boxes)
    out.append("</svg></div>")
    return "".join(out)


def _exact(base, span, boxes):
    """A box per piece, at its place (at least 2 px wide: a 4 KiB page in 512 GiB is still seen)."""
    out = []
    for lane, rights, a, b, src in boxes:
        x, w = STRIP * (a - base) / span, max(2.0, STRIP * (b - a) / span)
        colour = "#000" if lane == "problem" else RIGHTS_COLOURS[rights]
        what = (f"{src['reason']} at {src['level']}" if lane == "problem"
                else f"{lane} {rights}" + ("" if src.get("pa_start") is None else f", pa {src['pa_start']:#x}"))
        y, h = LANES[lane]
        out.append(f'<rect class="range"{_attrs(data_lane=lane, data_rights=rights, data_va_start=f"{a:#x}", data_va_end=f"{b:#x}")}'
                   f' x="{x:.2f}" y="{y}" width="{w:.2f}" height="{h}" fill="{colour}">'
                   f"<title>{a:#x}-{b:#x} ({_size(b - a)}): {escape(what)}</title></rect>")
    return out


def columns(base, span, a, b):
    """The pixel columns ``[first, end)`` of a strip that ``[a, b)`` touches."""
    first = (a - base) * STRIP // span
    return first, max(first + 1, -(-(b - base) * STRIP // span))


def _binned(base, span, boxes):
    """A box per run of pixel columns of a lane whose most permissive rights are the same."""
    rank = {"r": 1, "x": 2, "w": 3, "wx": 4}
    best = {lane: [0] * STRIP for lane in LANES}
    for lane, rights, a, b, _ in boxes:
        level = 1 if lane == "problem" else rank[rights]
        row = best[lane]
        first, end = columns(base, span, a, b)
        for col in range(first, end):
            if row[col] < level:
                row[col] = level
    names = {v: k for k, v in rank.items()}
    out = []
    for lane, row in best.items():
        col = 0
        while col < STRIP:
            end = col + 1
            while end < STRIP and row[end] == row[col]:
                end += 1
            if row[col]:
                out.append(_column_box(lane, "problem" if lane == "problem" else names[row[col]], base, span, col, end))
            col = end
    return out


def _column_box(lane, rights, base, span, first, end):
    a, b = base + first * span // STRIP, base + end * span // STRIP
    colour = "#000" if lane == "problem" else RIGHTS_COLOURS[rights]
    y, h = LANES[lane]
    return (f'<rect class="range binned"{_attrs(data_lane=lane, data_rights=rights, data_col_start=first, data_col_end=end)}'
            f' x="{first}" y="{y}" width="{end - first}" height="{h}" fill="{colour}">'
            f"<title>{a:#x}-{b:#x}: {escape(lane)}, most permissive {escape(rights)}</title></rect>")


def _size(n):
    """``n`` bytes in the largest binary unit it reaches: exact when it is a whole number of it."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n >> shift} {unit}" if n % (1 << shift) == 0 else f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"
