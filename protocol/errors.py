"""Turning pydantic's validation errors into one line a person can act on."""

from __future__ import annotations

from pydantic import ValidationError


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
