"""Compare the address-space map of ``check --html`` (its strips, in Chromium's DOM) with a truth
that is not xenscope's: a manifest's ranges or pages, or QEMU's ``info mem`` (a test helper)."""

SLOT_SIZES = {"2level": 1 << 22, "pae": 1 << 30, "4level": 1 << 39, "5level": 1 << 48}
RANK = {"r": 1, "x": 2, "w": 3, "wx": 4, "problem": 1}


def pieces(start, end, size):
    """``[start, end)`` cut at multiples of ``size``."""
    out = []
    while start < end:
        stop = min(end, (start // size + 1) * size)
        out.append((start, stop))
        start = stop
    return out


def rights(writable, nx):
    """The map's name of a mapping's rights: ``wx``, ``w``, ``x`` or ``r``."""
    return ("w" if writable else "") + ("" if nx else "x") or "r"


def merged(boxes):
    """``(lane, rights, start, end)`` boxes with the adjacent ones of equal lane and rights joined."""
    out = []
    for box in sorted(boxes, key=lambda b: (b[0], b[2])):
        if out and out[-1][:2] == box[:2] and out[-1][3] == box[2]:
            out[-1] = (box[0], box[1], out[-1][2], box[3])
        else:
            out.append(box)
    return out


def check_map(sec, mode, truth, lanes=("kernel", "user", "problem"), classify=None, rank=None):
    """The strips drawn in the DOM section ``sec`` against ``truth``: ``(lane, class, va_start,
    va_end)`` of the mappings (and ``("problem", "problem", a, b)`` of the problems). A strip drawn
    box by box must show exactly the truth's pieces (adjacent equal ones joined); a strip drawn by
    pixel column must show, in each column of each lane, the highest-ranked class the truth maps
    there. ``classify`` turns a drawn box's rights into the truth's classes (default: the same),
    ``rank`` orders the classes (default: ``wx > w > x > r``). Returns how many strips were drawn by
    column."""
    classify = classify or (lambda what: what)
    rank = rank or RANK
    size = SLOT_SIZES[mode]
    want = {}
    for lane, what, a, b in truth:
        if lane in lanes:
            for pa, pb in pieces(a, b, size):
                want.setdefault(pa - pa % size, []).append((lane, what, pa, pb))
    strips = {int(s.attrs["data-base"], 16): s for s in sec.find("div", class_="slot")
              if any(b.attrs["data-lane"] in lanes for b in s.find("rect", class_="range"))}
    assert set(strips) == set(want)
    binned = 0
    for base, strip in strips.items():
        width = int(strip.find("rect", class_="strip")[0].attrs["width"])
        boxes = [b for b in strip.find("rect", class_="range") if b.attrs["data-lane"] in lanes]
        if not any("binned" in b.attrs["class"].split() for b in strip.find("rect", class_="range")):
            got = [(b.attrs["data-lane"], "problem" if b.attrs["data-lane"] == "problem" else classify(b.attrs["data-rights"]),
                    int(b.attrs["data-va-start"], 16), int(b.attrs["data-va-end"], 16)) for b in boxes]
            assert merged(got) == merged(want[base]), hex(base)
            continue
        binned += 1
        columns = {lane: [0] * width for lane in lanes}
        for lane, what, a, b in want[base]:
            first = (a - base) * width // size
            for col in range(first, max(first + 1, -(-(b - base) * width // size))):
                columns[lane][col] = max(columns[lane][col], rank[what])
        drawn = {lane: [0] * width for lane in lanes}
        for b in boxes:
            what = "problem" if b.attrs["data-lane"] == "problem" else classify(b.attrs["data-rights"])
            for col in range(int(b.attrs["data-col-start"]), int(b.attrs["data-col-end"])):
                drawn[b.attrs["data-lane"]][col] = rank[what]
        assert drawn == columns, hex(base)
    return binned
