"""An owner adds a privacy mask through the relay; the doorbell blacks it out from the
next frame.  Real Mosquitto (the project's ACL), real Redis, the relay's HTTP API and
durable command outbox, the `footage` client, a simulated doorbell, MP4s decoded
with PyAV pixel by pixel."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis
from conftest import plain_clip
from stack import wait_for
from test_consent_e2e import Home, Relay, run_footage
from test_owner_masks import POLY, assert_masked, frames_of

from protocol import MasksCommand, encode, new_id, utcnow
from protocol.crypto import OwnerKeys
from protocol.decisions import MaskUpdate, decision_hash, sign_decision
from relay import keyspace as ks
from relay.commands import CommandOutbox, CommandPublisher

POLYGON_ARG = " ".join(f"{x},{y}" for x, y in POLY)


@pytest.fixture
def world(stack, tmp_path):
    r = redis.Redis.from_url(stack.redis.url)
    commands = CommandOutbox(r, retry_s=0.5)
    holder: dict = {}
    publisher = CommandPublisher(commands, lambda t, p: holder["pub"].publish(t, p, qos=1))

    def publish(topic: str, payload: bytes) -> None:
        commands.enqueue(topic, payload)
        publisher.wake.set()

    relay = Relay(stack, tmp_path, publish=publish)
    holder["pub"] = relay.pub
    stop = threading.Event()
    threading.Thread(target=publisher.run, args=(stop,), daemon=True).start()
    home = Home(stack, relay, tmp_path, "alice-door", 51.5, -0.12)
    neighbour = Home(stack, relay, tmp_path, "bob-door", 51.5004, -0.12)
    yield relay, home, neighbour, commands
    stop.set()
    home.close()
    neighbour.close()
    relay.close()


def until(home: Home, pred, what: str) -> None:
    """Run the simulated doorbell frame by frame until ``pred`` (its controller takes
    commands with the frames; the command handler and the link run on their threads)."""

    def step() -> bool:
        home.bell.run(1 / 15)
        return bool(pred())

    wait_for(step, 30, what)


def kinds(home: Home, kind: str) -> list:
    return [e for e in home.events if e.kind == kind]


def applied(home: Home) -> list:
    """Owner sets put in force (every boot with none kept announces a null hash)."""
    return [e for e in kinds(home, "masks_applied") if e.data["hash"] is not None]


def press_clip(home: Home, tmp_path, name: str):
    before = len(kinds(home, "clip_saved"))
    home.bell.schedule_press(home.bell.clock.monotonic() + 0.5)
    home.bell.run(10.0)
    saved = kinds(home, "clip_saved")
    assert len(saved) == before + 1
    return frames_of(plain_clip(home.bell, saved[-1].data["clip"], tmp_path / f"{name}.mp4"))


def test_owner_adds_a_mask_through_the_relay_and_the_next_clip_is_black(world, tmp_path):
    relay, alice, bob, commands = world
    state = tmp_path / "alice-client"
    alice.bell.run(3.0)
    frames = press_clip(alice, tmp_path, "before")
    with pytest.raises(AssertionError):
        assert_masked(frames[0], [POLY], "before the owner's mask")

    code, out = run_footage(
        relay, alice.token, "--state", str(state), "masks", "add", "alice-door",
        "--polygon", POLYGON_ARG, "--name", "street", "--reason", "bystander:r-1",
        "--keys", str(alice.keys),
    )  # fmt: skip
    assert code == 0, out
    signed = json.loads((state / "masks" / "alice-door.json").read_text())["update"]
    digest = decision_hash(signed)
    assert digest in out

    until(alice, lambda: applied(alice), "the doorbell to apply the mask")
    (done,) = applied(alice)
    assert done.data["hash"] == digest
    wait_for(lambda: commands.pending() == {}, 30, "masks_applied settles the command")

    frames = press_clip(alice, tmp_path, "after")
    assert len(frames) > 30
    for i, img in enumerate(frames):
        assert_masked(img, [POLY], f"frame {i} of the next clip")
    assert applied(bob) == [], "only the owner's own doorbell"

    # On the public record: that an owner changed masks, and the hash; no polygon,
    # no doorbell, no reason (they are sealed or never sent).
    (entry,) = [e for e in relay.audit.entries() if e["kind"] == "masks_changed"]
    assert entry["data"]["device"] == "alice-door"  # the operator's view, opened
    public = [json.loads(p) for p in relay.audit.public_entries(0, -1)]
    (pub,) = [e for e in public if e["kind"] == "masks_changed"]
    assert pub["actor"] == "owner" and pub["data"]["hash"] == digest
    assert pub["data"]["masks"] == 1
    text = json.dumps(pub)
    assert "alice" not in text and "bystander" not in text
    assert "points" not in text and str(round(POLY[0][0] * 10_000)) not in text
    # And the doorbell's own word that the set with that hash is in force.
    wait_for(
        lambda: [
            e
            for e in relay.audit.entries()
            if e["kind"] == "masks_applied" and e["data"]["hash"] is not None
        ],
        30,
        "applied",
    )
    public = [json.loads(p) for p in relay.audit.public_entries(0, -1)]
    (done,) = [e for e in public if e["kind"] == "masks_applied" and e["data"]["hash"]]
    assert done["actor"] == "doorbell" and done["data"] == {"hash": digest}

    # `footage masks list` is the client's own kept, re-verified set.
    code, out = run_footage(
        relay, alice.token, "--state", str(state), "masks", "list", "alice-door",
        "--keys", str(alice.keys), "--json",
    )  # fmt: skip
    listed = json.loads(out)
    assert listed["hash"] == digest and listed["masks"][0]["name"] == "street"

    # Removing it is a newer signed set without it.
    code, out = run_footage(
        relay, alice.token, "--state", str(state), "masks", "remove", "alice-door", "street",
        "--keys", str(alice.keys),
    )  # fmt: skip
    assert code == 0, out
    until(alice, lambda: len(applied(alice)) == 2, "the removal")
    assert alice.bell.controller.mask_update.masks == []


def test_the_relay_cannot_forge_replay_or_roll_back_masks(world, tmp_path):
    relay, alice, _bob, _commands = world
    state = tmp_path / "alice-client"
    code, out = run_footage(
        relay, alice.token, "--state", str(state), "masks", "add", "alice-door",
        "--polygon", POLYGON_ARG, "--name", "street", "--keys", str(alice.keys),
    )  # fmt: skip
    assert code == 0, out
    until(alice, lambda: applied(alice), "applied")
    accepted = json.loads((state / "masks" / "alice-door.json").read_text())["update"]
    held = alice.bell.controller.mask_update
    kept = (alice.bell.config.device.data_dir / "masks.json").read_bytes()

    def publish(update: str) -> None:
        cmd = MasksCommand(id=new_id(), ts=utcnow(), device="alice-door", update=update)
        relay.pub.publish(*encode(cmd), qos=1)

    # The owner once signed an emptier set that was never delivered; a relay that kept
    # it delivers it now (a rollback with a valid signature and a fresh nonce).
    stale = sign_decision(
        MaskUpdate.create("alice-door", [], issued=held.issued - 10), alice.owner.sign_private
    )
    forged = sign_decision(
        MaskUpdate.create("alice-door", [], issued=held.issued + 100),
        OwnerKeys.generate().sign_private,
    )
    attempts = [
        (accepted, "replay"),  # the accepted one again
        (stale, "rollback"),
        (forged, "bad_signature"),  # the relay's own signature
        ("bm90IGEgZGVjaXNpb24=", "bad_signature"),  # not a signed envelope at all
    ]
    for update, why in attempts:
        refusals = len(kinds(alice, "masks_refused")) + alice.commands.counters["refused"]
        publish(update)
        until(
            alice,
            lambda r=refusals: (
                len(kinds(alice, "masks_refused")) + alice.commands.counters["refused"] > r
            ),
            why,
        )
    alice.bell.run(1.0)
    assert alice.bell.controller.mask_update == held
    assert (alice.bell.config.device.data_dir / "masks.json").read_bytes() == kept
    assert len(applied(alice)) == 1

    # Every refusal is on the public record with its code.
    def refused_codes() -> list[str]:
        return [
            e["data"]["code"]
            for e in relay.audit.entries()
            if e["kind"] == "doorbell_refused" and e["data"]["command"] == "masks"
        ]

    wait_for(lambda: len(refused_codes()) == 4, 30, "the refusals on the record")
    assert sorted(refused_codes()) == sorted(why for _u, why in attempts)
    frames = press_clip(alice, tmp_path, "after-attacks")
    assert_masked(frames[0], [POLY], "the owner's mask still holds")


def test_the_relay_refuses_bad_updates_early(world, tmp_path):
    relay, alice, bob, _commands = world
    import httpx

    stranger = OwnerKeys.generate()
    forged = sign_decision(MaskUpdate.create("alice-door", [], issued=1), stranger.sign_private)

    def post(device: str, token, decision: str) -> httpx.Response:
        return httpx.post(
            f"{relay.url}/v1/devices/{device}/masks",
            json={"decision": decision},
            headers={"Authorization": f"Bearer {token.read_text().strip()}"},
        )

    assert post("alice-door", alice.token, forged).status_code == 422
    mine = sign_decision(MaskUpdate.create("alice-door", [], issued=1), alice.owner.sign_private)
    assert post("alice-door", bob.token, mine).status_code == 404, "only the device's owner"
    assert post("alice-door", alice.token, "x" * 50_000).status_code == 400
    refused = [e for e in relay.audit.entries() if e["kind"] == "masks_refused"]
    assert [e["data"]["code"] for e in refused] == ["bad_signature", "not_found"]
    assert alice.commands.counters["refused"] == 0, "nothing reached the doorbell"


def test_the_web_app_backend_takes_a_signed_set_too(world):
    from test_webapp import session_of

    relay, alice, bob, _commands = world
    headers, csrf = session_of(relay, alice)
    signed = sign_decision(
        MaskUpdate.create("alice-door", [("street", POLY)]), alice.owner.sign_private
    )
    url = f"{relay.url}/app/api/devices/alice-door/masks"
    import httpx

    assert httpx.post(url, json={"signed": signed}, headers=headers).status_code == 403, "CSRF"
    headers = {**headers, "X-CSRF-Token": csrf}
    forged = sign_decision(MaskUpdate.create("alice-door", []), OwnerKeys.generate().sign_private)
    assert httpx.post(url, json={"signed": forged}, headers=headers).status_code == 422
    r = httpx.post(url, json={"signed": signed}, headers=headers)
    assert r.status_code == 200 and r.json()["hash"] == decision_hash(signed)
    until(alice, lambda: applied(alice), "the doorbell to apply it")
    assert alice.bell.controller.masks_hash == decision_hash(signed)
    # The set in force, served back to the page (which checks the owner's signature).
    wait_for(lambda: httpx.get(url, headers=headers).json()["hash"], 30, "the relay to keep it")
    got = httpx.get(url, headers=headers).json()
    assert got == {"device": "alice-door", "hash": decision_hash(signed), "update": signed}
    bob_headers, bob_csrf = session_of(relay, bob)
    r = httpx.post(url, json={"signed": signed}, headers={**bob_headers, "X-CSRF-Token": bob_csrf})
    assert r.status_code == 404, "only the doorbell's owner"
    assert httpx.get(url, headers=bob_headers).status_code == 404, "read by its owner only"


# ------------------------------------------------------------------ one set, many clients

OTHER = [(0.05, 0.05), (0.3, 0.05), (0.3, 0.3), (0.05, 0.3)]
OTHER_ARG = " ".join(f"{x},{y}" for x, y in OTHER)


def relay_holds(relay: Relay, device: str) -> str | None:
    """The hash of the set the relay serves as in force (from masks_applied)."""
    raw = relay.engine.r.get(ks.device_masks(device))
    return json.loads(raw)["hash"] if raw else None


def add_mask(relay: Relay, home: Home, state, name: str, polygon: str) -> tuple[int, str]:
    return run_footage(
        relay, home.token, "--state", str(state), "masks", "add", "alice-door",
        "--polygon", polygon, "--name", name, "--keys", str(home.keys),
    )  # fmt: skip


def test_two_clients_each_add_a_mask_and_the_doorbell_holds_both(
    world, tmp_path, capsys, monkeypatch
):
    """The bug this fixes: a second client (another machine, another state folder, the
    web app) used to build on its own empty set and drop the first client's mask."""
    import footage.masks

    relay, alice, _bob, _commands = world
    # The laptop's change was an hour ago (the client's clock, injected): the desktop's
    # set is newer by `issued` either way, so only continuity can keep "street".
    hour_ago = time.time() - 3600
    with monkeypatch.context() as m:
        m.setattr(footage.masks.time, "time", lambda: hour_ago)
        code, out = add_mask(relay, alice, tmp_path / "laptop", "street", POLYGON_ARG)
    assert code == 0, out
    until(alice, lambda: applied(alice), "the first set")
    first = alice.bell.controller.masks_hash
    wait_for(lambda: relay_holds(relay, "alice-door") == first, 30, "the relay to keep it")

    code, out = add_mask(relay, alice, tmp_path / "desktop", "window", OTHER_ARG)
    assert code == 0, out
    until(alice, lambda: len(applied(alice)) == 2, "the second set")
    held = alice.bell.controller.mask_update
    assert sorted(m.name for m in held.masks) == ["street", "window"]
    assert held.previous == first
    assert kinds(alice, "masks_refused") == []
    frames = press_clip(alice, tmp_path, "both")
    assert_masked(frames[-1], [POLY, OTHER], "both clients' masks")

    # The laptop's next change builds on the desktop's set too (it is newer there).
    wait_for(
        lambda: relay_holds(relay, "alice-door") == alice.bell.controller.masks_hash, 30, "kept"
    )
    code, out = run_footage(
        relay, alice.token, "--state", str(tmp_path / "laptop"), "masks", "remove",
        "alice-door", "nope", "--keys", str(alice.keys),
    )  # fmt: skip
    assert code == 2 and "no mask named 'nope'" in capsys.readouterr().err
    code, out = run_footage(
        relay, alice.token, "--state", str(tmp_path / "laptop"), "masks", "remove",
        "alice-door", "street", "--keys", str(alice.keys),
    )  # fmt: skip
    assert code == 0, out
    until(alice, lambda: len(applied(alice)) == 3, "the removal")
    assert [m.name for m in alice.bell.controller.mask_update.masks] == ["window"]


