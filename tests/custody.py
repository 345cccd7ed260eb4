"""Search stored bytes for secrets in every form they could be written in.

A secret (a clip key, a window of plaintext) may be stored raw, as hex, as base64
or base64url (with or without padding), and inside values that are themselves
base64 (an approval is base64 of JSON holding base64).  :func:`expand` decodes
every base64/hex-looking run it finds, a few levels deep, so that :func:`find`
sees through such wrapping; compressed Redis ``DUMP`` output is never searched —
callers read values with the commands of each type.

Callers must prove the search finds a planted secret before trusting that it
finds none (see tests/test_custody.py and tests/test_stolen_card.py).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

_B64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{24,}={0,2}")
_HEX_RUN = re.compile(rb"(?:[0-9a-fA-F]{2}){16,}")


def forms(secret: bytes) -> list[bytes]:
    """Every encoding of ``secret`` worth searching for."""
    b64 = base64.b64encode(secret)
    url = base64.urlsafe_b64encode(secret)
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        b64,
        b64.rstrip(b"="),
        url,
        url.rstrip(b"="),
    ]


def _decode_runs(data: bytes) -> Iterable[bytes]:
    for m in _B64_RUN.finditer(data):
        run = m.group()
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            for start in range(4):  # the run may start mid-quantum in a larger string
                part = run[start:].rstrip(b"=")
                part = part[: len(part) - len(part) % 4] if len(part) % 4 == 1 else part
                try:
                    yield decode(part + b"=" * (-len(part) % 4))
                except (binascii.Error, ValueError):
                    continue
    for m in _HEX_RUN.finditer(data):
        yield bytes.fromhex(m.group().decode())


def expand(blobs: dict[str, bytes], depth: int = 3) -> dict[str, bytes]:
    """``blobs`` plus what every base64 or hex run in them decodes to, ``depth`` levels."""
    out = dict(blobs)
    layer = blobs
    for level in range(depth):
        nxt: dict[str, bytes] = {}
        for name, data in layer.items():
            for i, decoded in enumerate(_decode_runs(data)):
                if len(decoded) >= 16:
                    nxt[f"{name}~{level}.{i}"] = decoded
        out.update(nxt)
        layer = nxt
    return out


def find(secrets: dict[str, bytes], blobs: dict[str, bytes]) -> list[tuple[str, str]]:
    """(secret name, where) for every secret found, in any form, in ``blobs`` expanded."""
    hits = []
    everything = expand(blobs)
    for sname, secret in secrets.items():
        for form in forms(secret):
            for where, data in everything.items():
                if form in data:
                    hits.append((sname, where))
    return sorted(set(hits))
