"""Reading config files and turning their errors into one line a person can act on."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError


def load_toml(path: Path | str, error: type[Exception]) -> dict[str, Any]:
    """Parse a TOML file; any problem raises ``error`` with the file and what is wrong."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise error(f"{p}: no such file") from None
    except PermissionError:
        raise error(f"{p}: not readable (permission denied)") from None
    except tomllib.TOMLDecodeError as err:
        raise error(f"{p}: not valid TOML: {err}") from None
    except UnicodeDecodeError:
        raise error(f"{p}: not a text file") from None


def format_validation_error(err: ValidationError) -> str:
    """``clips.pre_roll_s: Input should be ... (got -1); masks.0.polygon: ...``"""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in e and not isinstance(e["input"], dict | list):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{key}: {msg}")
    return "; ".join(lines)
