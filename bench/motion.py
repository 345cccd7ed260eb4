"""Motion detection: ours against the detectors people use today, on rendered porches.

Every detector sees the same frames: the 320x240 luma of ``hw_sim.porch``'s
rendered scenes (perspective, articulated people with shadows, light that
varies across the picture, gain-dependent noise, JPEG; insects, spiders and
cobwebs at the lens, cloud shadows, snow, rain, plants, a passer-by's shadow,
a visitor standing still).  Tune with ``--split tune``; the published table
uses ``--split held-out``, whose seeds draw every parameter of every scene
afresh and were not looked at while tuning.

Scoring, by time overlap (the same for every detector):

* A detector's output is a per-frame flag; runs of it closer than 2 s are one
  detection (picamera2's example keeps recording 2 s after the last motion).
* A visit (labelled by the generator: a visitor is in the picture) is *found*
  if a detection overlaps it; latency is from the visit's start to the first
  overlapping detection; *coverage* is the share of the visit's time flagged.
* Time flagged outside every visit (allowing 1 s before and 3 s after) is
  *false-alert time*; each stretch of it is one false alert, plus one more per
  60 s it lasts (a clip is cut at ``clips.max_length_s`` and a new one starts).
* precision = found / (found + false alerts); recall = found / visits.
  An always-on and an always-off detector are in every table.
* Overall F1 has a 95 % bootstrap interval over videos.

Baselines, from their sources (read, not copied), each given the same
persistence as ours (motion only after 3 consecutive frames):

* **picamera2 example** (examples/capture_motion.py): mean squared difference
  of consecutive lores frames > 7.  "as published" subtracts uint8 arrays, which
  wraps around; "float" computes in floating point.
* **OpenCV MOG2** with its shadow detection on: shadow pixels (127) are not
  foreground; motion when over 1 % of the frame is foreground (255).
* **Frigate** ``ImprovedMotionDetector`` with its MotionConfig defaults: frame
  100 px high (nearest-neighbour), contrast stretched between the 4th and 96th
  percentiles averaged over the last 50 frames, Gaussian blur (sigma 1, radius
  1), running-average background (frame_alpha 0.01; 0.2 while calibrating),
  threshold 30, one dilation, contours over 10 px are motion boxes, calibrate
  again when contours cover over 80 % (lightning_threshold), and the
  background is only averaged with a moving area after 10 frames of motion.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np

from bench.report import Report
from firmware.config import MotionConfig
from firmware.motion import MotionDetector
from hw_sim.camera import rgb_to_luma

FPS = 15
DETECTED_GAP_S = 2.0
VISIT_GAP_S = 10.0
PRE_S = 1.0
GRACE_S = 3.0
MAX_CLIP_S = 60.0
PERSIST = 3  # consecutive frames, for every detector
SIZE = (320, 240)


# ---------------------------------------------------------------------- detectors


class Ours:
    name = "ours"

    def __init__(self) -> None:
        # The doorbell's own defaults, built as the doorbell builds them.
        self.d = MotionDetector.from_config(MotionConfig(min_frames=PERSIST), FPS)

    def update(self, luma: np.ndarray) -> bool:
        return self.d.update(luma).active


class AlwaysOn:
    name = "always on"

    def update(self, luma: np.ndarray) -> bool:
        return True


class AlwaysOff:
    name = "always off"

    def update(self, luma: np.ndarray) -> bool:
        return False


class Persist:
    """Motion only after ``n`` consecutive frames of it, as ours requires."""

    def __init__(self, inner: object, n: int = PERSIST) -> None:
        self.inner, self.n, self.run = inner, n, 0
        self.name: str = inner.name  # type: ignore[attr-defined]

    def update(self, luma: np.ndarray) -> bool:
        self.run = self.run + 1 if self.inner.update(luma) else 0  # type: ignore[attr-defined]
        return self.run >= self.n


class Picamera2Mse:
    """picamera2's examples/capture_motion.py: ``mse > 7`` between consecutive frames."""

    def __init__(self, wraps: bool) -> None:
        self.wraps = wraps
        self.name = "picamera2 (as published)" if wraps else "picamera2 (float)"
        self.prev: np.ndarray | None = None

    def update(self, luma: np.ndarray) -> bool:
        cur = luma if self.wraps else luma.astype(np.float32)
        prev, self.prev = self.prev, cur
        if prev is None:
            return False
        return bool(np.square(np.subtract(cur, prev)).mean() > 7)


