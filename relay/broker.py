"""The Mosquitto configuration the project runs with, tests and production alike.

:func:`render_config` is the one source: ``deploy/mosquitto/mosquitto.conf`` is its
production rendering (a test keeps them in step), and the tests and ``make demo``
start Mosquitto with a rendering for a loopback port and a temporary folder.
:func:`render_acl` derives the ACL from the topic table in :mod:`protocol.topics`;
``deploy/mosquitto/acl`` is its rendering, kept in step by a test.

    python -m relay.broker            # the production mosquitto.conf
    python -m relay.broker --acl      # the ACL
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from protocol.topics import (
    DEVICE_TO_RELAY,
    PUBLIC_TOPICS,
    RELAY_ACCOUNT,
    RELAY_TO_DEVICE,
    ROOT,
)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto"
ACL_FILE = DEPLOY / "acl"


@dataclass(frozen=True)
class TlsListener:
    port: int
    cafile: Path
    certfile: Path
    keyfile: Path
    crlfile: Path | None = None
    """The relay CA's CRL (relay.ca.DeviceCA.crl_file): revoked doorbells' certificates
    are refused at the handshake.  Mosquitto reads it at start and on SIGHUP."""


RELAY_PORT = 1884
"""Where the relay's own processes connect (loopback): relay accounts only."""


def render_config(
    *,
    password_file: Path,
    acl_file: Path,
    persistence_dir: Path,
    pid_file: Path | None,
    port: int | None = 1883,
    bind: str = "127.0.0.1",
    user: str = "mosquitto",
    log_dest: str = "syslog",
    tls: TlsListener | None = None,
    relay_port: int | None = RELAY_PORT,
    relay_password_file: Path | None = None,
) -> str:
    """The broker's configuration: a listener for the relay, and listeners for doorbells.

    Identity is bound to the account at the broker.  On every doorbell listener
    ``use_username_as_clientid`` replaces whatever client id a doorbell sends with
    its user name (its device id, or its certificate's CN), so no doorbell can
    connect as another doorbell or as a relay worker: the victim is never kicked,
    its last will never fired, its session never taken.  The relay's processes
    connect on their own loopback listener, whose password file holds only relay
    accounts (``per_listener_settings``), so a doorbell account is refused there at
    CONNECT; relay client ids (``relay:…``) cannot be device ids.  The relay listener
    keeps the client id it is given: that is how ``relay devices revoke`` ends a
    revoked doorbell's session (relay.registry.cut_off), because Mosquitto checks the
    TLS listener's ``crlfile`` at handshakes only, not for sessions already connected.
    """
    relay_password_file = relay_password_file or password_file.with_name("relay-passwd")
    lines = [
        "# Mosquitto for the open doorbell relay (rendered by relay/broker.py).",
        "# Files named here must be readable by the user below.",
        f"user {user}",
        "# Each listener has its own accounts: the relay's are not the doorbells'.",
        "per_listener_settings true",
        "",
        "# Sessions and queued QoS 1 messages survive a broker restart, so a relay",
        "# worker or a doorbell that was away gets what it missed.",
        "persistence true",
        f"persistence_location {persistence_dir}/",
        "autosave_interval 30",
        "# A relay worker that was down may have thousands of records waiting.",
        "max_queued_messages 100000",
        "max_inflight_messages 1000",
        "max_packet_size 70000",
        "",
    ]
    if pid_file is not None:
        lines.append(f"pid_file {pid_file}")
    lines += [f"log_dest {log_dest}", "log_type error", "log_type warning", "log_type notice", ""]
    if relay_port is not None:
        lines += [
            "# The relay's own processes (workers, API, status): loopback, relay accounts only.",
            f"listener {relay_port} 127.0.0.1",
            "protocol mqtt",
            "allow_anonymous false",
            f"password_file {relay_password_file}",
            f"acl_file {acl_file}",
            "",
        ]
    doorbell_auth = [
        "allow_anonymous false",
        f"acl_file {acl_file}",
        "# A doorbell's client id is its user name, whatever it asks for: no takeover.",
        "use_username_as_clientid true",
    ]
    if port is not None:
        lines += [
            "# Doorbells with passwords, plain MQTT: for loopback and private networks only.",
            f"listener {port} {bind}",
            "protocol mqtt",
            f"password_file {password_file}",
            *doorbell_auth,
            "",
        ]
    if tls is not None:
        lines += [
            "# Doorbells with client certificates: the certificate's CN is the user name,",
            "# so the ACL's %u patterns hold without passwords.",
            f"listener {tls.port}",
            "protocol mqtt",
            f"cafile {tls.cafile}",
            f"certfile {tls.certfile}",
            f"keyfile {tls.keyfile}",
            *(
                [
                    "# Revoked doorbells (relay devices revoke rewrites it, then SIGHUP).",
                    f"crlfile {tls.crlfile}",
                ]
                if tls.crlfile is not None
                else []
            ),
            "require_certificate true",
            "use_identity_as_username true",
            "tls_version tlsv1.2",
            *doorbell_auth,
            "",
        ]
    return "\n".join(lines)


def render_acl() -> str:
    """Who may publish and subscribe where, from the topic table of the wire contract."""
    lines = [
        "# Who may publish and subscribe where (rendered by relay/broker.py from",
        "# protocol/topics.py).  No anonymous access (see mosquitto.conf).",
        "# A doorbell's broker user name is its device id (or its certificate's CN).",
        "",
        "# The relay's own account: reads every doorbell's announcements, sends commands,",
        "# and publishes the audit log's signed tree head.",
        f"user {RELAY_ACCOUNT}",
        *(f"topic read {ROOT}/+/{what}" for what in DEVICE_TO_RELAY),
        *(f"topic write {ROOT}/+/{what}" for what in RELAY_TO_DEVICE),
        f"topic readwrite {RELAY_ACCOUNT}/#",
        "",
        "# Every doorbell: write only its own announcements, read only its own commands.",
        f"# (Patterns apply to every user; for the relay they name {ROOT}/{RELAY_ACCOUNT}/...,",
        f'# and no doorbell may be called "{RELAY_ACCOUNT}".)',
        *(f"pattern write {ROOT}/%u/{what}" for what in DEVICE_TO_RELAY),
        *(f"pattern read {ROOT}/%u/{what}" for what in RELAY_TO_DEVICE),
        "# Everyone may read the audit log's signed tree head (mosquitto warns that this",
        "# pattern has no %u or %c; that is intended).",
        *(f"pattern read {topic}" for topic in PUBLIC_TOPICS),
    ]
    return "\n".join(lines) + "\n"


def production_config() -> str:
    etc = Path("/etc/mosquitto/doorbell")
    return render_config(
        password_file=etc / "passwd",
        acl_file=etc / "acl",
        relay_password_file=etc / "relay-passwd",
        persistence_dir=Path("/var/lib/mosquitto"),
        pid_file=Path("/run/mosquitto/mosquitto.pid"),
        port=1883,
        bind="127.0.0.1",
        tls=TlsListener(
            8883,
            etc / "ca.crt",
            etc / "server.crt",
            etc / "server.key",
            # Written in place by the relay's CA (ProvisioningConfig.ca_dir's default).
            Path("/var/lib/doorbell-relay/ca/crl.pem"),
        ),
    )


if __name__ == "__main__":
    print(render_acl() if "--acl" in sys.argv[1:] else production_config(), end="")
