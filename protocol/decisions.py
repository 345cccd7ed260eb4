"""The owner's signed decisions: an :class:`Approval` releases clips to one requester,
a :class:`Deletion` destroys a clip, a :class:`MaskUpdate` sets the owner-added privacy
masks.  One model each, and one check, used by both the relay (before it forwards) and
the doorbell (before it acts).

On the wire a decision is ``base64(JSON {"payload": base64(body), "signature":
base64(Ed25519(body))})`` where ``body`` is the decision's canonical JSON (keys
sorted, no spaces).  :func:`verify_decision` checks the signature with the owner's
key, the shape (strict types, no unknown fields), the kind, the doorbell and the
expiry; what only one side can check (the relay: that the ask matches; the doorbell:
that the nonce is new and the clips are the approved ones) stays with that side.

Example::

    key = unwrap_key(clip_owner_key, owner.box_private)  # sealed to the owner at recording
    approval = Approval.create("req-1", "front-door", ["c1"], requester_box_public, expires,
                               {"c1": key})
    wire = sign_decision(approval, owner.sign_private)
    same = verify_decision(wire, owner.sign_public, Approval, now=time.time(), device="front-door")
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from protocol.crypto import CryptoFailure, b64, sign_payload, unb64, verify_payload, wrap_key
from protocol.refusals import RefusalCode

_ID = r"^[A-Za-z0-9._:-]{1,128}$"
SEALED_KEY_BYTES = 32 + 48
"""A 32-byte clip key in a libsodium sealed box (ephemeral public key + MAC)."""


class DecisionRefused(ValueError):
    """A signed decision that must not be acted on; the message says why, and ``code``
    (one of :data:`protocol.refusals.REFUSAL_CODES`) says it without naming anything."""

    def __init__(self, why: str, code: RefusalCode = "malformed") -> None:
        super().__init__(why)
        self.code: RefusalCode = code


class _Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    device: str = Field(pattern=_ID)
    expires: int = Field(ge=0)
    """Unix seconds after which the decision is void."""
    nonce: str = Field(min_length=16, max_length=64)
    """Random, base64; the doorbell refuses a nonce it has seen (replay)."""

    def payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Approval(_Decision):
    """The owner releases ``clip_ids`` of ``device`` for one request to one requester."""

    type: Literal["approval"] = "approval"
    request_id: str = Field(pattern=_ID)
    clip_ids: list[str] = Field(min_length=1, max_length=1000)
    """Sorted; every id one of this doorbell's clips that the ask listed."""
    requester_key: str
    """The approved requester's X25519 public key (base64): the only one who can open it."""
    keys: dict[str, str]
    """Clip id → that clip's key sealed to ``requester_key`` (base64 of an 80-byte sealed
    box).  The owner's client opens each key (sealed to the owner at recording) and
    seals it anew: the doorbell holds no key it could use and only uploads ciphertext."""

    @field_validator("requester_key")
    @classmethod
    def _key(cls, v: str) -> str:
        try:
            ok = len(unb64(v)) == 32
        except ValueError:
            ok = False
        if not ok:
            raise ValueError("requester_key must be a 32-byte X25519 key in base64")
        return v

    @field_validator("keys")
    @classmethod
    def _sealed(cls, v: dict[str, str]) -> dict[str, str]:
        for sealed in v.values():
            try:
                ok = len(unb64(sealed)) == SEALED_KEY_BYTES
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"each key must be a {SEALED_KEY_BYTES}-byte sealed box in base64")
        return v

    @model_validator(mode="after")
    def _one_key_per_clip(self) -> Approval:
        if set(self.keys) != set(self.clip_ids):
            raise ValueError("keys must hold exactly one sealed key per approved clip")
        return self

    @classmethod
    def create(
        cls,
        request_id: str,
        device: str,
        clip_ids: list[str],
        requester_box_public: bytes,
        expires: float,
        keys: dict[str, bytes],
        nonce: str | None = None,
    ) -> Approval:
        """``keys``: clip id → the clip key (32 bytes), sealed here to the requester."""
        return cls(
            request_id=request_id,
            device=device,
            clip_ids=sorted(clip_ids),
            requester_key=b64(requester_box_public),
            keys={c: b64(wrap_key(keys[c], requester_box_public)) for c in clip_ids},
            expires=int(expires),
            nonce=nonce or _nonce(),
        )


