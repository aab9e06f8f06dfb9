"""``POST /classify`` (the classic call) and ``POST /classify/batch``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from connector.api.auth import Principal, require
from connector.api.errors import ApiError
from connector.api.metrics import observe_predictions
from connector.api.schemas import (
    BatchClassifyRequest,
    BatchClassifyResponse,
    BatchTicket,
    ClassifyRequest,
    ClassifyResponse,
    ErrorOut,
    FieldPredictionOut,
    LabelScoreOut,
)
from connector.model.classifier import ModelLoadError, Prediction
from connector.text import ticket_text

router = APIRouter(tags=["classify"])

#: the field answered as ``predicted_label`` / ``confidence`` (the classic answer)
PRIMARY_FIELD = "queue"

_ERRORS = {
    401: {"model": ErrorOut, "description": "missing or invalid token"},
    403: {"model": ErrorOut, "description": "the token lacks the classify scope"},
    413: {"model": ErrorOut, "description": "body, ticket or batch too large"},
    422: {"model": ErrorOut, "description": "invalid body"},
    503: {"model": ErrorOut, "description": "no model is loaded"},
}


def _text_of(request: Request, item: ClassifyRequest | BatchTicket | str, where: str) -> str:
    limit = request.app.state.ctx.config.api.max_ticket_chars
    if isinstance(item, str):
        raw_subject, raw_body = None, item
    elif item.ticket_data is not None:
        raw_subject, raw_body = None, item.ticket_data
    elif item.subject is not None or item.body is not None:
        raw_subject, raw_body = item.subject, item.body
    else:
        raise ApiError(422, "invalid_request", f"{where}: give ticket_data (or subject and body)")
    if len(raw_subject or "") + len(raw_body or "") > limit:
        raise ApiError(413, "ticket_too_large", f"{where}: the ticket is longer than api.max_ticket_chars ({limit})")
    return ticket_text(raw_subject, raw_body)


def _answer(prediction: Prediction) -> ClassifyResponse:
    fields = {
        name: FieldPredictionOut(
            label=fp.label,
            confidence=round(fp.confidence, 6),
            top_k=[LabelScoreOut(label=s.label, confidence=round(s.confidence, 6)) for s in fp.top_k],
        )
        for name, fp in prediction.fields.items()
    }
    primary = fields.get(PRIMARY_FIELD) or next(iter(fields.values()))
    priority = fields.get("priority")
    return ClassifyResponse(
        predicted_label=primary.label,
        confidence=primary.confidence,
        predicted_priority=priority.label if priority else None,
        priority_confidence=priority.confidence if priority else None,
        fields=fields,
        model_version=prediction.model_version,
    )


async def _classify(request: Request, texts: list[str]) -> list[Prediction]:
    try:
        predictions = await request.app.state.ctx.batcher.classify(texts)
    except ModelLoadError as exc:
        raise ApiError(503, "no_model", str(exc)) from None
    observe_predictions(predictions)
    return predictions


@router.post("/classify", response_model=ClassifyResponse, responses=_ERRORS, summary="Classify one ticket")
async def classify(
    body: ClassifyRequest, request: Request, _who: Principal = Depends(require("classify"))
) -> ClassifyResponse:
    """The classic call: ``{"ticket_data": "..."}`` answers ``predicted_label`` and ``confidence`` (the queue),
    and beside them the priority, the top-k of each field and the model version."""
    text = _text_of(request, body, "ticket_data")
    (prediction,) = await _classify(request, [text])
    return _answer(prediction)


@router.post(
    "/classify/batch", response_model=BatchClassifyResponse, responses=_ERRORS, summary="Classify several tickets"
)
async def classify_batch(
    body: BatchClassifyRequest, request: Request, _who: Principal = Depends(require("classify"))
) -> BatchClassifyResponse:
    """``{"tickets": ["text", {"ticket_data": "..."}, {"subject": "...", "body": "..."}]}``, answers in order."""
    limit = request.app.state.ctx.config.api.max_batch
    if len(body.tickets) > limit:
        raise ApiError(413, "batch_too_large", f"{len(body.tickets)} tickets; at most api.max_batch ({limit}) per call")
    if not body.tickets:
        return BatchClassifyResponse(results=[], model_version=_serving_version(request))
    texts = [_text_of(request, item, f"tickets[{i}]") for i, item in enumerate(body.tickets)]
    predictions = await _classify(request, texts)
    results = [_answer(p) for p in predictions]
    return BatchClassifyResponse(results=results, model_version=results[0].model_version)


def _serving_version(request: Request) -> str:
    holder = request.app.state.ctx.holder
    if not holder.loaded:
        raise ApiError(503, "no_model", "no model is loaded")
    return holder.current.version
