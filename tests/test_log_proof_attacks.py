"""A dishonest relay operator against the doorbell's log proofs (firmware/log_proof.py).

The relay here is the attacker, so it is played by a small log the test writes byte by
byte: entries exactly as the real relay would write them (``relay.ingest.log_entry``
sealed by ``relay.audit.seal``), or tampered ones, in an RFC 9162 tree whose heads are
signed with the relay's key.  The doorbell's side is real: its SQLite outbox, its
witness (which must accept the head) and :class:`LogProofs`.  Time is injected.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from firmware.log_proof import ALARMS, LogProofs
from firmware.outbox import Outbox
from firmware.witness import LogWitness
from protocol import CommandRefused, Deleted, Message, Released, encode, new_id, utcnow
from protocol.crypto import b64, canonical, sign_payload
from protocol.merkle import consistency_proof, inclusion_proof, leaf_hash, root
from protocol.messages import Ack, ProtocolError, decode
from relay.audit import public_key, seal
from relay.ingest import log_entry
from testing.clock import ManualClock as Clock

DEVICE = "front-door"
KEY = b"k" * 32
BOUND = 600.0
T0 = 1_000_000.0
LAST = "(the salt of the last entry sealed)"


class ForgedLog:
    """The operator's log: any bytes it likes, in a real tree under the real key."""

    def __init__(self) -> None:
        self.entries: list[bytes] = []
        self.serve: Callable[[dict[str, Any]], Any] = lambda p: p
        self.salt: str | None = None  # the salt of the last entry sealed, told in acks

    def honest(self, msg: Message) -> dict[str, Any]:
        """The public entry the real relay writes for ``msg`` (before its index)."""
        kind, data = log_entry(msg)  # type: ignore[arg-type]
        return self.sealed(kind, msg.device, data)

    def sealed(self, kind: str, actor: str, data: dict[str, Any]) -> dict[str, Any]:
        """Any entry sealed as the real relay seals: its salt is kept for the ack."""
        public, opening = seal(kind, actor, data)
        self.salt = opening["salt"]
        return public

    def add(self, raw: bytes) -> tuple[int, str]:
        self.entries.append(raw)
        return len(self.entries) - 1, leaf_hash(raw).hex()

    def add_entry(self, public: dict[str, Any]) -> tuple[int, str]:
        return self.add(canonical({"index": len(self.entries), "at": int(T0), **public}))

    def head(self) -> dict[str, str]:
        leaves = [leaf_hash(e) for e in self.entries]
        return sign_payload({"size": len(leaves), "root": b64(root(leaves)), "at": int(T0)}, KEY)

    def proof(self, index: int, size: int) -> dict[str, Any]:
        leaves = [leaf_hash(e) for e in self.entries[:size]]
        return {
            "entry": b64(self.entries[index]),
            "index": index,
            "tree_size": size,
            "path": [b64(p) for p in inclusion_proof(index, leaves)],
            "head": sign_payload({"size": size, "root": b64(root(leaves)), "at": int(T0)}, KEY),
            "relay_key": b64(public_key(KEY)),
        }

    def fetch(self, url: str) -> Any:
        q = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
        if "/proof/inclusion" in url:
            return self.serve(self.proof(int(q["index"][0]), int(q["size"][0])))
        first, second = int(q["first"][0]), int(q["second"][0])
        leaves = [leaf_hash(e) for e in self.entries[:second]]
        return {"path": [b64(p) for p in consistency_proof(first, leaves)]}


