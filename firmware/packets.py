"""What every camera backend yields: encoded H.264 access units with timestamps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One encoded frame (an Annex-B access unit).

    ``t`` is the capture time in seconds on the injected monotonic clock.  A
    keyframe carries SPS and PPS in ``data`` so that any keyframe can start a clip.
    """

    data: bytes
    t: float
    keyframe: bool

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class LoresFrame:
    """A low-resolution luma frame for motion detection (uint8, shape ``(h, w)``)."""

    luma: np.ndarray
    t: float
