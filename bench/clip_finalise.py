"""Clip finalisation: from the last packet to the encrypted MP4 on disk.

Ours: the clip store's path (remux to fragmented MP4 with PyAV, encrypt while
writing, fsync, rename, metadata).  Baseline in the same run: writing the same
encoded bytes to a file with fsync and nothing else, the floor for any recorder.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import Report
from firmware.mp4 import write_mp4
from firmware.store import ClipStore
from hw_sim.encoder import X264Encoder
from hw_sim.scenes import make_scene
from protocol.crypto import OwnerKeys


def run(quick: bool = False) -> Report:
    seconds, fps, size = (2, 15, (320, 240)) if quick else (20, 15, (1280, 720))
    scene = make_scene("person", *size, seed=1)
    enc = X264Encoder(*size, fps=fps)
    packets = []
    for i in range(seconds * fps):
        packets += enc.encode(np.ascontiguousarray(scene.render(i / fps).rgb), i / fps)
    nbytes = sum(p.size for p in packets)
    tmp = Path(tempfile.mkdtemp(prefix="bench-finalise-"))
    store = ClipStore(tmp / "data", OwnerKeys.generate().box_public)
    ours, floor = [], []
    for n in range(3 if quick else 5):
        meta = {
            "id": f"clip-{n}",
            "device": "bench",
            "trigger": "ring",
            "start": 0.0,
            "end": float(seconds),
            "trigger_at": 5.0,
            "preroll_s": 5.0,
            "duration_s": float(seconds),
            "width": size[0],
            "height": size[1],
            "fps": float(fps),
            "codec": "h264",
        }
        t0 = time.perf_counter()
        store.save(meta, lambda f: write_mp4(packets, f))
        ours.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        with open(tmp / f"raw-{n}.h264", "wb") as f:
            for p in packets:
                f.write(p.data)
            f.flush()
            os.fsync(f.fileno())
        floor.append((time.perf_counter() - t0) * 1000)
    report = Report(
        "clip_finalise",
        f"Clip finalisation ({seconds} s at {size[0]}x{size[1]}, {nbytes / 1e6:.1f} MB)",
    )
    report.add(
        "last packet → clip on disk",
        statistics.median(ours),
        statistics.median(floor),
        "raw write + fsync of the same bytes",
        "ms",
    )
    return report


if __name__ == "__main__":
    r = run()
    r.show()
    r.save()
