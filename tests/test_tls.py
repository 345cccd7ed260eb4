"""The production listener: TLS with client certificates, the certificate's CN as identity."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from stack import wait_for

from firmware.config import MqttConfig
from firmware.mqtt_link import MqttLink
from firmware.outbox import Outbox
from protocol import Event, encode, new_id, utcnow
from relay.broker import TlsListener
from testing.localstack import LocalMosquitto, free_port


def _cert(folder: Path, cn: str, ca: tuple | None, san_ip: str | None = None) -> tuple:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_key, issuer = ca if ca else (key, name)
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), critical=True)
    )
    if san_ip:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san_ip))]),
            critical=False,
        )
    cert = b.sign(issuer_key, hashes.SHA256())
    (folder / f"{cn}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (folder / f"{cn}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, name


@pytest.fixture
def tls_broker(tmp_path):
    ca = _cert(tmp_path, "test-ca", None)
    _cert(tmp_path, "127.0.0.1", ca, san_ip="127.0.0.1")
    for device in ("front-door", "back-door"):
        _cert(tmp_path, device, ca)
    port = free_port()
    broker = LocalMosquitto(
        tmp_path / "mqtt",
        tls=TlsListener(
            port, tmp_path / "test-ca.crt", tmp_path / "127.0.0.1.crt", tmp_path / "127.0.0.1.key"
        ),
    )
    broker.add_user("relay", "relay-pw")
    broker.start()
    yield broker, port, tmp_path
    broker.stop()


def test_a_doorbell_connects_with_its_certificate_and_only_speaks_for_itself(tls_broker):
    broker, port, certs = tls_broker
    relay = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    relay.username_pw_set("relay", "relay-pw")
    got: list[str] = []
    relay.on_message = lambda _c, _u, m: got.append(m.topic)
    relay.connect("127.0.0.1", broker.relay_port)
    relay.subscribe("doorbell/#", qos=1)
    relay.loop_start()

    cfg = MqttConfig(
        enabled=True,
        host="127.0.0.1",
        port=port,
        tls_ca=certs / "test-ca.crt",
        tls_cert=certs / "front-door.crt",
        tls_key=certs / "front-door.key",
    )
    outbox = Outbox(certs / "outbox.sqlite")
    link = MqttLink("front-door", cfg, outbox, on_command=lambda m: None)
    link.start()
    assert link.connected.wait(10), "TLS with a client certificate"
    own = Event(id=new_id(), ts=utcnow(), device="front-door", type="ring", at=utcnow())
    fake = Event(id=new_id(), ts=utcnow(), device="back-door", type="ring", at=utcnow())
    for msg in (fake, own):
        t, p = encode(msg)
        outbox.put(t, p, msg.id)
    wait_for(lambda: "doorbell/front-door/event" in got, 10, "the doorbell's own event")
    time.sleep(0.3)
    assert "doorbell/back-door/event" not in got, "the certificate's CN is the identity"
    link.stop()
    relay.loop_stop()


def test_no_certificate_no_connection(tls_broker):
    _, port, certs = tls_broker
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(certs / "test-ca.crt"), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    c.username_pw_set("front-door")
    connected = threading.Event()
    c.on_connect = lambda _c, _u, _f, rc, _p: None if rc.is_failure else connected.set()
    try:
        c.connect("127.0.0.1", port)
        c.loop_start()
        assert not connected.wait(2)
    except (ssl.SSLError, OSError):
        pass  # refused during the handshake: the expected outcome too
    finally:
        c.loop_stop()
