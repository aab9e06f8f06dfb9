"""Bearer tokens and scopes, constant-time comparison, and the loopback rule without tokens."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from connector.api import auth as auth_module
from connector.api.auth import InsecureBindError, TokenVerifier, check_bind_address, is_loopback
from connector.api.settings import ApiToken
from connector.store.db import Store
from tests.support.api import ADMIN_TOKEN, CLASSIFY_TOKEN, auth, install_tiny_models, live_api, api_config, sample_csv


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp("auth")
    config = api_config(tmp, tokens=True)
    store = Store(config.store_url)
    install_tiny_models(config, store)
    with live_api(config, store) as (client, _app):
        yield client
    store.dispose()


CLASSIFY_CALLS = [
    ("POST", "/api/v1/classify", {"json": {"ticket_data": "printer"}}),
    ("POST", "/api/v1/classify/batch", {"json": {"tickets": ["printer"]}}),
]
ADMIN_CALLS = [
    ("POST", "/api/v1/train-data", {"content": sample_csv(3), "headers": {"Content-Type": "text/csv"}}),
    ("POST", "/api/v1/train", {"json": {"dataset_id": 999}}),
    ("GET", "/api/v1/train/1", {}),
    ("DELETE", "/api/v1/train/1", {}),
    ("POST", "/api/v1/train/1/cancel", {}),
    ("GET", "/api/v1/models", {}),
    ("POST", "/api/v1/models/tiny-1/activate", {}),
    ("POST", "/api/v1/models/rollback", {}),
]


def _call(client: httpx.Client, method: str, path: str, kwargs: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    kwargs = dict(kwargs)
    kwargs["headers"] = {**kwargs.get("headers", {}), **headers}
    return client.request(method, path, **kwargs)


@pytest.mark.parametrize(("method", "path", "kwargs"), CLASSIFY_CALLS + ADMIN_CALLS)
def test_missing_token_is_401(client: httpx.Client, method: str, path: str, kwargs: dict[str, Any]) -> None:
    response = _call(client, method, path, kwargs, {})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {ADMIN_TOKEN}x",
        f"Bearer {ADMIN_TOKEN[:-1]}",
        "Bearer",
        f"Basic {ADMIN_TOKEN}",
        ADMIN_TOKEN,
        f"Bearer {CLASSIFY_TOKEN.upper()}",
    ],
)
def test_wrong_token_is_401(client: httpx.Client, header: str) -> None:
    response = client.post("/api/v1/classify", json={"ticket_data": "printer"}, headers={"Authorization": header})
    assert response.status_code == 401
    assert ADMIN_TOKEN not in response.text


@pytest.mark.parametrize(("method", "path", "kwargs"), ADMIN_CALLS)
def test_classify_scope_cannot_administer(client: httpx.Client, method: str, path: str, kwargs: dict[str, Any]) -> None:
    response = _call(client, method, path, kwargs, auth(CLASSIFY_TOKEN))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize(("method", "path", "kwargs"), CLASSIFY_CALLS)
def test_both_scopes_classify(client: httpx.Client, method: str, path: str, kwargs: dict[str, Any]) -> None:
    for token in (CLASSIFY_TOKEN, ADMIN_TOKEN):
        assert _call(client, method, path, kwargs, auth(token)).status_code == 200


def test_admin_token_administers(client: httpx.Client) -> None:
    assert client.get("/api/v1/models", headers=auth(ADMIN_TOKEN)).status_code == 200
    response = client.post(
        "/api/v1/train-data", content=sample_csv(3), headers={"Content-Type": "text/csv", **auth(ADMIN_TOKEN)}
    )
    assert response.status_code == 201


def test_health_metrics_and_openapi_need_no_token(client: httpx.Client) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert client.get(path).status_code == 200, path
    scheme = client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert any(s.get("scheme", "").lower() == "bearer" for s in scheme.values())


def test_unauthenticated_body_is_not_parsed_first(client: httpx.Client) -> None:
    # a malformed body without a token: 401 or 422 but never 500, and no detail about the body
    response = client.post("/api/v1/classify", content=b"{", headers={"Content-Type": "application/json"})
    assert response.status_code in (401, 422)


def _raw_request(base_url: str, head: str, body_part: bytes, timeout: float = 5.0) -> bytes:
    """Send a request head and only the start of its announced body; what the server answers meanwhile."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1") + body_part)
        try:
            return sock.recv(65536)
        except TimeoutError:
            return b""


