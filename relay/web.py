"""The owners' web app: a page served by the relay, where the owner's browser decrypts.

The relay serves the page (``/app/``), its scripts (``/app/static/…``, no CDN) and a
small JSON API under ``/app/api/``.  Everything imagery-shaped it hands out is
ciphertext: ring snapshots sealed to the owner's X25519 key, clips uploaded by the
doorbell on the owner's signed word.  The owner's keys stay in the browser.

Web safety, in one place:

* **Sign-in** with the owner's API token (``POST /app/api/session``) sets a random
  session cookie (``__Host-`` prefix: HttpOnly, Secure, SameSite=Strict, Path=/);
  Redis keeps only its SHA-256 (``keyspace.web_session``) with a time to live; a
  session lasts only while the token it was signed in with does (revoke, rotate).
* **CSRF**: every state-changing call needs the session's CSRF token in the
  ``X-CSRF-Token`` header (a cross-site page cannot read it) and, when the browser
  sends one, an ``Origin`` equal to the relay's own.  Sign-in needs a same-origin
  ``Origin`` and a JSON body (a cross-site form cannot send one without CORS).
* **CSP**: ``script-src 'self' 'wasm-unsafe-eval'`` (libsodium's WebAssembly), no
  inline script or style, nothing from other origins, no framing.
* **Isolation**: every call is scoped to the session's owner; another owner's doorbell,
  clip or ask answers 404, as if it did not exist.  The live stream checks the session
  and the doorbell's owner again before each message (it outlives neither).
* **Headers** (:class:`WebHeaders`): every answer under ``/app`` and ``/bystander``, JSON
  and errors included, has the CSP, ``no-store``, ``nosniff`` and ``X-Frame-Options``.

Owner playback is ``footage view``'s path (:meth:`ConsentEngine.view`): the page opens
the clip's ``owner_key`` (sealed to the owner by the doorbell), re-seals it to the owner's
own box key and signs an :class:`~protocol.decisions.Approval` with ``request_id``
``view-<16 hex>`` and that ``keys`` entry; the relay refuses any other recipient and
forwards a ``cmd/release``; the doorbell checks it again, uploads the ciphertext and
announces ``released`` with the approval's sealed key.
"""

# (No ``from __future__ import annotations``: FastAPI reads the dependency aliases
# defined inside :func:`web_router` from evaluated annotations.)

import asyncio
import hashlib
import json
import mimetypes
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from pydantic import BaseModel, ConfigDict, Field

from protocol.bystander import DeclineReason
from protocol.crypto import unb64
from protocol.decisions import Approval, DecisionRefused, verify_decision
from protocol.messages import MASK_UPDATE_MAX_B64
from relay import keyspace as ks
from relay.blobs import BlobStore, LocalBlobStore, blob_key
from relay.commands import DoorbellCommands, answer_bystander
from relay.consent import ConsentEngine, Forbidden, NotFound, PolicyRefusal, token_hash
from relay.report import build_report

