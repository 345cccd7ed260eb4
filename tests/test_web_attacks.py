"""Attacks on the owners' web app and the relay's HTTP surface (an adversarial review).

Bob, a registered owner, goes after Alice's doorbell, asks and decisions by changing
ids and replaying her signed words through his own session; a cross-site page tries
every state-changing route without the CSRF token; sign-in is tried from forms and
other origins, with a planted cookie; a signed-out cookie is replayed; the API's
answers are checked for the headers that keep them out of caches and frames; the
static route is walked out of; a bystander sends work for a challenge the relay never
issued, or a nonce that solves an easier puzzle than the one it was given.

Everything runs against the real app (uvicorn) on real Redis; no doorbell is needed:
commands meant for one are captured, and each test says none was sent.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from test_consent_e2e import Relay

from protocol.crypto import OwnerKeys, b64
from protocol.decisions import Approval, Deletion, sign_decision
from relay import keyspace as ks
from relay.consent import Ask
from relay.web import COOKIE, SESSION_TTL_S

EVIL = "https://evil.example"


class World:
    """A relay with two owners (Alice, Bob), one doorbell each, and a pending ask of Alice's."""

    def __init__(self, stack, tmp_path) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.relay = Relay(stack, tmp_path, publish=lambda t, p: self.sent.append((t, p)))
        self.url = self.relay.url
        engine = self.relay.engine
        self.keys, self.tokens = {}, {}
        for who in ("alice", "bob"):
            k = OwnerKeys.generate()
            self.keys[who] = k
            self.tokens[who] = engine.add_owner(f"owner-{who}", k.sign_public, k.box_public)
            stack.index.add_device(f"{who}-door", f"owner-{who}", 51.5, -0.12)
        self.requester_token = engine.add_requester(
            "police-1", "agency", OwnerKeys.generate().box_public
        )
        now = time.time()
        self.ask = Ask(
            id="ask-alice-1",
            request_id="req-alice-1",
            owner="owner-alice",
            device="alice-door",
            clip_ids=["clip-a"],
            requester="police-1",
            requester_kind="agency",
            requester_key=b64(OwnerKeys.generate().box_public),
            reason="a burglary",
            case_ref="case 7",
            basis="consent",
            center=(51.5, -0.12),
            radius_m=50.0,
            start=now - 3600,
            end=now - 1800,
            created=now,
            expires=now + 86400,
        )
        engine._save_ask(self.ask)
        engine.r.zadd(ks.owner_asks("owner-alice"), {self.ask.id: now})

    def session(self, who: str) -> tuple[dict[str, str], str]:
        """Sign ``who`` in: the headers to send (cookie, origin, CSRF token) and the cookie."""
        r = httpx.post(
            f"{self.url}/app/api/session",
            json={"token": self.tokens[who]},
            headers={"Origin": self.url},
        )
        assert r.status_code == 200, r.text
        cookie = r.cookies[COOKIE]
        headers = {
            "Cookie": f"{COOKIE}={cookie}",
            "Origin": self.url,
            "X-CSRF-Token": r.json()["csrf"],
        }
        return headers, cookie

    def alice_deletion(self, clip_id: str = "clip-a") -> str:
        return sign_decision(
            Deletion.create("alice-door", clip_id), self.keys["alice"].sign_private
        )

    def approval(self, who: str, device: str, request_id: str) -> str:
        sealed = b64(bytes(80))  # the right size; the relay never opens it
        a = Approval(
            device=device,
            expires=int(time.time()) + 3600,
            nonce=b64(bytes(range(16))),
            request_id=request_id,
            clip_ids=["clip-a"],
            requester_key=b64(self.keys[who].box_public),
            keys={"clip-a": sealed},
        )
        return sign_decision(a, self.keys[who].sign_private)

    def close(self) -> None:
        self.relay.close()


@pytest.fixture
def world(stack, tmp_path):
    w = World(stack, tmp_path)
    yield w
    w.close()


