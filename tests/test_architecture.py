"""The parts and which may import which (docs/architecture.md, "Dependency direction").

Read from the source with ``ast``, every import counts, also those inside functions,
so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("protocol", "common", "firmware", "hw_sim", "relay", "footage", "testing", "demo")

# Each part, and the parts it may import (besides itself and the outside world).
ALLOWED = {
    "protocol": set(),
    "common": set(),
    "firmware": {"protocol", "common"},
    "relay": {"protocol", "common"},
    "footage": {"protocol", "common"},
    "hw_sim": {"firmware", "protocol", "common"},
    # Throw-away services for tests and the demo: it may start what the relay deploys.
    "testing": {"relay", "protocol", "common"},
    "demo": set(PARTS),
}


def imported_parts(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in PARTS}
    return found


def violations(part: str, folder: Path) -> list[str]:
    bad = []
    for path in sorted(folder.rglob("*.py")):
        for other in imported_parts(path.read_text()) - ALLOWED[part] - {part}:
            bad.append(f"{path.relative_to(folder.parent)} imports {other}")
    return bad


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_parts_import_only_what_they_may(part):
    assert violations(part, ROOT / part) == []


def test_the_check_sees_a_forbidden_import(tmp_path):
    fake = tmp_path / "hw_sim"
    fake.mkdir()
    (fake / "ok.py").write_text("from firmware.config import Config\nimport numpy\n")
    (fake / "sneaky.py").write_text("def f():\n    from relay.index import RelayIndex\n")
    assert violations("hw_sim", fake) == ["hw_sim/sneaky.py imports relay"]


def test_every_package_is_a_known_part():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages - {"bench", "tests"} == set(PARTS)
