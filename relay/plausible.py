"""Plausibility at ingestion: schema-valid is not enough to be indexed.

A message whose times are far from the relay's clock (a clip "from" year 0001, a
device "last seen" in 9999), a clip that ends before it starts, or whose duration
disagrees with its start and end, is refused with ``implausible_time`` and
dead-lettered like any malformed message.

The window is wide in the past (a doorbell offline for weeks still delivers its
outbox) and narrow in the future (a clock a few minutes fast is a clock, a day fast
is a lie).  A ``status`` is not held to the past bound: the last will is made when
the doorbell connects and may be published weeks later; an old status never
overwrites a newer one anyway.

Example::

    check = Plausibility(clock=time.time)
    check(msg)   # returns, or raises ProtocolError("implausible_time", ...)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from protocol import Clip, Event, Message, ProtocolError, Status

MAX_PAST_S = 30 * 86400.0
MAX_FUTURE_S = 300.0
DURATION_SLACK_S = 1.0


@dataclass(frozen=True)
class Plausibility:
    """Checks one decoded message against the relay's ``clock`` (UTC seconds)."""

    clock: Callable[[], float] = field(default=time.time)
    max_past_s: float = MAX_PAST_S
    max_future_s: float = MAX_FUTURE_S

    def __call__(self, msg: Message) -> None:
        now = self.clock()
        self._within(now, "ts", msg.ts, past=not isinstance(msg, Status))
        if isinstance(msg, Event):
            self._within(now, "at", msg.at)
        if isinstance(msg, Clip):
            for name in ("start", "end", "trigger_at"):
                self._within(now, name, getattr(msg, name))
            span = (msg.end - msg.start).total_seconds()
            if span < 0:
                raise ProtocolError("implausible_time", "clip ends before it starts")
            if abs(span - msg.duration_s) > DURATION_SLACK_S:
                raise ProtocolError(
                    "implausible_time",
                    f"duration_s {msg.duration_s} but end - start is {span:.3f} s",
                )
            if msg.preroll_s > msg.duration_s + DURATION_SLACK_S:
                raise ProtocolError("implausible_time", "pre-roll longer than the clip")

    def _within(self, now: float, name: str, when: datetime, past: bool = True) -> None:
        t = when.timestamp()
        if t > now + self.max_future_s:
            raise ProtocolError("implausible_time", f"{name} {when.isoformat()} is in the future")
        if past and t < now - self.max_past_s:
            raise ProtocolError("implausible_time", f"{name} {when.isoformat()} is too old")
