"""Motion detection on the low-resolution luma stream.

The detector keeps a running-average background on a downscaled, blurred copy of
the luma, and looks for pixels that differ from it by more than the sensor noise
would explain.  What makes it usable on a porch:

* **Masked pixels are ignored** (the same privacy masks as the recording).
* **Global light changes are not motion.**  Before differencing, the frame's
  brightness is matched to the background's (a robust gain from the median
  ratio).  If most of the frame still changes at once (a light switched on, the
  IR-cut filter flipped), the background is re-learned instead of alerting.
* **Noise adapts.**  The per-pixel threshold tracks a running estimate of the
  noise level, so grainy night frames don't alert and clean day frames stay sensitive.
* **Persistence.**  Motion must last ``min_frames`` frames before it counts.

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

# Work at this height: enough for a person at the door, cheap on a Pi Zero 2.
_WORK_HEIGHT = 60


@dataclass(frozen=True, slots=True)
class MotionResult:
    """What the detector saw in one frame.

    ``area`` is the changed fraction of the unmasked frame; ``bbox`` is
    ``(x0, y0, x1, y1)`` in fractions of the frame, or ``None``.  ``active`` is the
    persisted decision; ``relearned`` says a global change reset the background.
    """

    active: bool
    area: float
    bbox: tuple[float, float, float, float] | None
    relearned: bool = False


def _sensitivity_to_area(sensitivity: int) -> float:
    # 1 -> 4 % of the frame must change, 10 -> 0.1 %: log-spaced, so every step
    # feels like the same amount more (or less) sensitive.
    return float(0.04 * (0.001 / 0.04) ** ((sensitivity - 1) / 9))


class MotionDetector:
    """Background-subtraction detector with light-change rejection.  See the module doc."""

    def __init__(
        self,
        sensitivity: int = 5,
        min_frames: int = 3,
        mask: np.ndarray | None = None,
        alpha: float = 0.03,
        relearn_fraction: float = 0.5,
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
        self._mask_src = mask
        self._valid: np.ndarray | None = None  # True where pixels count
        self._bg: np.ndarray | None = None
        self._noise = 4.0
        self._streak = 0
        self._factor = 1
        self._quiet_after_relearn = 0

    def reset(self) -> None:
        self._bg = None
        self._streak = 0

    def _prepare(self, luma: np.ndarray) -> np.ndarray:
        h, w = luma.shape
        if self._bg is None or self._valid is None:
            self._factor = max(1, h // _WORK_HEIGHT)
            f = self._factor
            hh, ww = h // f, w // f
            if self._mask_src is not None:
                m = self._mask_src
                if m.shape != (h, w):
                    ys = (np.arange(h) * m.shape[0]) // h
                    xs = (np.arange(w) * m.shape[1]) // w
                    m = m[ys][:, xs]
                # A work pixel counts only if none of its source pixels is masked.
                blocked = m[: hh * f, : ww * f].reshape(hh, f, ww, f).any(axis=(1, 3))
                self._valid = ~blocked
            else:
                self._valid = np.ones((hh, ww), dtype=bool)
        f = self._factor
        hh, ww = self._valid.shape
        small = box_downscale(luma, f)
        # A 3x3 box blur: sensor noise averages out, edges of people survive.
        p = np.pad(small, 1, mode="edge")
        blurred = (
            p[:-2, :-2] + p[:-2, 1:-1] + p[:-2, 2:]
            + p[1:-1, :-2] + p[1:-1, 1:-1] + p[1:-1, 2:]
            + p[2:, :-2] + p[2:, 1:-1] + p[2:, 2:]
        ) / 9.0  # fmt: skip
        return blurred

    def update(self, luma: np.ndarray) -> MotionResult:
        frame = self._prepare(luma)
        valid = self._valid
        assert valid is not None
        if self._bg is None:
            self._bg = frame.copy()
            return MotionResult(False, 0.0, None)
        bg = self._bg
        nvalid = int(valid.sum())
        if nvalid == 0:
            return MotionResult(False, 0.0, None)

        # Match global brightness: a robust gain and offset so that dusk, a porch
        # light or the IR-cut filter do not look like motion everywhere.
        fv, bv = frame[valid], bg[valid]
        f_med, b_med = float(np.median(fv)), float(np.median(bv))
        gain = (b_med + 4.0) / (f_med + 4.0)
        adjusted = (frame - f_med) * gain + b_med
        diff = np.abs(adjusted - bg)
        thresh = max(6.0, 3.0 * self._noise + 2.0)
        changed = (diff > thresh) & valid
        area = float(changed.sum()) / nvalid

        relearned = False
        if area >= self.relearn_fraction:
            # Most of the frame changed at once: a lighting event, not a visitor.
            self._bg = frame.copy()
            self._streak = 0
            self._quiet_after_relearn = 2
            return MotionResult(False, area, None, relearned=True)
        if self._quiet_after_relearn:
            self._quiet_after_relearn -= 1
            self._bg = frame.copy()
            return MotionResult(False, 0.0, None, relearned=True)

        # Noise: median absolute difference of unchanged pixels, smoothed.
        calm = diff[valid & ~changed]
        if calm.size:
            self._noise = 0.95 * self._noise + 0.05 * float(np.median(calm)) * 1.4826
        moving = area >= self.min_area
        # One learning rate everywhere: a visitor who stands still fades into the
        # background within seconds, and so does the ghost they leave behind.
        bg += self.alpha * (adjusted - bg)

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
        return MotionResult(self._streak >= self.min_frames, area, bbox, relearned)
