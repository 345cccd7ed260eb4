"""``doorbell`` as a user runs it: JSON lines out, one-line errors, exit 2."""

import json
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import ffprobe
from test_owner_masks import grow

from firmware.masks import rasterize

SMALL = """
[camera]
main_size = [320, 240]
lores_size = [160, 120]
"""


def doorbell(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "firmware.cli", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


@pytest.fixture
def small_toml(tmp_path: Path) -> Path:
    p = tmp_path / "small.toml"
    p.write_text(SMALL)
    return p


def test_sim_prints_json_lines_and_saves_a_clip(tmp_path, small_toml):
    data = tmp_path / "data"
    r = doorbell(
        "sim",
        "--scene",
        "porch",
        "--seconds",
        "12",
        "--press-at",
        "6",
        "--data-dir",
        str(data),
        "--config",
        str(small_toml),
        check=True,
    )
    events = [json.loads(line) for line in r.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds == ["ring", "clip_saved"]
    ring, saved = events
    assert ring["t"] == 6.0
    assert saved["trigger"] == "ring"
    assert 5.0 <= saved["preroll_s"] <= 6.0
    assert Path(saved["path"]).is_file() and Path(saved["path"]).parent == data / "clips"
    assert saved["path"].endswith(".mp4.enc")
    assert "owner-keys" in r.stderr
    out = tmp_path / "exported.mp4"
    doorbell(
        "clips",
        "export",
        saved["clip"],
        "--data-dir",
        str(data),
        "--owner-key",
        str(data / "owner-keys"),
        "--out",
        str(out),
        check=True,
    )
    assert ffprobe(out)["streams"][0]["codec_name"] == "h264"
    wrong = doorbell(
        "clips",
        "export",
        saved["clip"],
        "--data-dir",
        str(data),
        "--owner-key",
        str(data / "owner-keys" / "sign.key"),
        "--out",
        str(out),
    )
    assert wrong.returncode == 2 and "does not open" in wrong.stderr
    for key in ("start", "end", "trigger_at", "at"):
        assert saved[key].endswith("Z")

    listed = json.loads(
        doorbell("clips", "list", "--data-dir", str(data), "--json", check=True).stdout
    )
    assert [c["id"] for c in listed] == [saved["clip"]]
    table = doorbell("clips", "list", "--data-dir", str(data), check=True).stdout
    assert saved["clip"] in table


def test_list_scenes():
    out = doorbell("sim", "--list-scenes", check=True).stdout
    for name in ("porch", "person", "dusk", "light_switch", "ir_cut", "headlights", "foliage"):
        assert name in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["sim", "--scene", "garden", "--seconds", "3"], "unknown scene 'garden'"),
        (["sim", "--scene", "porch", "--seconds", "zero"], "not a number"),
        (["sim", "--scene", "porch", "--seconds", "5", "--press-at", "9"], "past the end"),
        (["sim", "--scene", "porch"], "--seconds is required"),
        (["sim", "--video", "/nonexistent.mp4", "--seconds", "3"], "cannot read video"),
        (["sim", "--scene", "porch", "--seconds", "3", "--pir-at", "1"], "needs a PIR"),
        (["clips", "list"], "give --data-dir"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message):
    r = doorbell(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3  # argparse adds its usage line
    assert "Traceback" not in r.stderr


def test_invalid_config_exits_2_naming_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[clips]\npost_roll_s = -2\n")
    r = doorbell("sim", "--scene", "porch", "--seconds", "3", "--config", str(bad))
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "doorbell: error: invalid config: clips.post_roll_s: "
        "Input should be greater than or equal to 0 (got -2)"
    )


def test_unreadable_video_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    r = doorbell("sim", "--video", str(junk), "--seconds", "3")
    assert r.returncode == 2 and "cannot read video" in r.stderr


def test_sim_plays_a_video_file(tmp_path, small_toml):
    video = tmp_path / "visitor.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for i in range(60):
            img = np.full((240, 320, 3), 120, np.uint8)
            if 20 <= i < 45:  # a dark block crosses the frame
                x = (i - 20) * 10
                img[60:200, x : x + 50] = 20
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    r = doorbell(
        "sim",
        "--video",
        str(video),
        "--seconds",
        "6",
        "--config",
        str(small_toml),
        "--data-dir",
        str(tmp_path / "d"),
        check=True,
    )
    kinds = [json.loads(line)["event"] for line in r.stdout.splitlines()]
    assert "motion_start" in kinds and "clip_saved" in kinds


def test_run_sim_in_real_time(tmp_path):
    from protocol.crypto import OwnerKeys, b64

    owner = OwnerKeys.generate()
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        SMALL + f'\n[device]\ndata_dir = "{tmp_path / "d"}"\n'
        f'[owner]\nsign_public = "{b64(owner.sign_public)}"\n'
        f'box_public = "{b64(owner.box_public)}"\n'
    )
    r = doorbell("run", "--config", str(cfg), "--sim", "--seconds", "1.5")
    assert r.returncode == 0, r.stderr


