"""A doorbell that never loses a ring on a full disk (issue 10).

The disk is "full" by injection: the outbox's writes raise SQLite's own
"database or disk is full" error until space is freed.  30 presses while full:
the controller's calls return at once, nothing reaches the disk; space freed:
every ring reaches the relay (real Mosquitto, worker, Redis), in press order.
"""

from __future__ import annotations

import json
import sqlite3
import time

from stack import wait_for

from firmware.announce import Announcer
from firmware.controller import DoorbellEvent
from firmware.mqtt_link import MqttLink
from firmware.outbox import NORMAL, URGENT, Outbox
from firmware.spool import OutboxWriter
from protocol import new_id


class FullDisk:
    """The outbox, but its writes fail while ``full`` (as SQLite reports ENOSPC)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.full = False

    def put(self, topic: str, payload: bytes, msg_id: str, lane: int = NORMAL) -> int:
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        return self.outbox.put(topic, payload, msg_id, lane)


def test_thirty_rings_on_a_full_disk_all_reach_the_relay_in_order(stack, tmp_path):
    mqtt_cfg = stack.add_device("test-bell")
    stack.worker_thread()
    arrived: list[str] = []
    watcher = stack.client("relay")
    watcher.on_message = lambda _c, _u, m: arrived.append(json.loads(m.payload)["id"])
    watcher.subscribe("doorbell/test-bell/event", qos=1)

    outbox = Outbox(tmp_path / "outbox.sqlite")
    disk = FullDisk(outbox)
    writer = OutboxWriter(disk, retry_s=0.05)
    writer.start()
    announcer = Announcer("test-bell", writer)
    link = MqttLink("test-bell", mqtt_cfg, outbox, on_command=lambda m: None)
    link.start()
    assert link.connected.wait(10)

    disk.full = True
    presses = [new_id() for _ in range(30)]
    for i, ring_id in enumerate(presses):
        announcer(DoorbellEvent("ring", ring_id, float(i), time.time()))
    wait_for(lambda: writer.blocked is not None, 5, "the writer to hit the full disk")
    assert "disk is full" in writer.blocked
    assert len(outbox) == 0, "nothing could be written"
    assert writer.pending() == 30, "every ring waits in memory"

    disk.full = False  # space freed
    wait_for(
        lambda: stack.index.device("test-bell")["stats"].get("events_indexed", 0) == 30,
        30,
        "all 30 rings indexed",
    )
    wait_for(lambda: len(arrived) == 30, 10, "all 30 rings at the watcher")
    assert arrived == presses, "in press order"
    assert writer.blocked is None and writer.pending() == 0
    wait_for(lambda: len(outbox) == 0, 10, "the relay's confirmations")
    link.stop()
    writer.stop()


def test_a_full_queue_drops_the_oldest_non_ring_first():
    class Never:
        def put(self, *a: object) -> int:
            raise OSError(28, "No space left on device")

    writer = OutboxWriter(Never(), capacity=3)
    writer.put("t", b"1", "ring-1", URGENT)
    writer.put("t", b"2", "clip-1", NORMAL)
    writer.put("t", b"3", "ring-2", URGENT)
    writer.put("t", b"4", "ring-3", URGENT)
    assert [p.msg_id for p in writer._queue] == ["ring-1", "ring-2", "ring-3"]
    assert writer.counters["dropped"] == 1
