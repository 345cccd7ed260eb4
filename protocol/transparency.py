"""Checking the relay's audit log from outside: no trust in the relay needed.

Three checks anyone can run with the relay's log key pinned beforehand (never the key
a proof carries):

* :func:`check_proof`: an entry is in the log the relay signed (inclusion);
* :func:`check_heads`: a later signed head only appended to an earlier one
  (consistency), so a rewritten, forked or truncated history is caught by anyone
  who kept an earlier head: a *witness*;
* :func:`check_meaning`: the entries make sense (every release has its owner's
  decision, every decision its ask, every ask its request).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from protocol.crypto import CryptoFailure, canonical, unb64, verify_payload
from protocol.merkle import leaf_hash, verify_consistency, verify_inclusion
from protocol.refusals import public_code


class NoPinnedKey(ValueError):
    """A proof was to be checked without a pinned relay key."""


def check_proof(proof: dict[str, Any], relay_key: bytes | None) -> tuple[bool, str]:
    """Check an inclusion proof offline against the pinned relay key ``relay_key``.

    The key inside the proof is never trusted: with no pinned key this raises
    :class:`NoPinnedKey`, and a proof that names another key is refused.
    """
    if relay_key is None:
        raise NoPinnedKey("no pinned relay key: a proof cannot vouch for its own signer")
    embedded = proof.get("relay_key")
    if embedded is not None and unb64(embedded) != relay_key:
        return False, "the proof is signed by another key than the pinned relay key"
    try:
        head = verify_payload(proof["head"], relay_key)
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


@dataclass(frozen=True)
class Head:
    """A signed tree head whose signature was checked: what a witness keeps."""

    size: int
    root: bytes
    at: int
    signed: dict[str, str]

    def describe(self) -> str:
        return f"size {self.size}, root {self.root.hex()}"


def open_head(signed: Any, relay_key: bytes) -> Head:
    """The head inside ``signed`` if the pinned ``relay_key`` signed it; ValueError if not."""
    if not isinstance(signed, dict):
        raise ValueError("not a signed tree head")
    try:
        payload = verify_payload(signed, relay_key)
    except (CryptoFailure, ValueError) as err:
        raise ValueError("the tree head is not signed by the pinned relay key") from err
    # One head, one encoding: canonical JSON with exactly its fields, so that no one can
    # show the same signed head in two forms (RFC 9162 signs a fixed binary layout).
    if set(payload) - {"size", "root", "at"} or unb64(signed["payload"]) != canonical(payload):
        raise ValueError("the signed tree head is not canonical")
    try:
        size, root, at = payload["size"], unb64(payload["root"]), payload.get("at", 0)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError("the signed tree head is malformed") from err
    # Whole numbers only: a float (1.5, Infinity, NaN) or a bool is no size or time, and
    # a signed head that carries one is malformed, whoever signed it.
    if not all(_whole(v) for v in (size, at)) or size < 0 or len(root) != 32:
        raise ValueError("the signed tree head is malformed")
    return Head(size, root, at, {"payload": signed["payload"], "signature": signed["signature"]})


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 63


class Inconsistent(Exception):
    """Two signed heads that cannot both be true: the relay showed two histories.

    ``old`` and ``new`` are the heads; together they are the evidence.
    """

    def __init__(self, why: str, old: Head, new: Head) -> None:
        super().__init__(why)
        self.why, self.old, self.new = why, old, new

    def report(self) -> str:
        return (
            f"{self.why}\n  earlier head: {self.old.describe()}  {json.dumps(self.old.signed)}"
            f"\n  later head:   {self.new.describe()}  {json.dumps(self.new.signed)}"
        )


def needs_proof(old: Head, new: Head) -> bool:
    """Whether a consistency proof must be fetched to compare ``old`` and ``new``.

    Raises :class:`Inconsistent` when the heads alone already prove a fork or a rollback.
    """
    if new.size < old.size:
        raise Inconsistent(
            f"rollback: the log shrank from {old.size} to {new.size} entries", old, new
        )
    if new.size == old.size:
        if new.root != old.root:
            raise Inconsistent(f"fork: two different logs of {old.size} entries", old, new)
        return False
    return old.size > 0


def check_heads(old: Head, new: Head, path: Sequence[str] | None) -> None:
    """Raise :class:`Inconsistent` unless ``new`` only appended entries to ``old``.

    ``path`` is the consistency proof (base64 hashes) from ``old.size`` to ``new.size``;
    it may be ``None`` when :func:`needs_proof` says none is needed.
    """
    if not needs_proof(old, new):
        return
    try:
        nodes = [unb64(p) for p in path or []]
    except (TypeError, ValueError):
        nodes = []
    if not verify_consistency(old.size, new.size, nodes, old.root, new.root):
        raise Inconsistent(
            f"fork: the log of {new.size} entries does not extend the one of {old.size} "
            "entries seen before (history was rewritten)",
            old,
            new,
        )


def check_meaning(entries: Sequence[dict[str, Any]]) -> list[tuple[int, str]]:
    """Entries that do not make sense, as (index, why).

    A request's asks are on the record only as a commitment (``asks_root``), and an
    owner's decision names its ask but not the request, so that the record does not
    tell which homes a request reached (a bystander's request and its answers
    likewise).  What can be checked in public: a request id
    is made once; an ask named on its own (older logs) follows its request; an ask is
    decided at most once and never after it expired; every release names an earlier
    request and a clip that an earlier decision approved, not deleted since, and not
    released for that request before.

    >>> check_meaning([{"index": 0, "kind": "release", "data": {"request": "r", "clip": "c"}}])
    [(0, 'release of clip c for request r names no earlier request')]
    """
    requests: set[str] = set()
    closed: dict[str, str] = {}  # ask → "decided" or "expired"
    approved_clips: set[str] = set()
    released: set[tuple[str, str]] = set()
    deleted: set[str] = set()
    problems: list[tuple[int, str]] = []
    for i, e in enumerate(entries):
        kind, d = e.get("kind"), e.get("data") or {}
        try:
            if kind in ("request", "bystander_request"):
                if "id" in d:
                    if d["id"] in requests:
                        problems.append((i, f"request {d['id']} was already made"))
                    requests.add(d["id"])
            elif kind == "ask":
                if d["request"] not in requests:
                    problems.append((i, f"ask {d['ask']} names no earlier request"))
            elif kind == "ask_expired" or (kind == "bystander_expired" and "ask" in d):
                closed.setdefault(d["ask"], "expired")  # (a bystander's: older logs)
            elif kind in ("bystander_reminder", "bystander_expired") and "request" in d:
                # A bystander request's reminder and expiry name the request, whatever
                # it matched (an ask's own would say a home was asked).
                if d["request"] not in requests:
                    problems.append((i, f"{kind} names no earlier request {d['request']}"))
            elif kind in ("decision", "bystander_answer"):
                ask = d["ask"]
                if ask in closed:
                    was = "was already decided" if closed[ask] == "decided" else "had expired"
                    problems.append((i, f"decision on ask {ask}: ask {ask} {was}"))
                elif d.get("decision", d.get("answer")) in ("approve", "copy"):
                    approved_clips.update(d.get("clips", []))
                closed.setdefault(ask, "decided")
            elif kind == "deletion":
                deleted.add(d["clip"])
            elif kind == "release":
                key = (d["request"], d["clip"])
                if d["request"] not in requests:
                    why = "names no earlier request"
                elif d["clip"] not in approved_clips:
                    why = "has no approving decision"
                elif d["clip"] in deleted:
                    why = "comes after the clip was deleted"
                elif key in released:
                    why = "happened before"
                else:
                    why = ""
                if why:
                    problems.append(
                        (i, f"release of clip {d['clip']} for request {d['request']} {why}")
                    )
                released.add(key)
        except (KeyError, TypeError):
            problems.append((i, f"a {kind} entry without the fields it needs"))
    return problems


def message_digest(msg: Any) -> str:
    """The hex SHA-256 of a doorbell's message as canonical JSON: its log entry's ``msg``.

    The doorbell and the relay compute it from the same message, so the doorbell can
    tell that a log entry is *its* refusal, release or deletion and not some other entry.

    Example::

        message_digest(CommandRefused(...))  # '3f1c...'
    """
    return hashlib.sha256(canonical(msg.model_dump(mode="json"))).hexdigest()


PROVEN_KINDS: dict[str, str] = {
    "refused": "doorbell_refused",
    "released": "release",
    "deleted": "deletion",
}
"""A doorbell message's kind -> the kind of the log entry that records it.

