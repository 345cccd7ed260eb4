"""A stolen doorbell gives away no clip: its SD card holds keys sealed to the owner only.

The thief images the whole data folder after the doorbell recorded clips, queued
their announcements and carried out a release.  Every clip key (which the test
learns with the owner's private key) is searched for in every form in every
file; a trial decryption with every 32-byte value the image holds, raw or
decoded, fails; and the same search finds a key planted the way older firmware
kept them, so it can see what it looks for.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

from custody import expand, find

from firmware.announce import Announcer
from firmware.consent import CommandHandler, NonceLedger
from firmware.outbox import Outbox
from protocol import ReleaseCommand, new_id, utcnow
from protocol.crypto import (
    CryptoFailure,
    OwnerKeys,
    decrypt_bytes,
    sign_payload,
    unb64,
    unwrap_key,
)
from protocol.decisions import approval_payload


def image(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def opens(ciphertext: bytes, candidate: bytes) -> bool:
    try:
        decrypt_bytes(ciphertext, candidate)
    except CryptoFailure:
        return False
    return True


def test_an_imaged_data_folder_opens_no_clip_without_the_owners_key(make_bell, recorder):
    bell = make_bell("porch")
    data = bell.config.device.data_dir
    owner = bell.owner
    assert owner is not None
    outbox = Outbox(data / "outbox.sqlite")
    announce = Announcer(bell.config.device.id, outbox)
    bell.schedule_press(2.0)
    bell.schedule_press(30.0)
    bell.run(45.0)
    saved = recorder.of("clip_saved")
    assert len(saved) >= 2
    for ev in recorder.events:
        announce(ev)
    # A release through the doorbell: the approval (with the key sealed to the
    # requester) passes through it and its nonce is kept.
    requester = OwnerKeys.generate()
    clip_id = saved[0].data["clip"]
    record = bell.store.get(clip_id)
    key = unwrap_key(unb64(record.wrapped_key), owner.box_private)
    payload = approval_payload(
        "req-0001",
        bell.config.device.id,
        [clip_id],
        requester.box_public,
        time.time() + 60,
        {clip_id: key},
    )
    signed = base64.b64encode(json.dumps(sign_payload(payload, owner.sign_private)).encode())
    sent: list = []
    handler = CommandHandler(
        bell.config.device.id,
        owner.sign_public,
        bell.store,
        sent.append,
        NonceLedger(data / "nonces.sqlite"),
        upload=lambda url, path: None,
    )
    handler.handle(
        ReleaseCommand(
            id=new_id(),
            ts=utcnow(),
            device=bell.config.device.id,
            request_id="req-0001",
            approval=signed.decode(),
            upload_urls={clip_id: "https://blobs/x"},
        )
    )
    assert handler.counters["released"] == 1, handler.refusals

    # The thief's copy.
    card = image(data)
    assert any(name.endswith(".mp4.enc") for name in card)
    keys = {
        ev.data["clip"]: unwrap_key(
            unb64(bell.store.get(ev.data["clip"]).wrapped_key), owner.box_private
        )
        for ev in saved
    }
    assert find(keys, card) == [], "a clip key is on the card"

    # Every 32-byte value on the card, raw or decoded from base64/hex: none is a clip's
    # key; and each value that decodes to exactly 32 bytes (a key's size) is tried.
    clips = {c: card[f"clips/{c}.mp4.enc"] for c in keys}
    for c in clips:
        assert opens(clips[c], keys[c]), "the owner's key opens it"
    small = {k: v for k, v in card.items() if not k.endswith(".enc")}
    windows: set[bytes] = set()
    exact: set[bytes] = set()
    for blob in expand(small).values():
        windows.update(blob[i : i + 32] for i in range(max(0, len(blob) - 31)))
        if len(blob) == 32:
            exact.add(blob)
    assert len(windows) > 1000 and exact, "the card was read"
    assert not windows & set(keys.values())
    for candidate in exact:
        assert not any(opens(enc, candidate) for enc in clips.values())

    # The search sees what it looks for: plant a key the way older firmware kept it.
    (data / "keys").mkdir()
    (data / "keys" / f"{clip_id}.key").write_bytes(keys[clip_id])
    assert find(keys, image(data)) == [(clip_id, f"keys/{clip_id}.key")]
