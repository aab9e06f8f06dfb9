"""REST API through a real HTTP server: classify, train-data, models, health, metrics, limits, errors."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.store.db import Store
from connector.store.tables import Dataset
from tests.support.api import PRIORITIES, QUEUES, install_tiny_models, live_api, api_config, sample_csv
from tests.support.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("api")
    config = api_config(tmp, max_body_bytes=4096, max_ticket_chars=500, max_batch=5)
    store = Store(config.store_url)
    install_tiny_models(config, store)
    with live_api(config, store) as (client, app):
        yield {"client": client, "app": app, "config": config, "store": store, "tmp": tmp}
    store.dispose()


@pytest.fixture
def client(env: dict[str, Any]) -> httpx.Client:
    return env["client"]


# --------------------------------------------------------------------------- classify


def test_classify_classic_shape(client: httpx.Client) -> None:
    response = client.post("/api/v1/classify", json={"ticket_data": "my printer is broken, please help"})
    assert response.status_code == 200
    body = response.json()
    assert body["predicted_label"] in QUEUES
    assert 0.0 <= body["confidence"] <= 1.0
    # beside the classic pair: priority, top-k of each field, the model version
    assert body["predicted_priority"] in PRIORITIES
    assert 0.0 <= body["priority_confidence"] <= 1.0
    assert body["fields"]["queue"]["label"] == body["predicted_label"]
    assert body["fields"]["queue"]["confidence"] == body["confidence"]
    top = body["fields"]["queue"]["top_k"]
    assert len(top) == 3 and top[0]["label"] == body["predicted_label"]
    assert [t["confidence"] for t in top] == sorted((t["confidence"] for t in top), reverse=True)
    assert len(body["fields"]["priority"]["top_k"]) == 2
    assert body["model_version"] == "queue=tiny-1,priority=tiny-1"


def test_classify_subject_and_body_match_cleaned_ticket_data(client: httpx.Client) -> None:
    a = client.post("/api/v1/classify", json={"subject": "vpn login", "body": "<p>password <b>broken</b></p>"}).json()
    b = client.post("/api/v1/classify", json={"ticket_data": "vpn login. password broken"}).json()
    assert a["fields"] == b["fields"]


def test_classify_is_deterministic_and_batch_matches_single(client: httpx.Client) -> None:
    texts = ["printer broken", "vpn password", "salary holiday contract", "disk storage backup server"]
    singles = [client.post("/api/v1/classify", json={"ticket_data": t}).json() for t in texts]
    batch = client.post("/api/v1/classify/batch", json={"tickets": texts[:2] + [{"ticket_data": t} for t in texts[2:]]})
    assert batch.status_code == 200
    results = batch.json()["results"]
    assert [r["predicted_label"] for r in results] == [s["predicted_label"] for s in singles]
    for r, s in zip(results, singles):
        assert r["confidence"] == pytest.approx(s["confidence"], abs=1e-4)
    assert batch.json()["model_version"] == singles[0]["model_version"]


def test_classify_batch_empty(client: httpx.Client) -> None:
    response = client.post("/api/v1/classify/batch", json={"tickets": []})
    assert response.status_code == 200
    assert response.json()["results"] == []


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"ticket_data": None},
        {"ticket_data": 5},
        {"ticket_data": ["a"]},
        {"subject": None, "body": None},
    ],
)
def test_classify_malformed_is_422(client: httpx.Client, payload: dict[str, Any]) -> None:
    response = client.post("/api/v1/classify", json=payload)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1,2]", b"\xff\xfe"])
def test_classify_broken_json_is_422_without_trace(client: httpx.Client, content: bytes) -> None:
    response = client.post("/api/v1/classify", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "Traceback" not in response.text


def test_ticket_too_long_is_413(client: httpx.Client) -> None:
    response = client.post("/api/v1/classify", json={"ticket_data": "printer " * 100})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "ticket_too_large"


def test_batch_too_long_is_413(client: httpx.Client) -> None:
    response = client.post("/api/v1/classify/batch", json={"tickets": ["printer"] * 6})
    assert response.status_code == 413
    assert "max_batch" in response.json()["error"]["message"]


def test_batch_malformed_is_422(client: httpx.Client) -> None:
    for payload in ({"tickets": "printer"}, {"tickets": [1, 2]}, {"tickets": [{}]}, {"ticket": []}):
        assert client.post("/api/v1/classify/batch", json=payload).status_code == 422, payload


def test_body_over_limit_is_413(client: httpx.Client) -> None:
    big = json.dumps({"ticket_data": "x" * 5000})
    response = client.post("/api/v1/classify", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_chunked_body_over_limit_is_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"ticket_data": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    response = client.post("/api/v1/classify", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_unknown_route_and_method(client: httpx.Client) -> None:
    assert client.get("/api/v1/nothing").status_code == 404
    response = client.get("/api/v1/classify")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_every_405_names_the_allowed_methods(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    checked = 0
    for template, operations in document["paths"].items():
        path = re.sub(r"\{[^}]+\}", "1", template)
        documented = {m.upper() for m in operations}
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - documented:
            response = client.request(method, path)
            assert response.status_code == 405, (method, path, response.status_code)
            allowed = {m.strip() for m in response.headers.get("allow", "").split(",") if m.strip()}
            assert documented <= allowed, (method, path, response.headers.get("allow"))
            checked += 1
    assert checked > 30


# --------------------------------------------------------------------------- train-data


def test_train_data_csv_raw_body(env: dict[str, Any]) -> None:
    client = env["client"]
    response = client.post("/api/v1/train-data", content=sample_csv(), headers={"Content-Type": "text/csv"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["rows"] == 24
    assert body["label_counts"] == {"queue": {"Access": 8, "HR": 8, "Hardware": 8}, "priority": {"high": 12, "low": 12}}
    with env["store"].session() as s:
        row = s.get(Dataset, body["id"])
        assert row is not None and row.rows == 24
        stored = Path(row.path)
    assert stored.is_file() and stored.is_relative_to(env["config"].state_dir)
    lines = stored.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 24 and set(json.loads(lines[0])) == {"text", "queue", "priority"}


def test_train_data_jsonl_and_multipart(client: httpx.Client) -> None:
    rows = [{"text": f"printer broken {i}", "queue": "Hardware"} for i in range(3)]
    rows += [{"text": f"vpn password {i}", "queue": "Access"} for i in range(3)]
    jsonl = "\n".join(json.dumps(r) for r in rows) + "\n"
    response = client.post("/api/v1/train-data", content=jsonl, headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 201, response.text
    assert response.json()["label_counts"] == {"queue": {"Access": 3, "Hardware": 3}}

    response = client.post(
        "/api/v1/train-data?name=from-form",
        files={"file": ("tickets.csv", sample_csv(3).encode(), "text/csv")},
    )
    assert response.status_code == 201, response.text
    assert response.json()["rows"] == 9 and response.json()["name"] == "from-form"

    response = client.post("/api/v1/train-data", files={"file": ("tickets.jsonl", jsonl.encode(), "application/octet-stream")})
    assert response.status_code == 201, response.text


def test_train_data_column_options_and_aliases(client: httpx.Client) -> None:
    csv_text = "Body,Team\n" + "".join(f"printer {i},Hw\nvpn {i},Acc\n" for i in range(3))
    response = client.post(
        "/api/v1/train-data?text_column=Body&label_column=queue=Team", content=csv_text, headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["label_counts"] == {"queue": {"Acc": 3, "Hw": 3}}
    # files written for other tools: ticket_data + label
    csv_text = "ticket_data,label\n" + "".join(f"printer {i},Hw\nvpn {i},Acc\n" for i in range(3))
    response = client.post("/api/v1/train-data", content=csv_text, headers={"Content-Type": "text/csv; charset=utf-8"})
    assert response.status_code == 201, response.text
    assert response.json()["label_counts"] == {"queue": {"Acc": 3, "Hw": 3}}


def test_train_data_label_column_feeds_the_queue_beside_priority(client: httpx.Client) -> None:
    # the ATC guide's own format: text,label,priority (label is the queue; with or without priority)
    rows = "".join(f"imprimante {i},Support Technique,Élevée\nfacture {i},Facturation,Faible\n" for i in range(3))
    response = client.post("/api/v1/train-data", content="text,label,priority\n" + rows, headers={"Content-Type": "text/csv"})
    assert response.status_code == 201, response.text
    assert response.json()["label_counts"] == {
        "queue": {"Facturation": 3, "Support Technique": 3},
        "priority": {"Faible": 3, "Élevée": 3},
    }
    # an explicit queue column wins over label
    rows = "".join(f"printer {i},Hw,x,low\nvpn {i},Acc,y,high\n" for i in range(3))
    response = client.post("/api/v1/train-data", content="text,queue,label,priority\n" + rows, headers={"Content-Type": "text/csv"})
    assert response.status_code == 201, response.text
    assert response.json()["label_counts"] == {"queue": {"Acc": 3, "Hw": 3}, "priority": {"high": 3, "low": 3}}


@pytest.mark.parametrize(
    ("content", "line", "needle"),
    [
        ("text,queue\nprinter,Hardware\nvpn,\nprinter 2,Hardware\n", 3, "no label"),
        ("text,queue\nprinter,Hardware\n,Access\nvpn,Access\n", 3, "empty text"),
        ("body_only,queue\nprinter,Hardware\n", 1, "missing column"),
        ("text,queue\nprinter,Hardware\nvpn,Access\nmouse,Hardware\n", 3, "at least 2"),
        ('text,queue\n"printer,Hardware\nvpn,Access\n', None, ""),
        ("text,queue\nprinter,Hardware\nvpn,Hardware\n", None, "single class"),
    ],
)
def test_train_data_invalid_names_line_and_problem(client: httpx.Client, content: str, line: int | None, needle: str) -> None:
    response = client.post("/api/v1/train-data", content=content, headers={"Content-Type": "text/csv"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_data"
    assert error["problems"], error
    if line is not None:
        assert error["problems"][0]["line"] == line
        assert f"line {line}" in error["message"]
    assert needle in error["message"]


@pytest.mark.parametrize(
    ("ctype", "content", "problem"),
    [
        ("application/x-ndjson", "[" * 1500 + "]" * 1500 + "\n", "nested too deeply"),
        ("application/x-ndjson", '{"text": ' + "[" * 1500 + "]" * 1500 + ', "queue": "Hw"}\n', "nested too deeply"),
        # the JSON array is streamed event by event (no recursion): the first wrong thing is named
        ("application/json", "[" + "[" * 1500 + "]" * 1500 + "]", "each element of the array must be an object"),
        ("application/json", '[{"text": "printer", "queue": ' + "[" * 1500 + "]" * 1500 + "}]", "nested too deeply"),
    ],
)
def test_train_data_deeply_nested_json_is_400(client: httpx.Client, ctype: str, content: str, problem: str) -> None:
    response = client.post("/api/v1/train-data", content=content, headers={"Content-Type": ctype})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_data"
    assert problem in response.json()["error"]["message"]


def test_train_data_empty_body_and_bad_multipart(client: httpx.Client) -> None:
    assert client.post("/api/v1/train-data", content=b"", headers={"Content-Type": "text/csv"}).status_code == 400
    response = client.post("/api/v1/train-data", data={"note": "x"}, files={})  # form without a file
    assert response.status_code in (400, 415)
    response = client.post(
        "/api/v1/train-data", content=b"--x\r\ngarbage", headers={"Content-Type": "multipart/form-data; boundary=x"}
    )
    assert response.status_code == 400


@pytest.mark.parametrize("ctype", ["application/xml", "text/html", "image/png", None])
def test_train_data_other_types_are_415(client: httpx.Client, ctype: str | None) -> None:
    headers = {"Content-Type": ctype} if ctype else {}
    response = client.post("/api/v1/train-data", content=b"text,queue\n", headers=headers)
    assert response.status_code == 415


def test_train_data_over_limit_is_413(client: httpx.Client) -> None:
    big = sample_csv(200)
    assert len(big) > 4096
    response = client.post("/api/v1/train-data", content=big, headers={"Content-Type": "text/csv"})
    assert response.status_code == 413


@pytest.mark.parametrize("dataset_id", [2**63, 2**31, -(2**63) - 1, 10**400])
def test_train_dataset_id_out_of_range_is_a_client_error(client: httpx.Client, dataset_id: int) -> None:
    response = client.post("/api/v1/train", content=f'{{"dataset_id": {dataset_id}}}', headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert "dataset_id" in response.json()["error"]["message"]


def test_train_without_dataset_or_unknown_dataset(tmp_path: Path) -> None:
    config = api_config(tmp_path)
    store = Store(config.store_url)
    install_tiny_models(config, store)
    with live_api(config, store) as (client, _app):
        response = client.post("/api/v1/train")
        assert response.status_code == 400 and response.json()["error"]["code"] == "no_dataset"
        assert client.post("/api/v1/train", json={"dataset_id": 99}).status_code == 404
        client.post("/api/v1/train-data", content=sample_csv(3), headers={"Content-Type": "text/csv"})
        response = client.post("/api/v1/train", json={"fields": ["category"]})
        assert response.status_code == 400 and "category" in response.json()["error"]["message"]
        response = client.post("/api/v1/train", json={"base_model": str(tmp_path / "nope")})
        assert response.status_code == 400 and str(tmp_path) not in response.text
        assert client.post("/api/v1/train", json={"epochs": 0}).status_code == 422
        assert client.post("/api/v1/train", json={"unknown": 1}).status_code == 422
        assert client.get("/api/v1/train/12345").status_code == 404
        assert client.delete("/api/v1/train/12345").status_code == 404
        assert client.post("/api/v1/train/12345/cancel").status_code == 404
        assert client.get("/api/v1/train/0").status_code == 422
    store.dispose()


# --------------------------------------------------------------------------- models


def test_models_list_activate_rollback_hot_swap(tmp_path: Path) -> None:
    config = api_config(tmp_path)
    store = Store(config.store_url)
    install_tiny_models(config, store, version="tiny-1")
    # a second version, registered but not active
    from connector.model.registry import ModelRegistry
    from connector.model.train import TrainedModel

    registry = ModelRegistry(store, config.models_dir)
    path = build_tiny_model(config.models_dir / "queue" / "tiny-2", QUEUES, version="tiny-2", field="queue", seed=7)
    registry.register(TrainedModel.from_dir(path))
    with live_api(config, store) as (client, _app):
        listing = client.get("/api/v1/models").json()
        assert listing["serving"] == "queue=tiny-1,priority=tiny-1"
        versions = {(m["field"], m["version"]): m["active"] for m in listing["models"]}
        assert versions == {("queue", "tiny-1"): True, ("queue", "tiny-2"): False, ("priority", "tiny-1"): True}
        assert len(client.get("/api/v1/models?field=queue").json()["models"]) == 2

        before = client.post("/api/v1/classify", json={"ticket_data": "printer"}).json()
        response = client.post("/api/v1/models/tiny-2/activate")
        assert response.status_code == 200, response.text
        assert response.json()["changed"] == {"queue": "tiny-2"}
        assert response.json()["serving"] == "queue=tiny-2,priority=tiny-1"
        after = client.post("/api/v1/classify", json={"ticket_data": "printer"}).json()
        assert after["model_version"] == "queue=tiny-2,priority=tiny-1"
        assert after["fields"]["queue"] != before["fields"]["queue"]

        response = client.post("/api/v1/models/rollback", json={"fields": ["queue"]})
        assert response.status_code == 200, response.text
        assert response.json()["changed"] == {"queue": "tiny-1"}
        assert client.post("/api/v1/classify", json={"ticket_data": "printer"}).json()["model_version"] == (
            "queue=tiny-1,priority=tiny-1"
        )
        # nothing earlier than the first activation
        response = client.post("/api/v1/models/rollback", json={"fields": ["priority"]})
        assert response.status_code == 409
        assert client.post("/api/v1/models/v-unknown/activate").status_code == 404
        assert client.post("/api/v1/models/tiny-2/activate", json={"field": "priority"}).status_code == 404
        assert client.post("/api/v1/models/rollback", json={"fields": []}).status_code == 422
    store.dispose()


def test_activate_unloadable_model_is_refused_and_service_continues(tmp_path: Path) -> None:
    config = api_config(tmp_path)
    store = Store(config.store_url)
    install_tiny_models(config, store)
    from connector.model.registry import ModelRegistry
    from connector.model.train import TrainedModel

    path = build_tiny_model(config.models_dir / "queue" / "broken", QUEUES, version="broken", field="queue")
    ModelRegistry(store, config.models_dir).register(TrainedModel.from_dir(path))
    (path / "model.safetensors").write_bytes(b"not weights")
    with live_api(config, store) as (client, _app):
        response = client.post("/api/v1/models/broken/activate")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "unusable_model"
        assert "Traceback" not in response.text
        assert client.post("/api/v1/classify", json={"ticket_data": "printer"}).status_code == 200
    store.dispose()


# --------------------------------------------------------------------------- health, metrics, openapi


def test_healthz_readyz_metrics(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["store"] == "ok"
    # the model check says which versions run, where, and in which number format
    assert re.fullmatch(r"ok \(queue=tiny-1.*; cpu, (fp32|bf16)\)", ready.json()["checks"]["model"])
    client.post("/api/v1/classify", json={"ticket_data": "printer"})
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'helpdesk_connector_api_requests_total{method="POST",route="/api/v1/classify",status="200"}' in text
    assert 'helpdesk_connector_classification_batch_size_count{source="api"}' in text
    assert 'helpdesk_connector_prediction_confidence_count{field="queue"}' in text
    assert 'helpdesk_connector_active_model_info{field="queue",version="tiny-1"} 1.0' in text
    assert "process_resident_memory_bytes" in text or "python_info" in text


def test_readyz_without_model_and_classify_503(tmp_path: Path) -> None:
    config = api_config(tmp_path)
    store = Store(config.store_url)
    with live_api(config, store) as (client, _app):
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["model"] == "no model loaded"
        assert client.get("/healthz").status_code == 200
        response = client.post("/api/v1/classify", json={"ticket_data": "printer"})
        assert response.status_code == 503 and response.json()["error"]["code"] == "no_model"
        assert client.post("/api/v1/classify/batch", json={"tickets": []}).status_code == 503
        assert client.get("/api/v1/models").json() == {"models": [], "serving": None}
        assert client.post("/api/v1/models/rollback").status_code == 409
    store.dispose()


def test_readyz_store_unreachable(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    store = env["store"]

    def broken_connect(*_a: Any, **_k: Any) -> Any:
        raise OSError("database is gone")

    monkeypatch.setattr(store.engine, "connect", broken_connect)
    ready = env["client"].get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["store"].startswith("unreachable")
    assert "database is gone" not in ready.text


def test_openapi_document(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    for path in (
        "/api/v1/classify",
        "/api/v1/classify/batch",
        "/api/v1/train-data",
        "/api/v1/train",
        "/api/v1/train/{job_id}",
        "/api/v1/train/{job_id}/cancel",
        "/api/v1/models",
        "/api/v1/models/{version}/activate",
        "/api/v1/models/rollback",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path
    assert "text/csv" in paths["/api/v1/train-data"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


def test_unexpected_error_is_500_without_trace(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = env["app"].state.ctx

    async def explode(_texts: Any) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(ctx.batcher, "classify", explode)
    response = env["client"].post("/api/v1/classify", json={"ticket_data": "printer"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "secret internal detail" not in response.text and "Traceback" not in response.text
    assert response.json()["error"]["request_id"]