class Bell:
    def __init__(self, data: Path, log: ForgedLog, clock: Clock) -> None:
        self.events: list[Any] = []
        self.log = log
        self.outbox = Outbox(data / "outbox.sqlite")
        self.witness = LogWitness(
            data / "witness.json",
            "http://relay.invalid",
            public_key(KEY),
            self.events.append,
            fetch=lambda url: log.fetch(url),
            clock=clock,
        )
        self.proofs = LogProofs(self.outbox, self.witness, public_key(KEY), BOUND, clock)
        self.clock = clock

    def put_and_ack(
        self, msg: Message, logged: tuple[int, str] | None, salt: str | None = LAST
    ) -> None:
        """Put ``msg``, and ack it naming ``logged`` with ``salt`` (default: the salt of
        the last entry the log sealed)."""
        self.outbox.put(*encode(msg), msg.id, now=self.clock())
        salt = self.log.salt if salt == LAST else salt
        self.outbox.confirm([msg.id], {msg.id: (*logged, salt)} if logged else {})

    def see_head(self) -> None:
        self.witness.check(json.dumps(self.log.head()).encode())

    def kept(self) -> list[str]:
        ids = [r.msg_id for r in self.outbox.due(now=self.clock() + 100 * BOUND)]
        return ids + [r[0] for r in self.outbox.awaiting()]


def message(kind: str) -> Message:
    if kind == "released":
        return Released(
            id=new_id(),
            ts=utcnow(),
            device=DEVICE,
            request_id=new_id(),
            clip_id="clip-0001",
            wrapped_key="d3JhcHBlZA==",
            sha256="ab" * 32,
        )
    if kind == "deleted":
        return Deleted(id=new_id(), ts=utcnow(), device=DEVICE, clip_id="clip-0001", reason="owner")
    return CommandRefused(
        id=new_id(),
        ts=utcnow(),
        device=DEVICE,
        command_id=new_id(),
        command="release",
        clip_id="clip-0001",
        reason="the approval's signature is not the owner's",
        code="bad_signature",
    )


KINDS = ["released", "deleted", "refused"]


@pytest.fixture
def bell(tmp_path: Path):
    b = Bell(tmp_path / "bell", ForgedLog(), Clock(T0))
    yield b
    b.outbox.close()


@pytest.mark.parametrize("kind", KINDS)
def test_the_forged_log_written_honestly_is_accepted(bell: Bell, kind: str) -> None:
    """The baseline: the attacks below differ from this only by their tampering."""
    msg = message(kind)
    bell.put_and_ack(msg, bell.log.add_entry(bell.log.honest(msg)))
    bell.see_head()
    assert bell.proofs.poll() == 1, bell.proofs.refused
    assert bell.kept() == []


# Entries whose bytes say something else (to some reader) than the doorbell's message.


def _dup_clip(raw: bytes) -> bytes:
    # Python keeps the last "clip"; a reader that keeps the first sees another clip.
    return raw.replace(b'"data":{', b'"data":{"clip":"clip-9999",', 1)


def _dup_kind(raw: bytes) -> bytes:
    return b'{"kind":"operator_action",' + raw[1:]


def _unicode_escape(raw: bytes) -> bytes:
    return raw.replace(b'"clip-0001"', b'"\\u0063lip-0001"', 1)


def _key_order(raw: bytes) -> bytes:
    return json.dumps(json.loads(raw)).encode()  # same meaning, another encoding


