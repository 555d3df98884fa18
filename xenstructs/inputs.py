"""Opening the files a user names, and reading text from them in bounded pieces.

Every reader of a user-named file (dumps, ``--xen-syms``, ``--kernel-syms``, ``--vmlinux``,
``--profile``, ``--system-map``, ``log``, ``vtop --from``, ``fault --log``, ``check --log``) opens
it with :func:`open_regular`: the path is stat()ed first, which never blocks, and anything but a
regular file is refused in one line (a FIFO would block the open, or the first read, forever;
``/dev/zero`` reads forever). Block devices are refused too: no dump format xenscope reads is
written to a raw device, and their size is not what ``st_size`` says. The file is then opened with
``O_NONBLOCK`` and fstat()ed again, so a path swapped for a FIFO in between cannot block either.

Text (console logs, address lists, oops excerpts, also from standard input) is read with
:func:`iter_text_lines`: lines of at most :data:`MAX_LINE` bytes (the rest of a longer line is
skipped, counted, never held), at most :data:`MAX_TEXT_BYTES` bytes and :data:`MAX_TEXT_LINES`
lines in all, and the input is refused as binary junk when its first :data:`BINARY_PROBE` bytes
hold no line of text (:func:`is_text_line`), or its first line is longer than that: a serial
capture with noise around its messages is still read, and a shorter input is read to its end
(it is bounded anyway; its lines are judged by whoever parses them).
"""

import fcntl
import os
import stat

from .errors import XenscopeError

MAX_LINE = 4096                 # bytes kept of one line (console lines are < 1 KiB)
MAX_TEXT_BYTES = 1 << 30        # 1 GiB of text
MAX_TEXT_LINES = 16 << 20       # 16 M lines
BINARY_PROBE = 4 << 20          # judge text-or-junk on the first 4 MiB
MIN_TEXT_LINE = 16              # bytes of a line that proves the input is text
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISSOCK, "a socket"))
# C0 controls a console line may hold: tab, backspace, bell, carriage return, form feed, escape
_CONTROLS = bytes(c for c in range(32) if c not in b"\t\b\a\r\f\x1b\n") + b"\x7f"


def file_kind(mode):
    """What a non-regular ``st_mode`` is, in words ("a FIFO", "a character device", ...)."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def require_regular(path, error=XenscopeError, verb="open"):
    """stat() ``path`` (without opening it) and return the result; raise ``error`` (one line:
    "cannot <verb> PATH: why") unless it is a regular file."""
    try:
        st = os.stat(path)
    except (OSError, ValueError) as e:
        raise error(f"cannot {verb} {path}: {getattr(e, 'strerror', None) or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"cannot {verb} {path}: not a regular file ({file_kind(st.st_mode)})")
    return st


def open_regular(path, mode="rb", error=XenscopeError, verb="open", **kwargs):
    """``open(path, mode, **kwargs)`` for reading, only when ``path`` is a regular file.

    :raises error: (default :class:`XenscopeError`) one line: missing, unreadable, or "cannot open
        X: not a regular file (a FIFO)".
    """
    require_regular(path, error, verb)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise error(f"cannot {verb} {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"cannot {verb} {path}: not a regular file ({file_kind(st.st_mode)})")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def is_text_line(raw):
    """True for a line that proves an input is text: at least :data:`MIN_TEXT_LINE` bytes besides
    blanks, no NUL or stray control byte, valid UTF-8 (random bytes pass all three about once in a
    million lines)."""
    if len(raw.strip()) < MIN_TEXT_LINE or raw.translate(None, _CONTROLS) != raw:
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class TextLimits:
    """The bounds of :func:`iter_text_lines` (defaults: the module constants)."""

    def __init__(self, max_line=MAX_LINE, max_bytes=MAX_TEXT_BYTES, max_lines=MAX_TEXT_LINES,
                 probe=BINARY_PROBE):
        self.max_line, self.max_bytes, self.max_lines, self.probe = max_line, max_bytes, max_lines, probe


class _Lines:
    """The state of one bounded read: bytes so far, lines, and whether a text line was seen in the
    probe window."""

    def __init__(self, f, name, limits):
        self.readline, self.name, self.limits = f.readline, name, limits
        self.total = self.seen = self.line_no = 0
        self.text = False

    def __iter__(self):
        limits = self.limits
        while True:
            chunk = piece = self.readline(limits.max_line)
            if not chunk:
                return
            length = len(chunk)
            while len(piece) == limits.max_line and not piece.endswith(b"\n"):
                piece = self.readline(limits.max_line)      # the rest of a long line: dropped
                length += len(piece)
                if self.total + length > limits.max_bytes:
                    break
                if not self.text and self.total < limits.probe < length:
                    _judge(self.name, length, False)        # no line end in the first MiBs
            self._count(chunk, length)
            yield self.line_no, chunk, length

    def _count(self, chunk, length):
        limits = self.limits
        self.total += length
        self.line_no += 1
        if self.total > limits.max_bytes:
            raise XenscopeError(f"{self.name}: more than {limits.max_bytes >> 20} MiB: too long "
                                "for a text input (cut it)")
        if self.line_no > limits.max_lines:
            raise XenscopeError(f"{self.name}: more than {limits.max_lines} lines: too long for "
                                "a text input (cut it)")
        if self.seen < limits.probe and not self.text:
            self.seen += length
            self.text = length <= limits.max_line and is_text_line(chunk)
            if self.seen >= limits.probe:
                _judge(self.name, self.seen, self.text)


def iter_text_lines(f, name, limits=None, errors="replace"):
    """``(line_no, text, whole_length)`` for each line of binary file ``f`` (``text`` decoded with
    ``errors``, cut at ``limits.max_line`` bytes; ``whole_length`` > max_line says it was cut).

    :raises XenscopeError: more than ``max_bytes``/``max_lines``, or binary junk (no text line
        in the first ``probe`` bytes), or a read error; each one line naming ``name``.
    """
    for line_no, raw, length in iter_raw_lines(f, name, limits):
        yield line_no, raw.decode("utf-8", errors), length


def iter_raw_lines(f, name, limits=None):
    """:func:`iter_text_lines` without the decoding: ``(line_no, raw bytes, whole_length)``."""
    try:
        yield from _Lines(f, name, limits or TextLimits())
    except OSError as e:
        raise XenscopeError(f"cannot read {name}: {e.strerror or e}") from None


def _judge(name, seen, text):
    if seen and not text:
        raise XenscopeError(f"{name} does not look like text (no line of text in its first "
                            f"{_size(seen)}): is it a binary file?")


def _size(n):
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n} bytes"
