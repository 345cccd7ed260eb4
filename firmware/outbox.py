"""A durable outbox: what the doorbell announces is on disk before it is sent.

SQLite in WAL mode with ``synchronous=FULL``: a row is on stable storage when
:meth:`Outbox.put` returns.  A row leaves the outbox only when the relay has
confirmed it was indexed (``doorbell/{device}/cmd/ack``), not merely when the
broker acknowledged it: a broker that crashes before saving, or restarts and
forgets a shared subscription, may drop a message it had PUBACKed.  A row the
broker acknowledged but the relay did not confirm is sent again after
``confirm_timeout_s``, doubling each time; the relay is idempotent on ids.

Rows go out by lane, then in the order they were put: lane 0 is for what a
person is waiting on (a ring), lane 1 for the rest, so a ring never waits behind
clip or snapshot work.

Example::

    box = Outbox(data_dir / "outbox.sqlite")
    box.put("doorbell/front-door/event", payload, msg_id, lane=URGENT)
    for row in box.due(limit=20): ...
    box.mark_sent(row.seq)        # on PUBACK
    box.confirm([msg_id])         # on the relay's ack
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from protocol.transparency import PROVEN_KINDS

URGENT = 0
NORMAL = 1
MAX_BACKOFF_DOUBLINGS = 6
PROVEN = tuple(PROVEN_KINDS)
"""Topic suffixes of the messages that leave only once proven in the public log."""
_PROVEN_SQL = "(" + " OR ".join(f"topic LIKE '%/{k}'" for k in PROVEN) + ")"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    lane: int
    topic: str
    payload: bytes
    msg_id: str
    attempts: int


class Outbox:
    """Thread-safe: the controller puts, the MQTT link sends, marks and confirms."""

    def __init__(self, path: Path, confirm_timeout_s: float = 30.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.confirm_timeout_s = confirm_timeout_s
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT, lane INTEGER NOT NULL,"
            " topic TEXT NOT NULL, payload BLOB NOT NULL, msg_id TEXT NOT NULL,"
            " created REAL NOT NULL, resend_at REAL NOT NULL DEFAULT 0,"
            " attempts INTEGER NOT NULL DEFAULT 0)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS outbox_due ON outbox (lane, seq, resend_at)")
        self._db.execute("CREATE INDEX IF NOT EXISTS outbox_msg ON outbox (msg_id)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rejected ("
            " seq INTEGER PRIMARY KEY, topic TEXT, payload BLOB, reason TEXT, at REAL)"
        )
        # A refusal, release or deletion the relay acked stays here until its public
        # log entry is proven (firmware/log_proof.py): an ack alone could hide it.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS awaiting_proof ("
            " msg_id TEXT PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL,"
            " lane INTEGER NOT NULL, created REAL NOT NULL, idx INTEGER NOT NULL,"
            " leaf TEXT NOT NULL, salt TEXT)"
        )
        # A file from before the relay told salts: its rows have none, so their proofs
        # are refused and they go back to be sent again (the ack then names the salt).
        cols = [r[1] for r in self._db.execute("PRAGMA table_info(awaiting_proof)")]
        if "salt" not in cols:
            self._db.execute("ALTER TABLE awaiting_proof ADD COLUMN salt TEXT")
        self._lock = threading.Lock()
        self.changed = threading.Event()
        # Set by whoever proves log entries (firmware/log_proof.py); without a prover
        # an acked message goes as before, instead of waiting for a proof forever.
        self.prove = False

    def put(
        self, topic: str, payload: bytes, msg_id: str, lane: int = NORMAL, now: float | None = None
    ) -> int:
        now = time.time() if now is None else now
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO outbox (lane, topic, payload, msg_id, created) VALUES (?, ?, ?, ?, ?)",
                (lane, topic, payload, msg_id, now),
            )
            seq = int(cur.lastrowid or 0)
        self.changed.set()
        return seq

    def due(
        self,
        limit: int = 100,
        exclude: set[int] | frozenset[int] = frozenset(),
        now: float | None = None,
    ) -> list[OutboxRow]:
        """Rows to send now: never sent, or sent but unconfirmed for too long.

        Urgent lane first, then oldest first; ``exclude`` are rows in flight.
        """
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, lane, topic, payload, msg_id, attempts FROM outbox"
                " WHERE resend_at <= ? ORDER BY lane, seq LIMIT ?",
                (now, limit + len(exclude)),
            ).fetchall()
        return [OutboxRow(*r) for r in rows if r[0] not in exclude][:limit]

    def next_resend(self) -> float | None:
        """When the earliest unconfirmed row becomes due again (None: nothing waits)."""
        with self._lock:
            row = self._db.execute("SELECT MIN(resend_at) FROM outbox WHERE resend_at > 0")
            value = row.fetchone()[0]
        return None if value is None else float(value)

    def mark_sent(self, seq: int, now: float | None = None) -> None:
        """The broker acknowledged it: wait for the relay's confirmation before resending."""
        now = time.time() if now is None else now
        with self._lock:
            attempts = self._db.execute("SELECT attempts FROM outbox WHERE seq = ?", (seq,))
            row = attempts.fetchone()
            if row is None:
                return
            n = min(int(row[0]), MAX_BACKOFF_DOUBLINGS)
            self._db.execute(
                "UPDATE outbox SET resend_at = ?, attempts = attempts + 1 WHERE seq = ?",
                (now + self.confirm_timeout_s * (2**n), seq),
            )

    def confirm(
        self, msg_ids: Iterable[str], logged: dict[str, tuple[int, str, str | None]] | None = None
    ) -> int:
        """The relay indexed these: they may go.  Returns how many rows left.

        A refusal, release or deletion (topic ``.../refused``, ``.../released``,
        ``.../deleted``: :data:`PROVEN`) does not go on the ack alone: with its log
        entry in ``logged`` (id -> (index, leaf hex, salt)) it moves to ``awaiting_proof``;
        without one it stays in the outbox and is sent again.
        """
        ids = list(msg_ids)
        if not ids:
            return 0
        logged = logged or {}
        marks = ",".join("?" * len(ids))
        if not self.prove:
            with self._lock:
                cur = self._db.execute(f"DELETE FROM outbox WHERE msg_id IN ({marks})", ids)
                return cur.rowcount
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    f"SELECT msg_id, topic, payload, lane, created FROM outbox"
                    f" WHERE msg_id IN ({marks}) AND {_PROVEN_SQL}",
                    ids,
                ).fetchall()
                for msg_id, topic, payload, lane, created in rows:
                    if msg_id in logged:
                        idx, leaf, salt = logged[msg_id]
                        self._db.execute(
                            "INSERT OR REPLACE INTO awaiting_proof (msg_id, topic, payload,"
                            " lane, created, idx, leaf, salt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (msg_id, topic, payload, lane, created, idx, leaf, salt),
                        )
                keep = [r[0] for r in rows if r[0] not in logged]
                cur = self._db.execute(
                    f"DELETE FROM outbox WHERE msg_id IN ({marks})"
                    f" AND msg_id NOT IN ({','.join('?' * len(keep))})",
                    ids + keep,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return cur.rowcount

    def awaiting(self) -> list[tuple[str, str, bytes, int, str, float, str | None]]:
        """Rows acked, not yet proven:
        (msg_id, topic, payload, index, leaf, created, salt)."""
        with self._lock:
            return self._db.execute(
                "SELECT msg_id, topic, payload, idx, leaf, created, salt FROM awaiting_proof"
                " ORDER BY created"
            ).fetchall()

    def proven(self, msg_id: str) -> None:
        """The message's log entry is proven: it may go for good."""
        with self._lock:
            self._db.execute("DELETE FROM awaiting_proof WHERE msg_id = ?", (msg_id,))

    def unproven(self, msg_id: str) -> None:
        """No proof in time: back into the outbox, to be sent (and logged) again."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO outbox (lane, topic, payload, msg_id, created)"
                " SELECT lane, topic, payload, msg_id, created FROM awaiting_proof"
                " WHERE msg_id = ?",
                (msg_id,),
            )
            self._db.execute("DELETE FROM awaiting_proof WHERE msg_id = ?", (msg_id,))
            self._db.execute("COMMIT")
        self.changed.set()

    def oldest_unproven(self) -> dict[str, float]:
        """Per kind (``refused``, ``released``, ``deleted``), when the oldest message of
        that kind not yet proven in the log was put; kinds with none are absent."""
        with self._lock:
            rows = self._db.execute(
                "SELECT topic, MIN(created) FROM awaiting_proof GROUP BY topic"
                f" UNION ALL SELECT topic, MIN(created) FROM outbox WHERE {_PROVEN_SQL}"
                " GROUP BY topic"
            ).fetchall()
        oldest: dict[str, float] = {}
        for topic, created in rows:
            kind = topic.rsplit("/", 1)[-1]
            oldest[kind] = min(float(created), oldest.get(kind, float("inf")))
        return oldest

    def reject(self, seq: int, reason: str) -> None:
        """Set aside a row the broker refused for good (kept for inspection, not resent)."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO rejected SELECT seq, topic, payload, ?, ? FROM outbox"
                " WHERE seq = ?",
                (reason, time.time(), seq),
            )
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            self._db.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def unsent(self) -> int:
        """Rows the broker has not acknowledged yet."""
        with self._lock:
            q = "SELECT COUNT(*) FROM outbox WHERE attempts = 0"
            return int(self._db.execute(q).fetchone()[0])

    def rejected_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM rejected").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
