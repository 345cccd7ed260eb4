"""The audit log as the public reads it: sealed private fields, meaning checks, the
read-only API, and a damaged log that is named, never a traceback (real Redis)."""

from __future__ import annotations

import json
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
    assert not result.ok and result.first_bad == 5 and "second time" in result.message
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
