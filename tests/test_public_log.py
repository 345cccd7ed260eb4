"""The audit log as the public reads it: sealed private fields, meaning checks, the
read-only API, and a damaged log that is named, never a traceback (real Redis)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from protocol.crypto import OwnerKeys, b64, sign_payload, unb64
from protocol.merkle import leaf_hash
from protocol.transparency import (
    Head,
    Inconsistent,
    NoPinnedKey,
    check_heads,
    check_meaning,
    check_proof,
    open_head,
)
from relay.audit import ENTRIES, HEADS, SEALED, AuditLog, load_or_create_key
from relay.log_api import log_router
from testing.localstack import LocalRedis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = LocalRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def log(redis_server, tmp_path):
    r = redis.Redis.from_url(redis_server.url)
    r.flushall()
    key = load_or_create_key(tmp_path / "audit.key")
    return AuditLog(r, key)


def cycle(log: AuditLog) -> None:
    """A registration and a whole request → decision → release, as the relay writes it."""
    log.append(
        "device_registered",
        "operator",
        {"device": "front-door", "owner": "Alice Smith", "lat": 51.5007, "lon": -0.1246},
    )
    log.append("operator_action", "operator", {"action": "owner_added", "owner": "Alice Smith"})
    log.append(
        "request",
        "city-police",
        {
            "id": "req-1",
            "lat": 51.5007,
            "lon": -0.1246,
            "radius_m": 100,
            "reason": "burglary at 12 High Street",
            "case_ref": "CASE-42",
            "basis": "consent",
            # The asks are on the record only as a commitment to the padded set.
            "asks_root": "q" * 43 + "=",
            "asks_size": 64,
        },
    )
    log.append(
        "decision",
        "Alice Smith",
        {"ask": "ask-1", "decision": "approve", "clips": ["c1"]},
    )
    log.append("release", "front-door", {"request": "req-1", "clip": "c1", "sha256": "ab" * 32})


PRIVATE = (b"Alice", b"front-door", b"51.5007", b"0.1246", b"High Street", b"CASE-42")


def test_public_entries_name_no_owner_home_or_place(log):
    cycle(log)
    public = b"\n".join(log.public_entries(0, -1))
    for needle in PRIVATE:
        assert needle not in public, needle
    # The operator's view opens the sealed parts (the report needs them) ...
    ops = log.entries()
    assert ops[0]["data"]["owner"] == "Alice Smith" and ops[3]["actor"] == "Alice Smith"
    assert json.loads(log.public_entries(3, 3)[0])["actor"] == "owner"
    assert "city-police" in public.decode()  # who asks stays public
    assert log.verify().ok, log.verify().message
    # ... and a changed opening is caught against the public commitment.
    opening = json.loads(log.r.hget(SEALED, "0"))
    opening["data"]["owner"] = "Mallory"
    log.r.hset(SEALED, "0", json.dumps(opening))
    result = log.verify()
    assert not result.ok and result.first_bad == 0 and "sealed" in result.message


def test_verify_checks_that_the_log_makes_sense(log):
    cycle(log)
    assert log.verify().ok
    log.append("release", "front-door", {"request": "req-1", "clip": "c9", "sha256": "cd" * 32})
    result = log.verify()
    assert not result.ok and result.first_bad == 5 and "no approving decision" in result.message


def test_an_ask_decided_twice_or_after_expiry_and_a_release_for_no_request(log):
    cycle(log)
    log.append("decision", "Alice Smith", {"ask": "ask-1", "decision": "deny"})
    log.append("ask_expired", "relay", {"ask": "ask-2"})
    log.append("decision", "Bob", {"ask": "ask-2", "decision": "approve", "clips": ["c2"]})
    log.append("release", "back-door", {"request": "req-none", "clip": "c2", "sha256": "ef" * 32})
    log.append("ask", "relay", {"ask": "ask-x", "request": "req-none"})  # an older log's form
    result = log.verify()
    assert not result.ok and result.first_bad == 5 and "already decided" in result.message
    assert "3 more" in result.message, result.message


def test_the_public_api_serves_heads_entries_and_proofs_without_a_token(log):
    cycle(log)
    app = FastAPI()
    app.include_router(log_router(log))
    http = TestClient(app)
    key = unb64(http.get("/v1/log/key").json()["key"])
    assert key == log.public
    head = open_head(http.get("/v1/log/head").json(), key)
    assert head.size == 5
    got = http.get("/v1/log/entries", params={"start": 0, "end": 10}).json()["entries"]
    assert [g["index"] for g in got] == [0, 1, 2, 3, 4]
    raw = [unb64(g["entry"]) for g in got]
    # Inclusion by index and by leaf hash, checked with the key fetched beforehand.
    for i in (0, 4):
        proof = http.get("/v1/log/proof/inclusion", params={"index": i}).json()
        assert unb64(proof["entry"]) == raw[i]
        assert check_proof(proof, key)[0]
    by_hash = http.get(
        "/v1/log/proof/inclusion", params={"leaf_hash": leaf_hash(raw[2]).hex()}
    ).json()
    assert by_hash["index"] == 2 and check_proof(by_hash, key)[0]
    # Consistency between an old head and the current one.
    old = open_head(http.get("/v1/log/heads/2").json(), key)
    log.append("ask_expired", "relay", {"ask": "ask-1", "request": "req-1"})
    new = open_head(http.get("/v1/log/head").json(), key)
    path = http.get("/v1/log/proof/consistency", params={"first": 2, "second": 6}).json()["path"]
    check_heads(old, new, path)
    # Errors are one JSON line, never a 500.
    assert http.get("/v1/log/proof/inclusion", params={"index": 99}).status_code == 404
    assert (
        http.get("/v1/log/proof/consistency", params={"first": 3, "second": 2}).status_code == 400
    )
    assert http.get("/v1/log/heads/99").status_code == 404


def test_a_quiet_log_still_serves_a_recent_head(log, monkeypatch):
    """Witnesses flag a head that stops moving; an honest quiet log re-signs its head."""
    cycle(log)
    app = FastAPI()
    app.include_router(log_router(log))
    http = TestClient(app)
    stored = open_head(log.head(), log.public)
    later = time.time() + 86400
    monkeypatch.setattr("relay.audit.time.time", lambda: later)
    served = open_head(http.get("/v1/log/head").json(), log.public)
    assert (served.size, served.root) == (stored.size, stored.root)
    assert served.at >= later - 1 > stored.at


def relay_cli(config: Path, capsys, *args: str) -> tuple[int, str, str]:
    """``relay`` in this process: an exception escaping it fails the test (a traceback)."""
    from relay import cli

    code = cli.main(["--config", str(config), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def damage(r: redis.Redis, how: str) -> None:
    if how == "inserted":
        r.linsert(ENTRIES, "BEFORE", r.lindex(ENTRIES, 2), r.lindex(ENTRIES, 1))
    elif how == "not json":
        r.lset(ENTRIES, 1, b"\xff{not json")
    elif how == "head garbage":
        r.lset(HEADS, 4, b"[1, 2")
    elif how == "heads gone":
        r.delete(HEADS)
    elif how == "entry is a list":
        r.lset(ENTRIES, 3, b"[]")


@pytest.mark.parametrize(
    "how", ["inserted", "not json", "head garbage", "heads gone", "entry is a list"]
)
def test_a_damaged_log_is_named_never_a_traceback(log, redis_server, tmp_path, how, capsys):
    cycle(log)
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_server.url}"\n[audit]\nkey_file = "{tmp_path / "audit.key"}"\n'
    )
    damage(log.r, how)
    code, out, err = relay_cli(config, capsys, "audit", "verify")
    assert code == 1 and out.startswith("FAILED"), (out, err)
    code, out, err = relay_cli(config, capsys, "audit", "proof", "3")
    assert code in (0, 1) and "Traceback" not in err, err


def test_a_proof_never_trusts_its_own_key(log):
    cycle(log)
    mallory = OwnerKeys.generate()
    forged = log.proof(1)
    payload = json.loads(unb64(forged["head"]["payload"]))
    forged["head"] = sign_payload(payload, mallory.sign_private)  # re-signed with her key
    forged["relay_key"] = b64(mallory.sign_public)
    assert check_proof(forged, mallory.sign_public)[0]  # self-consistent: it "checks"
    ok, why = check_proof(forged, log.public)
    assert not ok and "another key" in why
    del forged["relay_key"]
    assert not check_proof(forged, log.public)[0]
    with pytest.raises(NoPinnedKey):
        check_proof(forged, None)


def test_heads_alone_prove_a_fork_or_a_rollback(log):
    cycle(log)
    h = [open_head(log.signed_head(n), log.public) for n in (3, 5)]
    fake = Head(5, b"\x11" * 32, 0, {})
    with pytest.raises(Inconsistent, match="rollback"):
        check_heads(h[1], h[0], None)
    with pytest.raises(Inconsistent, match="fork"):
        check_heads(h[1], fake, None)
    with pytest.raises(Inconsistent, match="rewritten"):
        check_heads(h[0], h[1], [b64(b"\x00" * 32)])


def test_proofs_read_stored_nodes_not_the_whole_log(log, monkeypatch):
    """Every public proof is served from the stored subtrees: the RFC's proofs, without
    reading every entry (which made each unauthenticated request O(n))."""
    from test_consistency import rfc_mth, rfc_proof

    for i in range(37):
        log.append("operator_action", "operator", {"action": f"a{i}"})
    raw = log.public_entries(0, -1)
    read: list = []
    real = log.r.lrange
    monkeypatch.setattr(log.r, "lrange", lambda *a: read.append(a) or real(*a))
    for first, second in [(1, 37), (5, 37), (16, 37), (31, 32), (13, 20)]:
        got = [unb64(p) for p in log.consistency(first, second)["path"]]
        assert got == rfc_proof(first, raw[:second]), (first, second)
    for i in (0, 17, 36):
        proof = log.proof(i)
        assert check_proof(proof, log.public)[0]
        assert log.proof(i, 20 if i < 20 else 37)["tree_size"] in (20, 37)
    assert log.index_of(leaf_hash(raw[23])) == 23
    with pytest.raises(KeyError):
        log.index_of(b"\x00" * 32)
    assert read == []
    head = open_head(log.signed_head(37), log.public)
    assert head.root == rfc_mth(raw)


def test_one_client_cannot_keep_the_public_log_busy(log):
    from relay.log_api import RateLimit

    cycle(log)
    t = [0.0]
    app = FastAPI()
    app.include_router(log_router(log, RateLimit(rate=2, burst=5, clock=lambda: t[0])))
    http = TestClient(app)
    codes = [http.get("/v1/log/proof/consistency?first=1&second=5").status_code for _ in range(7)]
    assert codes == [200] * 5 + [429] * 2
    t[0] += 1.0  # two more a second
    assert [http.get("/v1/log/head").status_code for _ in range(3)] == [200, 200, 429]


def test_huge_numbers_are_a_clear_400_not_a_500(log):
    cycle(log)
    app = FastAPI()
    app.include_router(log_router(log))
    http = TestClient(app, raise_server_exceptions=False)
    big = str(2**63 - 1)
    for path, params in [
        ("/v1/log/entries", {"start": big}),
        ("/v1/log/entries", {"start": 0, "end": big}),
        ("/v1/log/proof/inclusion", {"index": big}),
        ("/v1/log/proof/inclusion", {"index": 0, "size": big}),
        ("/v1/log/proof/consistency", {"first": 0, "second": big}),
        (f"/v1/log/heads/{big}", {}),
        ("/v1/log/heads/99999999999999999999999", {}),
    ]:
        code = http.get(path, params=params).status_code
        assert code in (400, 404, 422), (path, params, code)


@pytest.mark.parametrize(
    "entries, why",
    [
        (
            [("request", {"id": "r"}), ("request", {"id": "r"})],
            "request r was already made",
        ),
        (
            [
                ("request", {"id": "r"}),
                ("ask", {"ask": "a", "request": "r"}),
                ("decision", {"ask": "a", "request": "r", "decision": "deny"}),
                ("decision", {"ask": "a", "request": "r", "decision": "approve", "clips": ["c"]}),
            ],
            "ask a was already decided",
        ),
        (
            [
                ("request", {"id": "r"}),
                ("ask", {"ask": "a", "request": "r"}),
                ("ask_expired", {"ask": "a", "request": "r"}),
                ("decision", {"ask": "a", "request": "r", "decision": "approve", "clips": ["c"]}),
            ],
            "ask a had expired",
        ),
        (
            [
                ("request", {"id": "r"}),
                ("ask", {"ask": "a", "request": "r"}),
                ("decision", {"ask": "a", "request": "r", "decision": "approve", "clips": ["c"]}),
                ("release", {"request": "r", "clip": "c"}),
                ("release", {"request": "r", "clip": "c"}),
            ],
            "release of clip c for request r happened before",
        ),
        (
            [
                ("request", {"id": "r"}),
                ("ask", {"ask": "a", "request": "r"}),
                ("decision", {"ask": "a", "request": "r", "decision": "approve", "clips": ["c"]}),
                ("deletion", {"clip": "c"}),
                ("release", {"request": "r", "clip": "c"}),
            ],
            "release of clip c for request r comes after the clip was deleted",
        ),
    ],
    ids=["duplicate-request", "deny-then-approve", "after-expiry", "twice", "after-deletion"],
)
def test_the_meaning_check_catches_what_cannot_have_happened(entries, why):
    listed = [{"index": i, "kind": k, "data": d} for i, (k, d) in enumerate(entries)]
    assert check_meaning(listed[:-1]) == []
    problems = check_meaning(listed)
    assert problems and problems[0][0] == len(entries) - 1 and why in problems[0][1], problems


def test_salts_are_fresh_per_entry_and_never_served_by_the_public_api(log):
    """The relay tells a doorbell its entry's salt (in the ack); the public must never
    see one, or a guessable sealed part (which doorbell, which reason) would open."""
    cycle(log)
    # The same sealed part twice: two salts, two commitments.
    for _ in range(2):
        log.append("deletion", "front-door", {"clip": "c1", "msg": "ab" * 32, "reason": "owner"})
    salts = [log.salt(i) for i in range(log.size())]
    assert salts[5] and salts[6] and salts[5] != salts[6]
    public = [json.loads(e) for e in log.public_entries(5, 6)]
    assert public[0]["sealed"] != public[1]["sealed"]
    app = FastAPI()
    app.include_router(log_router(log))
    http = TestClient(app)
    n = log.size()
    bodies = [
        http.get("/v1/log/entries", params={"start": 0, "end": n}).text,
        http.get("/v1/log/head").text,
        http.get(f"/v1/log/heads/{n}").text,
        http.get("/v1/log/proof/consistency", params={"first": 1, "second": n}).text,
    ]
    bodies += [http.get("/v1/log/proof/inclusion", params={"index": i}).text for i in range(n)]
    served = "\n".join(bodies)
    served += "\n".join(unb64(e["entry"]).decode() for e in json.loads(bodies[0])["entries"])
    for i in range(n):
        served += unb64(json.loads(bodies[4 + i])["entry"]).decode()
    sealed = [s for s in salts if s]
    assert len(sealed) >= 5
    for salt in sealed:
        assert salt not in served
        assert salt.rstrip("=") not in served
