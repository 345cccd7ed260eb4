"""Motion detection on the low-resolution luma stream.

What a porch camera must not alert on is mostly *light*: dusk, a porch lamp, the
IR-cut filter, headlights sweeping by; then weather and foliage.  What it must
alert on is a *thing* arriving: new edges where there were none, old edges
hidden.  So this detector compares structure, not brightness:

1. The luma is downscaled to about 80x60 and blurred (noise averages out),
   then taken in the log domain, where light is a factor: ``log(I) = log(R) + log(L)``.
2. Its gradients are compared with those of a running-average background.
   Light that changes smoothly over the picture (all of the above) barely
   changes log-gradients; a person's outline changes them sharply.
3. Each pixel's threshold adapts to how much that pixel's edges usually change,
   so leaves that always flicker stop counting after a few seconds, and noisy
   night frames are not motion.
4. Isolated changed pixels are dropped (rain, snow, noise); what is left must
   cover ``min_area`` of the unmasked picture for ``min_frames`` frames.
5. If most of the frame changes at once (the camera moved, a scene cut), the
   background is learnt again instead of alerting.

Masked pixels are ignored throughout.  ``sensitivity`` (1-10) sets ``min_area``.

Example::

    det = MotionDetector(sensitivity=5, min_frames=3)
    for frame in lores_frames:
        result = det.update(frame.luma)
        if result.active:
            print("motion", result.area, result.bbox)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware.imaging import box_downscale

# Work at about this height: enough for a person at the door, cheap on a Pi Zero 2.
_WORK_HEIGHT = 60
_LOG_OFFSET = 8.0  # keeps log() tame in the dark, where noise dominates


@dataclass(frozen=True, slots=True)
class MotionResult:
    """What the detector saw in one frame.

    ``area`` is the changed fraction of the unmasked frame; ``bbox`` is
    ``(x0, y0, x1, y1)`` in fractions of the frame, or ``None``.  ``active`` is the
    persisted decision; ``relearned`` says the background was learnt again.
    """

    active: bool
    area: float
    bbox: tuple[float, float, float, float] | None
    relearned: bool = False


def _sensitivity_to_area(sensitivity: int) -> float:
    # The changed area is mostly outline, so it grows with an object's perimeter:
    # at 5 a person at the door (about 8 %) or in the dark (about 4 %) counts and
    # a cat (about 1.5 %) does not.  1 -> 8 %, 10 -> 0.3 %, log-spaced so every
    # step feels like the same amount more (or less) sensitive.
    return float(0.08 * (0.003 / 0.08) ** ((sensitivity - 1) / 9))


def _blur3(img: np.ndarray) -> np.ndarray:
    p = np.pad(img, 1, mode="edge")
    rows = p[:-2] + p[1:-1] + p[2:]
    return (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) * (1.0 / 9.0)


def _gradients(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx = np.zeros_like(img)
    gy = np.zeros_like(img)
    gx[:, 1:-1] = (img[:, 2:] - img[:, :-2]) * 0.5
    gy[1:-1, :] = (img[2:, :] - img[:-2, :]) * 0.5
    return gx, gy


class MotionDetector:
    """Structure-change detector; see the module doc."""

    def __init__(
        self,
        sensitivity: int = 5,
        min_frames: int = 3,
        mask: np.ndarray | None = None,
        alpha: float = 0.04,
        relearn_fraction: float = 0.45,
        warmup_frames: int = 15,
    ) -> None:
        if not 1 <= sensitivity <= 10:
            raise ValueError("sensitivity is 1..10")
        if min_frames < 1:
            raise ValueError("min_frames must be at least 1")
        self.sensitivity = sensitivity
        self.min_area = _sensitivity_to_area(sensitivity)
        self.min_frames = min_frames
        self.alpha = alpha
        self.relearn_fraction = relearn_fraction
        self.warmup_frames = warmup_frames
        self._mask_src = mask
        self._valid: np.ndarray | None = None
        self._nvalid = 0
        self._factor = 1
        self._bg: np.ndarray | None = None  # log-luma background
        self._bg_gx: np.ndarray | None = None
        self._bg_gy: np.ndarray | None = None
        self._activity: np.ndarray | None = None  # usual edge change per pixel
        self._streak = 0
        self._frames = 0

    def reset(self) -> None:
        self._bg = None
        self._streak = 0
        self._frames = 0

    def _setup(self, h: int, w: int) -> None:
        self._factor = f = max(1, h // _WORK_HEIGHT)
        hh, ww = h // f, w // f
        if self._mask_src is not None:
            m = self._mask_src
            if m.shape != (h, w):
                ys = (np.arange(h) * m.shape[0]) // h
                xs = (np.arange(w) * m.shape[1]) // w
                m = m[ys][:, xs]
            # A work pixel counts only if none of its source pixels is masked;
            # then one more pixel of margin, for the blur and the gradients.
            blocked = m[: hh * f, : ww * f].reshape(hh, f, ww, f).any(axis=(1, 3))
            grown = blocked.copy()
            grown[1:] |= blocked[:-1]
            grown[:-1] |= blocked[1:]
            grown[:, 1:] |= blocked[:, :-1]
            grown[:, :-1] |= blocked[:, 1:]
            self._valid = ~grown
        else:
            self._valid = np.ones((hh, ww), dtype=bool)
        self._valid[[0, -1], :] = False  # gradients are undefined at the border
        self._valid[:, [0, -1]] = False
        self._nvalid = int(self._valid.sum())

    def _learn(self, logf: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> None:
        self._bg, self._bg_gx, self._bg_gy = logf.copy(), gx.copy(), gy.copy()

    def update(self, luma: np.ndarray) -> MotionResult:
        if self._valid is None:
            self._setup(*luma.shape)
        valid = self._valid
        assert valid is not None
        small = _blur3(box_downscale(luma, self._factor))
        logf = np.log(small + _LOG_OFFSET)
        gx, gy = _gradients(logf)
        self._frames += 1
        if self._bg is None or self._bg_gx is None or self._bg_gy is None:
            self._learn(logf, gx, gy)
            self._activity = np.full(logf.shape, 0.01, dtype=np.float32)
            return MotionResult(False, 0.0, None)
        if self._nvalid == 0:
            return MotionResult(False, 0.0, None)

        change = np.abs(gx - self._bg_gx) + np.abs(gy - self._bg_gy)
        activity = self._activity
        assert activity is not None
        # An edge change counts when it is well above what this pixel usually does.
        thresh = 0.05 + 4.0 * activity
        changed = (change > thresh) & valid
        # Drop isolated pixels (rain, snow, noise): keep those with a changed neighbour.
        c = changed
        neighbours = np.zeros_like(c)
        neighbours[1:] |= c[:-1]
        neighbours[:-1] |= c[1:]
        neighbours[:, 1:] |= c[:, :-1]
        neighbours[:, :-1] |= c[:, 1:]
        changed = c & neighbours
        area = float(changed.sum()) / self._nvalid

        if area >= self.relearn_fraction:
            self._learn(logf, gx, gy)
            self._streak = 0
            return MotionResult(False, area, None, relearned=True)

        # Learn: the background everywhere (a visitor who stays fades in within
        # seconds, and so does the ghost they leave); activity slowly, and not
        # from what is moving now, so a visitor does not teach it to ignore them.
        a = self.alpha
        self._bg += a * (logf - self._bg)
        self._bg_gx += a * (gx - self._bg_gx)
        self._bg_gy += a * (gy - self._bg_gy)
        # A plain running mean at first (so flicker is known by the end of the
        # warm-up), then a slow average.
        rate = max(0.03, 1.0 / self._frames)
        learn = np.where(changed, rate * 0.07, rate).astype(np.float32)
        activity += learn * (np.minimum(change, 0.5) - activity)

        warming = self._frames <= self.warmup_frames
        moving = area >= self.min_area and not warming
        bbox = None
        if moving:
            ys, xs = np.nonzero(changed)
            hh, ww = changed.shape
            bbox = (
                float(xs.min()) / ww,
                float(ys.min()) / hh,
                float(xs.max() + 1) / ww,
                float(ys.max() + 1) / hh,
            )
            self._streak += 1
        else:
            self._streak = 0
        return MotionResult(self._streak >= self.min_frames, area, bbox)
