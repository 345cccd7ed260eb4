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

Next to a cell of strong changes, weaker ones (over ``grow`` of the threshold) count
too, as Canny links edges: a visitor's faint outline in snow, at night or in shade
joins its strong parts, while weak changes far from any strong one stay noise.

Masked pixels are ignored throughout.  ``sensitivity`` (1-10) sets ``min_area``.
Objects are built only from pixels changed ``steady_frames`` frames running
(snowflakes and raindrops cross a pixel in a frame or two).  An object counts
only while it is upright (its changed pixels spread ``min_aspect`` times more
up and down than across; or close: tall, reaching the bottom of the picture), no
wider than ``max_width`` of the picture (``close_max_width`` when close), and
moves no faster than ``max_speed``; and it must have arrived, moved
``min_travel`` of the picture's height from where it was first seen.  Light and
shade are not objects: where the background's own texture is still there under the
change (``max_texture_kept``, the correlation of log-gradients) it is a lamp's pool or
a shadow; something crossing the picture sideways without coming nearer
(``max_sideways``) is passing by.  Movement inside an object must cover ``live_frac``
of it, or a still object becomes background.  During warm-up the
background is the mean of the frames so far, so nothing in the first frame
leaves a ghost.

Example::

    det = MotionDetector(sensitivity=5, min_frames=3)
    for frame in lores_frames:
        result = det.update(frame.luma)
        if result.active:
            print("motion", result.area, result.bbox)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from firmware.imaging import box_downscale

if TYPE_CHECKING:
    from firmware.config import MotionConfig

# Work at about this height: enough for a person at the door, cheap on a Pi Zero 2.
_WORK_HEIGHT = 60
_LOG_OFFSET = 8.0  # keeps log() tame in the dark, where noise dominates
_LIVE_LAG = 15  # frames: movement inside an object is looked for over this lag
_CELL = 4  # objects are grouped on cells of this many work pixels a side
# A cell with this many strong changes lets its neighbourhood's weak ones count
# (``grow``): fewer, and noise seeds it; more, and a faint visitor never does.
_GROW_SEED = 4


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


def _paired(c: np.ndarray) -> np.ndarray:
    """Drop isolated pixels (rain, snow, noise): keep those with a changed 4-neighbour.

    >>> m = np.zeros((4, 5), bool); m[0, 0] = m[2, 2] = m[2, 3] = True
    >>> _paired(m).nonzero()
    (array([2, 2]), array([2, 3]))
    """
    neighbours = np.zeros_like(c)
    neighbours[1:] |= c[:-1]
    neighbours[:-1] |= c[1:]
    neighbours[:, 1:] |= c[:, :-1]
    neighbours[:, :-1] |= c[:, 1:]
    return c & neighbours


def _near_strong(changed: np.ndarray) -> np.ndarray:
    """Pixels in or next to a cell with ``_GROW_SEED`` strong changes: where a weaker
    change may join an object (see ``grow``)."""
    C = _CELL
    hh, ww = changed.shape
    ch, cw = hh // C, ww // C
    seeds = changed[: ch * C, : cw * C].reshape(ch, C, cw, C).sum(axis=(1, 3)) >= _GROW_SEED
    g = seeds.copy()
    g[1:] |= seeds[:-1]
    g[:-1] |= seeds[1:]
    g[:, 1:] |= g[:, :-1].copy()
    g[:, :-1] |= g[:, 1:].copy()
    near = np.zeros_like(changed)
    near[: ch * C, : cw * C] = np.repeat(np.repeat(g, C, axis=0), C, axis=1)
    return near


class _Track:
    """A candidate object: where it has been, how big, how sharp, whether it is confirmed."""

    __slots__ = (
        "bbox",
        "confirmed",
        "cx",
        "cy",
        "doubt",
        "hits",
        "hold",
        "last_live",
        "misses",
        "moved",
        "ox",
        "oy",
        "plausible",
        "size",
        "speed",
    )

    def __init__(self, cx: float, cy: float, size: float, bbox: tuple[int, int, int, int]) -> None:
        self.cx, self.cy, self.size, self.bbox = cx, cy, size, bbox
        self.ox, self.oy = cx, cy  # where it was first seen
        self.moved = 0.0  # farthest it has been from there, work pixels
        self.hits = 1
        self.misses = 0
        self.plausible = 0  # consecutive frames that looked like a visitor
        self.confirmed = False
        self.doubt = 0  # consecutive frames it moved implausibly fast
        self.hold = bbox  # where the background is held for it: all it has covered lately
        self.last_live = 0  # frame of the last movement inside it
        self.speed = 0.0  # smoothed step per frame, in its own sizes


