"""The first motion detector on the scripted scenes."""

import pytest

from firmware.masks import rasterize
from firmware.motion import MotionDetector
from hw_sim.camera import rgb_to_luma
from hw_sim.scenes import make_scene


def run(scene_name: str, seconds: float = 20.0, fps: int = 15, mask=None, **kw):
    scene = make_scene(scene_name, 320, 240, seed=1)
    det = MotionDetector(mask=mask, **kw)
    out = []
    for i in range(int(seconds * fps)):
        f = scene.render(i / fps)
        out.append((f.truth, det.update(rgb_to_luma(f.rgb, (160, 120)))))
    return out


def test_person_is_detected_while_walking():
    out = run("person")
    walking = [r.active for truth, r in out if truth]
    assert sum(walking) / len(walking) > 0.6
    bboxes = [r.bbox for _, r in out if r.active]
    assert all(0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1 for b in bboxes)


@pytest.mark.parametrize("scene", ["porch", "dusk", "light_switch", "ir_cut"])
def test_no_alerts_without_a_visitor(scene):
    out = run(scene)
    assert not any(r.active for _, r in out)


def test_whole_frame_change_relearns_instead_of_alerting():
    """Something no gain explains (the camera knocked, a new scene): relearn, no alert."""
    a = make_scene("porch", 320, 240, seed=1).render(0).rgb
    b = (255 - a).copy()
    det = MotionDetector(min_frames=1)
    for _ in range(5):
        det.update(rgb_to_luma(a, (160, 120)))
    results = [det.update(rgb_to_luma(b, (160, 120))) for _ in range(10)]
    assert results[0].relearned
    assert not any(r.active for r in results)


def test_masked_pixels_are_ignored():
    mask = rasterize([[(0, 0), (1, 0), (1, 1), (0, 1)]], 160, 120)
    assert not any(r.active for _, r in run("person", mask=mask))


def test_sensitivity_is_monotonic():
    d1, d10 = MotionDetector(sensitivity=1), MotionDetector(sensitivity=10)
    assert d1.min_area > d10.min_area
    with pytest.raises(ValueError):
        MotionDetector(sensitivity=0)