def test_a_relay_serving_an_older_genuine_set_is_refused_as_stale(world, tmp_path, capsys):
    """A relay that serves an older set the owner really signed cannot make the owner
    sign a mask away: the change names the set it was built on, and the doorbell holds
    another; refused (``stale``, on the record), nothing dropped.  Served the truth
    again, the same client's next try keeps every mask."""
    relay, alice, _bob, _commands = world
    import httpx

    def post(signed: str) -> None:
        resp = httpx.post(
            f"{relay.url}/v1/devices/alice-door/masks",
            json={"decision": signed},
            headers={"Authorization": f"Bearer {alice.token.read_text().strip()}"},
        )
        assert resp.status_code == 200, resp.text

    # Two sets the owner signed a while ago (issued in the past, so the client's next
    # set is newer than both: only ``previous`` tells them apart at the doorbell).
    now = int(time.time())
    key = alice.owner.sign_private
    one = sign_decision(MaskUpdate.create("alice-door", [("street", POLY)], issued=now - 100), key)
    two = sign_decision(
        MaskUpdate.create(
            "alice-door",
            [("street", POLY), ("window", OTHER)],
            issued=now - 50,
            previous=decision_hash(one),
        ),
        key,
    )
    r = relay.engine.r
    post(one)
    until(alice, lambda: applied(alice), "the first set")
    wait_for(lambda: relay_holds(relay, "alice-door") == decision_hash(one), 30, "kept")
    older = r.get(ks.device_masks("alice-door"))
    post(two)
    until(alice, lambda: len(applied(alice)) == 2, "the second set")
    held = alice.bell.controller.mask_update
    wait_for(lambda: relay_holds(relay, "alice-door") == decision_hash(two), 30, "kept")
    truth = r.get(ks.device_masks("alice-door"))

    r.set(ks.device_masks("alice-door"), older)  # the relay serves the older genuine set
    desktop = tmp_path / "desktop"
    code, out = add_mask(relay, alice, desktop, "door", "0.7,0.7 0.9,0.7 0.9,0.9")
    assert code == 0, out  # the relay took it; the doorbell decides
    until(alice, lambda: kinds(alice, "masks_refused"), "the doorbell to refuse it")
    (refused,) = kinds(alice, "masks_refused")
    assert refused.data["code"] == "stale"
    assert alice.bell.controller.mask_update == held
    assert sorted(m.name for m in held.masks) == ["street", "window"]

    def refused_codes() -> list[str]:
        return [
            e["data"]["code"]
            for e in relay.audit.entries()
            if e["kind"] == "doorbell_refused" and e["data"]["command"] == "masks"
        ]

    wait_for(lambda: refused_codes() == ["stale"], 30, "the refusal on the record")
    public = [json.loads(p) for p in relay.audit.public_entries(0, -1)]
    assert [e["data"]["code"] for e in public if e["kind"] == "doorbell_refused"] == ["stale"]

    r.set(ks.device_masks("alice-door"), truth)  # served the truth again
    capsys.readouterr()
    code, out = add_mask(relay, alice, desktop, "door", "0.7,0.7 0.9,0.7 0.9,0.9")
    assert code == 0, out
    told = capsys.readouterr().err
    assert "the doorbell holds a newer mask set than the one your last change" in told, told
    until(alice, lambda: len(applied(alice)) == 3, "the third set")
    names = sorted(m.name for m in alice.bell.controller.mask_update.masks)
    assert names == ["door", "street", "window"]


def test_the_relay_serves_the_set_in_force_to_its_owner_only(world, tmp_path):
    import httpx

    relay, alice, bob, _commands = world

    def get(token) -> httpx.Response:
        return httpx.get(
            f"{relay.url}/v1/devices/alice-door/masks",
            headers={"Authorization": f"Bearer {token.read_text().strip()}"},
        )

    until(alice, lambda: relay_holds(relay, "alice-door") is None, "the boot announcement")
    assert get(alice.token).json() == {"device": "alice-door", "hash": None, "update": None}
    code, out = add_mask(relay, alice, tmp_path / "c", "street", POLYGON_ARG)
    assert code == 0, out
    until(alice, lambda: applied(alice), "applied")
    wait_for(lambda: get(alice.token).json()["hash"], 30, "the relay to keep it")
    body = get(alice.token).json()
    signed = json.loads((tmp_path / "c" / "masks" / "alice-door.json").read_text())["update"]
    assert body == {"device": "alice-door", "hash": decision_hash(signed), "update": signed}
    assert get(bob.token).status_code == 404, "only the doorbell's owner"
