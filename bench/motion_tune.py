"""Tune the motion detector in a minute, not twenty: render the tune scenes once, then
score ours on them as often as you like.

``python -m bench.motion`` renders every porch frame again on each run and scores six
detectors on it (about 20 minutes for ten seeds on two cores); rendering is 98 % of
that.  This tool keeps the rendered tune frames in a cache and scores only our
detector, with settings given on the command line, so an idea is checked on all 21
classes of twenty tune seeds in about a minute::

    python -m bench.motion_tune render --cache /var/tmp/porch --seeds 0-20
    python -m bench.motion_tune score  --cache /var/tmp/porch --seeds 0-20 \\
        --set sensitivity=6 --set max_sideways=0.35

Only tune seeds can be cached (``hw_sim.porch.TUNE_SEEDS``): the held-out scenes are
for the one run of ``bench.motion`` that a round reports, after the settings are frozen.

The cache holds each frame's luma at 160x120 (the mean of 2x2 blocks of the 320x240
frame the benchmark feeds, rounded to a grey level; about 10 MB a video) and the
labels.  The detector works at 80x60 either way, so figures match ``bench.motion``'s
but for that rounding; confirm a change there before you report it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from bench.motion import FPS, PERSIST, Score, _total, porch_frames
from firmware.config import MotionConfig
from firmware.imaging import box_downscale
from firmware.motion import MotionDetector

CACHE_FACTOR = 2  # 320x240 -> 160x120: a quarter of the disk, same 80x60 work picture


def _path(cache: Path, cls: str, seed: int) -> Path:
    return cache / f"{cls}_{seed}.npz"


def render_one(args: tuple[Path, str, int]) -> Path:
    """Render one tune scene into the cache (skipped if there); its path."""
    cache, cls, seed = args
    out = _path(cache, cls, seed)
    if out.exists():
        return out
    frames, truth = [], []
    for luma, visit in porch_frames(cls, seed):
        half = box_downscale(luma, CACHE_FACTOR)
        frames.append(np.clip(np.rint(half), 0, 255).astype(np.uint8))
        truth.append(visit)
    # Written whole, then renamed: an interrupted render never leaves half a video.
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.npz")
    np.savez_compressed(tmp, frames=np.stack(frames), truth=np.array(truth, dtype=bool))
    tmp.replace(out)
    return out


def score_one(args: tuple[Path, dict[str, object]]) -> tuple[str, Score]:
    """Our detector, as the doorbell builds it with ``overrides``, on one cached video."""
    path, overrides = args
    data = np.load(path)
    det = MotionDetector.from_config(MotionConfig(min_frames=PERSIST, **overrides), FPS)
    flags = [det.update(f).active for f in data["frames"]]
    sc = Score()
    sc.add([bool(t) for t in data["truth"]], flags)
    return path.stem, sc


def _seeds(text: str) -> range:
    from hw_sim.porch import TUNE_SEEDS

    try:
        lo, _, hi = text.partition("-")
        seeds = range(int(lo), int(hi) if hi else int(lo) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: seeds are FIRST-END, e.g. 0-20") from None
    if not seeds or seeds.start < TUNE_SEEDS.start or seeds.stop > TUNE_SEEDS.stop:
        raise argparse.ArgumentTypeError(
            f"{text!r}: only tune seeds {TUNE_SEEDS.start}-{TUNE_SEEDS.stop} can be cached"
        )
    return seeds


def _setting(text: str) -> tuple[str, object]:
    name, eq, value = text.partition("=")
    known = MotionConfig.model_fields
    if not eq or name not in known:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give NAME=VALUE with a [motion] setting ({', '.join(known)})"
        )
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value  # a string setting, e.g. source=camera


def _classes(text: str | None) -> list[str]:
    from hw_sim.porch import CLASSES

    if not text:
        return list(CLASSES)
    names = text.split(",")
    unknown = [n for n in names if n not in CLASSES]
    if unknown:
        raise SystemExit(f"motion_tune: unknown class {unknown[0]!r} (known: {', '.join(CLASSES)})")
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.motion_tune", description=__doc__.split("\n\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, text in (
        ("render", "render tune scenes into the cache (resumable; skips what is there)"),
        ("score", "score our detector on the cached scenes, with --set overrides"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--cache", type=Path, required=True, help="folder for the frames")
        p.add_argument("--seeds", type=_seeds, default=_seeds("0-10"), help="tune seeds, A-B")
        p.add_argument("--classes", help="comma-separated scene classes (default: all 21)")
        p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    sc = sub.choices["score"]
    sc.add_argument(
        "--set",
        dest="settings",
        type=_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a [motion] setting to try instead of its default (repeatable)",
    )
    sc.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    args = ap.parse_args(argv)
    classes = _classes(args.classes)
    jobs = [(c, s) for s in args.seeds for c in classes]

    if args.cmd == "render":
        args.cache.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with ProcessPoolExecutor(args.workers) as ex:
            for n, _ in enumerate(ex.map(render_one, [(args.cache, c, s) for c, s in jobs]), 1):
                print(
                    f"\rrendered {n}/{len(jobs)} videos, {time.monotonic() - t0:.0f} s",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
        print(file=sys.stderr)
        return 0

    missing = [_path(args.cache, c, s) for c, s in jobs if not _path(args.cache, c, s).exists()]
    if missing:
        print(
            f"motion_tune: {len(missing)} of {len(jobs)} videos are not in {args.cache}"
            f" (first: {missing[0].name}); run `render` with the same --seeds/--classes",
            file=sys.stderr,
        )
        return 2
    overrides = dict(args.settings)
    try:
        MotionConfig(**overrides)
    except ValueError as err:
        first = str(err).splitlines()
        print(f"motion_tune: bad setting: {' '.join(first[1:3])}", file=sys.stderr)
        return 2
    paths = [_path(args.cache, c, s) for c, s in jobs]
    with ProcessPoolExecutor(args.workers) as ex:
        results = list(ex.map(score_one, [(p, overrides) for p in paths]))
    return _report(results, classes, overrides, args.json)


def _report(
    results: list[tuple[str, Score]], classes: list[str], overrides: dict, as_json: bool
) -> int:
    from hw_sim.porch import CLASSES

    tot = _total([s for _, s in results])
    quiet = _total([s for name, s in results if not CLASSES[name.rsplit("_", 1)[0]][2]])
    failing = [
        {"video": name, "missed": s.visits - s.found, "false_alerts": s.fp}
        for name, s in results
        if s.fp or s.found < s.visits
    ]
    if as_json:
        print(
            json.dumps(
                {
                    "settings": overrides,
                    "videos": len(results),
                    "f1": tot.f1,
                    "precision": tot.precision,
                    "recall": tot.recall,
                    "found": tot.found,
                    "visits": tot.visits,
                    "false_alerts": tot.fp,
                    "false_alerts_per_hour_no_visitor": quiet.false_per_hour,
                    "failing": failing,
                }
            )
        )
        return 0
    print(
        f"{len(results)} videos: F1 {tot.f1:.3f}  precision {tot.precision:.3f}  recall "
        f"{tot.recall:.3f}  found {tot.found}/{tot.visits}  false alerts {tot.fp}"
        f" ({quiet.false_per_hour:.0f} /h with no visitor)"
    )
    for c in classes:
        cs = _total([s for name, s in results if name.rsplit("_", 1)[0] == c])
        print(f"  {c:15} found {cs.found}/{cs.visits}  false alerts {cs.fp}")
    if failing:
        print("failing:", " ".join(_failure(f) for f in failing))
    return 0


def _failure(f: dict) -> str:
    why = (["missed"] if f["missed"] else []) + (
        [f"{f['false_alerts']} FA"] if f["false_alerts"] else []
    )
    return f"{f['video']} ({', '.join(why)})"


if __name__ == "__main__":
    sys.exit(main())
