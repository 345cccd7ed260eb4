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
            return None
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
        if last is None or head.size > last.size:
            _write(self.head_file, json.dumps(head.signed) + "\n")


def advance(get: Any, earlier: Head, later: Head) -> None:
    """Raise :class:`Inconsistent` unless ``later`` (signed after ``earlier``) extends it.

    A smaller later head is a rollback (or a truncation of entries and heads together),
    whatever the relay says; a larger one needs the relay's consistency proof.
    """
    if needs_proof(earlier, later):
        proof = get(f"/v1/log/proof/consistency?first={earlier.size}&second={later.size}")
        check_heads(earlier, later, None if proof is None else proof.get("path"))


def compare(get: Any, a: Head, b: Head) -> None:
    """Two heads of unknown order (from two people): one must extend the other."""
    advance(get, *((a, b) if a.size <= b.size else (b, a)))
