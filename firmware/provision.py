"""``doorbell provision``: put a doorbell onto a Raspberry Pi OS card's boot partition.

It writes, under ``BOOT/doorbell/``: the doorbell's config (device id, broker, the
owner's *public* keys), the broker password, the systemd units, the installer,
the doorbell wheel with its pinned dependency wheels (``wheels/``,
``requirements.txt`` with hashes) and ``SHA256SUMS`` over all of it.  Then it hooks
the installer into the first boot the image already has:

* **Bookworm** (Raspberry Pi Imager's OS customisation writes ``firstrun.sh``): a
  block inside ``firstrun.sh`` enables ``doorbell-install.service`` for the first
  normal boot, where it runs after ``network-online.target``;
* **Trixie** (cloud-init images: ``user-data``/``meta-data`` on the partition): a
  ``#cloud-config`` part whose ``runcmd`` runs the installer, merged after Imager's.

Every input is read and checked before the first byte is written, so a bad
argument leaves the card as it was.  The owner's keys come from the owner
(``footage keys new``), not from the relay's bundle: the relay cannot choose whose
signature the doorbell obeys.

Example::

    provision(Path("front-door.json"), Path("/media/me/bootfs"), Path("owner-keys"))
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib.resources import files as package_files
from pathlib import Path
from typing import Any

from protocol.crypto import b64, read_public_key

DEPLOY = package_files("firmware") / "deploy"
SOURCE_TREE = Path(__file__).resolve().parent.parent
HOOK_BEGIN = "# >>> open-doorbell (added by doorbell provision) >>>"
HOOK_END = "# <<< open-doorbell <<<"
MIME_BOUNDARY = "==open-doorbell-part=="
TEST_FLAG = "test-simulated-hardware"


class ProvisionError(ValueError):
    pass


# What may appear inside the TOML the card gets: a bundle is written by the relay's
# operator, who must not be able to add keys (say, another owner) through a quote.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,252}")
_URL = re.compile(r"https?://[A-Za-z0-9._:\[\]-]{1,253}(/[A-Za-z0-9._~/-]*)?")
_B64 = re.compile(r"[A-Za-z0-9+/]{43}=")


def load_bundle(path: Path) -> dict[str, Any]:
    try:
        bundle = json.loads(path.read_text())
        broker = bundle["broker"]
        for need in (bundle["device"], broker["host"], broker["password"]):
            if not need:
                raise ValueError("empty field")
        for field_name, value in (
            ("device", bundle["device"]),
            ("broker.host", broker["host"]),
            ("broker.username", broker.get("username", bundle["device"])),
        ):
            if not isinstance(value, str) or not _NAME.fullmatch(value):
                raise ValueError(f"{field_name} {str(value)[:40]!r} is not a plain name")
        if not isinstance(broker["port"], int) or not 0 < broker["port"] < 65536:
            raise ValueError("broker.port is not a port number")
        if not isinstance(broker["password"], str) or "\n" in broker["password"]:
            raise ValueError("broker.password is not one line")
        tls = broker.get("tls")
        if tls is not None and not (
            isinstance(tls, dict)
            and all(
                isinstance(tls.get(k), str) and "BEGIN" in tls[k] for k in ("ca", "cert", "key")
            )
        ):
            raise ValueError("broker.tls is not a CA, certificate and key in PEM")
        log = bundle.get("log")
        # Both go into the TOML: a URL and a base64 key, nothing that could close a string.
        if log is not None and not (
            isinstance(log, dict)
            and isinstance(log.get("relay_url"), str)
            and _URL.fullmatch(log["relay_url"])
            and isinstance(log.get("key"), str)
            and _B64.fullmatch(log["key"])
        ):
            raise ValueError("log is not a relay URL and a base64 key")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ProvisionError(
            f"{path} is not a provisioning bundle from relay devices add ({err})"
        ) from None
    return bundle


def requirement_hashes(text: str) -> set[str]:
    """Every ``--hash=sha256:…`` in a requirements file."""
    return set(re.findall(r"--hash=sha256:([0-9a-f]{64})", text))


def build_wheel(source: Path = SOURCE_TREE) -> tuple[str, bytes]:
    """The doorbell wheel built from a source checkout (``pip wheel --no-deps``)."""
    if not (source / "pyproject.toml").is_file():
        raise ProvisionError(
            "the firmware is installed, not a source checkout: pass --wheel "
            "open_doorbell-*.whl (pip wheel --no-deps on a checkout makes one)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp, str(source)],
            capture_output=True,
            text=True,
        )
        built = sorted(Path(tmp).glob("open_doorbell-*.whl"))
        if r.returncode != 0 or not built:
            tail = (r.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise ProvisionError(f"building the doorbell wheel failed: {tail}")
        return built[0].name, built[0].read_bytes()


@dataclass
class Card:
    """Everything to write, read in full before anything is written."""

    boot: Path
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    firstrun: str | None = None
    user_data: str | None = None
    meta_data: str | None = None

    def add(self, name: str, data: bytes | str, mode: int = 0o644) -> None:
        self.files[name] = (data.encode() if isinstance(data, str) else data, mode)


def _config(bundle: dict[str, Any], sign: bytes, box: bytes, tls: bool) -> str:
    broker = bundle["broker"]
    device, owner = bundle["device"], bundle.get("owner", "?")
    client_tls = broker.get("tls")  # relay devices add --cert: the certificate is the identity
    tls_line = '\ntls_ca = "ca.crt"' if tls or client_tls else ""
    if client_tls:
        tls_line += '\ntls_cert = "client.crt"\ntls_key = "client.key"'
    password_line = (
        '# password_file = "broker-password"   (unused: the certificate is the identity)'
        if client_tls
        else 'password_file = "broker-password"'
    )
    config = f"""# Written by doorbell provision for {device}, owned by {owner}.
