"""Footage requests, owners' asks and their decisions: the relay's consent engine.

A requester asks for an area and a window, with a reason, a case reference and
a legal basis.  The relay checks its published policy bounds and the requester
organisation's daily limit (atomically, in Redis), then finds doorbells in the
area with clips in the window and creates one pending ask per owner listing only
that owner's matching clips.  The requester learns nothing about which homes
have cameras or who declined; only what is released reaches it.  The audit log
gets one entry per request whatever it matched: the request and a commitment to
its padded ask set (:mod:`protocol.askset`); each ask carries its owner's proof.

An owner's approval is checked here against the owner's registered key (the
doorbell checks it again, with the key it was provisioned with), then forwarded
to the doorbell with one upload URL per clip.  Asks unanswered for 72 h expire
as a no.

A bystander (someone a doorbell filmed) files a request of their own without an
account: a proof of work and a per-address rate limit stand in for one.  It is
the same kind of request (one record, the same policy bounds, the same deferred
fan-out and committed ask set); its asks carry ``bystander`` (the kind, the
description, a proposed mask) and wait a month, with a reminder before the end.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import secrets
import time
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import redis

from protocol import askset, reqsig
from protocol import bystander as bys
from protocol.crypto import CryptoFailure, b64, unb64
from protocol.decisions import (
    Approval,
    DecisionRefused,
    Deletion,
    MaskUpdate,
    decision_hash,
    mask_points,
    verify_decision,
)
from protocol.refusals import RefusalCode, public_code
from relay import keyspace as ks
from relay.audit import AuditLog
from relay.config import BystanderConfig
from relay.index import Near, RelayIndex

ASK_TTL_S = 72 * 3600
_D = TypeVar("_D", Approval, Deletion, MaskUpdate)
_DECISION_NAMES: dict[type, str] = {
    Approval: "approval",
    Deletion: "deletion",
    MaskUpdate: "mask update",
}
DEFAULT_POLICY = {
    "max_radius_m": 250.0,
    "min_radius_m": 10.0,
    "max_window_s": 6 * 3600.0,
    "max_per_day": 5,
    "retention_s": 30 * 86400.0,
    "bystander_max_window_s": 2 * 3600.0,
}
"""``retention_s``: how far back a window may start (doorbells keep clips 30 days);
``bystander_max_window_s``: a bystander's window is shorter (they know when they passed)."""
KINDS = ("agency", "neighbour", "owner")
BASES = ("consent", "legal-demand")
ROLES = ("owner", "requester")


class PolicyRefusal(ValueError):
    """Refused by policy or a check; ``code`` is what the public log says of it."""

    def __init__(self, why: str, code: RefusalCode = "policy") -> None:
        super().__init__(why)
        self.code: RefusalCode = code


class NotFound(KeyError):
    pass


class RateLimited(Exception):
    """Too many from one client address; ``retry_after`` seconds until the next window."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many requests from this address; retry after {retry_after} s")
        self.retry_after = retry_after


class BadWork(ValueError):
    """A bystander request without a valid, unused proof of work."""


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
    commitment: dict[str, Any] = field(default_factory=dict)
    """This ask's opening and inclusion proof under the request's public ``asks_root``."""
    signed_request: dict[str, str] | None = None
    """The requester's own signed request (protocol.reqsig), forwarded unchanged."""
    bystander: dict[str, Any] | None = None
    """A bystander's ask: ``kind``, ``description``, ``polygon`` (stop_filming),
    ``remind_at``, ``reminded_at``, and once answered ``answer`` (what and when)."""


def visible(text: str) -> bool:
    """True if ``text`` has a visible character and no invisible or control ones."""
    bad = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
    return bool(text.strip()) and not any(unicodedata.category(ch) in bad for ch in text)


