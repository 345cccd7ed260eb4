"""No oracle, limits that hold, credentials that end: the HTTP API on a real Redis.

A requester probing house by house must get the same answer whatever an area
holds; the public record must grow the same; twenty parallel requests must count
exactly the limit, shared by one organisation's accounts; a revoked token must
be refused on its next use.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
import redis
from stack import wait_for
from test_protocol import clip

from protocol import askset, utcnow
from protocol.crypto import OwnerKeys
from relay.api import create_app
from relay.audit import AuditLog
from relay.blobs import LocalBlobStore
from relay.consent import ConsentEngine
from relay.index import RelayIndex
from testing.localstack import LocalRedis, bound_socket, serve_in_thread

AREAS = {0: (10.0, 10.0), 1: (20.0, 20.0), 4: (30.0, 30.0)}
"""Doorbells in the area → its centre."""


class Api:
    def __init__(self, tmp) -> None:
        self.redis = LocalRedis(tmp / "redis").start()
        self.r = redis.Redis.from_url(self.redis.url)
        self.audit = AuditLog(self.r, OwnerKeys.generate().sign_private)
        self.engine = ConsentEngine(RelayIndex(self.r), self.audit)
        sock = bound_socket()
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.published: list = []
        app = create_app(
            self.engine,
            LocalBlobStore(tmp / "blobs", self.r, self.url),
            lambda t, p: self.published.append((t, p)),
        )
        self.server = serve_in_thread(app, sock)
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def close(self) -> None:
        self.server.should_exit = True
        self.redis.stop()

    def requester(self, name: str, org: str | None = None) -> dict[str, str]:
        token = self.engine.add_requester(name, "agency", OwnerKeys.generate().box_public, org)
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(tmp_path):
    a = Api(tmp_path)
    yield a
    a.close()


def body(lat: float, lon: float, **kw) -> dict:
    now = utcnow().timestamp()
    return {
        "lat": lat,
        "lon": lon,
        "radius_m": 100.0,
        "start": now - 3600,
        "end": now,
        "reason": "burglary",
        "case_ref": "C-1",
        "basis": "consent",
        **kw,
    }


def populate(api: Api) -> None:
    now = utcnow()
    for n, (lat, lon) in AREAS.items():
        for i in range(n):
            device = f"bell-{n}-{i}"
            owner = f"owner-{n}-{i}"
            keys = OwnerKeys.generate()
            api.engine.add_owner(owner, keys.sign_public, keys.box_public)
            api.engine.index.add_device(device, owner, lat + i * 1e-4, lon)
            api.engine.index.index(
                [
                    clip(
                        device=device,
                        clip_id=f"clip-{i}",
                        start=now - timedelta(minutes=10),
                        end=now - timedelta(minutes=9),
                    )
                ]
            )


def test_unauthenticated_health_returns_no_counts(api):
    resp = api.http.get("/v1/health")
    assert resp.status_code == 200 and resp.json() == {"ok": True}


def test_answers_and_the_public_record_are_the_same_for_0_1_and_4_doorbells(api):
    populate(api)
    police = api.requester("police")
    answers = {}
    growth = {}
    for n, (lat, lon) in AREAS.items():
        before = api.audit.size()
        resp = api.http.post("/v1/requests", json=body(lat, lon), headers=police)
        answers[n] = resp
        # Matching runs after the answer; wait for the request's one record.
        wait_for(lambda b=before: api.audit.size() > b, 10, "the request on the record")
        rid = resp.json()["id"]
        wait_for(lambda rid=rid, k=n: api.r.llen(f"request_asks:{rid}") == k, 10, f"{n} asks")
        growth[n] = api.audit.size() - before
    shapes = {
        n: (r.status_code, tuple(sorted(r.json())), r.json()["status"], len(r.content))
        for n, r in answers.items()
    }
    assert len(set(shapes.values())) == 1, shapes
    assert len(answers[0].content) == 49, "the size docs/formats.md gives"
    assert set(growth.values()) == {1}, growth
    entries = [e for e in api.audit.entries() if e["kind"] == "request"]
    assert len({e["data"]["asks_size"] for e in entries}) == 1
    assert all("ask" not in e["kind"] for e in api.audit.entries())

    # Each owner of the four can check that their ask is in the committed set.
    rid = answers[4].json()["id"]
    (entry,) = [e for e in entries if e["data"]["id"] == rid]
    for i in range(4):
        (ask,) = api.engine.asks_for(f"owner-4-{i}")
        mine = {"ask": ask.id, "owner": ask.owner, "device": ask.device}
        assert askset.check(ask.commitment, entry["data"]["asks_root"], mine)
        assert not askset.check(ask.commitment, entry["data"]["asks_root"], {"owner": "else"})
        forged = dict(ask.commitment, index=(ask.commitment["index"] + 1) % 64)
        assert not askset.check(forged, entry["data"]["asks_root"])
    # Owners' decisions and expiries do not name the request either (counting them
    # would say how many homes it reached).
    api.engine.deny("owner-4-0", api.engine.asks_for("owner-4-0")[0].id)
    api.engine.clock = lambda: utcnow().timestamp() + 73 * 3600
    api.engine.expire_due()
    later = [e for e in api.audit.entries() if e["kind"] in ("decision", "ask_expired")]
    assert len(later) == 5  # one denial; three asks of this request and one other expired
    assert not any(rid in json.dumps(e) for e in later)


def test_twenty_parallel_requests_count_exactly_the_limit_per_organisation(api):
    one = api.requester("constable-1", org="county-police")
    two = api.requester("constable-2", org="county-police")
    other = api.requester("neighbour-watch")

    def send(i: int) -> int:
        headers = one if i % 2 else two
        with httpx.Client(base_url=api.url, timeout=30) as c:
            return c.post("/v1/requests", json=body(*AREAS[0]), headers=headers).status_code

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(send, range(20)))
    assert sorted(codes) == [201] * 5 + [422] * 15, codes
    # Another organisation has its own day.
    resp = api.http.post("/v1/requests", json=body(*AREAS[0]), headers=other)
    assert resp.status_code == 201


@pytest.mark.parametrize(
    "change",
    [
        {"radius_m": "100"},
        {"lat": True},
        {"start": "yesterday"},
        {"basis": "curiosity"},
        {"surprise": 1},
    ],
)
def test_types_are_strict(api, change):
    resp = api.http.post(
        "/v1/requests", json={**body(*AREAS[0]), **change}, headers=api.requester("police")
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid"


def test_revoked_tokens_are_refused_at_once_and_rotation_replaces_them(api):
    police = api.requester("police")
    keys = OwnerKeys.generate()
    token = api.engine.add_owner("alice", keys.sign_public, keys.box_public)
    alice = {"Authorization": f"Bearer {token}"}
    assert api.http.get("/v1/asks", headers=alice).status_code == 200
    assert api.http.post("/v1/requests", json=body(*AREAS[0]), headers=police).status_code == 201

    api.engine.revoke("requester", "police")
    resp = api.http.post("/v1/requests", json=body(*AREAS[0]), headers=police)
    assert resp.status_code == 401 and resp.json()["error"] == "unauthorized"

    new = api.engine.rotate("owner", "alice")
    assert api.http.get("/v1/asks", headers=alice).status_code == 401
    assert api.http.get("/v1/asks", headers={"Authorization": f"Bearer {new}"}).status_code == 200

    actions = [e["data"].get("action") for e in api.audit.entries()]
    assert "requester_revoked" in actions and "owner_rotated" in actions
    assert not any(new in json.dumps(e) for e in api.audit.entries()), "tokens never logged"
    stored = b"".join(api.r.hkeys("tokens")) + b"".join(api.r.hvals("tokens"))
    assert new.encode() not in stored, "tokens are stored hashed"


def test_the_openapi_says_how_to_authenticate_and_what_comes_back(api):
    spec = api.http.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert any(s["type"] == "http" and s["scheme"] == "bearer" for s in schemes.values())
    post = spec["paths"]["/v1/requests"]["post"]
    assert post["security"]
    assert {"400", "401", "422"} <= set(post["responses"])
    assert "422" in post["responses"] and "ErrorOut" in json.dumps(post["responses"]["422"])
    assert "HTTPValidationError" not in json.dumps(spec), "malformed input is a 400"
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            for code, resp in op["responses"].items():
                schema = json.dumps(resp.get("content", {}))
                assert '"type": "object"}' not in schema or "$ref" in schema, (path, method, code)


def test_a_request_whose_fan_out_never_ran_is_fanned_out_once_later(api):
    populate(api)
    api.engine.add_requester("police", "agency", OwnerKeys.generate().box_public)
    now = utcnow().timestamp()
    lat, lon = AREAS[1]
    result = api.engine.file_request(
        "police", lat, lon, 100.0, now - 3600, now, "burglary", "C-1", "consent", fan_out=False
    )
    assert api.engine.asks_for("owner-1-0") == [], "not yet: the API would do it after answering"
    api.engine.clock = lambda: now + 61  # the API stopped before it ran
    (ask,) = api.engine.asks_for("owner-1-0")
    assert ask.request_id == result["id"]
    api.engine.fan_out(result["id"])  # a late deferred call changes nothing
    assert len(api.engine.asks_for("owner-1-0")) == 1
    entries = [e for e in api.audit.entries() if e["kind"] == "request"]
    assert [e["data"]["id"] for e in entries] == [result["id"]]
