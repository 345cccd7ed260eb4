"""``doorbell``: run the doorbell firmware, on a Pi or on simulated hardware.

    doorbell sim --scene person --seconds 30 --press-at 10
    doorbell sim --list-scenes
    doorbell clips list --data-dir ./doorbell-data
    doorbell run --config /etc/doorbell/doorbell.toml
    doorbell run --config doorbell.toml --sim

A bad argument, an unknown scene, an unreadable video or an invalid config prints
one line saying what is wrong and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from firmware import __version__
from firmware.config import Config, ConfigError, load_config
from protocol.cliutil import UsageParser, non_negative, positive

EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with what the user asked for: one line, exit 2."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(
        prog="doorbell",
        description="The open camera doorbell's firmware: a Raspberry Pi doorbell that rings, "
        "records clips that start before the event, and keeps them on the device.",
    )
    p.add_argument("--version", action="version", version=f"doorbell {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log what the firmware does")
    sub = p.add_subparsers(dest="command", required=True, parser_class=UsageParser)

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

    clips = sub.add_parser("clips", help="the clips stored on this doorbell")
    csub = clips.add_subparsers(dest="clips_command", required=True, parser_class=UsageParser)
    cl = csub.add_parser("list", help="list stored clips, oldest first")
    cl.add_argument("--data-dir", type=Path, help="the doorbell's data folder")
    cl.add_argument("--config", type=Path, help="read the data folder from this config")
    cl.add_argument("--json", action="store_true", help="machine-readable output")
    ex = csub.add_parser("export", help="decrypt a clip for its owner, into an MP4 file")
    ex.add_argument("id", help="the clip id (see clips list)")
    ex.add_argument(
        "--owner-key",
        type=Path,
        required=True,
        help="the owner's key folder (from footage keys new), or its box.key file",
    )
    ex.add_argument("--out", type=Path, required=True, help="where to write the MP4")
    ex.add_argument("--data-dir", type=Path, help="the doorbell's data folder")
    ex.add_argument("--config", type=Path, help="read the data folder from this config")

    run = sub.add_parser(
        "run",
        help="run the doorbell (on a Pi, or with --sim on simulated hardware in real time)",
    )
    run.add_argument("--config", type=Path, required=True, help="the doorbell's TOML config")
    run.add_argument("--sim", action="store_true", help="use simulated camera and pins")
    run.add_argument("--scene", default="porch", help="with --sim: the scene to show")
    run.add_argument("--seconds", type=positive, help="stop after this many seconds")
    run.add_argument("--data-dir", type=Path, help="use this data folder instead of the config's")

    prov = sub.add_parser(
        "provision",
        help="write a doorbell's identity onto a Raspberry Pi OS boot partition",
        description="Writes the config, broker password, owner's public keys, systemd unit and a "
        "first-boot installer onto a mounted boot partition (see deploy/pi/README.md).",
    )
    prov.add_argument("--bundle", type=Path, required=True, help="from: relay devices add")
    prov.add_argument("--boot", type=Path, required=True, help="the mounted boot partition")
    prov.add_argument(
        "--owner-keys",
        type=Path,
        required=True,
        help="the owner's key folder (only sign.pub and box.pub are read)",
    )
    prov.add_argument("--ca", type=Path, help="the broker's CA certificate, for TLS")
    return p


def _print_event(t0: float) -> Any:
    def emit(ev: Any) -> None:
        line = {"event": ev.kind, "id": ev.id, "t": round(ev.t - t0, 3), "at": _iso(ev.at)}
        for k, v in ev.data.items():
            line[k] = _iso(v) if k in ("start", "end", "trigger_at") else v
        print(json.dumps(line), flush=True)

    return emit


def _load(path: Path | None, data_dir: Path | None = None) -> Config:
    try:
        cfg = load_config(path)
    except ConfigError as err:
        raise UsageError(f"invalid config: {err}") from None
    if data_dir is not None:
        cfg = cfg.model_copy(
            update={"device": cfg.device.model_copy(update={"data_dir": data_dir})}
        )
    return cfg


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
    cfg = _load(args.config, data_dir)
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
    bell = SimDoorbell(cfg, scene, emit=_print_event(0.0))
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


def _open_store(args: argparse.Namespace) -> Any:
    from firmware.store import ClipStore

    if args.data_dir is None and args.config is None:
        raise UsageError("give --data-dir DIR or --config FILE")
    cfg = _load(args.config, args.data_dir)
    clips_dir = cfg.device.data_dir / "clips"
    if not clips_dir.is_dir():
        raise UsageError(f"no clips folder at {clips_dir}")
    return ClipStore(cfg.device.data_dir)


def cmd_clips_export(args: argparse.Namespace) -> int:
    from protocol.crypto import CryptoFailure, OwnerKeys, unb64

    store = _open_store(args)
    try:
        if args.owner_key.is_dir():
            private = OwnerKeys.load(args.owner_key).box_private
        else:
            private = unb64(args.owner_key.read_text().strip())
    except (OSError, CryptoFailure) as err:
        raise UsageError(f"cannot read the owner key {args.owner_key}: {err}") from None
    tmp = args.out.with_name(f".tmp-{args.out.name}")
    try:
        with open(tmp, "wb") as out:
            size = store.export(args.id, private, out)
        tmp.replace(args.out)
    except KeyError:
        raise UsageError(f"no clip {args.id!r} (see: doorbell clips list)") from None
    except CryptoFailure as err:
        raise UsageError(str(err)) from None
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {args.out} ({size / 1e6:.2f} MB)")
    return 0


def cmd_clips_list(args: argparse.Namespace) -> int:
    records = _open_store(args).list()
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=2))
        return 0
    if not records:
        print("no clips")
        return 0
    print(f"{'id':24} {'start (UTC)':24} {'trigger':12} {'length':>8} {'size':>10}")
    for r in records:
        print(
            f"{r.id:24} {_iso(r.start):24} {r.trigger:12} {r.duration_s:7.1f}s "
            f"{r.size / 1e6:8.2f}MB"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import queue
    from concurrent.futures import ThreadPoolExecutor

    from firmware.clock import SystemClock
    from firmware.controller import Controller
    from firmware.events import Stop
    from firmware.gpio import DoorbellIO
    from firmware.sdnotify import Notifier
    from firmware.store import ClipStore
    from protocol.crypto import unb64

    notifier = Notifier()

    cfg = _load(args.config, args.data_dir)
    clock = SystemClock()
    masks = [m.polygon for m in cfg.masks]
    cam_cfg = cfg.camera
    pin_factory = None
    if args.sim:
        from gpiozero.pins.mock import MockFactory

        from hw_sim.camera import SimCamera
        from hw_sim.scenes import UnknownScene, make_scene

        try:
            scene = make_scene(args.scene, *cam_cfg.main_size)
        except UnknownScene as err:
            raise UsageError(str(err)) from None
        camera: Any = SimCamera(
            scene,
            clock,
            cam_cfg.main_size,
            cam_cfg.lores_size,
            cam_cfg.fps,
            cam_cfg.keyframe_interval_s,
            masks,
        )
        pin_factory = MockFactory()
    else:
        from firmware.camera.picamera2_backend import CameraUnavailable, Picamera2Backend

        try:
            camera = Picamera2Backend(
                clock,
                cam_cfg.main_size,
                cam_cfg.lores_size,
                cam_cfg.fps,
                cam_cfg.keyframe_interval_s,
                cam_cfg.bitrate,
                masks,
            )
        except CameraUnavailable as err:
            raise UsageError(f"{err} (or use --sim)") from None
    if cfg.owner.box_public is None or cfg.owner.sign_public is None:
        raise UsageError(
            "owner.box_public and owner.sign_public are not set: provisioning "
            "writes the owner's public keys (make them with: footage keys new)"
        )
    try:
        store = ClipStore(cfg.device.data_dir, unb64(cfg.owner.box_public))
    except OSError as err:
        raise UsageError(f"cannot use data folder {cfg.device.data_dir}: {err}") from None
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    io = DoorbellIO(cfg.gpio, events.put, clock, pin_factory=pin_factory)
    printer = _print_event(clock.monotonic())
    emit: Any = printer
    uplink = None
    if cfg.mqtt.enabled:
        from firmware.uplink import Uplink

        try:
            uplink = Uplink(cfg)
        except OSError as err:
            raise UsageError(f"cannot use data folder {cfg.device.data_dir}: {err}") from None
        announce = uplink.announce

        def emit(ev: Any) -> None:
            announce(ev)
            printer(ev)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="finaliser") as finaliser:
        ctl = Controller(
            cfg,
            clock,
            camera,
            io,
            store,
            emit,
            finaliser=finaliser,
            events=events,
        )
        if uplink is not None:
            uplink.start(store)

        def stop(*_: Any) -> None:
            ctl.submit(Stop())

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if args.seconds:
            threading.Timer(args.seconds, stop).start()
        ctl.start()
        if args.sim:
            camera.start_thread()
        try:
            notifier.ready()
            ctl.run_forever(heartbeat=notifier.heartbeat)
            notifier.stopping()
        finally:
            camera.stop()
            io.close()
            if uplink is not None:
                uplink.stop()
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    from firmware.provision import ProvisionError, provision
    from protocol.crypto import CryptoFailure

    try:
        files = provision(args.bundle, args.boot, args.owner_keys, args.ca)
    except (ProvisionError, CryptoFailure, OSError) as err:
        raise UsageError(str(err)) from None
    for f in files:
        print(f)
    print("doorbell: provisioned; put the card in the Pi and power it on", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "sim":
            return cmd_sim(args)
        if args.command == "clips" and args.clips_command == "export":
            return cmd_clips_export(args)
        if args.command == "clips":
            return cmd_clips_list(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "provision":
            return cmd_provision(args)
    except UsageError as err:
        print(f"doorbell: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
