"""Injectable clocks.

Everything that schedules or timestamps (the controller, the ring buffer, the
camera) reads time from a :class:`Clock` passed in, never from :mod:`time`
directly, so a 60-second scenario runs in a fraction of a second in tests and
gives the same result every time.

Example::

    clock = SimClock(start_wall=1_700_000_000.0)
    clock.advance(2.5)
    assert clock.monotonic() == 2.5
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """A source of time: a monotonic reading for intervals, a wall reading for records."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for intervals and timers)."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch, UTC (for what goes on record)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass on this clock."""
        ...


class SystemClock:
    """The real clocks of the machine."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class SimClock:
    """A clock that only moves when told to; ``sleep`` advances it instantly.

    The wall reading is ``start_wall`` plus the simulated seconds elapsed, so
    records made in simulation carry plausible UTC times.
    """

    def __init__(self, start_wall: float | None = None, start: float = 0.0) -> None:
        self._now = float(start)
        self._start = float(start)
        self._start_wall = time.time() if start_wall is None else float(start_wall)
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def wall(self) -> float:
        with self._lock:
            return self._start_wall + (self._now - self._start)

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (never backwards) and return the new reading."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, t: float) -> None:
        """Jump to ``t``; jumping backwards is an error."""
        with self._lock:
            if t < self._now:
                raise ValueError(f"a clock cannot go backwards ({t} < {self._now})")
            self._now = t

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)
