"""Prometheus metrics of the whole product, in one registry.

Every area increments the module-level objects below; the REST API exposes
:data:`REGISTRY` at ``/metrics`` (``prometheus_client.generate_latest(REGISTRY)``).
Label values are bounded: system names come from the configuration, fields
from ``model.fields``, outcomes and states from fixed sets.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from connector.store.decisions import FINAL_STATUSES

#: the registry every metric of helpdesk-connector lives in
REGISTRY = CollectorRegistry(auto_describe=True)

NAMESPACE = "helpdesk_connector"


def _counter(name: str, doc: str, labels: list[str]) -> Counter:
    return Counter(name, doc, labels, namespace=NAMESPACE, registry=REGISTRY)


def _gauge(name: str, doc: str, labels: list[str]) -> Gauge:
    return Gauge(name, doc, labels, namespace=NAMESPACE, registry=REGISTRY)


def _histogram(name: str, doc: str, labels: list[str], buckets: tuple[float, ...]) -> Histogram:
    return Histogram(name, doc, labels, namespace=NAMESPACE, registry=REGISTRY, buckets=buckets)


#: outcomes of one ticket decision (``decisions.status`` values, minus ``claimed``)
OUTCOMES = tuple(status.value for status in FINAL_STATUSES)

# --------------------------------------------------------------------------- polling and routing

TICKETS_FETCHED = _counter(
    "tickets_fetched",
    "Candidate tickets listed from a system that were not decided before",
    ["system"],
)
TICKET_DECISIONS = _counter(
    "ticket_decisions",
    "Finished ticket decisions by outcome (applied = routed, suggested, dry_run, skipped, changed, failed)",
    ["system", "outcome"],
)
POLLS = _counter("polls", "Polls of a system by result (ok, error)", ["system", "result"])
POLL_ERRORS = _counter(
    "poll_errors",
    "Failed polls by error kind (transient, authentication, protocol, permanent, model, internal)",
    ["system", "kind"],
)
POLL_DURATION = _histogram(
    "poll_duration_seconds",
    "Wall time of one poll of a system",
    ["system"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
SYSTEM_UP = _gauge("system_up", "1 when the last poll of the system succeeded, 0 when it failed", ["system"])
LAST_SUCCESSFUL_POLL = _gauge(
    "last_successful_poll_timestamp_seconds",
    "Unix time of the last successful poll of the system",
    ["system"],
)
HELPDESK_CALLS = _counter(
    "helpdesk_calls",
    "Calls the pipeline made to a helpdesk adapter by operation",
    ["system", "operation"],
)

# --------------------------------------------------------------------------- classification

CLASSIFICATION_SECONDS = _histogram(
    "classification_seconds",
    "Wall time of one classifier call (a batch of texts)",
    ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZE = _histogram(
    "classification_batch_size",
    "Texts per classifier call",
    ["source"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
CONFIDENCE = _histogram(
    "prediction_confidence",
    "Confidence of the top label per field",
    ["field"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0),
)
ACTIVE_MODEL = _gauge("active_model_info", "1 for the model version currently served per field", ["field", "version"])

# --------------------------------------------------------------------------- learning loop and training

CORRECTIONS = _counter("corrections", "Fields a person changed after the daemon set them", ["system", "field"])
TRAINING_JOBS = _counter(
    "training_jobs",
    "Training jobs reaching a state (queued, running, succeeded, failed, cancelled)",
    ["state"],
)
OVERRIDE_RATE = _gauge(
    "override_rate",
    "Share of the daemon's writes of a value (a mapped queue or priority) that people changed (after each export)",
    ["system", "field", "value"],
)
AUTOMATIC_SHARE = _gauge(
    "automatic_share",
    "Share of decided tickets the daemon routed automatically (status applied), after each export",
    ["system"],
)

# --------------------------------------------------------------------------- REST API

API_REQUESTS = _counter(
    "api_requests",
    "REST API requests by route template, method and status code",
    ["method", "route", "status"],
)
API_REQUEST_SECONDS = _histogram(
    "api_request_seconds",
    "REST API request latency by route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# --------------------------------------------------------------------------- helpers


def set_active_models(versions: Mapping[str, str]) -> None:
    """Mark ``{field: version}`` as served; clears the versions served before."""
    ACTIVE_MODEL.clear()
    for field, version in versions.items():
        ACTIVE_MODEL.labels(field=field, version=version).set(1)


def observe_predictions(fields_confidences: Mapping[str, float]) -> None:
    for field, confidence in fields_confidences.items():
        CONFIDENCE.labels(field=field).observe(confidence)


def init_system(system: str) -> None:
    """Create the per-system series at zero so dashboards see them before the first event."""
    TICKETS_FETCHED.labels(system=system)
    for outcome in OUTCOMES:
        TICKET_DECISIONS.labels(system=system, outcome=outcome)
    POLLS.labels(system=system, result="ok")
    POLLS.labels(system=system, result="error")
