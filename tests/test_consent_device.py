"""The doorbell is the enforcer: only its owner's fresh, exact approval releases a clip."""

from __future__ import annotations

import json
import time

import pytest
from conftest import ffprobe

from firmware.consent import CommandHandler, NonceLedger
from protocol import DeleteCommand, Deleted, ReleaseCommand, Released, new_id, utcnow
from protocol.crypto import (
    OwnerKeys,
    b64,
    decrypt_bytes,
    unb64,
    unwrap_key,
    wrap_key,
)
from protocol.decisions import approval_payload, deletion_payload


class Harness:
    def __init__(self, make_bell, recorder, tmp_path) -> None:
        self.owner = OwnerKeys.generate()
        self.requester = OwnerKeys.generate()
        self.other_requester = OwnerKeys.generate()
        bell = make_bell("porch")
        bell.owner = self.owner
        bell.store.owner_box_public = self.owner.box_public
        bell.schedule_press(2.0)
        bell.run(8.0)
        (saved,) = recorder.of("clip_saved")
        self.clip_id = saved.data["clip"]
        self.bell = bell
        self.device = bell.config.device.id
        self.uploads: dict[str, bytes] = {}
        self.announced: list = []
        self.handler = CommandHandler(
            self.device,
            self.owner.sign_public,
            bell.store,
            self.announced.append,
            NonceLedger(tmp_path / "nonces.sqlite"),
            upload=lambda url, path: self.uploads.__setitem__(url, path.read_bytes()),
        )

    def approval(self, signer: OwnerKeys | None = None, **changes) -> str:
        record = self.bell.store.get(self.clip_id)
        key = unwrap_key(unb64(record.wrapped_key), self.owner.box_private)
        payload = approval_payload(
            "req-0001",
            self.device,
            [self.clip_id],
            self.requester.box_public,
            time.time() + 600,
            {self.clip_id: key},
        )
        payload.update(changes)
        signed = (signer or self.owner).sign(payload)
        return b64(json.dumps(signed).encode())

    def approval_keys(self) -> str:
        """A well-formed sealed key (for approvals naming clips that do not exist)."""
        return b64(wrap_key(b"k" * 32, self.requester.box_public))

    def release(self, approval: str, urls: dict | None = None, request_id: str = "req-0001"):
        cmd = ReleaseCommand(
            id=new_id(),
            ts=utcnow(),
            device=self.device,
            request_id=request_id,
            approval=approval,
            upload_urls=urls or {self.clip_id: "https://blobs/x"},
        )
        self.handler.handle(cmd)


@pytest.fixture
def h(make_bell, recorder, tmp_path):
    return Harness(make_bell, recorder, tmp_path)


def test_a_valid_approval_releases_to_the_named_requester_only(h, tmp_path):
    h.release(h.approval())
    assert h.handler.counters["released"] == 1, h.handler.refusals
    (msg,) = h.announced
    assert isinstance(msg, Released) and msg.clip_id == h.clip_id
    ciphertext = h.uploads["https://blobs/x"]
    assert ciphertext == (h.bell.store.dir / h.bell.store.get(h.clip_id).video).read_bytes()
    key = unwrap_key(unb64(msg.wrapped_key), h.requester.box_private)
    (tmp_path / "out.mp4").write_bytes(decrypt_bytes(ciphertext, key))
    assert ffprobe(tmp_path / "out.mp4")["streams"][0]["codec_name"] == "h264"
    # Requester B cannot open what was released to A.
    from protocol.crypto import CryptoFailure

    with pytest.raises(CryptoFailure):
        unwrap_key(unb64(msg.wrapped_key), h.other_requester.box_private)


@pytest.mark.parametrize(
    "case, message",
    [
        ("forged", "not signed by this doorbell's owner"),
        ("altered", "not signed by this doorbell's owner"),
        ("expired", "expired"),
        ("other_device", "another-bell"),
        ("other_request", "another request"),
        ("extra_clip", "other clips than the owner approved"),
        ("unknown_clip", "no clip"),
        ("missing_key", "one sealed key per approved clip"),
        ("bad_key", "sealed box"),
    ],
)
def test_bad_approvals_are_refused_even_when_the_relay_forwards_them(h, case, message):
    if case == "forged":
        h.release(h.approval(signer=OwnerKeys.generate()))
    elif case == "altered":
        signed = json.loads(unb64(h.approval()))
        body = json.loads(unb64(signed["payload"]))
        body["requester_key"] = b64(h.other_requester.box_public)  # redirect to B
        signed["payload"] = b64(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
        h.release(b64(json.dumps(signed).encode()))
    elif case == "expired":
        h.release(h.approval(expires=int(time.time()) - 1))
    elif case == "other_device":
        h.release(h.approval(device="another-bell"))
    elif case == "other_request":
        h.release(h.approval(), request_id="req-0002")
    elif case == "extra_clip":
        h.release(h.approval(), urls={h.clip_id: "https://a", "someone-elses-clip": "https://b"})
    elif case == "missing_key":
        h.release(h.approval(keys={}))
    elif case == "bad_key":
        h.release(h.approval(keys={h.clip_id: b64(b"k" * 32)}))  # a raw key, not sealed
    elif case == "unknown_clip":
        sealed = h.approval_keys()
        h.release(
            h.approval(clip_ids=["no-such-clip"], keys={"no-such-clip": sealed}),
            urls={"no-such-clip": "https://a"},
        )
    assert h.handler.counters["released"] == 0
    # Nothing released; the refusal itself is announced, for the public log.
    assert h.uploads == {} and [m.kind for m in h.announced] == ["refused"]
    assert message in h.handler.refusals[-1] and message in h.announced[0].reason


def test_a_replayed_approval_is_refused(h):
    approval = h.approval()
    h.release(approval)
    h.release(approval)
    assert h.handler.counters["released"] == 1
    assert "replay" in h.handler.refusals[-1]


def test_a_signed_deletion_shreds_the_clip(h):
    payload = deletion_payload(h.device, h.clip_id)
    sig = b64(json.dumps(h.owner.sign(payload)).encode())
    forged = b64(json.dumps(OwnerKeys.generate().sign(payload)).encode())
    h.handler.handle(
        DeleteCommand(
            id=new_id(), ts=utcnow(), device=h.device, clip_id=h.clip_id, signature=forged
        )
    )
    assert h.bell.store.get(h.clip_id) is not None
    h.handler.handle(
        DeleteCommand(id=new_id(), ts=utcnow(), device=h.device, clip_id=h.clip_id, signature=sig)
    )
    assert h.bell.store.get(h.clip_id) is None
    assert sorted(p.name for p in h.bell.store.dir.iterdir()) == [], "ciphertext and sealed key"
    assert isinstance(h.announced[-1], Deleted) and h.announced[-1].reason == "owner"
