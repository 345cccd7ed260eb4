"""JPEG snapshots of RGB frames (PyAV's MJPEG encoder; no extra imaging library)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np


def encode_jpeg(rgb: np.ndarray, quality: int = 5) -> bytes:
    """Encode an ``(h, w, 3)`` uint8 RGB frame; ``quality`` is MJPEG's qscale (2 best … 31)."""
    h, w, _ = rgb.shape
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height = w - w % 2, h - h % 2
    ctx.pix_fmt = "yuvj420p"
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"qmin": str(quality), "qmax": str(quality)}
    ctx.open()
    frame = av.VideoFrame.from_ndarray(
        np.ascontiguousarray(rgb[: ctx.height, : ctx.width]), "rgb24"
    )
    frame = frame.reformat(format="yuvj420p")
    frame.pts = 0
    packets = ctx.encode(frame) + ctx.encode(None)
    return b"".join(bytes(p) for p in packets)
