"""A gdb remote stub that behaves like Xen's gdbsx, serving a 64-bit PV guest's ``xl dump-core``.

This is the *independent* side of the gdbsx tests: it parses the xc_core file with ``struct`` only
(no xenstructs) and answers packets the way gdbsx does. What gdbsx does was read in Xen's source
(xen-project/xen), then checked against a real gdbsx (built from Debian's Xen 4.17.5 source, run in
dom0 on a real PV domU under Debian's Xen 4.17.5 debug build: tests/realsys/test_xen_gdbsx_live.py
replays every packet gdb sent it, here, serving that domU's ``xl dump-core`` of the same pause, and
compares every reply; the real gdbsx's answers that this stub once gave differently: ``g`` after
``H`` of a vCPU that does not exist, ``m`` of 0x800 bytes, ``m`` with uppercase hex digits, ``D``):

* ``tools/debugger/gdbsx/gx/gx_main.c`` ``process_remote_request()``: ``q`` → only ``qfThreadInfo``
  (``"m0,1,...l"``: vCPU ids, from 0, and the ``l`` glued to the list) and ``qRcmd,`` (only
  ``pgd3 HEX``: ``pgd3val set to: %016lx\\n`` / ``Invalid  pgd3val %016lx\\n``, anything else
  ``Bad monitor command\\n``, sent hex-encoded as the whole reply, not as ``O`` packets); every other
  ``q``/``Q`` packet, ``qSupported`` included, gets the empty reply (so no PacketSize, no
  target.xml, no ``Qqemu.PhyMemMode``); ``?`` → ``T05thread:0;``; ``H[cgs]N`` → ``OK`` for any N
  (``-1`` → 0; no check: ``g`` on a vCPU that does not exist gets the empty reply, its
  ``getvcpucontext`` failing); ``g``/``G`` general registers of the current vCPU; ``m``/``M``
  guest-virtual memory; ``T`` → ``OK``; ``c``/``s`` → a ``T`` stop reply; ``D`` → acked, then no
  reply at all: gdbsx leaves its loop before sending the ``OK`` it prepared and closes the connection
  (gdb says "Remote connection closed"); ``k``, ``v``, ``C``, ``S``, ``R``, ``p``, ``P``, ``X``,
  ``Z``/``z`` and anything else → empty.
* ``gx/gx_utils.c gx_decode_m_packet()``: the address up to the comma, then at most four hex
  digits of length; only lowercase hex digits count (others are 0). ``m`` of length 0 → the empty
  reply.
* ``gx/gx_comm.c``: errors are always ``E01`` (``gx_reply_error``); the packet buffer is 4096
  bytes (``gx_main.c initialize()``): an ``m`` of 0x800 bytes is answered (4096 hex digits; the NUL
  after them lands one byte past the buffer), a longer one writes past it (a heap overflow in
  gdbsx: undefined; this stub refuses it with ``E01``, the only reply it invents).
* ``xg/xg_public.h`` (the fixed layout, commit 0c9821d5 in the index): ``struct xg_gdb_regs64``,
  packed: rax rbx rcx rdx rsi rdi rbp rsp r8..r15 rip (u64), eflags cs ss ds es fs gs (u32) =
  164 bytes, filled from ``vcpu_guest_context.user_regs`` (``xg_main.c _cp_64ctxt_to_64gdb``).
  No control registers, no FPU/SSE, no MSRs.
* ``xen/arch/x86/gdbsx.c`` ``dbg_pv_va2mfn()``: 4 levels from ``vcpu[0]->arch.cr3`` (vCPU 0,
  whatever thread gdb selected); L4 and L3 must be present, an L3 or L2 with PSE fails (no 1G/2M
  pages!), the L1 entry is *not* checked for present, only ``mfn_valid``; with ``pgd3val`` set
  (``monitor pgd3``) the walk starts at L2 in the frame of ``pgd3val``. ``dbg_rw_guest_mem`` stops
  at the first page that fails: the ``m`` packet gets ``E01``. Xen's RO M2P (L4 slot 256) is mapped
  with 2 MiB pages, so a real gdbsx cannot read it either.

Differences from a real gdbsx, forced by the dump: frames outside the dump (Xen's, other domains')
cannot be read, so such reads fail where Xen may succeed (through 4 KiB mappings only), and an L1
entry's frame is "valid" only if it is one of the guest's pages. Writes (``M``, ``G``) are refused
with ``E01`` (the dump is read-only); ``c`` returns at once (nothing runs).

Every packet is logged and counted by kind; ``qXenscopeMark:TEXT`` (an unknown ``q`` packet: empty
reply, as gdbsx gives) splits the log so a test can count what one command cost.
"""

