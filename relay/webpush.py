"""Web Push for a closed page: RFC 8030 delivery, VAPID (RFC 8292), RFC 8291 encryption.

When a ring is indexed, Redis publishes it on the doorbell's live channel (see
``keyspace.live_channel``).  A :class:`PushSender` listens there and sends each owner's
browsers a push message through their push service (``pywebpush``): the payload is
encrypted to the subscription's P-256 key and auth secret (``aes128gcm``, RFC 8291), so
the push service learns nothing, and it holds only the ring's metadata (doorbell, time,
ring id) — never the snapshot, which stays sealed to the owner at the relay until the
page fetches it.  A bystander's ask whose deadline is near is pushed the same way (its
ask id and deadline only).

Safety: subscriptions are per owner (``keyspace.web_push_subs``); the relay POSTs only to
``https`` endpoints on the push services in ``hosts`` (an owner cannot make the relay
call an internal address); a push service's 404/410 forgets the subscription; with
several API processes, one claim per ring (``SET NX``) makes each ring pushed once.

Example::

    vapid = load_vapid(Path("/etc/doorbell-relay/vapid.pem"))      # made on first use
    subs = PushSubscriptions(r, hosts=DEFAULT_PUSH_HOSTS)
    sender = PushSender(r, index, subs, vapid, "mailto:ops@example.org")
    threading.Thread(target=sender.run, args=(stop,), daemon=True).start()
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization

from relay import keyspace as ks
from relay.keyfiles import create_once

log = logging.getLogger(__name__)

DEFAULT_PUSH_HOSTS = (
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "web.push.apple.com",
    ".notify.windows.com",
)
"""The browsers' push services (a leading dot: any host under that domain)."""
PUSH_TTL_S = 300
"""A ring older than five minutes is not worth a notification."""


class BadSubscription(ValueError):
    """A subscription the relay will not send to; the message says why."""


def load_vapid(path: Path) -> Any:
    """The relay's VAPID key (P-256) from ``path``, made (mode 0600) if missing."""
    from py_vapid import Vapid

    if not path.exists():
        vapid = Vapid()
        vapid.generate_keys()
        create_once(path, vapid.private_pem())  # another relay process may win
    return Vapid.from_file(str(path))


def application_server_key(vapid: Any) -> str:
    """The VAPID public key as browsers want it (``applicationServerKey``, base64url)."""
    raw = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64url(text: str, size: int | None) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise BadSubscription("keys must be base64url") from None
    if size is not None and len(raw) != size:
        raise BadSubscription(f"a key of {len(raw)} bytes where {size} are needed")
    return raw


MAX_SUBSCRIPTIONS = 20
"""Browsers one owner may subscribe: each ring is one push per browser, so without a
bound one account could aim the relay at the push services thousands of times a ring."""


class PushSubscriptions:
    """Owners' push subscriptions in Redis, one hash per owner, by endpoint hash."""

    def __init__(
        self,
        r: Any,
        hosts: Iterable[str] = DEFAULT_PUSH_HOSTS,
        https: bool = True,
        most: int = MAX_SUBSCRIPTIONS,
    ):
        self.r, self.most = r, most
        self.hosts = tuple(hosts)
        self.https = https  # tests run a local push service over plain HTTP

    def check(self, sub: dict[str, Any]) -> dict[str, Any]:
        """The subscription in canonical form, or :class:`BadSubscription`."""
        endpoint = sub.get("endpoint")
        keys = sub.get("keys") or {}
        if not isinstance(endpoint, str) or len(endpoint) > 2048:
            raise BadSubscription("endpoint must be a URL")
        url = urlsplit(endpoint)
        if url.scheme != "https" and (self.https or url.scheme != "http"):
            raise BadSubscription("push endpoints must be https")
        host = url.hostname or ""
        if not any(host == h or (h.startswith(".") and host.endswith(h)) for h in self.hosts):
            raise BadSubscription(f"{host!r} is not a known push service")
        p256dh, auth = keys.get("p256dh"), keys.get("auth")
        if not isinstance(p256dh, str) or not isinstance(auth, str):
            raise BadSubscription("keys.p256dh and keys.auth are needed")
        if _b64url(p256dh, 65)[0] != 4:
            raise BadSubscription("p256dh must be an uncompressed P-256 point")
        _b64url(auth, 16)
        return {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}

    def add(self, owner: str, sub: dict[str, Any]) -> None:
        clean = self.check(sub)
        key, field = ks.web_push_subs(owner), _hash(clean["endpoint"])
        if not self.r.eval(ks.PUSH_SUBSCRIBE_LUA, 1, key, field, json.dumps(clean), self.most):
            raise BadSubscription(f"at most {self.most} browsers per owner: unsubscribe one first")

    def remove(self, owner: str, endpoint: str) -> None:
        self.r.hdel(ks.web_push_subs(owner), _hash(endpoint))

    def of(self, owner: str) -> list[dict[str, Any]]:
        return [json.loads(v) for v in self.r.hvals(ks.web_push_subs(owner))]


