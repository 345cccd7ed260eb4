"""A fixed corpus of 10,000 poisonous payloads against a real worker, Mosquitto and Redis.

Each was once able to kill or fool a worker (issue 10): deep nesting, huge numbers,
NaN, bad UTF-8, 64 KiB + 1, wrong types, unknown fields, another device's id, dates
in year 1 or 9999, a known message id with different content.  The worker must stay
up, dead-letter each with its reason, acknowledge it, and index none of them.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from stack import wait_for
from test_mqtt_relay import _publish_all
from test_protocol import clip

from protocol import MAX_PAYLOAD_BYTES, Event, encode, new_id, utcnow

CORPUS_SIZE = 10_000
TOPIC = "doorbell/test-bell/clip"


def _named_cases() -> list[tuple[bytes, str]]:
    """(payload, the reason it must be dead-lettered with)."""
    valid = json.loads(encode(clip(device="test-bell"))[1])

    def variant(**kw: object) -> bytes:
        return json.dumps({**valid, "id": new_id(), **kw}).encode()

    far = [datetime(1, 1, 1, 0, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)]
    cases = [
        (b"[" * 10_000 + b"]" * 10_000, "too_deep"),
        (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "too_deep"),
        (variant()[:-1] + b', "n": ' + b"9" * 5000 + b"}", "number_too_long"),
        (variant()[:-1] + b', "n": 1e' + b"9" * 400 + b"}", "number_too_long"),
        (variant()[:-1] + b', "n": NaN}', "not_json"),
        (variant()[:-1] + b', "n": -Infinity}', "not_json"),
        (b"\xff\xfe" + variant(), "not_json"),
        (variant(firmware="x")[:-1] + b', "s": "\xc3\x28"}', "not_json"),
        (b'{"v": [1]}', "unknown_version"),
        (b'{"v": {"a": 1}}', "unknown_version"),
        (b"{" + b" " * MAX_PAYLOAD_BYTES + b"}", "oversized"),  # 64 KiB + 2
        (variant()[:-1] + b" " * (MAX_PAYLOAD_BYTES - len(variant())) + b" }", "oversized"),
        (variant(size="big"), "invalid"),
        (variant(duration_s=[1, 2]), "invalid"),
        (variant(width=True), "invalid"),
        (variant(unexpected=1), "invalid"),
        (variant(device="someone-else"), "device_mismatch"),
        (b"[]", "not_an_object"),
        (b"12", "not_an_object"),
    ]
    for when in far:
        start = (when - timedelta(seconds=12)).isoformat()
        cases.append(
            (variant(start=start, end=when.isoformat(), trigger_at=start), "implausible_time")
        )
    now = utcnow()
    cases.append(
        (
            variant(start=now.isoformat(), end=(now - timedelta(seconds=9)).isoformat()),
            "implausible_time",
        )
    )
    return cases


def test_ten_thousand_poisonous_payloads_are_dead_lettered_and_the_worker_lives(stack):
    stack.add_device("test-bell")
    proc = stack.worker_process("poison")
    stack.wait_workers("poison")
    device = stack.client("test-bell")

    # Known good messages first: the index has them, and one is then resent altered.
    first = clip(device="test-bell", clip_id="first-clip")
    _publish_all(device, [encode(first)])
    wait_for(lambda: stack.index.device("test-bell")["clips"] == 1, 20, "the first clip")
    altered = json.loads(encode(first)[1]) | {"size": first.size + 1}

    named = _named_cases()
    named.append((json.dumps(altered).encode(), "conflict"))
    rng = random.Random(10)
    corpus = [(TOPIC, p) for p, _ in named] * 10
    while len(corpus) < CORPUS_SIZE:
        corpus.append((TOPIC, rng.randbytes(rng.randint(0, 300))))
    rng.shuffle(corpus)
    expected = Counter(reason for _, reason in named * 10)

    # The same message id resent with the same content is a duplicate, not a conflict;
    # a valid 64 KiB payload (exactly the limit) is indexed.
    topic, payload = encode(clip(device="test-bell", clip_id="exactly-64k"))
    exactly = payload[:-1] + b" " * (MAX_PAYLOAD_BYTES - len(payload)) + b"}"
    good = [encode(first), (topic, exactly)]
    _publish_all(device, corpus + good)

    wait_for(
        lambda: stack.index.counts()["dead_letters"] == CORPUS_SIZE, 120, "10,000 dead letters"
    )
    wait_for(lambda: stack.index.device("test-bell")["clips"] == 2, 20, "the 64 KiB clip")
    assert proc.poll() is None, "the worker is alive"
    stats = {k.decode(): int(v) for k, v in stack.index.r.hgetall("stats").items()}
    for reason, n in expected.items():
        if reason in ("not_json", "not_an_object"):  # random bytes are refused this way too
            assert stats.get(f"dead_letters:{reason}", 0) >= n, reason
        else:
            assert stats.get(f"dead_letters:{reason}", 0) == n, (reason, stats)
    assert stats["dead_letters"] == CORPUS_SIZE
    d = stack.index.device("test-bell")
    assert d["clips"] == 2
    assert d["stats"]["clips_indexed"] == 2
    assert d["stats"].get("events_indexed", 0) == 0
    assert float(d["last_seen"]) <= utcnow().timestamp() + 1

    # And it goes on: an event sent after the corpus is indexed.
    ring = Event(id=new_id(), ts=utcnow(), device="test-bell", type="ring", at=utcnow())
    _publish_all(device, [encode(ring)])
    wait_for(
        lambda: stack.index.device("test-bell")["stats"].get("events_indexed") == 1,
        20,
        "an event after the poison",
    )
    assert proc.poll() is None
    device.loop_stop()
