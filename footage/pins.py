"""Requesters' signing keys, pinned on first use per relay and requester name.

An owner approving a release seals clip keys to the box key inside the requester's
signed request (protocol.reqsig).  That only helps if the signing key is the
requester's: the first key seen for a name is kept (and its fingerprint shown, to
compare out of band); a different key for a known name is refused, never re-pinned.

>>> import tempfile; from pathlib import Path
>>> p = RequesterPins(Path(tempfile.mkdtemp()))
>>> p.check("https://r", "police", bytes(32))
'new'
>>> p.check("https://r", "police", bytes(32))
'known'
>>> p.check("https://r", "police", bytes([1]) * 32)  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
...
footage.pins.ChangedKey: a different key
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from protocol.crypto import b64, unb64
from protocol.reqsig import fingerprint


class ChangedKey(Exception):
    """A known requester name with a signing key other than the pinned one."""


class RequesterPins:
    """``requester_pins.json`` in the footage state folder: ``{relay: {name: key}}``."""

    def __init__(self, state: Path) -> None:
        self.path = state / "requester_pins.json"

    def keep_mine(self, relay: str, request_id: str, digest: str) -> None:
        """Keep the hash of a request this client signed (for ``footage status``)."""
        self._save("my_requests", relay, request_id, digest)

    def mine(self, relay: str, request_id: str) -> str | None:
        return self._load_file("my_requests").get(relay, {}).get(request_id)

    def _load_file(self, name: str) -> dict[str, dict[str, str]]:
        try:
            return json.loads((self.path.parent / f"{name}.json").read_text())
        except FileNotFoundError:
            return {}

    def _save(self, name: str, relay: str, key: str, value: str) -> None:
        data = self._load_file(name)
        data.setdefault(relay, {})[key] = value
        path = self.path.parent / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)  # whole or not at all: a pin is never half-written

    def pinned(self, relay: str, name: str) -> str | None:
        """The signing key (base64) pinned for ``name`` at ``relay``, if any."""
        return self._load_file("requester_pins").get(relay, {}).get(name)

    def check(self, relay: str, name: str, sign_public: bytes) -> str:
        """``"new"`` (pinned now), ``"known"`` (matches the pin), or ChangedKey."""
        pinned = self.pinned(relay, name)
        if pinned is None:
            self._save("requester_pins", relay, name, b64(sign_public))
            return "new"
        if pinned != b64(sign_public):
            raise ChangedKey(
                f"requester {name!r} at {relay} signed with a different key "
                f"({fingerprint(sign_public)}) than the one pinned "
                f"({fingerprint(unb64(pinned))}): refused; if the requester really "
                f"changed keys, confirm out of band and remove it from {self.path}"
            )
        return "known"
