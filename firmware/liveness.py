"""Is the camera still delivering?  What the systemd watchdog is fed on.

The controller thread calls the heartbeat, so a hung controller already starves the
watchdog; but a camera thread that stalls (a wedged libcamera request, an encoder
thread killed by an exception) leaves the controller happily idle.  This wrapper
notes when the last encoded packet and the last low-res frame arrived, and the
heartbeat is sent only while both are recent.

Example::

    camera = CameraLiveness(hardware.camera(cfg, clock), clock, stale_after_s=5)
    bell = build(cfg, camera, pins, clock, sink)
    bell.run_forever(heartbeat=lambda: camera.fresh() and notifier.heartbeat())
"""

from __future__ import annotations

from typing import Any

from firmware.camera.base import CameraBackend, LoresSink, PacketSink
from firmware.clock import Clock
from firmware.packets import EncodedPacket, LoresFrame


class CameraLiveness:
    """A :class:`CameraBackend` that remembers when each stream last delivered."""

    def __init__(self, camera: CameraBackend, clock: Clock, stale_after_s: float) -> None:
        self.camera, self.clock, self.stale_after_s = camera, clock, stale_after_s
        self.main_size, self.lores_size, self.fps = camera.main_size, camera.lores_size, camera.fps
        self.last_packet: float | None = None
        self.last_lores: float | None = None
        self._started: float | None = None

    def start(self, on_packet: PacketSink, on_lores: LoresSink) -> None:
        self._started = self.clock.monotonic()

        def packet(p: EncodedPacket) -> None:
            self.last_packet = self.clock.monotonic()
            on_packet(p)

        def lores(f: LoresFrame) -> None:
            self.last_lores = self.clock.monotonic()
            on_lores(f)

        self.camera.start(packet, lores)

    def fresh(self) -> bool:
        """Both streams delivered within ``stale_after_s`` (counted from start at first)."""
        if self._started is None:
            return False
        now = self.clock.monotonic()
        for last in (self.last_packet, self.last_lores):
            if now - (self._started if last is None else last) > self.stale_after_s:
                return False
        return True

    def stop(self) -> None:
        self.camera.stop()

    def snapshot_jpeg(self) -> bytes:
        return self.camera.snapshot_jpeg()

    def request_keyframe(self) -> None:
        self.camera.request_keyframe()

    def __getattr__(self, name: str) -> Any:
        # Anything else a backend offers (the simulator's test hooks) passes through.
        return getattr(self.camera, name)
