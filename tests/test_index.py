"""The Redis index, on fakeredis (its Lua runs the same script)."""

from datetime import timedelta

import fakeredis
import pytest
from test_protocol import clip

from protocol import Deleted, Event, Status, new_id, utcnow
from relay import keyspace as ks
from relay.index import DeviceExists, Near, RelayIndex


@pytest.fixture
def index():
    return RelayIndex(fakeredis.FakeRedis())


def test_indexing_is_idempotent_on_message_id(index):
    index.add_device("front-door", "alice", 51.5, -0.12)
    c = clip()
    assert index.index([c]) == [True]
    assert index.index([c, c]) == [False, False]
    d = index.device("front-door")
    assert d["clips"] == 1
    assert d["stats"] == {"clips_indexed": 1, "duplicates": 2}


def test_every_key_of_a_message_is_in_its_device_slot(index):
    from relay.index import _script_args

    for msg in (
        clip(),
        Event(id=new_id(), ts=utcnow(), device="front-door", type="ring", at=utcnow()),
    ):
        keys, _ = _script_args(msg)
        assert all("{front-door}" in k for k in keys if k)


def test_query_by_device_time_and_area(index):
    index.add_device("front-door", "alice", 51.5000, -0.1200)
    index.add_device("next-door", "bob", 51.5005, -0.1200)  # ~55 m north
    index.add_device("far-away", "carol", 51.6000, -0.1200)  # ~11 km
    now = utcnow()
    for dev in ("front-door", "next-door", "far-away"):
        for h in (1, 5, 30):
            start = now - timedelta(hours=h)
            index.index(
                [
                    clip(
                        device=dev,
                        clip_id=f"{dev}-{h}",
                        start=start,
                        end=start + timedelta(seconds=20),
                    )
                ]
            )
    six_hours = (now - timedelta(hours=6)).timestamp()
    near = index.clips(since=six_hours, near=Near(51.5, -0.12, 250))
    assert sorted(c["clip_id"] for c in near) == [
        "front-door-1",
        "front-door-5",
        "next-door-1",
        "next-door-5",
    ]
    assert [c["clip_id"] for c in index.clips(device="far-away")] == [
        "far-away-30",
        "far-away-5",
        "far-away-1",
    ]
    assert index.counts() == {"devices": 3, "clips": 9, "dead_letters": 0}


def test_status_keeps_the_newest(index):
    index.add_device("front-door", "alice", 51.5, -0.12)
    now = utcnow()
    newer = Status(id=new_id(), ts=now, device="front-door", state="offline", firmware="1")
    older = Status(
        id=new_id(),
        ts=now - timedelta(seconds=5),
        device="front-door",
        state="online",
        firmware="1",
    )
    index.index([newer, older])
    assert index.device("front-door")["online"] == "0"


def test_deleted_forgets_the_clip(index):
    index.add_device("front-door", "alice", 51.5, -0.12)
    c = clip()
    index.index([c])
    index.index(
        [
            Deleted(
                id=new_id(), ts=utcnow(), device="front-door", clip_id=c.clip_id, reason="retention"
            )
        ]
    )
    assert index.clips(device="front-door") == []
    assert not index.r.exists(ks.device_clip("front-door", c.clip_id))


def test_dead_letters_are_kept_with_reason(index):
    index.dead_letter("doorbell/x/clip", b"\x00garbage", "not_json", "bad", "w1")
    (row,) = index.dead_letters()
    assert row["reason"] == "not_json" and row["topic"] == "doorbell/x/clip"
    assert index.counts()["dead_letters"] == 1


def test_devices_register_once(index):
    index.add_device("front-door", "alice", 51.5, -0.12)
    with pytest.raises(DeviceExists):
        index.add_device("front-door", "mallory", 0, 0)
    index.revoke_device("front-door")
    assert index.device("front-door")["revoked"] != "0"


def test_a_server_that_lost_its_scripts_is_reloaded(index):
    index.add_device("front-door", "alice", 51.5, -0.12)
    assert index.index([clip()]) == [True]
    index.r.script_flush()  # as after a Redis restart
    assert index.index([clip()]) == [True]
