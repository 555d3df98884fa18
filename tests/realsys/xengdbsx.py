"""One Xen host for the live tier: a real gdbsx on a real PV domU, Xen's own tools as judges, and
QEMU's gdbstub on the whole host, all at one pause of the domU.

    run = boot(workdir)                         # Xen (gdbsx-capable build) + dom0 + a paused PV domU
    run.gdbsx_session(commands)                 # gdbsx -a DOMID 64 PORT in dom0, real gdb on the host
    run.tools()                                 # xenctx, xen-mfndump, xen-hvmctx in dom0, kept
    run.walk_down(l4, va), run.walk_up(mfn, va) # xen-mfndump dump-ptes / lookup-pte chains
    run.carry()                                 # xl dump-core + every tool output, out of the VM
    run.qemu_port                               # QEMU's gdbstub (gdbsxlive.collect attaches gdb, dumps the host)
    run.close()

Which hypervisor: Debian's Xen 4.17 release builds (4.17.5+72 and 4.17.7+13 checked) have no gdbsx
support: ``CONFIG_GDBSX`` sits under ``if DEBUG || EXPERT`` in ``xen/Kconfig.debug`` and Debian's
config sets neither (its ``boot/xen-4.17-amd64.config`` has no CONFIG_GDBSX line; the -dbg map has no
``gdbsx_guest_mem_io``), so every ``XEN_DOMCTL_gdbsx_*`` fails with ENOSYS and gdbsx stops at
"Hyp is NOT enabled for gdbsx". The build booted here is :func:`realsys.xendebug.debug_hypervisor`
(Debian's own source and config with CONFIG_DEBUG=y, which turns CONFIG_GDBSX on by default), at the
version whose source Debian serves (4.17.5+72: deb.debian.org has no source of 4.17.7+13); the
toolstack and ``libxen-dev`` (gdbsx's headers) are Debian's packages of that same version.

dom0 gets, besides xendomu's toolstack: gdbsx (:mod:`realsys.gdbsx_build`), ``xen-mfndump``,
``xenctx``, ``xen-hvmctx`` (``xen-utils-4.17``), and ``virtio_net``: QEMU's user network forwards a
host port to gdbsx's (``hostfwd``), dom0's eth0 gets 10.0.2.15/24 (QEMU's default guest address).
QEMU's own gdbstub listens on another host port. Tool outputs are written in dom0 under /judge and
carried out with the ``xl dump-core`` file on the raw disk (a tar).

The domU (Debian's amd64 kernel, busybox) loads two modules, starts three sleeps and prints, before its
ready marker: /proc/modules, every pid and comm, one sleep's /proc/PID/maps and /proc/PID/pagemap
entries (pfns: root reads them) of its first mapping and of its stack's top page.
"""
import os
import re
import shutil
import socket
import tarfile
import time

from . import gdbsx_build as B
from . import linux as L
from . import vm as V
from . import xendebug as D
from . import xendomu as U

XEN_BIN = U.XEN_BIN
GDBSX = "/usr/sbin/gdbsx"
TOOLS = (f"{XEN_BIN}/xen-mfndump", f"{XEN_BIN}/xenctx", f"{XEN_BIN}/xen-hvmctx")
DOM0_MODULES = U.DOM0_MODULES + ("virtio_net",)
DOMU_MODULES = ("xen-evtchn", "xen-gntalloc")
DOM0_ADDRESS = "10.0.2.15"
GDBSX_PORT = 9999                   # in dom0
SLEEPS = (100001, 100002, 100003)
PAGEMAP_PAGES = 32                  # pagemap entries printed from the start of the first mapping


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the domU

