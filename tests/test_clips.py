"""Clips: pre-roll, length, MP4 validity, masks, snapshots."""

import av
import numpy as np
import pytest
from conftest import ffprobe, plain_clip, plain_snapshot, small_config

from firmware.mp4 import write_mp4
from firmware.packets import EncodedPacket


def decode_frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_press_clip_has_exact_preroll_and_is_valid_h264(make_bell, recorder, tmp_path):
    bell = make_bell("porch", clips={"pre_roll_s": 5.0, "post_roll_s": 3.0})
    bell.schedule_press(10.0)
    bell.run(16.0)
    (saved,) = recorder.of("clip_saved")
    record = bell.store.get(saved.data["clip"])
    assert record.trigger == "ring"
    kf = bell.config.camera.keyframe_interval_s
    trigger = 10.0
    start = record.start - (record.trigger_at - trigger)  # clip start on the sim clock
    assert start <= trigger - 5.0 + 1e-6, "pre-roll shorter than asked"
    assert start >= trigger - 5.0 - kf - 1e-6, "pre-roll longer than asked + one keyframe interval"
    assert record.preroll_s == pytest.approx(trigger - start)

    mp4 = plain_clip(bell, record.id, tmp_path / "clip.mp4")
    info = ffprobe(mp4)
    (stream,) = info["streams"]
    assert stream["codec_name"] == "h264"
    assert (stream["width"], stream["height"]) == (320, 240)
    assert float(info["format"]["duration"]) == pytest.approx(record.duration_s, abs=1 / 15)
    # It ends post-roll seconds after the last activity (the press).
    assert record.duration_s == pytest.approx(trigger - start + 3.0, abs=2 / 15)

    with av.open(str(mp4)) as c:
        first = next(c.demux(video=0))
        assert first.is_keyframe, "a clip begins with a keyframe"


def test_snapshot_is_a_jpeg_of_the_press(make_bell, recorder, tmp_path):
    bell = make_bell("porch")
    bell.schedule_press(2.0)
    bell.run(9.0)
    (saved,) = recorder.of("clip_saved")
    jpg = plain_snapshot(bell, saved.data["clip"], tmp_path / "snap.jpg")
    assert jpg.read_bytes()[:2] == b"\xff\xd8"
    with av.open(str(jpg)) as c:
        img = next(c.decode(video=0))
        assert (img.width, img.height) == (320, 240)


def test_masked_region_is_black_in_clip_and_snapshot(make_bell, recorder, tmp_path):
    mask = {"name": "sidewalk", "polygon": [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]}
    cfg = small_config(tmp_path / "d", masks=[mask])
    bell = make_bell("person", config=cfg)
    bell.schedule_press(3.0)
    bell.run(10.0)
    bell.close()
    saved = recorder.of("clip_saved")
    assert saved
    frames = decode_frames(plain_clip(bell, saved[0].data["clip"], tmp_path / "c.mp4"))
    assert len(frames) > 30
    for img in frames:
        left = img[:, :150].astype(int)  # a margin for chroma bleeding at the edge
        right = img[:, 170:].astype(int)
        assert left.max() <= 24, "masked pixels must decode as black"
        assert right.mean() > 60, "unmasked pixels are kept"
    jpg = plain_snapshot(bell, saved[0].data["clip"], tmp_path / "s.jpg")
    with av.open(str(jpg)) as c:
        snap = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert snap[:, :150].max() <= 24


def test_motion_in_a_masked_area_is_ignored(make_bell, recorder, tmp_path):
    # The person walks in from the left and stands at the centre: mask everything
    # they cover.
    mask = {"polygon": [[0.0, 0.0], [0.75, 0.0], [0.75, 1.0], [0.0, 1.0]]}
    bell = make_bell("person", config=small_config(tmp_path / "d", masks=[mask]))
    bell.run(20.0)
    assert recorder.of("motion_start") == []
    assert recorder.of("clip_saved") == []


def test_motion_starts_a_clip_with_preroll(make_bell, recorder):
    bell = make_bell("person", clips={"pre_roll_s": 2.0, "post_roll_s": 2.0})
    bell.run(25.0)
    kinds = recorder.kinds()
    assert "motion_start" in kinds and "motion_end" in kinds
    first = recorder.of("motion_start")[0]
    saved = recorder.of("clip_saved")
    assert saved
    record = bell.store.get(saved[0].data["clip"])
    assert record.trigger == "motion"
    assert 2.0 <= record.preroll_s <= 3.0 + 1e-6
    assert record.trigger_at == pytest.approx(first.at)


