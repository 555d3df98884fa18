"""Judge xenscope's walks of the running kernel against ``/proc/kcore`` itself (run as root, on the
kernel to judge: this machine, or a guest of the real-system tier through a read-only share).

    python tests/kcorecheck.py [--every N] > result.json

Truth: the kernel's own symbols from ``/proc/kallsyms`` (text and read-only data: ``T t R r``, which
do not change while read) and the bytes ``/proc/kcore`` gives at each symbol's virtual address, its
program headers parsed here with :mod:`struct` (no xenscope code). Judged: xenscope's walk of each
address from the kernel's root (``init_top_pgt``, through :func:`xenstructs.targets.open_dump` on
``/proc/kcore``) and the bytes read at the physical address the walk gives. Prints one JSON object:
``{symbols: [{name, type, va, kcore, walk_pa, page_size, stop, via_walk}], sources, mode, cr3}``.
"""
import argparse
import json
import os
import struct
import sys

KCORE = "/proc/kcore"
LENGTH = 32
NO_PADDR = (1 << 64) - 1


def kcore_segments(fd):
    """``[(vaddr, memsz, offset, paddr)]`` of /proc/kcore's PT_LOAD program headers."""
    head = os.pread(fd, 64, 0)
    assert head[:4] == b"\x7fELF" and head[4] == 2, head[:8]
    phoff, = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    table = os.pread(fd, phentsize * phnum, phoff)
    out = []
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, p_paddr, _, p_memsz, _ = struct.unpack_from("<IIQQQQQQ", table, i * phentsize)
        if p_type == 1:
            out.append((p_vaddr, p_memsz, p_offset, p_paddr))
    return out


def kcore_bytes(fd, segments, va, size):
    for vaddr, memsz, offset, _ in segments:
        if vaddr <= va and va + size <= vaddr + memsz:
            return os.pread(fd, size, offset + va - vaddr)
    return None


def kernel_symbols(every):
    """Every ``every``-th text/rodata symbol of the kernel's own lines of /proc/kallsyms."""
    out = []
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[1] in "TtRr":
                out.append((parts[2], parts[1], int(parts[0], 16)))
    return out[::every]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=200)
    args = ap.parse_args(argv)
    fd = os.open(KCORE, os.O_RDONLY)
    segments = kcore_segments(fd)
    symbols = kernel_symbols(args.every)
    truth = [(n, t, va, kcore_bytes(fd, segments, va, LENGTH)) for n, t, va in symbols]

    from xenstructs.context import resolve
    from xenstructs.paging import walk
    from xenstructs.targets import open_dump
    target = open_dump(KCORE)
    ctx = resolve(target)
    rows = []
    for name, kind, va, data in truth:
        w = walk(target, ctx.paging, va)
        via = target.read_phys(w.pa, LENGTH).hex() if w.pa is not None else None
        rows.append({"name": name, "type": kind, "va": va, "kcore": data.hex() if data is not None else None,
                     "walk_pa": w.pa, "page_size": w.page_size, "stop": w.stop, "via_walk": via})
    json.dump({"symbols": rows, "sources": ctx.sources, "mode": ctx.paging.mode, "cr3": ctx.cr3,
               "segments": [[v, m, p] for v, m, _, p in segments]}, sys.stdout)


if __name__ == "__main__":
    main()
