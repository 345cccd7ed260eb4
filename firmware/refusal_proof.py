"""A refusal stays on the doorbell until the doorbell has seen it in the public log.

When the doorbell refuses a command the relay sent (a forged approval, a replay, a
stale mask set), the refusal is the owner's evidence that the relay sent something
the owner did not sign.  A dishonest relay could ack it and never log it, so an ack
is not enough: the relay's ack names the log entry (index, leaf hash), the outbox
keeps the refusal in ``awaiting_proof``, and :class:`RefusalProofs` fetches an
inclusion proof of that entry for the head the witness accepted
(``/v1/log/proof/inclusion?index=…&size=…``) and checks that the entry is a
``doorbell_refused`` naming the refusal's digest
(:func:`protocol.transparency.check_logged`).  Only then does the row go.

A refusal not proven within ``bound_s`` of being put raises the witness alarm (the
owner's ``log_alarm``, kind ``refusal_unlogged``) and goes back to the outbox to be
sent again.  Everything is in the outbox's SQLite file, so a restart loses nothing.

Example::

    proofs = RefusalProofs(outbox, witness, relay_key, clock=time.time)
    proofs.poll()   # from the witness's thread, e.g. after each accepted head
"""

from __future__ import annotations

import http.client
import logging
import time
from collections.abc import Callable

from firmware.outbox import Outbox
from firmware.witness import LogWitness
from protocol.messages import CommandRefused, ProtocolError, decode
from protocol.transparency import Head, check_logged, refusal_digest

log = logging.getLogger(__name__)


class RefusalProofs:
    """Checks acked refusals against the public log; see the module doc."""

    def __init__(
        self,
        outbox: Outbox,
        witness: LogWitness,
        relay_key: bytes,
        bound_s: float = 6 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        outbox.prove_refusals = True  # acked refusals now wait for their proof
        self.witness = witness
        self.relay_key = relay_key
        self.bound_s = bound_s
        self.clock = clock
        self.refused: list[str] = []  # why proofs were refused (for the status page)
        self._alarmed = False

    def poll(self) -> int:
        """Check what can be checked now; return how many refusals were proven."""
        now = self.clock()
        head = self.witness.head
        proven = 0
        for msg_id, topic, payload, index, leaf, created in self.outbox.awaiting():
            if (
                head is not None
                and index < head.size
                and self._check(topic, payload, index, leaf, head)
            ):
                self.outbox.proven(msg_id)
                proven += 1
                continue
            if now - created > self.bound_s:
                self.outbox.unproven(msg_id)  # sent again; the relay may log it yet
        oldest = self.outbox.oldest_refusal()
        if oldest is not None and now - oldest > self.bound_s:
            self._alarm(oldest)
        return proven

    def _check(self, topic: str, payload: bytes, index: int, leaf: str, head: Head) -> bool:
        try:
            msg = decode(topic, payload)
        except ProtocolError:
            return False
        if not isinstance(msg, CommandRefused):
            return False
        url = f"{self.witness.relay_url}/v1/log/proof/inclusion?index={index}&size={head.size}"
        try:
            proof = self.witness.fetch(url)
        except (OSError, ValueError, http.client.HTTPException) as err:
            log.info("no inclusion proof for refusal %s yet: %s", msg.id, err)
            return False
        if not isinstance(proof, dict):
            return False
        ok, why = check_logged(proof, self.relay_key, head, index, leaf, refusal_digest(msg))
        if not ok:
            log.error("the relay's proof for refusal %s is refused: %s", msg.id, why)
            self.refused.append(why)
        return ok

    def _alarm(self, oldest: float) -> None:
        if self._alarmed or (self.witness.alarm or {}).get("kind") == "refusal_unlogged":
            return  # raised once; the flag stays up until the owner clears it
        self._alarmed = True
        self.witness._raise_alarm(
            f"a refusal put at {oldest:.0f} is not proven in the public log after "
            f"{self.bound_s:.0f} s: the relay may be hiding it",
            kind="refusal_unlogged",
        )
