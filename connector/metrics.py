"""Prometheus metrics of the whole product, in one registry.

Every area increments the module-level objects below; the REST API exposes
:data:`REGISTRY` at ``/metrics`` (``prometheus_client.generate_latest(REGISTRY)``).
Label values are bounded: system names come from the configuration, fields
from ``model.fields``, outcomes and states from fixed sets.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: the registry every metric of helpdesk-connector lives in
REGISTRY = CollectorRegistry(auto_describe=True)

NAMESPACE = "helpdesk_connector"

#: outcomes of one ticket decision (``decisions.status`` values, minus ``claimed``)
OUTCOMES = ("applied", "suggested", "dry_run", "skipped", "changed", "failed")

# --------------------------------------------------------------------------- polling and routing

TICKETS_FETCHED = Counter(
    "tickets_fetched",
    "Candidate tickets listed from a system that were not decided before",
    ["system"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
TICKET_DECISIONS = Counter(
    "ticket_decisions",
    "Finished ticket decisions by outcome (applied = routed, suggested, dry_run, skipped, changed, failed)",
    ["system", "outcome"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
POLLS = Counter(
    "polls",
    "Polls of a system by result (ok, error)",
    ["system", "result"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
POLL_ERRORS = Counter(
    "poll_errors",
    "Failed polls by error kind (transient, authentication, protocol, permanent, model, internal)",
    ["system", "kind"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
POLL_DURATION = Histogram(
    "poll_duration_seconds",
    "Wall time of one poll of a system",
    ["system"],
    namespace=NAMESPACE,
    registry=REGISTRY,
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
SYSTEM_UP = Gauge(
    "system_up",
    "1 when the last poll of the system succeeded, 0 when it failed",
    ["system"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
LAST_SUCCESSFUL_POLL = Gauge(
    "last_successful_poll_timestamp_seconds",
    "Unix time of the last successful poll of the system",
    ["system"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
HELPDESK_CALLS = Counter(
    "helpdesk_calls",
    "Calls the pipeline made to a helpdesk adapter by operation",
    ["system", "operation"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)

# --------------------------------------------------------------------------- classification

CLASSIFICATION_SECONDS = Histogram(
    "classification_seconds",
    "Wall time of one classifier call (a batch of texts)",
    ["source"],
    namespace=NAMESPACE,
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZE = Histogram(
    "classification_batch_size",
    "Texts per classifier call",
    ["source"],
    namespace=NAMESPACE,
    registry=REGISTRY,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
CONFIDENCE = Histogram(
    "prediction_confidence",
    "Confidence of the top label per field",
    ["field"],
    namespace=NAMESPACE,
    registry=REGISTRY,
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0),
)
ACTIVE_MODEL = Gauge(
    "active_model_info",
    "1 for the model version currently served per field",
    ["field", "version"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)

# --------------------------------------------------------------------------- learning loop and training

CORRECTIONS = Counter(
    "corrections",
    "Fields a person changed after the daemon set them",
    ["system", "field"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
TRAINING_JOBS = Counter(
    "training_jobs",
    "Training jobs reaching a state (queued, running, succeeded, failed, cancelled)",
    ["state"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
OVERRIDE_RATE = Gauge(
    "override_rate",
    "Share of the daemon's writes of a value (a mapped queue or priority) that people changed (after each export)",
    ["system", "field", "value"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
AUTOMATIC_SHARE = Gauge(
    "automatic_share",
    "Share of decided tickets the daemon routed automatically (status applied), after each export",
    ["system"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)

# --------------------------------------------------------------------------- REST API

API_REQUESTS = Counter(
    "api_requests",
    "REST API requests by route template, method and status code",
    ["method", "route", "status"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
API_REQUEST_SECONDS = Histogram(
    "api_request_seconds",
    "REST API request latency by route template",
    ["method", "route"],
    namespace=NAMESPACE,
    registry=REGISTRY,
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
