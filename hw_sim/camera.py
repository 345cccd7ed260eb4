"""A simulated camera with the same interface as the Picamera2 backend.

Each call to :meth:`SimCamera.capture` renders the scene at the clock's current
time, blanks the privacy masks, encodes the main stream with libx264 and hands
the packets and a low-res luma frame to the callbacks, exactly as the Pi's
camera thread would.  A driver calls ``capture`` once per frame period, either
on a :class:`~firmware.clock.SimClock` (faster than real time) or from
:meth:`run_realtime` on the system clock.

Example::

    cam = SimCamera(make_scene("person", 640, 480), clock, fps=15)
    cam.start(on_packet=queue.put, on_lores=queue.put)
    for _ in range(150):
        clock.advance(1 / 15)
        cam.capture()
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from firmware.camera.base import LoresSink, PacketSink
from firmware.clock import Clock
from firmware.imaging import box_downscale, luma_u8
from firmware.jpeg import encode_jpeg
from firmware.masks import Polygon, blank_rgb, rasterize
from firmware.packets import LoresFrame
from hw_sim.encoder import X264Encoder
from hw_sim.scenes import Scene


def rgb_to_luma(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """BT.601 luma scaled to ``size`` (w, h), as the ISP's lores output gives it."""
    h, w, _ = rgb.shape
    lw, lh = size
    luma = luma_u8(rgb)
    if w % lw == 0 and h % lh == 0 and w // lw == h // lh:
        return box_downscale(luma, w // lw).astype(np.uint8)
    ys = (np.arange(lh) * h) // lh
    xs = (np.arange(lw) * w) // lw
    return luma[ys][:, xs]


class SimCamera:
    """Scene → masks → x264 packets, plus low-res luma; timestamps from the clock."""

    def __init__(
        self,
        scene: Scene,
        clock: Clock,
        main_size: tuple[int, int] = (640, 480),
        lores_size: tuple[int, int] = (320, 240),
        fps: float = 15.0,
        keyframe_interval_s: float = 1.0,
        masks: Sequence[Polygon] = (),
    ) -> None:
        self.scene = scene
        self.clock = clock
        self.main_size = main_size
        self.lores_size = lores_size
        self.fps = fps
        self._encoder = X264Encoder(main_size[0], main_size[1], fps, keyframe_interval_s)
        self._mask = rasterize(masks, *main_size)
        self._on_packet: PacketSink | None = None
        self._on_lores: LoresSink | None = None
        self._latest: np.ndarray | None = None
        self._t0: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_truth = False

    def start(self, on_packet: PacketSink, on_lores: LoresSink) -> None:
        self._on_packet, self._on_lores = on_packet, on_lores
        self._t0 = self.clock.monotonic()

    def capture(self) -> None:
        """Produce the frame for the clock's current time."""
        if self._on_packet is None or self._on_lores is None or self._t0 is None:
            raise RuntimeError("start() the camera first")
        t = self.clock.monotonic()
        frame = self.scene.render(t - self._t0)
        self.last_truth = frame.truth
        rgb = frame.rgb
        # The ISP's lores output sees the sensor, not the masked main buffer;
        # motion detection applies the same masks itself.
        lores = rgb_to_luma(rgb, self.lores_size)
        blank_rgb(rgb, self._mask)  # one read of the mask per frame (see set_masks)
        with self._lock:
            self._latest = rgb
        for packet in self._encoder.encode(rgb, t):
            self._on_packet(packet)
        self._on_lores(LoresFrame(lores, t))

    def run_realtime(self) -> None:
        """Capture at ``fps`` on the clock until :meth:`stop` (for ``doorbell run --sim``)."""
        period = 1.0 / self.fps
        next_t = self.clock.monotonic()
        while not self._stop.is_set():
            self.capture()
            next_t += period
            delay = next_t - self.clock.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_t = self.clock.monotonic()  # fell behind: drop, don't burst

    def start_thread(self) -> None:
        self._thread = threading.Thread(target=self.run_realtime, name="sim-camera", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.scene.close()

    def snapshot_jpeg(self) -> bytes:
        with self._lock:
            latest = self._latest
        if latest is None:
            raise RuntimeError("no frame captured yet")
        return encode_jpeg(latest)

    def request_keyframe(self) -> None:
        self._encoder.request_keyframe()

    def set_masks(self, polygons: Sequence[Polygon]) -> None:
        mask = rasterize(polygons, *self.main_size)
        # One assignment: capture() reads the mask once per frame, so a frame is
        # blanked with the old set or the new one, never half of each.
        self._mask = mask
        with self._lock:
            if self._latest is not None:
                latest = self._latest.copy()
                blank_rgb(latest, mask)
                self._latest = latest
