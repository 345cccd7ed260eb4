"""Request → ask → signed approval → release → fetch, through a real broker, Redis and HTTP."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis
from conftest import ffprobe, small_config
from custody import find
from stack import wait_for

from common.mqtt import make_client
from firmware.controller import DoorbellEvent
from footage import cli as footage
from hw_sim.runner import SimDoorbell
from hw_sim.scenes import make_scene
from protocol.crypto import OwnerKeys, b64, unb64, unwrap_key
from relay.api import create_app
from relay.audit import AuditLog
from relay.blobs import LocalBlobStore, S3BlobStore
from relay.consent import ConsentEngine
from relay.index import RelayIndex
from relay.ingest import IngestWorker
from testing.localstack import bound_socket, free_port, serve_in_thread


class Relay:
    def __init__(
        self, stack, tmp: Path, blobs: str = "local", r=None, workers: int = 1, publish=None
    ) -> None:
        r = r if r is not None else redis.Redis.from_url(stack.redis.url)
        self.audit = AuditLog(r, OwnerKeys.generate().sign_private)
        self.engine = ConsentEngine(RelayIndex(r), self.audit)
        self.sock = bound_socket()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.moto = None
        if blobs == "s3":
            from moto.server import ThreadedMotoServer

            s3_port = free_port()
            self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port, verbose=False)
            self.moto.start()
            creds = {
                "aws_access_key_id": "test",
                "aws_secret_access_key": "test",
                "region_name": "us-east-1",
            }
            self.blobs = S3BlobStore("released", f"http://127.0.0.1:{s3_port}", **creds)
            self.blobs.s3.create_bucket(Bucket="released")
        else:
            self.blobs = LocalBlobStore(tmp / "blobs", r, self.url)
        pub = make_client(stack.relay_settings(), "relay-api-test", "relay")
        pub.connect("127.0.0.1", stack.broker.relay_port)
        pub.loop_start()
        self.pub = pub
        publish = publish or (lambda t, p: pub.publish(t, p, qos=1))
        app = create_app(self.engine, self.blobs, publish)
        self.server = serve_in_thread(app, self.sock)
        self.stop = threading.Event()
        # Workers of one group share one shared subscription.
        self.workers = [
            IngestWorker(
                stack.relay_settings(),
                RelayIndex(r),
                f"e2e-{i}",
                audit=self.audit,
                blobs=self.blobs,
            )
            for i in range(workers)
        ]
        for w in self.workers:
            threading.Thread(target=w.run, args=(self.stop,), daemon=True).start()
            wait_for(w.connected.is_set, 10, "a worker")

    def close(self) -> None:
        self.stop.set()
        self.server.should_exit = True
        self.pub.loop_stop()
        if self.moto is not None:
            self.moto.stop()

    def put_blob(self, tmp: Path, name: str, data: bytes) -> None:
        if self.moto is not None:
            self.blobs.s3.put_object(Bucket="released", Key=name, Body=data)
        else:
            (tmp / "blobs" / name).write_bytes(data)

    def drop_blob(self, tmp: Path, name: str) -> None:
        if self.moto is not None:
            self.blobs.s3.delete_object(Bucket="released", Key=name)
        else:
            (tmp / "blobs" / name).unlink(missing_ok=True)

    def stored_blobs(self, tmp: Path) -> bytes:
        if self.moto is not None:
            s3 = self.blobs.s3
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket="released").get("Contents", [])]
            return b"".join(s3.get_object(Bucket="released", Key=k)["Body"].read() for k in keys)
        return b"".join(p.read_bytes() for p in (tmp / "blobs").rglob("*") if p.is_file())


class Home:
    """A doorbell with its owner, connected to the relay's broker."""

    def __init__(self, stack, relay: Relay, tmp: Path, device: str, lat: float, lon: float):
        self.owner = OwnerKeys.generate()
        self.keys = tmp / f"{device}-owner-keys"
        self.owner.save(self.keys)
        name = f"owner-of-{device}"
        (tmp / f"{name}.token").write_text(
            relay.engine.add_owner(name, self.owner.sign_public, self.owner.box_public)
        )
        self.token = tmp / f"{name}.token"
        mqtt_cfg = stack.add_device(device, lat, lon)
        relay.engine.r.hset(f"dev:{{{device}}}:info", "owner", name)
        cfg = small_config(
            tmp / device,
            device={"id": device, "data_dir": str(tmp / device)},
            owner={
                "sign_public": b64(self.owner.sign_public),
                "box_public": b64(self.owner.box_public),
            },
            mqtt={**mqtt_cfg.model_dump(mode="json"), "confirm_timeout_s": 5},
        )
        self.events: list = []
        self.bell = SimDoorbell(
            cfg, make_scene("porch", 320, 240), self.events.append, owner=self.owner
        )
        self.uplink = self.bell.uplink
        self.commands = self.uplink.commands
        wait_for(self.uplink.link.connected.is_set, 10, f"{device} to connect")

    def record_clip(self) -> DoorbellEvent:
        """A press at 2 s and the clip it records (the ``clip_saved`` event), with the
        doorbell's controller stopped after it so nothing else is recorded."""
        self.bell.schedule_press(2.0)
        self.bell.run(9.0)
        self.bell.controller.shutdown()
        (saved,) = [e for e in self.events if e.kind == "clip_saved"]
        return saved

    def close(self) -> None:
        self.uplink.stop()


