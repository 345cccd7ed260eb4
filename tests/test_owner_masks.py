"""Masks the owner adds at run time: signed, checked by the doorbell, applied before encoding.

The doorbell here is the real firmware on simulated hardware (x264, real MP4s decoded
with PyAV); commands go through the real :class:`~firmware.consent.CommandHandler`
(the relay path, through a real broker and Redis, is in test_masks_e2e.py).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import Recorder, plain_clip, plain_snapshot, small_config

from firmware.consent import CommandHandler, NonceLedger
from firmware.masks import rasterize
from footage.masks import MaskBook, MaskError, build_update, parse_polygon
from hw_sim.runner import SimDoorbell
from hw_sim.scenes import make_scene
from protocol import CommandRefused, MasksCommand, new_id, utcnow
from protocol.crypto import OwnerKeys, b64
from protocol.decisions import (
    DecisionRefused,
    MaskUpdate,
    decision_hash,
    sign_decision,
    verify_decision,
)

W, H = 320, 240
POLY = [(0.55, 0.1), (0.95, 0.2), (0.9, 0.9), (0.6, 0.7)]
"""An irregular quadrilateral on the right: not a rectangle, so edges are checked too."""
CONFIG_MASK = {"name": "installer", "polygon": [[0.0, 0.0], [0.2, 0.0], [0.2, 0.3], [0.0, 0.3]]}
DEVICE = "test-bell"


def grow(m: np.ndarray, r: int) -> np.ndarray:
    """``m`` dilated by ``r`` pixels (a square neighbourhood)."""
    h, w = m.shape
    padded = np.pad(m, r)
    out = np.zeros_like(m)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def regions(polys, margin: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Pixels surely inside the polygons, and surely outside (a margin for the codec's
    chroma subsampling and deblocking at the edges)."""
    m = rasterize(polys, W, H)
    return ~grow(~m, margin), ~grow(m, margin)


def assert_masked(img: np.ndarray, polys, what: str) -> None:
    """Pixel by pixel: black (every channel <= 24) inside, picture outside."""
    inside, outside = regions(polys)
    brightest = img.max(axis=2).astype(int)
    lit = np.argwhere(inside & (brightest > 24))
    assert len(lit) == 0, f"{what}: {len(lit)} masked pixels are not black, e.g. {lit[:3]}"
    dark = (outside & (brightest <= 24)).sum() / outside.sum()
    assert dark < 0.001, f"{what}: {dark:.2%} of unmasked pixels are black"


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


class Bell:
    """A simulated doorbell provisioned with an owner, and its command handler."""

    def __init__(self, tmp: Path, owner: OwnerKeys, data: Path | None = None, **sections) -> None:
        self.owner = owner
        self.data = data or tmp / "bell"
        self.recorder = Recorder()
        cfg = small_config(
            self.data,
            owner={"sign_public": b64(owner.sign_public), "box_public": b64(owner.box_public)},
            clips={"pre_roll_s": 2.0, "post_roll_s": 2.0},
            gpio={"ring_cooldown_s": 1.0},  # every press in these tests rings (a snapshot)
            **sections,
        )
        self.sim = SimDoorbell(
            cfg, make_scene("porch", W, H), self.recorder, start_wall=1.8e9, owner=owner
        )
        self.announced: list = []
        self.handler = CommandHandler(
            DEVICE,
            owner.sign_public,
            self.sim.store,
            self.announced.append,
            NonceLedger(self.data / "approvals.sqlite"),
            apply_masks=self.sim.controller.submit,
        )

    def send(self, signed: str) -> MasksCommand:
        cmd = MasksCommand(id=new_id(), ts=utcnow(), device=DEVICE, update=signed)
        self.handler.handle(cmd)
        self.sim.run(1 / 15)  # the controller takes it with the next frame
        return cmd

    def clip_after_press(self, tmp: Path, name: str) -> tuple[list[np.ndarray], Path]:
        before = len(self.recorder.of("clip_saved"))
        t = self.sim.clock.monotonic()
        self.sim.schedule_press(t + 0.5)
        self.sim.run(4.0)
        saved = self.recorder.of("clip_saved")
        assert len(saved) == before + 1, "one clip for the press"
        clip = saved[-1].data["clip"]
        frames = frames_of(plain_clip(self.sim, clip, tmp / f"{name}.mp4"))
        snap = plain_snapshot(self.sim, clip, tmp / f"{name}.jpg")
        with av.open(str(snap)) as c:
            frames.append(next(c.decode(video=0)).to_ndarray(format="rgb24"))
        return frames, snap

    def applied(self) -> list:
        """Owner sets put in force (a boot with none kept announces a null hash)."""
        return [e for e in self.recorder.of("masks_applied") if e.data["hash"] is not None]

    def refusals(self) -> list:
        from_handler = [m for m in self.announced if isinstance(m, CommandRefused)]
        return from_handler + self.recorder.of("masks_refused")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.sim.close()


