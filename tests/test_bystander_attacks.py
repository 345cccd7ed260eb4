"""Attacks on bystanders' requests (issue 17 review): a stalker reading the public log
and the status endpoint, a spammer rotating addresses or racing a challenge, and
malformed input.  Real Redis (and the real API where the attack is on HTTP)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest
import redis
from test_bystander import shape
from test_protocol import clip

from footage import cli as footage
from protocol import Deleted, new_id, utcnow
from protocol import bystander as bys
from protocol.crypto import OwnerKeys, b64, encrypt_bytes, new_clip_key, wrap_key
from protocol.decisions import Deletion, sign_decision
from protocol.transparency import check_meaning
from relay.api import create_app
from relay.audit import AuditLog
from relay.config import BystanderConfig
from relay.consent import BadWork, ConsentEngine, RateLimited
from relay.index import RelayIndex
from relay.report import build_report
from testing.clock import ManualClock as Clock
from testing.localstack import bound_socket, serve_in_thread

DAY = 86400.0
HOME = (51.5, -0.12)
NOWHERE = (48.85, 2.35)  # no doorbell within kilometres


def world(r: redis.Redis, **cfg: int) -> tuple[ConsentEngine, Clock]:
    """A fresh relay state: Alice's doorbell at HOME with one clip a few minutes ago."""
    r.flushdb()
    clock = Clock(time.time())
    engine = ConsentEngine(
        RelayIndex(r),
        AuditLog(r, OwnerKeys.generate().sign_private),
        clock=clock,
        bystander=BystanderConfig(difficulty=4, **cfg),
    )
    alice = OwnerKeys.generate()
    engine.add_owner("alice", alice.sign_public, alice.box_public)
    engine.index.add_device("alice-door", "alice", *HOME)
    end = datetime.fromtimestamp(clock.now - 300, UTC)
    start = datetime.fromtimestamp(clock.now - 312, UTC)
    engine.index.index([clip(device="alice-door", clip_id="clip-1", start=start, end=end)])
    engine.alice_keys = alice  # type: ignore[attr-defined]  # for tests that sign
    return engine, clock


def request_body(engine: ConsentEngine, where: tuple[float, float], kind: str = "erase") -> dict:
    ch = engine.bystander_challenge("198.51.100.9")
    now = engine.clock()
    return {
        "lat": where[0],
        "lon": where[1],
        "radius_m": 50.0,
        "start": now - 1800,
        "end": now - 60,
        "kind": kind,
        "description": "red coat, small white dog",
        "challenge": ch["challenge"],
        "nonce": bys.solve(ch["challenge"], ch["difficulty"]),
    }


@pytest.fixture
def r(stack):
    client = redis.Redis.from_url(stack.redis.url)
    yield client
    client.close()


# ------------------------------------------------------------------ the stalker


def test_log_after_a_request_is_the_same_whether_a_home_was_asked_or_not(r):
    """Reminders and expiries used to be logged per ask: only a request that reached a
    home got them (23 and 30 days later), one per home, with the request's deadline."""

    def story(where: tuple[float, float]) -> tuple[int, list[tuple[int, str, object]]]:
        engine, clock = world(r)
        t0 = clock.now
        seen = len(engine.audit.entries())
        filed = engine.file_bystander("198.51.100.9", request_body(engine, where))
        asked = r.llen(f"request_asks:{filed['id']}")
        # What a watcher sees: on which day (the sweep runs every day), what kind of
        # entry, what shape (the log's own times are real time, not the injected clock).
        seen_on: list[tuple[int, str, object]] = []
        for day in range(0, 32):
            clock.now = t0 + day * DAY
            engine.expire_due()
            entries = engine.audit.entries()
            seen_on += [(day, e["kind"], shape(e["data"])) for e in entries[seen:]]
            seen = len(entries)
        assert check_meaning(engine.audit.entries()) == []
        return asked, seen_on

    asked_home, at_home = story(HOME)
    asked_none, nowhere = story(NOWHERE)
    assert (asked_home, asked_none) == (1, 0)
    kinds = [k for _, k, _ in nowhere]
    assert kinds == ["bystander_request", "bystander_reminder", "bystander_expired"]
    # Ids and deadlines differ in value, never in shape or in time.
    assert at_home == nowhere


