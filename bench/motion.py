"""Motion detection: ours against the detectors people use today, on labelled scenes.

Every detector sees the same frames: the low-res (320x240) luma of hw_sim's
scripted scenes, each class with several seeds.  Scores are event-level: a
detected event (frames of motion, gaps under 2 s merged, as a clip's post-roll
would) is a true alert if it overlaps a visit (frames of motion that matters,
gaps under 10 s merged) or the 2 s after it, else a false alert.  A visit is
found if any detected event overlaps it.

Baselines, implemented from their published descriptions:

* **picamera2 example**: mean squared difference of consecutive frames, > 7.
  "as published" computes on uint8 arrays, so the subtraction wraps around;
  "corrected" computes in floating point.
* **MOG2**: OpenCV ``BackgroundSubtractorMOG2`` (no shadows); motion when over
  1 % of the frame is foreground.
* **Frigate-like**: as Frigate configures its motion detector: 100 px high,
  contrast stretched, Gaussian blur, running-average background (alpha 0.01),
  threshold 30, one dilation, contours over 10 px; recalibrate when over 80 %
  of the frame changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bench.report import Report
from firmware.motion import MotionDetector
from hw_sim.camera import rgb_to_luma
from hw_sim.scenes import SCENES, make_scene

FPS = 15
DETECTED_GAP_S = 2.0
VISIT_GAP_S = 10.0
GRACE_S = 2.0


# ---------------------------------------------------------------------- detectors


class Ours:
    name = "ours"

    def __init__(self) -> None:
        self.d = MotionDetector(sensitivity=5, min_frames=3)

    def update(self, luma: np.ndarray) -> bool:
        return self.d.update(luma).active


class Picamera2Mse:
    """From picamera2's examples/capture_motion.py: ``mse > 7`` between frames."""

    def __init__(self, wraps: bool) -> None:
        self.wraps = wraps
        self.name = "picamera2 (as published)" if wraps else "picamera2 (corrected)"
        self.prev: np.ndarray | None = None

    def update(self, luma: np.ndarray) -> bool:
        cur = luma if self.wraps else luma.astype(np.float32)
        prev, self.prev = self.prev, cur
        if prev is None:
            return False
        mse = np.square(np.subtract(cur, prev)).mean()
        return bool(mse > 7)


class Mog2:
    name = "OpenCV MOG2"

    def __init__(self, area: float = 0.01) -> None:
        self.sub = cv2.createBackgroundSubtractorMOG2(detectShadows=False)
        self.area = area

    def update(self, luma: np.ndarray) -> bool:
        fg = self.sub.apply(luma)
        return cv2.countNonZero(fg) / fg.size > self.area


