"""A requester's and an owner's client written from docs/formats.md alone.

Standard library, ``cryptography``, ``PyNaCl`` and ``httpx`` only: it imports no
module of the project (tests/test_formats_client.py checks that), so it shows that
the documented formats are enough to interoperate.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from typing import Any

import httpx
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def read_key_file(text: str) -> bytes:
    """§1: base64 of 32 raw bytes and a newline."""
    raw = base64.b64decode(text.strip(), validate=True)
    assert len(raw) == 32
    return raw


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

    def call(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.http.request(method, path, **kw)
        if resp.status_code >= 400:
            err = resp.json()
            raise RuntimeError(f"{resp.status_code} {err['error']}: {err['reason']}")
        return resp.json()


# ------------------------------------------------------------------ requester


def file_request(
    api: Api,
    lat: float,
    lon: float,
    start: float,
    end: float,
    signer: tuple[bytes, bytes] | None = None,
) -> str:
    """§3.1; signed as §3.1.1 with ``signer`` = (sign seed, box public key)."""
    body: dict[str, Any] = {
        "lat": lat,
        "lon": lon,
        "radius_m": 150.0,
        "start": start,
        "end": end,
        "reason": "a parcel was stolen",
        "case_ref": "CASE-77",
        "basis": "consent",
    }
    if signer is not None:
        seed, box_public = signer
        payload = {
            **body,
            "v": 1,
            "sign_public": b64(bytes(SigningKey(seed).verify_key)),
            "box_public": b64(box_public),
        }
        signed = canonical(payload)
        body["signed"] = {
            "payload": b64(signed),
            "signature": b64(SigningKey(seed).sign(signed).signature),
        }
    return api.call("POST", "/v1/requests", json=body)["id"]


def signed_box_key(ask: dict[str, Any]) -> str:
    """§3.1.1, steps 1, 2 and 4 (a client that keeps no pins skips 3): the box key the
    requester signed, after checking the signature and that the ask says the same."""
    signed = ask["signed_request"]
    body = base64.b64decode(signed["payload"])
    payload = json.loads(body)
    VerifyKey(base64.b64decode(payload["sign_public"])).verify(
        body, base64.b64decode(signed["signature"])
    )
    demands = ask.get("legal_demands") or []
    shown = {
        **ask,
        "lat": ask["center"][0],
        "lon": ask["center"][1],
        "demand": demands[0]["docket"] if demands else None,
    }
    for k in ("lat", "lon", "radius_m", "start", "end", "reason", "case_ref", "basis"):
        if payload[k] != shown[k]:
            raise ValueError(f"the ask's {k} is not what the requester signed")
    if payload.get("demand") != shown["demand"]:
        raise ValueError("the ask's demand is not what the requester signed")
    return payload["box_public"]


def decrypt_container(data: bytes, key: bytes) -> bytes:
    """§6: header, then chunks with nonce prefix || counter || last flag, aad = header."""
    header = data[:15]
    magic, chunk, prefix = header[:4], struct.unpack(">I", header[4:8])[0], header[8:15]
    if magic != b"ODB1" or not 0 < chunk <= 1 << 24:
        raise ValueError("not a clip container")
    aead = ChaCha20Poly1305(key)
    body = data[15:]
    step = chunk + 16
    blocks = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    out = []
    for i, block in enumerate(blocks):
        last = i == len(blocks) - 1
        nonce = prefix + struct.pack(">I", i) + (b"\x01" if last else b"\x00")
        out.append(aead.decrypt(nonce, block, header))
    return b"".join(out)


def fetch(api: Api, request_id: str, box_private: bytes) -> dict[str, bytes]:
    """§3.2 and §5: clip id → plaintext MP4, each checked against its sha256."""
    status = api.call("GET", f"/v1/requests/{request_id}")
    out = {}
    for item in status["released"]:
        key = SealedBox(PrivateKey(box_private)).decrypt(base64.b64decode(item["wrapped_key"]))
        # The link is not the relay's: no token goes to it.
        blob = httpx.get(item["download_url"], timeout=30)
        blob.raise_for_status()
        if hashlib.sha256(blob.content).hexdigest() != item["sha256"]:
            raise ValueError("the download does not match its sha256")
        out[item["clip_id"]] = decrypt_container(blob.content, key)
    return out


# ------------------------------------------------------------------ owner


def canonical(payload: dict[str, Any]) -> bytes:
    """§4."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def sign(payload: dict[str, Any], sign_seed: bytes) -> str:
    body = canonical(payload)
    signature = SigningKey(sign_seed).sign(body).signature
    return b64(json.dumps({"payload": b64(body), "signature": b64(signature)}).encode())


def approve(api: Api, ask: dict[str, Any], sign_seed: bytes, box_private: bytes, expires: int):
    """§3.3, §3.4, §4, §5: open each clip key, seal it to the requester, sign, send.
    For a signed request (§3.1.1), to the box key the requester signed."""
    recipient = signed_box_key(ask) if ask.get("signed_request") else ask["requester_key"]
    requester = PublicKey(base64.b64decode(recipient))
    keys = {}
    for clip in ask["clips"]:
        key = SealedBox(PrivateKey(box_private)).decrypt(base64.b64decode(clip["owner_key"]))
        keys[clip["clip_id"]] = b64(SealedBox(requester).encrypt(key))
    payload = {
        "type": "approval",
        "request_id": ask["request_id"],
        "device": ask["device"],
        "clip_ids": sorted(keys),
        "requester_key": recipient,
        "keys": keys,
        "expires": expires,
        "nonce": b64(os.urandom(16)),
    }
    return api.call(
        "POST", f"/v1/asks/{ask['id']}/approve", json={"approval": sign(payload, sign_seed)}
    )


