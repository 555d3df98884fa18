"""The instruction at IP: hex bytes in, capstone's decoding out, and whether it writes memory.

Capstone (installed with pwntools) is imported only when something is disassembled.
"""

import re
from typing import Optional

from ..errors import XenscopeError
from ..xen.release import FLAT_RING1_CS, FLAT_RING3_CS, FLAT_RING3_CS32, FLAT_RING3_CS64, HYPERVISOR_CS

# Mnemonics that write memory without an explicit written memory operand in capstone's detail
_WRITERS = ("stos", "movs", "push", "call", "enter", "cmpxchg", "xadd", "xchg", "fxsave", "xsave",
            "sgdt", "sidt", "fnsave", "fnstenv", "fsave", "fstenv", "wrss", "wruss", "maskmov",
            "movnt")
_STACK_WRITERS = ("push", "call", "enter")
_CODE32_SELECTORS = (FLAT_RING1_CS, FLAT_RING3_CS, FLAT_RING3_CS32)
_CODE64_SELECTORS = (FLAT_RING3_CS64, HYPERVISOR_CS)


def parse_hex_bytes(text):
    """``"f3 aa"`` / ``"f3aa"`` / ``"\\xf3\\xaa"`` -> bytes; XenscopeError when it is not hex."""
    digits = re.sub(r"\\x|0x|[\s,<>]", "", text)
    try:
        code = bytes.fromhex(digits)
    except ValueError:
        raise XenscopeError(f"not instruction bytes in hex: {text!r}")
    if not code:
        raise XenscopeError("no instruction bytes given")
    return code[:16]


def disassemble(code, ip=0, bits=32):
    """Decode the first instruction of ``code`` with capstone and say whether it writes memory.

    :return: dict ``text``, ``mnemonic``, ``op_str``, ``size``, ``bytes`` (hex), ``writes_memory``,
             ``reads_memory``, ``why`` (how that was decided); ``None`` when nothing decodes.
    """
    import capstone
    from capstone import x86
    modes = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}
    decoder = capstone.Cs(capstone.CS_ARCH_X86, modes[bits])
    decoder.detail = True
    insn = next(iter(decoder.disasm(bytes(code), ip, 1)), None)
    if insn is None:
        return None
    writes = reads = False
    why = []
    try:
        for operand in insn.operands:
            if operand.type == x86.X86_OP_MEM:
                if operand.access & capstone.CS_AC_WRITE:
                    writes = True
                    why.append("a memory operand is written (capstone CS_AC_WRITE)")
                if operand.access & capstone.CS_AC_READ or not operand.access:
                    reads = True
    except capstone.CsError:
        pass
    mnemonic = insn.mnemonic.split()[-1]
    if not writes:
        for writer in _WRITERS:
            if mnemonic.startswith(writer):
                if writer == "xchg" and "ptr" not in insn.op_str:
                    continue
                writes = True
                why.append(f"{mnemonic} writes memory" + (" (the stack)" if writer in _STACK_WRITERS else ""))
                break
    if not why:
        why.append("no memory operand is written" + (" (it reads memory)" if reads else ""))
    return {"ip": ip, "bytes": bytes(insn.bytes).hex(), "size": insn.size, "mnemonic": insn.mnemonic,
            "op_str": insn.op_str, "text": f"{insn.mnemonic} {insn.op_str}".strip(), "bits": bits,
            "writes_memory": writes, "reads_memory": reads, "why": why[0]}


def memory_operands(code, ip, bits, registers):
    """``(text, [(address or None, size)])``: the first instruction of ``code`` at ``ip`` and the
    linear address of each explicit memory operand, computed from ``registers`` (``{"rax": ...}``,
    64-bit names); None where it cannot be (an FS/GS base, a register not given). ``(None, [])``
    when nothing decodes."""
    import capstone
    from capstone import x86
    modes = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}
    decoder = capstone.Cs(capstone.CS_ARCH_X86, modes[bits])
    decoder.detail = True
    insn = next(iter(decoder.disasm(bytes(code), ip, 1)), None)
    if insn is None:
        return None, []
    mask = (1 << bits) - 1
    flat = (0, x86.X86_REG_CS, x86.X86_REG_DS, x86.X86_REG_ES, x86.X86_REG_SS)
    out = []
    for operand in insn.operands:
        if operand.type != x86.X86_OP_MEM:
            continue
        mem = operand.mem
        address = mem.disp if mem.segment in flat else None
        for reg, scale in ((mem.base, 1), (mem.index, mem.scale)):
            if reg == 0 or address is None:
                continue
            name = insn.reg_name(reg)
            value = ip + insn.size if name in ("rip", "eip") else registers.get(_REG64.get(name, name))
            if value is not None and name in _REG64:
                value &= 0xFFFFFFFF
            address = None if value is None else address + scale * value
        out.append((None if address is None else address & mask, operand.size))
    return f"{insn.mnemonic} {insn.op_str}".strip(), out


# 32-bit register names capstone gives in 32-bit address computations, as pt_regs names them
_REG64 = {"eax": "rax", "ebx": "rbx", "ecx": "rcx", "edx": "rdx", "esi": "rsi", "edi": "rdi", "ebp": "rbp",
          "esp": "rsp"}


def code_bits(cs: Optional[int], guest: Optional[str], mode: Optional[str]) -> Optional[int]:
    """The code size to decode with: from Xen's PV selectors, else the guest kind, else the paging
    mode (legacy paging: 32-bit code, IA-32e: 64-bit); None when nothing says."""
    if cs in _CODE32_SELECTORS:
        return 32
    if cs in _CODE64_SELECTORS:
        return 64
    if guest == "pv32" or mode in ("2level", "pae"):
        return 32
    if guest == "pv64" or mode in ("4level", "5level"):
        return 64
    return None


def decode_at_ip(code, ip, bits, findings):
    """:func:`disassemble` the bytes at IP; what stops it goes to ``findings``. ``bits`` None: 64,
    said so."""
    if bits is None:
        findings.missing.append("code size unknown: instruction decoded as 64-bit (give --bits)")
        bits = 64
    decoded = disassemble(code, ip or 0, bits)
    if decoded is None:
        findings.notes.append(f"the bytes at IP ({bytes(code).hex()}) do not decode as an instruction")
    elif ip is None:
        decoded["ip"] = None          # bytes from a log whose IP is unknown (a symbolic RIP line)
    return decoded
