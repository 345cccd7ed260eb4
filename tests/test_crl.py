"""Revoking a certificate doorbell cuts it off (issue 10's leftover).

A real Mosquitto TLS listener with the relay CA's ``crlfile``; ``relay devices
revoke|rotate --cert`` through the real CLI.  A revoked certificate is refused at the
TLS handshake (the broker's alert, read from the error), a connected one is cut off
at once, other doorbells keep their connection, the CRL verifies under the CA and
survives restarts, and a doorbell re-provisioned with a new certificate (same CN,
new serial) connects while its old certificate stays out.
"""

from __future__ import annotations

import datetime
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from stack import wait_for

from protocol import Event, encode, new_id, utcnow
from relay.broker import TlsListener
from relay.ca import DeviceCA
from relay.passwd import reload_broker
from testing.localstack import LocalMosquitto, LocalRedis, free_port


class Relay:
    """A relay config whose [mosquitto] and [broker] are the TLS broker's."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder
        self.ca_dir = folder / "ca"
        self.tls_port = free_port()
        self.ca = DeviceCA(self.ca_dir)
        crt, key = self.ca.issue_server("127.0.0.1")
        (folder / "server.crt").write_text(crt)
        (folder / "server.key").write_text(key)
        self.broker = LocalMosquitto(
            folder / "mqtt",
            tls=TlsListener(
                self.tls_port,
                self.ca.cert_file,
                folder / "server.crt",
                folder / "server.key",
                self.ca.crl_file,
            ),
        )
        (folder / "relay-pw").write_text("relay-pw")
        self.broker.add_user("relay", "relay-pw")
        self.broker.start()
        self.redis = LocalRedis(folder / "redis").start()
        self.config = folder / "relay.toml"
        self.config.write_text(
            f"""
[broker]
port = {self.broker.relay_port}
password_file = "{folder / "relay-pw"}"

[redis]
url = "{self.redis.url}"

[mosquitto]
password_file = "{self.broker.password_file}"
pid_file = "{self.broker.pid_file}"

[audit]
key_file = "{folder / "audit.key"}"

