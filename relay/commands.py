"""The relay's commands to doorbells, durable until the doorbell answers.

An approval that is recorded but whose ``cmd/release`` was lost (the API process
died before publishing, the broker dropped it) would leave an ask approved, never
released and impossible to approve again.  So commands are not published
fire-and-forget: :meth:`CommandOutbox.enqueue` writes each to Redis (a hash of
pending commands, plus an entry on the ``commands:log`` stream), and a
:class:`CommandPublisher` publishes what is due, again and again with back-off,
until the doorbell's answer arrives through ingestion:

- a ``cmd/release`` is answered by a ``released`` message for its request;
- a ``cmd/delete`` by a ``deleted`` message (reason ``owner``) for its clip;
- a ``cmd/masks`` by an ``event`` ``masks_applied`` or a ``refused`` ``masks`` of its
  doorbell (one pending per doorbell: a newer update replaces one not yet delivered).

The ingest worker calls :meth:`CommandOutbox.settle` for each such message.  A
command unanswered after ``give_up_s`` is dropped and recorded in the audit log
(``command_failed``): every approval ends in a release or a recorded failure.
The doorbell is idempotent on its side (an approval's nonce is used once; a
second delivery of the same command changes nothing).

Example::

    outbox = CommandOutbox(redis_client, audit=audit)
    outbox.enqueue(topic, payload)                 # instead of client.publish
    CommandPublisher(outbox, client.publish).run(stop)
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from protocol import (
    CommandRefused,
    DeleteCommand,
    Deleted,
    Event,
    MasksCommand,
    Message,
    ReleaseCommand,
    Released,
    decode,
    encode,
    new_id,
    utcnow,
)
from protocol.decisions import decision_hash
from relay.blobs import BlobStore, blob_key
from relay.consent import PolicyRefusal
from relay.keyspace import COMMANDS_LOG, COMMANDS_PENDING, SETTLE_IF_ANSWERED_LUA

log = logging.getLogger(__name__)

RETRY_S = 30.0
GIVE_UP_S = 7 * 86400.0
MAX_DOUBLINGS = 5


def command_key(msg: Message) -> str | None:
    """The key of a command and of the answer to it: ``release:DEVICE:REQUEST``,
    ``delete:DEVICE:CLIP``, ``masks:DEVICE:-``."""
    if isinstance(msg, ReleaseCommand | Released):
        return f"release:{msg.device}:{msg.request_id}"
    if isinstance(msg, DeleteCommand):
        return f"delete:{msg.device}:{msg.clip_id}"
    if isinstance(msg, Deleted) and msg.reason == "owner":
        return f"delete:{msg.device}:{msg.clip_id}"
    if isinstance(msg, MasksCommand):
        return f"masks:{msg.device}:-"
    if isinstance(msg, Event) and msg.type == "masks_applied":
        return f"masks:{msg.device}:-"
    if isinstance(msg, CommandRefused) and msg.command == "masks":
        return f"masks:{msg.device}:-"
    return None


class CommandOutbox:
    def __init__(
        self,
        client: redis.Redis,
        audit: Any = None,
        clock: Callable[[], float] = time.time,
        retry_s: float = RETRY_S,
        give_up_s: float = GIVE_UP_S,
    ) -> None:
        self.r = client
        self.audit = audit
        self.clock = clock
        self.retry_s = retry_s
        self.give_up_s = give_up_s

    def enqueue(self, topic: str, payload: bytes) -> str:
        """Keep a command until its doorbell answers; the publisher sends it at once."""
        msg = decode(topic, payload)
        key = command_key(msg)
        if key is None:
            raise ValueError(f"{msg.kind} is not a command the relay keeps")
        now = self.clock()
        entry: dict[str, Any] = {
            "topic": topic,
            "payload": payload.decode(),
            "at": now,
            "next": now,
            "tries": 0,
        }
        if isinstance(msg, MasksCommand):
            # One key per doorbell, so only these answers settle it: the applied
            # update's hash, or a refusal of this very command.
            entry["answers"] = [decision_hash(msg.update), msg.id]
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(COMMANDS_PENDING, key, json.dumps(entry))
        pipe.xadd(COMMANDS_LOG, {"key": key, "event": "queued", "at": now}, maxlen=100_000)
        pipe.execute()
        return key

    def pending(self) -> dict[str, dict[str, Any]]:
        return {k.decode(): json.loads(v) for k, v in self.r.hgetall(COMMANDS_PENDING).items()}

    def due(self) -> list[tuple[str, dict[str, Any]]]:
        now = self.clock()
        return [(k, e) for k, e in self.pending().items() if e["next"] <= now]

    def sent(self, key: str, entry: dict[str, Any]) -> None:
        """One more attempt made; the next one waits longer (unless answered meanwhile)."""
        now = self.clock()
        if now - entry["at"] > self.give_up_s:
            self._give_up(key, entry)
            return
        entry["tries"] += 1
        entry["next"] = now + self.retry_s * 2 ** min(entry["tries"] - 1, MAX_DOUBLINGS)
        # Only if still pending: an answer may have settled it since it was read.
        self.r.eval(
            "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then "
            "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end",
            1,
            COMMANDS_PENDING,
            key,
            json.dumps(entry),
        )

    def settle(self, msg: Message) -> bool:
        """``msg`` from a doorbell answers a pending command: it is done."""
        key = command_key(msg)
        if key is None or not isinstance(msg, Released | Deleted | Event | CommandRefused):
            return False
        if isinstance(msg, Event | CommandRefused):
            token = msg.masks_hash if isinstance(msg, Event) else msg.command_id
            if not self.r.eval(SETTLE_IF_ANSWERED_LUA, 1, COMMANDS_PENDING, key, token or ""):
                return False
        elif not self.r.hdel(COMMANDS_PENDING, key):
            return False
        self.r.xadd(COMMANDS_LOG, {"key": key, "event": "answered", "at": self.clock()})
        return True

    def _give_up(self, key: str, entry: dict[str, Any]) -> None:
        if not self.r.hdel(COMMANDS_PENDING, key):
            return
        log.error("command %s unanswered after %d tries; recorded as failed", key, entry["tries"])
        self.r.xadd(COMMANDS_LOG, {"key": key, "event": "failed", "at": self.clock()})
        if self.audit is not None:
            kind, device, what = key.split(":", 2)
            self.audit.append(
                "command_failed",
                "relay",
                {"command": kind, "device": device, "ref": what, "tries": entry["tries"]},
                once=f"command_failed:{key}:{entry['at']}",
            )


class CommandPublisher:
    """Publishes due commands (QoS 1) until they are answered; one per relay API process."""

    def __init__(
        self,
        outbox: CommandOutbox,
        publish: Callable[[str, bytes], object],
        poll_s: float = 1.0,
        wake: threading.Event | None = None,
    ) -> None:
        self.outbox = outbox
        self.publish = publish
        self.poll_s = poll_s
        self.wake = wake or threading.Event()
        self.published = 0

    def run_once(self) -> int:
        n = 0
        for key, entry in self.outbox.due():
            self.publish(entry["topic"], entry["payload"].encode())
            self.outbox.sent(key, entry)
            n += 1
        self.published += n
        return n

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except redis.RedisError as err:
                log.warning("command outbox unavailable (%s); retrying", err)
            self.wake.wait(self.poll_s)
            self.wake.clear()


class DoorbellCommands:
    """What the relay sends a doorbell on an owner's signed word: one place that builds
    ``cmd/release`` (with one upload link per approved clip) and ``cmd/delete``, for the
    HTTP API and the owners' web app alike.  ``publish`` is the durable outbox's
    :meth:`CommandOutbox.enqueue` under ``relay serve``."""

    def __init__(self, blobs: BlobStore, publish: Callable[[str, bytes], None]) -> None:
        self.blobs = blobs
        self.publish = publish

    def release(self, device: str, request_id: str, approval: str, clip_ids: list[str]) -> None:
        urls = {c: self.blobs.upload_url(blob_key(request_id, device, c)) for c in clip_ids}
        cmd = ReleaseCommand(
            id=new_id(),
            ts=utcnow(),
            device=device,
            request_id=request_id,
            approval=approval,
            upload_urls=urls,
        )
        self.publish(*encode(cmd))

    def delete(self, device: str, clip_id: str, signature: str) -> None:
        cmd = DeleteCommand(
            id=new_id(), ts=utcnow(), device=device, clip_id=clip_id, signature=signature
        )
        self.publish(*encode(cmd))

    def masks(self, device: str, update: str) -> None:
        """Forward the owner's signed mask update (the doorbell checks it again)."""
        self.publish(*encode(MasksCommand(id=new_id(), ts=utcnow(), device=device, update=update)))