def rate_source(address: str) -> str:
    """What the per-address limit counts for a client ``address``: an IPv4 address
    whole, an IPv6 address by its /64 (one home or phone line gets a whole /64, so
    counting single IPv6 addresses would give it 2^64 fresh limits).

    >>> rate_source("2001:db8:aa:bb::1"), rate_source("::ffff:198.51.100.7")
    ('2001:db8:aa:bb::/64', '198.51.100.7')
    >>> rate_source("198.51.100.7"), rate_source("unknown")
    ('198.51.100.7', 'unknown')
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ConsentEngine:
    def __init__(
        self,
        index: RelayIndex,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
        bystander: BystanderConfig | None = None,
    ) -> None:
        # Injected so that tests can let 72 h (or a bystander's 30 days) pass without
        # touching stored data.
        self.clock = clock
        self.bystander = bystander or BystanderConfig()
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

    def add_requester(self, name: str, kind: str, box_public: bytes, org: str | None = None) -> str:
        """Register ``name``; accounts of one ``org`` (default: its own) share its limits."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        if self.r.hexists(ks.REQUESTERS, name):
            raise ValueError(f"requester {name!r} exists already")
        org = org or name
        self.r.hset(
            ks.REQUESTERS,
            name,
            json.dumps(
                {
                    "kind": kind,
                    "org": org,
                    "box_public": b64(box_public),
                    "created": self.clock(),
                }
            ),
        )
        token = self._token("requester", name)
        self.audit.append(
            "operator_action",
            "operator",
            {"action": "requester_added", "requester": name, "kind": kind, "org": org},
        )
        return token

    def _token(self, role: str, name: str) -> str:
        """A new API token; only its SHA-256 is stored (it has 256 random bits)."""
        token = secrets.token_urlsafe(32)
        digest = token_hash(token)
        self.r.hset(ks.TOKENS, digest, json.dumps({"role": role, "name": name}))
        self.r.sadd(ks.credential(role, name), digest)
        return token

    def _drop_tokens(self, role: str, name: str) -> int:
        digests = set(self.r.smembers(ks.credential(role, name)))
        # Tokens made before the credential sets existed are found by their record.
        for digest, raw in self.r.hscan_iter(ks.TOKENS):
            if json.loads(raw) == {"role": role, "name": name}:
                digests.add(digest)
        if digests:
            self.r.hdel(ks.TOKENS, *digests)
        self.r.delete(ks.credential(role, name))
        return len(digests)

    def _registered(self, role: str, name: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if not self.r.hexists(ks.OWNERS if role == "owner" else ks.REQUESTERS, name):
            raise NotFound(name)

    def revoke(self, role: str, name: str, actor: str = "operator") -> int:
        """Invalidate every token of ``role`` ``name`` at once (audited); how many."""
        self._registered(role, name)
        n = self._drop_tokens(role, name)
        self.audit.append(
            "operator_action", actor, {"action": f"{role}_revoked", role: name, "tokens": n}
        )
        return n

    def rotate(self, role: str, name: str, actor: str = "operator") -> str:
        """Replace ``role`` ``name``'s tokens with a new one (audited); the new token."""
        self._registered(role, name)
        n = self._drop_tokens(role, name)
        token = self._token(role, name)
        self.audit.append(
            "operator_action", actor, {"action": f"{role}_rotated", role: name, "revoked": n}
        )
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
        demand: str | None = None,
        fan_out: bool = True,
        signed: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Check policy and the daily limit, record, and (unless ``fan_out`` is False,
        when the caller runs :meth:`fan_out` later) match and ask owners.

        Returns what the requester may know: the same shape and size whatever matched.
        """
        req = self.requester(requester)
        request_id = "req-" + secrets.token_hex(8)
        record = {
            "id": request_id,
            "requester": requester,
            "org": req.get("org", requester),
            "lat": lat,
            "lon": lon,
            "radius_m": radius_m,
            "start": start,
            "end": end,
            "reason": reason,
            "case_ref": case_ref,
            "basis": basis,
            "demand": demand,
            "created": self.clock(),
        }
        if signed is not None:
            # Checked here so a relay that stores it promises only what the requester
            # signed; owners check it again themselves (the relay is not trusted for it).
            try:
                payload = reqsig.verify_request(signed)
            except CryptoFailure as err:
                raise PolicyRefusal(str(err)) from None
            wrong = reqsig.matches(payload, record)
            if payload["box_public"] != req["box_public"]:
                # Owners seal to the signed key and the relay forwards only approvals for
                # the registered one: a mismatch could never be released, so say it now.
                wrong.append("box_public (not the key registered for you)")
            if wrong:
                raise PolicyRefusal(f"the signed request differs in {', '.join(wrong)}")
            record["signed_request"] = signed
            record["signed_request_hash"] = reqsig.request_hash(signed)
        try:
            self._check_policy(record)
            self._count(record["org"])
        except PolicyRefusal as err:
            record.update(status="refused", refusal=str(err))
            self.r.set(ks.request(request_id), json.dumps(record))
            self.audit.append(
                "request_refused",
                requester,
                {k: v for k, v in record.items() if k != "signed_request"},  # as for "request"
            )
            return {"id": request_id, "status": "refused", "reason": str(err)}
        record["status"] = "accepted"
        self.r.set(ks.request(request_id), json.dumps(record))
        self.r.zadd(ks.REQUESTS, {request_id: record["created"]})
        # Until fan_out has run, the request waits here (so a crash loses no request).
        self.r.zadd(ks.FANOUT_PENDING, {request_id: record["created"]})
        if fan_out:
            self.fan_out(request_id)
        # Deliberately nothing about how many homes matched.
        return {"id": request_id, "status": "accepted"}

    def fan_out(self, request_id: str) -> None:
        """Match an accepted request, ask each owner, and put the request on the record
        with a commitment to its padded ask set (one audit entry, whatever matched).

        Runs once per request: it claims the request from the pending set first, and
        puts it back if it fails (see :meth:`fan_out_due`)."""
        if not self.r.zrem(ks.FANOUT_PENDING, request_id):
            return  # done already, or being done
        try:
            self._fan_out(request_id)
        except BaseException:
            self.r.zadd(ks.FANOUT_PENDING, {request_id: self.clock()})
            raise

    def fan_out_due(self, older_than_s: float = 60.0) -> int:
        """Fan out requests whose deferred fan-out never ran (the API stopped); how many."""
        due = self.r.zrangebyscore(ks.FANOUT_PENDING, "-inf", self.clock() - older_than_s)
        for request_id in due:
            self.fan_out(request_id.decode())
        return len(due)

    def _fan_out(self, request_id: str) -> None:
        record = self.request(request_id)
        from_bystander = record.get("kind") == "bystander"
        now = self.clock()
        if from_bystander:
            req = {"kind": "bystander", "box_public": record.get("box_public") or ""}
            # The request's own deadline (what the bystander was told), not fan-out time
            # plus a month: one deadline per request, whenever matching ran.
            expires = float(record["deadline"])
        else:
            req = self.requester(record["requester"])
            expires = now + ASK_TTL_S
        lat, lon, radius_m = record["lat"], record["lon"], record["radius_m"]
        clips = self.index.clips(
            since=record["start"], until=record["end"], near=Near(lat, lon, radius_m)
        )
        by_device: dict[str, list[str]] = {}
        for c in clips:  # already in the window: the index is by start time
            by_device.setdefault(c["device"], []).append(c["clip_id"])
        asks: list[Ask] = []
        for device, clip_ids in sorted(by_device.items()):
            info = self.index.device(device) or {}
            owner = info.get("owner")
            if not owner or info.get("revoked", "0") != "0":
                continue
            if from_bystander and not self._owner_has_room(owner):
                continue
            asks.append(
                Ask(
                    id="ask-" + secrets.token_hex(8),
                    request_id=request_id,
                    owner=owner,
                    device=device,
                    clip_ids=sorted(clip_ids),
                    requester=record["requester"],
                    requester_kind=req["kind"],
                    requester_key=req["box_public"],
                    reason=record["reason"],
                    case_ref=record["case_ref"],
                    basis=record["basis"],
                    center=(lat, lon),
                    radius_m=radius_m,
                    start=record["start"],
                    end=record["end"],
                    created=now,
                    expires=expires,
                    legal_demands=[self._demand(record["demand"])] if record["demand"] else [],
                    signed_request=record.get("signed_request"),
                    bystander=self._bystander_part(record, expires) if from_bystander else None,
                )
            )
        root, size, proofs = askset.commit(
            [
                {
                    "ask": a.id,
                    "request": request_id,
                    "owner": a.owner,
                    "device": a.device,
                    "clip_ids": a.clip_ids,
                }
                for a in asks
            ]
        )
        for ask in asks:
            ask.commitment = proofs[ask.id]
            self._save_ask(ask)
            self.r.zadd(ks.owner_asks(ask.owner), {ask.id: now})
            self.r.zadd(ks.ASKS_PENDING, {ask.id: ask.expires})
            self.r.rpush(ks.request_asks(request_id), ask.id)
            if ask.bystander and ask.bystander["remind_at"] is not None:
                self.r.zadd(ks.BYSTANDER_REMINDERS, {ask.id: ask.bystander["remind_at"]})
        if from_bystander:
            self.audit.append(
                "bystander_request",
                "bystander",
                {**self._bystander_public(record), "asks_root": root, "asks_size": size},
            )
            return
        # The hash stands for the signed request on the record (the requester checks it
        # against its own); the signed bytes themselves go only to the asked owners.
        public = {k: v for k, v in record.items() if k not in ("status", "signed_request")}
        self.audit.append(
            "request", record["requester"], {**public, "asks_root": root, "asks_size": size}
        )

    def _day_key(self, org: str) -> str:
        return ks.requests_today(org, time.strftime("%Y-%m-%d", time.gmtime(self.clock())))

    def _check_policy(self, r: dict[str, Any]) -> None:
        p = self.policy()
        if r["basis"] not in BASES:
            raise PolicyRefusal(f"legal basis must be one of {', '.join(BASES)}")
        if not visible(str(r["case_ref"])):
            raise PolicyRefusal("a case reference of visible characters is required")
        if not visible(str(r["reason"])):
            raise PolicyRefusal("a reason of visible characters is required")
        if r["basis"] == "legal-demand":
            on_file = r["demand"] and self.r.hget(ks.LEGAL_DEMANDS, r["demand"])
            if not on_file or json.loads(on_file)["org"] != r["org"]:
                raise PolicyRefusal(
                    "basis legal-demand needs a demand on file for your organisation"
                )
        elif r["demand"]:
            raise PolicyRefusal("a demand is named only with basis legal-demand")
        self._check_place_and_time(r, p, p["max_window_s"])

    def _count(self, org: str) -> None:
        """Count the request against its organisation's day, atomically, or refuse it."""
        limit = int(self.policy()["max_per_day"])
        if not self.r.eval(ks.LIMIT_LUA, 1, self._day_key(org), limit, 2 * 86400):
            raise PolicyRefusal(f"at most {limit} requests per organisation per day")

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
            # No request id on the record: counting an id's decisions and expiries would
            # say how many homes it reached.  The ask id is random and public nowhere else.
            if ask.bystander is not None:
                # Not on the record one by one: an entry per unanswered ask, on the
                # deadline the bystander knows, would tell them a home was asked (and
                # how many).  The request's expiry is logged for every request alike
                # (expire_due), whatever it matched.
                self.r.zrem(ks.BYSTANDER_REMINDERS, ask.id)
            else:
                self.audit.append("ask_expired", "relay", {"ask": ask.id})
        return ask

    def asks_for(self, owner: str) -> list[Ask]:
        self.fan_out_due()
        self.remind_due()
        ids = [i.decode() for i in self.r.zrange(ks.owner_asks(owner), 0, -1)]
        return [self.ask(i) for i in ids]

    def deny(self, owner: str, ask_id: str) -> Ask:
        ask = self._pending(owner, ask_id)
        if ask.bystander is not None:
            raise PolicyRefusal("a bystander's ask is declined with a reason (answer)", "policy")
        ask.status = "denied"
        self._save_ask(ask)
        self.r.zrem(ks.ASKS_PENDING, ask.id)
        self.audit.append("decision", owner, {"ask": ask.id, "decision": "deny"})
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
        approval = self._verified(owner, signed_b64, Approval, ask.device)
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
        if ask.bystander is not None:
            if "copy" not in bys.ANSWERS[ask.bystander["kind"]]:
                raise PolicyRefusal("this bystander did not ask for a copy", "policy")
            self._answered(ask, "copy", "approved", {"clips": payload["clip_ids"]})
            return ask, payload
        ask.status = "approved"
        self._save_ask(ask)
        self.r.zrem(ks.ASKS_PENDING, ask.id)
        self.r.rpush(ks.request_approved(ask.request_id), ask.id)
        self.audit.append(
            "decision",
            owner,
            {
                "ask": ask.id,
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
        # Only the approved asks: reading every ask would make the time of a status
        # grow with the homes asked.
        for ask_id in self.r.lrange(ks.request_approved(request_id), 0, -1):
            ask = self.ask(ask_id.decode())
            if ask.status != "approved":
                continue
            for _field, raw in self.r.hscan_iter(
                ks.device_released(ask.device), match=ks.released_match(request_id)
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

    # ------------------------------------------------------------ owner's own viewing

    def held_masks(self, owner: str, device: str) -> dict[str, Any]:
        """What ``owner``'s doorbell last announced in force (``masks_applied``):
        ``{"device", "hash", "update"}``, ``hash`` and ``update`` None when it holds no
        owner set or has announced nothing yet.  The relay only relays it: clients check
        the owner's signature, and the doorbell refuses a change built on another set."""
        self._owned(owner, device)
        raw = self.r.get(ks.device_masks(device))
        kept = json.loads(raw) if raw else {}
        return {"device": device, "hash": kept.get("hash"), "update": kept.get("update")}

    def _owned(self, owner: str, device: str) -> None:
        """NotFound unless ``device`` is ``owner``'s (someone else's looks like none)."""
        info = self.index.device(device)
        if info is None or info.get("owner") != owner:
            raise NotFound(device)

    def _verified(
        self, owner: str, signed_b64: str, kind: type[_D], device: str | None = None
    ) -> _D:
        """``owner``'s signed decision of ``kind`` (for ``device``), checked with the key
        registered for them, or PolicyRefusal with the check's public code."""
        try:
            return verify_decision(
                signed_b64,
                unb64(self.owner(owner)["sign_public"]),
                kind,
                now=self.clock(),
                device=device,
            )
        except DecisionRefused as err:
            what = _DECISION_NAMES.get(kind, "decision")
            raise PolicyRefusal(f"the {what} is refused: {err}", err.code) from None

    def owner_clips(self, owner: str, device: str) -> list[dict[str, Any]]:
        """The clips of ``owner``'s doorbell ``device`` (NotFound if it is not theirs)."""
        self._owned(owner, device)
        return self.index.clips(device=device)

    def view(self, owner: str, signed_b64: str) -> Approval:
        """An owner's release to themselves: the same signed approval and the same
        doorbell path as for a requester, with the owner's own key as recipient."""
        approval = self._verified(owner, signed_b64, Approval)
        self._owned(owner, approval.device)
        if approval.requester_key != self.owner(owner)["box_public"]:
            raise PolicyRefusal("a view is released to the owner's own key only")
        if not approval.request_id.startswith("view-"):
            raise PolicyRefusal("a view's request id starts with view-")
        known = {c["clip_id"] for c in self.index.clips(device=approval.device)}
        if not set(approval.clip_ids) <= known:
            raise PolicyRefusal("the approval names clips this doorbell does not have")
        record = {
            "id": approval.request_id,
            "requester": owner,
            "kind": "view",
            "device": approval.device,
            "status": "accepted",
            "created": self.clock(),
        }
        if not self.r.set(ks.request(approval.request_id), json.dumps(record), nx=True):
            raise PolicyRefusal("this request id is taken")
        self.audit.append(
            "operator_action",
            owner,
            {"action": "owner_view", "device": approval.device, "clips": approval.clip_ids},
        )
        return approval

    def view_released(self, owner: str, request_id: str) -> list[dict[str, Any]]:
        record = self.request(request_id)
        if record.get("kind") != "view" or record["requester"] != owner:
            raise NotFound(request_id)
        device = record["device"]
        out = []
        for _field, raw in self.r.hscan_iter(
            ks.device_released(device), match=ks.released_match(request_id)
        ):
            msg = json.loads(raw)
            out.append(
                {
                    "device": device,
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
        self._owned(owner, device)
        deletion = self._verified(owner, signed_b64, Deletion, device)
        if deletion.clip_id != clip_id:
            raise PolicyRefusal("the signed deletion is for another clip", "wrong_clips")
        self.audit.append(
            "operator_action",
            owner,
            {"action": "deletion_requested", "device": device, "clip": clip_id},
        )

    def check_masks(self, owner: str, device: str, signed_b64: str) -> tuple[MaskUpdate, str]:
        """An owner may set the masks only of their own doorbell, with a valid signed
        update; returns it and its :func:`~protocol.decisions.decision_hash`.

        On the public record: that a doorbell's owner changed its masks, the update's
        hash, how many masks and when issued; never the polygons (they show the home),
        and the device and ``reason`` sealed like every other owner entry.  A refused
        update is on the record too (``masks_refused``, with a public code)."""
        try:
            return self._check_masks(owner, device, signed_b64)
        except (PolicyRefusal, NotFound) as err:
            self._refused("masks_refused", owner, {"device": device[:100]}, err)
            raise

    def _check_masks(
        self,
        owner: str,
        device: str,
        signed_b64: str,
        must_hold: Callable[[MaskUpdate], None] | None = None,
    ) -> tuple[MaskUpdate, str]:
        self._owned(owner, device)
        update = self._verified(owner, signed_b64, MaskUpdate, device)
        if must_hold is not None:
            must_hold(update)  # before the record says the masks changed
        digest = decision_hash(signed_b64)
        data: dict[str, Any] = {
            "device": device,
            "hash": digest,
            "masks": len(update.masks),
            "issued": update.issued,
        }
        if update.reason is not None:
            data["reason"] = update.reason
        self.audit.append("masks_changed", owner, data)
        return update, digest

    def expire_due(self, now: float | None = None) -> int:
        """Mark every pending ask past its 72 h (a bystander's: its deadline) as expired
        (audited), after reminding owners whose bystander deadline is near; how many."""
        now = self.clock() if now is None else now
        self.fan_out_due()
        self.remind_due(now)
        due = [a.decode() for a in self.r.zrangebyscore(ks.ASKS_PENDING, "-inf", now)]
        n = 0
        for ask_id in due:
            if self.ask(ask_id).status == "expired":
                n += 1
            self.r.zrem(ks.ASKS_PENDING, ask_id)
        for raw in self.r.zrangebyscore(ks.BYSTANDER_REQUESTS_DUE, "-inf", now):
            if self.r.zrem(ks.BYSTANDER_REQUESTS_DUE, raw):  # else another process logs it
                self.audit.append("bystander_expired", "relay", {"request": raw.decode()})
        return n

    def file_legal_demand(
        self, docket: str, authority: str, org: str, actor: str = "operator"
    ) -> dict[str, Any]:
        """Put a legal demand on file, so that ``org`` may name it with basis legal-demand."""
        if not visible(docket) or not visible(authority):
            raise ValueError("docket and authority need visible characters")
        demand = {"docket": docket, "authority": authority, "org": org, "at": self.clock()}
        if not self.r.hsetnx(ks.LEGAL_DEMANDS, docket, json.dumps(demand)):
            raise ValueError(f"demand {docket!r} is on file already")
        self.audit.append("legal_demand", actor, demand)
        return demand

    def _demand(self, docket: str) -> dict[str, Any]:
        raw = self.r.hget(ks.LEGAL_DEMANDS, docket)
        d = json.loads(raw) if raw else {"docket": docket, "authority": "?"}
        return {
            **d,
            "note": "the relay holds no keys: it can hand over metadata and ciphertext only",
        }

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

    # ------------------------------------------------------------ bystanders' requests

    def _rate(self, what: str, source: str, limit: int) -> None:
        """Count one ``what`` from ``source`` in the current window, or raise RateLimited."""
        window_s = self.bystander.rate_window_s
        now = self.clock()
        n = int(now // window_s)
        key = ks.bystander_rate(what, rate_source(source), n)
        if not self.r.eval(ks.LIMIT_LUA, 1, key, limit, 2 * window_s):
            self.r.hincrby(ks.BYSTANDER_REFUSED, "rate_limited", 1)
            raise RateLimited(max(1, math.ceil((n + 1) * window_s - now)))

    def _owner_has_room(self, owner: str) -> bool:
        """Count one bystander's ask to ``owner`` today, or say the day's are used up
        (counted privately as ``owner_capped``; the requester and the log see nothing)."""
        day = time.strftime("%Y-%m-%d", time.gmtime(self.clock()))
        key = ks.bystander_owner_day(owner, day)
        if self.r.eval(ks.LIMIT_LUA, 1, key, self.bystander.asks_per_owner_per_day, 2 * 86400):
            return True
        self.r.hincrby(ks.BYSTANDER_REFUSED, "owner_capped", 1)
        return False

    def bystander_challenge(self, source: str) -> dict[str, Any]:
        """A new single-use proof-of-work challenge for ``source`` (a client address).

        >>> engine.bystander_challenge("198.51.100.7")  # doctest: +SKIP
        {'challenge': '9f…', 'difficulty': 20, 'expires': 1780000600.0}
        """
        self._rate("challenge", source, self.bystander.challenges_per_window)
        challenge = secrets.token_hex(16)
        difficulty = self.bystander.difficulty
        ttl = self.bystander.challenge_ttl_s
        self.r.set(ks.bystander_challenge(challenge), difficulty, ex=ttl)
        return {"challenge": challenge, "difficulty": difficulty, "expires": self.clock() + ttl}

    def _claim_work(self, challenge: str, nonce: str) -> None:
        """Use ``challenge`` up (whatever the nonce: a guess costs a challenge) and check it."""
        if not isinstance(challenge, str) or len(challenge) > 64:
            raise BadWork("no such challenge")
        stored = self.r.getdel(ks.bystander_challenge(challenge))
        if stored is None:
            self.r.hincrby(ks.BYSTANDER_REFUSED, "bad_challenge", 1)
            raise BadWork("the challenge is unknown, expired or used already: get a new one")
        if not bys.check_work(challenge, nonce, int(stored)):
            self.r.hincrby(ks.BYSTANDER_REFUSED, "bad_work", 1)
            raise BadWork(f"the nonce does not solve the challenge at {int(stored)} bits")

    def count_bystander(self, source: str) -> None:
        """Count one bystander request from ``source``, or raise RateLimited."""
        self._rate("request", source, self.bystander.requests_per_window)

    def file_bystander(
        self, source: str, body: dict[str, Any], fan_out: bool = True, counted: bool = False
    ) -> dict[str, Any]:
        """File a bystander's request from client address ``source``.

        ``body``: lat, lon, radius_m, start, end, kind, description, box_public (for a
        copy), polygon (for stop_filming), challenge, nonce.  Raises RateLimited,
        BadWork (no owner, no log entry) or PolicyRefusal (logged, no owner).  Returns
        the same fields whatever matched: ``id``, ``status``, ``status_token``,
        ``deadline``.  ``counted``: the caller ran :meth:`count_bystander` already.
        """
        if not counted:
            self.count_bystander(source)
        self._claim_work(body.get("challenge", ""), body.get("nonce", ""))
        request_id = "bys-" + secrets.token_hex(8)
        token = secrets.token_urlsafe(32)
        now = self.clock()
        record = {
            "id": request_id,
            "kind": "bystander",
            "requester": "bystander",
            "bystander_kind": body["kind"],
            "lat": body["lat"],
            "lon": body["lon"],
            "radius_m": body["radius_m"],
            "start": body["start"],
            "end": body["end"],
            "reason": body["description"],
            "case_ref": "",
            "basis": "bystander",
            "demand": None,
            "box_public": body.get("box_public") or "",
            "polygon": body.get("polygon"),
            "token_hash": token_hash(token),
            "created": now,
            # Whole seconds: the answer's length must not vary from request to request.
            "deadline": float(int(now + self.bystander.deadline_days * 86400)),
        }
        try:
            self._check_bystander(record)
        except PolicyRefusal as err:
            # Refused after a valid proof of work: on the record (without the text the
            # bystander wrote, or the place), never shown to an owner.
            self.audit.append(
                "bystander_refused",
                "bystander",
                {**self._bystander_public(record), "refusal": str(err)},
            )
            raise
        record["status"] = "accepted"
        self.r.set(ks.request(request_id), json.dumps(record))
        self.r.zadd(ks.REQUESTS, {request_id: now})
        self.r.zadd(ks.FANOUT_PENDING, {request_id: now})
        # The reminder and the expiry go on the record for every accepted request, on
        # its own schedule, before and whatever matching finds (see remind_due).
        self.r.zadd(ks.BYSTANDER_REQUESTS_DUE, {request_id: record["deadline"]})
        remind = self.bystander.reminder_days * 86400
        if remind > 0:
            self.r.zadd(ks.BYSTANDER_REQUESTS_REMIND, {request_id: record["deadline"] - remind})
        if fan_out:
            self.fan_out(request_id)
        return {
            "id": request_id,
            "status": "accepted",
            "status_token": token,
            "deadline": record["deadline"],
        }

    @staticmethod
    def _bystander_public(record: dict[str, Any]) -> dict[str, Any]:
        """What the log says of a bystander's request (lat/lon are sealed by the log)."""
        return {
            "id": record["id"],
            "kind": record["bystander_kind"],
            "lat": record["lat"],
            "lon": record["lon"],
            "radius_m": record["radius_m"],
            "start": record["start"],
            "end": record["end"],
            "created": record["created"],
            "deadline": record["deadline"],
        }

    def _bystander_part(self, record: dict[str, Any], deadline: float) -> dict[str, Any]:
        remind = self.bystander.reminder_days * 86400
        return {
            "kind": record["bystander_kind"],
            "description": record["reason"],
            "polygon": record.get("polygon"),
            "remind_at": deadline - remind if remind > 0 else None,
            "reminded_at": None,
            "answer": None,
        }

    def _check_bystander(self, r: dict[str, Any]) -> None:
        p = self.policy()
        if r["bystander_kind"] not in bys.KINDS:
            raise PolicyRefusal(f"kind must be one of {', '.join(bys.KINDS)}")
        desc = r["reason"]
        if not isinstance(desc, str) or not visible(desc) or len(desc) > bys.MAX_DESCRIPTION:
            raise PolicyRefusal(
                f"a description of visible characters (at most {bys.MAX_DESCRIPTION}) is required"
            )
        if r["bystander_kind"] == "copy":
            try:
                ok = len(unb64(r["box_public"])) == 32
            except (ValueError, TypeError):
                ok = False
            if not ok:
                raise PolicyRefusal("a copy needs box_public: a base64 X25519 public key")
        if r["bystander_kind"] == "stop_filming":
            why = bys.polygon_problem(r["polygon"])
            if why is not None:
                # The owner's mask rule: what is filed here, an owner can sign.
                raise PolicyRefusal(
                    f"stop_filming needs polygon: a simple polygon of {bys.MAX_POLYGON_POINTS}"
                    f" points at most, in fractions of the frame ({why})"
                )
        if r["bystander_kind"] != "stop_filming" and r["polygon"] is not None:
            raise PolicyRefusal("a polygon is proposed only with kind stop_filming")
        self._check_place_and_time(r, p, p["bystander_max_window_s"])

    def _check_place_and_time(self, r: dict[str, Any], p: dict[str, float], longest: float) -> None:
        """The bounds every request shares, an agency's or a bystander's: a small place
        on Earth and a short window in the past that doorbells still keep."""
        now = self.clock()
        if not all(math.isfinite(r[k]) for k in ("lat", "lon", "radius_m", "start", "end")):
            raise PolicyRefusal("numbers must be finite")
        if not p["min_radius_m"] <= r["radius_m"] <= p["max_radius_m"]:
            raise PolicyRefusal(
                f"radius must be within {p['min_radius_m']:g}..{p['max_radius_m']:g} m"
            )
        if not 0 < r["end"] - r["start"] <= longest:
            raise PolicyRefusal(f"the window must be within {longest / 3600:g} h")
        if r["end"] > now:
            raise PolicyRefusal("the window must not reach into the future")
        if r["start"] < now - p["retention_s"]:
            raise PolicyRefusal(
                f"the window must lie within the last {p['retention_s'] / 86400:g} days"
            )
        if not (-85 <= r["lat"] <= 85 and -180 <= r["lon"] <= 180):
            raise PolicyRefusal("the centre is not a place on Earth")

    def bystander_status(self, request_id: str, token: str) -> dict[str, Any]:
        """What the bystander holding ``token`` may know: the answers given so far,
        without devices, owners or how many homes were asked (NotFound on a bad token)."""
        try:
            record = self.request(request_id)
        except NotFound:
            record = {}
        good = record.get("kind") == "bystander" and secrets.compare_digest(
            record.get("token_hash", ""), token_hash(token)
        )
        if not good:
            raise NotFound(request_id)  # a wrong token and no request look the same
        answers = []
        # Only the answered asks are read: the work (and so the time) of a status
        # must not grow with asks still pending, which would count homes.
        for raw_id in self.r.lrange(ks.bystander_answers(request_id), 0, -1):
            ask = self.ask(raw_id.decode())
            answer = (ask.bystander or {}).get("answer")
            if not answer:
                continue
            out: dict[str, Any] = {"outcome": answer["answer"], "at": answer["at"]}
            if answer["answer"] == "copy":
                out["released"] = self._released_of(ask)
            elif answer["answer"] == "erase":
                clips = answer.get("clips", [])
                out["clips"] = len(clips)
                # The owner's answer orders the erasure; a clip is erased once the
                # doorbell said so (its ``deleted`` message drops the clip's record).
                out["erased"] = sum(
                    1 for c in clips if not self.r.exists(ks.device_clip(ask.device, c))
                )
            elif answer["answer"] == "decline":
                out["reason"] = answer["reason"]
            answers.append(out)
        answers.sort(key=lambda a: a["at"])
        return {
            "id": request_id,
            "kind": record["bystander_kind"],
            "status": "open" if self.clock() < record["deadline"] else "closed",
            # Whole seconds, as the deadline: the body's length says nothing either.
            "created": float(int(record["created"])),
            "deadline": record["deadline"],
            "answers": answers,
        }

    def _released_of(self, ask: Ask) -> list[dict[str, Any]]:
        out = []
        for _field, raw in self.r.hscan_iter(
            ks.device_released(ask.device), match=ks.released_match(ask.request_id)
        ):
            msg = json.loads(raw)
            out.append(
                {
                    "device": ask.device,  # for the download link; the API drops it
                    "clip_id": msg["clip_id"],
                    "wrapped_key": msg["wrapped_key"],
                    "sha256": msg["sha256"],
                }
            )
        return out

    def _answered(self, ask: Ask, answer: str, status: str, extra: dict[str, Any]) -> None:
        """Record an owner's answer to a bystander's ask, and put it on the record with
        the time it took (in whole hours: enough for the report, no finer a timestamp)."""
        assert ask.bystander is not None
        now = self.clock()
        ask.status = status
        ask.bystander["answer"] = {"answer": answer, "at": now, **extra}
        self._save_ask(ask)
        self.r.zrem(ks.ASKS_PENDING, ask.id)
        self.r.zrem(ks.BYSTANDER_REMINDERS, ask.id)
        self.r.rpush(ks.bystander_answers(ask.request_id), ask.id)
        public = {k: v for k, v in extra.items() if k in ("clips", "reason")}
        self.audit.append(
            "bystander_answer",
            ask.owner,
            {
                "ask": ask.id,
                "answer": answer,
                **public,
                "after_h": int((now - ask.created) // 3600),
            },
        )

    def _bystander_pending(self, owner: str, ask_id: str, answer: str) -> Ask:
        ask = self._pending(owner, ask_id)
        if ask.bystander is None:
            raise PolicyRefusal("not a bystander's ask: approve or deny it", "policy")
        if answer not in bys.ANSWERS[ask.bystander["kind"]]:
            allowed = ", ".join(bys.ANSWERS[ask.bystander["kind"]])
            raise PolicyRefusal(f"a {ask.bystander['kind']} request is answered {allowed}")
        return ask

    def bystander_decline(self, owner: str, ask_id: str, reason: str) -> Ask:
        if reason not in bys.DECLINE_REASONS:
            raise PolicyRefusal(f"the reason must be one of {', '.join(bys.DECLINE_REASONS)}")
        ask = self._bystander_pending(owner, ask_id, "decline")
        self._answered(ask, "decline", "denied", {"reason": reason})
        return ask

    def bystander_accept(
        self, owner: str, ask_id: str, signed_masks: str
    ) -> tuple[Ask, MaskUpdate, str]:
        """Accept a proposed mask with the owner's signed :class:`MaskUpdate` of the
        ask's doorbell that holds exactly the proposed polygon (as
        :func:`~protocol.decisions.mask_points` rounds it).  Checked as every mask update
        (:meth:`check_masks`), then the answer is recorded; returns the ask, the update
        and its hash, for the caller to forward.  Nothing is recorded if it fails."""
        ask = self._bystander_pending(owner, ask_id, "accept")
        assert ask.bystander is not None
        proposed = mask_points(ask.bystander["polygon"])

        def holds_the_proposal(update: MaskUpdate) -> None:
            if not any(m.points == proposed for m in update.masks):
                raise PolicyRefusal(
                    "the signed mask update does not hold the proposed polygon", "policy"
                )

        try:
            update, digest = self._check_masks(owner, ask.device, signed_masks, holds_the_proposal)
        except (PolicyRefusal, NotFound) as err:
            self._refused("masks_refused", owner, {"device": ask.device[:100]}, err)
            raise
        self._answered(
            ask, "accept", "accepted", {"polygon": ask.bystander["polygon"], "masks_hash": digest}
        )
        return ask, update, digest

    def bystander_erase(
        self, owner: str, ask_id: str, deletions: dict[str, str]
    ) -> tuple[Ask, list[str]]:
        """Check the owner's signed ``Deletion`` of each clip (clip id → signature) and
        record the answer.  Returns the ask and the ids of other requests copies of
        these clips were released to before (so the owner can follow up)."""
        ask = self._bystander_pending(owner, ask_id, "erase")
        if not deletions or not set(deletions) <= set(ask.clip_ids):
            raise PolicyRefusal(
                "sign a Deletion for each clip to erase, of this ask", "wrong_clips"
            )
        for clip_id, signature in sorted(deletions.items()):
            self.check_deletion(owner, ask.device, clip_id, signature)
        before: set[str] = set()
        for clip_id in deletions:
            for fld, _raw in self.r.hscan_iter(
                ks.device_released(ask.device), match=ks.released_clip_match(clip_id)
            ):
                other = ks.released_request(fld.decode())
                if other != ask.request_id and not other.startswith("view-"):
                    before.add(other)
        self._answered(
            ask, "erase", "erased", {"clips": sorted(deletions), "released_before": sorted(before)}
        )
        return ask, sorted(before)

    def remind_due(self, now: float | None = None) -> int:
        """Remind owners of bystander asks whose deadline is near: once each, on the
        doorbell's live channel (the web app and Web Push show it); how many.

        The record gets one ``bystander_reminder`` per accepted request, asked a home
        or not: one per ask would tell the bystander (who knows their deadline) that a
        home was asked, and how many."""
        now = self.clock() if now is None else now
        for raw in self.r.zrangebyscore(ks.BYSTANDER_REQUESTS_REMIND, "-inf", now):
            if not self.r.zrem(ks.BYSTANDER_REQUESTS_REMIND, raw):
                continue  # another process logs it
            deadline = self.r.zscore(ks.BYSTANDER_REQUESTS_DUE, raw)
            data: dict[str, Any] = {"request": raw.decode()}
            if deadline is not None:
                data["deadline"] = deadline
            self.audit.append("bystander_reminder", "relay", data)
        n = 0
        for raw in self.r.zrangebyscore(ks.BYSTANDER_REMINDERS, "-inf", now):
            ask_id = raw.decode()
            if not self.r.zrem(ks.BYSTANDER_REMINDERS, ask_id):
                continue  # another process reminds
            ask = self.ask(ask_id)
            if ask.status != "pending" or ask.bystander is None:
                continue
            ask.bystander["reminded_at"] = now
            self._save_ask(ask)
            # On the doorbell's live channel: the owner's open page and Web Push hear it.
            reminder = {
                "kind": "reminder",
                "id": f"reminder-{ask.id}",
                "device": ask.device,
                "ask": ask.id,
                "deadline": ask.expires,
                "at": now,
            }
            self.r.publish(ks.live_channel(ask.device), json.dumps(reminder))
            n += 1
        return n
