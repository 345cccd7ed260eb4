"""Doorbell certificates from the relay's CA, end to end (issue 10).

``relay devices add --cert`` issues a client certificate (CN = device id) from the
relay's CA; the bundle carries it; ``doorbell provision`` installs it; the
provisioned doorbell connects to the real Mosquitto TLS listener as itself.
Another doorbell's certificate speaks only for that other doorbell (PUBACK 0x87),
and a certificate from another CA does not get past the handshake.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from stack import wait_for

from firmware.config import load_config
from firmware.mqtt_link import MqttLink
from firmware.outbox import Outbox
from protocol import Event, encode, new_id, utcnow
from protocol.crypto import OwnerKeys
from relay.broker import TlsListener
from relay.ca import DeviceCA
from testing.localstack import LocalMosquitto, free_port


def _relay_cli(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _tls_client(ca, cert, key, port: int) -> tuple[mqtt.Client, list]:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
    acks: list = []
    c.on_publish = lambda _c, _u, _m, rc, _p: acks.append(rc)
    done = threading.Event()
    c.on_connect = lambda *_: done.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert done.wait(10)
    return c, acks


def test_a_provisioned_doorbell_connects_with_its_certificate(stack, tmp_path):
    ca_dir = tmp_path / "ca"
    tls_port = free_port()
    with open(stack.config_file, "a") as f:
        f.write(f'ca_dir = "{ca_dir}"\ntls_port = {tls_port}\nbroker_host = "127.0.0.1"\n')
    # The broker's TLS listener trusts the relay's CA, which also signs its certificate.
    ca = DeviceCA(ca_dir)
    server_crt, server_key = ca.issue_server("127.0.0.1")
    (tmp_path / "server.crt").write_text(server_crt)
    (tmp_path / "server.key").write_text(server_key)
    broker = LocalMosquitto(
        tmp_path / "tls-mqtt",
        tls=TlsListener(tls_port, ca.cert_file, tmp_path / "server.crt", tmp_path / "server.key"),
    )
    broker.add_user("relay", (stack.secrets / "relay").read_text())
    broker.start()
    try:
        bundles = {}
        for device in ("front-door", "back-door"):
            r = _relay_cli(
                stack.config_file, "devices", "add", device, "--owner", "A",
                "--lat", "51.5", "--lon", "-0.1", "--cert", "--json",
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            bundles[device] = json.loads(r.stdout)["bundle"]
        bundle = json.loads(Path(bundles["front-door"]).read_text())
        assert (
            bundle["broker"]["port"] == tls_port
            and "BEGIN CERTIFICATE" in bundle["broker"]["tls"]["cert"]
        )

        owner = tmp_path / "owner"
        OwnerKeys.generate().save(owner)
        boot = tmp_path / "boot"
        boot.mkdir()
        # A card as Raspberry Pi Imager leaves it (Bookworm), and a stand-in wheel:
        # provisioning copies the wheel, it does not look inside.
        (boot / "firstrun.sh").write_text("#!/bin/bash\nset +e\nrm -f /boot/firstrun.sh\nexit 0\n")
        wheel = tmp_path / "open_doorbell-0.1.0-py3-none-any.whl"
        wheel.write_bytes(b"PK stand-in")
        p = subprocess.run(
            [sys.executable, "-m", "firmware.cli", "provision", "--bundle", bundles["front-door"],
             "--boot", str(boot), "--owner-keys", str(owner), "--wheel", str(wheel)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        installed = boot / "doorbell"
        assert (installed / "client.key").stat().st_mode & 0o777 == 0o600
        cfg = load_config(installed / "doorbell.toml")
        assert cfg.mqtt.tls_cert == installed / "client.crt"

        watched: list[str] = []
        relay = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        relay.username_pw_set("relay", (stack.secrets / "relay").read_text())
        relay.on_message = lambda _c, _u, m: watched.append(m.topic)
        relay.connect("127.0.0.1", broker.relay_port)
        relay.subscribe("doorbell/+/event", qos=1)
        relay.loop_start()

        outbox = Outbox(tmp_path / "outbox.sqlite")
        link = MqttLink("front-door", cfg.mqtt, outbox, on_command=lambda m: None)
        link.start()
        assert link.connected.wait(10), "the provisioned doorbell connects over TLS"
        ring = Event(id=new_id(), ts=utcnow(), device="front-door", type="ring", at=utcnow())
        outbox.put(*encode(ring), ring.id)
        wait_for(lambda: "doorbell/front-door/event" in watched, 10, "its ring at the relay")

        # Another doorbell's certificate is that doorbell: publishing as front-door is refused.
        back = json.loads(Path(bundles["back-door"]).read_text())["broker"]["tls"]
        (tmp_path / "back.crt").write_text(back["cert"])
        (tmp_path / "back.key").write_text(back["key"])
        c, acks = _tls_client(
            installed / "ca.crt", tmp_path / "back.crt", tmp_path / "back.key", tls_port
        )
        c.publish(
            *encode(Event(id=new_id(), ts=utcnow(), device="front-door", type="ring", at=utcnow())),
            qos=1,
        )
        wait_for(lambda: acks, 10, "PUBACK")
        assert acks[0].value == 0x87, acks
        c.loop_stop()

        # A certificate from another CA does not get past the TLS handshake.
        other = DeviceCA(tmp_path / "other-ca")
        crt, key = other.issue_client("front-door")
        (tmp_path / "forged.crt").write_text(crt)
        (tmp_path / "forged.key").write_text(key)
        forged = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        forged.tls_set(ca_certs=str(installed / "ca.crt"), certfile=str(tmp_path / "forged.crt"),
                       keyfile=str(tmp_path / "forged.key"))  # fmt: skip
        refused = False
        try:
            forged.connect("127.0.0.1", tls_port)
            rc = forged.loop(timeout=2.0)
            refused = rc != mqtt.MQTT_ERR_SUCCESS or not forged.is_connected()
        except (ssl.SSLError, OSError):
            refused = True
        assert refused, "a certificate from another CA was accepted"
        assert link.connected.is_set(), "and the real front-door stayed connected"
        link.stop()
        relay.loop_stop()
    finally:
        broker.stop()
