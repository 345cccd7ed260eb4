"""Shared fixtures: small, fast configurations on real components."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from firmware.config import Config, parse_config
from firmware.controller import DoorbellEvent
from hw_sim.runner import SimDoorbell
from hw_sim.scenes import make_scene


def small_config(data_dir: Path, **sections: dict[str, Any]) -> Config:
    """A doorbell config at 320x240 (quick to encode) writing under ``data_dir``."""
    data: dict[str, Any] = {
        "device": {"id": "test-bell", "data_dir": str(data_dir)},
        "camera": {"main_size": [320, 240], "lores_size": [160, 120], "fps": 15},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(name, {}).update(values)
        else:
            data[name] = values
    return parse_config(data)


class Recorder:
    """Collects what the controller emits."""

    def __init__(self) -> None:
        self.events: list[DoorbellEvent] = []

    def __call__(self, ev: DoorbellEvent) -> None:
        self.events.append(ev)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def of(self, kind: str) -> list[DoorbellEvent]:
        return [e for e in self.events if e.kind == kind]


@pytest.fixture(autouse=True)
def _footage_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's footage client keeps its pinned log keys and heads in its own folder."""
    monkeypatch.setenv("FOOTAGE_STATE", str(tmp_path / "footage-state"))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_bell(tmp_path: Path, recorder: Recorder):
    bells: list[SimDoorbell] = []

    def make(scene: str = "porch", config: Config | None = None, **sections: Any) -> SimDoorbell:
        cfg = config or small_config(tmp_path / "data", **sections)
        w, h = cfg.camera.main_size
        bell = SimDoorbell(cfg, make_scene(scene, w, h), emit=recorder, start_wall=1.8e9)
        bells.append(bell)
        return bell

    yield make
    for bell in bells:
        with contextlib.suppress(Exception):
            bell.close()


def ffprobe(path: Path) -> dict[str, Any]:
    exe = shutil.which("ffprobe")
    assert exe, "ffprobe is needed (the ffmpeg Debian package; make test installs it)"
    out = subprocess.run(
        [
            exe,
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-count_packets",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.fixture
def stack(tmp_path: Path):
    from stack import Stack

    s = Stack(tmp_path / "stack")
    yield s
    s.close()


def plain_clip(bell: SimDoorbell, clip_id: str, out: Path) -> Path:
    """Decrypt a clip as its owner would, into ``out``."""
    assert bell.owner is not None
    with open(out, "wb") as f:
        bell.store.export(clip_id, bell.owner.box_private, f)
    return out


def plain_snapshot(bell: SimDoorbell, clip_id: str, out: Path) -> Path:
    from protocol.crypto import decrypt_bytes, unb64, unwrap_key

    assert bell.owner is not None
    record = bell.store.get(clip_id)
    key = unwrap_key(unb64(record.wrapped_key), bell.owner.box_private)
    out.write_bytes(decrypt_bytes((bell.store.dir / record.snapshot).read_bytes(), key))
    return out


CHROMIUM = "/usr/bin/chromium"
"""Debian's chromium (scripts/bootstrap.sh installs it; never `playwright install`)."""
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser():
    """A real browser for the owners' web app, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()