def domu_init():
    """The domU's /init (see the module doc); pagemap entries are printed with ``od -v`` (no '*')."""
    _, moddir, _, _ = L.kernel_files("x86_64")
    mods = U.module_closure(moddir, DOMU_MODULES)
    inserts = [f"insmod /lib/m{i}-{os.path.basename(rel)}" for i, rel in enumerate(mods)]
    sleeps = " ".join(f"sleep {n} &" for n in SLEEPS)
    lines = [
        "#!/bin/busybox sh",
        "/bin/busybox --install -s /bin",
        "mount -t proc proc /proc",
        "mount -t devtmpfs dev /dev",
        *inserts,
        sleeps,
        # the listing must see the sleeps exec'd (a forked child is still named sh for a while)
        f"n=0; while [ $n -lt 200 ] && [ $(cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^sleep$') "
        f"-lt {len(SLEEPS)} ]; do sleep 0.1; n=$((n+1)); done",
        "echo MODS-BEGIN; cat /proc/modules; echo MODS-END",
        "echo PIDS-BEGIN; for p in /proc/[0-9]*; do echo ${p#/proc/} $(cat $p/comm); done; echo PIDS-END",
        f"p=$(for q in /proc/[0-9]*; do [ \"$(tr '\\0' ' ' < $q/cmdline 2>/dev/null)\" = 'sleep {SLEEPS[0]} ' ] "
        "&& echo ${q#/proc/}; done | head -1)",
        "echo MAPS-BEGIN $p; cat /proc/$p/maps; echo MAPS-END",
        "first=$(head -1 /proc/$p/maps | cut -d- -f1)",
        "stack=$(grep '\\[stack\\]' /proc/$p/maps | cut -d' ' -f1 | cut -d- -f2)",
        "pagemap() { echo PAGEMAP-BEGIN $1 $2; dd if=/proc/$p/pagemap bs=8 skip=$(( $1 / 4096 )) count=$2 "
        "2>/dev/null | od -A n -t x8 -v; echo PAGEMAP-END; }",
        f"pagemap $((0x$first)) {PAGEMAP_PAGES}",
        "pagemap $((0x$stack - 4096)) 1",
        f"echo {U.DOMU_READY} $(uname -r) $(cat /proc/cmdline)",
        "while true; do sleep 3600; done",
    ]
    files = {"lib": (0o40755, None)}
    for i, rel in enumerate(mods):
        files[f"lib/m{i}-{os.path.basename(rel)}"] = (0o100644, open(os.path.join(moddir, rel), "rb").read())
    return V.busybox_initramfs("\n".join(lines) + "\n", extra=files)


def parse_domu_console(text):
    """What the domU printed: ``{"modules": {name: (size, address)}, "pids": {pid: comm},
    "pid": the sleep's pid, "maps": [(start, end, perms, name)], "pagemap": {va: entry}}``."""
    text = text.replace("\r", "")

    def block(name):
        found = re.search(rf"{name}-BEGIN[^\n]*\n(.*?){name}-END", text, re.S)
        if not found:
            raise RuntimeError(f"the domU printed no {name} block:\n{text[-3000:]}")
        return found.group(1)
    modules = {}
    for line in block("MODS").splitlines():
        parts = line.split()
        if len(parts) >= 6:
            modules[parts[0]] = (int(parts[1]), int(parts[5], 16))
    pids = {int(line.split()[0]): line.split()[1] for line in block("PIDS").splitlines()
            if len(line.split()) == 2}
    pid = int(re.search(r"MAPS-BEGIN (\d+)", text).group(1))
    maps = []
    for line in block("MAPS").splitlines():
        parts = line.split()
        if parts:
            start, end = (int(x, 16) for x in parts[0].split("-"))
            maps.append((start, end, parts[1], parts[5] if len(parts) > 5 else ""))
    pagemap = {}
    for found in re.finditer(r"PAGEMAP-BEGIN (\d+) (\d+)\n(.*?)PAGEMAP-END", text, re.S):
        va = int(found.group(1))
        words = [int(w, 16) for w in found.group(3).split()]
        for i, word in enumerate(words[:int(found.group(2))]):
            pagemap[va + i * 4096] = word
    return {"modules": modules, "pids": pids, "pid": pid, "maps": maps, "pagemap": pagemap}


# ---------------------------------------------------------------- dom0's steps

