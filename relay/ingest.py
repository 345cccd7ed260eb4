"""Ingestion workers: MQTT shared subscriptions in, the Redis index out.

Each worker subscribes to ``$share/{group}/doorbell/+/{status,event,clip,...}``:
the broker hands each message to one worker of the group, so two workers split
the load and none sees a message twice.  Sessions are persistent
(``clean_start=False`` and a session expiry), and acknowledgements are manual:
a message is acknowledged only after Redis has it, so a worker killed with
SIGKILL loses nothing: the broker delivers again, and the index, idempotent on
message ids, makes the second delivery a no-op.

After indexing, the worker confirms each doorbell's message ids on
``doorbell/{device}/cmd/ack``; only then does the doorbell drop them from its
outbox.  That closes the gaps a broker's PUBACK leaves open: a broker crash
before its autosave, and Mosquitto 2.0.11 (Debian 12) not restoring shared
subscriptions from its persistence file after a restart.

A message that is not valid (see :func:`protocol.decode`) is counted, kept in a
dead-letter stream with the reason, acknowledged, and never stops the worker.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import redis
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common.mqtt import BrokerSettings, backoff_delays, make_client
from protocol import (
    Ack,
    CommandRefused,
    Deleted,
    Event,
    Message,
    ProtocolError,
    Released,
    Status,
    decode,
    encode,
    new_id,
    utcnow,
)
from protocol.merkle import leaf_hash
from protocol.messages import LoggedEntry
from protocol.topics import LOG_HEAD, relay_filters
from protocol.transparency import logged_entry, sealed_part
from relay import keyspace as ks
from relay.commands import CommandOutbox
from relay.index import CONFLICT, NEW, RelayIndex
from relay.plausible import Plausibility

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 20
"""How long the broker keeps a silent worker's session (and routes its share to it).

