"""Web Push: a press reaches a local RFC 8030 push service, encrypted per RFC 8291.

The receiver here plays the push service and the browser both: it accepts the
relay's POST, checks the VAPID signature, and decrypts the payload with the
subscription's own keys (as the browser would) to find the ring.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from stack import wait_for
from test_consent_e2e import Home, Relay
from test_webapp import PASSPHRASE, expect, session_of

from relay.web import WebPush
from relay.webpush import (
    BadSubscription,
    PushSender,
    PushSubscriptions,
    application_server_key,
    load_vapid,
)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PushService:
    """A loopback push service: ``/gone`` answers 410, anything else 201."""

    def __init__(self) -> None:
        self.got: queue.Queue[tuple[str, dict[str, str], bytes]] = queue.Queue()
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                got.put((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(410 if self.path == "/gone" else 201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class Browser:
    """A subscription's keys, as a browser's PushManager would make them."""

    def __init__(self, endpoint: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        pub = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.subscription = {
            "endpoint": endpoint,
            "keys": {"p256dh": b64url(pub), "auth": b64url(self.auth)},
        }

    def decrypt(self, body: bytes) -> dict:
        plain = http_ece.decrypt(
            body, private_key=self.key, auth_secret=self.auth, version="aes128gcm"
        )
        return json.loads(plain)


def check_vapid(authorization: str, vapid, audience: str) -> None:
    scheme, _, params = authorization.partition(" ")
    fields = dict(p.split("=", 1) for p in params.split(","))
    assert scheme == "vapid" and fields["k"] == application_server_key(vapid)
    head, claims, sig = fields["t"].split(".")
    raw = unb64url(sig)
    der = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    vapid.public_key.verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
    assert json.loads(unb64url(claims))["aud"] == audience


@pytest.fixture
def world(stack, tmp_path):
    relay = Relay(stack, tmp_path)
    homes = [
        Home(stack, relay, tmp_path, "alice-door", 51.5000, -0.1200),
        Home(stack, relay, tmp_path, "bob-door", 51.5004, -0.1200),
    ]
    service = PushService()
    yield relay, homes, service
    service.close()
    for h in homes:
        h.close()
    relay.close()


def test_a_ring_is_pushed_encrypted_to_its_owners_browsers_only(world, browser, tmp_path):
    relay, (alice, bob), service = world
    r = relay.engine.r
    vapid = load_vapid(tmp_path / "vapid.pem")
    assert oct((tmp_path / "vapid.pem").stat().st_mode & 0o777) == "0o600"
    subs = PushSubscriptions(r, hosts=("127.0.0.1",), https=False)
    relay.server.config.app.state.web_push = WebPush(subs, vapid)
    sender = PushSender(r, relay.engine.index, subs, vapid, "mailto:ops@relay.test")
    stop = threading.Event()
    threading.Thread(target=sender.run, args=(stop,), daemon=True).start()
    wait_for(sender.ready.is_set, 10, "the push sender")

    # Each owner subscribes a browser through the web app; Alice also has a stale one.
    browsers = {}
    for home, path in ((alice, "/alice"), (bob, "/bob"), (alice, "/gone")):
        h, csrf = session_of(relay, home)
        key = httpx.get(f"{relay.url}/app/api/push", headers=h).json()
        assert key["application_server_key"] == application_server_key(vapid)
        browsers[path] = Browser(service.url + path)
        resp = httpx.post(
            f"{relay.url}/app/api/push/subscribe",
            json=browsers[path].subscription,
            headers={**h, "X-CSRF-Token": csrf, "Origin": relay.url},
        )
        assert resp.status_code == 201, resp.text
    # An owner cannot point the relay at another host (SSRF).
    evil = Browser("http://10.0.0.1/x").subscription
    resp = httpx.post(
        f"{relay.url}/app/api/push/subscribe",
        json=evil,
        headers={**h, "X-CSRF-Token": csrf, "Origin": relay.url},
    )
    assert resp.status_code == 422 and "not a known push service" in resp.text

    alice.bell.schedule_press(1.0)
    alice.bell.run(3.0)
    (ring,) = [e for e in alice.events if e.kind == "ring"]
    got = {}
    for _ in range(2):  # Alice's two browsers, in either order
        path, headers, body = service.got.get(timeout=30)
        got[path] = (headers, body)
    assert set(got) == {"/alice", "/gone"}
    headers, body = got["/alice"]
    assert headers["content-encoding"] == "aes128gcm" and int(headers["ttl"]) > 0
    check_vapid(headers["authorization"], vapid, service.url)
    assert b"alice-door" not in body and ring.id.encode() not in body, "the service learns nothing"
    pushed = browsers["/alice"].decrypt(body)
    assert pushed == {
        "kind": "ring",
        "device": "alice-door",
        "ring_id": ring.id,
        "at": pushed["at"],
    }
    wait_for(lambda: len(subs.of("owner-of-alice-door")) == 1, 10, "the gone one forgotten")
    assert sender.counters == {"pushed": 1, "failed": 0, "forgotten": 1}

    # Bob's browser heard nothing of Alice's ring; his own ring reaches only him.
    bob.bell.schedule_press(1.0)
    bob.bell.run(3.0)
    path, _headers, body = service.got.get(timeout=30)
    assert path == "/bob"
    assert browsers["/bob"].decrypt(body)["device"] == "bob-door"
    assert service.got.empty()
    stop.set()

    # What the push service delivered, handed to the page's service worker (as the
    # browser would after decrypting it), becomes a notification.
    shown = show_in_service_worker(browser, relay, alice, json.dumps(pushed))
    assert shown["title"] == "Someone is at the door"
    assert shown["tag"] == ring.id and shown["body"].startswith("alice-door rang at")


def show_in_service_worker(browser, relay, home, payload: str) -> dict:
    errors: list[str] = []
    ctx = browser.new_context(base_url=relay.url)
    ctx.grant_permissions(["notifications"], origin=relay.url)
    page = ctx.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    cdp = ctx.new_cdp_session(page)
    registrations: list[str] = []

    def updated(e: dict) -> None:
        for r in e["registrations"]:
            if r.get("isDeleted"):
                if r["registrationId"] in registrations:
                    registrations.remove(r["registrationId"])
            elif r["registrationId"] not in registrations:
                registrations.append(r["registrationId"])

    cdp.on("ServiceWorker.workerRegistrationUpdated", updated)
    cdp.send("ServiceWorker.enable")
    page.goto("/app/")
    expect(page, "body[data-ready='1']", errors)
    page.fill("#token", home.token.read_text())
    page.click("#sign-in-form button[type=submit]")
    expect(page, "#import-form:not([hidden])", errors)
    page.set_input_files("#key-files", [str(home.keys / "sign.key"), str(home.keys / "box.key")])
    page.fill("#new-passphrase", PASSPHRASE)
    page.click("#import-form button[type=submit]")
    expect(page, "body[data-unlocked='1'][data-service-worker='1'] #notify:not([hidden])", errors)
    until_js(page, "async () => !!(await navigator.serviceWorker.ready).active", "the worker")
    wait_for(lambda: registrations, 10, "the service worker's registration")
    notes = "async () => (await navigator.serviceWorker.ready).getNotifications()"
    fields = "(n) => ({title: n.title, body: n.body, tag: n.tag})"
    shown_now = f"async () => (await ({notes})()).map({fields})"
    delivered = [0.0]

    def deliver_then_look() -> object:
        # A push handed to a worker that is still starting can be dropped by headless
        # Chromium; a browser would get it again from its push service, so hand it over
        # again every few seconds until the worker shows it (same tag: one notification).
        if time.monotonic() - delivered[0] > 3:
            cdp.send(
                "ServiceWorker.deliverPushMessage",
                {"origin": relay.url, "registrationId": registrations[-1], "data": payload},
            )
            delivered[0] = time.monotonic()
        return page.evaluate(shown_now)

    got: list = []
    wait_for(lambda: got.append(deliver_then_look()) or got[-1], 30, "the pushed notification")
    (shown,) = got[-1]
    ctx.close()
    assert errors == [], errors
    return shown


def until_js(page, fn: str, what: str, timeout: float = 30.0):
    """Poll an async JS function until it returns something truthy; that value.

    (``page.wait_for_function`` takes a Promise for truthy and returns at once.)
    """
    got = []

    def truthy() -> bool:
        got[:] = [page.evaluate(fn)]
        return bool(got[0])

    wait_for(truthy, timeout, what)
    return got[0]


def test_subscriptions_are_checked():
    subs = PushSubscriptions(r=None)  # the real push services, https only
    good = Browser("https://fcm.googleapis.com/fcm/send/abc").subscription
    assert subs.check(good)["endpoint"] == good["endpoint"]
    assert subs.check(Browser("https://wns2-par02p.notify.windows.com/w/?t=1").subscription)
    for endpoint, why in (
        ("http://fcm.googleapis.com/fcm/send/abc", "https"),
        ("https://fcm.googleapis.com.evil.example/x", "not a known push service"),
        ("https://169.254.169.254/latest", "not a known push service"),
        ("https://evilnotify.windows.com/x", "not a known push service"),
    ):
        with pytest.raises(BadSubscription, match=why):
            subs.check(Browser(endpoint).subscription)
    bad = Browser("https://fcm.googleapis.com/x").subscription
    bad["keys"]["auth"] = b64url(b"short")
    with pytest.raises(BadSubscription, match="5 bytes"):
        subs.check(bad)
