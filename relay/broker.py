"""The Mosquitto configuration the project runs with, tests and production alike.

:func:`render_config` is the one source: ``deploy/mosquitto/mosquitto.conf`` is its
production rendering (a test keeps them in step), and the tests and ``make demo``
start Mosquitto with a rendering for a loopback port and a temporary folder.
The ACL is ``deploy/mosquitto/acl``, used as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto"
ACL_FILE = DEPLOY / "acl"


@dataclass(frozen=True)
class TlsListener:
    port: int
    cafile: Path
    certfile: Path
    keyfile: Path


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
) -> str:
    lines = [
        "# Mosquitto for the open doorbell relay (rendered by relay/broker.py).",
        "# Files named here must be readable by the user below.",
        f"user {user}",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {password_file}",
        f"acl_file {acl_file}",
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
    if port is not None:
        lines += [
            "# Plain MQTT, for loopback and private networks only.",
            f"listener {port} {bind}",
            "protocol mqtt",
            "",
        ]
    if tls is not None:
        lines += [
            "# TLS with client certificates: the certificate's CN is the user name,",
            "# so the ACL's %u patterns hold without passwords.",
            f"listener {tls.port}",
            "protocol mqtt",
            f"cafile {tls.cafile}",
            f"certfile {tls.certfile}",
            f"keyfile {tls.keyfile}",
            "require_certificate true",
            "use_identity_as_username true",
            "tls_version tlsv1.2",
            "",
        ]
    return "\n".join(lines)


def production_config() -> str:
    etc = Path("/etc/mosquitto/doorbell")
    return render_config(
        password_file=etc / "passwd",
        acl_file=etc / "acl",
        persistence_dir=Path("/var/lib/mosquitto"),
        pid_file=Path("/run/mosquitto/mosquitto.pid"),
        port=1883,
        bind="127.0.0.1",
        tls=TlsListener(8883, etc / "ca.crt", etc / "server.crt", etc / "server.key"),
    )


if __name__ == "__main__":
    print(production_config(), end="")
