"""The relay's operator against the public log, with witnesses that remember.

A real broker, Redis, HTTP API and ingestion worker; a simulated doorbell with its log
witness; the ``footage`` client.  The operator holds the relay's signing key, so it can
rewrite the log *consistently* and re-sign every head: ``relay audit verify`` is then
blind.  Only someone who kept an earlier head can tell, and every doorbell and client
does.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from conftest import small_config
from stack import wait_for
from test_consent_e2e import Relay

from footage import cli as footage
from hw_sim.runner import SimDoorbell
from hw_sim.scenes import make_scene
from protocol import ReleaseCommand, encode, new_id, utcnow
from protocol.crypto import OwnerKeys, b64, sign_payload, unb64
from protocol.decisions import Approval, sign_decision
from protocol.merkle import CompactTree, leaf_hash
from relay.audit import ENTRIES, HEADS, SEALED, STATE, AuditLog


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = footage.main(list(args))
    return code, out.getvalue(), err.getvalue()


class Doorbell:
    """A doorbell provisioned with the relay's URL and log key, witnessing the log."""

    def __init__(self, stack, relay: Relay, tmp: Path, device: str = "front-door") -> None:
        self.owner = OwnerKeys.generate()
        mqtt_cfg = stack.add_device(device)
        cfg = small_config(
            tmp / device,
            device={"id": device, "data_dir": str(tmp / device)},
            owner={
                "sign_public": b64(self.owner.sign_public),
                "box_public": b64(self.owner.box_public),
            },
            mqtt={**mqtt_cfg.model_dump(mode="json"), "confirm_timeout_s": 5},
            log={"relay_url": relay.url, "key": b64(relay.audit.public)},
        )
        self.events: list = []
        self.bell = SimDoorbell(cfg, make_scene("porch", 320, 240), self.events.append)
        self.witness = self.bell.doorbell.witness
        assert self.witness is not None
        wait_for(self.bell.uplink.link.connected.is_set, 10, "the doorbell to connect")

    def alarms(self) -> list:
        return [e for e in self.events if e.kind == "log_alarm"]

    def close(self) -> None:
        self.bell.close()


@pytest.fixture
def world(stack, tmp_path):
    relay = Relay(stack, tmp_path)
    bell = Doorbell(stack, relay, tmp_path)
    yield relay, bell, stack
    bell.close()
    relay.close()


def public_entries(relay: Relay) -> list[dict]:
    code, _, err = run("--relay", relay.url, "log", "head")  # also: the client witnesses
    assert code == 0, err
    got = footage.httpx.get(f"{relay.url}/v1/log/entries", params={"start": 0}).json()
    return [g["json"] for g in got["entries"]]


def history(relay: Relay) -> None:
    """Some of everything, refusals included."""
    engine = relay.engine
    police = OwnerKeys.generate()
    engine.add_requester("city-police", "agency", police.box_public)
    for radius in (5000, 9000):  # refused by policy
        engine.file_request("city-police", 51.5, -0.12, radius, 0, 600, "curious", "C-1", "consent")
    engine.file_request("city-police", 51.5, -0.12, 100, 0, 600, "burglary", "C-2", "consent")


def forged_release(stack, device: str) -> str:
    """What a dishonest relay would send: an approval signed by someone else's key."""
    approval = Approval.create(
        "req-00000001", device, ["clip-0001"], b"\x07" * 32, 4e9, {"clip-0001": b"\x01" * 32}
    )
    cmd = ReleaseCommand(
        id=new_id(),
        ts=utcnow(),
        device=device,
        request_id="req-00000001",
        approval=sign_decision(approval, OwnerKeys.generate().sign_private),
        upload_urls={"clip-0001": "http://127.0.0.1:9/steal"},
    )
    client = stack.client("relay")
    client.publish(*encode(cmd), qos=1).wait_for_publish(5)
    client.disconnect()
    return cmd.id


def rewrite(log: AuditLog, keep, pad: int) -> None:
    """The operator's rewrite: drop entries, renumber, re-sign every head with the relay's
    own key, then append ``pad`` innocent entries so the log is not even shorter."""
    entries = log.entries()
    log.r.delete(ENTRIES, HEADS, STATE, SEALED)
    for e in entries:
        if keep(e):
            log.append(e["kind"], e["actor"], e["data"])
    for _ in range(pad):
        log.append("operator_action", "operator", {"action": "maintenance"})


