"""The doorbells a relay knows: registering one makes its broker account, its
provisioning bundle, its index entry and an audit entry; revoking undoes the first
three and is audited too.

Example::

    result = registry.add("front-door", "alice", 51.5007, -0.1246)
    result.bundle          # Path of the bundle (mode 0600) to copy onto the doorbell
    registry.revoke("front-door")
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

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
        self, device: str, owner: str, lat: float, lon: float, bundle: Path | None = None
    ) -> Registered:
        self.check_id(device)
        if self.index.device(device) is not None:
            raise BadSetting(f"device {device!r} already exists (revoke it first)")
        prov = self.cfg.provisioning
        bundle_path = bundle or prov.bundles_dir / f"{device}.json"
        password = secrets.token_urlsafe(24)
        try:
            bundle_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(bundle_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(
                    {
                        "device": device,
                        "owner": owner,
                        "lat": lat,
                        "lon": lon,
                        "broker": {
                            "host": prov.broker_host,
                            "port": prov.broker_port,
                            "username": device,
                            "password": password,
                        },
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
        reloaded = reload_broker(self.cfg.mosquitto.pid_file)
        self.audit.append("device_revoked", "operator", {"device": device})
        return Revoked(device, removed, reloaded)

    def rotate(self, device: str, bundle: Path | None = None) -> Registered:
        """A new broker password for ``device`` (the old one stops working at the broker's
        reload) and a new provisioning bundle to copy onto the doorbell (audited)."""
        info = self.index.device(device)
        if info is None or info.get("revoked", "0") != "0":
            raise BadSetting(f"no device {device!r} (or it is revoked)")
        prov = self.cfg.provisioning
        bundle_path = bundle or prov.bundles_dir / f"{device}.json"
        password = secrets.token_urlsafe(24)
        try:
            bundle_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(bundle_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(
                    {
                        "device": device,
                        "owner": info.get("owner"),
                        "lat": float(info.get("lat", 0)),
                        "lon": float(info.get("lon", 0)),
                        "broker": {
                            "host": prov.broker_host,
                            "port": prov.broker_port,
                            "username": device,
                            "password": password,
                        },
                    },
                    f,
                    indent=2,
                )
            set_user(self.cfg.mosquitto.password_file, device, password)
        except OSError as err:
            raise Unavailable(f"cannot write credentials: {err}") from None
        reloaded = reload_broker(self.cfg.mosquitto.pid_file)
        self.audit.append(
            "operator_action", "operator", {"action": "device_rotated", "device": device}
        )
        return Registered(device, bundle_path, reloaded)
