"""The owner's privacy masks, as the client keeps and changes them.

A :class:`~protocol.decisions.MaskUpdate` carries the *whole* set of owner-added masks,
so changing one means signing the current set with the change.  The client keeps the
last set the owner signed (kept before it is sent: the relay may deliver it whatever it
answers), as the owner signed it, in its own state (``$FOOTAGE_STATE/masks/
<device>.json``) and re-checks that signature with the owner's key whenever it reads it.
It does not ask the relay what the current set is: the relay is not trusted with the
owner's word, and a relay that answered with a shorter set would have the owner sign
away a mask.  (A second machine of the same owner starts from an empty set; the
doorbell announces the hash of the set in force, ``masks_applied``, to compare.)

Example (what the bystander "stop filming this spot" answer calls)::

    book = MaskBook(state_dir)
    current = book.current("front-door", keys.sign_public)
    update = build_update(current, "front-door", add=[("bystander-r1", polygon)],
                          reason="bystander:r1")
    signed = sign_decision(update, keys.sign_private)
    book.save("front-door", signed)   # first: see above
    # POST /v1/devices/front-door/masks {"decision": signed}; check the answer's hash
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from protocol.decisions import (
    MASK_MAX_MASKS,
    DecisionRefused,
    MaskUpdate,
    decision_hash,
    verify_decision,
)

Polygon = list[tuple[float, float]]


class MaskError(ValueError):
    """A change that cannot be made; the message says why in one line."""


def parse_polygon(text: str) -> Polygon:
    """``"x,y x,y x,y ..."`` (frame fractions) → points.

    >>> parse_polygon("0,0.5 1,0.5 1,1")
    [(0.0, 0.5), (1.0, 0.5), (1.0, 1.0)]
    """
    points = []
    for pair in text.split():
        try:
            x, y = (float(v) for v in pair.split(","))
        except ValueError:
            raise MaskError(f"not an x,y point: {pair!r}") from None
        points.append((x, y))
    return points


def build_update(
    current: MaskUpdate | None,
    device: str,
    add: Sequence[tuple[str, Polygon]] = (),
    remove: Sequence[str] = (),
    reason: str | None = None,
    now: float | None = None,
    valid_s: float = 7 * 86400,
) -> MaskUpdate:
    """The next update of ``device``: ``current``'s masks, less ``remove``, plus ``add``.

    ``issued`` is now, and always later than ``current``'s (the doorbell refuses an
    update that is not newer than the one it holds).  Raises :class:`MaskError` for an
    unknown name to remove, a name already in use, or a set out of bounds.

    >>> u = build_update(None, "front-door", add=[("street", [(0, .5), (1, .5), (1, 1)])],
    ...                  now=100)
    >>> v = build_update(u, "front-door", remove=["street"], now=100)
    >>> [m.name for m in u.masks], v.masks, v.issued > u.issued
    (['street'], [], True)
    """
    now = time.time() if now is None else now
    held = {m.name: m.polygon() for m in current.masks} if current is not None else {}
    for name in remove:
        if name not in held:
            raise MaskError(f"no mask named {name!r} on {device}")
        del held[name]
    for name, polygon in add:
        if name in held:
            raise MaskError(f"a mask named {name!r} exists already; remove it first")
        held[name] = polygon
    if len(held) > MASK_MAX_MASKS:
        raise MaskError(f"at most {MASK_MAX_MASKS} owner masks per doorbell")
    issued = int(now)
    if current is not None:
        issued = max(issued, current.issued + 1)
    try:
        return MaskUpdate.create(
            device,
            list(held.items()),
            issued=issued,
            reason=reason,
            expires=now + valid_s,
        )
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MaskError(f"not a valid mask set: {where}: {first['msg']}") from None
    except ValueError as err:  # a point off the frame
        raise MaskError(str(err)) from None


class MaskBook:
    """The last signed mask set sent per doorbell, in the client's state folder."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "masks"

    def _path(self, device: str) -> Path:
        return self.dir / f"{device}.json"

    def signed(self, device: str) -> str | None:
        path = self._path(device)
        if not path.exists():
            return None
        try:
            value = json.loads(path.read_text())["update"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise MaskError(f"{path} is unreadable ({err})") from None
        if not isinstance(value, str):
            raise MaskError(f"{path} is unreadable (update is not a string)")
        return value

    def current(self, device: str, sign_public: bytes) -> MaskUpdate | None:
        """The set last sent, re-checked with the owner's key (None: none sent yet)."""
        signed = self.signed(device)
        if signed is None:
            return None
        try:
            return verify_decision(
                signed, sign_public, MaskUpdate, now=0.0, device=device, allow_expired=True
            )
        except DecisionRefused as err:
            raise MaskError(f"the kept mask set of {device} does not check out: {err}") from None

    def save(self, device: str, signed: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._path(device)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"update": signed}))
        os.replace(tmp, path)


def describe(update: MaskUpdate | None, signed: str | None, device: str) -> dict[str, object]:
    """The ``footage masks list --json`` form of a kept set."""
    return {
        "device": device,
        "hash": decision_hash(signed) if signed else None,
        "issued": update.issued if update else None,
        "reason": update.reason if update else None,
        "masks": [
            {"name": m.name, "points": [list(p) for p in m.polygon()]}
            for m in (update.masks if update else [])
        ],
    }
