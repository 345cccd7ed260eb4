"""The parts and which may import which (docs/architecture.md, "Dependency direction").

Read from the source with ``ast``, every import counts, also those inside functions,
so a lazy import cannot hide a dependency; so do ``importlib.import_module("x")``,
``__import__("x")`` and ``pkgutil.resolve_name("x:y")`` with a literal name.  The one
sanctioned way for a part to reach another at run time is an entry point that the
*other* part registers (the firmware finds the simulator's hardware that way), and the
test below checks that every registered entry point belongs to the part it names.
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


DYNAMIC_IMPORTS = {"import_module", "__import__", "resolve_name"}


def imported_parts(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if called not in DYNAMIC_IMPORTS or not isinstance(first, ast.Constant):
                continue
            names = [str(first.value).split(":")[0]]
        else:
            continue
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in PARTS}
    return found


def violations(part: str, folder: Path) -> list[str]:
    bad = []
    for path in sorted(folder.rglob("*.py")):
        for other in sorted(imported_parts(path.read_text()) - ALLOWED[part] - {part}):
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
    (fake / "dynamic.py").write_text(
        "import importlib, pkgutil\n"
        "importlib.import_module('footage.cli')\n"
        "__import__('testing.localstack')\n"
        "pkgutil.resolve_name('demo.__main__:main')\n"
    )
    assert violations("hw_sim", fake) == [
        "hw_sim/dynamic.py imports demo",
        "hw_sim/dynamic.py imports footage",
        "hw_sim/dynamic.py imports testing",
        "hw_sim/sneaky.py imports relay",
    ]


def test_every_folder_of_python_code_is_a_known_part():
    # A folder without __init__.py is still importable (a namespace package), so it
    # could carry a forbidden edge between two parts: every folder with code counts.
    code = {p.relative_to(ROOT).parts[0] for p in ROOT.glob("*/**/*.py")}
    assert code - {"bench", "tests", ".venv", "build"} == set(PARTS)


def test_entry_points_belong_to_the_part_that_registers_them():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    owners = {
        # group: the part whose code a registered object must be (the plugin side),
        # or None when any part may register (console scripts: each part its own).
        "open_doorbell.hardware": {"firmware", "hw_sim"},
        "open_doorbell.commands": {"hw_sim"},
    }
    for group, eps in project["entry-points"].items():
        assert group in owners, f"unknown entry-point group {group}"
        for name, target in eps.items():
            assert target.split(".")[0] in owners[group], f"{group}:{name} = {target}"
    scripts = project["scripts"]
    assert {k: v.split(".")[0] for k, v in scripts.items()} == {
        "doorbell": "firmware",
        "relay": "relay",
        "footage": "footage",
    }