Mosquitto 2.0 goes on handing a shared subscription's messages to an offline
persistent session until it expires.  Twenty seconds lets a restarted worker pick
up what it held; after that the session ends and its messages are gone from the
broker, but not from the doorbells: each resends what the relay has not confirmed
after its confirm timeout (30 s).  So a dead worker's share is back with the living
within SESSION_EXPIRY_S + the doorbells' confirm timeout = 50 s (+ keepalive × 1.5
if the worker's host vanished without closing its connection).  See
docs/robustness.md.
"""
RECEIVE_MAXIMUM = 1000
HEARTBEAT_S = 5.0


_Held = tuple[mqtt.MQTTMessage, Message | None, ProtocolError | None]
"""A received message, its decoded form or the reason it is refused."""


class IngestWorker:
    """One ingestion worker; :meth:`run` until ``stop`` is set."""

    def __init__(
        self,
        broker: BrokerSettings,
        index: RelayIndex,
        name: str,
        group: str = "relay",
        batch: int = 500,
        audit: Any = None,
        blobs: Any = None,
        retire: bool = False,
        plausible: Plausibility | None = None,
        session_expiry_s: int = SESSION_EXPIRY_S,
    ) -> None:
        self.session_expiry_s = session_expiry_s
        self.plausible = plausible or Plausibility()
        self.commands = CommandOutbox(index.r) if index is not None else None
        self.name = name
        self.blobs = blobs  # released ciphertext to forget when a clip is deleted
        self.retire = retire
        self._last_head: dict[str, str] | None = None
        self.audit = audit  # releases and deletions go on the record
        self.index = index
        self.broker = broker
        self.group = group
        self.batch_max = batch
        self.client = make_client(
            broker,
            client_id=f"relay:ingest:{name}",
            username=broker.username or "relay",
            manual_ack=True,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self._batch: list[_Held] = []
        self.connected = threading.Event()
        self.stats = {
            "received": 0,
            "indexed": 0,
            "duplicates": 0,
            "dead_letters": 0,
            "conflicts": 0,
            "redis_errors": 0,
            "connects": 0,
            "confirmations": 0,
        }
        self._redis_delays = backoff_delays(0.2, 10.0)
        self._redis_retry_at = 0.0

    # ------------------------------------------------------------ paho callbacks

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            # Wrong password, not authorised...: the loop backs off before the next try.
            log.error("broker refused worker %s: %s", self.name, rc)
            self.stats["refused"] = self.stats.get("refused", 0) + 1
            return
        self._delays = backoff_delays(self.broker.backoff_min_s, self.broker.backoff_max_s)
        self.stats["connects"] += 1
        client.subscribe([(f, 1) for f in relay_filters(self.group)])
        self.connected.set()
        log.info("worker %s connected (session present: %s)", self.name, flags.session_present)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connected.clear()
        # Unacknowledged messages will come again; what we held is dropped unacked.
        self._batch.clear()
        log.warning("worker %s disconnected: %s", self.name, rc)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.stats["received"] += 1
        msg, err = self.check(message.topic, message.payload)
        self._batch.append((message, msg, err))

    def check(self, topic: str, payload: bytes) -> tuple[Message | None, ProtocolError | None]:
        """Decode and judge one payload: a message, or the reason to dead-letter it.

        Never raises: whatever a doorbell sends, this worker goes on.
        """
        try:
            msg = decode(topic, payload)
            self.plausible(msg)
            return msg, None
        except ProtocolError as e:
            return None, e
        except Exception as e:  # a bug must cost one message, not the worker
            log.exception("unexpected error judging a message on %r", topic[:200])
            return None, ProtocolError("internal", f"{type(e).__name__}: {str(e)[:200]}")

    # ------------------------------------------------------------ the loop

    def flush(self) -> bool:
        """Write the batch to Redis, then acknowledge it; False if Redis failed."""
        if not self._batch or time.monotonic() < self._redis_retry_at:
            return not self._batch
        batch = self._batch[: self.batch_max]
        try:
            outcomes = self._index_batch(batch)
            for i, (m, _msg, err) in enumerate(batch):
                if err is not None:
                    self.index.dead_letter(m.topic, m.payload, err.reason, err.detail, self.name)
                elif outcomes[i] == CONFLICT:
                    self.stats["conflicts"] += 1
                    self.index.dead_letter(
                        m.topic,
                        m.payload,
                        "conflict",
                        "this id was seen with other content",
                        self.name,
                    )
        except redis.RedisError as e:
            self.stats["redis_errors"] += 1
            delay = next(self._redis_delays)
            self._redis_retry_at = time.monotonic() + delay
            log.warning(
                "redis write failed (%s); retrying in %.1f s, nothing acknowledged", e, delay
            )
            return False
        self._redis_delays = backoff_delays(0.2, 10.0)
        good = [
            (m, msg, outcomes[i] == NEW)
            for i, (m, msg, _e) in enumerate(batch)
            if msg is not None and outcomes[i] != CONFLICT
        ]
        results = [new for _m, _msg, new in good]
        logged: dict[str, LoggedEntry] = {}
        try:
            for _m, msg, _new in good:
                entry = self._side_effects(msg)
                if entry is not None:
                    logged[msg.id] = entry
        except Exception as e:  # Redis, or the blob store (S3) behind _forget_released
            # Indexed but not yet recorded: acknowledge nothing, so the broker delivers
            # again; the index calls it a duplicate and the side effects run again.
            self.stats["redis_errors"] += 1
            log.warning("side effects failed (%s); nothing acknowledged", e)
            self._redis_retry_at = time.monotonic() + next(self._redis_delays)
            return False
        self.stats["indexed"] += sum(results)
        self.stats["duplicates"] += len(results) - sum(results)
        self.stats["dead_letters"] += len(batch) - len(good)
        del self._batch[: len(batch)]
        self._confirm([msg for _, msg, _new in good], logged)
        for m, _msg, _err in batch:
            self.client.ack(m.mid, m.qos)
        return True

    def _side_effects(self, msg: Message) -> LoggedEntry | None:
        """What a release or a deletion causes beyond the index, keyed by message id.

        Run for new messages *and* duplicates: a worker killed after indexing and
        before these finished has left them undone, and the redelivery must do
        them.  Each is idempotent: an audit entry is appended once per message id,
        deleting a blob or a record that is already gone does nothing.
        """
        if isinstance(msg, Deleted):
            self._forget_released(msg.device, msg.clip_id)
        if self.commands is not None:
            self.commands.settle(msg)  # the doorbell answered a relay command
        if isinstance(msg, Event) and msg.type == "masks_applied" and self.index is not None:
            # The set in force, kept for the owner's clients to build their next change
            # on.  Not checked here: clients check the owner's signature, and the
            # doorbell refuses a change not built on the set it holds (``stale``).
            kept = {"at": msg.at.timestamp(), "hash": msg.masks_hash, "update": msg.masks_update}
            self.index.r.eval(
                ks.MASKS_KEEP_LUA,
                1,
                ks.device_masks(msg.device),
                kept["at"],
                json.dumps(kept),
            )
        if self.audit is None:
            return None
        if isinstance(msg, Released | Deleted | CommandRefused):
            kind, data = log_entry(msg)
            index = self.audit.append(kind, msg.device, data, once=f"msg:{msg.id}")
            # Told to the doorbell in the ack: it keeps the message until it has seen
            # this entry proven in a head its witness accepted.
            # With the entry's salt, so the doorbell can check the sealed part too (its
            # own id and reason), not only the public one.  Read back from the store,
            # not kept from the append: a redelivery's append returns the first entry.
            raw = self.audit.public_entries(index, index)
            salt = self.audit.salt(index)
            if raw and salt is not None:
                return LoggedEntry(id=msg.id, index=index, leaf=leaf_hash(raw[0]).hex(), salt=salt)
        if isinstance(msg, Event) and msg.type == "masks_applied":
            # The doorbell's word that the owner's mask set is in force (by its hash).
            data = {"hash": msg.masks_hash}
            self.audit.append("masks_applied", msg.device, data, once=f"msg:{msg.id}")
        return None

    def _index_batch(self, batch: list[_Held]) -> list[int]:
        """Index the batch's good messages; an outcome per batch entry (-1: not indexed).

        A message the index script refuses (a Redis ``ResponseError`` for that one
        message) is turned into a dead letter instead of failing the batch forever.
        """
        good = [i for i, (_m, msg, _e) in enumerate(batch) if msg is not None]
        outcomes = [-1] * len(batch)
        try:
            codes = self.index.index_outcomes([batch[i][1] for i in good])  # type: ignore[misc]
        except redis.ResponseError:
            codes = []
            for i in good:
                try:
                    codes += self.index.index_outcomes([batch[i][1]])  # type: ignore[list-item]
                except redis.ResponseError as e:
                    m = batch[i][0]
                    batch[i] = (m, None, ProtocolError("index_refused", str(e)[:200]))
                    codes.append(-1)
        for i, c in zip(good, codes, strict=True):
            outcomes[i] = c
        return outcomes

    def _forget_released(self, device: str, clip_id: str) -> None:
        """Deleted means deleted: drop released copies of the clip and their records."""
        from relay.blobs import blob_key

        key = ks.device_released(device)
        for field_, _ in list(self.index.r.hscan_iter(key, match=ks.released_clip_match(clip_id))):
            request_id = ks.released_request(field_.decode())
            if self.blobs is not None:
                self.blobs.delete(blob_key(request_id, device, clip_id))
            self.index.r.hdel(key, field_)

    def _confirm(
        self, messages: list[Message], logged: dict[str, LoggedEntry] | None = None
    ) -> None:
        """Tell each doorbell which of its messages are indexed, so it may drop them."""
        logged = logged or {}
        per_device: dict[str, list[str]] = {}
        for msg in messages:
            if not isinstance(msg, Status):  # status is not kept in an outbox
                per_device.setdefault(msg.device, []).append(msg.id)
        for device, ids in per_device.items():
            for i in range(0, len(ids), 1000):
                chunk = ids[i : i + 1000]
                ack = Ack(
                    id=new_id(),
                    ts=utcnow(),
                    device=device,
                    ids=chunk,
                    logged=[logged[m] for m in chunk if m in logged],
                )
                topic, payload = encode(ack)
                self.client.publish(topic, payload, qos=1)
                self.stats["confirmations"] += 1

    def run(self, stop: threading.Event) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        self._delays = backoff_delays(self.broker.backoff_min_s, self.broker.backoff_max_s)
        next_beat = 0.0
        first = True
        while not stop.is_set():
            if not first:
                # Every failure backs off, with jitter: a refused CONNECT, a dropped
                # connection, an unreachable broker.  Reset only by a good CONNACK.
                delay = next(self._delays)
                log.warning("worker %s reconnecting in %.1f s", self.name, delay)
                if stop.wait(delay):
                    break
            first = False
            try:
                self.client.connect(
                    self.broker.host,
                    self.broker.port,
                    keepalive=self.broker.keepalive_s,
                    clean_start=False,
                    properties=props,
                )
            except OSError as err:
                log.warning("broker unreachable (%s)", err)
                continue
            while not stop.is_set():
                rc = self.client.loop(timeout=0.01 if self._batch else 0.2)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    break
                self.flush()
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + HEARTBEAT_S
                    self._beat()
            if stop.is_set() and self.connected.is_set():
                self._leave()
            self.connected.clear()

    def _leave(self) -> None:
        """A clean stop: index and acknowledge what is held, then disconnect.

        With ``retire``, the worker also unsubscribes and ends its session, so the
        broker stops keeping a share of the stream for it (scaling down); without,
        the session waits for the worker to come back (a restart).
        """
        self.flush()
        props = None
        if self.retire:
            self.client.unsubscribe(relay_filters(self.group))
            try:
                self.index.forget_worker(self.name)  # retired: no longer expected to beat
            except redis.RedisError as err:
                log.warning("could not unregister worker %s: %s", self.name, err)
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and self.client.want_write():
            self.client.loop(timeout=0.05)
        self.client.disconnect(properties=props)
        self.client.loop(timeout=0.2)

    def _publish_head(self) -> None:
        """Publish the audit log's signed head, retained, so a rewritten log can be noticed."""
        if self.audit is None:
            return
        head = self.audit.head()
        if head is not None and head != self._last_head:
            self.client.publish(LOG_HEAD, json.dumps(head).encode(), qos=1, retain=True)
            self._last_head = head

    def _beat(self) -> None:
        try:
            self._publish_head()
            self.index.heartbeat(
                self.name, {"pid": os.getpid(), "host": socket.gethostname(), **self.stats}
            )
        except redis.RedisError as err:
            log.warning("heartbeat failed: %s", err)


def log_entry(msg: Released | Deleted | CommandRefused) -> tuple[str, dict[str, Any]]:
    """The audit entry (kind, data) for a doorbell's release, deletion or refusal.

    The public part is :func:`protocol.transparency.logged_entry`, exactly, since the
    doorbell accepts a proof of nothing else; the audit log seals the rest (a
    deletion's reason, a refusal's text, which may name a doorbell).
    """
    kind, data = logged_entry(msg)
    return kind, {**data, **sealed_part(msg)}


def run_workers(
    broker: BrokerSettings,
    index_factory: Any,
    names: list[str],
    group: str,
    batch: int,
    stop: threading.Event,
) -> list[IngestWorker]:
    """Start one thread per worker name; they stop when ``stop`` is set."""
    workers = [IngestWorker(broker, index_factory(), n, group, batch) for n in names]
    for w in workers:
        threading.Thread(target=w.run, args=(stop,), name=f"ingest-{w.name}", daemon=True).start()
    return workers
