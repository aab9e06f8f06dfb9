"""Error answers of the API: one JSON shape, never a stack trace.

Every error is ``{"error": {"code": "...", "message": "...", ...details}}``
with the matching HTTP status.  Validation errors of request bodies become 422
(or 400 for the classic calls' bodies) naming the field; anything unexpected
becomes a 500 whose answer carries only a request id, while the log keeps the
trace.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answer with a status, a short machine code and a message for people."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **details}}


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "unavailable",
}


def _validation_problems(exc: RequestValidationError) -> list[dict[str, Any]]:
    problems = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part != "body"]
        problems.append({"field": ".".join(loc) or "body", "problem": str(err.get("msg", "invalid"))})
    return problems[:20]


def _allowed_methods(request: Request, announced: str | None) -> str:
    """Every method served at this path: Starlette names only the first matching route's, so add the methods
    the OpenAPI document lists for every path template that matches."""
    methods = {m.strip().upper() for m in (announced or "").split(",") if m.strip()}
    path = request.url.path
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            methods |= {m.upper() for m in operations}
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, **exc.details), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = _validation_problems(exc)
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:3])
        return JSONResponse(
            error_body("invalid_request", f"invalid request: {summary}", problems=problems), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request, headers.pop("Allow", None) or headers.pop("allow", None))
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = uuid.uuid4().hex[:12]
        log.error("request %s %s failed (request id %s)", request.method, request.url.path, request_id, exc_info=exc)
        return JSONResponse(
            error_body("internal_error", "internal error; see the server log", request_id=request_id), status_code=500
        )
