"""Width and height of a PNG or JPEG payload, read from its header before decoding.

A compressed frame says how big it will be before any pixel is decoded: a 100 KB PNG can
expand to 30000x30000 (2.7 GB as BGR). Reading the size from the header lets the node
refuse such a frame in microseconds, before OpenCV allocates anything for it. Only these
two formats are recognised, by their magic bytes, and nothing else is handed to the
decoder, so no decoder runs on a payload whose size was not checked.

PNG: the 8-byte signature, then the IHDR chunk (length 13) with width and height as
big-endian uint32. JPEG: SOI (FF D8), then marker segments up to the first SOFn frame
header, whose payload is precision (1 byte), height and width (big-endian uint16).
"""
from __future__ import annotations

import struct

from flash_rt_ros.malformed import MalformedFrame

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG extension) and CC (DAC) do not.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-7 (SOI/EOI are handled on their own).
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])


def payload_format(buf: memoryview) -> str:
    """``png`` or ``jpeg`` from the magic bytes; MalformedFrame otherwise."""
    if bytes(buf[:8]) == PNG_SIGNATURE:
        return "png"
    if bytes(buf[:2]) == JPEG_SOI:
        return "jpeg"
    raise MalformedFrame("undecodable", "payload is neither PNG nor JPEG (magic bytes)")


def png_size(buf: memoryview) -> tuple[int, int]:
    """(width, height) from the IHDR chunk that must follow the signature."""
    if len(buf) < 33 or bytes(buf[12:16]) != b"IHDR":
        raise MalformedFrame("truncated", "PNG without a complete IHDR header")
    return struct.unpack_from(">II", buf, 16)


def jpeg_size(buf: memoryview) -> tuple[int, int]:
    """(width, height) from the first SOFn segment, walking the marker segments."""
    i, n = 2, len(buf)
    while i + 4 <= n:
        if buf[i] != 0xFF:
            raise MalformedFrame("undecodable", f"JPEG marker expected at byte {i}")
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or start of scan before any frame header
            break
        (length,) = struct.unpack_from(">H", buf, i + 2)
        if length < 2:
            raise MalformedFrame("undecodable", f"JPEG segment length {length} at byte {i}")
        if marker in _JPEG_SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack_from(">HH", buf, i + 5)
            return width, height
        i += 2 + length
    raise MalformedFrame("truncated", "JPEG without a frame header (SOF) before its data")


def compressed_size(data) -> tuple[str, int, int]:
    """(format, width, height) of a PNG/JPEG payload, from its header alone."""
    buf = memoryview(data).cast("B")
    fmt = payload_format(buf)
    width, height = (png_size if fmt == "png" else jpeg_size)(buf)
    return fmt, width, height
