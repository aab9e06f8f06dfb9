"""HttpTransport against a real HTTP server on 127.0.0.1: each bad answer becomes a typed, clear error."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from adapters.base import AuthenticationError, NotFoundError, PermanentError, ProtocolError, TransientError
from adapters.http import HttpTransport, RetryPolicy, parse_retry_after


class _Handler(http.server.BaseHTTPRequestHandler):
    #: path -> list of (status, headers, body, delay); consumed in order, the last one repeats
    script: dict[str, list[tuple[int, dict[str, str], bytes, float]]] = {}
    hits: dict[str, list[float]] = {}

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?")[0]
        self.hits.setdefault(path, []).append(time.monotonic())
        answers = self.script.get(path) or [(404, {"Content-Type": "application/json"}, b'{"error":"nope"}', 0.0)]
        status, headers, body, delay = answers.pop(0) if len(answers) > 1 else answers[0]
        if delay:
            time.sleep(delay)
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@contextmanager
def server(script: dict[str, list[tuple[int, dict[str, str], bytes, float]]]) -> Iterator[str]:
    handler = type("H", (_Handler,), {"script": script, "hits": {}})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.hits
    finally:
        httpd.shutdown()
        httpd.server_close()


JSON = {"Content-Type": "application/json"}
HTML = {"Content-Type": "text/html"}
FAST = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05, max_retry_after=5)


def call(base: str, path: str = "/x", *, timeout: float = 2.0, retry: RetryPolicy = FAST):
    async def go():
        transport = HttpTransport(base, system="test", timeout=timeout, retry=retry)
        try:
            return await transport.json("GET", path), transport.calls
        finally:
            await transport.aclose()

    return asyncio.run(go())


def test_ok_json() -> None:
    with server({"/x": [(200, JSON, b'{"a": 1}', 0)]}) as (base, _):
        assert call(base) == ({"a": 1}, 1)


def test_malformed_json_is_a_protocol_error_naming_the_cause() -> None:
    with server({"/x": [(200, JSON, b'{"a": ', 0)]}) as (base, hits):
        with pytest.raises(ProtocolError, match=r"GET .*/x answered application/json that is not JSON"):
            call(base)
        assert len(hits["/x"]) == 1  # not retried


def test_html_page_with_200_is_a_protocol_error() -> None:
    with server({"/x": [(200, HTML, b"<html><body>Please log in</body></html>", 0)]}) as (base, _):
        with pytest.raises(ProtocolError, match="text/html that is not JSON.*Please log in"):
            call(base)


def test_html_error_page_502_is_transient_and_retried() -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    with server({"/x": [(502, HTML, page, 0)]}) as (base, hits):
        with pytest.raises(TransientError, match="HTTP 502.*Bad Gateway"):
            call(base)
        assert len(hits["/x"]) == 3


def test_500_then_success_is_retried_transparently() -> None:
    with server({"/x": [(500, JSON, b"{}", 0), (200, JSON, b"[1]", 0)]}) as (base, hits):
        assert call(base) == ([1], 2)


def test_401_is_an_authentication_error_not_retried() -> None:
    with server({"/x": [(401, JSON, b'{"error":"invalid token"}', 0)]}) as (base, hits):
        with pytest.raises(AuthenticationError, match="HTTP 401.*invalid token"):
            call(base)
        assert len(hits["/x"]) == 1


def test_404_and_other_4xx_are_permanent() -> None:
    with server({"/y": [(400, JSON, b'{"error":"bad"}', 0)]}) as (base, _):
        with pytest.raises(NotFoundError):
            call(base, "/x")
        with pytest.raises(PermanentError, match="HTTP 400"):
            call(base, "/y")


def test_429_honours_retry_after() -> None:
    script = {"/x": [(429, {**JSON, "Retry-After": "1"}, b"{}", 0), (200, JSON, b'{"ok": true}', 0)]}
    with server(script) as (base, hits):
        assert call(base) == ({"ok": True}, 2)
        first, second = hits["/x"]
        assert second - first >= 0.95  # waited what the server asked, not the 10 ms backoff


def test_429_forever_reports_retry_after() -> None:
    with server({"/x": [(429, {**JSON, "Retry-After": "0"}, b"{}", 0)]}) as (base, _):
        with pytest.raises(TransientError, match="HTTP 429") as info:
            call(base)
        assert info.value.retry_after == 0


def test_no_answer_until_the_timeout_is_transient() -> None:
    with server({"/x": [(200, JSON, b"{}", 3.0)]}) as (base, hits):
        started = time.monotonic()
        with pytest.raises(TransientError, match="timed out"):
            call(base, timeout=0.3, retry=RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.01))
        assert time.monotonic() - started < 2.5


def test_connection_refused_is_transient() -> None:
    with server({}) as (base, _):
        pass  # closed again: nothing listens on that port now
    with pytest.raises(TransientError):
        call(base)


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after("5") == 5
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