def test_the_report_counts_requests_past_their_deadline_not_homes(r):
    engine, clock = world(r)
    t0 = clock.now
    engine.file_bystander("198.51.100.9", request_body(engine, HOME))
    engine.file_bystander("198.51.100.9", request_body(engine, NOWHERE))
    clock.now = t0 + 31 * DAY
    engine.expire_due()
    report = build_report(engine.audit.entries(), 0, clock.now + 1, engine.policy())
    assert report["bystander"]["expired"] == 2 and report["bystander"]["reminders"] == 2


class Counting:
    """A Redis client that notes which commands it was asked to run."""

    def __init__(self, real: redis.Redis) -> None:
        self.real, self.calls = real, []

    def __getattr__(self, name: str):
        attr = getattr(self.real, name)
        if not callable(attr):
            return attr

        def call(*a, **kw):
            self.calls.append(name)
            return attr(*a, **kw)

        return call


def test_the_status_does_the_same_work_whether_a_home_was_asked_or_not(r):
    """A bystander polling their status must not time how many asks are pending."""

    def work(where: tuple[float, float]) -> list[str]:
        engine, _clock = world(r)
        filed = engine.file_bystander("198.51.100.9", request_body(engine, where))
        spy = Counting(engine.r)
        engine.r = spy
        status = engine.bystander_status(filed["id"], filed["status_token"])
        assert status["answers"] == []
        return spy.calls

    assert work(HOME) == work(NOWHERE)


def test_matching_does_not_hold_up_the_next_answer_on_the_same_connection(r, tmp_path):
    """Fan-out runs after the 202 is sent; a client that keeps the connection open and
    asks its status at once must not wait for matching (its time would say how many
    homes were asked)."""
    engine, _clock = world(r)
    gate = threading.Event()
    real = engine.fan_out

    def held(request_id: str) -> None:
        gate.wait(30)
        real(request_id)

    engine.fan_out = held  # type: ignore[method-assign]
    api = Api(engine, "127.0.0.1", tmp_path)
    try:
        with httpx.Client(timeout=5) as http:  # one keep-alive connection
            filed = http.post(f"{api.url}/v1/bystander/requests", json=request_body(engine, HOME))
            assert filed.status_code == 202
            status = http.get(
                f"{api.url}/v1/bystander/requests/{filed.json()['id']}",
                headers={"Authorization": f"Bearer {filed.json()['status_token']}"},
            )
            assert status.status_code == 200
            assert r.zscore("fanout_pending", filed.json()["id"]) is not None, "still held"
    finally:
        gate.set()
        api.close()


def test_an_agencys_status_does_the_same_work_whether_a_home_was_asked_or_not(r):
    """The same timing channel on the agencies' side (found while here): the status of
    a request used to read every ask it made, answered or not."""

    def work(where: tuple[float, float]) -> list[str]:
        engine, clock = world(r)
        police = OwnerKeys.generate()
        engine.add_requester("police", "agency", police.box_public)
        now = clock.now
        filed = engine.file_request(
            "police", *where, 50.0, now - 1800, now - 60, "burglary", "C-1", "consent"
        )
        assert filed["status"] == "accepted"
        spy = Counting(engine.r)
        engine.r = spy
        assert engine.released(filed["id"]) == []
        return spy.calls

    assert work(HOME) == work(NOWHERE)


# ------------------------------------------------------------------ the hostile owner


