"""Is the relay up: the broker answers a CONNECT, Redis a PING, and a worker beats.

Example::

    status = probe(cfg)
    status["healthy"]     # False while the broker, Redis or every worker is down
"""

from __future__ import annotations

import os
import threading
from typing import Any

from common.mqtt import make_client
from relay.config import RelayConfig
from relay.services import Relay, Unavailable


def broker_reachable(cfg: RelayConfig, timeout: float = 3.0) -> tuple[bool, str]:
    """Connect as the relay and read the CONNACK's reason code."""
    result: dict[str, str] = {}
    done = threading.Event()
    client = make_client(
        cfg.broker, client_id=f"relay:status:{os.getpid()}", username=cfg.broker.username or "relay"
    )

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result["rc"] = str(rc)
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(cfg.broker.host, cfg.broker.port, keepalive=10)
    except OSError as err:
        return False, str(err)
    client.loop_start()
    ok = done.wait(timeout)
    client.disconnect()
    client.loop_stop()
    if not ok:
        return False, "no answer"
    return result["rc"] == "Success", result["rc"]


def probe(relay: Relay) -> dict[str, Any]:
    cfg = relay.cfg
    ok_broker, broker_detail = broker_reachable(cfg)
    status: dict[str, Any] = {
        "broker": {
            "ok": ok_broker,
            "detail": broker_detail,
            "address": f"{cfg.broker.host}:{cfg.broker.port}",
        },
        "redis": {"ok": False, "address": cfg.redis.url},
    }
    try:
        index = relay.index
        status["counts"] = index.counts()
        status["workers"] = index.workers()
        status["redis"]["ok"] = True
    except Unavailable as err:
        status["redis"]["detail"] = str(err)
    workers = status.get("workers", {})
    # Every registered worker must beat: a silent one may hold a share of the stream.
    status["silent_workers"] = sorted(n for n, w in workers.items() if not w["alive"])
    status["healthy"] = (
        ok_broker and status["redis"]["ok"] and bool(workers) and not status["silent_workers"]
    )
    return status