def test_bob_cannot_read_or_act_on_alices_doorbell(world):
    """IDOR: Bob changes the ids in URLs and replays Alice's signed decisions; all 404."""
    bob, _ = world.session("bob")
    url = world.url
    me = httpx.get(f"{url}/app/api/me", headers=bob).json()
    assert me["devices"] == ["bob-door"]
    assert httpx.get(f"{url}/app/api/asks", headers=bob).json() == []

    view = world.approval("alice", "alice-door", "view-0123456789abcdef")
    attempts = [
        # Alice's own signatures, replayed through Bob's session.
        ("clips/alice-door/clip-a/play", {"signed": view}),
        ("clips/alice-door/clip-a/delete", {"signed": world.alice_deletion()}),
        (
            "asks/ask-alice-1/approve",
            {"signed": world.approval("alice", "alice-door", "req-alice-1")},
        ),
        # Bob's own signatures on Alice's things.
        (
            "clips/alice-door/clip-a/play",
            {"signed": world.approval("bob", "alice-door", "view-0123456789abcdee")},
        ),
        (
            "asks/ask-alice-1/approve",
            {"signed": world.approval("bob", "alice-door", "req-alice-1")},
        ),
        ("asks/ask-alice-1/deny", None),
        ("asks/ask-alice-1/answer", {"answer": "decline", "reason": "not_shown"}),
        ("devices/alice-door/masks", {"signed": "eA=="}),
    ]
    for path, body in attempts:
        r = httpx.post(f"{url}/app/api/{path}", json=body, headers=bob)
        assert r.status_code == 404, (path, r.status_code, r.text)
    r = httpx.get(f"{url}/app/api/clips/alice-door/clip-a/play/view-0123456789abcdef", headers=bob)
    assert r.status_code == 404
    assert world.relay.engine.ask("ask-alice-1").status == "pending"
    assert world.sent == [], "nothing went to a doorbell"


def _routes(app, changing: bool = True) -> list[str]:
    """The paths under /app/api/ of every changing (non-GET) route, or of every reading
    (GET) one, into included routers too."""
    out = []
    todo = list(app.routes)
    while todo:
        route = todo.pop()
        inner = getattr(route, "original_router", None)  # FastAPI's included router
        if inner is not None:
            todo.extend(inner.routes)
            continue
        path = getattr(route, "path", "")
        methods = set(getattr(route, "methods", ()))
        if path.startswith("/app/api/") and bool(methods - {"GET", "HEAD"}) == changing:
            out.append(path)
    return sorted(out)


def test_every_changing_route_refuses_a_cross_site_request(world):
    """CSRF: every POST under /app/api/ (found from the app's routes, so new ones are
    covered too) refuses a request without the token, with a wrong one, or from another
    origin, whatever the content type; GET never changes anything (no method override)."""
    alice, _ = world.session("alice")
    app = world.relay.server.config.app
    routes = _routes(app)
    readable = set(_routes(app, changing=False))
    assert "/app/api/devices/{device}/masks" in routes
    assert "/app/api/asks/{ask_id}/answer" in routes
    fill = {"{device}": "alice-door", "{clip_id}": "clip-a", "{ask_id}": "ask-alice-1"}
    body = json.dumps({"answer": "decline", "reason": "not_shown"})
    for template in routes:
        if template == "/app/api/session":
            continue  # sign-in: see the next test
        path = template
        for k, v in fill.items():
            path = path.replace(k, v)
        cookie = {"Cookie": alice["Cookie"]}
        tries = {
            "no token, text/plain": {**cookie, "Content-Type": "text/plain", "Origin": EVIL},
            "no token, form": {
                **cookie,
                "Content-Type": "application/x-www-form-urlencoded",
            },
            "wrong token": {**alice, "X-CSRF-Token": "x" * 43},
            "right token, other origin": {**alice, "Origin": EVIL},
            "method override": {**cookie, "X-HTTP-Method-Override": "POST"},
        }
        for name, headers in tries.items():
            r = httpx.post(f"{world.url}{path}", content=body, headers=headers)
            # Refused as CSRF, before the body is looked at: not a 400 or 404 that a
            # well-formed body might turn into a 200.
            assert (r.status_code, r.json().get("error")) == (403, "csrf"), (template, name, r.text)
        r = httpx.get(f"{world.url}{path}", headers={**cookie, "X-HTTP-Method-Override": "POST"})
        if template in readable:
            # The same path also reads (a doorbell's masks in force): the GET must be
            # that read, never the change (world.sent stays empty below).
            assert r.status_code in (200, 404), (template, r.status_code)
        else:
            assert r.status_code in (404, 405), (template, r.status_code)
    assert world.relay.engine.ask("ask-alice-1").status == "pending"
    assert httpx.get(f"{world.url}/app/api/me", headers=alice).status_code == 200, "still signed in"
    assert world.sent == []


