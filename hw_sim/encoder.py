"""A software H.264 encoder that yields what picamera2's ``H264Encoder`` yields.

libx264 through PyAV, tuned like the Pi's hardware encoder: no B-frames, no
look-ahead (one packet out per frame in), Annex-B output with SPS/PPS repeated
at every keyframe, and a fixed keyframe interval.

Example::

    enc = X264Encoder(640, 480, fps=15, keyframe_interval_s=1.0)
    for packet in enc.encode(rgb_frame, t=clock.monotonic()):
        ring.push(packet)
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from firmware.packets import EncodedPacket

_US = Fraction(1, 1_000_000)


class X264Encoder:
    """Encode RGB frames (uint8, ``(h, w, 3)``) to timestamped Annex-B packets."""

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        keyframe_interval_s: float = 1.0,
        crf: int = 28,
        preset: str = "ultrafast",
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"H.264 needs even dimensions, got {width}x{height}")
        self.width, self.height, self.fps = width, height, fps
        self.gop = max(1, round(fps * keyframe_interval_s))
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = _US
        ctx.framerate = Fraction(fps).limit_denominator(1001)
        ctx.gop_size = self.gop
        ctx.max_b_frames = 0
        ctx.options = {
            "preset": preset,
            "tune": "zerolatency",
            "crf": str(crf),
            # repeat-headers: SPS/PPS in front of every keyframe, as the Pi's encoder
            # does with repeat=True, so any keyframe can open a clip.
            "x264-params": (
                f"keyint={self.gop}:min-keyint={self.gop}:scenecut=0:repeat-headers=1:threads=1"
            ),
        }
        ctx.open()
        self._ctx = ctx
        self._force_keyframe = False
        self._pending_t: dict[int, float] = {}

    def request_keyframe(self) -> None:
        """Make the next encoded frame a keyframe (an IDR with SPS/PPS)."""
        self._force_keyframe = True

    def encode(self, rgb: np.ndarray, t: float) -> list[EncodedPacket]:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = round(t * 1_000_000)
        frame.time_base = _US
        if self._force_keyframe:
            frame.pict_type = av.video.frame.PictureType.I
            self._force_keyframe = False
        self._pending_t[frame.pts] = t
        return [self._wrap(p) for p in self._ctx.encode(frame)]

    def flush(self) -> list[EncodedPacket]:
        return [self._wrap(p) for p in self._ctx.encode(None)]

    def _wrap(self, packet: av.Packet) -> EncodedPacket:
        t = self._pending_t.pop(packet.pts, packet.pts / 1_000_000)
        return EncodedPacket(data=bytes(packet), t=t, keyframe=packet.is_keyframe)
