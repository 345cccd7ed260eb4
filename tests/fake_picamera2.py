"""A recorded fake of the picamera2 calls firmware/camera/picamera2_backend.py makes.

Every method the backend calls is defined with picamera2 0.3.36's own signature
(read from raspberrypi/picamera2: picamera2/picamera2.py, encoders/h264_encoder.py,
encoders/libav_h264_encoder.py, outputs/output.py, request.py), so a call with a
wrong name or argument fails here as it would on a Pi.  Calls are recorded in
``CALLS``.  The encoders behave as upstream's do where it matters:

* ``H264Encoder`` (V4L2, Pi 4 and older): ``force_key_frame()`` makes the next
  frame a keyframe;
* ``LibavH264Encoder`` (Pi 5): ``force_key_frame()`` makes its encode thread set
  ``frame.pict_type = "I"`` on a real PyAV frame, which PyAV 14+ rejects with a
  TypeError that ends the thread, as upstream's ``_encode`` does.
"""

from __future__ import annotations

import sys
import threading
import time
import types
from typing import Any

import av

CALLS: list[tuple[str, dict[str, Any]]] = []
CAMERAS: list[dict[str, Any]] = [{"Model": "imx708", "Location": 2, "Num": 0}]
CONTROLS: dict[str, tuple[Any, Any, Any]] = {
    "AfMode": (0, 2, 0),
    "FrameRate": (1.0, 120.0, None),
}


def _record(call: str, **kwargs: Any) -> None:
    CALLS.append((call, kwargs))


class AfModeEnum:
    Manual, Auto, Continuous = 0, 1, 2


class Output:
    def __init__(self, pts=None):
        self.pts = pts

    def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):
        pass


class _Encoder:
    def __init__(self) -> None:
        self._key_frames_requested = 0
        self._key_frames_generated = 0
        self.iperiod: int | None = None

    def force_key_frame(self):
        _record(f"{type(self).__name__}.force_key_frame")
        self._key_frames_requested += 1

    def _next_is_key(self, n: int) -> bool:
        if self._key_frames_requested > self._key_frames_generated:
            self._key_frames_generated += 1
            self._mark_key()
            return True
        return n % (self.iperiod or 30) == 0

    def _mark_key(self) -> None:
        pass


class H264Encoder(_Encoder):
    def __init__(
        self,
        bitrate=None,
        repeat=True,
        iperiod=None,
        framerate=None,
        enable_sps_framerate=False,
        qp=None,
        profile=None,
    ):
        super().__init__()
        _record("H264Encoder", bitrate=bitrate, repeat=repeat, iperiod=iperiod)
        self.iperiod = iperiod


class LibavH264Encoder(_Encoder):
    def __init__(self, bitrate=None, repeat=True, iperiod=30, framerate=30, qp=None, profile=None):
        super().__init__()
        _record("LibavH264Encoder", bitrate=bitrate, repeat=repeat, iperiod=iperiod)
        self.iperiod = iperiod

    def _mark_key(self) -> None:
        # Upstream: frame.pict_type = "I" (a TypeError on PyAV >= 14).
        frame = av.VideoFrame(16, 16, "yuv420p")
        frame.pict_type = "I"


class MappedArray:
    def __init__(self, request, stream: str, reshape: bool = True, write: bool = True):
        raise AssertionError("the contract scenes use no masks")


class CompletedRequest:
    """The calls the backend makes on a request (picamera2 request.py)."""

    def get_metadata(self):
        return {"SensorTimestamp": time.monotonic_ns()}

    def save(self, name, file_output, format=None, exif_data=None):
        _record("CompletedRequest.save", name=name, format=format)
        file_output.write(b"\xff\xd8\xff\xe0fake jpeg\xff\xd9")

    def release(self):
        pass


