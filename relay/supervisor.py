"""Running the relay's processes: ingestion workers and the HTTP API.

Workers are separate processes (Python threads would share one core); each one
reads the config itself, so a worker is the same whether ``relay ingest`` or
``relay serve`` started it, or systemd's ``relay-ingest@.service``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from relay.config import load_relay_config
from relay.services import Relay

log = logging.getLogger(__name__)

SWEEP_S = 300.0
"""How often ``relay serve`` expires asks and reminds owners of bystanders' deadlines."""


def worker_main(
    config_path: str | None, name: str, seconds: float | None, retire: bool = False
) -> None:
    """One ingestion worker, until SIGTERM/SIGINT or ``seconds``."""
    from relay.ingest import IngestWorker
    from relay.plausible import Plausibility

    relay = Relay(load_relay_config(config_path))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if seconds:
        threading.Timer(seconds, stop.set).start()
    worker = IngestWorker(
        relay.cfg.broker,
        relay.index,
        name,
        relay.cfg.ingest.group,
        relay.cfg.ingest.batch,
        audit=relay.audit,
        blobs=relay.blobs,
        retire=retire,
        plausible=Plausibility(
            max_past_s=relay.cfg.ingest.max_past_s, max_future_s=relay.cfg.ingest.max_future_s
        ),
        session_expiry_s=relay.cfg.ingest.session_expiry_s,
    )
    worker.run(stop)


def spawn_workers(
    config_path: str | None,
    names: list[str],
    seconds: float | None = None,
    retire: bool = False,
) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=worker_main, args=(config_path, name, seconds, retire)) for name in names
    ]
    for p in procs:
        p.start()
    return procs


def stop_workers(procs: list[Any], timeout: float = 10.0) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout)


def wait_workers(procs: list[Any]) -> None:
    """Block until every worker ends; SIGTERM/SIGINT stops them all."""

    def stop_all(*_: Any) -> None:
        for p in procs:
            if p.is_alive():
                p.terminate()

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    for p in procs:
        p.join()


def serve(
    relay: Relay,
    config_path: str | None,
    workers: int,
    seconds: float | None,
    on_ready: Callable[[str], None],
) -> None:
    """The HTTP API in this process, ``workers`` ingestion workers beside it."""
    import uvicorn

    from common.mqtt import make_client
    from relay.api import create_app
    from relay.commands import CommandOutbox, CommandPublisher

    cfg = relay.cfg
    client = make_client(
        cfg.broker, client_id=f"relay:api:{os.getpid()}", username=cfg.broker.username or "relay"
    )
    client.connect_async(cfg.broker.host, cfg.broker.port, keepalive=cfg.broker.keepalive_s)
    client.loop_start()

    # Commands are kept in Redis until the doorbell answers, and published (again)
    # by a thread of this process: a lost publish cannot strand an approval.
    commands = CommandOutbox(relay.index.r, audit=relay.audit)
    publisher = CommandPublisher(commands, lambda t, p: client.publish(t, p, qos=1))
    stop_publisher = threading.Event()
    threading.Thread(
        target=publisher.run, args=(stop_publisher,), name="commands", daemon=True
    ).start()

    # Bystanders' reminders and every ask's expiry are due at a time, not on a call: a
    # sweep puts them on the record (and in owners' asks) even when no one looks.
    def sweep() -> None:
        while not stop_publisher.wait(SWEEP_S):
            try:
                relay.engine.expire_due()
            except Exception:  # a Redis hiccup must not end the sweep
                log.exception("the expiry and reminder sweep failed; trying again")

    threading.Thread(target=sweep, name="sweep", daemon=True).start()

    def publish(topic: str, payload: bytes) -> None:
        commands.enqueue(topic, payload)
        publisher.wake.set()

    app = create_app(relay.engine, relay.blobs, publish)
    if cfg.webpush.subject:
        from relay.web import start_web_push

        start_web_push(app, relay.engine, cfg.webpush.vapid_key_file, cfg.webpush.subject)
    base = f"{os.uname().nodename}-serve"
    procs = spawn_workers(config_path, [f"{base}-{i}" for i in range(workers)])
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=cfg.api.host,
            port=cfg.api.port,
            log_level="warning",
            forwarded_allow_ips=cfg.api.forwarded_allow_ips,
        )
    )
    if seconds:
        threading.Timer(seconds, lambda: setattr(server, "should_exit", True)).start()
    on_ready(f"relay serving {cfg.api.public_url} with {len(procs)} ingestion worker(s)")
    try:
        server.run()
    finally:
        stop_publisher.set()
        stop_workers(procs)
        client.loop_stop()
