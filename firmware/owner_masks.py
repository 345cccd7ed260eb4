"""The owner-added privacy masks: a signed :class:`~protocol.decisions.MaskUpdate`, kept.

The TOML config's masks are the installer's; the owner adds more at run time (for a
passer-by who asked, say) with a signed mask update, sent by the relay as
``cmd/masks``.  The command handler checks the owner's signature and the nonce, then
only enqueues an :class:`~firmware.events.ApplyMasks`: the controller thread owns the
effective mask (config masks UNION the signed ones), refuses an update that is not
newer than the one it holds (the relay cannot roll masks back), persists it here and
hands the union to the camera and the motion detector from the next frame on.

On disk: ``data_dir/masks.json`` and an identical ``masks.bak.json``, each written to a
temp file, fsynced and renamed, holding only the signed update as the owner signed
it.  At boot both are re-verified with the owner's key (expiry aside: the update was
valid when accepted); the newest valid one wins, a damaged or forged file is reported
and never applied, so the doorbell keeps the last good set.

Example::

    kept = OwnerMasks(data_dir, owner_sign_public, "front-door")
    loaded = kept.load()          # LoadedMasks(update, signed, hash, problems)
    kept.save(signed_b64)         # after the controller accepted it
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from protocol.decisions import DecisionRefused, MaskUpdate, decision_hash, verify_decision
from protocol.refusals import RefusalCode

log = logging.getLogger(__name__)

FILES = ("masks.json", "masks.bak.json")


@dataclass(frozen=True)
class LoadedMasks:
    """What :meth:`OwnerMasks.load` found: the update in force (or None) and what was wrong."""

    update: MaskUpdate | None = None
    signed: str | None = None
    hash: str | None = None
    problems: list[tuple[str, RefusalCode]] = field(default_factory=list)
    """Each refused file: why, and the code for the record."""


class OwnerMasks:
    """The accepted signed mask update, on disk; see the module doc."""

    def __init__(self, data_dir: Path, owner_sign_public: bytes, device: str) -> None:
        self.dir = Path(data_dir)
        self.owner_sign_public = owner_sign_public
        self.device = device

    def _read(self, name: str) -> tuple[MaskUpdate, str]:
        path = self.dir / name
        try:
            doc = json.loads(path.read_text())
            signed = doc["update"]
            if not isinstance(signed, str):
                raise TypeError("update is not a string")
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as err:
            # RecursionError: a file nested deeper than the JSON decoder recurses; the
            # card is not trusted, and a refused file must not stop the doorbell booting.
            raise DecisionRefused(f"{name} is unreadable ({err})") from None
        update = verify_decision(
            signed,
            self.owner_sign_public,
            MaskUpdate,
            now=0.0,
            device=self.device,
            allow_expired=True,
        )
        return update, signed

    def load(self) -> LoadedMasks:
        """The newest validly signed update on disk; each refused file is in ``problems``."""
        best: tuple[MaskUpdate, str] | None = None
        problems = []
        for name in FILES:
            if not (self.dir / name).exists():
                continue
            try:
                update, signed = self._read(name)
            except DecisionRefused as err:
                problems.append((f"{name} refused: {err}", err.code))
                log.error("persisted owner masks %s refused, not applied: %s", name, err)
                continue
            if best is None or update.issued > best[0].issued:
                best = (update, signed)
        if best is None:
            return LoadedMasks(problems=problems)
        return LoadedMasks(best[0], best[1], decision_hash(best[1]), problems)

    def save(self, signed: str) -> None:
        """Write ``signed`` to both files, each atomically (temp, fsync, rename, fsync dir)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"update": signed}).encode()
        # The backup first: a crash between the two leaves one file with the new update
        # and one with the old, and load() takes the newer of the valid ones.
        for name in reversed(FILES):
            tmp = self.dir / f".{name}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / name)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
