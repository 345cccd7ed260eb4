"""The crypto helpers: tampering, truncation, wrong keys and forged signatures all fail."""

import io
import os
import time

import pytest

from protocol.crypto import (
    CHUNK,
    CryptoFailure,
    EncryptingWriter,
    OwnerKeys,
    decrypt_bytes,
    decrypt_stream,
    encrypt_bytes,
    new_clip_key,
    unwrap_key,
    verify_payload,
    wrap_key,
)
from protocol.decisions import approval_payload


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7])
def test_round_trip_every_size(size):
    key, data = new_clip_key(), os.urandom(size)
    assert decrypt_bytes(encrypt_bytes(data, key), key) == data


def test_streaming_writer_keeps_memory_bounded():
    key = new_clip_key()
    out = io.BytesIO()
    w = EncryptingWriter(out, key)
    for _ in range(50):
        w.write(b"x" * 10_000)
        assert len(w._buf) <= CHUNK
    w.close()
    plain = io.BytesIO()
    assert decrypt_stream(io.BytesIO(out.getvalue()), plain, key) == 500_000


def test_tampering_truncation_and_wrong_key_are_refused():
    key = new_clip_key()
    enc = encrypt_bytes(os.urandom(3 * CHUNK + 100), key)
    flipped = bytearray(enc)
    flipped[CHUNK + 50] ^= 1
    whole_chunks_only = enc[: 15 + 3 * (CHUNK + 16)]  # the last chunk dropped
    for bad in (bytes(flipped), enc[:-1], whole_chunks_only):
        with pytest.raises(CryptoFailure):
            decrypt_bytes(bad, key)
    with pytest.raises(CryptoFailure):
        decrypt_bytes(enc, new_clip_key())
    with pytest.raises(CryptoFailure):
        decrypt_bytes(b"ODB1", key)


def test_key_wrapping_opens_only_for_the_recipient():
    owner, stranger = OwnerKeys.generate(), OwnerKeys.generate()
    key = new_clip_key()
    wrapped = wrap_key(key, owner.box_public)
    assert unwrap_key(wrapped, owner.box_private) == key
    with pytest.raises(CryptoFailure):
        unwrap_key(wrapped, stranger.box_private)


def test_signatures_bind_every_field():
    owner, other = OwnerKeys.generate(), OwnerKeys.generate()
    payload = approval_payload(
        "req-1",
        "front-door",
        ["b", "a"],
        other.box_public,
        time.time() + 60,
        {"a": new_clip_key(), "b": new_clip_key()},
    )
    assert payload["clip_ids"] == ["a", "b"]
    signed = owner.sign(payload)
    assert verify_payload(signed, owner.sign_public) == payload
    with pytest.raises(CryptoFailure):
        verify_payload(signed, other.sign_public)
    forged = other.sign(payload)
    with pytest.raises(CryptoFailure):
        verify_payload(forged, owner.sign_public)
    import base64
    import json

    altered = dict(signed)
    body = json.loads(base64.b64decode(signed["payload"]))
    body["clip_ids"] = ["a", "b", "c"]
    altered["payload"] = base64.b64encode(json.dumps(body).encode()).decode()
    with pytest.raises(CryptoFailure):
        verify_payload(altered, owner.sign_public)


def test_keys_save_with_private_files_0600(tmp_path):
    owner = OwnerKeys.generate()
    owner.save(tmp_path / "k")
    assert (tmp_path / "k" / "sign.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k" / "box.key").stat().st_mode & 0o777 == 0o600
    assert OwnerKeys.load(tmp_path / "k") == owner
