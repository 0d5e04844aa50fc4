"""A WebSocket response that also accepts the guide's own ``curl`` handshake.

The guide's debug command sends ``Sec-WebSocket-Key: SGVsbG8sIHdvcmxkIQ==``, which decodes to 13 bytes, not the
16 RFC 6455 asks for; aiohttp refuses it. We accept any non-empty base64 key and answer with the accept value
computed from the key exactly as sent, so strict clients see no difference.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from aiohttp import hdrs, web
from multidict import CIMultiDict

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_PLACEHOLDER_KEY = base64.b64encode(b"\x00" * 16).decode()


def _is_rfc_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _is_base64(key: str) -> bool:
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


class LenientWebSocketResponse(web.WebSocketResponse):
    def _handshake(self, request: web.BaseRequest) -> Any:
        key = request.headers.get(hdrs.SEC_WEBSOCKET_KEY, "")
        if not key or _is_rfc_key(key) or not _is_base64(key):
            return super()._handshake(request)
        headers = CIMultiDict(request.headers)
        headers[hdrs.SEC_WEBSOCKET_KEY] = _PLACEHOLDER_KEY
        response_headers, *rest = super()._handshake(request.clone(headers=headers))
        accept = base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()
        response_headers[hdrs.SEC_WEBSOCKET_ACCEPT] = accept
        return (response_headers, *rest)
