"""A commitment to the asks of one footage request that does not reveal how many there are.

The public record of a request holds only the root of a Merkle tree (RFC 6962
hashing, :mod:`protocol.merkle`) over a *padded* list of leaves: one per owner asked,
at a random position, and random leaves up to a fixed size (:data:`MIN_SIZE`, or the
next power of two above it).  A leaf is the hash of a salted, canonical description
of the ask, so a padding leaf and a real one look alike.  Each owner receives the
opening of their leaf and its inclusion path: with the root from the public record,
they can check that their ask is the one the relay committed to, and nobody else
learns how many homes a request reached.

Leaf bytes (what ``leaf_hash`` hashes, see docs/formats.md)::

    canonical JSON {"ask": ID, "clip_ids": [...], "device": ID, "owner": NAME,
                    "request": ID, "salt": base64(16 random bytes)}

Example::

    root, size, proofs = commit([{"ask": "ask-1", "request": "req-1", ...}])
    assert check(proofs["ask-1"], root)
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from protocol.merkle import inclusion_proof, leaf_hash, root, verify_inclusion

MIN_SIZE = 64
"""Every request's ask set is padded to at least this many leaves."""


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def padded_size(n: int) -> int:
    size = MIN_SIZE
    while size < n:
        size *= 2
    return size


def commit(asks: list[dict[str, Any]]) -> tuple[str, int, dict[str, dict[str, Any]]]:
    """(root hex, padded size, ask id → the owner's opening and proof) for ``asks``.

    Each ask is a dict with ``ask``, ``request``, ``owner``, ``device``, ``clip_ids``.
    """
    size = padded_size(len(asks))
    positions = list(range(size))
    secrets.SystemRandom().shuffle(positions)
    leaves = [leaf_hash(secrets.token_bytes(32)) for _ in range(size)]
    openings: dict[str, tuple[int, bytes]] = {}
    for ask, pos in zip(asks, positions, strict=False):
        body = _canonical({**ask, "salt": base64.b64encode(secrets.token_bytes(16)).decode()})
        leaves[pos] = leaf_hash(body)
        openings[ask["ask"]] = (pos, body)
    top = root(leaves).hex()
    proofs = {
        ask_id: {
            "leaf": base64.b64encode(body).decode(),
            "index": pos,
            "size": size,
            "path": [p.hex() for p in inclusion_proof(pos, leaves)],
            "root": top,
        }
        for ask_id, (pos, body) in openings.items()
    }
    return top, size, proofs


def check(proof: dict[str, Any], public_root: str, ask: dict[str, Any] | None = None) -> bool:
    """Does ``proof`` show a leaf under ``public_root`` (and, if given, describing ``ask``)?"""
    try:
        body = base64.b64decode(proof["leaf"], validate=True)
        if ask is not None:
            opened = json.loads(body)
            if {k: opened.get(k) for k in ask} != ask:
                return False
        path = [bytes.fromhex(p) for p in proof["path"]]
        return verify_inclusion(
            leaf_hash(body), proof["index"], proof["size"], path, bytes.fromhex(public_root)
        )
    except (KeyError, TypeError, ValueError):
        return False