class Mog2:
    name = "OpenCV MOG2"

    def __init__(self, area: float = 0.01) -> None:
        self.sub = cv2.createBackgroundSubtractorMOG2(detectShadows=True)
        self.area = area

    def update(self, luma: np.ndarray) -> bool:
        fg = self.sub.apply(luma)
        return int(np.count_nonzero(fg == 255)) > self.area * fg.size


class Frigate:
    """Frigate's ImprovedMotionDetector with MotionConfig's defaults (see the module doc)."""

    name = "Frigate (improved)"

    def __init__(self, frame_height: int = 100, history: int = 50) -> None:
        self.frame_height = frame_height
        self.size: tuple[int, int] | None = None
        self.avg: np.ndarray | None = None
        self.contrast = np.zeros((history, 2), np.uint8)
        self.contrast[:, 1] = 255
        self.ci = 0
        self.calibrating = True
        self.motion_frames = 0

    def update(self, luma: np.ndarray) -> bool:
        h, w = luma.shape
        if self.size is None:
            self.size = (self.frame_height * w // h, self.frame_height)
            self.avg = np.zeros((self.size[1], self.size[0]), np.float32)
        assert self.avg is not None
        small = cv2.resize(luma, self.size, interpolation=cv2.INTER_NEAREST)
        lo = np.percentile(small, 4).astype(np.uint8)
        hi = np.percentile(small, 96).astype(np.uint8)
        if lo < hi:
            self.contrast[self.ci] = (lo, hi)
            self.ci = (self.ci + 1) % len(self.contrast)
            amin, amax = np.mean(self.contrast, axis=0)
            small = np.clip(small, amin, amax)
            small = (((small - amin) / (amax - amin)) * 255).astype(np.uint8)
        small = cv2.GaussianBlur(small, (3, 3), 1, borderType=cv2.BORDER_REFLECT)
        delta = cv2.absdiff(small, cv2.convertScaleAbs(self.avg))
        thresh = cv2.threshold(delta, 30, 255, cv2.THRESH_BINARY)[1]
        thresh = cv2.dilate(thresh, None, iterations=1)
        contours, _ = cv2.findContours(thresh, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        total, boxes = 0.0, 0
        for c in contours:
            a = cv2.contourArea(c)
            total += a
            boxes += a > 10
        pct = total / (self.size[0] * self.size[1])
        if pct < 0.05 and boxes <= 4:
            self.calibrating = False
        if self.calibrating or pct > 0.8:
            self.calibrating = True
        alpha = 0.2 if self.calibrating else 0.01
        if boxes:
            self.motion_frames += 1
            if self.motion_frames >= 10:
                cv2.accumulateWeighted(small, self.avg, alpha)
        else:
            cv2.accumulateWeighted(small, self.avg, alpha)
            self.motion_frames = 0
        return boxes > 0


FACTORIES: list[Callable[[], object]] = [
    Ours,
    lambda: Persist(Picamera2Mse(wraps=True)),
    lambda: Persist(Picamera2Mse(wraps=False)),
    lambda: Persist(Mog2()),
    lambda: Persist(Frigate()),
    AlwaysOn,
    AlwaysOff,
]
NAMES = ["ours", "picamera2 (as published)", "picamera2 (float)", "OpenCV MOG2"]
NAMES += ["Frigate (improved)", "always on", "always off"]


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


def _outside(a: int, b: int, allowed: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Parts of [a, b) outside every allowed span."""
    parts = [(a, b)]
    for x, y in allowed:
        nxt = []
        for p, q in parts:
            if q <= x or p >= y:
                nxt.append((p, q))
                continue
            if p < x:
                nxt.append((p, x))
            if q > y:
                nxt.append((y, q))
        parts = nxt
    return parts


@dataclass
class Score:
    tp: int = 0  # detections that overlap a visit
    fp: int = 0  # false alerts: stretches flagged outside every visit (+1 per clip length)
    found: int = 0  # visits with a detection
    visits: int = 0
    latency_frames: int = 0
    frames: int = 0
    false_frames: int = 0  # frames flagged outside every visit
    visit_frames: int = 0
    covered_frames: int = 0  # visit frames flagged
    videos: int = 0

    def add(self, truth: list[bool], detected: list[bool]) -> None:
        visits = spans(truth, round(VISIT_GAP_S * FPS))
        dets = spans(detected, round(DETECTED_GAP_S * FPS))
        pre, grace = round(PRE_S * FPS), round(GRACE_S * FPS)
        allowed = [(vs - pre, ve + grace) for vs, ve in visits]
        self.videos += 1
        self.visits += len(visits)
        self.frames += len(truth)
        for a, b in dets:
            if any(a < ve and b > vs for vs, ve in visits):
                self.tp += 1
            for p, q in _outside(a, b, allowed):
                self.fp += math.ceil((q - p) / (MAX_CLIP_S * FPS))
                self.false_frames += q - p
        for vs, ve in visits:
            self.visit_frames += ve - vs
            self.covered_frames += sum(detected[vs:ve])
            hits = [a for a, b in dets if a < ve and b > vs]
            if hits:
                self.found += 1
                self.latency_frames += max(0, min(hits) - vs)

    @property
    def precision(self) -> float:
        return self.found / (self.found + self.fp) if self.found + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.visits if self.visits else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def hours(self) -> float:
        return self.frames / FPS / 3600

    @property
    def false_per_hour(self) -> float:
        return self.fp / self.hours if self.frames else 0.0

    @property
    def false_time(self) -> float:
        """Share of the time flagged outside every visit."""
        return self.false_frames / self.frames if self.frames else 0.0

    @property
    def coverage(self) -> float:
        return self.covered_frames / self.visit_frames if self.visit_frames else 0.0

    @property
    def latency_s(self) -> float:
        return self.latency_frames / max(1, self.found) / FPS

    def merge(self, other: Score) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def _total(scores: list[Score]) -> Score:
    out = Score()
    for s in scores:
        out.merge(s)
    return out


def f1_interval(per_video: list[Score], n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of the pooled F1, resampling videos."""
    rng = np.random.default_rng(seed)
    found = np.array([s.found for s in per_video])
    fp = np.array([s.fp for s in per_video])
    visits = np.array([s.visits for s in per_video])
    idx = rng.integers(0, len(per_video), size=(n, len(per_video)))
    f, e, v = found[idx].sum(1), fp[idx].sum(1), visits[idx].sum(1)
    p = np.where(f + e > 0, f / np.maximum(f + e, 1), 1.0)
    r = np.where(v > 0, f / np.maximum(v, 1), 1.0)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-9), 0.0)
    lo, hi = np.percentile(f1, [2.5, 97.5])
    return float(lo), float(hi)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


# ---------------------------------------------------------------------- running


def porch_frames(cls: str, seed: int) -> Iterator[tuple[np.ndarray, bool]]:
    """(luma, is a visit) for every frame of one rendered porch scene, in order (the
    sensor's noise is a stream): what every detector here is fed."""
    from hw_sim.porch import make_porch

    scene = make_porch(cls, *SIZE, seed=seed)
    for i in range(round(scene.duration * FPS)):
        fr = scene.render(i / FPS)
        yield rgb_to_luma(fr.rgb, SIZE), fr.truth


def _video(args: tuple[str, int]) -> tuple[str, int, dict[str, Score]]:
    """Render one scene and score every detector on it."""
    cv2.setNumThreads(1)
    cls, seed = args
    dets = [f() for f in FACTORIES]
    flags: list[list[bool]] = [[] for _ in dets]
    truth = []
    for luma, visit in porch_frames(cls, seed):
        truth.append(visit)
        for d, out in zip(dets, flags, strict=True):
            out.append(d.update(luma))  # type: ignore[attr-defined]
    scores = {}
    for d, out in zip(dets, flags, strict=True):
        sc = Score()
        sc.add(truth, out)
        scores[d.name] = sc  # type: ignore[attr-defined]
    return cls, seed, scores


def evaluate(
    classes: list[str], seeds: list[int], workers: int = 1
) -> dict[str, list[dict[str, Score]]]:
    """Per class, per video: every detector's Score."""
    jobs = [(c, s) for c in classes for s in seeds]
    out: dict[str, list[dict[str, Score]]] = {c: [] for c in classes}
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            results = list(ex.map(_video, jobs))
    else:
        results = [_video(j) for j in jobs]
    for cls, _, scores in results:
        out[cls].append(scores)
    return out


def cost_per_frame(factory: Callable[[], object], lumas: list[np.ndarray]) -> float:
    """Milliseconds per frame on one core."""
    det = factory()
    for luma in lumas[:30]:  # warm up, and past any start-up learning
        det.update(luma)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    for luma in lumas[30:]:
        det.update(luma)  # type: ignore[attr-defined]
    return (time.perf_counter() - t0) / (len(lumas) - 30) * 1000


def measure_cost(frames: int = 300, repeats: int = 3) -> dict[str, float]:
    """Cost of ours and MOG2 per 320x240 frame, interleaved in one run, best of ``repeats``."""
    from hw_sim.porch import HELD_OUT_SEEDS, make_porch

    cv2.setNumThreads(1)
    scene = make_porch("visitor_day", *SIZE, seed=HELD_OUT_SEEDS[0])
    lumas = [rgb_to_luma(scene.render(i / FPS).rgb, SIZE) for i in range(frames + 30)]
    best = {"ours": math.inf, "OpenCV MOG2": math.inf, "Frigate (improved)": math.inf}
    for _ in range(repeats):
        best["ours"] = min(best["ours"], cost_per_frame(Ours, lumas))
        best["OpenCV MOG2"] = min(best["OpenCV MOG2"], cost_per_frame(Mog2, lumas))
        best["Frigate (improved)"] = min(best["Frigate (improved)"], cost_per_frame(Frigate, lumas))
    return best


def tables(results: dict[str, list[dict[str, Score]]], classes_info: dict) -> str:
    """Markdown: the overall table, then one row per class."""
    names = list(next(iter(results.values()))[0])
    visit_cls = [c for c in results if classes_info[c][2]]
    quiet_cls = [c for c in results if not classes_info[c][2]]
    lines = [
        "| detector | F1 [95 % CI] | precision | recall | visit coverage | latency s "
        "| false alerts / h (no visitor) | false-alert time (no visitor) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        allv = [v[n] for c in results for v in results[c]]
        tot = _total(allv)
        quiet = _total([v[n] for c in quiet_cls for v in results[c]])
        lo, hi = f1_interval(allv)
        lines.append(
            f"| {n} | {tot.f1:.2f} [{lo:.2f}, {hi:.2f}] | {tot.precision:.2f} | {tot.recall:.2f}"
            f" | {tot.coverage:.2f} | {tot.latency_s:.1f} | {quiet.false_per_hour:.0f}"
            f" | {100 * quiet.false_time:.1f} % |"
        )
    n_vid = sum(len(v) for v in results.values())
    n_vis = sum(v[names[0]].visits for c in results for v in results[c])
    hours = _total([v[names[0]] for c in quiet_cls for v in results[c]]).hours
    out = [
        f"{n_vid} videos ({len(results)} classes), {n_vis} visits, "
        f"{hours * 60:.1f} min without a visitor.\n",
        *lines,
        "",
        "Visitor classes: recall (found/visits) and false alerts; no-visitor classes: "
        "false alerts per hour and share of time flagged.\n",
        "| class | videos | " + " | ".join(names) + " |",
        "|---" * (len(names) + 2) + "|",
    ]
    for c in visit_cls:
        cells = []
        for n in names:
            t = _total([v[n] for v in results[c]])
            cells.append(f"{t.found}/{t.visits}, {t.fp} FA, cov {t.coverage:.2f}")
        out.append(f"| {c} | {len(results[c])} | " + " | ".join(cells) + " |")
    for c in quiet_cls:
        cells = []
        for n in names:
            t = _total([v[n] for v in results[c]])
            cells.append(f"{t.false_per_hour:.0f}/h, {100 * t.false_time:.0f} %")
        out.append(f"| {c} | {len(results[c])} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def run(
    quick: bool = False,
    split: str = "held-out",
    seeds: int = 3,
    workers: int | None = None,
    first: int = 0,
) -> Report:
    from hw_sim.porch import CLASSES, HELD_OUT_SEEDS, TUNE_SEEDS

    cv2.setNumThreads(1)
    classes = list(CLASSES)
    if quick:
        classes, seeds = ["insect", "visitor_day"], 1
    pool = HELD_OUT_SEEDS if split == "held-out" else TUNE_SEEDS
    workers = workers or (1 if quick else min(2, os.cpu_count() or 1))
    chosen = list(pool[first : first + seeds])
    results = evaluate(classes, chosen, workers)
    cost = measure_cost(frames=40 if quick else 300, repeats=1 if quick else 3)

    report = Report(
        "motion",
        f"Motion detection ({split} porch scenes: {len(classes)} classes × {seeds} seeds"
        + (f" from seed {chosen[0]})" if first else ")"),
    )
    allv = {n: _total([v[n] for c in results for v in results[c]]) for n in NAMES}
    quiet_cls = [c for c in results if not CLASSES[c][2]]
    quiet = {n: _total([v[n] for c in quiet_cls for v in results[c]]) for n in NAMES}
    for base in NAMES[1:]:
        report.add("F1, all scenes", allv["ours"].f1, allv[base].f1, base, "", better="higher")
    for base in NAMES[1:]:
        report.add(
            "false alerts per hour (no visitor)",
            quiet["ours"].false_per_hour,
            quiet[base].false_per_hour,
            base,
            "/h",
        )
    report.add(
        "cost per 320x240 frame",
        cost["ours"],
        cost["OpenCV MOG2"],
        "OpenCV MOG2",
        "ms",
        note="one core, same run; target ≤ 1 ms",
    )
    report.extra_md = tables(results, CLASSES) + (
        f"\n\nCost per 320x240 frame on one core, same run: ours {cost['ours']:.2f} ms, "
        f"OpenCV MOG2 {cost['OpenCV MOG2']:.2f} ms, Frigate {cost['Frigate (improved)']:.2f} ms."
    )
    report.extra = {
        "split": split,
        "seeds": chosen,
        "overall": {n: s.__dict__ for n, s in allv.items()},
        "counts": {
            c: [{n: s.__dict__ for n, s in v.items()} for v in vs] for c, vs in results.items()
        },
        "cost_ms": cost,
    }
    return report


def score_video(path: Path, labels: Path) -> dict[str, Score]:
    """Score every detector on a video file with hand-written labels (CSV of start,end)."""
    from hw_sim.scenes import VideoScene, load_labels

    scene = VideoScene(path, *SIZE, labels=load_labels(labels))
    n = int(scene.duration * FPS)
    frames = [scene.render(i / FPS) for i in range(n)]
    lumas = [rgb_to_luma(f.rgb, SIZE) for f in frames]
    truth = [f.truth for f in frames]
    scores = {}
    for factory in FACTORIES:
        det = factory()
        sc = Score()
        sc.add(truth, [det.update(lu) for lu in lumas])  # type: ignore[attr-defined]
        scores[det.name] = sc  # type: ignore[attr-defined]
    return scores


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Score motion detectors on porch scenes or a video.")
    ap.add_argument("--video", type=Path, help="a video file to score instead of the scenes")
    ap.add_argument("--labels", type=Path, help="CSV of start,end seconds of motion that matters")
    ap.add_argument("--split", choices=["tune", "held-out"], default="held-out")
    ap.add_argument("--seeds", type=int, default=3, help="videos per scene class")
    ap.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="with --split tune: start at this tune seed (a second tune group, e.g. 10)",
    )
    ap.add_argument("--classes", help="comma-separated classes (default: all)")
    ap.add_argument("--no-save", action="store_true", help="print only")
    args = ap.parse_args()
    if args.video:
        if not args.labels:
            ap.error("--video needs --labels")
        for name, sc in score_video(args.video, args.labels).items():
            print(
                f"{name:26} precision {sc.precision:.2f}  recall {sc.recall:.2f}  F1 {sc.f1:.2f}"
                f"  false alerts {sc.fp}  false-alert time {sc.false_frames / FPS:.1f} s"
            )
        return
    if args.classes:
        from hw_sim.porch import CLASSES, TUNE_SEEDS

        pool = TUNE_SEEDS if args.split == "tune" else None
        assert pool is not None, "--classes is for tuning"
        chosen = list(pool[args.first_seed : args.first_seed + args.seeds])
        res = evaluate(args.classes.split(","), chosen, 2)
        print(tables(res, CLASSES))
        return
    if args.first_seed and args.split != "tune":
        ap.error("--first-seed is for --split tune: held-out always starts at its first seed")
    r = run(split=args.split, seeds=args.seeds, first=args.first_seed)
    r.show()
    print(r.extra_md)
    if not args.no_save and args.split == "held-out":
        r.save()


if __name__ == "__main__":
    main()
