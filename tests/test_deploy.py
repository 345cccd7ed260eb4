"""Flashing a doorbell and the units that run things: what they write, and that it is accepted."""

from __future__ import annotations

import email
import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.config import load_config
from protocol.crypto import OwnerKeys, b64

ROOT = Path(__file__).parent.parent


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


IMAGER_FIRSTRUN = """#!/bin/bash

set +e

echo doorbell >/etc/hostname
rm -f /boot/firstrun.sh
sed -i 's| systemd.run.*||g' /boot/cmdline.txt
exit 0
"""
CMDLINE = "console=serial0,115200 root=PARTUUID=abc rootwait systemd.run=/boot/firstrun.sh\n"


@pytest.fixture
def card(tmp_path):
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "cmdline.txt").write_text(CMDLINE)
    (boot / "firstrun.sh").write_text(IMAGER_FIRSTRUN)
    bundle = tmp_path / "front-door.json"
    bundle.write_text(
        json.dumps(
            {
                "device": "front-door",
                "owner": "Alice",
                "lat": 51.5,
                "lon": -0.12,
                "broker": {
                    "host": "127.0.0.1",
                    "port": 9,
                    "username": "front-door",
                    "password": "s3cret-pw",
                },
                "log": {"relay_url": "https://relay.example", "key": b64(b"\x01" * 32)},
            }
        )
    )
    owner = OwnerKeys.generate()
    owner.save(tmp_path / "owner")
    # Provisioning does not look inside the wheel; building a real one takes a while
    # and is done by the boot test (tests/test_pi_boot.py).
    (tmp_path / "open_doorbell-0.1.0-py3-none-any.whl").write_bytes(b"PK fake wheel")
    return boot, bundle, owner, tmp_path


def provision(boot, bundle, keys, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "firmware.cli",
            "provision",
            "--bundle",
            str(bundle),
            "--boot",
            str(boot),
            "--owner-keys",
            str(keys),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def wheel_args(tmp: Path) -> list[str]:
    return ["--wheel", str(tmp / "open_doorbell-0.1.0-py3-none-any.whl")]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_provisioning_writes_exactly_the_expected_files_with_safe_modes(card):
    boot, bundle, owner, tmp = card
    r = provision(boot, bundle, tmp / "owner", *wheel_args(tmp))
    assert r.returncode == 0, r.stderr
    d = boot / "doorbell"
    assert sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()) == [
        "SHA256SUMS",
        "broker-password",
        "doorbell-install.service",
        "doorbell.service",
        "doorbell.toml",
        "install.sh",
        "requirements.txt",
        "wheels/open_doorbell-0.1.0-py3-none-any.whl",
    ]
    assert mode(d / "broker-password") == 0o600
    assert mode(d / "install.sh") == 0o755
    assert mode(d / "doorbell.toml") == 0o644
    assert (d / "broker-password").read_text() == "s3cret-pw"
    assert "s3cret-pw" not in (d / "doorbell.toml").read_text(), "no secret in the config"
    # Every file on the card is covered by SHA256SUMS, and the sums hold.
    r = subprocess.run(["sha256sum", "--check", "SHA256SUMS"], cwd=d, capture_output=True)
    assert r.returncode == 0, r.stdout
    assert len((d / "SHA256SUMS").read_text().splitlines()) == 7
    # No kernel-command-line hook of ours; Imager's firstrun.sh schedules the installer
    # before it removes itself.
    assert (boot / "cmdline.txt").read_text() == CMDLINE
    firstrun = (boot / "firstrun.sh").read_text()
    assert firstrun.index("doorbell-install.service") < firstrun.index("rm -f /boot/firstrun.sh")
    assert firstrun.startswith(IMAGER_FIRSTRUN.split("rm -f")[0])
    assert mode(boot / "firstrun.sh") == 0o755
    r = subprocess.run(["bash", "-n", str(boot / "firstrun.sh")], capture_output=True)
    assert r.returncode == 0, r.stderr
    # Provisioning twice does not hook the installer twice.
    assert provision(boot, bundle, tmp / "owner", *wheel_args(tmp)).returncode == 0
    assert (boot / "firstrun.sh").read_text().count("open-doorbell (added") == 1
    cfg = load_config(d / "doorbell.toml")
    assert cfg.device.id == "front-door" and cfg.mqtt.enabled
    assert cfg.owner.sign_public == b64(owner.sign_public)
    assert cfg.mqtt.password_file == d / "broker-password"
    assert cfg.mqtt.read_password() == "s3cret-pw"
    # The relay's log key is pinned from the bundle: the doorbell witnesses its log.
    assert cfg.log.relay_url == "https://relay.example" and cfg.log.key == b64(b"\x01" * 32)