def test_run_without_owner_keys_says_what_to_do(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[device]\ndata_dir = "{tmp_path / "d"}"\n')
    r = doorbell("run", "--config", str(cfg), "--sim", "--seconds", "1")
    assert r.returncode == 2 and "owner.box_public" in r.stderr


def test_run_without_a_pi_says_what_to_install(tmp_path):
    from protocol.crypto import OwnerKeys, b64

    owner = OwnerKeys.generate()
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f'[device]\ndata_dir = "{tmp_path / "d"}"\n[owner]\n'
        f'sign_public = "{b64(owner.sign_public)}"\nbox_public = "{b64(owner.box_public)}"\n'
    )
    r = doorbell("run", "--config", str(cfg))
    assert r.returncode == 2
    assert "python3-picamera2" in r.stderr and "--sim" in r.stderr


def test_make_demo_runs_end_to_end_in_a_short_mode(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "demo",
            "--short",
            "--data-dir",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr + r.stdout[-3000:]
    out = r.stdout
    for expected in (
        "ring",
        "approved; sent to doorbell alice-door",
        "denied",
        "(ffprobe)",
        "ok: ",
        "| footage requests | 1 |",
        "| approved by owners | 1 |",
        # Passers-by (issue 17): the proof of work with progress, Alice's erase reaching
        # her doorbell and the passer-by, Bob's accepted mask applied and on the record.
        "bystander request --kind erase",
        "solving the relay's proof of work (18 bits)",
        "from a bystander, asking erase",
        "erased\n",
        "alice-door deleted ",
        '"outcome": "erase"',
        "bystander request --kind stop_filming",
        "answer ask-",
        "accepted\n",
        "bob-door: masks_applied, set ",
        "the relay logged bob-door's masks_applied",
        "Passers-by's requests: erase 1, stop_filming 1; answers: accept 1, erase 1;",
    ):
        assert expected in out, expected
    released = list((tmp_path / "demo" / "released-to-police").glob("alice-door-*.mp4"))
    assert released and not list((tmp_path / "demo" / "released-to-police").glob("bob-*"))
    # The erased clip is gone from the relay's list printed after the erase.
    erased = re.search(r"alice-door deleted (\S+) ", out).group(1)
    after_erase = out[out.index("alice-door deleted ") : out.index("== 8.")]
    assert "alice-door" not in after_erase.split("clips list", 1)[1], "still listed"
    assert not list((tmp_path / "demo" / "doorbells" / "alice-door" / "clips").glob(erased + "*"))
    # The pavement, decoded here again pixel by pixel: lit before Bob's mask, black after.
    polygon = [tuple(map(float, p.split(","))) for p in
               re.search(r"--polygon ((?:[\d.]+,[\d.]+ ?)+)", out).group(1).split()]  # fmt: skip
    frames = {}
    for name in ("before", "after"):
        with av.open(str(tmp_path / "demo" / f"bob-{name}-mask.mp4")) as c:
            frames[name] = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    h, w = frames["after"][0].shape[:2]
    inside = ~grow(~rasterize([polygon], w, h), 3)
    assert all(img.max(axis=2)[inside].max() <= 24 for img in frames["after"])
    assert max(img.max(axis=2)[inside].max() for img in frames["before"]) > 24
    # Everything it started is stopped: no broker, Redis or relay left behind.
    needle = str(tmp_path / "demo").encode()
    leftovers = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (proc / "cmdline").read_bytes():
                leftovers.append(proc.name)
        except OSError:
            continue
    assert leftovers == [], "the demo left processes running"
