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
    """The named hardware cannot be used here; the message says what to do.

    ``exit_code`` is what ``doorbell run`` exits with; the unit's
    ``RestartPreventExitStatus=`` lists these, so systemd does not restart in a loop
    what a restart cannot fix.
    """

    exit_code = 2


class NoCamera(HardwareUnavailable):
    exit_code = 3


class Picamera2TooOld(HardwareUnavailable):
    exit_code = 4


class GpioUnavailable(HardwareUnavailable):
    exit_code = 5


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
        from firmware.camera import picamera2_backend as pb

        cam = config.camera
        try:
            return pb.Picamera2Backend(
                clock,
                cam.main_size,
                cam.lores_size,
                cam.fps,
                cam.keyframe_interval_s,
                cam.bitrate,
                [m.polygon for m in config.masks],
                autofocus=cam.autofocus,
            )
        except pb.NoCameraDetected as err:
            raise NoCamera(str(err)) from None
        except pb.TooOld as err:
            raise Picamera2TooOld(str(err)) from None
        except pb.CameraUnavailable as err:
            raise HardwareUnavailable(str(err)) from None

    def pin_factory(self) -> Any:
        """gpiozero's lgpio factory, named: the one that works on every Pi since the 5
        (the kernel's gpiochip interface; LG_WD in the unit gives it a writable folder)."""
        try:
            from gpiozero.pins.lgpio import LGPIOFactory
        except ImportError as err:
            raise GpioUnavailable(
                f"GPIO unavailable: {err.name or 'lgpio'} is not importable "
                "(sudo apt install python3-lgpio; the venv needs --system-site-packages)"
            ) from None
        try:
            return LGPIOFactory()
        except Exception as err:  # lgpio.error, OSError: no chip, no permission
            raise GpioUnavailable(
                f"GPIO unavailable: cannot open the GPIO chip ({err}); is the doorbell user "
                "in the gpio group, and is this a Raspberry Pi?"
            ) from None


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
