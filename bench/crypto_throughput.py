"""Clip encryption on the doorbell: throughput against the video bitrate it must keep up with.

Ours: ChaCha20-Poly1305 in the chunked STREAM construction (firmware's clip
writer).  Baselines in the same run: the bitrate of the main stream (what the
doorbell must sustain), and AES-256-GCM over the same chunks (fast here, with
AES instructions; a Pi 4 has none, which is why the doorbell uses ChaCha20).
"""

from __future__ import annotations

import io
import os
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.report import Report
from protocol.crypto import CHUNK, EncryptingWriter, new_clip_key

VIDEO_BITRATE = 2_000_000  # bits/s, the default camera.bitrate


def run(quick: bool = False) -> Report:
    size = (4 if quick else 64) << 20
    data = os.urandom(size)
    report = Report("crypto_throughput", f"Clip encryption ({size >> 20} MiB)")

    key = new_clip_key()
    t0 = time.perf_counter()
    w = EncryptingWriter(io.BytesIO(), key)
    for i in range(0, size, CHUNK):
        w.write(data[i : i + CHUNK])
    w.close()
    ours = size / (time.perf_counter() - t0) / 1e6

    aes = AESGCM(AESGCM.generate_key(bit_length=256))
    nonce = os.urandom(12)  # one nonce for all: a speed measurement only, never do this for real
    t0 = time.perf_counter()
    for i in range(0, size, CHUNK):
        aes.encrypt(nonce, data[i : i + CHUNK], b"")
    aes_rate = size / (time.perf_counter() - t0) / 1e6

    report.add(
        "encryption throughput",
        ours,
        VIDEO_BITRATE / 8 / 1e6,
        "video bitrate (2 Mbit/s)",
        "MB/s",
        better="higher",
        note="must be far above the bitrate",
    )
    report.add(
        "encryption throughput",
        ours,
        aes_rate,
        "AES-256-GCM (AES-NI)",
        "MB/s",
        better="higher",
        note="a Pi 4 has no AES instructions",
    )
    return report


if __name__ == "__main__":
    r = run()
    r.show()
    r.save()
