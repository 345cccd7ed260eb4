"""Connecting to the broker, the same way on both sides: MQTT v5, paho-mqtt 2.x.

:class:`BrokerSettings` is the connection part of both the doorbell's and the
relay's configuration; :func:`make_client` turns it into a paho client with the
explicit callback API version 2; :func:`backoff_delays` is the reconnect policy.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # paho is a dependency of the parts that connect, not of config loading
    import paho.mqtt.client as mqtt


class BrokerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password_file: Path | None = None
    """A file holding the broker password (mode 0600); never put the password itself here."""
    tls_ca: Path | None = None
    """CA certificate of the broker; setting it turns TLS on."""
    tls_cert: Path | None = None
    """Client certificate, for brokers that take the certificate as the identity."""
    tls_key: Path | None = None
    keepalive_s: int = Field(30, ge=5, le=600)
    backoff_min_s: float = Field(0.5, gt=0, le=60)
    """First reconnect delay; it doubles, with jitter, up to backoff_max_s."""
    backoff_max_s: float = Field(60.0, gt=0, le=3600)

    def read_password(self) -> str | None:
        if self.password_file is None:
            return None
        return self.password_file.read_text().strip()


def make_client(
    settings: BrokerSettings, client_id: str, username: str, manual_ack: bool = False
) -> mqtt.Client:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    client.username_pw_set(username, settings.read_password())
    if settings.tls_ca is not None:
        client.tls_set(
            ca_certs=str(settings.tls_ca),
            certfile=str(settings.tls_cert) if settings.tls_cert else None,
            keyfile=str(settings.tls_key) if settings.tls_key else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    return client


def backoff_delays(
    minimum: float, maximum: float, rng: random.Random | None = None
) -> Iterator[float]:
    """Exponential back-off with jitter: each delay is uniform in [min/2, ceiling],
    the ceiling doubling from ``minimum`` up to ``maximum``.  The jitter spreads a
    fleet's reconnects out when a broker comes back."""
    rng = rng or random.Random()
    ceiling = minimum
    while True:
        yield rng.uniform(minimum / 2, ceiling)
        ceiling = min(maximum, ceiling * 2)
