"""Passers-by get a say: bystanders' requests through a real broker, Redis, HTTP and
simulated doorbells (issue 17).

The relay, the homes and the footage runner are those of test_consent_e2e; each test
lowers the proof of work to 8 bits (the relay config's ``bystander.difficulty``).
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from conftest import ffprobe
from stack import wait_for
from test_consent_e2e import Home, Relay, run_footage

from footage import cli as footage
from protocol import bystander as bys
from protocol.crypto import OwnerKeys, b64
from protocol.transparency import check_meaning
from relay.config import BystanderConfig
from relay.report import build_report


def run_anon(relay: Relay, *args: str) -> tuple[int, str]:
    """``footage`` without a token (a bystander has none)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = footage.main(["--relay", relay.url, *args])
    return code, out.getvalue()


def record_clip(home: Home) -> dict:
    return home.record_clip().data


def solved(relay: Relay, headers: dict | None = None) -> dict:
    ch = httpx.get(f"{relay.url}/v1/bystander/challenge", headers=headers or {}).json()
    return {"challenge": ch["challenge"], "nonce": bys.solve(ch["challenge"], ch["difficulty"])}


def body_for(clip: dict, lat: float, lon: float, kind: str, key: bytes | None) -> dict:
    start = clip["start"] - 60
    body = {
        "lat": lat,
        "lon": lon,
        "radius_m": 50.0,
        "start": start,
        "end": min(start + 1200, time.time()),
        "kind": kind,
        "description": "red coat, walking a small white dog, about 2 pm",
    }
    if key is not None:
        body["box_public"] = b64(key)
    return body


def asks_of(relay: Relay, home: Home) -> list[dict]:
    code, out = run_footage(relay, home.token, "asks", "--json")
    assert code == 0, out
    return json.loads(out)


def public_entries(relay: Relay) -> list[dict]:
    raw = httpx.get(f"{relay.url}/v1/log/entries?start=0&end=100000").json()["entries"]
    import base64

    return [json.loads(base64.b64decode(e["entry"])) for e in raw]


@pytest.fixture
def three(stack, tmp_path):
    relay = Relay(stack, tmp_path)
    relay.engine.bystander = BystanderConfig(
        difficulty=8, requests_per_window=50, challenges_per_window=50
    )  # fmt: skip
    homes = [
        Home(stack, relay, tmp_path, "alice-door", 51.5000, -0.1200),
        Home(stack, relay, tmp_path, "bob-door", 51.5100, -0.1200),  # 1.1 km north
        Home(stack, relay, tmp_path, "carol-door", 51.5200, -0.1200),
    ]
    yield relay, homes
    for h in homes:
        h.close()
    relay.close()