def test_an_erasure_is_told_as_done_only_once_the_doorbell_deleted(r):
    """The owner's erase answer is recorded when the relay checks the signed Deletions;
    the doorbell may be offline or never delete.  The bystander must not be told "2 clips
    erased" on the owner's word: ``erased`` counts what the doorbell confirmed."""
    engine, _clock = world(r)
    filed = engine.file_bystander("198.51.100.9", request_body(engine, HOME))
    (ask_id,) = [a.decode() for a in r.lrange(f"request_asks:{filed['id']}", 0, -1)]
    deletion = sign_decision(
        Deletion.create("alice-door", "clip-1", None), engine.alice_keys.sign_private
    )
    engine.bystander_erase("alice", ask_id, {"clip-1": deletion})

    def told() -> dict:
        (answer,) = engine.bystander_status(filed["id"], filed["status_token"])["answers"]
        return answer

    assert told()["outcome"] == "erase"
    assert (told()["clips"], told()["erased"]) == (1, 0), "ordered, not yet done"
    gone = Deleted(id=new_id(), ts=utcnow(), device="alice-door", clip_id="clip-1", reason="owner")
    engine.index.index([gone])  # the doorbell's word, as an ingest worker indexes it
    assert (told()["clips"], told()["erased"]) == (1, 1)


class Blob:
    """A hostile relay's blob store: serves ``data`` at one URL."""

    def __init__(self, data: bytes) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/blob"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def released_item(data: bytes, me: OwnerKeys, clip_id: str) -> tuple[dict, Blob]:
    key = new_clip_key()
    blob = encrypt_bytes(data, key)
    server = Blob(blob)
    item = {
        "clip_id": clip_id,
        "wrapped_key": b64(wrap_key(key, me.box_public)),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "download_url": server.url,
    }
    return item, server


@pytest.mark.parametrize("clip_id", ["./../../escaped", "../escaped", "/tmp/escaped"])
def test_a_hostile_relay_cannot_make_the_client_write_outside_its_folder(tmp_path, clip_id):
    """The status names each clip; the client makes file names of it.  A relay (anyone
    who serves the status) can seal any key to the bystander's public key, so the
    sha256 and the key check pass: only the name stops it."""
    me = OwnerKeys.generate()
    out = tmp_path / "a" / "b" / "out"
    out.mkdir(parents=True)
    item, server = released_item(b"\x00\x00\x00\x18ftypisom" + bytes(100), me, clip_id)
    try:
        with pytest.raises(footage.Failure, match="not a clip id"):
            footage.download(item, me.box_private, out)
    finally:
        server.close()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == []
    assert not list(__import__("pathlib").Path("/tmp").glob("escaped*"))


def test_a_copy_that_is_not_an_mp4_is_not_kept_as_one(tmp_path):
    """A hostile owner's doorbell can encrypt anything to the bystander's key; the client
    keeps a copy only if it is an MP4 (an ISO BMFF file starting with ``ftyp``)."""
    me = OwnerKeys.generate()
    item, server = released_item(b"#!/bin/sh\necho not footage\n", me, "clip-0001")
    try:
        with pytest.raises(footage.Failure, match="not an MP4"):
            footage.download(item, me.box_private, tmp_path)
    finally:
        server.close()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    # An MP4's first box is kept as before.
    mp4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(64)
    item, server = released_item(mp4, me, "clip-0002")
    try:
        path = footage.download(item, me.box_private, tmp_path)
    finally:
        server.close()
    assert path.name == "copy-clip-0002.mp4" and path.read_bytes() == mp4


def test_the_owner_and_the_relay_keep_nothing_of_the_bystander_but_what_they_gave(r):
    """The client address is counted (in keys that expire with the rate window) and kept
    nowhere else: not in the request, not in the owner's ask, not in the log."""
    engine, _clock = world(r)
    addr = "198.51.100.77"
    ch = engine.bystander_challenge(addr)
    body = {
        **request_body(engine, HOME),
        "challenge": ch["challenge"],
        "nonce": bys.solve(ch["challenge"], ch["difficulty"]),
    }
    engine.file_bystander(addr, body)
    (ask,) = engine.asks_for("alice")
    assert addr not in json.dumps(ask.__dict__)
    for key in r.scan_iter(count=1000):
        name = key.decode()
        if addr in name:
            assert name.startswith("bystander:rate:") and 0 < r.ttl(key) <= 2 * 3600
            continue
        kind = r.type(key).decode()
        dump = {
            "string": lambda k: r.get(k),
            "hash": lambda k: r.hgetall(k),
            "list": lambda k: r.lrange(k, 0, -1),
            "set": lambda k: r.smembers(k),
            "zset": lambda k: r.zrange(k, 0, -1),
            "stream": lambda k: r.xrange(k),
        }[kind](key)
        assert addr.encode() not in repr(dump).encode(), name


