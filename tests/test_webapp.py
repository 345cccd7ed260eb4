"""The owners' web app in a real browser (Debian's chromium, driven by Playwright).

Alice's page imports her keys, sees a ring with its snapshot decrypted in the page,
plays a clip to its end, approves an ask (the requester decrypts the release) and
deletes a clip.  Bob's session sees none of it; CSRF and the CSP hold.  Screenshots
of each step are kept in the test's tmp folder (``screens/``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from conftest import ffprobe
from stack import wait_for
from test_consent_e2e import Home, Relay, redis_contents, run_footage

from protocol import Event, encode, new_id, utcnow
from protocol.crypto import OwnerKeys, b64, unb64, unwrap_key
from protocol.decisions import Approval, Deletion, sign_decision
from relay.report import build_report
from relay.web import COOKIE

PASSPHRASE = "correct horse battery"
XSS = "<img src=x onerror=window.pwned=1>"
"""A requester's reason is shown to the owner: it must stay text."""


@pytest.fixture
def world(stack, tmp_path):
    relay = Relay(stack, tmp_path)
    homes = [
        Home(stack, relay, tmp_path, "alice-door", 51.5000, -0.1200),
        Home(stack, relay, tmp_path, "bob-door", 51.5004, -0.1200),
    ]
    yield relay, homes
    for h in homes:
        h.close()
    relay.close()


class Shots:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()
        self.n = 0

    def __call__(self, page, name: str) -> Path:
        self.n += 1
        path = self.folder / f"{self.n:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


def open_page(browser, relay: Relay, errors: list[str]):
    ctx = browser.new_context(base_url=relay.url)
    page = ctx.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto("/app/")
    expect(page, "body[data-ready='1']", errors)
    return page


def expect(page, selector: str, errors: list[str], timeout: float = 15000) -> None:
    """Wait for ``selector``; on a timeout, say what the page said."""
    from playwright.sync_api import TimeoutError as PwTimeout

    try:
        page.wait_for_selector(selector, timeout=timeout)
    except PwTimeout:
        status = page.inner_text("#status")
        raise AssertionError(f"no {selector}; the page says {status!r}; errors {errors}") from None


def expect_js(page, predicate: str, errors: list[str], timeout: float = 30000) -> None:
    """Wait for a JS predicate (a function: the CSP forbids evaluating strings)."""
    from playwright.sync_api import TimeoutError as PwTimeout

    try:
        page.wait_for_function(predicate, timeout=timeout)
    except PwTimeout:
        status = page.inner_text("#status")
        msg = f"not {predicate}; the page says {status!r}; errors {errors}"
        raise AssertionError(msg) from None


def sign_in(page, home: Home) -> None:
    page.fill("#token", home.token.read_text())
    page.click("#sign-in-form button[type=submit]")


def sign_in_and_unlock(page, home: Home, errors: list[str]) -> None:
    """What an owner does once per browser: sign in, import the key folder under
    ``PASSPHRASE``; then the page is unlocked."""
    sign_in(page, home)
    expect(page, "#import-form:not([hidden])", errors)
    page.set_input_files("#key-files", [str(home.keys / "sign.key"), str(home.keys / "box.key")])
    page.fill("#new-passphrase", PASSPHRASE)
    page.click("#import-form button[type=submit]")
    expect(page, "body[data-unlocked='1']", errors)
    errors.clear()  # the page asks who is signed in before anyone is: a 401


def session_of(relay: Relay, home: Home) -> tuple[dict[str, str], str]:
    """Sign in over plain HTTP: the cookie header to send, and the CSRF token."""
    r = httpx.post(
        f"{relay.url}/app/api/session",
        json={"token": home.token.read_text()},
        headers={"Origin": relay.url},
    )
    assert r.status_code == 200, r.text
    return {"Cookie": f"{COOKIE}={r.cookies[COOKIE]}"}, r.json()["csrf"]


def open_stream(relay: Relay, headers: dict[str, str]):
    """A raw live stream (``/app/api/live``) with a session's cookie; its socket."""
    import socket

    s = socket.create_connection(("127.0.0.1", relay.port), timeout=30)
    s.sendall(
        f"GET /app/api/live HTTP/1.1\r\nHost: 127.0.0.1:{relay.port}\r\n"
        f"Cookie: {headers['Cookie']}\r\n\r\n".encode()
    )
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    return s


def read_until(s, needle: bytes) -> bytes:
    """What the stream says until ``needle`` (the socket's timeout bounds the wait)."""
    got = b""
    while needle not in got:
        chunk = s.recv(65536)
        assert chunk, "the stream ended"
        got += chunk
    return got


def ring_seen(page) -> str:
    return page.get_attribute("li.ring", "data-ring")


