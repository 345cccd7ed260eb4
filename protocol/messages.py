"""Message models for every topic, and the one way to decode them.

Every message carries ``v`` (the schema version), a unique ``id`` (consumers are
idempotent on it), a UTC timestamp ``ts`` and the ``device`` it concerns.
Models forbid unknown fields; :func:`decode` also checks the size, the topic, the
version and that the payload's device is the topic's device.

Example::

    msg = Event(id=new_id(), ts=utcnow(), device="front-door", type="ring", at=utcnow())
    topic, payload = encode(msg)
    assert decode(topic, payload) == msg
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from protocol.refusals import RefusalCode
from protocol.topics import DEVICE_ID_PATTERN, TopicError, parse_topic, topic_for

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
MAX_PAYLOAD_BYTES = 64 * 1024

DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
MessageId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
CLIP_ID_PATTERN = r"^[A-Za-z0-9_-]{4,64}$"
"""A clip id: also a file name part, so never a path (clients check names they are sent)."""
ClipId = Annotated[str, Field(pattern=CLIP_ID_PATTERN)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def _utc(v: datetime) -> datetime:
    return v.astimezone(UTC)


UtcTime = Annotated[AwareDatetime, AfterValidator(_utc)]


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def from_timestamp(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Message(BaseModel):
    """Fields every message has."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)
    kind: str
    v: Literal[1] = SCHEMA_VERSION
    id: MessageId
    ts: UtcTime
    device: DeviceId


class Status(Message):
    """``doorbell/{device}/status``, retained, and the device's last will."""

    kind: Literal["status"] = "status"
    state: Literal["online", "offline"]
    firmware: Annotated[str, Field(max_length=64)]
    free_bytes: Annotated[int, Field(ge=0, le=1 << 50)] | None = None
    """Free space where the doorbell keeps clips and its outbox."""
    warning: Literal["low_space"] | None = None


MASK_UPDATE_MAX_B64 = 48_000
"""A signed mask update (16 masks of 64 points) fits with room to spare."""


class Event(Message):
    """``doorbell/{device}/event``: a ring or motion; never imagery."""

    kind: Literal["event"] = "event"
    type: Literal["ring", "motion_start", "motion_end", "clip_failed", "masks_applied"]
    at: UtcTime
    motion_id: MessageId | None = None
    clip_id: ClipId | None = None
    """For ``clip_failed``: the clip that could not be written."""
    reason: Annotated[str, Field(max_length=256)] | None = None
    """For ``clip_failed``: why (e.g. ``OSError: [Errno 28] No space left on device``)."""
    masks_hash: Sha256 | None = None
    """For ``masks_applied``: :func:`protocol.decisions.decision_hash` of the owner's
    signed mask update now in force (from the next frame on); at boot ``None`` when the
    doorbell keeps no owner set."""
    masks_update: Annotated[str, Field(min_length=1, max_length=MASK_UPDATE_MAX_B64)] | None = None
    """For ``masks_applied``: base64 of that signed mask update itself, as the owner
    signed it (at most :data:`MASK_UPDATE_MAX_B64`, so the event stays inside
    :data:`MAX_PAYLOAD_BYTES`): the relay keeps the latest per doorbell and serves it to
    the owner's clients, which check the owner's signature."""


SNAPSHOT_MAX_B64 = 60_000
"""A sealed snapshot's base64 stays well under :data:`MAX_PAYLOAD_BYTES` with its JSON."""


class Snapshot(Message):
    """``doorbell/{device}/snapshot``: the press snapshot, for the owner's eyes only.

    ``sealed`` is base64 of a libsodium sealed box of the JPEG to the owner's X25519
    key (:func:`protocol.crypto.wrap_key`): the relay stores and forwards it, and only
    the owner's browser or client can open it.  ``ring_id`` is the ring event's id.
    """

    kind: Literal["snapshot"] = "snapshot"
    ring_id: MessageId
    at: UtcTime
    sealed: Annotated[str, Field(min_length=1, max_length=SNAPSHOT_MAX_B64)]


