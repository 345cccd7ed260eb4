"""The relay's consent engine on fakeredis: policy, asks, decisions, expiry, legal demands."""

import json
import time
from datetime import timedelta

import fakeredis
import pytest
from test_protocol import clip

from protocol import new_id, utcnow
from protocol.crypto import OwnerKeys, b64, new_clip_key
from protocol.decisions import approval_payload
from relay.audit import AuditLog
from relay.consent import ConsentEngine, NotFound, PolicyRefusal
from testing.clock import ManualClock as FakeClock


@pytest.fixture
def world():
    r = fakeredis.FakeRedis()
    from relay.index import RelayIndex

    clock = FakeClock(time.time() + 60)  # clips below start "now": a minute ago
    engine = ConsentEngine(
        RelayIndex(r), AuditLog(r, OwnerKeys.generate().sign_private), clock=clock
    )
    alice = OwnerKeys.generate()
    engine.add_owner("alice", alice.sign_public, alice.box_public)
    engine.index.add_device("front-door", "alice", 51.5, -0.12)
    now = utcnow()
    engine.index.index(
        [
            clip(
                device="front-door",
                clip_id=f"clip-{i}",
                start=now - timedelta(minutes=10 * i),
                end=now - timedelta(minutes=10 * i - 1),
            )
            for i in range(3)
        ]
    )
    police = OwnerKeys.generate()
    engine.add_requester("police", "agency", police.box_public)
    return engine, alice, police


def file(engine, **kw):
    now = engine.clock()
    args = dict(
        requester="police",
        lat=51.5001,
        lon=-0.12,
        radius_m=100,
        start=now - 3600,
        end=now,
        reason="burglary",
        case_ref="C-1",
        basis="consent",
    )
    args.update(kw)
    return engine.file_request(**args)


@pytest.mark.parametrize(
    "change, why",
    [
        ({"radius_m": 251}, "radius"),
        ({"start": time.time() - 7 * 3600}, "window"),
        ({"case_ref": " "}, "case reference"),
        ({"basis": "curiosity"}, "legal basis"),
        ({"case_ref": "\u200b"}, "case reference"),  # a zero-width space is not a reference
        ({"case_ref": "C-1\u202e"}, "case reference"),  # nor hides a right-to-left override
        ({"radius_m": 1e-300}, "radius"),
        ({"radius_m": 9.9}, "radius"),
        ({"radius_m": float("nan")}, "finite"),
        ({"end": 2.1e9, "start": 2.1e9 - 60}, "future"),  # 2036
        ({"start": 0.0, "end": 60.0}, "within the last"),  # 1970
        ({"basis": "legal-demand"}, "demand on file"),
        ({"basis": "legal-demand", "demand": "NO-SUCH"}, "demand on file"),
        ({"demand": "DOCKET-1"}, "only with basis legal-demand"),
    ],
)
def test_requests_outside_policy_are_refused_and_logged(world, change, why):
    engine, _, _ = world
    result = file(engine, **change)
    assert result["status"] == "refused" and why in result["reason"]
    assert engine.audit.entries()[-1]["kind"] == "request_refused"
    assert engine.r.zcard("owner_asks:alice") == 0


def test_rate_limit_per_requester_per_day(world):
    engine, _, _ = world
    results = [file(engine)["status"] for _ in range(6)]
    assert results == ["accepted"] * 5 + ["refused"]


def test_policy_changes_are_audited(world):
    engine, _, _ = world
    engine.set_policy("operator", max_radius_m=500)
    assert file(engine, radius_m=400)["status"] == "accepted"
    change = next(e for e in engine.audit.entries() if e["kind"] == "policy_change")
    assert change["data"]["after"]["max_radius_m"] == 500


def test_the_requester_learns_nothing_about_homes(world):
    engine, _, _ = world
    result = file(engine)
    assert set(result) == {"id", "status"}
    (ask,) = engine.asks_for("alice")
    assert ask.clip_ids == ["clip-0", "clip-1", "clip-2"]


def test_the_relay_checks_the_owner_signature_and_the_requester(world):
    engine, alice, police = world
    rid = file(engine)["id"]
    (ask,) = engine.asks_for("alice")

    def signed(keys, requester_key, clips=("clip-0",)):
        sealed = {c: new_clip_key() for c in clips}
        p = approval_payload(
            rid, "front-door", list(clips), requester_key, engine.clock() + 60, sealed
        )
        return b64(json.dumps(keys.sign(p)).encode())

    with pytest.raises(PolicyRefusal, match="signature"):
        engine.approve("alice", ask.id, signed(OwnerKeys.generate(), police.box_public))
    with pytest.raises(PolicyRefusal, match="another requester"):
        engine.approve("alice", ask.id, signed(alice, OwnerKeys.generate().box_public))
    with pytest.raises(PolicyRefusal, match="clips not asked for"):
        engine.approve("alice", ask.id, signed(alice, police.box_public, ["clip-9"]))
    with pytest.raises(NotFound):
        engine.approve("mallory", ask.id, signed(alice, police.box_public))
    ask2, payload = engine.approve("alice", ask.id, signed(alice, police.box_public))
    assert ask2.status == "approved" and payload["clip_ids"] == ["clip-0"]
    with pytest.raises(PolicyRefusal, match="approved"):  # a replay
        engine.approve("alice", ask.id, signed(alice, police.box_public))
    # Every refusal is on the record; in public, no owner is named.
    refused = [e for e in engine.audit.entries() if e["kind"] == "approval_refused"]
    assert [e["actor"] for e in refused] == ["alice", "alice", "alice", "mallory", "alice"]
    assert "signature" in refused[0]["data"]["why"] and "approved" in refused[-1]["data"]["why"]
    public = b"".join(engine.audit.public_entries(0, -1))
    assert b"alice" not in public and b"mallory" not in public


