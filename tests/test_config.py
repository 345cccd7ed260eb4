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
