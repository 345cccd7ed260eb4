"""The relay's composition root: one place that turns a config into its services.

The operator CLI and the HTTP API both work through these objects; neither builds a
Redis client, an audit log or a consent engine of its own.

Example::

    relay = Relay(load_relay_config("relay.toml"))
    relay.registry.add("front-door", "alice", 51.5, -0.12)
    relay.engine.file_request(...)
    relay.audit.verify()
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property
from typing import Any

import redis

from relay.audit import AuditLog, load_or_create_key
from relay.config import RelayConfig
from relay.index import RelayIndex


class ServiceError(Exception):
    """A problem the operator must fix; the message is one line."""


class BadSetting(ServiceError):
    """A setting or an argument is wrong (exit 2)."""


class Unavailable(ServiceError):
    """Redis, the broker or a file the relay needs cannot be reached (exit 1)."""


def connect_redis(cfg: RelayConfig) -> redis.Redis:
    """A Redis client (a cluster client with ``redis.cluster``) that answered PING."""
    try:
        if cfg.redis.cluster:
            from redis.cluster import RedisCluster

            r: Any = RedisCluster.from_url(cfg.redis.url)
        else:
            r = redis.Redis.from_url(cfg.redis.url, socket_connect_timeout=3)
    except ValueError as err:
        raise BadSetting(f"redis.url: {err}") from None
    except redis.RedisError as err:
        raise Unavailable(f"cannot reach Redis at {cfg.redis.url}: {err}") from None
    try:
        r.ping()
    except redis.RedisError as err:
        raise Unavailable(f"cannot reach Redis at {cfg.redis.url}: {err}") from None
    return r  # type: ignore[no-any-return]


class Relay:
    """The relay's services for one config, made on first use."""

    def __init__(self, cfg: RelayConfig, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock

    @cached_property
    def r(self) -> redis.Redis:
        return connect_redis(self.cfg)

    @cached_property
    def index(self) -> RelayIndex:
        return RelayIndex(self.r)

    @cached_property
    def audit(self) -> AuditLog:
        try:
            key = load_or_create_key(self.cfg.audit.key_file)
        except (OSError, ValueError) as err:
            raise Unavailable(f"audit key {self.cfg.audit.key_file}: {err}") from None
        return AuditLog(self.r, key)

    @cached_property
    def engine(self) -> Any:
        from relay.consent import ConsentEngine

        return ConsentEngine(self.index, self.audit, clock=self.clock, bystander=self.cfg.bystander)

    @cached_property
    def registry(self) -> Any:
        from relay.registry import DeviceRegistry

        return DeviceRegistry(self.cfg, self.index, self.audit)

    @cached_property
    def blobs(self) -> Any:
        from relay.blobs import LocalBlobStore, S3BlobStore

        if self.cfg.api.s3_bucket:
            return S3BlobStore(self.cfg.api.s3_bucket, self.cfg.api.s3_endpoint)
        return LocalBlobStore(self.cfg.api.blobs_dir, self.r, self.cfg.api.public_url)
