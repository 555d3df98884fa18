"""What gdb itself sent a remote stub, from its own log (``set debug remote 1``), per command.

For stubs we cannot instrument (a real gdbsx in dom0, QEMU's gdbstub): gdb logs every packet it sends
(``[remote] Sending packet: $PACKET#CS``) and receives (``[remote] Packet received: REPLY``; gdb
shortens long ones: ``...[N bytes omitted]``) on stderr. Before each command a ``maintenance packet
qXenscopeMark:LABEL`` is sent: an unknown ``q`` packet every stub answers with the empty reply, which
splits the log so each command's packets can be counted (the same marks :class:`gdbsx_stub.GdbsxStub`
splits its own log at).

    result, outputs, packets = marked_session(["target remote :1234"], [("info", "xen info")])
    packets["info"]        # [(packet sent, reply received)] for that command
"""
import re

from gdbutil import run_gdb

MARK = "qXenscopeMark:"
END = "@@@\n"
_SENT = re.compile(r"\[remote\] Sending packet: \$(.*)#[0-9a-f]{2}$")
_RECEIVED = re.compile(r"\[remote\] Packet received: ?(.*)$")


def exchanges(log):
    """Every (packet, reply) gdb logged, in order (the reply None when none was logged)."""
    out = []
    for line in log.splitlines():
        line = line.strip()
        sent = _SENT.search(line)
        if sent:
            out.append([sent.group(1), None])
            continue
        received = _RECEIVED.search(line)
        if received and out and out[-1][1] is None:
            out[-1][1] = received.group(1)
    return [tuple(pair) for pair in out]


def segments(log):
    """The exchanges split at the marks: ``{label: [(packet, reply)]}``; before the first mark: ''."""
    out, label = {"": []}, ""
    for packet, reply in exchanges(log):
        if packet.startswith(MARK):
            label = packet[len(MARK):]
            out[label] = []
        else:
            out[label].append((packet, reply))
    return out


_OMITTED = re.compile(r"^(.*) \[(\d+) bytes omitted\]$")


def same_reply(logged, reply):
    """Whether ``reply`` is the reply gdb logged as ``logged`` (gdb logs the first 512 characters of a
    long reply and how many it left out)."""
    shortened = _OMITTED.match(logged or "")
    if shortened:
        head, omitted = shortened.group(1), int(shortened.group(2))
        return reply is not None and reply.startswith(head) and len(reply) == len(head) + omitted
    return logged == reply


def memory_reads(pairs):
    """The ``m ADDR,LEN`` packets among ``pairs``: ``[(addr, length, reply)]``."""
    out = []
    for packet, reply in pairs:
        if packet.startswith("m") and "," in packet:
            addr, length = packet[1:].split(",", 1)
            out.append((int(addr, 16), int(length, 16), reply))
    return out


def mark_command(label):
    """The mark, sent with ``maintenance packet`` at the top level: inside ``gdb.execute(...,
    to_string=True)`` gdb captures its debug log too, and the mark would be missing from stderr."""
    return f"maintenance packet {MARK}{label}"


def _strip_mark(text):
    """A command's stdout without what ``maintenance packet`` printed for the mark before it."""
    return re.sub(rf'^sending: "?{MARK}[^\n]*\nreceived: "[^\n]*"\n', "", text.lstrip("\n"), flags=re.M)


def marked_session(connect, commands, timeout=900, env=None):
    """Run gdb: ``connect`` (commands that attach), then each ``(label, command)`` after its mark,
    with ``set debug remote 1``; return ``(result, {label: stdout}, {label: [(packet, reply)]})``."""
    argv = ["set debug remote 1", *connect]
    for label, command in commands:
        argv += [mark_command(label), command, f"echo {END[:-1]}\\n"]
    argv.append(mark_command("end"))
    result = run_gdb(*argv, timeout=timeout, env=env)
    outputs = dict(zip((label for label, _ in commands), map(_strip_mark, result.stdout.split(END))))
    return result, outputs, segments(result.stderr)


def _frame(packet):
    data = packet.encode("latin-1")
    return b"$" + data + b"#%02x" % (sum(data) & 0xFF)


def _read_reply(conn, buffer):
    """One ``$...#cs`` packet from ``conn`` (acks skipped); ``(reply, rest)``, or (None, rest) on EOF."""
    while True:
        start = buffer.find(b"$")
        end = buffer.find(b"#", start) if start >= 0 else -1
        if start >= 0 and end >= 0 and len(buffer) >= end + 3:
            return buffer[start + 1:end].decode("latin-1"), buffer[end + 3:]
        data = conn.recv(65536)
        if not data:
            return None, buffer
        buffer += data


def replay(port, packets, timeout=60, host="127.0.0.1"):
    """Send ``packets`` to the stub at ``host:port`` one by one (acknowledging its replies, as gdb
    does) and return its replies; None for a packet it answered with no reply (it hung up). The ack
    of a reply goes out with the next packet (one write: no Nagle/delayed-ACK wait per packet)."""
    import socket
    replies, buffer, ack = [], b"", b""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for packet in packets:
            conn.sendall(ack + _frame(packet))
            reply, buffer = _read_reply(conn, buffer)
            if reply is None:
                replies.append(None)
                break
            ack = b"+"
            replies.append(reply)
        if ack:
            conn.sendall(ack)
    return replies + [None] * (len(packets) - len(replies))
