"""Footage requests, owners' asks and their decisions: the relay's consent engine.

A requester asks for an area and a window, with a reason, a case reference and
a legal basis.  The relay checks its published policy bounds, records the
request (accepted or refused) in the audit log, finds doorbells in the area
with clips in the window, and creates one pending ask per owner listing only
that owner's matching clips.  The requester learns nothing about which homes
have cameras or who declined; only what is released reaches it.

An owner's approval is checked here against the owner's registered key (the
doorbell checks it again, with the key it was provisioned with), then forwarded
to the doorbell with one upload URL per clip.  Asks unanswered for 72 h expire
as a no.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from protocol.crypto import b64, unb64
from protocol.decisions import Approval, DecisionRefused, Deletion, verify_decision
from protocol.refusals import RefusalCode, public_code
from relay import keyspace as ks
from relay.audit import AuditLog
from relay.index import Near, RelayIndex, dkey

ASK_TTL_S = 72 * 3600
DEFAULT_POLICY = {"max_radius_m": 250.0, "max_window_s": 6 * 3600.0, "max_per_day": 5}
KINDS = ("agency", "neighbour", "owner")
BASES = ("consent", "legal-demand")


class PolicyRefusal(ValueError):
    """Refused by policy or a check; ``code`` is what the public log says of it."""

    def __init__(self, why: str, code: RefusalCode = "policy") -> None:
        super().__init__(why)
        self.code: RefusalCode = code


class NotFound(KeyError):
    pass


class Forbidden(PermissionError):
    pass


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Ask:
    id: str
    request_id: str
    owner: str
    device: str
    clip_ids: list[str]
    requester: str
    requester_kind: str
    requester_key: str
    reason: str
    case_ref: str
    basis: str
    center: tuple[float, float]
    radius_m: float
    start: float
    end: float
    created: float
    expires: float
    status: str = "pending"  # approved | denied | expired
    legal_demands: list[dict[str, Any]] = field(default_factory=list)


class ConsentEngine:
    def __init__(
        self, index: RelayIndex, audit: AuditLog, clock: Callable[[], float] = time.time
    ) -> None:
        # Injected so that tests can let 72 h pass without touching stored data.
        self.clock = clock
        self.index = index
        self.r: redis.Redis = index.r
        self.audit = audit

    # ------------------------------------------------------------ identities

    def add_owner(self, name: str, sign_public: bytes, box_public: bytes) -> str:
        if self.r.hexists(ks.OWNERS, name):
            raise ValueError(f"owner {name!r} exists already")
        self.r.hset(
            ks.OWNERS,
            name,
            json.dumps(
                {
                    "sign_public": b64(sign_public),
                    "box_public": b64(box_public),
                    "created": self.clock(),
                }
            ),
        )
        token = self._token("owner", name)
        self.audit.append("operator_action", "operator", {"action": "owner_added", "owner": name})
        return token

    def add_requester(self, name: str, kind: str, box_public: bytes) -> str:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        if self.r.hexists(ks.REQUESTERS, name):
            raise ValueError(f"requester {name!r} exists already")
        self.r.hset(
            ks.REQUESTERS,
            name,
            json.dumps({"kind": kind, "box_public": b64(box_public), "created": self.clock()}),
        )
        token = self._token("requester", name)
        self.audit.append(
            "operator_action",
            "operator",
            {"action": "requester_added", "requester": name, "kind": kind},
        )
        return token

    def _token(self, role: str, name: str) -> str:
        token = secrets.token_urlsafe(32)
        self.r.hset(ks.TOKENS, token_hash(token), json.dumps({"role": role, "name": name}))
        return token

    def who(self, token: str) -> tuple[str, str]:
        raw = self.r.hget(ks.TOKENS, token_hash(token))
        if raw is None:
            raise Forbidden("unknown token")
        d = json.loads(raw)
        return d["role"], d["name"]

    def owner(self, name: str) -> dict[str, Any]:
        raw = self.r.hget(ks.OWNERS, name)
        if raw is None:
            raise NotFound(name)
        return json.loads(raw)

    def requester(self, name: str) -> dict[str, Any]:
        raw = self.r.hget(ks.REQUESTERS, name)
        if raw is None:
            raise NotFound(name)
        return json.loads(raw)

    # ------------------------------------------------------------ policy

    def policy(self) -> dict[str, float]:
        raw = self.r.hgetall(ks.POLICY)
        p = dict(DEFAULT_POLICY)
        p.update({k.decode(): float(v) for k, v in raw.items()})
        return p

    def set_policy(self, actor: str, **changes: float) -> dict[str, float]:
        unknown = set(changes) - set(DEFAULT_POLICY)
        if unknown:
            raise ValueError(f"unknown policy keys: {', '.join(sorted(unknown))}")
        before = self.policy()
        self.r.hset(ks.POLICY, mapping={k: str(v) for k, v in changes.items()})
        self.audit.append("policy_change", actor, {"before": before, "after": self.policy()})
        return self.policy()

    # ------------------------------------------------------------ requests

    def file_request(
        self,
        requester: str,
        lat: float,
        lon: float,
        radius_m: float,
        start: float,
        end: float,
        reason: str,
        case_ref: str,
        basis: str,
    ) -> dict[str, Any]:
        """Check policy, record, match and ask owners.  Returns what the requester may know."""
        req = self.requester(requester)
        request_id = "req-" + secrets.token_hex(8)
        record = {
            "id": request_id,
            "requester": requester,
            "lat": lat,
            "lon": lon,
            "radius_m": radius_m,
            "start": start,
            "end": end,
            "reason": reason,
            "case_ref": case_ref,
            "basis": basis,
            "created": self.clock(),
        }
        try:
            self._check_policy(requester, record)
        except PolicyRefusal as err:
            record.update(status="refused", refusal=str(err))
            self.r.set(ks.request(request_id), json.dumps(record))
            self.audit.append("request_refused", requester, record)
            return {"id": request_id, "status": "refused", "reason": str(err)}
        record["status"] = "accepted"
        self.r.set(ks.request(request_id), json.dumps(record))
        self.r.zadd(ks.REQUESTS, {request_id: record["created"]})
        self.r.incr(self._day_key(requester))
        self.r.expire(self._day_key(requester), 2 * 86400)
        self.audit.append("request", requester, record)
        clips = self.index.clips(since=start, until=end, near=Near(lat, lon, radius_m))
        by_device: dict[str, list[str]] = {}
        for c in clips:  # already in the window: the index is by start time
            by_device.setdefault(c["device"], []).append(c["clip_id"])
        for device, clip_ids in sorted(by_device.items()):
            info = self.index.device(device) or {}
            owner = info.get("owner")
            if not owner or info.get("revoked", "0") != "0":
                continue
            now = self.clock()
            ask = Ask(
                id="ask-" + secrets.token_hex(8),
                request_id=request_id,
                owner=owner,
                device=device,
                clip_ids=sorted(clip_ids),
                requester=requester,
                requester_kind=req["kind"],
                requester_key=req["box_public"],
                reason=reason,
                case_ref=case_ref,
                basis=basis,
                center=(lat, lon),
                radius_m=radius_m,
                start=start,
                end=end,
                created=now,
                expires=now + ASK_TTL_S,
            )
            self._save_ask(ask)
            self.r.zadd(ks.owner_asks(owner), {ask.id: now})
            self.r.zadd(ks.ASKS_PENDING, {ask.id: ask.expires})
            self.r.rpush(ks.request_asks(request_id), ask.id)
            self.audit.append(
                "ask",
                "relay",
                {
                    "ask": ask.id,
                    "request": request_id,
                    "owner": owner,
                    "device": device,
                    "clips": len(clip_ids),
                },
            )
        # Deliberately nothing about how many homes matched.
        return {"id": request_id, "status": "accepted"}

    def _day_key(self, requester: str) -> str:
        return ks.requests_today(requester, time.strftime("%Y-%m-%d", time.gmtime(self.clock())))

    def _check_policy(self, requester: str, r: dict[str, Any]) -> None:
        p = self.policy()
        if r["basis"] not in BASES:
            raise PolicyRefusal(f"legal basis must be one of {', '.join(BASES)}")
        if not str(r["case_ref"]).strip():
            raise PolicyRefusal("a case reference is required")
        if not str(r["reason"]).strip():
            raise PolicyRefusal("a reason is required")
        if not 0 < r["radius_m"] <= p["max_radius_m"]:
            raise PolicyRefusal(f"radius must be within {p['max_radius_m']:g} m")
        if not 0 < r["end"] - r["start"] <= p["max_window_s"]:
            raise PolicyRefusal(f"the window must be within {p['max_window_s'] / 3600:g} h")
        if not (math.isfinite(r["lat"]) and -85 <= r["lat"] <= 85 and -180 <= r["lon"] <= 180):
            raise PolicyRefusal("the centre is not a place on Earth")
        today = int(self.r.get(self._day_key(requester)) or 0)
        if today >= p["max_per_day"]:
            raise PolicyRefusal(f"at most {p['max_per_day']:g} requests per requester per day")

    # ------------------------------------------------------------ asks

    def _save_ask(self, ask: Ask) -> None:
        self.r.set(ks.ask(ask.id), json.dumps(asdict(ask)))

    def ask(self, ask_id: str) -> Ask:
        raw = self.r.get(ks.ask(ask_id))
        if raw is None:
            raise NotFound(ask_id)
        ask = Ask(**json.loads(raw))
        if ask.status == "pending" and ask.expires <= self.clock():
            ask.status = "expired"
            self._save_ask(ask)
            self.audit.append("ask_expired", "relay", {"ask": ask.id, "request": ask.request_id})
        return ask

    def asks_for(self, owner: str) -> list[Ask]:
        ids = [i.decode() for i in self.r.zrange(ks.owner_asks(owner), 0, -1)]
        return [self.ask(i) for i in ids]

    def deny(self, owner: str, ask_id: str) -> Ask:
        ask = self._pending(owner, ask_id)
        ask.status = "denied"
        self._save_ask(ask)
        self.r.zrem(ks.ASKS_PENDING, ask.id)
        self.audit.append(
            "decision", owner, {"ask": ask.id, "request": ask.request_id, "decision": "deny"}
        )
        return ask

    def _pending(self, owner: str, ask_id: str) -> Ask:
        ask = self.ask(ask_id)
        if ask.owner != owner:
            raise NotFound(ask_id)  # another owner's ask does not exist, as far as you know
        if ask.status != "pending":
            raise PolicyRefusal(f"the ask is {ask.status}", "not_pending")
        return ask

    def approve(self, owner: str, ask_id: str, signed_b64: str) -> tuple[Ask, dict[str, Any]]:
        """Check the owner's signed approval; return the ask and the approval payload.

        A refused approval (forged, altered, replayed, for another ask) is on the record.
        """
        try:
            return self._approve(owner, ask_id, signed_b64)
        except (PolicyRefusal, NotFound) as err:
            self._refused("approval_refused", owner, {"ask": ask_id[:100]}, err)
            raise

    def _refused(self, kind: str, owner: str, data: dict[str, Any], err: Exception) -> None:
        if isinstance(err, PolicyRefusal):
            why, code = str(err), public_code(err.code)
        else:
            why, code = "not found for this owner", "not_found"
        # The text is sealed (it can name a doorbell); the public entry has the code.
        self.audit.append(kind, owner, {**data, "code": code, "why": why[:300]})

    def _approve(self, owner: str, ask_id: str, signed_b64: str) -> tuple[Ask, dict[str, Any]]:
        ask = self._pending(owner, ask_id)
        try:
            approval = verify_decision(
                signed_b64,
                unb64(self.owner(owner)["sign_public"]),
                Approval,
                now=self.clock(),
                device=ask.device,
            )
        except DecisionRefused as err:
            raise PolicyRefusal(f"the approval is refused: {err}", err.code) from None
        checks = [
            (approval.request_id == ask.request_id, "for another request", "wrong_request"),
            (
                approval.requester_key == ask.requester_key,
                "for another requester",
                "wrong_requester",
            ),
            (
                set(approval.clip_ids) <= set(ask.clip_ids),
                "names clips not asked for",
                "wrong_clips",
            ),
        ]
        for ok, why, code in checks:
            if not ok:
                raise PolicyRefusal(f"the approval is {why}", code)
        payload = approval.payload()
        ask.status = "approved"
        self._save_ask(ask)
        self.r.zrem(ks.ASKS_PENDING, ask.id)
        self.audit.append(
            "decision",
            owner,
            {
                "ask": ask.id,
                "request": ask.request_id,
                "decision": "approve",
                "clips": payload["clip_ids"],
            },
        )
        return ask, payload

    # ------------------------------------------------------------ releases

    def request(self, request_id: str) -> dict[str, Any]:
        raw = self.r.get(ks.request(request_id))
        if raw is None:
            raise NotFound(request_id)
        return json.loads(raw)

    def released(self, request_id: str) -> list[dict[str, Any]]:
        """What doorbells released for a request (from their ``released`` messages)."""
        out = []
        for ask_id in self.r.lrange(ks.request_asks(request_id), 0, -1):
            ask = self.ask(ask_id.decode())
            if ask.status != "approved":
                continue
            for _field, raw in self.r.hscan_iter(
                dkey(ask.device, "released"), match=f"{request_id}:*"
            ):
                msg = json.loads(raw)
                out.append(
                    {
                        "device": ask.device,
                        "clip_id": msg["clip_id"],
                        "wrapped_key": msg["wrapped_key"],
                        "sha256": msg["sha256"],
                    }
                )
        return out

    def check_deletion(self, owner: str, device: str, clip_id: str, signed_b64: str) -> None:
        """An owner may delete only their own doorbell's clips, with a valid signed deletion.

        A refused deletion is on the record (the doorbell's name sealed)."""
        try:
            self._check_deletion(owner, device, clip_id, signed_b64)
        except (PolicyRefusal, NotFound) as err:
            data = {"device": device[:100], "clip": clip_id[:100]}
            self._refused("deletion_refused", owner, data, err)
            raise

    def _check_deletion(self, owner: str, device: str, clip_id: str, signed_b64: str) -> None:
        info = self.index.device(device)
        if info is None or info.get("owner") != owner:
            raise NotFound(device)
        try:
            deletion = verify_decision(
                signed_b64,
                unb64(self.owner(owner)["sign_public"]),
                Deletion,
                now=self.clock(),
                device=device,
            )
        except DecisionRefused as err:
            raise PolicyRefusal(f"the deletion is refused: {err}", err.code) from None
        if deletion.clip_id != clip_id:
            raise PolicyRefusal("the signed deletion is for another clip", "wrong_clips")
        self.audit.append(
            "operator_action",
            owner,
            {"action": "deletion_requested", "device": device, "clip": clip_id},
        )

    def expire_due(self, now: float | None = None) -> int:
        """Mark every pending ask past its 72 h as expired (audited); return how many."""
        now = self.clock() if now is None else now
        due = [a.decode() for a in self.r.zrangebyscore(ks.ASKS_PENDING, "-inf", now)]
        n = 0
        for ask_id in due:
            if self.ask(ask_id).status == "expired":
                n += 1
            self.r.zrem(ks.ASKS_PENDING, ask_id)
        return n

    def record_legal_demand(
        self, request_id: str, docket: str, authority: str, actor: str
    ) -> dict[str, Any]:
        self.request(request_id)
        demand = {
            "request": request_id,
            "docket": docket,
            "authority": authority,
            "at": self.clock(),
            "note": "the relay holds no keys: it can hand over metadata and ciphertext only",
        }
        for ask_id in self.r.lrange(ks.request_asks(request_id), 0, -1):
            ask = self.ask(ask_id.decode())
            ask.legal_demands.append(demand)
            self._save_ask(ask)
        self.audit.append("legal_demand", actor, demand)
        return demand
