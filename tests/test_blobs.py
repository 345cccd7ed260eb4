"""Local blob links: single use, expiring, one direction, unguessable."""

import time

import fakeredis
import pytest
from fastapi.testclient import TestClient

from protocol.crypto import OwnerKeys
from relay.api import create_app
from relay.audit import AuditLog
from relay.blobs import LocalBlobStore, TokenError
from relay.consent import ConsentEngine
from relay.index import RelayIndex


@pytest.fixture
def store(tmp_path):
    return LocalBlobStore(tmp_path / "blobs", fakeredis.FakeRedis(), "http://relay.test")


def token(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_a_link_works_once(store):
    t = token(store.upload_url("r/d/c.enc"))
    assert store.redeem(t, "put") == "r/d/c.enc"
    with pytest.raises(TokenError, match="already used"):
        store.redeem(t, "put")


def test_expired_links_are_refused(tmp_path):
    store = LocalBlobStore(tmp_path, fakeredis.FakeRedis(), "http://relay.test", ttl_s=0.01)
    t = token(store.download_url("k"))
    time.sleep(0.05)
    with pytest.raises(TokenError, match="expired"):
        store.redeem(t, "get")


def test_links_go_one_way_and_cannot_be_forged(store):
    t = token(store.upload_url("k"))
    with pytest.raises(TokenError, match="for PUT"):
        store.redeem(t, "get")
    with pytest.raises(TokenError):
        store.redeem(t[:-1] + ("A" if t[-1] != "A" else "B"), "put")


def test_the_api_serves_blobs_through_links(store):
    r = store.r
    engine = ConsentEngine(RelayIndex(r), AuditLog(r, OwnerKeys.generate().sign_private))
    client = TestClient(create_app(engine, store, lambda t, p: None))
    up = store.upload_url("req/dev/clip.enc").removeprefix("http://relay.test")
    assert client.put(up, content=b"ciphertext").status_code == 201
    assert client.put(up, content=b"again").status_code == 403
    down = store.download_url("req/dev/clip.enc").removeprefix("http://relay.test")
    resp = client.get(down)
    assert resp.status_code == 200 and resp.content == b"ciphertext"
    again = client.get(down)
    assert again.status_code == 403 and again.json()["error"] == "bad_link"


def test_api_errors_are_json_with_a_reason(store):
    r = store.r
    engine = ConsentEngine(RelayIndex(r), AuditLog(r, OwnerKeys.generate().sign_private))
    client = TestClient(create_app(engine, store, lambda t, p: None))
    resp = client.get("/v1/asks")
    assert resp.status_code == 401 and resp.json()["reason"]
    resp = client.get("/v1/asks", headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401 and resp.json() == {
        "error": "unauthorized",
        "reason": "unknown token",
    }
    token_ = engine.add_requester("p", "agency", OwnerKeys.generate().box_public)
    resp = client.post(
        "/v1/requests", headers={"Authorization": f"Bearer {token_}"}, json={"lat": "north"}
    )
    assert resp.status_code == 400 and resp.json()["error"] == "invalid"
    resp = client.get("/v1/asks", headers={"Authorization": f"Bearer {token_}"})
    assert resp.status_code == 403
    assert client.get("/openapi.json").json()["info"]["title"] == "Open Doorbell relay"
