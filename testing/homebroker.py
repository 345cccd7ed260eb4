"""The owner's own Mosquitto, as Home Assistant's add-on runs it, for tests and benches.

Unlike :class:`~testing.localstack.LocalMosquitto` (the relay's broker, with the
project's ACL), any account may use any topic here: that is how a home broker is
usually set up, and it is where the doorbell's Home Assistant link publishes.

Example::

    with HomeMosquitto(tmp / "home") as home:
        home.add_user("ha", "secret")
"""

from __future__ import annotations

import getpass
from pathlib import Path

from testing.localstack import LocalMosquitto


class HomeMosquitto(LocalMosquitto):
    """Password logins, no ACL unless given, retained messages kept over a restart, on a
    free loopback port."""

    def __init__(self, folder: Path, port: int | None = None, acl: str | None = None) -> None:
        super().__init__(folder, port)
        acl_lines = []
        if acl is not None:  # the owner's own rules, e.g. docs/home-assistant.md's
            (self.dir / "acl").write_text(acl)
            acl_lines = [f"acl_file {self.dir / 'acl'}"]
        self.conf.write_text(
            "\n".join(
                [
                    f"user {getpass.getuser()}",
                    "per_listener_settings false",
                    "allow_anonymous false",
                    f"password_file {self.password_file}",
                    f"pid_file {self.pid_file}",
                    "persistence true",
                    f"persistence_location {self.dir / 'data'}/",
                    f"log_dest file {self.log}",
                    "log_type error",
                    "log_type warning",
                    f"listener {self.port} 127.0.0.1",
                    *acl_lines,
                    "",
                ]
            )
        )
