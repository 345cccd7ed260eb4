"""``make demo``: three simulated doorbells and a relay, end to end, in about a minute.

It starts its own Mosquitto (the project's config and ACL) and Redis on free
loopback ports, ``relay serve`` (HTTP API + ingestion worker), and three
simulated doorbells with their owners' keys.  Then the story: visitors ring and
move, clips are recorded, encrypted and indexed; the police ask for footage of
the street; one owner approves, one denies; the police fetch and decrypt what
was released; a passer-by has the clip of them erased (from the doorbell and the
relay); another asks that the pavement stop being filmed, the owner accepts, and
the next clip is decoded to show it black; the audit log verifies; the
transparency report, passers-by's requests included, is printed.
Everything it started is stopped at the end, on Ctrl-C, or on a failure.

    python -m demo [--data-dir DIR] [--short]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from firmware.config import parse_config
from firmware.consent import CommandHandler
from firmware.uplink import Uplink
from hw_sim.runner import SimDoorbell
from hw_sim.scenes import make_scene
from protocol.crypto import OwnerKeys, b64
from testing.localstack import LocalMosquitto, LocalRedis, free_port

HOMES = [  # device, owner, lat, lon, scene, ring at
    ("alice-door", "alice", 51.50070, -0.12460, "person", 6.0),
    ("bob-door", "bob", 51.50085, -0.12430, "dim_person", 7.0),
    ("carol-door", "carol", 51.50110, -0.12500, "porch", 4.0),
]


POW_BITS = 18
"""The demo relay's proof of work for passers-by: 2^18 hashes expected, a fraction of a
second in ``footage``, with a few progress lines; a real relay asks 20 bits
(relay.config.BystanderConfig), about ten seconds in a browser."""
PAVEMENT = [(0.0, 0.62), (1.0, 0.62), (1.0, 1.0), (0.0, 1.0)]
"""The spot a passer-by asks Bob's doorbell to stop filming (fractions of the picture)."""


class DemoError(RuntimeError):
    pass


def say(step: str, text: str = "") -> None:
    print(f"\n== {step}" if not text else f"   {text}", flush=True)


def run(cmd: list[str], what: str, show: bool = True, progress: bool = False) -> str:
    """Run one of the project's commands as a user would, and show it (with what it
    reports on stderr as it goes if ``progress``: the proof of work's tries)."""
    names = {"footage.cli": "footage", "relay.cli": "relay", "firmware.cli": "doorbell"}
    shown = " ".join(shlex.quote(names.get(c, c)) for c in cmd if c not in (sys.executable, "-m"))
    if show:
        print(f"   $ {shown}", flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise DemoError(f"{what} failed: {r.stderr.strip() or r.stdout.strip()}")
    if progress:
        for line in r.stderr.splitlines():
            print(f"   {line}", flush=True)
    return r.stdout


def relay_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "relay.cli", "--config", str(config), *args]


def footage_cmd(api: str, token: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "footage.cli", "--relay", api, "--token", str(token), *args]


