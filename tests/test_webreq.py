"""The web app's approve checks the requester's signed request, as `footage approve` does.

In a real browser (chromium, Playwright) against a real relay (Mosquitto, Redis): the
page verifies the signed request with the key inside it, checks the ask says what was
signed, pins the signing key per (relay origin, requester name) on first approve and
shows its fingerprint, and seals to the signed box key.  A relay operator who edits the
stored ask (swaps the box key, the signer of a pinned name, or strips the signature of a
pinned name) gets a refusal in the page: nothing sealed, the ask stays pending.
"""

from __future__ import annotations

import json
import time

from stack import wait_for
from test_consent_e2e import Home, Relay, run_footage
from test_reqkeys import _rewrite_ask
from test_webapp import expect, expect_js, open_page, sign_in_and_unlock

from protocol import reqsig
from protocol.crypto import OwnerKeys, b64, sign_payload, unb64
from relay import keyspace as ks


def _request(relay, token, t0, case, keys=None) -> str:
    signing = ("--keys", str(keys)) if keys else ()
    code, out = run_footage(
        relay, token, "request", "--lat", "51.5", "--lon", "-0.12", "--radius", "100",
        "--from", str(t0), "--to", str(min(t0 + 3600, time.time())),
        "--reason", "burglary", "--case", case, *signing,
    )  # fmt: skip
    assert code == 0, out
    return out.strip()


def _ask(relay, request_id: str) -> dict:
    def found() -> list:
        return [
            a for a in relay.engine.asks_for("owner-of-alice-door") if a.request_id == request_id
        ]

    wait_for(found, 30, f"the ask for {request_id}")
    return found()[0].__dict__.copy()


def _status(relay, ask_id: str) -> str:
    return json.loads(relay.engine.r.get(ks.ask(ask_id)))["status"]


def _decisions(relay) -> int:
    return len([e for e in relay.audit.entries() if e["kind"] == "decision"])


def _approve_refused(page, relay, ask_id: str, needle: str, errors: list[str]) -> None:
    """Click Approve; the page says why it refused; nothing reached the relay."""
    before = _decisions(relay)
    page.click("#refresh")
    expect(page, "body[data-refreshed='1']", errors)
    page.click(f"li[data-ask='{ask_id}'] >> text=Approve")
    expect_js(
        page,
        "() => document.getElementById('status').textContent.startsWith('cannot answer')",
        errors,
    )
    status = page.inner_text("#status")
    assert needle in status, status
    assert _status(relay, ask_id) == "pending"
    assert _decisions(relay) == before


