"""The benchmark harness runs on tiny inputs and writes its results (no timing is asserted)."""

import json
import subprocess
import sys


def test_bench_quick_writes_every_table(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    from bench.__main__ import BENCHMARKS

    for name in BENCHMARKS:
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert data["rows"], name
        for row in data["rows"]:
            assert {"ours", "baseline", "baseline_name", "ratio"} <= row.keys()
        assert f"| {data['rows'][0]['metric']} |" in r.stdout
    assert (tmp_path / "SUMMARY.md").exists()


def test_motion_scoring_counts_events_not_frames():
    from bench.motion import Score

    sc = Score()
    truth = [False] * 30 + [True] * 30 + [False] * 240  # one visit
    detected = [False] * 35 + [True] * 40 + [False] * 100 + [True] * 5 + [False] * 120
    sc.add(truth, detected)
    assert (sc.tp, sc.fp, sc.found, sc.visits) == (1, 1, 1, 1)
    assert sc.precision == 0.5 and sc.recall == 1.0
    assert sc.latency_frames == 5


def test_a_labelled_video_can_be_scored(tmp_path):
    from fractions import Fraction

    import av
    import numpy as np

    from bench.motion import score_video

    video = tmp_path / "v.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("libx264", rate=15)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for i in range(150):
            img = np.full((240, 320, 3), 140, np.uint8)
            if 45 <= i < 90:  # a dark figure crosses between 3 s and 6 s
                x = (i - 45) * 6
                img[40:220, x : x + 40] = 30
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 15)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    labels = tmp_path / "labels.csv"
    labels.write_text("start,end\n3.0,6.0\n")
    scores = score_video(video, labels)
    assert scores["ours"].visits == 1
    assert scores["ours"].found == 1 and scores["ours"].fp == 0


def test_motion_scoring_punishes_always_on_and_always_off():
    from bench.motion import Score

    truth = [False] * 150 + [True] * 150 + [False] * 300  # 40 s, one 10 s visit
    quiet = [False] * 600
    on, off, good = Score(), Score(), Score()
    for sc, flags, flags_quiet in (
        (on, [True] * 600, [True] * 600),
        (off, quiet, quiet),
        (good, truth, quiet),
    ):
        sc.add(truth, flags)
        sc.add(quiet, flags_quiet)
    # Always on: the visit is found, but the time before and after it and the empty
    # video are false alerts, and it is flagged all the time nobody is there.
    assert on.recall == 1.0 and on.fp == 3 and on.f1 < 0.5
    assert on.false_time > 0.7
    assert off.f1 == 0.0 and off.fp == 0
    assert good.f1 == 1.0 and good.false_time == 0.0
