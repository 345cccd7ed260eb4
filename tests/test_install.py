"""Each part installs alone, with only its own dependencies (a fresh venv each).

Slow-ish (pip builds the wheel and installs from its cache or PyPI), but this is the
only test that sees what a Pi or a requester actually gets from ``pip install``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RELAY_ONLY = {"fastapi", "uvicorn", "boto3", "redis", "moto", "starlette", "rich"}
DOORBELL_ONLY = {"numpy", "av", "gpiozero", "paho-mqtt"}

pytestmark = pytest.mark.slow


def clean_copy(tmp: Path) -> Path:
    """The files git tracks (plus new ones not ignored), as a fresh clone would have them;
    pip then builds there, not in the checkout."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    src = tmp / "src"
    for name in filter(None, files):
        path = ROOT / name.decode()
        if path.is_file():
            (src / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name.decode())
    return src


def fresh_venv(tmp: Path, extra: str) -> Path:
    env = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    src = clean_copy(tmp)
    r = subprocess.run(
        [str(env / "bin/python"), "-m", "pip", "install", "-q", f"{src}[{extra}]"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if r.returncode != 0 and "Could not find a version" in r.stderr + r.stdout:
        pytest.skip(f"no package index reachable: {r.stderr.strip()[-300:]}")
    assert r.returncode == 0, r.stderr[-2000:]
    return env


def installed(env: Path) -> set[str]:
    out = subprocess.run(
        [str(env / "bin/python"), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {p["name"].lower() for p in json.loads(out)}


def run(env: Path, tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # cwd is a folder without the source tree, so only what was installed is imported.
    return subprocess.run(
        [str(env / "bin" / tool), *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def modules_after(env: Path, code: str, cwd: Path) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    r = subprocess.run(
        [str(env / "bin/python"), "-c", probe], capture_output=True, text=True, cwd=cwd
    )
    assert r.returncode == 0, r.stderr
    return {m.split(".")[0] for m in json.loads(r.stdout.strip().splitlines()[-1])}


def test_the_doorbell_installs_without_the_relay(tmp_path):
    env = fresh_venv(tmp_path, "doorbell")
    have = installed(env)
    assert not have & RELAY_ONLY, f"a doorbell should not get {sorted(have & RELAY_ONLY)}"
    assert have >= DOORBELL_ONLY
    work = tmp_path / "work"
    (work / "data" / "clips").mkdir(parents=True)
    assert run(env, "doorbell", "--help", cwd=work).returncode == 0
    r = run(env, "doorbell", "clips", "list", "--data-dir", str(work / "data"), cwd=work)
    assert (r.returncode, r.stdout.strip()) == (0, "no clips"), r.stderr
    loaded = modules_after(
        env,
        "from firmware.cli import main\n"
        f"main(['clips', 'list', '--data-dir', {str(work / 'data')!r}])\n"
        "import firmware.app, firmware.uplink, firmware.consent",
        cwd=work,
    )
    assert not loaded & {"relay", "footage", "fastapi", "redis", "boto3"}
    # The relay's command is there but says in one line what to install.
    r = run(env, "relay", "status", cwd=work)
    assert r.returncode != 0 and "pip install" in r.stderr and len(r.stderr.splitlines()) == 1


def test_the_client_installs_without_the_firmware(tmp_path):
    env = fresh_venv(tmp_path, "footage")
    have = installed(env)
    assert not have & (RELAY_ONLY | DOORBELL_ONLY), sorted(have & (RELAY_ONLY | DOORBELL_ONLY))
    work = tmp_path / "work"
    work.mkdir()
    assert run(env, "footage", "--help", cwd=work).returncode == 0
    r = run(env, "footage", "keys", "new", "--out", str(work / "keys"), cwd=work)
    assert r.returncode == 0, r.stderr
    assert (work / "keys" / "box.pub").exists()
    loaded = modules_after(env, "import footage.cli", cwd=work)
    assert not loaded & {"firmware", "relay", "hw_sim", "numpy", "av", "paho"}
    # The other parts' commands are there but say in one line what to install.
    for tool in ("doorbell", "relay"):
        r = run(env, tool, "--help", cwd=work)
        assert r.returncode != 0 and len(r.stderr.splitlines()) == 1, r.stderr
        assert "pip install" in r.stderr
