"""The wire contract: round trips, refusals with reasons, schemas kept in step."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from protocol import (
    MAX_PAYLOAD_BYTES,
    Clip,
    Event,
    ProtocolError,
    Status,
    decode,
    encode,
    new_id,
    utcnow,
)
from protocol.schema import DEFAULT_OUT, schemas
from protocol.topics import parse_topic, relay_filters, topic_for
from relay.broker import production_config

ROOT = Path(__file__).parent.parent


def clip(**kw):
    now = utcnow()
    fields = dict(
        id=new_id(),
        ts=now,
        device="front-door",
        clip_id="20261127T101010-abc123",
        trigger="ring",
        start=now - timedelta(seconds=12),
        end=now,
        trigger_at=now - timedelta(seconds=7),
        duration_s=12.0,
        preroll_s=5.0,
        size=123456,
        codec="h264",
        width=1280,
        height=720,
        fps=15.0,
        sha256="ab" * 32,
    )
    fields.update(kw)
    return Clip(**fields)


@pytest.mark.parametrize(
    "msg",
    [
        clip(),
        Event(id=new_id(), ts=utcnow(), device="front-door", type="ring", at=utcnow()),
        Status(id=new_id(), ts=utcnow(), device="front-door", state="online", firmware="0.1.0"),
    ],
)
def test_round_trip(msg):
    topic, payload = encode(msg)
    assert topic == f"doorbell/front-door/{msg.kind}"
    assert decode(topic, payload) == msg
    assert json.loads(payload)["v"] == 1


def test_times_are_utc():
    local = datetime(2026, 1, 1, 12, 0, tzinfo=UTC).astimezone()
    msg = Event(id=new_id(), ts=local, device="front-door", type="ring", at=local)
    assert msg.ts.tzinfo == UTC
    with pytest.raises(ValueError):
        Event(id=new_id(), ts=datetime(2026, 1, 1), device="front-door", type="ring", at=utcnow())


def _payload(**changes):
    topic, payload = encode(clip())
    data = json.loads(payload)
    data.update(changes)
    return topic, json.dumps(data).encode()


@pytest.mark.parametrize(
    "topic_payload, reason",
    [
        (_payload(extra_field=1), "invalid"),
        (_payload(size="12"), "invalid"),
        (_payload(sha256="not-hex"), "invalid"),
        (_payload(v=2), "unknown_version"),
        (_payload(v=None), "unknown_version"),
        (_payload(device="back-door"), "device_mismatch"),
        (("doorbell/front-door/clip", b"{not json"), "not_json"),
        (("doorbell/front-door/clip", b"[1, 2]"), "not_an_object"),
        (("doorbell/front-door/clip", b"\xff\xfe"), "not_json"),
        (("doorbell/front-door/clip", b" " * (MAX_PAYLOAD_BYTES + 1)), "oversized"),
        (("doorbell/front-door/nonsense", encode(clip())[1]), "wrong_topic"),
        (("elsewhere/front-door/clip", encode(clip())[1]), "wrong_topic"),
        (("doorbell/Front Door/clip", encode(clip())[1]), "wrong_topic"),
    ],
)
def test_bad_payloads_are_refused_with_a_reason(topic_payload, reason):
    with pytest.raises(ProtocolError) as err:
        decode(*topic_payload)
    assert err.value.reason == reason


def test_topics():
    assert parse_topic("doorbell/front-door/cmd/release") == ("front-door", "cmd/release")
    assert topic_for("front-door", "clip") == "doorbell/front-door/clip"
    assert all(f.startswith("$share/relay/doorbell/+/") for f in relay_filters())


def test_exported_schemas_are_up_to_date():
    expected = schemas()
    on_disk = {p.name: p.read_text() for p in DEFAULT_OUT.glob("*.schema.json")}
    assert on_disk == expected, "run: .venv/bin/python -m protocol.schema"


def test_deployed_mosquitto_conf_is_the_rendered_one():
    conf = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    assert conf == production_config(), "run: .venv/bin/python -m relay.broker > deploy/..."
    assert "allow_anonymous false" in conf and "use_identity_as_username true" in conf


def test_deployed_acl_is_rendered_from_the_topic_table(monkeypatch):
    import protocol.topics
    import relay.broker

    acl = (ROOT / "deploy" / "mosquitto" / "acl").read_text()
    assert acl == relay.broker.render_acl(), "run: .venv/bin/python -m relay.broker --acl > ..."
    for what in protocol.topics.DEVICE_TO_RELAY:
        assert f"pattern write doorbell/%u/{what}\n" in acl
        assert f"topic read doorbell/+/{what}\n" in acl
    # A topic added to the contract changes the ACL, so the file above goes stale.
    monkeypatch.setattr(
        relay.broker, "DEVICE_TO_RELAY", (*protocol.topics.DEVICE_TO_RELAY, "refused")
    )
    assert "pattern write doorbell/%u/refused" in relay.broker.render_acl()
    assert relay.broker.render_acl() != acl
