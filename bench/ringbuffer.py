"""Ring buffer: packets pushed per second, and pre-roll error over many triggers.

Baseline, in the same run: a frame-counting circular buffer in the manner of
picamera2's ``CircularOutput`` (a deque of N frames; pre-roll starts at the
first keyframe in it), sized for the same pre-roll.
"""

from __future__ import annotations

import random
import time
from collections import deque

from bench.report import Report
from firmware.packets import EncodedPacket
from firmware.ringbuffer import PacketRing


class FrameCountingBuffer:
    """picamera2's CircularOutput pattern: keep the last ``frames`` frames."""

    def __init__(self, frames: int) -> None:
        self._q: deque[EncodedPacket] = deque(maxlen=frames)

    def push(self, p: EncodedPacket) -> None:
        self._q.append(p)

    def preroll(self, _seconds: float, now: float) -> list[EncodedPacket]:
        out = list(self._q)
        while out and not out[0].keyframe:  # it can only start at a keyframe
            out.pop(0)
        return [p for p in out if p.t <= now]


def _stream(n: int, fps: int, gop: int) -> list[EncodedPacket]:
    data_i, data_p = b"I" * 40_000, b"P" * 4_000
    return [
        EncodedPacket(data_i if i % gop == 0 else data_p, i / fps, i % gop == 0) for i in range(n)
    ]


def run(quick: bool = False) -> Report:
    fps, gop, pre = 15, 15, 5.0
    packets = _stream(20_000 if quick else 500_000, fps, gop)
    report = Report("ringbuffer", f"Ring buffer ({len(packets)} packets, {pre:g} s pre-roll)")

    ring = PacketRing(max_seconds=pre + 3, max_bytes=64 << 20)
    t0 = time.perf_counter()
    for p in packets:
        ring.push(p)
    ours = len(packets) / (time.perf_counter() - t0)
    base = FrameCountingBuffer(int(pre * fps))
    t0 = time.perf_counter()
    for p in packets:
        base.push(p)
    theirs = len(packets) / (time.perf_counter() - t0)
    report.add(
        "pushes per second",
        ours,
        theirs,
        "frame-counting deque",
        "pkt/s",
        better="higher",
        note="target ≥ 100k",
    )

    # Pre-roll error: how far each clip's start is from trigger - pre-roll.
    rng = random.Random(1)
    stream = _stream(fps * 600, fps, gop)
    ring = PacketRing(max_seconds=pre + 3, max_bytes=64 << 20)
    base = FrameCountingBuffer(int(pre * fps))
    short_ours = short_base = 0
    worst_ours = worst_base = 0.0
    triggers = 0
    for i, p in enumerate(stream):
        ring.push(p)
        base.push(p)
        if i > fps * 10 and rng.random() < 0.05:
            now = p.t + rng.uniform(0, 1 / fps)
            triggers += 1
            for buf, is_ours in ((ring, True), (base, False)):
                got = buf.preroll(pre, now)
                length = now - got[0].t
                if is_ours:
                    short_ours += length < pre - 1e-9
                    worst_ours = max(worst_ours, abs(length - pre))
                else:
                    short_base += length < pre - 1e-9
                    worst_base = max(worst_base, abs(length - pre))
    report.add(
        "clips with short pre-roll",
        short_ours,
        short_base,
        "frame-counting deque",
        f"of {triggers}",
        note="ours must be 0",
    )
    report.add(
        "worst pre-roll error",
        worst_ours,
        worst_base,
        "frame-counting deque",
        "s",
        note=f"ours ≤ one GOP ({gop / fps:g} s)",
    )
    return report


if __name__ == "__main__":
    r = run()
    r.show()
    r.save()
