"""Key files that several relay processes may be first to need on a new machine.

The API, the workers and the CLI all start from the same config, so on a first boot
more than one may find a key missing.  :func:`create_once` writes the key whole to a
private temporary file and hard-links it into place: one process's key wins, the
others read it, and no reader ever sees an empty file that is still being written.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def create_once(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` (mode 0600) unless it exists; True if ours won.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> create_once(d / "k", b"one"), create_once(d / "k", b"two")
    (True, False)
    >>> (d / "k").read_bytes()
    b'one'
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False  # another process got there first: its key is the one
        return True
    finally:
        tmp.unlink(missing_ok=True)