def test_alice_at_her_door_in_a_real_browser(world, stack, browser, tmp_path):
    relay, (alice, bob) = world
    shots = Shots(tmp_path / "screens")
    errors: list[str] = []

    # --- sign in, import the key folder once, under a passphrase
    page = open_page(browser, relay, errors)
    sign_in(page, alice)
    expect(page, "#import-form:not([hidden])", errors)
    page.set_input_files("#key-files", [str(alice.keys / "sign.key"), str(alice.keys / "box.key")])
    page.fill("#new-passphrase", PASSPHRASE)
    shots(page, "import-keys")
    page.click("#import-form button[type=submit]")
    expect(page, "body[data-unlocked='1'][data-live='1']", errors)
    cookie = next(c for c in page.context.cookies() if c["name"] == COOKIE)
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Strict")
    assert page.evaluate("typeof document.cookie") == "string"
    assert COOKIE not in page.evaluate("document.cookie"), "the session is not readable by script"

    # --- the CSP holds: an injected inline script does not run
    page.evaluate(
        """() => { const s = document.createElement('script');
                   s.textContent = 'window.injected = 1'; document.body.append(s); }"""
    )
    assert page.evaluate("window.injected") is None
    assert any("Content Security Policy" in e for e in errors), errors
    errors.clear()

    # Bob's page is open too, listening (his stream must carry none of Alice's events).
    bob_h, bob_csrf = session_of(relay, bob)
    bob_live = open_stream(relay, bob_h)

    # --- a press: the ring and its decrypted snapshot appear on the open page
    alice.bell.schedule_press(2.0)
    alice.bell.run(9.0)
    alice.bell.controller.shutdown()
    expect(page, "li.ring.fresh[data-snapshot='shown']", errors)
    size = page.evaluate(
        "(() => { const i = document.querySelector('li.ring img');"
        " return [i.naturalWidth, i.naturalHeight]; })()"
    )
    assert size == [320, 240]
    assert int(page.get_attribute("body", "data-chimes") or 0) >= 1, "the chime played"
    shots(page, "ring")

    # --- motion appears in the timeline live too (published by the doorbell's own account)
    bell_client = stack.client("alice-door")
    start = Event(id=new_id(), ts=utcnow(), device="alice-door", type="motion_start", at=utcnow())
    bell_client.publish(*encode(start), qos=1)
    expect(page, f"li.motion.fresh[data-event='{start.id}'][data-type='motion_start']", errors)
    bell_client.loop_stop()
    bob_bell = stack.client("bob-door")
    bob_motion = Event(
        id=new_id(), ts=utcnow(), device="bob-door", type="motion_start", at=utcnow()
    )
    bob_bell.publish(*encode(bob_motion), qos=1)
    heard = read_until(bob_live, bob_motion.id.encode())
    bob_bell.loop_stop()
    bob_live.close()
    assert b"alice-door" not in heard and ring_seen(page) not in heard.decode()
    (snap_ev,) = [e for e in alice.events if e.kind == "ring_snapshot"]
    jpeg = snap_ev.data["jpeg"]
    stored = redis_contents(relay.engine.r)
    assert jpeg[200:264] not in stored and b64(jpeg)[200:264].encode() not in stored

    # --- clips: reopen the page (keys unlocked from IndexedDB), play one to its end
    wait_for(lambda: relay.engine.index.clips(device="alice-door"), 30, "the clip indexed")
    (clip,) = relay.engine.index.clips(device="alice-door")
    page.reload()
    expect(page, "#unlock-form:not([hidden])", errors)
    page.fill("#passphrase", "not the passphrase")
    page.click("#unlock-form button[type=submit]")
    expect(page, "#status.error", errors)
    assert "wrong passphrase" in page.inner_text("#status")
    page.fill("#passphrase", PASSPHRASE)
    page.click("#unlock-form button[type=submit]")
    expect(page, "body[data-unlocked='1']", errors)
    page.click(f"li[data-clip='{clip['clip_id']}'] >> text=Play")
    expect_js(page, "() => document.getElementById('video').readyState >= 1", errors)
    page.evaluate("document.getElementById('video').playbackRate = 4")
    expect_js(page, "() => document.getElementById('video').ended", errors)
    duration = page.evaluate("document.getElementById('video').duration")
    assert duration == pytest.approx(clip["duration_s"], abs=0.15)
    assert page.get_attribute("#download", "download").endswith(".mp4")
    shots(page, "clip-played")

    # --- Bob's session sees none of Alice's rings, clips or asks
    police = OwnerKeys.generate()
    police.save(tmp_path / "police-keys")
    (tmp_path / "police.token").write_text(
        relay.engine.add_requester("city-police", "agency", police.box_public)
    )
    t0 = time.time() - 3600  # a window may not reach into the future (issue 11)
    code, out = run_footage(
        relay,
        tmp_path / "police.token",
        "request",
        *("--lat", "51.5000", "--lon", "-0.12", "--radius", "50"),
        *("--from", str(t0), "--to", str(t0 + 3600)),
        *("--reason", f"parcel theft {XSS}", "--case", "CASE-7"),
    )
    assert code == 0, out
    request_id = out.strip()
    # The relay asks owners after answering the requester (issue 11): wait for the ask.
    wait_for(lambda: relay.engine.asks_for("owner-of-alice-door"), 30, "Alice's ask")
    (ask,) = relay.engine.asks_for("owner-of-alice-door")
    get = lambda path, h=bob_h: httpx.get(relay.url + path, headers=h)  # noqa: E731
    assert {e["device"] for e in get("/app/api/events").json()} == {"bob-door"}, "his own only"
    assert get("/app/api/clips").json() == []
    assert get("/app/api/asks").json() == []
    post_h = {**bob_h, "X-CSRF-Token": bob_csrf, "Origin": relay.url}
    bob_del = sign_decision(Deletion.create("alice-door", clip["clip_id"]), bob.owner.sign_private)
    base = f"{relay.url}/app/api"
    for path, body in (
        (f"/clips/alice-door/{clip['clip_id']}/delete", {"signed": bob_del}),
        (f"/clips/alice-door/{clip['clip_id']}/play", {"signed": bob_del}),
        (f"/asks/{ask.id}/approve", {"signed": bob_del}),
        (f"/asks/{ask.id}/deny", None),
    ):
        r = httpx.post(base + path, json=body, headers=post_h)
        assert r.status_code == 404, (path, r.status_code, r.text)
    view_path = f"/app/api/clips/alice-door/{clip['clip_id']}/play/view-0123456789abcdef"
    assert get(view_path).status_code == 404
    assert get("/app/api/events", {}).status_code == 401

    # --- CSRF: Alice's own session, without the token or from another origin, changes nothing
    alice_h, alice_csrf = session_of(relay, alice)
    for headers in (
        {**alice_h, "Origin": relay.url},
        {**alice_h, "Origin": "http://evil.example", "X-CSRF-Token": alice_csrf},
        {**alice_h, "Origin": relay.url, "X-CSRF-Token": bob_csrf},
    ):
        r = httpx.post(f"{base}/asks/{ask.id}/deny", headers=headers)
        assert r.status_code == 403 and r.json()["error"] == "csrf", r.text
    r = httpx.post(
        f"{base}/session", json={"token": "x"}, headers={"Origin": "http://evil.example"}
    )
    assert r.status_code == 403
    r = httpx.post(
        f"{base}/session",
        content=json.dumps({"token": alice.token.read_text()}),
        headers={"Origin": relay.url, "Content-Type": "text/plain"},
    )
    assert r.status_code in (400, 415) and COOKIE not in r.cookies, "a form cannot sign in"
    assert relay.engine.ask(ask.id).status == "pending"

    # --- Alice's own session cannot make her playback a release to anyone else: the
    # relay refuses a view sealed to another key, or not a view- id (footage view's rules)
    owner_key = unb64(clip["owner_key"])
    raw_key = unwrap_key(owner_key, alice.owner.box_private)
    for request_id_, to in (
        ("view-0123456789abcdef", police.box_public),
        ("own-0123456789abcdef", alice.owner.box_public),
    ):
        wrong = Approval.create(
            request_id_, "alice-door", [clip["clip_id"]], to, time.time() + 60,
            {clip["clip_id"]: raw_key},
        )  # fmt: skip
        r = httpx.post(
            f"{base}/clips/alice-door/{clip['clip_id']}/play",
            json={"signed": sign_decision(wrong, alice.owner.sign_private)},
            headers={**alice_h, "Origin": relay.url, "X-CSRF-Token": alice_csrf},
        )
        assert r.status_code == 422, (request_id_, r.text)
    assert alice.commands.counters["released"] == 1, "only the page's own view reached it"
    actions = [e["data"].get("action") for e in relay.audit.entries()]
    assert actions.count("owner_view") == 1, "the page's playback is footage view's path"
    csp = httpx.get(f"{relay.url}/app/").headers["content-security-policy"]
    assert "script-src 'self' 'wasm-unsafe-eval'" in csp and "unsafe-inline" not in csp

    # --- the ask: area, reason, case, window; approve, signed in the browser
    page.click("#refresh")
    expect(page, f"li[data-ask='{ask.id}'][data-status='pending']", errors)
    text = page.inner_text(f"li[data-ask='{ask.id}']")
    for needle in ("parcel theft", "CASE-7", "51.50000", "within 50 m", clip["clip_id"], XSS):
        assert needle in text, needle
    assert page.query_selector(f"li[data-ask='{ask.id}'] img") is None, "a requester's text is text"
    assert page.evaluate("window.pwned") is None
    # The ask's proof (issue 11) is checked in the browser, as `footage asks` does ...
    proof = page.inner_text(f"li[data-ask='{ask.id}'] [data-proof='ok']")
    assert ask.commitment["root"] in proof
    shots(page, "ask")

    # ... and an altered one is flagged (a relay that lies about the public record)
    def altered(route):
        resp = route.fetch()
        asks = resp.json()
        path = asks[0]["commitment"]["path"]
        path[0] = ("0" if path[0][0] != "0" else "1") + path[0][1:]
        route.fulfill(response=resp, json=asks)

    page.route("**/app/api/asks", altered)
    page.click("#refresh")
    expect(page, f"li[data-ask='{ask.id}'] [data-proof='bad']", errors)
    page.unroute("**/app/api/asks")
    page.click("#refresh")
    expect(page, f"li[data-ask='{ask.id}'] [data-proof='ok']", errors)
    page.click(f"li[data-ask='{ask.id}'] >> text=Approve")
    expect(page, f"li[data-ask='{ask.id}'][data-status='approved']", errors)
    assert page.inner_text("dd[data-figure='requests']") == "1"
    assert page.inner_text("dd[data-figure='approvals']") == "1"
    wait_for(lambda: relay.engine.released(request_id), 30, "the doorbell to release")
    code, out = run_footage(
        relay,
        tmp_path / "police.token",
        *("fetch", request_id, "--key", str(tmp_path / "police-keys")),
        *("--out", str(tmp_path / "got")),
    )
    assert code == 0, out
    (mp4,) = (tmp_path / "got").glob("*.mp4")
    assert ffprobe(mp4)["streams"][0]["codec_name"] == "h264"
    shots(page, "approved")

    # --- delete the clip for good, signed in the browser
    page.click(f"li[data-clip='{clip['clip_id']}'] >> text=Delete for good")
    expect(page, f"li[data-clip='{clip['clip_id']}'][data-deleting='1']", errors)
    wait_for(lambda: alice.bell.store.get(clip["clip_id"]) is None, 30, "the doorbell to delete")
    wait_for(lambda: not relay.engine.index.clips(device="alice-door"), 30, "the relay to forget")
    page.click("#refresh")
    expect(page, "body[data-refreshed='1']", errors)
    assert page.query_selector(f"li[data-clip='{clip['clip_id']}']") is None
    shots(page, "deleted")
    kinds = [e["kind"] for e in relay.audit.entries()]
    assert "deletion" in kinds and kinds.count("release") == 2, "Alice's viewing is on the record"
    report = build_report(relay.audit.entries(), 0, time.time() + 1, relay.engine.policy())
    assert report["clips_released"] == 1, "but it is not a release to anyone else"
    assert errors == [], errors


