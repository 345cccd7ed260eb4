"""A real Mosquitto (the project's config and ACL) and a real Redis, for integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import redis

from common.mqtt import BrokerSettings, make_client
from firmware.config import MqttConfig
from relay.config import RelayBroker
from relay.index import RelayIndex
from relay.ingest import IngestWorker
from testing.localstack import LocalMosquitto, LocalRedis


def wait_for(pred: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Stack:
    def __init__(self, folder: Path) -> None:
        self.dir = folder
        self.broker = LocalMosquitto(folder / "mosquitto").start()
        self.redis = LocalRedis(folder / "redis").start()
        self.secrets = folder / "secrets"
        self.secrets.mkdir()
        self.add_account("relay")
        self.index = RelayIndex(redis.Redis.from_url(self.redis.url))
        self.config_file = folder / "relay.toml"
        self.config_file.write_text(
            f"""
[broker]
port = {self.broker.relay_port}
password_file = "{self.secrets / "relay"}"
backoff_min_s = 0.2
backoff_max_s = 1.0

[redis]
url = "{self.redis.url}"

[mosquitto]
password_file = "{self.broker.password_file}"
pid_file = "{self.broker.pid_file}"

[audit]
key_file = "{folder / "audit.key"}"

[provisioning]
bundles_dir = "{folder / "bundles"}"
broker_port = {self.broker.port}
"""
        )
        self._stops: list[threading.Event] = []
        self._procs: list[subprocess.Popen[bytes]] = []

    def add_account(self, user: str) -> Path:
        password = f"pw-{user}-{os.getpid()}"
        path = self.secrets / user
        path.write_text(password)
        self.broker.add_user(user, password)
        return path

    def add_device(self, device: str, lat: float = 51.5, lon: float = -0.12) -> MqttConfig:
        pw = self.add_account(device)
        self.index.add_device(device, f"owner of {device}", lat, lon)
        return MqttConfig(
            enabled=True,
            port=self.broker.port,
            password_file=pw,
            backoff_min_s=0.2,
            backoff_max_s=1.0,
        )

    def relay_settings(self) -> RelayBroker:
        return RelayBroker(
            port=self.broker.relay_port,
            password_file=self.secrets / "relay",
            backoff_min_s=0.2,
            backoff_max_s=1.0,
        )

    def worker_thread(self, name: str = "t1") -> IngestWorker:
        stop = threading.Event()
        idx = RelayIndex(redis.Redis.from_url(self.redis.url))
        w = IngestWorker(self.relay_settings(), idx, name)
        threading.Thread(target=w.run, args=(stop,), daemon=True).start()
        self._stops.append(stop)
        wait_for(w.connected.is_set, 10, "the worker to connect")
        time.sleep(0.1)  # the SUBACK
        return w

    def worker_process(self, name: str) -> subprocess.Popen[bytes]:
        with open(self.dir / f"worker-{name}.log", "ab") as log:
            proc = self._spawn(name, log)
        self._procs.append(proc)
        return proc

    def wait_workers(self, *names: str, timeout: float = 20.0) -> None:
        """Wait for the named workers' first heartbeats; on a timeout, say what each
        worker process wrote (a slow start and a crash look alike otherwise)."""
        try:
            wait_for(lambda: set(names) <= set(self.index.workers()), timeout, f"{names}")
        except AssertionError as err:
            tails = []
            for name in names:
                log = self.dir / f"worker-{name}.log"
                text = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
                tails.append(f"--- worker {name}:\n{text}")
            raise AssertionError("\n".join([str(err), *tails])) from None

    def _spawn(self, name: str, log: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "relay.cli",
                "--config",
                str(self.config_file),
                "ingest",
                "--name",
                name,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,  # type: ignore[arg-type]
        )

    def client(self, user: str, **kw: object) -> mqtt.Client:
        """A connected paho client logged in as ``user`` (an account made with add_account)."""
        port = self.broker.relay_port if user == "relay" else self.broker.port
        settings = BrokerSettings(port=port, password_file=self.secrets / user)
        c = make_client(
            settings, client_id=f"test-{user}-{time.monotonic_ns()}", username=user, **kw
        )  # type: ignore[arg-type]
        connected = threading.Event()
        c.on_connect = lambda *a: connected.set()
        c.connect("127.0.0.1", port)
        c.loop_start()
        wait_for(connected.is_set, 10, f"{user} to connect")
        return c

    def close(self) -> None:
        for s in self._stops:
            s.set()
        for p in self._procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        time.sleep(0.1)
        self.broker.stop()
        self.redis.stop()
