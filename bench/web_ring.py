"""Press → ring visible on the owner's open page, through Mosquitto, the relay and a browser.

Ours: a gpiozero mock pin is driven low (the press) while the doorbell runs in real
time (controller thread, simulated camera, outbox, MQTT link); an ingestion worker
indexes the ring into a real Redis, which publishes it; the relay's web app streams
it (Server-Sent Events) to Alice's page in Debian's chromium.  Two times are taken:
when the ring's entry is on the page, and when its snapshot, sealed on the doorbell,
has been decrypted in the page and drawn.  Baseline: the broker's own publish →
receive time for a bare QoS 1 message, in the same run.
"""

from __future__ import annotations

import queue
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
import uvicorn
from gpiozero.pins.mock import MockFactory

from bench.report import Report, pct
from common.mqtt import BrokerSettings, make_client
from firmware.announce import Announcer
from firmware.clock import SystemClock
from firmware.config import MqttConfig, parse_config
from firmware.controller import Controller
from firmware.events import Stop
from firmware.gpio import DoorbellIO
from firmware.mqtt_link import MqttLink
from firmware.outbox import Outbox
from firmware.store import ClipStore
from hw_sim.camera import SimCamera
from hw_sim.scenes import make_scene
from protocol.crypto import OwnerKeys
from relay.api import create_app
from relay.audit import AuditLog
from relay.blobs import LocalBlobStore
from relay.config import RelayBroker
from relay.consent import ConsentEngine
from relay.index import RelayIndex
from relay.ingest import IngestWorker
from relay.keyspace import live_channel
from testing.localstack import LocalMosquitto, LocalRedis, free_port

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _wait(pred, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("bench: setup did not come up")
        time.sleep(0.02)


def _bare_round_trips(broker: LocalMosquitto, tmp: Path, n: int) -> list[float]:
    got: queue.Queue[float] = queue.Queue()
    # The relay's accounts connect on the relay's own listener (per-listener accounts).
    sub = make_client(
        BrokerSettings(port=broker.relay_port, password_file=tmp / "relay.pw"), "b-s", "relay"
    )
    ready = threading.Event()
    sub.on_connect = lambda cl, *_: (cl.subscribe("doorbell/bench-bell/event", qos=1), ready.set())
    sub.on_subscribe = lambda *_: ready.set()
    sub.on_message = lambda *_: got.put(time.perf_counter())
    sub.connect("127.0.0.1", broker.relay_port)
    sub.loop_start()
    ready.wait(5)
    time.sleep(0.2)
    pub = make_client(
        BrokerSettings(port=broker.port, password_file=tmp / "bell.pw"), "b-p", "bench-bell"
    )
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    time.sleep(0.2)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        pub.publish("doorbell/bench-bell/event", b"x", qos=1)
        out.append((got.get(timeout=5) - t0) * 1000)
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    return out


def run(presses: int = 100, quick: bool = False) -> Report:
    from playwright.sync_api import sync_playwright

    presses = 3 if quick else presses
    tmp = Path(tempfile.mkdtemp(prefix="bench-web-ring-"))
    report = Report(
        "web_ring",
        f"Press → ring on the owner's open page, Mosquitto + Redis + relay + chromium ({presses})",
    )
    owner = OwnerKeys.generate()
    with LocalMosquitto(tmp / "mqtt") as broker, LocalRedis(tmp / "redis") as rds:
        (tmp / "relay.pw").write_text("relay-pw")
        (tmp / "bell.pw").write_text("bell-pw")
        broker.add_user("relay", "relay-pw")
        broker.add_user("bench-bell", "bell-pw")
        raw = _bare_round_trips(broker, tmp, presses)

        # The relay: one ingestion worker and the API with the web app.
        r = redis.Redis.from_url(rds.url)
        index = RelayIndex(r)
        engine = ConsentEngine(index, AuditLog(r, OwnerKeys.generate().sign_private))
        token = engine.add_owner("alice", owner.sign_public, owner.box_public)
        index.add_device("bench-bell", "alice", 51.5, -0.12)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        app = create_app(engine, LocalBlobStore(tmp / "blobs", r, url), lambda t, p: None)
        server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
        server_thread = threading.Thread(target=server.run, daemon=True)
        server_thread.start()
        _wait(lambda: server.started)
        stop = threading.Event()
        settings = RelayBroker(port=broker.relay_port, password_file=tmp / "relay.pw")
        worker = IngestWorker(settings, RelayIndex(r), "bench")
        worker_thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        worker_thread.start()
        _wait(worker.connected.is_set)

        keys = tmp / "alice-keys"
        owner.save(keys)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_context(base_url=url).new_page()
            page.goto("/app/")
            page.wait_for_selector("body[data-ready='1']")
            page.fill("#token", token)
            page.click("#sign-in-form button[type=submit]")
            page.wait_for_selector("#import-form:not([hidden])")
            page.set_input_files("#key-files", [str(keys / "sign.key"), str(keys / "box.key")])
            page.fill("#new-passphrase", "bench passphrase")
            page.click("#import-form button[type=submit]")
            page.wait_for_selector("body[data-unlocked='1'][data-live='1']", timeout=30000)
            seen, drawn, indexed = _presses(page, tmp, broker, owner, presses, r)
            browser.close()
        stop.set()
        server.should_exit = True
        worker_thread.join(10)
        server_thread.join(10)

    report.add(
        "p50 press→ring on page",
        statistics.median(seen),
        statistics.median(raw),
        "bare MQTT QoS1 round trip",
        "ms",
    )
    report.add(
        "p99 press→ring on page",
        pct(seen, 99),
        pct(raw, 99),
        "bare MQTT QoS1 round trip",
        "ms",
        note="target < 500 ms on loopback",
    )
    report.add(
        "p50 press→ring published by Redis (indexed)",
        statistics.median(indexed),
        statistics.median(raw),
        "bare MQTT QoS1 round trip",
        "ms",
    )
    report.add(
        "p50 press→snapshot decrypted and drawn",
        statistics.median(drawn),
        statistics.median(raw),
        "bare MQTT QoS1 round trip",
        "ms",
    )
    report.add(
        "p99 press→snapshot decrypted and drawn",
        pct(drawn, 99),
        pct(raw, 99),
        "bare MQTT QoS1 round trip",
        "ms",
    )
    report.extra = {"ring_ms": seen, "snapshot_ms": drawn, "indexed_ms": indexed, "broker_ms": raw}
    return report


def _presses(page, tmp, broker, owner, presses, redis_client):  # type: ignore[no-untyped-def]
    """Press ``presses`` times on a doorbell running in real time; (ring, snapshot) ms."""
    cfg = parse_config(
        {
            "device": {"id": "bench-bell", "data_dir": str(tmp / "bell")},
            "camera": {"main_size": [320, 240], "lores_size": [160, 120], "fps": 15},
            "gpio": {"ring_cooldown_s": 0.0, "debounce_s": 0.005},
            "clips": {"pre_roll_s": 1.0, "post_roll_s": 1.0, "max_length_s": 30},
        }
    )
    clock = SystemClock()
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    factory = MockFactory()
    io = DoorbellIO(cfg.gpio, events.put, clock, pin_factory=factory)
    cam = SimCamera(make_scene("porch", 320, 240), clock, (320, 240), (160, 120), 15.0)
    outbox = Outbox(tmp / "bell" / "outbox.sqlite")
    link = MqttLink(
        "bench-bell",
        MqttConfig(port=broker.port, password_file=tmp / "bell.pw"),
        outbox,
        on_command=lambda m: None,
    )
    seen, drawn, indexed = [], [], []
    # Where the time goes: when Redis publishes the ring (indexed), seen from here.
    published: queue.Queue[float] = queue.Queue()
    live = redis_client.pubsub(ignore_subscribe_messages=True)
    live.subscribe(**{live_channel("bench-bell"): lambda m: published.put(time.perf_counter())})
    listener = live.run_in_thread(sleep_time=0.001, daemon=True)
    with ThreadPoolExecutor(1) as fin:
        ctl = Controller(
            cfg,
            clock,
            cam,
            io,
            ClipStore(cfg.device.data_dir, owner.box_public),
            Announcer("bench-bell", outbox, owner.box_public),
            finaliser=fin,
            events=events,
        )
        ctl.start()
        cam.start_thread()
        link.start()
        link.connected.wait(5)
        ctl_thread = threading.Thread(target=ctl.run_forever, daemon=True)
        ctl_thread.start()
        time.sleep(1.0)  # the camera's first frames, so a snapshot exists
        pin = factory.pin(cfg.gpio.button_pin)
        for n in range(1, presses + 1):
            t0 = time.perf_counter()
            pin.drive_low()
            page.wait_for_function(
                f"() => document.querySelectorAll('li.ring').length >= {n}", polling="raf"
            )
            seen.append((time.perf_counter() - t0) * 1000)
            while True:  # the ring's publication, not its snapshot's
                t_pub = published.get(timeout=10)
                if t_pub >= t0 and len(indexed) < n:
                    indexed.append((t_pub - t0) * 1000)
                    break
            page.wait_for_function(
                f"() => document.querySelectorAll('li.ring[data-snapshot=shown]').length >= {n}",
                polling="raf",
            )
            drawn.append((time.perf_counter() - t0) * 1000)
            pin.drive_high()
            time.sleep(0.05)
        ctl.submit(Stop())
        ctl_thread.join(10)
    listener.stop()
    cam.stop()
    link.stop()
    io.close()
    return seen, drawn, indexed


if __name__ == "__main__":
    r = run()
    r.show()
    r.save()
