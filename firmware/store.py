"""The local clip store: encrypted clips on disk, a retention policy, nothing partial.

Layout under ``<data_dir>``: for each clip, ``clips/ID.mp4.enc`` (the MP4,
encrypted as it is written: plaintext never touches the disk), an optional
``clips/ID.jpg.enc`` snapshot, and ``clips/ID.json`` (metadata, with the clip key
sealed to the owner's X25519 key).  The doorbell keeps no usable clip key: the
key exists only in memory while the clip is written, and afterwards only sealed
to the owner.  A release is sealed to the requester by the owner's client, inside
the signed approval; the doorbell only uploads ciphertext.  So an SD card taken
from the doorbell opens nothing without the owner's private key.

Each file is written to a ``.tmp-`` name, fsynced and renamed; the metadata goes
last, so a clip exists (is listed, is announced) only once all of its files are
whole.  Deleting a clip removes its metadata (the sealed key) first, then the
ciphertext.  At start-up, temp files and media without metadata — what a crash
leaves — are removed, a ``keys/`` folder left by older firmware (raw clip keys)
is destroyed, and the index is rebuilt from the metadata files.

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
from typing import BinaryIO

from protocol.crypto import (
    EncryptingWriter,
    b64,
    decrypt_stream,
    encrypt_bytes,
    new_clip_key,
    unb64,
    unwrap_key,
    wrap_key,
)

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
    wrapped_key: str = ""  # the clip key sealed to the owner's X25519 key, base64
    encryption: str = "chacha20poly1305-stream-v1"

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


def atomic_write(path: Path, write: Callable[[BinaryIO], None] | bytes, mode: int = 0o644) -> None:
    """Write via a temp file in the same folder, fsync it, rename it over ``path``."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
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


class _Hashing:
    """A write-through file wrapper that hashes what passes."""

    def __init__(self, f: BinaryIO, digest: hashlib._Hash) -> None:
        self._f, self._digest = f, digest

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        return self._f.write(data)


class ClipStore:
    """Owns the clips folder: the only writer and deleter of clip files."""

    def __init__(self, data_dir: Path, owner_box_public: bytes | None = None) -> None:
        """``owner_box_public``: the owner's X25519 key, the only one clip keys are sealed to."""
        self.dir = Path(data_dir) / "clips"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._legacy_keys = Path(data_dir) / "keys"
        self.owner_box_public = owner_box_public
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
            if p.suffix in (".mp4", ".jpg", ".enc") and p.name not in known:
                log.warning("removing %s: no metadata, so it was never finished", p.name)
                p.unlink()
        if self._legacy_keys.is_dir():
            # Older firmware kept raw clip keys here; every clip's key is also sealed
            # to the owner in its metadata, so these are only a risk.
            for p in self._legacy_keys.iterdir():
                log.warning("destroying %s: raw clip keys are no longer kept", p.name)
                p.unlink()
            self._legacy_keys.rmdir()

    def save(
        self,
        meta: dict[str, object],
        write_video: Callable[[BinaryIO], None],
        snapshot: bytes | None = None,
    ) -> ClipRecord:
        """Encrypt and store a clip: key, video, snapshot, then metadata; return its record.

        ``write_video`` writes the MP4 into the stream it is given (which encrypts;
        it cannot seek).  ``meta`` holds every :class:`ClipRecord` field except the
        file names, ``size``, ``sha256`` and the key fields, which are filled in here.
        """
        if self.owner_box_public is None:
            raise RuntimeError("the store needs the owner's public key to encrypt clips")
        clip_id = str(meta["id"])
        # The key lives in memory only, until it is sealed to the owner below.
        key = new_clip_key()
        video = self.dir / f"{clip_id}.mp4.enc"
        digest = hashlib.sha256()

        def encrypt_video(f: BinaryIO) -> None:
            writer = EncryptingWriter(_Hashing(f, digest), key)  # type: ignore[arg-type]
            write_video(writer)  # type: ignore[arg-type]
            writer.close()

        # The record's sha256 is of the ciphertext: hashed on its way to disk.
        atomic_write(video, encrypt_video)
        snap_name = None
        if snapshot is not None:
            snap_name = f"{clip_id}.jpg.enc"
            atomic_write(self.dir / snap_name, encrypt_bytes(snapshot, key))
        record = ClipRecord(
            **meta,  # type: ignore[arg-type]
            size=video.stat().st_size,
            sha256=digest.hexdigest(),
            video=video.name,
            snapshot=snap_name,
            wrapped_key=b64(wrap_key(key, self.owner_box_public)),
        )
        atomic_write(self.dir / f"{clip_id}.json", json.dumps(record.to_json()).encode())
        _fsync_dir(self.dir)
        with self._lock:
            self._index[clip_id] = record
        return record

    def export(self, clip_id: str, owner_box_private: bytes, out: BinaryIO) -> int:
        """Decrypt a clip for its owner (the key unwrapped with their private key)."""
        record = self.get(clip_id)
        if record is None:
            raise KeyError(clip_id)
        key = unwrap_key(unb64(record.wrapped_key), owner_box_private)
        with open(self.dir / record.video, "rb") as f:
            return decrypt_stream(f, out, key)

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
        """Remove the clip's metadata (with its sealed key), then its files."""
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