def test_sign_in_refuses_forms_other_origins_and_planted_cookies(world):
    """Login CSRF, session fixation, cookie flags, requesters kept out."""
    url, token = world.url, world.tokens["alice"]
    same = {"Origin": url}
    assert httpx.post(f"{url}/app/api/session", json={"token": token}).status_code == 403
    r = httpx.post(f"{url}/app/api/session", json={"token": token}, headers={"Origin": EVIL})
    assert r.status_code == 403
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        r = httpx.post(
            f"{url}/app/api/session",
            content=json.dumps({"token": token}),
            headers={**same, "Content-Type": kind},
        )
        assert r.status_code in (400, 415, 422), (kind, r.status_code)
        assert COOKIE not in r.cookies
    r = httpx.post(f"{url}/app/api/session", json={"token": world.requester_token}, headers=same)
    assert r.status_code == 403 and COOKIE not in r.cookies
    # A cookie planted by an attacker is not a session, and signing in replaces it.
    planted = {"Cookie": f"{COOKIE}=attacker-chosen-value"}
    assert httpx.get(f"{url}/app/api/me", headers=planted).status_code == 401
    r = httpx.post(f"{url}/app/api/session", json={"token": token}, headers={**same, **planted})
    assert r.status_code == 200 and r.cookies[COOKIE] != "attacker-chosen-value"
    flags = r.headers["set-cookie"].lower()
    for flag in ("httponly", "secure", "samesite=strict", "path=/"):
        assert flag in flags, flag
    assert "domain=" not in flags  # __Host- cookies must not name a domain


def test_signing_out_ends_the_session_at_the_relay(world):
    """The cookie is dead server-side after sign-out (not just deleted in the browser),
    and a session's Redis record expires within its lifetime."""
    alice, cookie = world.session("alice")
    key = ks.web_session(__import__("hashlib").sha256(cookie.encode()).hexdigest())
    assert 0 < world.relay.engine.r.ttl(key) <= SESSION_TTL_S
    # Sign-out is state-changing too: a cross-site page cannot sign Alice out.
    r = httpx.post(f"{world.url}/app/api/session/end", headers={"Cookie": alice["Cookie"]})
    assert r.status_code == 403
    r = httpx.post(f"{world.url}/app/api/session/end", headers=alice)
    assert r.status_code == 200
    assert httpx.get(f"{world.url}/app/api/me", headers=alice).status_code == 401
    assert world.relay.engine.r.exists(key) == 0


def test_every_answer_is_kept_out_of_caches_and_frames(world):
    """The page and every API answer (the CSRF token, asks, sealed snapshots, errors)
    carry no-store, nosniff and a CSP that forbids framing and inline script."""
    alice, _ = world.session("alice")
    url = world.url
    answers = {
        "page": httpx.get(f"{url}/app/"),
        "bystander page": httpx.get(f"{url}/bystander"),
        "me (holds the CSRF token)": httpx.get(f"{url}/app/api/me", headers=alice),
        "asks": httpx.get(f"{url}/app/api/asks", headers=alice),
        "events": httpx.get(f"{url}/app/api/events", headers=alice),
        "clips": httpx.get(f"{url}/app/api/clips", headers=alice),
        "unauthorized": httpx.get(f"{url}/app/api/me"),
        "invalid body": httpx.post(f"{url}/app/api/asks/x/answer", json={}, headers=alice),
        "redirect": httpx.get(f"{url}/app"),
    }
    for name, r in answers.items():
        assert r.headers.get("cache-control") == "no-store", name
        assert r.headers.get("x-content-type-options") == "nosniff", name
        csp = r.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp, name
        assert r.headers.get("x-frame-options") == "DENY", name
        assert "unsafe-inline" not in csp and "'unsafe-eval'" not in csp, name
    assert answers["redirect"].headers["location"] == "/app/", "no open redirect"