class Clip(Message):
    """``doorbell/{device}/clip``: a clip finished and is stored on the device."""

    kind: Literal["clip"] = "clip"
    clip_id: ClipId
    trigger: Literal["ring", "motion", "continuation"]
    start: UtcTime
    end: UtcTime
    trigger_at: UtcTime
    duration_s: Annotated[float, Field(ge=0, le=3600)]
    preroll_s: Annotated[float, Field(ge=0, le=600)]
    size: Annotated[int, Field(ge=0, le=1 << 34)]
    codec: Literal["h264"]
    width: Annotated[int, Field(ge=16, le=8192)]
    height: Annotated[int, Field(ge=16, le=8192)]
    fps: Annotated[float, Field(gt=0, le=240)]
    sha256: Sha256
    owner_key: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    """The clip key sealed to the owner's X25519 key (base64): only the owner opens it."""


class Deleted(Message):
    """``doorbell/{device}/deleted``: a clip and its key are gone from the device."""

    kind: Literal["deleted"] = "deleted"
    clip_id: ClipId
    reason: Literal["retention", "owner"]


class ReleaseCommand(Message):
    """``doorbell/{device}/cmd/release``: the owner's signed approval, forwarded by the relay."""

    kind: Literal["release"] = "release"
    request_id: MessageId
    approval: Annotated[str, Field(max_length=16384)]  # base64 of the signed approval
    upload_urls: dict[ClipId, Annotated[str, Field(max_length=2048)]]


class DeleteCommand(Message):
    """``doorbell/{device}/cmd/delete``: an owner-signed deletion, forwarded by the relay."""

    kind: Literal["delete"] = "delete"
    clip_id: ClipId
    signature: Annotated[str, Field(max_length=4096)]  # base64 of the signed deletion


class MasksCommand(Message):
    """``doorbell/{device}/cmd/masks``: the owner's signed :class:`~protocol.decisions.MaskUpdate`,
    forwarded by the relay; answered by an ``event`` of type ``masks_applied`` or a
    ``refused`` with ``command`` ``masks``."""

    kind: Literal["masks"] = "masks"
    update: Annotated[str, Field(min_length=1, max_length=MASK_UPDATE_MAX_B64)]
    """base64 of the signed mask update."""


class Released(Message):
    """``doorbell/{device}/released``: ciphertext uploaded, key wrapped to the requester."""

    kind: Literal["released"] = "released"
    request_id: MessageId
    clip_id: ClipId
    wrapped_key: Annotated[str, Field(max_length=1024)]
    sha256: Sha256


class CommandRefused(Message):
    """``doorbell/{device}/refused``: the doorbell refused a command the relay sent it.

    A forged, altered, expired or replayed approval or deletion, or a release of other
    clips than approved, ends here; the relay writes it into the public audit log, so
    a relay that tries to forge the owner's word leaves a trace it cannot hide from
    the doorbell's owner (the doorbell keeps it in its outbox until the relay confirms).
    """

    kind: Literal["refused"] = "refused"
    command_id: MessageId
    command: Literal["release", "delete", "masks", "other"]
    request_id: MessageId | None = None
    clip_id: ClipId | None = None
    reason: Annotated[str, Field(max_length=500)]
    """Free text for the owner; the public log seals it (it may name a doorbell)."""
    code: RefusalCode = "other"
    """Why, from a fixed list: all the public log says."""


