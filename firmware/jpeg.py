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


def shrink_jpeg(data: bytes, max_bytes: int, quality: int = 8) -> bytes | None:
    """``data`` if it fits in ``max_bytes``, else the picture at 1/2, 1/4 … of its size
    that fits (a notification needs a face, not every pixel); None if none does.

    A ring's snapshot must fit in one MQTT message; a Pi camera's full-size JPEG often
    does not.
    """
    if len(data) <= max_bytes:
        return data
    ctx = av.CodecContext.create("mjpeg", "r")
    try:
        frames = list(ctx.decode(av.Packet(data)))
    except av.FFmpegError:
        return None
    if not frames:
        return None
    frame = frames[0]
    for scale in (2, 4, 8):
        w, h = frame.width // scale, frame.height // scale
        if w < 16 or h < 16:
            break
        out = encode_jpeg(frame.reformat(width=w, height=h, format="rgb24").to_ndarray(), quality)
        if len(out) <= max_bytes:
            return out
    return None
