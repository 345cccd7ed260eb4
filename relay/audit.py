"""The relay's audit log: append-only, every entry in an RFC 6962 Merkle tree.

Every request, decision, release, legal demand, deletion, device registration,
policy change and operator action is one entry.  Each append also stores a tree
head (size, root, time) signed with the relay's Ed25519 key, so that
:meth:`AuditLog.verify` can recompute the tree entry by entry and name the first
entry that was changed, removed, inserted or moved, and so that anyone given an
inclusion proof can check an entry without trusting the relay.

Storage is Redis: ``{audit}:entries`` (a list of canonical JSON entries),
``{audit}:heads`` (a list of signed heads, one per size), ``{audit}:state`` (the
compact tree, for O(log n) appends), ``{audit}:sealed`` (the private parts), all
in one Redis Cluster slot.  Appends are optimistic transactions, so several relay
processes can append at once.

The log is public (``relay/log_api.py``), so what identifies an owner, a home or a
place is sealed *when the entry is written*: the fields in :data:`SEALED_FIELDS`
and an owner's or doorbell's name as actor leave the entry and are replaced by
``sealed``, a SHA-256 commitment to them with a random salt (so a coordinate
cannot be guessed from its hash).  The Merkle leaf is the public entry, so anyone
can check proofs over exactly what is published; the operator keeps the openings
and :meth:`AuditLog.entries` joins them back for the report and ``audit list``.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from nacl.signing import SigningKey

from protocol.crypto import b64, canonical, sign_payload, unb64, verify_payload
from protocol.merkle import (
    CompactTree,
    consistency_path,
    consistency_proof,
    inclusion_path,
    inclusion_proof,
    leaf_hash,
    new_nodes,
    stored_range_root,
)
from protocol.merkle import root as _root
from protocol.transparency import DOORBELL_ACTOR, check_meaning, check_proof
from protocol.transparency import commitment as sealed_commitment
from relay.keyfiles import create_once

__all__ = ["AuditLog", "LogDamaged", "VerifyResult", "check_proof", "load_or_create_key"]

from relay.keyspace import AUDIT_ENTRIES as ENTRIES
from relay.keyspace import AUDIT_HEADS as HEADS
from relay.keyspace import AUDIT_LEAF_INDEX as LEAF_INDEX
from relay.keyspace import AUDIT_NODES as NODES
from relay.keyspace import AUDIT_SEALED as SEALED
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
        "approval_refused",
        "deletion_refused",
        "doorbell_refused",
        "command_failed",
        "masks_changed",
        "masks_refused",
        "masks_applied",
        "bystander_request",
        "bystander_refused",
        "bystander_answer",
        "bystander_reminder",
        "bystander_expired",
    }
)

SEALED_FIELDS = frozenset({"owner", "device", "lat", "lon", "reason", "case_ref", "why"})
"""Fields that name an owner, a home or a place (or may, in free text): never public.
A refusal's ``why`` is free text that can name a doorbell; its ``code`` is public."""
PUBLIC_ACTORS = frozenset({"operator", "relay"})
"""Actors named in public; requesters are public too (their entries say who asked)."""
DOORBELL_KINDS = frozenset({"release", "deletion", "doorbell_refused", "masks_applied"})
OWNER_KINDS = frozenset(
    {
        "decision",
        "approval_refused",
        "deletion_refused",
        "masks_changed",
        "masks_refused",
        "bystander_answer",
    }
)


class LogDamaged(Exception):
    """The stored log cannot answer (missing heads, unreadable entries); one line says why."""