def test_unanswered_asks_expire_as_no(world):
    engine, alice, police = world
    rid = file(engine)["id"]
    (ask,) = engine.asks_for("alice")
    assert engine.ask(ask.id).status == "pending"
    engine.clock.now += 72 * 3600 - 1
    assert engine.ask(ask.id).status == "pending", "72 h are not over yet"
    engine.clock.now += 1
    assert engine.ask(ask.id).status == "expired"
    p = approval_payload(
        rid, "front-door", ["clip-0"], police.box_public, engine.clock() + 60, {"clip-0": b"k" * 32}
    )
    with pytest.raises(PolicyRefusal, match="expired"):
        engine.approve("alice", ask.id, b64(json.dumps(alice.sign(p)).encode()))
    assert engine.released(rid) == []
    assert "ask_expired" in [e["kind"] for e in engine.audit.entries()]


def test_denied_asks_release_nothing(world):
    engine, _, _ = world
    rid = file(engine)["id"]
    (ask,) = engine.asks_for("alice")
    engine.deny("alice", ask.id)
    assert engine.released(rid) == []
    with pytest.raises(PolicyRefusal, match="denied"):
        engine.deny("alice", ask.id)


def test_legal_demands_are_recorded_and_shown_to_owners(world):
    engine, _, _ = world
    engine.file_legal_demand("DOCKET-7", "District Court", "police")
    assert engine.audit.entries()[-1]["kind"] == "legal_demand"
    rid = file(engine, basis="legal-demand", demand="DOCKET-7")["id"]
    (ask,) = engine.asks_for("alice")
    assert ask.request_id == rid
    assert ask.legal_demands[0]["docket"] == "DOCKET-7"
    assert "metadata and ciphertext only" in ask.legal_demands[0]["note"]


def test_a_demand_on_file_serves_only_its_own_organisation(world):
    engine, _, _ = world
    engine.file_legal_demand("DOCKET-8", "District Court", "another-agency")
    result = file(engine, basis="legal-demand", demand="DOCKET-8")
    assert result["status"] == "refused" and "demand on file" in result["reason"]


def test_a_refusal_in_the_public_log_names_a_code_never_a_doorbell(world):
    """The refusal's text names doorbells ("signed for doorbell X, not Y"): it is sealed,
    and the public entry carries only a code from a fixed list."""
    from protocol.messages import CommandRefused
    from protocol.refusals import REFUSAL_CODES
    from relay.ingest import log_entry

    engine, alice, police = world
    rid = file(engine)["id"]
    (ask,) = engine.asks_for("alice")
    other = "alice-back-garden"  # another doorbell of hers, named in the forged approval
    key = {"clip-0": new_clip_key()}
    p = approval_payload(rid, other, ["clip-0"], police.box_public, time.time() + 60, key)
    with pytest.raises(PolicyRefusal, match="alice-back-garden"):
        engine.approve("alice", ask.id, b64(json.dumps(alice.sign(p)).encode()))
    p = approval_payload(rid, "front-door", ["clip-0"], police.box_public, time.time() - 1, key)
    with pytest.raises(PolicyRefusal, match="expired"):
        engine.approve("alice", ask.id, b64(json.dumps(alice.sign(p)).encode()))
    # A doorbell's own refusal, as the relay logs it.
    msg = CommandRefused(
        id=new_id(),
        ts=utcnow(),
        device="front-door",
        command_id=new_id(),
        command="release",
        reason=f"signed for doorbell {other!r}, not 'front-door'",
        code="wrong_device",
    )
    kind, data = log_entry(msg)
    engine.audit.append(kind, "front-door", data)
    public = [json.loads(e) for e in engine.audit.public_entries(0, -1)]
    refused = [e for e in public if e["kind"].endswith("_refused")]
    assert [e["data"]["code"] for e in refused] == ["wrong_device", "expired", "wrong_device"]
    assert all(e["data"]["code"] in REFUSAL_CODES for e in refused)
    raw = json.dumps(public)
    assert other not in raw and "front-door" not in raw and "why" not in raw
    # The operator still reads the reason.
    opened = [e for e in engine.audit.entries() if e["kind"] == "approval_refused"]
    assert other in opened[0]["data"]["why"]