@pytest.mark.parametrize("authorization", ["", "Authorization: Bearer wrong-token-0123456789\r\n"])
@pytest.mark.parametrize("path", ["/api/v1/classify", "/api/v1/train-data"])
def test_token_is_checked_before_the_body_is_read(client: httpx.Client, authorization: str, path: str) -> None:
    # a 45 MB body announced, 1 KB sent: the 401 comes without waiting for (or parsing) the rest
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {45 * 1024 * 1024}\r\n{authorization}\r\n"
    )
    answer = _raw_request(str(client.base_url), head, b'{"ticket_data": "' + b"x" * 1024)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"www-authenticate: Bearer" in answer.lower().replace(b"bearer", b"Bearer")


def test_scope_is_still_checked_with_a_valid_token(client: httpx.Client) -> None:
    response = client.post("/api/v1/train", json={}, headers=auth(CLASSIFY_TOKEN))
    assert response.status_code == 403
    # and an unknown path under the API needs a token too (nothing about the API is revealed without one)
    assert client.get("/api/v1/nothing").status_code == 401
    assert client.get("/api/v1/nothing", headers=auth(CLASSIFY_TOKEN)).status_code == 404


def test_verifier_compares_every_token_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = [
        ApiToken(name="a", token="first-token-0123456789", scopes=["classify"]),
        ApiToken(name="b", token="second-token-0123456789", scopes=["admin"]),
    ]
    verifier = TokenVerifier(tokens)
    calls: list[tuple[bytes, bytes]] = []
    real = auth_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    principal = verifier.verify("first-token-0123456789")
    assert principal is not None and principal.name == "a" and principal.scopes == {"classify"}
    assert len(calls) == 2  # no early exit on the first match
    assert all(len(a) == len(b) == 32 for a, b in calls)  # digests: lengths do not leak
    calls.clear()
    admin = verifier.verify("second-token-0123456789")
    assert admin is not None and admin.scopes == {"classify", "admin"}
    assert verifier.verify("third") is None and len(calls) == 4


def test_loopback_rule() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
        check_bind_address(host, [])
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        assert not is_loopback(host), host
        with pytest.raises(InsecureBindError, match="api.tokens"):
            check_bind_address(host, [])
    check_bind_address("0.0.0.0", [ApiToken(name="x", token="tok-0123456789abcdef", scopes=["admin"])])


def test_token_settings(tmp_path: Any) -> None:
    from pydantic import ValidationError

    secret = tmp_path / "token"
    secret.write_text("from-a-file-0123456789\n", encoding="utf-8")
    token = ApiToken.model_validate({"name": "f", "token_file": str(secret), "scopes": ["admin"]})
    assert token.token.get_secret_value() == "from-a-file-0123456789"
    assert "from-a-file" not in repr(token)
    with pytest.raises(ValidationError, match="16 characters"):
        ApiToken(name="short", token="abc")
    with pytest.raises(ValidationError, match="cannot read"):
        ApiToken.model_validate({"name": "f", "token_file": str(tmp_path / "missing")})
    with pytest.raises(ValidationError):
        ApiToken.model_validate({"name": "f", "token": "x" * 20, "scopes": ["superuser"]})


@pytest.mark.parametrize("weak", [" " * 22, "\t" * 20, "a" * 32, "0" * 16, " " + "x" * 20 + " "])
def test_blank_or_repeated_character_tokens_are_refused(weak: str) -> None:
    from pydantic import ValidationError

    from connector.config import ConfigError, parse_config

    with pytest.raises(ValidationError, match="token"):
        ApiToken(name="weak", token=weak, scopes=["admin"])
    with pytest.raises(ConfigError, match="token"):
        parse_config({"api": {"tokens": [{"name": "weak", "token": weak}]}})


def test_without_tokens_the_api_is_open_on_loopback(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    from connector.api.server import build_server

    config = api_config(tmp_path)
    store = Store(config.store_url)
    with caplog.at_level("WARNING", logger="connector.api.auth"):
        build_server(config, store, port=0)
    assert "no api.tokens configured" in caplog.text and "loopback" in caplog.text
    with pytest.raises(InsecureBindError):
        build_server(config, store, host="0.0.0.0", port=0)
    store.dispose()