class Deletion(_Decision):
    """The owner destroys ``clip_id`` of ``device``, on the doorbell and at the relay."""

    type: Literal["delete"] = "delete"
    clip_id: str = Field(pattern=_ID)

    @classmethod
    def create(cls, device: str, clip_id: str, expires: float | None = None) -> Deletion:
        return cls(
            device=device,
            clip_id=clip_id,
            expires=int(expires or time.time() + 3600),
            nonce=_nonce(),
        )


MASK_MAX_MASKS = 16
MASK_MIN_POINTS = 3
MASK_MAX_POINTS = 64
_MASK_NAME = r"^[A-Za-z0-9._-]{1,64}$"
_REASON = r"^[A-Za-z0-9._:-]{1,128}$"

MASK_SCALE = 10_000
"""Mask coordinates are integers: fractions of the frame times 10 000 (a tenth of a pixel
at 1080p).  Decisions carry no floats, so every client encodes the same bytes, and the
largest set (16 masks of 64 points) stays well inside one ``cmd/masks`` message."""

Coordinate = Annotated[int, Field(ge=0, le=MASK_SCALE)]
Point = Annotated[list[Coordinate], Field(min_length=2, max_length=2)]
"""``[x, y]``: fractions of the frame's width and height times :data:`MASK_SCALE`,
``[0, 0]`` the top left, ``[10000, 10000]`` the bottom right."""


def _cross(o: list[int], a: list[int], b: list[int]) -> int:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _within(p: list[int], q: list[int], r: list[int]) -> bool:
    """``q`` (collinear with ``p``-``r``) lies on the segment ``p``-``r``."""
    return min(p[0], r[0]) <= q[0] <= max(p[0], r[0]) and min(p[1], r[1]) <= q[1] <= max(p[1], r[1])


def _touch(p1: list[int], p2: list[int], p3: list[int], p4: list[int]) -> bool:
    """Segments ``p1``-``p2`` and ``p3``-``p4`` share a point (exact: integer points)."""
    d1, d2 = _cross(p3, p4, p1), _cross(p3, p4, p2)
    d3, d4 = _cross(p1, p2, p3), _cross(p1, p2, p4)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    return (
        (d1 == 0 and _within(p3, p1, p4))
        or (d2 == 0 and _within(p3, p2, p4))
        or (d3 == 0 and _within(p1, p3, p2))
        or (d4 == 0 and _within(p1, p4, p2))
    )


def polygon_problem(points: list[list[int]]) -> str | None:
    """Why ``points`` would not be blanked as the area its outline encloses, or None.

    A mask is what the owner draws: a simple polygon.  One that crosses itself, is
    traced twice, folds back or has no area would be rasterised (even-odd) as something
    else (a twice-traced one as nothing) while the doorbell announced it applied.

    >>> polygon_problem([[0, 0], [10, 0], [10, 10], [0, 10]]) is None
    True
    >>> polygon_problem([[0, 0], [10, 10], [10, 0], [0, 10]])
    'edges 1 and 3 cross'
    """
    n = len(points)
    if len({(x, y) for x, y in points}) != n:
        return "a point is repeated"
    for i in range(n):
        a, b = points[i], points[(i + 1) % n]
        for j in range(i + 1, n):
            c, d = points[j], points[(j + 1) % n]
            if j == i + 1 or (i == 0 and j == n - 1):
                # Neighbours share a point; they overlap only by folding back.
                shared, p, q = (b, a, d) if j == i + 1 else (a, b, c)
                dot = (p[0] - shared[0]) * (q[0] - shared[0]) + (p[1] - shared[1]) * (
                    q[1] - shared[1]
                )
                if _cross(shared, p, q) == 0 and dot > 0:
                    return f"edge {j + 1 if j == i + 1 else i + 1} folds back"
            elif _touch(a, b, c, d):
                return f"edges {i + 1} and {j + 1} cross"
    if sum(_cross([0, 0], points[i], points[(i + 1) % n]) for i in range(n)) == 0:
        return "it has no area"
    return None


