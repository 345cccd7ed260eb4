"""One contract, every camera: what the controller relies on from a camera backend.

The same tests run over the simulated camera and over the Picamera2 backend driving a
recorded fake of picamera2 (tests/fake_picamera2.py, upstream's signatures), as a
Pi 4 (V4L2 encoder) and as a Pi 5 (picamera2's libav encoder) — the way gpiozero
runs one suite over every pin factory.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import av
import pytest

from firmware.camera.picamera2_backend import (
    NoCameraDetected,
    Picamera2Backend,
    TooOld,
    check_version,
)
from firmware.clock import SystemClock
from firmware.hardware import NoCamera, PiHardware
from firmware.packets import EncodedPacket, LoresFrame
from hw_sim.hardware import RealtimeSimCamera
from hw_sim.scenes import make_scene
from tests import fake_picamera2

MAIN, LORES, FPS = (320, 240), (160, 120), 20.0


def make_sim(monkeypatch: Any) -> Any:
    return RealtimeSimCamera(make_scene("porch", *MAIN), SystemClock(), MAIN, LORES, FPS, 0.5, [])


def make_pi(pi5: bool):
    def make(monkeypatch: Any) -> Any:
        fake_picamera2.install(monkeypatch, pi5=pi5)
        return Picamera2Backend(SystemClock(), MAIN, LORES, FPS, 0.5, 1_000_000)

    return make


CAMERAS = {"sim": make_sim, "picamera2-pi4": make_pi(False), "picamera2-pi5": make_pi(True)}


@pytest.fixture(params=list(CAMERAS))
def camera(request, monkeypatch):
    cam = CAMERAS[request.param](monkeypatch)
    yield cam
    cam.stop()


class Collect:
    def __init__(self) -> None:
        self.packets: queue.Queue[EncodedPacket] = queue.Queue()
        self.lores: queue.Queue[LoresFrame] = queue.Queue()

    def take(self, q: queue.Queue, n: int, timeout: float = 10.0) -> list:
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            out.append(q.get(timeout=max(0.01, deadline - time.monotonic())))
        return out


def started(camera) -> Collect:
    c = Collect()
    camera.start(c.packets.put, c.lores.put)
    return c


def test_sizes_and_rate_are_what_was_asked(camera):
    assert tuple(camera.main_size) == MAIN and tuple(camera.lores_size) == LORES
    assert camera.fps == FPS


def test_packets_start_at_a_keyframe_and_keep_time_order(camera):
    c = started(camera)
    packets = c.take(c.packets, 12)
    assert packets[0].keyframe, "a clip can start at the first packet"
    assert all(p.data for p in packets)
    times = [p.t for p in packets]
    assert times == sorted(times)
    assert any(p.keyframe for p in packets[1:]), "keyframes recur (the GOP)"


def test_lores_frames_are_luma_of_the_lores_size(camera):
    c = started(camera)
    for f in c.take(c.lores, 3):
        assert f.luma.shape == (LORES[1], LORES[0]) and f.luma.dtype.name == "uint8"


def test_a_keyframe_request_never_stops_the_stream(camera):
    c = started(camera)
    c.take(c.packets, 2)
    camera.request_keyframe()
    camera.request_keyframe()
    after = c.take(c.packets, 15, timeout=5)
    assert any(p.keyframe for p in after)
    died = getattr(getattr(camera, "_cam", None), "encoder_died", None)
    assert died is None, f"the encoder thread died: {died!r}"


def test_a_snapshot_is_a_jpeg(camera):
    c = started(camera)
    c.take(c.packets, 1)
    assert camera.snapshot_jpeg()[:2] == b"\xff\xd8"


def test_nothing_arrives_after_stop(camera):
    c = started(camera)
    c.take(c.packets, 2)
    camera.stop()
    for q in (c.packets, c.lores):
        while not q.empty():
            q.get()
    threading.Event().wait(3 / FPS)  # three frame periods: a late frame would be here
    assert c.packets.empty() and c.lores.empty()


# What the Picamera2 backend asks of picamera2, beyond the contract.


def test_camera_module_3_gets_continuous_autofocus(monkeypatch):
    cam = make_pi(False)(monkeypatch)
    started(cam)
    cam.stop()
    (config,) = [kw for name, kw in fake_picamera2.CALLS if name == "create_video_configuration"]
    assert config["controls"]["AfMode"] == fake_picamera2.AfModeEnum.Continuous


def test_a_fixed_focus_camera_gets_no_autofocus(monkeypatch):
    cam = make_pi(False)(monkeypatch)
    monkeypatch.setattr(fake_picamera2, "CONTROLS", {"FrameRate": (1.0, 120.0, None)})
    started(cam)
    cam.stop()
    (config,) = [kw for name, kw in fake_picamera2.CALLS if name == "create_video_configuration"]
    assert "AfMode" not in config["controls"]


def test_pi4_keyframe_requests_reach_the_encoder_and_pi5_ones_do_not(monkeypatch):
    for pi5, expected in ((False, 1), (True, 0 if av.__version__ >= "14" else 1)):
        cam = make_pi(pi5)(monkeypatch)
        started(cam)
        cam.request_keyframe()
        cam.stop()
        forced = [n for n, _ in fake_picamera2.CALLS if n.endswith("force_key_frame")]
        assert len(forced) == expected, (pi5, fake_picamera2.CALLS)


def test_no_camera_is_one_clear_line_and_its_own_exit_code(monkeypatch):
    fake_picamera2.install(monkeypatch, pi5=False)
    monkeypatch.setattr(fake_picamera2, "CAMERAS", [])
    with pytest.raises(NoCameraDetected, match="no camera detected"):
        Picamera2Backend(SystemClock(), MAIN, LORES, FPS)
    from firmware.config import parse_config

    with pytest.raises(NoCamera) as err:
        PiHardware().camera(parse_config({}), SystemClock())
    assert err.value.exit_code == 3 and "\n" not in str(err.value)


@pytest.mark.parametrize("version", ["0.3.32", "0.3.9", "0.2.99", None])
def test_an_old_picamera2_is_refused_with_what_to_do(version):
    with pytest.raises(TooOld, match=r"too old.*apt"):
        check_version(version)


@pytest.mark.parametrize("version", ["0.3.33", "0.3.36", "0.4.0", "1.0.0rc1"])
def test_a_current_picamera2_is_accepted(version):
    check_version(version)
