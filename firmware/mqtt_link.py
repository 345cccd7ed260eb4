"""The doorbell's link to the broker: MQTT v5 via paho-mqtt 2.x, fed by the outbox.

* A retained ``doorbell/{device}/status`` says ``online`` on every connect; the
  same topic is the last will (``offline``), so the relay and the owner see a
  doorbell drop off.
* A sender thread publishes outbox rows at QoS 1, urgent lane first, at most
  ``max_inflight`` unacknowledged.  A PUBACK only marks a row sent; the row
  leaves the outbox when the relay confirms it on ``cmd/ack`` (see
  :mod:`firmware.outbox` for why), and is sent again if that takes too long.
  The relay is idempotent on message ids, so nothing is lost and nothing doubles.
* Reconnects back off exponentially with full jitter, so a fleet does not
  stampede a broker that comes back.
* Commands arrive on ``doorbell/{device}/cmd/#``, are validated against the
  wire contract, and only then handed to ``on_command`` (acks stay here).

Example::

    link = MqttLink("front-door", cfg.mqtt, outbox, on_command=controller.submit)
    link.start()
"""

from __future__ import annotations

import logging
import queue
import shutil
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common.mqtt import backoff_delays, make_client
from firmware import __version__
from firmware.config import MqttConfig
from firmware.outbox import Outbox
from protocol import Ack, Message, ProtocolError, Status, decode, encode, new_id, utcnow
from protocol.topics import commands_filter, topic_for

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 86400


LOW_SPACE_BYTES = 256 * 1024 * 1024
"""Below this much free space the status carries ``warning: low_space``."""
SPACE_CHECK_S = 30.0


