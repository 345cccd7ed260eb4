"""Checking the relay's audit log from outside: no trust in the relay needed."""

from __future__ import annotations

from typing import Any

from protocol.crypto import CryptoFailure, unb64, verify_payload
from protocol.merkle import leaf_hash, verify_inclusion


def check_proof(proof: dict[str, Any], relay_key: bytes | None = None) -> tuple[bool, str]:
    """Check an inclusion proof offline.  ``relay_key`` pins the relay's public key."""
    key = relay_key or unb64(proof["relay_key"])
    try:
        head = verify_payload(proof["head"], key)
    except CryptoFailure:
        return False, "the tree head is not signed by the relay's key"
    entry = unb64(proof["entry"])
    if head["size"] != proof["tree_size"]:
        return False, "the proof is for another tree size than the signed head"
    ok = verify_inclusion(
        leaf_hash(entry),
        proof["index"],
        proof["tree_size"],
        [unb64(p) for p in proof["path"]],
        unb64(head["root"]),
    )
    if not ok:
        return False, "the entry is not in the tree the relay signed"
    return True, f"entry #{proof['index']} is in the log of {head['size']} entries"
