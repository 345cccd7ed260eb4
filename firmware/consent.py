"""The doorbell enforces the owner's decisions; the relay only forwards them.

A release command carries an approval signed with the owner's Ed25519 key, which
was written onto the doorbell at provisioning; the relay cannot forge one.  The
doorbell checks that the approval is signed by its owner, names this doorbell
and this request, has not expired and has not been used before, and that the
relay asks to upload exactly the approved clips.  Only then does it upload each
clip's ciphertext to the given URL and announce ``released`` with the clip's key
as the owner sealed it to the requester *inside the approval* (so a relay cannot
redirect it).  The doorbell holds no clip key it could open: keys exist only
sealed to the owner, and the owner's client re-seals them for a release.

A delete command works the same way, with a signed deletion; the clip and its
key are destroyed and ``deleted`` is announced.

A masks command carries a signed mask update: checked here the same way (owner,
doorbell, expiry, shape, nonce), then only handed to the controller, which owns the
masks (see :mod:`firmware.owner_masks`) and announces ``masks_applied`` or a refusal.

Commands are handled on a thread of their own: uploads never hold up a ring.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from firmware.events import ApplyMasks
from firmware.store import ClipStore
from protocol import (
    CommandRefused,
    DeleteCommand,
    Deleted,
    MasksCommand,
    Message,
    ReleaseCommand,
    Released,
    new_id,
    utcnow,
)
from protocol.decisions import (
    Approval,
    D,
    DecisionRefused,
    Deletion,
    MaskUpdate,
    decision_hash,
    verify_decision,
)
from protocol.refusals import RefusalCode

log = logging.getLogger(__name__)


class Refused(Exception):
    """A command the doorbell will not carry out; the message says why, ``code`` says it
    for the public log (see :mod:`protocol.refusals`)."""

    def __init__(self, why: str, code: RefusalCode = "other") -> None:
        super().__init__(why)
        self.code: RefusalCode = code


class NonceLedger:
    """Approvals and deletions already used, so none can be replayed (kept on disk)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS used (nonce TEXT PRIMARY KEY, expires REAL)")
        self._lock = threading.Lock()

    def use(self, nonce: str, expires: float) -> bool:
        """Record ``nonce``; False if it was used before."""
        with self._lock:
            self._db.execute("DELETE FROM used WHERE expires < ?", (time.time() - 86400,))
            try:
                self._db.execute("INSERT INTO used VALUES (?, ?)", (nonce, expires))
            except sqlite3.IntegrityError:
                return False
            return True


