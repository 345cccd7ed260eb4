"""The owner's privacy masks, as the client keeps and changes them.

A :class:`~protocol.decisions.MaskUpdate` carries the *whole* set of owner-added masks,
so changing one means signing the current set with the change.  The client keeps the
last set the owner signed (kept before it is sent: the relay may deliver it whatever it
answers), as the owner signed it, in its own state (``$FOOTAGE_STATE/masks/
<device>.json``) and re-checks that signature with the owner's key whenever it reads it.
It also asks the relay for the set the doorbell last announced in force
(``masks_applied`` carries the signed set; ``GET /v1/devices/{device}/masks``), checks
the owner's signature on it, and builds on it when it is newer (:func:`choose_basis`):
so the web app, a second machine or a second state folder see each other's masks.  The
relay cannot make the owner sign a mask away: the new set names the hash of the set it
replaces (``previous``), and the doorbell refuses (``stale``) a set whose ``previous``
is not the one it holds, so one built on an older set a relay chose to serve never
applies.

Example (what the bystander "stop filming this spot" answer calls)::

    book = MaskBook(state_dir)
    held = client.call("GET", "/v1/devices/front-door/masks")
    current, previous, note = choose_basis("front-door", book.signed("front-door"),
                                           held, keys.sign_public)
    update = build_update(current, "front-door", add=[("bystander-r1", polygon)],
                          reason="bystander:r1", previous=previous)
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


def choose_basis(
    device: str,
    local_signed: str | None,
    held: object,
    sign_public: bytes,
    local_sent: bool = True,
) -> tuple[MaskUpdate | None, str | None, str | None]:
    """What the next change builds on: ``(set, previous, note)``.

    ``held`` is the relay's answer to ``GET /v1/devices/{device}/masks`` (the set the
    doorbell last announced in force); its signature is checked here, so the relay can
    at worst serve an *older* genuine set, and the doorbell refuses a change built on
    that (``stale``).  The local set wins only when it is newer and was built on the
    held one (sent, not yet announced); a newer local set built on anything else was
    refused or never applied, and building on it again would be refused forever, so
    the held set wins and ``note`` tells the owner.  ``previous`` is None only when the
    doorbell announced no owner set and none is in flight (then the kept masks are
    carried into the new set).  Known gap: a kept set that *was* applied and then lost
    from a wiped card looks "in flight" (the doorbell announces none, the set names
    none), so each change is refused as stale; a fresh state folder (or browser) builds
    on none and works.  (Telling the two apart by comparing the doorbell's clock with
    the owner's was tried and is wrong under clock skew.)

    >>> choose_basis("front-door", None, {"hash": None, "update": None}, b"k" * 32)
    (None, None, None)
    """
    if not isinstance(held, dict):
        raise MaskError("the relay's answer about the mask set in force is not an object")
    local = _verified(local_signed, sign_public, device, "the kept") if local_signed else None
    held_hash, held_signed = held.get("hash"), held.get("update")
    remote = None
    if held_hash is not None:
        if not isinstance(held_signed, str) or decision_hash(held_signed) != held_hash:
            raise MaskError("the relay served a mask set that is not the one it names: refused")
        remote = _verified(held_signed, sign_public, device, "the relay's")
    if local is None:
        return remote, held_hash, None
    if remote is not None and remote.issued >= local.issued:
        return remote, held_hash, None
    assert local_signed is not None
    if local.previous == held_hash:
        if local_sent:  # the relay took it, built on the set in force: not yet announced
            return local, decision_hash(local_signed), None
        # The relay did not take it (an error): most likely never delivered, so its masks
        # are built on again on the set in force.  Had the relay delivered it anyway, the
        # doorbell refuses this one as stale: nothing is dropped either way.
        return local, held_hash, None
    if remote is None:  # the doorbell holds none (a wiped card): the owner's masks again
        return local, None, None
    note = (
        "the doorbell holds a newer mask set than the one your last change (set "
        f"{decision_hash(local_signed)[:12]}) was built on, so it was refused (stale) or "
        "never applied: fetched again, this change is built on the set the doorbell "
        "holds; add again any mask of that change that is missing"
    )
    return remote, held_hash, note


def _verified(signed: str, sign_public: bytes, device: str, whose: str) -> MaskUpdate:
    try:
        return verify_decision(
            signed, sign_public, MaskUpdate, now=0.0, device=device, allow_expired=True
        )
    except DecisionRefused as err:
        raise MaskError(f"{whose} mask set of {device} does not check out: {err}") from None


def build_update(
    current: MaskUpdate | None,
    device: str,
    add: Sequence[tuple[str, Polygon]] = (),
    remove: Sequence[str] = (),
    reason: str | None = None,
    now: float | None = None,
    valid_s: float = 7 * 86400,
    previous: str | None = None,
) -> MaskUpdate:
    """The next update of ``device``: ``current``'s masks, less ``remove``, plus ``add``.

    ``issued`` is now, and always later than ``current``'s (the doorbell refuses an
    update that is not newer than the one it holds); ``previous`` is the hash of the
    signed set it replaces (see :func:`choose_basis`).  Raises :class:`MaskError` for an
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
            previous=previous,
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

    def sent(self, device: str) -> bool:
        """The relay took the kept set (the answer named its hash); see :func:`choose_basis`."""
        try:
            return bool(json.loads(self._path(device).read_text()).get("sent", True))
        except (OSError, ValueError, AttributeError):
            return False

    def save(self, device: str, signed: str, sent: bool = False) -> None:
        """Keep ``signed`` (before it is sent; again with ``sent`` once the relay took it)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._path(device)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"update": signed, "sent": sent}))
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
