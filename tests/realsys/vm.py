"""Real systems under QEMU for the test suite: Debian packages, a busybox initramfs, QMP.

Nothing here knows xenscope: it boots a kernel nobody here wrote and collects QEMU's own truth
(``info registers``, ``info tlb``, ``info mem``, ``gva2gpa``) and dumps (``dump-guest-memory``).
Downloads are cached in $XENSCOPE_CACHE (default ~/.cache/xenscope).
"""
import glob
import gzip
import io
import json
import os
import socket
import subprocess
import tempfile
import time

CACHE = os.environ.get("XENSCOPE_CACHE", os.path.expanduser("~/.cache/xenscope"))


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def deb(package):
    """Path of the cached .deb of a Debian package (apt-get download on first use)."""
    d = os.path.join(CACHE, "debs")
    os.makedirs(d, exist_ok=True)
    name, _, arch = package.partition(":")
    pattern = os.path.join(d, f"{name}_*_{arch or 'amd64'}.deb")
    hits = glob.glob(pattern) or glob.glob(os.path.join(d, f"{name}_*_all.deb"))
    if not hits:
        sh("apt-get", "download", "-q", package, cwd=d)
        hits = glob.glob(pattern) or glob.glob(os.path.join(d, f"{name}_*_all.deb"))
    return sorted(hits)[-1]


def extract(package):
    """Unpack a package's .deb once into the cache; return the directory."""
    path = deb(package)
    out = os.path.join(CACHE, "unpacked", os.path.basename(path)[:-4])
    if not os.path.isdir(out):
        tmp = out + ".tmp"
        sh("rm", "-rf", tmp)
        os.makedirs(tmp)
        sh("dpkg-deb", "-x", path, tmp)
        os.rename(tmp, out)
    return out


def kernel_package(meta="linux-image-amd64"):
    """The versioned image package a kernel metapackage (``linux-image-amd64``) depends on."""
    out = sh("apt-cache", "depends", meta).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-"):
            return line.split()[1]
    raise RuntimeError(f"no kernel package behind {meta}")


def newc(files):
    """A gzip'd cpio (newc) archive from ``{path: (mode, bytes)}``; directories have bytes None."""
    buf = io.BytesIO()

    def entry(name, mode, data, ino):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
        buf.write(hdr.encode() + name_b)
        buf.write(b"\0" * (-(110 + len(name_b)) % 4))
        buf.write(data)
        buf.write(b"\0" * (-len(data) % 4))

    for ino, (path, (mode, data)) in enumerate(sorted(files.items()), 1):
        entry(path, mode, data if data is not None else b"", ino)
    entry("TRAILER!!!", 0, b"", 0)
    return gzip.compress(buf.getvalue(), 1)


def busybox_initramfs(init_script, extra=None):
    """An initramfs with static busybox as /bin/busybox and ``init_script`` as /init."""
    bb = open("/bin/busybox", "rb").read()
    files = {"bin": (0o40755, None), "proc": (0o40755, None), "sys": (0o40755, None),
             "dev": (0o40755, None), "tmp": (0o40755, None),
             "bin/busybox": (0o100755, bb), "init": (0o100755, init_script.encode())}
    files.update(extra or {})
    return newc(files)


class VM:
    """One QEMU process with a QMP socket and the serial console on a pipe."""

    def __init__(self, qemu, args, workdir=None):
        self.dir = workdir or tempfile.mkdtemp(prefix="xenscope-vm-")
        self.qmp_path = os.path.join(self.dir, "qmp.sock")
        self.console = b""
        self.proc = subprocess.Popen(
            [qemu, "-nographic", "-no-reboot", "-monitor", "none", "-serial", "stdio",
             "-qmp", f"unix:{self.qmp_path},server,nowait"] + args,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._qmp = None

    def read_console(self):
        try:
            d = self.proc.stdout.read()
        except (BlockingIOError, OSError):
            d = None
        if d:
            self.console += d
        return self.console

    def wait_for(self, marker, timeout=180):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if marker.encode() in self.read_console():
                return time.time() - t0
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        tail = self.console[-2000:].decode(errors="replace")
        raise RuntimeError(f"VM did not print {marker!r} in {timeout} s; console tail:\n{tail}")

    def send(self, text):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def qmp(self, command, **arguments):
        if self._qmp is None:
            s = socket.socket(socket.AF_UNIX)
            for _ in range(100):
                try:
                    s.connect(self.qmp_path)
                    break
                except OSError:
                    time.sleep(0.1)
            self._qmp = s.makefile("rw")
            json.loads(self._qmp.readline())
            self.qmp("qmp_capabilities")
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._qmp.write(json.dumps(msg) + "\n")
        self._qmp.flush()
        while True:
            r = json.loads(self._qmp.readline())
            if "error" in r:
                raise RuntimeError(f"QMP {command}: {r['error']}")
            if "return" in r:
                return r["return"]

    def hmp(self, line):
        return self.qmp("human-monitor-command", **{"command-line": line})

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
