"""Adversarial review of the owner-signed run-time masks (issue 17 part).

Each test is one attacker trying to break "masks before encoding" or "every change is
the owner's signed decision, on the record": the relay's operator (real Mosquitto,
Redis and the relay's API, through test_masks_e2e's ``world``), a thief with the SD
card (the real firmware on simulated hardware, test_owner_masks' ``Bell``), and the
timing between accepting an update and the first frame it covers (the sim camera, and
the Pi backend driven the way picamera2's event loop drives it).  Attacks already
covered by test_owner_masks.py / test_masks_e2e.py are not repeated here.
"""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest
from stack import wait_for
from test_consent_e2e import run_footage
from test_masks_e2e import POLYGON_ARG, applied, kinds, relay_holds, until, world  # noqa: F401 - a fixture
from test_owner_masks import (  # noqa: F401 - fixtures
    DEVICE,
    POLY,
    assert_masked,
    bells,
    frames_of,
    owner,
    plain_clip,
    plain_snapshot,
    update,
)

from firmware.masks import rasterize
from protocol import DeleteCommand, MasksCommand, encode, new_id, utcnow
from protocol.crypto import OwnerKeys, b64
from protocol.decisions import Approval, Deletion, MaskUpdate, decision_hash, sign_decision

NESTED = b64(b"[" * 36_000)
"""Fits the 48 000-character limit of a cmd/masks (and of the API's field), and nests
deeper than Python's JSON decoder recurses."""


def _nested_envelope() -> str:
    """A signed-envelope shape whose *payload* nests too deep (the signature is junk)."""
    return b64(json.dumps({"payload": b64(b"[" * 20_000), "signature": b64(bytes(64))}).encode())


def _publish(relay, device: str, signed: str) -> None:
    """The relay's operator puts anything on the doorbell's command topic."""
    cmd = MasksCommand(id=new_id(), ts=utcnow(), device=device, update=signed)
    relay.pub.publish(*encode(cmd), qos=1)


def _post(relay, device: str, token, decision: str) -> httpx.Response:
    return httpx.post(
        f"{relay.url}/v1/devices/{device}/masks",
        json={"decision": decision},
        headers={"Authorization": f"Bearer {token.read_text().strip()}"},
    )


def _doorbell_refusals(relay) -> list[str]:
    return [
        e["data"]["code"]
        for e in relay.audit.entries()
        if e["kind"] == "doorbell_refused" and e["data"]["command"] == "masks"
    ]


# ------------------------------------------------------------------ the relay's operator


def test_a_too_deeply_nested_update_is_one_clear_refusal_everywhere(world, tmp_path):  # noqa: F811
    """Bad input: the relay answers 422 and records it, the doorbell refuses it on the
    record (so the relay's pending command settles), and nothing crashes."""
    relay, alice, _bob, _commands = world
    for junk in (NESTED, _nested_envelope()):
        r = _post(relay, "alice-door", alice.token, junk)
        assert r.status_code == 422, (r.status_code, r.text[:200])
    refused = [e["data"]["code"] for e in relay.audit.entries() if e["kind"] == "masks_refused"]
    assert refused == ["bad_signature", "bad_signature"]

    for i, junk in enumerate((NESTED, _nested_envelope())):
        _publish(relay, "alice-door", junk)
        until(alice, lambda n=i + 1: alice.commands.counters["refused"] == n, "a refusal")
    assert alice.commands.counters["failed"] == 0
    wait_for(lambda: len(_doorbell_refusals(relay)) == 2, 30, "the refusals on the record")
    assert _doorbell_refusals(relay) == ["bad_signature", "bad_signature"]

    # And the doorbell still takes the owner's real update.
    good = sign_decision(
        MaskUpdate.create("alice-door", [("street", POLY)]), alice.owner.sign_private
    )
    assert _post(relay, "alice-door", alice.token, good).status_code == 200
    until(alice, lambda: applied(alice), "the good update")


def test_no_command_path_crashes_on_nesting_at_the_doorbell(bells, owner):  # noqa: F811
    """The same junk straight to the doorbell's command handler (no relay in front):
    refused with a code, announced, counted as refused (not as a crash)."""
    bell = bells(owner)
    bell.send(NESTED)
    (refusal,) = bell.refusals()
    assert refusal.code == "bad_signature" and refusal.command == "masks"
    assert bell.handler.counters == {"released": 0, "deleted": 0, "refused": 1, "failed": 0}


