"""A doorbell's refusal, release or deletion stays until it is proven in the public log.

Real Mosquitto and Redis: the device publishes ``refused``, ``released`` or ``deleted``,
a real ingest worker with a real audit log acks it, the ack (with the entry's index and
leaf) drives a real outbox, and :class:`firmware.log_proof.LogProofs` checks an
inclusion proof against the head the doorbell's witness accepted.  The proof is fetched
in-process from the relay's :meth:`AuditLog.proof` (what ``/v1/log/proof/inclusion``
serves).
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import redis

from firmware.log_proof import LogProofs
from firmware.outbox import Outbox
from firmware.witness import LogWitness
from protocol import Ack, CommandRefused, Deleted, Message, Released, decode, encode, new_id, utcnow
from relay.audit import AuditLog
from relay.index import RelayIndex
from relay.ingest import IngestWorker
from testing.clock import ManualClock as Clock
from tests.stack import Stack, wait_for

DEVICE = "front-door"
BOUND = 600.0


class Bell:
    """The doorbell's side: outbox, witness and proof checker in ``data``."""

    def __init__(self, data: Path, audit: AuditLog, clock: Clock, forge: Any = None) -> None:
        self.events: list[Any] = []
        self.audit = audit
        self.forge = forge
        self.outbox = Outbox(data / "outbox.sqlite")
        self.witness = LogWitness(
            data / "witness.json",
            "http://relay.invalid",
            audit.public,
            self.events.append,
            fetch=self.fetch,
            clock=clock,
        )
        self.proofs = LogProofs(self.outbox, self.witness, audit.public, BOUND, clock)

    def fetch(self, url: str) -> Any:
        q = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
        if "/proof/inclusion" in url:
            proof = self.audit.proof(int(q["index"][0]), int(q["size"][0]))
            return self.forge(proof) if self.forge else proof
        return {"path": []}

    def see_head(self) -> None:
        self.witness.check(json.dumps(self.audit.head()).encode())

    def close(self) -> None:
        self.outbox.close()


@pytest.fixture
def relay(tmp_path: Path):
    stack = Stack(tmp_path / "stack")
    stack.add_device(DEVICE)
    audit = AuditLog(redis.Redis.from_url(stack.redis.url), b"k" * 32)
    stop = threading.Event()
    worker = IngestWorker(
        stack.relay_settings(), RelayIndex(redis.Redis.from_url(stack.redis.url)), "w", audit=audit
    )
    threading.Thread(target=worker.run, args=(stop,), daemon=True).start()
    wait_for(worker.connected.is_set, 10, "the worker to connect")
    acks: list[Ack] = []
    device = stack.client(DEVICE)
    device.on_message = lambda _c, _u, m: acks.append(decode(m.topic, m.payload))  # type: ignore[misc,arg-type]
    got = threading.Event()
    device.on_subscribe = lambda *a: got.set()
    device.subscribe(f"doorbell/{DEVICE}/cmd/ack", qos=1)
    wait_for(got.is_set, 10, "the SUBACK")
    yield stack, audit, device, acks, worker
    stop.set()
    device.loop_stop()
    stack.close()


def refuse(device: Any, bell: Bell, acks: list[Ack], clock: Clock) -> CommandRefused:
    """Put a refusal in the outbox, send it as the doorbell's link would, apply the ack."""
    msg = CommandRefused(
        id=new_id(),
        ts=utcnow(),
        device=DEVICE,
        command_id=new_id(),
        command="release",
        reason="the approval's signature is not the owner's",
        code="bad_signature",
    )
    bell.outbox.put(*encode(msg), msg.id, now=clock())
    send(device, bell, acks, msg)
    return msg


def send(device: Any, bell: Bell, acks: list[Ack], msg: Message) -> None:
    """Publish ``msg`` as the doorbell's link would, wait for the ack and apply it."""
    topic, payload = encode(msg)
    n = len(acks)
    for _ in range(3):  # the worker's subscription may not be in place yet
        device.publish(topic, payload, qos=1).wait_for_publish(10)
        try:
            wait_for(lambda: len(acks) > n, 10, "the relay's ack")
            break
        except AssertionError:
            continue
    ack = acks[-1]
    assert msg.id in ack.ids
    bell.outbox.confirm(ack.ids, {e.id: (e.index, e.leaf, e.salt) for e in ack.logged})


