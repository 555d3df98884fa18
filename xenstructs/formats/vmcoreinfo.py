"""VMCOREINFO text (Linux ``kernel/vmcore_info.c``, Xen ``xen/common/kexec.c``).

Lines are ``KEY=VALUE``: ``SYMBOL(x)`` hex, ``NUMBER(x)`` decimal (may be negative; some
architectures print ``0x`` hex), ``SIZE(x)``/``OFFSET(s.m)``/``LENGTH(x)`` decimal,
``KERNELOFFSET`` hex, ``OSRELEASE``/``PAGESIZE``/``CRASHTIME`` plain. Junk lines, NUL padding
and unparsable values are kept as text and never raise.

>>> v = parse_vmcoreinfo(b"OSRELEASE=6.1.0\\nSYMBOL(init_top_pgt)=ffffffff82a0a000\\nNUMBER(x)=-3\\0\\0")
>>> hex(v.symbol("init_top_pgt")), v.number("x"), v.osrelease
('0xffffffff82a0a000', -3, '6.1.0')
"""

MAX_VMCOREINFO = 1 << 20        # a VMCOREINFO note is one page (Xen) or a few; cap what we parse


def _int(text, base):
    text = text.strip()
    try:
        if base == 16:
            return int(text, 16)
        return int(text, 0) if text.lower().lstrip("-").startswith("0x") else int(text, 10)
    except ValueError:
        return None


class VmcoreInfo:
    """Parsed VMCOREINFO: ``lines`` maps every ``KEY`` to its text value (first wins)."""

    def __init__(self, lines):
        self.lines = dict(lines)

    def get(self, key, default=None):
        """The raw text of ``key`` (e.g. ``"OSRELEASE"``, ``"SYMBOL(swapper_pg_dir)"``)."""
        return self.lines.get(key, default)

    def symbol(self, name):
        """``SYMBOL(name)`` as an int (hex in the text), or ``None``."""
        v = self.lines.get(f"SYMBOL({name})")
        return None if v is None else _int(v, 16)

    def number(self, name):
        """``NUMBER(name)`` as a (possibly negative) int, or ``None``."""
        v = self.lines.get(f"NUMBER({name})")
        return None if v is None else _int(v, 10)

    def size(self, name):
        """``SIZE(name)`` as an int, or ``None``."""
        v = self.lines.get(f"SIZE({name})")
        return None if v is None else _int(v, 10)

    def offset(self, struct, member):
        """``OFFSET(struct.member)`` as an int, or ``None``."""
        v = self.lines.get(f"OFFSET({struct}.{member})")
        return None if v is None else _int(v, 10)

    def length(self, name):
        """``LENGTH(name)`` as an int, or ``None``."""
        v = self.lines.get(f"LENGTH({name})")
        return None if v is None else _int(v, 10)

    @property
    def osrelease(self):
        return self.lines.get("OSRELEASE")

    @property
    def pagesize(self):
        v = self.lines.get("PAGESIZE")
        return None if v is None else _int(v, 10)

    @property
    def kerneloffset(self):
        v = self.lines.get("KERNELOFFSET")
        return None if v is None else _int(v, 16)

    @property
    def crashtime(self):
        v = self.lines.get("CRASHTIME")
        return None if v is None else _int(v, 10)

    def symbols(self):
        """All ``SYMBOL(x)`` entries as ``{name: address}`` (unparsable values left out)."""
        out = {}
        for k, v in self.lines.items():
            if k.startswith("SYMBOL(") and k.endswith(")"):
                a = _int(v, 16)
                if a is not None:
                    out[k[7:-1]] = a
        return out

    def as_dict(self):
        return dict(self.lines)

    def __contains__(self, key):
        return key in self.lines

    def __len__(self):
        return len(self.lines)

    def __repr__(self):
        return f"VmcoreInfo({len(self.lines)} lines, OSRELEASE={self.osrelease!r})"


def parse_vmcoreinfo(data):
    """Parse VMCOREINFO ``data`` (bytes or str) into a :class:`VmcoreInfo`; never raises."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data[:MAX_VMCOREINFO]).split(b"\0", 1)[0].decode("utf-8", "replace")
    else:
        data = str(data)[:MAX_VMCOREINFO].split("\0", 1)[0]
    lines = {}
    for line in data.splitlines():
        line = line.strip()
        if not line or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key and key not in lines:
            lines[key] = value.strip()
    return VmcoreInfo(lines)
