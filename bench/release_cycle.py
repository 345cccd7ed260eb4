"""End to end on simulated doorbells: request → owner approves → release → requester fetches.

Ours: the whole consent cycle of ``make demo`` (relay serve, Mosquitto, Redis,
three simulated doorbells), timed from the owner's approval to the decrypted
MP4 on the requester's disk: signature checks on the relay and the doorbell,
the command through the broker, the approval check, upload, the ``released``
message, indexing, download, sha256 check and decryption.  Baseline in the same
run: the same ciphertext put and fetched over plain HTTP on loopback, with no
consent, no broker and no crypto: the transport floor.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import ClassVar

import demo.__main__ as demo
from bench.report import Report
from testing.localstack import free_port


class _Store(http.server.BaseHTTPRequestHandler):
    blobs: ClassVar[dict[str, bytes]] = {}

    def do_PUT(self) -> None:
        self.blobs[self.path] = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201)
        self.end_headers()

    def do_GET(self) -> None:
        body = self.blobs[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def _plain_http(data: bytes) -> float:
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Store)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{port}/clip"
    t0 = time.perf_counter()
    req = urllib.request.Request(url, data=data, method="PUT")
    urllib.request.urlopen(req).read()
    got = urllib.request.urlopen(url).read()
    took = time.perf_counter() - t0
    server.shutdown()
    assert got == data
    return took


def run(quick: bool = False) -> Report:
    root = Path(tempfile.mkdtemp(prefix="bench-release-"))
    timings: dict[str, float] = {}
    with ExitStack() as stack, contextlib.redirect_stdout(io.StringIO()):
        demo.story(root, short=True, stack=stack, timings=timings)
    released = sorted((root / "released-to-police").glob("*.mp4"))
    ciphertext = b"".join(
        p.read_bytes() for p in (root / "doorbells" / "alice-door" / "clips").glob("*.mp4.enc")
    )
    floor = _plain_http(ciphertext)
    report = Report(
        "release_cycle",
        f"Approval → decrypted clips at the requester "
        f"({len(released)} clips, {len(ciphertext) / 1e6:.1f} MB)",
    )
    report.add(
        "approval → fetched and decrypted",
        timings["approved_to_fetched"] * 1000,
        floor * 1000,
        "plain HTTP PUT + GET of the same bytes",
        "ms",
    )
    report.extra = {"timings_s": timings}
    return report


if __name__ == "__main__":
    r = run()
    r.show()
    r.save()
