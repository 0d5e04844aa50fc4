"""Server-to-client WebSocket frames, built once and written to every subscriber.

Server frames are unmasked (RFC 6455 §5.1), so the same bytes serve every connection. With
permessage-deflate (RFC 7692) each message is compressed on its own (no context takeover), which any client
decompressor accepts whatever it negotiated, so one compressed frame also serves every compressing client.
"""

from __future__ import annotations

import struct
import zlib

_TEXT_FIN = 0x81
_RSV1 = 0x40
_DEFLATE_TAIL = b"\x00\x00\xff\xff"


def _header(first_byte: int, length: int) -> bytes:
    if length < 126:
        return bytes((first_byte, length))
    if length < 65536:
        return struct.pack("!BBH", first_byte, 126, length)
    return struct.pack("!BBQ", first_byte, 127, length)


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame."""
    return _header(_TEXT_FIN, len(payload)) + payload


def deflate_text_frame(payload: bytes, window_bits: int) -> bytes:
    """One text frame compressed with a fresh deflate context (RSV1 set)."""
    # zlib rejects 8-bit raw windows; a 9-bit window decodes fine in any client that allowed 8.
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -max(window_bits, 9))
    body = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    if body.endswith(_DEFLATE_TAIL):
        body = body[:-4]
    return _header(_TEXT_FIN | _RSV1, len(body)) + body


def build_frame(payload: bytes, codec: int) -> bytes:
    """``codec`` 0 means plain; otherwise it is the deflate window size the connection negotiated."""
    return text_frame(payload) if codec == 0 else deflate_text_frame(payload, codec)
