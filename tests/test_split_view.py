"""Two parties who saw different histories of different sizes can prove it.

A unit test: the relay's public API is played by ``Client.public`` over audit logs
on fakeredis (the real API and broker are in test_log_attacks.py).  The relay shows
party A one history (X, with a refusal in it) and party B another (Y, without).
"""

from __future__ import annotations

import contextlib
import io
import json
from urllib.parse import parse_qs, urlparse

import fakeredis
import pytest

from footage import cli as footage
from footage.witness import export_head
from protocol.crypto import OwnerKeys, b64
from protocol.transparency import open_head
from relay.audit import AuditLog

RELAY = "http://relay.example"


def serve(log: AuditLog):
    def public(self, path: str):
        u = urlparse(path)
        q = {k: int(v[0]) for k, v in parse_qs(u.query).items()}
        if u.path == "/v1/log/key":
            return {"key": b64(log.public)}
        if u.path == "/v1/log/head":
            return log.head()
        if u.path.startswith("/v1/log/heads/"):
            size = int(u.path.rsplit("/", 1)[1])
            return log.signed_head(size) if size <= log.size() else None
        if u.path == "/v1/log/proof/consistency":  # 404 (None) for a size it lacks
            return log.consistency(q["first"], q["second"]) if q["second"] <= log.size() else None
        raise AssertionError(path)

    return public


def run(monkeypatch, state, log, *args: str) -> tuple[int, str]:
    if log is not None:
        monkeypatch.setattr(footage.Client, "public", serve(log))
    out, err = io.StringIO(), io.StringIO()
    relay = ["--relay", RELAY] if log is not None else []
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = footage.main(["--state", str(state), *relay, *args])
    return code, out.getvalue() + err.getvalue()


def grow(log: AuditLog, n: int, tag: str) -> None:
    for i in range(n):
        log.append("operator_action", "operator", {"action": f"{tag}{i}"})


def export(log: AuditLog, size: int, path):
    head = open_head(log.signed_head(size), log.public)
    path.write_text(json.dumps(export_head(RELAY, log.public, head)))
    return path


@pytest.fixture
def logs(tmp_path):
    """X (A's view, a refusal at #8) and Y (B's view, without it), one key, 8 shared."""
    key = OwnerKeys.generate().sign_private
    x, y = AuditLog(fakeredis.FakeRedis(), key), AuditLog(fakeredis.FakeRedis(), key)
    for log in (x, y):
        grow(log, 8, "a")
    x.append("approval_refused", "alice", {"ask": "a", "code": "bad_signature"})
    y.append("operator_action", "operator", {"action": "noop"})
    grow(x, 1, "b")
    grow(y, 1, "b")  # both 10 now
    key_file = tmp_path / "log.pub"
    key_file.write_text(b64(x.public))
    return x, y, key_file


@pytest.mark.parametrize("relay_shows", ["X", "Y"])
def test_heads_of_different_sizes_prove_a_split_view_with_the_relay(
    logs, tmp_path, monkeypatch, relay_shows
):
    x, y, _ = logs
    grow(x, 2, "c")
    a12, b10 = export(x, 12, tmp_path / "a12.json"), export(y, 10, tmp_path / "b10.json")
    log = x if relay_shows == "X" else y
    code, out = run(
        monkeypatch, tmp_path / "c", log, "log", "check-consistency", str(a12), str(b10)
    )
    assert code == footage.EXIT_LOG_ALARM, out
    if relay_shows == "X":  # its own head of 10 and B's: two signed heads, one size
        assert "two different logs of 10 entries" in out, out
    else:  # it cannot prove its 10 grew into A's 12: both heads are printed
        assert "size 10, root" in out and "size 12, root" in out, out


def test_offline_a_kept_head_of_the_same_size_proves_the_split(logs, tmp_path, monkeypatch):
    x, y, key_file = logs
    state = tmp_path / "a-state"
    # A's client follows the relay, which shows it X: it sees 10, then 12.
    assert run(monkeypatch, state, x, "log", "head")[0] == 0
    grow(x, 2, "c")
    assert run(monkeypatch, state, x, "log", "head")[0] == 0
    a12, b10 = export(x, 12, tmp_path / "a12.json"), export(y, 10, tmp_path / "b10.json")
    # B brings b10; A, offline, compares it with her 12 and the heads her client kept.
    code, out = run(
        monkeypatch,
        state,
        None,
        "--log-key",
        str(key_file),
        "log",
        "check-consistency",
        str(a12),
        str(b10),
    )
    assert code == footage.EXIT_LOG_ALARM, out
    assert "two different logs of 10 entries" in out, out
    # Without a kept head of either size, offline cannot tell: it says so (exit 2).
    code, out = run(
        monkeypatch,
        tmp_path / "empty",
        None,
        "--log-key",
        str(key_file),
        "log",
        "check-consistency",
        str(a12),
        str(b10),
    )
    assert code == footage.EXIT_USAGE and "--relay" in out, out


@pytest.mark.parametrize("answer", ["list", "null-path", "refused"])
def test_a_relay_that_will_not_prove_its_new_head_is_an_alarm(tmp_path, monkeypatch, answer):
    """``200 []``, a proof without a path, or a 5xx: exit 3 with both heads, no traceback."""
    log = AuditLog(fakeredis.FakeRedis(), OwnerKeys.generate().sign_private)
    grow(log, 5, "a")
    state = tmp_path / "s"
    assert run(monkeypatch, state, log, "log", "head")[0] == 0
    grow(log, 3, "b")
    honest = serve(log)

    def evil(self, path: str):
        if not path.startswith("/v1/log/proof/consistency"):
            return honest(self, path)
        if answer == "refused":
            raise footage.Failure("the relay's log said no (503)", footage.EXIT_FAILED)
        return [] if answer == "list" else {"path": None}

    monkeypatch.setattr(footage.Client, "public", evil)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = footage.main(["--state", str(state), "--relay", RELAY, "log", "head"])
    assert code == footage.EXIT_LOG_ALARM, err.getvalue()
    assert "size 5, root" in err.getvalue() and "size 8, root" in err.getvalue()


def test_a_client_that_lost_its_last_head_still_catches_a_truncation(tmp_path, monkeypatch):
    """head.json gone: the largest kept head stands in for it."""
    key = OwnerKeys.generate().sign_private
    log = AuditLog(fakeredis.FakeRedis(), key)
    grow(log, 10, "a")
    state = tmp_path / "s"
    assert run(monkeypatch, state, log, "log", "head")[0] == 0
    next((state / "relays").iterdir()).joinpath("head.json").unlink()
    truncated = AuditLog(fakeredis.FakeRedis(), key)
    grow(truncated, 4, "a")
    code, out = run(monkeypatch, state, truncated, "log", "head")
    assert code == footage.EXIT_LOG_ALARM and "rollback" in out, out
