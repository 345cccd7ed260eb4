"""Bystanders' requests: the kinds, the owners' answers, the decline reasons and the
proof of work, shared by the relay (which checks) and clients (which solve).

A person filmed by a doorbell may ask for a copy of footage of themselves, for its
erasure, or that a spot stop being filmed.  The request is unauthenticated, so it
carries a *proof of work*: the relay issues a single-use random ``challenge`` with a
``difficulty`` (in bits); the client finds a ``nonce`` such that
``SHA-256(challenge ":" nonce)`` (UTF-8) starts with ``difficulty`` zero bits.

>>> nonce = solve("00ff", 8)
>>> check_work("00ff", nonce, 8)
True
>>> check_work("00ff", nonce + "x", 30)
False
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Literal, get_args

from protocol.decisions import proposed_polygon_problem

BystanderKind = Literal["copy", "erase", "stop_filming"]
KINDS: tuple[str, ...] = get_args(BystanderKind)

Answer = Literal["copy", "erase", "decline", "accept"]
ANSWERS: dict[str, tuple[str, ...]] = {
    "copy": ("copy", "erase", "decline"),
    "erase": ("erase", "decline"),
    "stop_filming": ("accept", "decline"),
}
"""Which answers an owner may give to each kind of request."""

DeclineReason = Literal[
    "not_shown",  # the clips do not show the person who asked
    "cannot_identify",  # the owner cannot tell which person in the clips asked
    "others_shown",  # a copy would show other people who did not ask
    "legal_hold",  # the footage must be kept (a claim, an investigation)
    "excessive",  # the request is manifestly unfounded or excessive
    "spot_needed",  # stop_filming: the spot is needed (the owner's own door, path)
]
DECLINE_REASONS: tuple[str, ...] = get_args(DeclineReason)

MAX_DESCRIPTION = 1000
"""Characters of a bystander's description at most (shown to owners as text)."""
MAX_POLYGON_POINTS = 16
NONCE_MAX = 64


def work_hash(challenge: str, nonce: str) -> bytes:
    return hashlib.sha256(f"{challenge}:{nonce}".encode()).digest()


def leading_zero_bits(digest: bytes) -> int:
    """>>> leading_zero_bits(bytes([0, 0x1f]))
    11
    """
    n = 0
    for byte in digest:
        if byte == 0:
            n += 8
            continue
        return n + 8 - byte.bit_length()
    return n


def check_work(challenge: str, nonce: str, difficulty: int) -> bool:
    """Whether ``nonce`` solves ``challenge`` at ``difficulty`` bits (a bounded nonce)."""
    if not isinstance(nonce, str) or not 0 < len(nonce) <= NONCE_MAX:
        return False
    return leading_zero_bits(work_hash(challenge, nonce)) >= difficulty


def solve(challenge: str, difficulty: int, progress: Callable[[int], None] | None = None) -> str:
    """The first decimal nonce that solves ``challenge``; ``progress(tries)`` every 2^16."""
    i = 0
    while True:
        nonce = str(i)
        if leading_zero_bits(work_hash(challenge, nonce)) >= difficulty:
            return nonce
        i += 1
        if progress is not None and i % 65536 == 0:
            progress(i)


def polygon_problem(points: object) -> str | None:
    """Why a proposed polygon (``[x, y]`` fractions of the frame, 3..16 points) could
    not be filed, or None: the owner's mask rule
    (:func:`protocol.decisions.proposed_polygon_problem`), so an owner can always
    accept what a bystander filed.

    >>> polygon_problem([[0, 0], [0.5, 0], [0.5, 1]]) is None
    True
    >>> polygon_problem([[0, 0], [1, 1], [1, 0], [0, 1]])
    'edges 1 and 3 cross'
    """
    return proposed_polygon_problem(points, MAX_POLYGON_POINTS)


def valid_polygon(points: object) -> bool:
    """A polygon in frame fractions that an owner could sign as a mask.

    >>> valid_polygon([[0, 0], [0.5, 0], [0.5, 1]]), valid_polygon([[0, 0], [2, 0], [0, 1]])
    (True, False)
    """
    return polygon_problem(points) is None
