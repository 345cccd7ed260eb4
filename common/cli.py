"""What every command line of the project shares: one-line errors with exit 2, times."""

from __future__ import annotations

import argparse
import errno
from datetime import UTC, datetime
from typing import NoReturn

EXIT_USAGE = 2
EXIT_NO_SPACE = 74  # EX_IOERR


def disk_full(err: BaseException) -> bool:
    """Is ``err`` a full disk (ENOSPC, or SQLite's way of saying it)?"""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return type(err).__name__ == "OperationalError" and "disk is full" in str(err)


def no_space_message(prog: str, err: BaseException) -> str:
    """The one line a command prints when the disk is full."""
    where = f" writing {err.filename}" if isinstance(err, OSError) and err.filename else ""
    return f"{prog}: error: no space left on the device{where}: free some space and try again"


class UsageError(Exception):
    """A problem with what the user asked for: one line on stderr, exit 2."""


class UsageParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parse_time(s: str) -> float:
    """ISO 8601 (``2026-11-27T10:00:00Z``, a date alone is midnight UTC) or Unix seconds."""
    try:
        return float(s)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {s!r} (use ISO 8601 like 2026-11-27T10:00:00Z, or Unix seconds)"
        ) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def number(s: str) -> float:
    """An argparse type: a number, or a one-line error."""
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None


def positive(s: str) -> float:
    v = number(s)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {s}")
    return v


def non_negative(s: str) -> float:
    v = number(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {s}")
    return v
