"""Press → ``ring`` and chime with a slow SD card: the durable write is off the hot path.

An SD card's fsync takes 5–50 ms and spikes past a second.  The doorbell writes every
announcement to its outbox before sending it, but that write happens on the outbox
writer's thread (firmware/spool.py), so the controller emits ``ring`` and pulses the
chime without waiting for the disk.  Ours: every outbox write delayed by 500 ms.
Baseline: the same doorbell, same run, with the disk at its normal speed.  The ratio
should stay near 1.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from bench.report import Report, pct
from bench.rig import bench_doorbell
from firmware.app import build
from firmware.clock import SystemClock
from firmware.events import Stop
from hw_sim.hardware import SimHardware
from protocol.crypto import OwnerKeys
from testing.localstack import LocalMosquitto

DISK_DELAY_S = 0.5


def _presses(tmp: Path, port: int, presses: int, disk_delay: float) -> tuple[list, list]:
    owner = OwnerKeys.generate()
    cfg = bench_doorbell(tmp, port, tmp.parent / "bell.pw", owner, gpio={"chime_pulse_s": 0.05})
    rang: dict[int, float] = {}
    chimed: dict[int, float] = {}
    n = [0]

    def sink(ev: Any) -> None:
        if ev.kind == "ring":
            rang[n[0]] = time.perf_counter()

    clock = SystemClock()
    factory = MockFactory()
    to_ring, to_chime = [], []
    with ThreadPoolExecutor(1) as fin:
        bell = build(
            cfg, SimHardware("porch").camera(cfg, clock), factory, clock, sink, finaliser=fin
        )
        assert bell.uplink is not None
        if disk_delay:
            outbox = bell.uplink.outbox
            put = outbox.put

            def slow_put(*args: Any, **kwargs: Any) -> int:
                time.sleep(disk_delay)  # the SD card's fsync, at its worst
                return put(*args, **kwargs)

            outbox.put = slow_put  # type: ignore[method-assign]
        io = bell.io
        chime_on = io.chime_on

        def timed_chime_on() -> None:
            chime_on()  # gpiozero drives the pin before this returns
            chimed[n[0]] = time.perf_counter()

        bell.controller.chime = type(  # the controller's view of the chime, timed
            "TimedChime", (), {"chime_on": staticmethod(timed_chime_on), "chime_off": io.chime_off}
        )()
        bell.start()
        thread = threading.Thread(target=bell.run_forever, daemon=True)
        thread.start()
        time.sleep(1.0)
        button = factory.pin(cfg.gpio.button_pin)
        for i in range(presses):
            n[0] = i
            t0 = time.perf_counter()
            button.drive_low()
            deadline = time.perf_counter() + 5
            while (i not in rang or i not in chimed) and time.perf_counter() < deadline:
                time.sleep(0.001)
            to_ring.append((rang[i] - t0) * 1000)
            to_chime.append((chimed[i] - t0) * 1000)
            button.drive_high()
            time.sleep(0.1)  # the chime pulse ends before the next press
        bell.controller.submit(Stop())
        thread.join(10)
        bell.close()
    return to_ring, to_chime


def run(presses: int = 100, quick: bool = False) -> Report:
    presses = 10 if quick else presses
    tmp = Path(tempfile.mkdtemp(prefix="bench-slowdisk-"))
    report = Report(
        "slow_disk",
        f"Press → ring and chime with every outbox write delayed {DISK_DELAY_S * 1000:.0f} ms "
        f"({presses} presses)",
    )
    with LocalMosquitto(tmp / "mqtt") as broker:
        (tmp / "bell.pw").write_text("bell-pw")
        broker.add_user("bench-bell", "bell-pw")
        ring_fast, chime_fast = _presses(tmp / "fast", broker.port, presses, 0.0)
        ring_slow, chime_slow = _presses(tmp / "slow", broker.port, presses, DISK_DELAY_S)
    for what, slow, fast in (("ring", ring_slow, ring_fast), ("chime", chime_slow, chime_fast)):
        report.add(
            f"p50 press→{what}", statistics.median(slow), statistics.median(fast),
            "same doorbell, normal disk", "ms",
        )  # fmt: skip
        report.add(
            f"p99 press→{what}", pct(slow, 99), pct(fast, 99), "same doorbell, normal disk", "ms",
            note=f"disk writes delayed {DISK_DELAY_S * 1000:.0f} ms",
        )  # fmt: skip
    report.extra = {"ring_slow": ring_slow, "ring_fast": ring_fast}
    return report


if __name__ == "__main__":
    r = run()
    r.show()
    r.save()
