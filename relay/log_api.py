"""The public, read-only audit log API: anyone may read it, no token is needed.

Modelled on Certificate Transparency (RFC 6962 §4, RFC 9162 §5)::

    GET /v1/log/key                                  the relay's log key (Ed25519, base64)
    GET /v1/log/head                                 the latest tree head, signed in the last minute
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
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from protocol.crypto import b64
from relay.audit import AuditLog, LogDamaged

MAX_ENTRIES = 1000
MAX_INDEX = 2**40
"""Larger than any log will be, small enough that Redis takes it as an index (a 64-bit
maximum made LRANGE fail with a 500)."""


def _error(status: int, error: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason}, status_code=status)


class RateLimit:
    """A token bucket per client address: ``rate`` requests a second, ``burst`` at once.

    The log is public and needs no token, so this is what stops one client from
    keeping the relay busy with proofs.

    >>> t = [0.0]
    >>> limit = RateLimit(rate=1, burst=2, clock=lambda: t[0])
    >>> [limit.allow("a"), limit.allow("a"), limit.allow("a"), limit.allow("b")]
    [True, True, False, True]
    >>> t[0] = 1.0
    >>> limit.allow("a")
    True
    """

    MAX_CLIENTS = 10_000

    def __init__(
        self, rate: float = 20.0, burst: float = 200.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if len(self._buckets) >= self.MAX_CLIENTS and client not in self._buckets:
                self._buckets.clear()  # bounded memory; a full bucket for everyone again
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                return False
            self._buckets[client] = (tokens - 1, now)
            return True


def log_router(audit: AuditLog, limit: RateLimit | None = None) -> APIRouter:
    limiter = limit if limit is not None else RateLimit()

    def limited(request: Request) -> None:
        client = request.client.host if request.client else "?"
        if not limiter.allow(client):
            raise HTTPException(
                429, {"error": "rate_limited", "reason": "too many requests"}, {"Retry-After": "1"}
            )

    router = APIRouter(prefix="/v1/log", tags=["public log"], dependencies=[Depends(limited)])

    @router.get("/key")
    def key() -> dict[str, str]:
        return {"key": b64(audit.public), "alg": "ed25519"}

    @router.get("/head", response_model=None)
    def head() -> dict[str, Any] | JSONResponse:
        signed = audit.current_head()
        if signed is None:
            return _error(404, "empty", "the log has no entries yet")
        return signed

    @router.get("/heads/{size}", response_model=None)
    def head_at(size: int) -> dict[str, Any] | JSONResponse:
        if not 1 <= size <= MAX_INDEX:
            return _error(400, "invalid", f"size must be between 1 and {MAX_INDEX}")
        if size > audit.size():
            return _error(404, "not_found", f"the log has fewer than {size} entries")
        try:
            return audit.signed_head(size)
        except LogDamaged as err:
            return _error(503, "damaged", str(err))

    @router.get("/entries", response_model=None)
    def entries(
        start: int = Query(0, ge=0, le=MAX_INDEX), end: int | None = Query(None, ge=0, le=MAX_INDEX)
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
        index: int | None = Query(None, ge=0, le=MAX_INDEX),
        leaf_hash: str | None = Query(None, pattern=r"^[0-9a-f]{64}$"),
        size: int | None = Query(None, ge=1, le=MAX_INDEX),
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
        first: int = Query(..., ge=0, le=MAX_INDEX), second: int = Query(..., ge=0, le=MAX_INDEX)
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
