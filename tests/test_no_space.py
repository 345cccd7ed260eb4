"""A full disk is said in one line, a failed clip is announced, low space is in the status.

Real ENOSPC comes from a tiny tmpfs (mounting needs root, which ``make test`` has;
elsewhere those tests skip) and from /dev/full.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from stack import wait_for

from firmware.announce import to_message
from firmware.controller import DoorbellEvent
from protocol import Event, decode, encode

ROOT = Path(__file__).parent.parent
SMALL = """
[device]
id = "test-bell"
[camera]
main_size = [320, 240]
lores_size = [160, 120]
fps = 15
"""


@pytest.fixture
def tiny_fs(tmp_path):
    """A 3 MiB tmpfs; ``fill()`` takes every byte that is left."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=True)

    def fill() -> None:
        with open(mnt / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass

    yield mnt, fill
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _doorbell(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "firmware.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_doorbell_sim_on_a_full_disk_says_one_line_and_fails(tiny_fs, tmp_path):
    mnt, fill = tiny_fs
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    fill()
    r = _doorbell(
        "sim",
        "--scene",
        "porch",
        "--seconds",
        "2",
        "--data-dir",
        str(mnt / "data"),
        "--config",
        str(cfg),
    )
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert "no space left" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_clip_that_cannot_be_written_is_announced_with_its_reason(tiny_fs, tmp_path):
    mnt, fill = tiny_fs
    cfg = tmp_path / "small.toml"
    cfg.write_text(SMALL)
    data = mnt / "data"
    first = _doorbell(
        "sim", "--scene", "porch", "--seconds", "1", "--data-dir", str(data), "--config", str(cfg)
    )
    assert first.returncode == 0, first.stderr  # keys and folders made while there was room
    fill()
    r = _doorbell(
        "sim",
        "--scene",
        "porch",
        "--seconds",
        "8",
        "--press-at",
        "1",
        "--data-dir",
        str(data),
        "--config",
        str(cfg),
    )
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["event"] for e in events] == ["ring", "clip_failed"]
    assert "No space left on device" in events[1]["error"]
    assert "Traceback" not in r.stderr
    assert r.returncode != 0

    # What goes on the wire for it: an event the relay indexes, with the reason.
    ev = DoorbellEvent(
        "clip_failed",
        "a" * 32,
        6.0,
        1_790_000_000.0,
        {"clip": events[1]["clip"], "error": events[1]["error"]},
    )
    msg = to_message("test-bell", ev)
    assert isinstance(msg, Event) and msg.type == "clip_failed"
    assert msg.clip_id == events[1]["clip"] and "No space" in (msg.reason or "")
    assert decode(*encode(msg)) == msg


def test_relay_cli_on_a_full_disk_says_one_line_and_fails(stack):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "relay.cli",
            "--config",
            str(stack.config_file),
            "devices",
            "add",
            "full-door",
            "--owner",
            "A",
            "--lat",
            "1",
            "--lon",
            "1",
            "--out",
            "/dev/full",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0, r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert "no space left" in r.stderr.lower(), r.stderr


def test_low_space_goes_out_in_the_status(stack, tmp_path, monkeypatch):
    import firmware.mqtt_link as link_mod
    from firmware.mqtt_link import MqttLink
    from firmware.outbox import Outbox

    cfg = stack.add_device("test-bell")
    got: list[dict] = []
    watcher = stack.client("relay")
    watcher.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
    watcher.subscribe("doorbell/test-bell/status", qos=1)
    # Whatever this machine has free is "low" against a threshold above it.
    monkeypatch.setattr(link_mod, "LOW_SPACE_BYTES", 1 << 60)
    link = MqttLink(
        "test-bell", cfg, Outbox(tmp_path / "o.sqlite"), lambda m: None, data_dir=tmp_path
    )
    link.start()
    wait_for(lambda: any(s["state"] == "online" for s in got), 10, "the online status")
    online = next(s for s in got if s["state"] == "online")
    assert online["warning"] == "low_space" and online["free_bytes"] > 0
    link.stop()


def test_the_relay_keeps_a_doorbells_low_space_warning(stack):
    from protocol import Status, new_id, utcnow

    stack.add_device("test-bell")
    low = Status(
        id=new_id(), ts=utcnow(), device="test-bell", state="online", firmware="1",
        free_bytes=1000, warning="low_space",
    )  # fmt: skip
    assert stack.index.index([low]) == [True]
    assert stack.index.device("test-bell")["warning"] == "low_space"
    ok = Status(id=new_id(), ts=utcnow(), device="test-bell", state="online", firmware="1")
    stack.index.index([ok])
    assert stack.index.device("test-bell")["warning"] == ""