def test_open_pages_do_not_starve_the_api(stack, tmp_path):
    """More open pages (live streams) than the server's worker threads: the API still answers."""
    import socket

    relay = Relay(stack, tmp_path)
    home = Home(stack, relay, tmp_path, "alice-door", 51.5, -0.12)
    try:
        h, _csrf = session_of(relay, home)
        streams = []
        for _ in range(50):  # anyio's thread pool has 40
            s = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
            s.sendall(
                f"GET /app/api/live HTTP/1.1\r\nHost: 127.0.0.1:{relay.port}\r\n"
                f"Cookie: {h['Cookie']}\r\n\r\n".encode()
            )
            assert s.recv(4096).startswith(b"HTTP/1.1 200"), "the stream opened"
            streams.append(s)
        r = httpx.get(f"{relay.url}/app/api/me", headers=h, timeout=10)
        assert r.status_code == 200 and r.json()["owner"] == "owner-of-alice-door"
        for s in streams:
            s.close()
    finally:
        home.close()
        relay.close()


def test_revoking_an_owner_ends_their_web_sessions(stack, tmp_path):
    """``relay owners revoke`` (issue 11): the owner's open web session gets 401 at once."""
    relay = Relay(stack, tmp_path)
    home = Home(stack, relay, tmp_path, "alice-door", 51.5, -0.12)
    try:
        h, csrf = session_of(relay, home)
        assert httpx.get(f"{relay.url}/app/api/me", headers=h).status_code == 200
        relay.engine.revoke("owner", "owner-of-alice-door")
        assert httpx.get(f"{relay.url}/app/api/me", headers=h).status_code == 401
        r = httpx.post(
            f"{relay.url}/app/api/clips/alice-door/x/delete",
            json={"signed": "x"},
            headers={**h, "X-CSRF-Token": csrf, "Origin": relay.url},
        )
        assert r.status_code == 401
        actions = [e["data"].get("action") for e in relay.audit.entries()]
        assert "owner_revoked" in actions
    finally:
        home.close()
        relay.close()
