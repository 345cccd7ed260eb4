"""The clip store: atomic writes, crash recovery, retention oldest first."""

import json
import os

import pytest

from firmware.store import TMP_PREFIX, ClipStore
from protocol.crypto import OwnerKeys

OWNER = OwnerKeys.generate()


def Store(path):
    return ClipStore(path, OWNER.box_public)


def meta(i: int, start: float, **kw):
    m = {
        "id": f"clip-{i:03d}",
        "device": "bell",
        "trigger": "ring",
        "start": start,
        "end": start + 10,
        "trigger_at": start + 5,
        "preroll_s": 5.0,
        "duration_s": 10.0,
        "width": 320,
        "height": 240,
        "fps": 15.0,
        "codec": "h264",
    }
    m.update(kw)
    return m


def put(store: ClipStore, i: int, start: float, size: int = 1000, snapshot: bytes | None = None):
    return store.save(meta(i, start), lambda f: f.write(bytes([i % 256]) * size), snapshot)


def test_save_list_and_rebuild_after_restart(tmp_path):
    store = Store(tmp_path)
    put(store, 2, 2000.0, snapshot=b"\xff\xd8jpeg")
    put(store, 1, 1000.0)
    assert [r.id for r in store.list()] == ["clip-001", "clip-002"]
    rec = store.get("clip-002")
    assert rec.snapshot == "clip-002.jpg.enc" and len(rec.sha256) == 64
    assert rec.size > 1000  # ciphertext: a header and a tag per chunk
    ciphertext = (store.dir / rec.video).read_bytes()
    assert rec.size == len(ciphertext)
    assert rec.sha256 == __import__("hashlib").sha256(ciphertext).hexdigest()
    again = Store(tmp_path)
    assert again.list() == store.list()


def test_retention_by_bytes_deletes_oldest_first(tmp_path):
    store = Store(tmp_path)
    for i in range(6):
        put(store, i, 1000.0 + i * 100, size=1000)
    deleted = store.enforce_retention(now_wall=2000.0, max_age_s=1e9, max_bytes=3500)
    assert deleted == ["clip-000", "clip-001", "clip-002"]
    assert [r.id for r in store.list()] == ["clip-003", "clip-004", "clip-005"]
    assert sorted(p.name for p in store.dir.iterdir()) == [
        f"clip-00{i}.{ext}" for i in (3, 4, 5) for ext in ("json", "mp4.enc")
    ]
    assert not (tmp_path / "keys").exists(), "no raw clip key is ever written"


def test_retention_by_age(tmp_path):
    store = Store(tmp_path)
    for i in range(4):
        put(store, i, i * 1000.0)
    # Clip i ends at i*1000 + 10; keep what ended within the last 1500 s.
    deleted = store.enforce_retention(now_wall=3100.0, max_age_s=1500, max_bytes=1 << 30)
    assert deleted == ["clip-000", "clip-001"]


def test_partial_files_are_never_listed_and_are_removed_at_start(tmp_path):
    store = Store(tmp_path)
    put(store, 1, 1000.0)
    d = store.dir
    # What a crash leaves: a temp video, a finished video without metadata,
    # and a temp metadata file.
    (d / f"{TMP_PREFIX}clip-009.mp4.enc").write_bytes(b"half a clip")
    (d / "clip-008.mp4.enc").write_bytes(b"whole video, no metadata")
    (d / f"{TMP_PREFIX}clip-008.json").write_text("{")
    again = Store(tmp_path)
    assert [r.id for r in again.list()] == ["clip-001"]
    assert sorted(p.name for p in d.iterdir()) == ["clip-001.json", "clip-001.mp4.enc"]


def test_raw_keys_left_by_older_firmware_are_destroyed_at_start(tmp_path):
    store = Store(tmp_path)
    put(store, 1, 1000.0)
    (tmp_path / "keys").mkdir(mode=0o700)
    (tmp_path / "keys" / "clip-001.key").write_bytes(b"k" * 32)
    again = Store(tmp_path)
    assert [r.id for r in again.list()] == ["clip-001"], "the clip stays: its key is sealed"
    assert not (tmp_path / "keys").exists()


def test_a_failed_write_leaves_nothing(tmp_path):
    store = Store(tmp_path)

    def boom(f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        store.save(meta(1, 1.0), boom)
    assert store.list() == []
    assert list(store.dir.iterdir()) == []
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_metadata_without_video_is_dropped(tmp_path):
    store = Store(tmp_path)
    put(store, 1, 1.0)
    os.unlink(store.dir / "clip-001.mp4.enc")
    assert Store(tmp_path).list() == []


def test_unreadable_metadata_is_skipped(tmp_path):
    store = Store(tmp_path)
    put(store, 1, 1.0)
    (store.dir / "junk.json").write_text(json.dumps({"what": 1}))
    assert [r.id for r in Store(tmp_path).list()] == ["clip-001"]


def test_retention_runs_in_the_doorbell(make_bell, recorder):
    # Each 2-3 s clip of sensor noise at 320x240 and its snapshot take about 50 kB.
    bell = make_bell(
        "porch",
        clips={"pre_roll_s": 1.0, "post_roll_s": 1.0},
        gpio={"ring_cooldown_s": 0.0},
        retention={"max_total_mb": 0.1},
    )
    for t in (2.0, 6.0, 10.0, 14.0):
        bell.schedule_press(t)
    bell.run(18.0)
    saved = [e.data["clip"] for e in recorder.of("clip_saved")]
    deleted = [e.data["clip"] for e in recorder.of("clip_deleted")]
    assert len(saved) == 4
    assert deleted and deleted == saved[: len(deleted)], "oldest first"
    assert len(deleted) < 4
    assert bell.store.total_bytes() <= 0.1 * 1024 * 1024