def test_a_cloud_init_card_gets_a_user_data_part_after_imagers(card):
    boot, bundle, _, tmp = card
    (boot / "firstrun.sh").unlink()
    imager = "#cloud-config\nusers:\n  - name: alice\n"
    (boot / "user-data").write_text(imager)
    (boot / "meta-data").write_text("instance-id: rpi-image\n")
    r = provision(boot, bundle, tmp / "owner", *wheel_args(tmp))
    assert r.returncode == 0, r.stderr
    msg = email.message_from_string((boot / "user-data").read_text())
    parts = [p.get_payload() for p in msg.walk() if p.get_content_type() == "text/cloud-config"]
    assert len(parts) == 2 and parts[0].strip() == imager.strip()
    assert "runcmd:" in parts[1] and "/boot/firmware/doorbell/install.sh" in parts[1]
    assert "merge_how" in parts[1], "Imager's user and Wi-Fi are kept, not replaced"
    assert (boot / "meta-data").read_text() == "instance-id: rpi-image\n", "left alone"
    assert not (boot / "firstrun.sh").exists()
    # Provisioning again does not nest or repeat the part.
    assert provision(boot, bundle, tmp / "owner", *wheel_args(tmp)).returncode == 0
    assert (boot / "user-data").read_text().count("install.sh") == 1


def test_doorbell_run_accepts_what_provisioning_wrote(card):
    boot, bundle, _, tmp = card
    assert provision(boot, bundle, tmp / "owner", *wheel_args(tmp)).returncode == 0
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "firmware.cli",
            "run",
            "--config",
            str(boot / "doorbell" / "doorbell.toml"),
            "--sim",
            "--seconds",
            "1.5",
            "--data-dir",
            str(tmp / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


def test_provisioning_refuses_bad_input_and_writes_nothing(card):
    boot, bundle, _, tmp = card
    before = snapshot(boot)
    r = provision(boot, bundle, tmp / "nobody", *wheel_args(tmp))
    assert r.returncode == 2 and "cannot read" in r.stderr
    junk = tmp / "junk.json"
    junk.write_text("{}")
    r = provision(boot, junk, tmp / "owner", *wheel_args(tmp))
    assert r.returncode == 2 and "not a provisioning bundle" in r.stderr
    r = provision(tmp / "not-mounted", bundle, tmp / "owner", *wheel_args(tmp))
    assert r.returncode == 2 and "mount" in r.stderr
    r = provision(boot, bundle, tmp / "owner", "--wheel", str(tmp / "missing.whl"))
    assert r.returncode == 2 and "open_doorbell wheel" in r.stderr
    r = provision(boot, bundle, tmp / "owner", "--ca", str(tmp / "no-ca.crt"), *wheel_args(tmp))
    assert r.returncode == 2 and "cannot read the CA certificate" in r.stderr
    # A dependency wheel that is not in the pinned set (by hash) never reaches the card.
    house = tmp / "wheelhouse"
    house.mkdir()
    (house / "paho_mqtt-2.2.0-py3-none-any.whl").write_bytes(b"not the real paho")
    r = provision(boot, bundle, tmp / "owner", *wheel_args(tmp), "--wheelhouse", str(house))
    assert r.returncode == 2 and "not in the pinned requirement set" in r.stderr
    assert snapshot(boot) == before, "a refused provisioning changed the card"


@pytest.mark.parametrize(
    "field, value",
    [
        ("device", 'front-door"\n[owner]\nsign_public = "attacker'),
        ("host", 'relay.example"\ntls_ca = "/etc/shadow'),
        ("username", "a b"),
        ("port", "8883"),
        ("password", "pw\nsecond line"),
    ],
)
def test_a_bundle_cannot_inject_into_the_config(card, field, value):
    """The relay's operator writes the bundle; a quote must not add keys to the TOML."""
    boot, bundle, _, tmp = card
    data = json.loads(bundle.read_text())
    if field == "device":
        data["device"] = value
    else:
        data["broker"][field] = value
    bundle.write_text(json.dumps(data))
    before = snapshot(boot)
    r = provision(boot, bundle, tmp / "owner", *wheel_args(tmp))
    assert r.returncode == 2 and "not a provisioning bundle" in r.stderr, r.stderr
    assert snapshot(boot) == before


def test_a_card_without_imager_settings_is_refused(card):
    boot, bundle, _, tmp = card
    (boot / "firstrun.sh").unlink()
    r = provision(boot, bundle, tmp / "owner", *wheel_args(tmp))
    assert r.returncode == 2 and "Imager" in r.stderr
    assert not (boot / "doorbell").exists()


UNITS = [
    ROOT / "firmware" / "deploy" / "doorbell.service",
    ROOT / "firmware" / "deploy" / "doorbell-install.service",
    ROOT / "deploy" / "relay" / "relay.service",
    ROOT / "deploy" / "relay" / "relay-ingest@.service",
]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_units_pass_systemd_analyze_verify(unit, tmp_path):
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze is needed (the systemd Debian package; make test installs it)"
    # Point ExecStart at this checkout's commands: verify checks that they exist.
    venv_bin = Path(sys.executable).parent
    text = unit.read_text()
    text = text.replace("/opt/doorbell/venv/bin/", f"{venv_bin}/")
    text = text.replace("/opt/doorbell-relay/venv/bin/", f"{venv_bin}/")
    name = unit.name.replace("@.service", "@1.service")
    copy = tmp_path / name
    copy.write_text(text)
    if "@" in unit.name:
        (tmp_path / unit.name).write_text(text)
    r = subprocess.run(
        [exe, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    # verify exits 0 even for unknown keys or unparsable values: it only warns.
    assert r.returncode == 0, r.stdout + r.stderr
    assert (r.stdout + r.stderr).strip() == "", "systemd has remarks on the unit"
