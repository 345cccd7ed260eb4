"""Adversarial review of the owner-signed run-time masks (issue 17 part).

Each test is one attacker trying to break "masks before encoding" or "every change is
the owner's signed decision, on the record": the relay's operator (real Mosquitto,
Redis and the relay's API, through test_masks_e2e's ``world``), a thief with the SD
card (the real firmware on simulated hardware, test_owner_masks' ``Bell``), and the
timing between accepting an update and the first frame it covers (the sim camera, and
the Pi backend driven the way picamera2's event loop drives it).  Attacks already
covered by test_owner_masks.py / test_masks_e2e.py are not repeated here.
"""

from __future__ import annotations

import json

import httpx
from stack import wait_for
from test_masks_e2e import applied, kinds, press_clip, until, world  # noqa: F401 - a fixture
from test_owner_masks import (  # noqa: F401 - fixtures
    DEVICE,
    POLY,
    assert_masked,
    bells,
    frames_of,
    owner,
    update,
)

from protocol import MasksCommand, encode, new_id, utcnow
from protocol.crypto import b64
from protocol.decisions import MaskUpdate, decision_hash, sign_decision

NESTED = b64(b"[" * 36_000)
"""Fits the 48 000-character limit of a cmd/masks (and of the API's field), and nests
deeper than Python's JSON decoder recurses."""


def _nested_envelope() -> str:
    """A signed-envelope shape whose *payload* nests too deep (the signature is junk)."""
    return b64(json.dumps({"payload": b64(b"[" * 20_000), "signature": b64(bytes(64))}).encode())


def _publish(relay, device: str, signed: str) -> None:
    """The relay's operator puts anything on the doorbell's command topic."""
    cmd = MasksCommand(id=new_id(), ts=utcnow(), device=device, update=signed)
    relay.pub.publish(*encode(cmd), qos=1)


def _post(relay, device: str, token, decision: str) -> httpx.Response:
    return httpx.post(
        f"{relay.url}/v1/devices/{device}/masks",
        json={"decision": decision},
        headers={"Authorization": f"Bearer {token.read_text().strip()}"},
    )


def _doorbell_refusals(relay) -> list[str]:
    return [
        e["data"]["code"]
        for e in relay.audit.entries()
        if e["kind"] == "doorbell_refused" and e["data"]["command"] == "masks"
    ]


# ------------------------------------------------------------------ the relay's operator


def test_a_too_deeply_nested_update_is_one_clear_refusal_everywhere(world, tmp_path):  # noqa: F811
    """Bad input: the relay answers 422 and records it, the doorbell refuses it on the
    record (so the relay's pending command settles), and nothing crashes."""
    relay, alice, _bob, _commands = world
    for junk in (NESTED, _nested_envelope()):
        r = _post(relay, "alice-door", alice.token, junk)
        assert r.status_code == 422, (r.status_code, r.text[:200])
    refused = [e["data"]["code"] for e in relay.audit.entries() if e["kind"] == "masks_refused"]
    assert refused == ["bad_signature", "bad_signature"]

    for i, junk in enumerate((NESTED, _nested_envelope())):
        _publish(relay, "alice-door", junk)
        until(alice, lambda n=i + 1: alice.commands.counters["refused"] == n, "a refusal")
    assert alice.commands.counters["failed"] == 0
    wait_for(lambda: len(_doorbell_refusals(relay)) == 2, 30, "the refusals on the record")
    assert _doorbell_refusals(relay) == ["bad_signature", "bad_signature"]

    # And the doorbell still takes the owner's real update.
    good = sign_decision(
        MaskUpdate.create("alice-door", [("street", POLY)]), alice.owner.sign_private
    )
    assert _post(relay, "alice-door", alice.token, good).status_code == 200
    until(alice, lambda: applied(alice), "the good update")


def test_no_command_path_crashes_on_nesting_at_the_doorbell(bells, owner):  # noqa: F811
    """The same junk straight to the doorbell's command handler (no relay in front):
    refused with a code, announced, counted as refused (not as a crash)."""
    bell = bells(owner)
    bell.send(NESTED)
    (refusal,) = bell.refusals()
    assert refusal.code == "bad_signature" and refusal.command == "masks"
    assert bell.handler.counters == {"released": 0, "deleted": 0, "refused": 1, "failed": 0}


