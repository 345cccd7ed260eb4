"""``relay`` as an operator runs it, against a real broker and Redis."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from stack import wait_for
from test_protocol import clip

from protocol import encode


def relay(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", "--config", str(stack.config_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def can_connect(port: int, user: str, password: str) -> bool:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    result: list = []
    c.on_connect = lambda _c, _u, _f, rc, _p: result.append(rc)
    c.connect("127.0.0.1", port)
    c.loop_start()
    wait_for(lambda: result, 5, "CONNACK")
    c.disconnect()
    c.loop_stop()
    return not result[0].is_failure


def relay_entries(stack) -> list[dict]:
    return json.loads(relay(stack, "audit", "list", "--json").stdout)


def test_devices_add_list_show_revoke(stack):
    r = relay(
        stack,
        "devices",
        "add",
        "porch-cam",
        "--owner",
        "Alice",
        "--lat",
        "51.5",
        "--lon",
        "-0.12",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["broker_reloaded"] is True
    bundle_path = Path(out["bundle"])
    assert stat.S_IMODE(bundle_path.stat().st_mode) == 0o600
    bundle = json.loads(bundle_path.read_text())
    assert bundle["device"] == "porch-cam" and bundle["broker"]["username"] == "porch-cam"
    # The doorbell gets the relay's log key to pin, and where to ask for proofs.
    assert bundle["log"]["key"] == relay(stack, "audit", "key").stdout.strip()
    password = bundle["broker"]["password"]
    wait_for(lambda: can_connect(stack.broker.port, "porch-cam", password), 5, "the new account")
    assert password not in stack.broker.password_file.read_text(), "only a hash is stored"

    listed = json.loads(relay(stack, "devices", "list", "--json").stdout)
    assert [d["id"] for d in listed] == ["porch-cam"]
    assert listed[0]["owner"] == "Alice"
    table = relay(stack, "devices", "list").stdout
    assert "porch-cam" in table and "Alice" in table
    shown = json.loads(relay(stack, "devices", "show", "porch-cam", "--json").stdout)
    assert shown["lat"] == "51.5"

    again = relay(stack, "devices", "add", "porch-cam", "--owner", "B", "--lat", "1", "--lon", "1")
    assert again.returncode == 2 and "already exists" in again.stderr

    r = relay(stack, "devices", "rotate", "porch-cam")
    assert r.returncode == 0, r.stderr
    rotated = json.loads(bundle_path.read_text())["broker"]["password"]
    assert rotated != password
    wait_for(lambda: not can_connect(stack.broker.port, "porch-cam", password), 5, "rotation")
    assert can_connect(stack.broker.port, "porch-cam", rotated)
    actions = [e["data"].get("action") for e in relay_entries(stack)]
    assert "device_rotated" in actions
    password = rotated

    r = relay(stack, "devices", "revoke", "porch-cam")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: not can_connect(stack.broker.port, "porch-cam", password), 5, "revocation")


def test_clips_list_filters(stack):
    stack.add_device("front-door", lat=51.5000, lon=-0.1200)
    stack.add_device("far-door", lat=52.0, lon=0.0)
    worker = stack.worker_thread()
    pub = stack.client("front-door")
    pub2 = stack.client("far-door")
    for i in range(3):
        pub.publish(*encode(clip(device="front-door", clip_id=f"near-{i}")), qos=1)
    pub2.publish(*encode(clip(device="far-door", clip_id="far-0")), qos=1).wait_for_publish(5)
    wait_for(lambda: worker.stats["indexed"] >= 4, 10, "indexing")

    near = json.loads(
        relay(stack, "clips", "list", "--near", "51.5001,-0.12", "--radius", "200", "--json").stdout
    )
    assert sorted(c["clip_id"] for c in near) == ["near-0", "near-1", "near-2"]
    by_device = json.loads(relay(stack, "clips", "list", "--device", "far-door", "--json").stdout)
    assert [c["clip_id"] for c in by_device] == ["far-0"]
    none = json.loads(relay(stack, "clips", "list", "--since", "2099-01-01", "--json").stdout)
    assert none == []
    assert "near-1" in relay(stack, "clips", "list").stdout

    status = relay(stack, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    s = json.loads(status.stdout)
    assert s["broker"]["ok"] and s["redis"]["ok"]
    assert s["counts"]["clips"] == 4
    for c in (pub, pub2):
        c.loop_stop()


def test_status_without_workers_is_not_healthy(stack):
    r = relay(stack, "status")
    assert r.returncode == 1
    assert "none" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["devices", "add", "x", "--owner", "A", "--lat", "1", "--lon", "1"], "device id 'x'"),
        (["devices", "add", "relay", "--owner", "A", "--lat", "1", "--lon", "1"], "not 'relay'"),
        (["devices", "add", "ok-id", "--owner", "A", "--lat", "95", "--lon", "1"], "latitude"),
        (["devices", "show", "nobody"], "no device 'nobody'"),
        (["clips", "list", "--near", "51.5"], "expected LAT,LON"),
        (["clips", "list", "--near", "51.5,0"], "--near and --radius go together"),
        (["clips", "list", "--since", "yesterday"], "not a time"),
        (["clips", "list", "--radius", "-5", "--near", "1,1"], "must be greater than 0"),
    ],
)
def test_bad_arguments_exit_2(stack, args, message):
    r = relay(stack, *args)
    assert r.returncode == 2, r.stdout
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_unreachable_redis_is_one_line_exit_1(tmp_path):
    cfg = tmp_path / "relay.toml"
    cfg.write_text('[redis]\nurl = "redis://127.0.0.1:1/0"\n')
    r = subprocess.run(
        [sys.executable, "-m", "relay.cli", "--config", str(cfg), "clips", "list"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert r.stderr.startswith("relay: error: cannot reach Redis at redis://127.0.0.1:1/0")
    assert len(r.stderr.strip().splitlines()) == 1


def test_invalid_relay_config_names_the_key(tmp_path):
    cfg = tmp_path / "relay.toml"
    cfg.write_text("[ingest]\nbatch = 0\n")
    r = subprocess.run(
        [sys.executable, "-m", "relay.cli", "--config", str(cfg), "status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "ingest.batch" in r.stderr


def test_operator_actions_are_audited_and_provable(stack, tmp_path):
    r = relay(
        stack, "devices", "add", "porch-cam", "--owner", "Alice", "--lat", "51.5", "--lon", "-0.12"
    )
    assert r.returncode == 0, r.stderr
    assert relay(stack, "devices", "revoke", "porch-cam").returncode == 0
    entries = json.loads(relay(stack, "audit", "list", "--json").stdout)
    assert [e["kind"] for e in entries] == ["device_registered", "device_revoked"]
    ok = relay(stack, "audit", "verify")
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 2 entries")

    proof = tmp_path / "proof.json"
    proof.write_text(relay(stack, "audit", "proof", "0").stdout)
    key = tmp_path / "relay.pub"
    key.write_text(relay(stack, "audit", "key").stdout)
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "footage.cli",
            "verify-proof",
            str(proof),
            "--relay-key",
            str(key),
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0 and check.stdout.startswith("ok: entry #0")

    # An operator edits history behind the relay's back: verify names the entry.
    import redis

    r = redis.Redis.from_url(stack.redis.url)
    from relay.audit import ENTRIES

    entry = json.loads(r.lindex(ENTRIES, 0))
    entry["data"]["owner"] = "Mallory"
    r.lset(ENTRIES, 0, json.dumps(entry, sort_keys=True, separators=(",", ":")))
    bad = relay(stack, "audit", "verify")
    assert bad.returncode == 1 and "entry #0" in bad.stdout


def test_footage_keys_new(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "footage.cli", "keys", "new", "--out", str(tmp_path / "k")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0
    assert stat.S_IMODE((tmp_path / "k" / "sign.key").stat().st_mode) == 0o600
    again = subprocess.run(
        [sys.executable, "-m", "footage.cli", "keys", "new", "--out", str(tmp_path / "k")],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 2 and "never overwritten" in again.stderr


def test_policy_and_legal_demand_commands(stack, tmp_path):
    shown = json.loads(relay(stack, "policy", "show").stdout)
    assert shown["max_radius_m"] == 250
    r = relay(stack, "policy", "set", "--max-radius-m", "400", "--max-window-h", "2")
    assert r.returncode == 0, r.stderr
    changed = json.loads(r.stdout)
    assert changed["max_radius_m"] == 400 and changed["max_window_s"] == 7200
    r = relay(stack, "policy", "set", "--min-radius-m", "20", "--retention-days", "7")
    changed = json.loads(r.stdout)
    assert changed["min_radius_m"] == 20 and changed["retention_s"] == 7 * 86400
    assert relay(stack, "policy", "set").returncode == 2
    entries = json.loads(relay(stack, "audit", "list", "--json").stdout)
    assert entries[-1]["kind"] == "policy_change"
    bad = relay(
        stack,
        "legal-demand",
        "record",
        "--request",
        "req-nope",
        "--docket",
        "D",
        "--authority",
        "Court",
    )
    assert bad.returncode == 2 and "no request" in bad.stderr


def test_owner_and_requester_registration(stack, tmp_path):
    from protocol.crypto import OwnerKeys

    OwnerKeys.generate().save(tmp_path / "alice")
    r = relay(stack, "owners", "add", "alice", "--keys", str(tmp_path / "alice"))
    assert r.returncode == 0 and len(r.stdout.strip()) > 30
    again = relay(stack, "owners", "add", "alice", "--keys", str(tmp_path / "alice"))
    assert again.returncode == 2 and "exists" in again.stderr
    r = relay(
        stack,
        "requesters",
        "add",
        "pd",
        "--kind",
        "agency",
        "--pubkey",
        str(tmp_path / "alice" / "box.pub"),
    )
    assert r.returncode == 0
    bad = relay(stack, "requesters", "add", "x", "--kind", "spy", "--pubkey", "/dev/null")
    assert bad.returncode == 2


def test_tokens_can_be_revoked_and_rotated(stack, tmp_path):
    from protocol.crypto import OwnerKeys

    OwnerKeys.generate().save(tmp_path / "pd")
    pub = str(tmp_path / "pd" / "box.pub")
    r = relay(
        stack, "requesters", "add", "pd-1", "--kind", "agency", "--pubkey", pub, "--org", "pd"
    )
    assert r.returncode == 0, r.stderr
    first = r.stdout.strip()
    r = relay(stack, "requesters", "rotate", "pd-1")
    assert r.returncode == 0, r.stderr
    second = r.stdout.strip()
    assert second != first and len(second) > 30
    r = relay(stack, "requesters", "revoke", "pd-1")
    assert r.returncode == 0 and "revoked 1 token" in r.stdout
    assert relay(stack, "owners", "revoke", "nobody").returncode == 2
    entries = json.loads(relay(stack, "audit", "list", "--json").stdout)
    actions = [e["data"].get("action") for e in entries]
    assert actions[-2:] == ["requester_rotated", "requester_revoked"]
    r = relay(stack, "legal-demand", "record", "--org", "pd", "--docket", "D-1", "--authority", "C")
    assert r.returncode == 0 and json.loads(r.stdout)["org"] == "pd"
    again = relay(
        stack, "legal-demand", "record", "--org", "pd", "--docket", "D-1", "--authority", "C"
    )
    assert again.returncode == 2 and "on file already" in again.stderr