def proposed_polygon_problem(points: object, max_points: int = MASK_MAX_POINTS) -> str | None:
    """Why ``points`` (``[x, y]`` fractions of the frame, as a person draws or proposes
    them) could not become an owner's mask, or None.  One rule for both ends: the relay
    refuses a bystander's proposal with it, so an owner can always sign what was filed.

    >>> proposed_polygon_problem([[0, 0], [0.5, 0], [0.5, 1]]) is None
    True
    >>> proposed_polygon_problem([[0, 0], [1, 1], [1, 0], [0, 1]])
    'edges 1 and 3 cross'
    >>> proposed_polygon_problem([[0, 0], [0.00001, 0], [0, 1]])
    'a point is repeated'
    """
    if not isinstance(points, list) or not MASK_MIN_POINTS <= len(points) <= max_points:
        return f"{MASK_MIN_POINTS} to {max_points} [x, y] points are needed"
    for p in points:
        if not (isinstance(p, list | tuple) and len(p) == 2):
            return "each point is an [x, y] pair"
        for v in p:
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
                return "each coordinate is a fraction of the frame, 0 to 1"
    # Checked as the mask will hold it: rounded to MASK_SCALE, where two close points
    # become one.
    return polygon_problem(mask_points(points))


def mask_points(points: list[Any]) -> list[list[int]]:
    """Fractions of the frame → the integer points a :class:`NamedMask` holds.

    >>> mask_points([[0, 0.5], [1, 0.33333]])
    [[0, 5000], [10000, 3333]]
    """
    return [[_q(x), _q(y)] for x, y in points]


