"""The doorbell firmware on simulated hardware and a simulated clock.

:class:`SimDoorbell` wires the real controller, clip store and gpiozero devices
(on ``MockFactory`` pins) to a :class:`~hw_sim.camera.SimCamera`, then plays a
timeline of frames, button presses and PIR pulses faster than real time.

Example::

    bell = SimDoorbell(config, make_scene("person", 640, 480), emit=print)
    bell.schedule_press(10.0)
    bell.run(30.0)
    bell.close()
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from gpiozero.pins.mock import MockFactory

from firmware.app import Doorbell, build
from firmware.clock import SimClock
from firmware.config import Config
from firmware.controller import DoorbellEvent
from hw_sim.bounce import bounce_edges, drive
from hw_sim.camera import SimCamera
from hw_sim.scenes import Scene
from protocol.crypto import OwnerKeys


class SimDoorbell:
    """One doorbell in simulation; see the module doc."""

    def __init__(
        self,
        config: Config,
        scene: Scene,
        emit: Callable[[DoorbellEvent], None],
        start_wall: float | None = None,
        owner: OwnerKeys | None = None,
    ) -> None:
        self.config = config
        self.clock = SimClock(start_wall=start_wall)
        self.factory = MockFactory()
        # Without provisioned owner keys, the simulation makes an owner up, so
        # that its clips are encrypted exactly as a real doorbell's are.
        box_public = None
        self.owner = owner
        if config.owner.box_public is None:
            self.owner = owner or OwnerKeys.generate()
            box_public = self.owner.box_public
        cam = config.camera
        self.camera = SimCamera(
            scene,
            self.clock,
            main_size=cam.main_size,
            lores_size=cam.lores_size,
            fps=cam.fps,
            keyframe_interval_s=cam.keyframe_interval_s,
            masks=[m.polygon for m in config.masks],
        )
        self.doorbell: Doorbell = build(
            config, self.camera, self.factory, self.clock, emit, owner_box_public=box_public
        )
        self.store = self.doorbell.store
        self.io = self.doorbell.io
        self.controller = self.doorbell.controller
        self.uplink = self.doorbell.uplink
        self.button_pin = self.factory.pin(config.gpio.button_pin)
        self.chime_pin = self.factory.pin(config.gpio.chime_pin)
        self.pir_pin = (
            self.factory.pin(config.gpio.pir_pin) if config.gpio.pir_pin is not None else None
        )
        # (time, order, pin, level): order keeps same-time edges in schedule order.
        self._edges: list[tuple[float, int, object, bool]] = []
        self._order = itertools.count()
        self._frame = 0
        self.doorbell.start()

    def schedule_press(self, at: float, hold_s: float = 0.25, bounces: int = 4) -> None:
        """A bouncing press at ``at`` seconds of simulated time."""
        for t, level in bounce_edges(at, hold_s, bounces, seed=round(at * 1000)):
            heapq.heappush(self._edges, (t, next(self._order), self.button_pin, level))

    def schedule_pir(self, at: float, duration: float) -> None:
        if self.pir_pin is None:
            raise ValueError("this configuration has no PIR (gpio.pir_pin)")
        heapq.heappush(self._edges, (at, next(self._order), self.pir_pin, True))
        heapq.heappush(self._edges, (at + duration, next(self._order), self.pir_pin, False))

    def run(self, seconds: float) -> None:
        """Advance ``seconds`` of simulated time, frame by frame."""
        fps = self.config.camera.fps
        end_frame = self._frame + round(seconds * fps)
        while self._frame < end_frame:
            t = self._frame / fps
            self._apply_edges(until=t)
            self.clock.set(t)
            self.camera.capture()
            self.controller.process_pending()
            self._frame += 1
        self._apply_edges(until=self._frame / fps)

    def _apply_edges(self, until: float) -> None:
        while self._edges and self._edges[0][0] <= until:
            t, _, pin, level = heapq.heappop(self._edges)
            self.clock.set(max(t, self.clock.monotonic()))
            drive(pin, level)  # type: ignore[arg-type]
            self.controller.process_pending()

    def close(self) -> None:
        """Finish any clip in progress, then release pins and the camera."""
        self.doorbell.close()
        self.factory.close()