These messages leave the doorbell only once their entry is proven in the public log.
"""


def logged_entry(msg: Any) -> tuple[str, dict[str, Any]]:
    """The log entry (kind, public data) that records ``msg``, exactly.

    One place for both sides: the relay writes this (plus the fields the log seals:
    a deletion's ``reason``, a refusal's ``why``) and the doorbell accepts a proof
    only of an entry whose public data is exactly this, so an entry of another kind,
    for other clips or another request, or for another message, proves nothing.

    >>> from protocol.messages import Deleted
    >>> m = Deleted(id="m-12345678", ts="2026-01-01T00:00:00Z", device="front-door",
    ...             clip_id="clip-1", reason="owner")
    >>> kind, data = logged_entry(m)
    >>> kind, sorted(data)
    ('deletion', ['clip', 'msg'])
    """
    kind = PROVEN_KINDS.get(getattr(msg, "kind", ""))
    if kind is None:
        raise ValueError(f"a {getattr(msg, 'kind', '?')!r} message has no entry to prove")
    digest = message_digest(msg)
    if kind == "release":
        data = {"request": msg.request_id, "clip": msg.clip_id, "sha256": msg.sha256}
    elif kind == "deletion":
        data = {"clip": msg.clip_id}
    else:
        data = {
            "command": msg.command,
            "command_id": msg.command_id,
            "request": msg.request_id,
            "clip": msg.clip_id,
            "code": public_code(msg.code),
        }
    return kind, {**data, "msg": digest}


def commitment(salt: str, actor: str, sealed: dict[str, Any]) -> str:
    """The hex SHA-256 that an entry's ``sealed`` commits to: its salt, real actor and
    sealed fields, as canonical JSON.  The relay computes it when it writes the entry
    (:func:`relay.audit.seal`), the doorbell when it checks its own (:func:`check_logged`).

    The salt is 16 random bytes drawn afresh for each entry, so the commitment hides
    a guessable value (a doorbell's name, a reason from a short list), and knowing one
    entry's salt says nothing about any other entry's sealed part.

    >>> commitment("c2FsdA==", "front-door", {"reason": "owner"})[:12]
    'a6d731578d03'
    """
    return hashlib.sha256(canonical({"salt": salt, "actor": actor, "data": sealed})).hexdigest()


def sealed_part(msg: Any) -> dict[str, Any]:
    """The fields of ``msg`` the log seals beside its actor (the doorbell's id): a
    deletion's ``reason``, a refusal's text as ``why``; a release has none.

    One place for both sides: the relay logs :func:`logged_entry` plus these, the
    doorbell recomputes the commitment from them (see ``relay.audit.SEALED_FIELDS``).
    """
    kind = getattr(msg, "kind", "")
    if kind == "deleted":
        return {"reason": msg.reason}
    if kind == "refused":
        return {"why": msg.reason}
    return {}


DOORBELL_ACTOR = "doorbell"
"""The public actor of a doorbell's entries; which doorbell is sealed (relay.audit.seal)."""

ENTRY_FIELDS = frozenset({"index", "at", "kind", "actor", "data", "sealed"})
"""The fields of a doorbell's public log entry, exactly (its actor is always sealed)."""


def _hex_sha256(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def check_logged(
    proof: dict[str, Any],
    relay_key: bytes,
    accepted: Head,
    index: int,
    leaf: str,
    msg: Any,
    salt: str | None,
) -> tuple[bool, str]:
    """Is the doorbell's message ``msg`` in the log at ``index`` (leaf hash ``leaf``)?

    ``proof`` is a ``/log/proof/inclusion`` answer; it must be for the very head the
    doorbell's witness accepted (``accepted``), so a relay cannot show the doorbell a
    private fork.  The entry must be exactly :func:`logged_entry` of ``msg``, and its
    ``sealed`` must be the :func:`commitment` under ``salt`` (from the relay's ack) to
    the doorbell's own id and :func:`sealed_part` of ``msg``: else the public entry
    could be right while the sealed part, which the operator opens for the owner's
    report, names another doorbell or another reason.
    """
    kind, expected = logged_entry(msg)
    try:
        ok, why = check_proof(proof, relay_key)
        if not ok:
            return False, why
        head = verify_payload(proof["head"], relay_key)
        if head["size"] != accepted.size or unb64(head["root"]) != accepted.root:
            return False, "the proof is not for the head the witness accepted"
        entry = unb64(proof["entry"])
        if proof["index"] != index or leaf_hash(entry).hex() != leaf:
            return False, "the proof is for another entry than the relay acked"
        parsed = json.loads(entry)
    except (CryptoFailure, KeyError, TypeError, ValueError, AttributeError, RecursionError):
        return False, "the proof is malformed"
    if not isinstance(parsed, dict):
        return False, "the entry is malformed"
    # One entry, one encoding: what the relay writes (canonical JSON).  Any other bytes
    # (a duplicate key, another key order, an escaped letter) can be read two ways by
    # two parsers, and the doorbell must vouch for what every reader of the log sees.
    if canonical(parsed) != entry:
        return False, "the entry is not canonical JSON"
    # Nothing beside kind and data but what every sealed entry has: its own index, its
    # time, the public actor and the commitment to the sealed part.  An extra field
    # could say something else ("retracted"), or show what the log seals (the
    # doorbell's name as actor, a reason), and no commitment leaves the sealed part
    # open to any later "opening".
    if (
        set(parsed) != ENTRY_FIELDS
        or parsed["index"] != index
        or type(parsed["index"]) is not int
        or parsed["actor"] != DOORBELL_ACTOR
        or not _hex_sha256(parsed["sealed"])
        or not isinstance(parsed["at"], int | float)
        or isinstance(parsed["at"], bool)
    ):
        return False, "the entry has other fields than a doorbell's sealed entry"
    if parsed.get("kind") != kind:
        return False, f"the entry is a {parsed.get('kind')!r}, not a {kind!r}"
    data = parsed.get("data")
    if not isinstance(data, dict) or data.get("msg") != expected["msg"]:
        return False, f"the entry is another {kind} than the doorbell's"
    if data != expected:
        wrong = sorted(k for k in expected.keys() | data.keys() if data.get(k) != expected.get(k))
        return False, f"the entry names other {', '.join(wrong)} than the doorbell's {kind}"
    if not isinstance(salt, str) or not salt:
        return False, "the relay gave no salt to open the entry's sealed part"
    if parsed["sealed"] != commitment(salt, msg.device, sealed_part(msg)):
        return False, f"the entry's sealed part is not the doorbell's own {kind}"
    return True, f"{kind} logged as entry #{index}"
