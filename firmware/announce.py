"""Turn what the controller emits into wire messages, and put them in the outbox.

The controller calls an :class:`Announcer` as its event sink; it returns as soon
as the message is durable on disk.  Rings take the urgent lane.
"""

from __future__ import annotations

import logging

from firmware.controller import DoorbellEvent
from firmware.jpeg import shrink_jpeg
from firmware.outbox import NORMAL, URGENT
from firmware.spool import DurableBox
from protocol import (
    Clip,
    CommandRefused,
    Deleted,
    Event,
    Message,
    Snapshot,
    encode,
    from_timestamp,
    new_id,
)
from protocol.crypto import b64, wrap_key
from protocol.messages import SNAPSHOT_MAX_B64

log = logging.getLogger(__name__)

SNAPSHOT_MAX_JPEG = SNAPSHOT_MAX_B64 * 3 // 4 - 48
"""The largest JPEG whose sealed box (48 bytes more) fits a Snapshot message in base64."""


def to_message(device: str, ev: DoorbellEvent, owner_box: bytes | None = None) -> Message | None:
    """The wire message for ``ev``, or None for what stays on the device.

    A ring's snapshot leaves only sealed to ``owner_box`` (the owner's X25519 key),
    and only if it fits in one message; without a key it stays on the device.
    """
    ts = from_timestamp(ev.at)
    d = ev.data
    if ev.kind == "ring_snapshot":
        if owner_box is None:
            return None
        jpeg = shrink_jpeg(d["jpeg"], SNAPSHOT_MAX_JPEG)
        if jpeg is None:
            log.warning("ring snapshot of %d bytes is too large to announce", len(d["jpeg"]))
            return None
        sealed = b64(wrap_key(jpeg, owner_box))
        return Snapshot(id=new_id(), ts=ts, device=device, ring_id=d["ring"], at=ts, sealed=sealed)
    if ev.kind in ("ring", "motion_start", "motion_end"):
        return Event(id=ev.id, ts=ts, device=device, type=ev.kind, at=ts, motion_id=d.get("motion"))
    if ev.kind == "clip_saved":
        return Clip(
            id=ev.id,
            ts=ts,
            device=device,
            clip_id=d["clip"],
            trigger=d["trigger"],
            start=from_timestamp(d["start"]),
            end=from_timestamp(d["end"]),
            trigger_at=from_timestamp(d["trigger_at"]),
            duration_s=d["duration_s"],
            preroll_s=d["preroll_s"],
            size=d["size"],
            codec="h264",
            width=d["width"],
            height=d["height"],
            fps=d["fps"],
            sha256=d["sha256"],
            owner_key=d.get("owner_key") or None,
        )
    if ev.kind == "clip_failed":
        # The owner learns that a clip is missing, and why (a full disk, a bad card).
        return Event(
            id=ev.id,
            ts=ts,
            device=device,
            type="clip_failed",
            at=ts,
            clip_id=_clip_id(d.get("clip")),
            reason=str(d.get("error", "unknown"))[:256],
        )
    if ev.kind == "masks_applied":
        # The owner's signed set rides along so the relay can serve it back to the
        # owner's other clients (they verify the owner's signature themselves).
        return Event(
            id=ev.id,
            ts=ts,
            device=device,
            type="masks_applied",
            at=ts,
            masks_hash=d["hash"],
            masks_update=d.get("update") or None,
        )
    if ev.kind == "masks_refused":
        # A mask update refused by the controller (rollback, not stored) or a persisted
        # set refused at boot: on the record like any refused command.
        return CommandRefused(
            id=ev.id,
            ts=ts,
            device=device,
            command_id=d.get("command") or new_id(),
            command="masks",
            reason=str(d["reason"])[:500],
            code=d["code"],
        )
    if ev.kind == "clip_deleted":
        return Deleted(id=new_id(), ts=ts, device=device, clip_id=d["clip"], reason=d["reason"])
    return None


def _clip_id(value: object) -> str | None:
    text = str(value or "")
    return (
        text if 4 <= len(text) <= 64 and text.replace("-", "").replace("_", "").isalnum() else None
    )


class Announcer:
    """The controller's event sink on a connected doorbell."""

    def __init__(self, device: str, outbox: DurableBox, owner_box: bytes | None = None) -> None:
        self.device = device
        self.outbox = outbox
        self.owner_box = owner_box

    def __call__(self, ev: DoorbellEvent) -> None:
        msg = to_message(self.device, ev, self.owner_box)
        if msg is not None:
            urgent = ev.kind in ("ring", "ring_snapshot")
            self.message(msg, URGENT if urgent else NORMAL)

    def message(self, msg: Message, lane: int = NORMAL) -> None:
        """Put any wire message in the outbox (releases and deletions use this)."""
        topic, payload = encode(msg)
        self.outbox.put(topic, payload, msg.id, lane)
