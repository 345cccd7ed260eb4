"""The Raspberry Pi camera through picamera2 (imported lazily: only a Pi has it).

* main stream (YUV420) → hardware ``H264Encoder`` with SPS/PPS repeated at every
  keyframe (``repeat=True``) and one keyframe per ``keyframe_interval_s``;
* privacy masks are blanked in a ``pre_callback`` on the main buffer, before the
  encoder and before any JPEG, so masked pixels are never recorded;
* the lores stream's Y plane feeds motion detection from a capture thread.

picamera2 and libcamera come from Raspberry Pi OS (``python3-picamera2``); a venv
on the Pi needs ``--system-site-packages`` to see them.
"""

from __future__ import annotations

import importlib.metadata
import io
import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from firmware.camera.base import LoresSink, PacketSink
from firmware.clock import Clock
from firmware.masks import Polygon, blank_yuv420, rasterize
from firmware.packets import EncodedPacket, LoresFrame

log = logging.getLogger(__name__)


# The oldest picamera2 whose calls this backend makes as it makes them (Raspberry Pi
# OS Bookworm's current package is newer).
MIN_PICAMERA2 = (0, 3, 33)


class CameraUnavailable(RuntimeError):
    pass


class NoCameraDetected(CameraUnavailable):
    pass


class TooOld(CameraUnavailable):
    pass


def _version_tuple(text: str) -> tuple[int, ...]:
    """``"0.3.33"`` → ``(0, 3, 33)``; a suffix such as ``rc1`` ends the number.

    >>> _version_tuple("0.3.36")
    (0, 3, 36)
    """
    out = []
    for part in text.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, part))
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def check_version(version: str | None) -> None:
    if version is None or _version_tuple(version) < MIN_PICAMERA2:
        need = ".".join(map(str, MIN_PICAMERA2))
        raise TooOld(
            f"picamera2 {version or '(unknown version)'} is too old: {need} or newer is needed "
            "(sudo apt update && sudo apt full-upgrade)"
        )


def _picamera2_version() -> str | None:
    try:
        return importlib.metadata.version("picamera2")
    except importlib.metadata.PackageNotFoundError:
        return None


def _import_picamera2() -> Any:
    try:
        import picamera2  # type: ignore[import-not-found]
    except ImportError as err:
        raise CameraUnavailable(
            "picamera2 is not importable: on Raspberry Pi OS run "
            "'sudo apt install python3-picamera2' and create the venv with "
            f"--system-site-packages ({err})"
        ) from None
    except ValueError as err:
        # simplejpeg built against the system's numpy 1.x, imported with a pip numpy 2.
        raise CameraUnavailable(
            f"picamera2 cannot load ({err}): a numpy installed in the venv shadows the "
            "system's; remove it (/opt/doorbell/venv/bin/pip uninstall numpy)"
        ) from None
    check_version(_picamera2_version())
    if not picamera2.Picamera2.global_camera_info():
        raise NoCameraDetected(
            "no camera detected: check the ribbon cable (contacts facing the right way, "
            "both ends latched) and run 'rpicam-hello --list-cameras'"
        )
    return picamera2


