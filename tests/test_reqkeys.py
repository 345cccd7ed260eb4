"""Owners seal to the key the requester signed, not the relay's word for it.

A requester signs its request with ``footage request --keys``; the relay forwards the
signed request in each ask unchanged; ``footage approve`` checks the signature, that
the ask says what was signed, and the signing key against the one pinned for that
requester name, and seals to the box key inside.  A relay that swaps the key, or a
requester's signing key, gets a refusal and no sealed clip keys.
"""

from __future__ import annotations

import json
import time

import pytest
from stack import wait_for
from test_consent_e2e import Home, Relay, run_footage

from protocol import reqsig
from protocol.crypto import OwnerKeys, b64, sign_payload, unb64
from relay import keyspace as ks
from relay.consent import PolicyRefusal


def _request(relay, token, keys, t0, case):
    code, out = run_footage(
        relay, token, "request", "--lat", "51.5", "--lon", "-0.12", "--radius", "100",
        "--from", str(t0), "--to", str(min(t0 + 3600, time.time())),
        "--reason", "burglary", "--case", case, "--keys", str(keys),
    )  # fmt: skip
    assert code == 0, out
    return out.strip()


def _ask_for(relay, home, request_id):
    found: list = []

    def asked() -> bool:
        _, out = run_footage(relay, home.token, "asks", "--json")
        found[:] = [a for a in json.loads(out) if a["request_id"] == request_id]
        return bool(found)

    wait_for(asked, 30, "the owner's ask")
    return found[0]


def _rewrite_ask(relay, ask_id, change) -> None:
    """What a dishonest relay operator can do: edit the stored ask."""
    r = relay.engine.r
    data = json.loads(r.get(ks.ask(ask_id)))
    change(data)
    r.set(ks.ask(ask_id), json.dumps(data))


def _nothing_sealed(relay, ask_id) -> None:
    assert json.loads(relay.engine.r.get(ks.ask(ask_id)))["status"] == "pending"
    assert not [e for e in relay.audit.entries() if e["kind"] == "decision"]


def test_owners_seal_only_to_the_key_the_requester_signed(stack, tmp_path, capsys):
    relay = Relay(stack, tmp_path)
    home = Home(stack, relay, tmp_path, "alice-door", 51.5, -0.12)
    try:
        saved = home.record_clip()
        wait_for(lambda: relay.engine.index.counts()["clips"] == 1, 30, "the clip indexed")

        police, mallory = OwnerKeys.generate(), OwnerKeys.generate()
        police.save(tmp_path / "police-keys")
        token = tmp_path / "police.token"
        token.write_text(relay.engine.add_requester("city-police", "agency", police.box_public))
        t0 = saved.data["start"] - 60

        # 1. The relay swaps the box key inside the signed request: the signature fails.
        first = _request(relay, token, tmp_path / "police-keys", t0, "C-1")
        ask = _ask_for(relay, home, first)
        assert reqsig.verify_request(ask["signed_request"])["box_public"] == b64(police.box_public)

        def swap_box(data):
            payload = json.loads(unb64(data["signed_request"]["payload"]))
            payload["box_public"] = b64(mallory.box_public)
            data["signed_request"]["payload"] = b64(json.dumps(payload).encode())
            data["requester_key"] = b64(mallory.box_public)

        _rewrite_ask(relay, ask["id"], swap_box)
        capsys.readouterr()
        code, _ = run_footage(relay, home.token, "approve", ask["id"], "--keys", str(home.keys))
        assert code == 1
        assert "signature does not verify" in capsys.readouterr().err
        _nothing_sealed(relay, ask["id"])

        def swap_field(data):
            data["signed_request"] = ask["signed_request"]
            data["requester_key"] = b64(mallory.box_public)

        # A relay that swaps only the separate field: the owner seals to the signed key,
        # the relay (holding the ask to its own field) cannot pass that on as Mallory's.
        _rewrite_ask(relay, ask["id"], swap_field)
        code, _ = run_footage(relay, home.token, "approve", ask["id"], "--keys", str(home.keys))
        assert code != 0
        _nothing_sealed(relay, ask["id"])

        def restore(data):
            data["signed_request"] = ask["signed_request"]
            data["requester_key"] = b64(police.box_public)

        _rewrite_ask(relay, ask["id"], restore)

        # 2. Honest: the signing key is pinned, and the approval names the signed box key.
        code, out = run_footage(relay, home.token, "approve", ask["id"], "--keys", str(home.keys))
        assert code == 0, out
        err = capsys.readouterr().err
        sign_public = police.sign_public
        assert f"fingerprint {reqsig.fingerprint(sign_public)}" in err
        (decision,) = [e for e in relay.audit.entries() if e["kind"] == "decision"]
        stored = json.loads(relay.engine.r.get(ks.ask(ask["id"])))
        assert stored["status"] == "approved", decision
        # The relay accepts an approval only for the ask's requester_key (the police's
        # here), so an owner who had sealed to any other key would have been refused.
        assert stored["requester_key"] == b64(police.box_public)
        # The public log's request entry carries the hash of the signed request.
        (entry,) = [e for e in relay.audit.entries() if e["kind"] == "request"
                    and e["data"]["id"] == first]  # fmt: skip
        assert entry["data"]["signed_request_hash"] == reqsig.request_hash(ask["signed_request"])
        assert "signed_request" not in entry["data"]
        # The requester checks that record against what it signed (kept by footage).
        code, _ = run_footage(relay, token, "status", first)
        assert code == 0
        assert "on the public record with your signed request" in capsys.readouterr().err
        kept = tmp_path / "footage-state" / "my_requests.json"
        mine = json.loads(kept.read_text())
        (relay_url,) = mine
        mine[relay_url][first] = "0" * 64  # as if the relay had recorded another request
        kept.write_text(json.dumps(mine))
        code, _ = run_footage(relay, token, "status", first)
        assert code == 3
        assert "ALARM" in capsys.readouterr().err

        # 3. The relay swaps in another signing key for the known name (re-signed, so the
        #    signature itself is fine): refused as a changed key, nothing sealed.
        second = _request(relay, token, tmp_path / "police-keys", t0, "C-2")
        ask2 = _ask_for(relay, home, second)
        forged = json.loads(unb64(ask2["signed_request"]["payload"]))
        forged.update(sign_public=b64(mallory.sign_public), box_public=b64(mallory.box_public))

        def swap_signer(data):
            data["signed_request"] = sign_payload(forged, mallory.sign_private)
            data["requester_key"] = b64(mallory.box_public)

        _rewrite_ask(relay, ask2["id"], swap_signer)
        decisions = len([e for e in relay.audit.entries() if e["kind"] == "decision"])
        code, _ = run_footage(relay, home.token, "approve", ask2["id"], "--keys", str(home.keys))
        assert code == 1
        err = capsys.readouterr().err
        assert "REFUSED" in err and "different key" in err
        assert reqsig.fingerprint(mallory.sign_public) in err
        assert json.loads(relay.engine.r.get(ks.ask(ask2["id"])))["status"] == "pending"
        assert len([e for e in relay.audit.entries() if e["kind"] == "decision"]) == decisions

        # 4. The ask says something other than what was signed (a wider window, say).
        def widen(data):
            data["signed_request"] = ask2["signed_request"]
            data["requester_key"] = b64(police.box_public)
            data["radius_m"] = 5000.0

        _rewrite_ask(relay, ask2["id"], widen)
        code, _ = run_footage(relay, home.token, "approve", ask2["id"], "--keys", str(home.keys))
        assert code == 1
        assert "differs from what the requester signed in radius_m" in capsys.readouterr().err
        assert json.loads(relay.engine.r.get(ks.ask(ask2["id"])))["status"] == "pending"

        # 5. The relay drops the signature of a requester who signs, and names its own key.
        def strip(data):
            data.pop("signed_request", None)
            data["radius_m"] = ask2["radius_m"]
            data["requester_key"] = b64(mallory.box_public)

        _rewrite_ask(relay, ask2["id"], strip)
        code, _ = run_footage(relay, home.token, "approve", ask2["id"], "--keys", str(home.keys))
        assert code == 1
        assert "carries no signed request" in capsys.readouterr().err
        assert len([e for e in relay.audit.entries() if e["kind"] == "decision"]) == decisions
        assert json.loads(relay.engine.r.get(ks.ask(ask2["id"])))["status"] == "pending"
    finally:
        home.close()
        relay.close()