def truncate(log: AuditLog, size: int) -> None:
    """Cut entries and heads together, and the tree state with them: self-consistent."""
    log.r.ltrim(ENTRIES, 0, size - 1)
    log.r.ltrim(HEADS, 0, size - 1)
    tree = CompactTree()
    for e in log.r.lrange(ENTRIES, 0, -1):
        tree.append(leaf_hash(e))
    log.r.set(STATE, json.dumps({"size": tree.size, "stack": [b64(s) for s in tree.stack]}))


def head_size(signed: dict) -> int:
    return json.loads(unb64(signed["payload"]))["size"]


@pytest.mark.parametrize("attack", ["rewrite", "truncate"])
def test_the_operator_cannot_rewrite_history_unseen(world, tmp_path, attack):
    relay, bell, stack = world
    history(relay)

    # A forged approval refused by the doorbell reaches the public log within seconds.
    command_id = forged_release(stack, "front-door")
    wait_for(
        lambda: any(
            e["kind"] == "doorbell_refused" and e["data"]["command_id"] == command_id
            for e in public_entries(relay)
        ),
        20,
        "the doorbell's refusal in the public log",
    )
    refusal = next(e for e in public_entries(relay) if e["kind"] == "doorbell_refused")
    assert refusal["actor"] == "doorbell" and "front-door" not in json.dumps(refusal)
    assert refusal["data"]["code"] == "bad_signature" and "why" not in refusal["data"]

    # The client and the doorbell both saw this history.
    before = relay.audit.size()
    code, head_a, err = run("--relay", relay.url, "log", "head")
    assert code == 0 and json.loads(head_a)["size"] == before, err
    (tmp_path / "a.json").write_text(head_a)
    old_proof = tmp_path / "old-proof.json"
    old_proof.write_text(json.dumps(relay.audit.proof(1)))
    wait_for(
        lambda: bell.witness.head is not None and bell.witness.head.size == before,
        20,
        "the doorbell to witness the head",
    )
    # The doorbell let its refusal go only once proven in that head (over HTTP).
    wait_for(
        lambda: "refused" not in bell.bell.uplink.outbox.oldest_unproven(),
        20,
        "the doorbell to prove its refusal in the log",
    )
    assert bell.witness.alarm is None and not bell.alarms()

    # The attack. The operator's own check cannot see it.
    if attack == "rewrite":
        drop = {"request_refused", "doorbell_refused"}
        dropped = sum(e["kind"] in drop for e in relay.audit.entries())
        assert dropped >= 1
        rewrite(relay.audit, lambda e: e["kind"] not in drop, pad=dropped + 1)
        assert relay.audit.size() > before
    else:
        truncate(relay.audit, before - 2)
    assert relay.audit.verify().ok, relay.audit.verify().message
    after = relay.audit.size()

    # The doorbell sees the new head (the worker publishes it retained) and raises its flag.
    wait_for(lambda: bell.alarms() and bell.witness.alarm, 30, "the doorbell's alarm")
    event = bell.alarms()[0]
    assert head_size(event.data["earlier"]) == before and head_size(event.data["later"]) == after
    assert ("rollback" if attack == "truncate" else "rewritten") in bell.witness.alarm["why"]
    # The flag is on disk, and the owner's command says so (exit 1).
    from firmware import cli as doorbell

    with contextlib.redirect_stdout(io.StringIO()) as shown:
        code = doorbell.main(["log-status", "--data-dir", str(bell.witness.state_file.parent)])
    assert code == 1 and json.loads(shown.getvalue())["alarm"]["why"] == bell.witness.alarm["why"]

    # The client that saw the earlier head refuses, loudly, with both heads.
    code, out, err = run("--relay", relay.url, "log", "head")
    assert code == footage.EXIT_LOG_ALARM, (out, err)
    assert f"size {before}" in err and f"size {after}" in err
    # Every call checks, not only `log head`.
    code, _, err = run("--relay", relay.url, "--token", str(tmp_path / "none"), "asks")
    assert code in (footage.EXIT_LOG_ALARM, footage.EXIT_USAGE)
    # An old proof is not silently accepted against the new history: not by this client,
    # and not by one that never saw the old log but holds the key from provisioning.
    code, out, err = run("--relay", relay.url, "verify-proof", str(old_proof))
    assert code == footage.EXIT_LOG_ALARM, (out, err)
    key_file = tmp_path / "relay-log.pub"
    key_file.write_text(b64(relay.audit.public))
    code, out, err = run(
        "--state", str(tmp_path / "newcomer"), "--log-key", str(key_file),
        "--relay", relay.url, "verify-proof", str(old_proof),
    )  # fmt: skip
    assert code == footage.EXIT_LOG_ALARM and "earlier head" in err, (out, err)

    # Someone who only saw the new history can prove the two differ: compare heads.
    fresh = tmp_path / "fresh-state"
    code, head_b, err = run("--state", str(fresh), "--relay", relay.url, "log", "head")
    assert code == 0, err
    (tmp_path / "b.json").write_text(head_b)
    code, out, err = run(
        "--state", str(fresh), "--relay", relay.url, "log", "check-consistency",
        str(tmp_path / "a.json"), str(tmp_path / "b.json"),
    )  # fmt: skip
    assert code == footage.EXIT_LOG_ALARM and "earlier head" in err, (out, err)
    if attack == "rewrite":
        return
    # Truncated, then regrown to the old size: two signed heads of one size, two roots.
    # That proves the fork offline, with no help from the relay.
    for i in range(before - after):
        relay.audit.append("operator_action", "operator", {"action": f"regrow {i}"})
    code, head_c, err = run("--state", str(fresh), "--relay", relay.url, "log", "head")
    assert code == 0 and json.loads(head_c)["size"] == before, err
    (tmp_path / "c.json").write_text(head_c)
    code, out, err = run(
        "--log-key", str(key_file), "log", "check-consistency",
        str(tmp_path / "a.json"), str(tmp_path / "c.json"),
    )  # fmt: skip
    assert code == footage.EXIT_LOG_ALARM and f"two different logs of {before}" in err, err


