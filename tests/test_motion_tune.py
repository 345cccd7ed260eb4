"""The fast tuning loop scores what bench.motion scores, and refuses held-out seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import motion, motion_tune
from hw_sim.porch import TUNE_SEEDS


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("porch")
    # One visitor and one spider scene: a visit to find and a lens-crawler to ignore.
    for cls in ("visitor_day", "spider"):
        motion_tune.render_one((d, cls, 3))
    return d


def test_cached_scores_match_the_benchmark(cache):
    """Same frames (but for rounding at 160x120), same detector, same scoring."""
    for cls in ("visitor_day", "spider"):
        _, _, bench_scores = motion._video((cls, 3))
        name, cached = motion_tune.score_one((cache / f"{cls}_3.npz", {}))
        ours = bench_scores["ours"]
        assert name == f"{cls}_3"
        assert (cached.found, cached.visits, cached.fp) == (ours.found, ours.visits, ours.fp)
        assert abs(cached.covered_frames - ours.covered_frames) <= 0.05 * max(1, ours.visit_frames)


def test_settings_reach_the_detector(cache, capsys):
    """A setting given with --set changes what is scored (here: nothing is big enough)."""
    assert (
        motion_tune.main(
            ["score", "--cache", str(cache), "--seeds", "3-4", "--classes", "visitor_day", "--json"]
        )
        == 0
    )
    found = json.loads(capsys.readouterr().out)["found"]
    assert found == 1
    # sensitivity 1 needs 8 % of the picture changed; min_travel 1 a whole picture's walk.
    assert (
        motion_tune.main(
            [
                "score",
                "--cache",
                str(cache),
                "--seeds",
                "3-4",
                "--classes",
                "visitor_day",
                "--json",
                "--set",
                "min_travel=1.0",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["found"] == 0 and out["settings"] == {"min_travel": 1.0}


def test_the_cache_holds_the_benchmarks_frames_at_half_size(cache):
    from firmware.imaging import box_downscale
    from hw_sim.camera import rgb_to_luma
    from hw_sim.porch import make_porch

    data = np.load(cache / "spider_3.npz")
    scene = make_porch("spider", *motion.SIZE, seed=3)
    for i in range(8):  # the sensor's noise is a stream: frames are rendered in order
        full = rgb_to_luma(scene.render(i / motion.FPS).rgb, motion.SIZE)
    assert data["frames"].shape[1:] == (120, 160)
    assert np.abs(data["frames"][7].astype(float) - box_downscale(full, 2)).max() <= 0.5


@pytest.mark.parametrize(
    "argv, says",
    [
        (["score", "--seeds", f"{10_000}-{10_003}"], "only tune seeds"),
        (["score", "--seeds", "three"], "seeds are FIRST-END"),
        (["score", "--set", "nonsense=1"], "a [motion] setting"),
    ],
)
def test_bad_arguments_say_one_thing_and_fail(tmp_path, capsys, argv, says):
    with pytest.raises(SystemExit) as e:
        motion_tune.main([*argv, "--cache", str(tmp_path)])
    assert e.value.code == 2
    assert says in capsys.readouterr().err
    assert TUNE_SEEDS.stop <= 10_000  # the held-out seeds are outside what can be cached


def test_a_bad_value_or_an_empty_cache_is_one_line(tmp_path, cache, capsys):
    assert motion_tune.main(["score", "--cache", str(tmp_path), "--seeds", "3-4"]) == 2
    assert "not in" in capsys.readouterr().err
    rc = motion_tune.main(
        [
            "score",
            "--cache",
            str(cache),
            "--seeds",
            "3-4",
            "--classes",
            "spider",
            "--set",
            "sensitivity=42",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "sensitivity" in err
