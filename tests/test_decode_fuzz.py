"""``protocol.decode`` and the ingest handler can only accept or refuse: never crash.

Property-based (hypothesis): arbitrary bytes, arbitrary JSON, and valid messages with
one field mutated.  Whatever comes in, ``decode`` returns a message or raises
``ProtocolError``; the worker's handler returns a message or a reason.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_protocol import clip

from protocol import (
    MAX_PAYLOAD_BYTES,
    Event,
    Message,
    ProtocolError,
    Status,
    decode,
    encode,
    new_id,
    utcnow,
)
from protocol.messages import MODELS
from relay.plausible import Plausibility

TOPICS = [f"doorbell/front-door/{s}" for s in MODELS] + ["doorbell/x/event", "nope", ""]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids),
    max_leaves=20,
)


def valid_payload() -> dict:
    return json.loads(encode(clip())[1])


def _decodes_or_refuses(topic: str, payload: bytes) -> Message | None:
    try:
        return decode(topic, payload)
    except ProtocolError as err:
        assert err.reason
        return None


@settings(max_examples=200, deadline=None)
@given(topic=st.sampled_from(TOPICS), payload=st.binary(max_size=2048))
def test_random_bytes_are_decoded_or_refused(topic, payload):
    _decodes_or_refuses(topic, payload)


@settings(max_examples=200, deadline=None)
@given(topic=st.sampled_from(TOPICS), value=json_values)
def test_random_json_is_decoded_or_refused(topic, value):
    _decodes_or_refuses(topic, json.dumps(value).encode())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(valid_payload())), value=json_values)
def test_a_valid_clip_with_one_field_changed_is_decoded_or_refused(field, value):
    data = valid_payload()
    data[field] = value
    _decodes_or_refuses("doorbell/front-door/clip", json.dumps(data).encode())


@settings(max_examples=200, deadline=None)
@given(depth=st.integers(1, 20_000), opener=st.sampled_from([b"[", b'{"a":']))
def test_any_nesting_is_decoded_or_refused(depth, opener):
    closer = b"]" if opener == b"[" else b"}"
    _decodes_or_refuses("doorbell/front-door/event", opener * depth + b"1" + closer * depth)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[" * 10_000 + b"]" * 10_000, "too_deep"),
        (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "too_deep"),
        (b'{"v":1,"n":' + b"9" * 5000 + b"}", "number_too_long"),
        (b'{"v":1,"n":1e' + b"9" * 5000 + b"}", "number_too_long"),
        (b'{"v":1,"n":NaN}', "not_json"),
        (b'{"v":1,"n":-Infinity}', "not_json"),
        (b"\xff\xfe\x00{", "not_json"),
        (b'{"v":1,"s":"\xed\xa0\x80"}', "not_json"),  # a UTF-8 encoded surrogate
        (b'{"v":1.0}', "unknown_version"),
        (b'{"v":true}', "unknown_version"),
        (b" " * (MAX_PAYLOAD_BYTES + 1), "oversized"),
    ],
)
def test_the_nasty_cases_are_refused_with_their_reason(payload, reason):
    with pytest.raises(ProtocolError) as err:
        decode("doorbell/front-door/event", payload)
    assert err.value.reason == reason


def test_brackets_and_digits_inside_strings_do_not_count():
    msg = Status(
        id=new_id(), ts=utcnow(), device="front-door", state="online", firmware="[[[[[[[[[[" * 6
    )
    assert decode(*encode(msg)) == msg
    msg2 = Status(id=new_id(), ts=utcnow(), device="front-door", state="online", firmware="9" * 64)
    assert decode(*encode(msg2)) == msg2


def test_a_valid_message_padded_to_exactly_the_limit_is_accepted():
    topic, payload = encode(clip())
    padded = payload[:-1] + b" " * (MAX_PAYLOAD_BYTES - len(payload)) + b"}"
    assert len(padded) == MAX_PAYLOAD_BYTES
    assert decode(topic, padded) == decode(topic, payload)


# ------------------------------------------------------------ plausibility

NOW = utcnow()
check = Plausibility(clock=NOW.timestamp)


def _refused(msg: Message) -> str:
    with pytest.raises(ProtocolError) as err:
        check(msg)
    return err.value.reason


def test_times_around_the_relays_clock_are_plausible():
    check(clip(ts=NOW, start=NOW - timedelta(seconds=12), end=NOW, trigger_at=NOW))
    check(Event(id=new_id(), ts=NOW, device="front-door", type="ring", at=NOW))
    week_ago = NOW - timedelta(days=7)
    check(Event(id=new_id(), ts=week_ago, device="front-door", type="ring", at=week_ago))


@pytest.mark.parametrize(
    "when",
    [
        datetime(1, 1, 1, 0, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
        NOW + timedelta(hours=1),
        NOW - timedelta(days=60),
    ],
)
def test_far_dates_are_implausible(when):
    start = when - timedelta(seconds=12)
    assert _refused(clip(ts=NOW, start=start, end=when, trigger_at=start)) == "implausible_time"
    if when > NOW:  # an old ts alone is a late delivery; a future one is a lie
        assert _refused(clip(ts=when)) == "implausible_time"
    ev = Event(id=new_id(), ts=NOW, device="front-door", type="ring", at=when)
    assert _refused(ev) == "implausible_time"


def test_a_status_from_the_future_is_implausible_but_an_old_last_will_is_not():
    future = Status(
        id=new_id(),
        ts=datetime(9999, 12, 31, tzinfo=UTC),
        device="front-door",
        state="online",
        firmware="1",
    )
    assert _refused(future) == "implausible_time"
    old_will = Status(
        id=new_id(),
        ts=NOW - timedelta(days=90),
        device="front-door",
        state="offline",
        firmware="1",
    )
    check(old_will)


def test_a_clip_that_ends_before_it_starts_or_lies_about_its_length_is_implausible():
    assert _refused(clip(ts=NOW, start=NOW, end=NOW - timedelta(seconds=5))) == "implausible_time"
    lying = clip(ts=NOW, start=NOW - timedelta(seconds=12), end=NOW, duration_s=600.0)
    assert _refused(lying) == "implausible_time"
    preroll = clip(ts=NOW, start=NOW - timedelta(seconds=12), end=NOW, preroll_s=300.0)
    assert _refused(preroll) == "implausible_time"


# ------------------------------------------------------------ the ingest handler


@pytest.fixture(scope="module")
def real_redis(tmp_path_factory):
    import redis

    from testing.localstack import LocalRedis

    server = LocalRedis(tmp_path_factory.mktemp("redis")).start()
    yield redis.Redis.from_url(server.url)
    server.stop()


class _Delivery:
    """What paho hands ``on_message``: a topic, a payload, a packet id."""

    def __init__(self, mid: int, topic: str, payload: bytes) -> None:
        self.mid, self.qos, self.topic, self.payload = mid, 1, topic, payload


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    deliveries=st.lists(
        st.tuples(
            st.sampled_from(TOPICS),
            st.one_of(
                st.binary(max_size=512),
                json_values.map(lambda v: json.dumps(v).encode()),
                st.builds(
                    lambda f, v: json.dumps({**valid_payload(), f: v}).encode(),
                    st.sampled_from(sorted(valid_payload())),
                    json_values,
                ),
            ),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_the_ingest_handler_indexes_or_dead_letters_every_delivery(real_redis, deliveries):
    """Each delivery is either indexed or dead-lettered, and every one is acknowledged."""
    from common.mqtt import BrokerSettings
    from relay.index import RelayIndex
    from relay.ingest import IngestWorker

    worker = IngestWorker(BrokerSettings(port=1), RelayIndex(real_redis), "fuzz")
    acked: list[int] = []
    worker.client.ack = lambda mid, qos: acked.append(mid)  # type: ignore[method-assign]
    worker.client.publish = lambda *a, **k: None  # type: ignore[method-assign]
    dead_before = real_redis.xlen("deadletter")
    for mid, (topic, payload) in enumerate(deliveries, 1):
        worker._on_message(worker.client, None, _Delivery(mid, topic, payload))  # type: ignore[arg-type]
    assert worker.flush()
    assert sorted(acked) == list(range(1, len(deliveries) + 1))
    s = worker.stats
    assert s["indexed"] + s["duplicates"] + s["dead_letters"] == len(deliveries)
    assert real_redis.xlen("deadletter") - dead_before == s["dead_letters"]