def test_an_honest_log_raises_no_alarm_and_proofs_need_a_pinned_key(world, tmp_path):
    relay, bell, _ = world
    history(relay)
    code, head_a, err = run("--relay", relay.url, "log", "head")
    assert code == 0, err
    (tmp_path / "a.json").write_text(head_a)
    relay.engine.file_request("city-police", 51.5, -0.12, 90, 0, 600, "theft", "C-3", "consent")
    size = relay.audit.size()
    wait_for(
        lambda: bell.witness.head is not None and bell.witness.head.size == size,
        20,
        "the doorbell to accept the grown log",
    )
    assert bell.witness.alarm is None and bell.witness.checked >= 1
    code, head_b, err = run("--relay", relay.url, "log", "head")
    assert code == 0 and json.loads(head_b)["size"] == size, err
    (tmp_path / "b.json").write_text(head_b)
    code, out, err = run(
        "--relay", relay.url, "log", "check-consistency",
        str(tmp_path / "a.json"), str(tmp_path / "b.json"),
    )  # fmt: skip
    assert code == 0 and out.startswith("ok: one history"), err

    # A forged proof that carries its own key: refused without a pin, and against the pin.
    mallory = OwnerKeys.generate()
    forged = relay.audit.proof(2)
    forged["head"] = sign_payload(
        json.loads(unb64(forged["head"]["payload"])), mallory.sign_private
    )
    forged["relay_key"] = b64(mallory.sign_public)
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    code, out, err = run("--state", str(tmp_path / "nobody"), "verify-proof", str(path))
    assert code == footage.EXIT_USAGE and "no pinned relay key" in err, (out, err)
    code, out, err = run("--relay", relay.url, "verify-proof", str(path))
    assert code == footage.EXIT_FAILED and "another key" in out, (out, err)
    genuine = tmp_path / "genuine.json"
    genuine.write_text(json.dumps(relay.audit.proof(2)))
    code, out, err = run("--relay", relay.url, "verify-proof", str(genuine))
    assert code == 0 and out.startswith("ok: entry #2"), (out, err)
    # Another relay key served under the same address is refused.
    other = tmp_path / "other.pub"
    other.write_text(b64(mallory.sign_public))
    code, _, err = run("--relay", relay.url, "--log-key", str(other), "log", "head")
    assert code == footage.EXIT_LOG_ALARM and "pinned" in err

    # Anyone can recheck the whole public log against the signed head, and its sense.
    code, out, err = run("--relay", relay.url, "log", "verify")
    assert code == 0 and out.startswith(f"ok: {size} public entries"), (out, err)
    # An entry changed behind the signed heads, or a release with no decision: named.
    relay.audit.append("release", "front-door", {"request": "req-x", "clip": "c", "sha256": "0"})
    code, out, _ = run("--relay", relay.url, "log", "verify")
    assert code == footage.EXIT_FAILED and "release of clip c for request req-x" in out, out
    r = relay.audit.r
    entry = json.loads(r.lindex(ENTRIES, 1))
    entry["data"]["radius_m"] = 1
    r.lset(ENTRIES, 1, json.dumps(entry, sort_keys=True, separators=(",", ":")))
    code, out, _ = run("--relay", relay.url, "log", "verify")
    assert code == footage.EXIT_FAILED and "do not make the root" in out, out
