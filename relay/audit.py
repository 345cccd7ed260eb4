"""The relay's audit log: append-only, every entry in an RFC 6962 Merkle tree.

Every request, decision, release, legal demand, deletion, device registration,
policy change and operator action is one entry.  Each append also stores a tree
head (size, root, time) signed with the relay's Ed25519 key, so that
:meth:`AuditLog.verify` can recompute the tree entry by entry and name the first
entry that was changed, removed, inserted or moved, and so that anyone given an
inclusion proof can check an entry without trusting the relay.

Storage is Redis: ``{audit}:entries`` (a list of canonical JSON entries),
``{audit}:heads`` (a list of signed heads, one per size), ``{audit}:state`` (the
compact tree, for O(log n) appends), all in one Redis Cluster slot.  Appends
are optimistic transactions, so several relay processes can append at once.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from nacl.signing import SigningKey

from protocol.crypto import b64, canonical, sign_payload, unb64, verify_payload
from protocol.merkle import CompactTree, inclusion_proof, leaf_hash
from protocol.transparency import check_proof

__all__ = ["AuditLog", "VerifyResult", "check_proof", "load_or_create_key"]

from relay.keyspace import AUDIT_ENTRIES as ENTRIES
from relay.keyspace import AUDIT_HEADS as HEADS
from relay.keyspace import AUDIT_STATE as STATE
from relay.keyspace import audit_once

KINDS = frozenset(
    {
        "device_registered",
        "device_revoked",
        "request",
        "request_refused",
        "ask",
        "decision",
        "ask_expired",
        "release",
        "legal_demand",
        "deletion",
        "policy_change",
        "operator_action",
        "command_failed",
    }
)


def load_or_create_key(path: Path) -> bytes:
    """The relay's Ed25519 signing key (created, mode 0600, on first use)."""
    if path.exists():
        key = unb64(path.read_text().strip())
        if len(key) != 32:
            raise ValueError(f"{path} does not hold a 32-byte key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = bytes(SigningKey.generate())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(b64(key) + "\n")
    return key


def public_key(signing_key: bytes) -> bytes:
    return bytes(SigningKey(signing_key).verify_key)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    message: str
    first_bad: int | None = None


class AuditLog:
    def __init__(self, client: redis.Redis, signing_key: bytes) -> None:
        from relay.index import node_client

        self.r = node_client(client, STATE)
        self.key = signing_key
        self.public = public_key(signing_key)

    def append(self, kind: str, actor: str, data: dict[str, Any], once: str | None = None) -> int:
        """Append an entry; return its index (0-based).

        With ``once`` (e.g. the id of the message that caused it), the entry is
        appended at most once for that key, whatever the retries: a second call
        returns the first entry's index.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown audit entry kind {kind!r}")
        while True:
            with self.r.pipeline() as pipe:
                try:
                    if once is not None:
                        pipe.watch(STATE, audit_once(once))
                        done = pipe.get(audit_once(once))
                        if done is not None:
                            pipe.unwatch()
                            return int(done)
                    else:
                        pipe.watch(STATE)
                    raw = pipe.get(STATE)
                    state = json.loads(raw) if raw else {"size": 0, "stack": []}
                    tree = CompactTree(state["size"], [unb64(s) for s in state["stack"]])
                    index = tree.size
                    entry = canonical(
                        {
                            "index": index,
                            "at": time.time(),
                            "kind": kind,
                            "actor": actor,
                            "data": data,
                        }
                    )
                    tree.append(leaf_hash(entry))
                    head = self.sign_head(tree.size, tree.root())
                    pipe.multi()
                    pipe.rpush(ENTRIES, entry)
                    pipe.rpush(HEADS, json.dumps(head))
                    pipe.set(
                        STATE,
                        json.dumps({"size": tree.size, "stack": [b64(s) for s in tree.stack]}),
                    )
                    if once is not None:
                        pipe.set(audit_once(once), index)
                    pipe.execute()
                    return index
                except redis.WatchError:
                    continue

    def sign_head(self, size: int, root: bytes) -> dict[str, str]:
        return sign_payload({"size": size, "root": b64(root), "at": int(time.time())}, self.key)

    def size(self) -> int:
        return int(self.r.llen(ENTRIES))

    def entries(self, start: int = 0, end: int = -1) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.r.lrange(ENTRIES, start, end)]

    def head(self) -> dict[str, str] | None:
        raw = self.r.lindex(HEADS, -1)
        return json.loads(raw) if raw else None

    def verify(self) -> VerifyResult:
        """Recompute the tree entry by entry against every signed head."""
        entries = self.r.lrange(ENTRIES, 0, -1)
        heads = self.r.lrange(HEADS, 0, -1)
        tree = CompactTree()
        for i, entry in enumerate(entries):
            try:
                index = json.loads(entry)["index"]
            except (ValueError, KeyError, TypeError):
                return VerifyResult(False, len(entries), f"entry #{i} is not a log entry", i)
            if index != i:
                return VerifyResult(
                    False,
                    len(entries),
                    f"entry #{i} claims to be #{index}: "
                    "entries were inserted, removed or reordered",
                    i,
                )
            tree.append(leaf_hash(entry))
            if i >= len(heads):
                return VerifyResult(False, len(entries), f"entry #{i} has no signed head", i)
            try:
                head = verify_payload(json.loads(heads[i]), self.public)
            except Exception:
                return VerifyResult(False, len(entries), f"head #{i} is not signed by the relay", i)
            if head["size"] != i + 1 or unb64(head["root"]) != tree.root():
                return VerifyResult(
                    False,
                    len(entries),
                    f"entry #{i} does not match the head "
                    "signed when it was appended: it was altered",
                    i,
                )
        if len(heads) > len(entries):
            n = len(entries)
            return VerifyResult(
                False,
                n,
                f"entries from #{n} on are missing (heads were signed for {len(heads)})",
                n,
            )
        return VerifyResult(True, len(entries), f"{len(entries)} entries verified")

    def proof(self, index: int) -> dict[str, Any]:
        """An inclusion proof of entry ``index`` against the latest signed head."""
        entries = self.r.lrange(ENTRIES, 0, -1)
        if not 0 <= index < len(entries):
            raise IndexError(f"no entry #{index} (the log has {len(entries)})")
        leaves = [leaf_hash(e) for e in entries]
        return {
            "entry": b64(entries[index]),
            "index": index,
            "tree_size": len(entries),
            "path": [b64(p) for p in inclusion_proof(index, leaves)],
            "head": json.loads(self.r.lindex(HEADS, len(entries) - 1)),
            "relay_key": b64(self.public),
        }
