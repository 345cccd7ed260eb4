"""The relay's HTTP API for owners and requesters (FastAPI; OpenAPI at /openapi.json).

Every call but the blob links, ``/v1/health`` and the public log (``/v1/log/…``,
see :mod:`relay.log_api`) needs ``Authorization: Bearer
TOKEN`` (tokens are made by ``relay owners add`` and ``relay requesters add``, and
revoked or rotated by ``relay owners|requesters revoke|rotate``).  Every error is a
JSON body ``{"error": ..., "reason": ...}`` with the status the OpenAPI lists:
400 malformed input, 401 no or unknown token, 403 wrong role or bad link, 404 not
found (or not yours), 422 refused by policy.  docs/formats.md has every byte.

A requester's answer to a request is the same whatever the area holds: matching
and asking owners run after the response is sent, and nothing unauthenticated
returns a count.

(No ``from __future__ import annotations`` here: FastAPI reads the dependency
aliases defined inside :func:`create_app` from evaluated annotations.)
"""

from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

from fastapi import BackgroundTasks, Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from protocol.bystander import MAX_DESCRIPTION, NONCE_MAX, BystanderKind, DeclineReason
from protocol.messages import MASK_UPDATE_MAX_B64
from relay import web
from relay.blobs import BlobStore, LocalBlobStore, TokenError, blob_key
from relay.commands import DoorbellCommands, answer_bystander
from relay.consent import (
    BadWork,
    ConsentEngine,
    Forbidden,
    NotFound,
    PolicyRefusal,
    RateLimited,
)
from relay.log_api import log_router


class ApiError(Exception):
    def __init__(self, status: int, error: str, reason: str) -> None:
        self.status, self.error, self.reason = status, error, reason


_Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]


class _Where(BaseModel):
    """Where and when, as every request gives it (an agency's or a bystander's).
    Numbers must be JSON numbers ("12" is refused)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    lat: Annotated[float, Field(ge=-90, le=90, description="degrees, WGS 84")]
    lon: Annotated[float, Field(ge=-180, le=180, description="degrees, WGS 84")]
    radius_m: Annotated[float, Field(gt=0, description="metres; the policy sets the bounds")]
    start: Annotated[float, Field(description="Unix seconds (UTC) of the window's start")]
    end: Annotated[float, Field(description="Unix seconds (UTC); not in the future")]


class RequestIn(_Where):
    """A footage request."""

    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    case_ref: Annotated[str, Field(min_length=1, max_length=200)]
    basis: Literal["consent", "legal-demand"]
    demand: Annotated[str | None, Field(max_length=200)] = None
    """With basis legal-demand: the docket of a demand the operator put on file."""
    signed: dict[str, str] | None = None
    """The same request signed by the requester (docs/formats.md §3.1.1), forwarded to
    owners unchanged so they seal to the box key the requester signed."""


class BystanderIn(_Where):
    """A bystander's request (no token: a solved challenge from
    ``GET /v1/bystander/challenge`` instead)."""

    kind: BystanderKind
    description: Annotated[str, Field(min_length=1, max_length=MAX_DESCRIPTION)]
    box_public: Annotated[str | None, Field(max_length=64)] = None
    """With kind copy: the X25519 public key (base64) a copy is sealed to."""
    polygon: Annotated[list[list[float]] | None, Field(max_length=16)] = None
    """With kind stop_filming: [x, y] points, fractions of the frame (0..1)."""
    challenge: Annotated[str, Field(min_length=1, max_length=64)]
    nonce: Annotated[str, Field(min_length=1, max_length=NONCE_MAX)]


class BystanderOut(BaseModel):
    id: str
    status: Literal["accepted"]
    status_token: str = Field(description="secret: send as Bearer to read the status")
    deadline: float = Field(description="Unix seconds: owners answer by then")


class ChallengeOut(BaseModel):
    challenge: str
    difficulty: int = Field(description="leading zero bits of SHA-256(challenge:nonce)")
    expires: float


class BystanderReleasedOut(BaseModel):
    clip_id: str
    wrapped_key: str = Field(description="the clip key sealed to your X25519 key (base64)")
    sha256: str
    download_url: str


class BystanderAnswerOut(BaseModel):
    outcome: Literal["copy", "erase", "decline", "accept"]
    at: float
    released: list[BystanderReleasedOut] | None = None
    clips: int | None = Field(None, description="with erase: how many clips the owner erases")
    erased: int | None = Field(
        None, description="with erase: how many of them the doorbell confirmed deleted"
    )
    reason: str | None = Field(None, description="with decline: a code (docs/formats.md)")


class BystanderStatusOut(BaseModel):
    id: str
    kind: str
    status: Literal["open", "closed"]
    created: float
    deadline: float
    answers: list[BystanderAnswerOut]


class AnswerIn(BaseModel):
    """An owner's answer to a bystander's ask."""

    model_config = ConfigDict(extra="forbid", strict=True)
    answer: Literal["copy", "erase", "decline", "accept"]
    reason: DeclineReason | None = None
    approval: Annotated[str | None, Field(max_length=65536)] = None
    """With copy: an Approval sealed to the bystander's key."""
    deletions: Annotated[
        dict[_Id, Annotated[str, Field(max_length=4096)]] | None, Field(max_length=1000)
    ] = None
    """With erase: clip id → a signed Deletion of that clip."""
    masks: Annotated[str | None, Field(max_length=MASK_UPDATE_MAX_B64)] = None
    """With accept: the owner's signed MaskUpdate of the ask's doorbell, holding the
    proposed polygon (docs/formats.md §3.8)."""


