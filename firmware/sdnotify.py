"""systemd's notify protocol: READY=1 once started, WATCHDOG=1 while alive.

The controller thread feeds the watchdog, so if it hangs, systemd restarts the
doorbell (``WatchdogSec=`` in the unit).  Outside systemd this does nothing.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self, min_interval_s: float | None = None) -> None:
        self.address = os.environ.get("NOTIFY_SOCKET")
        usec = os.environ.get("WATCHDOG_USEC")
        # Feed at half the watchdog period, as sd_watchdog_enabled(3) advises.
        self.interval = min_interval_s or (int(usec) / 2e6 if usec else 10.0)
        self._last = 0.0

    def _send(self, message: str) -> None:
        if not self.address:
            return
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]  # abstract namespace
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())

    def ready(self) -> None:
        self._send("READY=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._send("WATCHDOG=1")
