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
    Message,
    ProtocolError,
    Released,
    Status,
    decode,
    encode,
    new_id,
    utcnow,
)
from protocol.topics import LOG_HEAD, relay_filters
from relay.index import RelayIndex

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 86400
RECEIVE_MAXIMUM = 1000
HEARTBEAT_S = 5.0


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
    ) -> None:
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
            client_id=f"relay-ingest-{name}",
            username=broker.username or "relay",
            manual_ack=True,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self._batch: list[tuple[mqtt.MQTTMessage, Message | None, ProtocolError | None]] = []
        self.connected = threading.Event()
        self.stats = {
            "received": 0,
            "indexed": 0,
            "duplicates": 0,
            "dead_letters": 0,
            "redis_errors": 0,
            "connects": 0,
            "confirmations": 0,
        }
        self._redis_delays = backoff_delays(0.2, 10.0)
        self._redis_retry_at = 0.0

    # ------------------------------------------------------------ paho callbacks

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.error("broker refused worker %s: %s", self.name, rc)
            return
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
        try:
            msg: Message | None = decode(message.topic, message.payload)
            err = None
        except ProtocolError as e:
            msg, err = None, e
        self._batch.append((message, msg, err))

    # ------------------------------------------------------------ the loop

    def flush(self) -> bool:
        """Write the batch to Redis, then acknowledge it; False if Redis failed."""
        if not self._batch or time.monotonic() < self._redis_retry_at:
            return not self._batch
        batch = self._batch[: self.batch_max]
        good = [(m, msg) for m, msg, _ in batch if msg is not None]
        try:
            results = self.index.index([msg for _, msg in good])
            for m, _msg, err in batch:
                if err is not None:
                    self.index.dead_letter(m.topic, m.payload, err.reason, err.detail, self.name)
        except redis.RedisError as e:
            self.stats["redis_errors"] += 1
            delay = next(self._redis_delays)
            self._redis_retry_at = time.monotonic() + delay
            log.warning(
                "redis write failed (%s); retrying in %.1f s, nothing acknowledged", e, delay
            )
            return False
        self._redis_delays = backoff_delays(0.2, 10.0)
        for (_m, msg), new in zip(good, results, strict=True):
            if new and isinstance(msg, Deleted):
                self._forget_released(msg.device, msg.clip_id)
            if self.audit is None or not new:
                continue
            if isinstance(msg, Released):
                self.audit.append(
                    "release",
                    msg.device,
                    {"request": msg.request_id, "clip": msg.clip_id, "sha256": msg.sha256},
                )
            elif isinstance(msg, Deleted):
                self.audit.append(
                    "deletion", msg.device, {"clip": msg.clip_id, "reason": msg.reason}
                )
            elif isinstance(msg, CommandRefused):
                self.audit.append("doorbell_refused", msg.device, refusal_entry(msg))
        self.stats["indexed"] += sum(results)
        self.stats["duplicates"] += len(results) - sum(results)
        self.stats["dead_letters"] += len(batch) - len(good)
        del self._batch[: len(batch)]
        self._confirm([msg for _, msg in good])
        for m, _msg, _err in batch:
            self.client.ack(m.mid, m.qos)
        return True

    def _forget_released(self, device: str, clip_id: str) -> None:
        """Deleted means deleted: drop released copies of the clip and their records."""
        from relay.blobs import blob_key
        from relay.index import dkey

        key = dkey(device, "released")
        for field_, _ in list(self.index.r.hscan_iter(key, match=f"*:{clip_id}")):
            request_id = field_.decode().rsplit(":", 1)[0]
            if self.blobs is not None:
                self.blobs.delete(blob_key(request_id, device, clip_id))
            self.index.r.hdel(key, field_)

    def _confirm(self, messages: list[Message]) -> None:
        """Tell each doorbell which of its messages are indexed, so it may drop them."""
        per_device: dict[str, list[str]] = {}
        for msg in messages:
            if not isinstance(msg, Status):  # status is not kept in an outbox
                per_device.setdefault(msg.device, []).append(msg.id)
        for device, ids in per_device.items():
            for i in range(0, len(ids), 1000):
                ack = Ack(id=new_id(), ts=utcnow(), device=device, ids=ids[i : i + 1000])
                topic, payload = encode(ack)
                self.client.publish(topic, payload, qos=1)
                self.stats["confirmations"] += 1

    def run(self, stop: threading.Event) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        delays = backoff_delays(self.broker.backoff_min_s, self.broker.backoff_max_s)
        next_beat = 0.0
        while not stop.is_set():
            try:
                self.client.connect(
                    self.broker.host,
                    self.broker.port,
                    keepalive=self.broker.keepalive_s,
                    clean_start=False,
                    properties=props,
                )
            except OSError as err:
                delay = next(delays)
                log.warning("broker unreachable (%s); retrying in %.1f s", err, delay)
                stop.wait(delay)
                continue
            delays = backoff_delays(self.broker.backoff_min_s, self.broker.backoff_max_s)
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


def refusal_entry(msg: CommandRefused) -> dict[str, Any]:
    """What the public log says of a doorbell's refusal (the doorbell's name is sealed)."""
    return {
        "command": msg.command,
        "command_id": msg.command_id,
        "request": msg.request_id,
        "clip": msg.clip_id,
        "why": msg.reason,
    }


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
