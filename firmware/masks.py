"""Privacy masks: polygons whose pixels are never recorded.

Masks are blanked in the main stream *before* the encoder sees the frame, so a
masked sidewalk or a neighbour's window does not exist in any clip or snapshot.
Motion detection ignores the same pixels.

Polygons are given as fractions of the frame, so one mask fits every stream.

Example::

    mask = rasterize([[(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]], 640, 480)
    blank_rgb(frame, mask)      # left half of ``frame`` is now black
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Polygon = Sequence[tuple[float, float]]


def rasterize(polygons: Sequence[Polygon], width: int, height: int) -> np.ndarray:
    """A boolean ``(height, width)`` array, True where any polygon covers the pixel centre."""
    mask = np.zeros((height, width), dtype=bool)
    if not polygons:
        return mask
    ys = (np.arange(height, dtype=np.float64) + 0.5) / height
    xs = (np.arange(width, dtype=np.float64) + 0.5) / width
    px = xs[np.newaxis, :]
    py = ys[:, np.newaxis]
    for poly in polygons:
        inside = np.zeros((height, width), dtype=bool)
        n = len(poly)
        # Even-odd rule, one edge at a time over the whole grid.
        for i in range(n):
            x1, y1 = poly[i]
            x2, y2 = poly[(i + 1) % n]
            if y1 == y2:
                continue
            crosses = (py >= min(y1, y2)) & (py < max(y1, y2))
            x_at = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
            inside ^= crosses & (px < x_at)
        mask |= inside
    return mask


def blank_rgb(frame: np.ndarray, mask: np.ndarray) -> None:
    """Set masked pixels of an ``(h, w, 3)`` frame to black, in place."""
    if mask.any():
        frame[mask] = 0


def blank_yuv420(buf: np.ndarray, mask: np.ndarray, width: int, height: int, stride: int) -> None:
    """Blank masked pixels of a planar YUV420 buffer (picamera2's "YUV420") in place.

    ``buf`` is the flat uint8 buffer; ``stride`` is the luma row length in bytes.
    Black is Y = 16 (video range) and neutral chroma U = V = 128.
    """
    if not mask.any():
        return
    y = buf[: stride * height].reshape(height, stride)[:, :width]
    y[mask] = 16
    cstride, cw, ch = stride // 2, width // 2, height // 2
    cmask = mask[::2, ::2][:ch, :cw]
    base = stride * height
    for plane in range(2):
        start = base + plane * cstride * ch
        c = buf[start : start + cstride * ch].reshape(ch, cstride)[:, :cw]
        c[cmask] = 128
