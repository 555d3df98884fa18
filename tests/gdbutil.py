"""Run the real gdb with xenscope loaded: ``gdb -nx -batch -ex 'source gdbext/xenscope.py' -ex ...``.

The venv is $XENSCOPE_VENV if set, else <checkout>/.venv if it exists, else /tmp/tv (a developer's
scratch venv).
"""
import atexit
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADER = os.path.join(TOP, "gdbext", "xenscope.py")
GDB = shutil.which("gdb")
_CACHE = tempfile.mkdtemp(prefix="xenscope-gdb-cache-")
atexit.register(shutil.rmtree, _CACHE, True)


def venv():
    if os.environ.get("XENSCOPE_VENV"):
        return os.environ["XENSCOPE_VENV"]
    local = os.path.join(TOP, ".venv")
    return local if os.path.isdir(local) else "/tmp/tv"


def venv_python():
    return os.path.join(venv(), "bin", "python")


@dataclass
class Result:
    stdout: str
    stderr: str
    returncode: int

    @property
    def output(self):
        return self.stdout + self.stderr


def gdb_env(**extra):
    env = dict(os.environ, XENSCOPE_VENV=venv(), XDG_CACHE_HOME=_CACHE)
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def gdb_argv(*commands, core=None, load=True):
    argv = [GDB, "-nx", "-batch", "-ex", "set width 0", "-ex", "set height 0"]
    if load:
        argv += ["-ex", f"source {LOADER}"]
    if core:
        argv += ["-ex", f"core-file {core}"]
    for c in commands:
        argv += ["-ex", c]
    return argv


def run_gdb(*commands, core=None, load=True, env=None, timeout=120):
    """Run gdb in batch mode with ``commands`` (each one ``-ex``); return a :class:`Result`."""
    r = subprocess.run(gdb_argv(*commands, core=core, load=load), capture_output=True, text=True,
                       cwd=TOP, env=env or gdb_env(), timeout=timeout, stdin=subprocess.DEVNULL)
    return Result(r.stdout, r.stderr, r.returncode)


def run_cli(*args, timeout=120):
    """``python -m xenstructs.cli ARGS`` with the venv's Python."""
    r = subprocess.run([venv_python(), "-m", "xenstructs.cli", *args], capture_output=True, text=True,
                       cwd=TOP, timeout=timeout, env=dict(os.environ, PYTHONPATH=TOP))
    return Result(r.stdout, r.stderr, r.returncode)


def median_seconds(argv, n=3, env=None):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, cwd=TOP, env=env or gdb_env(), timeout=120,
                       stdin=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------
# A tiny gdb remote stub (RSP over TCP), enough for gdb to connect, read registers and memory.
# mode "qemu" answers QEMU's qqemu.PhyMemMode / Qqemu.PhyMemMode:N like QEMU's gdbstub and serves
# physical memory from a dump while the mode is 1; mode "plain" is any other stub (kgdb, gdbsx).
# ---------------------------------------------------------------------------------------------


