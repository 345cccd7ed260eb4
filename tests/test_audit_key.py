"""The relay's signing key when several relay processes start at once on a new
machine: one key wins and every process signs with it (a CI run once lost a worker
to ``[Errno 17] File exists`` on ``audit.key``)."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from protocol.crypto import b64
from relay import audit
from relay.audit import load_or_create_key


def test_the_key_is_created_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "relay" / "audit.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["audit.key"]  # no temporary left


def test_losing_the_race_to_create_it_returns_the_winners_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process writes the key between our look and our write."""
    path = tmp_path / "audit.key"
    winner = bytes(range(32))
    real_generate = audit.SigningKey.generate

    def generate_after_the_winner():
        path.write_text(b64(winner) + "\n")
        return real_generate()

    monkeypatch.setattr(audit.SigningKey, "generate", staticmethod(generate_after_the_winner))
    assert load_or_create_key(path) == winner
    assert [p.name for p in tmp_path.iterdir()] == ["audit.key"]


def _start_together(path: str, barrier, out) -> None:  # pragma: no cover - child process
    barrier.wait()
    out.put(load_or_create_key(Path(path)))


def test_processes_started_together_all_sign_with_one_key(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    n = 6
    barrier, out = ctx.Barrier(n), ctx.Queue()
    path = tmp_path / "audit.key"
    procs = [ctx.Process(target=_start_together, args=(str(path), barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    keys = [out.get(timeout=30) for _ in range(n)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert len(set(keys)) == 1
    assert os.listdir(tmp_path) == ["audit.key"]