def answer_bystander(
    engine: Any,
    doorbells: DoorbellCommands,
    owner: str,
    ask_id: str,
    body: dict[str, Any],
) -> dict[str, Any]:
    """Check and record an owner's answer to a bystander's ask and send the doorbell
    what it implies; the HTTP API and the web app both call this."""
    what = body["answer"]
    if what == "copy":
        if not body.get("approval"):
            raise PolicyRefusal("copy needs approval: a signed Approval")
        ask, payload = engine.approve(owner, ask_id, body["approval"])
        doorbells.release(ask.device, ask.request_id, body["approval"], payload["clip_ids"])
        return {"id": ask.id, "status": "approved", "forwarded_to": ask.device}
    if what == "erase":
        if not body.get("deletions"):
            raise PolicyRefusal("erase needs deletions: clip id -> a signed Deletion")
        ask, before = engine.bystander_erase(owner, ask_id, body["deletions"])
        for clip_id, signature in sorted(body["deletions"].items()):
            doorbells.delete(ask.device, clip_id, signature)
        return {
            "id": ask.id,
            "status": "erased",
            "forwarded_to": ask.device,
            "released_before": before,
        }
    if what == "decline":
        if not body.get("reason"):
            raise PolicyRefusal("decline needs a reason code")
        return {
            "id": engine.bystander_decline(owner, ask_id, body["reason"]).id,
            "status": "denied",
        }
    if not body.get("masks"):
        raise PolicyRefusal(
            "accept needs masks: your signed MaskUpdate of the doorbell holding the proposed "
            "polygon (the current set plus it)"
        )
    # One call: the accept is recorded only with a mask update that holds the proposal,
    # and that update is forwarded as the masks route forwards one.
    ask, update, digest = engine.bystander_accept(owner, ask_id, body["masks"])
    doorbells.masks(ask.device, body["masks"])
    polygon = (ask.bystander or {}).get("polygon")
    return {
        "id": ask.id,
        "status": "accepted",
        "forwarded_to": ask.device,
        "polygon": polygon,
        "hash": digest,
        "masks": len(update.masks),
    }
