"""docs/formats.md is enough: a client written from it alone completes a release.

The relay, the broker and the doorbell are the project's; the requester's and the
owner's side are tests/formats_client.py, which imports nothing of the project.
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

import formats_client as fc
from conftest import ffprobe, plain_clip
from nacl.signing import SigningKey
from stack import wait_for
from test_consent_e2e import Home, Relay

ALLOWED = {"__future__", "base64", "hashlib", "json", "os", "struct", "typing"}
ALLOWED |= {"httpx", "cryptography", "nacl"}


def test_the_client_imports_nothing_of_the_project():
    tree = ast.parse(Path(fc.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= ALLOWED, imported - ALLOWED


def test_request_approve_fetch_decrypt_from_the_documented_formats(stack, tmp_path):
    from nacl.public import PrivateKey

    relay = Relay(stack, tmp_path)
    home = Home(stack, relay, tmp_path, "carol-door", 51.5000, -0.1200)
    try:
        saved = home.record_clip()
        wait_for(lambda: relay.engine.index.counts()["clips"] == 1, 30, "the clip indexed")

        from nacl.signing import SigningKey

        requester_box = PrivateKey.generate()
        requester_seed = bytes(SigningKey.generate())
        token = relay.engine.add_requester("county", "agency", bytes(requester_box.public_key))
        requester = fc.Api(relay.url, token)
        owner = fc.Api(relay.url, home.token.read_text().strip())
        # The owner's keys, read from the key files as §1 describes.
        sign_seed = fc.read_key_file((home.keys / "sign.key").read_text())
        box_private = fc.read_key_file((home.keys / "box.key").read_text())

        rid = fc.file_request(
            requester,
            51.5001,
            -0.12,
            saved.data["start"] - 60,
            min(time.time(), saved.data["start"] + 3600),
            signer=(requester_seed, bytes(requester_box.public_key)),
        )
        wait_for(lambda: owner.call("GET", "/v1/asks"), 10, "the owner to be asked")
        (ask,) = owner.call("GET", "/v1/asks")
        assert ask["request_id"] == rid
        assert fc.signed_box_key(ask) == fc.b64(bytes(requester_box.public_key))
        done = fc.approve(owner, ask, sign_seed, box_private, int(time.time()) + 600)
        assert done["status"] == "approved"
        wait_for(lambda: requester.call("GET", f"/v1/requests/{rid}")["released"], 30, "release")
        (plain,) = fc.fetch(requester, rid, bytes(requester_box)).values()

        expected = plain_clip(home.bell, saved.data["clip"], tmp_path / "owner.mp4").read_bytes()
        assert plain == expected
        (tmp_path / "got.mp4").write_bytes(plain)
        assert ffprobe(tmp_path / "got.mp4")["streams"][0]["codec_name"] == "h264"
    finally:
        home.close()
        relay.close()


def test_owner_masks_from_the_documented_formats(stack, tmp_path):
    from test_owner_masks import POLY, assert_masked, frames_of

    relay = Relay(stack, tmp_path)
    home = Home(stack, relay, tmp_path, "dave-door", 51.5000, -0.1200)
    try:
        owner = fc.Api(relay.url, home.token.read_text().strip())
        sign_seed = fc.read_key_file((home.keys / "sign.key").read_text())
        now = int(time.time())
        out, digest = fc.set_masks(owner, "dave-door", {"street": POLY}, sign_seed, now, now + 600)
        assert out["hash"] == digest and out["masks"] == 1

        def applied() -> list:
            home.bell.run(1 / 15)
            # (Each boot announces the set kept, here none: a null hash.)
            return [e for e in home.events if e.kind == "masks_applied" and e.data["hash"]]

        wait_for(applied, 30, "the doorbell to apply the mask")
        assert applied()[0].data["hash"] == digest
        home.bell.schedule_press(home.bell.clock.monotonic() + 0.5)
        home.bell.run(8.0)
        (saved,) = [e for e in home.events if e.kind == "clip_saved"]
        frames = frames_of(plain_clip(home.bell, saved.data["clip"], tmp_path / "c.mp4"))
        assert_masked(frames[0], [POLY], "masked by a documented-format client")

        # The next set is built on the one in force, named by its hash (``previous``);
        # one built on nothing is refused as stale and drops nothing.
        sign_public = SigningKey(sign_seed).verify_key.encode()
        wait_for(lambda: fc.held_masks(owner, "dave-door", sign_public)[0], 30, "kept")
        held, payload = fc.held_masks(owner, "dave-door", sign_public)
        assert held == digest and payload["masks"][0]["name"] == "street"
        two = {"street": POLY, "door": [(0.7, 0.7), (0.9, 0.7), (0.9, 0.9)]}
        fc.set_masks(owner, "dave-door", two, sign_seed, now + 1, now + 600)  # no previous

        def refused() -> list:
            home.bell.run(1 / 15)
            return [e for e in home.events if e.kind == "masks_refused"]

        wait_for(refused, 30, "the doorbell to refuse it")
        assert refused()[0].data["code"] == "stale"
        out, second = fc.set_masks(
            owner, "dave-door", two, sign_seed, now + 2, now + 600, previous=held
        )
        wait_for(lambda: len(applied()) == 2, 30, "the doorbell to apply the second set")
        assert applied()[1].data["hash"] == second
        assert sorted(m.name for m in home.bell.controller.mask_update.masks) == ["door", "street"]
    finally:
        home.close()
        relay.close()


def test_a_bystander_and_an_owner_from_the_documented_formats(stack, tmp_path):
    from nacl.public import PrivateKey

    from relay.config import BystanderConfig

    relay = Relay(stack, tmp_path)
    relay.engine.bystander = BystanderConfig(difficulty=10)
    home = Home(stack, relay, tmp_path, "dave-door", 51.5000, -0.1200)
    try:
        saved = home.record_clip()
        wait_for(lambda: relay.engine.index.counts()["clips"] == 1, 30, "the clip indexed")
        owner = fc.Api(relay.url, home.token.read_text().strip())
        sign_seed = fc.read_key_file((home.keys / "sign.key").read_text())
        box_private = fc.read_key_file((home.keys / "box.key").read_text())

        me = PrivateKey.generate()
        start = saved.data["start"] - 60
        end = min(time.time(), start + 3600)
        where = {"lat": 51.5, "lon": -0.12, "radius_m": 40.0, "start": start,
                 "end": end, "description": "yellow raincoat"}  # fmt: skip
        copy = fc.bystander_request(
            relay.url, {**where, "kind": "copy", "box_public": fc.b64(bytes(me.public_key))}
        )
        erase = fc.bystander_request(relay.url, {**where, "kind": "erase"})
        wait_for(lambda: len(owner.call("GET", "/v1/asks")) == 2, 10, "the owner to be asked")
        asks = {a["bystander"]["kind"]: a for a in owner.call("GET", "/v1/asks")}
        assert asks["copy"]["requester_kind"] == "bystander"

        expires = int(time.time()) + 600
        assert fc.answer_copy(owner, asks["copy"], sign_seed, box_private, expires)["status"] == (
            "approved"
        )
        wait_for(lambda: fc.bystander_fetch(relay.url, copy, bytes(me)), 30, "the copy")
        (plain,) = fc.bystander_fetch(relay.url, copy, bytes(me)).values()
        expected = plain_clip(home.bell, saved.data["clip"], tmp_path / "owner.mp4").read_bytes()
        assert plain == expected
        (tmp_path / "got.mp4").write_bytes(plain)
        assert ffprobe(tmp_path / "got.mp4")["streams"][0]["codec_name"] == "h264"

        done = fc.answer_erase(owner, asks["erase"], sign_seed, expires)
        assert done["status"] == "erased" and done["released_before"] == [copy["id"]]
        wait_for(lambda: home.bell.store.get(saved.data["clip"]) is None, 30, "the erasure")
        (answer,) = fc.bystander_status(relay.url, erase)["answers"]
        assert (answer["outcome"], answer["clips"]) == ("erase", 1)
    finally:
        home.close()
        relay.close()
