"""Duration of a PCM WAV file from its RIFF header, without decoding or libsndfile.

Parsing the header directly takes microseconds per file, which is what lets
corpus preparation measure 140,000 AISHELL wavs in seconds. Anything unusual
(compressed formats, odd chunks) returns None and the caller falls back to a
full reader (:func:`.durations.wav_duration`).
"""

from __future__ import annotations

import os
import struct

# RIFF/WAVE format tags whose duration is data bytes / block align / rate.
_PCM_LIKE = {1, 3, 6, 7}
_EXTENSIBLE = 0xFFFE


def parse_wav_header(fd: int, size: int) -> float | None:
    """Duration in seconds from a RIFF/WAVE header read through ``fd``, or None if unusual."""
    head = os.pread(fd, 512, 0)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    fmt = None
    while True:
        if pos + 8 > len(head):
            chunk = os.pread(fd, 8, pos)
            if len(chunk) < 8:
                return None
            cid, n = chunk[:4], struct.unpack_from("<I", chunk, 4)[0]
        else:
            cid, n = head[pos:pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if cid == b"fmt ":
            body = head[pos + 8:pos + 8 + min(n, 40)] if pos + 8 + min(n, 40) <= len(head) else os.pread(fd, min(n, 40), pos + 8)
            if len(body) < 16:
                return None
            tag, channels, rate, _, block_align, _ = struct.unpack_from("<HHIIHH", body, 0)
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]
            if tag not in _PCM_LIKE or rate == 0 or block_align == 0:
                return None
            fmt = (rate, block_align)
        elif cid == b"data":
            if fmt is None:
                return None
            start = pos + 8
            available = size - start
            if n == 0 or n == 0xFFFFFFFF or n > available:  # streamed or truncated: trust the file size
                n = max(available, 0)
            rate, block_align = fmt
            return (n // block_align) / rate
        pos += 8 + n + (n & 1)
        if pos >= size:
            return None