def test_the_static_route_stays_in_its_folder(world):
    for path in (
        "/app/static/../../web.py",
        "/app/static/%2e%2e/%2e%2e/web.py",
        "/app/static/..%2f..%2fweb.py",
        "/app/static//etc/passwd",
    ):
        r = httpx.get(f"{world.url}{path}")
        assert r.status_code == 404, (path, r.status_code)
        assert "WebError" not in r.text and "root:" not in r.text


def test_the_relay_decides_the_work_a_bystander_owes(world):
    """A challenge the relay never issued, or a nonce that solves only an easier puzzle
    than the stored one (a tampered difficulty), is refused; the challenge is used up."""
    import hashlib

    from protocol.bystander import check_work

    url = world.url
    body = {
        "lat": 51.5,
        "lon": -0.12,
        "radius_m": 30,
        "start": time.time() - 3600,
        "end": time.time() - 3000,
        "kind": "erase",
        "description": "red coat",
    }
    ch = httpx.get(f"{url}/v1/bystander/challenge").json()
    assert ch["difficulty"] >= 8
    # The cheapest nonce that a page told "difficulty 1" would send.
    nonce = next(
        str(i)
        for i in range(10_000)
        if check_work(ch["challenge"], str(i), 1)
        and not check_work(ch["challenge"], str(i), ch["difficulty"])
    )
    r = httpx.post(
        f"{url}/v1/bystander/requests", json={**body, "challenge": ch["challenge"], "nonce": nonce}
    )
    assert r.status_code == 403 and r.json()["error"] == "bad_work"
    # Used up by the failed try: even a right nonce is now refused.
    i = 0
    while not check_work(ch["challenge"], str(i), ch["difficulty"]):
        i += 1
    r = httpx.post(
        f"{url}/v1/bystander/requests", json={**body, "challenge": ch["challenge"], "nonce": str(i)}
    )
    assert r.status_code == 403
    forged = hashlib.sha256(b"mine").hexdigest()[:32]
    r = httpx.post(f"{url}/v1/bystander/requests", json={**body, "challenge": forged, "nonce": "0"})
    assert r.status_code == 403


XSS = "<img src=x onerror=window.pwned=1><script>window.pwned=2</script>"


