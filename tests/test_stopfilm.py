"""A passer-by asks that a spot stop being filmed; the owner accepts and the doorbell
blacks it out from the next clip (issue 17, "masks from requests").

Real Mosquitto (the project's ACL), real Redis, the relay's HTTP API and durable command
outbox, the `footage` client, a simulated doorbell, MP4s decoded with PyAV pixel by
pixel.  The world (relay, Alice's and Bob's doorbells, the outbox) is test_masks_e2e's;
the proof of work is lowered to 8 bits as in test_bystander.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
import test_masks_e2e
from stack import wait_for
from test_bystander import solved
from test_consent_e2e import Relay, run_footage
from test_masks_e2e import applied, kinds, press_clip, until
from test_owner_masks import POLY, assert_masked

from protocol import bystander as bys
from protocol.crypto import OwnerKeys
from protocol.decisions import MaskUpdate, decision_hash, sign_decision
from relay.config import BystanderConfig

world = test_masks_e2e.world
"""The fixture: a relay with the durable outbox, Alice's and Bob's doorbells."""

PROPOSED = [list(p) for p in POLY]
"""What the passer-by draws: the irregular quadrilateral test_owner_masks checks."""


def file_stop_filming(relay: Relay, clip: dict, polygon: list) -> dict:
    """A passer-by's stop_filming request over the clip's time and place."""
    relay.engine.bystander = BystanderConfig(
        difficulty=8, requests_per_window=50, challenges_per_window=50
    )
    start = clip["start"] - 60
    body = {
        "lat": 51.5,
        "lon": -0.12,
        "radius_m": 30.0,
        "start": start,
        "end": min(start + 1200, time.time()),
        "kind": "stop_filming",
        "description": "I live opposite: please stop filming my front window",
        "polygon": polygon,
        **solved(relay),
    }
    resp = httpx.post(f"{relay.url}/v1/bystander/requests", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()


def asks_of(relay: Relay, home) -> list[dict]:
    code, out = run_footage(relay, home.token, "asks", "--json")
    assert code == 0, out
    return json.loads(out)


def answer(relay: Relay, home, ask_id: str, body: dict) -> httpx.Response:
    return httpx.post(
        f"{relay.url}/v1/asks/{ask_id}/answer",
        json=body,
        headers={"Authorization": f"Bearer {home.token.read_text().strip()}"},
    )


def test_an_accepted_stop_filming_mask_is_black_in_the_next_clip(world, tmp_path):
    relay, alice, bob, commands = world
    state = tmp_path / "alice-client"
    alice.bell.run(3.0)
    frames = press_clip(alice, tmp_path, "before")
    with pytest.raises(AssertionError):
        assert_masked(frames[0], [POLY], "before the bystander's mask")
    clip = kinds(alice, "clip_saved")[-1].data
    wait_for(lambda: relay.engine.index.counts()["clips"] >= 1, 30, "the clip indexed")
    filed = file_stop_filming(relay, clip, PROPOSED)
    wait_for(lambda: asks_of(relay, alice), 10, "Alice's ask")
    (ask,) = asks_of(relay, alice)
    assert ask["bystander"]["polygon"] == PROPOSED

    # The relay records an accept only with the owner's signed set holding exactly the
    # proposed polygon, for the ask's doorbell; each refusal leaves the ask pending and
    # sends the doorbell nothing.
    def signed_by(key: bytes, device: str, masks) -> str:
        return sign_decision(MaskUpdate.create(device, masks), key)

    mine = alice.owner.sign_private
    other_spot = [(0.1, 0.1), (0.3, 0.1), (0.3, 0.3)]
    moved = [(x, min(y + 0.01, 1.0)) for x, y in POLY]
    refusals = [
        ({"answer": "accept"}, "masks"),
        ({"answer": "accept", "masks": signed_by(mine, "alice-door", [])}, "proposed polygon"),
        (
            {"answer": "accept", "masks": signed_by(mine, "alice-door", [("x", other_spot)])},
            "proposed polygon",
        ),
        (
            {"answer": "accept", "masks": signed_by(mine, "alice-door", [("x", moved)])},
            "proposed polygon",
        ),
        ({"answer": "accept", "masks": signed_by(mine, "bob-door", [("x", POLY)])}, "bob-door"),
        (
            {
                "answer": "accept",
                "masks": signed_by(OwnerKeys.generate().sign_private, "alice-door", [("x", POLY)]),
            },
            "not signed by the owner",
        ),
    ]
    for body, why in refusals:
        resp = answer(relay, alice, ask["id"], body)
        assert resp.status_code == 422, (why, resp.text)
        assert why in resp.json()["reason"], (why, resp.json())
    assert asks_of(relay, alice)[0]["status"] == "pending"
    assert commands.pending() == {}, "nothing was sent to a doorbell"
    assert not [e for e in relay.audit.entries() if e["kind"] in ("bystander_answer",
                                                                  "masks_changed")]  # fmt: skip
    # Bob cannot answer Alice's ask, even with a set that holds the polygon.
    bobs = signed_by(bob.owner.sign_private, "alice-door", [("x", POLY)])
    assert answer(relay, bob, ask["id"], {"answer": "accept", "masks": bobs}).status_code == 404

    # Alice accepts with the client: one call carrying her signed set.
    code, out = run_footage(
        relay, alice.token, "--state", str(state), "answer", ask["id"], "accept",
        "--keys", str(alice.keys),
    )  # fmt: skip
    assert code == 0, out
    signed = json.loads((state / "masks" / "alice-door.json").read_text())["update"]
    digest = decision_hash(signed)
    assert digest in out and "accepted" in out

    until(alice, lambda: applied(alice), "the doorbell to apply the mask")
    (done,) = applied(alice)
    assert done.data["hash"] == digest
    held = alice.bell.controller.mask_update
    assert [m.name for m in held.masks] == [f"bystander-{ask['id']}"]
    assert held.masks[0].polygon() == [tuple(p) for p in POLY]
    assert held.reason == f"bystander:{ask['request_id']}"
    wait_for(lambda: commands.pending() == {}, 30, "masks_applied settles the command")

    frames = press_clip(alice, tmp_path, "after")
    assert len(frames) > 30
    for i, img in enumerate(frames):
        assert_masked(img, [POLY], f"frame {i} of the next clip")
    assert applied(bob) == [], "only the asked owner's doorbell"

    # The passer-by learns "accepted" and when: no home, no doorbell, no mask hash.
    token = {"Authorization": f"Bearer {filed['status_token']}"}
    status = httpx.get(f"{relay.url}/v1/bystander/requests/{filed['id']}", headers=token).json()
    (told,) = status["answers"]
    assert set(told) == {"outcome", "at"} and told["outcome"] == "accept"
    assert "alice" not in json.dumps(status) and digest not in json.dumps(status)
    (ask,) = asks_of(relay, alice)
    assert ask["status"] == "accepted" and ask["bystander"]["answer"]["masks_hash"] == digest
    # Answered once: a second accept is refused and sends nothing.
    again = answer(relay, alice, ask["id"], {"answer": "accept", "masks": signed})
    assert again.status_code == 422


def test_a_second_accept_keeps_the_first_mask(world, tmp_path):
    """Two passers-by, two spots: the second accepted set still holds the first mask
    (the client builds on the set it kept, never on what a relay says)."""
    relay, alice, _bob, _commands = world
    state = tmp_path / "alice-client"
    alice.bell.run(2.0)
    press_clip(alice, tmp_path, "clip")
    clip = kinds(alice, "clip_saved")[-1].data
    wait_for(lambda: relay.engine.index.counts()["clips"] >= 1, 30, "the clip indexed")
    second = [[0.05, 0.05], [0.3, 0.05], [0.3, 0.3], [0.05, 0.3]]
    file_stop_filming(relay, clip, PROPOSED)
    file_stop_filming(relay, clip, second)
    wait_for(lambda: len(asks_of(relay, alice)) == 2, 10, "both asks")
    for ask in sorted(asks_of(relay, alice), key=lambda a: a["bystander"]["polygon"] != PROPOSED):
        code, out = run_footage(
            relay, alice.token, "--state", str(state), "answer", ask["id"], "accept",
            "--keys", str(alice.keys),
        )  # fmt: skip
        assert code == 0, out
    until(alice, lambda: len(applied(alice)) >= 2, "both sets applied")
    held = alice.bell.controller.mask_update
    assert sorted(m.polygon() for m in held.masks) == sorted(
        [[tuple(p) for p in POLY], [tuple(p) for p in second]]
    )
    frames = press_clip(alice, tmp_path, "after")
    assert_masked(frames[-1], [POLY, [tuple(p) for p in second]], "both spots")


@pytest.mark.parametrize(
    "polygon",
    [
        [[0.1, 0.1], [0.5, 0.5], [0.5, 0.1], [0.1, 0.5]],  # crossed: a bow tie
        [[0.1, 0.1], [0.5, 0.1], [0.9, 0.1]],  # no area
        [[0.1, 0.1], [0.10001, 0.1], [0.1, 0.5]],  # two points that round to one
    ],
    ids=["crossed", "flat", "rounds-to-repeated"],
)
def test_a_polygon_an_owner_could_not_sign_cannot_be_filed(polygon):
    """One rule at both ends: what the relay refuses to file is exactly what
    MaskUpdate refuses to hold."""
    assert bys.polygon_problem(polygon) is not None
    with pytest.raises(ValueError):
        MaskUpdate.create("d", [("m", [tuple(p) for p in polygon])])
    fine = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]
    assert bys.polygon_problem(fine) is None
    MaskUpdate.create("d", [("m", [tuple(p) for p in fine])])


def test_accepting_in_the_web_app_signs_exactly_the_proposal(world, browser, tmp_path):
    """The page signs the MaskUpdate itself (keys in the browser), on the set it kept;
    the doorbell applies exactly the proposed polygons, and a removal from the page's
    mask list leaves the other one."""
    from test_webapp import expect, expect_js, open_page, sign_in_and_unlock

    from protocol.decisions import mask_points

    relay, alice, _bob, _commands = world
    alice.bell.run(2.0)
    press_clip(alice, tmp_path, "clip")
    clip = kinds(alice, "clip_saved")[-1].data
    wait_for(lambda: relay.engine.index.counts()["clips"] >= 1, 30, "the clip indexed")
    # 0.03125 * 10000 is 312.5 exactly: Python rounds it to 312 (half to even), a naive
    # Math.round to 313; the relay would then refuse the page's set.
    first = [[0.03125, 0.1], [0.4, 0.1], [0.4, 0.5], [0.03125, 0.5]]
    second = PROPOSED
    third = [[0.1, 0.6], [0.3, 0.6], [0.2, 0.9]]
    for polygon in (first, second, third):
        file_stop_filming(relay, clip, polygon)
    wait_for(lambda: len(asks_of(relay, alice)) == 3, 10, "the asks")
    asks = {json.dumps(a["bystander"]["polygon"]): a for a in asks_of(relay, alice)}
    one, two, three = (asks[json.dumps(p)] for p in (first, second, third))

    errors: list[str] = []
    page = open_page(browser, relay, errors)
    sign_in_and_unlock(page, alice, errors)

    li = f"li[data-ask='{one['id']}']"
    expect(page, f"{li}[data-bystander='stop_filming'][data-status='pending']", errors)
    drawn = page.get_attribute(f"{li} [data-mask-preview] polygon", "points")
    assert drawn == " ".join(f"{x},{y}" for x, y in first)
    page.click(f"{li} button[data-answer='accept']")
    expect(page, f"{li}[data-status='accepted']", errors)
    until(alice, lambda: applied(alice), "the doorbell to apply the first mask")
    assert [m.points for m in alice.bell.controller.mask_update.masks] == [mask_points(first)]

    li = f"li[data-ask='{two['id']}']"
    page.click(f"{li} button[data-answer='accept']")
    expect(page, f"{li}[data-status='accepted']", errors)
    until(alice, lambda: len(applied(alice)) == 2, "the second set")
    held = alice.bell.controller.mask_update
    assert {f"bystander-{one['id']}", f"bystander-{two['id']}"} == {m.name for m in held.masks}
    assert sorted(m.points for m in held.masks) == sorted([mask_points(first), mask_points(second)])
    assert alice.bell.controller.masks_hash == applied(alice)[-1].data["hash"]
    expect(
        page, f"li[data-masks='alice-door'][data-hash='{applied(alice)[-1].data['hash']}']", errors
    )

    # Remove the first from the page's list: a newer set with the second only.
    page.click(f"li[data-masks='alice-door'] button[data-remove='bystander-{one['id']}']")
    until(alice, lambda: len(applied(alice)) == 3, "the removal")
    assert [m.points for m in alice.bell.controller.mask_update.masks] == [mask_points(second)]
    expect_js(page, "() => !document.querySelector(\"[data-mask^='bystander-ask']\") || "
              "document.querySelectorAll('[data-mask]').length === 1", errors)  # fmt: skip
    frames = press_clip(alice, tmp_path, "after")
    assert_masked(frames[-1], [POLY], "the remaining mask")
    assert errors == [], errors

    # The kept set is checked with the owner's own key before it is built on: one put in
    # its place (here an empty set signed by someone else, as a relay could serve) makes
    # the page refuse to sign, and nothing is sent.
    forged = sign_decision(
        MaskUpdate.create("alice-door", [], issued=int(time.time()) + 10),
        OwnerKeys.generate().sign_private,
    )
    page.evaluate(
        """([key, value]) => new Promise((ok, fail) => {
             const req = indexedDB.open("open-doorbell", 1);
             req.onsuccess = () => {
               const tx = req.result.transaction("keys", "readwrite");
               tx.objectStore("keys").put(value, key);
               tx.oncomplete = () => { req.result.close(); ok(); };
               tx.onerror = () => fail(tx.error);
             };
           })""",
        ["masks/owner-of-alice-door/alice-door", forged],
    )
    li = f"li[data-ask='{three['id']}']"
    page.click(f"{li} button[data-answer='accept']")
    expect_js(page, "() => document.getElementById('status').textContent.includes('check out')",
              errors)  # fmt: skip
    assert {a["id"]: a["status"] for a in asks_of(relay, alice)}[three["id"]] == "pending"
    alice.bell.run(1.0)
    assert len(applied(alice)) == 3


def test_an_accept_whose_answer_was_lost_can_be_tried_again(world, tmp_path):
    """The client keeps its set before sending: a retry after a failed call signs the
    same masks again (newer), without a second copy of the proposed one."""
    from relay.consent import PolicyRefusal

    relay, alice, _bob, _commands = world
    state = tmp_path / "alice-client"
    alice.bell.run(2.0)
    press_clip(alice, tmp_path, "clip")
    clip = kinds(alice, "clip_saved")[-1].data
    wait_for(lambda: relay.engine.index.counts()["clips"] >= 1, 30, "the clip indexed")
    file_stop_filming(relay, clip, PROPOSED)
    wait_for(lambda: asks_of(relay, alice), 10, "Alice's ask")
    (ask,) = asks_of(relay, alice)
    real = relay.engine.bystander_accept

    def lost(*_a, **_k):
        raise PolicyRefusal("the relay failed this once")

    relay.engine.bystander_accept = lost
    args = ["--state", str(state), "answer", ask["id"], "accept", "--keys", str(alice.keys)]
    code, out = run_footage(relay, alice.token, *args)
    assert code != 0
    first = json.loads((state / "masks" / "alice-door.json").read_text())["update"]
    relay.engine.bystander_accept = real
    code, out = run_footage(relay, alice.token, *args)
    assert code == 0, out
    until(alice, lambda: applied(alice), "the doorbell to apply the mask")
    held = alice.bell.controller.mask_update
    assert [m.polygon() for m in held.masks] == [[tuple(p) for p in POLY]]
    assert alice.bell.controller.masks_hash != decision_hash(first), "a newer set was sent"


def test_the_client_refuses_an_answer_for_another_set(world, tmp_path):
    """A relay that answers with another hash than the one signed is called out."""
    relay, alice, _bob, _commands = world
    alice.bell.run(2.0)
    press_clip(alice, tmp_path, "clip")
    clip = kinds(alice, "clip_saved")[-1].data
    wait_for(lambda: relay.engine.index.counts()["clips"] >= 1, 30, "the clip indexed")
    file_stop_filming(relay, clip, PROPOSED)
    wait_for(lambda: asks_of(relay, alice), 10, "Alice's ask")
    (ask,) = asks_of(relay, alice)
    real = relay.engine.bystander_accept
    relay.engine.bystander_accept = lambda *a: (*real(*a)[:2], "0" * 64)
    code, out = run_footage(
        relay, alice.token, "--state", str(tmp_path / "c"), "answer", ask["id"], "accept",
        "--keys", str(alice.keys),
    )  # fmt: skip
    assert code != 0 and "accepted" not in out


def test_the_web_app_and_footage_each_add_a_mask_and_the_doorbell_holds_both(
    world, browser, tmp_path
):
    """The bug fixed by ``previous``: the page accepts a passer-by's mask, then `footage`
    from a fresh state folder adds another; the doorbell holds both (each client builds
    on the set in force, checked with the owner's key).  And the page's next change
    keeps the `footage` mask too."""
    from test_masks_e2e import OTHER, OTHER_ARG, add_mask, relay_holds
    from test_webapp import expect, open_page, sign_in_and_unlock

    relay, alice, _bob, _commands = world
    alice.bell.run(2.0)
    press_clip(alice, tmp_path, "clip")
    clip = kinds(alice, "clip_saved")[-1].data
    wait_for(lambda: relay.engine.index.counts()["clips"] >= 1, 30, "the clip indexed")
    third = [[0.1, 0.6], [0.3, 0.6], [0.2, 0.9]]
    file_stop_filming(relay, clip, PROPOSED)
    file_stop_filming(relay, clip, third)
    wait_for(lambda: len(asks_of(relay, alice)) == 2, 10, "the asks")
    asks = {json.dumps(a["bystander"]["polygon"]): a for a in asks_of(relay, alice)}
    one, two = asks[json.dumps(PROPOSED)], asks[json.dumps(third)]

    errors: list[str] = []
    page = open_page(browser, relay, errors)
    sign_in_and_unlock(page, alice, errors)

    li = f"li[data-ask='{one['id']}']"
    page.click(f"{li} button[data-answer='accept']")
    expect(page, f"{li}[data-status='accepted']", errors)
    until(alice, lambda: applied(alice), "the page's set")
    first = alice.bell.controller.masks_hash
    wait_for(lambda: relay_holds(relay, "alice-door") == first, 30, "the relay to keep it")

    code, out = add_mask(relay, alice, tmp_path / "fresh-client", "window", OTHER_ARG)
    assert code == 0, out
    until(alice, lambda: len(applied(alice)) == 2, "footage's set")
    held = alice.bell.controller.mask_update
    assert sorted(m.name for m in held.masks) == sorted([f"bystander-{one['id']}", "window"])
    assert held.previous == first
    frames = press_clip(alice, tmp_path, "both")
    assert_masked(frames[-1], [POLY, OTHER], "the page's and footage's masks")
    wait_for(
        lambda: relay_holds(relay, "alice-door") == alice.bell.controller.masks_hash, 30, "kept"
    )

    # The page's next change (another accept) keeps footage's mask.
    li = f"li[data-ask='{two['id']}']"
    page.click(f"{li} button[data-answer='accept']")
    expect(page, f"{li}[data-status='accepted']", errors)
    until(alice, lambda: len(applied(alice)) == 3, "the page's second set")
    names = {m.name for m in alice.bell.controller.mask_update.masks}
    assert names == {f"bystander-{one['id']}", f"bystander-{two['id']}", "window"}
    assert kinds(alice, "masks_refused") == []
    assert errors == [], errors