class Picamera2Backend:
    """Main + lores streams on a Pi camera; see the module doc."""

    def __init__(
        self,
        clock: Clock,
        main_size: tuple[int, int] = (1280, 720),
        lores_size: tuple[int, int] = (320, 240),
        fps: float = 15.0,
        keyframe_interval_s: float = 1.0,
        bitrate: int = 2_000_000,
        masks: Sequence[Polygon] = (),
        autofocus: str = "continuous",
    ) -> None:
        self.clock = clock
        self._autofocus = autofocus
        self.main_size, self.lores_size, self.fps = main_size, lores_size, fps
        self._gop = max(1, round(fps * keyframe_interval_s))
        self._bitrate = bitrate
        self._mask = rasterize(masks, *main_size)
        self._pc2 = _import_picamera2()
        self._cam: Any = None
        self._encoder: Any = None
        self._blank: Callable[[Any], None] = lambda request: None  # set by start()
        self._stop = threading.Event()
        self._lores_thread: threading.Thread | None = None

    def start(self, on_packet: PacketSink, on_lores: LoresSink) -> None:
        from picamera2.encoders import H264Encoder  # type: ignore[import-not-found]
        from picamera2.outputs import Output  # type: ignore[import-not-found]

        pc2 = self._pc2
        cam = pc2.Picamera2()
        controls: dict[str, Any] = {"FrameRate": self.fps}
        if self._autofocus == "continuous" and "AfMode" in cam.camera_controls:
            # Camera Module 3: libcamera's AfModeEnum.Continuous (2); others lack AfMode.
            from libcamera import controls as lc  # type: ignore[import-not-found]

            controls["AfMode"] = lc.AfModeEnum.Continuous
        config = cam.create_video_configuration(
            main={"size": self.main_size, "format": "YUV420"},
            lores={"size": self.lores_size, "format": "YUV420"},
            controls=controls,
        )
        cam.configure(config)
        main_stride = cam.stream_configuration("main")["stride"]
        lores_stride = cam.stream_configuration("lores")["stride"]
        (w, h) = self.main_size

        clock = self.clock
        # The least (our clock - sensor time) seen when blanking a frame: stamping a
        # packet with its sensor time plus this puts it no later than its frame was
        # blanked, so a packet stamped after set_masks was blanked with the new masks
        # (the controller's pre-roll gate relies on it).  The encoder's output comes
        # later, asynchronously; anchoring to it stamped old-mask frames after a change.
        # Stamps still rise: the offset shrinks between two outputs by at most their
        # frames' sensor spacing (the clock is monotonic and blanking runs in order).
        blanked_at: dict[str, float] = {}

        def blank(request: Any) -> None:
            now = clock.monotonic()  # before the mask is read, see blanked_at
            # One read per frame: set_masks swaps the array between frames.
            mask = self._mask
            sensor_ns = request.get_metadata().get("SensorTimestamp")
            if sensor_ns is not None:
                offset = now - sensor_ns / 1e9
                blanked_at["offset"] = min(offset, blanked_at.get("offset", offset))
            if mask.any():
                with pc2.MappedArray(request, "main") as m:
                    blank_yuv420(m.array.reshape(-1), mask, w, h, main_stride)

        # Always installed, so masks the owner adds later apply without a restart.
        cam.pre_callback = blank
        self._blank = blank

        anchor: dict[str, float] = {}
        backend = self

        class _PacketOutput(Output):  # type: ignore[misc]
            def outputframe(
                self,
                frame: bytes,
                keyframe: bool = True,
                timestamp: int | None = None,
                *_: Any,
                **__: Any,
            ) -> None:
                # Keep the encoder's exact frame spacing, anchored to our clock.
                # ``timestamp``: µs since the encoder's first frame (picamera2's
                # Encoder._timestamp), whose sensor time is ``firsttimestamp`` (µs).
                first_us = getattr(backend._encoder, "firsttimestamp", None)
                if timestamp is not None and first_us is not None and "offset" in blanked_at:
                    t = (first_us + timestamp) / 1e6 + blanked_at["offset"]
                elif timestamp is None:
                    t = clock.monotonic()
                else:
                    if "us" not in anchor:
                        anchor["us"], anchor["t"] = float(timestamp), clock.monotonic()
                    t = anchor["t"] + (timestamp - anchor["us"]) / 1e6
                on_packet(EncodedPacket(bytes(frame), t, bool(keyframe)))

        self._encoder = H264Encoder(bitrate=self._bitrate, repeat=True, iperiod=self._gop)
        cam.start_recording(self._encoder, _PacketOutput())
        self._cam = cam
        lw, lh = self.lores_size

        def lores_loop() -> None:
            while not self._stop.is_set():
                try:
                    buf = cam.capture_buffer("lores")
                except Exception:
                    if not self._stop.is_set():  # else: the camera is stopping
                        log.exception("lores capture failed")
                    return
                y = np.frombuffer(buf, dtype=np.uint8)[: lores_stride * lh]
                luma = y.reshape(lh, lores_stride)[:, :lw].copy()
                on_lores(LoresFrame(luma, clock.monotonic()))

        self._lores_thread = threading.Thread(target=lores_loop, name="lores", daemon=True)
        self._lores_thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._cam is not None:
            self._cam.stop_recording()
            self._cam.close()
        if self._lores_thread is not None:
            self._lores_thread.join(timeout=5)

    def snapshot_jpeg(self) -> bytes:
        # picamera2 serves a capture from the request it kept (``queue``, the video
        # default), which went through pre_callback before any set_masks since: blank it
        # again with the masks in force now (blanking twice only adds black).
        request = self._cam.capture_request()
        try:
            self._blank(request)
            buf = io.BytesIO()
            request.save("main", buf, format="jpeg")
        finally:
            request.release()
        return buf.getvalue()

    def set_masks(self, polygons: Sequence[Polygon]) -> None:
        """Blank ``polygons`` from the next frame on (the pre_callback reads it per frame)."""
        self._mask = rasterize(polygons, *self.main_size)

    def request_keyframe(self) -> None:
        """Ask for a keyframe where the encoder can give one safely.

        The hardware (V4L2) encoder of a Pi 4 and older takes ``force_key_frame()``.
        On a Pi 5 ``H264Encoder`` is picamera2's ``LibavH264Encoder``, whose
        ``force_key_frame()`` makes its encode thread set ``frame.pict_type = "I"``,
        which PyAV 14 and later reject with a TypeError that kills the thread; there
        the GOP (one keyframe per ``keyframe_interval_s``) is the keyframe source.
        """
        if self._encoder is None or not keyframe_request_safe(self._encoder):
            return
        self._encoder.force_key_frame()


def keyframe_request_safe(encoder: Any) -> bool:
    """Whether ``encoder.force_key_frame()`` cannot crash its encode thread."""
    if not callable(getattr(encoder, "force_key_frame", None)):
        return False
    if type(encoder).__name__ != "LibavH264Encoder" and not any(
        c.__name__ == "LibavH264Encoder" for c in type(encoder).__mro__
    ):
        return True
    try:
        import av

        return _version_tuple(av.__version__) < (14,)
    except ImportError:
        return False
