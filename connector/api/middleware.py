"""Pure ASGI middleware: request body limit and per-route request metrics."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connector.api.errors import ApiError, error_body
from connector.api.metrics import observe_request


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "payload_too_large", f"the request body is larger than api.max_body_bytes ({limit} bytes)")


class HttpMiddleware:
    """Pure ASGI middleware that works on HTTP requests (:meth:`handle`); lifespan and the rest pass through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class BodyLimitMiddleware(HttpMiddleware):
    """Answers 413 when a body is (announced or turns out to be) larger than ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        announced: int | None = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    announced = int(value)
                except ValueError:
                    announced = None
                break
        if announced is not None:
            if announced > self.max_bytes:
                await self._too_large(send)
                return  # the server discards the unread body
            # the server holds the body to its announced length; count anyway
            await self.app(scope, self._counting(receive), send)
            return
        # no length announced (chunked): read it here, up to the limit, then hand it on
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            if messages:
                return messages.pop(0)
            return await receive()

        await self.app(scope, replay, send)

    def _counting(self, receive: Receive) -> Receive:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        return limited_receive

    async def _too_large(self, send: Send) -> None:
        await _send_json(send, 413, error_body("payload_too_large", BodyTooLarge(self.max_bytes).message))


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class MetricsMiddleware(HttpMiddleware):
    """Counts requests and measures their time per route template (not per raw path)."""

    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...] = ()) -> None:
        super().__init__(app)
        #: prefixes of included routers (newer FastAPI keeps the router's own path in the scope's route)
        self.prefixes = prefixes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            path = scope.get("path", "")
            for prefix in self.prefixes:
                if route is not None and path.startswith(prefix + "/") and not template.startswith(prefix + "/"):
                    template = prefix + template
                    break
            observe_request(scope.get("method", ""), template, status, time.perf_counter() - started)