def seal(kind: str, actor: str, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split an entry into its public part and the opening of its sealed part.

    >>> public, opening = seal("ask", "relay", {"ask": "a1", "owner": "alice"})
    >>> public["data"], "sealed" in public, opening["data"]
    ({'ask': 'a1'}, True, {'owner': 'alice'})
    """
    private = {k: v for k, v in data.items() if k in SEALED_FIELDS}
    public_data = {k: v for k, v in data.items() if k not in SEALED_FIELDS}
    if kind in DOORBELL_KINDS:
        public_actor = DOORBELL_ACTOR
    elif kind in OWNER_KINDS or (kind == "operator_action" and actor not in PUBLIC_ACTORS):
        public_actor = "owner"
    else:  # the operator, the relay, a requester: accountable by name
        public_actor = actor
    public: dict[str, Any] = {"kind": kind, "actor": public_actor, "data": public_data}
    if not private and public_actor == actor:
        return public, {}
    # A fresh salt for every entry: the doorbell is told its entry's salt (in the ack)
    # to check the commitment, and that must open nothing else.
    opening = {"salt": b64(secrets.token_bytes(16)), "actor": actor, "data": private}
    public["sealed"] = commitment(opening)
    return public, opening


def commitment(opening: dict[str, Any]) -> str:
    """The commitment to a stored opening (:func:`protocol.transparency.commitment`)."""
    return sealed_commitment(opening["salt"], opening["actor"], opening["data"])


def load_or_create_key(path: Path) -> bytes:
    """The relay's Ed25519 signing key (created, mode 0600, on first use).

    Every relay process that starts on a new machine may be first: one key wins
    (:func:`relay.keyfiles.create_once`) and all of them sign with it.
    """
    create_once(path, (b64(bytes(SigningKey.generate())) + "\n").encode())
    key = unb64(path.read_text().strip())
    if len(key) != 32:
        raise ValueError(f"{path} does not hold a 32-byte key")
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
        self._fresh: tuple[int, float, dict[str, str]] | None = None

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
                    # A log begun with nodes stored keeps them all ("nodes": true);
                    # an older one is served by recomputing (see _tree).
                    state = json.loads(raw) if raw else {"size": 0, "stack": [], "nodes": True}
                    tree = CompactTree(state["size"], [unb64(s) for s in state["stack"]])
                    index = tree.size
                    public, opening = seal(kind, actor, data)
                    entry = canonical({"index": index, "at": time.time(), **public})
                    leaf = leaf_hash(entry)
                    nodes = new_nodes(tree.stack, tree.size, leaf)
                    tree.append(leaf)
                    head = self.sign_head(tree.size, tree.root())
                    pipe.multi()
                    pipe.rpush(ENTRIES, entry)
                    pipe.hset(NODES, mapping={f"{lv}:{i}": h for lv, i, h in nodes})
                    pipe.hset(LEAF_INDEX, leaf, index)
                    if opening:
                        pipe.hset(SEALED, str(index), canonical(opening))
                    pipe.rpush(HEADS, json.dumps(head))
                    pipe.set(
                        STATE,
                        json.dumps(
                            {
                                "size": tree.size,
                                "stack": [b64(s) for s in tree.stack],
                                "nodes": bool(state.get("nodes")),
                            }
                        ),
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
        """The operator's view: entries with their sealed parts opened."""
        out = []
        for raw in self.r.lrange(ENTRIES, start, end):
            e = json.loads(raw)
            if "sealed" in e:
                opened = self.r.hget(SEALED, str(e["index"]))
                if opened is not None:
                    o = json.loads(opened)
                    e = {**e, "actor": o["actor"], "data": {**e["data"], **o["data"]}}
            out.append(e)
        return out

    def salt(self, index: int) -> str | None:
        """The salt of entry ``index``'s sealed part (None if it has none).

        Only for the doorbell that wrote the entry (in its ack): it opens that one
        entry's commitment and no other.  Never served by the public log API.
        """
        raw = self.r.hget(SEALED, str(index))
        if raw is None:
            return None
        salt = json.loads(raw).get("salt")
        return salt if isinstance(salt, str) else None

    def public_entries(self, start: int, end: int) -> list[bytes]:
        """Entries ``start`` … ``end`` (inclusive) exactly as hashed into the tree."""
        return list(self.r.lrange(ENTRIES, start, end))

    def head(self) -> dict[str, str] | None:
        raw = self.r.lindex(HEADS, -1)
        return json.loads(raw) if raw else None

    def current_head(self, max_age_s: float = 60.0) -> dict[str, str] | None:
        """The latest tree head, signed afresh (at most ``max_age_s`` old).

        Witnesses flag a head that stops moving (a stale log), so a quiet log must
        still show it is alive: the same size and root, a recent time.
        """
        raw = self.r.get(STATE)
        if not raw:
            return None
        state = json.loads(raw)
        size, now = state["size"], time.time()
        cached = self._fresh
        if cached is not None and cached[0] == size and now - cached[1] < max_age_s:
            return cached[2]
        tree = CompactTree(size, [unb64(x) for x in state["stack"]])
        head = self.sign_head(size, tree.root())
        self._fresh = (size, now, head)
        return head

    def signed_head(self, size: int) -> dict[str, str]:
        """The head the relay signed when the log had ``size`` entries."""
        raw = self.r.lindex(HEADS, size - 1) if size > 0 else None
        if raw is None:
            raise LogDamaged(f"no signed head for a log of {size} entries")
        try:
            head = json.loads(raw)
        except ValueError:
            raise LogDamaged(f"the signed head for size {size} is not JSON") from None
        if not isinstance(head, dict):
            raise LogDamaged(f"the signed head for size {size} is not a signed head")
        return head

    def verify(self) -> VerifyResult:
        """Recompute the tree entry by entry against every signed head, open every sealed
        part, then check that the log makes sense (see :func:`check_meaning`).

        A damaged log of any shape gives a result naming the problem, never an exception.
        """
        try:
            return self._verify()
        except redis.RedisError:
            raise
        except Exception as err:  # a damaged store must be named, not crash the CLI
            return VerifyResult(False, self.size(), f"the log cannot be read: {err!r}")

    def _verify(self) -> VerifyResult:
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
            sealed = json.loads(entry).get("sealed")
            if sealed is not None:
                opening = self.r.hget(SEALED, str(i))
                if opening is None or commitment(json.loads(opening)) != sealed:
                    return VerifyResult(
                        False,
                        len(entries),
                        f"the sealed part of entry #{i} does not match its commitment",
                        i,
                    )
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
        problems = check_meaning([json.loads(e) for e in entries])
        if problems:
            index, why = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return VerifyResult(False, len(entries), f"entry #{index}: {why}{more}", index)
        return VerifyResult(True, len(entries), f"{len(entries)} entries verified")

    def _tree(self, size: int | None) -> tuple[int, Any]:
        """The tree of ``size`` entries (default: all) and its subtree hashes.

        From the stored nodes when the log has them all (O(log² n) reads per proof);
        else, for a log begun before they were stored, from every entry (O(n)).
        """
        raw = self.r.get(STATE)
        state = json.loads(raw) if raw else {"size": 0, "nodes": True}
        total = state["size"]
        n = total if size is None else size
        if not 0 <= n <= total:
            raise IndexError(f"no log of {n} entries (the log has {total})")
        if not state.get("nodes"):
            leaves = self._leaves(n)
            return n, lambda lo, hi: _root(leaves[lo:hi])
        memo: dict[str, bytes] = {}

        def node(level: int, i: int) -> bytes:
            field = f"{level}:{i}"
            if field not in memo:
                got = self.r.hget(NODES, field)
                if got is None or len(got) != 32:
                    raise LogDamaged(f"the stored tree node {field} is missing")
                memo[field] = got
            return memo[field]

        return n, stored_range_root(node)

    def _leaves(self, size: int | None = None) -> list[bytes]:
        entries = self.r.lrange(ENTRIES, 0, -1)
        if size is not None:
            if not 0 <= size <= len(entries):
                raise IndexError(f"no log of {size} entries (the log has {len(entries)})")
            entries = entries[:size]
        return [leaf_hash(e) for e in entries]

    def proof(self, index: int, size: int | None = None) -> dict[str, Any]:
        """An inclusion proof of entry ``index`` against the signed head of ``size``
        (default: the latest).  :class:`LogDamaged` if the store cannot give one."""
        n, range_root = self._tree(size)
        if not 0 <= index < n:
            raise IndexError(f"no entry #{index} (the log has {n})")
        head = self.signed_head(n)
        entry = self.r.lindex(ENTRIES, index)
        if entry is None:
            raise LogDamaged(f"entry #{index} is missing")
        return {
            "entry": b64(entry),
            "index": index,
            "tree_size": n,
            "path": [b64(p) for p in inclusion_path(index, n, range_root)],
            "head": head,
            "relay_key": b64(self.public),
        }

    def index_of(self, leaf: bytes) -> int:
        """The index of the entry whose leaf hash is ``leaf`` (KeyError if none)."""
        raw = self.r.get(STATE)
        if raw is None or json.loads(raw).get("nodes"):
            found = self.r.hget(LEAF_INDEX, leaf)
            if found is None:
                raise KeyError(leaf.hex())
            return int(found)
        for i, h in enumerate(self._leaves()):
            if h == leaf:
                return i
        raise KeyError(leaf.hex())

    def consistency(self, first: int, second: int) -> dict[str, Any]:
        """An RFC 6962 consistency proof from the log of ``first`` to that of ``second``."""
        if not 0 <= first <= second:
            raise IndexError(f"first ({first}) must be between 0 and second ({second})")
        n, range_root = self._tree(second)
        return {
            "first": first,
            "second": second,
            "path": [b64(p) for p in consistency_path(first, n, range_root)],
        }

    def consistency_recomputed(self, first: int, second: int) -> list[bytes]:
        """The same proof from every entry, as before nodes were stored (bench baseline)."""
        return consistency_proof(first, self._leaves(second))

    def inclusion_recomputed(self, index: int) -> list[bytes]:
        """An inclusion path from every entry (bench baseline)."""
        return inclusion_proof(index, self._leaves())
