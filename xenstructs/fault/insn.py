"""The instruction at IP: hex bytes in, capstone's decoding out, and whether it writes memory."""

import re

from ..errors import XenscopeError

# Mnemonics that write memory without an explicit written memory operand in capstone's detail
_WRITERS = ("stos", "movs", "push", "call", "enter", "cmpxchg", "xadd", "xchg", "fxsave", "xsave",
            "sgdt", "sidt", "fnsave", "fnstenv", "fsave", "fstenv", "wrss", "wruss", "maskmov",
            "movnt")


def parse_hex_bytes(text):
    """``"f3 aa"`` / ``"f3aa"`` / ``"\\xf3\\xaa"`` -> bytes; XenscopeError when it is not hex."""
    t = re.sub(r"\\x|0x|[\s,<>]", "", text)
    try:
        b = bytes.fromhex(t)
    except ValueError:
        raise XenscopeError(f"not instruction bytes in hex: {text!r}")
    if not b:
        raise XenscopeError("no instruction bytes given")
    return b[:16]


def disassemble(code, ip=0, bits=32):
    """Decode the first instruction of ``code`` with capstone and say whether it writes memory.

    :return: dict ``text``, ``mnemonic``, ``op_str``, ``size``, ``bytes`` (hex), ``writes_memory``,
             ``reads_memory``, ``why`` (how that was decided); ``None`` when nothing decodes.
    """
    import capstone as cs
    from capstone import x86 as cx
    modes = {16: cs.CS_MODE_16, 32: cs.CS_MODE_32, 64: cs.CS_MODE_64}
    md = cs.Cs(cs.CS_ARCH_X86, modes[bits])
    md.detail = True
    insn = next(iter(md.disasm(bytes(code), ip, 1)), None)
    if insn is None:
        return None
    writes = reads = False
    why = []
    try:
        for op in insn.operands:
            if op.type == cx.X86_OP_MEM:
                if op.access & cs.CS_AC_WRITE:
                    writes = True
                    why.append("a memory operand is written (capstone CS_AC_WRITE)")
                if op.access & cs.CS_AC_READ or not op.access:
                    reads = True
    except cs.CsError:
        pass
    mn = insn.mnemonic.split()[-1]
    if not writes:
        for w in _WRITERS:
            if mn.startswith(w):
                if w == "xchg" and "ptr" not in insn.op_str:
                    continue
                writes = True
                why.append(f"{mn} writes memory" + (" (the stack)" if w in ("push", "call", "enter") else ""))
                break
    if not why:
        why.append("no memory operand is written" + (" (it reads memory)" if reads else ""))
    return {"ip": ip, "bytes": bytes(insn.bytes).hex(), "size": insn.size, "mnemonic": insn.mnemonic,
            "op_str": insn.op_str, "text": f"{insn.mnemonic} {insn.op_str}".strip(), "bits": bits,
            "writes_memory": writes, "reads_memory": reads, "why": why[0]}
