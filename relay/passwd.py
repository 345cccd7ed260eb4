"""Mosquitto password files, written the way ``mosquitto_passwd`` writes them.

Mosquitto 2 stores ``user:$7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512>``.
The relay adds and removes doorbell accounts itself (no shelling out), writes the
file atomically, and then asks the broker to reload it (SIGHUP).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import signal
from pathlib import Path

ITERATIONS = 101  # mosquitto_passwd's own choice for $7$


def hash_entry(username: str, password: str, salt: bytes | None = None) -> str:
    if ":" in username or "\n" in username:
        raise ValueError("a user name cannot contain ':' or a newline")
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    b64salt, b64digest = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"{username}:$7${ITERATIONS}${b64salt}${b64digest}"


def verify_entry(entry: str, password: str) -> bool:
    _, _, rest = entry.partition(":")
    parts = rest.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    salt, want = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    return hmac.compare_digest(got, want)


def read_users(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    users = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            user, _, _ = line.partition(":")
            users[user] = line
    return users


def _write(path: Path, users: dict[str, str]) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{line}\n" for line in users.values()))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def set_user(path: Path, username: str, password: str) -> None:
    users = read_users(path)
    users[username] = hash_entry(username, password)
    _write(path, users)


def remove_user(path: Path, username: str) -> bool:
    users = read_users(path)
    if users.pop(username, None) is None:
        return False
    _write(path, users)
    return True


def reload_broker(pid_file: Path | None) -> bool:
    """SIGHUP the broker so it rereads its password file; False if no broker is found."""
    if pid_file is None or not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (ValueError, ProcessLookupError, PermissionError):
        return False
    return True