def wait(pred: Any, timeout: float, what: str, poll: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise DemoError(f"timed out waiting for {what}")


class Home:
    """One simulated doorbell, provisioned from the relay's bundle, online."""

    def __init__(
        self, root: Path, bundle: dict[str, Any], owner: OwnerKeys, scene: str, short: bool
    ) -> None:
        device = bundle["device"]
        self.device = device
        data = root / "doorbells" / device
        secret = data / "broker-password"
        data.mkdir(parents=True, exist_ok=True)
        secret.write_text(bundle["broker"]["password"])
        secret.chmod(0o600)
        self.config = parse_config(
            {
                "device": {"id": device, "data_dir": str(data)},
                "camera": {
                    "main_size": [320, 240] if short else [640, 480],
                    "lores_size": [160, 120] if short else [320, 240],
                    "fps": 15,
                },
                "clips": {"pre_roll_s": 3.0, "post_roll_s": 3.0},
                "mqtt": {
                    "enabled": True,
                    "host": bundle["broker"]["host"],
                    "port": bundle["broker"]["port"],
                    "password_file": str(secret),
                    "confirm_timeout_s": 5.0,
                    "backoff_max_s": 2.0,
                },
                "owner": {
                    "sign_public": b64(owner.sign_public),
                    "box_public": b64(owner.box_public),
                },
            }
        )
        self.events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        w, h = self.config.camera.main_size
        # The story happened a minute ago, so its clips fall in the request's window.
        self.bell = SimDoorbell(
            self.config,
            make_scene(scene, w, h, seed=2),
            self.events.put,
            start_wall=time.time() - 60,
            owner=owner,
        )
        assert self.bell.uplink is not None, "mqtt.enabled: the uplink is wired by build()"
        self.uplink: Uplink = self.bell.uplink

    @property
    def commands(self) -> CommandHandler:
        assert self.uplink.commands is not None, "start() first"
        return self.uplink.commands

    def start(self) -> None:
        assert self.uplink.link is not None
        if not self.uplink.link.connected.wait(10):
            raise DemoError(f"{self.device} could not connect to the broker")

    def stop(self) -> None:
        self.uplink.stop()

    def drain(self) -> list[Any]:
        """The doorbell's events since the last call."""
        out = []
        while not self.events.empty():
            out.append(self.events.get())
        return out

    def run_until(self, kind: str, timeout: float, what: str) -> Any:
        """Run the simulated doorbell frame by frame (it takes commands with its frames)
        until it emits ``kind``; the timeout is wall-clock, as for everything waited on."""
        found: list[Any] = []

        def step() -> bool:
            self.bell.run(1 / self.config.camera.fps)
            found.extend(e for e in self.drain() if e.kind == kind)
            return bool(found)

        wait(step, timeout, what, poll=0.0)
        return found[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("demo-data"))
    ap.add_argument("--short", action="store_true", help="smaller video, shorter story (tests)")
    ap.add_argument(
        "--stay",
        action="store_true",
        help="keep the relay and doorbells running after the story (Alice's page), until Ctrl-C",
    )
    args = ap.parse_args(argv)
    root = args.data_dir.resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            summary = story(root, args.short, stack)
            if args.stay:
                print(f"\n{summary}\n\nStaying up for Alice's page (Ctrl-C stops everything).")
                while True:
                    time.sleep(3600)
    except KeyboardInterrupt:
        print("\ninterrupted: everything the demo started has been stopped", file=sys.stderr)
        return 130
    except DemoError as err:
        print(
            f"\ndemo failed: {err}\n(everything it started has been stopped; files are in {root})",
            file=sys.stderr,
        )
        return 1
    print(f"\n== Done in {time.monotonic() - started:.0f} s\n{summary}")
    return 0


def story(
    root: Path, short: bool, stack: ExitStack, timings: dict[str, float] | None = None
) -> str:
    """Run the whole story; ``timings`` (if given) receives how long the release took."""
    timings = {} if timings is None else timings
    say("1. Starting a broker, Redis and the relay (all on loopback, all stopped at the end)")
    os.environ["FOOTAGE_STATE"] = str(root / "footage-state")  # pinned log keys, last heads
    broker = stack.enter_context(LocalMosquitto(root / "mosquitto"))
    rds = stack.enter_context(LocalRedis(root / "redis"))
    (root / "relay").mkdir()
    relay_secret = root / "relay" / "broker-password"
    relay_secret.write_text("relay-demo-password")
    broker.add_user("relay", "relay-demo-password")
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    config = root / "relay" / "relay.toml"
    config.write_text(f"""
[broker]
port = {broker.relay_port}
password_file = "{relay_secret}"
backoff_max_s = 2.0
[redis]
url = "{rds.url}"
[mosquitto]
password_file = "{broker.password_file}"
pid_file = "{broker.pid_file}"
[provisioning]
bundles_dir = "{root / "relay" / "bundles"}"
broker_port = {broker.port}
[audit]
key_file = "{root / "relay" / "audit.key"}"
[api]
port = {api_port}
public_url = "{api}"
blobs_dir = "{root / "relay" / "blobs"}"
[bystander]
difficulty = {POW_BITS}
""")
    say("", f"Mosquitto on 127.0.0.1:{broker.port}, Redis on {rds.url}, relay API on {api}")
    serve_log = stack.enter_context(open(root / "relay" / "serve.log", "w"))  # noqa: SIM115
    serve = subprocess.Popen(
        relay_cmd(config, "serve", "--workers", "1"), stdout=subprocess.DEVNULL, stderr=serve_log
    )
    stack.callback(lambda: (serve.terminate(), serve.wait(15)))
    wait(lambda: _healthy(api), 30, "the relay API")
    wait(
        lambda: subprocess.run(relay_cmd(config, "status"), capture_output=True).returncode == 0,
        30,
        "an ingestion worker",
    )

    say("2. Three homes: each owner makes keys; the operator registers them and their doorbells")
    homes: list[Home] = []
    for device, owner, lat, lon, scene, _ in HOMES:
        keys_dir = root / "owners" / owner
        keys = OwnerKeys.generate()
        keys.save(keys_dir)
        token = run(
            relay_cmd(config, "owners", "add", owner, "--keys", str(keys_dir)), "owners add"
        ).strip()
        (keys_dir / "token").write_text(token)
        out = run(
            relay_cmd(
                config,
                "devices",
                "add",
                device,
                "--owner",
                owner,
                "--lat",
                str(lat),
                "--lon",
                str(lon),
                "--json",
            ),
            "devices add",
        )
        bundle = json.loads(Path(json.loads(out)["bundle"]).read_text())
        home = Home(root, bundle, keys, scene, short)
        home.start()
        stack.callback(home.stop)
        homes.append(home)

    alice_dir = root / "owners" / "alice"
    say(
        "",
        f"Alice's page: {api}/app/  (sign in with the token in {alice_dir / 'token'}, "
        f"then import sign.key and box.key from {alice_dir}; rings show up live; "
        "`.venv/bin/python -m demo --stay` keeps it up after the story)",
    )

    say("3. Life at the door (simulated cameras and buttons, faster than real time)")
    seconds = 14.0 if short else 24.0
    for home, (_, _, _, _, _, ring_at) in zip(homes, HOMES, strict=True):
        home.bell.schedule_press(ring_at)
        home.bell.run(seconds)
        home.bell.controller.shutdown()
        while not home.events.empty():
            ev = home.events.get()
            if ev.kind == "ring_snapshot":  # sealed to the owner, for the owner's page
                continue
            extra = ""
            if ev.kind == "clip_saved":
                extra = (
                    f" {ev.data['duration_s']:.1f} s, starts {ev.data['preroll_s']:.1f} s "
                    "before its trigger, encrypted to the owner"
                )
            say("", f"{home.device:11} t={ev.t:5.1f}s {ev.kind}{extra}")
    total = sum(len(h.bell.store.list()) for h in homes)
    wait(
        lambda: (
            len(json.loads(run(relay_cmd(config, "clips", "list", "--json"), "clips list", False)))
            == total
        ),
        60,
        "the relay to index every clip",
    )
    print(run(relay_cmd(config, "clips", "list"), "clips list"), end="")

    say("4. The police ask for footage of the street (the relay checks its policy and asks owners)")
    police = root / "requesters" / "city-police"
    OwnerKeys.generate().save(police)
    token = run(
        relay_cmd(
            config,
            "requesters",
            "add",
            "city-police",
            "--kind",
            "agency",
            "--pubkey",
            str(police / "box.pub"),
        ),
        "requesters add",
    ).strip()
    (police / "token").write_text(token)
    now = time.time()
    request_id = run(
        footage_cmd(
            api,
            police / "token",
            "request",
            "--lat",
            "51.5008",
            "--lon",
            "-0.1245",
            "--radius",
            "100",
            "--from",
            str(int(now - 3600)),
            "--to",
            str(int(now)),
            "--reason",
            "a bicycle was stolen",
            "--case",
            "CASE-2026-0042",
        ),
        "request",
    ).strip()
    say("", f"request {request_id} accepted; the police are not told who has cameras")

    say("5. Owners decide: Alice approves, Bob denies")
    alice, bob = root / "owners" / "alice", root / "owners" / "bob"
    # Owners are asked just after the police get their answer (which must not depend on
    # how many homes the area holds).
    wait(
        lambda: json.loads(run(footage_cmd(api, bob / "token", "asks", "--json"), "asks", False)),
        30,
        "the owners to be asked",
    )
    asks_a = json.loads(run(footage_cmd(api, alice / "token", "asks", "--json"), "asks"))
    print(run(footage_cmd(api, alice / "token", "asks"), "asks", False), end="")
    ask_b = json.loads(run(footage_cmd(api, bob / "token", "asks", "--json"), "asks", False))
    if not asks_a or not ask_b:
        raise DemoError("an owner was not asked")
    approved_at = time.monotonic()
    print(
        run(
            footage_cmd(api, alice / "token", "approve", asks_a[0]["id"], "--keys", str(alice)),
            "approve",
        ),
        end="",
    )
    print(run(footage_cmd(api, bob / "token", "deny", ask_b[0]["id"]), "deny"), end="")
    wait(
        lambda: homes[0].commands.counters["released"] > 0,
        60,
        "Alice's doorbell to verify the approval and upload",
    )
    say(
        "",
        "Alice's client sealed the clip key to the police's key inside her signed approval; "
        "her doorbell checked the signature itself and uploaded ciphertext only",
    )

    say("6. The police fetch and decrypt what was released")
    out_dir = root / "released-to-police"
    wait(
        lambda: (
            '"clip_id"'
            in run(footage_cmd(api, police / "token", "status", request_id), "status", False)
        ),
        60,
        "the release to reach the relay",
    )
    fetched = run(
        footage_cmd(
            api, police / "token", "fetch", request_id, "--key", str(police), "--out", str(out_dir)
        ),
        "fetch",
    ).split()
    timings["approved_to_fetched"] = time.monotonic() - approved_at
    for f in fetched:
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", f],
            capture_output=True,
            text=True,
        )
        say("", f"{f}: a {probe.stdout.strip() or '?'} s MP4 (ffprobe)")

    passers_by(root, api, config, homes, timings)

    say("9. The record: verify the audit log, print the transparency report")
    print(run(relay_cmd(config, "audit", "verify"), "audit verify"), end="")
    print(
        run(
            relay_cmd(
                config,
                "report",
                "--from",
                str(int(now - 86400)),
                "--to",
                str(int(time.time() + 60)),
            ),
            "report",
        ),
        end="",
    )

    return f"""What happened: three doorbells recorded {total} clips, each encrypted on the doorbell
to its owner. The police asked for footage of the street; the relay asked the three owners.
Alice said yes, Bob said no, Carol did not answer (in 72 h that counts as no). Only Alice's
clips left her home, their keys sealed to the police's key by her own client. The relay never
held a key: it saw metadata and ciphertext. A passer-by, without an account, had Alice erase
the clip of them (gone from her doorbell and the relay, the police's earlier copy flagged to
follow up); another had Bob's doorbell stop filming the pavement, black in its next clip.
Neither learnt which home was asked. Every step is in a verified, signed audit log.

Files: {root}
  doorbells/*/clips     encrypted clips and snapshots      owners/*   owners' keys and tokens
  released-to-police/   what the police could decrypt      relay/     relay config, audit key, logs
  passers-by/           their saved requests (status)      bob-*-mask.mp4  Bob before/after

Try next:
  .venv/bin/doorbell clips export ID --data-dir {root}/doorbells/alice-door \\
        --owner-key {alice} --out clip.mp4
  .venv/bin/doorbell sim --scene headlights --seconds 20 --press-at 5
  .venv/bin/python -m bench.motion        # the motion detector against the field
  make bench                              # every benchmark"""


