"""BPF Type Format (BTF) records, little-endian, as the kernel's ``Documentation/bpf/btf.rst`` and
``include/uapi/linux/btf.h`` define them.

A blob is a :data:`BtfHeader` (``magic`` 0xeB9F, ``version`` 1, ``hdr_len``; section offsets
relative to the end of the header), a type section and a string section (NUL-terminated strings,
the first one empty). Type ids count from 1 in section order (0 is ``void``). Each type is a
:data:`BtfType` (``info``: ``vlen`` bits 0-15, ``kind`` bits 24-28, ``kind_flag`` bit 31;
``size_or_type``: a size for INT/ENUM/STRUCT/UNION/FLOAT/ENUM64/DATASEC, a type id for the
others) followed by kind-specific data: :func:`extra_words` gives its length in 32-bit words.

>>> BtfHeader.sizeof(), BtfType.sizeof(), BtfMember.sizeof(), BtfArray.sizeof()
(24, 12, 12, 12)
>>> extra_words(KIND["STRUCT"], 3), extra_words(KIND["INT"], 0), extra_words(KIND["ENUM64"], 2)
(9, 1, 6)
"""

import construct as C

BTF_MAGIC = 0xEB9F

KIND = {"INT": 1, "PTR": 2, "ARRAY": 3, "STRUCT": 4, "UNION": 5, "ENUM": 6, "FWD": 7, "TYPEDEF": 8,
        "VOLATILE": 9, "CONST": 10, "RESTRICT": 11, "FUNC": 12, "FUNC_PROTO": 13, "VAR": 14,
        "DATASEC": 15, "FLOAT": 16, "DECL_TAG": 17, "TYPE_TAG": 18, "ENUM64": 19}
KIND_NAMES = {v: k for k, v in KIND.items()}

BtfHeader = C.Struct(
    "magic" / C.Int16ul,
    "version" / C.Int8ul,
    "flags" / C.Int8ul,
    "hdr_len" / C.Int32ul,
    "type_off" / C.Int32ul,
    "type_len" / C.Int32ul,
    "str_off" / C.Int32ul,
    "str_len" / C.Int32ul,
)

BtfType = C.Struct(
    "name_off" / C.Int32ul,
    "info" / C.Int32ul,
    "size_or_type" / C.Int32ul,
    "vlen" / C.Computed(lambda ctx: ctx.info & 0xFFFF),
    "kind" / C.Computed(lambda ctx: (ctx.info >> 24) & 0x1F),
    "kind_flag" / C.Computed(lambda ctx: ctx.info >> 31),
)

# BTF_KIND_INT's u32: encoding bits 24-27, bit offset 16-23, bits 0-7
BtfInt = C.Struct("raw" / C.Int32ul,
                  "encoding" / C.Computed(lambda ctx: (ctx.raw >> 24) & 0x0F),
                  "offset" / C.Computed(lambda ctx: (ctx.raw >> 16) & 0xFF),
                  "bits" / C.Computed(lambda ctx: ctx.raw & 0xFF))
BtfArray = C.Struct("type" / C.Int32ul, "index_type" / C.Int32ul, "nelems" / C.Int32ul)
# a STRUCT/UNION member: ``offset`` is the bit offset, or with kind_flag ``bitfield_size << 24 | bit offset``
BtfMember = C.Struct("name_off" / C.Int32ul, "type" / C.Int32ul, "offset" / C.Int32ul)
BtfEnum = C.Struct("name_off" / C.Int32ul, "val" / C.Int32sl)
BtfEnum64 = C.Struct("name_off" / C.Int32ul, "val_lo32" / C.Int32ul, "val_hi32" / C.Int32ul)
BtfParam = C.Struct("name_off" / C.Int32ul, "type" / C.Int32ul)
BtfVar = C.Struct("linkage" / C.Int32ul)
BtfVarSecinfo = C.Struct("type" / C.Int32ul, "offset" / C.Int32ul, "size" / C.Int32ul)
BtfDeclTag = C.Struct("component_idx" / C.Int32sl)

# 32-bit words after the common btf_type, per kind: (fixed, per vlen item)
_EXTRA = {KIND["INT"]: (1, 0), KIND["ARRAY"]: (3, 0), KIND["STRUCT"]: (0, 3), KIND["UNION"]: (0, 3),
          KIND["ENUM"]: (0, 2), KIND["FUNC_PROTO"]: (0, 2), KIND["VAR"]: (1, 0), KIND["DATASEC"]: (0, 3),
          KIND["DECL_TAG"]: (1, 0), KIND["ENUM64"]: (0, 3)}
# kinds with no data after btf_type
_PLAIN = {KIND[k] for k in ("PTR", "FWD", "TYPEDEF", "VOLATILE", "CONST", "RESTRICT", "FUNC", "FLOAT",
                            "TYPE_TAG")}
# modifiers a member's type goes through on its way to the real type
MODIFIERS = {KIND[k] for k in ("TYPEDEF", "VOLATILE", "CONST", "RESTRICT", "TYPE_TAG")}


def extra_words(kind, vlen):
    """32-bit words of kind-specific data after a ``btf_type`` of ``kind`` and ``vlen``; None for
    an unknown kind (the section cannot be parsed past it)."""
    if kind in _PLAIN:
        return 0
    fixed = _EXTRA.get(kind)
    if fixed is None:
        return None
    return fixed[0] + fixed[1] * vlen


EXTRA_TABLE = [(extra_words(k, 0), _EXTRA.get(k, (0, 0))[1]) for k in range(32)]