@pytest.fixture
def owner() -> OwnerKeys:
    return OwnerKeys.generate()


@pytest.fixture
def bells(tmp_path):
    made: list[Bell] = []

    def make(owner: OwnerKeys, **kw) -> Bell:
        bell = Bell(tmp_path, owner, **kw)
        made.append(bell)
        return bell

    yield make
    for b in made:
        b.close()


def update(owner: OwnerKeys, masks, issued: int, **kw) -> str:
    return sign_decision(MaskUpdate.create(DEVICE, masks, issued=issued, **kw), owner.sign_private)


# ------------------------------------------------------------------ the promise


def test_a_signed_mask_is_black_in_the_next_clip_and_snapshot(bells, owner, tmp_path):
    bell = bells(owner, masks=[CONFIG_MASK])
    bell.sim.run(4.0)  # the ring fills with frames recorded before the owner's mask
    config_poly = [tuple(p) for p in CONFIG_MASK["polygon"]]

    frames, _ = bell.clip_after_press(tmp_path, "before")
    with pytest.raises(AssertionError):  # the test can tell: not masked before
        assert_masked(frames[0], [POLY], "before")

    signed = update(owner, [("street", POLY)], issued=1000, reason="bystander:r-1")
    bell.send(signed)
    (applied,) = bell.applied()
    assert applied.data["hash"] == decision_hash(signed)
    assert bell.sim.controller.masks_hash == decision_hash(signed)

    # Pressed half a second later, with a 2 s pre-roll: no frame from before the mask.
    frames, _ = bell.clip_after_press(tmp_path, "after")
    assert len(frames) > 30
    for i, img in enumerate(frames):
        # The union: the installer's mask and the owner's.
        assert_masked(img, [POLY, config_poly], f"frame {i}")


def test_owner_mask_is_ignored_by_motion(bells, owner):
    # The person walks in from the left and stands in the middle: mask all they cover.
    cover = [(0.0, 0.0), (0.75, 0.0), (0.75, 1.0), (0.0, 1.0)]
    bell = bells(owner)
    bell.sim.camera.scene = make_scene("person", W, H)
    bell.send(update(owner, [("path", cover)], issued=1000))
    bell.sim.run(20.0)
    assert bell.recorder.of("motion_start") == []
    assert bell.recorder.of("clip_saved") == []


# ------------------------------------------------------------------ refusals


def _malformed(owner: OwnerKeys) -> str:
    """Validly signed, but a polygon of two points."""
    payload = MaskUpdate.create(DEVICE, [("x", POLY)], issued=5000).payload()
    payload["masks"][0]["points"] = [[1000, 1000], [2000, 2000]]
    return b64(json.dumps(owner.sign(payload)).encode())


@pytest.mark.parametrize(
    ("attack", "code"),
    [
        ("forged", "bad_signature"),
        ("replayed", "replay"),
        ("rollback", "rollback"),
        ("same_issued", "rollback"),
        ("malformed", "malformed"),
        ("other_device", "wrong_device"),
        ("expired", "expired"),
        ("built_on_none", "stale"),
        ("built_on_another_set", "stale"),
    ],
)
def test_refused_updates_leave_the_masks_unchanged(bells, owner, tmp_path, attack, code):
    bell = bells(owner)
    good = update(owner, [("street", POLY)], issued=2000)
    first = bell.send(good)
    kept = (bell.data / "masks.json").read_bytes()
    held = bell.sim.controller.mask_update
    other = [("all", [(0, 0), (1, 0), (1, 1), (0, 1)])]
    bad = {
        "forged": lambda: update(OwnerKeys.generate(), [], issued=3000),
        "replayed": lambda: first.update,
        "rollback": lambda: update(owner, other, issued=1999),
        "same_issued": lambda: update(owner, other, issued=2000),
        "malformed": lambda: _malformed(owner),
        "other_device": lambda: sign_decision(
            MaskUpdate.create("other-bell", [], issued=3000), owner.sign_private
        ),
        "expired": lambda: update(
            owner, [], issued=3000, expires=time.time() - 1, previous=decision_hash(good)
        ),
        # Newer and validly signed, but not built on the set in force: a client that
        # never saw it, or one served an older set by the relay, would drop "street".
        "built_on_none": lambda: update(owner, other, issued=3000),
        "built_on_another_set": lambda: update(
            owner, other, issued=3000, previous=decision_hash(update(owner, [], issued=1500))
        ),
    }[attack]()
    bell.send(bad)
    (refusal,) = bell.refusals()
    assert (getattr(refusal, "code", None) or refusal.data["code"]) == code
    assert bell.sim.controller.mask_update == held
    assert (bell.data / "masks.json").read_bytes() == kept
    assert len(bell.applied()) == 1
    frames, _ = bell.clip_after_press(tmp_path, "after")
    assert_masked(frames[-2], [POLY], "still the owner's set")


