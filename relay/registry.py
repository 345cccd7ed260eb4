"""The doorbells a relay knows: registering one makes its broker account, its
provisioning bundle, its index entry and an audit entry; revoking undoes the first
three, puts its client certificates in the CA's CRL, ends its connection if it is
online (:func:`cut_off`), and is audited too.

Example::

    result = registry.add("front-door", "alice", 51.5007, -0.1246)
    result.bundle          # Path of the bundle (mode 0600) to copy onto the doorbell
    registry.revoke("front-door")
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.crypto import b64
from protocol.topics import is_device_id
from relay.audit import AuditLog
from relay.config import RelayConfig
from relay.index import DeviceExists, RelayIndex, UnknownDevice
from relay.passwd import reload_broker, remove_user, set_user
from relay.services import BadSetting, Unavailable


@dataclass(frozen=True)
class Registered:
    device: str
    bundle: Path
    broker_reloaded: bool


@dataclass(frozen=True)
class Revoked:
    device: str
    had_account: bool
    broker_reloaded: bool
    certificates: int = 0
    """How many of its client certificates went into the CRL."""
    cut_off: bool = False
    """Whether the broker accepted the relay's takeover of its client id, which ends any
    connection and session it had (see cut_off)."""


def cut_off(cfg: RelayConfig, device: str, timeout: float = 5.0) -> bool:
    """End ``device``'s connection and session at the broker, now.

    Mosquitto checks the CRL only at the TLS handshake; on SIGHUP it re-checks
    connected clients' passwords, but a certificate client is kept (it re-reads the
    CN and nothing else), so a revoked doorbell that is online would stay online.
    Doorbell listeners force the client id to the account name, so the doorbell's
    client id is its device id: the relay connects on its own listener with that
    client id, which makes the broker close the doorbell's connection (session
    takeover; 2.0.11 closes the socket without a DISCONNECT), and leaves with clean
    start and no session
    expiry, so no queued message of the revoked doorbell is kept either.  The
    doorbell's reconnect then meets the new CRL (or the missing password): the caller
    sends SIGHUP first, and as Mosquitto is single-threaded and handles the signal
    before it can accept our connection, the reload is done before any later handshake.
    This needs no broker plugin and leaves every other doorbell connected; a broker
    restart would cut them all.  Returns False if the broker did not accept us.
    """
    import paho.mqtt.client as mqtt

    from common.mqtt import make_client

    done = threading.Event()
    result: dict[str, bool] = {}

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result["ok"] = not rc.is_failure
        done.set()

    client = make_client(cfg.broker, client_id=device, username=cfg.broker.username or "relay")
    client.on_connect = on_connect
    props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    try:
        client.connect(
            cfg.broker.host, cfg.broker.port, keepalive=10, clean_start=True, properties=props
        )
    except OSError:
        return False
    client.loop_start()
    try:
        return done.wait(timeout) and result.get("ok", False)
    finally:
        client.disconnect()
        client.loop_stop()


class DeviceRegistry:
    def __init__(self, cfg: RelayConfig, index: RelayIndex, audit: AuditLog) -> None:
        self.cfg = cfg
        self.index = index
        self.audit = audit

    @staticmethod
    def check_id(device: str) -> None:
        if not is_device_id(device):
            raise BadSetting(
                f"device id {device!r} must be 2-63 lower-case letters, digits or "
                "dashes, starting with a letter or digit, and not 'relay'"
            )

    def add(
        self,
        device: str,
        owner: str,
        lat: float,
        lon: float,
        bundle: Path | None = None,
        cert: bool = False,
    ) -> Registered:
        """Register ``device``; with ``cert``, the bundle also carries a client
        certificate from the relay's CA (CN = device id) for the TLS listener."""
        self.check_id(device)
        if self.index.device(device) is not None:
            raise BadSetting(f"device {device!r} already exists (revoke it first)")
        prov = self.cfg.provisioning
        bundle_path = bundle or prov.bundles_dir / f"{device}.json"
        password = secrets.token_urlsafe(24)
        broker: dict[str, object] = {
            "host": prov.broker_host,
            "port": prov.broker_port,
            "username": device,
            "password": password,
        }
        try:
            if cert:
                from relay.ca import DeviceCA

                ca = DeviceCA(prov.ca_dir)
                cert_pem, key_pem = ca.issue_client(device)
                broker["port"] = prov.tls_port
                broker["tls"] = {"ca": ca.cert_pem(), "cert": cert_pem, "key": key_pem}
            bundle_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(bundle_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(
                    {
                        "device": device,
                        "owner": owner,
                        "lat": lat,
                        "lon": lon,
                        "broker": broker,
                        # The doorbell witnesses the public log with this key pinned.
                        "log": {
                            "relay_url": self.cfg.api.public_url,
                            "key": b64(self.audit.public),
                        },
                    },
                    f,
                    indent=2,
                )
            set_user(self.cfg.mosquitto.password_file, device, password)
        except OSError as err:
            raise Unavailable(f"cannot write credentials: {err}") from None
        try:
            self.index.add_device(device, owner, lat, lon)
        except DeviceExists:
            raise BadSetting(f"device {device!r} already exists") from None
        reloaded = reload_broker(self.cfg.mosquitto.pid_file)
        self.audit.append(
            "device_registered",
            "operator",
            {"device": device, "owner": owner, "lat": lat, "lon": lon},
        )
        return Registered(device, bundle_path, reloaded)

    def revoke(self, device: str) -> Revoked:
        try:
            self.index.revoke_device(device)
        except UnknownDevice:
            raise BadSetting(f"no device {device!r}") from None
        removed = remove_user(self.cfg.mosquitto.password_file, device)
        serials: list[int] = []
        ca_dir = self.cfg.provisioning.ca_dir
        if (ca_dir / "ca.crt").exists():  # no CA, no certificate to revoke (never make one)
            from relay.ca import DeviceCA

            try:
                serials = DeviceCA(ca_dir).revoke_client(device)
            except OSError as err:
                raise Unavailable(f"cannot write the CRL: {err}") from None
        # The reload comes first, so the doorbell's reconnect after the cut meets the new
        # CRL and password file.
        reloaded = reload_broker(self.cfg.mosquitto.pid_file)
        ended = cut_off(self.cfg, device)
        self.audit.append("device_revoked", "operator", {"device": device})
        return Revoked(device, removed, reloaded, len(serials), ended)

    def rotate(self, device: str, bundle: Path | None = None, cert: bool = False) -> Registered:
        """A new broker password for ``device`` (the old one stops working at the broker's
        reload) and a new provisioning bundle to copy onto the doorbell (audited).

        With ``cert`` the bundle also carries a new client certificate, and the device's
        earlier certificates are revoked first (same CN, other serials: the CRL names
        serials, so the new one stays good) and their session is cut off."""
        info = self.index.device(device)
        if info is None or info.get("revoked", "0") != "0":
            raise BadSetting(f"no device {device!r} (or it is revoked)")
        prov = self.cfg.provisioning
        bundle_path = bundle or prov.bundles_dir / f"{device}.json"
        password = secrets.token_urlsafe(24)
        broker: dict[str, object] = {
            "host": prov.broker_host,
            "port": prov.broker_port,
            "username": device,
            "password": password,
        }
        try:
            if cert:
                from relay.ca import DeviceCA

                ca = DeviceCA(prov.ca_dir)
                ca.revoke_client(device)
                cert_pem, key_pem = ca.issue_client(device)
                broker["port"] = prov.tls_port
                broker["tls"] = {"ca": ca.cert_pem(), "cert": cert_pem, "key": key_pem}
            bundle_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(bundle_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(
                    {
                        "device": device,
                        "owner": info.get("owner"),
                        "lat": float(info.get("lat", 0)),
                        "lon": float(info.get("lon", 0)),
                        "broker": broker,
                        "log": {
                            "relay_url": self.cfg.api.public_url,
                            "key": b64(self.audit.public),
                        },
                    },
                    f,
                    indent=2,
                )
            set_user(self.cfg.mosquitto.password_file, device, password)
        except OSError as err:
            raise Unavailable(f"cannot write credentials: {err}") from None
        reloaded = reload_broker(self.cfg.mosquitto.pid_file)
        if cert:
            cut_off(self.cfg, device)  # the old certificate's session, if it is online
        self.audit.append(
            "operator_action", "operator", {"action": "device_rotated", "device": device}
        )
        return Registered(device, bundle_path, reloaded)
