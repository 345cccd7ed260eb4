"""Mosquitto and Redis on free loopback ports, for tests and ``make demo``.

They run with the project's own configuration (``relay.broker.render_config``
and ``deploy/mosquitto/acl``), each in a folder of its own, and stop with the
object.  Nothing here touches the machine's own services.

Example::

    with LocalMosquitto(tmp / "mqtt") as broker, LocalRedis(tmp / "redis") as r:
        broker.add_user("relay", "secret")
        ...
"""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Self

from protocol.topics import RELAY_ACCOUNT
from relay.broker import ACL_FILE, TlsListener, render_config
from relay.passwd import reload_broker, set_user


def free_port() -> int:
    with bound_socket() as s:
        return int(s.getsockname()[1])


def bound_socket() -> socket.socket:
    """A loopback socket already bound to a free port, for a server in this process.

    :func:`free_port` closes its socket, so another process can take the port before
    the server binds it (a CI run lost the API to ``[Errno 98] address already in
    use``); a server given this socket (:func:`serve_in_thread`) never lets it go.
    """
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


def serve_in_thread(app: Any, sock: socket.socket, **config: Any) -> Any:
    """Serve ``app`` on uvicorn on ``sock`` in a daemon thread; the server once started.

    ``config`` is more of ``uvicorn.Config`` (e.g. ``forwarded_allow_ips``).
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **config))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise AssertionError(f"the API on {sock.getsockname()} did not start in 10 s")
        time.sleep(0.05)
    return server


def _find(exe: str) -> str:
    path = shutil.which(exe) or shutil.which(exe, path="/usr/sbin:/sbin:/usr/local/sbin")
    if path is None:
        raise RuntimeError(
            f"{exe} is not installed (make test installs it as root; "
            f"otherwise: sudo apt-get install {exe.replace('-server', '-server')})"
        )
    return path


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on {port}: {log.read_text()[-2000:]}")


class _Service:
    """start() on entering a ``with`` block, stop() on leaving it."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalMosquitto(_Service):
    """A Mosquitto with the project's config, ACL and a password file of its own."""

    def __init__(
        self, folder: Path, port: int | None = None, tls: TlsListener | None = None
    ) -> None:
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.relay_port = free_port()
        """The relay's own listener: relay accounts only (see relay.broker.render_config)."""
        self.password_file = self.dir / "passwd"
        self.password_file.touch()
        self.relay_password_file = self.dir / "relay-passwd"
        self.relay_password_file.touch()
        self.pid_file = self.dir / "mosquitto.pid"
        self.log = self.dir / "mosquitto.log"
        (self.dir / "data").mkdir(exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            render_config(
                password_file=self.password_file,
                acl_file=ACL_FILE,
                persistence_dir=self.dir / "data",
                pid_file=self.pid_file,
                port=self.port,
                # Run as whoever runs the tests: a root broker would drop to the
                # mosquitto user, who cannot read a private temp folder.
                user=getpass.getuser(),
                log_dest=f"file {self.log}",
                tls=tls,
                relay_port=self.relay_port,
                relay_password_file=self.relay_password_file,
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def add_user(self, username: str, password: str, relay: bool | None = None) -> None:
        """A doorbell account, or (``relay``, the default for "relay") a relay account."""
        if relay is None:
            relay = username == RELAY_ACCOUNT
        set_user(self.relay_password_file if relay else self.password_file, username, password)
        if self.proc is not None:
            reload_broker(self.pid_file)
            time.sleep(0.2)  # the reload is asynchronous

    def start(self) -> Self:
        self.proc = subprocess.Popen(
            [_find("mosquitto"), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        _wait_port(self.port, self.proc, "mosquitto", self.log)
        return self

    def stop(self) -> None:
        """Stop as an operator would (SIGTERM: sessions are saved to disk)."""
        _terminate(self.proc)
        self.proc = None


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class LocalRedis(_Service):
    """A Redis server on a free loopback port, data in its own folder."""

    def __init__(self, folder: Path, port: int | None = None, appendonly: bool = False) -> None:
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.log = self.dir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        args = [
            _find("redis-server"),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--logfile",
            str(self.log),
            "--appendonly",
            "yes" if self.appendonly else "no",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait_port(self.port, self.proc, "redis-server", self.log)
        return self

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None


def free_cluster_port() -> int:
    """A port whose cluster bus port (+10000) is free and valid too."""
    import random

    while True:
        port = random.randint(20000, 50000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port


class LocalRedisCluster(_Service):
    """A Redis Cluster of ``nodes`` masters on loopback (no replicas), for tests."""

    def __init__(self, folder: Path, nodes: int = 3) -> None:
        self.dir = Path(folder)
        self.ports = [free_cluster_port() for _ in range(nodes)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> Self:
        for port in self.ports:
            d = self.dir / str(port)
            d.mkdir(parents=True, exist_ok=True)
            log = d / "redis.log"
            proc = subprocess.Popen(
                [
                    _find("redis-server"),
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(d / "nodes.conf"),
                    "--dir",
                    str(d),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--logfile",
                    str(log),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.procs.append(proc)
            _wait_port(port, proc, "redis-server (cluster node)", log)
        cli = shutil.which("redis-cli") or "redis-cli"
        r = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in self.ports],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {r.stdout[-500:]}{r.stderr}")
        self._wait_ok()
        return self

    def _wait_ok(self) -> None:
        import redis

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            infos = [redis.Redis(port=p).cluster("info") for p in self.ports]
            if all(i.get("cluster_state") == "ok" for i in infos):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not become ready")

    def client(self) -> object:
        from redis.cluster import RedisCluster

        return RedisCluster(host="127.0.0.1", port=self.ports[0])

    def stop(self) -> None:
        for p in self.procs:
            _terminate(p)
        self.procs = []
