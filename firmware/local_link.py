"""The doorbell's optional link to the owner's own broker, spoken the Home Assistant way.

Independent of the relay link (:mod:`firmware.mqtt_link`): its own paho client, its
own thread, its own broker.  Either can be down without the other noticing, and
the chime and the recording never wait for either.

What Home Assistant sees, through MQTT device discovery (one retained config on
``<prefix>/device/<device>/config`` holding ``dev``, ``o`` and ``cmps``; sent again
whenever Home Assistant's birth message ``online`` arrives on ``<prefix>/status``):

* ``ring``: an ``event`` (``doorbell``): ``{"event_type": "ring", "id", "at"}``, never retained;
* ``motion``: a ``binary_sensor`` (``motion``): ``ON`` / ``OFF``, retained;
* ``snapshot``: an ``image``, only if enabled: the press's JPEG, masks applied;
* ``storage``: a ``sensor`` (``data_size``): free MB where the data folder is;
* ``relay``: a ``binary_sensor`` (``connectivity``): the relay link's state, read only;
* ``snooze`` / ``snooze/set``: a ``switch``: motion alerts snoozed, ``ON`` / ``OFF``;
* ``availability``: ``online``; ``offline`` on a clean stop and as the last will.

Topics are under ``open-doorbell/<device>/``; see docs/home-assistant.md.

A press is published from the controller's thread straight to paho (no disk on the
way: this broker is in the house and the press is wanted now).  While the broker is
unreachable the latest ``pending_presses`` presses wait in memory and go out on
reconnect; states (motion, storage, relay, snooze) are retained and simply sent
again, latest value only.

Example::

    link = HomeAssistantLink("front-door", cfg.home_assistant, data_dir,
                             relay_connected=lambda: uplink.link.connected.is_set())
    link.start()
    controller_sink = link.on_event
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from common.mqtt import make_client
from firmware import __version__
from firmware.camera.base import CameraBackend
from firmware.config import HomeAssistantConfig
from firmware.controller import DoorbellEvent

log = logging.getLogger(__name__)

ON, OFF = "ON", "OFF"
ONLINE, OFFLINE = "online", "offline"
BIRTH_MIN_INTERVAL_S = 2.0


def discovery(
    device: str, prefix: str, base: str, *, snapshot: bool, relay: bool
) -> tuple[str, dict[str, Any]]:
    """The device discovery topic and payload.  Everything in it derives from the device
    id alone, so the ``unique_id`` s are the same on every start."""
    uid = f"open_doorbell_{device}".replace("-", "_")
    cmps: dict[str, dict[str, Any]] = {
        "ring": {
            "p": "event",
            "name": "Ring",
            "unique_id": f"{uid}_ring",
            "state_topic": f"{base}/ring",
            "device_class": "doorbell",
            "event_types": ["ring"],
            "qos": 1,
        },
        "motion": {
            "p": "binary_sensor",
            "name": "Motion",
            "unique_id": f"{uid}_motion",
            "state_topic": f"{base}/motion",
            "device_class": "motion",
            "payload_on": ON,
            "payload_off": OFF,
            "qos": 1,
        },
        "storage": {
            "p": "sensor",
            "name": "Free storage",
            "unique_id": f"{uid}_storage",
            "state_topic": f"{base}/storage",
            "device_class": "data_size",
            "unit_of_measurement": "MB",
            "state_class": "measurement",
            "entity_category": "diagnostic",
        },
        "snooze": {
            "p": "switch",
            "name": "Snooze motion alerts",
            "unique_id": f"{uid}_snooze",
            "state_topic": f"{base}/snooze",
            "command_topic": f"{base}/snooze/set",
            "payload_on": ON,
            "payload_off": OFF,
            "entity_category": "config",
            "icon": "mdi:bell-sleep",
        },
    }
    # A component given only its platform is removed from Home Assistant: an owner who
    # turns the image (or the relay) off must not keep a stale entity.
    cmps["snapshot"] = (
        {
            "p": "image",
            "name": "Last press",
            "unique_id": f"{uid}_snapshot",
            "image_topic": f"{base}/snapshot",
            "content_type": "image/jpeg",
        }
        if snapshot
        else {"p": "image"}
    )
    cmps["relay"] = (
        {
            "p": "binary_sensor",
            "name": "Relay connection",
            "unique_id": f"{uid}_relay",
            "state_topic": f"{base}/relay",
            "device_class": "connectivity",
            "payload_on": ON,
            "payload_off": OFF,
            "entity_category": "diagnostic",
        }
        if relay
        else {"p": "binary_sensor"}
    )
    payload = {
        "dev": {
            "identifiers": [uid],
            "name": f"Doorbell {device}",
            "manufacturer": "open doorbell",
            "model": "Raspberry Pi camera doorbell",
            "sw_version": __version__,
        },
        "o": {"name": "open doorbell", "sw_version": __version__},
        "availability_topic": f"{base}/availability",
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "cmps": cmps,
    }
    return f"{prefix}/device/{device}/config", payload


class HomeAssistantLink:
    """Owns the paho client for the owner's broker; see the module doc."""

    def __init__(
        self,
        device: str,
        cfg: HomeAssistantConfig,
        data_dir: Path,
        relay_connected: Callable[[], bool] | None = None,
    ) -> None:
        self.device = device
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self.relay_connected = relay_connected
        self.base = f"open-doorbell/{device}"
        self.t_availability = f"{self.base}/availability"
        self.t_ring = f"{self.base}/ring"
        self.t_snooze_set = f"{self.base}/snooze/set"
        self.t_birth = f"{cfg.discovery_prefix}/status"
        self.discovery_topic, self.discovery_payload = discovery(
            device,
            cfg.discovery_prefix,
            self.base,
            snapshot=cfg.snapshot_image,
            relay=relay_connected is not None,
        )
        self.client = make_client(cfg, client_id=f"{device}-home", username=cfg.username or device)
        self.client.will_set(self.t_availability, OFFLINE, qos=1, retain=True)
        self.client.reconnect_delay_set(cfg.backoff_min_s, cfg.backoff_max_s)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self._lock = threading.RLock()  # connected-or-queue decisions, the queue, the states
        self._pending: deque[bytes] = deque(maxlen=cfg.pending_presses)
        self._states: dict[str, str | bytes] = {}  # retained topic -> latest payload
        self._motion = False
        self._snoozed = False
        self._last_birth = -BIRTH_MIN_INTERVAL_S
        self._stop = threading.Event()
        self._status_thread: threading.Thread | None = None
        self.counters = {"rings": 0, "queued": 0, "dropped": 0, "births": 0, "bad_commands": 0}
        self._set_state("motion", OFF)
        self._set_state("snooze", OFF)
        if not cfg.snapshot_image:
            # An empty retained message deletes a picture an earlier setting left.
            self._states[f"{self.base}/snapshot"] = b""

    # ------------------------------------------------------------ life cycle

    def start(self) -> None:
        self._refresh_status()
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()
        self._status_thread = threading.Thread(
            target=self._status_loop, name="home-status", daemon=True
        )
        self._status_thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Say ``offline`` (retained), disconnect cleanly, stop the threads."""
        self._stop.set()
        if self.connected.is_set():
            info = self.client.publish(self.t_availability, OFFLINE, qos=1, retain=True)
            info.wait_for_publish(timeout)
        self.client.disconnect()
        self.client.loop_stop()
        if self._status_thread is not None:
            self._status_thread.join(timeout)

    # ------------------------------------------------------------ the controller's sink

    def on_event(self, ev: DoorbellEvent) -> None:
        """Called on the controller's thread for every event; never blocks on the network,
        never raises (the relay's announcer comes after it in the same sink)."""
        try:
            self._on_event(ev)
        except Exception:
            log.exception("home link failed on %s", ev.kind)

    def _on_event(self, ev: DoorbellEvent) -> None:
        if ev.kind == "ring":
            self._ring(ev)
        elif ev.kind in ("motion_start", "motion_end"):
            with self._lock:
                self._motion = ev.kind == "motion_start"
                self._set_state("motion", ON if self._motion and not self._snoozed else OFF)
        elif ev.kind in ("clip_saved", "clip_deleted"):
            self._refresh_status()

    def on_snapshot(self, jpeg: bytes) -> None:
        """The press's snapshot (see :class:`SnapshotTap`), when the owner enabled the image."""
        if self.cfg.snapshot_image:
            with self._lock:
                self._set_state("snapshot", jpeg)

    def _ring(self, ev: DoorbellEvent) -> None:
        at = datetime.fromtimestamp(ev.at, UTC).isoformat(timespec="milliseconds")
        payload = json.dumps({"event_type": "ring", "id": ev.id, "at": at}).encode()
        with self._lock:
            self.counters["rings"] += 1
            if self.connected.is_set():
                self.client.publish(self.t_ring, payload, qos=1)
                return
            if len(self._pending) == self._pending.maxlen:
                self.counters["dropped"] += 1
            self._pending.append(payload)
            self.counters["queued"] += 1

    # ------------------------------------------------------------ states

    def _set_state(self, name: str, payload: str | bytes) -> None:
        """Remember and (when connected) publish a retained state; callers hold the lock."""
        topic = f"{self.base}/{name}"
        if self._states.get(topic) == payload:
            return
        self._states[topic] = payload
        if self.connected.is_set():
            self.client.publish(topic, payload, qos=1, retain=True)

    def _refresh_status(self, force: bool = True) -> None:
        relay = None if self.relay_connected is None else self.relay_connected()
        free_mb = None
        if force:
            free_mb = shutil.disk_usage(self._existing(self.data_dir)).free / 1e6
        with self._lock:
            if relay is not None:
                self._set_state("relay", ON if relay else OFF)
            if free_mb is not None:
                self._set_state("storage", f"{free_mb:.1f}")

    @staticmethod
    def _existing(path: Path) -> Path:
        while not path.exists() and path != path.parent:
            path = path.parent
        return path

    def _status_loop(self) -> None:
        # Relay connectivity is polled (read-only: the relay link owns that flag) often
        # enough to look immediate; free storage changes slowly.
        next_storage = 0.0
        waited = 0.0
        while not self._stop.wait(0.5):
            waited += 0.5
            force = waited >= next_storage
            if force:
                next_storage = waited + self.cfg.status_every_s
            try:
                self._refresh_status(force=force)
            except OSError:
                log.exception("reading the doorbell's status failed")

    def _publish_all(self) -> None:
        """Discovery, then every retained state: on connect and on Home Assistant's birth."""
        self.client.publish(
            self.discovery_topic, json.dumps(self.discovery_payload), qos=1, retain=True
        )
        for topic, payload in self._states.items():
            self.client.publish(topic, payload, qos=1, retain=True)

    # ------------------------------------------------------------ paho callbacks

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.error("home broker refused the connection: %s", rc)
            return
        client.subscribe([(self.t_birth, 1), (self.t_snooze_set, 1)])
        client.publish(self.t_availability, ONLINE, qos=1, retain=True)
        with self._lock:
            self.connected.set()
            self._publish_all()
            while self._pending:
                client.publish(self.t_ring, self._pending.popleft(), qos=1)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        with self._lock:
            self.connected.clear()
        if not self._stop.is_set():
            log.warning("disconnected from the home broker: %s", rc)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        # An exception here would end paho's network loop: contain everything.
        try:
            self._handle(message.topic, message.payload)
        except Exception:
            log.exception("failed to handle a message on %s", message.topic)

    def _handle(self, topic: str, payload: bytes) -> None:
        if topic == self.t_birth:
            now = time.monotonic()
            # Anyone on the broker can say "online": answering each at once would let a
            # flood of them make the doorbell re-send its picture in a loop.
            if payload == ONLINE.encode() and now - self._last_birth >= BIRTH_MIN_INTERVAL_S:
                self._last_birth = now
                self.counters["births"] += 1
                with self._lock:
                    self._publish_all()
            return
        if topic == self.t_snooze_set and payload in (ON.encode(), OFF.encode()):
            with self._lock:
                self._snoozed = payload == ON.encode()
                self._set_state("snooze", ON if self._snoozed else OFF)
                self._set_state("motion", ON if self._motion and not self._snoozed else OFF)
            return
        self.counters["bad_commands"] += 1
        log.warning("ignoring %d bytes on %s", len(payload), topic)


class SnapshotTap:
    """The camera as the controller sees it, handing each snapshot to ``on_snapshot`` too.

    The controller takes a snapshot only for a press, right after it emitted ``ring``,
    so the JPEG it gets (masks applied by the backend) is the press's picture.
    """

    def __init__(self, camera: CameraBackend, on_snapshot: Callable[[bytes], None]) -> None:
        self._camera = camera
        self._on_snapshot = on_snapshot

    def snapshot_jpeg(self) -> bytes:
        jpeg = self._camera.snapshot_jpeg()
        try:
            self._on_snapshot(jpeg)
        except Exception:  # the picture for Home Assistant must never cost the clip its own
            log.exception("passing the snapshot on failed")
        return jpeg

    def __getattr__(self, name: str) -> Any:
        return getattr(self._camera, name)
