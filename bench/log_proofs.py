"""Public log proofs at 100k entries: stored subtrees against recomputing every leaf.

Ours: ``AuditLog.consistency``/``proof``/``index_of`` reading the stored perfect
subtrees and the leaf-hash index (O(log² n) Redis reads).  Baseline in the same run,
on the same real Redis and log: what the relay did before, reading every entry
(LRANGE of the whole list) and hashing it for each request.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import redis

from bench.report import Report
from protocol.crypto import b64, canonical, unb64
from protocol.merkle import CompactTree, leaf_hash, new_nodes
from relay.audit import ENTRIES, HEADS, LEAF_INDEX, NODES, STATE, AuditLog, load_or_create_key
from testing.localstack import LocalRedis


def fill(log: AuditLog, n: int) -> None:
    """``n`` entries written as ``append`` writes them, in bulk (appending one by one,
    each with its signature, would take minutes and measure something else)."""
    tree = CompactTree()
    pipe = log.r.pipeline(transaction=False)
    head = None
    for i in range(n):
        entry = canonical(
            {
                "index": i,
                "at": 1.0,
                "kind": "operator_action",
                "actor": "operator",
                "data": {"action": f"a{i}"},
            }
        )
        leaf = leaf_hash(entry)
        nodes = new_nodes(tree.stack, tree.size, leaf)
        tree.append(leaf)
        pipe.rpush(ENTRIES, entry)
        pipe.hset(NODES, mapping={f"{lv}:{j}": h for lv, j, h in nodes})
        pipe.hset(LEAF_INDEX, leaf, i)
        if i == n // 2 or i == n - 1:
            head = json.dumps(log.sign_head(tree.size, tree.root()))
        pipe.rpush(HEADS, head or "{}")
        if i % 5000 == 4999:
            pipe.execute()
    stack = [b64(s) for s in tree.stack]
    pipe.set(STATE, json.dumps({"size": tree.size, "stack": stack, "nodes": True}))
    pipe.execute()


def timed(fn, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs) * 1000


def run(quick: bool = False) -> Report:
    n = 2_000 if quick else 100_000
    report = Report("log_proofs", f"Public log proofs at {n} entries (real Redis)")
    with tempfile.TemporaryDirectory() as tmp, LocalRedis(Path(tmp) / "redis") as rds:
        log = AuditLog(redis.Redis.from_url(rds.url), load_or_create_key(Path(tmp) / "k"))
        fill(log, n)
        first, index = n // 2 + 1, n // 3
        missing = b"\x00" * 32

        def miss_ours() -> None:
            with contextlib.suppress(KeyError):
                log.index_of(missing)

        def miss_base() -> None:
            next((i for i, h in enumerate(log._leaves()) if h == missing), None)

        rows = [
            (
                "consistency proof",
                lambda: log.consistency(first, n),
                lambda: log.consistency_recomputed(first, n),
            ),
            ("inclusion proof", lambda: log.proof(index), lambda: log.inclusion_recomputed(index)),
            ("lookup of an unknown leaf hash", miss_ours, miss_base),
        ]
        # The same proofs, or the figures mean nothing.
        assert [unb64(p) for p in log.consistency(first, n)["path"]] == (
            log.consistency_recomputed(first, n)
        )
        assert [unb64(p) for p in log.proof(index)["path"]] == log.inclusion_recomputed(index)
        for metric, ours, base in rows:
            report.add(
                metric,
                timed(ours, 20),
                timed(base, 3),
                "read and hash every entry",
                "ms",
                better="lower",
                note=f"n = {n}, unauthenticated request",
            )
    return report


if __name__ == "__main__":
    r = run()
    r.show()
    r.save()
