"""The doorbell speaks Home Assistant on the owner's broker (issue 16), on real Mosquittos.

A paho client logged in as ``ha`` plays Home Assistant: it subscribes where HA's MQTT
integration subscribes (``<prefix>/#`` for discovery, then the entities' topics) and
sends HA's birth message.  Discovery payloads are checked against the rules of HA's
own source (home-assistant/core, homeassistant/components/mqtt/), transcribed below.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from conftest import small_config
from paho.mqtt.subscribeoptions import SubscribeOptions
from stack import wait_for

from common.mqtt import BrokerSettings, make_client
from firmware.config import ConfigError, HomeAssistantConfig, load_config, parse_config
from firmware.controller import DoorbellEvent
from firmware.local_link import HomeAssistantLink, discovery
from hw_sim.runner import SimDoorbell
from hw_sim.scenes import make_scene
from protocol import decode
from protocol.crypto import OwnerKeys
from testing.homebroker import HomeMosquitto
from testing.localstack import LocalMosquitto, free_port

PREFIX = "homeassistant"

# ----------------------------------------------------------------- HA's rules
# abbreviations.py: the short keys HA expands (root, device and origin scopes) ...
ABBREVIATIONS = {
    "dev": "device",
    "o": "origin",
    "cmps": "components",
    "p": "platform",
    "uniq_id": "unique_id",
    "stat_t": "state_topic",
    "cmd_t": "command_topic",
    "dev_cla": "device_class",
    "unit_of_meas": "unit_of_measurement",
    "stat_cla": "state_class",
    "ent_cat": "entity_category",
    "avty_t": "availability_topic",
    "pl_avail": "payload_available",
    "pl_not_avail": "payload_not_available",
    "pl_on": "payload_on",
    "pl_off": "payload_off",
    "ic": "icon",
}
DEVICE_ABBREVIATIONS = {
    "ids": "identifiers",
    "mf": "manufacturer",
    "mdl": "model",
    "sw": "sw_version",
    "hw": "hw_version",
}
# discovery.py: TOPIC_MATCHER, applied to the topic with "<prefix>/" removed.
TOPIC_MATCHER = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)
# schemas.py: DEVICE_DISCOVERY_SCHEMA (no extra keys), MQTT_ENTITY_DEVICE_INFO_SCHEMA
# (at least one of identifiers/connections), MQTT_ORIGIN_INFO_SCHEMA (name required).
DEVICE_ROOT_KEYS = {
    "device",
    "components",
    "origin",
    "state_topic",
    "command_topic",
    "qos",
    "encoding",
    "availability",
    "availability_mode",
    "availability_topic",
    "availability_template",
    "payload_available",
    "payload_not_available",
}
DEVICE_INFO_KEYS = {
    "identifiers",
    "connections",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "hw_version",
    "serial_number",
    "sw_version",
    "via_device",
    "suggested_area",
    "configuration_url",
}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
# MQTT_ENTITY_COMMON_SCHEMA + MQTT_AVAILABILITY_SCHEMA + MQTT_BASE_SCHEMA, per entity.
COMMON_KEYS = {
    "platform",
    "name",
    "unique_id",
    "icon",
    "entity_category",
    "enabled_by_default",
    "qos",
    "encoding",
    "availability",
    "availability_mode",
    "availability_topic",
    "payload_available",
    "payload_not_available",
    "json_attributes_topic",
    "json_attributes_template",
}
# Each platform's own options (event.py, binary_sensor.py, sensor.py, image.py, switch.py).
PLATFORM_KEYS = {
    "event": {"state_topic", "device_class", "event_types", "value_template"},
    "binary_sensor": {
        "state_topic",
        "device_class",
        "payload_on",
        "payload_off",
        "value_template",
        "expire_after",
        "force_update",
        "off_delay",
    },
    "sensor": {
        "state_topic",
        "device_class",
        "unit_of_measurement",
        "state_class",
        "value_template",
        "expire_after",
        "force_update",
        "suggested_display_precision",
    },
    "image": {"image_topic", "url_topic", "content_type", "image_encoding", "url_template"},
    "switch": {
        "state_topic",
        "command_topic",
        "payload_on",
        "payload_off",
        "state_on",
        "state_off",
        "optimistic",
        "retain",
        "value_template",
        "device_class",
    },
}
# MQTT_RO_SCHEMA requires state_topic; MQTT_RW_SCHEMA command_topic; event event_types.
REQUIRED = {
    "event": {"state_topic", "event_types"},
    "binary_sensor": {"state_topic"},
    "sensor": {"state_topic"},
    "switch": {"command_topic"},
    "image": set(),
}
# EventDeviceClass (event.py), BinarySensorDeviceClass, SwitchDeviceClass: the two
# latter from HA's binary_sensor/switch constants as documented, not re-read here.
DEVICE_CLASSES = {
    "event": {"doorbell", "button", "motion"},
    "binary_sensor": {
        "battery",
        "battery_charging",
        "carbon_monoxide",
        "cold",
        "connectivity",
        "door",
        "garage_door",
        "gas",
        "heat",
        "light",
        "lock",
        "moisture",
        "motion",
        "moving",
        "occupancy",
        "opening",
        "plug",
        "power",
        "presence",
        "problem",
        "running",
        "safety",
        "smoke",
        "sound",
        "tamper",
        "update",
        "vibration",
        "window",
    },
    "switch": {"outlet", "switch"},
}
# SensorDeviceClass.DATA_SIZE takes UnitOfInformation; state classes of SensorStateClass
# (HA's sensor constants as documented).
DATA_SIZE_UNITS = {
    "bit", "kbit", "Mbit", "Gbit", "B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB",
    "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB",
}  # fmt: skip
STATE_CLASSES = {"measurement", "total", "total_increasing"}
# Stricter than the source we read: the "config" category is for controls only.
READ_ONLY = {"event", "binary_sensor", "sensor", "image"}


def _expand(d: dict[str, Any], table: dict[str, str]) -> dict[str, Any]:
    return {table.get(k, k): v for k, v in d.items()}


def _topic_ok(t: object, publish: bool = False) -> bool:
    return isinstance(t, str) and len(t) > 0 and "\0" not in t and not (publish and "#" in t)


def ha_problems(topic: str, raw: bytes | str) -> list[str]:
    """What Home Assistant would refuse (or silently drop) in a device discovery message."""
    out: list[str] = []
    if not topic.startswith(f"{PREFIX}/"):
        return [f"{topic}: not under the discovery prefix"]
    m = TOPIC_MATCHER.fullmatch(topic.removeprefix(f"{PREFIX}/"))
    if m is None or m["component"] != "device":
        return [f"{topic}: not a device discovery topic"]
    payload = _expand(json.loads(raw), ABBREVIATIONS)
    for key in payload.keys() - DEVICE_ROOT_KEYS:
        out.append(f"root: {key} is not allowed")
    dev = _expand(payload.get("device") or {}, DEVICE_ABBREVIATIONS)
    if not (dev.get("identifiers") or dev.get("connections")):
        out.append("device: needs identifiers or connections")
    out += [f"device: {k} is not allowed" for k in dev.keys() - DEVICE_INFO_KEYS]
    origin = payload.get("origin")
    if not isinstance(origin, dict) or not isinstance(origin.get("name"), str):
        out.append("origin: name is required")
    else:
        out += [f"origin: {k} is not allowed" for k in origin.keys() - ORIGIN_KEYS]
    comps = payload.get("components")
    if not isinstance(comps, dict) or not comps:
        return [*out, "components: required"]
    ids = []
    for cid, raw_c in comps.items():
        c = _expand(raw_c, ABBREVIATIONS)
        p = c.get("platform")
        if p not in PLATFORM_KEYS:
            out.append(f"{cid}: platform {p!r} is not supported")
            continue
        if set(c) == {"platform"}:
            continue  # a removal
        if not re.fullmatch(r"[a-zA-Z0-9_-]+", cid):
            out.append(f"{cid}: not a valid object id")
        for k in c.keys() - COMMON_KEYS - PLATFORM_KEYS[p]:
            out.append(f"{cid}: {k} is not an option of {p}")
        for k in REQUIRED[p] - c.keys():
            out.append(f"{cid}: {k} is required")
        if "unique_id" not in c:
            out.append(f"{cid}: unique_id is required in device discovery")
        ids.append(c.get("unique_id"))
        dc = c.get("device_class")
        if dc is not None and p in DEVICE_CLASSES and dc not in DEVICE_CLASSES[p]:
            out.append(f"{cid}: device_class {dc!r} is not one of {p}'s")
        if p == "event" and not (
            isinstance(c.get("event_types"), list)
            and all(isinstance(e, str) for e in c["event_types"])
        ):
            out.append(f"{cid}: event_types must be a list of strings")
        if p == "sensor" and dc is not None:
            if dc != "data_size":
                out.append(f"{cid}: unexpected sensor device_class {dc!r}")
            elif c.get("unit_of_measurement") not in DATA_SIZE_UNITS:
                out.append(f"{cid}: unit {c.get('unit_of_measurement')!r} is not for data_size")
        if "state_class" in c and c["state_class"] not in STATE_CLASSES:
            out.append(f"{cid}: state_class {c['state_class']!r}")
        cat = c.get("entity_category")
        if cat is not None and (
            cat not in ("config", "diagnostic") or (cat == "config" and p in READ_ONLY)
        ):
            out.append(f"{cid}: entity_category {cat!r} is not allowed for {p}")
        if p == "image":
            if ("image_topic" in c) == ("url_topic" in c):
                out.append(f"{cid}: exactly one of image_topic, url_topic")
            if "content_type" in c and "url_topic" in c:
                out.append(f"{cid}: content_type cannot go with url_topic")
        for k in ("state_topic", "image_topic", "availability_topic"):
            if k in c and not _topic_ok(c[k]):
                out.append(f"{cid}: {k} is not a valid topic")
        if "command_topic" in c and not _topic_ok(c["command_topic"], publish=True):
            out.append(f"{cid}: command_topic is not a valid publish topic")
        if "qos" in c and c["qos"] not in (0, 1, 2):
            out.append(f"{cid}: qos")
    if len(ids) != len(set(ids)):
        out.append("unique_ids repeat")
    return out


# ----------------------------------------------------------------- helpers


class Subscriber:
    """A paho client that records what it receives, and resubscribes after a reconnect."""

    def __init__(self, port: int, user: str, password_file: Path, topics: list[str]) -> None:
        settings = BrokerSettings(port=port, password_file=password_file)
        self.client = make_client(settings, client_id=f"{user}-{os.getpid()}", username=user)
        self.messages: list[tuple[str, bytes, bool, int]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()

        # Retain-as-published: the retain flag arrives as the doorbell set it.
        options = SubscribeOptions(qos=1, retainAsPublished=True)

        def on_connect(c: mqtt.Client, *_: Any) -> None:
            c.subscribe([(t, options) for t in topics])

        def on_message(_c: mqtt.Client, _u: Any, m: mqtt.MQTTMessage) -> None:
            with self._lock:
                self.messages.append((m.topic, m.payload, bool(m.retain), m.qos))

        self.client.on_connect = on_connect
        self.subscribes = 0

        def on_subscribe(*_: Any) -> None:
            self.subscribes += 1
            subscribed.set()

        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_for(subscribed.is_set, 10, f"{user} to subscribe")

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _, _ in self.messages if t == topic]

    def retained(self, topic: str) -> list[bool]:
        with self._lock:
            return [r for t, _, r, _ in self.messages if t == topic]

    def qos(self, topic: str) -> list[int]:
        """The QoS each message arrived with: the lower of the publisher's and ours (1)."""
        with self._lock:
            return [q for t, _, _, q in self.messages if t == topic]

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def publish(self, topic: str, payload: bytes | str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def back_with(broker: LocalMosquitto, password: str, sub: Subscriber) -> None:
    """Start ``broker`` again, letting the doorbell in only once ``sub`` has subscribed again.

    Mosquitto 2.0.11 does not bring persistent sessions back over a restart, so whatever
    the doorbell sent before the subscriber returned would be lost to it, whoever won the
    race; a refused login holds the doorbell out (it keeps retrying) until then.
    """
    n = sub.subscribes
    broker.add_user("test-bell", "not-yet")  # the broker is down: only its file changes
    broker.start()
    wait_for(lambda: sub.subscribes > n, 15, "the subscriber to come back")
    broker.add_user("test-bell", password)  # reloaded: the doorbell gets in


@pytest.fixture
def home(tmp_path: Path):
    broker = HomeMosquitto(tmp_path / "home").start()
    for user in ("ha", "test-bell"):
        broker.add_user(user, f"pw-{user}")
        (tmp_path / f"home-{user}.pw").write_text(f"pw-{user}")
    yield broker
    broker.stop()


@pytest.fixture
def ha(home: HomeMosquitto, tmp_path: Path):
    sub = Subscriber(home.port, "ha", tmp_path / "home-ha.pw", [f"{PREFIX}/#", "open-doorbell/#"])
    yield sub
    sub.close()


def ha_section(tmp_path: Path, port: int, **kw: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "port": port,
        "password_file": str(tmp_path / "home-test-bell.pw"),
        "backoff_min_s": 0.1,
        "backoff_max_s": 0.5,
        **kw,
    }


def owner_section(owner: OwnerKeys) -> dict[str, str]:
    return {
        "sign_public": base64.b64encode(owner.sign_public).decode(),
        "box_public": base64.b64encode(owner.box_public).decode(),
    }


BASE = "open-doorbell/test-bell"
DISCOVERY = f"{PREFIX}/device/test-bell/config"


def rings(sub: Subscriber) -> list[dict[str, Any]]:
    return [json.loads(p) for p in sub.on(f"{BASE}/ring")]


# ----------------------------------------------------------------- discovery, unit


@pytest.mark.parametrize("snapshot", [True, False])
@pytest.mark.parametrize("relay", [True, False])
def test_discovery_follows_home_assistants_schema(snapshot: bool, relay: bool) -> None:
    topic, payload = discovery("front-door", PREFIX, "b", snapshot=snapshot, relay=relay)
    assert ha_problems(topic, json.dumps(payload)) == []
    comps = payload["cmps"]
    assert comps["ring"]["p"] == "event"
    assert comps["ring"]["device_class"] == "doorbell"
    assert comps["ring"]["event_types"] == ["ring"]
    assert comps["motion"]["device_class"] == "motion"
    assert comps["storage"]["device_class"] == "data_size"
    assert (comps["snapshot"].get("image_topic") is not None) == snapshot
    assert (comps["relay"].get("device_class") == "connectivity") == relay
    assert payload["availability_topic"] == "b/availability"


def test_the_schema_check_catches_what_home_assistant_refuses() -> None:
    topic, good = discovery("front-door", PREFIX, "b", snapshot=True, relay=True)

    def broken(change) -> list[str]:
        p = json.loads(json.dumps(good))
        change(p)
        return ha_problems(topic, json.dumps(p))

    assert broken(lambda p: p["cmps"]["ring"].pop("event_types"))
    assert broken(lambda p: p["cmps"]["ring"].update(device_class="bell"))
    assert broken(lambda p: p["cmps"]["motion"].update(device_class="movement"))
    assert broken(lambda p: p["cmps"]["storage"].update(unit_of_measurement="Mb"))
    assert broken(lambda p: p["cmps"]["storage"].update(entity_category="config"))
    assert broken(lambda p: p["cmps"]["snooze"].pop("command_topic"))
    assert broken(lambda p: p["cmps"]["snapshot"].update(url_topic="x"))
    assert broken(lambda p: p["cmps"]["relay"].pop("unique_id"))
    assert broken(
        lambda p: p["cmps"]["relay"].update(unique_id=good["cmps"]["motion"]["unique_id"])
    )
    assert broken(lambda p: p["cmps"]["motion"].update(stat_topic="typo"))
    assert broken(lambda p: p.update(extra="x"))
    assert broken(lambda p: p["dev"].pop("identifiers"))
    assert broken(lambda p: p.pop("o"))
    assert ha_problems(f"{PREFIX}/device/front door/config", json.dumps(good))


def test_unique_ids_are_the_same_on_every_start(tmp_path: Path) -> None:
    cfg = HomeAssistantConfig(enabled=True, snapshot_image=True)
    a = HomeAssistantLink("test-bell", cfg, tmp_path, relay_connected=lambda: False)
    b = HomeAssistantLink("test-bell", cfg, tmp_path, relay_connected=lambda: True)
    assert a.discovery_payload == b.discovery_payload
    other = HomeAssistantLink("back-door", cfg, tmp_path)
    ours = {c.get("unique_id") for c in a.discovery_payload["cmps"].values()}
    theirs = {c.get("unique_id") for c in other.discovery_payload["cmps"].values()}
    assert not ours & theirs, "two doorbells on one broker must not share entities"


# ----------------------------------------------------------------- on a real broker


def test_home_assistant_sees_the_device_a_press_and_motion(home, ha, tmp_path, recorder):
    cfg = small_config(
        tmp_path / "bell",
        home_assistant=ha_section(tmp_path, home.port),
        gpio={"pir_pin": 22},
        motion={"source": "pir"},
    )
    bell = SimDoorbell(cfg, make_scene("porch", 320, 240), emit=recorder, start_wall=1.8e9)
    try:
        link = bell.doorbell.home
        assert link is not None
        wait_for(lambda: ha.on(DISCOVERY), 10, "the discovery config")
        disc = json.loads(ha.on(DISCOVERY)[-1])
        assert ha_problems(DISCOVERY, ha.on(DISCOVERY)[-1]) == []
        wait_for(lambda: ha.on(f"{BASE}/availability")[-1:] == [b"online"], 10, "online")
        assert disc["availability_topic"] == f"{BASE}/availability"

        bell.schedule_press(1.0)
        bell.schedule_pir(4.0, 2.0)
        bell.run(9.0)
        ring_ev = recorder.of("ring")
        assert len(ring_ev) == 1
        event_topic = disc["cmps"]["ring"]["state_topic"]
        wait_for(lambda: ha.on(event_topic), 10, "the press as an event")
        (ring,) = [json.loads(p) for p in ha.on(event_topic)]
        assert ring["event_type"] == "ring" and ring["id"] == ring_ev[0].id
        # HA ignores events replayed from a retained message (event.py): never retain.
        assert ha.retained(event_topic) == [False]
        assert ha.qos(event_topic) == [1], "a press is sent at least once, not at most once"
        motion_topic = disc["cmps"]["motion"]["state_topic"]
        wait_for(lambda: ha.on(motion_topic)[-2:] == [b"ON", b"OFF"], 10, "motion on, then off")
        assert ha.on(disc["cmps"]["storage"]["state_topic"])[-1].replace(b".", b"").isdigit()
        # Nothing of the relay's when there is no relay; no picture unless enabled.
        assert disc["cmps"]["relay"] == {"p": "binary_sensor"}
        assert disc["cmps"]["snapshot"] == {"p": "image"}
        assert all(p == b"" for p in ha.on(f"{BASE}/snapshot"))
    finally:
        bell.close()
    wait_for(lambda: ha.on(f"{BASE}/availability")[-1:] == [b"offline"], 10, "offline on close")


def test_discovery_is_sent_again_when_home_assistant_restarts(home, ha, tmp_path, recorder):
    cfg = small_config(tmp_path / "bell", home_assistant=ha_section(tmp_path, home.port))
    bell = SimDoorbell(cfg, make_scene("porch", 320, 240), emit=recorder)
    try:
        wait_for(lambda: ha.on(DISCOVERY), 10, "the discovery config")
        wait_for(lambda: ha.on(f"{BASE}/motion"), 10, "the states")
        ha.clear()
        ha.publish(f"{PREFIX}/status", "offline")  # HA's will: nothing to do
        # A barrier: the doorbell handles its messages in order, so once the snooze
        # state comes back, the "offline" has been dealt with.
        ha.publish(f"{BASE}/snooze/set", "ON")
        wait_for(lambda: ha.on(f"{BASE}/snooze") == [b"ON"], 10, "the barrier")
        assert ha.on(DISCOVERY) == [], "HA going offline is no reason to re-send"
        ha.publish(f"{PREFIX}/status", "online")  # HA's birth message
        wait_for(lambda: ha.on(DISCOVERY), 10, "discovery again after the birth message")
        wait_for(lambda: ha.on(f"{BASE}/motion") == [b"OFF"], 10, "the states again")
        assert ha.retained(DISCOVERY) == [True], "kept for HA's next start too"
        assert bell.doorbell.home.counters["births"] == 1
        # Anyone on the broker can send "online": a flood must not become one of ours.
        ha.clear()
        for _ in range(50):
            ha.client.publish(f"{PREFIX}/status", "online", qos=1)
        ha.publish(f"{BASE}/snooze/set", "OFF")  # a barrier, as above
        wait_for(lambda: ha.on(f"{BASE}/snooze")[-1:] == [b"OFF"], 10, "the barrier")
        assert len(ha.on(DISCOVERY)) <= 1, "at most one re-send per flood"
    finally:
        bell.close()


def test_the_snapshot_image_is_the_masked_press_picture_when_enabled(home, ha, tmp_path):
    left_half = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]
    cfg = small_config(
        tmp_path / "bell",
        home_assistant=ha_section(tmp_path, home.port, snapshot_image=True),
        masks=[{"name": "street", "polygon": left_half}],
    )
    bell = SimDoorbell(cfg, make_scene("porch", 320, 240), emit=lambda ev: None)
    try:
        wait_for(lambda: ha.on(DISCOVERY), 10, "the discovery config")
        disc = json.loads(ha.on(DISCOVERY)[-1])
        image_topic = disc["cmps"]["snapshot"]["image_topic"]
        bell.run(1.0)
        assert not [p for p in ha.on(image_topic) if p], "no picture before a press"
        bell.schedule_press(1.5)
        bell.run(2.0)
        wait_for(lambda: [p for p in ha.on(image_topic) if p], 10, "the press snapshot")
        jpeg = [p for p in ha.on(image_topic) if p][-1]
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
        assert img is not None and img.shape == (240, 320), "a JPEG of the main stream"
        h, w = img.shape
        left = (img[4 : h - 4, 4 : w // 2 - 8].min(), img[4 : h - 4, 4 : w // 2 - 8].max())
        right = (img[4 : h - 4, w // 2 + 8 : w - 4].min(), img[4 : h - 4, w // 2 + 8 : w - 4].max())
        assert left[1] < 24, "the masked half is black"
        assert right[1] > 60, "the rest of the picture is there"
        assert ha.retained(image_topic)[-1] is True, "the latest picture stays on the broker"
    finally:
        bell.close()


def test_snooze_switch_silences_motion_and_ignores_garbage(home, ha, tmp_path, recorder):
    cfg = small_config(
        tmp_path / "bell",
        home_assistant=ha_section(tmp_path, home.port),
        gpio={"pir_pin": 22},
        motion={"source": "pir"},
    )
    bell = SimDoorbell(cfg, make_scene("porch", 320, 240), emit=recorder)
    try:
        link = bell.doorbell.home
        wait_for(lambda: ha.on(DISCOVERY), 10, "the discovery config")
        snooze = json.loads(ha.on(DISCOVERY)[-1])["cmps"]["snooze"]
        ha.publish(snooze["command_topic"], "ON")
        wait_for(lambda: ha.on(snooze["state_topic"])[-1:] == [b"ON"], 10, "snoozed")
        # Anyone on the home broker can write there: junk changes nothing.
        ha.publish(snooze["command_topic"], "off please")
        ha.publish(snooze["command_topic"], b"\xff" * 1000)
        wait_for(lambda: link.counters["bad_commands"] == 2, 10, "the junk to be refused")
        bell.schedule_pir(1.0, 2.0)
        bell.run(5.0)
        assert recorder.kinds().count("motion_start") == 1, "the doorbell still saw motion"
        ha.publish(snooze["command_topic"], "OFF")
        wait_for(lambda: ha.on(snooze["state_topic"])[-1:] == [b"OFF"], 10, "awake")
        assert b"ON" not in ha.on(f"{BASE}/motion"), "no motion alert while snoozed"
        bell.schedule_pir(6.0, 2.0)
        bell.run(5.0)
        wait_for(lambda: ha.on(f"{BASE}/motion")[-2:] == [b"ON", b"OFF"], 10, "alerts again")
    finally:
        bell.close()


def test_availability_goes_offline_when_the_doorbell_dies(home, ha, tmp_path):
    """A real ``doorbell run --sim`` process, killed: only the last will can say so."""
    owner = OwnerKeys.generate()
    o = owner_section(owner)
    conf = tmp_path / "doorbell.toml"
    (tmp_path / "bell.pw").write_text("pw-test-bell")
    conf.write_text(
        f"""
[device]
id = "test-bell"
data_dir = "{tmp_path / "data"}"

[camera]
main_size = [320, 240]
lores_size = [160, 120]

[home_assistant]
enabled = true
port = {home.port}
password_file = "bell.pw"
keepalive_s = 60

[owner]
sign_public = "{o["sign_public"]}"
box_public = "{o["box_public"]}"
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware.cli", "run", "--config", str(conf), "--sim"],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "bell.log", "wb"),  # noqa: SIM115
    )
    try:
        wait_for(lambda: ha.on(f"{BASE}/availability")[-1:] == [b"online"], 30, "online")
        wait_for(lambda: ha.on(DISCOVERY), 10, "the discovery config")
        theirs = json.loads(ha.on(DISCOVERY)[-1])
        ours = HomeAssistantLink("test-bell", HomeAssistantConfig(), tmp_path).discovery_payload
        assert {k: c.get("unique_id") for k, c in theirs["cmps"].items()} == {
            k: c.get("unique_id") for k, c in ours["cmps"].items()
        }, "unique_ids must survive a restart"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: ha.on(f"{BASE}/availability")[-1:] == [b"offline"], 10, "the last will")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------- independence


@pytest.fixture
def relay(tmp_path: Path):
    broker = LocalMosquitto(tmp_path / "relay").start()
    for user in ("relay", "test-bell"):
        broker.add_user(user, f"rpw-{user}")
        (tmp_path / f"relay-{user}.pw").write_text(f"rpw-{user}")
    yield broker
    broker.stop()


def relay_section(tmp_path: Path, port: int) -> dict[str, Any]:
    return {
        "enabled": True,
        "port": port,
        "password_file": str(tmp_path / "relay-test-bell.pw"),
        "backoff_min_s": 0.1,
        "backoff_max_s": 0.5,
    }


def relay_rings(sub: Subscriber) -> list[str]:
    out = []
    for p in sub.on("doorbell/test-bell/event"):
        msg = decode("doorbell/test-bell/event", p)
        if msg.type == "ring":  # type: ignore[attr-defined]
            out.append(msg.id)
    return out


def relay_clips(sub: Subscriber) -> set[str]:
    return {decode("doorbell/test-bell/clip", p).clip_id for p in sub.on("doorbell/test-bell/clip")}  # type: ignore[attr-defined]


def test_with_the_relay_down_presses_still_reach_home_assistant(home, ha, tmp_path, recorder):
    (tmp_path / "relay-test-bell.pw").write_text("x")
    cfg = small_config(
        tmp_path / "bell",
        home_assistant=ha_section(tmp_path, home.port),
        mqtt=relay_section(tmp_path, free_port()),  # nothing listens there
        owner=owner_section(OwnerKeys.generate()),
    )
    bell = SimDoorbell(cfg, make_scene("porch", 320, 240), emit=recorder)
    try:
        wait_for(lambda: ha.on(f"{BASE}/relay")[-1:] == [b"OFF"], 10, "relay shown down")
        bell.schedule_press(1.0)
        bell.run(2.0)
        wait_for(lambda: rings(ha), 10, "the press at home")
        assert rings(ha)[0]["id"] == recorder.of("ring")[0].id
        assert len(bell.doorbell.uplink.outbox) >= 1, "the relay's copy waits in its outbox"
    finally:
        bell.close()


def test_with_home_assistant_down_the_relay_link_is_unaffected(home, ha, relay, tmp_path, recorder):
    """The home broker is down from the start; the relay hears the press at once, and Home
    Assistant when its broker comes back."""
    watcher = Subscriber(
        relay.relay_port, "relay", tmp_path / "relay-relay.pw", ["doorbell/test-bell/#"]
    )
    home.stop()
    cfg = small_config(
        tmp_path / "bell",
        home_assistant=ha_section(tmp_path, home.port),
        mqtt=relay_section(tmp_path, relay.port),
        owner=owner_section(OwnerKeys.generate()),
    )
    bell = SimDoorbell(cfg, make_scene("porch", 320, 240), emit=recorder)
    try:
        wait_for(bell.doorbell.uplink.link.connected.is_set, 10, "the relay link")
        bell.schedule_press(1.0)
        bell.run(2.0)
        wait_for(lambda: relay_rings(watcher), 10, "the press at the relay")
        assert relay_rings(watcher) == [recorder.of("ring")[0].id]
        assert not bell.doorbell.home.connected.is_set()
        assert bell.doorbell.home.counters["queued"] == 1
        back_with(home, "pw-test-bell", ha)
        wait_for(lambda: rings(ha), 30, "the press at home once its broker is back")
        assert [r["id"] for r in rings(ha)] == [recorder.of("ring")[0].id]
    finally:
        bell.close()
        watcher.close()


def test_with_both_down_the_doorbell_rings_keeps_clips_and_sends_all_later(
    home, ha, relay, tmp_path, recorder
):
    watcher = Subscriber(
        relay.relay_port, "relay", tmp_path / "relay-relay.pw", ["doorbell/test-bell/#"]
    )
    cfg = small_config(
        tmp_path / "bell",
        home_assistant=ha_section(tmp_path, home.port),
        mqtt=relay_section(tmp_path, relay.port),
        owner=owner_section(OwnerKeys.generate()),
        gpio={"ring_cooldown_s": 1.0},
        clips={"pre_roll_s": 1.0, "post_roll_s": 1.0},
    )
    bell = SimDoorbell(cfg, make_scene("porch", 320, 240), emit=recorder)
    try:
        d = bell.doorbell
        wait_for(lambda: d.uplink.link.connected.is_set() and d.home.connected.is_set(), 10, "up")
        wait_for(lambda: ha.on(f"{BASE}/relay")[-1:] == [b"ON"], 10, "relay shown up")
        home.stop()
        relay.stop()
        wait_for(lambda: not d.uplink.link.connected.is_set(), 10, "the relay link to notice")
        wait_for(lambda: not d.home.connected.is_set(), 10, "the home link to notice")
        before = len(bell.chime_pin.states)
        bell.schedule_press(1.0)
        bell.schedule_press(4.0)
        bell.run(9.0)
        ring_ids = [e.id for e in recorder.of("ring")]
        assert len(ring_ids) == 2 and d.controller.counters["rings"] == 2
        chimes = [s.state for s in bell.chime_pin.states[before:]]
        assert chimes.count(True) == 2, "the chime rang twice with no network at all"
        assert len(d.store.list()) >= 1, "the clips are kept"
        back_with(home, "pw-test-bell", ha)
        back_with(relay, "rpw-test-bell", watcher)
        wait_for(lambda: [r["id"] for r in rings(ha)] == ring_ids, 30, "both presses at home")
        wait_for(lambda: relay_rings(watcher) == ring_ids, 30, "both presses at the relay")
        kept = {r.id for r in d.store.list()}
        wait_for(lambda: relay_clips(watcher) == kept, 30, "every clip announced to the relay")
        wait_for(lambda: ha.on(f"{BASE}/relay")[-1:] == [b"ON"], 10, "relay shown up again")
    finally:
        bell.close()
        watcher.close()


# ----------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "section, message",
    [
        ({"pending_presses": 0}, "home_assistant.pending_presses"),
        ({"discovery_prefix": "home/#"}, "home_assistant.discovery_prefix"),
        ({"discovery_prefix": "/ha"}, "home_assistant.discovery_prefix"),
        ({"port": 0}, "home_assistant.port"),
        ({"snapshot": True}, "home_assistant.snapshot: unknown key"),
        ({"tls_ca": "ca.crt", "tls_cert": "c.crt"}, "home_assistant.tls_cert needs"),
        ({"backoff_min_s": 5, "backoff_max_s": 1}, "home_assistant.backoff_max_s"),
    ],
)
def test_bad_home_assistant_settings_name_the_key(section, message):
    with pytest.raises(ConfigError) as err:
        parse_config({"home_assistant": section})
    assert message in str(err.value)


def test_the_link_is_off_unless_enabled_and_files_live_beside_the_config(tmp_path):
    assert parse_config({}).home_assistant.enabled is False
    assert parse_config({}).home_assistant.snapshot_image is False
    conf = tmp_path / "d.toml"
    conf.write_text('[home_assistant]\nenabled = true\npassword_file = "pw"\ntls_ca = "/ca"\n')
    cfg = load_config(conf)
    assert cfg.home_assistant.password_file == tmp_path / "pw"
    assert cfg.home_assistant.tls_ca == Path("/ca")


def test_the_documented_acl_is_enough_and_keeps_fake_rings_out(tmp_path, recorder):
    """docs/home-assistant.md's ACL for a shared broker: the doorbell works under it, and
    another account cannot publish a ring in its name (the broker answers "not authorized")."""
    docs = (Path(__file__).parent.parent / "docs" / "home-assistant.md").read_text()
    acl = docs.split("```\nuser doorbell\n", 1)[1].split("```", 1)[0]
    acl = (
        "user test-bell\n"
        + acl.replace("front-door", "test-bell")
        + "\nuser ha\ntopic readwrite #\n"
    )
    with HomeMosquitto(tmp_path / "home", acl=acl) as home:
        for user in ("ha", "test-bell", "mallory"):
            home.add_user(user, f"pw-{user}")
            (tmp_path / f"home-{user}.pw").write_text(f"pw-{user}")
        ha = Subscriber(
            home.port, "ha", tmp_path / "home-ha.pw", [f"{PREFIX}/#", "open-doorbell/#"]
        )
        cfg = small_config(tmp_path / "bell", home_assistant=ha_section(tmp_path, home.port))
        bell = SimDoorbell(cfg, make_scene("porch", 320, 240), emit=recorder)
        try:
            wait_for(lambda: ha.on(DISCOVERY), 10, "discovery under the ACL")
            ha.publish(f"{PREFIX}/status", "online")
            ha.publish(f"{BASE}/snooze/set", "ON")
            wait_for(lambda: ha.on(f"{BASE}/snooze")[-1:] == [b"ON"], 10, "commands under the ACL")
            assert bell.doorbell.home.counters["births"] == 1, "HA's birth message under the ACL"
            bell.schedule_press(1.0)
            bell.run(2.0)
            wait_for(lambda: rings(ha), 10, "the press under the ACL")

            codes: list[int] = []
            settings = BrokerSettings(port=home.port, password_file=tmp_path / "home-mallory.pw")
            mallory = make_client(settings, client_id="mallory", username="mallory")
            mallory.on_publish = lambda _c, _u, _m, rc, _p: codes.append(rc.value)
            mallory.connect("127.0.0.1", home.port)
            mallory.loop_start()
            fake = json.dumps({"event_type": "ring", "id": "x", "at": "now"})
            mallory.publish(f"{BASE}/ring", fake, qos=1)
            mallory.publish(f"{BASE}/snooze/set", "OFF", qos=1)
            wait_for(lambda: len(codes) == 2, 10, "the broker's answers")
            assert codes == [135, 135], "not authorized"
            assert len(rings(ha)) == 1
            mallory.disconnect()
            mallory.loop_stop()
        finally:
            bell.close()
            ha.close()


def test_a_failing_home_link_costs_the_relay_nothing(tmp_path, recorder, monkeypatch):
    for name in ("home-test-bell.pw", "relay-test-bell.pw"):
        (tmp_path / name).write_text("x")
    cfg = small_config(
        tmp_path / "bell",
        home_assistant=ha_section(tmp_path, free_port()),
        mqtt=relay_section(tmp_path, free_port()),
        owner=owner_section(OwnerKeys.generate()),
    )
    bell = SimDoorbell(cfg, make_scene("porch", 320, 240), emit=recorder)
    try:

        def broken(ev: object) -> None:
            raise RuntimeError("the home link is broken")

        monkeypatch.setattr(bell.doorbell.home, "_ring", broken)
        bell.schedule_press(1.0)
        bell.run(2.0)
        assert recorder.kinds().count("ring") == 1, "the sink after it still saw the ring"
        topics = [row.topic for row in bell.doorbell.uplink.outbox.due(10, exclude=set())]
        assert "doorbell/test-bell/event" in topics, "the relay's copy is in its outbox"
    finally:
        bell.close()


# ----------------------------------------------------------------- a hung broker


def event(kind: str, ident: str) -> DoorbellEvent:
    return DoorbellEvent(kind, ident, time.monotonic(), time.time())


@pytest.fixture
def hung(home: HomeMosquitto):
    """Freeze the home broker (a hang, not a clean stop); always thawed at the end."""
    frozen = []

    def freeze() -> None:
        os.kill(home.proc.pid, signal.SIGSTOP)
        frozen.append(True)

    def thaw() -> None:
        os.kill(home.proc.pid, signal.SIGCONT)
        frozen.clear()

    yield freeze, thaw
    if frozen:
        thaw()


def test_after_a_hung_broker_resumes_home_assistant_has_the_latest_state_and_presses_in_order(
    home, ha, hung, tmp_path
):
    """What paho still held from the dead connection must not arrive after the fresh news.

    Motion starts and press A happen while the broker hangs but the link still believes
    it is connected; motion ends and press B happen once the keepalive has noticed.
    """
    freeze, thaw = hung
    cfg = HomeAssistantConfig(
        **ha_section(tmp_path, home.port, keepalive_s=5, backoff_min_s=0.2, backoff_max_s=1.0)
    )
    link = HomeAssistantLink("test-bell", cfg, tmp_path / "data")
    link.start()
    try:
        wait_for(lambda: ha.on(f"{BASE}/motion") == [b"OFF"], 10, "the first states")
        freeze()
        link.on_event(event("motion_start", "m1"))
        link.on_event(event("ring", "A"))
        wait_for(lambda: not link.connected.is_set(), 30, "the keepalive to notice the hang")
        link.on_event(event("motion_end", "m1"))
        link.on_event(event("ring", "B"))
        thaw()
        wait_for(lambda: len(rings(ha)) >= 2, 30, "both presses once the broker resumes")
        # A barrier: the doorbell answers in order, so once the snooze state is back,
        # everything it sent on reconnecting has arrived.
        ha.publish(f"{BASE}/snooze/set", "ON")
        wait_for(lambda: ha.on(f"{BASE}/snooze")[-1:] == [b"ON"], 10, "the barrier")
        assert ha.on(f"{BASE}/motion")[-1] == b"OFF", "the motion Home Assistant shows is over"
        ids = [r["id"] for r in rings(ha)]
        # QoS 1 is at least once: A reached the frozen broker's socket before the link gave
        # up on it, so the broker may deliver it from there and again from the new
        # connection; never after B.
        assert list(dict.fromkeys(ids)) == ["A", "B"] and ids[-1] == "B", ids
        assert ha.on(f"{BASE}/availability")[-1] == b"online"
    finally:
        link.stop()


def test_an_oversized_command_never_reaches_the_doorbell(home, ha, tmp_path):
    """Any account on the home broker can write to the command topic: a payload of many
    megabytes must not be read into the Pi's memory (the broker would forward up to
    256 MB), and must not cost the link its connection."""
    cfg = HomeAssistantConfig(**ha_section(tmp_path, home.port))
    link = HomeAssistantLink("test-bell", cfg, tmp_path / "data")
    seen: list[int] = []
    handle = link._handle
    link._handle = lambda topic, payload: (seen.append(len(payload)), handle(topic, payload))  # type: ignore[method-assign]
    link.start()
    try:
        wait_for(lambda: ha.on(f"{BASE}/snooze") == [b"OFF"], 10, "the first states")
        ha.publish(f"{BASE}/snooze/set", b"O" * 2_000_000)
        ha.publish(f"{BASE}/snooze/set", "ON")  # a barrier: handled after the big one
        wait_for(lambda: ha.on(f"{BASE}/snooze")[-1:] == [b"ON"], 10, "the barrier")
        assert seen == [2], "only the small command reached the doorbell"
        assert link.connected.is_set() and link.counters["connects"] == 1, "never disconnected"
    finally:
        link.stop()


def test_a_retained_snooze_command_does_not_snooze_a_restarted_doorbell(home, ha, tmp_path):
    """Snooze starts off (docs/home-assistant.md): a command left retained on the broker,
    by a careless script or on purpose, must not silence motion after every restart."""
    ha.client.publish(f"{BASE}/snooze/set", "ON", qos=1, retain=True).wait_for_publish(5)
    cfg = HomeAssistantConfig(**ha_section(tmp_path, home.port))
    link = HomeAssistantLink("test-bell", cfg, tmp_path / "data")
    link.start()
    try:
        wait_for(lambda: ha.on(f"{BASE}/availability")[-1:] == [b"online"], 10, "online")
        # A barrier: the broker sends a retained message at SUBSCRIBE, before anything
        # published after the doorbell came online.
        ha.publish(f"{BASE}/snooze/set", "junk")
        wait_for(lambda: link.counters["bad_commands"] == 1, 10, "the barrier")
        assert ha.on(f"{BASE}/snooze") == [b"OFF"], "still awake"
        ha.publish(f"{BASE}/snooze/set", "ON")  # a live command is still obeyed
        wait_for(lambda: ha.on(f"{BASE}/snooze")[-1:] == [b"ON"], 10, "snoozed live")
    finally:
        link.stop()


def test_reconnects_are_jittered_and_a_wrong_password_logs_one_line_per_attempt(
    home, tmp_path, caplog
):
    """Doorbells on a broker that comes back must not all retry at the same instants
    (common/mqtt.py:backoff_delays, as the relay link does); a refused login is one
    warning per attempt, not two."""
    (tmp_path / "wrong.pw").write_text("not the password")
    caplog.set_level("WARNING", logger="firmware.local_link")
    cfg = HomeAssistantConfig(
        **ha_section(tmp_path, home.port, backoff_min_s=0.1, backoff_max_s=0.2),
    ).model_copy(update={"password_file": tmp_path / "wrong.pw"})
    links = [
        HomeAssistantLink("test-bell", cfg, tmp_path / "data", rng=random.Random(seed))
        for seed in (1, 2)
    ]
    for link in links:
        link.start()
    try:
        wait_for(lambda: all(len(k.retry_delays) >= 4 for k in links), 20, "a few retries")
    finally:
        for link in links:
            link.stop()
    first, second = ([round(d, 6) for d in k.retry_delays][:4] for k in links)
    assert first != second, "two doorbells do not retry in step"
    assert all(0.05 <= d <= 0.2 for d in first + second), "within [min/2, max]"
    lines = [r.getMessage() for r in caplog.records if r.name == "firmware.local_link"]
    attempts = sum(len(k.retry_delays) for k in links)
    assert len(lines) == attempts, "one line per failed attempt"
    assert all("refused the login" in line and "retrying in" in line for line in lines)


def test_presses_older_than_the_bound_are_not_sent_late(home, ha, tmp_path):
    """Home Assistant's event entity fires on arrival: a press from long ago, delivered
    after an outage, would ring every automation as if someone were at the door now."""
    now = [1000.0]
    cfg = HomeAssistantConfig(**ha_section(tmp_path, home.port, max_press_age_s=60))
    link = HomeAssistantLink("test-bell", cfg, tmp_path / "data", monotonic=lambda: now[0])
    home.add_user("test-bell", "not-yet")  # the doorbell is kept out for now
    link.start()
    try:
        wait_for(lambda: link.retry_delays, 10, "a refused login")
        link.on_event(event("ring", "old"))
        now[0] += 61
        link.on_event(event("ring", "recent"))
        home.add_user("test-bell", "pw-test-bell")  # reloaded: the doorbell gets in
        wait_for(lambda: rings(ha), 20, "the recent press")
        assert [r["id"] for r in rings(ha)] == ["recent"], "the old one was never sent"
        assert link.counters["expired"] == 1
    finally:
        link.stop()


def test_free_storage_is_sent_again_every_status_every_s(home, ha, tmp_path):
    """Even when it has not changed: the table in docs/home-assistant.md promises it, and
    it is how Home Assistant can tell the figure is current."""
    cfg = HomeAssistantConfig(**ha_section(tmp_path, home.port, status_every_s=1))
    link = HomeAssistantLink("test-bell", cfg, tmp_path / "data")
    link._free_mb = lambda: 123.4  # type: ignore[method-assign]
    link.start()
    try:
        wait_for(lambda: len(ha.on(f"{BASE}/storage")) >= 3, 10, "three storage reports")
        assert set(ha.on(f"{BASE}/storage")) == {b"123.4"}
    finally:
        link.stop()
