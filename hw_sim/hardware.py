"""Simulated hardware for ``doorbell run --sim``: a scene in real time, mock pins.

Registered as the ``sim`` provider of the ``open_doorbell.hardware`` entry-point
group (see :mod:`firmware.hardware`).
"""

from __future__ import annotations

from typing import Any

from gpiozero.pins.mock import MockFactory

from firmware.camera.base import LoresSink, PacketSink
from firmware.clock import Clock
from firmware.config import Config
from firmware.hardware import HardwareUnavailable
from hw_sim.camera import SimCamera
from hw_sim.scenes import UnknownScene, make_scene


class RealtimeSimCamera(SimCamera):
    """A :class:`SimCamera` that captures on its own thread at its frame rate."""

    def start(self, on_packet: PacketSink, on_lores: LoresSink) -> None:
        super().start(on_packet, on_lores)
        self.start_thread()


class SimHardware:
    def __init__(self, scene: str = "porch") -> None:
        self.scene = scene

    def camera(self, config: Config, clock: Clock) -> RealtimeSimCamera:
        cam = config.camera
        try:
            scene = make_scene(self.scene, *cam.main_size)
        except UnknownScene as err:
            raise HardwareUnavailable(str(err)) from None
        return RealtimeSimCamera(
            scene,
            clock,
            cam.main_size,
            cam.lores_size,
            cam.fps,
            cam.keyframe_interval_s,
            [m.polygon for m in config.masks],
        )

    def pin_factory(self) -> Any:
        return MockFactory()
