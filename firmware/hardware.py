"""Where ``doorbell run`` gets its camera and pins.

Like gpiozero's pin factories, a hardware provider is found by name through the
``open_doorbell.hardware`` entry-point group: ``pi`` (Picamera2 and gpiozero's
default pins, this module) ships with the firmware; ``sim`` (a rendered scene and
gpiozero's ``MockFactory``) comes with the simulator.  The firmware never imports a
provider it does not ship.

Example::

    hw = load_hardware("pi")
    camera = hw.camera(config, clock)      # CameraUnavailable: one line, exit 2
    bell = build(config, camera, hw.pin_factory(), clock, sink)
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Protocol

from firmware.camera.base import CameraBackend
from firmware.clock import Clock
from firmware.config import Config

GROUP = "open_doorbell.hardware"


class HardwareUnavailable(RuntimeError):
    """The named hardware cannot be used here; the message says what to do."""


class Hardware(Protocol):
    def camera(self, config: Config, clock: Clock) -> CameraBackend: ...

    def pin_factory(self) -> Any:
        """A gpiozero pin factory, or ``None`` for gpiozero's own choice."""
        ...


class PiHardware:
    """A Raspberry Pi camera through Picamera2, and gpiozero's default pins."""

    def __init__(self, **options: str) -> None:
        if options:
            raise HardwareUnavailable(f"the Pi takes no options (got {', '.join(options)})")

    def camera(self, config: Config, clock: Clock) -> CameraBackend:
        from firmware.camera.picamera2_backend import CameraUnavailable, Picamera2Backend

        cam = config.camera
        try:
            return Picamera2Backend(
                clock,
                cam.main_size,
                cam.lores_size,
                cam.fps,
                cam.keyframe_interval_s,
                cam.bitrate,
                [m.polygon for m in config.masks],
            )
        except CameraUnavailable as err:
            raise HardwareUnavailable(str(err)) from None

    def pin_factory(self) -> Any:
        return None


def available() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def load_hardware(name: str, **options: str) -> Hardware:
    """The provider registered as ``name``, made with ``options``."""
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            try:
                factory = ep.load()
            except ImportError as err:
                raise HardwareUnavailable(
                    f"hardware {name!r} is not installed here ({err.name} is missing)"
                ) from None
            return factory(**options)  # type: ignore[no-any-return]
    raise HardwareUnavailable(
        f"no hardware named {name!r} (installed: {', '.join(available()) or 'none'})"
    )