def set_masks(
    api: Api,
    device: str,
    masks: dict[str, list[tuple[float, float]]],
    sign_seed: bytes,
    issued: int,
    expires: int,
    previous: str | None = None,
) -> tuple[dict[str, Any], str]:
    """§3.9, §4: sign the whole set of owner masks (points as integers x 10 000) built on
    the set in force (``previous``: its hash, from :func:`held_masks`), send it; returns
    the relay's answer and the hash the doorbell will announce."""
    payload = {
        "type": "masks",
        "device": device,
        "issued": issued,
        "previous": previous,
        "masks": [
            {"name": name, "points": [[round(x * 10_000), round(y * 10_000)] for x, y in pts]}
            for name, pts in sorted(masks.items())
        ],
        "expires": expires,
        "nonce": b64(os.urandom(16)),
    }
    digest = hashlib.sha256(canonical(payload)).hexdigest()
    out = api.call(
        "POST", f"/v1/devices/{device}/masks", json={"decision": sign(payload, sign_seed)}
    )
    return out, digest


def held_masks(api: Api, device: str, sign_public: bytes) -> tuple[str | None, dict | None]:
    """§3.9: the set the doorbell last announced in force, its signature checked with the
    owner's own key: ``(hash, payload)``, ``(None, None)`` when it holds none."""
    out = api.call("GET", f"/v1/devices/{device}/masks")
    if out["hash"] is None:
        return None, None
    envelope = json.loads(base64.b64decode(out["update"]))
    body = base64.b64decode(envelope["payload"])
    VerifyKey(sign_public).verify(body, base64.b64decode(envelope["signature"]))
    assert hashlib.sha256(body).hexdigest() == out["hash"], "the relay named another set"
    return out["hash"], json.loads(body)


# ------------------------------------------------------------------ a bystander


def solve_work(challenge: str, difficulty: int) -> str:
    """§3.7 step 2: a decimal nonce; SHA-256(challenge ":" nonce) has leading zero bits."""
    i = 0
    while True:
        digest = hashlib.sha256(f"{challenge}:{i}".encode()).digest()
        if int.from_bytes(digest, "big") >> (256 - difficulty) == 0:
            return str(i)
        i += 1


def bystander_request(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """§3.7 steps 1-3, without a token."""
    ch = httpx.get(f"{url}/v1/bystander/challenge", timeout=30).json()
    nonce = solve_work(ch["challenge"], ch["difficulty"])
    resp = httpx.post(
        f"{url}/v1/bystander/requests",
        json={**body, "challenge": ch["challenge"], "nonce": nonce},
        timeout=30,
    )
    assert resp.status_code == 202, resp.text
    return resp.json()


def bystander_status(url: str, filed: dict[str, Any]) -> dict[str, Any]:
    """§3.7 step 4."""
    resp = httpx.get(
        f"{url}/v1/bystander/requests/{filed['id']}",
        headers={"Authorization": f"Bearer {filed['status_token']}"},
        timeout=30,
    )
    resp.raise_for_status()
    return resp.json()


def bystander_fetch(url: str, filed: dict[str, Any], box_private: bytes) -> dict[str, bytes]:
    """§3.7 (outcome copy), §5, §6: clip id → plaintext MP4."""
    out = {}
    for answer in bystander_status(url, filed)["answers"]:
        for item in answer.get("released", []):
            key = SealedBox(PrivateKey(box_private)).decrypt(base64.b64decode(item["wrapped_key"]))
            blob = httpx.get(item["download_url"], timeout=30)
            blob.raise_for_status()
            if hashlib.sha256(blob.content).hexdigest() != item["sha256"]:
                raise ValueError("the download does not match its sha256")
            out[item["clip_id"]] = decrypt_container(blob.content, key)
    return out


def answer_copy(api: Api, ask: dict[str, Any], sign_seed: bytes, box_private: bytes, expires: int):
    """§3.8: a copy is an Approval (§4) sent as {"answer": "copy", "approval": ...}."""
    requester = PublicKey(base64.b64decode(ask["requester_key"]))
    keys = {}
    for clip in ask["clips"]:
        key = SealedBox(PrivateKey(box_private)).decrypt(base64.b64decode(clip["owner_key"]))
        keys[clip["clip_id"]] = b64(SealedBox(requester).encrypt(key))
    payload = {
        "type": "approval",
        "request_id": ask["request_id"],
        "device": ask["device"],
        "clip_ids": sorted(keys),
        "requester_key": ask["requester_key"],
        "keys": keys,
        "expires": expires,
        "nonce": b64(os.urandom(16)),
    }
    body = {"answer": "copy", "approval": sign(payload, sign_seed)}
    return api.call("POST", f"/v1/asks/{ask['id']}/answer", json=body)


def answer_erase(api: Api, ask: dict[str, Any], sign_seed: bytes, expires: int):
    """§3.8: an erasure is one signed Deletion (§4) per clip."""
    deletions = {
        c: sign(
            {
                "type": "delete",
                "device": ask["device"],
                "clip_id": c,
                "expires": expires,
                "nonce": b64(os.urandom(16)),
            },
            sign_seed,
        )
        for c in ask["clip_ids"]
    }
    return api.call(
        "POST", f"/v1/asks/{ask['id']}/answer", json={"answer": "erase", "deletions": deletions}
    )
