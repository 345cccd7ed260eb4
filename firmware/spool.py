"""A bounded memory queue in front of the outbox, written by a thread of its own.

The controller must never wait for a disk, and a full disk must not lose a ring.
:meth:`OutboxWriter.put` only appends to a bounded in-memory queue and returns; one
writer thread puts the queued messages into the durable outbox, oldest first.  When
the outbox cannot write (``ENOSPC``, "database or disk is full", any I/O error) the
message stays at the head of the queue and the writer tries again every
``retry_s``; when space returns, the queue drains in the order it was filled, and
the MQTT link sends from the outbox as usual.  So rings reach the relay late, but
all of them and in order.

The queue is bounded (``capacity``): when it is full, the oldest message that is
not urgent (not a ring) is dropped and counted; rings are dropped last.  While
writes fail, :attr:`blocked` says why (the status and ``doorbell status`` show it).

Example::

    writer = OutboxWriter(outbox)
    writer.start()
    writer.put(topic, payload, msg_id, URGENT)    # returns at once
    writer.stop()                                  # writes what it can first
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
from dataclasses import dataclass
from typing import Protocol

from firmware.outbox import NORMAL, URGENT

log = logging.getLogger(__name__)

CAPACITY = 1000
RETRY_S = 1.0


class DurableBox(Protocol):
    def put(self, topic: str, payload: bytes, msg_id: str, lane: int = NORMAL) -> int: ...


@dataclass(frozen=True, slots=True)
class _Pending:
    topic: str
    payload: bytes
    msg_id: str
    lane: int


class OutboxWriter:
    """Same ``put`` as the outbox, but never blocks and never raises for a full disk."""

    def __init__(self, outbox: DurableBox, capacity: int = CAPACITY, retry_s: float = RETRY_S):
        self.outbox = outbox
        self.capacity = capacity
        self.retry_s = retry_s
        self._queue: collections.deque[_Pending] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.blocked: str | None = None
        """Why the last write failed, while writes fail; None when the outbox writes."""
        self.counters = {"written": 0, "write_failures": 0, "dropped": 0}

    def put(self, topic: str, payload: bytes, msg_id: str, lane: int = NORMAL) -> int:
        """Queue a message for the outbox; returns how many are waiting."""
        with self._cond:
            if len(self._queue) >= self.capacity:
                self._drop_one()
            self._queue.append(_Pending(topic, payload, msg_id, lane))
            self._cond.notify()
            return len(self._queue)

    def _drop_one(self) -> None:
        victim = next((p for p in self._queue if p.lane != URGENT), self._queue[0])
        self._queue.remove(victim)
        self.counters["dropped"] += 1
        log.error(
            "outbox queue full (%d): dropped %s (%s)", self.capacity, victim.msg_id, victim.topic
        )

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                head = self._queue[0]
            if self._write(head):
                with self._cond:
                    if self._queue and self._queue[0] is head:
                        self._queue.popleft()
                continue
            with self._cond:
                if self._stopping:
                    return  # what is left is lost with the process, as it would be anyway
                self._cond.wait(self.retry_s)

    def _write(self, p: _Pending) -> bool:
        try:
            self.outbox.put(p.topic, p.payload, p.msg_id, p.lane)
        except (sqlite3.Error, OSError) as err:
            self.counters["write_failures"] += 1
            if self.blocked is None:
                log.error(
                    "the outbox cannot write (%s); %d message(s) wait in memory",
                    err,
                    self.pending(),
                )
            self.blocked = f"{type(err).__name__}: {err}"
            return False
        if self.blocked is not None:
            log.warning("the outbox writes again")
            self.blocked = None
        self.counters["written"] += 1
        return True
