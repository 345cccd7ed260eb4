"""Signed footage requests: the requester's own word for its keys (docs/formats.md §3.1.1).

A requester signs its request body plus its two public keys with its Ed25519 key;
the relay stores and forwards that signed request in every ask unchanged, so an
owner's client seals clip keys to the box key the *requester* signed, not to
whatever key the relay puts beside it.  The owner pins the signing key per
requester name on first use (:class:`footage.pins.RequesterPins`).

>>> from protocol.crypto import OwnerKeys
>>> k = OwnerKeys.generate()
>>> body = {"lat": 1.0, "lon": 2.0, "radius_m": 50.0, "start": 0.0, "end": 9.0,
...         "reason": "r", "case_ref": "C", "basis": "consent"}
>>> s = sign_request(body, k)
>>> verify_request(s)["box_public"] == b64(k.box_public)
True
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from protocol.crypto import (
    CryptoFailure,
    OwnerKeys,
    b64,
    canonical,
    sign_payload,
    unb64,
    verify_payload,
)

# The request fields a requester signs (besides its keys); the ask must show the same.
SIGNED_FIELDS = ("lat", "lon", "radius_m", "start", "end", "reason", "case_ref", "basis")


def sign_request(body: dict[str, Any], keys: OwnerKeys) -> dict[str, str]:
    """``{"payload", "signature"}`` over the body's signed fields, ``demand`` when set,
    and the requester's ``sign_public`` and ``box_public`` (base64)."""
    payload = {k: body[k] for k in SIGNED_FIELDS}
    if body.get("demand"):
        payload["demand"] = body["demand"]
    payload["v"] = 1
    payload["sign_public"] = b64(keys.sign_public)
    payload["box_public"] = b64(keys.box_public)
    return sign_payload(payload, keys.sign_private)


def verify_request(signed: Any) -> dict[str, Any]:
    """The payload if ``signed`` is signed by the ``sign_public`` inside it, else
    CryptoFailure.  Self-signed: who that key belongs to is the pin's business."""
    if not isinstance(signed, dict) or set(signed) != {"payload", "signature"}:
        raise CryptoFailure("a signed request is {payload, signature}")
    try:
        claimed = json.loads(unb64(signed["payload"]))
        key = unb64(claimed["sign_public"])
        box = unb64(claimed["box_public"])
    except (ValueError, TypeError, KeyError, CryptoFailure):
        raise CryptoFailure("the signed request is not readable") from None
    if len(key) != 32 or len(box) != 32:
        raise CryptoFailure("the signed request's keys are not 32 bytes")
    try:
        return verify_payload(signed, key)
    except CryptoFailure:
        raise CryptoFailure("the signed request's signature does not verify") from None


def matches(payload: dict[str, Any], request: dict[str, Any]) -> list[str]:
    """The signed fields where ``request`` (as the relay shows it) differs from the
    signed ``payload``; empty when they agree."""
    wrong = [k for k in SIGNED_FIELDS if payload.get(k) != request.get(k)]
    if (payload.get("demand") or None) != (request.get("demand") or None):
        wrong.append("demand")
    return wrong


def request_hash(signed: dict[str, str]) -> str:
    """SHA-256 (hex) of the signed request's canonical JSON: what the public log carries.

    >>> request_hash({"payload": "e30=", "signature": "AA=="})[:12]
    '031a33061728'
    """
    return hashlib.sha256(canonical(signed)).hexdigest()


def fingerprint(sign_public: bytes) -> str:
    """A short, readable fingerprint of a signing key to compare out of band.

    >>> fingerprint(bytes(32))
    '66687aad-f862bd77-6c8fc18b-8e9f8e20'
    """
    h = hashlib.sha256(sign_public).hexdigest()[:32]
    return "-".join(h[i : i + 8] for i in range(0, 32, 8))
