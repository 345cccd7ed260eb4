"""What goes on the controller's queue.  Hardware callbacks create these and nothing more."""

from __future__ import annotations

from dataclasses import dataclass

from firmware.store import ClipRecord
from protocol.decisions import MaskUpdate


@dataclass(frozen=True, slots=True)
class ButtonEdge:
    """The button's contact changed.  Chatter arrives as many of these; the controller debounces."""

    pressed: bool
    t: float


@dataclass(frozen=True, slots=True)
class PirEdge:
    active: bool
    t: float


@dataclass(frozen=True, slots=True)
class ClipWritten:
    """A clip finished writing (sent back by the finaliser thread)."""

    record: ClipRecord
    trigger_t: float


@dataclass(frozen=True, slots=True)
class ClipFailed:
    clip_id: str
    error: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Finish the clip in progress and stop the controller loop."""


@dataclass(frozen=True, slots=True)
class ApplyMasks:
    """An owner's mask update whose signature and nonce the command handler checked;
    the controller decides (newer than the one it holds?) and applies it."""

    update: MaskUpdate
    signed: str
    hash: str
    command_id: str
