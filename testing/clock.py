"""A clock the test moves: what the doorbell's and the relay's parts take as ``clock``."""

from __future__ import annotations


class ManualClock:
    """Returns ``t`` until the test moves it::

    >>> clock = ManualClock(100.0)
    >>> clock.t += 5
    >>> clock(), clock.now
    (105.0, 105.0)
    """

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    @property
    def now(self) -> float:
        return self.t

    @now.setter
    def now(self, value: float) -> None:
        self.t = value

    def __call__(self) -> float:
        return self.t
