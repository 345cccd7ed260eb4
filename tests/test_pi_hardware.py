"""The Pi-facing options and failure modes that need no Pi: chime polarity, the
watchdog's camera check, GPIO errors, and that the Pi's pinned wheels exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from firmware.clock import SimClock
from firmware.config import GpioConfig
from firmware.gpio import DoorbellIO
from firmware.hardware import GpioUnavailable, PiHardware
from firmware.liveness import CameraLiveness
from firmware.packets import EncodedPacket, LoresFrame

ROOT = Path(__file__).parent.parent
REQUIREMENTS = ROOT / "firmware" / "deploy" / "requirements-pi.txt"


@pytest.mark.parametrize("active_high, idle, ringing", [(True, False, True), (False, True, False)])
def test_the_chime_pin_rests_open_for_either_relay_polarity(active_high, idle, ringing):
    factory = MockFactory()
    cfg = GpioConfig(chime_active_high=active_high)
    io = DoorbellIO(cfg, lambda _e: None, SimClock(), pin_factory=factory)
    pin = factory.pin(cfg.chime_pin)
    assert pin.state == idle, "at rest (and from the moment the pin is claimed)"
    io.chime_on()
    assert pin.state == ringing
    io.chime_off()
    assert pin.state == idle
    io.close()


def test_an_active_low_relay_is_never_pulsed_at_start():
    factory = MockFactory()
    cfg = GpioConfig(chime_active_high=False)
    pin = factory.pin(cfg.chime_pin)
    DoorbellIO(cfg, lambda _e: None, SimClock(), pin_factory=factory).close()
    # MockPin records every state it was driven to: high from the first drive on,
    # never low (= relay closed).
    driven = [state for _t, state in pin.states[1:]]
    assert driven and all(driven), pin.states


class FakeCamera:
    main_size, lores_size, fps = (64, 48), (32, 24), 10.0

    def start(self, on_packet, on_lores):
        self.on_packet, self.on_lores = on_packet, on_lores

    def stop(self):
        pass


def test_the_watchdog_is_fed_only_while_both_streams_deliver():
    clock = SimClock()
    cam = FakeCamera()
    live = CameraLiveness(cam, clock, stale_after_s=5)
    assert not live.fresh(), "not before the camera starts"
    got = []
    live.start(got.append, got.append)
    assert live.fresh(), "a grace period from start"
    clock.advance(4)
    cam.on_packet(EncodedPacket(b"x", clock.monotonic(), True))
    cam.on_lores(LoresFrame(None, clock.monotonic()))
    assert len(got) == 2, "the callbacks still reach the controller"
    clock.advance(4)
    assert live.fresh()
    # The encoder keeps going but the lores thread has stalled.
    cam.on_packet(EncodedPacket(b"x", clock.monotonic(), False))
    clock.advance(2)
    assert not live.fresh()
    cam.on_lores(LoresFrame(None, clock.monotonic()))
    assert live.fresh()
    clock.advance(5.5)
    assert not live.fresh(), "nothing for longer than stale_after_s"


def test_no_gpio_is_one_clear_line_and_its_own_exit_code(monkeypatch):
    import types

    def broken(*_a, **_k):
        raise OSError(13, "Permission denied")

    fake = types.ModuleType("gpiozero.pins.lgpio")
    fake.LGPIOFactory = broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gpiozero.pins.lgpio", fake)
    with pytest.raises(GpioUnavailable) as err:
        PiHardware().pin_factory()
    assert err.value.exit_code == 5
    assert "GPIO unavailable" in str(err.value) and "gpio group" in str(err.value)
    # Without lgpio at all (a venv made without --system-site-packages):
    monkeypatch.setitem(sys.modules, "gpiozero.pins.lgpio", None)
    with pytest.raises(GpioUnavailable, match="python3-lgpio"):
        PiHardware().pin_factory()


def test_run_exits_with_the_hardware_code_and_one_line(tmp_path):
    from protocol.crypto import OwnerKeys, b64

    owner = OwnerKeys.generate()
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f'[device]\ndata_dir = "{tmp_path / "d"}"\n[owner]\n'
        f'sign_public = "{b64(owner.sign_public)}"\nbox_public = "{b64(owner.box_public)}"\n'
    )
    # A stand-in picamera2 that finds no camera, first on the path.
    fake = tmp_path / "site" / "picamera2"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "class Picamera2:\n    @staticmethod\n    def global_camera_info():\n        return []\n"
    )
    (fake.parent / "picamera2-0.3.36.dist-info").mkdir()
    (fake.parent / "picamera2-0.3.36.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: picamera2\nVersion: 0.3.36\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "firmware.cli", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": f"{fake.parent}:{ROOT}", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "no camera detected" in r.stderr


def test_the_pinned_set_downloads_for_64_bit_raspberry_pi_os(tmp_path):
    """What a Pi's installer fetches when the card lacks a wheel (Bookworm: 3.11,
    Trixie: 3.13).  manylinux_2_28 is listed too: av ships only that, and Pi OS
    Bookworm's glibc 2.36 runs it."""
    for python in ("3.11", "3.13"):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-cache-dir",
                "--platform",
                "manylinux2014_aarch64",
                "--platform",
                "manylinux_2_28_aarch64",
                "--python-version",
                python,
                "--implementation",
                "cp",
                "--only-binary=:all:",
                "--require-hashes",
                "-r",
                str(REQUIREMENTS),
                "-d",
                str(tmp_path / python),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if r.returncode != 0 and "Could not fetch URL" in r.stderr + r.stdout:
            pytest.skip(f"no package index reachable: {r.stderr.strip()[-300:]}")
        assert r.returncode == 0, r.stderr[-2000:]
        got = sorted(p.name for p in (tmp_path / python).glob("*.whl"))
        assert any("aarch64" in n for n in got) and len(got) == REQUIREMENTS.read_text().count(
            "=="
        ), got


@pytest.mark.parametrize("synced", [True, False])
def test_a_clip_recorded_before_the_clock_synced_is_marked(make_bell, recorder, synced):
    bell = make_bell("porch", clips={"pre_roll_s": 1.0, "post_roll_s": 1.0})
    bell.controller.clock_synced = lambda: synced
    bell.schedule_press(3.0)
    bell.run(6.0)
    (saved,) = recorder.of("clip_saved")
    assert bell.store.get(saved.data["clip"]).clock_synced is synced