import collections
import socket
import struct
import threading

PAGE = 4096
ADDR_MASK = 0x000FFFFFFFFFF000          # PADDR_MASK & PAGE_MASK: l?e_get_mfn() drops bits 52-63
P, PSE = 1 << 0, 1 << 7
BUFSIZE = 4096                          # gx_main.c initialize(): the one packet buffer
MAX_M_LEN = BUFSIZE // 2                # a real gdbsx answers m of 0x800 bytes (4096 hex digits, its
                                        # NUL one byte past the buffer); longer ones overflow it: refused
MAX_PACKET = 1 << 16                    # bound on what this server buffers (gdbsx: 4096)
IDLE_TIMEOUT = 300                      # seconds without a packet before the server gives up

# struct vcpu_guest_context (x86_64): user_regs at 512 + 8, ctrlreg[8] at 4984; entries of 5168
UREGS_OFF, CTRLREG_OFF, CTX_MIN = 520, 4984, 5168
UREG_NAMES = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
              "rdx", "rsi", "rdi")      # then error_code, entry_vector (u32), rip, cs, ..., rflags
G64 = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
       "r13", "r14", "r15", "rip")
G32 = ("eflags", "cs", "ss", "ds", "es", "fs", "gs")
# gdbsx -a DOMID 32: xg_main.c xg_regs_read() reads the context as a 32-bit PV one whatever the guest
# is: struct cpu_user_regs_x86_32 at 512 + 4 (ebx ecx edx esi edi ebp eax, error_code/entry_vector
# u16, eip, cs u16 (+ 2), eflags, esp, ss es ds fs gs u16 (+ 2 each)), copied into struct
# xg_gdb_regs32 (eax ecx edx ebx esp ebp esi edi eip eflags cs ss ds es fs gs, u32) by
# _cp_32ctxt_to_32gdb()
UREGS32_OFF = 516
UREGS32 = struct.Struct("<7I2HIH2xIIH2xH2xH2xH2xH2x")
G32_ORDER = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip", "eflags", "cs", "ss", "ds", "es",
             "fs", "gs")