def _aspect(mask: np.ndarray) -> float:
    """Vertical over horizontal spread (standard deviations) of the True pixels of ``mask``.

    >>> m = np.zeros((9, 9), bool); m[1:8, 4] = True; m[4, 3:6] = True
    >>> round(_aspect(m), 1)
    2.7
    """
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return 0.0
    # A quarter pixel squared of spread for the pixel's own size: a one-pixel-wide line
    # is not infinitely tall.
    return math.sqrt((float(ys.var()) + 0.25) / (float(xs.var()) + 0.25))


def _label(cells: np.ndarray) -> list[list[tuple[int, int]]]:
    """4-connected components of a small boolean grid."""
    h, w = cells.shape
    seen = np.zeros_like(cells)
    out = []
    for y0, x0 in zip(*np.nonzero(cells), strict=True):
        if seen[y0, x0]:
            continue
        stack = [(int(y0), int(x0))]
        seen[y0, x0] = True
        comp = []
        while stack:
            y, x = stack.pop()
            comp.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and cells[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        out.append(comp)
    return out


class MotionDetector:
    """Structure change, grouped into tracked objects; see the module doc."""

    def __init__(
        self,
        sensitivity: int = 5,
        min_frames: int = 3,
        mask: np.ndarray | None = None,
        alpha: float = 0.015,
        relearn_fraction: float = 0.45,
        warmup_frames: int = 15,
        max_speed: float = 0.2,
        min_aspect: float = 1.6,
        still_absorb_frames: int = 45,
        max_misses: int = 8,
        hold_objects: bool = True,
        max_width: float = 0.6,
        close_max_width: float = 0.9,
        steady_frames: int = 2,
        min_travel: float = 0.065,
        max_texture_kept: float = 0.75,
        max_sideways: float = 0.2,
        live_frac: float = 0.05,
        grow: float = 0.5,
    ) -> None:
        if not 1 <= sensitivity <= 10:
            raise ValueError("sensitivity is 1..10")
        if min_frames < 1:
            raise ValueError("min_frames must be at least 1")
        if steady_frames < 1:
            raise ValueError("steady_frames must be at least 1")
        if not 0 <= live_frac <= 1:
            raise ValueError("live_frac is 0..1")
        if not 0 < grow <= 1:
            raise ValueError("grow is over 0, at most 1")
        self.sensitivity = sensitivity
        self.min_area = _sensitivity_to_area(sensitivity)
        self.min_frames = min_frames
        self.alpha = alpha
        self.relearn_fraction = relearn_fraction
        self.warmup_frames = warmup_frames
        self.max_speed = max_speed
        self.min_aspect = min_aspect
        self.still_absorb_frames = still_absorb_frames
        self.max_misses = max_misses
        self.hold_objects = hold_objects
        self.max_width = max_width
        self.close_max_width = close_max_width
        self.steady_frames = steady_frames
        self.min_travel = min_travel
        self.max_texture_kept = max_texture_kept
        self.max_sideways = max_sideways
        self.live_frac = live_frac
        self.grow = grow
        self._mask_src = mask
        self._valid: np.ndarray | None = None
        self._nvalid = 0
        self._factor = 1
        self._bg: np.ndarray | None = None  # log-luma background
        self._bg_gx: np.ndarray | None = None
        self._bg_gy: np.ndarray | None = None
        self._activity: np.ndarray | None = None  # usual edge change per pixel
        # The last second of log-luma frames: someone standing sways and breathes
        # too slowly to see from one frame to the next, not over a second.
        self._recent: deque[np.ndarray] = deque(maxlen=_LIVE_LAG)
        self._hist: deque[np.ndarray] = deque(maxlen=max(0, steady_frames - 1))
        self._tracks: list[_Track] = []
        self._frames = 0

    def set_mask(self, mask: np.ndarray | None) -> None:
        """Ignore these pixels from the next frame on (the owner changed the masks);
        the background is kept, the validity grid is rebuilt on the next frame."""
        self._mask_src = mask
        self._valid = None
        self._tracks = []

    @classmethod
    def from_config(
        cls, config: MotionConfig, fps: float, mask: np.ndarray | None = None
    ) -> MotionDetector:
        """The detector a doorbell with ``[motion]`` = ``config`` runs at ``fps``; the
        benchmark builds its own the same way, so it measures what ships::

            det = MotionDetector.from_config(MotionConfig(), fps=15)
        """
        return cls(
            sensitivity=config.sensitivity,
            min_frames=config.min_frames,
            mask=mask,
            alpha=config.alpha,
            max_speed=config.max_speed,
            min_aspect=config.min_aspect,
            max_width=config.max_width,
            close_max_width=config.close_max_width,
            steady_frames=config.steady_frames,
            min_travel=config.min_travel,
            max_texture_kept=config.max_texture_kept,
            max_sideways=config.max_sideways,
            live_frac=config.live_frac,
            still_absorb_frames=round(config.still_absorb_s * fps),
            grow=config.grow,
        )

    def reset(self) -> None:
        self._bg = None
        self._recent.clear()
        self._hist.clear()
        self._tracks = []
        self._frames = 0

    @property
    def tracks(self) -> int:
        """How many confirmed objects are in view."""
        return sum(t.confirmed for t in self._tracks)

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
        prev = self._recent[0] if self._recent else None
        self._recent.append(logf)
        if self._bg is None or self._bg_gx is None or self._bg_gy is None or prev is None:
            self._learn(logf, gx, gy)
            self._activity = np.full(logf.shape, 0.01, dtype=np.float32)
            return MotionResult(False, 0.0, None)
        if self._nvalid == 0:
            return MotionResult(False, 0.0, None)

        change = np.abs(gx - self._bg_gx) + np.abs(gy - self._bg_gy)
        activity = self._activity
        assert activity is not None
        # An edge change counts when it is well above what this pixel usually does.
        threshold = 0.05 + 4.0 * activity
        changed = _paired((change > threshold) & valid)
        area = float(changed.sum()) / self._nvalid

        if area >= self.relearn_fraction:
            self._learn(logf, gx, gy)
            self._tracks = []
            return MotionResult(False, area, None, relearned=True)

        warming = self._frames <= self.warmup_frames
        # Objects are made of pixels changed ``steady_frames`` frames running: a
        # snowflake or a raindrop crosses a pixel in a frame or two, a visitor stays
        # on it.  (The area above, for relearning, counts every changed pixel.)
        hist = self._hist
        whole = changed
        if self.grow < 1.0:
            weak = (change > self.grow * threshold) & valid & _near_strong(changed)
            whole = changed | _paired(weak)
        steady = whole.copy()
        for before in hist:
            steady &= before
        full = len(hist) == hist.maxlen
        hist.append(whole)
        self._track(steady if full else whole, logf, prev, warming, gx, gy)

        # Learn the background, except under objects that are there (so a visitor
        # who stands still stays visible); activity slowly, and not from what is
        # changing now, so a visitor does not teach it to ignore them.
        keep = self._frozen(changed.shape)
        # While warming up, the background is the mean of the frames so far: something
        # crossing the first frame must not stay in it as a ghost.
        a = np.float32(max(self.alpha, 1.0 / self._frames) if warming else self.alpha)
        upd = a if keep is None else np.where(keep, np.float32(0), a)
        self._bg += upd * (logf - self._bg)
        self._bg_gx += upd * (gx - self._bg_gx)
        self._bg_gy += upd * (gy - self._bg_gy)
        rate = max(0.03, 1.0 / self._frames)
        learn = np.where(changed, rate * 0.07, rate).astype(np.float32)
        if keep is not None:
            learn[keep] = 0.0  # nor how much edges change under someone standing there
        activity += learn * (np.minimum(change, 0.5) - activity)

        live = [t for t in self._tracks if t.confirmed]
        if not live:
            return MotionResult(False, area, None)
        hh, ww = changed.shape
        x0 = min(t.bbox[0] for t in live)
        y0 = min(t.bbox[1] for t in live)
        x1 = max(t.bbox[2] for t in live)
        y1 = max(t.bbox[3] for t in live)
        return MotionResult(True, area, (x0 / ww, y0 / hh, min(x1, ww) / ww, min(y1, hh) / hh))

    def _frozen(self, shape: tuple[int, int]) -> np.ndarray | None:
        live = [t for t in self._tracks if t.confirmed]
        if not live or not self.hold_objects:
            return None
        keep = np.zeros(shape, dtype=bool)
        for t in live:
            x0, y0, x1, y1 = t.hold
            keep[max(0, y0 - _CELL) : y1 + _CELL, max(0, x0 - _CELL) : x1 + _CELL] = True
        return keep

    def _track(
        self,
        changed: np.ndarray,
        logf: np.ndarray,
        prev: np.ndarray,
        warming: bool,
        gx: np.ndarray,
        gy: np.ndarray,
    ) -> None:
        """Group changed pixels into objects and follow them from frame to frame."""
        assert self._bg is not None
        C = _CELL
        hh, ww = changed.shape
        ch, cw = hh // C, ww // C
        cut = (slice(0, ch * C), slice(0, cw * C))
        count = changed[cut].reshape(ch, C, cw, C).sum(axis=(1, 3))
        cells = count >= 2
        blobs: list[tuple[float, float, float, tuple[int, int, int, int]]] = []
        if cells.any():
            # Neighbouring cells (one cell apart) belong to one object: limbs, a head.
            grown = cells.copy()
            grown[1:] |= cells[:-1]
            grown[:-1] |= cells[1:]
            grown[:, 1:] |= grown[:, :-1].copy()
            grown[:, :-1] |= grown[:, 1:].copy()
            for comp in _label(grown):
                cy = np.array([p[0] for p in comp])
                cx = np.array([p[1] for p in comp])
                own = cells[cy, cx]
                if not own.any():
                    continue
                cy, cx = cy[own], cx[own]
                n = count[cy, cx].astype(np.float32)
                size = float(n.sum())
                bbox = (
                    int(cx.min()) * C,
                    int(cy.min()) * C,
                    int(cx.max() + 1) * C,
                    int(cy.max() + 1) * C,
                )
                mx = float((n * (cx + 0.5)).sum() / size) * C
                my = float((n * (cy + 0.5)).sum() / size) * C
                blobs.append((mx, my, size, bbox))

        min_px = self.min_area * self._nvalid
        free = list(range(len(blobs)))
        tracks = sorted(self._tracks, key=lambda t: -t.size)
        for t in tracks:
            best, best_d = -1, 0.0
            for i in free:
                mx, my, size, _ = blobs[i]
                d = math.hypot(mx - t.cx, my - t.cy)
                gate = 2.0 * math.sqrt(max(t.size, size)) + 4.0
                if d <= gate and (best < 0 or d < best_d):
                    best, best_d = i, d
            if best < 0:
                t.misses += 1
                t.plausible = 0
                continue
            free.remove(best)
            mx, my, size, bbox = blobs[best]
            step = best_d / math.sqrt(max(size, 1.0))
            t.speed = step if t.hits == 1 else 0.6 * t.speed + 0.4 * step
            t.cx, t.cy, t.size, t.bbox = mx, my, size, bbox
            t.moved = max(t.moved, math.hypot(mx - t.ox, my - t.oy))
            if t.speed < 0.05:  # standing: hold all it has covered while standing
                h0 = t.hold
                t.hold = (
                    min(h0[0], bbox[0]),
                    min(h0[1], bbox[1]),
                    max(h0[2], bbox[2]),
                    max(h0[3], bbox[3]),
                )
            else:
                t.hold = bbox
            t.hits += 1
            t.misses = 0
            # Someone close: tall in the picture with their feet at (or below) its
            # bottom edge.  A headlight beam on the street is tall too, but ends well
            # above the bottom.
            bw, bh = bbox[2] - bbox[0], bbox[3] - bbox[1]
            close = bh >= 0.45 * hh and bbox[3] >= hh - C
            # Nothing at the door is as wide as the picture: what is, is the IR-cut
            # filter, a beam across the street, snow merged into one object.  Someone
            # close may fill most of it, never all.  (A visitor merged into such an
            # object is missed until apart from it: the price, seen on the tune scenes.)
            widest = self.close_max_width if close else self.max_width
            candidate = size >= min_px and t.speed <= self.max_speed and bw <= widest * ww
            if candidate and not close:
                # Upright, measured on the changed pixels rather than the box (coarse
                # cells make a round blob's box look tall): a person's spread is
                # taller than wide; a spider's disc, a lamp's pool are round or wide.
                candidate = _aspect(changed[bbox[1] : bbox[3], bbox[0] : bbox[2]]) >= (
                    self.min_aspect
                )
            if candidate and self.max_texture_kept < 1.0:
                candidate = self._texture_kept(bbox, logf, gx, gy) < self.max_texture_kept
            if candidate:
                t.plausible += 1
                t.doubt = 0
            else:
                t.plausible = 0
                if t.speed > self.max_speed:
                    t.doubt += 1
                    if t.doubt >= self.min_frames:
                        t.confirmed = False  # darting about: not a visitor after all
        for i in free:
            mx, my, size, bbox = blobs[i]
            t = _Track(mx, my, size, bbox)
            t.last_live = self._frames
            self._tracks.append(t)

        # Movement inside an object over the last second says it is alive; a parcel
        # or a moved chair that stays still that long becomes background.
        fd = np.abs(logf - prev)
        noise = 3.0 * float(fd.mean()) + 0.02
        kept = []
        for t in self._tracks:
            if t.misses > self.max_misses:
                continue
            x0, y0, x1, y1 = t.bbox
            # Enough of it to be more than noise: a few pixels over the noise level turn
            # up in any box now and then, and kept a parcel "alive" for good.
            live_px = max(2.0, self.live_frac * (y1 - y0) * (x1 - x0))
            if int((fd[y0:y1, x0:x1] > noise).sum()) >= live_px:
                t.last_live = self._frames
            if warming:
                # The background is still being learnt: what looks plausible now is
                # as likely the difference between early frames; count from scratch after.
                t.plausible = 0
            elif (
                t.plausible >= self.min_frames
                and t.moved >= self.min_travel * hh
                and not self._passing(t, ww)
            ):
                # A visitor arrives: something that has stayed where it was first seen
                # (a cobweb or a plant swaying, a pool of lamp light) is not one.
                t.confirmed = True
            if t.confirmed and self._frames - t.last_live > self.still_absorb_frames:
                # Learn it at once, or it would come back as a new object.
                sl = (slice(y0, y1), slice(x0, x1))
                self._bg[sl] = logf[sl]
                assert self._bg_gx is not None and self._bg_gy is not None
                gx, gy = _gradients(logf)
                self._bg_gx[sl] = gx[sl]
                self._bg_gy[sl] = gy[sl]
                continue
            kept.append(t)
        self._tracks = kept

    def _passing(self, t: _Track, ww: int) -> bool:
        """Crossing the picture sideways, far, with hardly any movement toward or away
        from the camera: a beam sweeping the street, a passer-by's shadow.  A visitor
        comes up the path; while they walk along the street first they are not yet
        confirmed, only later."""
        dx, dy = abs(t.cx - t.ox), abs(t.cy - t.oy)
        return dx >= 0.25 * ww and dy < self.max_sideways * dx

    def _texture_kept(
        self, bbox: tuple[int, int, int, int], logf: np.ndarray, gx: np.ndarray, gy: np.ndarray
    ) -> float:
        """How much of the background's own texture is still there where the picture
        differs from it: the correlation of the log-gradients with the background's,
        over the pixels whose log-luma moved by over 0.1.  Light and shade multiply the
        scene, so in the log they add a smooth term and leave its gradients (a lamp's
        pool, a passer-by's shadow: near 1); something in front of the background
        replaces them (a visitor: mostly under 0.6)."""
        assert self._bg is not None and self._bg_gx is not None and self._bg_gy is not None
        sl = (slice(bbox[1], bbox[3]), slice(bbox[0], bbox[2]))
        differs = np.abs(logf[sl] - self._bg[sl]) > 0.1
        if int(differs.sum()) < 4:
            return 0.0
        bx, by = self._bg_gx[sl][differs], self._bg_gy[sl][differs]
        cx, cy = gx[sl][differs], gy[sl][differs]
        num = float((bx * cx + by * cy).sum())
        den = math.sqrt(float((bx * bx + by * by).sum()) * float((cx * cx + cy * cy).sum()))
        return num / den if den > 0 else 0.0
