"""Logging: secrets redacted everywhere, JSON lines, one decision line per ticket without bodies."""

from __future__ import annotations

import io
import json
import logging

import pytest
from pydantic import SecretStr

from connector.config import parse_config
from connector.logging_setup import SecretFilter, collect_secrets, configure_logging


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_redacts_configured_secrets_headers_and_pairs() -> None:
    f = SecretFilter(["hunter2-password", "tok-ABCDEF123"])
    text = f.redact(
        "login with hunter2-password; Authorization: Bearer abcdefghijklmnop; url https://x/?token=zzz123&a=1;"
        " header tok-ABCDEF123 password=plain1 {'api_key': 'k-123456'}"
    )
    for secret in ("hunter2-password", "abcdefghijklmnop", "zzz123", "tok-ABCDEF123", "plain1", "k-123456"):
        assert secret not in text
    assert "a=1" in text and "***" in text


def test_text_and_json_output_with_tracebacks_redacted(restore_root) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", ["s3cr3t-value"], stream=stream)
    log = logging.getLogger("connector.test")
    log.info("connecting with %s", "s3cr3t-value")
    try:
        raise RuntimeError("failed with s3cr3t-value")
    except RuntimeError:
        log.exception("boom")
    log.debug("not shown")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["connecting with ***", "boom"]
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "connector.test"
    assert "RuntimeError: failed with ***" in lines[1]["exception"]
    assert "s3cr3t-value" not in stream.getvalue()

    stream = io.StringIO()
    configure_logging("DEBUG", "text", [], stream=stream)
    logging.getLogger("connector.test").debug("Authorization: Basic dXNlcjpwYXNz")
    assert "dXNlcjpwYXNz" not in stream.getvalue() and "DEBUG" in stream.getvalue()
    assert len([h for h in logging.getLogger().handlers if getattr(h, "_helpdesk_connector", False)]) == 1
    assert logging.getLogger("httpx").level == logging.WARNING  # request lines (with URLs) stay quiet


def test_collect_secrets_from_the_configuration() -> None:
    config = parse_config(
        {
            "store": {"url": "postgresql://hc:db-pass-123@127.0.0.1/hc"},
            "api": {"tokens": [{"name": "ci", "token": "api-token-999-abcdefgh"}]},
            "systems": {
                "a": {
                    "type": "generic_rest",
                    "connection": {"base_url": "http://x", "auth": {"type": "basic", "username": "u",
                                                                  "password": "basic-pass-1"}},
                }
            },
        }
    )
    secrets = collect_secrets(config)
    assert {"db-pass-123", "api-token-999-abcdefgh", "basic-pass-1"} <= set(secrets)
    assert isinstance(config.api.tokens[0].token, SecretStr)
