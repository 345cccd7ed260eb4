"""The doorbell's log witness on its own: heads in, proofs fetched, a flag on a fork.

A unit test (no broker): heads and proofs come from an audit log on fakeredis, and
``fetch`` stands in for the relay's public API, so a relay that is down can be played.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import time
import urllib.error
from urllib.parse import parse_qs, urlparse

import fakeredis
import pytest

from firmware import cli as doorbell
from firmware.witness import BadAnswer, LogWitness
from protocol.crypto import OwnerKeys, b64, sign_payload
from protocol.transparency import open_head
from relay.audit import AuditLog
from testing.clock import ManualClock as Clock


class Api:
    """The relay's public log API, as the witness's ``fetch`` sees it."""

    def __init__(self, log: AuditLog) -> None:
        self.log, self.down, self.calls = log, False, 0

    def __call__(self, url: str):
        self.calls += 1
        if self.down:
            raise OSError("connection refused")
        u = urlparse(url)
        if u.path == "/v1/log/key":
            return {"key": b64(self.log.public)}
        if u.path == "/v1/log/head":
            return self.log.head()
        q = {k: int(v[0]) for k, v in parse_qs(u.query).items()}
        try:
            return self.log.consistency(q["first"], q["second"])
        except IndexError:  # what the API answers for a size the log lacks
            raise urllib.error.HTTPError(url, 404, "not found", {}, None) from None  # type: ignore[arg-type]


def grow(log: AuditLog, n: int) -> bytes:
    for i in range(n):
        log.append("operator_action", "operator", {"action": f"a{i}"})
    return json.dumps(log.head()).encode()


def witness(tmp_path, log, key=None):
    events: list = []
    api = Api(log)
    w = LogWitness(tmp_path / "witness.json", "http://relay", key, events.append, fetch=api)
    return w, api, events


def test_an_honest_growing_log_is_accepted_and_kept_on_disk(tmp_path):
    log = AuditLog(fakeredis.FakeRedis(), OwnerKeys.generate().sign_private)
    w, _, events = witness(tmp_path, log)  # no key given: pinned on first use
    for n in (3, 2, 9, 1):
        w.check(grow(log, n))
    assert w.head.size == 15 and w.alarm is None and not events and w.checked == 4
    again, _, _ = witness(tmp_path, log)  # after a restart
    assert again.head.size == 15


def test_a_relay_that_is_down_is_retried_not_an_alarm(tmp_path):
    log = AuditLog(fakeredis.FakeRedis(), OwnerKeys.generate().sign_private)
    w, api, _ = witness(tmp_path, log, log.public)
    w.check(grow(log, 3))
    api.down = True
    w.check(grow(log, 2))
    assert w.alarm is None and w.head.size == 3 and w._pending is not None
    api.down = False
    w.check(w._pending)
    assert w.head.size == 5 and w.alarm is None


def test_a_head_signed_by_another_key_and_a_rewritten_log_raise_the_flag(tmp_path):
    r = fakeredis.FakeRedis()
    log = AuditLog(r, OwnerKeys.generate().sign_private)
    w, _, events = witness(tmp_path, log, log.public)
    w.check(grow(log, 4))
    other = AuditLog(fakeredis.FakeRedis(), OwnerKeys.generate().sign_private)
    w.check(grow(other, 6))
    assert "not signed" in w.alarm["why"] and events[-1].kind == "log_alarm"
    # The same key, a history rewritten from entry 2 on and grown: a fork.
    w2, _, events2 = (
        witness(tmp_path / "b", log, log.public) if (tmp_path / "b").mkdir() is None else None
    )
    w2.check(json.dumps(log.head()).encode())
    entries = log.entries()
    r.flushall()
    for e in entries[:2]:
        log.append(e["kind"], e["actor"], e["data"])
    w2.check(grow(log, 5))
    assert "rewritten" in w2.alarm["why"] and events2[-1].data["earlier"] is not None
    assert w2.head.size == 4  # the head kept is the last good one


# --------------------------------------------------------------- a relay that will not prove


def refusing(tmp_path, answer, **kw):
    """A witness that kept a head of 10, then sees a rewritten log of 20 whose proof
    request is answered by ``answer()`` (a value returned, or an exception raised)."""
    r = fakeredis.FakeRedis()
    log = AuditLog(r, OwnerKeys.generate().sign_private)
    events: list = []
    clock = Clock()
    api = Api(log)
    w = LogWitness(
        tmp_path / "witness.json",
        "http://relay",
        log.public,
        events.append,
        fetch=api,
        clock=clock,
        **kw,
    )
    w.check(grow(log, 10))
    entries = log.entries()
    r.flushall()
    for e in entries[:4]:
        log.append(e["kind"], e["actor"], e["data"])
    new = grow(log, 16)

    def evil(url: str):
        if "/consistency" not in url:
            return Api(log)(url)
        result = answer()
        if isinstance(result, BaseException):
            raise result
        return result

    w.fetch = evil
    return w, new, events, clock


@pytest.mark.parametrize(
    "answer",
    [
        lambda: None,
        lambda: [],
        lambda: {"path": "AAAA"},
        lambda: {"path": [1, 2]},
        lambda: BadAnswer("not JSON"),
        lambda: json.JSONDecodeError("Expecting value", "<html>", 0),
    ],
    ids=["null", "list", "path-string", "path-ints", "not-json", "json-error"],
)
def test_a_malformed_proof_answer_is_evidence(tmp_path, answer):
    w, new, events, _ = refusing(tmp_path, answer)
    w.check(new)
    assert w.alarm is not None and "no consistency proof" in w.alarm["why"]
    assert w.alarm["earlier"] is not None and w.alarm["later"] is not None
    assert events[-1].kind == "log_alarm" and w.head.size == 10


@pytest.mark.parametrize(
    "cut",
    [lambda: OSError("timed out"), lambda: http.client.IncompleteRead(b"")],
    ids=["timeout", "cut-answer"],
)
def test_a_relay_that_keeps_refusing_a_proof_raises_the_alarm_after_the_bound(tmp_path, cut):
    w, new, events, clock = refusing(tmp_path, cut, refuse_s=600)
    w.check(new)
    assert w.alarm is None and w._pending is not None  # a blip: retried
    clock.t += 599
    w.check(w._pending)
    assert w.alarm is None
    clock.t += 2
    w.check(w._pending)
    assert w.alarm is not None and "refused" in w.alarm["why"] and w.alarm["later"] is not None
    assert events[-1].kind == "log_alarm"


def test_a_head_with_a_non_finite_or_fractional_field_is_refused(tmp_path):
    signer = OwnerKeys.generate().sign_private
    from nacl.signing import SigningKey

    public = bytes(SigningKey(signer).verify_key)
    root = b64(b"\x01" * 32)
    for bad in ({"at": float("inf")}, {"at": 1.5}, {"size": 2.0}, {"size": True}):
        payload = {"size": 3, "root": root, "at": 5, **bad}
        with pytest.raises(ValueError):
            open_head(sign_payload(payload, signer), public)
    w = LogWitness(tmp_path / "w.json", "http://relay", public, lambda e: None, fetch=None)
    w.check(
        json.dumps(sign_payload({"size": 3, "root": root, "at": float("inf")}, signer)).encode()
    )
    assert w.alarm is not None


def test_a_log_head_that_stops_moving_raises_the_stale_flag_not_the_alarm(tmp_path):
    log = AuditLog(fakeredis.FakeRedis(), OwnerKeys.generate().sign_private)
    events: list = []
    clock = Clock(time.time())
    w = LogWitness(
        tmp_path / "witness.json",
        "http://relay",
        log.public,
        events.append,
        fetch=Api(log),
        clock=clock,
        max_age_s=3600,
    )
    grow(log, 3)
    w.poll()  # fetches /v1/log/head itself
    assert w.head.size == 3 and w.stale is None
    clock.t += 3500
    w.poll()
    assert w.stale is None
    clock.t += 7200  # the relay's head is still the one signed hours ago
    w.poll()
    assert w.stale is not None and w.alarm is None and events[-1].kind == "log_stale"
    clock.t = time.time() + 1  # a fresh head clears the flag
    grow(log, 1)
    w.poll()
    assert w.stale is None and w.head.size == 4


# --------------------------------------------------------------- a doorbell that loses its state


def rewritten(r, log, keep: int, pad: int) -> bytes:
    entries = log.entries()
    r.flushall()
    for e in entries[:keep]:
        log.append(e["kind"], e["actor"], e["data"])
    return grow(log, pad)


def lose(path, how: str) -> None:
    if how == "deleted":
        path.unlink()
    else:
        path.write_text("{garbage")


@pytest.mark.parametrize("how", ["deleted", "corrupt"])
def test_a_lost_state_file_is_restored_from_its_copy_and_a_rollback_still_caught(tmp_path, how):
    r = fakeredis.FakeRedis()
    log = AuditLog(r, OwnerKeys.generate().sign_private)
    w, _, _ = witness(tmp_path, log, log.public)
    w.check(grow(log, 10))
    lose(tmp_path / "witness.json", how)
    again, _, events = witness(tmp_path, log, log.public)  # the doorbell restarts
    again.check(rewritten(r, log, 4, 2))  # truncated and rewritten to 6 entries
    assert "rollback" in again.alarm["why"] and events[-1].kind == "log_alarm"


@pytest.mark.parametrize("provisioned", [True, False])
@pytest.mark.parametrize("how", ["deleted", "corrupt"])
def test_losing_every_copy_of_the_state_is_an_alarm_not_a_fresh_start(tmp_path, how, provisioned):
    r = fakeredis.FakeRedis()
    log = AuditLog(r, OwnerKeys.generate().sign_private)
    key = log.public if provisioned else None
    w, _, _ = witness(tmp_path, log, key)
    w.check(grow(log, 10))
    for f in (tmp_path / "witness.json", tmp_path / "witness.json.bak"):
        lose(f, how)
    # Before the doorbell restarts, the owner's command already says so.
    with contextlib.redirect_stdout(io.StringIO()) as shown:
        code = doorbell.main(["log-status", "--data-dir", str(tmp_path)])
    assert code == 1 and json.loads(shown.getvalue())["alarm"]["kind"] == "state_lost"
    other = AuditLog(fakeredis.FakeRedis(), OwnerKeys.generate().sign_private)
    again, _, events = witness(tmp_path, other, key)  # a relay with another key now
    assert again.alarm is not None and again.alarm["kind"] == "state_lost"
    assert events and events[0].kind == "log_alarm"
    again.check(grow(other, 3))
    assert again.state["key"] == b64(log.public)  # never re-pinned from the relay
    assert again.alarm["kind"] == "state_lost"  # the first evidence stays


def test_a_head_must_be_canonical_json_with_only_its_fields():
    """One head, one encoding: otherwise one signed head could be shown in two forms."""
    from nacl.signing import SigningKey

    signer = OwnerKeys.generate().sign_private
    public = bytes(SigningKey(signer).verify_key)
    root = b64(b"\x01" * 32)

    def signed_bytes(body: bytes) -> dict:
        return {"payload": b64(body), "signature": b64(SigningKey(signer).sign(body).signature)}

    good = json.dumps({"at": 5, "root": root, "size": 3}, sort_keys=True, separators=(",", ":"))
    assert open_head(signed_bytes(good.encode()), public).size == 3
    for body in (
        json.dumps({"size": 3, "root": root, "at": 5}),  # spaces, another order
        json.dumps({"at": 5, "root": root, "size": 3, "note": "x"}, separators=(",", ":")),
    ):
        with pytest.raises(ValueError):
            open_head(signed_bytes(body.encode()), public)


def test_an_older_smaller_head_delivered_late_is_checked_not_called_a_rollback(tmp_path):
    """The retained head can lag the one the doorbell polled: an older, smaller head that
    the relay proves is a prefix of the kept one is no alarm; one it cannot prove is."""
    r = fakeredis.FakeRedis()
    log = AuditLog(r, OwnerKeys.generate().sign_private)
    w, _, events = witness(tmp_path, log, log.public)
    grow(log, 6)
    old = json.dumps(log.signed_head(6)).encode()
    w.check(grow(log, 4))
    w.check(old)  # late
    assert w.alarm is None and w.head.size == 10 and not events
    # The same late head, but the relay has truncated the log and cannot prove it.
    truncated = AuditLog(fakeredis.FakeRedis(), log.key)
    grow(truncated, 6)
    w.fetch = Api(truncated)
    w.check(json.dumps(truncated.signed_head(6)).encode())
    assert w.alarm is not None and "rollback" in w.alarm["why"]