_CORE_REGS = ([(n, 64, "int64") for n in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi")]
              + [("rbp", 64, "data_ptr"), ("rsp", 64, "data_ptr")]
              + [(f"r{i}", 64, "int64") for i in range(8, 16)]
              + [("rip", 64, "code_ptr"), ("eflags", 32, "int32")]
              + [(n, 32, "int32") for n in ("cs", "ss", "ds", "es", "fs", "gs")]
              + [(f"st{i}", 80, "i387_ext") for i in range(8)]
              + [(n, 32, "int") for n in ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")])
_SSE_REGS = [(f"xmm{i}", 128, "uint128") for i in range(16)] + [("mxcsr", 32, "int")]
# QEMU declares cr0/cr3/cr4/efer with flags types (gdb-xml/i386-64bit.xml), which int() refuses
_SYS_REGS = [("cr0", 64, "i386_cr0"), ("cr2", 64, "int64"), ("cr3", 64, "i386_cr3"), ("cr4", 64, "i386_cr4"),
             ("cr8", 64, "int64"), ("efer", 64, "i386_efer")]
_SYS_TYPES = ('<flags id="i386_cr0" size="8"><field name="PG" start="31" end="31"/>'
              '<field name="PE" start="0" end="0"/></flags>'
              '<flags id="i386_cr3" size="8"><field name="PWT" start="3" end="3"/>'
              '<field name="PCD" start="4" end="4"/></flags>'
              '<flags id="i386_cr4" size="8"><field name="PAE" start="5" end="5"/>'
              '<field name="LA57" start="12" end="12"/></flags>'
              '<flags id="i386_efer" size="8"><field name="LME" start="8" end="8"/>'
              '<field name="NXE" start="11" end="11"/></flags>')


def _feature(name, regs, types=""):
    return (f'<feature name="{name}">' + types
            + "".join(f'<reg name="{n}" bitsize="{b}" type="{t}"/>' for n, b, t in regs) + "</feature>")


def _target_xml(with_sys):
    return ('<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target>'
            "<architecture>i386:x86-64</architecture>"
            + _feature("org.gnu.gdb.i386.core", _CORE_REGS) + _feature("org.gnu.gdb.i386.sse", _SSE_REGS)
            + (_feature("org.qemu.gdb.i386.sys", _SYS_REGS, _SYS_TYPES) if with_sys else "") + "</target>")


class FakeStub:
    """Serve one gdb connection on 127.0.0.1:``port`` in a thread.

    :param read_phys: ``read_phys(addr, size) -> bytes`` (raise for a hole)
    :param cpus: one dict of register values per CPU (thread ids 1..N)
    """

    def __init__(self, read_phys, cpus, mode="qemu", sys_regs=True):
        self.read_phys, self.cpus, self.mode = read_phys, cpus, mode
        self.regs = _CORE_REGS + _SSE_REGS + (_SYS_REGS if sys_regs else [])
        self.xml = _target_xml(sys_regs)
        self.phys = 0
        self.log = []                     # every packet received
        self.thread = 1
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def close(self):
        self.sock.close()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while True:
                    buf = buf.lstrip(b"+-")
                    if buf.startswith(b"\x03"):
                        buf = buf[1:]
                        self._send(conn, "T02thread:%02x;" % self.thread)
                        continue
                    i = buf.find(b"$")
                    j = buf.find(b"#", i)
                    if i < 0 or j < 0 or len(buf) < j + 3:
                        break
                    pkt, buf = buf[i + 1:j].decode("latin-1"), buf[j + 3:]
                    self.log.append(pkt)
                    reply = self._handle(pkt)
                    if reply is None:
                        conn.sendall(b"+")
                        return
                    self._send(conn, reply, b"+")

    @staticmethod
    def _send(conn, text, ack=b""):
        conn.sendall(ack + b"$" + text.encode("latin-1") + b"#%02x" % (sum(text.encode("latin-1")) & 0xFF))

    def _regblock(self):
        vals = self.cpus[self.thread - 1]
        out = ""
        for name, bits, _ in self.regs:
            out += (vals.get(name, 0) & ((1 << bits) - 1)).to_bytes(bits // 8, "little").hex()
        return out

    def _handle(self, p):
        if p.startswith("qSupported"):
            return "PacketSize=4000;qXfer:features:read+"
        if p.startswith("qXfer:features:read:target.xml:"):
            off, n = (int(x, 16) for x in p.rsplit(":", 1)[1].split(","))
            chunk = self.xml[off:off + n]
            return ("l" if off + n >= len(self.xml) else "m") + chunk
        if p == "?":
            return "T05thread:%02x;" % self.thread
        if p.startswith("Hg"):
            t = int(p[2:], 16) if p[2:] not in ("", "-1") else 0
            if t > 0:
                self.thread = t
            return "OK"
        if p.startswith("H"):
            return "OK"
        if p == "qfThreadInfo":
            return "m" + ",".join("%x" % (i + 1) for i in range(len(self.cpus)))
        if p == "qsThreadInfo":
            return "l"
        if p == "qC":
            return "QC%x" % self.thread
        if p.startswith("T"):
            return "OK"
        if p == "qAttached":
            return "1"
        if p in ("s", "c") or p.startswith(("s", "c")) and p[1:2].isalnum():
            return "T05thread:%02x;" % self.thread
        if p == "g":
            return self._regblock()
        if p.startswith("m"):
            addr, n = (int(x, 16) for x in p[1:].split(","))
            if not self.phys:
                return "E14"
            try:
                return bytes(self.read_phys(addr, n)).hex()
            except Exception:
                return "E14"
        if self.mode == "qemu" and p == "qqemu.PhyMemMode":
            return str(self.phys)
        if self.mode == "qemu" and p.startswith("Qqemu.PhyMemMode:"):
            self.phys = int(p.split(":")[1])
            return "OK"
        if p in ("k", "D") or p.startswith("D;"):
            return None if p == "k" else "OK"
        return ""
