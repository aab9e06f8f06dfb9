"""The REST API's use of the product's metrics (``connector.metrics``) and the ``/metrics`` exposition."""

from __future__ import annotations

from prometheus_client import REGISTRY as PROCESS_REGISTRY
from prometheus_client import generate_latest

from connector import metrics as product
from connector.model.classifier import Prediction

#: ``source`` label of the classification metrics for calls made by the API
SOURCE = "api"


def observe_forward_pass(texts: int, seconds: float) -> None:
    """One classifier call of the API (a micro-batch, or one request with batching off)."""
    product.BATCH_SIZE.labels(source=SOURCE).observe(texts)
    product.CLASSIFICATION_SECONDS.labels(source=SOURCE).observe(seconds)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    product.API_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
    product.API_REQUEST_SECONDS.labels(method=method, route=route).observe(seconds)


def observe_predictions(predictions: list[Prediction]) -> None:
    for prediction in predictions:
        product.observe_predictions({name: fp.confidence for name, fp in prediction.fields.items()})


def exposition() -> bytes:
    """The product's metrics, then the process's (CPU, memory, file descriptors, GC)."""
    return generate_latest(product.REGISTRY) + generate_latest(PROCESS_REGISTRY)
