"""Side effects of ingestion are idempotent and survive a worker's death (issue 10).

A worker dies after indexing a ``released`` message and before auditing it; the
broker delivers it again to the restarted worker, the index calls it a duplicate,
and the audit entry is written then, exactly once.
"""

from __future__ import annotations

import contextlib
import threading

from stack import wait_for

from protocol import Released, encode, new_id, utcnow
from protocol.crypto import OwnerKeys
from relay.audit import AuditLog
from relay.index import RelayIndex
from relay.ingest import IngestWorker


class Killed(BaseException):
    """Ends the worker thread the way SIGKILL ends a process: nothing after runs."""


class DiesBeforeAuditing(IngestWorker):
    def _side_effects(self, msg):
        # Drop the connection without DISCONNECT (as a dead process's socket closes),
        # after the index has the message and before anything is recorded or acked.
        self.client.socket().close()
        raise Killed


def _start(worker: IngestWorker) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    t = threading.Thread(target=lambda: _run(worker, stop), daemon=True)
    t.start()
    return t, stop


def _run(worker: IngestWorker, stop: threading.Event) -> None:
    with contextlib.suppress(Killed):
        worker.run(stop)


def _releases(audit: AuditLog, msg: Released) -> list[dict]:
    return [
        e
        for e in audit.entries()
        if e["kind"] == "release" and e["data"]["request"] == msg.request_id
    ]


def test_a_worker_killed_between_indexing_and_auditing_a_release(stack):
    stack.add_device("test-bell")
    audit = AuditLog(stack.index.r, OwnerKeys.generate().sign_private)
    index = RelayIndex(stack.index.r)
    dying = DiesBeforeAuditing(stack.relay_settings(), index, "w1", audit=audit)
    t, _ = _start(dying)
    wait_for(dying.connected.is_set, 10, "the worker")

    msg = Released(
        id=new_id(),
        ts=utcnow(),
        device="test-bell",
        request_id=new_id(),
        clip_id="clip-0001",
        wrapped_key="a2V5",
        sha256="ab" * 32,
    )
    bell = stack.client("test-bell")
    bell.publish(*encode(msg), qos=1).wait_for_publish(10)
    t.join(20)
    assert not t.is_alive(), "the worker died"
    assert stack.index.device("test-bell")["stats"]["released"] == 1, "indexed before dying"
    assert _releases(audit, msg) == [], "and died before auditing"

    # Restarted under the same name: the broker delivers the unacknowledged message again.
    again = IngestWorker(stack.relay_settings(), RelayIndex(stack.index.r), "w1", audit=audit)
    _, stop = _start(again)
    wait_for(lambda: _releases(audit, msg), 30, "the release to be audited after redelivery")
    assert again.stats["duplicates"] == 1 and again.stats["indexed"] == 0

    # The doorbell resends it (no confirmation reached it): still one entry.
    bell.publish(*encode(msg), qos=1).wait_for_publish(10)
    wait_for(lambda: again.stats["duplicates"] == 2, 20, "the resend")
    assert len(_releases(audit, msg)) == 1
    assert stack.index.device("test-bell")["stats"]["released"] == 1
    stop.set()
    bell.loop_stop()


def test_an_audit_entry_is_appended_once_per_key(stack):
    audit = AuditLog(stack.index.r, OwnerKeys.generate().sign_private)
    first = audit.append("release", "d", {"n": 1}, once="msg:abc")
    assert audit.append("release", "d", {"n": 1}, once="msg:abc") == first
    assert audit.append("release", "d", {"n": 2}) == first + 1
    assert audit.size() == 2
