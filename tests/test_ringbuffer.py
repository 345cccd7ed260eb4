import random

import pytest

from firmware.packets import EncodedPacket
from firmware.ringbuffer import PacketRing


def stream(seconds: float, fps: float = 15, gop: int = 15, size: int = 100, t0: float = 0.0):
    n = round(seconds * fps)
    for i in range(n):
        yield EncodedPacket(
            b"x" * (size * 10 if i % gop == 0 else size), t0 + i / fps, i % gop == 0
        )


def test_bounded_in_seconds():
    ring = PacketRing(max_seconds=4.0, max_bytes=1 << 30)
    for p in stream(20):
        ring.push(p)
        assert ring.span <= 4.0 + 1e-9
    assert ring.span == pytest.approx(4.0, abs=1 / 15)


def test_bounded_in_bytes_keeps_newest():
    ring = PacketRing(max_seconds=100.0, max_bytes=5000)
    for p in stream(20):
        ring.push(p)
        assert ring.nbytes <= 5000
    assert len(ring) > 0


def test_stores_references_not_copies():
    ring = PacketRing(max_seconds=10, max_bytes=1 << 20)
    packets = list(stream(3))
    for p in packets:
        ring.push(p)
    out = ring.preroll(1.0, now=packets[-1].t)
    assert all(any(o.data is p.data for p in packets) for o in out)


@pytest.mark.parametrize("seed", range(5))
def test_preroll_is_never_short_and_at_most_one_gop_long(seed):
    rng = random.Random(seed)
    fps = rng.choice([10, 15, 25, 30])
    gop = rng.choice([fps // 2, fps, 2 * fps])
    ring = PacketRing(max_seconds=12, max_bytes=1 << 30)
    packets = list(stream(60, fps=fps, gop=gop))
    checked = 0
    for i, p in enumerate(packets):
        ring.push(p)
        if i < 12 * fps or rng.random() > 0.1:
            continue
        want = rng.uniform(0, 8)
        now = p.t + rng.uniform(0, 1 / fps)
        got = ring.preroll(want, now)
        assert got[0].keyframe
        length = now - got[0].t
        assert length >= want - 1e-9, "pre-roll shorter than asked"
        assert length <= want + gop / fps + 1e-9, "pre-roll longer than asked + one GOP"
        assert all(q.t <= now for q in got)
        checked += 1
    assert checked > 20


def test_preroll_before_buffer_fills_starts_at_oldest_keyframe():
    ring = PacketRing(max_seconds=10, max_bytes=1 << 20)
    packets = list(stream(2.5))
    for p in packets:
        ring.push(p)
    got = ring.preroll(5.0, now=packets[-1].t)
    assert got[0] is packets[0]


def test_preroll_without_keyframe_is_empty():
    ring = PacketRing(max_seconds=10, max_bytes=1 << 20)
    ring.push(EncodedPacket(b"p", 0.0, False))
    assert ring.preroll(1.0, now=0.0) == []


def test_rejects_nonsense_bounds():
    with pytest.raises(ValueError):
        PacketRing(0, 10)
    with pytest.raises(ValueError):
        PacketRing(1, 0)