STATIC = Path(__file__).with_name("web")
"""The page, its scripts and (after ``scripts/web_assets.sh``) ``static/vendor/``."""
COOKIE = "__Host-odb_session"
SESSION_TTL_S = 12 * 3600

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "img-src 'self' blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors' older twin, for browsers without CSP 2
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class WebError(Exception):
    """An error answer of the web API: ``{"error": ..., "reason": ...}``."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        self.status, self.error, self.reason = status, error, reason


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: Annotated[str, Field(min_length=1, max_length=512)]


class BystanderAnswer(BaseModel):
    """As ``POST /v1/asks/{id}/answer`` (docs/formats.md §3.8)."""

    model_config = ConfigDict(extra="forbid")
    answer: Literal["copy", "erase", "decline", "accept"]
    reason: DeclineReason | None = None
    approval: Annotated[str | None, Field(max_length=65536)] = None
    deletions: Annotated[
        dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")], str] | None,
        Field(max_length=1000),
    ] = None
    masks: Annotated[str | None, Field(max_length=MASK_UPDATE_MAX_B64)] = None
    """With accept: the MaskUpdate signed in the page, holding the proposed polygon."""


class Signed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signed: Annotated[str, Field(min_length=1, max_length=16384)]


class SignedMasks(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signed: Annotated[str, Field(min_length=1, max_length=MASK_UPDATE_MAX_B64)]


class Sessions:
    """Owners' web sessions in Redis, by the SHA-256 of the cookie's value."""

    def __init__(self, r: Any, ttl_s: int = SESSION_TTL_S) -> None:
        self.r, self.ttl_s = r, ttl_s

    def create(self, owner: str, token: str) -> tuple[str, str]:
        """A new session for ``owner``, signed in with ``token``: (cookie value, CSRF token)."""
        cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        record = {"owner": owner, "csrf": csrf, "created": time.time()}
        record["token"] = token_hash(token)  # hashed, as the relay keeps tokens
        self.r.set(ks.web_session(_sha(cookie)), json.dumps(record), ex=self.ttl_s)
        return cookie, csrf

    def get(self, cookie: str) -> dict[str, Any] | None:
        """The session, while the token it was signed in with is live: ``relay owners
        revoke|rotate`` ends the owner's web sessions too (the next call gets 401)."""
        raw = self.r.get(ks.web_session(_sha(cookie)))
        found = json.loads(raw) if raw else None
        if found is None or not self.r.hexists(ks.TOKENS, found.get("token", "")):
            return None
        return found

    def end(self, cookie: str) -> None:
        self.r.delete(ks.web_session(_sha(cookie)))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _same_origin(request: Request, origin: str | None) -> bool:
    host = request.headers.get("host", "")
    return origin is not None and urlsplit(origin).netloc == host


def async_client(r: Any) -> Any:
    """An asyncio Redis client to the server ``r`` talks to (pub/sub for live streams)."""
    import redis.asyncio as aioredis
    from redis.cluster import RedisCluster

    if isinstance(r, RedisCluster):
        # Classic pub/sub reaches every node; any one of them will do.
        node = r.get_default_node()
        return aioredis.Redis(host=node.host, port=node.port)
    pool = r.connection_pool
    kwargs = dict(pool.connection_kwargs)
    for unsupported in ("retry", "connect_func"):
        kwargs.pop(unsupported, None)
    ssl = pool.connection_class.__name__ == "SSLConnection"
    cls = aioredis.SSLConnection if ssl else aioredis.Connection
    return aioredis.Redis(connection_pool=aioredis.ConnectionPool(connection_class=cls, **kwargs))


async def live_stream(
    r: Any, channels: list[str], alive: Callable[[str | None], Awaitable[bool]]
) -> AsyncIterator[bytes]:
    """The SSE body: what Redis publishes on ``channels``, a comment every 15 s otherwise.

    ``alive(channel)`` is asked before each message is passed on (``channel`` its
    channel) and at each keep-alive (``None``): once it says no (signed out, token
    revoked, the doorbell no longer the owner's) the stream ends, so a page left open
    hears nothing more, and stops within 15 s even when nothing is published.
    """
    yield b": open\n\n"
    if not channels:
        while await alive(None):
            await asyncio.sleep(15)
            yield b": keep-alive\n\n"
        return
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(*channels)
    try:
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=15.0)
            channel = msg["channel"].decode() if msg is not None else None
            if not await alive(channel):
                return
            if msg is None:
                yield b": keep-alive\n\n"
                continue
            data = msg["data"].decode()
            kind = json.loads(data).get("kind", "event")
            yield f"event: {kind}\ndata: {data}\n\n".encode()
    finally:
        await pubsub.aclose()


