"""The doorbell the latency benchmarks run: one config, so their figures compare.

A small camera (320×240, 15 fps), no ring cooldown, short clips, and the relay link
on; each benchmark adds its own sections (the Home Assistant link, a shorter chime).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firmware.config import Config, parse_config
from protocol.crypto import OwnerKeys, b64


def bench_doorbell(
    data_dir: Path, port: int, password_file: Path, owner: OwnerKeys, **sections: Any
) -> Config:
    """``sections`` are merged into the matching config sections (``gpio={...}``)."""
    raw: dict[str, Any] = {
        "device": {"id": "bench-bell", "data_dir": str(data_dir)},
        "camera": {"main_size": [320, 240], "lores_size": [160, 120], "fps": 15},
        "gpio": {"ring_cooldown_s": 0.0, "debounce_s": 0.005},
        "clips": {"pre_roll_s": 1.0, "post_roll_s": 1.0, "max_length_s": 30},
        "mqtt": {"enabled": True, "port": port, "password_file": str(password_file)},
        "owner": {"sign_public": b64(owner.sign_public), "box_public": b64(owner.box_public)},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return parse_config(raw)
