"""Property-based fuzzing of every operation of the OpenAPI document: no input makes the server answer 500,
and every answer matches the document.

Schemathesis generates requests (valid and invalid) from the served OpenAPI
document and sends them to a live server with an admin token.  Training jobs
the fuzzer manages to start run a no-op program instead of the trainer, so
the run stays short.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

from tests.support.api import ADMIN_TOKEN, LiveServer, auth, install_tiny_models, api_config, sample_csv
from connector.api.app import create_app  # noqa: E402
from connector.store.db import Store  # noqa: E402

MAX_EXAMPLES = 20
CONFORMANCE_CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.allow_header_conformance,
]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("fuzz")
    config = api_config(tmp, tokens=True, max_body_bytes=64 * 1024, max_ticket_chars=2000, max_batch=16)
    store = Store(config.store_url)
    install_tiny_models(config, store)
    app = create_app(config, store, load_models=True, reload_interval=None)
    app.state.ctx.jobs.python = "/bin/true"  # a started job ends at once (and is marked failed)
    with LiveServer(app) as server:
        import httpx

        # one valid dataset, so that /train also reaches its job-starting path
        httpx.post(
            server.url + "/api/v1/train-data",
            content=sample_csv(3),
            headers={"Content-Type": "text/csv", **auth(ADMIN_TOKEN)},
        ).raise_for_status()
        yield server
    store.dispose()


def _operations(server: LiveServer) -> list[Any]:
    loaded = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = []
    for result in loaded.get_all_operations():
        operations.append(result.ok())
    return operations


@pytest.mark.slow
@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_no_input_causes_a_server_error(fuzz_server: LiveServer, mode: Any) -> None:
    operations = _operations(fuzz_server)
    assert len(operations) >= 12
    failures: list[str] = []
    for operation in operations:

        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            response = case.call(base_url=fuzz_server.url, headers=auth(ADMIN_TOKEN), timeout=30)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")
            assert response.status_code < 500
            assert "Traceback" not in response.text
            try:
                # the answer matches the document: body schema (e.g. date-times with a time zone), content type,
                # documented headers, and 405s name the allowed methods
                case.validate_response(response, checks=CONFORMANCE_CHECKS)
            except Exception as exc:  # a FailureGroup of the failed checks
                messages = [str(e) for e in getattr(exc, "exceptions", [exc])]
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {' | '.join(messages)[:400]}")
                raise AssertionError(failures[-1]) from None

        try:
            run()
        except AssertionError:
            pass  # recorded in failures (hypothesis shrinks to the smallest example first)
        except Unsatisfiable:
            assert mode == schemathesis.GenerationMode.NEGATIVE  # nothing invalid to send (no parameters, no body)
    assert not failures, "\n".join(failures[:10])