def web_router(
    engine: ConsentEngine, blobs: BlobStore, publish: Callable[[str, bytes], None]
) -> APIRouter:
    """The web app's routes; :func:`relay.api.create_app` includes them."""
    router = APIRouter(include_in_schema=False)
    doorbells = DoorbellCommands(blobs, publish)
    sessions = Sessions(engine.r)
    index = engine.index
    aio: list[Any] = []

    def async_redis() -> Any:
        if not aio:  # made once; it connects from the event loop, on first use
            aio.append(async_client(engine.r))
        return aio[0]

    def session(request: Request) -> dict[str, Any]:
        cookie = request.cookies.get(COOKIE)
        found = sessions.get(cookie) if cookie else None
        if found is None:
            raise WebError(401, "unauthorized", "sign in first")
        return found

    def changing(
        request: Request,
        s: Annotated[dict[str, Any], Depends(session)],
        x_csrf_token: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        """A session allowed to change something: CSRF token and origin checked."""
        origin = request.headers.get("origin")
        if origin is not None and not _same_origin(request, origin):
            raise WebError(403, "csrf", "cross-origin request refused")
        if not x_csrf_token or not secrets.compare_digest(x_csrf_token, s["csrf"]):
            raise WebError(403, "csrf", "missing or wrong X-CSRF-Token")
        return s

    Session = Annotated[dict[str, Any], Depends(session)]
    Changing = Annotated[dict[str, Any], Depends(changing)]

    def own_device(owner: str, device: str) -> None:
        if device not in index.owned_by(owner):
            raise WebError(404, "not_found", f"no doorbell {device}")

    def local_url(url: str) -> str:
        # The relay's own blob links are made same-origin, so connect-src 'self' holds.
        return urlsplit(url).path if isinstance(blobs, LocalBlobStore) else url

    # ------------------------------------------------------------ the page

    @router.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @router.get("/app")
    def app_root() -> RedirectResponse:
        return RedirectResponse("/app/", status_code=308)

    @router.get("/app/")
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)

    @router.get("/bystander")
    def bystander_form() -> FileResponse:
        """The plain form for passers-by (no account; docs/formats.md §3.7)."""
        return FileResponse(STATIC / "bystander.html", headers=SECURITY_HEADERS)

    @router.get("/app/sw.js")
    def service_worker() -> FileResponse:
        # Served from /app/ so that its scope is the page's.
        return FileResponse(
            STATIC / "static" / "sw.js", media_type="text/javascript", headers=SECURITY_HEADERS
        )

    @router.get("/app/static/{path:path}")
    def static(path: str) -> FileResponse:
        root = (STATIC / "static").resolve()
        target = (root / path).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            if path.startswith("vendor/"):
                raise WebError(404, "not_found", "run scripts/web_assets.sh to install libsodium")
            raise WebError(404, "not_found", "no such file")
        kind = "text/javascript" if target.suffix in (".js", ".mjs") else None
        kind = kind or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return FileResponse(target, media_type=kind, headers=SECURITY_HEADERS)

    # ------------------------------------------------------------ sign-in

    @router.post("/app/api/session")
    def sign_in(
        body: SignIn, request: Request, content_type: Annotated[str | None, Header()] = None
    ) -> JSONResponse:
        if not _same_origin(request, request.headers.get("origin")):
            raise WebError(403, "csrf", "sign in from the relay's own page")
        if not (content_type or "").startswith("application/json"):
            raise WebError(415, "unsupported", "send JSON")
        try:
            role, name = engine.who(body.token)
        except Forbidden:
            raise WebError(401, "unauthorized", "unknown token") from None
        if role != "owner":
            raise WebError(403, "forbidden", "the web app is for owners")
        cookie, csrf = sessions.create(name, body.token)
        resp = JSONResponse({"owner": name, "csrf": csrf}, headers=SECURITY_HEADERS)
        resp.set_cookie(
            COOKIE,
            cookie,
            max_age=SESSION_TTL_S,
            path="/",
            secure=True,
            httponly=True,
            samesite="strict",
        )
        return resp

    @router.post("/app/api/session/end")
    def sign_out(request: Request, s: Changing) -> JSONResponse:
        sessions.end(request.cookies[COOKIE])
        resp = JSONResponse({"signed_out": s["owner"]})
        resp.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return resp

    @router.get("/app/api/me")
    def me(s: Session) -> dict[str, Any]:
        owner = engine.owner(s["owner"])
        return {
            "owner": s["owner"],
            "csrf": s["csrf"],
            "devices": index.owned_by(s["owner"]),
            "sign_public": owner["sign_public"],
            "box_public": owner["box_public"],
        }

    # ------------------------------------------------------------ rings, live

    @router.get("/app/api/events")
    def events(s: Session) -> list[dict[str, Any]]:
        """Rings (with sealed snapshots) and motion of the owner's doorbells, newest first."""
        out = [e for d in index.owned_by(s["owner"]) for e in index.events(d)]
        out.sort(key=lambda e: e["at"], reverse=True)
        return out

    @router.get("/app/api/live")
    def live(request: Request, s: Session) -> StreamingResponse:
        """Server-Sent Events: each event and each sealed ring snapshot of the owner's doorbells.

        An async stream: an open page holds no server thread (a thread each would starve
        every other call once the pool's 40 are taken by open pages).
        """
        owner, cookie = s["owner"], request.cookies[COOKIE]
        devices = {ks.live_channel(d): d for d in index.owned_by(owner)}

        def still(channel: str | None) -> bool:
            # The session (and its token) and the doorbell are checked again: an
            # open page must not outlive a sign-out, a revoke or a change of owner.
            if sessions.get(cookie) is None:
                return False
            if channel is None:
                return True
            held, revoked = index.r.hmget(ks.device_info(devices[channel]), ["owner", "revoked"])
            return held == owner.encode() and revoked in (None, b"0")

        async def alive(channel: str | None) -> bool:
            # The sync client (cluster-aware) off the event loop.
            return await asyncio.to_thread(still, channel)

        headers = {**SECURITY_HEADERS, "X-Accel-Buffering": "no"}
        return StreamingResponse(
            live_stream(async_redis(), list(devices), alive),
            media_type="text/event-stream",
            headers=headers,
        )

    # ------------------------------------------------------------ clips

    @router.get("/app/api/clips")
    def clips(s: Session) -> list[dict[str, Any]]:
        out = [c for d in index.owned_by(s["owner"]) for c in index.clips(device=d)]
        out.sort(key=lambda c: c["start"], reverse=True)
        return out

    @router.post("/app/api/clips/{device}/{clip_id}/play", status_code=202)
    def play(device: str, clip_id: str, body: Signed, s: Changing) -> dict[str, Any]:
        """The owner's view of their own clip: ``footage view``'s path (``POST /v1/views``).

        The page signs an Approval of this one clip, ``request_id`` ``view-<16 hex>``,
        ``requester_key`` the owner's own box key, ``keys`` the clip key re-sealed to it;
        :meth:`ConsentEngine.view` refuses anything else, then the doorbell uploads.
        """
        owner = s["owner"]
        own_device(owner, device)
        try:
            # This route plays exactly the clip it names; checked before the view is
            # recorded.  engine.view then applies footage view's rules.
            named = verify_decision(
                body.signed,
                unb64(engine.owner(owner)["sign_public"]),
                Approval,
                now=engine.clock(),
                device=device,
            )
            if named.clip_ids != [clip_id]:
                raise WebError(422, "refused", f"sign a view of {clip_id} only")
            approval = engine.view(owner, body.signed)
        except DecisionRefused as err:
            raise WebError(422, "refused", str(err)) from None
        except NotFound:
            raise WebError(404, "not_found", f"no doorbell {device}") from None
        except PolicyRefusal as err:
            raise WebError(422, "refused", str(err)) from None
        doorbells.release(device, approval.request_id, body.signed, [clip_id])
        return {"request_id": approval.request_id, "status": "sent to the doorbell"}

    @router.get("/app/api/clips/{device}/{clip_id}/play/{request_id}")
    def played(device: str, clip_id: str, request_id: str, s: Session) -> dict[str, Any]:
        """Once the doorbell has uploaded: a download link and the key sealed to the owner."""
        own_device(s["owner"], device)
        try:
            released = engine.view_released(s["owner"], request_id)
        except NotFound:
            raise WebError(404, "not_found", "not one of your views") from None
        item = next((r for r in released if r["clip_id"] == clip_id), None)
        if item is None or item["device"] != device:
            return {"ready": False}
        url = blobs.download_url(blob_key(request_id, device, clip_id))
        return {
            "ready": True,
            "wrapped_key": item["wrapped_key"],
            "sha256": item["sha256"],
            "download_url": local_url(url),
        }

    @router.post("/app/api/clips/{device}/{clip_id}/delete")
    def delete(device: str, clip_id: str, body: Signed, s: Changing) -> dict[str, Any]:
        try:
            engine.check_deletion(s["owner"], device, clip_id, body.signed)
        except NotFound:
            raise WebError(404, "not_found", f"no doorbell {device}") from None
        except PolicyRefusal as err:
            raise WebError(422, "refused", str(err)) from None
        doorbells.delete(device, clip_id, body.signed)
        return {"clip": clip_id, "status": "sent to the doorbell"}

    @router.get("/app/api/devices/{device}/masks")
    def held_masks(device: str, s: Session) -> dict[str, Any]:
        """The signed mask set the doorbell last announced in force (the page checks the
        owner's signature and builds the next change on it)."""
        try:
            return engine.held_masks(s["owner"], device)
        except NotFound:
            raise WebError(404, "not_found", f"no doorbell {device}") from None

    @router.post("/app/api/devices/{device}/masks")
    def masks(device: str, body: SignedMasks, s: Changing) -> dict[str, Any]:
        """The owner's signed mask set (signed in the page; the page has no editor yet)."""
        try:
            update, digest = engine.check_masks(s["owner"], device, body.signed)
        except NotFound:
            raise WebError(404, "not_found", f"no doorbell {device}") from None
        except PolicyRefusal as err:
            raise WebError(422, "refused", str(err)) from None
        doorbells.masks(device, body.signed)
        return {"device": device, "hash": digest, "masks": len(update.masks), "status": "sent"}

    # ------------------------------------------------------------ asks

    @router.get("/app/api/asks")
    def asks(s: Session) -> list[dict[str, Any]]:
        out = []
        for ask in engine.asks_for(s["owner"]):
            d = ask.__dict__.copy()
            clips = index.clips(device=ask.device, since=ask.start, until=ask.end)
            d["clips"] = [c for c in clips if c["clip_id"] in ask.clip_ids]
            out.append(d)
        return out

    @router.post("/app/api/asks/{ask_id}/approve")
    def approve(ask_id: str, body: Signed, s: Changing) -> dict[str, Any]:
        try:
            ask, payload = engine.approve(s["owner"], ask_id, body.signed)
        except NotFound:
            raise WebError(404, "not_found", f"no ask {ask_id}") from None
        except PolicyRefusal as err:
            raise WebError(422, "refused", str(err)) from None
        doorbells.release(ask.device, ask.request_id, body.signed, payload["clip_ids"])
        return {"id": ask.id, "status": "approved", "forwarded_to": ask.device}

    @router.post("/app/api/asks/{ask_id}/deny")
    def deny(ask_id: str, s: Changing) -> dict[str, Any]:
        try:
            return {"id": engine.deny(s["owner"], ask_id).id, "status": "denied"}
        except NotFound:
            raise WebError(404, "not_found", f"no ask {ask_id}") from None
        except PolicyRefusal as err:
            raise WebError(422, "refused", str(err)) from None

    @router.post("/app/api/asks/{ask_id}/answer")
    def answer(ask_id: str, body: BystanderAnswer, s: Changing) -> dict[str, Any]:
        """A bystander's ask answered: copy, erase, decline (with a reason) or accept."""
        try:
            return answer_bystander(engine, doorbells, s["owner"], ask_id, body.model_dump())
        except NotFound:
            raise WebError(404, "not_found", f"no ask {ask_id}") from None
        except PolicyRefusal as err:
            raise WebError(422, "refused", str(err)) from None

    # ------------------------------------------------------------ web push

    def web_push(request: Request) -> Any:
        push = getattr(request.app.state, "web_push", None)
        if push is None:
            raise WebError(404, "not_found", "web push is not set up on this relay")
        return push

    @router.get("/app/api/push")
    def push_key(request: Request, s: Session) -> dict[str, Any]:
        """The VAPID key browsers subscribe with; null when web push is not set up."""
        from relay.webpush import application_server_key

        push = getattr(request.app.state, "web_push", None)
        return {"application_server_key": application_server_key(push.vapid) if push else None}

    @router.post("/app/api/push/subscribe", status_code=201)
    def push_subscribe(request: Request, body: dict[str, Any], s: Changing) -> dict[str, Any]:
        from relay.webpush import BadSubscription

        try:
            web_push(request).subs.add(s["owner"], body)
        except BadSubscription as err:
            raise WebError(422, "refused", str(err)) from None
        return {"subscribed": True}

    @router.post("/app/api/push/unsubscribe")
    def push_unsubscribe(request: Request, body: dict[str, Any], s: Changing) -> dict[str, Any]:
        web_push(request).subs.remove(s["owner"], str(body.get("endpoint", "")))
        return {"subscribed": False}

    @router.get("/app/api/report")
    def report(s: Session) -> dict[str, Any]:
        """The transparency report of the last 30 days (public figures, from the log)."""
        now = time.time()
        return build_report(engine.audit.entries(), now - 30 * 86400, now + 1, engine.policy())

    @router.get("/app/api/log/head")
    def log_head(s: Session) -> dict[str, Any]:
        signed = engine.audit.head()
        shown = json.loads(unb64(signed["payload"])) if signed else None
        return {"head": shown, "signed": signed, "entries": engine.audit.size()}

    return router