class NamedMask(BaseModel):
    """One owner-added privacy mask: a polygon in frame fractions, with a name."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(pattern=_MASK_NAME)
    points: list[Point] = Field(min_length=MASK_MIN_POINTS, max_length=MASK_MAX_POINTS)

    @field_validator("points")
    @classmethod
    def _simple(cls, v: list[list[int]]) -> list[list[int]]:
        why = polygon_problem(v)
        if why is not None:
            raise ValueError(f"not a simple polygon: {why}")
        return v

    def polygon(self) -> list[tuple[float, float]]:
        """The points as fractions of the frame (what :mod:`firmware.masks` rasterises)."""
        return [(x / MASK_SCALE, y / MASK_SCALE) for x, y in self.points]


class MaskUpdate(_Decision):
    """The owner sets the *whole* set of owner-added masks of ``device`` (the config's
    masks stay; the effective mask is their union).  ``issued`` (Unix seconds) orders
    updates: the doorbell keeps only an update newer than the one it holds, so a relay
    that replays an older signed set cannot roll the masks back.

    >>> u = MaskUpdate.create("front-door", [("street", [(0, 0.5), (1, 0.5), (1, 1)])],
    ...                       issued=1_800_000_000)
    >>> u.type, u.masks[0].name, u.masks[0].points[1]
    ('masks', 'street', [10000, 5000])
    """

    type: Literal["masks"] = "masks"
    issued: int = Field(ge=0)
    masks: list[NamedMask] = Field(max_length=MASK_MAX_MASKS)
    """Sorted by name; names are unique.  Empty: no owner-added masks."""
    reason: str | None = Field(default=None, pattern=_REASON)
    """A reference, e.g. ``bystander:<request id>`` when a passer-by asked for the mask."""
    previous: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """:func:`decision_hash` of the signed set this one replaces; ``None`` only when the
    doorbell holds no owner set.  The doorbell refuses (``stale``) an update whose
    ``previous`` is not the hash of the set it holds, so a set built on an older one
    (another client's, or one a relay chose to serve) can never silently drop masks."""

    @model_validator(mode="after")
    def _unique_names(self) -> MaskUpdate:
        names = [m.name for m in self.masks]
        if len(set(names)) != len(names):
            raise ValueError("mask names must be unique")
        return self

    @classmethod
    def create(
        cls,
        device: str,
        masks: list[tuple[str, list[tuple[float, float]]]],
        issued: int | None = None,
        reason: str | None = None,
        expires: float | None = None,
        previous: str | None = None,
    ) -> MaskUpdate:
        """``masks``: (name, [(x, y), ...]) pairs in frame fractions (stored as integers
        of :data:`MASK_SCALE`); ``issued`` defaults to now; ``previous`` the hash of the
        signed set it replaces (None: the doorbell holds none)."""
        issued = int(time.time()) if issued is None else issued
        return cls(
            device=device,
            issued=issued,
            masks=[
                NamedMask(name=n, points=mask_points(pts))
                for n, pts in sorted(masks, key=lambda m: m[0])
            ],
            reason=reason,
            expires=int(expires if expires is not None else time.time() + 7 * 86400),
            nonce=_nonce(),
            previous=previous,
        )

    def polygons(self) -> list[list[tuple[float, float]]]:
        return [m.polygon() for m in self.masks]


def _q(v: float) -> int:
    if v != v or not 0.0 <= v <= 1.0:  # NaN, or off the frame
        raise ValueError(f"a mask point must be a fraction of the frame in [0, 1], not {v}")
    return round(v * MASK_SCALE)


D = TypeVar("D", Approval, Deletion, MaskUpdate)


def _nonce() -> str:
    return b64(os.urandom(16))


def sign_decision(decision: Approval | Deletion | MaskUpdate, sign_private: bytes) -> str:
    """The wire form of ``decision`` signed with the owner's Ed25519 key."""
    return b64(json.dumps(sign_payload(decision.payload(), sign_private)).encode())


def verify_decision(
    signed_b64: str,
    owner_sign_public: bytes,
    kind: type[D],
    *,
    now: float,
    device: str | None = None,
    allow_expired: bool = False,
) -> D:
    """The decision if the owner signed it, it is a ``kind``, for ``device`` and not
    expired at ``now``; else :class:`DecisionRefused` saying which.

    ``allow_expired``: only to re-check a decision that was accepted while valid and
    kept since (a doorbell's persisted mask set, at boot); everything else still holds."""
    try:
        envelope = json.loads(unb64(signed_b64))
        if not isinstance(envelope, dict):
            raise ValueError("not an object")
        payload = verify_payload(envelope, owner_sign_public)
    except (CryptoFailure, ValueError, TypeError, RecursionError) as err:
        # RecursionError: JSON nested deeper than the decoder recurses (``[[[[...``
        # fits a cmd/masks), which must be one refusal, not a crash or an HTTP 500.
        raise DecisionRefused(f"not signed by the owner ({err})", "bad_signature") from None
    expected = kind.model_fields["type"].default
    if payload.get("type") != expected:
        raise DecisionRefused(f"signed for {payload.get('type')!r}, not {expected!r}", "wrong_kind")
    try:
        decision = kind.model_validate(payload)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise DecisionRefused(f"malformed {expected}: {where}: {first['msg']}") from None
    if device is not None and decision.device != device:
        raise DecisionRefused(
            f"signed for doorbell {decision.device!r}, not {device!r}", "wrong_device"
        )
    if decision.expires <= now and not allow_expired:
        raise DecisionRefused("the owner's signature has expired", "expired")
    return decision


def decision_hash(signed_b64: str) -> str:
    """SHA-256 (hex) of the signed body bytes exactly as the owner signed them: how the
    doorbell, the relay and the public log name one decision (e.g. a mask update).
    Raises :class:`DecisionRefused` if ``signed_b64`` is not a signed envelope."""
    try:
        envelope = json.loads(unb64(signed_b64))
        body = unb64(envelope["payload"])
    except (ValueError, TypeError, KeyError, RecursionError) as err:
        raise DecisionRefused(f"not a signed decision ({err})", "bad_signature") from None
    return hashlib.sha256(body).hexdigest()


def approval_payload(
    request_id: str,
    device: str,
    clip_ids: list[str],
    requester_box_public: bytes,
    expires: float,
    keys: dict[str, bytes],
    nonce: str | None = None,
) -> dict[str, Any]:
    """What an owner signs to release ``clip_ids`` of ``device`` to one requester."""
    return Approval.create(
        request_id, device, clip_ids, requester_box_public, expires, keys, nonce
    ).payload()


def deletion_payload(device: str, clip_id: str, expires: float | None = None) -> dict[str, Any]:
    """What an owner signs to delete one clip."""
    return Deletion.create(device, clip_id, expires).payload()