def test_honest_relay_refusal_proven_then_dropped(relay: Any, tmp_path: Path) -> None:
    _stack, audit, device, acks, _w = relay
    clock = Clock(1_000_000.0)
    bell = Bell(tmp_path / "bell", audit, clock)
    refuse(device, bell, acks, clock)
    assert acks[-1].logged, "the ack names the log entry"
    assert len(bell.outbox) == 0 and len(bell.outbox.awaiting()) == 1  # kept until proven
    assert bell.proofs.poll() == 0  # no head accepted yet: nothing to prove against
    bell.see_head()
    assert bell.proofs.poll() == 1
    assert bell.outbox.awaiting() == [] and bell.outbox.oldest_unproven() == {}
    clock.t += 10 * BOUND
    bell.proofs.poll()
    assert bell.witness.alarm is None and bell.events == []
    bell.close()


def test_relay_that_acks_without_logging_is_caught(
    relay: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stack, audit, device, acks, _w = relay
    clock = Clock(1_000_000.0)
    bell = Bell(tmp_path / "bell", audit, clock)
    # One honest entry first, so the dishonest relay has a real entry to point at.
    refuse(device, bell, acks, clock)
    bell.see_head()
    assert bell.proofs.poll() == 1
    monkeypatch.setattr(audit, "append", lambda *a, **k: 0)  # acks, never logs
    hidden = refuse(device, bell, acks, clock)
    bell.see_head()
    bell.proofs.poll()
    # Kept: in the outbox (no entry named) or awaiting a proof that cannot come.
    kept = [r.msg_id for r in bell.outbox.due(now=clock.t + 10 * BOUND)]
    kept += [r[0] for r in bell.outbox.awaiting()]
    assert hidden.id in kept
    assert bell.witness.alarm is None  # not before the bound
    clock.t += BOUND / 2
    bell.proofs.poll()
    assert bell.witness.alarm is None
    bell.close()
    # A restart loses nothing, and the alarm comes once the bound has passed.
    bell = Bell(tmp_path / "bell", audit, clock)
    clock.t += BOUND
    bell.proofs.poll()
    assert bell.witness.alarm is not None and bell.witness.alarm["kind"] == "refusal_unlogged"
    assert [e.kind for e in bell.events] == ["log_alarm"]
    assert hidden.id in [r.msg_id for r in bell.outbox.due(now=clock.t + 10 * BOUND)]
    bell.proofs.poll()
    assert len(bell.events) == 1  # raised once
    bell.close()


def test_proof_for_another_entry_is_refused(relay: Any, tmp_path: Path) -> None:
    _stack, audit, device, acks, _w = relay
    clock = Clock(1_000_000.0)
    other = Bell(tmp_path / "other", audit, clock)
    refuse(device, other, acks, clock)  # an earlier, real refusal: entry 0
    bell = Bell(tmp_path / "bell", audit, clock, forge=lambda p: audit.proof(0, p["tree_size"]))
    msg = refuse(device, bell, acks, clock)
    bell.see_head()
    assert bell.proofs.poll() == 0
    assert [r[0] for r in bell.outbox.awaiting()] == [msg.id]
    assert bell.proofs.refused and "another entry" in bell.proofs.refused[-1]
    clock.t += 2 * BOUND
    bell.proofs.poll()
    assert bell.witness.alarm is not None and bell.witness.alarm["kind"] == "refusal_unlogged"
    other.close()
    bell.close()


def test_ack_naming_no_entry_keeps_the_refusal_in_the_outbox(
    relay: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stack, audit, device, acks, _w = relay
    clock = Clock(1_000_000.0)
    bell = Bell(tmp_path / "bell", audit, clock)
    monkeypatch.setattr(audit, "append", lambda *a, **k: 0)  # an empty log: no entry 0
    msg = refuse(device, bell, acks, clock)
    assert acks[-1].logged == []
    assert [r.msg_id for r in bell.outbox.due(now=clock.t + 10 * BOUND)] == [msg.id]
    assert bell.outbox.awaiting() == []
    clock.t += 2 * BOUND
    bell.proofs.poll()
    assert bell.witness.alarm is not None and bell.witness.alarm["kind"] == "refusal_unlogged"
    bell.close()


def test_proof_for_another_head_than_the_witness_accepted_is_refused(
    relay: Any, tmp_path: Path
) -> None:
    _stack, audit, device, acks, _w = relay
    clock = Clock(1_000_000.0)
    # A valid proof, but against the head of the log as it stood when the entry was
    # added, not the head the witness accepted later: a fork could hide behind it.
    bell = Bell(tmp_path / "bell", audit, clock, forge=lambda p: audit.proof(p["index"], 1))
    refuse(device, bell, acks, clock)
    audit.append("operator_action", "operator", {"what": "later entry"})
    bell.see_head()
    assert bell.witness.head is not None and bell.witness.head.size == 2
    assert bell.proofs.poll() == 0
    assert "not for the head the witness accepted" in bell.proofs.refused[-1]
    assert len(bell.outbox.awaiting()) == 1
    bell.close()


# Releases and deletions: the same promise, with entries that must *mean* the message.

CLIP = "clip-0001"


def announce(device: Any, bell: Bell, acks: list[Ack], clock: Clock, kind: str) -> Message:
    """The doorbell released a clip or deleted one: put, send, apply the relay's ack."""
    msg: Message
    if kind == "released":
        msg = Released(
            id=new_id(),
            ts=utcnow(),
            device=DEVICE,
            request_id=new_id(),
            clip_id=CLIP,
            wrapped_key="d3JhcHBlZA==",
            sha256="ab" * 32,
        )
    else:
        msg = Deleted(id=new_id(), ts=utcnow(), device=DEVICE, clip_id=CLIP, reason="owner")
    bell.outbox.put(*encode(msg), msg.id, now=clock())
    send(device, bell, acks, msg)
    return msg


def kept(bell: Bell, clock: Clock) -> list[str]:
    """Ids still on the doorbell: in the outbox (to be sent) or awaiting a proof."""
    ids = [r.msg_id for r in bell.outbox.due(now=clock.t + 10 * BOUND)]
    return ids + [r[0] for r in bell.outbox.awaiting()]


ALARM = {"released": "release_unlogged", "deleted": "deletion_unlogged"}


@pytest.mark.parametrize("kind", ["released", "deleted"])
def test_honest_relay_release_or_deletion_proven_then_dropped(
    relay: Any, tmp_path: Path, kind: str
) -> None:
    _stack, audit, device, acks, _w = relay
    clock = Clock(1_000_000.0)
    bell = Bell(tmp_path / "bell", audit, clock)
    msg = announce(device, bell, acks, clock, kind)
    assert [e.id for e in acks[-1].logged] == [msg.id], "the ack names the log entry"
    assert len(bell.outbox) == 0 and [r[0] for r in bell.outbox.awaiting()] == [msg.id]
    assert bell.proofs.poll() == 0  # no head accepted yet
    bell.see_head()
    assert bell.proofs.poll() == 1, bell.proofs.refused
    assert kept(bell, clock) == [] and bell.outbox.oldest_unproven() == {}
    clock.t += 10 * BOUND
    bell.proofs.poll()
    assert bell.witness.alarm is None and bell.events == []
    bell.close()


@pytest.mark.parametrize("kind", ["released", "deleted"])
def test_relay_that_acks_without_logging_a_release_or_deletion_is_caught(
    relay: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    _stack, audit, device, acks, _w = relay
    clock = Clock(1_000_000.0)
    bell = Bell(tmp_path / "bell", audit, clock)
    # A real entry first, so the dishonest relay has one to point its ack at.
    announce(device, bell, acks, clock, kind)
    bell.see_head()
    assert bell.proofs.poll() == 1
    monkeypatch.setattr(audit, "append", lambda *a, **k: 0)  # acks, never logs
    hidden = announce(device, bell, acks, clock, kind)
    assert hidden.id in acks[-1].ids
    bell.see_head()
    bell.proofs.poll()
    assert hidden.id in kept(bell, clock)
    assert any("another" in why for why in bell.proofs.refused)  # entry 0 is not this one
    clock.t += BOUND / 2
    bell.proofs.poll()
    assert bell.witness.alarm is None  # not before the bound
    bell.close()
    # A restart loses nothing; past the bound the alarm is raised once and it is resent.
    bell = Bell(tmp_path / "bell", audit, clock)
    clock.t += BOUND
    bell.proofs.poll()
    assert bell.witness.alarm is not None and bell.witness.alarm["kind"] == ALARM[kind]
    assert [e.kind for e in bell.events] == ["log_alarm"]
    assert hidden.id in [r.msg_id for r in bell.outbox.due(now=clock.t + 10 * BOUND)]
    bell.proofs.poll()
    assert len(bell.events) == 1
    bell.close()


def _other_kind(kind: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return ("deletion" if kind == "release" else "release"), data


def _other_clip(kind: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return kind, {**data, "clip": "clip-9999"}


def _other_request(kind: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return kind, {**data, "request": "m-0000000000000000"}


def _other_digest(kind: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return kind, {**data, "msg": "00" * 32}


def _extra_field(kind: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return kind, {**data, "clips": ["clip-9999"]}


@pytest.mark.parametrize(
    ("kind", "tamper", "why"),
    [
        ("released", _other_kind, "not a 'release'"),
        ("deleted", _other_kind, "not a 'deletion'"),
        ("released", _other_clip, "other clip"),
        ("deleted", _other_clip, "other clip"),
        ("released", _other_request, "other request"),
        ("released", _other_digest, "another release"),
        ("deleted", _other_digest, "another deletion"),
        ("deleted", _extra_field, "other clips"),
    ],
)
def test_entry_at_the_claimed_index_that_means_something_else_is_refused(
    relay: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, tamper: Any, why: str
) -> None:
    """The relay logs *an* entry and acks it truthfully (index, leaf, a valid proof),
    but the entry says something else than the doorbell's message."""
    _stack, audit, device, acks, _w = relay
    clock = Clock(1_000_000.0)
    bell = Bell(tmp_path / "bell", audit, clock)
    append = audit.append

    def dishonest(k: str, actor: str, data: dict[str, Any], once: str | None = None) -> int:
        if k in ("release", "deletion"):
            k, data = tamper(k, data)
        return append(k, actor, data, once=once)

    monkeypatch.setattr(audit, "append", dishonest)
    msg = announce(device, bell, acks, clock, kind)
    assert [e.id for e in acks[-1].logged] == [msg.id]
    bell.see_head()
    assert bell.proofs.poll() == 0
    assert [r[0] for r in bell.outbox.awaiting()] == [msg.id]
    assert bell.proofs.refused and why in bell.proofs.refused[-1], bell.proofs.refused
    clock.t += 2 * BOUND
    bell.proofs.poll()
    assert bell.witness.alarm is not None and bell.witness.alarm["kind"] == ALARM[kind]
    assert msg.id in kept(bell, clock)
    bell.close()


@pytest.mark.parametrize("kind", ["released", "deleted"])
def test_release_or_deletion_proof_for_a_head_the_witness_never_accepted_is_refused(
    relay: Any, tmp_path: Path, kind: str
) -> None:
    _stack, audit, device, acks, _w = relay
    clock = Clock(1_000_000.0)
    # A genuine proof, but for the log as it stood when the entry was added: a head
    # the witness never accepted (a fork could hide behind it).
    bell = Bell(
        tmp_path / "bell", audit, clock, forge=lambda p: audit.proof(p["index"], p["index"] + 1)
    )
    msg = announce(device, bell, acks, clock, kind)
    audit.append("operator_action", "operator", {"what": "later entry"})
    bell.see_head()
    assert bell.witness.head is not None and bell.witness.head.size == 2
    assert bell.proofs.poll() == 0
    assert "not for the head the witness accepted" in bell.proofs.refused[-1]
    assert [r[0] for r in bell.outbox.awaiting()] == [msg.id]
    bell.close()


@pytest.mark.parametrize("kind", ["released", "deleted"])
def test_relay_that_logs_late_within_the_bound_raises_no_alarm(
    relay: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    _stack, audit, device, acks, _w = relay
    clock = Clock(1_000_000.0)
    bell = Bell(tmp_path / "bell", audit, clock)
    monkeypatch.setattr(audit, "append", lambda *a, **k: 0)  # a relay behind on its log
    msg = announce(device, bell, acks, clock, kind)
    assert acks[-1].logged == []  # acked, no entry named: it stays to be sent again
    assert [r.msg_id for r in bell.outbox.due(now=clock.t + 10 * BOUND)] == [msg.id]
    clock.t += BOUND / 2
    bell.proofs.poll()
    monkeypatch.undo()  # the relay catches up
    send(device, bell, acks, msg)  # the outbox's resend
    assert [e.id for e in acks[-1].logged] == [msg.id]
    bell.see_head()
    assert bell.proofs.poll() == 1, bell.proofs.refused
    assert kept(bell, clock) == []
    clock.t += 10 * BOUND
    bell.proofs.poll()
    assert bell.witness.alarm is None and bell.events == []
    bell.close()


def test_each_kind_left_unlogged_raises_its_own_alarm(
    relay: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stack, audit, device, acks, _w = relay
    clock = Clock(1_000_000.0)
    bell = Bell(tmp_path / "bell", audit, clock)
    monkeypatch.setattr(audit, "append", lambda *a, **k: 0)
    refuse(device, bell, acks, clock)
    announce(device, bell, acks, clock, "released")
    clock.t += 2 * BOUND
    bell.proofs.poll()
    alarms = sorted(e.data["kind"] for e in bell.events)
    assert alarms == ["refusal_unlogged", "release_unlogged"]
    bell.close()


@pytest.mark.parametrize(
    ("kind", "swap"),
    [("deleted", "reason"), ("deleted", "actor"), ("released", "actor"), ("released", "reason")],
)
def test_real_relay_sealing_another_reason_or_doorbell_is_refused(
    relay: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, swap: str
) -> None:
    """The real ingest worker and audit log, with the operator's append changed to seal
    another reason (``retention`` for the owner's ``owner``) or another doorbell: the
    public entry is exactly right and the ack's salt is that entry's real salt, but the
    commitment opens to something else than the doorbell's message."""
    _stack, audit, device, acks, _w = relay
    clock = Clock(1_000_000.0)
    bell = Bell(tmp_path / "bell", audit, clock)
    append = audit.append

    def dishonest(k: str, actor: str, data: dict[str, Any], once: str | None = None) -> int:
        if k in ("release", "deletion"):
            if swap == "actor":
                actor = "back-door"
            else:
                data = {**data, "reason": "retention"}
        return append(k, actor, data, once=once)

    monkeypatch.setattr(audit, "append", dishonest)
    msg = announce(device, bell, acks, clock, kind)
    (entry,) = acks[-1].logged
    assert entry.salt == audit.salt(entry.index), "the relay told the entry's real salt"
    bell.see_head()
    assert bell.proofs.poll() == 0
    assert "sealed part" in bell.proofs.refused[-1], bell.proofs.refused
    clock.t += 2 * BOUND
    bell.proofs.poll()
    assert bell.witness.alarm is not None and bell.witness.alarm["kind"] == ALARM[kind]
    assert msg.id in kept(bell, clock)
    bell.close()


@pytest.mark.parametrize("kind", ["released", "deleted"])
def test_real_relay_acks_each_entry_with_its_own_salt_and_the_doorbell_proves_it(
    relay: Any, tmp_path: Path, kind: str
) -> None:
    """Honest relay: the ack's salt opens the entry's commitment to this doorbell and
    its own reason; two messages, two salts; a redelivered message gets the same one."""
    _stack, audit, device, acks, _w = relay
    clock = Clock(1_000_000.0)
    bell = Bell(tmp_path / "bell", audit, clock)
    first = announce(device, bell, acks, clock, kind)
    (one,) = acks[-1].logged
    second = announce(device, bell, acks, clock, kind)
    (two,) = acks[-1].logged
    assert one.salt != two.salt
    bell.outbox.put(*encode(first), first.id, now=clock())
    send(device, bell, acks, first)  # sent twice: the relay logs once, same entry, same salt
    (again,) = acks[-1].logged
    assert again == one
    bell.see_head()
    assert bell.proofs.poll() == 2, bell.proofs.refused
    assert kept(bell, clock) == [] and second.id
    bell.close()