class AnswerOut(BaseModel):
    id: str
    status: Literal["approved", "erased", "denied", "accepted"]
    forwarded_to: str | None = None
    released_before: list[str] = Field(
        default_factory=list,
        description="with erase: requests copies of these clips were released to before",
    )
    polygon: list[list[float]] | None = None
    hash: str | None = Field(
        default=None,
        description="with accept: the mask set's hash, announced by the doorbell as masks_applied",
    )
    masks: int | None = Field(default=None, description="with accept: masks in the set")


class DeletionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    signature: Annotated[str, Field(max_length=4096, description="a signed Deletion")]


class MasksIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    decision: Annotated[
        str, Field(max_length=MASK_UPDATE_MAX_B64, description="a signed MaskUpdate")
    ]


class MasksOut(BaseModel):
    device: str
    hash: str
    """SHA-256 of the signed body: the doorbell announces it as ``masks_applied``."""
    masks: int
    status: str


class HeldMasksOut(BaseModel):
    device: str
    hash: str | None
    """What the doorbell last announced in force (``masks_applied``); None: no owner set
    (or nothing announced yet)."""
    update: str | None
    """That signed MaskUpdate, as the owner signed it: check the signature before use."""


class ApprovalIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    approval: Annotated[str, Field(max_length=65536, description="a signed Approval")]


class ErrorOut(BaseModel):
    error: str
    reason: str


class RequestOut(BaseModel):
    id: str
    status: Literal["accepted"]


class ReleasedOut(BaseModel):
    device: str
    clip_id: str
    wrapped_key: str = Field(description="the clip key sealed to your X25519 key (base64)")
    sha256: str = Field(description="hex SHA-256 of the encrypted clip as downloaded")
    download_url: str = Field(description="single use, expires (see docs/formats.md)")


class RequestStatusOut(BaseModel):
    id: str
    status: Literal["accepted", "refused"]
    released: list[ReleasedOut]


class ClipOut(BaseModel):
    model_config = ConfigDict(extra="ignore")
    clip_id: str
    device: str
    trigger: str
    start: str = Field(description="ISO 8601, UTC")
    end: str = Field(description="ISO 8601, UTC")
    duration_s: float
    size: int
    sha256: str
    owner_key: str | None = Field(
        None, description="the clip key sealed to the owner's X25519 key (base64)"
    )


class AskOut(BaseModel):
    id: str
    request_id: str
    owner: str
    device: str
    clip_ids: list[str]
    requester: str
    requester_kind: str
    requester_key: str = Field(description="the requester's X25519 public key (base64)")
    signed_request: dict[str, str] | None = Field(
        default=None,
        description="the requester's signed request (docs/formats.md §3.1.1), unchanged",
    )
    reason: str
    case_ref: str
    basis: str
    center: tuple[float, float]
    radius_m: float
    start: float
    end: float
    created: float
    expires: float
    status: Literal["pending", "approved", "denied", "expired", "erased", "accepted"]
    legal_demands: list[dict[str, Any]]
    commitment: dict[str, Any] = Field(
        description="this ask's opening and inclusion path under the request's asks_root"
    )
    clips: list[ClipOut]
    bystander: dict[str, Any] | None = Field(
        None,
        description="a bystander's ask: kind, description, polygon, remind_at, reminded_at, answer",
    )


class DecisionOut(BaseModel):
    id: str
    status: Literal["approved", "denied"]
    forwarded_to: str | None = None


