"""The doorbell as a witness of the relay's public log.

The relay publishes its latest signed tree head, retained, on ``relay/log/head``.
The doorbell keeps the last head it accepted on disk and, for each new one, checks
that it is signed by the relay's log key (written at provisioning, or pinned on
first use) and that the log only grew: a smaller head is a rollback, another root
for the same size a fork, and a larger one must come with a consistency proof from
the relay's public API (``log.relay_url``) that links it to the head kept.

On a fork, a rollback or a head signed by another key the doorbell raises a status
flag that stays up (``data_dir/witness.json``, :attr:`LogWitness.alarm`) and emits a
``log_alarm`` event to the owner with both heads, the evidence.  A relay that cannot
be reached is not an alarm: the check is tried again when the next head arrives or
after ``retry_s``.

Heads arrive on paho's network thread; :meth:`LogWitness.on_head` only queues them,
the checks (and the HTTP request) run on the witness's own thread.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware.controller import DoorbellEvent
from protocol import new_id
from protocol.crypto import b64, unb64
from protocol.transparency import Head, Inconsistent, check_heads, needs_proof, open_head

log = logging.getLogger(__name__)


def http_get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read(1 << 20))


class LogWitness:
    """Checks every head the relay publishes against the last one kept; see the module doc."""

    def __init__(
        self,
        state_file: Path,
        relay_url: str,
        pinned_key: bytes | None,
        emit: Callable[[DoorbellEvent], None],
        fetch: Callable[[str], Any] = http_get_json,
        retry_s: float = 30.0,
    ) -> None:
        self.state_file = state_file
        self.relay_url = relay_url.rstrip("/")
        self.emit = emit
        self.fetch = fetch
        self.retry_s = retry_s
        self.state: dict[str, Any] = self._load()
        if pinned_key is not None:
            kept = self.state.get("key")
            if kept is not None and unb64(kept) != pinned_key:
                log.warning("the provisioned log key replaces the one pinned before")
            self.state["key"] = b64(pinned_key)
        self.checked = 0
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending: bytes | None = None

    # ------------------------------------------------------------ state

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text())
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            log.error("witness state %s unreadable (%s): starting afresh", self.state_file, err)
            return {}

    def _save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(self.state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)

    @property
    def alarm(self) -> dict[str, Any] | None:
        """The status flag: the first inconsistency seen (it stays up until cleared)."""
        return self.state.get("alarm")

    @property
    def head(self) -> Head | None:
        signed, key = self.state.get("head"), self.state.get("key")
        if signed is None or key is None:
            return None
        return open_head(signed, unb64(key))

    # ------------------------------------------------------------ threads

    def on_head(self, payload: bytes) -> None:
        """From the MQTT link (paho's thread): queue the head, return at once."""
        self._queue.put(payload)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="log-witness", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while True:
            try:
                payload = self._queue.get(timeout=self.retry_s if self._pending else None)
            except queue.Empty:
                payload, self._pending = self._pending, None
            if payload is None:
                return
            try:
                self.check(payload)
            except Exception:  # a witness must never die on a bad head
                log.exception("checking a log head failed")

    # ------------------------------------------------------------ the check

    def _key(self) -> bytes:
        key = self.state.get("key")
        if key is None:  # trust on first use, announced
            key = self.fetch(f"{self.relay_url}/v1/log/key")["key"]
            self.state["key"] = key
            self._save()
            log.warning("pinned the relay's log key on first use: %s", key)
        return unb64(key)

    def check(self, payload: bytes) -> None:
        """Check one published head (synchronously; the thread calls this)."""
        try:
            key = self._key()
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("cannot fetch the relay's log key yet (%s)", err)
            self._pending = payload
            return
        try:
            head = open_head(json.loads(payload), key)
        except (ValueError, TypeError) as err:
            self._raise_alarm(f"a published log head is not signed by the relay's key: {err}")
            return
        last = self.head
        try:
            if last is not None and needs_proof(last, head):
                url = (
                    f"{self.relay_url}/v1/log/proof/consistency"
                    f"?first={last.size}&second={head.size}"
                )
                try:
                    proof = self.fetch(url)
                except urllib.error.HTTPError as err:
                    # The relay will not prove the new head extends the old: that is the alarm.
                    proof = {"path": [], "error": err.code}
                check_heads(last, head, proof.get("path"))
            elif last is not None:
                check_heads(last, head, None)
        except Inconsistent as err:
            self._raise_alarm(err.why, err.old, err.new)
            return
        except (OSError, ValueError) as err:
            log.warning("cannot check the log head yet (%s); will retry", err)
            self._pending = payload
            return
        self.checked += 1
        if last is None or head.size > last.size:
            self.state["head"] = head.signed
            self._save()

    def _raise_alarm(self, why: str, old: Head | None = None, new: Head | None = None) -> None:
        evidence = {
            "why": why,
            "earlier": None if old is None else old.signed,
            "later": None if new is None else new.signed,
            "seen_at": time.time(),
        }
        log.error("THE RELAY'S PUBLIC LOG IS INCONSISTENT: %s", why)
        if self.state.get("alarm") is None:
            self.state["alarm"] = evidence
            self._save()
        self.emit(DoorbellEvent("log_alarm", new_id(), time.monotonic(), time.time(), evidence))