def install(app: Any, engine: ConsentEngine, blobs: BlobStore, publish: Any) -> None:
    """Add the web app to the relay's FastAPI ``app`` (one call from ``create_app``)."""

    @app.exception_handler(WebError)
    async def _web_error(_r: Request, e: WebError) -> JSONResponse:
        return JSONResponse(
            {"error": e.error, "reason": e.reason}, status_code=e.status, headers=SECURITY_HEADERS
        )

    app.include_router(web_router(engine, blobs, publish))
    app.add_middleware(WebHeaders)


class WebHeaders:
    """ASGI middleware: every answer under ``/app`` and ``/bystander`` carries
    :data:`SECURITY_HEADERS` (those a route set itself are kept).

    Not only the page: the JSON answers hold the CSRF token, asks and sealed
    snapshots, and without ``no-store`` a browser's disk cache keeps them after
    sign-out; FastAPI's own answers (a 400 for a malformed body, the ``/app``
    redirect) come from no route of ours.  Pure ASGI, not ``BaseHTTPMiddleware``,
    so the live stream is passed through untouched.

    >>> WebHeaders.covers("/app/api/me"), WebHeaders.covers("/v1/asks")
    (True, False)
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    @staticmethod
    def covers(path: str) -> bool:
        return path == "/app" or path.startswith(("/app/", "/bystander"))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.covers(scope.get("path", "")):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _v in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.lower().encode() not in have:
                        headers.append((name.lower().encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class WebPush:
    """What the web routes need for Web Push: the subscriptions and the VAPID key."""

    def __init__(self, subs: Any, vapid: Any) -> None:
        self.subs, self.vapid = subs, vapid


def start_web_push(app: Any, engine: ConsentEngine, vapid_key_file: Path, subject: str) -> Any:
    """Turn Web Push on for ``app``: subscriptions, and a sender thread for rings."""
    import threading

    from relay.webpush import PushSender, PushSubscriptions, load_vapid

    vapid = load_vapid(vapid_key_file)
    subs = PushSubscriptions(engine.r)
    app.state.web_push = WebPush(subs, vapid)
    sender = PushSender(engine.r, engine.index, subs, vapid, subject)
    stop = threading.Event()
    threading.Thread(target=sender.run, args=(stop,), name="web-push", daemon=True).start()
    return sender
