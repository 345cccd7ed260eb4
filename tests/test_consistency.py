"""Consistency proofs, checked against RFC 6962's own definitions written out here.

Nothing below the marker imports the project: MTH, SUBPROOF and the RFC 9162
verifier are transcribed from the RFC text (RFC 6962 §2.1, §2.1.2; RFC 9162
§2.1.4.2) so that a shared misreading cannot make both sides agree.
"""

from __future__ import annotations

import hashlib

import pytest

from protocol import merkle

# ---------------------------------------------------------------- RFC 6962, independently


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def rfc_mth(entries: list[bytes]) -> bytes:
    """MTH(D[n]) of RFC 6962 §2.1, over the entries themselves (not leaf hashes)."""
    n = len(entries)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + entries[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + rfc_mth(entries[:k]) + rfc_mth(entries[k:]))


def rfc_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 6962 §2.1.2."""
    n = len(d)
    if m == n:
        return [] if b else [rfc_mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*rfc_subproof(m, d[:k], b), rfc_mth(d[k:])]
    return [*rfc_subproof(m - k, d[k:], False), rfc_mth(d[:k])]


def rfc_proof(m: int, d: list[bytes]) -> list[bytes]:
    return rfc_subproof(m, d, True)


def rfc9162_verify(first: int, second: int, first_hash: bytes, second_hash: bytes, path) -> bool:
    """RFC 9162 §2.1.4.2, step by step (0 < first < second)."""
    path = list(path)
    if not path:  # step 1
        return False
    if first & (first - 1) == 0:  # step 2
        path = [first_hash, *path]
    fn, sn = first - 1, second - 1  # step 3
    while fn % 2 == 1:  # step 4
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr = _h(b"\x01" + c + fr)
            sr = _h(b"\x01" + c + sr)
            if fn % 2 == 0:
                while not (fn % 2 == 1 or fn == 0):
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = _h(b"\x01" + sr + c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_hash and sr == second_hash and sn == 0  # step 7


# ---------------------------------------------------------------- the project against it

ENTRIES = [f"entry {i}".encode() for i in range(70)]
LEAVES = [merkle.leaf_hash(e) for e in ENTRIES]


def test_roots_agree_with_the_rfc():
    for n in range(0, 40):
        assert merkle.root(LEAVES[:n]) == rfc_mth(ENTRIES[:n])


@pytest.mark.parametrize("n", [*range(2, 34), 64, 65, 70])
def test_every_proof_is_the_rfcs_proof_and_verifies_both_ways(n):
    d, leaves = ENTRIES[:n], LEAVES[:n]
    new_root = rfc_mth(d)
    for m in range(1, n):
        ours = merkle.consistency_proof(m, leaves)
        assert ours == rfc_proof(m, d), (m, n)
        old_root = rfc_mth(d[:m])
        assert rfc9162_verify(m, n, old_root, new_root, ours)
        assert merkle.verify_consistency(m, n, ours, old_root, new_root)


def test_the_rfc_examples():
    # RFC 6962 §2.1.3's tree of seven leaves: PROOF(3, D[7]) = [c, d, g, l],
    # PROOF(4, D[7]) = [l], PROOF(6, D[7]) = [i, j, k].
    d = ENTRIES[:7]
    c, dd = rfc_mth(d[2:3]), rfc_mth(d[3:4])
    g, i, j, k, leaf_l = (
        rfc_mth(d[0:2]),
        rfc_mth(d[4:6]),
        rfc_mth(d[6:7]),
        rfc_mth(d[0:4]),
        rfc_mth(d[4:7]),
    )
    assert merkle.consistency_proof(3, LEAVES[:7]) == [c, dd, g, leaf_l]
    assert merkle.consistency_proof(4, LEAVES[:7]) == [leaf_l]
    assert merkle.consistency_proof(6, LEAVES[:7]) == [i, j, k]


@pytest.mark.parametrize("n", [5, 8, 13, 32, 33])
def test_a_rewritten_history_fails(n):
    """Any change to an old entry, a removed entry or a different order breaks every proof."""
    d = ENTRIES[:n]
    for m in range(1, n):
        old_root = rfc_mth(d[:m])
        for tampered in (
            [*d[: m - 1], b"forged", *d[m:]],  # the last old entry changed
            [b"forged", *d[1:]],  # the first one
            [*d[: m - 1], *d[m:], b"tail"],  # one removed, the length kept
        ):
            leaves = [merkle.leaf_hash(e) for e in tampered]
            proof = merkle.consistency_proof(m, leaves)
            assert not merkle.verify_consistency(m, n, proof, old_root, rfc_mth(tampered))
            assert not rfc9162_verify(m, n, old_root, rfc_mth(tampered), proof)


def test_damaged_proofs_and_wrong_sizes_fail():
    n = 21
    d, leaves = ENTRIES[:n], LEAVES[:n]
    new_root = rfc_mth(d)
    for m in range(1, n):
        old_root = rfc_mth(d[:m])
        proof = rfc_proof(m, d)
        for bad in (
            proof[:-1],
            [*proof, proof[0]],
            [b"\x00" * 32, *proof[1:]],
            proof[::-1] if len(proof) > 1 else [b"\x01" * 32],
        ):
            assert not merkle.verify_consistency(m, n, bad, old_root, new_root), (m, bad)
        assert not merkle.verify_consistency(m, n, proof, old_root, rfc_mth(d[:-1]))
        # A proof for a far larger tree than the path can reach (sn never gets to 0).
        assert not rfc9162_verify(m, 4 * n, old_root, new_root, proof)
        assert not merkle.verify_consistency(m, 4 * n, proof, old_root, new_root)
        assert not merkle.verify_consistency(m, n, proof, new_root, new_root)
    # Trivial cases: the empty tree precedes everything; a tree matches only itself.
    assert merkle.verify_consistency(0, n, [], merkle.EMPTY_ROOT, new_root)
    assert merkle.verify_consistency(n, n, [], new_root, new_root)
    assert not merkle.verify_consistency(n, n, [], new_root, rfc_mth(d[:-1]))
    assert not merkle.verify_consistency(n, n - 1, [], new_root, new_root)  # a rollback
    with pytest.raises(IndexError):
        merkle.consistency_proof(n + 1, leaves)