def passers_by(
    root: Path, api: str, config: Path, homes: list[Home], timings: dict[str, float]
) -> None:
    """Steps 7 and 8: a passer-by has Alice's clips erased; another has Bob's doorbell stop
    filming the pavement, and the next clip shows it black."""
    alice_home, bob_home = homes[0], homes[1]
    alice, bob = root / "owners" / "alice", root / "owners" / "bob"
    people = root / "passers-by"
    people.mkdir()
    now = time.time()
    window = ["--from", str(int(now - 1800)), "--to", str(int(now))]

    def bystander(*args: str) -> list[str]:  # no account: anyone may ask
        return [sys.executable, "-m", "footage.cli", "--relay", api, "bystander", *args]

    def bystander_ask(owner: Path) -> dict[str, Any] | None:
        asks = json.loads(run(footage_cmd(api, owner / "token", "asks", "--json"), "asks", False))
        return next((a for a in asks if a.get("bystander")), None)

    say("7. A passer-by who walked past Alice's door asks for the footage of them to be erased")
    say(
        "",
        f"No account: the relay asks for a proof of work instead ({POW_BITS} bits in this demo, "
        "so it takes under a second; a real relay asks 20) and limits requests per address",
    )
    erase_file = people / "erase.json"
    lat, lon = HOMES[0][2], HOMES[0][3]
    erase_id = run(
        bystander(
            "request", "--kind", "erase", "--lat", str(lat), "--lon", str(lon),
            "--radius", "15", *window,
            "--description", "grey hoodie, walked up the path and back",
            "--save", str(erase_file),
        ),
        "bystander request",
        progress=True,
    ).strip()  # fmt: skip
    say("", f"request {erase_id} filed; the passer-by is not told which homes have cameras")
    ask = wait(lambda: bystander_ask(alice), 30, "Alice to be asked by the passer-by")
    print(run(footage_cmd(api, alice / "token", "asks"), "asks"), end="")
    # All of a request's asks are made together: by now Bob would have his.
    if bystander_ask(bob) is not None:
        raise DemoError("Bob was asked, but his doorbell is 27 m away, outside the 15 m asked")
    erased = set(ask["clip_ids"])
    print(
        run(
            footage_cmd(api, alice / "token", "answer", ask["id"], "erase", "--keys", str(alice)),
            "answer erase",
        ),
        end="",
    )
    wait(
        lambda: alice_home.commands.counters["deleted"] >= len(erased),
        60,
        "Alice's doorbell to check her signed deletions and delete",
    )
    left = {r.id for r in alice_home.bell.store.list()}
    if erased & left:
        raise DemoError(f"Alice's doorbell still holds {sorted(erased & left)}")
    say("", f"alice-door deleted {', '.join(sorted(erased))} (each deletion signed by Alice)")

    def relay_forgot() -> bool:
        listed = json.loads(run(relay_cmd(config, "clips", "list", "--json"), "clips", False))
        return not erased & {c.get("clip_id") or c.get("id") for c in listed}

    wait(relay_forgot, 60, "the relay to drop the erased clips from its index")
    print(run(relay_cmd(config, "clips", "list"), "clips list"), end="")
    status = wait(
        lambda: json.loads(run(bystander("status", str(erase_file)), "status", False))["answers"],
        30,
        "the passer-by's answer",
    )
    print(textwrap.indent(run(bystander("status", str(erase_file)), "status"), "   "), end="")
    if [a["outcome"] for a in status] != ["erase"]:
        raise DemoError(f"the passer-by was told {status}, not that the clips were erased")
    say("", "the passer-by learns the answer and how many clips went, never which home")

    say("8. Another passer-by asks Bob's doorbell to stop filming the pavement")
    stop_file = people / "stop-filming.json"
    lat, lon = HOMES[1][2], HOMES[1][3]
    polygon = [f"{x:g},{y:g}" for x, y in PAVEMENT]
    stop_id = run(
        bystander(
            "request", "--kind", "stop_filming", "--lat", str(lat), "--lon", str(lon),
            "--radius", "15", *window, "--polygon", *polygon,
            "--description", "I walk my dog past here every day: please mask the pavement",
            "--save", str(stop_file),
        ),
        "bystander request",
        progress=True,
    ).strip()  # fmt: skip
    say("", f"request {stop_id} filed")
    ask = wait(lambda: bystander_ask(bob), 30, "Bob to be asked by the passer-by")
    print(run(footage_cmd(api, bob / "token", "asks"), "asks"), end="")
    before = bob_home.bell.store.list()[0].id  # recorded in step 3, without the mask
    print(
        run(
            footage_cmd(api, bob / "token", "answer", ask["id"], "accept", "--keys", str(bob)),
            "answer accept",
        ),
        end="",
    )
    applied = bob_home.run_until("masks_applied", 60, "Bob's doorbell to apply the mask")
    say(
        "",
        f"bob-door: masks_applied, set {applied.data['hash'][:16]}..., "
        f"{applied.data['masks']} owner mask(s); it checked Bob's signature itself",
    )

    def on_the_record() -> bool:
        entries = json.loads(run(relay_cmd(config, "audit", "list", "--json"), "audit", False))
        return any(
            e["kind"] == "masks_applied" and e["data"].get("hash") == applied.data["hash"]
            for e in entries
        )

    wait(on_the_record, 30, "the relay to log Bob's doorbell's masks_applied")
    say("", "the relay logged bob-door's masks_applied with that hash (relay audit list)")
    bob_home.bell.schedule_press(bob_home.bell.clock.monotonic() + 0.5)
    saved = bob_home.run_until("clip_saved", 60, "Bob's next clip")
    clip_id = saved.data["clip"]
    say("", f"bob-door: a new ring, clip {clip_id} recorded")
    lit, black = root / "bob-before-mask.mp4", root / "bob-after-mask.mp4"
    for clip, mp4 in ((before, lit), (clip_id, black)):
        run(
            [
                sys.executable, "-m", "firmware.cli", "clips", "export", clip,
                "--data-dir", str(bob_home.config.device.data_dir),
                "--owner-key", str(bob), "--out", str(mp4),
            ],
            "clips export",
        )  # fmt: skip
    was, _ = pavement_brightness(lit)
    inside, outside = pavement_brightness(black)
    say(
        "",
        f"decoded every frame (PyAV): on the pavement the brightest pixel was {was} of 255 "
        f"before the mask and is {inside} in the new clip (black); the rest of its picture "
        f"averages {outside:.0f}",
    )
    if inside > 24 or was <= 24:
        raise DemoError(f"the pavement is not black in {black} (or was already in {lit})")


def pavement_brightness(mp4: Path) -> tuple[int, float]:
    """The brightest pixel inside the pavement mask (a 3-pixel margin for the codec at
    its edges) over every frame, and the mean brightness outside it."""
    import av
    import numpy as np

    from firmware.masks import rasterize

    brightest, means = 0, []
    with av.open(str(mp4)) as c:
        for frame in c.decode(video=0):
            img = frame.to_ndarray(format="rgb24").max(axis=2)
            h, w = img.shape
            mask = rasterize([PAVEMENT], w, h)
            inner = mask.copy()
            for dy in range(-3, 4):  # eroded: only pixels well inside
                for dx in range(-3, 4):
                    inner &= np.roll(np.roll(mask, dy, axis=0), dx, axis=1)
            brightest = max(brightest, int(img[inner].max()))
            means.append(float(img[~mask].mean()))
    if not means:
        raise DemoError(f"{mp4} has no frames")
    return brightest, sum(means) / len(means)


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/v1/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    sys.exit(main())