# ------------------------------------------------------------------ a thief with the SD card


def test_both_kept_files_deleted_is_on_the_record_at_boot(bells, owner, tmp_path):  # noqa: F811
    """Deleting masks.json and masks.bak.json makes the doorbell run without the owner's
    masks (nothing on the card can say they existed).  What it must not do is run so
    silently: at every boot it announces the owner set in force, by hash, and "none"
    (a null hash) when it has none, so the record shows the set changed without a
    signed decision."""
    data = tmp_path / "bell"
    bell = bells(owner, data=data)
    signed = update(owner, [("street", POLY)], issued=2000)
    bell.send(signed)
    bell.close()
    (data / "masks.json").unlink()
    (data / "masks.bak.json").unlink()

    again = bells(owner, data=data)
    (boot,) = again.recorder.of("masks_applied")
    assert boot.data["hash"] is None and boot.data["masks"] == 0
    assert again.sim.controller.mask_update is None
    # The announcement the relay records (an event, masks_hash null).
    from firmware.announce import to_message

    msg = to_message(DEVICE, boot)
    assert msg.kind == "event" and msg.type == "masks_applied" and msg.masks_hash is None
    # The owner's next update is taken as usual.
    again.send(update(owner, [("street", POLY)], issued=2001))
    assert again.sim.controller.masks_hash is not None


def test_files_rolled_back_to_an_older_signed_set_show_its_hash(bells, owner, tmp_path):  # noqa: F811
    """Both files replaced by an older set the owner really signed: the doorbell cannot
    tell (it is signed), but it announces the older set's hash at boot, so the record
    shows a hash other than the last one applied; and the newer update cannot simply be
    replayed to undo it, the owner signs a new one (build_update moves issued on)."""
    data = tmp_path / "bell"
    bell = bells(owner, data=data)
    older = update(owner, [("street", POLY)], issued=2000)
    bell.send(older)
    old_file = (data / "masks.json").read_bytes()
    newer = update(owner, [("street", POLY), ("more", [(0, 0), (0.3, 0), (0, 0.3)])], issued=2001)
    bell.send(newer)
    bell.close()
    (data / "masks.json").write_bytes(old_file)
    (data / "masks.bak.json").write_bytes(old_file)

    again = bells(owner, data=data)
    (boot,) = again.recorder.of("masks_applied")
    assert boot.data["hash"] == decision_hash(older) != decision_hash(newer)
    again.send(newer)  # the relay replays the newer one: its nonce is spent
    (refusal,) = again.refusals()
    assert refusal.code == "replay"


def test_a_kept_file_nested_too_deep_is_refused_not_a_crash_at_boot(bells, owner, tmp_path):  # noqa: F811
    data = tmp_path / "bell"
    bell = bells(owner, data=data)
    signed = update(owner, [("street", POLY)], issued=2000)
    bell.send(signed)
    bell.close()
    (data / "masks.json").write_text("[" * 100_000)

    again = bells(owner, data=data)  # booting is the test: it used to raise
    (refused,) = again.recorder.of("masks_refused")
    assert refused.data["code"] == "malformed" and "masks.json" in refused.data["reason"]
    assert again.sim.controller.masks_hash == decision_hash(signed)  # from the copy


def test_the_boot_state_reaches_the_public_record(world):  # noqa: F811
    """The boot announcement goes where the others go: the relay's log, publicly as a
    doorbell's ``masks_applied`` with a null hash, and it settles no pending command."""
    relay, _alice, _bob, commands = world

    def boots() -> list:
        return [e for e in relay.audit.entries() if e["kind"] == "masks_applied"]

    wait_for(lambda: len(boots()) == 2, 30, "both doorbells' boot state on the record")
    assert [e["data"] for e in boots()] == [{"hash": None}, {"hash": None}]
    public = [json.loads(p) for p in relay.audit.public_entries(0, -1)]
    states = [e for e in public if e["kind"] == "masks_applied"]
    assert [(e["actor"], e["data"]) for e in states] == [("doorbell", {"hash": None})] * 2
    assert commands.pending() == {}