def shape(value: object) -> object:
    """The shape of a JSON value: types, keys and string lengths, not the values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, str):
        return ("str", len(value))
    return type(value).__name__


def test_only_the_filmed_home_is_asked_and_the_answers_reach_the_bystander(three, tmp_path):
    relay, (alice, bob, carol) = three
    clip = record_clip(alice)
    record_clip(bob)  # in the window, but 1.1 km away
    wait_for(lambda: relay.engine.index.counts()["clips"] == 2, 30, "both clips indexed")
    me = OwnerKeys.generate()
    me.save(tmp_path / "me")

    # One request where Alice's doorbell filmed; one where no doorbell is.  Each from
    # its own address, through the operator's proxy (uvicorn trusts 127.0.0.1's
    # X-Forwarded-For by default: [api] forwarded_allow_ips).
    def post(body: dict, addr: str) -> httpx.Response:
        hdr = {"X-Forwarded-For": addr}
        return httpx.post(
            f"{relay.url}/v1/bystander/requests", json={**body, **solved(relay, hdr)}, headers=hdr
        )

    match = post(body_for(clip, 51.5, -0.12, "copy", me.box_public), "198.51.100.1")
    none = post(body_for(clip, 48.85, 2.35, "copy", me.box_public), "198.51.100.2")
    for resp in (match, none):
        assert resp.status_code == 202, resp.text
    assert shape(match.json()) == shape(none.json())
    assert set(match.json()) == {"id", "status", "status_token", "deadline"}
    drop = {"date", "content-length"}
    assert {k: v for k, v in match.headers.items() if k not in drop} == {
        k: v for k, v in none.headers.items() if k not in drop
    }
    assert match.headers["content-length"] == none.headers["content-length"]
    assert match.headers["cache-control"] == "no-store"

    # Owners are asked after the answer: only Alice.
    wait_for(lambda: asks_of(relay, alice), 10, "Alice's ask")
    relay.engine.fan_out_due(older_than_s=-1)
    (ask,) = asks_of(relay, alice)
    assert asks_of(relay, bob) == [] and asks_of(relay, carol) == []
    assert ask["requester_kind"] == "bystander" and ask["bystander"]["kind"] == "copy"
    assert ask["bystander"]["description"].startswith("red coat")
    assert ask["clip_ids"] == [clip["clip"]] and len(ask["clips"]) == 1
    assert ask["expires"] - ask["created"] == pytest.approx(30 * 86400, abs=2)
    assert ask["expires"] == match.json()["deadline"], "one deadline: the bystander's"
    code, out = run_footage(relay, alice.token, "asks")
    assert "from a bystander, asking copy" in out and "red coat" in out

    # Polling is identical too, before anyone answers: same status, same fields.
    def status(resp: httpx.Response) -> httpx.Response:
        d = resp.json()
        return httpx.get(
            f"{relay.url}/v1/bystander/requests/{d['id']}",
            headers={"Authorization": f"Bearer {d['status_token']}"},
        )

    s_match, s_none = status(match), status(none)
    assert s_match.status_code == s_none.status_code == 200
    assert shape(s_match.json()) == shape(s_none.json())
    assert s_match.json()["answers"] == [] and s_match.json()["status"] == "open"
    assert {k: v for k, v in s_match.headers.items() if k != "date"} == {
        k: v for k, v in s_none.headers.items() if k != "date"
    }
    # The public record of both requests has one shape (a padded, committed ask set).
    reqs = [e for e in public_entries(relay) if e["kind"] == "bystander_request"]
    assert len(reqs) == 2 and shape(reqs[0]) == shape(reqs[1])
    assert all("lat" not in e["data"] and "description" not in str(e) for e in reqs)
    # A wrong token looks like no request at all.
    wrong = httpx.get(
        f"{relay.url}/v1/bystander/requests/{match.json()['id']}",
        headers={"Authorization": "Bearer nope"},
    )
    assert wrong.status_code == 404

    # Two more requests for the same footage, filed with the client: an erasure and a
    # copy the owner will decline.
    start = clip["start"] - 60
    end = str(min(start + 1200, time.time()))
    common = ["--lat", "51.5", "--lon", "-0.12", "--radius", "50", "--from", str(start),
              "--to", end, "--description", "red coat, dog"]  # fmt: skip
    code, out = run_anon(relay, "bystander", "request", *common, "--kind", "erase",
                         "--save", str(tmp_path / "erase.json"))  # fmt: skip
    assert code == 0, out
    code, out = run_anon(relay, "bystander", "request", *common, "--kind", "copy", "--key",
                         str(tmp_path / "me"), "--save", str(tmp_path / "decl.json"))  # fmt: skip
    assert code == 0, out
    wait_for(lambda: len(asks_of(relay, alice)) == 3, 10, "three asks")
    by_req = {a["request_id"]: a for a in asks_of(relay, alice)}
    erase_req = json.loads((tmp_path / "erase.json").read_text())["id"]
    decl_req = json.loads((tmp_path / "decl.json").read_text())["id"]

    # Decline: the reason code reaches the bystander.
    code, out = run_footage(
        relay, alice.token, "answer", by_req[decl_req]["id"], "decline", "--reason", "others_shown"
    )
    assert code == 0, out
    code, out = run_anon(relay, "bystander", "status", str(tmp_path / "decl.json"))
    assert code == 0, out
    (answer,) = json.loads(out)["answers"]
    assert answer["outcome"] == "decline" and answer["reason"] == "others_shown"
    # An unknown reason is refused (the list is short and fixed).
    bad = httpx.post(
        f"{relay.url}/v1/asks/{by_req[erase_req]['id']}/answer",
        json={"answer": "decline", "reason": "dont-care"},
        headers={"Authorization": f"Bearer {alice.token.read_text().strip()}"},
    )
    assert bad.status_code == 400

    # Copy: sealed to the bystander's key; the bystander decrypts an MP4.
    match_file = tmp_path / "match.json"
    match_file.write_text(json.dumps(match.json()))
    code, out = run_footage(
        relay, alice.token, "answer", ask["id"], "copy", "--keys", str(alice.keys)
    )
    assert code == 0, out
    wait_for(lambda: alice.commands.counters["released"] == 1, 30, "the doorbell to release")
    wait_for(
        lambda: "download_url" in run_anon(relay, "bystander", "status", str(match_file))[1],
        30,
        "the release indexed",
    )
    code, out = run_anon(
        relay, "bystander", "fetch", str(match_file), "--key", str(tmp_path / "me"),
        "--out", str(tmp_path / "got"),
    )  # fmt: skip
    assert code == 0, out
    (mp4,) = (tmp_path / "got").glob("*.mp4")
    assert ffprobe(mp4)["streams"][0]["codec_name"] == "h264"
    status_text = run_anon(relay, "bystander", "status", str(match_file))[1]
    assert "alice" not in status_text and "device" not in status_text

    # Erase: signed deletions; the doorbell, the index and the blob store forget the
    # clip, and the owner is told a copy went out before, for which request.
    code, out = run_footage(
        relay, alice.token, "answer", by_req[erase_req]["id"], "erase", "--keys", str(alice.keys)
    )
    assert code == 0, out
    assert f"released before for request {match.json()['id']}" in out
    clip_id = clip["clip"]
    wait_for(lambda: alice.bell.store.get(clip_id) is None, 30, "the doorbell to delete")
    wait_for(lambda: relay.engine.index.clips(device="alice-door") == [], 30, "the index")
    wait_for(lambda: relay.stored_blobs(tmp_path) == b"", 30, "the released copy to go")
    assert not list(alice.bell.store.dir.glob(f"{clip_id}*"))
    code, out = run_anon(relay, "bystander", "status", str(tmp_path / "erase.json"))
    (answer,) = json.loads(out)["answers"]
    assert (answer["outcome"], answer["clips"], answer["erased"]) == ("erase", 1, 1)

    # On the record: requests, answers, the deletion; nothing names a home.
    entries = relay.audit.entries()
    kinds = [e["kind"] for e in entries]
    assert kinds.count("bystander_request") == 4
    answers = [e["data"]["answer"] for e in entries if e["kind"] == "bystander_answer"]
    assert sorted(answers) == ["copy", "decline", "erase"]
    assert "deletion" in kinds and "release" in kinds
    public = public_entries(relay)
    assert check_meaning(public) == []
    for e in public:
        if e["kind"].startswith("bystander"):
            assert "alice" not in json.dumps(e), e
            assert e["actor"] in ("bystander", "owner", "relay")
    assert relay.audit.verify().ok

    report = build_report(entries, 0, time.time() + 1, relay.engine.policy())
    assert report["bystander"]["requests_by_kind"] == {"copy": 3, "erase": 1}
    assert report["bystander"]["answers_by_outcome"] == {"copy": 1, "decline": 1, "erase": 1}
    assert sum(report["bystander"]["time_to_answer"].values()) == 3
    assert report["bystander"]["time_to_answer"] == {"within a day": 3}
    from relay.report import to_markdown

    md = to_markdown(report)
    assert "Passers-by's requests: copy 3, erase 1; answers: copy 1, decline 1, erase 1" in md
    # Agencies' figures are not mixed with bystanders'.
    assert (report["requests"], report["approvals"], report["denials"]) == (0, 0, 0)


@pytest.fixture
def one(stack, tmp_path):
    relay = Relay(stack, tmp_path)
    relay.engine.bystander = BystanderConfig(
        difficulty=8, requests_per_window=5, challenges_per_window=20
    )
    home = Home(stack, relay, tmp_path, "alice-door", 51.5000, -0.1200)
    yield relay, home
    home.close()
    relay.close()


def test_spam_is_throttled_and_refused_requests_reach_no_owner(one, tmp_path):
    relay, alice = one
    clip = record_clip(alice)
    wait_for(lambda: relay.engine.index.counts()["clips"] == 1, 30, "the clip indexed")
    me = OwnerKeys.generate()
    body = body_for(clip, 51.5, -0.12, "copy", me.box_public)
    url = f"{relay.url}/v1/bystander/requests"
    with httpx.Client() as http:
        good = solved(relay)
        no_work = {**solved(relay)}
        no_work["nonce"] = next(
            n for n in (str(i) for i in range(10**6))
            if not bys.check_work(no_work["challenge"], n, 8)
        )  # fmt: skip
        codes = [http.post(url, json={**body, **no_work}).status_code]  # bad proof
        codes.append(http.post(url, json={**body, **good}).status_code)  # good
        codes.append(http.post(url, json={**body, **good}).status_code)  # reused challenge
        # A flood of made-up challenges, half of them malformed (no kind).
        limited = []
        for i in range(997):
            junk = {**body, "challenge": f"{i:032x}", "nonce": "1"}
            if i % 2 == 0:
                del junk["kind"]
            resp = http.post(url, json=junk)
            codes.append(resp.status_code)
            if resp.status_code == 429:
                limited.append(resp)
    assert codes[:5] == [403, 202, 403, 400, 403]
    assert codes.count(429) == 995 and codes.count(202) == 1
    assert all(int(r.headers["Retry-After"]) > 0 for r in limited)
    assert limited[0].json()["error"] == "too_many"
    # Even a valid proof of work waits for the next window.
    assert httpx.post(url, json={**body, **good}).status_code == 429

    # Alice is asked once: for the one request that was let in.
    wait_for(lambda: asks_of(relay, alice), 10, "Alice's ask")
    relay.engine.fan_out_due(older_than_s=-1)
    assert len(asks_of(relay, alice)) == 1
    kinds = [e["kind"] for e in relay.audit.entries()]
    assert kinds.count("bystander_request") == 1 and "bystander_refused" not in kinds
    refused = {k.decode(): int(v) for k, v in relay.engine.r.hgetall("bystander:refused").items()}
    assert refused == {"bad_work": 1, "bad_challenge": 2, "rate_limited": 996}

    # Challenges are limited per address too.
    got = [httpx.get(f"{relay.url}/v1/bystander/challenge").status_code for _ in range(20)]
    assert got.count(429) == 2, "two challenges were fetched above"


def test_policy_bounds_apply_to_bystanders_and_refusals_are_logged(one):
    relay, _alice = one
    relay.engine.bystander = BystanderConfig(difficulty=8, requests_per_window=50)
    now = time.time()
    base = {"lat": 51.5, "lon": -0.12, "radius_m": 50.0, "start": now - 600, "end": now,
            "kind": "erase", "description": "blue hat"}  # fmt: skip
    url = f"{relay.url}/v1/bystander/requests"
    cases = [
        ({"radius_m": 5000.0}, "radius"),
        ({"start": now - 3 * 3600}, "window"),
        ({"end": now + 600}, "future"),
        ({"kind": "copy"}, "box_public"),
        ({"kind": "stop_filming"}, "polygon"),
        ({"kind": "stop_filming", "polygon": [[0, 0], [2, 0], [0, 1]]}, "polygon"),
        # One an owner could not sign as a mask (a bow tie) is not filed either.
        ({"kind": "stop_filming", "polygon": [[0, 0], [1, 1], [1, 0], [0, 1]]}, "cross"),
        ({"description": "\u200b"}, "visible"),
    ]
    for change, why in cases:
        resp = httpx.post(url, json={**base, **change, **solved(relay)})
        assert resp.status_code == 422, (change, resp.text)
        assert why in resp.json()["reason"], (why, resp.json())
    resp = httpx.post(url, json={**base, "kind": "everything", **solved(relay)})
    assert resp.status_code == 400
    refused = [e for e in relay.audit.entries() if e["kind"] == "bystander_refused"]
    assert len(refused) == len(cases)
    assert relay.engine.r.keys("ask:*") == []
    # The OpenAPI lists the bystanders' routes, without a token, with their answers.
    spec = httpx.get(f"{relay.url}/openapi.json").json()
    post = spec["paths"]["/v1/bystander/requests"]["post"]
    assert {"202", "400", "403", "422", "429"} <= set(post["responses"])
    assert "security" not in post
    status = spec["paths"]["/v1/bystander/requests/{request_id}"]["get"]["responses"]["200"]
    assert "BystanderStatusOut" in json.dumps(status)
    # A proposal to stop filming a spot, in bounds, is accepted.
    poly = [[0.0, 0.5], [0.4, 0.5], [0.4, 1.0], [0.0, 1.0]]
    resp = httpx.post(url, json={**base, "kind": "stop_filming", "polygon": poly, **solved(relay)})
    assert resp.status_code == 202, resp.text


def test_stop_filming_is_proposed_and_accepted(one, tmp_path):
    relay, alice = one
    clip = record_clip(alice)
    wait_for(lambda: relay.engine.index.counts()["clips"] == 1, 30, "the clip indexed")
    start = clip["start"] - 60
    code, out = run_anon(
        relay, "bystander", "request", "--lat", "51.5", "--lon", "-0.12", "--radius", "30",
        "--from", str(start), "--to", str(min(start + 600, time.time())),
        "--kind", "stop_filming", "--description", "I live opposite: my front window",
        "--polygon", "0.7,0", "1,0", "1,0.4", "0.7,0.4", "--save", str(tmp_path / "s.json"),
    )  # fmt: skip
    assert code == 0, out
    wait_for(lambda: asks_of(relay, alice), 10, "Alice's ask")
    (ask,) = asks_of(relay, alice)
    assert ask["bystander"]["polygon"] == [[0.7, 0], [1, 0], [1, 0.4], [0.7, 0.4]]
    code, out = run_footage(relay, alice.token, "asks")
    assert "proposes masking" in out
    # A stop_filming request is not answered with a copy or an erasure.
    code, out = run_footage(relay, alice.token, "answer", ask["id"], "erase", "--keys",
                            str(alice.keys))  # fmt: skip
    assert code == 1
    later = time.time() + 3 * 86400  # the injected clock: Alice answers three days later
    relay.engine.clock = lambda: later
    # Accepting is signing the mask: without the owner's keys, nothing is answered.
    code, out = run_footage(relay, alice.token, "answer", ask["id"], "accept")
    assert code != 0 and asks_of(relay, alice)[0]["status"] == "pending"
    code, out = run_footage(relay, alice.token, "--state", str(tmp_path / "alice-client"),
                            "answer", ask["id"], "accept", "--keys", str(alice.keys))  # fmt: skip
    assert code == 0, out
    assert "accepted" in out and "1 owner masks sent to alice-door" in out
    (ask,) = asks_of(relay, alice)
    assert ask["status"] == "accepted"
    assert ask["bystander"]["answer"]["polygon"] == [[0.7, 0], [1, 0], [1, 0.4], [0.7, 0.4]]
    code, out = run_anon(relay, "bystander", "status", str(tmp_path / "s.json"))
    assert json.loads(out)["answers"][0]["outcome"] == "accept"
    (entry,) = [e for e in public_entries(relay) if e["kind"] == "bystander_answer"]
    assert entry["data"]["answer"] == "accept" and entry["actor"] == "owner"
    assert entry["data"]["after_h"] in (71, 72)
    report = build_report(relay.audit.entries(), 0, later + 1, relay.engine.policy())
    assert report["bystander"]["time_to_answer"] == {"within a week": 1}
    assert report["bystander"]["answers_by_outcome"] == {"accept": 1}


def test_a_reminder_before_the_deadline_and_expiry_at_30_days(one, tmp_path, request):
    relay, alice = one
    clip = record_clip(alice)
    wait_for(lambda: relay.engine.index.counts()["clips"] == 1, 30, "the clip indexed")
    resp = httpx.post(
        f"{relay.url}/v1/bystander/requests",
        json={**body_for(clip, 51.5, -0.12, "erase", None), **solved(relay)},
    )
    assert resp.status_code == 202
    saved = tmp_path / "r.json"
    saved.write_text(resp.text)
    wait_for(lambda: asks_of(relay, alice), 10, "Alice's ask")
    (ask,) = asks_of(relay, alice)
    created = ask["created"]
    deadline = ask["expires"]
    assert deadline == json.loads(resp.text)["deadline"], "the deadline the bystander got"
    now = [created]
    relay.engine.clock = lambda: now[0]  # the injected clock: 30 days pass in no time
    day = 86400.0

    def kinds() -> list[str]:
        return [e["kind"] for e in relay.audit.entries()]

    # Alice's browser is subscribed to Web Push (a loopback push service plays it).
    import threading

    from test_webpush import Browser, PushService

    from relay.webpush import PushSender, PushSubscriptions, load_vapid

    service = PushService()
    subs = PushSubscriptions(relay.engine.r, hosts=("127.0.0.1",), https=False)
    phone = Browser(service.url + "/alice")
    subs.add("owner-of-alice-door", phone.subscription)
    sender = PushSender(
        relay.engine.r,
        relay.engine.index,
        subs,
        load_vapid(tmp_path / "v.pem"),
        "mailto:ops@relay.test",
    )
    stop = threading.Event()
    request.addfinalizer(service.close)
    request.addfinalizer(stop.set)  # before the fixture stops Redis (finalizers run first)
    threading.Thread(target=sender.run, args=(stop,), daemon=True).start()
    wait_for(sender.ready.is_set, 10, "the push sender")

    now[0] = deadline - 7 * day - 1  # the reminder is due 7 days before the deadline
    assert relay.engine.expire_due() == 0
    assert "bystander_reminder" not in kinds()
    now[0] = deadline - 7 * day
    assert relay.engine.expire_due() == 0
    assert kinds().count("bystander_reminder") == 1
    _path, _headers, body = service.got.get(timeout=30)
    assert phone.decrypt(body) == {
        "kind": "reminder",
        "ask": ask["id"],
        "deadline": ask["expires"],
    }
    code, out = run_footage(relay, alice.token, "asks")
    assert "REMINDER" in out
    (ask,) = asks_of(relay, alice)
    assert ask["bystander"]["reminded_at"] == deadline - 7 * day
    relay.engine.expire_due()
    assert kinds().count("bystander_reminder") == 1, "once"

    now[0] = deadline - 1
    assert relay.engine.expire_due() == 0
    assert asks_of(relay, alice)[0]["status"] == "pending"
    now[0] = deadline
    assert relay.engine.expire_due() == 1
    assert kinds().count("bystander_expired") == 1
    (ask,) = asks_of(relay, alice)
    assert ask["status"] == "expired"
    code, out = run_footage(relay, alice.token, "answer", ask["id"], "decline",
                            "--reason", "excessive")  # fmt: skip
    assert code == 1
    code, out = run_anon(relay, "bystander", "status", str(saved))
    status = json.loads(out)
    assert (status["status"], status["answers"]) == ("closed", [])
    public = public_entries(relay)
    assert check_meaning(public) == []
    report = build_report(relay.audit.entries(), 0, now[0] + 1, relay.engine.policy())
    assert report["bystander"]["expired"] == 1 and report["bystander"]["reminders"] == 1


def test_proof_of_work() -> None:
    nonce = bys.solve("abc", 12)
    assert bys.leading_zero_bits(bys.work_hash("abc", nonce)) >= 12
    assert bys.check_work("abc", nonce, 12)
    # The first solution: every smaller nonce fails.
    assert not any(bys.check_work("abc", str(i), 12) for i in range(int(nonce)))
    assert not bys.check_work("abc", "", 0) and not bys.check_work("abc", "x" * 65, 0)
    assert bys.leading_zero_bits(b"\x00\x00\x01") == 23
    assert bys.leading_zero_bits(b"\x80") == 0


def test_the_web_form_solves_the_proof_of_work_in_a_real_browser(one, browser, tmp_path):
    from datetime import UTC, datetime

    relay, alice = one
    relay.engine.bystander = BystanderConfig(difficulty=12, requests_per_window=5)
    clip = record_clip(alice)
    wait_for(lambda: relay.engine.index.counts()["clips"] == 1, 30, "the clip indexed")
    me = OwnerKeys.generate()
    ctx = browser.new_context(base_url=relay.url, timezone_id="UTC")
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    resp = page.goto("/bystander")
    assert resp is not None and "script-src 'self'" in resp.headers["content-security-policy"]

    def local(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S")

    start = clip["start"] - 120
    page.fill("#lat", "51.5")
    page.fill("#lon", "-0.12")
    page.fill("#radius", "40")
    page.fill("#from", local(start))
    page.fill("#to", local(min(start + 1800, time.time())))
    page.select_option("#kind", "copy")
    page.fill("#description", "grey hoodie, delivering a parcel")
    page.fill("#box-public", b64(me.box_public))
    page.click("#send")
    page.wait_for_selector("#sent:not([hidden]), #status.error", timeout=60_000)
    assert page.get_attribute("#status", "class") != "error", page.text_content("#status")
    request_id = page.text_content("#sent-id")
    assert request_id and request_id.startswith("bys-")
    assert errors == []

    # Alice is asked, with the description the form carried.
    wait_for(lambda: asks_of(relay, alice), 10, "Alice's ask")
    (ask,) = asks_of(relay, alice)
    assert ask["request_id"] == request_id
    assert ask["bystander"]["description"] == "grey hoodie, delivering a parcel"
    assert ask["requester_key"] == b64(me.box_public)

    # Her decline shows in the form, in words.
    code, out = run_footage(relay, alice.token, "answer", ask["id"], "decline",
                            "--reason", "others_shown")  # fmt: skip
    assert code == 0, out
    page.click("#status-form button[type=submit]")
    page.wait_for_selector("li.answer", timeout=10_000)
    assert "would show other people" in page.text_content("#answers")
    # A second request from this browser spends a fresh challenge (single use).
    page.fill("#description", "the same, once more")
    page.click("#send")
    page.wait_for_function(
        "(old) => document.getElementById('sent-id').textContent !== old", arg=request_id
    )
    assert errors == []
    ctx.close()


def test_an_owner_answers_bystanders_in_the_web_app(one, browser, tmp_path):
    from test_webapp import expect, open_page, sign_in_and_unlock

    relay, alice = one
    clip = record_clip(alice)
    wait_for(lambda: relay.engine.index.counts()["clips"] == 1, 30, "the clip indexed")
    me = OwnerKeys.generate()
    xss = '<img src=x onerror="window.pwned=1">'
    filed = {}
    for name, key in (("copy", me.box_public), ("erase", None), ("copy2", me.box_public)):
        body = body_for(clip, 51.5, -0.12, name[:4] if name != "erase" else name, key)
        body["description"] = f"{name}: green scarf {xss}"
        resp = httpx.post(f"{relay.url}/v1/bystander/requests", json={**body, **solved(relay)})
        assert resp.status_code == 202, resp.text
        filed[name] = resp.json()
    wait_for(lambda: len(asks_of(relay, alice)) == 3, 10, "three asks")
    asks = {a["bystander"]["description"].split(":")[0]: a for a in asks_of(relay, alice)}

    errors: list[str] = []
    page = open_page(browser, relay, errors)
    sign_in_and_unlock(page, alice, errors)
    copy_li = f"li[data-ask='{asks['copy']['id']}']"
    erase_li = f"li[data-ask='{asks['erase']['id']}']"
    expect(page, f"{copy_li}[data-bystander='copy'][data-status='pending']", errors)
    text = page.inner_text(copy_li)
    assert "green scarf" in text and xss in text and clip["clip"] in text
    assert page.query_selector(f"{copy_li} img") is None and page.evaluate("window.pwned") is None
    answers = [
        b.get_attribute("data-answer")
        for b in page.query_selector_all(f"{erase_li} button[data-answer]")
    ]
    assert answers == ["erase", "decline"]

    # Decline the copy with a reason from the list; the bystander reads it.
    page.select_option(f"{copy_li} select[data-reason]", "legal_hold")
    page.click(f"{copy_li} button[data-answer='decline']")
    expect(page, f"{copy_li}[data-status='denied']", errors)
    status = httpx.get(
        f"{relay.url}/v1/bystander/requests/{filed['copy']['id']}",
        headers={"Authorization": f"Bearer {filed['copy']['status_token']}"},
    ).json()
    assert [(a["outcome"], a["reason"]) for a in status["answers"]] == [("decline", "legal_hold")]

    # Send a copy: an Approval sealed to the bystander's key, signed in the browser.
    copy2_li = f"li[data-ask='{asks['copy2']['id']}']"
    page.click(f"{copy2_li} button[data-answer='copy']")
    expect(page, f"{copy2_li}[data-status='approved']", errors)
    saved = tmp_path / "copy2.json"
    saved.write_text(json.dumps(filed["copy2"]))
    me.save(tmp_path / "me")
    wait_for(
        lambda: "download_url" in run_anon(relay, "bystander", "status", str(saved))[1],
        30,
        "the doorbell to upload the copy",
    )
    code, out = run_anon(relay, "bystander", "fetch", str(saved), "--key", str(tmp_path / "me"),
                         "--out", str(tmp_path / "got"))  # fmt: skip
    assert code == 0, out
    (mp4,) = (tmp_path / "got").glob("*.mp4")
    assert ffprobe(mp4)["streams"][0]["codec_name"] == "h264"

    # Before erasing, the owner watches the clip the passer-by means, from the ask itself.
    page.click(f"{erase_li} button[data-play='{clip['clip']}']")
    expect(page, f"#video[data-clip='{clip['clip']}']", errors)
    assert page.evaluate("document.getElementById('video').src").startswith("blob:")

    # Erase: signed in the browser, one Deletion per clip; the doorbell deletes.
    page.click(f"{erase_li} button[data-answer='erase']")
    expect(page, f"{erase_li}[data-status='erased']", errors)
    wait_for(lambda: alice.bell.store.get(clip["clip"]) is None, 30, "the doorbell to delete")
    wait_for(lambda: relay.engine.index.clips(device="alice-door") == [], 30, "the index")
    assert filed["copy2"]["id"] in page.inner_text("#status"), "copies released before"
    assert errors == [], errors


def test_the_answer_does_not_wait_for_matching(one):
    """Owners are matched after the answer is sent: with matching held up, the bystander
    still gets their answer (a relay that matched first would time out here)."""
    import threading

    relay, alice = one
    clip = record_clip(alice)
    wait_for(lambda: relay.engine.index.counts()["clips"] == 1, 30, "the clip indexed")
    gate = threading.Event()
    real = relay.engine.fan_out

    def held(request_id: str) -> None:
        assert gate.wait(30), "the test never let matching go"
        real(request_id)

    relay.engine.fan_out = held
    try:
        resp = httpx.post(
            f"{relay.url}/v1/bystander/requests",
            json={**body_for(clip, 51.5, -0.12, "erase", None), **solved(relay)},
            timeout=10,
        )
        assert resp.status_code == 202
        assert relay.engine.r.zscore("fanout_pending", resp.json()["id"]) is not None
    finally:
        gate.set()
    wait_for(lambda: asks_of(relay, alice), 10, "Alice's ask, once matching runs")


def test_local_mistakes_are_named_before_the_relay_is_asked(tmp_path, capsys):
    """A missing saved request, a missing key folder or a copy without a key is the
    bystander's own mistake: said as such, even when the relay cannot be reached."""
    dead = "http://127.0.0.1:9"  # nothing listens: reaching out would say so instead
    cases = {
        "cannot read saved request": ["bystander", "status", str(tmp_path / "none.json")],
        "needs --key": [
            "bystander", "request", "--lat", "51.5", "--lon", "-0.12", "--radius", "20",
            "--from", "2026-12-01T10:00:00Z", "--to", "2026-12-01T10:30:00Z",
            "--kind", "copy", "--description", "red coat", "--save", str(tmp_path / "s.json"),
        ],
    }  # fmt: skip
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps({"id": "bys-0", "status_token": "t"}))
    cases["cannot read keys"] = [
        "bystander", "fetch", str(saved), "--key", str(tmp_path / "nokeys"),
        "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    for said, args in cases.items():
        code = footage.main(["--relay", dead, *args])
        err = capsys.readouterr().err
        assert code != 0 and said in err and "reach the relay" not in err, (said, err)