def http_put(url: str, path: Path, timeout: float = 60.0) -> None:
    """Upload a file with HTTP PUT (to a presigned S3 URL or the relay's own store)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        req = urllib.request.Request(url, data=f, method="PUT")
        req.add_header("Content-Length", str(size))
        req.add_header("Content-Type", "application/octet-stream")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            if resp.status >= 300:
                raise OSError(f"upload refused: HTTP {resp.status}")


class CommandHandler:
    """Verifies and carries out owner-signed commands; see the module doc."""

    def __init__(
        self,
        device: str,
        owner_sign_public: bytes,
        store: ClipStore,
        announce: Callable[[Message], None],
        ledger: NonceLedger,
        upload: Callable[[str, Path], None] = http_put,
        now: Callable[[], float] = time.time,
        apply_masks: Callable[[ApplyMasks], None] | None = None,
    ) -> None:
        self.device = device
        self.owner_sign_public = owner_sign_public
        self.store = store
        self.announce = announce
        self.ledger = ledger
        self.upload = upload
        self.now = now
        self.apply_masks = apply_masks
        """The controller's queue: it owns the masks (``None``: masks are not taken)."""
        self.queue: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        self.counters = {"released": 0, "deleted": 0, "refused": 0, "failed": 0}
        self.refusals: list[str] = []
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------- thread plumbing

    def submit(self, msg: Message) -> None:
        self.queue.put(msg)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="commands", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.queue.put(None)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while (msg := self.queue.get()) is not None:
            self.handle(msg)

    # ---------------------------------------------------------- the checks

    def handle(self, msg: Message) -> None:
        try:
            if isinstance(msg, ReleaseCommand):
                self._release(msg)
            elif isinstance(msg, DeleteCommand):
                self._delete(msg)
            elif isinstance(msg, MasksCommand):
                self._masks(msg)
            else:
                raise Refused(f"{msg.kind} is not a command")
        except Refused as err:
            self.counters["refused"] += 1
            self.refusals.append(str(err))
            log.warning("refused %s command %s: %s", msg.kind, msg.id, err)
            self._announce_refusal(msg, str(err), err.code)
        except Exception:
            self.counters["failed"] += 1
            log.exception("command %s failed", msg.id)

    def _announce_refusal(self, msg: Message, why: str, code: RefusalCode) -> None:
        """Put the refusal on the record: the relay logs it publicly (protocol CommandRefused)."""
        self.announce(
            CommandRefused(
                id=new_id(),
                ts=utcnow(),
                device=self.device,
                command_id=msg.id,
                command=msg.kind if msg.kind in ("release", "delete", "masks") else "other",
                request_id=getattr(msg, "request_id", None),
                clip_id=getattr(msg, "clip_id", None),
                reason=why[:500],
                code=code,
            )
        )

    def _verified(self, signed_b64: str, kind: type[D]) -> D:
        try:
            decision = verify_decision(
                signed_b64, self.owner_sign_public, kind, now=self.now(), device=self.device
            )
        except DecisionRefused as err:
            why = str(err).replace("by the owner", "by this doorbell's owner")
            raise Refused(why, err.code) from None
        if not self.ledger.use(decision.nonce, decision.expires):
            raise Refused("this signed decision was used before (replay)", "replay")
        return decision

    def _release(self, cmd: ReleaseCommand) -> None:
        approval = self._verified(cmd.approval, Approval)
        if approval.request_id != cmd.request_id:
            raise Refused("the approval is for another request", "wrong_request")
        clip_ids = approval.clip_ids
        if sorted(cmd.upload_urls) != sorted(clip_ids):
            raise Refused("the relay asks for other clips than the owner approved", "wrong_clips")
        for clip_id in clip_ids:
            record = self.store.get(clip_id)
            if record is None:
                raise Refused(f"no clip {clip_id} on this doorbell (deleted?)", "no_such_clip")
        for clip_id in clip_ids:
            record = self.store.get(clip_id)
            assert record is not None
            self.upload(cmd.upload_urls[clip_id], self.store.path(record))
            self.announce(
                Released(
                    id=new_id(),
                    ts=utcnow(),
                    device=self.device,
                    request_id=cmd.request_id,
                    clip_id=clip_id,
                    wrapped_key=approval.keys[clip_id],
                    sha256=record.sha256,
                )
            )
            self.counters["released"] += 1
            log.info("released clip %s for request %s", clip_id, cmd.request_id)

    def _delete(self, cmd: DeleteCommand) -> None:
        deletion = self._verified(cmd.signature, Deletion)
        if deletion.clip_id != cmd.clip_id:
            raise Refused("the signed deletion is for another clip", "wrong_clips")
        if self.store.delete(cmd.clip_id):
            self.counters["deleted"] += 1
        # Announce even if it was gone already: the relay must forget it either way.
        self.announce(
            Deleted(
                id=new_id(), ts=utcnow(), device=self.device, clip_id=cmd.clip_id, reason="owner"
            )
        )

    def _masks(self, cmd: MasksCommand) -> None:
        if self.apply_masks is None:
            raise Refused("this doorbell takes no mask updates (no controller attached)")
        update = self._verified(cmd.update, MaskUpdate)
        # Newer than the set in force? Only the controller, which owns it, can say.
        self.apply_masks(ApplyMasks(update, cmd.update, decision_hash(cmd.update), cmd.id))