class LoggedEntry(BaseModel):
    """One acked message's public log entry: its index, RFC 9162 leaf hash (hex) and
    the salt of its sealed part.

    Example: ``LoggedEntry(id="m-12345678", index=41, leaf="ab12...", salt="q8Zl...==")``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: MessageId
    index: Annotated[int, Field(ge=0, le=2**53)]
    leaf: Sha256
    salt: Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]{22}==$")]
    """The base64 16-byte salt of this entry's ``sealed`` commitment, so the doorbell
    can check that the sealed part is its own id and fields
    (:func:`protocol.transparency.commitment`).  Drawn afresh per entry: it opens this
    entry only, and only the doorbell that wrote it is told (never the public log)."""


class Ack(Message):
    """``doorbell/{device}/cmd/ack``: the relay has indexed these messages of the device.

    Only then does the doorbell drop them from its outbox: a broker's PUBACK alone
    does not survive a broker crash or a forgotten shared subscription.
    """

    kind: Literal["ack"] = "ack"
    ids: Annotated[list[MessageId], Field(min_length=1, max_length=1000)]
    logged: Annotated[list[LoggedEntry], Field(max_length=1000)] = []
    """For acked ``refused``, ``released`` and ``deleted``: where the relay logged them.

    The doorbell keeps each until it has checked an inclusion proof of that entry
    against a log head its witness accepted, and that the entry is exactly
    :func:`protocol.transparency.logged_entry` of the message: an ack alone could
    hide a refusal, a release or a deletion from the public record.
    """


MODELS: dict[str, type[Message]] = {
    "status": Status,
    "event": Event,
    "clip": Clip,
    "deleted": Deleted,
    "released": Released,
    "snapshot": Snapshot,
    "refused": CommandRefused,
    "cmd/release": ReleaseCommand,
    "cmd/delete": DeleteCommand,
    "cmd/masks": MasksCommand,
    "cmd/ack": Ack,
}


class ProtocolError(ValueError):
    """A payload that is not a valid message for its topic.  ``reason`` says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def encode(msg: Message) -> tuple[str, bytes]:
    """The topic and JSON payload for ``msg``."""
    suffix = next(k for k, m in MODELS.items() if isinstance(msg, m))
    return topic_for(msg.device, suffix), msg.model_dump_json().encode()


MAX_DEPTH = 8
"""Deepest nesting of arrays and objects a message may have (the schema needs 3)."""
MAX_NUMBER_CHARS = 32
"""Longest number literal; Python's int parser is quadratic and capped at 4300 digits."""

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
_LONG_NUMBER = re.compile(rb"[-+0-9.eE]{%d,}" % (MAX_NUMBER_CHARS + 1))


def _check_shape(payload: bytes) -> None:
    """Refuse deep nesting and huge numbers *before* a parser recurses or multiplies.

    Strings are blanked first so that brackets and digits inside them do not count.
    """
    bare = _STRINGS.sub(b'""', payload)
    depth = 0
    for m in _BRACKETS.finditer(bare):
        depth += 1 if m.group() in b"[{" else -1
        if depth > MAX_DEPTH:
            raise ProtocolError("too_deep", f"nesting deeper than {MAX_DEPTH}")
    if _LONG_NUMBER.search(bare):
        raise ProtocolError("number_too_long", f"a number longer than {MAX_NUMBER_CHARS} chars")


def _no_constants(name: str) -> Any:
    raise ProtocolError("not_json", f"{name} is not a JSON number")


def decode(topic: str, payload: bytes) -> Message:
    """Validate ``payload`` received on ``topic``; raise :class:`ProtocolError` if it is bad.

    It either returns a message or raises :class:`ProtocolError`, whatever the bytes:
    any other exception of parsing or validation becomes ``ProtocolError("invalid")``.
    """
    try:
        return _decode(topic, payload)
    except ProtocolError:
        raise
    except Exception as err:  # the one promise: nothing else escapes
        raise ProtocolError("invalid", f"{type(err).__name__}: {str(err)[:200]}") from None


def _decode(topic: str, payload: bytes) -> Message:
    if not isinstance(payload, bytes | bytearray):
        raise ProtocolError("not_json", f"payload is {type(payload).__name__}, not bytes")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError("oversized", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        device, suffix = parse_topic(topic)
    except TopicError as err:
        raise ProtocolError("wrong_topic", str(err)[:200]) from None
    model = MODELS.get(suffix)
    if model is None:
        raise ProtocolError("wrong_topic", f"no message is defined for {topic[:200]!r}")
    payload = bytes(payload)
    _check_shape(payload)
    try:
        data: Any = json.loads(payload.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProtocolError("not_json", str(err)[:200]) from None
    if not isinstance(data, dict):
        raise ProtocolError("not_an_object", type(data).__name__)
    v = data.get("v")
    if type(v) is not int or v not in SUPPORTED_VERSIONS:
        raise ProtocolError("unknown_version", f"v={v!r}"[:100])
    try:
        # Strict: "12" is not a number and 1 is not a string on this wire.
        msg = model.model_validate_json(payload, strict=True)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise ProtocolError("invalid", f"{where}: {first['msg']}"[:300]) from None
    if msg.device != device:
        raise ProtocolError("device_mismatch", f"topic says {device!r}, payload {msg.device!r}")
    return msg