def test_the_web_app_seals_only_to_the_key_the_requester_signed(stack, browser, tmp_path):
    relay = Relay(stack, tmp_path)
    home = Home(stack, relay, tmp_path, "alice-door", 51.5, -0.12)
    try:
        saved = home.record_clip()
        wait_for(lambda: relay.engine.index.counts()["clips"] == 1, 30, "the clip indexed")

        police, mallory = OwnerKeys.generate(), OwnerKeys.generate()
        police.save(tmp_path / "police-keys")
        token = tmp_path / "police.token"
        token.write_text(relay.engine.add_requester("city-police", "agency", police.box_public))
        council = OwnerKeys.generate()
        council_token = tmp_path / "council.token"
        council_token.write_text(
            relay.engine.add_requester("town-council", "agency", council.box_public)
        )
        t0 = saved.data["start"] - 60
        first = _ask(relay, _request(relay, token, t0, "C-1", tmp_path / "police-keys"))
        second = _ask(relay, _request(relay, token, t0, "C-2", tmp_path / "police-keys"))
        unsigned = _ask(relay, _request(relay, council_token, t0, "C-3"))
        assert first["signed_request"] and unsigned["signed_request"] is None

        errors: list[str] = []
        page = open_page(browser, relay, errors)
        sign_in_and_unlock(page, home, errors)

        # 1. The relay swaps the box key inside the signed request: the signature fails.
        def swap_box(data):
            payload = json.loads(unb64(data["signed_request"]["payload"]))
            payload["box_public"] = b64(mallory.box_public)
            data["signed_request"]["payload"] = b64(json.dumps(payload).encode())
            data["requester_key"] = b64(mallory.box_public)

        _rewrite_ask(relay, first["id"], swap_box)
        _approve_refused(page, relay, first["id"], "signature does not verify", errors)
        assert "signature does not verify" in page.inner_text(
            f"li[data-ask='{first['id']}'] [data-signed='bad']"
        )

        def restore(data):
            data["signed_request"] = first["signed_request"]
            data["requester_key"] = b64(police.box_public)

        _rewrite_ask(relay, first["id"], restore)

        # 2. Honest: the fingerprint is shown in the ask, approve pins it and seals to the
        #    signed box key (the requester decrypts the release).
        print_ = reqsig.fingerprint(police.sign_public)
        page.click("#refresh")
        expect(page, f"li[data-ask='{first['id']}'] [data-fingerprint='{print_}']", errors)
        assert "not pinned yet" in page.inner_text(
            f"li[data-ask='{first['id']}'] [data-signed='ok']"
        )
        page.click(f"li[data-ask='{first['id']}'] >> text=Approve")
        expect(page, f"li[data-ask='{first['id']}'][data-status='approved']", errors)
        assert f"fingerprint {print_}" in page.inner_text("#status")
        assert _status(relay, first["id"]) == "approved"
        wait_for(lambda: relay.engine.released(first["request_id"]), 30, "the doorbell to release")
        code, out = run_footage(
            relay, token, "fetch", first["request_id"], "--key", str(tmp_path / "police-keys"),
            "--out", str(tmp_path / "got"),
        )  # fmt: skip
        assert code == 0, out
        assert list((tmp_path / "got").glob("*.mp4"))
        # The second ask from the same requester now shows the pinned key.
        assert "pinned in this browser" in page.inner_text(
            f"li[data-ask='{second['id']}'] [data-signed='ok']"
        )

        # The relay swaps only its own field: the page seals to the signed key, which the
        # relay (holding the ask to its field) refuses, so nothing sealed to Mallory.
        def swap_field(data):
            data["signed_request"] = second["signed_request"]
            data["requester_key"] = b64(mallory.box_public)

        _rewrite_ask(relay, second["id"], swap_field)
        _approve_refused(page, relay, second["id"], "for another requester", errors)
        assert len(errors) == 1 and "status of 422" in errors[0], errors  # the relay's refusal
        errors.clear()

        _rewrite_ask(relay, second["id"], lambda d: d.update(requester_key=b64(police.box_public)))

        # 3. The relay swaps in another signing key for the pinned name (re-signed, so the
        #    signature itself verifies): refused as a changed key.
        forged = json.loads(unb64(second["signed_request"]["payload"]))
        forged.update(sign_public=b64(mallory.sign_public), box_public=b64(mallory.box_public))

        def swap_signer(data):
            data["signed_request"] = sign_payload(forged, mallory.sign_private)
            data["requester_key"] = b64(mallory.box_public)

        _rewrite_ask(relay, second["id"], swap_signer)
        _approve_refused(page, relay, second["id"], "different key", errors)
        assert reqsig.fingerprint(mallory.sign_public) in page.inner_text("#status")

        # The ask says something other than what was signed (a wider area, say).
        def widen(data):
            data["signed_request"] = second["signed_request"]
            data["requester_key"] = b64(police.box_public)
            data["radius_m"] = 5000.0

        _rewrite_ask(relay, second["id"], widen)
        _approve_refused(page, relay, second["id"], "signed in radius_m", errors)
        _rewrite_ask(relay, second["id"], lambda d: d.update(radius_m=second["radius_m"]))

        # 4. The relay strips the signature of a pinned requester and names its own key.
        def strip(data):
            data.pop("signed_request", None)
            data["requester_key"] = b64(mallory.box_public)

        _rewrite_ask(relay, second["id"], strip)
        _approve_refused(page, relay, second["id"], "carries no signed request", errors)

        # 5. An unsigned ask from a never-pinned requester: a visible warning, then sealed
        #    to the key the relay names (as footage approve does).
        page.click("#refresh")
        expect(page, f"li[data-ask='{unsigned['id']}'] [data-signed='no']", errors)
        page.click(f"li[data-ask='{unsigned['id']}'] >> text=Approve")
        expect(page, f"li[data-ask='{unsigned['id']}'][data-status='approved']", errors)
        assert not errors, errors
    finally:
        home.close()
        relay.close()
