"""The doorbell's GPIO: a push button, a chime relay and an optional PIR, via gpiozero.

Callbacks only put a timestamped edge on the controller's queue; debouncing,
cooldown and chime timing live in the controller, on the injected clock.  Any
gpiozero pin factory works: the default one on a Pi (lgpio), or
``MockFactory`` in simulation and tests.

Example::

    from gpiozero.pins.mock import MockFactory
    io = DoorbellIO(GpioConfig(), queue.put, clock, pin_factory=MockFactory())
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpiozero import Button, DigitalInputDevice, DigitalOutputDevice

from firmware.clock import Clock
from firmware.config import GpioConfig
from firmware.events import ButtonEdge, PirEdge


class DoorbellIO:
    """Owns the gpiozero devices.  ``chime_on``/``chime_off`` are called by the controller only."""

    def __init__(
        self,
        cfg: GpioConfig,
        submit: Callable[[object], None],
        clock: Clock,
        pin_factory: Any = None,
    ) -> None:
        # bounce_time=None: gpiozero's debounce drops edges silently on real pins
        # and is ignored by mock pins; ours is in the controller and testable.
        self.button = Button(
            cfg.button_pin, pull_up=True, bounce_time=None, pin_factory=pin_factory
        )
        self.button.when_pressed = lambda: submit(ButtonEdge(True, clock.monotonic()))
        self.button.when_released = lambda: submit(ButtonEdge(False, clock.monotonic()))
        # initial_value=False is "relay open" for either polarity: gpiozero drives an
        # active-low pin high from the start.
        self.chime = DigitalOutputDevice(
            cfg.chime_pin,
            active_high=cfg.chime_active_high,
            initial_value=False,
            pin_factory=pin_factory,
        )
        self.pir: DigitalInputDevice | None = None
        if cfg.pir_pin is not None:
            # A PIR module (HC-SR501 and kin) holds its output itself, so a plain
            # edge-driven input suffices; MotionSensor's sampling thread would only
            # add latency and a second clock.
            self.pir = DigitalInputDevice(cfg.pir_pin, pull_up=False, pin_factory=pin_factory)
            self.pir.when_activated = lambda: submit(PirEdge(True, clock.monotonic()))
            self.pir.when_deactivated = lambda: submit(PirEdge(False, clock.monotonic()))

    def chime_on(self) -> None:
        self.chime.on()

    def chime_off(self) -> None:
        self.chime.off()

    def close(self) -> None:
        for dev in (self.button, self.chime, self.pir):
            if dev is not None:
                dev.close()
