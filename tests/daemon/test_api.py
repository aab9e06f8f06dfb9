"""``run`` with ``api.enabled``: one process serves the daemon and the REST API, sharing the model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from connector.daemon import Daemon
from connector.sandbox import running_sandbox
from tests.support.daemon import SANDBOX_TOKEN, decisions, sandbox_config, seed
from tests.support.net import free_port

def test_run_serves_the_api_beside_the_daemon_and_stops_both(tmp_path: Path, model_dirs) -> None:
    port = free_port()
    with running_sandbox(None, token=SANDBOX_TOKEN) as sandbox:
        ids = seed(sandbox, 3)
        config = sandbox_config(tmp_path, sandbox.api, models=model_dirs)
        config.api.enabled = True
        config.api.port = port

        async def scenario() -> tuple[dict, dict, int]:
            daemon = Daemon(config)
            runner = asyncio.create_task(daemon.run())
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=5) as client:
                for _ in range(200):
                    try:
                        ready = await client.get("/readyz")
                        if ready.status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail("the API inside run never became ready")
                answer = (await client.post("/api/v1/classify", json={"ticket_data": "my printer is broken"})).json()
                # the daemon decides every ticket while the API serves
                for _ in range(100):
                    if all(decisions(config).get("sandbox", str(i)) for i in ids):
                        break
                    await asyncio.sleep(0.1)
                daemon.request_stop()
                await asyncio.wait_for(runner, 30)
                ready_json = ready.json()
            with pytest.raises(httpx.TransportError):
                async with httpx.AsyncClient(base_url=base, timeout=2) as client:
                    await client.get("/healthz")
            decided = sum(decisions(config).get("sandbox", str(i)) is not None for i in ids)
            return answer, ready_json, decided

        answer, ready, decided = asyncio.run(scenario())
    assert answer["predicted_label"] in {"Hardware", "Software", "Access"}
    assert 0.0 <= answer["confidence"] <= 1.0
    assert "q1" in answer["model_version"]
    assert decided == 3, "the daemon did not decide the tickets while the API was serving"
    assert ready
