"""Parsers of what Xen's own tools print (Xen 4.17's tools/xentrace/xenctx.c, tools/misc/xen-mfndump.c,
tools/debugger/gdbsx/gx), read in their source: the tier's judges, independent of xenscope."""
import re

_REGISTER = re.compile(r"(?:^|\s)(r[a-z0-9]+|flags|cs|ss|ds|es|fs|gs|cr\d|dr\d): +([0-9a-f]+)")
_STACK_LINE = re.compile(r"^([0-9a-f]{16}):\s+(?:\|?\s*\[<([0-9a-f]{16})>\]\s*(\S*)|\|?(?:--)?\s*([0-9a-f]{16}))\s*$")


def xenctx_registers(text):
    """``{vcpu: {register: value}}`` from ``xenctx -a -C`` (rip rsp rax..r15 flags, the selectors
    cs ss ds es fs gs, cr0-cr4, dr0-dr7; ``fs_base``, ``gs_base_kernel``, ``gs_base_user``)."""
    out, vcpu = {}, 0
    for line in text.splitlines():
        head = re.match(r"^vcpu(\d+):", line)
        if head:
            vcpu = int(head.group(1))
            continue
        regs = out.setdefault(vcpu, {})
        for name, value in _REGISTER.findall(line):
            regs.setdefault(name, int(value, 16))
        base = re.match(r"^ fs: [0-9a-f]+ @ ([0-9a-f]+)", line)
        if base:
            regs["fs_base"] = int(base.group(1), 16)
        base = re.match(r"^ gs: [0-9a-f]+ @ ([0-9a-f]+)/([0-9a-f]+)", line)
        if base:
            regs["gs_base_kernel"], regs["gs_base_user"] = int(base.group(1), 16), int(base.group(2), 16)
    return out


def xenctx_stack_trace(text):
    """``xenctx -S``'s "Stack Trace:" words: ``[(address, value, symbol or None)]``; a word xenctx
    printed as ``[<value>] symbol`` is one it took for kernel text."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("Stack Trace:"):
            inside = True
            continue
        found = _STACK_LINE.match(line) if inside else None
        if found:
            address = int(found.group(1), 16)
            if found.group(2):
                out.append((address, int(found.group(2), 16), found.group(3) or ""))
            else:
                out.append((address, int(found.group(4), 16), None))
    return out


def dump_ptes(text):
    """``xen-mfndump dump-ptes``: ``{"pfn", "mfn", "level", "pinned", "entries": [512 values]}``."""
    head = re.search(r"pfn: 0x([0-9a-f]+), mfn: 0x([0-9a-f]+)(?:, L(\d) table)?([^\n]*)", text)
    if not head:
        raise ValueError(f"not dump-ptes output:\n{text[:500]}")
    entries = {int(i): int(v, 16) for i, v in re.findall(r"pte\[(\d+)\]: 0x([0-9a-f]+)", text)}
    return {"pfn": int(head.group(1), 16), "mfn": int(head.group(2), 16),
            "level": int(head.group(3)) if head.group(3) else None, "pinned": "[pinned]" in head.group(4),
            "entries": [entries[i] for i in range(len(entries))]}


def dump_p2m(text):
    """``xen-mfndump dump-p2m``: ``(size, {pfn: (mfn, type number, type text)})``."""
    size = int(re.search(r"P2M size: = (\d+)", text).group(1))
    rows = {int(p, 16): (int(m, 16), int(t, 16), rest.strip()) for p, m, t, rest in
            re.findall(r"pfn=0x([0-9a-f]+) ==> mfn=0x([0-9a-f]+) \(type 0x([0-9a-f]+)\)([^\n]*)", text)}
    return size, rows


def dump_m2p(text):
    """``xen-mfndump dump-m2p``: ``(max_mfn, numpy array of every mfn's pfn)``."""
    import numpy as np
    max_mfn = int(re.search(r"Max MFN: (\d+)", text).group(1))
    pairs = re.findall(r"mfn=0x([0-9a-f]+) ==> pfn=0x([0-9a-f]+)", text)
    out = np.full(max_mfn, np.iinfo(np.uint64).max, np.uint64)
    for mfn, pfn in pairs:
        out[int(mfn, 16)] = int(pfn, 16)
    return max_mfn, out, len(pairs)


def lookup_pte(text):
    """``xen-mfndump lookup-pte``: ``[(table mfn, index, entry)]``."""
    return [(int(t, 16), int(i), int(e, 16)) for t, i, e in
            re.findall(r"0x[0-9a-f]+ <-- \[0x([0-9a-f]+)\]\[(\d+)\]: 0x([0-9a-f]+)", text)]


def gdb_registers(text):
    """``info registers`` (gdb's view of gdbsx's ``g`` reply): ``{name: value}``."""
    return {m.group(1): int(m.group(2), 16) for m in re.finditer(r"^(\w+)\s+0x([0-9a-f]+)", text, re.M)}