[provisioning]
bundles_dir = "{folder / "bundles"}"
broker_host = "127.0.0.1"
tls_port = {self.tls_port}
ca_dir = "{self.ca_dir}"
"""
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """One ``relay`` command: a fresh process, as an operator runs it."""
        r = subprocess.run(
            [sys.executable, "-m", "relay.cli", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        return r

    def certificate(self, device: str, *rest: str) -> Path:
        """Register (or with ``rotate`` re-provision) ``device`` with a certificate;
        its TLS files as the doorbell would install them."""
        if rest:
            r = self.cli("devices", *rest, device, "--cert")
            bundle = self.dir / "bundles" / f"{device}.json"
        else:
            r = self.cli(
                "devices", "add", device, "--owner", "A", "--lat", "51.5", "--lon", "-0.1",
                "--cert", "--json",
            )  # fmt: skip
            bundle = Path(json.loads(r.stdout)["bundle"])
        tls = json.loads(bundle.read_text())["broker"]["tls"]
        out = self.dir / f"{device}-{len(list(self.dir.glob(device + '-*')))}"
        out.mkdir()
        for name in ("ca", "cert", "key"):
            (out / name).write_text(tls[name])
        return out

    def close(self) -> None:
        self.broker.stop()
        self.redis.stop()


@pytest.fixture
def relay(tmp_path):
    r = Relay(tmp_path)
    yield r
    r.close()


class Doorbell:
    """A certificate client that records how its connection ended."""

    def __init__(self, files: Path, port: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.tls_set(
            ca_certs=str(files / "ca"), certfile=str(files / "cert"), keyfile=str(files / "key")
        )
        self.connected = threading.Event()
        self.dropped = threading.Event()
        self.reason: object = None
        self.acks: list[int] = []

        def on_disconnect(_c, _u, _f, rc, _p) -> None:
            self.reason = rc
            self.dropped.set()

        self.client.on_connect = lambda *_: self.connected.set()
        self.client.on_disconnect = on_disconnect
        self.client.on_publish = lambda _c, _u, _m, rc, _p: self.acks.append(rc.value)
        # Its first handshake happens here, synchronously: a refusal raises.
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.connected.wait(10), "the TLS handshake passed but no CONNACK"

    def ring(self, device: str) -> None:
        n = len(self.acks)
        msg = Event(id=new_id(), ts=utcnow(), device=device, type="ring", at=utcnow())
        self.client.publish(*encode(msg), qos=1)
        wait_for(lambda: len(self.acks) > n, 10, "PUBACK")
        assert self.acks[-1] < 0x80, self.acks  # 0x10: accepted, nobody subscribed

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# MQTT 3.1.1 CONNECT: clean session, keepalive 10 s, empty client id (the listener
# makes the certificate's CN the client id).
CONNECT = bytes.fromhex("100c00044d5154540402000a0000")


def handshake_error(files: Path, port: int) -> str | None:
    """The error a new TLS connection with these files meets (None: it got a CONNACK).

    TLS 1.2 (the listener's ``tls_version``): the broker checks the client's
    certificate inside the handshake and answers a bad one with an alert naming the
    reason ("certificate revoked"), which ``ssl`` raises.  (Mosquitto 2.0's
    ``tls_version`` is a minimum; under TLS 1.3 it closes without an alert the client
    can read.)  A good certificate reads a CONNACK instead: either way the outcome is
    an answer from the broker, not a timeout."""
    ctx = ssl.create_default_context(cafile=str(files / "ca"))
    ctx.load_cert_chain(str(files / "cert"), str(files / "key"))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(CONNECT)
                connack = tls.recv(4)
        except ssl.SSLError as err:
            return str(err)
    assert connack[:1] == b"\x20", connack  # CONNACK
    return None


def test_a_revoked_doorbell_is_cut_off_and_refused_and_others_are_not(relay):
    front = relay.certificate("front-door")
    back = relay.certificate("back-door")
    front_bell = Doorbell(front, relay.tls_port)
    back_bell = Doorbell(back, relay.tls_port)
    front_bell.ring("front-door")

    r = relay.cli("devices", "revoke", "front-door")
    assert "1 certificate(s) in the CRL" in r.stdout and "could not" not in r.stdout, r.stdout

    # Connected: the broker ends its connection (the relay takes its session over;
    # Mosquitto 2.0.11 just closes the socket, without a 0x8E DISCONNECT). Without
    # that, SIGHUP alone leaves it connected: the CRL is checked only at handshakes.
    assert front_bell.dropped.wait(10), "a connected revoked doorbell stayed online"
    front_bell.stop()
    # Its next connection does not get past the handshake.
    err = handshake_error(front, relay.tls_port)
    assert err is not None and "certificate revoked" in err, err

    # The other doorbell never noticed: same connection, still publishing; it reconnects.
    assert not back_bell.dropped.is_set()
    back_bell.ring("back-door")
    back_bell.stop()
    assert handshake_error(back, relay.tls_port) is None

    # The CRL is signed by the CA, names front-door's certificate and not back-door's.
    crl = relay.ca.crl()
    assert crl.is_signature_valid(relay.ca._cert.public_key())
    serials = {e["cn"]: int(e["serial"], 16) for e in relay.ca.issued()}
    assert crl.get_revoked_certificate_by_serial_number(serials["front-door"]) is not None
    assert crl.get_revoked_certificate_by_serial_number(serials["back-door"]) is None
    assert crl.next_update_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(
        days=365 * 9
    ), "an expired CRL would lock every doorbell out"
    openssl = shutil.which("openssl")
    if openssl:
        v = subprocess.run(
            [openssl, "crl", "-in", str(relay.ca.crl_file), "-CAfile", str(relay.ca.cert_file),
             "-noout", "-verify"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert v.returncode == 0 and "verify OK" in v.stderr + v.stdout, v.stderr

    # A broker restart (it reads the CRL file at start) and a relay restart (each CLI
    # call is a new process, and this one revokes another doorbell): still refused.
    relay.broker.stop()
    relay.broker.start()
    relay.certificate("side-door")
    relay.cli("devices", "revoke", "side-door")
    reread = x509.load_pem_x509_crl(relay.ca.crl_file.read_bytes())
    assert reread.get_revoked_certificate_by_serial_number(serials["front-door"]) is not None
    err = handshake_error(front, relay.tls_port)
    assert err is not None and "certificate revoked" in err, err
    assert handshake_error(back, relay.tls_port) is None


def test_a_doorbell_re_provisioned_with_a_new_certificate_connects_and_the_old_is_out(relay):
    old = relay.certificate("front-door")
    old_bell = Doorbell(old, relay.tls_port)
    new = relay.certificate("front-door", "rotate")

    # The old certificate's session is cut and cannot come back, not even to take over
    # the new certificate's session (same CN, so the same forced client id).
    assert old_bell.dropped.wait(10), "the old certificate stayed online"
    old_bell.stop()
    err = handshake_error(old, relay.tls_port)
    assert err is not None and "certificate revoked" in err, err
    new_bell = Doorbell(new, relay.tls_port)
    new_bell.ring("front-door")
    err = handshake_error(old, relay.tls_port)
    assert err is not None and "certificate revoked" in err, err
    assert not new_bell.dropped.is_set(), "the old certificate kicked the new one"
    new_bell.ring("front-door")
    new_bell.stop()


def test_two_revocations_in_one_second_both_reach_the_broker(relay):
    """Two CRLs signed within one second (same lastUpdate, which must not be in the
    future): the broker's reload still takes the newer one."""
    a, b = relay.certificate("door-a"), relay.certificate("door-b")
    frozen = datetime.datetime.now(datetime.UTC)
    ca = DeviceCA(relay.ca_dir, now=lambda: frozen)
    for device, files in (("door-a", a), ("door-b", b)):
        assert ca.revoke_client(device)
        assert ca.crl().last_update_utc <= frozen
        assert reload_broker(relay.broker.pid_file)
        # The reload is asynchronous: wait until the broker refuses (bounded; a broker
        # that never refuses fails the test).
        wait_for(
            lambda f=files: "certificate revoked" in (handshake_error(f, relay.tls_port) or ""),
            10,
            f"{device} refused",
        )
    assert handshake_error(relay.certificate("door-c"), relay.tls_port) is None


def test_the_crl_always_outlives_every_certificate_and_is_readable_by_the_broker(tmp_path):
    """An expired CRL would make the broker refuse every doorbell: re-signing on each
    issue keeps nextUpdate past the newest certificate's expiry.  The CA's index and
    CRL are files, so a new CA object (a relay restart) continues them."""
    clock = [datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)]
    ca = DeviceCA(tmp_path / "ca", now=lambda: clock[0])
    ca.issue_client("front-door")
    ca.revoke_client("front-door")
    clock[0] += datetime.timedelta(days=5 * 365)
    again = DeviceCA(tmp_path / "ca", now=lambda: clock[0])
    pem, _ = again.issue_client("back-door")
    cert = x509.load_pem_x509_certificate(pem.encode())
    crl = again.crl()
    assert crl.next_update_utc >= cert.not_valid_after_utc
    assert len(crl) == 1 and crl.is_signature_valid(again._cert.public_key())
    assert [e["cn"] for e in again.issued() if e["revoked"]] == ["front-door"]
    assert again.revoke_client("front-door") == [], "revoking twice changes nothing"
    assert ca.crl_file.stat().st_mode & 0o777 == 0o644, "the broker's user reads it"
    assert (tmp_path / "ca" / "ca.key").stat().st_mode & 0o777 == 0o600


def test_concurrent_relay_commands_lose_no_certificate(tmp_path):
    """Two ``relay devices`` commands at once each read, change and rewrite the CA's
    index: without the CA's lock one of them would drop the other's entry."""
    DeviceCA(tmp_path / "ca")
    names = [f"door-{i}" for i in range(12)]
    threads = [
        threading.Thread(target=lambda n=n: DeviceCA(tmp_path / "ca").issue_client(n))
        for n in names
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e["cn"] for e in DeviceCA(tmp_path / "ca").issued()) == sorted(names)