JUDGE = r"""#!/bin/sh
# dom0's steps for the live tier, one per call: /xs/judge STEP [ARGS]
X=/usr/lib/xen-4.17/bin
J=/judge
mkdir -p $J
case "$1" in
net)
    ifconfig lo 127.0.0.1 up
    ifconfig eth0 %(address)s netmask 255.255.255.0 up && ifconfig eth0 && echo "XS-OK net"
    ;;
gdbsx)
    # gdbsx pauses the domain and waits for gdb; its output is kept (its stdout, a file here, is
    # flushed only when it exits: the listening socket says it is ready)
    rm -f $J/gdbsx-$4.log
    %(gdbsx)s -a $2 $3 %(port)s > $J/gdbsx-$4.log 2>&1 &
    echo $! > $J/gdbsx.pid
    for i in $(seq 100); do grep -q ":%(hexport)s 00000000:0000 0A" /proc/net/tcp && break; usleep 100000; done
    cat $J/gdbsx-$4.log
    grep -q ":%(hexport)s 00000000:0000 0A" /proc/net/tcp && echo "XS-OK gdbsx"
    ;;
gdbsx-done)
    # after gdb left: gdbsx exits by itself
    p=$(cat $J/gdbsx.pid)
    for i in $(seq 100); do [ -d /proc/$p ] || break; usleep 100000; done
    [ -d /proc/$p ] && { kill $p; echo "XS-GDBSX killed"; }
    cat $J/gdbsx-$2.log; echo "XS-OK gdbsx-done"
    ;;
tools)
    grep -v '\[' /proc/kallsyms | sort > $J/kallsyms
    $X/xl list > $J/xl-list.txt 2>&1
    $X/xenctx -s $J/kallsyms -a -C $2 > $J/xenctx-a.txt 2>&1; echo "rc=$?" >> $J/xenctx-a.txt
    $X/xenctx -s $J/kallsyms -S $2 0 > $J/xenctx-S.txt 2>&1; echo "rc=$?" >> $J/xenctx-S.txt
    $X/xenctx -s $J/kallsyms $2 0 > $J/xenctx.txt 2>&1; echo "rc=$?" >> $J/xenctx.txt
    $X/xen-hvmctx $2 > $J/xen-hvmctx.txt 2>&1; echo "rc=$?" >> $J/xen-hvmctx.txt
    $X/xen-mfndump dump-p2m $2 > $J/dump-p2m.txt 2>&1; echo "rc=$?" >> $J/dump-p2m.txt
    $X/xen-mfndump dump-m2p > $J/dump-m2p.txt 2>&1; echo "rc=$?" >> $J/dump-m2p.txt
    grep '^cr3:' $J/xenctx-a.txt | head -1
    tail -1 $J/dump-p2m.txt; tail -2 $J/dump-m2p.txt | head -1
    echo "XS-OK tools"
    ;;
ptes)
    # dump-ptes of MFN (hex); prints one entry: INDEX
    $X/xen-mfndump dump-ptes $2 $3 > $J/dump-ptes-$3.txt 2>&1
    grep "pte\[$4\]:" $J/dump-ptes-$3.txt | sed "s/^/XS-PTE $3 /"
    grep "^ pfn:" $J/dump-ptes-$3.txt | sed "s/^/XS-TABLE $3 /"
    echo "XS-OK ptes"
    ;;
lookup)
    $X/xen-mfndump lookup-pte $2 $3 > $J/lookup-pte-$3.txt 2>&1
    grep "<--" $J/lookup-pte-$3.txt | sed "s/^/XS-REF /"
    echo "XS-OK lookup"
    ;;
p2m)
    # dump-p2m's lines of the given pfns (hex)
    shift; for pfn in "$@"; do grep "pfn=0x$pfn ==>" $J/dump-p2m.txt | sed "s/^/XS-P2M /"; done
    echo "XS-OK p2m"
    ;;
syms)
    # one pass over /proc/kallsyms (each name's first line)
    shift; names=$(echo "$@" | sed 's/ /|/g')
    grep -E " ($names)\$" /proc/kallsyms | awk '!seen[$3]++' | sed "s/^/XS-SYM /"
    echo "XS-OK syms"
    ;;
carry)
    mkdir -p /out && mount -t tmpfs -o size=230m out /out && cd /out || exit 1
    $X/xl dump-core $2 /out/domu.core 2>&1 || { echo "XS-FAIL dump-core"; exit 1; }
    cp -r $J /out/judge && cp /var/log/xen/console/guest-domu.log /out/judge/ && cp $J/kallsyms /out/kallsyms
    echo "XS-SIZE core $(stat -c %%s domu.core)"
    tar -cf /dev/vda domu.core kallsyms judge && sync || { echo "XS-FAIL tar"; exit 1; }
    cd / && umount /out
    echo "XS-OK carry"
    ;;
*)
    echo "XS-FAIL unknown step $1"
    ;;
esac
""" % {"address": DOM0_ADDRESS, "gdbsx": GDBSX, "port": GDBSX_PORT, "hexport": f"{GDBSX_PORT:04X}"}


