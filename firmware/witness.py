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

import http.client
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


class BadAnswer(ValueError):
    """The relay answered, but not with JSON: an answer, not a network failure."""


def http_get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body = resp.read(1 << 20)
    try:
        return json.loads(body)
    except ValueError as err:
        raise BadAnswer(f"the relay's answer to {url} is not JSON: {err}") from None


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
        refuse_s: float = 6 * 3600.0,
        poll_s: float = 3600.0,
        max_age_s: float = 2 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state_file = state_file
        self.backup = backup_of(state_file)
        self.marker = marker_of(state_file)
        self.relay_url = relay_url.rstrip("/")
        self.emit = emit
        self.fetch = fetch
        self.retry_s = retry_s
        self.refuse_s = refuse_s
        self.poll_s = poll_s
        self.max_age_s = max_age_s
        self.clock = clock
        self._refused_since: float | None = None
        self.state, lost = load_state(state_file)
        if pinned_key is not None:
            kept = self.state.get("key")
            if kept is not None and unb64(kept) != pinned_key:
                # The owner's provisioning is the authority; the head kept under the old
                # key cannot be checked with the new one.
                log.warning("the provisioned log key replaces the one pinned before")
                self.state.pop("head", None)
            self.state["key"] = b64(pinned_key)
        if lost is not None:
            self._raise_alarm(lost, kind="state_lost")
        self.checked = 0
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending: bytes | None = None
        # Jobs run on this thread after each head check or poll (e.g. proving refusals
        # against the head just accepted: firmware/log_proof.py).
        self.after: list[Callable[[], object]] = []

    # ------------------------------------------------------------ state

    def _save(self) -> None:
        body = json.dumps(self.state)
        for path in (self.state_file, self.backup):
            _write_durably(path, body)
        key = self.state.get("key")
        if key is not None and not self.marker.exists():
            # Written once: from now on a missing state is a loss, not a first start.
            _write_durably(self.marker, json.dumps({"key": key, "since": self.clock()}))

    @property
    def alarm(self) -> dict[str, Any] | None:
        """The status flag: the first inconsistency seen (it stays up until cleared)."""
        return self.state.get("alarm")

    @property
    def stale(self) -> dict[str, Any] | None:
        """The stale-log flag: the newest head seen is older than ``max_age_s``."""
        return self.state.get("stale")

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
        next_poll = time.monotonic()  # the first poll at once: a head even if none is retained
        while True:
            wait = next_poll - time.monotonic()
            if self._pending is not None:
                wait = min(wait, self.retry_s)
            try:
                payload = self._queue.get(timeout=max(wait, 0.0))
                if payload is None:
                    return
                self._guarded(self.check, payload)
            except queue.Empty:
                if self._pending is not None:
                    payload, self._pending = self._pending, None
                    self._guarded(self.check, payload)
                if time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self.poll_s
                    self._guarded(self.poll)
            for job in self.after:
                self._guarded(job)

    @staticmethod
    def _guarded(job: Callable[..., None], *args: Any) -> None:
        try:
            job(*args)
        except Exception:  # a witness must never die on a bad head
            log.exception("checking a log head failed")

    def poll(self) -> None:
        """Fetch the relay's head from its API (not only the retained topic, which the
        operator could stop updating), check it, and check the log is not stale."""
        try:
            signed = self.fetch(f"{self.relay_url}/v1/log/head")
        except (OSError, ValueError) as err:
            log.warning("cannot fetch the relay's log head (%s)", err)
        else:
            self.check(json.dumps(signed).encode())
        self._check_age()

    def _check_age(self) -> None:
        newest = self.state.get("newest_at")
        if newest is None:
            return
        age = self.clock() - newest
        if age <= self.max_age_s:
            if self.state.pop("stale", None) is not None:
                self._save()
            return
        if self.state.get("stale") is None:
            flag = {
                "why": f"the relay's newest signed log head is {age / 3600:.1f} h old "
                f"(bound {self.max_age_s / 3600:.1f} h): the log has stopped moving",
                "head": self.state.get("head"),
                "seen_at": self.clock(),
            }
            self.state["stale"] = flag
            self._save()
            log.error("THE RELAY'S PUBLIC LOG IS STALE: %s", flag["why"])
            self.emit(DoorbellEvent("log_stale", new_id(), time.monotonic(), time.time(), flag))

    # ------------------------------------------------------------ the check

    def _key(self) -> bytes:
        key = self.state.get("key")
        if key is None:  # trust on first use, announced (load_state restores a lost pin)
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
            if last is not None and head.size < last.size and head.at <= last.at:
                self._late(last, head)
                return
            if last is not None and needs_proof(last, head):
                check_heads(last, head, self._proof(last, head))
            elif last is not None:
                check_heads(last, head, None)
        except Inconsistent as err:
            self._raise_alarm(err.why, err.old, err.new)
            return
        except OSError as err:
            self._pending = payload
            now = self.clock()
            if self._refused_since is None:
                self._refused_since = now
            if now - self._refused_since < self.refuse_s:
                log.warning("cannot check the log head yet (%s); will retry", err)
                return
            # A relay that never answers is indistinguishable from one hiding a fork.
            self._raise_alarm(
                f"the relay refused a consistency proof from {last.size if last else 0} to "
                f"{head.size} entries for {now - self._refused_since:.0f} s ({err})",
                last,
                head,
            )
            return
        self._refused_since = None
        self.checked += 1
        changed = False
        if last is None or head.size > last.size:
            self.state["head"] = head.signed
            changed = True
        if head.at > self.state.get("newest_at", 0):
            self.state["newest_at"] = head.at
            changed = True
        if changed:
            self._save()
        self._check_age()

    def _late(self, kept: Head, head: Head) -> None:
        """An older, smaller head delivered after a newer one (the retained topic lags
        the head polled from the API): it must be a prefix of the head kept.  One the
        relay cannot prove is a rollback; a smaller head signed *after* the kept one
        never comes here (needs_proof calls it a rollback at once)."""
        try:
            check_heads(head, kept, self._proof(head, kept))
        except Inconsistent as err:
            raise Inconsistent(
                f"rollback: the relay shows a log of {head.size} entries that it cannot "
                f"prove is a prefix of the {kept.size} seen before ({err.why})",
                kept,
                head,
            ) from None
        log.info("a late head of %d entries is a prefix of the %d kept", head.size, kept.size)

    def _proof(self, last: Head, head: Head) -> list[str]:
        """The relay's consistency proof from ``last`` to ``head``.

        OSError: the relay could not be reached (or failed, 5xx), to retry; any answer
        that is not a proof is :class:`Inconsistent`, the evidence.
        """
        url = f"{self.relay_url}/v1/log/proof/consistency?first={last.size}&second={head.size}"
        try:
            proof = self.fetch(url)
        except urllib.error.HTTPError as err:
            if err.code >= 500:
                raise OSError(f"the relay failed ({err.code})") from None
            proof = {"error": err.code}
        except http.client.HTTPException as err:  # a broken connection, not an answer
            raise OSError(f"the relay's answer was cut: {err!r}") from None
        except ValueError:  # BadAnswer, or any fetch's JSON error: an answer, not a proof
            proof = None
        path = proof.get("path") if isinstance(proof, dict) else None
        if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
            raise Inconsistent(
                f"the relay gave no consistency proof from {last.size} to {head.size} "
                f"entries (it answered {json.dumps(proof)[:200]})",
                last,
                head,
            )
        return path

    def _raise_alarm(
        self,
        why: str,
        old: Head | None = None,
        new: Head | None = None,
        kind: str = "inconsistent",
    ) -> None:
        evidence = {
            "kind": kind,
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


def backup_of(state_file: Path) -> Path:
    return state_file.with_name(state_file.name + ".bak")


def marker_of(state_file: Path) -> Path:
    """A second file, written once the first key is pinned: that a state existed."""
    return state_file.with_name(state_file.stem + ".pinned")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.error("witness state %s unreadable (%s)", path, err)
        return None
    return data if isinstance(data, dict) else None


def load_state(state_file: Path) -> tuple[dict[str, Any], str | None]:
    """The witness state, from the file or its copy, and why it was lost (or None).

    With neither readable but the marker there, the state existed and is gone (an SD
    card fault, or someone who wants the doorbell to forget the heads it saw): the
    key is restored from the marker, never fetched again from the relay, and the
    loss is reported.
    """
    for path in (state_file, backup_of(state_file)):
        data = _read(path)
        if data is not None:
            if path != state_file:
                log.error("witness state %s lost: restored from its copy", state_file)
            return data, None
    marker = _read(marker_of(state_file))
    if marker is None:
        return {}, None  # the first start
    state = {"key": marker["key"]} if isinstance(marker.get("key"), str) else {}
    return state, (
        f"the witness's record of the relay's log ({state_file}) was lost after it had "
        "been kept: the heads seen before are gone, a rollback cannot be ruled out"
    )


def _write_durably(path: Path, body: str) -> None:
    """Write-temp, fsync, rename, fsync the folder: a power cut leaves old or new."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