def test_press_during_clip_extends_it(make_bell, recorder):
    bell = make_bell(
        "porch", clips={"pre_roll_s": 1.0, "post_roll_s": 2.0}, gpio={"ring_cooldown_s": 30.0}
    )
    bell.schedule_press(2.0)
    bell.schedule_press(3.5)  # cooled down: no ring, but the clip goes on
    bell.run(10.0)
    (saved,) = recorder.of("clip_saved")
    assert len(recorder.of("ring")) == 1
    assert saved.data["duration_s"] == pytest.approx(1.0 + 1.5 + 2.0, abs=2 / 15)


def test_max_length_caps_a_clip_and_recording_continues(make_bell, recorder):
    bell = make_bell(
        "porch",
        clips={"pre_roll_s": 1.0, "max_length_s": 4.0, "post_roll_s": 1.0},
        motion={"source": "pir"},
        gpio={"pir_pin": 22},
    )
    bell.schedule_pir(2.0, duration=7.0)
    bell.run(14.0)
    saved = recorder.of("clip_saved")
    assert [s.data["trigger"] for s in saved] == ["motion", "continuation"]
    assert saved[0].data["duration_s"] <= 1.0 + 1.0 + 4.0 + 1e-6


def test_pir_both_rule_needs_the_camera_too(make_bell, recorder):
    bell = make_bell("porch", motion={"source": "both"}, gpio={"pir_pin": 22})
    bell.schedule_pir(2.0, duration=3.0)  # nothing moves in front of the camera
    bell.run(8.0)
    assert recorder.of("motion_start") == []


def test_shutdown_saves_the_clip_in_progress(make_bell, recorder):
    bell = make_bell("porch")
    bell.schedule_press(2.0)
    bell.run(3.0)
    assert recorder.of("clip_saved") == []
    bell.close()
    assert len(recorder.of("clip_saved")) == 1


def test_write_mp4_rejects_what_would_not_play(tmp_path):
    with pytest.raises(ValueError, match="keyframe"):
        write_mp4([EncodedPacket(b"\x00\x00\x00\x01\x41", 0.0, False)], tmp_path / "x.mp4")
    with pytest.raises(ValueError, match="at least one"):
        write_mp4([], tmp_path / "x.mp4")


def test_remux_keeps_exact_timestamps(tmp_path):
    from hw_sim.encoder import X264Encoder

    enc = X264Encoder(160, 120, fps=25)
    packets = []
    for i in range(50):
        img = np.full((120, 160, 3), i * 4, np.uint8)
        packets += enc.encode(img, 7.0 + i / 25)
    duration = write_mp4(packets, tmp_path / "c.mp4")
    assert duration == pytest.approx(2.0)
    with av.open(str(tmp_path / "c.mp4")) as c:
        times = [f.time for f in c.decode(video=0)]
    assert times == pytest.approx([i / 25 for i in range(50)], abs=1e-4)


def test_nothing_on_disk_is_plaintext(make_bell, recorder, tmp_path):
    """Clips and snapshots are encrypted as written; only the owner's key opens them."""
    from protocol.crypto import CryptoFailure, OwnerKeys

    bell = make_bell("porch")
    bell.schedule_press(2.0)
    bell.run(8.0)
    (saved,) = recorder.of("clip_saved")
    record = bell.store.get(saved.data["clip"])
    for name in (record.video, record.snapshot):
        data = (bell.store.dir / name).read_bytes()
        assert data[:4] == b"ODB1"
        assert b"ftyp" not in data and b"avc1" not in data and b"JFIF" not in data
    assert not list(bell.config.device.data_dir.rglob("*.mp4"))
    stranger = OwnerKeys.generate()
    with pytest.raises(CryptoFailure), open(tmp_path / "x.mp4", "wb") as f:
        bell.store.export(record.id, stranger.box_private, f)


def test_deleting_removes_the_sealed_key_and_the_ciphertext(make_bell, recorder):
    bell = make_bell("porch")
    bell.schedule_press(2.0)
    bell.run(8.0)
    (saved,) = recorder.of("clip_saved")
    clip_id = saved.data["clip"]
    assert bell.store.get(clip_id).wrapped_key
    bell.store.delete(clip_id)
    assert bell.store.get(clip_id) is None
    assert not (bell.config.device.data_dir / "keys").exists()
    assert list(bell.store.dir.iterdir()) == []
