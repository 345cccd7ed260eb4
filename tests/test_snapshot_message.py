"""A ring's snapshot leaves the doorbell sealed to the owner, small enough for one message."""

from __future__ import annotations

import io

import av
import numpy as np

from firmware.announce import SNAPSHOT_MAX_JPEG, to_message
from firmware.controller import DoorbellEvent
from firmware.jpeg import encode_jpeg
from protocol import Snapshot, decode, encode
from protocol.crypto import OwnerKeys, unb64, unwrap_key


def size_of(jpeg: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(jpeg)) as c:
        f = next(c.decode(video=0))
        return f.width, f.height


def snapshot_event(jpeg: bytes) -> DoorbellEvent:
    return DoorbellEvent(
        "ring_snapshot", "e" * 32, 1.0, 1_796_000_000.0, {"ring": "r" * 32, "jpeg": jpeg}
    )


def test_a_full_size_snapshot_is_shrunk_to_fit_and_sealed_to_the_owner():
    owner = OwnerKeys.generate()
    # A porch: smooth light with a little sensor noise, 720p at the best quality.
    y, x = np.mgrid[0:720, 0:1280]
    scene = np.stack([(x // 8) % 256, (y // 5) % 256, ((x + y) // 12) % 256], axis=-1)
    noise = np.random.default_rng(1).integers(0, 24, scene.shape)
    big = encode_jpeg((scene + noise).clip(0, 255).astype(np.uint8), quality=2)
    assert len(big) > SNAPSHOT_MAX_JPEG, "a Pi camera's full-size JPEG does not fit"
    msg = to_message("front-door", snapshot_event(big), owner.box_public)
    assert isinstance(msg, Snapshot) and msg.ring_id == "r" * 32
    assert decode(*encode(msg)) == msg, "it is a valid message, under the size limit"
    jpeg = unwrap_key(unb64(msg.sealed), owner.box_private)
    w, h = size_of(jpeg)
    assert (w, h) in ((640, 360), (320, 180), (160, 90))


def test_a_small_snapshot_goes_as_it_is_and_none_without_an_owner_key():
    owner = OwnerKeys.generate()
    small = encode_jpeg(np.full((240, 320, 3), 128, dtype=np.uint8))
    msg = to_message("front-door", snapshot_event(small), owner.box_public)
    assert isinstance(msg, Snapshot)
    assert unwrap_key(unb64(msg.sealed), owner.box_private) == small
    assert small not in msg.model_dump_json().encode()
    assert to_message("front-door", snapshot_event(small), None) is None
