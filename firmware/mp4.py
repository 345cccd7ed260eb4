"""Remux encoded H.264 packets into an MP4 file, without re-encoding.

The first packet must be a keyframe carrying SPS/PPS (every keyframe from our
encoders does).  The codec parameters are read from that keyframe by FFmpeg's
own H.264 parser, so width, height and profile in the MP4 always match the
stream, whichever encoder produced it.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from fractions import Fraction

import av

from firmware.packets import EncodedPacket

# MP4's customary 90 kHz video clock: frame times at 15/25/30 fps are exact.
TIME_BASE = Fraction(1, 90_000)


def write_mp4(packets: Sequence[EncodedPacket], out: io.BufferedIOBase | str) -> float:
    """Write ``packets`` as an MP4 to ``out`` (a path or a binary file object).

    Timestamps are made relative to the first packet.  The last packet lasts as
    long as the one before it, so the file's duration is ``frames / fps``.
    Returns that duration in seconds.

    A stream that cannot seek (the clip encryptor) gets a fragmented MP4, which is
    written front to back and needs no rewrite of its header at the end.
    """
    if not packets:
        raise ValueError("a clip needs at least one packet")
    if not packets[0].keyframe:
        raise ValueError("a clip must start with a keyframe")
    t0 = packets[0].t
    ticks = [round((p.t - t0) / TIME_BASE) for p in packets]
    for a, b in itertools.pairwise(ticks):
        if b <= a:
            raise ValueError("packet timestamps must increase")
    last_duration = ticks[-1] - ticks[-2] if len(ticks) > 1 else round(Fraction(1, 15) / TIME_BASE)

    with av.open(io.BytesIO(packets[0].data), format="h264") as probe:
        template = probe.streams.video[0]
        seekable = isinstance(out, str) or getattr(out, "seekable", lambda: True)()
        options = {} if seekable else {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
        with av.open(out, mode="w", format="mp4", options=options) as container:
            stream = container.add_stream_from_template(template)
            stream.time_base = TIME_BASE
            for i, (p, pts) in enumerate(zip(packets, ticks, strict=True)):
                pkt = av.Packet(p.data)
                pkt.stream = stream
                pkt.time_base = TIME_BASE
                pkt.pts = pkt.dts = pts
                pkt.duration = (ticks[i + 1] - pts) if i + 1 < len(ticks) else last_duration
                pkt.is_keyframe = p.keyframe
                container.mux(pkt)
    return float((ticks[-1] + last_duration) * TIME_BASE)
