"""A refusal, release or deletion stays on the doorbell until seen in the public log.

These are the doorbell's word on the public record: a refusal is the owner's evidence
that the relay sent something the owner did not sign, a release says a clip left the
house for a requester, a deletion that clips are gone.  A dishonest relay could ack
one and never log it, so an ack is not enough: the relay's ack names the log entry
(index, leaf hash), the outbox keeps the message in ``awaiting_proof``, and
:class:`LogProofs` fetches an inclusion proof of that entry for the head the witness
accepted (``/v1/log/proof/inclusion?index=…&size=…``) and checks that the entry is
exactly the one that records the message: its kind (``doorbell_refused``,
``release``, ``deletion``), its clip, request and digest, and that its sealed part
is the doorbell's own (its id, a deletion's reason, a refusal's text), by recomputing
the commitment with the salt the ack gave for that entry
(:func:`protocol.transparency.check_logged`).  Only then does the row go.

A message not proven within ``bound_s`` of being put raises the witness alarm (the
owner's ``log_alarm``, kind ``refusal_unlogged``, ``release_unlogged`` or
``deletion_unlogged``) and goes back to the outbox to be sent again.  Everything is
in the outbox's SQLite file, so a restart loses nothing.  The alarm is raised once
per kind while messages of that kind are overdue; once none is (the late ones were
proven), the next overdue message of that kind raises it again, whether or not the
owner cleared the first.

Example::

    proofs = LogProofs(outbox, witness, relay_key, clock=time.time)
    proofs.poll()   # from the witness's thread, e.g. after each accepted head
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from firmware.outbox import Outbox
from firmware.witness import LogWitness
from protocol.messages import CommandRefused, Deleted, ProtocolError, Released, decode
from protocol.transparency import Head, check_logged

log = logging.getLogger(__name__)

REFUSED_KEPT = 100
"""How many reasons for refused proofs are kept for the status page."""

ALARMS = {"refused": "refusal", "released": "release", "deleted": "deletion"}
"""A proven message's kind -> the word in its alarm kind (``<word>_unlogged``)."""


class LogProofs:
    """Checks acked refusals, releases and deletions against the public log."""

    def __init__(
        self,
        outbox: Outbox,
        witness: LogWitness,
        relay_key: bytes,
        bound_s: float = 6 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        outbox.prove = True  # acked messages now wait for their proof
        self.witness = witness
        self.relay_key = relay_key
        self.bound_s = bound_s
        self.clock = clock
        # Why proofs were refused (for the status page): the latest only, since a relay
        # that serves bad proofs forever must not grow the doorbell's memory.
        self.refused: deque[str] = deque(maxlen=REFUSED_KEPT)
        self._alarmed: set[str] = set()

    def poll(self) -> int:
        """Check what can be checked now; return how many messages were proven."""
        now = self.clock()
        head = self.witness.head
        proven = 0
        for msg_id, topic, payload, index, leaf, created, salt in self.outbox.awaiting():
            if (
                head is not None
                and index < head.size
                and self._check(topic, payload, index, leaf, salt, head)
            ):
                self.outbox.proven(msg_id)
                proven += 1
                continue
            if now - created > self.bound_s:
                self.outbox.unproven(msg_id)  # sent again; the relay may log it yet
        overdue = {
            kind: oldest
            for kind, oldest in self.outbox.oldest_unproven().items()
            if now - oldest > self.bound_s
        }
        # A kind with nothing overdue any more is re-armed: a message hidden later is a
        # new hiding and must raise its own alarm (the owner may have cleared the last).
        self._alarmed &= {f"{ALARMS.get(kind, kind)}_unlogged" for kind in overdue}
        for kind, oldest in sorted(overdue.items()):
            self._alarm(kind, oldest)
        return proven

    def _check(
        self, topic: str, payload: bytes, index: int, leaf: str, salt: str | None, head: Head
    ) -> bool:
        try:
            msg = decode(topic, payload)
        except ProtocolError:
            return False
        if not isinstance(msg, CommandRefused | Released | Deleted):
            return False
        url = f"{self.witness.relay_url}/v1/log/proof/inclusion?index={index}&size={head.size}"
        # Whatever the relay answers (or raises: a proof nested too deep to parse is a
        # RecursionError) is at worst no proof: one message's answer must not stop the
        # others being proven, nor the alarm below being raised.
        try:
            proof = self.witness.fetch(url)
        except Exception as err:
            log.info("no inclusion proof for %s %s yet: %r", msg.kind, msg.id, err)
            return False
        if not isinstance(proof, dict):
            return False
        try:
            ok, why = check_logged(proof, self.relay_key, head, index, leaf, msg, salt)
        except Exception as err:
            ok, why = False, f"the proof cannot be checked: {err!r}"[:300]
        if not ok:
            log.error("the relay's proof for %s %s is refused: %s", msg.kind, msg.id, why)
            self.refused.append(why)
        return ok

    def _alarm(self, kind: str, oldest: float) -> None:
        word = ALARMS.get(kind, kind)
        alarm = f"{word}_unlogged"
        if alarm in self._alarmed or (self.witness.alarm or {}).get("kind") == alarm:
            return  # raised once while this kind is overdue (re-armed in poll)
        self._alarmed.add(alarm)
        self.witness._raise_alarm(
            f"a {word} put at {oldest:.0f} is not proven in the public log after "
            f"{self.bound_s:.0f} s: the relay may be hiding it",
            kind=alarm,
        )
