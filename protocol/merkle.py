"""RFC 6962 (Certificate Transparency) Merkle trees: roots, inclusion and consistency proofs.

Leaves are ``SHA-256(0x00 || entry)``, interior nodes ``SHA-256(0x01 || left || right)``.
Anyone holding an entry, its proof and a signed tree head can check the entry is
in the log without trusting whoever served them (:func:`verify_inclusion`), and anyone
holding two signed heads can check that the later log only appended to the earlier one
(:func:`verify_consistency`): a rewritten or truncated history fails that check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of leaf hashes ``leaves``."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(root(leaves[:k]), root(leaves[k:]))


class CompactTree:
    """Appends leaves one at a time and gives the root of every prefix, in O(log n).

    It keeps only the roots of the perfect subtrees the tree is made of; that is
    what lets a verifier check a signed head for every size as it reads the log.
    """

    def __init__(self, size: int = 0, stack: list[bytes] | None = None) -> None:
        self.size = size
        self.stack: list[bytes] = list(stack or [])

    def append(self, leaf: bytes) -> None:
        self.stack.append(leaf)
        self.size += 1
        n = self.size
        # Merge equal-height subtrees: one merge per trailing 1 bit of the old size.
        while n % 2 == 0:
            right = self.stack.pop()
            left = self.stack.pop()
            self.stack.append(node_hash(left, right))
            n //= 2

    def root(self) -> bytes:
        if not self.stack:
            return EMPTY_ROOT
        r = self.stack[-1]
        for s in reversed(self.stack[:-1]):
            r = node_hash(s, r)
        return r


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The audit path for leaf ``index`` in the tree of ``leaves`` (RFC 6962 §2.1.1)."""
    n = len(leaves)
    if not 0 <= index < n:
        raise IndexError(f"leaf {index} is not in a tree of {n}")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), root(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), root(leaves[:k])]


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], want: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``path`` prove ``leaf`` at ``index`` under root ``want``?"""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = node_hash(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == want


def _range_root(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    return root(leaves[lo:hi])


def consistency_proof(first: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.2 PROOF(first, D[n]): the tree of ``first`` leaves is a prefix of ``leaves``.

    Written as a loop over the recursion of SUBPROOF: each step keeps the subtree
    that still holds the old tree's right edge and records the sibling it leaves;
    SUBPROOF lists the inner hashes first, so the list is reversed at the end.

    >>> leaves = [leaf_hash(bytes([i])) for i in range(7)]
    >>> proof = consistency_proof(3, leaves)
    >>> verify_consistency(3, 7, proof, root(leaves[:3]), root(leaves))
    True
    """
    n = len(leaves)
    if not 0 <= first <= n:
        raise IndexError(f"no tree of {first} leaves inside a tree of {n}")
    if first in (0, n):
        return []
    outer_first: list[bytes] = []
    lo, hi, m, whole = 0, n, first, True
    while True:
        size = hi - lo
        if m == size:
            if not whole:  # the old tree is a subtree here: name it
                outer_first.append(_range_root(leaves, lo, hi))
            break
        k = _split(size)
        if m <= k:
            outer_first.append(_range_root(leaves, lo + k, hi))
            hi = lo + k
        else:
            outer_first.append(_range_root(leaves, lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    return outer_first[::-1]


def verify_consistency(
    first: int, second: int, path: Sequence[bytes], first_root: bytes, second_root: bytes
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree (``first``, ``first_root``) a prefix of (``second``, ...)?

    An empty old tree is a prefix of every tree; a tree is consistent with itself only
    when the roots are equal (and the path is empty).  Anything else needs
    0 < first < second and a non-empty path.
    """
    if first < 0 or second < first:
        return False
    if first == 0:
        return not path
    if first == second:
        return not path and first_root == second_root
    if not path:
        return False
    nodes = list(path)
    if first & (first - 1) == 0:  # the old tree is a complete subtree: its root leads
        nodes.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = nodes[0]
    for c in nodes[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root