class MqttLink:
    """Owns the paho client, its network thread and the outbox sender; see the module doc."""

    def __init__(
        self,
        device: str,
        cfg: MqttConfig,
        outbox: Outbox,
        on_command: Callable[[Message], None],
        max_inflight: int = 20,
        data_dir: Path | None = None,
    ) -> None:
        self.data_dir = data_dir  # its free space goes out in the status
        self._low_space = False
        self._next_space_check = 0.0
        self.device = device
        self.cfg = cfg
        self.outbox = outbox
        self.on_command = on_command
        self.max_inflight = max_inflight
        self.status_topic = topic_for(device, "status")
        self.client = make_client(cfg, client_id=device, username=cfg.username or device)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.will_set(self.status_topic, self._status("offline"), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._closing = False
        self._wake = outbox.changed  # set by outbox.put, by acks and by connects
        self._acks: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
        self._inflight: dict[int, int] = {}  # mid -> outbox seq; sender thread only
        self._early_acks: dict[int, int] = {}
        self._status_mids: set[int] = set()  # paho thread only
        self._threads: list[threading.Thread] = []
        self._delays = backoff_delays(cfg.backoff_min_s, cfg.backoff_max_s)
        self.taps: dict[str, Callable[[bytes], None]] = {}
        """Other topics to follow (e.g. the relay's log head): topic → handler of payloads."""
        self.counters = {
            "published": 0,
            "acked": 0,
            "rejected": 0,
            "connects": 0,
            "bad_commands": 0,
            "commands": 0,
            "confirmed": 0,
        }

    def _status(self, state: str) -> bytes:
        free = self._free_bytes()
        msg = Status(
            id=new_id(),
            ts=utcnow(),
            device=self.device,
            state=state,
            firmware=__version__,
            free_bytes=free,
            warning="low_space" if free is not None and free < LOW_SPACE_BYTES else None,
        )
        return encode(msg)[1]

    def _free_bytes(self) -> int | None:
        if self.data_dir is None:
            return None
        try:
            return shutil.disk_usage(self.data_dir).free
        except OSError:
            return None

    def _check_space(self) -> None:
        """Say so in the status when free space crosses LOW_SPACE_BYTES (either way)."""
        now = time.monotonic()
        if self.data_dir is None or now < self._next_space_check or not self.connected.is_set():
            return
        self._next_space_check = now + SPACE_CHECK_S
        free = self._free_bytes()
        low = free is not None and free < LOW_SPACE_BYTES
        if low != self._low_space:
            self._low_space = low
            if low:
                log.warning("low on space: %s bytes free", free)
            self.client.publish(self.status_topic, self._status("online"), qos=1, retain=True)

    # ------------------------------------------------------------ threads

    def start(self) -> None:
        for name, target in (("mqtt-net", self._net_loop), ("mqtt-send", self._send_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        """Say ``offline`` (retained), disconnect cleanly, stop the threads."""
        self._closing = True
        if self.connected.is_set():
            info = self.client.publish(
                self.status_topic, self._status("offline"), qos=1, retain=True
            )
            info.wait_for_publish(timeout=2.0)
            self.client.disconnect()
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout)

    def _net_loop(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        while not self._stop.is_set():
            try:
                self.client.connect(
                    self.cfg.host,
                    self.cfg.port,
                    keepalive=self.cfg.keepalive_s,
                    clean_start=False,
                    properties=props,
                )
            except (OSError, ssl.SSLError) as err:
                delay = next(self._delays)
                log.warning(
                    "broker %s:%d unreachable (%s); retrying in %.1f s",
                    self.cfg.host,
                    self.cfg.port,
                    err,
                    delay,
                )
                self._stop.wait(delay)
                continue
            while not self._stop.is_set():
                rc = self.client.loop(timeout=0.5)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    break
            self.connected.clear()
            if not self._stop.is_set():
                self._stop.wait(next(self._delays))

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._send_once()
            except (sqlite3.Error, OSError) as err:
                # A full or failing disk: the outbox cannot mark or read rows now.
                # Keep going; unmarked rows are simply sent again (the relay is
                # idempotent on ids).
                log.error("outbox error while sending (%s); retrying", err)
                self._stop.wait(1.0)

    def _send_once(self) -> None:
        self._check_space()
        self._wake.wait(self._idle_wait())
        self._wake.clear()
        self._settle_acks()
        if not self.connected.is_set():
            return
        room = self.max_inflight - len(self._inflight)
        if room <= 0:
            return
        for row in self.outbox.due(room, exclude=set(self._inflight.values())):
            info = self.client.publish(row.topic, row.payload, qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                log.warning("publish of outbox row %d failed: %s", row.seq, info.rc)
                break
            self._inflight[info.mid] = row.seq
            self.counters["published"] += 1
        self._settle_acks()

    def _idle_wait(self) -> float:
        resend = self.outbox.next_resend()
        if resend is None:
            return 1.0
        return min(1.0, max(0.01, resend - time.time()))

    def _settle_acks(self) -> None:
        while True:
            try:
                mid, rc = self._acks.get_nowait()
            except queue.Empty:
                break
            self._early_acks[mid] = rc
        for mid in [m for m in self._early_acks if m in self._inflight]:
            rc = self._early_acks.pop(mid)
            seq = self._inflight.pop(mid)
            if rc >= 0x80:
                # The broker refused it for good (e.g. not authorised): resending
                # would block the queue forever.  Set it aside, visibly.
                log.error("broker refused outbox row %d (reason %d); set aside", seq, rc)
                self.outbox.reject(seq, f"reason code {rc}")
                self.counters["rejected"] += 1
            else:
                self.outbox.mark_sent(seq)
                self.counters["acked"] += 1

    # ------------------------------------------------------------ paho callbacks

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.error("broker refused the connection: %s", rc)
            return
        self.counters["connects"] += 1
        self._delays = backoff_delays(self.cfg.backoff_min_s, self.cfg.backoff_max_s)
        info = client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
        self._status_mids.add(info.mid)
        client.subscribe(commands_filter(self.device), qos=1)
        for topic in self.taps:
            client.subscribe(topic, qos=1)
        self.connected.set()
        self._wake.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connected.clear()
        if not self._stop.is_set() and not self._closing:
            log.warning("disconnected from broker: %s", rc)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        # Runs on paho's thread with paho's locks held: only hand over.
        if mid in self._status_mids:
            self._status_mids.discard(mid)
            return
        self._acks.put((mid, int(rc.value) if hasattr(rc, "value") else int(rc)))
        self._wake.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        # An exception here would end paho's network loop: contain everything.
        try:
            self._handle_message(message)
        except Exception:
            self.counters["bad_commands"] += 1
            log.exception("failed to handle a message on %s", message.topic)

    def _handle_message(self, message: mqtt.MQTTMessage) -> None:
        tap = self.taps.get(message.topic)
        if tap is not None:
            tap(message.payload)
            return
        try:
            msg = decode(message.topic, message.payload)
        except ProtocolError as err:
            self.counters["bad_commands"] += 1
            log.warning("ignoring bad command on %s: %s", message.topic, err)
            return
        if msg.device != self.device or msg.kind not in ("release", "delete", "masks", "ack"):
            self.counters["bad_commands"] += 1
            log.warning(
                "ignoring %s on %s: not a command for this doorbell", msg.kind, message.topic
            )
            return
        if isinstance(msg, Ack):
            try:
                logged = {e.id: (e.index, e.leaf, e.salt) for e in msg.logged}
                self.counters["confirmed"] += self.outbox.confirm(msg.ids, logged)
            except (sqlite3.Error, OSError) as err:  # a full disk: the rows are resent
                log.error("could not drop confirmed rows from the outbox: %s", err)
            return
        self.counters["commands"] += 1
        self.on_command(msg)
