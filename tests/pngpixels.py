"""The pixels of a PNG file (8-bit RGB or RGBA, not interlaced: what Chromium's screenshots are),
decoded with zlib and numpy only (a test helper: no imaging library is installed)."""

import struct
import zlib

import numpy as np


def _chunks(data):
    pos = 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield kind, data[pos + 8:pos + 8 + length]
        pos += 12 + length


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _unfilter(kind, row, prior, bpp):
    if kind == 0:
        return row
    if kind == 2:
        return (row + prior) & 0xff
    out = row.copy()
    if kind == 1:                                   # Sub: a running sum per channel
        for ch in range(bpp):
            out[ch::bpp] = np.cumsum(row[ch::bpp]) & 0xff
        return out
    up, current = prior.tolist(), row.tolist()
    result = [0] * len(current)
    for i, x in enumerate(current):
        a = result[i - bpp] if i >= bpp else 0
        if kind == 3:
            result[i] = (x + ((a + up[i]) >> 1)) & 0xff
        else:
            c = up[i - bpp] if i >= bpp else 0
            result[i] = (x + _paeth(a, up[i], c)) & 0xff
    return np.array(result, dtype=np.int64)


def read_png(path):
    """``numpy`` array of shape (height, width, channels) of the PNG at ``path``."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    header, idat = None, []
    for kind, body in _chunks(data):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and not interlace, header
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).astype(np.int64)
    stride = width * bpp + 1
    prior = np.zeros(width * bpp, dtype=np.int64)
    rows = []
    for y in range(height):
        line = raw[y * stride:(y + 1) * stride]
        prior = _unfilter(int(line[0]), line[1:], prior, bpp)
        rows.append(prior)
    return np.array(rows, dtype=np.uint8).reshape(height, width, bpp)


def colour_count(pixels, hex_colour):
    """How many pixels have exactly the colour ``#rrggbb``."""
    rgb = [int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]
    return int(np.all(pixels[:, :, :3] == rgb, axis=2).sum())