class DeleteOut(BaseModel):
    clip: str
    status: str


class HealthOut(BaseModel):
    ok: bool


class BlobStoredOut(BaseModel):
    stored: int = Field(description="bytes stored")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {
        400: "malformed input",
        401: "no token, or an unknown or revoked one",
        403: "your role may not do this, a bad link, or no valid proof of work",
        404: "not found, or not yours",
        422: "refused by policy",
        429: "too many from this address (Retry-After says when to try again)",
    }
    return {c: {"model": ErrorOut, "description": what[c]} for c in codes}


def create_app(
    engine: ConsentEngine,
    blobs: BlobStore,
    publish: Callable[[str, bytes], None],
) -> FastAPI:
    """``publish(topic, payload)`` sends a command to a doorbell (QoS 1)."""
    doorbells = DoorbellCommands(blobs, publish)
    app = FastAPI(
        title="Open Doorbell relay",
        version="1",
        description="Footage leaves a home only on its owner's signed word.",
    )

    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, e: ApiError) -> JSONResponse:
        return JSONResponse({"error": e.error, "reason": e.reason}, status_code=e.status)

    @app.exception_handler(NotFound)
    async def _not_found(_r: Request, e: NotFound) -> JSONResponse:
        return JSONResponse({"error": "not_found", "reason": f"no {e.args[0]}"}, status_code=404)

    @app.exception_handler(PolicyRefusal)
    async def _refused(_r: Request, e: PolicyRefusal) -> JSONResponse:
        return JSONResponse({"error": "refused", "reason": str(e)}, status_code=422)

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return JSONResponse(
            {"error": "invalid", "reason": f"{where}: {first['msg']}"}, status_code=400
        )

    @app.exception_handler(RateLimited)
    async def _limited(_r: Request, e: RateLimited) -> JSONResponse:
        return JSONResponse(
            {"error": "too_many", "reason": str(e)},
            status_code=429,
            headers={"Retry-After": str(e.retry_after)},
        )

    @app.exception_handler(BadWork)
    async def _bad_work(_r: Request, e: BadWork) -> JSONResponse:
        return JSONResponse({"error": "bad_work", "reason": str(e)}, status_code=403)

    bearer = HTTPBearer(auto_error=False, description="an API token from the relay operator")

    def caller(
        cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> tuple[str, str]:
        if cred is None or cred.scheme.lower() != "bearer":
            raise ApiError(401, "unauthorized", "send Authorization: Bearer TOKEN")
        try:
            return engine.who(cred.credentials.strip())
        except Forbidden:
            raise ApiError(401, "unauthorized", "unknown token") from None

    def role(wanted: str) -> Callable[..., str]:
        def check(who: Annotated[tuple[str, str], Depends(caller)]) -> str:
            if who[0] != wanted:
                raise ApiError(403, "forbidden", f"only {wanted}s may do this")
            return who[1]

        return check

    Requester = Annotated[str, Depends(role("requester"))]
    Owner = Annotated[str, Depends(role("owner"))]

    @app.post("/v1/requests", status_code=201, responses=_errors(400, 401, 403, 422))
    def file_request(body: RequestIn, requester: Requester, later: BackgroundTasks) -> RequestOut:
        result = engine.file_request(
            requester,
            body.lat,
            body.lon,
            body.radius_m,
            body.start,
            body.end,
            body.reason,
            body.case_ref,
            body.basis,
            demand=body.demand,
            fan_out=False,
            signed=body.signed,
        )
        if result["status"] == "refused":
            raise ApiError(422, "refused_by_policy", result["reason"])
        # After the answer is sent: how long matching takes says nothing to the requester.
        later.add_task(engine.fan_out, result["id"])
        return RequestOut(**result)

    @app.get("/v1/requests/{request_id}", responses=_errors(401, 403, 404))
    def get_request(request_id: str, requester: Requester) -> RequestStatusOut:
        req = engine.request(request_id)
        if req["requester"] != requester:
            raise NotFound(request_id)
        released = engine.released(request_id)
        for item in released:
            item["download_url"] = blobs.download_url(
                blob_key(request_id, item["device"], item["clip_id"])
            )
        return RequestStatusOut(id=request_id, status=req["status"], released=released)

    @app.get("/v1/asks", responses=_errors(401, 403))
    def list_asks(owner: Owner) -> list[AskOut]:
        out = []
        for ask in engine.asks_for(owner):
            d = ask.__dict__.copy()
            d["clips"] = engine.index.clips(device=ask.device, since=ask.start, until=ask.end)
            d["clips"] = [c for c in d["clips"] if c["clip_id"] in ask.clip_ids]
            out.append(d)
        return out

    @app.post("/v1/asks/{ask_id}/deny", responses=_errors(401, 403, 404, 422))
    def deny(ask_id: str, owner: Owner) -> DecisionOut:
        return DecisionOut(id=engine.deny(owner, ask_id).id, status="denied")

    @app.post("/v1/asks/{ask_id}/answer", responses=_errors(400, 401, 403, 404, 422))
    def answer(ask_id: str, body: AnswerIn, owner: Owner) -> AnswerOut:
        """Answer a bystander's ask: copy (an Approval), erase (Deletions), decline
        (a reason code) or, for stop_filming, accept."""
        return AnswerOut(**answer_bystander(engine, doorbells, owner, ask_id, body.model_dump()))

    @app.post("/v1/asks/{ask_id}/approve", responses=_errors(400, 401, 403, 404, 422))
    def approve(ask_id: str, body: ApprovalIn, owner: Owner) -> DecisionOut:
        ask, payload = engine.approve(owner, ask_id, body.approval)
        doorbells.release(ask.device, ask.request_id, body.approval, payload["clip_ids"])
        return DecisionOut(id=ask.id, status="approved", forwarded_to=ask.device)

    # ------------------------------------------------------------ bystanders

    def source(request: Request) -> str:
        return client_address(request)

    no_store = {"Cache-Control": "no-store"}

    def count_bystander(request: Request) -> None:
        # A dependency: FastAPI runs it before it validates the body, so malformed
        # requests count against the address's limit too.
        engine.count_bystander(source(request))

    @app.get("/v1/bystander/challenge", response_model=ChallengeOut, responses=_errors(429))
    def bystander_challenge(request: Request) -> JSONResponse:
        """A single-use proof-of-work challenge for one bystander request."""
        out = ChallengeOut(**engine.bystander_challenge(source(request)))
        return JSONResponse(out.model_dump(), headers=no_store)

    @app.post(
        "/v1/bystander/requests",
        status_code=202,
        response_model=BystanderOut,
        responses=_errors(400, 403, 422, 429),
    )
    def bystander_request(
        _counted: Annotated[None, Depends(count_bystander)],
        body: BystanderIn,
        request: Request,
        later: BackgroundTasks,
    ) -> JSONResponse:
        """A passer-by's request for a copy, an erasure or a spot no longer filmed.

        The answer is the same whatever the place holds: owners are asked after it."""
        result = engine.file_bystander(
            source(request), body.model_dump(), fan_out=False, counted=True
        )
        later.add_task(engine.fan_out, result["id"])
        out = BystanderOut(**result)
        return JSONResponse(out.model_dump(), status_code=202, headers=no_store)

    @app.get(
        "/v1/bystander/requests/{request_id}",
        response_model=BystanderStatusOut,
        response_model_exclude_none=True,
        responses=_errors(401, 404),
    )
    def bystander_status(
        request_id: str,
        cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> JSONResponse:
        """The answers so far; the request's status token as ``Authorization: Bearer``."""
        if cred is None:
            raise ApiError(401, "unauthorized", "send Authorization: Bearer STATUS_TOKEN")
        status = engine.bystander_status(request_id, cred.credentials.strip())
        for answer in status["answers"]:
            for item in answer.get("released", []):
                device = item.pop("device")
                item["download_url"] = blobs.download_url(
                    blob_key(request_id, device, item["clip_id"])
                )
        out = BystanderStatusOut(**status)
        return JSONResponse(out.model_dump(exclude_none=True), headers=no_store)

    if isinstance(blobs, LocalBlobStore):
        local = blobs

        @app.put("/v1/blobs/{token}", status_code=201, responses=_errors(403))
        async def put_blob(token: str, request: Request) -> BlobStoredOut:
            try:
                key = local.redeem(token, "put")
            except TokenError as err:
                raise ApiError(403, "bad_link", str(err)) from None
            body = await request.body()
            size = local.write(key, iter([body]))
            return BlobStoredOut(stored=size)

        @app.get(
            "/v1/blobs/{token}",
            response_class=StreamingResponse,
            responses={
                200: {
                    "content": {"application/octet-stream": {}},
                    "description": "the encrypted clip container (docs/formats.md §6)",
                },
                **_errors(403, 404),
            },
        )
        def get_blob(token: str) -> StreamingResponse:
            try:
                key = local.redeem(token, "get")
            except TokenError as err:
                raise ApiError(403, "bad_link", str(err)) from None
            if not local.exists(key):
                raise ApiError(404, "not_found", "nothing was uploaded for this clip yet")
            f = local.open(key)

            def stream() -> Iterator[bytes]:
                with f:
                    yield from iter(lambda: f.read(1 << 16), b"")

            return StreamingResponse(stream(), media_type="application/octet-stream")

    def _forward(approval_b64: str, device: str, request_id: str, clip_ids: list[str]) -> None:
        doorbells.release(device, request_id, approval_b64, clip_ids)

    @app.get("/v1/devices/{device}/clips", responses=_errors(401, 403, 404))
    def device_clips(device: str, owner: Owner) -> list[ClipOut]:
        """Your doorbell's clips, each with its key sealed to you (``owner_key``)."""
        return [ClipOut(**c) for c in engine.owner_clips(owner, device)]

    @app.post("/v1/views", status_code=201, responses=_errors(400, 401, 403, 404, 422))
    def view(body: ApprovalIn, owner: Owner) -> DecisionOut:
        """Release clips of your own doorbell to yourself: an Approval whose
        ``requester_key`` is your own ``box.pub`` and ``request_id`` starts with view-."""
        approval = engine.view(owner, body.approval)
        _forward(body.approval, approval.device, approval.request_id, approval.clip_ids)
        return DecisionOut(id=approval.request_id, status="approved", forwarded_to=approval.device)

    @app.get("/v1/views/{view_id}", responses=_errors(401, 403, 404))
    def get_view(view_id: str, owner: Owner) -> RequestStatusOut:
        released = engine.view_released(owner, view_id)
        for item in released:
            item["download_url"] = blobs.download_url(
                blob_key(view_id, item["device"], item["clip_id"])
            )
        return RequestStatusOut(id=view_id, status="accepted", released=released)

    @app.post("/v1/clips/{device}/{clip_id}/delete", responses=_errors(400, 401, 403, 404, 422))
    def delete_clip(device: str, clip_id: str, body: DeletionIn, owner: Owner) -> DeleteOut:
        engine.check_deletion(owner, device, clip_id, body.signature)
        doorbells.delete(device, clip_id, body.signature)
        return DeleteOut(clip=clip_id, status="sent to the doorbell")

    @app.get("/v1/devices/{device}/masks", responses=_errors(401, 404))
    def held_masks(device: str, owner: Owner) -> HeldMasksOut:
        """The owner's signed mask set your doorbell last announced in force: build the
        next change on it (``previous`` = ``hash``) after checking your signature."""
        return HeldMasksOut(**engine.held_masks(owner, device))

    @app.post("/v1/devices/{device}/masks", responses=_errors(400, 401, 403, 404, 422))
    def set_masks(device: str, body: MasksIn, owner: Owner) -> MasksOut:
        """Set your doorbell's owner-added privacy masks: the whole set, signed.  The
        doorbell checks the signature again and refuses an update not newer than the one
        it holds; it answers with an event ``masks_applied`` carrying ``hash``."""
        update, digest = engine.check_masks(owner, device, body.decision)
        doorbells.masks(device, body.decision)
        return MasksOut(
            device=device, hash=digest, masks=len(update.masks), status="sent to the doorbell"
        )

    def openapi() -> dict[str, Any]:
        """FastAPI's schema, less the 422 validation errors it assumes: this API answers
        malformed input with 400 (and uses 422 only for policy refusals)."""
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for ops in spec["paths"].values():
                for op in ops.values():
                    resp = op.get("responses", {}).get("422")
                    if resp and "HTTPValidationError" in str(resp):
                        del op["responses"]["422"]
            for name in ("HTTPValidationError", "ValidationError"):
                spec.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    app.include_router(log_router(engine.audit))  # public, no token: relay/log_api.py

    web.install(app, engine, blobs, publish)  # the owners' web app, /app/

    @app.get("/v1/health")
    def health() -> HealthOut:
        """Up or not; deliberately no counts (they would map the cameras)."""
        return HealthOut(ok=True)

    return app


def client_address(request: Request) -> str:
    """The client's address, the source the rate limit counts.  Behind the operator's
    reverse proxy uvicorn has already replaced the peer with the last X-Forwarded-For hop
    its ``forwarded_allow_ips`` (``[api] forwarded_allow_ips``) does not trust, so a
    client cannot pick its own address by sending the header."""
    return (request.client.host if request.client else "unknown")[:64]
