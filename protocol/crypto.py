"""The project's cryptography, in one place, built only from vetted primitives.

* **Clips** are encrypted with ChaCha20-Poly1305 (fast without AES instructions,
  as on a Pi 4) in the STREAM construction: fixed-size chunks, each with a nonce of
  a random prefix, a chunk counter and a last-chunk flag, so chunks cannot be
  reordered, dropped or the file truncated without detection; memory stays
  bounded however long the clip.
* **Clip keys** are wrapped to a recipient's X25519 key with a libsodium sealed
  box: the owner's at recording time, the approved requester's at release.
* **Decisions** (approvals, deletions) are Ed25519 signatures by the owner over a
  canonical JSON payload.

Nothing here ever logs or returns a secret in an error message.

Example::

    owner = OwnerKeys.generate()
    key = new_clip_key()
    with open("clip.enc", "wb") as f, EncryptingWriter(f, key) as w:
        w.write(mp4_bytes)
    wrapped = wrap_key(key, owner.box_public)
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

MAGIC = b"ODB1"
CHUNK = 64 * 1024
_TAG = 16
_HEADER = struct.Struct(">4sI7s")  # magic, chunk size, nonce prefix


class CryptoFailure(ValueError):
    """Decryption, unwrapping or verification failed.  Says what, never with secrets."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise CryptoFailure("not valid base64") from None


def new_clip_key() -> bytes:
    return ChaCha20Poly1305.generate_key()


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">I", counter) + (b"\x01" if last else b"\x00")


class EncryptingWriter(io.RawIOBase):
    """A write-only, non-seekable stream that encrypts what is written to ``out``.

    Close it (or use it as a context manager) to write the final chunk.
    """

    def __init__(self, out: BinaryIO, key: bytes, chunk: int = CHUNK) -> None:
        self._out = out
        self._aead = ChaCha20Poly1305(key)
        self._prefix = os.urandom(7)
        self._chunk = chunk
        self._header = _HEADER.pack(MAGIC, chunk, self._prefix)
        out.write(self._header)
        self._buf = bytearray()
        self._counter = 0
        self._done = False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        if self._done:
            raise ValueError("write to a finished EncryptingWriter")
        self._buf += bytes(data)
        # Keep at least one byte back: the last chunk must be written with the
        # last-chunk flag, and only close() knows which one is last.
        while len(self._buf) > self._chunk:
            self._emit(bytes(self._buf[: self._chunk]), last=False)
            del self._buf[: self._chunk]
        return len(data)

    def _emit(self, plain: bytes, last: bool) -> None:
        nonce = _nonce(self._prefix, self._counter, last)
        self._out.write(self._aead.encrypt(nonce, plain, self._header))
        self._counter += 1

    def close(self) -> None:
        if not self._done:
            self._emit(bytes(self._buf), last=True)
            self._buf.clear()
            self._done = True
        super().close()


def decrypt_stream(src: BinaryIO, dst: BinaryIO, key: bytes) -> int:
    """Decrypt ``src`` into ``dst``; raise :class:`CryptoFailure` if anything is off."""
    header = src.read(_HEADER.size)
    if len(header) != _HEADER.size:
        raise CryptoFailure("not an encrypted clip (too short)")
    magic, chunk, prefix = _HEADER.unpack(header)
    if magic != MAGIC or not 0 < chunk <= 1 << 24:
        raise CryptoFailure("not an encrypted clip (bad header)")
    aead = ChaCha20Poly1305(key)
    counter = written = 0
    block = src.read(chunk + _TAG)
    while True:
        nxt = src.read(chunk + _TAG)
        last = not nxt
        try:
            plain = aead.decrypt(_nonce(prefix, counter, last), block, header)
        except InvalidTag:
            raise CryptoFailure(
                "clip does not decrypt: wrong key, or the file was altered or truncated"
            ) from None
        dst.write(plain)
        written += len(plain)
        if last:
            return written
        block, counter = nxt, counter + 1


def encrypt_bytes(data: bytes, key: bytes) -> bytes:
    out = io.BytesIO()
    w = EncryptingWriter(out, key)
    w.write(data)
    w.close()
    return out.getvalue()


def decrypt_bytes(data: bytes, key: bytes) -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(data), out, key)
    return out.getvalue()


# ------------------------------------------------------------------ key wrapping


def wrap_key(key: bytes, recipient: bytes) -> bytes:
    """Seal ``key`` to the X25519 public key ``recipient`` (32 bytes)."""
    return SealedBox(PublicKey(recipient)).encrypt(key)


def unwrap_key(wrapped: bytes, private: bytes) -> bytes:
    try:
        return SealedBox(PrivateKey(private)).decrypt(wrapped)
    except CryptoError:
        raise CryptoFailure("the clip key does not open with this private key") from None


# ------------------------------------------------------------------ identities


@dataclass(frozen=True)
class OwnerKeys:
    """An Ed25519 key that signs decisions and an X25519 key that receives clips."""

    sign_private: bytes
    box_private: bytes

    @classmethod
    def generate(cls) -> OwnerKeys:
        return cls(bytes(SigningKey.generate()), bytes(PrivateKey.generate()))

    @property
    def sign_public(self) -> bytes:
        return bytes(SigningKey(self.sign_private).verify_key)

    @property
    def box_public(self) -> bytes:
        return bytes(PrivateKey(self.box_private).public_key)

    def sign(self, payload: dict[str, Any]) -> dict[str, str]:
        return sign_payload(payload, self.sign_private)

    def save(self, folder: Path) -> None:
        """Private halves mode 0600, public halves beside them."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in (("sign.key", self.sign_private), ("box.key", self.box_private)):
            fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(b64(data) + "\n")
        (folder / "sign.pub").write_text(b64(self.sign_public) + "\n")
        (folder / "box.pub").write_text(b64(self.box_public) + "\n")

    @classmethod
    def load(cls, folder: Path) -> OwnerKeys:
        try:
            sign = unb64((folder / "sign.key").read_text().strip())
            box = unb64((folder / "box.key").read_text().strip())
        except OSError as err:
            raise CryptoFailure(f"cannot read keys in {folder}: {err.strerror}") from None
        if len(sign) != 32 or len(box) != 32:
            raise CryptoFailure(f"keys in {folder} have the wrong length")
        return cls(sign, box)


def read_public_key(path: Path) -> bytes:
    try:
        key = unb64(path.read_text().strip())
    except OSError as err:
        raise CryptoFailure(f"cannot read {path}: {err.strerror}") from None
    if len(key) != 32:
        raise CryptoFailure(f"{path} is not a 32-byte public key")
    return key


# ------------------------------------------------------------------ signatures


def canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def sign_payload(payload: dict[str, Any], private: bytes) -> dict[str, str]:
    body = canonical(payload)
    sig = SigningKey(private).sign(body).signature
    return {"payload": b64(body), "signature": b64(sig)}


def verify_payload(signed: dict[str, str], public: bytes) -> dict[str, Any]:
    """The payload if ``signed`` carries a valid signature by ``public``, else CryptoFailure."""
    try:
        body = unb64(signed["payload"])
        VerifyKey(public).verify(body, unb64(signed["signature"]))
    except (KeyError, TypeError, BadSignatureError, CryptoError):
        raise CryptoFailure("the signature does not verify with the owner's key") from None
    data = json.loads(body)
    if not isinstance(data, dict):
        raise CryptoFailure("signed payload is not an object")
    return data
