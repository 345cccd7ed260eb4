"""The relay's configuration: one TOML file; every key has a default for one host.

[broker]            how relay processes reach Mosquitto (user "relay")
[redis]             url = "redis://localhost:6379/0"
[mosquitto]         the broker's password file and pid file, for ``relay devices``
[provisioning]      where bundles go, and the broker address doorbells are given
[ingest]            shared-subscription group and batch size
[bystander]         passers-by's requests: proof of work, rate limits, deadlines
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.config import format_validation_error, load_toml
from common.mqtt import BrokerSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RelayBroker(BrokerSettings):
    port: int = Field(1884, ge=1, le=65535)
    """The broker's relay listener (relay accounts only; see relay.broker)."""
    username: str | None = "relay"


class RedisConfig(_Section):
    url: str = "redis://localhost:6379/0"
    """A redis:// or rediss:// URL; for Redis Cluster give any node and set cluster."""
    cluster: bool = False


class MosquittoConfig(_Section):
    password_file: Path = Path("/etc/mosquitto/doorbell/passwd")
    """The broker's password file: ``relay devices add`` writes doorbell accounts here."""
    pid_file: Path | None = Path("/run/mosquitto/mosquitto.pid")
    """SIGHUP goes to this pid so the broker rereads the password file."""


class ProvisioningConfig(_Section):
    bundles_dir: Path = Path("/var/lib/doorbell-relay/bundles")
    broker_host: str = "localhost"
    """The broker address doorbells are told to use (the public name, on a real relay)."""
    broker_port: int = Field(1883, ge=1, le=65535)
    tls_port: int = Field(8883, ge=1, le=65535)
    """The broker's TLS listener, given to doorbells registered with a certificate."""
    ca_dir: Path = Path("/var/lib/doorbell-relay/ca")
    """The relay's CA (made on first use) that issues doorbells' client certificates;
    its ca.crt is the TLS listener's cafile."""


class IngestConfig(_Section):
    group: str = Field("relay", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    """Shared-subscription group: every worker in it shares one stream of messages."""
    batch: int = Field(500, ge=1, le=10000)
    """Messages written to Redis per round trip at most."""
    session_expiry_s: int = Field(20, ge=0, le=86400)
    """How long the broker keeps a silent worker's session and share (see relay.ingest)."""
    max_past_s: float = Field(30 * 86400.0, gt=0)
    """Messages dated older than this (by the relay's clock) are dead-lettered."""
    max_future_s: float = Field(300.0, ge=0)
    """Messages dated further ahead than this are dead-lettered (clock skew allowance)."""


class AuditConfig(_Section):
    key_file: Path = Path("/var/lib/doorbell-relay/audit.key")
    """The relay's Ed25519 key that signs audit-log tree heads (created on first use, 0600)."""


class ApiConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    public_url: str = "http://127.0.0.1:8080"
    """The address doorbells and requesters reach the API at (behind the reverse proxy)."""
    blobs_dir: Path = Path("/var/lib/doorbell-relay/blobs")
    """Released ciphertext waits here for its requester (with the local blob store)."""
    s3_bucket: str | None = None
    """Use this S3 bucket instead of blobs_dir (boto3 reads credentials as usual)."""
    s3_endpoint: str | None = None
    forwarded_allow_ips: str = "127.0.0.1"
    """The reverse proxies (comma-separated addresses, or ``*``) whose X-Forwarded-For
    uvicorn believes: the client address (e.g. a bystander's rate limit) is the last hop
    none of these added.  The default trusts the nginx of deploy/relay on this host."""


class WebPushConfig(_Section):
    """Web Push for owners' closed pages (off unless ``subject`` is set)."""

    subject: str | None = None
    """Who runs this relay, for push services (``mailto:ops@example.org``)."""
    vapid_key_file: Path = Path("/var/lib/doorbell-relay/vapid.pem")
    """The relay's VAPID key (P-256, 0600), made on first use."""


class BystanderConfig(_Section):
    """Bystanders' requests (``POST /v1/bystander/requests``, unauthenticated)."""

    difficulty: int = Field(20, ge=0, le=32)
    """Leading zero bits of the proof of work: 2^20 hashes expected, about 0.4 s of Python's
    SHA-256 and 10 s of a browser's (WebCrypto, batched) on the test machine."""
    challenge_ttl_s: int = Field(600, ge=10, le=86400)
    """How long an issued challenge may be used (once)."""
    requests_per_window: int = Field(5, ge=1)
    """Requests one source may send per ``rate_window_s`` (refused with 429 beyond)."""
    challenges_per_window: int = Field(20, ge=1)
    """Challenges one source may fetch per ``rate_window_s``."""
    rate_window_s: int = Field(3600, ge=1)
    asks_per_owner_per_day: int = Field(10, ge=1)
    """Bystanders' asks one owner gets per day (UTC) at most, from all sources together:
    the per-address limit alone lets many addresses flood the one home they film.
    Requests beyond it are accepted and logged as any other, but ask no one there."""
    deadline_days: float = Field(30.0, gt=0)
    """How long an owner has to answer (a month, as data-protection law expects)."""
    reminder_days: float = Field(7.0, ge=0)
    """How long before the deadline the owner is reminded (0: no reminder)."""


class RelayConfig(_Section):
    broker: RelayBroker = RelayBroker()
    redis: RedisConfig = RedisConfig()
    mosquitto: MosquittoConfig = MosquittoConfig()
    provisioning: ProvisioningConfig = ProvisioningConfig()
    ingest: IngestConfig = IngestConfig()
    audit: AuditConfig = AuditConfig()
    api: ApiConfig = ApiConfig()
    webpush: WebPushConfig = WebPushConfig()
    bystander: BystanderConfig = BystanderConfig()


class RelayConfigError(ValueError):
    pass


def load_relay_config(path: Path | str | None) -> RelayConfig:
    data: dict[str, Any] = {}
    if path is not None:
        data = load_toml(path, RelayConfigError)
    try:
        return RelayConfig.model_validate(data)
    except ValidationError as err:
        raise RelayConfigError(format_validation_error(err)) from None
