"""Drive gpiozero mock pins the way real switch contacts behave.

gpiozero's mock pins change state cleanly and ignore ``bounce_time``; a real
push button chatters for a few milliseconds on press and on release.  These
helpers make that chatter, so the firmware's debouncing is tested for real.

Example (a press held for 0.3 s, on a simulated clock)::

    pin = factory.pin(17)
    for t, level in bounce_edges(at=clock.monotonic(), hold_s=0.3):
        clock.set(t)
        drive(pin, level)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from gpiozero.pins.mock import MockPin


def bounce_edges(
    at: float,
    hold_s: float = 0.25,
    bounces: int = 4,
    span_s: float = 0.004,
    active_low: bool = True,
    seed: int | None = None,
) -> Iterator[tuple[float, bool]]:
    """Yield ``(time, level)`` edges for one press held ``hold_s`` seconds, with chatter.

    The contact closes at ``at``, then opens and closes ``bounces`` times within
    ``span_s``; on release it opens and chatters the same way, ending open.
    ``active_low`` is the usual wiring: pressed pulls the pin to ground.
    """
    rng = random.Random(seed)
    pressed, released = (not active_low), active_low

    def chatter(t0: float, settle: bool) -> Iterator[tuple[float, bool]]:
        times = sorted(rng.uniform(0.0002, span_s) for _ in range(2 * bounces))
        yield t0, settle
        for i, dt in enumerate(times):
            # Alternate away from and back to the settled level, ending settled.
            yield t0 + dt, (not settle) if i % 2 == 0 else settle

    yield from chatter(at, pressed)
    yield from chatter(at + hold_s, released)


def drive(pin: MockPin, level: bool) -> None:
    if level:
        pin.drive_high()
    else:
        pin.drive_low()


def press(
    pin: MockPin,
    sleep_until: Callable[[float], None],
    at: float,
    hold_s: float = 0.25,
    bounces: int = 4,
    seed: int | None = None,
) -> None:
    """Press and release ``pin`` with chatter, moving time with ``sleep_until(t)``."""
    for t, level in bounce_edges(at, hold_s, bounces, seed=seed):
        sleep_until(t)
        drive(pin, level)
