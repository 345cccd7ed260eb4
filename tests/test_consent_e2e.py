"""Request → ask → signed approval → release → fetch, through a real broker, Redis and HTTP."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import redis
import uvicorn
from conftest import ffprobe, small_config
from stack import wait_for

from common.mqtt import make_client
from footage import cli as footage
from hw_sim.runner import SimDoorbell
from hw_sim.scenes import make_scene
from protocol.crypto import OwnerKeys, b64
from relay.api import create_app
from relay.audit import AuditLog
from relay.blobs import LocalBlobStore, S3BlobStore
from relay.consent import ConsentEngine
from relay.index import RelayIndex
from relay.ingest import IngestWorker
from testing.localstack import free_port


class Relay:
    def __init__(
        self, stack, tmp: Path, blobs: str = "local", r=None, workers: int = 1, publish=None
    ) -> None:
        r = r if r is not None else redis.Redis.from_url(stack.redis.url)
        self.audit = AuditLog(r, OwnerKeys.generate().sign_private)
        self.engine = ConsentEngine(RelayIndex(r), self.audit)
        self.port = free_port()
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
        self.server = uvicorn.Server(uvicorn.Config(app, port=self.port, log_level="warning"))
        threading.Thread(target=self.server.run, daemon=True).start()
        wait_for(lambda: self.server.started, 10, "the API")
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
        str(t0 + 3600),
        "--reason",
        "burglary on the street",
        "--case",
        "CASE-42",
    )
    assert code == 0, out
    request_id = out.strip()

    # Each owner sees one ask with only their own clip.
    code, out = run_footage(relay, alice.token, "asks", "--json")
    (ask_a,) = json.loads(out)
    assert ask_a["clip_ids"] == [clips[alice][0].data["clip"]]
    code, out = run_footage(relay, bob.token, "asks", "--json")
    (ask_b,) = json.loads(out)

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

    # The relay never saw plaintext or a clip key.
    plain = mp4.read_bytes()
    key = alice.bell.store.clip_key(clips[alice][0].data["clip"])
    r = relay.engine.r
    stored = b"".join((r.dump(k) or b"") for k in r.scan_iter("*")) + b"".join(
        p.read_bytes() for p in (tmp_path / "blobs").rglob("*") if p.is_file()
    )
    for needle in (plain[100:164], plain[-64:], key, b64(key).encode()):
        assert needle not in stored

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
    with pytest.raises(KeyError):
        alice.bell.store.clip_key(clip_id)

    result = relay.audit.verify()
    assert result.ok, result.message
    if len(relay.workers) > 1:
        received = [w.stats["received"] for w in relay.workers]
        assert all(received), f"both workers share the subscription: {received}"
        assert sum(w.stats["duplicates"] for w in relay.workers) == 0
    kinds = [e["kind"] for e in relay.audit.entries()]
    for k in ("request", "ask", "decision", "release", "deletion"):
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
