"""``make demo``: the doorbell firmware on simulated hardware, end to end.

A visitor walks up to a simulated porch, rings, waits and leaves; the doorbell
chimes, records a clip that starts before the visitor appeared, takes a
snapshot, and keeps both under its retention policy.  Everything runs on real
components (gpiozero mock pins, libx264, MP4 remuxing, the clip store) on a
simulated clock.

    python -m hw_sim.demo [--data-dir DIR] [--seconds N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from firmware.config import parse_config
from firmware.controller import DoorbellEvent
from hw_sim.runner import SimDoorbell
from hw_sim.scenes import make_scene

DESCRIBE = {
    "ring": "the button was pressed: chime and ring notification",
    "motion_start": "motion seen on the porch",
    "motion_end": "the porch is quiet again",
    "clip_saved": "clip saved",
    "clip_deleted": "clip deleted by the retention policy",
    "clip_failed": "a clip could not be saved",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("demo-data"))
    ap.add_argument("--seconds", type=float, default=30.0, help="simulated seconds")
    args = ap.parse_args(argv)

    if args.data_dir.exists():
        shutil.rmtree(args.data_dir)
    cfg = parse_config(
        {
            "device": {"id": "demo-front-door", "data_dir": str(args.data_dir.resolve())},
            "camera": {"main_size": [640, 480], "lores_size": [320, 240], "fps": 15},
            "clips": {"pre_roll_s": 5.0, "post_roll_s": 4.0},
            # The street at the bottom of the frame is never recorded.
            "masks": [{"name": "street", "polygon": [[0, 0.88], [1, 0.88], [1, 1], [0, 1]]}],
        }
    )
    events: list[DoorbellEvent] = []

    def show(ev: DoorbellEvent) -> None:
        events.append(ev)
        extra = ""
        if ev.kind == "clip_saved":
            d = ev.data
            extra = (
                f": {d['duration_s']:.1f} s, starting {d['preroll_s']:.1f} s before its "
                f"{d['trigger']} trigger"
            )
        print(f"  t={ev.t:5.1f}s  {ev.kind:13} {DESCRIBE.get(ev.kind, '')}{extra}", flush=True)

    print("Simulated doorbell: a visitor walks up, rings at t=9 s, waits, and leaves.\n")
    w, h = cfg.camera.main_size
    bell = SimDoorbell(cfg, make_scene("person", w, h, seed=1), emit=show)
    started = time.monotonic()
    try:
        bell.schedule_press(9.0)
        bell.run(args.seconds)
    finally:
        bell.close()
    took = time.monotonic() - started

    clips = bell.store.list()
    print(f"\n{args.seconds:.0f} simulated seconds in {took:.1f} s of real time.")
    if not clips:
        print("No clip was saved: something is wrong.", file=sys.stderr)
        return 1
    keys_dir = args.data_dir / "owner-keys"
    assert bell.owner is not None
    bell.owner.save(keys_dir)
    print(f"Clips in {bell.store.dir}, encrypted on the doorbell to the owner's key:")
    ffprobe = shutil.which("ffprobe")
    for r in clips:
        plain = args.data_dir / f"{r.id}.owner-copy.mp4"
        with open(plain, "wb") as f:
            bell.store.export(r.id, bell.owner.box_private, f)
        checked = ""
        if ffprobe:
            probe = [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"]
            out = subprocess.run([*probe, str(plain)], capture_output=True, text=True)
            checked = f", ffprobe reads {out.stdout.strip()} s" if out.returncode == 0 else ""
        print(f"  {r.video}  {r.duration_s:.1f} s, {r.size / 1e6:.1f} MB")
        print(f"    decrypted with the owner's key: {plain}{checked}")
        if r.snapshot:
            print(f"  {r.snapshot}  snapshot at the ring")
    print(
        "\nTry next:\n"
        f"  .venv/bin/doorbell clips list --data-dir {args.data_dir}\n"
        f"  .venv/bin/doorbell clips export ID --data-dir {args.data_dir} "
        f"--owner-key {keys_dir} --out clip.mp4\n"
        "  .venv/bin/doorbell sim --list-scenes\n"
        "  .venv/bin/doorbell sim --scene headlights --seconds 20 --press-at 5\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