# ---------------------------------------------------------------- the run

class Run:
    """The booted host and everything collected on it (see the module doc)."""

    def __init__(self, domu, hypervisor, gdbsx, gdbsx_port, qemu_port):
        self.domu = domu
        self.host = domu.host
        self.hypervisor = hypervisor
        self.gdbsx = gdbsx
        self.gdbsx_port = gdbsx_port          # on the host: QEMU forwards it to dom0's GDBSX_PORT
        self.qemu_port = qemu_port
        self.timings = dict(domu.timings)
        self.log = {}
        self.files = {}                       # carried out: name -> path
        self.sessions = 0

    @property
    def domid(self):
        return self.domu.domid

    def step(self, name, command, ok, timeout=120):
        started = time.time()
        out = self.host.dom0_shell(command, timeout=timeout)
        self.timings[name] = self.timings.get(name, 0) + time.time() - started
        self.log.setdefault(name, []).append(out)
        if ok not in out:
            raise RuntimeError(f"dom0 step {name!r} ({command}) printed no {ok}:\n{out}\n"
                               f"console tail:\n{self.host.console[-2000:]}")
        return out

    def gdbsx_session(self, run_gdb, bits=64):
        """Start gdbsx on the domU in dom0, call ``run_gdb(port)`` (which attaches gdb to
        127.0.0.1:port and leaves), wait for gdbsx to end; return (gdb's result, gdbsx's output)."""
        self.sessions += 1
        label = f"{self.sessions}"
        self.step("gdbsx_start", f"/xs/judge gdbsx {self.domid} {bits} {label}", "XS-OK gdbsx")
        started = time.time()
        try:
            result = run_gdb(self.gdbsx_port)
        finally:
            self.timings["gdb_on_gdbsx"] = self.timings.get("gdb_on_gdbsx", 0) + time.time() - started
            out = self.step("gdbsx_done", f"/xs/judge gdbsx-done {label}", "XS-OK gdbsx-done")
        return result, out

    def tools(self):
        return self.step("tools", f"/xs/judge tools {self.domid}", "XS-OK tools", timeout=300)

    def ptes(self, mfn, index):
        """xen-mfndump dump-ptes of ``mfn``: (its entry ``index``, the table's header line)."""
        out = self.step("dump_ptes", f"/xs/judge ptes {self.domid} {mfn:x} {index}", "XS-OK ptes")
        entry = re.search(rf"XS-PTE {mfn:x}\s+pte\[{index}\]: 0x([0-9a-f]+)", out)
        table = re.search(rf"XS-TABLE {mfn:x}\s+(pfn:.*)", out)
        return (int(entry.group(1), 16) if entry else None), (table.group(1).strip() if table else out)

    def lookup(self, mfn):
        """xen-mfndump lookup-pte of ``mfn``: [(table mfn, index, entry)]."""
        out = self.step("lookup_pte", f"/xs/judge lookup {self.domid} {mfn:x}", "XS-OK lookup", timeout=300)
        return [(int(t, 16), int(i), int(e, 16)) for t, i, e in
                re.findall(r"XS-REF\s+0x[0-9a-f]+ <-- \[0x([0-9a-f]+)\]\[(\d+)\]: 0x([0-9a-f]+)", out)]

    def walk_down(self, l4_mfn, va):
        """A walk of ``va`` from the L4 ``l4_mfn`` with dump-ptes only: [(level, table mfn, index,
        entry, header)] down to the L1 entry (or the first entry that is not present)."""
        out, mfn = [], l4_mfn
        for level, shift in ((4, 39), (3, 30), (2, 21), (1, 12)):
            index = va >> shift & 511
            entry, header = self.ptes(mfn, index)
            out.append((level, mfn, index, entry, header))
            if entry is None or not entry & 1:
                break
            mfn = (entry >> 12) & ((1 << 40) - 1)
        return out

    def walk_up(self, mfn, va):
        """lookup-pte from the frame ``mfn`` mapped at ``va`` upwards: per level (L1 first) ``{"frames":
        looked up, "refs": every (table mfn, index, entry) lookup-pte printed, "chain": those at
        ``va``'s index of that level}``; the next level looks up the chain's tables. Every frame is
        also mapped read-only by the kernel's direct map (other indices): those refs stay in "refs"."""
        out, frames = [], [mfn]
        for shift in (12, 21, 30, 39):
            refs = sorted({ref for frame in frames for ref in self.lookup(frame)})
            chain = [ref for ref in refs if ref[1] == va >> shift & 511]
            out.append({"frames": frames, "refs": refs, "chain": chain})
            frames = sorted({table for table, _, _ in chain})
            if not frames:
                break
        return out

    def p2m(self, pfns):
        """dump-p2m's mfn of each pfn in ``pfns``: ``{pfn: (mfn, type text)}``."""
        out = self.step("p2m_lines", "/xs/judge p2m " + " ".join(f"{p:x}" for p in pfns), "XS-OK p2m")
        return {int(p, 16): (int(m, 16), rest.strip()) for p, m, rest in
                re.findall(r"XS-P2M\s+pfn=0x([0-9a-f]+) ==> mfn=0x([0-9a-f]+)(.*)", out)}

    def symbols(self, names):
        """Addresses of ``names`` in dom0's /proc/kallsyms (the domU runs the same kernel, nokaslr)."""
        out = self.step("symbols", "/xs/judge syms " + " ".join(names), "XS-OK syms")
        return {name: int(addr, 16) for addr, name in re.findall(r"XS-SYM ([0-9a-f]+) \S+ (\S+)", out)}

    def carry(self):
        """xl dump-core and /judge (tool outputs, the domU's console) out through the raw disk."""
        out = self.step("carry", f"/xs/judge carry {self.domid}", "XS-OK carry", timeout=400)
        started = time.time()
        with tarfile.open(self.domu.disk, "r:") as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                dest = os.path.join(self.domu.dir, "carried", member.name)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with tar.extractfile(member) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                self.files[member.name] = dest
        size = re.search(r"XS-SIZE core (\d+)", out)
        if not size or os.path.getsize(self.files["domu.core"]) != int(size.group(1)):
            raise RuntimeError(f"carried-out core differs from dom0's: {out}")
        self.timings["carry_out"] = time.time() - started
        return out

    def text(self, name):
        with open(self.files[name], errors="replace") as f:
            return f.read()

    def close(self):
        self.domu.close()


