"""Xen's console ring in a dump: the text ``xl dmesg`` would print, oldest first.

``xen/drivers/char/console.c`` (the same from 4.4 through 4.20)::

    static char __initdata _conring[_CONRING_SIZE];          /* 16 KiB, boot only */
    static char *__read_mostly conring = _conring;
    static uint32_t __read_mostly conring_size = _CONRING_SIZE;
    static uint32_t conringc, conringp;                      /* consumer, producer */

``conring_puts`` stores each character at ``conring[conringp++ & (conring_size - 1)]`` and, once
more than ``conring_size`` characters are held, moves ``conringc`` to ``conringp - conring_size``;
``read_console_ring`` (``xl dmesg``) copies ``[conringc, conringp)``; ``xl dmesg -c`` moves
``conringc`` up to ``conringp``. ``console_init_ring`` (``console_init_postirq``) always replaces the
boot ring with a xen-heap buffer of ``conring_size=`` bytes (at least 16 KiB, a power of two), so
``conring`` is read as a pointer. Every byte ``__putstr`` prints goes to the ring too: Xen's lines
carry their ``(XEN) `` prefix (and a console timestamp when ``console_timestamps`` is on), a domU's
``(dN) ``; the hardware domain's own console output is in it only with ``console_to_ring``.

The four variables are file-local: xen-syms names them plainly (``conring``), Xen's ``.map`` and its
embedded symbol table as ``drivers/char/console.c#conring``; both spellings are looked up.
"""

from dataclasses import dataclass, field

from ..errors import NotInDump, XenscopeError

CONSOLE_C = "drivers/char/console.c"
NAMES = ("conring", "conring_size", "conringc", "conringp")
MIN_SIZE = 1 << 14                 # _CONRING_SIZE: console_init_ring never makes it smaller
MAX_SIZE = 1 << 30                 # conring_size= is a u32 power of two; a GiB ring is absurd already


@dataclass
class ConsoleRing:
    """Xen's console ring as read from a dump.

    ``text`` holds the characters ``[consumer, producer)`` in order; ``first_line`` says whether its
    first line is whole: ``complete`` (nothing before it was dropped, or the byte before it is a
    newline), ``cut`` (the byte before it is not a newline) or ``unknown`` (the ring is full: the byte
    before it was overwritten by the newest one). ``dropped`` counts the characters printed and no
    longer held (modulo 2^32, as Xen counts), ``symbols`` names the symbol each variable was read at.
    """
    va: int
    size: int
    consumer: int
    producer: int
    text: str
    first_line: str
    symbols: dict = field(default_factory=dict)

    @property
    def held(self):
        return (self.producer - self.consumer) & 0xFFFFFFFF

    @property
    def dropped(self):
        return self.consumer

    def lines(self):
        """The ring's text as lines (no line ends; a last line without its newline kept)."""
        return self.text.splitlines()

    def describe(self):
        """One line: where the ring is, how much it holds, what was lost."""
        if self.dropped == 0:
            lost = "nothing dropped since boot"
        else:
            lost = f"{self.dropped} earlier character(s) dropped (ring wrapped, or xl dmesg -c)"
        cut = {"complete": "", "cut": "; its first line is cut (the ring starts inside it)",
               "unknown": "; its first line may be cut (the ring is full: the character before it was "
                          "overwritten)"}[self.first_line]
        return (f"Xen's console ring at va {self.va:#x}: {self.held} of {self.size} bytes held "
                f"(conringc {self.consumer:#x}, conringp {self.producer:#x}); {lost}{cut}")

    def as_dict(self):
        return {"va": self.va, "size": self.size, "consumer": self.consumer, "producer": self.producer,
                "held": self.held, "dropped": self.dropped, "first_line": self.first_line,
                "symbols": dict(self.symbols), "description": self.describe()}


def find_symbol(symbols, name, source_file=CONSOLE_C):
    """``(address, spelling)`` of Xen's file-local ``name``: plain (xen-syms' ELF table), then
    ``source_file#name`` (Xen's .map and embedded table), then the one ``...#name`` there is;
    ``(None, None)`` when none (or several other files' ``#name``) is known."""
    if name in symbols:
        return symbols[name], name
    qualified = f"{source_file}#{name}"
    if qualified in symbols:
        return symbols[qualified], qualified
    others = [key for key in symbols if key.endswith("#" + name)]
    if len(others) == 1:
        return symbols[others[0]], others[0]
    return None, None


def _addresses(symbols, where="Xen's symbols"):
    found, spelled = {}, {}
    for name in NAMES:
        va, spelling = find_symbol(symbols, name)
        if va is None:
            raise XenscopeError(f"Xen's console ring: symbol {name} is not in {where}")
        found[name], spelled[name] = va, spelling
    return found, spelled


def _checked(size, consumer, producer, pointer):
    if size < MIN_SIZE or size > MAX_SIZE or size & (size - 1):
        raise XenscopeError(f"Xen's console ring: conring_size {size:#x} read from the dump is not a power "
                            f"of two from {MIN_SIZE:#x} to {MAX_SIZE:#x}: a corrupt image or wrong symbols?")
    held = (producer - consumer) & 0xFFFFFFFF
    if held > size:
        raise XenscopeError(f"Xen's console ring: conringp {producer:#x} - conringc {consumer:#x} = {held:#x} "
                            f"is more than conring_size {size:#x}: a corrupt image or wrong symbols?")
    if pointer >> 47 not in (0x1FFFF,):
        raise XenscopeError(f"Xen's console ring: conring {pointer:#x} is no Xen virtual address")
    return held


def _first_line(read, pointer, size, consumer, held):
    """complete / cut / unknown (see :class:`ConsoleRing`)."""
    if consumer == 0:
        return "complete"
    if held == size:
        return "unknown"
    try:
        before = read(pointer + ((consumer - 1) & (size - 1)), 1)
    except (NotInDump, XenscopeError):
        return "unknown"
    return "complete" if before == b"\n" else "cut"


def read_conring(host):
    """The :class:`ConsoleRing` of a :class:`~xenstructs.xen.host.XenHost` (its ``symbols``,
    ``read_va``, ``read_u64``, ``read_u32``).

    :raises XenscopeError: a symbol unknown, a value no ring can have, or the ring not in the dump
    """
    found, spelled = _addresses(host.symbols, getattr(host, "sources", {}).get("symbols", "Xen's symbols"))
    try:
        pointer = host.read_u64(found["conring"])
        size = host.read_u32(found["conring_size"])
        consumer = host.read_u32(found["conringc"])
        producer = host.read_u32(found["conringp"])
    except NotInDump as e:
        raise XenscopeError(f"Xen's console ring: its variables are not in the dump ({e})") from None
    held = _checked(size, consumer, producer, pointer)
    start = consumer & (size - 1)
    first = min(held, size - start)
    try:
        data = host.read_va(pointer + start, first) + host.read_va(pointer, held - first)
    except NotInDump as e:
        raise XenscopeError(f"Xen's console ring at {pointer:#x} is not in the dump ({e})") from None
    return ConsoleRing(va=pointer, size=size, consumer=consumer, producer=producer,
                       text=data.decode("utf-8", "replace"),
                       first_line=_first_line(host.read_va, pointer, size, consumer, held), symbols=spelled)
