"""Where released ciphertext waits for its requester: a local folder, or S3.

Both hand out URLs that work for one transfer within minutes: the doorbell PUTs
a clip's ciphertext to one, the requester GETs it from another.  The relay only
ever stores ciphertext (it has no key).

* :class:`LocalBlobStore` keeps files under a folder; its URLs point at the
  relay's own ``/v1/blobs/{token}`` endpoint, and the token is single-use and
  expires.
* :class:`S3BlobStore` uses boto3 presigned PUT and GET URLs.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import redis

from relay import keyspace as ks

URL_TTL_S = 600


class BlobStore(Protocol):
    def upload_url(self, key: str) -> str: ...
    def download_url(self, key: str) -> str: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...


class TokenError(Exception):
    """A blob URL that is unknown, used already, expired, or for the other direction."""


class LocalBlobStore:
    """Files under ``root``; single-use, expiring URLs served by the relay itself."""

    def __init__(self, root: Path, r: redis.Redis, base_url: str, ttl_s: float = URL_TTL_S) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.r = r
        self.base_url = base_url.rstrip("/")
        self.ttl_s = ttl_s

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.root / digest[:2] / digest

    def _mint(self, key: str, mode: str) -> str:
        token = secrets.token_urlsafe(32)
        record = json.dumps({"key": key, "mode": mode, "expires": time.time() + self.ttl_s})
        self.r.set(ks.blob_token(_hash(token)), record, ex=int(self.ttl_s) + 60)
        return f"{self.base_url}/v1/blobs/{token}"

    def upload_url(self, key: str) -> str:
        return self._mint(key, "put")

    def download_url(self, key: str) -> str:
        return self._mint(key, "get")

    def redeem(self, token: str, mode: str) -> str:
        """Use a token once: its blob key, or TokenError."""
        raw = self.r.getdel(ks.blob_token(_hash(token)))
        if raw is None:
            raise TokenError("unknown or already used link")
        record = json.loads(raw)
        if record["mode"] != mode:
            raise TokenError(f"this link is for {record['mode'].upper()}, not {mode.upper()}")
        if record["expires"] < time.time():
            raise TokenError("this link has expired")
        return str(record["key"])

    def write(self, key: str, chunks: Iterator[bytes]) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        size = 0
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                size += len(chunk)
        tmp.replace(path)
        return size

    def open(self, key: str) -> Any:
        return open(self._path(key), "rb")

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3BlobStore:
    """An S3 bucket through boto3's presigned URLs."""

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        ttl_s: float = URL_TTL_S,
        **client_kwargs: Any,
    ) -> None:
        import boto3

        self.bucket = bucket
        self.ttl_s = int(ttl_s)
        self.s3 = boto3.client("s3", endpoint_url=endpoint_url, **client_kwargs)

    def upload_url(self, key: str) -> str:
        return str(
            self.s3.generate_presigned_url(
                "put_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    "ContentType": "application/octet-stream",
                },
                ExpiresIn=self.ttl_s,
            )
        )

    def download_url(self, key: str) -> str:
        return str(
            self.s3.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.ttl_s
            )
        )

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError:
            return False
        return True

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=key)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def blob_key(request_id: str, device: str, clip_id: str) -> str:
    """Where a released clip's ciphertext is kept."""
    return f"{request_id}/{device}/{clip_id}.enc"
