import numpy as np

from hw_sim.encoder import X264Encoder


def nal_types(data: bytes) -> list[int]:
    types, i = [], 0
    while True:
        i = data.find(b"\x00\x00\x01", i)
        if i < 0:
            return types
        types.append(data[i + 3] & 0x1F)
        i += 3


def frames(n: int, w: int = 160, h: int = 120):
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.full((h, w, 3), 100, np.uint8)
        img[:, (i * 3) % w :] = rng.integers(0, 255, (h, w - (i * 3) % w, 3), dtype=np.uint8)
        yield img


def test_packets_like_picamera2_h264encoder():
    enc = X264Encoder(160, 120, fps=10, keyframe_interval_s=1.0)
    packets = []
    for i, img in enumerate(frames(35)):
        out = enc.encode(img, t=100 + i / 10)
        assert len(out) == 1, "one packet per frame: no look-ahead, no B-frames"
        packets += out
    keys = [i for i, p in enumerate(packets) if p.keyframe]
    assert keys == [0, 10, 20, 30]
    for i, p in enumerate(packets):
        assert p.data.startswith(b"\x00\x00\x00\x01") or p.data.startswith(b"\x00\x00\x01")
        types = nal_types(p.data)
        if p.keyframe:
            assert 7 in types and 8 in types and 5 in types, "SPS, PPS and IDR at every keyframe"
        else:
            assert 5 not in types
        assert p.t == 100 + i / 10


def test_forced_keyframe():
    enc = X264Encoder(160, 120, fps=10, keyframe_interval_s=5.0)
    gen = frames(12)
    out = [enc.encode(next(gen), i / 10)[0] for i in range(6)]
    enc.request_keyframe()
    out.append(enc.encode(next(gen), 0.6)[0])
    assert [p.keyframe for p in out] == [True] + [False] * 5 + [True]
