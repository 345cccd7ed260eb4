"""Press → ``ring`` event at an independent subscriber, through a real Mosquitto.

Ours: a gpiozero mock pin is driven low (the press) while the doorbell runs in
real time (controller thread, simulated camera, outbox, MQTT link); the time is
taken when a separate subscriber receives the ring.  Baseline: the broker's own
publish → receive time for a bare QoS 1 message, in the same run.
"""

from __future__ import annotations

import queue
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paho.mqtt.client as mqtt
from gpiozero.pins.mock import MockFactory

from bench.report import Report, pct
from bench.rig import bench_doorbell
from common.mqtt import BrokerSettings, make_client
from firmware.app import build
from firmware.clock import SystemClock
from firmware.events import Stop
from hw_sim.hardware import SimHardware
from protocol.crypto import OwnerKeys
from testing.localstack import LocalMosquitto


def _subscriber(
    broker: LocalMosquitto, secret: Path, topic: str
) -> tuple[mqtt.Client, queue.Queue]:
    got: queue.Queue[tuple[float, bytes]] = queue.Queue()
    c = make_client(
        BrokerSettings(port=broker.relay_port, password_file=secret), "bench-sub", "relay"
    )
    ready = threading.Event()
    c.on_connect = lambda cl, *_: (cl.subscribe(topic, qos=1), ready.set())
    c.on_message = lambda _c, _u, m: got.put((time.perf_counter(), m.payload))
    c.connect("127.0.0.1", broker.relay_port)
    c.loop_start()
    ready.wait(5)
    time.sleep(0.2)
    return c, got


def run(presses: int = 1000, quick: bool = False) -> Report:
    presses = 50 if quick else presses
    tmp = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    report = Report(
        "mqtt_latency", f"Press → ring at a subscriber, real Mosquitto ({presses} presses)"
    )
    with LocalMosquitto(tmp / "mqtt") as broker:
        (tmp / "relay.pw").write_text("relay-pw")
        (tmp / "bell.pw").write_text("bell-pw")
        broker.add_user("relay", "relay-pw")
        broker.add_user("bench-bell", "bell-pw")
        sub, got = _subscriber(broker, tmp / "relay.pw", "doorbell/bench-bell/event")

        # Baseline: the broker's own QoS 1 publish -> receive, same subscriber.
        pub = make_client(
            BrokerSettings(port=broker.port, password_file=tmp / "bell.pw"),
            "bench-pub",
            "bench-bell",
        )
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        time.sleep(0.2)
        raw = []
        for _ in range(presses):
            t0 = time.perf_counter()
            pub.publish("doorbell/bench-bell/event", b"x", qos=1)
            t1, _ = got.get(timeout=5)
            raw.append((t1 - t0) * 1000)
        pub.disconnect()
        pub.loop_stop()

        # Ours: the whole doorbell in real time, wired as `doorbell run` wires it.
        owner = OwnerKeys.generate()
        cfg = bench_doorbell(tmp / "bell", broker.port, tmp / "bell.pw", owner)
        clock = SystemClock()
        factory = MockFactory()
        hardware = SimHardware("porch")
        with ThreadPoolExecutor(1) as fin:
            bell = build(
                cfg, hardware.camera(cfg, clock), factory, clock, lambda ev: None, finaliser=fin
            )
            bell.start()
            assert bell.uplink is not None and bell.uplink.link is not None
            bell.uplink.link.connected.wait(5)
            ctl_thread = threading.Thread(target=bell.run_forever, daemon=True)
            ctl_thread.start()
            time.sleep(1.0)
            while not got.empty():
                got.get()
            pin = factory.pin(cfg.gpio.button_pin)
            ours = []
            for _ in range(presses):
                t0 = time.perf_counter()
                pin.drive_low()
                while True:
                    t1, payload = got.get(timeout=5)
                    if b'"ring"' in payload:
                        break
                ours.append((t1 - t0) * 1000)
                time.sleep(0.01)
                pin.drive_high()
                time.sleep(0.02)
            bell.controller.submit(Stop())
            ctl_thread.join(10)
            bell.close()
        sub.loop_stop()

    report.add(
        "p50 press→ring",
        statistics.median(ours),
        statistics.median(raw),
        "broker QoS1 round trip",
        "ms",
    )
    report.add(
        "p99 press→ring",
        pct(ours, 99),
        pct(raw, 99),
        "broker QoS1 round trip",
        "ms",
        note="target < 20 ms on loopback",
    )
    report.extra = {"ours_ms": ours, "broker_ms": raw}
    return report


if __name__ == "__main__":
    r = run()
    r.show()
    r.save()
