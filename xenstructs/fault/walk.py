"""The page-table entries known along the walk of CR2 (:class:`WalkView`): from a
:class:`~xenstructs.paging.Walk` in a dump, or from entries given as options or found in a log."""

from __future__ import annotations

from typing import List, Optional, Tuple

from .. import decode
from ..errors import XenscopeError
from .state import ENTRY_ORDER

ENTRY_P, ENTRY_RW, ENTRY_US, ENTRY_D = 1, 1 << 1, 1 << 2, 1 << 6    # entry bits the rules read (XD: bit 63)


class WalkView:
    """The known page-table entries along the walk of CR2, top down.

    ``levels`` is ``[(entry name, value)]`` up to where the walk ends; ``complete`` says every level
    from the root to that end is known; ``missing`` names the levels of the mode that are not known.
    """

    def __init__(self, levels, mode, complete, origin, nxe, maxphyaddr, cr4, stop_note=None):
        self.mode = mode
        self.levels: List[Tuple[str, int]] = levels
        self.complete = complete
        self.origin = origin
        self.nxe = nxe                 # EFER.NXE as the explainer knows it (set once it is inferred)
        self.maxphyaddr = maxphyaddr
        self.cr4 = cr4
        self.stop_note = stop_note     # why the walk in the dump ended early, for the notes
        self.decode_mode = mode or "5level"   # decode mode when the real one is unknown (low bits agree)
        self.missing = [name for name in self._names() if name not in dict(levels)]
        self.missing_word = "not in the dump" if origin.startswith("walk") else "not given"

    def _names(self):
        if self.mode:
            return [decode.ENTRY_NAMES[table] for table in decode.LEVELS[self.mode]]
        return [name for name in ENTRY_ORDER if name in dict(self.levels)]

    def decode(self, name, value):
        return decode.decode_entry(value, self.decode_mode, name,
                                   nxe=bool(self.nxe) if self.nxe is not None else True,
                                   maxphyaddr=self.maxphyaddr or 52, cr4=self.cr4)

    def rights_levels(self):
        """Present levels that carry rights (a PAE PDPTE has none)."""
        return [(name, value) for name, value in self.levels
                if value & ENTRY_P and not (self.mode == "pae" and name == "PDPTE")]

    def leaf(self) -> Optional[Tuple[str, int]]:
        """``(name, value)`` of the last level when it is a present leaf, else None."""
        if not self.levels:
            return None
        name, value = self.levels[-1]
        decoded = self.decode(name, value)
        return (name, value) if decoded["present"] and decoded["leaf"] else None

    def partial(self):
        """``" (checked PTE; PDPTE, PDE not given)"`` or ``""`` for a complete walk."""
        if self.complete or not self.missing:
            return ""
        return (f" (checked {', '.join(name for name, _ in self.levels)}; {', '.join(self.missing)} "
                f"{self.missing_word})")


def has_entries(walk: Optional[WalkView]) -> bool:
    """True when at least one entry of the walk is known."""
    return walk is not None and bool(walk.levels)


def walk_view(state, walk) -> Optional[WalkView]:
    """:class:`WalkView` of a paging.Walk (when no entries were given), or of the state's entries, or None.

    :raises XenscopeError: an entry given does not exist in the paging mode
    """
    cr4 = state.cr4 if state.cr4 is not None else (state.guest_cr4 if state.guest_cr4 is not None
                                                    else decode.CR4_PSE)
    if walk is not None and not state.entries:
        return _from_dump(walk, state.maxphyaddr, cr4)
    if not state.entries:
        return None
    mode = state.mode
    names = [decode.ENTRY_NAMES[table] for table in decode.LEVELS[mode]] if mode else list(ENTRY_ORDER)
    for name in state.entries:
        if mode and name not in names:
            raise XenscopeError(f"{name} does not exist in {mode} paging")
    levels = []
    complete = True
    for name in names:
        if name not in state.entries:
            if mode:
                complete = False
            continue
        value = state.entries[name]
        levels.append((name, value))
        decoded = decode.decode_entry(value, mode or "5level", name, cr4=cr4)
        if not decoded["present"] or decoded["leaf"]:
            break
    if not mode:
        complete = False
    sources = [state.sources.get(name, "") for name, _ in levels]
    origin = ("entries given as options" if all(source.startswith("--") for source in sources) else
              "entries from the log" if all(source.startswith("log") for source in sources) else "entries given")
    return WalkView(levels, mode, complete and bool(levels), origin, None, state.maxphyaddr, cr4)


def _from_dump(walk, maxphyaddr, cr4):
    levels = [(level.name, level.entry) for level in walk.levels if level.entry is not None]
    note = None
    if walk.stop == "not-in-dump":
        note = f"the table holding the {walk.stop_level} is not in the dump: levels below it unknown"
    elif walk.stop in ("non-canonical", "out-of-range"):
        note = f"CR2 {walk.va:#x}: {walk.describe_stop()}"
    return WalkView(levels, walk.mode, walk.stop != "not-in-dump" and bool(levels), "walk of CR2 in the target",
                    None, maxphyaddr, cr4, note)


def walk_dict(view, state, walk):
    """The ``walk`` part of the explanation: each known level decoded, with where it came from."""
    if view is None:
        return None
    levels = []
    for name, value in view.levels:
        decoded = view.decode(name, value)
        levels.append({"level": name, "entry": value, "flags": decoded["flags"], "pkey": decoded["pkey"],
                       "source": state.sources.get(name, view.origin)})
    out = {"va": state.cr2, "mode": view.mode, "origin": view.origin, "levels": levels, "complete": view.complete,
           "not_given": view.missing if not view.complete else [], "missing_word": view.missing_word,
           "pa": None, "page_size": None, "stop": None, "stop_level": None}
    if walk is not None and not state.entries:
        out.update(pa=walk.pa, page_size=walk.page_size, stop=walk.stop, stop_level=walk.stop_level,
                   root_pa=walk.root)
    return out