class FrigateLike:
    name = "Frigate-like"

    def __init__(self) -> None:
        self.avg: np.ndarray | None = None

    def update(self, luma: np.ndarray) -> bool:
        h, w = luma.shape
        small = cv2.resize(luma, (round(w * 100 / h), 100), interpolation=cv2.INTER_LINEAR)
        lo, hi = np.percentile(small, (4, 96))
        if hi > lo:
            small = np.clip((small.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255)
            small = small.astype(np.uint8)
        small = cv2.GaussianBlur(small, (3, 3), 0)
        if self.avg is None:
            self.avg = small.astype(np.float32)
            return False
        delta = cv2.absdiff(small, cv2.convertScaleAbs(self.avg))
        cv2.accumulateWeighted(small, self.avg, 0.01)
        thresh = cv2.threshold(delta, 30, 255, cv2.THRESH_BINARY)[1]
        thresh = cv2.dilate(thresh, None, iterations=1)
        if cv2.countNonZero(thresh) > 0.8 * thresh.size:
            self.avg = small.astype(np.float32)  # recalibrate
            return False
        contours, _ = cv2.findContours(thresh, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        return any(cv2.contourArea(c) > 10 for c in contours)


FACTORIES: list[Callable[[], object]] = [
    Ours,
    lambda: Picamera2Mse(wraps=True),
    lambda: Picamera2Mse(wraps=False),
    Mog2,
    FrigateLike,
]


# ---------------------------------------------------------------------- scoring


def spans(flags: list[bool], merge_gap: int) -> list[tuple[int, int]]:
    """Runs of True as [start, end) frame spans, merging gaps shorter than ``merge_gap``."""
    out: list[tuple[int, int]] = []
    start = None
    for i, f in enumerate([*flags, False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            if out and start - out[-1][1] < merge_gap:
                out[-1] = (out[-1][0], i)
            else:
                out.append((start, i))
            start = None
    return out


@dataclass
class Score:
    tp: int = 0  # detected events that match a visit
    fp: int = 0  # detected events that match none
    found: int = 0  # visits with a detection
    visits: int = 0
    latency_frames: int = 0
    frames: int = 0

    def add(self, truth: list[bool], detected: list[bool]) -> None:
        visits = spans(truth, round(VISIT_GAP_S * FPS))
        dets = spans(detected, round(DETECTED_GAP_S * FPS))
        grace = round(GRACE_S * FPS)
        self.visits += len(visits)
        self.frames += len(truth)
        for a, b in dets:
            if any(a < ve + grace and b > vs for vs, ve in visits):
                self.tp += 1
            else:
                self.fp += 1
        for vs, ve in visits:
            hits = [a for a, b in dets if a < ve and b > vs]
            if hits:
                self.found += 1
                self.latency_frames += max(0, min(hits) - vs)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.visits if self.visits else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def merge(self, other: Score) -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))


def cost_per_frame(factory: Callable[[], object], size: tuple[int, int], frames: int) -> float:
    """Milliseconds per frame on one core, for luma frames of ``size`` (w, h)."""
    w, h = size
    scene = make_scene("person", w, h, seed=0)
    lumas = [rgb_to_luma(scene.render(i / FPS).rgb, (w, h)) for i in range(frames)]
    det = factory()
    det.update(lumas[0])  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    for luma in lumas[1:]:
        det.update(luma)  # type: ignore[attr-defined]
    return (time.perf_counter() - t0) / (len(lumas) - 1) * 1000


def run(quick: bool = False, seeds: int = 3, seconds: float = 20.0) -> Report:
    cv2.setNumThreads(1)
    if quick:
        seeds, seconds = 1, 6.0
    n_frames = round(seconds * FPS)
    names = [f().name for f in FACTORIES]  # type: ignore[attr-defined]
    per_class: dict[str, dict[str, Score]] = {}
    for cls in SCENES:
        per_class[cls] = {n: Score() for n in names}
        for seed in range(seeds):
            scene = make_scene(cls, 320, 240, seed=seed)
            frames = [scene.render(i / FPS) for i in range(n_frames)]
            lumas = [rgb_to_luma(f.rgb, (320, 240)) for f in frames]
            truth = [f.truth for f in frames]
            for factory in FACTORIES:
                det = factory()
                detected = [det.update(lu) for lu in lumas]  # type: ignore[attr-defined]
                per_class[cls][det.name].add(truth, detected)  # type: ignore[attr-defined]

    overall = {n: Score() for n in names}
    quiet = {n: Score() for n in names}  # classes with nothing that matters
    for scores in per_class.values():
        for n, sc in scores.items():
            overall[n].merge(sc)
            if sc.visits == 0:
                quiet[n].merge(sc)
    cost_frames = 20 if quick else 150
    cost = {
        size: {f().name: cost_per_frame(f, size, cost_frames) for f in FACTORIES}  # type: ignore[attr-defined]
        for size in ((320, 240), (640, 480))
    }

    report = Report("motion", f"Motion detection ({len(SCENES)} scene classes × {seeds} seeds)")
    ours = "ours"
    for base in names[1:]:
        report.add("F1, all scenes", overall[ours].f1, overall[base].f1, base, "", better="higher")
    for base in names[1:]:
        hours = quiet[ours].frames / FPS / 3600
        report.add(
            "false alerts per hour (no visitor)",
            quiet[ours].fp / hours,
            quiet[base].fp / hours,
            base,
            "/h",
        )
    for base in names[1:]:
        lat = [overall[n].latency_frames / max(1, overall[n].found) for n in (ours, base)]
        report.add("detection latency", lat[0], lat[1], base, "frames")
    for size, by in cost.items():
        report.add(
            f"cost per frame {size[0]}x{size[1]}",
            by[ours],
            by["OpenCV MOG2"],
            "OpenCV MOG2",
            "ms",
            note="target ≤ 0.5× MOG2 at 320x240",
        )

    head = "| scene class | " + " | ".join(names) + " |"
    rows = [head, "|---" * (len(names) + 1) + "|"]
    for cls, scores in per_class.items():
        rows.append(f"| {cls} | " + " | ".join(f"{scores[n].f1:.2f}" for n in names) + " |")
    rows.append("| **all** | " + " | ".join(f"**{overall[n].f1:.2f}**" for n in names) + " |")
    report.extra_md = "F1 per scene class:\n\n" + "\n".join(rows)
    report.extra = {
        "f1": {cls: {n: s.f1 for n, s in sc.items()} for cls, sc in per_class.items()},
        "counts": {cls: {n: s.__dict__ for n, s in sc.items()} for cls, sc in per_class.items()},
        "cost_ms": {f"{w}x{h}": v for (w, h), v in cost.items()},
    }
    report.figures["motion_f1.png"] = lambda path: _plot(per_class, names, path)
    return report


def score_video(path: Path, labels: Path) -> dict[str, Score]:
    """Score every detector on a video file with hand-written labels (CSV of start,end)."""
    from hw_sim.scenes import VideoScene, load_labels

    scene = VideoScene(path, 320, 240, labels=load_labels(labels))
    n = int(scene.duration * FPS)
    frames = [scene.render(i / FPS) for i in range(n)]
    lumas = [rgb_to_luma(f.rgb, (320, 240)) for f in frames]
    truth = [f.truth for f in frames]
    scores = {}
    for factory in FACTORIES:
        det = factory()
        sc = Score()
        sc.add(truth, [det.update(lu) for lu in lumas])  # type: ignore[attr-defined]
        scores[det.name] = sc  # type: ignore[attr-defined]
    return scores


def _plot(per_class: dict[str, dict[str, Score]], names: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(per_class)
    x = np.arange(len(classes))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(13, 4.5))
    for i, n in enumerate(names):
        ax.bar(x + i * width, [per_class[c][n].f1 for c in classes], width, label=n)
    ax.set_xticks(x + 0.4 - width / 2, classes, rotation=30, ha="right")
    ax.set_ylabel("event F1")
    ax.set_ylim(0, 1.05)
    ax.set_title("Motion detection: event-level F1 per scene class")
    ax.legend(fontsize=8, ncols=len(names), loc="lower left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Score motion detectors on scenes or a video.")
    ap.add_argument("--video", type=Path, help="a video file to score instead of the scenes")
    ap.add_argument("--labels", type=Path, help="CSV of start,end seconds of motion that matters")
    args = ap.parse_args()
    if args.video:
        if not args.labels:
            ap.error("--video needs --labels")
        for name, sc in score_video(args.video, args.labels).items():
            print(
                f"{name:26} precision {sc.precision:.2f}  recall {sc.recall:.2f}  F1 {sc.f1:.2f}"
                f"  false alerts {sc.fp}"
            )
        return
    r = run()
    r.show()
    r.save()


if __name__ == "__main__":
    main()
