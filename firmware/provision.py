"""``doorbell provision``: put a doorbell's identity onto a Raspberry Pi OS boot partition.

It writes, under ``BOOT/doorbell/``: the doorbell's config (device id, broker,
the owner's *public* keys), the broker password (0600), the systemd unit, and
the first-boot installer; then it hooks the installer into ``cmdline.txt``
(the same mechanism as Raspberry Pi Imager's first-run script).

The owner's keys come from the owner (``footage keys new``), not from the relay's
bundle: the relay cannot choose whose signature the doorbell obeys.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from protocol.crypto import b64, read_public_key

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "pi"
HOOK = (
    " systemd.run=/boot/firmware/firstboot.sh systemd.run_success_action=reboot"
    " systemd.unit=kernel-command-line.target"
)


class ProvisionError(ValueError):
    pass


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)  # the umask must not widen or narrow it


def load_bundle(path: Path) -> dict[str, Any]:
    try:
        bundle = json.loads(path.read_text())
        for need in (bundle["device"], bundle["broker"]["host"], bundle["broker"]["password"]):
            if not need:
                raise ValueError("empty field")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ProvisionError(
            f"{path} is not a provisioning bundle from relay devices add ({err})"
        ) from None
    return bundle


def provision(
    bundle_path: Path, boot: Path, owner_keys: Path, ca: Path | None = None
) -> list[Path]:
    """Write the files; return them.  ``boot`` is the mounted boot partition."""
    if not boot.is_dir():
        raise ProvisionError(f"{boot} is not a folder (mount the card's boot partition)")
    bundle = load_bundle(bundle_path)
    sign = read_public_key(owner_keys / "sign.pub")
    box = read_public_key(owner_keys / "box.pub")
    out = boot / "doorbell"
    out.mkdir(exist_ok=True)
    broker = bundle["broker"]
    tls = '\ntls_ca = "ca.crt"' if ca else ""
    device, owner = bundle["device"], bundle.get("owner", "?")
    config = f"""# Written by doorbell provision for {device}, owned by {owner}.
# Every key is documented in deploy/pi/doorbell.example.toml.

[device]
id = "{bundle["device"]}"
data_dir = "/var/lib/doorbell"

[mqtt]
enabled = true
host = "{broker["host"]}"
port = {int(broker["port"])}
username = "{broker.get("username", bundle["device"])}"
# Beside this file: /etc/doorbell/broker-password after the first boot.
password_file = "broker-password"{tls}

[owner]
# The owner's public keys: every clip is encrypted to box_public, and only
# decisions signed by sign_public release or delete footage.
sign_public = "{b64(sign)}"
box_public = "{b64(box)}"
"""
    log = bundle.get("log")
    if isinstance(log, dict) and log.get("relay_url") and log.get("key"):
        config += f"""
[log]
# The relay's public audit log: the doorbell checks every head it publishes.
relay_url = "{log["relay_url"]}"
key = "{log["key"]}"
"""
    files = [
        out / "doorbell.toml",
        out / "broker-password",
        out / "doorbell.service",
        out / "firstboot.sh",
    ]
    _write(files[0], config, 0o644)
    _write(files[1], broker["password"], 0o600)
    _write(files[2], (DEPLOY / "doorbell.service").read_text(), 0o644)
    _write(files[3], (DEPLOY / "firstboot.sh").read_text(), 0o755)
    # systemd.run wants the script at the partition's root.
    shutil.copy2(files[3], boot / "firstboot.sh")
    files.append(boot / "firstboot.sh")
    if ca is not None:
        shutil.copy2(ca, out / "ca.crt")
        files.append(out / "ca.crt")
    cmdline = boot / "cmdline.txt"
    if cmdline.exists():
        line = cmdline.read_text().strip()
        if "firstboot.sh" not in line:
            cmdline.write_text(line + HOOK + "\n")
        files.append(cmdline)
    return files
