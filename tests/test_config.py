from pathlib import Path

import pytest

from firmware.config import ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).parent.parent / "deploy" / "pi" / "doorbell.example.toml"


def test_defaults_are_valid():
    cfg = parse_config({})
    assert cfg.clips.pre_roll_s == 5.0
    assert cfg.ring_seconds >= cfg.clips.pre_roll_s + cfg.camera.keyframe_interval_s


def test_example_file_is_valid_and_documents_every_section():
    cfg = load_config(EXAMPLE)
    text = EXAMPLE.read_text()
    for section in ("device", "gpio", "camera", "motion", "clips", "retention", "masks"):
        assert f"[{section}]" in text or f"[[{section}]]" in text
    assert cfg.masks, "the example shows a mask"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"clips": {"pre_roll_s": -1}}, "clips.pre_roll_s: Input should be greater than or equal"),
        ({"clips": {"prerol": 1}}, "clips.prerol: unknown key"),
        ({"camera": {"main_size": [641, 480]}}, "camera.main_size: width and height must be even"),
        ({"gpio": {"button_pin": 40}}, "gpio.button_pin: Input should be less than or equal to 27"),
        ({"motion": {"source": "pir"}}, 'motion.source = "pir" needs gpio.pir_pin'),
        ({"motion": {"sensitivity": 11}}, "motion.sensitivity"),
        ({"motion": {"max_width": 0}}, "motion.max_width"),
        ({"motion": {"close_max_width": 1.5}}, "motion.close_max_width"),
        ({"motion": {"steady_frames": 0}}, "motion.steady_frames"),
        ({"motion": {"live_frac": 2}}, "motion.live_frac"),
        ({"motion": {"max_texture_kept": 1.5}}, "motion.max_texture_kept"),
        ({"masks": [{"polygon": [[0, 0], [1, 0]]}]}, "masks.0.polygon: a polygon needs at least 3"),
        ({"device": {"id": "Front Door"}}, "device.id"),
        ({"gpio": {"button_pin": 5, "chime_pin": 5}}, "must differ"),
    ],
)
def test_errors_name_the_key(data, message):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert message in str(err.value)


def test_file_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[clips\npre_roll_s = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_relay_example_config_is_valid():
    from relay.config import load_relay_config

    cfg = load_relay_config(EXAMPLE.parent.parent / "relay" / "relay.example.toml")
    assert cfg.provisioning.broker_port == 8883


def test_motion_constants_reach_the_detector(tmp_path):
    """The detector the doorbell runs uses MotionConfig's values, not its own defaults."""
    from hw_sim.runner import SimDoorbell
    from hw_sim.scenes import make_scene
    from tests.conftest import small_config

    motion = {"max_width": 0.5, "close_max_width": 0.8, "steady_frames": 3, "min_aspect": 1.5}
    motion |= {"min_travel": 0.1, "max_texture_kept": 0.6, "max_sideways": 0.3, "live_frac": 0.1}
    bell = SimDoorbell(small_config(tmp_path, motion=motion), make_scene("porch", 320, 240), print)
    try:
        det = bell.controller.detector
        assert (det.max_width, det.close_max_width) == (0.5, 0.8)
        assert (det.steady_frames, det.min_aspect, det.min_travel) == (3, 1.5, 0.1)
        assert (det.max_texture_kept, det.max_sideways, det.live_frac) == (0.6, 0.3, 0.1)
    finally:
        bell.close()
