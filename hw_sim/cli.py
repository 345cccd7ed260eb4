"""``doorbell sim``: the firmware on simulated hardware and a simulated clock.

The simulator adds this command to ``doorbell`` through the ``open_doorbell.commands``
entry-point group, so the firmware never imports hw_sim: the simulator plugs in.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from common.cli import UsageError, non_negative, positive
from firmware.cli import load, print_event


def add_command(sub: Any) -> None:
    sim = sub.add_parser(
        "sim",
        help="run the firmware on simulated hardware, faster than real time",
        description="Run the doorbell on simulated hardware and a simulated clock. Prints one "
        "JSON line per event (ring, motion_start, motion_end, clip_saved, clip_deleted).",
    )
    src = sim.add_mutually_exclusive_group(required=True)
    src.add_argument("--scene", help="a scripted scene (see --list-scenes)")
    src.add_argument("--video", type=Path, help="a video file to play as the camera")
    src.add_argument("--list-scenes", action="store_true", help="name the scenes and exit")
    sim.add_argument("--seconds", type=positive, help="simulated seconds to run")
    sim.add_argument(
        "--press-at",
        type=non_negative,
        action="append",
        default=[],
        metavar="T",
        help="press the button at T seconds (repeatable)",
    )
    sim.add_argument(
        "--pir-at",
        type=non_negative,
        action="append",
        default=[],
        metavar="T",
        help="the PIR fires for 3 s at T seconds (repeatable; needs gpio.pir_pin)",
    )
    sim.add_argument("--data-dir", type=Path, help="where clips go (default: a new temp folder)")
    sim.add_argument("--config", type=Path, help="a doorbell TOML config (default: built-in)")

    sim.set_defaults(func=cmd_sim)


def cmd_sim(args: argparse.Namespace) -> int:
    from hw_sim.runner import SimDoorbell
    from hw_sim.scenes import SCENES, UnknownScene, VideoScene, VideoUnreadable, make_scene

    if args.list_scenes:
        for name, (desc, _) in SCENES.items():
            print(f"{name:14} {desc}")
        return 0
    if args.seconds is None:
        raise UsageError("--seconds is required (how long to simulate)")
    for t in args.press_at + args.pir_at:
        if t >= args.seconds:
            raise UsageError(
                f"event at {t} s is past the end of the run (--seconds {args.seconds})"
            )
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="doorbell-sim-"))
    cfg = load(args.config, data_dir)
    if args.pir_at and cfg.gpio.pir_pin is None:
        raise UsageError("--pir-at needs a PIR: set gpio.pir_pin in the config")
    w, h = cfg.camera.main_size
    try:
        if args.video is not None:
            scene = VideoScene(args.video, w, h)
        else:
            scene = make_scene(args.scene, w, h)
    except (UnknownScene, VideoUnreadable) as err:
        raise UsageError(str(err)) from None
    bell = SimDoorbell(cfg, scene, emit=print_event(0.0))
    if bell.owner is not None and cfg.owner.box_public is None:
        keys_dir = data_dir / "owner-keys"
        bell.owner.save(keys_dir)
        print(
            f"doorbell: clips are encrypted to a made-up owner whose keys are in {keys_dir}; "
            f"decrypt one with: doorbell clips export ID --data-dir {data_dir} "
            f"--owner-key {keys_dir} --out clip.mp4",
            file=sys.stderr,
        )
    try:
        for t in args.press_at:
            bell.schedule_press(t)
        for t in args.pir_at:
            bell.schedule_pir(t, 3.0)
        bell.run(args.seconds)
    finally:
        bell.close()
    return 0