def _hash(endpoint: str) -> str:
    return hashlib.sha256(endpoint.encode()).hexdigest()


class PushSender:
    """Pushes each ring to its owner's subscribed browsers; :meth:`run` until ``stop``."""

    def __init__(
        self,
        r: Any,
        index: Any,
        subs: PushSubscriptions,
        vapid: Any,
        subject: str,
        send: Callable[..., Any] | None = None,
    ) -> None:
        from pywebpush import webpush

        self.r, self.index, self.subs = r, index, subs
        self.vapid, self.subject = vapid, subject
        self.send = send or webpush
        self.ready = threading.Event()
        self.counters = {"pushed": 0, "failed": 0, "forgotten": 0}

    def run(self, stop: threading.Event) -> None:
        pubsub = self.r.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(ks.live_channel("*"))
        self.ready.set()
        try:
            while not stop.is_set():
                msg = pubsub.get_message(timeout=0.5)
                if msg is not None:
                    try:
                        self.handle(json.loads(msg["data"]))
                    except Exception:  # one bad message must not stop the pushes
                        log.exception("web push: could not handle a live message")
        finally:
            pubsub.close()

    def handle(self, event: dict[str, Any]) -> int:
        """Push one ring, or one reminder of a bystander's deadline, to its owner's
        browsers; the number of pushes sent."""
        if event.get("kind") == "reminder":
            payload = json.dumps(
                {"kind": "reminder", "ask": event["ask"], "deadline": event["deadline"]}
            )
        elif event.get("kind") == "event" and event.get("type") == "ring":
            payload = json.dumps(
                {
                    "kind": "ring",
                    "device": event["device"],
                    "ring_id": event["id"],
                    "at": event["at"],
                }
            )
        else:
            return 0
        device = event["device"]
        info = self.index.device(device) or {}
        owner = info.get("owner")
        if not owner or not self.r.set(ks.web_push_sent(event["id"]), "1", nx=True, ex=3600):
            return 0  # no owner, or another API process pushed it
        sent = 0
        for sub in self.subs.of(owner):
            sent += self._push(owner, sub, payload)
        return sent

    def _push(self, owner: str, sub: dict[str, Any], payload: str) -> int:
        from pywebpush import WebPushException

        try:
            self.send(
                subscription_info=sub,
                data=payload,
                vapid_private_key=self.vapid,
                vapid_claims={"sub": self.subject},
                content_encoding="aes128gcm",
                ttl=PUSH_TTL_S,
                timeout=10,
            )
        except WebPushException as err:
            status = err.response.status_code if err.response is not None else None
            if status in (404, 410):  # the browser unsubscribed
                self.subs.remove(owner, sub["endpoint"])
                self.counters["forgotten"] += 1
            else:
                self.counters["failed"] += 1
                log.warning("web push to %s failed: %s", urlsplit(sub["endpoint"]).hostname, status)
            return 0
        except OSError as err:
            self.counters["failed"] += 1
            log.warning("web push to %s failed: %s", urlsplit(sub["endpoint"]).hostname, err)
            return 0
        self.counters["pushed"] += 1
        return 1
