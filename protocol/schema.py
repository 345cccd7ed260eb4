"""Export the JSON Schemas of every message: ``python -m protocol.schema [--out DIR]``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from protocol.messages import MODELS

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "protocol"


def schemas() -> dict[str, str]:
    """File name → JSON text, one schema per topic suffix."""
    out = {}
    for suffix, model in MODELS.items():
        schema = model.model_json_schema()
        schema["$comment"] = f"payload of doorbell/{{device}}/{suffix}"
        out[suffix.replace("/", "-") + ".schema.json"] = json.dumps(schema, indent=2) + "\n"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in schemas().items():
        (args.out / name).write_text(text)
        print(args.out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
