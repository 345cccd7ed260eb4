"""Why something was refused, as the public log may say it: a code from a fixed list.

A refusal's text can name a doorbell ("signed for doorbell 'alice-back-garden', not
…") or carry whatever a client sent, so the public log never shows it: the relay
seals the text with the owner's other private fields and publishes only the code.

>>> public_code("wrong_device"), public_code("alice's front door")
('wrong_device', 'other')
"""

from __future__ import annotations

from typing import Literal, get_args

RefusalCode = Literal[
    "bad_signature",  # not signed by the owner's key, or not a signed envelope
    "wrong_kind",  # an approval where a deletion was signed, or the reverse
    "malformed",  # signed, but not a valid decision
    "wrong_device",  # signed for another doorbell
    "expired",  # the signature's time is over
    "replay",  # this signed decision was used before
    "rollback",  # a mask update not newer than the one the doorbell holds
    "stale",  # a mask update built on another set than the one the doorbell holds
    "wrong_request",  # signed for another request
    "wrong_requester",  # signed for another requester's key
    "wrong_clips",  # other clips than the ask listed or the owner approved
    "no_such_clip",  # the clip is not (or no longer) on the doorbell
    "not_pending",  # the ask was already answered or has expired
    "not_found",  # no such ask, or no such doorbell, for this owner
    "policy",  # the relay's policy refuses it
    "other",
]
REFUSAL_CODES: frozenset[str] = frozenset(get_args(RefusalCode))


def public_code(code: object) -> str:
    """``code`` if it is on the list, else ``"other"``: free text never reaches the log."""
    return code if isinstance(code, str) and code in REFUSAL_CODES else "other"