def test_the_relay_refuses_a_signed_request_that_says_something_else(stack, tmp_path):
    relay = Relay(stack, tmp_path)
    try:
        police = OwnerKeys.generate()
        relay.engine.add_requester("city-police", "agency", police.box_public)
        now = time.time()
        body = {"lat": 51.5, "lon": -0.12, "radius_m": 100.0, "start": now - 3600,
                "end": now - 60, "reason": "r", "case_ref": "C", "basis": "consent"}  # fmt: skip
        signed = reqsig.sign_request(body, police)
        with pytest.raises(PolicyRefusal, match="differs in radius_m"):
            relay.engine.file_request("city-police", **{**_args(body), "radius_m": 900.0},
                                      signed=signed)  # fmt: skip
        other = reqsig.sign_request(body, OwnerKeys.generate())
        with pytest.raises(PolicyRefusal, match="not the key registered for you"):
            relay.engine.file_request("city-police", **_args(body), signed=other)
        bad = {**signed, "signature": b64(bytes(64))}
        with pytest.raises(PolicyRefusal, match="does not verify"):
            relay.engine.file_request("city-police", **_args(body), signed=bad)
        ok = relay.engine.file_request("city-police", **_args(body), signed=signed)
        assert ok["status"] == "accepted"
    finally:
        relay.close()


def _args(body):
    return {k: body[k] for k in reqsig.SIGNED_FIELDS}


@pytest.mark.parametrize(
    "signed",
    [
        {"payload": "!!", "signature": "x"},
        {"payload": b64(b"[]"), "signature": b64(bytes(64))},
        {"payload": b64(b'{"sign_public": 7, "box_public": 8}'), "signature": b64(bytes(64))},
        {"payload": b64(b"{}"), "signature": b64(bytes(64)), "extra": "x"},
    ],
)
def test_a_malformed_signed_request_is_one_clear_refusal(stack, tmp_path, signed):
    import httpx

    relay = Relay(stack, tmp_path)
    try:
        police = OwnerKeys.generate()
        token = relay.engine.add_requester("city-police", "agency", police.box_public)
        now = time.time()
        body = {"lat": 51.5, "lon": -0.12, "radius_m": 100.0, "start": now - 3600,
                "end": now - 60, "reason": "r", "case_ref": "C", "basis": "consent"}  # fmt: skip
        resp = httpx.post(
            f"{relay.url}/v1/requests",
            json={**body, "signed": signed},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"] == "refused"
        assert "signed request" in resp.json()["reason"]
        assert not relay.engine.r.zcard(ks.REQUESTS)  # nothing recorded, nothing counted
    finally:
        relay.close()
