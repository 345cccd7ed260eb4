"""The relay's HTTP API for owners and requesters (FastAPI; OpenAPI at /openapi.json).

Every call but the blob links needs ``Authorization: Bearer TOKEN`` (tokens are
made by ``relay owners add`` and ``relay requesters add``).  Every error is a
JSON body ``{"error": ..., "reason": ...}``.

(No ``from __future__ import annotations`` here: FastAPI reads the dependency
aliases defined inside :func:`create_app` from evaluated annotations.)
"""

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from protocol import DeleteCommand, ReleaseCommand, encode, new_id, utcnow
from relay import web
from relay.blobs import BlobStore, LocalBlobStore, TokenError, blob_key
from relay.consent import ConsentEngine, Forbidden, NotFound, PolicyRefusal


class ApiError(Exception):
    def __init__(self, status: int, error: str, reason: str) -> None:
        self.status, self.error, self.reason = status, error, reason


class RequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: float
    lon: float
    radius_m: Annotated[float, Field(gt=0)]
    start: float  # UTC seconds
    end: float
    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    case_ref: Annotated[str, Field(max_length=200)]
    basis: str


class DeletionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signature: Annotated[str, Field(max_length=4096)]


class ApprovalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    approval: Annotated[str, Field(max_length=16384)]


def create_app(
    engine: ConsentEngine,
    blobs: BlobStore,
    publish: Callable[[str, bytes], None],
) -> FastAPI:
    """``publish(topic, payload)`` sends a command to a doorbell (QoS 1)."""
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

    def caller(authorization: Annotated[str | None, Header()] = None) -> tuple[str, str]:
        if not authorization or not authorization.startswith("Bearer "):
            raise ApiError(401, "unauthorized", "send Authorization: Bearer TOKEN")
        try:
            return engine.who(authorization.removeprefix("Bearer ").strip())
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

    @app.post("/v1/requests", status_code=201)
    def file_request(body: RequestIn, requester: Requester) -> dict[str, Any]:
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
        )
        if result["status"] == "refused":
            raise ApiError(422, "refused_by_policy", result["reason"])
        return result

    @app.get("/v1/requests/{request_id}")
    def get_request(request_id: str, requester: Requester) -> dict[str, Any]:
        req = engine.request(request_id)
        if req["requester"] != requester:
            raise NotFound(request_id)
        released = engine.released(request_id)
        for item in released:
            item["download_url"] = blobs.download_url(
                blob_key(request_id, item["device"], item["clip_id"])
            )
        return {"id": request_id, "status": req["status"], "released": released}

    @app.get("/v1/asks")
    def list_asks(owner: Owner) -> list[dict[str, Any]]:
        out = []
        for ask in engine.asks_for(owner):
            d = ask.__dict__.copy()
            d["clips"] = engine.index.clips(device=ask.device, since=ask.start, until=ask.end)
            d["clips"] = [c for c in d["clips"] if c["clip_id"] in ask.clip_ids]
            out.append(d)
        return out

    @app.post("/v1/asks/{ask_id}/deny")
    def deny(ask_id: str, owner: Owner) -> dict[str, Any]:
        return {"id": engine.deny(owner, ask_id).id, "status": "denied"}

    @app.post("/v1/asks/{ask_id}/approve")
    def approve(ask_id: str, body: ApprovalIn, owner: Owner) -> dict[str, Any]:
        ask, payload = engine.approve(owner, ask_id, body.approval)
        urls = {
            c: blobs.upload_url(blob_key(ask.request_id, ask.device, c))
            for c in payload["clip_ids"]
        }
        cmd = ReleaseCommand(
            id=new_id(),
            ts=utcnow(),
            device=ask.device,
            request_id=ask.request_id,
            approval=body.approval,
            upload_urls=urls,
        )
        publish(*encode(cmd))
        return {"id": ask.id, "status": "approved", "forwarded_to": ask.device}

    if isinstance(blobs, LocalBlobStore):
        local = blobs

        @app.put("/v1/blobs/{token}", status_code=201)
        async def put_blob(token: str, request: Request) -> dict[str, Any]:
            try:
                key = local.redeem(token, "put")
            except TokenError as err:
                raise ApiError(403, "bad_link", str(err)) from None
            body = await request.body()
            size = local.write(key, iter([body]))
            return {"stored": size}

        @app.get("/v1/blobs/{token}")
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

    @app.post("/v1/clips/{device}/{clip_id}/delete")
    def delete_clip(device: str, clip_id: str, body: DeletionIn, owner: Owner) -> dict[str, Any]:
        engine.check_deletion(owner, device, clip_id, body.signature)
        cmd = DeleteCommand(
            id=new_id(), ts=utcnow(), device=device, clip_id=clip_id, signature=body.signature
        )
        publish(*encode(cmd))
        return {"clip": clip_id, "status": "sent to the doorbell"}

    web.install(app, engine, blobs, publish)  # the owners' web app, /app/

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "audit_entries": engine.audit.size()}

    return app
