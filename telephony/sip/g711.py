"""G.711 μ-law, table-driven: 16-bit PCM (native byte order, as PJSIP hands it) <-> μ-law.

The media stream carries μ-law whatever the trunk negotiated: PJSIP's own G.711 codecs turn
the trunk's A-law or μ-law into PCM, and these tables turn that PCM into the stream's μ-law and
back. The standard library's `audioop` did this until Python 3.13 removed it.
"""

from __future__ import annotations

import sys

SILENCE = 0xFF  # μ-law for 0

# The ITU-T G.711 reference (and what `audioop` did): 14-bit magnitudes, segment ends below.
_SEGMENT_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def _encode(sample: int) -> int:
    value = sample >> 2
    mask = 0x7F if value < 0 else 0xFF
    value = min(abs(value), 8159) + 0x21
    segment = next((i for i, end in enumerate(_SEGMENT_ENDS) if value <= end), 8)
    if segment == 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def _decode(code: int) -> int:
    code = ~code & 0xFF
    exponent = (code >> 4) & 0x07
    magnitude = ((((code & 0x0F) << 3) + 0x84) << exponent) - 0x84
    return -magnitude if code & 0x80 else magnitude


# Indexed by a sample read as unsigned 16 bits (so -1 is 65535).
_ENCODE = bytes(_encode(u - 65536 if u >= 32768 else u) for u in range(65536))
_DECODE = [_decode(code).to_bytes(2, sys.byteorder, signed=True) for code in range(256)]


def pcm_to_ulaw(pcm: bytes | bytearray | memoryview) -> bytes:
    """16-bit PCM samples (native order) -> one μ-law byte each."""
    return bytes(map(_ENCODE.__getitem__, memoryview(pcm).cast("B").cast("H")))


def ulaw_to_pcm(ulaw: bytes | bytearray | memoryview) -> bytes:
    """μ-law bytes -> 16-bit PCM samples (native order)."""
    return b"".join(map(_DECODE.__getitem__, bytes(ulaw)))
