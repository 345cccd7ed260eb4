"""Flashing a doorbell and the units that run things: what they write, and that it is accepted."""

from __future__ import annotations

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


@pytest.fixture
def card(tmp_path):
    boot = tmp_path / "bootfs"
    boot.mkdir()
    (boot / "cmdline.txt").write_text("console=serial0,115200 root=PARTUUID=abc rootwait\n")
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
    return boot, bundle, owner, tmp_path


def provision(boot, bundle, keys) -> subprocess.CompletedProcess:
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
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_provisioning_writes_exactly_the_expected_files_with_safe_modes(card):
    boot, bundle, owner, tmp = card
    r = provision(boot, bundle, tmp / "owner")
    assert r.returncode == 0, r.stderr
    d = boot / "doorbell"
    assert sorted(p.name for p in d.iterdir()) == [
        "broker-password",
        "doorbell.service",
        "doorbell.toml",
        "firstboot.sh",
    ]
    assert mode(d / "broker-password") == 0o600
    assert mode(d / "firstboot.sh") == 0o755 and mode(boot / "firstboot.sh") == 0o755
    assert mode(d / "doorbell.toml") == 0o644
    assert (d / "broker-password").read_text() == "s3cret-pw"
    assert "s3cret-pw" not in (d / "doorbell.toml").read_text(), "no secret in the config"
    assert "systemd.run=/boot/firmware/firstboot.sh" in (boot / "cmdline.txt").read_text()
    # Provisioning twice does not hook the installer twice.
    assert provision(boot, bundle, tmp / "owner").returncode == 0
    assert (boot / "cmdline.txt").read_text().count("firstboot.sh") == 1
    cfg = load_config(d / "doorbell.toml")
    assert cfg.device.id == "front-door" and cfg.mqtt.enabled
    assert cfg.owner.sign_public == b64(owner.sign_public)
    assert cfg.mqtt.password_file == d / "broker-password"
    assert cfg.mqtt.read_password() == "s3cret-pw"
    # The relay's log key is pinned from the bundle: the doorbell witnesses its log.
    assert cfg.log.relay_url == "https://relay.example" and cfg.log.key == b64(b"\x01" * 32)


def test_doorbell_run_accepts_what_provisioning_wrote(card):
    boot, bundle, _, tmp = card
    assert provision(boot, bundle, tmp / "owner").returncode == 0
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


def test_provisioning_refuses_bad_input(card):
    boot, bundle, _, tmp = card
    r = provision(boot, bundle, tmp / "nobody")
    assert r.returncode == 2 and "cannot read" in r.stderr
    junk = tmp / "junk.json"
    junk.write_text("{}")
    r = provision(boot, junk, tmp / "owner")
    assert r.returncode == 2 and "not a provisioning bundle" in r.stderr
    r = provision(tmp / "not-mounted", bundle, tmp / "owner")
    assert r.returncode == 2 and "mount" in r.stderr


UNITS = [
    ROOT / "deploy" / "pi" / "doorbell.service",
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