class Picamera2:
    def __init__(self, camera_num=0, verbose_console=None, tuning=None, allocator=None):
        _record("Picamera2", camera_num=camera_num)
        self._config: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pre_callback = None
        self.encoder_died: BaseException | None = None

    @staticmethod
    def global_camera_info():
        return list(CAMERAS)

    @property
    def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]:
        return dict(CONTROLS)

    def create_video_configuration(
        self,
        main={},  # noqa: B006 - upstream's signature
        lores=None,
        raw={},  # noqa: B006
        transform=None,
        colour_space=None,
        buffer_count=6,
        controls={},  # noqa: B006
        display="main",
        encode="main",
        queue=True,
        sensor={},  # noqa: B006
        use_case="video",
    ):
        _record("create_video_configuration", main=main, lores=lores, controls=controls)
        return {"main": dict(main), "lores": dict(lores or {}), "controls": dict(controls)}

    def configure(self, camera_config=None):
        _record("configure", camera_config=camera_config)
        self._config = camera_config

    def stream_configuration(self, name="main"):
        assert self._config is not None, "configure() first"
        w, h = self._config[name]["size"]
        return {"size": (w, h), "stride": (w + 63) // 64 * 64, "format": "YUV420"}

    def _fps(self) -> float:
        assert self._config is not None
        return float(self._config["controls"].get("FrameRate", 30))

    def start_recording(self, encoder, output, pts=None, config=None, quality=None, name=None):
        _record("start_recording", encoder=type(encoder).__name__)
        period = 1 / self._fps()

        def encode() -> None:
            n, t0 = 0, time.monotonic()
            try:
                while not self._stop.is_set():
                    key = encoder._next_is_key(n)
                    output.outputframe(b"\x00\x00\x00\x01" + bytes(64), key, int(n * period * 1e6))
                    n += 1
                    self._stop.wait(max(0.0, t0 + n * period - time.monotonic()))
            except BaseException as err:  # upstream's encode thread dies the same way
                self.encoder_died = err

        self._thread = threading.Thread(target=encode, name="fake-encoder", daemon=True)
        self._thread.start()

    def capture_buffer(self, name="main", wait=None, signal_function=None):
        if self._stop.wait(1 / self._fps()):
            raise RuntimeError("camera stopped")
        cfg = self.stream_configuration(name)
        return bytes(cfg["stride"] * cfg["size"][1] * 3 // 2)

    def capture_file(
        self, file_output, name="main", format=None, wait=None, signal_function=None, exif_data=None
    ):
        _record("capture_file", name=name, format=format)
        file_output.write(b"\xff\xd8\xff\xe0fake jpeg\xff\xd9")

    def capture_request(self, wait=None, signal_function=None, flush=None):
        _record("capture_request")
        return CompletedRequest()

    def stop_recording(self):
        _record("stop_recording")
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def close(self):
        _record("close")


def install(monkeypatch: Any, pi5: bool) -> None:
    """Put the fake in ``sys.modules`` as picamera2 (+ encoders, outputs) and libcamera."""
    CALLS.clear()
    pkg = types.ModuleType("picamera2")
    pkg.Picamera2 = Picamera2  # type: ignore[attr-defined]
    pkg.MappedArray = MappedArray  # type: ignore[attr-defined]
    encoders = types.ModuleType("picamera2.encoders")
    # Upstream's encoders/__init__.py: H264Encoder is the libav one without a VC4.
    encoders.H264Encoder = LibavH264Encoder if pi5 else H264Encoder  # type: ignore[attr-defined]
    encoders.LibavH264Encoder = LibavH264Encoder  # type: ignore[attr-defined]
    outputs = types.ModuleType("picamera2.outputs")
    outputs.Output = Output  # type: ignore[attr-defined]
    libcamera = types.ModuleType("libcamera")
    controls = types.ModuleType("libcamera.controls")
    controls.AfModeEnum = AfModeEnum  # type: ignore[attr-defined]
    libcamera.controls = controls  # type: ignore[attr-defined]
    for name, mod in {
        "picamera2": pkg,
        "picamera2.encoders": encoders,
        "picamera2.outputs": outputs,
        "libcamera": libcamera,
        "libcamera.controls": controls,
    }.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr("firmware.camera.picamera2_backend._picamera2_version", lambda: "0.3.36")
