"""An encoded image's size from its header, without decoding it: the check that refuses a
decompression bomb (a small file that decodes to gigabytes) before any pixel is allocated.

PNG, JPEG (baseline and progressive, EXIF blocks skipped), BMP, WebP (lossy, lossless, extended),
GIF and TIFF (the first image); other formats give None and are checked after decoding.
"""

from __future__ import annotations

import struct


def image_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from an encoded image's header, without decoding it: PNG, JPEG, BMP,
    WebP, GIF and TIFF; None for another format or a header too short or damaged to read."""
    try:
        for magic, reader in _HEADER_READERS:
            if data.startswith(magic):
                return reader(data)
    except (struct.error, IndexError):
        return None
    return None


def _png_size(data: bytes) -> tuple[int, int]:
    w, h = struct.unpack(">II", data[16:24])  # IHDR, the first chunk.
    return h, w


def _gif_size(data: bytes) -> tuple[int, int]:
    w, h = struct.unpack("<HH", data[6:10])
    return h, w


def _bmp_size(data: bytes) -> tuple[int, int]:
    if struct.unpack("<I", data[14:18])[0] == 12:  # BITMAPCOREHEADER: 16-bit sizes.
        w, h = struct.unpack("<HH", data[18:22])
    else:
        w, h = struct.unpack("<ii", data[18:26])  # Negative height: rows stored top-down.
    return abs(h), abs(w)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8 ":  # Lossy: the key frame header after the 3-byte start code.
        w, h = struct.unpack("<HH", data[26:30])
        return h & 0x3FFF, w & 0x3FFF
    if chunk == b"VP8L":  # Lossless: 14 bits each of width - 1 and height - 1.
        bits = struct.unpack("<I", data[21:25])[0]
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X":  # Extended: 24 bits each of canvas width - 1 and height - 1.
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return h, w
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # Fill byte.
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD9)):  # Markers without a length.
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # Start of frame.
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return (h, w) if h > 0 else None  # Height 0: defined later (DNL), not read here.
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", data[4:8])
    (entries,) = struct.unpack(order + "H", data[offset : offset + 2])
    size = {}
    for k in range(entries):
        tag, kind = struct.unpack(order + "HH", data[offset + 2 + 12 * k : offset + 6 + 12 * k])
        value = data[offset + 10 + 12 * k : offset + 14 + 12 * k]
        if tag in (256, 257) and kind in (3, 4):  # ImageWidth, ImageLength: SHORT or LONG.
            size[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), value[: kind - 1])[0]
    return (size[257], size[256]) if len(size) == 2 else None


_HEADER_READERS = (
    (b"\x89PNG\r\n\x1a\n", _png_size),
    (b"\xff\xd8", _jpeg_size),
    (b"BM", _bmp_size),
    (b"RIFF", _webp_size),
    (b"GIF87a", _gif_size),
    (b"GIF89a", _gif_size),
    (b"II*\x00", _tiff_size),
    (b"MM\x00*", _tiff_size),
)