# ------------------------------------------------------------------ the spammer


def test_an_ipv6_client_cannot_rotate_through_its_64(r):
    engine, _clock = world(r, requests_per_window=3)
    for i in range(3):
        engine.count_bystander(f"2001:db8:aa:bb::{i + 1:x}")
    with pytest.raises(RateLimited):
        engine.count_bystander("2001:db8:aa:bb:ffff:1:2:3")
    # Another /64 is another source; IPv4 addresses stay whole.
    engine.count_bystander("2001:db8:aa:bc::1")
    for i in range(3):
        engine.count_bystander(f"198.51.100.{i + 1}")
    engine.count_bystander("198.51.100.200")


def test_a_challenge_is_used_once_across_relay_processes(stack):
    """Two API processes (each its own Redis connection) race one solved challenge."""
    r1, r2 = (redis.Redis.from_url(stack.redis.url) for _ in range(2))
    engine, clock = world(r1, requests_per_window=100)
    other = ConsentEngine(RelayIndex(r2), engine.audit, clock=clock, bystander=engine.bystander)
    body = request_body(engine, NOWHERE)
    results: list[str] = []
    go = threading.Barrier(8)

    def attempt(e: ConsentEngine) -> None:
        go.wait()
        try:
            e.file_bystander("198.51.100.9", dict(body))
            results.append("accepted")
        except BadWork:
            results.append("refused")

    threads = [threading.Thread(target=attempt, args=(e,)) for e in [engine, other] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["accepted"] + ["refused"] * 7


class Api:
    """The real API on uvicorn, trusting X-Forwarded-For only from ``trusted``."""

    def __init__(self, engine: ConsentEngine, trusted: str, tmp) -> None:
        from relay.blobs import LocalBlobStore

        sock = bound_socket()
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        app = create_app(engine, LocalBlobStore(tmp / "blobs", engine.r, self.url), lambda *a: None)
        self.server = serve_in_thread(app, sock, forwarded_allow_ips=trusted)

    def close(self) -> None:
        self.server.should_exit = True


def test_many_addresses_cannot_flood_one_owner(r):
    """Valid requests from many addresses (each within its own limit) for the place of
    one home: the owner is asked at most ``asks_per_owner_per_day`` times a day; the
    requests beyond that look exactly the same to the requester and on the record."""
    engine, clock = world(r, asks_per_owner_per_day=3)
    answers = [
        engine.file_bystander(f"198.51.100.{i}", request_body(engine, HOME)) for i in range(6)
    ]
    assert {shape(a) == shape(answers[0]) for a in answers} == {True}
    assert len(engine.asks_for("alice")) == 3
    entries = [e for e in engine.audit.entries() if e["kind"] == "bystander_request"]
    assert len(entries) == 6 and {e["data"]["asks_size"] for e in entries} == {64}
    assert int(r.hget("bystander:refused", "owner_capped")) == 3
    t0 = clock.now
    clock.now += DAY  # a new day, a new allowance (for the same passage, yesterday)
    engine.file_bystander(
        "198.51.100.9", {**request_body(engine, HOME), "start": t0 - 1800, "end": t0 - 60}
    )
    assert len(engine.asks_for("alice")) == 4


@pytest.mark.parametrize("trusted", ["127.0.0.1", "10.0.0.1"])
def test_a_made_up_forwarded_for_does_not_reset_the_limit(r, tmp_path, trusted):
    """Behind the operator's proxy (trusted) the client's own header is only the left hop;
    talking to uvicorn directly (untrusted) the header is ignored."""
    engine, _clock = world(r, challenges_per_window=3)
    api = Api(engine, trusted, tmp_path)
    try:
        codes = []
        for i in range(6):
            # The proxy appends the address it saw; the client made up the rest.
            hop = f"203.0.113.{i}, 198.51.100.7" if trusted == "127.0.0.1" else f"203.0.113.{i}"
            resp = httpx.get(f"{api.url}/v1/bystander/challenge", headers={"X-Forwarded-For": hop})
            codes.append(resp.status_code)
        assert codes == [200, 200, 200, 429, 429, 429]
    finally:
        api.close()


def test_an_ipv6_client_behind_the_proxy_is_limited_by_its_64(r, tmp_path):
    engine, _clock = world(r, challenges_per_window=3)
    api = Api(engine, "127.0.0.1", tmp_path)
    try:
        codes = [
            httpx.get(
                f"{api.url}/v1/bystander/challenge",
                headers={"X-Forwarded-For": f"2001:db8:5:6:{i:x}::{i + 1:x}"},
            ).status_code
            for i in range(5)
        ]
        assert codes == [200, 200, 200, 429, 429]
    finally:
        api.close()


# ------------------------------------------------------------------ bad input


def test_malformed_bystander_input_gets_one_clear_4xx(r, tmp_path):
    engine, _clock = world(r, requests_per_window=1000, challenges_per_window=1000)
    api = Api(engine, "127.0.0.1", tmp_path)
    url = f"{api.url}/v1/bystander/requests"
    good = request_body(engine, NOWHERE)
    del good["challenge"], good["nonce"]
    cases: list[object] = [
        None,
        [],
        "x",
        {},
        {**good, "lat": "51.5"},
        {**good, "lat": 1e400},
        {**good, "lat": 91},
        {**good, "radius_m": -1},
        {**good, "radius_m": 10_000},
        {**good, "start": good["end"] + 1},
        {**good, "end": time.time() + 3600},
        {**good, "kind": "stalk"},
        {**good, "description": ""},
        {**good, "description": " \t"},
        {**good, "description": "x" * 1001},
        {**good, "description": "me\u202egod eht"},  # bidi override
        {**good, "description": "me\x00\x1b[2J"},  # control characters
        {**good, "description": "\u200b\u200b"},  # zero-width only
        {**good, "kind": "copy"},  # no key
        {**good, "kind": "copy", "box_public": "!!"},
        {**good, "kind": "copy", "box_public": b64(b"short")},
        {**good, "kind": "stop_filming"},  # no polygon
        {**good, "kind": "stop_filming", "polygon": [[0, 0], [2, 0], [0, 1]]},
        {**good, "kind": "stop_filming", "polygon": [[0, 0]] * 17},
        {**good, "kind": "stop_filming", "polygon": [[0, 0, 0], [1, 0], [0, 1]]},
        {**good, "polygon": [[0, 0], [1, 0], [0, 1]]},  # a polygon with erase
        {**good, "extra": 1},
        {**good, "challenge": "x" * 65, "nonce": "1"},
        {**good, "challenge": "nope", "nonce": "1"},
        {**good, "challenge": "nope", "nonce": "x" * 65},
        {**good, "challenge": 5, "nonce": 5},
    ]
    try:
        with httpx.Client() as http:
            for case in cases:
                # A fresh solved challenge under each case, so that the case is what fails.
                full = isinstance(case, dict) and case
                body = {**request_body(engine, NOWHERE), **case} if full else case
                # json.dumps writes 1e400 as Infinity: what a careless client sends.
                hdr = {"Content-Type": "application/json"}
                resp = http.post(url, content=json.dumps(body), headers=hdr)
                assert resp.status_code in (400, 403, 422), (case, resp.status_code, resp.text)
                assert set(resp.json()) == {"error", "reason"}, resp.text
            for path, hdr in [
                ("/v1/bystander/requests/x", {}),
                ("/v1/bystander/requests/x", {"Authorization": "Bearer nope"}),
                ("/v1/bystander/requests/" + "x" * 5000, {"Authorization": "Bearer a"}),
                ("/v1/bystander/requests/%00%ff", {"Authorization": "Bearer a b"}),
            ]:
                resp = http.get(api.url + path, headers=hdr)
                assert resp.status_code in (401, 404), (path, resp.status_code, resp.text)
        assert r.zcard("fanout_pending") == 0, "no malformed request reached matching"
    finally:
        api.close()