def _public(change: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def tamper(raw: bytes) -> bytes:
        entry = json.loads(raw)
        change(entry)
        return canonical(entry)

    return tamper


def _actor_is_the_doorbell(e: dict[str, Any]) -> None:
    e["actor"] = DEVICE  # which doorbell: what the log seals


def _reason_in_public(e: dict[str, Any]) -> None:
    e["reason"] = "owner"  # a sealed field, beside "data"


def _retracted(e: dict[str, Any]) -> None:
    e["retracted"] = True  # "this release never happened", to anyone reading the log


def _index_lies(e: dict[str, Any]) -> None:
    e["index"] = 0 if e["index"] else 5


def _no_commitment(e: dict[str, Any]) -> None:
    del e["sealed"]  # nothing binds the sealed part: any reason can be "opened" later


def _sealed_in_clear(e: dict[str, Any]) -> None:
    e["sealed"] = f"device={DEVICE}; reason=owner"  # not a commitment: the opening itself


TAMPERS = {
    "duplicate clip key": _dup_clip,
    "duplicate kind key": _dup_kind,
    "unicode escape": _unicode_escape,
    "other key order and spacing": _key_order,
    "actor names the doorbell": _public(_actor_is_the_doorbell),
    "sealed field in public": _public(_reason_in_public),
    "extra top-level field": _public(_retracted),
    "index field lies": _public(_index_lies),
    "no sealed commitment": _public(_no_commitment),
    "sealed part in clear": _public(_sealed_in_clear),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_entry_bytes_that_say_more_or_otherwise_are_refused(
    bell: Bell, kind: str, tamper: str
) -> None:
    """The entry's ``kind`` and ``data`` parse to exactly the doorbell's, but its bytes
    are not the one canonical entry the relay writes: refused, kept, alarm past the bound."""
    bell.log.add_entry({"kind": "operator_action", "actor": "operator", "data": {}})
    msg = message(kind)
    honest = bell.log.honest(msg)
    raw = canonical({"index": 1, "at": int(T0), **honest})
    forged = TAMPERS[tamper](raw)
    assert forged != raw
    bell.put_and_ack(msg, bell.log.add(forged))
    bell.see_head()
    assert bell.proofs.poll() == 0
    assert bell.proofs.refused, "the forged entry is refused, with a reason"
    assert msg.id in bell.kept()
    bell.clock.t += 2 * BOUND
    bell.proofs.poll()
    assert bell.witness.alarm is not None
    assert bell.witness.alarm["kind"].endswith("_unlogged")
    assert msg.id in bell.kept()


# A relay that breaks the checker itself, rather than fooling it.


@pytest.mark.parametrize(
    "blow_up",
    [
        RecursionError("a proof nested a million deep"),
        RuntimeError("anything a fetch can raise"),
        KeyError("x"),
    ],
    ids=["recursion", "runtime", "keyerror"],
)
def test_a_proof_that_crashes_the_check_does_not_stop_the_others_or_the_alarm(
    bell: Bell, blow_up: Exception
) -> None:
    """The first awaiting message's proof raises; the second must still be proven and
    the first must still raise its alarm past the bound."""
    hidden, honest = message("deleted"), message("released")
    bell.put_and_ack(hidden, bell.log.add_entry(bell.log.honest(hidden)))
    bell.clock.t += 1
    bell.put_and_ack(honest, bell.log.add_entry(bell.log.honest(honest)))

    def serve(p: dict[str, Any]) -> Any:
        if p["index"] == 0:
            raise blow_up
        return p

    bell.log.serve = serve
    bell.see_head()
    assert bell.proofs.poll() == 1
    assert bell.kept() == [hidden.id]
    bell.clock.t += 2 * BOUND
    bell.proofs.poll()
    assert bell.witness.alarm is not None and bell.witness.alarm["kind"] == "deletion_unlogged"
    assert bell.kept() == [hidden.id]


def test_an_entry_nested_too_deep_to_parse_is_refused(bell: Bell) -> None:
    """The relay logs (and acks) an entry whose JSON Python cannot parse at all."""
    msg = message("deleted")
    bell.put_and_ack(msg, bell.log.add(b"[" * 200_000 + b"]" * 200_000))
    bell.see_head()
    assert bell.proofs.poll() == 0
    bell.clock.t += 2 * BOUND
    bell.proofs.poll()
    assert bell.witness.alarm is not None and bell.witness.alarm["kind"] == "deletion_unlogged"
    assert bell.kept() == [msg.id]


def test_a_relay_serving_bad_proofs_forever_does_not_grow_the_doorbell_memory(
    bell: Bell,
) -> None:
    msg = message("deleted")
    bell.put_and_ack(msg, bell.log.add_entry(bell.log.honest(msg)))
    bell.log.serve = lambda p: {**p, "index": p["index"] + 1}
    bell.see_head()
    for _ in range(2000):
        bell.proofs.poll()
    assert 0 < len(bell.proofs.refused) <= 100


def test_a_huge_proof_is_refused_quickly(bell: Bell) -> None:
    msg = message("deleted")
    bell.put_and_ack(msg, bell.log.add_entry(bell.log.honest(msg)))
    bell.log.serve = lambda p: {**p, "path": p["path"] + [b64(b"\0" * 32)] * 50_000}
    bell.see_head()
    start = time.monotonic()
    assert bell.proofs.poll() == 0
    assert time.monotonic() - start < 5.0  # a bound on work, not a sleep
    assert bell.kept() == [msg.id]


@pytest.mark.parametrize("kind", KINDS)
def test_one_entry_acked_for_two_messages_proves_at_most_one(bell: Bell, kind: str) -> None:
    first, second = message(kind), message(kind)
    logged = bell.log.add_entry(bell.log.honest(first))
    bell.put_and_ack(first, logged)
    bell.put_and_ack(second, logged)
    bell.see_head()
    assert bell.proofs.poll() == 1
    assert bell.kept() == [second.id]


@pytest.mark.parametrize("index", [-1, 1, 2**40])
def test_an_index_outside_the_head_proves_nothing(bell: Bell, index: int) -> None:
    msg = message("deleted")
    _i, leaf = bell.log.add_entry(bell.log.honest(msg))
    bell.outbox.put(*encode(msg), msg.id, now=bell.clock())
    bell.outbox.confirm([msg.id], {msg.id: (index, leaf, bell.log.salt)})
    bell.see_head()
    assert bell.proofs.poll() == 0
    assert bell.kept() == [msg.id]


def test_an_ack_before_the_head_that_holds_it_waits_then_proves(bell: Bell) -> None:
    bell.log.add_entry({"kind": "operator_action", "actor": "operator", "data": {}})
    bell.see_head()  # the witness's head: 1 entry
    msg = message("released")
    bell.put_and_ack(msg, bell.log.add_entry(bell.log.honest(msg)))  # entry 1, not in it
    assert bell.proofs.poll() == 0 and not bell.proofs.refused
    bell.see_head()
    assert bell.proofs.poll() == 1
    assert bell.kept() == []


# A relay that logs the right public entry but seals another private part: the report
# the operator opens would say another reason, or another doorbell, than the doorbell's.

OTHER_DEVICE = "back-door"


def _swapped_reason(msg: Message) -> tuple[str, str, dict[str, Any]]:
    kind, data = log_entry(msg)  # type: ignore[arg-type]
    if "reason" in data:
        data["reason"] = "retention"  # the owner asked for it: no, "it just expired"
    elif "why" in data:
        data["why"] = "the doorbell was offline"
    else:
        data["reason"] = "retention"  # a release has no sealed field: one smuggled in
    return kind, msg.device, data


def _swapped_actor(msg: Message) -> tuple[str, str, dict[str, Any]]:
    kind, data = log_entry(msg)  # type: ignore[arg-type]
    return kind, OTHER_DEVICE, data  # another doorbell (of another home) as the actor


SEAL_SWAPS = {"sealed reason swapped": _swapped_reason, "sealed actor swapped": _swapped_actor}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("swap", list(SEAL_SWAPS))
def test_a_right_public_entry_over_another_sealed_part_is_refused(
    bell: Bell, kind: str, swap: str
) -> None:
    """The public entry is exactly the doorbell's and the ack's salt is the real one of
    the commitment the relay wrote, but that commitment opens to another reason or
    another doorbell.  Refused, kept, alarm past the bound."""
    msg = message(kind)
    honest = bell.log.honest(msg)
    forged = bell.log.sealed(*SEAL_SWAPS[swap](msg))
    assert {**forged, "sealed": ""} == {**honest, "sealed": ""}, "only the sealed part differs"
    bell.put_and_ack(msg, bell.log.add_entry(forged))  # with the forged entry's own salt
    bell.see_head()
    assert bell.proofs.poll() == 0
    assert "sealed part" in bell.proofs.refused[-1]
    assert msg.id in bell.kept()
    bell.clock.t += 2 * BOUND
    bell.proofs.poll()
    assert bell.witness.alarm is not None
    assert bell.witness.alarm["kind"] == f"{ALARMS[kind]}_unlogged"
    assert msg.id in bell.kept()


@pytest.mark.parametrize("kind", KINDS)
def test_an_honest_entry_without_its_salt_is_refused(bell: Bell, kind: str) -> None:
    """No salt, no check of the sealed part: the doorbell does not take the relay's word."""
    msg = message(kind)
    bell.put_and_ack(msg, bell.log.add_entry(bell.log.honest(msg)), salt=None)
    bell.see_head()
    assert bell.proofs.poll() == 0
    assert "no salt" in bell.proofs.refused[-1]
    assert msg.id in bell.kept()


def test_an_ack_without_a_salt_does_not_decode() -> None:
    """On the wire the salt is required: an ack without one is no ack, so the message
    stays in the outbox to be sent again."""
    msg = message("deleted")
    salt = "A" * 22 + "=="
    entry = {"id": msg.id, "index": 0, "leaf": "ab" * 32, "salt": salt}
    ack = Ack(id=new_id(), ts=utcnow(), device=DEVICE, ids=[msg.id], logged=[entry])  # type: ignore[list-item]
    topic, payload = encode(ack)
    assert isinstance(salted := decode(topic, payload), Ack) and salted.logged[0].salt == salt
    wire = json.loads(payload)
    for bad in (None, "", "A" * 22, salt + "A"):
        if bad is None:
            del wire["logged"][0]["salt"]
        else:
            wire["logged"][0]["salt"] = bad
        with pytest.raises(ProtocolError):
            decode(topic, canonical(wire))


@pytest.mark.parametrize("kind", KINDS)
def test_the_salt_of_another_entry_opens_nothing(bell: Bell, kind: str) -> None:
    """Two honest entries of the same kind; each ack names its own entry but the other's
    salt (what a relay that mixed, or reused, salts would send).  Neither is proven."""
    first, second = message(kind), message(kind)
    if isinstance(second, Deleted | CommandRefused):
        second = second.model_copy(update={"reason": first.reason})  # same sealed part
    logged_first = bell.log.add_entry(bell.log.honest(first))
    salt_first = bell.log.salt
    logged_second = bell.log.add_entry(bell.log.honest(second))
    salt_second = bell.log.salt
    assert salt_first != salt_second
    bell.put_and_ack(first, logged_first, salt=salt_second)
    bell.put_and_ack(second, logged_second, salt=salt_first)
    bell.see_head()
    assert bell.proofs.poll() == 0
    assert sorted(bell.kept()) == sorted([first.id, second.id])


def alarms(bell: Bell, alarm: str) -> int:
    return sum(1 for e in bell.events if e.kind == "log_alarm" and e.data["kind"] == alarm)


@pytest.mark.parametrize("kind", KINDS)
def test_an_alarm_is_raised_again_for_a_later_hidden_message_of_its_kind(
    bell: Bell, kind: str
) -> None:
    """Hidden, alarmed, cleared by the owner, then proven late: the kind is re-armed,
    and the next message of that kind the relay hides raises the alarm again (before,
    nothing until a restart)."""
    alarm = f"{ALARMS[kind]}_unlogged"
    late = message(kind)
    logged = bell.log.add_entry(bell.log.honest(late))
    salt = bell.log.salt
    bell.put_and_ack(late, logged)
    bell.clock.t += 2 * BOUND
    bell.proofs.poll()  # no head seen yet: nothing can be proven
    assert alarms(bell, alarm) == 1
    bell.witness.state["alarm"] = None  # the owner clears the flag
    bell.proofs.poll()
    assert alarms(bell, alarm) == 1, "the same hiding raises once"
    # Sent again and acked again; now the relay publishes a head that holds it.
    bell.outbox.confirm([late.id], {late.id: (*logged, salt)})
    bell.see_head()
    assert bell.proofs.poll() == 1 and bell.kept() == []
    hidden = message(kind)
    bell.put_and_ack(hidden, None)  # acked, never logged
    bell.proofs.poll()
    assert alarms(bell, alarm) == 1, "not overdue yet"
    bell.clock.t += 2 * BOUND
    bell.proofs.poll()
    assert alarms(bell, alarm) == 2, "a new hiding of the same kind raises again"
    bell.proofs.poll()
    assert alarms(bell, alarm) == 2
