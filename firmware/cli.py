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
import threading
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

try:  # what the doorbell part installs; without it, say so in one line
    import gpiozero  # noqa: F401
    import numpy  # noqa: F401
    import paho.mqtt  # noqa: F401
except ModuleNotFoundError as err:
    sys.exit(
        f"doorbell: {err.name} is missing: install the doorbell with: pip install '.[doorbell]'"
    )

from common.cli import EXIT_NO_SPACE, UsageError, UsageParser, disk_full, no_space_message, positive
from firmware import __version__
from firmware.config import Config, ConfigError, load_config
from firmware.hardware import available

EXIT_USAGE = 2


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

    clips = sub.add_parser("clips", help="the clips stored on this doorbell")
    csub = clips.add_subparsers(dest="clips_command", required=True, parser_class=UsageParser)
    cl = csub.add_parser("list", help="list stored clips, oldest first")
    cl.add_argument("--data-dir", type=Path, help="the doorbell's data folder")
    cl.add_argument("--config", type=Path, help="read the data folder from this config")
    cl.add_argument("--json", action="store_true", help="machine-readable output")
    cl.set_defaults(func=cmd_clips_list)
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
    ex.set_defaults(func=cmd_clips_export)

    ls = sub.add_parser(
        "log-status",
        help="the relay log as this doorbell witnessed it; exit 1 on an alarm, 3 if stale",
    )
    ls.add_argument("--data-dir", type=Path, help="the doorbell's data folder")
    ls.add_argument("--config", type=Path, help="read the data folder from this config")
    ls.set_defaults(func=cmd_log_status)

    run = sub.add_parser(
        "run",
        help="run the doorbell (on a Pi, or with --sim on simulated hardware in real time)",
    )
    run.add_argument("--config", type=Path, required=True, help="the doorbell's TOML config")
    run.add_argument(
        "--hardware",
        default="pi",
        help="where the camera and pins come from: pi (default) or sim (installed: "
        + ", ".join(available())
        + ")",
    )
    run.add_argument("--sim", action="store_true", help="short for --hardware sim")
    run.add_argument("--scene", help="with --sim: the scene to show (default: porch)")
    run.add_argument("--seconds", type=positive, help="stop after this many seconds")
    run.add_argument("--data-dir", type=Path, help="use this data folder instead of the config's")
    run.set_defaults(func=cmd_run)

    prov = sub.add_parser(
        "provision",
        help="write a doorbell's identity onto a Raspberry Pi OS boot partition",
        description="Writes the config, broker password, owner's public keys, the firmware's "
        "wheels, systemd units and a first-boot installer onto a mounted boot partition "
        "flashed by Raspberry Pi Imager (see deploy/pi/README.md).",
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
    prov.add_argument(
        "--wheel",
        type=Path,
        help="the open_doorbell wheel to install (default: build this checkout)",
    )
    prov.add_argument(
        "--wheelhouse",
        type=Path,
        help="a folder of the pinned dependency wheels for the Pi (pip download, see "
        "deploy/pi/README.md); without it the Pi fetches them, hash-checked, when it installs",
    )
    # Test-only: the boot test has no camera or pins.
    prov.add_argument("--test-simulated-hardware", action="store_true", help=argparse.SUPPRESS)
    prov.set_defaults(func=cmd_provision)
    # Other parts add their commands (the simulator adds `sim`), if they are installed.
    for ep in entry_points(group="open_doorbell.commands"):
        try:
            add_command = ep.load()
        except ImportError as err:
            print(f"doorbell: the {ep.name!r} command cannot load: {err}", file=sys.stderr)
            continue
        add_command(sub)
    return p


def print_event(t0: float) -> Any:
    def emit(ev: Any) -> None:
        if ev.kind == "ring_snapshot":  # the ring's JPEG, for the uplink only
            return
        line = {"event": ev.kind, "id": ev.id, "t": round(ev.t - t0, 3), "at": _iso(ev.at)}
        for k, v in ev.data.items():
            line[k] = _iso(v) if k in ("start", "end", "trigger_at") else v
        print(json.dumps(line), flush=True)

    return emit


def load(path: Path | None, data_dir: Path | None = None) -> Config:
    try:
        cfg = load_config(path)
    except ConfigError as err:
        raise UsageError(f"invalid config: {err}") from None
    if data_dir is not None:
        cfg = cfg.model_copy(
            update={"device": cfg.device.model_copy(update={"data_dir": data_dir})}
        )
    return cfg


def _open_store(args: argparse.Namespace) -> Any:
    from firmware.store import ClipStore

    if args.data_dir is None and args.config is None:
        raise UsageError("give --data-dir DIR or --config FILE")
    cfg = load(args.config, args.data_dir)
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


def cmd_log_status(args: argparse.Namespace) -> int:
    """Print the witness state (``data_dir/witness.json``) as JSON; 1 if the flag is up."""
    if args.data_dir is None and args.config is None:
        raise UsageError("give --data-dir DIR or --config FILE")
    from firmware.witness import load_state

    path = load(args.config, args.data_dir).device.data_dir / "witness.json"
    state, lost = load_state(path)
    if lost is not None and not state.get("alarm"):  # the doorbell has not restarted yet
        state["alarm"] = {"kind": "state_lost", "why": lost}
    if not state:
        print(json.dumps({"witnessed": False}))
        return 0
    print(json.dumps({"witnessed": True, **state}, indent=2))
    if state.get("alarm"):
        return 1
    return 3 if state.get("stale") else 0


def _stale_after(cfg: Config) -> float:
    """How long without frames means the camera has stalled: a few keyframe
    intervals, and never less than 5 s (a busy SD card can pause a healthy camera)."""
    return max(5.0, 3 * cfg.camera.keyframe_interval_s, 10 / cfg.camera.fps)


def cmd_run(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from firmware.app import MissingOwner, build
    from firmware.clock import SystemClock
    from firmware.events import Stop
    from firmware.hardware import HardwareUnavailable, load_hardware
    from firmware.liveness import CameraLiveness
    from firmware.sdnotify import Notifier

    notifier = Notifier()
    cfg = load(args.config, args.data_dir)
    clock = SystemClock()
    name = "sim" if args.sim else args.hardware
    options = {"scene": args.scene} if args.scene else {}
    if cfg.owner.box_public is None or cfg.owner.sign_public is None:
        raise UsageError(
            "owner.box_public and owner.sign_public are not set: provisioning "
            "writes the owner's public keys (make them with: footage keys new)"
        )
    if options and name != "sim":
        raise UsageError("--scene goes with --sim")
    try:
        hardware = load_hardware(name, **options)
        camera = CameraLiveness(hardware.camera(cfg, clock), clock, _stale_after(cfg))
        pins = hardware.pin_factory()
    except HardwareUnavailable as err:
        # One line and a code systemd will not restart on (see doorbell.service).
        hint = " (or try it with --sim)" if name == "pi" else ""
        print(f"doorbell: error: {err}{hint}", file=sys.stderr)
        return err.exit_code
    printer = print_event(clock.monotonic())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="finaliser") as finaliser:
        try:
            bell = build(cfg, camera, pins, clock, printer, finaliser=finaliser)
        except MissingOwner as err:
            raise UsageError(str(err)) from None
        except OSError as err:
            raise UsageError(f"cannot use data folder {cfg.device.data_dir}: {err}") from None

        def stop(*_: Any) -> None:
            bell.controller.submit(Stop())

        if name != "sim":
            from firmware.timesync import clock_synchronised

            bell.controller.clock_synced = clock_synchronised  # type: ignore[method-assign]
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if args.seconds:
            threading.Timer(args.seconds, stop).start()
        bell.start()
        try:
            notifier.ready()
            # The watchdog is fed only while the camera delivers (firmware/liveness.py).
            bell.run_forever(heartbeat=lambda: camera.fresh() and notifier.heartbeat())
            notifier.stopping()
        finally:
            bell.close()
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    from firmware.provision import ProvisionError, provision
    from protocol.crypto import CryptoFailure

    try:
        files = provision(
            args.bundle,
            args.boot,
            args.owner_keys,
            args.ca,
            args.wheel,
            args.wheelhouse,
            args.test_simulated_hardware,
        )
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
        return int(args.func(args))
    except UsageError as err:
        print(f"doorbell: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        if not disk_full(err):
            raise
        print(no_space_message("doorbell", err), file=sys.stderr)
        return EXIT_NO_SPACE


if __name__ == "__main__":
    sys.exit(main())
