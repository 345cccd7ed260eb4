"""Identity is bound to the account at the broker: no client-id takeover (issue 10).

Real Mosquitto with the project's config: doorbell listeners replace the client id
with the account name (``use_username_as_clientid``); the relay's processes use a
listener of their own whose password file has only relay accounts.  Refusals are
read from the protocol's own answers: CONNACK, SUBACK and PUBACK reason codes.
"""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from stack import wait_for

from protocol import Event, Status, encode, new_id, utcnow


def _connect(stack, user: str, client_id: str, port: int, will: bool = False) -> tuple:
    """A client as ``user`` asking for ``client_id``; its CONNACK and its disconnects."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, (stack.secrets / user).read_text())
    connack: list[mqtt.ReasonCode] = []
    drops: list[object] = []
    c.on_connect = lambda _c, _u, _f, rc, _p: connack.append(rc)
    c.on_disconnect = lambda _c, _u, _f, rc, _p: drops.append(rc)
    if will:
        offline = Status(id=new_id(), ts=utcnow(), device=user, state="offline", firmware="victim")
        c.will_set(*encode(offline), qos=1, retain=True)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    wait_for(lambda: connack, 10, f"CONNACK for {user} as {client_id}")
    return c, connack[0], drops


def _ring(device: str) -> tuple[str, bytes]:
    return encode(Event(id=new_id(), ts=utcnow(), device=device, type="ring", at=utcnow()))


def test_a_doorbell_cannot_take_over_another_doorbells_client_id(stack):
    stack.add_device("front-door")
    stack.add_device("attacker")
    watched: list[tuple[str, bytes]] = []
    relay = stack.client("relay")
    relay.on_message = lambda _c, _u, m: watched.append((m.topic, m.payload))
    relay.subscribe("doorbell/front-door/#", qos=1)
    wait_for(lambda: relay.is_connected(), 5, "the watcher")

    victim, rc, victim_drops = _connect(stack, "front-door", "front-door", stack.broker.port, True)
    assert not rc.is_failure
    attacker, rc, _ = _connect(stack, "attacker", "front-door", stack.broker.port, will=False)
    # Accepted, but as itself: the broker replaced the requested id with the account name.
    assert not rc.is_failure

    # The victim is still connected: its next publish is acknowledged, and whatever the
    # broker did at the attacker's CONNECT (a will, had it kicked the victim) came first.
    topic, payload = _ring("front-door")
    info = victim.publish(topic, payload, qos=1)
    info.wait_for_publish(10)
    wait_for(lambda: (topic, payload) in watched, 10, "the victim's ring")
    assert victim_drops == [], "the victim was disconnected"
    assert victim.is_connected()
    statuses = [p for t, p in watched if t.endswith("/status")]
    assert statuses == [], f"the victim's last will was fired: {statuses}"

    # And the attacker has no part of the victim's identity: publishing as the victim is
    # refused by PUBACK reason code.  (Mosquitto 2.0's acl_file grants every SUBACK and
    # checks reads at delivery; tests/test_mqtt_relay.py shows commands are not delivered.)
    acks: list[mqtt.ReasonCode] = []
    attacker.on_publish = lambda _c, _u, _mid, rc, _p: acks.append(rc)
    attacker.publish(*_ring("front-door"), qos=1)
    wait_for(lambda: acks, 5, "PUBACK")
    assert acks[0].value == 0x87, acks  # Not authorized
    for c in (victim, attacker, relay):
        c.loop_stop()


def test_a_doorbell_cannot_take_over_a_relay_workers_client_id(stack):
    stack.add_device("attacker")
    stack.add_device("test-bell")
    worker = stack.worker_thread("t1")
    worker_id = worker.client._client_id.decode()

    # On the relay's listener a doorbell account is refused at CONNECT.
    _c, rc, _ = _connect(stack, "attacker", worker_id, stack.broker.relay_port)
    assert rc.is_failure and rc.value in (0x86, 0x87), rc  # bad credentials / not authorised
    _c.loop_stop()
    # On the doorbells' listener it is renamed to itself; the worker is untouched.
    attacker, rc, _ = _connect(stack, "attacker", worker_id, stack.broker.port)
    assert not rc.is_failure

    bell = stack.client("test-bell")
    done = threading.Event()
    bell.publish(*_ring("test-bell"), qos=1).wait_for_publish(10)
    wait_for(
        lambda: stack.index.device("test-bell")["stats"].get("events_indexed") == 1,
        20,
        "the ring indexed by the worker",
    )
    assert worker.connected.is_set()
    assert worker.stats["connects"] == 1, "the worker was kicked and had to reconnect"
    done.set()
    for c in (attacker, bell):
        c.loop_stop()