# ------------------------------------------------------------------ a thief with the SD card


def test_both_kept_files_deleted_is_on_the_record_at_boot(bells, owner, tmp_path):  # noqa: F811
    """Deleting masks.json and masks.bak.json makes the doorbell run without the owner's
    masks (nothing on the card can say they existed).  What it must not do is run so
    silently: at every boot it announces the owner set in force, by hash, and "none"
    (a null hash) when it has none, so the record shows the set changed without a
    signed decision."""
    data = tmp_path / "bell"
    bell = bells(owner, data=data)
    signed = update(owner, [("street", POLY)], issued=2000)
    bell.send(signed)
    bell.close()
    (data / "masks.json").unlink()
    (data / "masks.bak.json").unlink()

    again = bells(owner, data=data)
    (boot,) = again.recorder.of("masks_applied")
    assert boot.data["hash"] is None and boot.data["masks"] == 0
    assert again.sim.controller.mask_update is None
    # The announcement the relay records (an event, masks_hash null).
    from firmware.announce import to_message

    msg = to_message(DEVICE, boot)
    assert msg.kind == "event" and msg.type == "masks_applied" and msg.masks_hash is None
    # The owner's next update is taken as usual.
    again.send(update(owner, [("street", POLY)], issued=2001))
    assert again.sim.controller.masks_hash is not None


def test_files_rolled_back_to_an_older_signed_set_show_its_hash(bells, owner, tmp_path):  # noqa: F811
    """Both files replaced by an older set the owner really signed: the doorbell cannot
    tell (it is signed), but it announces the older set's hash at boot, so the record
    shows a hash other than the last one applied; and the newer update cannot simply be
    replayed to undo it, the owner signs a new one (build_update moves issued on)."""
    data = tmp_path / "bell"
    bell = bells(owner, data=data)
    older = update(owner, [("street", POLY)], issued=2000)
    bell.send(older)
    old_file = (data / "masks.json").read_bytes()
    newer = update(owner, [("street", POLY), ("more", [(0, 0), (0.3, 0), (0, 0.3)])], issued=2001)
    bell.send(newer)
    bell.close()
    (data / "masks.json").write_bytes(old_file)
    (data / "masks.bak.json").write_bytes(old_file)

    again = bells(owner, data=data)
    (boot,) = again.recorder.of("masks_applied")
    assert boot.data["hash"] == decision_hash(older) != decision_hash(newer)
    again.send(newer)  # the relay replays the newer one: its nonce is spent
    (refusal,) = again.refusals()
    assert refusal.code == "replay"


def test_a_kept_file_nested_too_deep_is_refused_not_a_crash_at_boot(bells, owner, tmp_path):  # noqa: F811
    data = tmp_path / "bell"
    bell = bells(owner, data=data)
    signed = update(owner, [("street", POLY)], issued=2000)
    bell.send(signed)
    bell.close()
    (data / "masks.json").write_text("[" * 100_000)

    again = bells(owner, data=data)  # booting is the test: it used to raise
    (refused,) = again.recorder.of("masks_refused")
    assert refused.data["code"] == "malformed" and "masks.json" in refused.data["reason"]
    assert again.sim.controller.masks_hash == decision_hash(signed)  # from the copy


def test_the_boot_state_reaches_the_public_record(world):  # noqa: F811
    """The boot announcement goes where the others go: the relay's log, publicly as a
    doorbell's ``masks_applied`` with a null hash, and it settles no pending command."""
    relay, _alice, _bob, commands = world

    def boots() -> list:
        return [e for e in relay.audit.entries() if e["kind"] == "masks_applied"]

    wait_for(lambda: len(boots()) == 2, 30, "both doorbells' boot state on the record")
    assert [e["data"] for e in boots()] == [{"hash": None}, {"hash": None}]
    public = [json.loads(p) for p in relay.audit.public_entries(0, -1)]
    states = [e for e in public if e["kind"] == "masks_applied"]
    assert [(e["actor"], e["data"]) for e in states] == [("doorbell", {"hash": None})] * 2
    assert commands.pending() == {}


# ------------------------------------------------------------------ timing: the Pi backend