def test_newer_update_replaces_and_can_remove(bells, owner, tmp_path):
    bell = bells(owner)
    first = update(owner, [("street", POLY)], issued=2000)
    bell.send(first)
    second = update(owner, [], issued=2001, previous=decision_hash(first))
    bell.send(second)
    assert bell.sim.controller.mask_update.masks == []
    # The announcement carries the signed set itself (the relay serves it back).
    assert [e.data["update"] for e in bell.applied()] == [first, second]
    frames, _ = bell.clip_after_press(tmp_path, "removed")
    with pytest.raises(AssertionError):
        assert_masked(frames[0], [POLY], "removed")


# ------------------------------------------------------------------ kept across restarts


def test_the_kept_set_survives_a_restart_and_tampering_is_refused(bells, owner, tmp_path):
    data = tmp_path / "bell"
    bell = bells(owner, data=data)
    signed = update(owner, [("street", POLY)], issued=2000)
    bell.send(signed)
    bell.close()

    again = bells(owner, data=data)
    (applied,) = again.applied()
    assert applied.data["hash"] == decision_hash(signed)
    assert again.recorder.of("masks_refused") == []
    frames, _ = again.clip_after_press(tmp_path, "restart")
    assert_masked(frames[0], [POLY], "after a restart")
    again.close()

    # Someone with the card rewrites masks.json to an empty set, signature kept.
    doc = json.loads((data / "masks.json").read_text())
    envelope = json.loads(__import__("base64").b64decode(doc["update"]))
    body = json.loads(__import__("base64").b64decode(envelope["payload"]))
    body["masks"] = []
    envelope["payload"] = b64(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    (data / "masks.json").write_text(json.dumps({"update": b64(json.dumps(envelope).encode())}))
    third = bells(owner, data=data)
    (refused,) = third.recorder.of("masks_refused")
    assert refused.data["code"] == "bad_signature" and "masks.json" in refused.data["reason"]
    (applied,) = third.applied()  # the last good one, from the copy
    assert applied.data["hash"] == decision_hash(signed)
    frames, _ = third.clip_after_press(tmp_path, "tampered")
    assert_masked(frames[0], [POLY], "tampered file refused")
    third.close()

    # The good copy was written back over the refused one.
    assert json.loads((data / "masks.json").read_text())["update"] == signed
    fourth_again = bells(owner, data=data)
    assert fourth_again.recorder.of("masks_refused") == []
    fourth_again.close()

    # Both copies forged (one re-signed by someone else, one not JSON): nothing forged
    # is applied, loudly.
    forged = update(OwnerKeys.generate(), [], issued=9999)
    (data / "masks.json").write_text(json.dumps({"update": forged}))
    (data / "masks.bak.json").write_text("{not json")
    fourth = bells(owner, data=data)
    codes = sorted(e.data["code"] for e in fourth.recorder.of("masks_refused"))
    assert codes == ["bad_signature", "malformed"]
    assert fourth.applied() == []
    assert fourth.sim.controller.mask_update is None


# ------------------------------------------------------------------ the decision's bounds


def _points(n: int) -> list[tuple[float, float]]:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [(0.5 + 0.4 * float(np.cos(a)), 0.5 + 0.4 * float(np.sin(a))) for a in angles]


@pytest.mark.parametrize(
    "masks",
    [
        [("two", _points(2))],
        [("many", _points(65))],
        [("out", [(0, 0), (1.01, 0), (1, 1)])],
        [("neg", [(0, 0), (-0.1, 0), (1, 1)])],
        [(f"m{i}", _points(3)) for i in range(17)],
        [("same", _points(3)), ("same", _points(4))],
        [("bad name!", _points(3))],
    ],
)
def test_out_of_bounds_sets_are_refused(masks):
    with pytest.raises(ValueError):
        MaskUpdate.create(DEVICE, masks, issued=1)


def test_bounds_are_inclusive_and_expiry_is_checked_unless_allowed(owner):
    ok = MaskUpdate.create(
        DEVICE,
        [(f"{i:02d}" + "m" * 62, _points(64)) for i in range(16)],  # longest names too
        issued=1,
        reason="r" * 128,
        previous="f" * 64,
    )
    wire = sign_decision(ok, owner.sign_private)
    assert len(wire) < 48_000, "fits a cmd/masks message"
    # And the masks_applied event that carries it back fits one MQTT message.
    from protocol import Event, decode, encode, new_id, utcnow
    from protocol.messages import MAX_PAYLOAD_BYTES

    event = Event(id=new_id(), ts=utcnow(), device=DEVICE, type="masks_applied", at=utcnow(),
                  masks_hash=decision_hash(wire), masks_update=wire)  # fmt: skip
    topic, body = encode(event)
    assert len(body) < MAX_PAYLOAD_BYTES
    assert decode(topic, body).masks_update == wire
    payload = ok.payload()
    payload["masks"][0]["points"][0][0] = 0.5  # coordinates are integers (x 10 000)
    with pytest.raises(DecisionRefused) as err:
        verify_decision(
            b64(json.dumps(owner.sign(payload)).encode()),
            owner.sign_public,
            MaskUpdate,
            now=0,
        )
    assert err.value.code == "malformed"
    old = sign_decision(
        MaskUpdate.create(DEVICE, [("a", _points(3))], issued=1, expires=100), owner.sign_private
    )
    with pytest.raises(DecisionRefused) as err:
        verify_decision(old, owner.sign_public, MaskUpdate, now=time.time(), device=DEVICE)
    assert err.value.code == "expired"
    got = verify_decision(old, owner.sign_public, MaskUpdate, now=time.time(), allow_expired=True)
    assert got.issued == 1


# ------------------------------------------------------------------ the client's library


def test_build_update_keeps_the_set_and_moves_issued_forward(owner, tmp_path):
    first = build_update(None, DEVICE, add=[("a", parse_polygon("0,0 0.5,0 0.5,0.5"))], now=10)
    second = build_update(first, DEVICE, add=[("b", POLY)], now=10, reason="bystander:r-9")
    assert [m.name for m in second.masks] == ["a", "b"] and second.issued == 11
    assert second.reason == "bystander:r-9"
    third = build_update(second, DEVICE, remove=["a"], now=5)
    assert [m.name for m in third.masks] == ["b"] and third.issued == 12
    for bad in (
        lambda: build_update(third, DEVICE, remove=["nope"]),
        lambda: build_update(third, DEVICE, add=[("b", POLY)]),
        lambda: build_update(third, DEVICE, add=[("c", [(0, 0), (2, 0), (1, 1)])]),
        lambda: parse_polygon("0,0 1;1 0,1"),
    ):
        with pytest.raises(MaskError):
            bad()
    book = MaskBook(tmp_path)
    book.save(DEVICE, sign_decision(third, owner.sign_private))
    assert book.current(DEVICE, owner.sign_public) == third
    with pytest.raises(MaskError):  # kept by this owner, not another
        book.current(DEVICE, OwnerKeys.generate().sign_public)


# ------------------------------------------------------------------ the Pi's camera backend


def test_the_pi_backend_changes_masks_without_a_restart(monkeypatch):
    """picamera2's pre_callback (the main buffer, before the encoder and any JPEG) reads
    the mask per frame: installed even with no masks, it blanks a new set at once."""
    from firmware.camera.picamera2_backend import Picamera2Backend
    from firmware.clock import SystemClock
    from tests import fake_picamera2

    fake_picamera2.install(monkeypatch, pi5=False)
    w, h, stride = 64, 48, 64
    frame = np.full(stride * h * 3 // 2, 200, np.uint8)

    class Mapped:
        def __init__(self, request, stream, reshape=True, write=True):
            assert stream == "main"
            self.array = frame

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    import picamera2  # the fake, in sys.modules

    monkeypatch.setattr(picamera2, "MappedArray", Mapped)
    cam = Picamera2Backend(SystemClock(), (w, h), (32, 24), 20.0, 0.5, 1_000_000)
    cam.start(lambda p: None, lambda f: None)
    try:
        callback = cam._cam.pre_callback
        assert callback is not None, "installed without masks, for masks added later"
        request = fake_picamera2.CompletedRequest()
        callback(request)
        assert (frame == 200).all(), "no mask yet: nothing blanked"
        cam.set_masks([POLY])
        callback(request)
        luma = frame[: stride * h].reshape(h, stride)[:, :w]
        m = rasterize([POLY], w, h)
        assert (luma[m] == 16).all() and (luma[~m] == 200).all()
    finally:
        cam.stop()


def test_footage_masks_refuses_bad_input_in_one_line_before_any_relay(owner, tmp_path, capsys):
    from footage import cli as footage

    keys = tmp_path / "keys"
    owner.save(keys)
    base = ["--relay", "http://127.0.0.1:9", "--token", str(tmp_path / "none"),
            "--state", str(tmp_path / "state"), "masks"]  # fmt: skip
    assert footage.main([*base, "list", DEVICE, "--keys", str(keys)]) == 0
    assert "no owner masks sent" in capsys.readouterr().out
    for bad, says in [
        ("0,0 1,0", "at least 3"),
        ("0,0 1,0 1;1", "not an x,y point"),
        ("0,0 1.5,0 1,1", "fraction of the frame"),
    ]:
        code = footage.main([*base, "add", DEVICE, "--polygon", bad, "--keys", str(keys)])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and says in err, err
    # (Removing an unknown name needs the set in force, from the relay: see
    # test_masks_e2e.py's test_two_clients_each_add_a_mask_and_the_doorbell_holds_both.)


def test_choose_basis_builds_on_the_set_in_force_checked_with_the_owners_key(owner):
    """What a client builds its next set on (footage/masks.py; the page's maskBasis is
    the same rule): the relay's copy only if the owner signed it and it is the set named."""
    from footage.masks import MaskError, choose_basis

    def signed(masks, issued, previous=None, key=owner) -> str:
        return sign_decision(
            MaskUpdate.create(DEVICE, masks, issued=issued, previous=previous), key.sign_private
        )

    def held(s: str | None) -> dict:
        return {"hash": decision_hash(s) if s else None, "update": s}

    a = signed([("street", POLY)], 1000)
    b = signed([("street", POLY), ("door", POLY)], 2000, decision_hash(a))
    pk = owner.sign_public
    # Fresh client: the set in force, named.
    base, previous, note = choose_basis(DEVICE, None, held(a), pk)
    assert [m.name for m in base.masks] == ["street"] and previous == decision_hash(a)
    assert note is None
    # The relay's newer set wins over an older kept one.
    base, previous, note = choose_basis(DEVICE, a, held(b), pk)
    assert [m.name for m in base.masks] == ["door", "street"] and previous == decision_hash(b)
    # A newer kept set built on the one in force: in flight if the relay took it...
    assert choose_basis(DEVICE, b, held(a), pk)[1] == decision_hash(b)
    # ...rebuilt in its place if it did not.
    assert choose_basis(DEVICE, b, held(a), pk, local_sent=False)[1] == decision_hash(a)
    # A newer kept set built on another set (refused as stale): the set in force, told.
    c = signed([("mine", POLY)], 3000, decision_hash(a))
    base, previous, note = choose_basis(DEVICE, c, held(b), pk)
    assert previous == decision_hash(b) and note and "refused" in note
    # The doorbell holds none: the kept masks again, built on nothing.
    assert choose_basis(DEVICE, b, held(None), pk)[1:] == (None, None)
    # What the relay cannot do: serve a set the owner did not sign, or another than named.
    forged = signed([], 9000, decision_hash(b), key=OwnerKeys.generate())
    with pytest.raises(MaskError, match="does not check out"):
        choose_basis(DEVICE, b, held(forged), pk)
    with pytest.raises(MaskError, match="not the one it names"):
        choose_basis(DEVICE, b, {"hash": decision_hash(b), "update": a}, pk)
    with pytest.raises(MaskError, match="does not check out"):
        choose_basis("other-door", None, held(a), pk)