def test_text_from_requesters_bystanders_and_the_relay_stays_text(world, browser, tmp_path):
    """XSS: every field a requester, a bystander or the relay puts on Alice's page (the
    requester's name, reason, case, basis; a passer-by's description, kind and polygon; a
    live reminder's ask id) and on the bystanders' form (an answer's reason) is shown as
    text, runs nothing, and breaks nothing else on the page."""
    from test_webapp import PASSPHRASE, expect, open_page

    engine = world.relay.engine
    for field in ("requester", "reason", "case_ref", "basis"):
        setattr(world.ask, field, f"{field} {XSS}")
    engine._save_ask(world.ask)
    now = time.time()
    bys = Ask(
        **{
            **world.ask.__dict__,
            "id": "ask-bys-1",
            "request_id": "bys-0123456789abcdef",
            "requester": "bystander",
            "bystander": {
                "kind": "stop_filming",
                "description": f"description {XSS}",
                "polygon": [[XSS, 0.1], [0.9, XSS], [0.9, 0.9]],
                "remind_at": now + 3600,
            },
        }
    )
    engine._save_ask(bys)
    engine.r.zadd(ks.owner_asks("owner-alice"), {bys.id: now})
    keys = tmp_path / "alice-keys"
    world.keys["alice"].save(keys)

    errors: list[str] = []
    page = open_page(browser, world.relay, errors)
    page.fill("#token", world.tokens["alice"])
    page.click("#sign-in-form button[type=submit]")
    expect(page, "#import-form:not([hidden])", errors)
    page.set_input_files("#key-files", [str(keys / "sign.key"), str(keys / "box.key")])
    page.fill("#new-passphrase", PASSPHRASE)
    page.click("#import-form button[type=submit]")
    expect(page, "body[data-unlocked='1'][data-live='1']", errors)
    expect(page, "li[data-ask='ask-bys-1'] [data-mask-preview]", errors)
    asks = page.inner_text("#asks")
    # As text (not markup the CSP happens to stop: an <img> would still load).
    for shown in ("requester", "reason", "case_ref", "basis", "description"):
        assert f"{shown} {XSS}" in asks, shown
    # A reminder pushed on Alice's live stream, its ask id the payload.
    reminder = {"kind": "reminder", "ask": XSS, "deadline": now + 86400}
    engine.r.publish(ks.live_channel("alice-door"), json.dumps(reminder))
    page.wait_for_function("() => document.getElementById('status').textContent.includes('waits')")
    assert XSS in page.inner_text("#status")
    assert page.evaluate("() => window.pwned === undefined")
    assert (
        page.evaluate("() => document.querySelectorAll('#asks img[src=x], #status img').length")
        == 0
    )
    page.context.close()

    # The bystanders' form, shown answers by a relay that lies about the reason.
    ctx = browser.new_context(base_url=world.url)
    form = ctx.new_page()
    form.on("pageerror", lambda e: errors.append(str(e)))
    answers = {
        "status": "open",
        "deadline": now + 86400,
        "answers": [{"outcome": "decline", "reason": XSS}, {"outcome": XSS}],
    }
    form.route(
        "**/v1/bystander/requests/*",
        lambda route: route.fulfill(status=200, json=answers),
    )
    form.goto("/bystander")
    form.fill("#status-id", "bys-0123456789abcdef")
    form.fill("#status-token", "whatever")
    form.click("#status-form button[type=submit]")
    form.wait_for_selector("#answers li.answer")
    assert XSS in form.inner_text("#answers")
    assert form.evaluate("() => window.pwned === undefined")
    ctx.close()
    assert not [e for e in errors if "pwned" in e], errors


def _stream_after(world, headers: dict[str, str], end_it, needle: str) -> bytes:
    """Open Alice's live stream, ``end_it()``, publish an event holding ``needle`` on
    alice-door's channel; what the stream carried until it closed (or 20 s passed)."""

    from test_webapp import open_stream

    s = open_stream(world.relay, headers)
    end_it()
    engine = world.relay.engine
    event = {"kind": "event", "type": "motion_start", "id": needle, "device": "alice-door"}
    deadline = time.monotonic() + 20
    got = b""
    s.settimeout(0.5)
    while time.monotonic() < deadline and not got.endswith(b"0\r\n\r\n"):
        engine.r.publish(ks.live_channel("alice-door"), json.dumps(event))
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        got += chunk
        if needle.encode() in got:
            break
    s.close()
    return got


@pytest.mark.parametrize("how", ["nothing", "sign-out", "revoke", "doorbell given to Bob"])
def test_an_open_live_stream_ends_with_the_session(world, how):
    """A page left open after sign-out, after ``relay owners revoke``, or after the
    doorbell changed hands, hears no more of the doorbell's rings and motion (and,
    the control, a page whose session goes on does hear them)."""
    alice, _ = world.session("alice")
    engine = world.relay.engine

    def end_it() -> None:
        if how == "nothing":
            pass
        elif how == "sign-out":
            assert httpx.post(f"{world.url}/app/api/session/end", headers=alice).status_code == 200
        elif how == "revoke":
            engine.revoke("owner", "owner-alice")
        else:
            engine.r.hset(ks.device_info("alice-door"), "owner", "owner-bob")

    needle = f"after-{how.replace(' ', '-')}"
    got = _stream_after(world, alice, end_it, needle)
    assert (needle.encode() in got) == (how == "nothing"), got[-300:]