# Every key is documented in deploy/pi/doorbell.example.toml.

[device]
id = "{device}"
data_dir = "/var/lib/doorbell"

[mqtt]
enabled = true
host = "{broker["host"]}"
port = {int(broker["port"])}
username = "{broker.get("username", device)}"
# Beside this file: /etc/doorbell/broker-password after the first boot.
{password_line}{tls_line}

[owner]
# The owner's public keys: every clip is encrypted to box_public, and only
# decisions signed by sign_public release or delete footage.
sign_public = "{b64(sign)}"
box_public = "{b64(box)}"
"""
    log = bundle.get("log")
    if log is not None:
        config += f"""
[log]
# The relay's public audit log: the doorbell checks every head it publishes.
relay_url = "{log["relay_url"]}"
key = "{log["key"]}"
"""
    return config


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ProvisionError(f"cannot read {what} {path}: {err.strerror}") from None


def prepare(
    bundle_path: Path,
    boot: Path,
    owner_keys: Path,
    ca: Path | None = None,
    wheel: Path | None = None,
    wheelhouse: Path | None = None,
    simulated_hardware: bool = False,
) -> Card:
    """Read and check every input; nothing is written."""
    if not boot.is_dir():
        raise ProvisionError(f"{boot} is not a folder (mount the card's boot partition)")
    card = Card(boot)
    for name in ("firstrun.sh", "user-data", "meta-data"):
        p = boot / name
        if p.exists():
            setattr(card, name.replace("-", "_").removesuffix(".sh"), p.read_text())
    cloud_init = card.user_data is not None or card.meta_data is not None
    if card.firstrun is None and not cloud_init:
        raise ProvisionError(
            f"{boot} has neither Raspberry Pi Imager's firstrun.sh (Bookworm: set a user "
            "name in Imager's OS customisation) nor cloud-init's user-data (Trixie images): "
            "flash the card with Imager's settings first"
        )
    bundle = load_bundle(bundle_path)
    sign = read_public_key(owner_keys / "sign.pub")
    box = read_public_key(owner_keys / "box.pub")
    ca_bytes = _read(ca, "the CA certificate") if ca is not None else None
    if wheel is None:
        wheel_name, wheel_bytes = build_wheel()
    elif wheel.name.startswith("open_doorbell-") and wheel.suffix == ".whl":
        wheel_name, wheel_bytes = wheel.name, _read(wheel, "the wheel")
    else:
        raise ProvisionError(f"{wheel} is not an open_doorbell wheel")
    requirements = (DEPLOY / "requirements-pi.txt").read_text()
    allowed = requirement_hashes(requirements)
    deps: dict[str, bytes] = {}
    if wheelhouse is not None:
        if not wheelhouse.is_dir():
            raise ProvisionError(f"--wheelhouse {wheelhouse} is not a folder")
        for p in sorted(wheelhouse.glob("*.whl")):
            if p.name.startswith("open_doorbell-"):
                continue
            data = p.read_bytes()
            # Only wheels the pinned set names by hash: a swapped wheel never reaches the card.
            if hashlib.sha256(data).hexdigest() not in allowed:
                raise ProvisionError(f"{p.name} is not in the pinned requirement set (hash)")
            deps[p.name] = data

    card.add("doorbell/doorbell.toml", _config(bundle, sign, box, ca_bytes is not None))
    card.add("doorbell/broker-password", bundle["broker"]["password"], 0o600)
    client_tls = bundle["broker"].get("tls")
    if ca_bytes is not None:
        card.add("doorbell/ca.crt", ca_bytes)
    elif client_tls:
        card.add("doorbell/ca.crt", client_tls["ca"])
    if client_tls:
        card.add("doorbell/client.crt", client_tls["cert"])
        card.add("doorbell/client.key", client_tls["key"], 0o600)
    for name in ("doorbell.service", "doorbell-install.service"):
        card.add(f"doorbell/{name}", (DEPLOY / name).read_text())
    card.add("doorbell/install.sh", (DEPLOY / "install.sh").read_text(), 0o755)
    card.add("doorbell/requirements.txt", requirements)
    card.add(f"doorbell/wheels/{wheel_name}", wheel_bytes)
    for name, data in deps.items():
        card.add(f"doorbell/wheels/{name}", data)
    if simulated_hardware:
        card.add(f"doorbell/{TEST_FLAG}", "the boot test: run on simulated camera and pins\n")
    sums = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name.removeprefix('doorbell/')}\n"
        for name, (data, _) in sorted(card.files.items())
    )
    card.add("doorbell/SHA256SUMS", sums)
    if card.firstrun is not None:
        card.add("firstrun.sh", hook_firstrun(card.firstrun), 0o755)
    if cloud_init:
        card.add("user-data", merge_user_data(card.user_data))
        if card.meta_data is None:
            card.add("meta-data", f"instance-id: open-doorbell-{bundle['device']}\n")
    return card


def hook_firstrun(script: str) -> str:
    """Imager's firstrun.sh with the doorbell's block before it removes itself."""
    if HOOK_BEGIN in script:
        return script
    block = (DEPLOY / "firstrun-hook.sh").read_text().rstrip("\n")
    lines = script.rstrip("\n").split("\n")
    # Imager's script ends: rm -f /boot/firstrun.sh; sed … cmdline.txt; exit 0.
    removes_itself = [
        j
        for j, line in enumerate(lines)
        if line.startswith("rm -f /boot") and "firstrun.sh" in line
    ]
    exits = [j for j, line in enumerate(lines) if line.strip() == "exit 0"]
    i = (removes_itself or exits or [len(lines)])[0 if removes_itself else -1]
    return "\n".join([*lines[:i], block, *lines[i:]]) + "\n"


def merge_user_data(existing: str | None) -> str:
    """cloud-init user-data with the doorbell's part after whatever was there."""
    ours = (DEPLOY / "user-data").read_text()
    if existing is None or not existing.strip():
        return ours
    if "open-doorbell" in existing:
        return existing
    # cloud-init merges the parts of a MIME multipart in order (user-data formats).
    part = 'Content-Type: text/cloud-config; charset="utf-8"\nMIME-Version: 1.0\n\n'
    return (
        f'Content-Type: multipart/mixed; boundary="{MIME_BOUNDARY}"\nMIME-Version: 1.0\n\n'
        f"--{MIME_BOUNDARY}\n{part}{existing.rstrip()}\n"
        f"--{MIME_BOUNDARY}\n{part}{ours.rstrip()}\n"
        f"--{MIME_BOUNDARY}--\n"
    )


def write(card: Card) -> list[Path]:
    """Write a prepared card; return the files written."""
    out = card.boot / "doorbell"
    # A previous provisioning's wheels must not linger beside the new ones.
    old = out / "wheels"
    if old.is_dir():
        for p in old.iterdir():
            p.unlink()
    written = []
    for name, (data, mode) in card.files.items():
        path = card.boot / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, mode)  # the umask must not widen or narrow it (FAT ignores it)
        written.append(path)
    return written


def provision(
    bundle_path: Path,
    boot: Path,
    owner_keys: Path,
    ca: Path | None = None,
    wheel: Path | None = None,
    wheelhouse: Path | None = None,
    simulated_hardware: bool = False,
) -> list[Path]:
    """Check every input, then write the card; return the files written."""
    return write(prepare(bundle_path, boot, owner_keys, ca, wheel, wheelhouse, simulated_hardware))
