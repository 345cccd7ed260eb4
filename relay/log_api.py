"""The public, read-only audit log API: anyone may read it, no token is needed.

Modelled on Certificate Transparency (RFC 6962 §4, RFC 9162 §5)::

    GET /v1/log/key                                  the relay's log key (Ed25519, base64)
    GET /v1/log/head                                 the latest signed tree head
    GET /v1/log/heads/{size}                         the head signed when the log had `size`
    GET /v1/log/entries?start=A&end=B                entries A..B inclusive (at most 1000)
    GET /v1/log/proof/inclusion?index=I[&size=N]     inclusion proof of entry I
    GET /v1/log/proof/inclusion?leaf_hash=H[&size=N] ... of the entry whose leaf hash is H
    GET /v1/log/proof/consistency?first=M&second=N   RFC 6962 §2.1.2 consistency proof

Entries are served exactly as they are hashed into the tree (base64 of the canonical
JSON), so a reader checks every proof over the bytes it got.  They carry nothing
that names an owner, a home or a place: :mod:`relay.audit` seals those fields at
write time.  A log the store can no longer answer for gives 503 with the reason.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from protocol.crypto import b64
from relay.audit import AuditLog, LogDamaged

MAX_ENTRIES = 1000


def _error(status: int, error: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason}, status_code=status)


def log_router(audit: AuditLog) -> APIRouter:
    router = APIRouter(prefix="/v1/log", tags=["public log"])

    @router.get("/key")
    def key() -> dict[str, str]:
        return {"key": b64(audit.public), "alg": "ed25519"}

    @router.get("/head", response_model=None)
    def head() -> dict[str, Any] | JSONResponse:
        signed = audit.head()
        if signed is None:
            return _error(404, "empty", "the log has no entries yet")
        return signed

    @router.get("/heads/{size}", response_model=None)
    def head_at(size: int) -> dict[str, Any] | JSONResponse:
        if size < 1:
            return _error(400, "invalid", "size must be at least 1")
        if size > audit.size():
            return _error(404, "not_found", f"the log has fewer than {size} entries")
        try:
            return audit.signed_head(size)
        except LogDamaged as err:
            return _error(503, "damaged", str(err))

    @router.get("/entries", response_model=None)
    def entries(
        start: int = Query(0, ge=0), end: int | None = Query(None, ge=0)
    ) -> dict[str, Any] | JSONResponse:
        last = start + MAX_ENTRIES - 1 if end is None else min(end, start + MAX_ENTRIES - 1)
        if last < start:
            return _error(400, "invalid", "end is before start")
        raw = audit.public_entries(start, last)
        out = []
        for i, e in enumerate(raw):
            try:
                parsed: Any = json.loads(e)
            except ValueError:
                parsed = None  # served anyway: the bytes are what the tree holds
            out.append({"index": start + i, "entry": b64(e), "json": parsed})
        return {"start": start, "entries": out}

    @router.get("/proof/inclusion", response_model=None)
    def inclusion(
        index: int | None = Query(None, ge=0),
        leaf_hash: str | None = Query(None, pattern=r"^[0-9a-f]{64}$"),
        size: int | None = Query(None, ge=1),
    ) -> dict[str, Any] | JSONResponse:
        if (index is None) == (leaf_hash is None):
            return _error(400, "invalid", "give index or leaf_hash (hex), not both")
        try:
            if leaf_hash is not None:
                index = audit.index_of(bytes.fromhex(leaf_hash))
            assert index is not None
            return audit.proof(index, size)
        except KeyError:
            return _error(404, "not_found", "no entry has this leaf hash")
        except IndexError as err:
            return _error(404, "not_found", str(err))
        except LogDamaged as err:
            return _error(503, "damaged", str(err))

    @router.get("/proof/consistency", response_model=None)
    def consistency(
        first: int = Query(..., ge=0), second: int = Query(..., ge=0)
    ) -> dict[str, Any] | JSONResponse:
        if first > second:
            return _error(400, "invalid", "first must not be larger than second")
        if second > audit.size():
            return _error(404, "not_found", f"the log has fewer than {second} entries")
        try:
            return audit.consistency(first, second)
        except IndexError as err:
            return _error(404, "not_found", str(err))

    return router