class XcCore:
    """The bits of an x86_64 PV ``xl dump-core`` a gdbsx needs: pages by mfn, vCPU contexts."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.data = f.read()
        d = self.data
        if d[:4] != b"\x7fELF" or d[4] != 2:
            raise ValueError(f"{path}: not an ELF64 file")
        machine, = struct.unpack_from("<H", d, 18)
        if machine != 62:
            raise ValueError(f"{path}: e_machine {machine}: this stub serves 64-bit PV guests only")
        shoff, = struct.unpack_from("<Q", d, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", d, 0x3A)
        shdrs = [struct.unpack_from("<IIQQQQIIQQ", d, shoff + i * shentsize) for i in range(shnum)]
        strtab = shdrs[shstrndx]
        names = d[strtab[4]:strtab[4] + strtab[5]]
        secs = {}
        for sh in shdrs[1:]:
            name = names[sh[0]:names.index(b"\0", sh[0])].decode()
            secs[name] = sh            # (name, type, flags, addr, offset, size, link, info, align, entsize)
        note = secs[".note.Xen"]
        off, end = note[4], note[4] + note[5]
        hdr = None
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", d, off)
            desc = off + 12 + (namesz + 3 & ~3)
            if ntype == 0x2000001:
                hdr = struct.unpack_from("<QQQQ", d, desc)   # magic, nr_vcpus, nr_pages, page_size
            off = desc + (descsz + 3 & ~3)
        if hdr is None or hdr[0] != 0xF00FEBED:
            raise ValueError(f"{path}: not a PV xl dump-core")
        _, self.nr_vcpus, nr_pages, _ = hdr
        pages, p2m = secs[".xen_pages"][4], secs[".xen_p2m"]
        self.page_off = {}                                   # mfn -> file offset
        for i in range(nr_pages):
            pfn, mfn = struct.unpack_from("<QQ", d, p2m[4] + 16 * i)
            if pfn != ~0 & (1 << 64) - 1 and mfn != ~0 & (1 << 64) - 1:
                self.page_off.setdefault(mfn, pages + i * PAGE)
        pr = secs[".xen_prstatus"]
        self.vcpus = []
        for v in range(self.nr_vcpus):
            base = pr[4] + v * pr[9]
            regs = dict(zip(UREG_NAMES, struct.unpack_from("<15Q", d, base + UREGS_OFF)))
            (regs["rip"], regs["cs"], regs["rflags"], regs["rsp"], regs["ss"], regs["es"], regs["ds"],
             regs["fs"], regs["gs"]) = struct.unpack_from("<QH6xQQH6xH6xH6xH6xH6x", d, base + UREGS_OFF + 128)
            regs["eflags"] = regs["rflags"]
            ctrl = struct.unpack_from("<8Q", d, base + CTRLREG_OFF)
            self.vcpus.append({"regs": regs, "cr3": ctrl[3] & ADDR_MASK,    # 64-bit: xen_pfn_to_cr3 = mfn << 12
                               "context": base})

    def frame(self, mfn):
        """The 4 KiB page of machine frame ``mfn``, or None (not one of the guest's pages)."""
        off = self.page_off.get(mfn)
        return None if off is None else self.data[off:off + PAGE]

    def entry(self, mfn, index):
        page = self.frame(mfn)
        return None if page is None else struct.unpack_from("<Q", page, index * 8)[0]

    def va2mfn(self, va, pgd3val=0):
        """``dbg_pv_va2mfn()``: machine frame of ``va`` through vCPU 0's CR3, or None."""
        cr3 = pgd3val or self.vcpus[0]["cr3"]
        mfn = (cr3 & ADDR_MASK) >> 12
        if not pgd3val:
            e = self.entry(mfn, va >> 39 & 511)
            if e is None or not e & P:
                return None
            e = self.entry((e & ADDR_MASK) >> 12, va >> 30 & 511)
            if e is None or not e & P or e & PSE:
                return None
            mfn = (e & ADDR_MASK) >> 12
        e = self.entry(mfn, va >> 21 & 511)
        if e is None or not e & P or e & PSE:
            return None
        e = self.entry((e & ADDR_MASK) >> 12, va >> 12 & 511)
        if e is None:
            return None
        mfn = (e & ADDR_MASK) >> 12                 # no present check on the L1 entry, as in Xen
        return mfn if mfn in self.page_off else None  # mfn_valid(): here, a page of the dump

    def read_va(self, va, length, pgd3val=0):
        """``dbg_rw_guest_mem()``: the bytes, or None when any page fails."""
        out = bytearray()
        while length > 0:
            n = min(PAGE - (va & (PAGE - 1)), length)
            mfn = self.va2mfn(va & (1 << 64) - 1, pgd3val)
            if mfn is None:
                return None
            off = self.page_off[mfn] + (va & (PAGE - 1))
            out += self.data[off:off + n]
            va += n
            length -= n
        return bytes(out)


def _fromhex(ch):
    """gx_utils.c gx_fromhex(): lowercase hex only, anything else is 0."""
    return int(ch, 16) if ch in "0123456789abcdef" else 0


def _decode_m(args):
    """gx_decode_m_packet(): the address up to ``,``, then at most four hex digits of length."""
    addr, _, rest = args.partition(",")
    value = 0
    for ch in addr:
        value = value << 4 | _fromhex(ch)
    length = 0
    for ch in rest[:4]:
        length = length << 4 | _fromhex(ch)
    return value & (1 << 64) - 1, length


def _strtoul32(text):
    """strtoul() of a thread id, kept in gdbsx's 32-bit vcpuid_t ("-1" is 0xffffffff)."""
    text = text.strip()
    negative = text.startswith("-")
    digits = ""
    for ch in text[1:] if negative else text:
        if ch.lower() not in "0123456789abcdef":
            break
        digits += ch
    value = int(digits, 16) if digits else 0
    return (-value if negative else value) & 0xFFFFFFFF


def _kind(pkt):
    if pkt[:1] in ("q", "Q", "v"):
        for sep in (":", ",", ";"):
            pkt = pkt.split(sep, 1)[0]
        return pkt
    return pkt[:1] if pkt else "(empty)"


class GdbsxStub:
    """Serve one gdb connection like ``gdbsx -a DOMID 64 PORT`` on 127.0.0.1 (thread)."""

    def __init__(self, path, bits=64):
        self.core = XcCore(path)
        self.bits = bits              # the width gdbsx was told (-a DOMID 32|64): only the g layout changes
        self.pgd3val = 0
        self.vcpu = 0
        self.log = []                 # every packet received, in order
        self.counts = collections.Counter()
        self.refused = collections.Counter()    # m reads that failed, by reason
        self.error = None
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(IDLE_TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def close(self):
        self.sock.close()
        self._t.join(5)

    # -- the log ---------------------------------------------------------------------------------
    def segments(self):
        """The log split at ``qXenscopeMark:`` packets: ``[(mark, [packets])]`` (first mark '')."""
        out = [("", [])]
        for p in self.log:
            if p.startswith("qXenscopeMark:"):
                out.append((p.split(":", 1)[1], []))
            else:
                out[-1][1].append(p)
        return out

    # -- transport -------------------------------------------------------------------------------
    def _serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.settimeout(IDLE_TIMEOUT)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        try:
            with conn:
                while True:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                    if len(buf) > MAX_PACKET:
                        self.error = "packet too long"
                        return
                    while True:
                        buf = buf.lstrip(b"+-")
                        if buf.startswith(b"\x03"):       # ^C: gdbsx ignores it while stopped
                            buf = buf[1:]
                            continue
                        i = buf.find(b"$")
                        j = buf.find(b"#", i)
                        if i < 0 or j < 0 or len(buf) < j + 3:
                            break
                        pkt, buf = buf[i + 1:j].decode("latin-1"), buf[j + 3:]
                        self.log.append(pkt)
                        self.counts[_kind(pkt)] += 1
                        if pkt.startswith("D"):
                            conn.sendall(b"+")    # gdbsx acks, leaves its loop and never replies
                            return
                        reply = self._handle(pkt)
                        conn.sendall(b"+$" + reply.encode("latin-1")
                                     + b"#%02x" % (sum(reply.encode("latin-1")) & 0xFF))
        except OSError as e:          # timeout, reset: the test sees it in .error
            self.error = str(e)

    # -- requests (gx_main.c process_remote_request) ---------------------------------------------
    def _handle(self, p):
        c = p[:1]
        if c == "q":
            if p == "qfThreadInfo":
                return "m" + ",".join("%x" % v for v in range(self.core.nr_vcpus)) + "l"
            if p.startswith("qRcmd,"):
                return self._monitor(bytes.fromhex(p[6:]).decode("latin-1")).encode("latin-1").hex()
            return ""
        if c == "?":
            return "T05thread:0;"
        if c == "H":
            if p[1:2] in ("c", "g", "s"):
                self.vcpu = _strtoul32(p[2:])          # no check: a later g fails
                if self.vcpu == 0xFFFFFFFF:
                    self.vcpu = 0
                return "OK"
            return ""
        if c == "g":
            if self.vcpu >= self.core.nr_vcpus:
                return ""                             # getvcpucontext fails: gx_read_guest_regs()
            if self.bits == 32:
                return self._regs32(self.core.vcpus[self.vcpu]["context"])
            r = self.core.vcpus[self.vcpu]["regs"]
            return (struct.pack("<17Q", *(r[n] & (1 << 64) - 1 for n in G64))
                    + struct.pack("<7I", *(r[n] & 0xFFFFFFFF for n in G32))).hex()
        if c == "m":
            addr, n = _decode_m(p[1:])
            if n > MAX_M_LEN:
                self.refused["beyond gdbsx's buffer"] += 1
                return "E01"
            data = self.core.read_va(addr, n, self.pgd3val)
            if data is None:
                self.refused["walk failed"] += 1
                return "E01"
            return data.hex()
        if c in ("M", "G"):
            return "E01"              # this emulation is read-only
        if c == "T":
            return "OK"
        if c in ("c", "s"):
            return "T05thread:%x;" % self.vcpu
        if c == "D":
            return "OK"
        return ""                     # k, v, C, S, R, Z, Q... : not supported

    def _regs32(self, context):
        """The g reply of a gdbsx started with 32: the context read as a 32-bit PV one (see G32_ORDER)."""
        fields = UREGS32.unpack_from(self.core.data, context + UREGS32_OFF)
        named = dict(zip(("ebx", "ecx", "edx", "esi", "edi", "ebp", "eax", "error_code", "entry_vector", "eip",
                          "cs", "eflags", "esp", "ss", "es", "ds", "fs", "gs"), fields))
        return struct.pack("<16I", *(named[name] for name in G32_ORDER)).hex()

    def _monitor(self, text):
        """gx_main.c _do_qRcmd_req(): only ``pgd3 HEX``."""
        if text.startswith("pgd3 "):
            arg = text[5:]
            try:
                val = int(arg[2:] if arg[:2].lower() == "0x" else arg, 16) if arg else 0
                ok = val > 0 and all(ch in "0123456789abcdefABCDEFxX" for ch in arg)
            except ValueError:
                val, ok = 0, False
            self.pgd3val = val if ok else 0
            return ("pgd3val set to: %016x\n" % val) if ok else ("Invalid  pgd3val %016x\n" % val)
        return "Bad monitor command\n"
