"""Relay ingestion: clip records per second from broker to Redis, 1 and 2 workers.

Baseline, in the same run: the broker's own QoS 1 throughput to one subscriber
that does nothing but count.  The records come from several publisher processes
(``PUBLISHERS``), so that neither figure is limited by one Python publisher.
Workers are separate processes (``relay ingest``), as in production; each count is
the time from the first publish until the last record is in Redis (or, for the baseline, received).
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis

from bench.report import Report
from common.mqtt import BrokerSettings, make_client
from protocol import Clip, encode, new_id, utcnow
from relay.index import RelayIndex
from testing.localstack import LocalMosquitto, LocalRedis


def _records(n: int, device: str) -> list[tuple[str, bytes]]:
    now = utcnow()
    return [
        encode(
            Clip(
                id=new_id(),
                ts=now,
                device=device,
                clip_id=f"clip-{i:07d}",
                trigger="motion",
                start=now - timedelta(seconds=10),
                end=now,
                trigger_at=now,
                duration_s=10.0,
                preroll_s=5.0,
                size=1_000_000,
                codec="h264",
                width=1280,
                height=720,
                fps=15.0,
                sha256="0" * 64,
            )
        )
        for i in range(n)
    ]


PUBLISHERS = 4
"""Publisher processes, each a doorbell account of its own (the broker binds the
client id to the account, so one account is one connection)."""


def _publish_one(port: int, secret: str, user: str, n: int, ready: Any, go: Any) -> None:
    """One publisher process: connect, wait for the start signal, send ``n`` records."""
    msgs = _records(n, user)
    c = make_client(BrokerSettings(port=port, password_file=Path(secret)), user, user)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    ready.release()
    go.wait()
    infos = [c.publish(t, p, qos=1) for t, p in msgs]
    for i in infos:
        i.wait_for_publish(300)
    c.disconnect()
    c.loop_stop()


def _publish(broker: LocalMosquitto, tmp: Path, users: list[str], n: int) -> float:
    """Publish ``n`` records split over one process per user; returns the start time."""
    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Semaphore(0), ctx.Event()
    procs = [
        ctx.Process(
            target=_publish_one,
            args=(broker.port, str(tmp / f"{u}.pw"), u, n // len(users), ready, go),
        )
        for u in users
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    t0 = time.perf_counter()
    go.set()
    _PROCS.extend(procs)
    return t0


_PROCS: list[Any] = []


def _join_publishers() -> None:
    while _PROCS:
        _PROCS.pop().join(300)


def run(n: int = 20000, quick: bool = False) -> Report:
    n = 1000 if quick else n
    users = [f"bench-bell-{i}" for i in range(PUBLISHERS)]
    n -= n % len(users)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    report = Report(
        "ingest_throughput",
        f"Relay ingestion, {n} clip records from {len(users)} publisher processes",
    )
    with LocalMosquitto(tmp / "mqtt") as broker, LocalRedis(tmp / "redis") as rds:
        for user in ("relay", *users):
            (tmp / f"{user}.pw").write_text(f"{user}-pw")
            broker.add_user(user, f"{user}-pw")
        cfg = tmp / "relay.toml"
        base_cfg = (
            f'[broker]\nport = {broker.relay_port}\npassword_file = "{tmp / "relay.pw"}"\n'
            f'[redis]\nurl = "{rds.url}"\n'
        )

        # Baseline: the broker's own delivery rate to a subscriber that only counts.
        count = 0
        done = threading.Event()

        def on_message(*_: object) -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set()

        sub = make_client(
            BrokerSettings(port=broker.relay_port, password_file=tmp / "relay.pw"),
            "bench-count",
            "relay",
        )
        sub.on_message = on_message
        sub.connect("127.0.0.1", broker.relay_port)
        sub.subscribe("doorbell/+/clip", qos=1)
        sub.loop_start()
        time.sleep(0.3)  # the SUBACK; not part of any measured time
        t0 = _publish(broker, tmp, users, n)
        done.wait(300)
        raw_rate = n / (time.perf_counter() - t0)
        _join_publishers()
        sub.disconnect()
        sub.loop_stop()

        r = redis.Redis.from_url(rds.url)
        index = RelayIndex(r)

        def indexed() -> int:
            return sum(int(index.device(u)["stats"].get("clips_indexed", 0)) for u in users)

        rates = {}
        for workers in (1, 2):
            r.flushall()
            for u in users:
                index.add_device(u, "bench", 51.5, -0.12)
            # A group of its own: the previous run's sessions keep their share.
            group = f"g{workers}"
            cfg.write_text(base_cfg + f'[ingest]\ngroup = "{group}"\n')
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "relay.cli",
                        "--config",
                        str(cfg),
                        "ingest",
                        "--name",
                        f"{group}-{i}",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for i in range(workers)
            ]
            deadline = time.monotonic() + 30
            while len(index.workers()) < workers and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
            t0 = _publish(broker, tmp, users, n)
            while indexed() < n:
                if time.perf_counter() - t0 > 300:
                    raise RuntimeError("ingestion did not finish")
                time.sleep(0.01)
            rates[workers] = n / (time.perf_counter() - t0)
            _join_publishers()
            assert indexed() == n, "a record was lost or doubled"
            for p in procs:
                p.terminate()
                p.wait()
            r.delete("workers")

    for workers, target in ((1, "target ≥ 0.5"), (2, "target close to 1")):
        report.add(
            f"{workers} worker{'s' if workers > 1 else ''}",
            rates[workers],
            raw_rate,
            "broker → counting subscriber",
            "msg/s",
            better="higher",
            note=target,
        )
    return report


if __name__ == "__main__":
    rep = run()
    rep.show()
    rep.save()
