"""The doorbell's log witness on its own: heads in, proofs fetched, a flag on a fork.

A unit test (no broker): heads and proofs come from an audit log on fakeredis, and
``fetch`` stands in for the relay's public API, so a relay that is down can be played.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import fakeredis

from firmware.witness import LogWitness
from protocol.crypto import OwnerKeys, b64
from relay.audit import AuditLog


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
        q = {k: int(v[0]) for k, v in parse_qs(u.query).items()}
        return self.log.consistency(q["first"], q["second"])


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