def test_another_site_cannot_frame_or_read_the_app(world, browser):
    """Clickjacking: a page of another origin that frames /app/ gets nothing (the
    browser honours frame-ancestors 'none'); nor can its script read /app/api/me (the
    CSRF token) with the owner's cookie: no CORS header is ever sent."""
    import http.server
    import threading

    from testing.localstack import free_port

    evil = (
        f"<html><body><iframe id=f src='{world.url}/app/'></iframe><script>"
        f"fetch('{world.url}/app/api/me',{{credentials:'include'}}).then(r=>r.text())"
        ".then(t=>{document.title='read:'+t}).catch(()=>{document.title='blocked'})"
        "</script></body></html>"
    ).encode()

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(evil)

        def log_message(self, *_a):
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.2", port), Evil)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from test_webapp import expect, open_page

        errors: list[str] = []
        page = open_page(browser, world.relay, errors)  # Alice signs in on the relay's page
        page.fill("#token", world.tokens["alice"])
        page.click("#sign-in-form button[type=submit]")
        expect(page, "#import-form:not([hidden])", errors)
        ctx = page.context
        assert any(c["name"] == COOKIE for c in ctx.cookies())
        page.goto(f"http://127.0.0.2:{port}/")
        page.wait_for_function("() => document.title !== ''")
        assert page.title() == "blocked"
        page.wait_for_load_state("load")  # the frame's load too
        framed = page.query_selector("#f").content_frame()
        assert framed is None or framed.query_selector("#sign-in-form") is None, framed.url
        ctx.close()
    finally:
        server.shutdown()


def _push_sub(n: int) -> dict:
    import base64

    def u(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return {
        "endpoint": f"https://fcm.googleapis.com/fcm/send/attacker-{n}",
        "keys": {"p256dh": u(b"\x04" + bytes(64)), "auth": u(bytes(16))},
    }


def test_push_subscriptions_are_per_owner_and_bounded(world):
    """Bob cannot unsubscribe Alice's browser, and cannot make the relay fan each of his
    rings out to thousands of push endpoints (an amplifier aimed at the push services,
    and a queue in front of everyone else's notifications)."""
    from relay.web import WebPush
    from relay.webpush import MAX_SUBSCRIPTIONS, PushSubscriptions

    subs = PushSubscriptions(world.relay.engine.r)
    world.relay.server.config.app.state.web_push = WebPush(subs, vapid=None)
    alice, _ = world.session("alice")
    bob, _ = world.session("bob")
    url = world.url
    r = httpx.post(f"{url}/app/api/push/subscribe", json=_push_sub(0), headers=alice)
    assert r.status_code == 201
    r = httpx.post(f"{url}/app/api/push/unsubscribe", json=_push_sub(0), headers=bob)
    assert r.status_code == 200
    assert [s["endpoint"] for s in subs.of("owner-alice")] == [_push_sub(0)["endpoint"]]

    codes = [
        httpx.post(f"{url}/app/api/push/subscribe", json=_push_sub(n), headers=bob).status_code
        for n in range(1, MAX_SUBSCRIPTIONS + 3)
    ]
    assert codes == [201] * MAX_SUBSCRIPTIONS + [422, 422]
    assert len(subs.of("owner-bob")) == MAX_SUBSCRIPTIONS
    # A browser already subscribed may renew its keys; one unsubscribed makes room.
    again = httpx.post(f"{url}/app/api/push/subscribe", json=_push_sub(1), headers=bob)
    assert again.status_code == 201
    httpx.post(f"{url}/app/api/push/unsubscribe", json=_push_sub(1), headers=bob)
    late = _push_sub(MAX_SUBSCRIPTIONS + 5)
    assert httpx.post(f"{url}/app/api/push/subscribe", json=late, headers=bob).status_code == 201