def boot(workdir, timeout=300):
    """Boot the host (see the module doc) up to a paused domU with dom0's network up; a :class:`Run`."""
    started = time.time()
    hypervisor = D.debug_hypervisor()
    version = hypervisor["version"]
    gdbsx = B.build_gdbsx(version)
    root = os.path.join(workdir, "gdbsx-root")
    os.makedirs(os.path.join(root, "usr", "sbin"), exist_ok=True)
    shutil.copy(gdbsx["path"], os.path.join(root, "usr", "sbin", "gdbsx"))
    guest = U.Guest(programs=U.PROGRAMS + TOOLS + (GDBSX,), modules=DOM0_MODULES, domu_initrd=domu_init(),
                    extra_roots={"gdbsx (built here)": root},
                    extra_files={"xs/judge": (0o100755, JUDGE.encode())}, dump_core=False)
    gdbsx_port, qemu_port = free_port(), free_port()
    qemu = ["-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{gdbsx_port}-:{GDBSX_PORT}",
            "-device", "virtio-net-pci,netdev=net0", "-gdb", f"tcp:127.0.0.1:{qemu_port}"]
    domu = U.boot_xen_with_domu(workdir, timeout=timeout, version=version, hypervisor=hypervisor, guest=guest,
                                qemu_args=qemu)
    run = Run(domu, hypervisor, gdbsx, gdbsx_port, qemu_port)
    try:
        run.timings["prepare_and_boot"] = time.time() - started
        run.step("net", "/xs/judge net", "XS-OK net")
    except BaseException:
        run.close()
        raise
    return run