class _Request:
    """A completed request as picamera2 hands it around: one YUV420 main buffer."""

    def __init__(self, w: int, h: int, stride: int, value: int, sensor_ns: int) -> None:
        self.buf = np.full(stride * h * 3 // 2, value, np.uint8)
        self.w, self.h, self.stride = w, h, stride
        self.metadata = {"SensorTimestamp": sensor_ns}
        self.released = False

    def luma(self) -> np.ndarray:
        return self.buf[: self.stride * self.h].reshape(self.h, self.stride)[:, : self.w]

    def get_metadata(self) -> dict:
        return dict(self.metadata)

    def save(self, name, file_output, format=None, exif_data=None) -> None:
        assert name == "main" and format == "jpeg"
        file_output.write(self.luma().tobytes())  # the test reads pixels, not JPEG

    def release(self) -> None:
        self.released = True


class _Mapped:
    def __init__(self, request, stream, reshape=True, write=True):
        assert stream == "main"
        self.array = request.buf

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _loop_camera(fake):
    """picamera2's event loop, as upstream's ``process_requests`` runs it (read from
    raspberrypi/picamera2 picamera2.py): each completed request goes through
    ``pre_callback``, is kept as the one "completed request" a capture can take at once
    (``queue=True``, the video default), then goes to the encoder; ``capture_file`` /
    ``capture_request`` take that kept request (``capture_file_`` pops
    ``completed_requests[0]``).  The test drives it frame by frame."""

    class LoopCamera(fake.Picamera2):
        def start_recording(self, encoder, output, pts=None, config=None, quality=None, name=None):
            self.encoder, self.output = encoder, output
            self.completed: list[_Request] = []
            self.first_us: int | None = None
            self.encoding: list[int] = []

        def complete(self, req: _Request) -> None:
            """libcamera completed ``req``: pre_callback, keep it, encode it."""
            self.pre_callback(req)
            self.completed.append(req)
            while len(self.completed) > 1:
                self.completed.pop(0).release()
            us = req.metadata["SensorTimestamp"] // 1000  # upstream Encoder._timestamp
            if self.first_us is None:
                self.first_us = us
            self.encoder.firsttimestamp = self.first_us
            self.encoding.append(us - self.first_us)

        def output_next(self, keyframe: bool) -> None:
            """The encoder's output for the oldest frame in it arrives (asynchronously)."""
            ts = self.encoding.pop(0)
            self.output.outputframe(b"\x00\x00\x00\x01" + bytes(8), keyframe, ts)

        def capture_file(self, file_output, name="main", format=None, wait=None, **_):
            req = self.completed.pop(0)
            req.save(name, file_output, format=format)
            req.release()

        def capture_request(self, wait=None, signal_function=None, flush=None):
            return self.completed.pop(0)

        def capture_buffer(self, name="main", wait=None, signal_function=None):
            self._stop.wait()
            raise RuntimeError("camera stopped")

    return LoopCamera


@pytest.fixture
def pi(monkeypatch):
    """The Pi backend on a fake clock, its picamera2 driven frame by frame."""
    from firmware.camera.picamera2_backend import Picamera2Backend
    from tests import fake_picamera2

    fake_picamera2.install(monkeypatch, pi5=False)
    import picamera2

    loop = _loop_camera(fake_picamera2)
    monkeypatch.setattr(picamera2, "Picamera2", loop)
    monkeypatch.setattr(picamera2, "MappedArray", _Mapped)

    class Clock:
        now = 100.0

        def monotonic(self) -> float:
            return self.now

    clock = Clock()
    cam = Picamera2Backend(clock, (64, 48), (32, 24), 20.0, 0.5, 1_000_000)
    packets: list = []
    cam.start(packets.append, lambda f: None)
    yield cam, cam._cam, clock, packets
    cam.stop()


def test_pi_snapshot_right_after_a_mask_change_is_masked(pi):
    """The controller sets the masks, then (a ring in the same tick) takes a snapshot.
    picamera2 serves it from the request it kept, which went through pre_callback
    *before* set_masks: the snapshot must still be blanked with the masks now in force."""
    cam, loop, _clock, _packets = pi
    w, h, stride = 64, 48, 64
    loop.complete(_Request(w, h, stride, 200, 1_000_000_000))  # blanked with no mask
    loop.output_next(True)
    cam.set_masks([POLY])
    luma = np.frombuffer(cam.snapshot_jpeg(), np.uint8).reshape(h, w)
    m = rasterize([POLY], w, h)
    assert (luma[m] == 16).all(), f"{(luma[m] != 16).sum()} pixels under the new mask are lit"
    assert (luma[~m] == 200).all()


def test_pi_packets_stamped_after_a_mask_change_were_blanked_with_it(pi):
    """The controller opens the pre-roll again at the first keyframe stamped after the
    change (``packet.t`` > the time it called set_masks).  So a frame blanked with the
    old masks must never be stamped later than that, however late the (asynchronous)
    encoder hands it over: else an old-mask keyframe and the frames after it refill
    the pre-roll, and the next clip opens with what the owner just masked."""
    cam, loop, clock, packets = pi
    w, h, stride = 64, 48, 64
    m = rasterize([POLY], w, h)
    frames = []

    def complete(at: float, sensor_s: float) -> None:
        clock.now = at
        req = _Request(w, h, stride, 200, int(sensor_s * 1e9))
        frames.append(req)
        loop.complete(req)

    def output(at: float, keyframe: bool) -> None:
        clock.now = at
        loop.output_next(keyframe)

    complete(100.000, 1.000)
    complete(100.050, 1.050)  # blanked here, with no mask yet
    clock.now = 100.060
    cam.set_masks([POLY])
    gate = clock.monotonic()  # what the controller takes right after set_masks
    complete(100.100, 1.100)  # the first frame blanked with the new mask
    # The encoder hands frames over later (the first one late: start-up).
    output(100.150, True)
    output(100.160, True)  # a keyframe (the GOP's), of the frame blanked before
    output(100.170, False)
    assert len(packets) == len(frames) == 3
    for packet, req in zip(packets, frames, strict=True):
        masked = bool((req.luma()[m] == 16).all())
        if packet.t > gate:
            assert masked, f"a frame blanked before the change is stamped {packet.t} > {gate}"
    assert [p.t for p in packets] == sorted(p.t for p in packets)


# ------------------------------------------------------------------ timing: the controller


def _send_only(bell, signed: str) -> None:
    """Hand the update to the command handler; the controller takes it with the next frame."""
    bell.handler.handle(MasksCommand(id=new_id(), ts=utcnow(), device=DEVICE, update=signed))


def _snapshot_of(bell, tmp_path, clip: str) -> np.ndarray:
    import av

    snap = plain_snapshot(bell.sim, clip, tmp_path / f"{clip}.jpg")
    with av.open(str(snap)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


@pytest.mark.parametrize("ticks", [0, 1])
def test_a_ring_right_after_the_update_is_masked_throughout(bells, owner, tmp_path, ticks):  # noqa: F811
    """The update and a press reach the controller in the same tick (or the press one
    tick later), after that tick's frame was captured and encoded under the old masks:
    the snapshot, the pre-roll and every frame of the clip are under the new masks."""
    bell = bells(owner)
    bell.sim.run(3.0)  # a full pre-roll recorded before the mask
    # The worst case: that tick's frame, encoded under the old masks, is a keyframe (one
    # a pre-roll could start from).
    bell.sim.camera.request_keyframe()
    _send_only(bell, update(owner, [("street", POLY)], issued=1000))
    bell.sim.run(ticks / 15)
    bell.sim.schedule_press(bell.sim.clock.monotonic())
    bell.sim.run(6.0)
    (saved,) = bell.recorder.of("clip_saved")
    clip = saved.data["clip"]
    frames = frames_of(plain_clip(bell.sim, clip, tmp_path / "same-tick.mp4"))
    assert len(frames) >= 30
    for i, img in enumerate([_snapshot_of(bell, tmp_path, clip), *frames]):
        assert_masked(img, [POLY], f"image {i} (0: the snapshot)")


def test_a_clip_in_progress_is_masked_from_the_change_on(bells, owner, tmp_path):  # noqa: F811
    """A clip is recording when the update arrives: what was encoded before the change
    stays as it was recorded, every frame after it is masked, with no frame in between."""
    bell = bells(owner)
    bell.sim.run(1.0)
    bell.sim.schedule_press(bell.sim.clock.monotonic())
    bell.sim.run(1.0)
    assert bell.sim.controller.clip is not None, "recording"
    recorded = len(bell.sim.controller.clip.packets)
    _send_only(bell, update(owner, [("street", POLY)], issued=1000))
    bell.sim.run(6.0)
    (saved,) = bell.recorder.of("clip_saved")
    frames = frames_of(plain_clip(bell.sim, saved.data["clip"], tmp_path / "in-progress.mp4"))

    def masked(img) -> bool:
        try:
            assert_masked(img, [POLY], "")
        except AssertionError:
            return False
        return True

    flags = [masked(img) for img in frames]
    first = flags.index(True)
    assert not any(flags[:first]) and all(flags[first:]), flags
    assert recorded <= first <= recorded + 1, (recorded, first)
    assert len(frames) - first >= 15  # the 2 s post-roll at 15 fps, at least


# ------------------------------------------------------------------ the footage client


def test_a_relay_answer_cannot_make_the_owner_sign_a_mask_away(world, tmp_path, monkeypatch):  # noqa: F811
    """The relay delivers the owner's new set, then answers the client with an error
    (or with another set's hash).  The doorbell announces the set in force, the client
    builds the owner's next change on it (signature checked), so it cannot drop the mask
    the relay pretended was refused."""
    from footage import cli as footage

    relay, alice, _bob, _commands = world
    state = tmp_path / "alice-client"
    base = ["--state", str(state), "masks"]
    keys = ["--keys", str(alice.keys)]

    def footage_masks(*args: str) -> tuple[int, str]:
        return run_footage(relay, alice.token, *base, *args, *keys)

    code, out = footage_masks("add", "alice-door", "--polygon", POLYGON_ARG, "--name", "street")
    assert code == 0, out
    until(alice, lambda: len(applied(alice)) == 1, "the first set")

    honest = footage.Client.call
    lie: dict = {}

    def lying(self, method: str, path: str, **kw):
        out = honest(self, method, path, **kw)  # delivered to the doorbell
        if method == "POST" and path.endswith("/masks") and lie.get("how") == "error":
            raise footage.Failure("the relay said no (500): internal error", 1)
        if method == "POST" and path.endswith("/masks") and lie.get("how") == "hash":
            return {**out, "hash": "0" * 64, "status": "applied"}
        return out

    monkeypatch.setattr(footage.Client, "call", lying)
    lie["how"] = "error"
    code, _ = footage_masks("add", "alice-door", "--polygon", "0,0 0.3,0 0,0.3", "--name", "more")
    assert code != 0, "the owner is told it failed"
    until(alice, lambda: len(applied(alice)) == 2, "the relay delivered it anyway")
    in_force = lambda: relay_holds(relay, "alice-door") == alice.bell.controller.masks_hash  # noqa: E731
    wait_for(in_force, 30, "the relay to keep the set in force")

    lie["how"] = "hash"
    code, out = footage_masks("add", "alice-door", "--polygon", "1,1 0.7,1 1,0.7", "--name", "x")
    assert code != 0, f"a relay answering for another set is not believed: {out}"
    until(alice, lambda: len(applied(alice)) == 3, "delivered too")
    wait_for(in_force, 30, "the relay to keep the set in force")

    lie.clear()
    code, out = footage_masks("remove", "alice-door", "street")
    assert code == 0, out
    until(alice, lambda: len(applied(alice)) == 4, "the removal")
    names = [m.name for m in alice.bell.controller.mask_update.masks]
    assert names == ["more", "x"], f"the owner removed only 'street', the doorbell has {names}"


# ------------------------------------------------------------------ the relay's operator, held


def _signed_payload(keys: OwnerKeys, payload: dict) -> str:
    """What the owner's key signed, byte for byte (to sign what no client would build)."""
    return b64(json.dumps(keys.sign(payload)).encode())


def test_the_operator_cannot_pass_off_other_signed_things_as_masks(world):  # noqa: F811
    """Everything the operator could get signed or hold: the owner's deletion and
    approval relabelled as a mask update (and an update relabelled as a deletion), an
    update signed by another registered owner, the owner's update for another doorbell,
    a name outside the allowed characters (unicode): each refused by the doorbell with
    its code, on the public record, and by the relay before it sends anything."""
    relay, alice, bob, _commands = world
    a = alice.owner
    deletion = sign_decision(Deletion.create("alice-door", "clip-1"), a.sign_private)
    approval = sign_decision(
        Approval.create(
            "req-1", "alice-door", ["clip-1"], OwnerKeys.generate().box_public,
            time.time() + 3600, {"clip-1": bytes(32)},
        ),
        a.sign_private,
    )  # fmt: skip
    bobs = sign_decision(MaskUpdate.create("alice-door", [], issued=1), bob.owner.sign_private)
    unicode = MaskUpdate.create("alice-door", [("street", POLY)], issued=5).payload()
    unicode["masks"][0]["name"] = "straße"
    unicode_signed = _signed_payload(a, unicode)
    mine = sign_decision(MaskUpdate.create("alice-door", [("street", POLY)]), a.sign_private)

    attempts = [  # (where to, what, the code)
        ("alice-door", deletion, "wrong_kind"),
        ("alice-door", approval, "wrong_kind"),
        ("alice-door", bobs, "bad_signature"),
        ("alice-door", unicode_signed, "malformed"),
        ("bob-door", mine, "bad_signature"),  # B's doorbell checks with B's owner's key
    ]
    for device, signed, _code in attempts:
        home = alice if device == "alice-door" else bob
        n = home.commands.counters["refused"]
        _publish(relay, device, signed)
        until(home, lambda h=home, n=n: h.commands.counters["refused"] == n + 1, "a refusal")
    # The other way round: the owner's mask update as the signature of a deletion.
    n = alice.commands.counters["refused"]
    cmd = DeleteCommand(
        id=new_id(), ts=utcnow(), device="alice-door", clip_id="clip-1", signature=mine
    )
    relay.pub.publish(*encode(cmd), qos=1)
    until(alice, lambda: alice.commands.counters["refused"] == n + 1, "the deletion refused")

    assert applied(alice) == [] and applied(bob) == []
    assert alice.bell.controller.mask_update is None and bob.bell.controller.mask_update is None

    def refused() -> list[tuple[str, str]]:
        return [
            (e["data"]["command"], e["data"]["code"])
            for e in relay.audit.entries()
            if e["kind"] == "doorbell_refused"
        ]

    wait_for(lambda: len(refused()) == 6, 30, "the refusals on the record")
    assert sorted(refused()) == sorted(
        [("masks", c) for _d, _s, c in attempts] + [("delete", "wrong_kind")]
    )

    # The relay refuses the same before anything is sent.
    for signed, code in [
        (deletion, "wrong_kind"),
        (approval, "wrong_kind"),
        (bobs, "bad_signature"),
        (unicode_signed, "malformed"),
    ]:
        r = _post(relay, "alice-door", alice.token, signed)
        assert r.status_code == 422, (code, r.text)
    codes = [e["data"]["code"] for e in relay.audit.entries() if e["kind"] == "masks_refused"]
    assert codes == ["wrong_kind", "wrong_kind", "bad_signature", "malformed"]
    r = _post(relay, "bob-door", alice.token, mine)
    assert r.status_code == 404, "alice's update, alice's token, bob's doorbell"


def test_a_nonce_spent_by_another_kind_of_decision_is_a_replay(bells, owner):  # noqa: F811
    """One nonce ledger for every kind of decision: a mask update carrying the nonce of
    a deletion the doorbell already carried out is refused as a replay."""
    bell = bells(owner)
    deletion = Deletion.create(DEVICE, "clip-1")
    bell.handler.handle(
        DeleteCommand(
            id=new_id(), ts=utcnow(), device=DEVICE, clip_id="clip-1",
            signature=sign_decision(deletion, owner.sign_private),
        )
    )  # fmt: skip
    assert bell.handler.counters["deleted"] == 0 and bell.handler.counters["refused"] == 0
    payload = MaskUpdate.create(DEVICE, [("street", POLY)], issued=10).payload()
    payload["nonce"] = deletion.nonce
    bell.send(_signed_payload(owner, payload))
    (refusal,) = bell.refusals()
    assert refusal.code == "replay" and refusal.command == "masks"
    assert bell.applied() == []


# ------------------------------------------------------------------ polygons blanked otherwise

CROSSED = [(0.1, 0.1), (0.9, 0.9), (0.9, 0.1), (0.1, 0.9)]
"""A rectangle's corners in the wrong order: a bow-tie, two triangles, half the area."""
TWICE = [(0.1, 0.1), (0.9, 0.1), (0.9, 0.9), (0.1, 0.9)] * 2
"""A rectangle traced twice: the even-odd rule masks none of it."""
FLAT = [(0.1, 0.1), (0.5, 0.5), (0.9, 0.9)]
"""No area: masks nothing."""
BACK = [(0.1, 0.1), (0.9, 0.1), (0.9, 0.9), (0.9, 0.1)]
"""An edge folding back on the one before it."""


@pytest.mark.parametrize(
    "polygon", [CROSSED, TWICE, FLAT, BACK], ids=["crossed", "twice", "flat", "back"]
)
def test_a_polygon_that_would_mask_other_than_its_drawing_is_refused(
    bells,  # noqa: F811
    owner,  # noqa: F811
    tmp_path,
    polygon,
):
    """What the owner (or a passer-by's proposal) draws is what must be blacked out.  A
    polygon crossing itself, traced twice, folding back or without area would be blanked
    as something else (even-odd: a twice-traced one not at all) while the doorbell
    announced it applied: refused, one clear error, by the client, the relay's check and
    the doorbell."""
    from footage.masks import MaskError, build_update

    with pytest.raises(MaskError, match="polygon"):
        build_update(None, DEVICE, add=[("spot", polygon)])
    with pytest.raises(ValueError, match="polygon"):
        MaskUpdate.create(DEVICE, [("spot", polygon)], issued=1)

    bell = bells(owner)
    payload = MaskUpdate.create(DEVICE, [("street", POLY)], issued=10).payload()
    payload["masks"][0]["points"] = [[round(x * 10_000), round(y * 10_000)] for x, y in polygon]
    bell.send(_signed_payload(owner, payload))
    (refusal,) = bell.refusals()
    assert refusal.code == "malformed" and "polygon" in refusal.reason, refusal.reason
    assert bell.applied() == []


def test_simple_polygons_of_every_shape_are_taken(owner):  # noqa: F811
    """The check refuses only those: concave, with collinear points, at the frame's edges."""
    for polygon in (
        POLY,
        [(0, 0), (1, 0), (1, 1), (0, 1)],  # the whole frame
        [(0, 0), (0.5, 0), (1, 0), (1, 1)],  # three points on one edge
        [(0.1, 0.1), (0.9, 0.1), (0.5, 0.5), (0.9, 0.9), (0.1, 0.9)],  # concave
    ):
        MaskUpdate.create(DEVICE, [("ok", polygon)], issued=1)


def test_an_update_never_delivered_ends_on_the_record_as_failed(stack):
    """The relay cannot reach the doorbell (or an operator holds it back): the command
    is not forgotten in silence; past give_up_s it is ``command_failed`` on the record,
    next to the ``masks_changed`` the owner's update made and with no ``masks_applied``."""
    import redis

    from relay.audit import AuditLog
    from relay.commands import CommandOutbox

    r = redis.Redis.from_url(stack.redis.url)
    audit = AuditLog(r, OwnerKeys.generate().sign_private)
    now = [1_000.0]
    outbox = CommandOutbox(r, audit=audit, clock=lambda: now[0], retry_s=1, give_up_s=60)
    signed = sign_decision(
        MaskUpdate.create("carol-door", [("street", POLY)]), OwnerKeys.generate().sign_private
    )
    key = outbox.enqueue(
        *encode(MasksCommand(id=new_id(), ts=utcnow(), device="carol-door", update=signed))
    )
    assert key == "masks:carol-door:-"
    for _ in range(10):
        for k, entry in outbox.due():
            outbox.sent(k, entry)  # published; nothing answers
        now[0] += 30
    assert outbox.pending() == {}
    (failed,) = [e for e in audit.entries() if e["kind"] == "command_failed"]
    assert failed["data"]["command"] == "masks" and failed["data"]["device"] == "carol-door"
    public = [json.loads(p) for p in audit.public_entries(0, -1)]
    assert [e["kind"] for e in public] == ["command_failed"]


def test_an_oversized_masks_command_is_dropped_and_the_doorbell_goes_on(world):  # noqa: F811
    """Past the 48 000-character bound the command is not even a command: the doorbell's
    link counts it as bad and drops it (nothing to answer or record), and takes the
    owner's next update as usual."""
    relay, alice, _bob, _commands = world
    topic, payload = encode(
        MasksCommand(id=new_id(), ts=utcnow(), device="alice-door", update="A" * 100)
    )
    doc = json.loads(payload)
    doc["update"] = "A" * 60_000
    before = alice.uplink.link.counters["bad_commands"]
    relay.pub.publish(topic, json.dumps(doc).encode(), qos=1)
    until(alice, lambda: alice.uplink.link.counters["bad_commands"] == before + 1, "dropped")
    assert alice.commands.counters == {"released": 0, "deleted": 0, "refused": 0, "failed": 0}
    good = sign_decision(
        MaskUpdate.create("alice-door", [("street", POLY)]), alice.owner.sign_private
    )
    assert _post(relay, "alice-door", alice.token, good).status_code == 200
    until(alice, lambda: applied(alice), "the next good update")
