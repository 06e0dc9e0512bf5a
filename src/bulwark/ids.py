"""Random (version 4) UUIDs as text, cheaper than ``str(uuid.uuid4())``.

Request ids and action ids are made on every request. The bytes still come from the operating
system's CSPRNG (``os.urandom``), read 4 KiB at a time instead of 16 bytes per id; formatting
skips building a ``uuid.UUID`` object. The result is the same canonical lowercase form.
"""

from __future__ import annotations

import os
import threading

_POOL_BYTES = 4096
_lock = threading.Lock()
_pool = b""
_offset = 0


def _random16() -> bytearray:
    global _pool, _offset
    with _lock:
        if _offset + 16 > len(_pool):
            _pool, _offset = os.urandom(_POOL_BYTES), 0
        chunk = _pool[_offset : _offset + 16]
        _offset += 16
    return bytearray(chunk)


def new_uuid() -> str:
    """A random UUID (RFC 9562 version 4, variant 10) as ``xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx``."""
    raw = _random16()
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
