"""Where an MCAP file is damaged: a walk over its top-level records (no decompression).

rosbags refuses an MCAP without its footer ("File end magic is invalid"), which is what a
recording cut off by a crash or a full disk looks like. :func:`damage` says instead where
the file stops making sense: the byte offset of the first incomplete or invalid record,
and the last complete message before it (topic and log time, from uncompressed chunks;
the time range of the last complete chunk otherwise).
"""
from __future__ import annotations

import mmap
import os
import struct

MAGIC = b"\x89MCAP0\r\n"
OPCODES = {0x01: "Header", 0x02: "Footer", 0x03: "Schema", 0x04: "Channel", 0x05: "Message",
           0x06: "Chunk", 0x07: "MessageIndex", 0x08: "ChunkIndex", 0x09: "Attachment",
           0x0A: "AttachmentIndex", 0x0B: "Statistics", 0x0C: "Metadata",
           0x0D: "MetadataIndex", 0x0E: "SummaryOffset", 0x0F: "DataEnd"}


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, pos)
    return buf[pos + 4:pos + 4 + n].decode(errors="replace"), pos + 4 + n


class _Scan:
    def __init__(self, buf):
        self.buf = buf  # the whole file (an mmap): records are read in place
        self.topics: dict[int, str] = {}
        self.last = ""  # the last complete message (or chunk) seen

    def records(self, pos: int, end: int, inner: bool) -> str:
        """Walk the records in [pos, end); '' if whole, else where it breaks."""
        buf = self.buf
        while pos < end:
            if end - pos < 9:
                return f"offset {pos}: {end - pos} stray bytes, not a record"
            op, length = buf[pos], struct.unpack_from("<Q", buf, pos + 1)[0]
            if op not in OPCODES:
                return f"offset {pos}: unknown opcode 0x{op:02x}"
            body = pos + 9
            if body + length > end:
                return (f"offset {pos}: {OPCODES[op]} record cut off after {end - body} of "
                        f"{length} bytes")
            self.visit(op, body)
            pos = body + length
            if op == 0x02 and not inner:  # footer: only the closing magic may follow
                return "" if buf[pos:end] == MAGIC else \
                    f"offset {pos}: no closing magic after the footer"
        return "" if inner else f"offset {end}: file ends without a footer"

    def visit(self, op: int, pos: int) -> None:
        buf = self.buf
        if op == 0x04:
            (cid,) = struct.unpack_from("<H", buf, pos)
            self.topics[cid] = _string(buf, pos + 4)[0]
        elif op == 0x05:
            cid, _seq, log_time = struct.unpack_from("<HIQ", buf, pos)
            self.last = f"topic {self.topics.get(cid, f'channel {cid}')}, log time {log_time} ns"
        elif op == 0x06:
            start, end = struct.unpack_from("<QQ", buf, pos)
            compression, pos = _string(buf, pos + 28)
            (size,) = struct.unpack_from("<Q", buf, pos)
            if compression:
                self.last = f"a {compression} chunk of log times {start}..{end} ns"
            else:
                self.records(pos + 8, pos + 8 + size, inner=True)


def damage(path) -> str:
    """'' if the MCAP file is structurally whole, else where and how it is broken."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < len(MAGIC) or f.read(len(MAGIC)) != MAGIC:
            return "offset 0: not an MCAP file (no leading magic)"
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            scan = _Scan(buf)
            where = scan.records(len(MAGIC), len(buf), inner=False)
            if where and scan.last:
                where += f"; the last complete message before it: {scan.last}"
            return where
