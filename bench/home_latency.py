"""Press → Home Assistant ``event`` at a local subscriber, through the owner's Mosquitto.

Ours: the doorbell wired by ``firmware.app.build`` exactly as on a Pi (controller
thread, simulated camera in real time, relay uplink with its outbox, and the Home
Assistant link), with both brokers running.  A gpiozero mock pin is driven low (the
press); the time is taken when a subscriber logged in as ``ha`` receives the event on
the home broker, and, for the same press, when the relay's subscriber receives the
ring.  Baseline: the home broker's own publish → receive time for a bare QoS 1
message, in the same run.
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
from hw_sim.camera import SimCamera
from hw_sim.scenes import make_scene
from protocol.crypto import OwnerKeys
from testing.homebroker import HomeMosquitto
from testing.localstack import LocalMosquitto

Received = queue.Queue[tuple[float, bytes]]


def _subscriber(port: int, user: str, secret: Path, topic: str) -> tuple[mqtt.Client, Received]:
    got: Received = queue.Queue()
    c = make_client(BrokerSettings(port=port, password_file=secret), f"bench-{user}", user)
    ready = threading.Event()
    c.on_connect = lambda cl, *_: cl.subscribe(topic, qos=1)
    c.on_subscribe = lambda *_: ready.set()
    c.on_message = lambda _c, _u, m: got.put((time.perf_counter(), m.payload))
    c.connect("127.0.0.1", port)
    c.loop_start()
    ready.wait(5)
    return c, got


def _next(got: Received, needle: bytes) -> float:
    while True:
        t, payload = got.get(timeout=5)
        if needle in payload:
            return t


def run(presses: int = 500, quick: bool = False) -> Report:
    presses = 30 if quick else presses
    tmp = Path(tempfile.mkdtemp(prefix="bench-home-"))
    report = Report(
        "home_latency",
        f"Press → Home Assistant event at a local subscriber, real Mosquitto ({presses} presses)",
    )
    with HomeMosquitto(tmp / "home") as home, LocalMosquitto(tmp / "relay") as relay:
        for broker, users in ((home, ("ha", "bench-bell")), (relay, ("relay", "bench-bell"))):
            for user in users:
                secret = tmp / f"{broker.port}-{user}.pw"
                secret.write_text(f"pw-{user}")
                broker.add_user(user, f"pw-{user}")
        ha, ha_got = _subscriber(
            home.port, "ha", tmp / f"{home.port}-ha.pw", "open-doorbell/bench-bell/ring"
        )
        # The relay's own accounts connect on the relay's listener, not the doorbells'.
        rl, relay_got = _subscriber(
            relay.relay_port, "relay", tmp / f"{relay.port}-relay.pw", "doorbell/bench-bell/event"
        )

        # Baseline: the home broker's own QoS 1 publish -> receive, same subscriber.
        pub = make_client(
            BrokerSettings(port=home.port, password_file=tmp / f"{home.port}-bench-bell.pw"),
            "bench-pub",
            "bench-bell",
        )
        pub.connect("127.0.0.1", home.port)
        pub.loop_start()
        time.sleep(0.2)
        raw = []
        for _ in range(presses):
            t0 = time.perf_counter()
            pub.publish("open-doorbell/bench-bell/ring", b"x", qos=1)
            raw.append((_next(ha_got, b"x") - t0) * 1000)
        pub.disconnect()
        pub.loop_stop()

        owner = OwnerKeys.generate()
        cfg = bench_doorbell(
            tmp / "bell",
            relay.port,
            tmp / f"{relay.port}-bench-bell.pw",
            owner,
            home_assistant={
                "enabled": True,
                "port": home.port,
                "password_file": str(tmp / f"{home.port}-bench-bell.pw"),
            },
        )
        clock = SystemClock()
        factory = MockFactory()
        cam = SimCamera(make_scene("porch", 320, 240), clock, (320, 240), (160, 120), 15.0)
        ours, via_relay = [], []
        with ThreadPoolExecutor(1) as fin:
            bell = build(cfg, cam, factory, clock, sink=lambda ev: None, finaliser=fin)
            bell.start()
            cam.start_thread()
            assert bell.home is not None and bell.uplink is not None
            bell.home.connected.wait(5)
            assert bell.uplink.link is not None
            bell.uplink.link.connected.wait(5)
            ctl_thread = threading.Thread(target=bell.run_forever, daemon=True)
            ctl_thread.start()
            time.sleep(1.0)
            for got in (ha_got, relay_got):
                while not got.empty():
                    got.get()
            pin = factory.pin(cfg.gpio.button_pin)
            for _ in range(presses):
                t0 = time.perf_counter()
                pin.drive_low()
                ours.append((_next(ha_got, b'"ring"') - t0) * 1000)
                via_relay.append((_next(relay_got, b'"ring"') - t0) * 1000)
                time.sleep(0.01)
                pin.drive_high()
                time.sleep(0.02)
            bell.controller.submit(Stop())
            ctl_thread.join(10)
            bell.close()
        ha.loop_stop()
        rl.loop_stop()

    report.add(
        "p50 press→HA event",
        statistics.median(ours),
        statistics.median(raw),
        "home broker QoS1 round trip",
        "ms",
        note=f"relay link, same presses: {statistics.median(via_relay):.3g} ms",
    )
    report.add(
        "p99 press→HA event",
        pct(ours, 99),
        pct(raw, 99),
        "home broker QoS1 round trip",
        "ms",
        note=f"relay link, same presses: {pct(via_relay, 99):.3g} ms",
    )
    report.extra = {"ours_ms": ours, "broker_ms": raw, "relay_ms": via_relay}
    return report


if __name__ == "__main__":
    r = run()
    r.show()
    r.save()
