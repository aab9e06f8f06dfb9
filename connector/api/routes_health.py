"""``/healthz`` (process up), ``/readyz`` (models loaded, store reachable), ``/metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from connector.api.metrics import exposition
from connector.api.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, summary="The process is up")
async def healthz() -> HealthOut:
    return HealthOut(status="ok")


def _store_reachable(request: Request) -> str:
    store = request.app.state.ctx.store
    try:
        with store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not reachable"
        return f"unreachable: {type(exc).__name__}"
    return "ok"


@router.get(
    "/readyz",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "not ready"}},
    summary="Models loaded and store reachable",
)
async def readyz(request: Request) -> JSONResponse:
    holder = request.app.state.ctx.holder
    model = "no model loaded"
    if holder.loaded:
        runtime = getattr(holder.current, "runtime", None)
        model = f"ok ({holder.current.version}{'; ' + runtime if runtime else ''})"
    checks = {
        "model": model,
        "store": await asyncio.to_thread(_store_reachable, request),
    }
    ready = holder.loaded and checks["store"] == "ok"
    body = HealthOut(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "metrics in the text exposition format"}},
)
async def metrics() -> Response:
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
