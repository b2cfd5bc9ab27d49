"""Duration of a PCM WAV file from its RIFF header, without decoding or libsndfile.

Parsing the header directly takes microseconds per file, which is what lets
corpus preparation measure 140,000 AISHELL wavs in seconds. Anything unusual
(compressed formats, odd chunks) returns None and the caller falls back to a
full reader (:func:`.durations.wav_duration`). The header is also how a wav cut
short by an interrupted copy is recognised: libsndfile silently reads what is there.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

# RIFF/WAVE format tags whose duration is data bytes / block align / rate.
_PCM_LIKE = {1, 3, 6, 7}
_EXTENSIBLE = 0xFFFE


@dataclass
class RiffData:
    """What a PCM WAV header says about its samples."""

    rate: int
    block_align: int  # bytes per frame (all channels)
    declared: int | None  # data chunk size in the header; None = streamed (0 or 0xFFFFFFFF)
    available: int  # data bytes actually in the file

    @property
    def seconds(self) -> float:
        """Duration of the audio the file holds (a truncated file: what is left)."""
        size = self.available if self.declared is None else min(self.declared, self.available)
        return (size // self.block_align) / self.rate

    @property
    def truncated(self) -> bool:
        """The header promises more data than the file holds (a copy cut short)."""
        return self.declared is not None and self.declared > self.available


def read_riff(fd: int, size: int) -> RiffData | None:
    """The sample layout from a RIFF/WAVE header read through ``fd``, or None if unusual."""
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
            available = max(size - (pos + 8), 0)
            streamed = n == 0 or n == 0xFFFFFFFF  # a writer that never went back to fill the size in
            return RiffData(fmt[0], fmt[1], None if streamed else n, available)
        pos += 8 + n + (n & 1)
        if pos >= size:
            return None


def parse_wav_header(fd: int, size: int) -> float | None:
    """Duration in seconds of the audio a PCM WAV file holds (header read through ``fd``), or None if unusual."""
    riff = read_riff(fd, size)
    return riff.seconds if riff is not None else None


def read_wav_file_header(path: str) -> RiffData | None:
    """:func:`read_riff` of the file at ``path`` (None when it is not a plain PCM WAV)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_riff(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