def run_footage(relay: Relay, token: Path, *args: str) -> tuple[int, str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = footage.main(["--relay", relay.url, "--token", str(token), *args])
    return code, out.getvalue()


@pytest.fixture(params=["local"])
def world(stack, tmp_path, request):
    if request.param == "cluster":
        from testing.localstack import LocalRedisCluster

        cluster = LocalRedisCluster(tmp_path / "cluster").start()
        rc = cluster.client()
        stack.index = RelayIndex(rc)  # doorbells are registered in the cluster
        relay = Relay(stack, tmp_path, r=rc, workers=2)
    else:
        cluster = None
        relay = Relay(stack, tmp_path, blobs=request.param)
    homes = [
        Home(stack, relay, tmp_path, "alice-door", 51.5000, -0.1200),
        Home(stack, relay, tmp_path, "bob-door", 51.5004, -0.1200),
    ]
    yield relay, homes
    for h in homes:
        h.close()
    relay.close()
    if cluster is not None:
        cluster.stop()


def redis_contents(r: redis.Redis) -> bytes:
    """Every key and value in Redis, uncompressed (DUMP would compress)."""
    out = []
    for k in r.scan_iter("*"):
        t = r.type(k).decode()
        out.append(k)
        if t == "string":
            out.append(r.get(k) or b"")
        elif t == "hash":
            out += [x for kv in r.hgetall(k).items() for x in kv]
        elif t == "list":
            out += r.lrange(k, 0, -1)
        elif t == "set":
            out += list(r.smembers(k))
        elif t == "zset":
            out += r.zrange(k, 0, -1)
        elif t == "stream":
            out += [v for _, fields in r.xrange(k) for kv in fields.items() for v in kv]
    return b"\n".join(out)


@pytest.mark.parametrize("world", ["local", "s3", "cluster"], indirect=True)
def test_the_whole_consent_cycle(world, tmp_path, caplog):
    caplog.set_level("DEBUG")
    relay, (alice, bob) = world
    for home in (alice, bob):
        home.bell.schedule_press(2.0)
        home.bell.run(9.0)
        home.bell.controller.shutdown()
    clips = {h: [e for e in h.events if e.kind == "clip_saved"] for h in (alice, bob)}
    assert all(len(c) == 1 for c in clips.values())
    wait_for(lambda: relay.engine.index.counts()["clips"] == 2, 30, "both clips indexed")

    police = OwnerKeys.generate()
    police.save(tmp_path / "police-keys")
    (tmp_path / "police.token").write_text(
        relay.engine.add_requester("city-police", "agency", police.box_public)
    )
    token = tmp_path / "police.token"
    t0 = clips[alice][0].data["start"] - 60
    code, out = run_footage(
        relay,
        token,
        "request",
        "--lat",
        "51.5002",
        "--lon",
        "-0.12",
        "--radius",
        "150",
        "--from",
        str(t0),
        "--to",
        str(min(t0 + 3600, time.time())),
        "--reason",
        "burglary on the street",
        "--case",
        "CASE-42",
    )
    assert code == 0, out
    request_id = out.strip()

    # Each owner sees one ask with only their own clip (asked just after the answer).
    wait_for(lambda: json.loads(run_footage(relay, bob.token, "asks", "--json")[1]), 10, "asks")
    code, out = run_footage(relay, alice.token, "asks", "--json")
    (ask_a,) = json.loads(out)
    assert ask_a["clip_ids"] == [clips[alice][0].data["clip"]]
    code, out = run_footage(relay, bob.token, "asks", "--json")
    (ask_b,) = json.loads(out)
    # Each owner's ask is under the commitment the public record holds for the request.
    (entry,) = [e for e in relay.audit.entries() if e["kind"] == "request"]
    code, out = run_footage(relay, alice.token, "asks")
    assert f"on the public record under asks_root {entry['data']['asks_root']}" in out

    assert run_footage(relay, bob.token, "deny", ask_b["id"])[0] == 0
    code, out = run_footage(relay, alice.token, "approve", ask_a["id"], "--keys", str(alice.keys))
    assert code == 0, out

    wait_for(lambda: alice.commands.counters["released"] == 1, 30, "the doorbell to release")
    wait_for(
        lambda: run_footage(relay, token, "status", request_id)[1].count("clip_id") == 1,
        30,
        "the relay to index the release",
    )
    code, out = run_footage(
        relay,
        token,
        "fetch",
        request_id,
        "--key",
        str(tmp_path / "police-keys"),
        "--out",
        str(tmp_path / "got"),
    )
    assert code == 0, out
    (mp4,) = (tmp_path / "got").glob("*.mp4")
    assert mp4.name.startswith("alice-door-")
    assert ffprobe(mp4)["streams"][0]["codec_name"] == "h264"
    assert bob.commands.counters["released"] == 0

    # The relay never saw plaintext or a clip key: every value of every Redis type,
    # every blob (local folder or S3 bucket) and every log line, searched for the key
    # raw, hex, base64 and base64url (also inside base64 values) and for windows of
    # the plaintext.
    plain = mp4.read_bytes()
    record = alice.bell.store.get(clips[alice][0].data["clip"])
    key = unwrap_key(unb64(record.wrapped_key), alice.owner.box_private)
    step = max(1, len(plain) // 16)
    secrets = {"clip key": key} | {
        f"plaintext@{i}": plain[i : i + 48] for i in range(0, len(plain) - 48, step)
    }
    r = relay.engine.r

    def custody() -> dict[str, bytes]:
        return {
            "redis": redis_contents(r),
            "blobs": relay.stored_blobs(tmp_path),
            "logs": caplog.text.encode(),
        }

    assert find(secrets, custody()) == []
    # The search sees what it looks for: the key planted in each place, in some form.
    url = base64.urlsafe_b64encode(key).rstrip(b"=")
    plants = {
        "redis": [
            lambda: r.set("planted:str", json.dumps({"note": "x", "k": b64(key)})),
            lambda: r.hset("planted:h", "f", json.dumps({"k": b64(key)})),
            lambda: r.xadd("planted:s", {"v": url}),
            lambda: r.zadd("planted:z", {key.hex(): 1}),
            lambda: r.sadd("planted:set", b64(b64(key).encode())),
            lambda: r.rpush("planted:l", key),
        ],
        "logs": [lambda: logging.getLogger("relay.api").warning("oops %s", key.hex().upper())],
        "blobs": [lambda: relay.put_blob(tmp_path, "planted", key)],
    }
    for where, ways in plants.items():
        for plant in ways:
            plant()
            found = find({"clip key": key}, custody())
            # "redis~0.3" is a value decoded from base64 found in Redis.
            assert where in {w.split("~")[0] for _, w in found}, where
            for k in r.scan_iter("planted:*"):
                r.delete(k)
            relay.drop_blob(tmp_path, "planted")
            caplog.clear()
    assert find(secrets, custody()) == []

    # Alice deletes her clip: the doorbell shreds it, the relay forgets it and its copy.
    clip_id = clips[alice][0].data["clip"]
    code, out = run_footage(
        relay, alice.token, "delete", clip_id, "--device", "alice-door", "--keys", str(alice.keys)
    )
    assert code == 0, out
    wait_for(lambda: alice.bell.store.get(clip_id) is None, 30, "the doorbell to delete")
    wait_for(lambda: relay.engine.index.clips(device="alice-door") == [], 30, "the relay to forget")
    wait_for(lambda: relay.engine.released(request_id) == [], 30, "the release to be forgotten")
    assert relay.stored_blobs(tmp_path) == b"", "the released ciphertext is gone too"
    assert not list(alice.bell.store.dir.glob(f"{clip_id}*")), "ciphertext and sealed key gone"

    result = relay.audit.verify()
    assert result.ok, result.message
    if len(relay.workers) > 1:
        received = [w.stats["received"] for w in relay.workers]
        assert all(received), f"both workers share the subscription: {received}"
        assert sum(w.stats["duplicates"] for w in relay.workers) == 0
    kinds = [e["kind"] for e in relay.audit.entries()]
    for k in ("request", "decision", "release", "deletion"):
        assert k in kinds

    from relay.report import build_report

    report = build_report(relay.audit.entries(), 0, time.time() + 1, relay.engine.policy())
    assert (
        report["requests"],
        report["asks"],
        report["approvals"],
        report["denials"],
        report["clips_released"],
        report["deletions"],
    ) == (1, 2, 1, 1, 1, 1)
    assert report["requests_by_requester"] == {"city-police": 1}


def test_requests_outside_policy_are_refused_and_logged(world, tmp_path):
    relay, _ = world
    req = OwnerKeys.generate()
    (tmp_path / "n.token").write_text(
        relay.engine.add_requester("nosy", "neighbour", req.box_public)
    )
    now = time.time()
    code, _ = run_footage(
        relay,
        tmp_path / "n.token",
        "request",
        "--lat",
        "51.5",
        "--lon",
        "-0.12",
        "--radius",
        "5000",
        "--from",
        str(now - 600),
        "--to",
        str(now),
        "--reason",
        "curious",
        "--case",
        "none",
    )
    assert code == 1
    assert [e["kind"] for e in relay.audit.entries()][-1] == "request_refused"


def test_an_owner_views_their_own_clip_by_the_same_signed_path(world, tmp_path):
    relay, (alice, bob) = world
    saved = alice.record_clip()
    wait_for(lambda: relay.engine.index.counts()["clips"] == 1, 30, "the clip indexed")
    clip_id = saved.data["clip"]
    # Bob cannot view Alice's doorbell, even naming it.
    code, _ = run_footage(
        relay, bob.token, "view", clip_id, "--device", "alice-door", "--keys", str(bob.keys),
        "--out", str(tmp_path / "bob"),
    )  # fmt: skip
    assert code == 1
    # Nor can Alice's client (or anyone with her token) make a "view" for another key.
    from protocol.decisions import Approval, sign_decision

    other = OwnerKeys.generate()
    key = unwrap_key(unb64(alice.bell.store.get(clip_id).wrapped_key), alice.owner.box_private)
    wrong = Approval.create(
        "view-0123456789abcdef", "alice-door", [clip_id], other.box_public, time.time() + 60,
        {clip_id: key},
    )  # fmt: skip
    resp = httpx.post(
        f"{relay.url}/v1/views",
        json={"approval": sign_decision(wrong, alice.owner.sign_private)},
        headers={"Authorization": f"Bearer {alice.token.read_text().strip()}"},
    )
    assert resp.status_code == 422 and "own key" in resp.json()["reason"]
    code, out = run_footage(
        relay, alice.token, "view", clip_id, "--device", "alice-door", "--keys", str(alice.keys),
        "--out", str(tmp_path / "mine"), "--wait", "30",
    )  # fmt: skip
    assert code == 0, out
    (mp4,) = (tmp_path / "mine").glob("*.mp4")
    from conftest import plain_clip

    assert mp4.read_bytes() == plain_clip(alice.bell, clip_id, tmp_path / "x.mp4").read_bytes()
    assert alice.commands.counters["released"] == 1, "the doorbell checked a signed approval"
    actions = [e["data"].get("action") for e in relay.audit.entries()]
    assert "owner_view" in actions
