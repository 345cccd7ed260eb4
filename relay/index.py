"""The relay's index in Redis: devices, clip metadata, events, dead letters.

Every per-device key carries the device id as a hash tag (``dev:{front-door}:…``),
so each message touches one Redis Cluster slot and the same code runs on one
server or a cluster.  Indexing a message is one Lua script that first claims the
message id (``SET NX`` with a TTL): a redelivered message is counted as a
duplicate and changes nothing else.

The relay holds metadata only: clip ids, times, sizes, hashes; never imagery.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from protocol import Clip, CommandRefused, Deleted, Event, Message, Released, Snapshot, Status
from relay import keyspace as ks
from relay.keyspace import (
    DEAD_LETTERS,
    DEVICES,
    GEO,
    INDEX_LUA,
    SNAPSHOT_TTL_S,
    STATS,
    WORKERS,
    live_channel,
)

SEEN_TTL_S = 14 * 86400  # far longer than any redelivery can take
DEAD_LETTER_MAXLEN = 100_000
WORKER_ALIVE_S = 15.0
WORKER_FORGET_S = 3600.0
"""A worker silent this long is forgotten (no longer expected; ``relay status`` drops it)."""
DUPLICATE, NEW, CONFLICT = 0, 1, 2
"""What indexing a message did (the index script's answer)."""

# Re-exported: callers that only need a key name get it from the keyspace.
__all__ = ["DEAD_LETTERS", "DEVICES", "GEO", "STATS", "WORKERS"]


class DeviceExists(ValueError):
    pass


class UnknownDevice(KeyError):
    pass


@dataclass(frozen=True)
class Near:
    lat: float
    lon: float
    radius_m: float


def content_hash(msg: Message) -> str:
    """What the seen-marker holds: a second message with this id must match it.

    Fields left at their defaults are left out, so a relay upgrade that adds an
    optional field does not turn a redelivery that spans it into a "conflict".
    """
    return hashlib.sha256(msg.model_dump_json(exclude_defaults=True).encode()).hexdigest()[:32]


def _script_args(msg: Message) -> tuple[list[str], list[Any]]:
    keys, args = _kind_args(msg)
    # The kinds' own arguments take ARGV 1-7 (an eighth is the live channel); the
    # content hash, the status warning and the live channel follow, in that order.
    live = args[7] if len(args) > 7 else ""
    args = args[:7] + [""] * (7 - len(args[:7]))
    warning = (msg.warning or "") if isinstance(msg, Status) else ""
    return keys, [*args, content_hash(msg), warning, live]


def _kind_args(msg: Message) -> tuple[list[str], list[Any]]:
    d = msg.device
    ts = msg.ts.timestamp()
    keys = [ks.seen(d, msg.id), ks.device_stats(d), ks.device_info(d)]
    if isinstance(msg, Clip):
        return [*keys, ks.device_clips(d), ks.device_clip(d, msg.clip_id)], [
            "clip",
            SEEN_TTL_S,
            msg.start.timestamp(),
            msg.model_dump_json(),
            msg.clip_id,
        ]
    if isinstance(msg, Event):
        return [*keys, ks.device_events(d), ""], [
            "event",
            SEEN_TTL_S,
            msg.at.timestamp(),
            msg.model_dump_json(),
            "",
            "",
            "",
            live_channel(d),
        ]
    if isinstance(msg, Snapshot):
        return [*keys, "", ks.device_snapshot(d, msg.ring_id)], [
            "snapshot",
            SEEN_TTL_S,
            msg.at.timestamp(),
            msg.model_dump_json(),
            "",
            SNAPSHOT_TTL_S,
            "",
            live_channel(d),
        ]
    if isinstance(msg, Status):
        return [*keys, "", ""], [
            "status",
            SEEN_TTL_S,
            ts,
            "",
            "",
            "1" if msg.state == "online" else "0",
            msg.firmware,
        ]
    if isinstance(msg, Deleted):
        return [*keys, ks.device_clips(d), ks.device_clip(d, msg.clip_id)], [
            "deleted",
            SEEN_TTL_S,
            ts,
            "",
            msg.clip_id,
        ]
    if isinstance(msg, Released):
        return [*keys, ks.device_released(d), ""], [
            "released",
            SEEN_TTL_S,
            ts,
            msg.model_dump_json(),
            ks.released_field(msg.request_id, msg.clip_id),
        ]
    if isinstance(msg, CommandRefused):  # only remembered as seen: the audit log keeps it
        return [*keys, "", ""], ["refused", SEEN_TTL_S, ts, "", ""]
    raise TypeError(f"the relay does not index {msg.kind} messages")


def is_cluster(client: object) -> bool:
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def node_client(client: redis.Redis, key: str) -> redis.Redis:
    """A plain client for the server that holds ``key``: itself, or its Redis Cluster node.

    Scripts and WATCH/MULTI transactions run there; every key they touch shares
    ``key``'s hash tag, so they never span slots.
    """
    if not is_cluster(client):
        return client
    node = client.get_node_from_key(key)  # type: ignore[attr-defined]
    return client.get_redis_connection(node)  # type: ignore[attr-defined,no-any-return]


class RelayIndex:
    """All the relay's reads and writes of Redis go through here."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._index = client.register_script(INDEX_LUA)

    # ------------------------------------------------------------ ingestion

    def index(self, messages: Sequence[Message]) -> list[bool]:
        """Index ``messages`` in one round trip; True for each that was new."""
        return [c == NEW for c in self.index_outcomes(messages)]

    def index_outcomes(self, messages: Sequence[Message]) -> list[int]:
        """Index ``messages`` in one round trip: NEW, DUPLICATE or CONFLICT for each."""
        if not messages:
            return []
        # Redis Cluster pipelines refuse scripts, so batch per node with a plain
        # pipeline on that node (all of a message's keys share its device's slot).
        batches: dict[int, tuple[redis.Redis, list[int]]] = {}
        calls = []
        for i, msg in enumerate(messages):
            keys, args = _script_args(msg)
            # Empty placeholder keys stay in this device's slot.
            keys = [k or ks.device_unused(msg.device) for k in keys]
            calls.append((keys, args))
            conn = node_client(self.r, keys[0])
            batches.setdefault(id(conn), (conn, []))[1].append(i)
        results: list[int] = [DUPLICATE] * len(messages)
        for conn, indices in batches.values():
            for i, x in zip(
                indices, self._run_scripts(conn, [calls[i] for i in indices]), strict=True
            ):
                results[i] = int(x)
        return results

    def _run_scripts(self, conn: redis.Redis, calls: list[tuple[list[str], list[Any]]]) -> list:
        """EVALSHA each call on one pipeline; load the script only when the server lacks it."""

        def attempt() -> list:
            pipe = conn.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(self._index.sha, len(keys), *keys, *args)
            return pipe.execute()

        try:
            return attempt()
        except redis.exceptions.NoScriptError:
            # A new or restarted server: load once, then again (indexing is idempotent).
            conn.script_load(INDEX_LUA)
            return attempt()

    def dead_letter(
        self, topic: str, payload: bytes, reason: str, detail: str, worker: str
    ) -> None:
        """Keep a bad message with why it was refused; count it."""
        pipe = self.r.pipeline(transaction=False)
        pipe.xadd(
            DEAD_LETTERS,
            {
                "topic": topic[:512],
                "reason": reason,
                "detail": detail[:1024],
                "size": len(payload),
                "payload_b64": base64.b64encode(payload[:4096]).decode(),
                "worker": worker,
                "at": time.time(),
            },
            maxlen=DEAD_LETTER_MAXLEN,
            approximate=True,
        )
        pipe.hincrby(STATS, "dead_letters", 1)
        pipe.hincrby(STATS, f"dead_letters:{reason}", 1)
        pipe.execute()

    def dead_letters(self, count: int = 20) -> list[dict[str, str]]:
        out = []
        for entry_id, fields in self.r.xrevrange(DEAD_LETTERS, count=count):
            row = {k.decode(): v.decode() for k, v in fields.items()}
            row["entry"] = entry_id.decode()
            out.append(row)
        return out

    # ------------------------------------------------------------ devices

    def add_device(self, device: str, owner: str, lat: float, lon: float) -> dict[str, str]:
        info = {
            "owner": owner,
            "lat": str(lat),
            "lon": str(lon),
            "created": str(time.time()),
            "revoked": "0",
        }
        if not self.r.sadd(DEVICES, device):
            raise DeviceExists(device)
        self.r.hset(ks.device_info(device), mapping=info)
        self.r.geoadd(GEO, (lon, lat, device))
        return info

    def revoke_device(self, device: str) -> None:
        if not self.r.sismember(DEVICES, device):
            raise UnknownDevice(device)
        self.r.hset(ks.device_info(device), "revoked", str(time.time()))
        self.r.zrem(GEO, device)

    def device(self, device: str) -> dict[str, Any] | None:
        if not self.r.sismember(DEVICES, device):
            return None
        raw = self.r.hgetall(ks.device_info(device))
        stats = self.r.hgetall(ks.device_stats(device))
        info: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        info["id"] = device
        info["clips"] = int(self.r.zcard(ks.device_clips(device)))
        info["stats"] = {k.decode(): int(v) for k, v in stats.items()}
        return info

    def device_ids(self) -> list[str]:
        return sorted(m.decode() for m in self.r.smembers(DEVICES))

    def devices(self) -> list[dict[str, Any]]:
        return [d for d in (self.device(i) for i in self.device_ids()) if d is not None]

    # ------------------------------------------------------------ queries

    def clips(
        self,
        device: str | None = None,
        since: float | None = None,
        until: float | None = None,
        near: Near | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Clip records, oldest first, filtered by device, time and area."""
        if near is not None:
            found = self.r.geosearch(
                GEO, longitude=near.lon, latitude=near.lat, radius=near.radius_m, unit="m"
            )
            ids: Iterable[str] = [m.decode() for m in found]
            if device is not None:
                ids = [i for i in ids if i == device]
        elif device is not None:
            ids = [device]
        else:
            ids = self.device_ids()
        lo = "-inf" if since is None else since
        hi = "+inf" if until is None else until
        ids = list(ids)
        pipe = self.r.pipeline(transaction=False)
        for d in ids:
            pipe.zrangebyscore(ks.device_clips(d), lo, hi, start=0, num=limit)
        per_device = pipe.execute()
        out: list[dict[str, Any]] = []
        for d, clip_ids in zip(ids, per_device, strict=True):
            if not clip_ids:
                continue
            raw = self.r.mget([ks.device_clip(d, c.decode()) for c in clip_ids])
            out += [json.loads(x) for x in raw if x is not None]
        out.sort(key=lambda c: (c["start"], c["device"], c["clip_id"]))
        return out[:limit]

    def owned_by(self, owner: str) -> list[str]:
        """The ids of ``owner``'s doorbells (not revoked)."""
        out = []
        for d in self.device_ids():
            info = self.r.hmget(ks.device_info(d), ["owner", "revoked"])
            if info[0] is not None and info[0].decode() == owner and info[1] in (None, b"0"):
                out.append(d)
        return out

    def events(self, device: str, limit: int = 50) -> list[dict[str, Any]]:
        """The latest rings and motion of ``device``, newest first; each ring with its
        sealed snapshot (``sealed``) while the relay keeps it."""
        events = [json.loads(x) for x in self.r.zrevrange(ks.device_events(device), 0, limit - 1)]
        rings = [e for e in events if e["type"] == "ring"]
        if rings:
            snaps = self.r.mget([ks.device_snapshot(device, e["id"]) for e in rings])
            for e, snap in zip(rings, snaps, strict=True):
                e["sealed"] = json.loads(snap)["sealed"] if snap else None
        return events

    def counts(self) -> dict[str, int]:
        ids = self.device_ids()
        pipe = self.r.pipeline(transaction=False)
        for d in ids:
            pipe.zcard(ks.device_clips(d))
        clips = sum(pipe.execute()) if ids else 0
        dead = int(self.r.hget(STATS, "dead_letters") or 0)
        return {"devices": len(ids), "clips": clips, "dead_letters": dead}

    # ------------------------------------------------------------ workers

    def heartbeat(self, worker: str, stats: dict[str, Any]) -> None:
        self.r.hset(WORKERS, worker, json.dumps({"at": time.time(), **stats}))

    def workers(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Registered workers and whether each beats; long-silent ones are forgotten."""
        now = time.time() if now is None else now
        out = {}
        for name, raw in self.r.hgetall(WORKERS).items():
            info = json.loads(raw)
            if now - info["at"] > WORKER_FORGET_S:
                self.r.hdel(WORKERS, name)
                continue
            info["alive"] = now - info["at"] < WORKER_ALIVE_S
            out[name.decode()] = info
        return out

    def worker_in_use(self, worker: str) -> str | None:
        """Who else runs a worker of this name now (it would take over its session)."""
        info = self.workers().get(worker)
        if info is None or not info["alive"]:
            return None
        host, pid = info.get("host"), info.get("pid")
        if host == socket.gethostname() and isinstance(pid, int):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None  # its process is gone: a restart, not a second worker
            except PermissionError:
                pass
        return f"pid {pid} on {host}"

    def forget_worker(self, worker: str) -> None:
        self.r.hdel(WORKERS, worker)
