"""The local clip store: finished clips on disk, a retention policy, nothing partial.

Layout under ``<data_dir>/clips``: for each clip ``ID.mp4``, an optional ``ID.jpg``
snapshot and ``ID.json``, its metadata.  Each file is written to a ``.tmp-``
name, fsynced and renamed; the metadata goes last, so a clip exists (is listed,
is announced) only once all of its files are whole.  At start-up, temp files
and media without metadata — what a crash mid-write leaves — are removed, and
the index is rebuilt from the metadata files.

Example::

    store = ClipStore(Path("/var/lib/doorbell"))
    for record in store.list():
        print(record.id, record.duration_s)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class ClipRecord:
    """What is known about a finished clip (also its on-disk metadata)."""

    id: str
    device: str
    trigger: str  # "ring" | "motion" | "continuation"
    start: float  # UTC seconds of the first frame
    end: float  # UTC seconds after the last frame
    trigger_at: float  # UTC seconds of the trigger
    preroll_s: float
    duration_s: float
    width: int
    height: int
    fps: float
    codec: str
    size: int  # bytes of the video file
    sha256: str  # of the video file as stored
    video: str  # file name inside the clips folder
    snapshot: str | None = None

    @property
    def start_iso(self) -> str:
        return datetime.fromtimestamp(self.start, UTC).isoformat()

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[object], None] | bytes) -> None:
    """Write via a temp file in the same folder, fsync it, rename it over ``path``."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    try:
        with open(tmp, "wb") as f:
            if isinstance(write, bytes | bytearray):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class ClipStore:
    """Owns the clips folder: the only writer and deleter of clip files."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / "clips"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._index: dict[str, ClipRecord] = {}
        self._recover()

    def _recover(self) -> None:
        for p in self.dir.iterdir():
            if p.name.startswith(TMP_PREFIX):
                log.warning("removing %s, left by an interrupted write", p.name)
                p.unlink(missing_ok=True)
        for meta in self.dir.glob("*.json"):
            try:
                record = ClipRecord(**json.loads(meta.read_text()))
            except (ValueError, TypeError) as err:
                log.error("ignoring unreadable clip metadata %s: %s", meta.name, err)
                continue
            if not (self.dir / record.video).exists():
                log.error("clip %s has metadata but no video; dropping it", record.id)
                meta.unlink()
                continue
            self._index[record.id] = record
        known = {r.video for r in self._index.values()} | {
            r.snapshot for r in self._index.values() if r.snapshot
        }
        for p in self.dir.iterdir():
            if p.suffix in (".mp4", ".jpg") and p.name not in known:
                log.warning("removing %s: no metadata, so it was never finished", p.name)
                p.unlink()

    def save(
        self,
        meta: dict[str, object],
        write_video: Callable[[object], None],
        snapshot: bytes | None = None,
    ) -> ClipRecord:
        """Store a clip: video, snapshot, then metadata; return its record.

        ``meta`` holds every :class:`ClipRecord` field except the file names,
        ``size`` and ``sha256``, which are filled in here.
        """
        clip_id = str(meta["id"])
        video = self.dir / f"{clip_id}.mp4"
        atomic_write(video, write_video)
        snap_name = None
        if snapshot is not None:
            snap_name = f"{clip_id}.jpg"
            atomic_write(self.dir / snap_name, snapshot)
        digest = hashlib.sha256()
        with open(video, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        record = ClipRecord(
            **meta,  # type: ignore[arg-type]
            size=video.stat().st_size,
            sha256=digest.hexdigest(),
            video=video.name,
            snapshot=snap_name,
        )
        atomic_write(self.dir / f"{clip_id}.json", json.dumps(record.to_json()).encode())
        _fsync_dir(self.dir)
        with self._lock:
            self._index[clip_id] = record
        return record

    def list(self) -> list[ClipRecord]:
        with self._lock:
            return sorted(self._index.values(), key=lambda r: (r.start, r.id))

    def get(self, clip_id: str) -> ClipRecord | None:
        with self._lock:
            return self._index.get(clip_id)

    def path(self, record: ClipRecord) -> Path:
        return self.dir / record.video

    def total_bytes(self) -> int:
        with self._lock:
            return sum(self._bytes(r) for r in self._index.values())

    def _bytes(self, r: ClipRecord) -> int:
        snap = self.dir / r.snapshot if r.snapshot else None
        return r.size + (snap.stat().st_size if snap and snap.exists() else 0)

    def delete(self, clip_id: str) -> bool:
        """Remove a clip's files, metadata first (so a crash never leaves it half-listed)."""
        with self._lock:
            record = self._index.pop(clip_id, None)
        if record is None:
            return False
        (self.dir / f"{clip_id}.json").unlink(missing_ok=True)
        _fsync_dir(self.dir)
        (self.dir / record.video).unlink(missing_ok=True)
        if record.snapshot:
            (self.dir / record.snapshot).unlink(missing_ok=True)
        return True

    def enforce_retention(self, now_wall: float, max_age_s: float, max_bytes: int) -> list[str]:
        """Delete clips past ``max_age_s``, then oldest first until under ``max_bytes``.

        Returns the deleted ids, oldest first.
        """
        deleted: list[str] = []
        records = self.list()
        total = sum(self._bytes(r) for r in records)
        for r in records:
            too_old = now_wall - r.end > max_age_s
            if too_old or total > max_bytes:
                total -= self._bytes(r)
                if self.delete(r.id):
                    deleted.append(r.id)
            else:
                break  # records are oldest first: the rest are newer and fit
        return deleted
