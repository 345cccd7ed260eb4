"""The audit log catches a changed, deleted, inserted or reordered entry, and proves entries."""

import json

import fakeredis
import pytest

from protocol.crypto import OwnerKeys
from relay.audit import ENTRIES, HEADS, AuditLog, check_proof


@pytest.fixture
def log():
    a = AuditLog(fakeredis.FakeRedis(), OwnerKeys.generate().sign_private)
    for i in range(10):
        a.append("request", f"requester-{i % 3}", {"case": f"C-{i}"})
    return a


def test_a_clean_log_verifies(log):
    result = log.verify()
    assert result.ok and result.entries == 10


def test_a_changed_entry_is_named(log):
    entry = json.loads(log.r.lindex(ENTRIES, 4))
    entry["data"]["case"] = "C-forged"
    log.r.lset(ENTRIES, 4, json.dumps(entry, sort_keys=True, separators=(",", ":")))
    result = log.verify()
    assert not result.ok and result.first_bad == 4 and "altered" in result.message


def test_a_deleted_entry_is_named(log):
    victim = log.r.lindex(ENTRIES, 6)
    log.r.lrem(ENTRIES, 1, victim)
    result = log.verify()
    assert not result.ok and result.first_bad == 6


def test_a_deleted_tail_is_noticed(log):
    log.r.rpop(ENTRIES)
    result = log.verify()
    assert not result.ok and result.first_bad == 9 and "missing" in result.message


def test_an_inserted_entry_is_named(log):
    fake = log.r.lindex(ENTRIES, 2)
    log.r.linsert(ENTRIES, "BEFORE", log.r.lindex(ENTRIES, 3), fake)
    assert log.verify().first_bad == 3


def test_reordered_entries_are_named(log):
    a, b = log.r.lindex(ENTRIES, 7), log.r.lindex(ENTRIES, 8)
    log.r.lset(ENTRIES, 7, b)
    log.r.lset(ENTRIES, 8, a)
    assert log.verify().first_bad == 7


def test_rewriting_entry_and_index_still_fails_on_the_signed_head(log):
    # Someone without the relay's key rewrites an entry consistently: the heads
    # signed at the time no longer match.
    forged = AuditLog(log.r, OwnerKeys.generate().sign_private)
    log.r.lset(HEADS, 3, json.dumps(forged.sign_head(4, b"\x00" * 32)))
    result = log.verify()
    assert not result.ok and result.first_bad == 3


def test_inclusion_proofs_check_offline(log):
    for i in (0, 5, 9):
        proof = log.proof(i)
        ok, msg = check_proof(json.loads(json.dumps(proof)), log.public)
        assert ok, msg
    proof = log.proof(5)
    proof["index"] = 4
    assert not check_proof(proof, log.public)[0]
    other = OwnerKeys.generate().sign_public
    assert not check_proof(log.proof(5), other)[0]
