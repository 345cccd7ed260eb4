"""The client as a witness of the relay's public log.

``footage`` pins the relay's log key the first time it meets a relay (or from a key
file given at provisioning), keeps the last signed tree head it saw for each relay,
and on every call fetches the current head and a consistency proof from the one it
kept.  A head signed by another key, a log that shrank, or one that does not extend
the history seen before raises :class:`~protocol.transparency.Inconsistent`, whose
two heads are the evidence to show anyone.

State lives in ``$FOOTAGE_STATE`` (default ``~/.local/state/footage``)::

    relays/<host-port-path>/log.key     the pinned key (base64)
    relays/<host-port-path>/head.json   the last signed head seen
    relays/<host-port-path>/heads.json  every signed head seen, by size (the last 1000)

Kept heads let two people prove a split view even when their heads differ in size:
one of them (or the relay, asked for ``/v1/log/heads/{size}``) has a head of the
other's size, and two signed heads of one size with two roots are a fork.

Example::

    w = Witness(state_dir, "https://relay.example")
    w.pin(http)             # trust on first use, or pin_file(path) beforehand
    w.observe(http)         # raises Inconsistent on a fork, a rollback, a truncation
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from protocol.crypto import b64, unb64
from protocol.transparency import Head, Inconsistent, check_heads, needs_proof, open_head

MAX_KEPT = 1000


class WitnessError(Exception):
    """Something a witness cannot do (no key, another key, an unreadable file)."""


def default_state_dir() -> Path:
    env = os.environ.get("FOOTAGE_STATE")
    return Path(env) if env else Path.home() / ".local" / "state" / "footage"


def _slug(url: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", url.split("://", 1)[-1]).strip("_") or "relay"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def export_head(relay: str, key: bytes, head: Head) -> dict[str, Any]:
    """What ``footage log head`` prints: enough for anyone to compare histories."""
    return {
        "relay": relay,
        "key": b64(key),
        "size": head.size,
        "root": b64(head.root),
        "signed": head.signed,
    }


class Witness:
    def __init__(self, state_dir: Path, relay: str) -> None:
        self.relay = relay
        self.dir = state_dir / "relays" / _slug(relay)
        self.key_file = self.dir / "log.key"
        self.head_file = self.dir / "head.json"
        self.heads_file = self.dir / "heads.json"

    # ------------------------------------------------------------ the key

    def pinned(self) -> bytes | None:
        try:
            key = unb64(self.key_file.read_text().strip())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise WitnessError(f"cannot read the pinned key {self.key_file}: {err}") from None
        if len(key) != 32:
            raise WitnessError(f"{self.key_file} does not hold a 32-byte key")
        return key

    def pin_key(self, key: bytes) -> None:
        """Pin ``key``; refuses to replace a different pinned key."""
        current = self.pinned()
        if current is not None and current != key:
            raise WitnessError(
                f"the relay's log key {b64(key)} is not the pinned {b64(current)}: "
                f"refusing (remove {self.key_file} only if the relay announced a new key)"
            )
        if current is None:
            _write(self.key_file, b64(key) + "\n")

    def pin(self, get: Any) -> bytes:
        """The pinned key; on first use, the relay's own, announced on stderr (TOFU)."""
        key = self.pinned()
        answer = get("/v1/log/key")
        try:
            served = unb64(answer["key"])
        except (KeyError, TypeError, ValueError):
            raise WitnessError(f"{self.relay} publishes no log key (GET /v1/log/key)") from None
        if key is None:
            self.pin_key(served)
            print(
                f"footage: pinned the log key of {self.relay} on first use: {b64(served)}",
                file=sys.stderr,
            )
            return served
        if served != key:
            raise WitnessError(
                f"the relay now serves log key {b64(served)}, not the pinned {b64(key)}"
            )
        return key

    # ------------------------------------------------------------ heads

    def last(self, key: bytes) -> Head | None:
        try:
            signed = json.loads(self.head_file.read_text())
        except FileNotFoundError:
            # A lost head.json must not let a rolled-back log in: the kept heads stand in.
            kept = self.kept(key)
            return kept[max(kept)] if kept else None
        except (OSError, ValueError) as err:
            raise WitnessError(f"cannot read {self.head_file}: {err}") from None
        try:
            return open_head(signed, key)
        except ValueError as err:
            raise WitnessError(f"{self.head_file}: {err}") from None

    def observe(self, get: Any) -> Head | None:
        """Fetch the current head, check it against the last one kept, keep it.

        ``get(path)`` returns the relay's JSON (None for an empty log's 404).
        """
        key = self.pin(get)
        signed = get("/v1/log/head")
        if signed is None:
            last = self.last(key)
            if last is not None and last.size > 0:
                raise Inconsistent(
                    f"rollback: the log is now empty, {last.size} entries were seen",
                    last,
                    Head(0, b"", 0, {}),
                )
            return None
        try:
            head = open_head(signed, key)
        except ValueError as err:
            raise WitnessError(f"the relay's head: {err}") from None
        self.check(get, head, key)
        return head

    def check(self, get: Any, head: Head, key: bytes) -> None:
        """Check ``head`` against the kept one; keep the larger when consistent."""
        last = self.last(key)
        if last is not None:
            advance(get, last, head)
        self.keep(head, key)
        if last is None or head.size > last.size:
            _write(self.head_file, json.dumps(head.signed) + "\n")

    def kept(self, key: bytes) -> dict[int, Head]:
        """Every signed head kept, by size (unreadable ones are skipped, not trusted)."""
        try:
            raw = json.loads(self.heads_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise WitnessError(f"cannot read {self.heads_file}: {err}") from None
        out = {}
        for signed in raw.values() if isinstance(raw, dict) else []:
            try:
                head = open_head(signed, key)
            except ValueError:
                continue
            out[head.size] = head
        return out

    def keep(self, head: Head, key: bytes) -> None:
        """Keep ``head``; a kept head of its size with another root is a fork."""
        kept = self.kept(key)
        same = kept.get(head.size)
        if same is not None:
            if same.root != head.root:
                raise Inconsistent(f"fork: two different logs of {head.size} entries", same, head)
            return
        kept[head.size] = head
        sizes = sorted(kept)[-MAX_KEPT:]  # bounded: the largest are the most useful
        _write(self.heads_file, json.dumps({str(s): kept[s].signed for s in sizes}) + "\n")


def advance(get: Any, earlier: Head, later: Head) -> None:
    """Raise :class:`Inconsistent` unless ``later`` (signed after ``earlier``) extends it.

    A smaller later head is a rollback (or a truncation of entries and heads together),
    whatever the relay says; a larger one needs the relay's consistency proof.
    """
    if needs_proof(earlier, later):
        url = f"/v1/log/proof/consistency?first={earlier.size}&second={later.size}"
        try:
            proof = get(url)
        except Exception as err:  # the relay answered, and will not prove it: the alarm
            raise Inconsistent(
                f"the relay refused a consistency proof from {earlier.size} to "
                f"{later.size} entries ({err})",
                earlier,
                later,
            ) from None
        path = proof.get("path") if isinstance(proof, dict) else None
        if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
            path = None  # not a proof: check_heads names the fork
        check_heads(earlier, later, path)


def compare(get: Any, a: Head, b: Head, key: bytes | None = None) -> None:
    """Two heads of unknown order (from two people): one must extend the other.

    With ``key``, the relay's own head of the smaller size is fetched first: if its
    root differs, the two signed heads of one size are the proof of a fork, which
    anyone can check without trusting a consistency proof.
    """
    small, large = (a, b) if a.size <= b.size else (b, a)
    if key is not None and 0 < small.size < large.size:
        signed = get(f"/v1/log/heads/{small.size}")
        if signed is not None:
            try:
                theirs = open_head(signed, key)
            except ValueError as err:
                raise WitnessError(f"the relay's head of size {small.size}: {err}") from None
            same_size([theirs], small)
            same_size([theirs], large)
    advance(get, small, large)


def same_size(kept: Any, *heads: Head) -> bool:
    """Raise :class:`Inconsistent` if a kept head has the size of one of ``heads`` and
    another root; True if every one of ``heads`` matched a kept head."""
    by_size = {h.size: h for h in kept}
    matched = 0
    for head in heads:
        mine = by_size.get(head.size)
        if mine is None:
            continue
        if mine.root != head.root:
            raise Inconsistent(f"fork: two different logs of {head.size} entries", mine, head)
        matched += 1
    return matched == len(heads)
