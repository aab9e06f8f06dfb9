"""Configuration errors and ``check-config``: every problem with its key path and the file, exit 2."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connector.cli import app
from connector.config import ConfigError, load_config
from connector.sandbox import running_sandbox

runner = CliRunner()

VALID = """
state_dir: ./var
systems:
  sandbox:
    type: generic_rest
    connection:
      base_url: {url}
      auth:
        type: bearer
        token: {token}
      retry_attempts: 1
    source:
      queues: [Inbox]
    routing:
      queue:
        map:
          "Hardware/*": Hardware
          it: Hardware
          hr: HR
          "*": Triage
        threshold: 0.6
        low_confidence: fallback
        fallback: Triage
      priority:
        map: {{"*": "{{label}}"}}
        threshold: 0.5
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def check(*args: str):
    return runner.invoke(app, ["check-config", *args])


def test_valid_file_exits_0(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.format(url="http://127.0.0.1:9/api", token="t0ken-value"))
    result = check(str(path))
    assert result.exit_code == 0, result.output
    assert "valid (1 system(s): sandbox)" in result.output
    config = load_config(path)
    assert config.state_dir == (tmp_path / "var").resolve()
    assert config.systems["sandbox"].routing.queue.target_for("Hardware/Printer") == "Hardware"


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "systems:\n  a: [unclosed\n  b: 1\n")
    result = check(str(path))
    assert result.exit_code == 2
    assert str(path) in result.output and "invalid YAML at line" in result.output


def test_unknown_keys_are_listed_with_their_paths(tmp_path: Path) -> None:
    text = VALID.format(url="http://127.0.0.1:9/api", token="t0ken-value")
    text = text.replace("    poll_interval", "    poll_interval") + "    pol_interval: 30\nlogging:\n  colour: red\n"
    path = write(tmp_path, text)
    result = check(str(path))
    assert result.exit_code == 2
    assert f"{path}: systems.sandbox.pol_interval: unknown key" in result.output
    assert f"{path}: logging.colour: unknown key" in result.output
    assert "2 problem(s)" in result.output


def test_unknown_key_inside_the_adapter_connection(tmp_path: Path) -> None:
    text = VALID.format(url="http://127.0.0.1:9/api", token="t0ken-value").replace(
        "      retry_attempts: 1", "      retry_attempts: 1\n      retires: 2"
    )
    result = check(str(write(tmp_path, text)))
    assert result.exit_code == 2
    assert "systems.sandbox.connection.retires: unknown key" in result.output


def test_missing_secret_is_named(tmp_path: Path) -> None:
    text = VALID.format(url="http://127.0.0.1:9/api", token="x").replace("        token: x\n", "")
    result = check(str(write(tmp_path, text)))
    assert result.exit_code == 2
    assert "systems.sandbox.connection.auth" in result.output and "token" in result.output


def test_secret_from_file_and_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "token.txt"
    secret.write_text("from-file-token\n")
    text = VALID.format(url="http://127.0.0.1:9/api", token="x").replace(
        "        token: x\n", f"        token_file: {secret}\n"
    )
    path = write(tmp_path, text)
    config = load_config(path)
    assert config.adapter_settings("sandbox").auth.token.get_secret_value() == "from-file-token"
    missing = write(tmp_path, text.replace(str(secret), str(tmp_path / "nope.txt")), "missing.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert "token_file: cannot read secret file" in str(info.value)
    monkeypatch.setenv("HELPDESK_CONNECTOR_LOGGING__LEVEL", "DEBUG")
    assert load_config(path).logging.level == "DEBUG"


def test_several_problems_at_once(tmp_path: Path) -> None:
    text = """
    systems:
      a:
        type: nosuch
      b:
        type: generic_rest
        connection: {base_url: "http://x"}
        routing:
          queue: {threshold: 1.5, low_confidence: fallback}
    """
    result = check(str(write(tmp_path, text)))
    assert result.exit_code == 2
    assert "systems.a.type: Value error, unknown adapter type 'nosuch'" in result.output
    assert "systems.b.routing.queue.threshold" in result.output


def test_file_not_found(tmp_path: Path) -> None:
    result = check(str(tmp_path / "absent.yaml"))
    assert result.exit_code == 2 and "file not found" in result.output


def test_default_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, VALID.format(url="http://127.0.0.1:9/api", token="t0ken-value"), "env.yaml")
    monkeypatch.setenv("HELPDESK_CONNECTOR_CONFIG", str(path))
    result = check()
    assert result.exit_code == 0 and "env.yaml" in result.output


# --------------------------------------------------------------------------- --online


def test_online_check_passes_against_the_sandbox(tmp_path: Path) -> None:
    with running_sandbox(None, token="t0ken-value") as sandbox:
        path = write(tmp_path, VALID.format(url=sandbox.api, token="t0ken-value"))
        result = check(str(path), "--online")
        assert result.exit_code == 0, result.output
        assert "online checks passed" in result.output


def test_online_check_reports_a_queue_the_system_does_not_have(tmp_path: Path) -> None:
    with running_sandbox(None, token="t0ken-value") as sandbox:
        text = VALID.format(url=sandbox.api, token="t0ken-value").replace("hr: HR", "hr: Personnel")
        text = text.replace("fallback: Triage", "fallback: Nowhere")
        result = check(str(write(tmp_path, text)), "--online")
        assert result.exit_code == 2
        assert "systems.sandbox.routing.queue.map: queue 'Personnel' does not exist in sandbox" in result.output
        assert "systems.sandbox.routing.queue.fallback: queue 'Nowhere' does not exist" in result.output


def test_online_check_reports_bad_credentials_and_unreachable_systems(tmp_path: Path) -> None:
    with running_sandbox(None, token="t0ken-value") as sandbox:
        result = check(str(write(tmp_path, VALID.format(url=sandbox.api, token="wrong-token"))), "--online")
        assert result.exit_code == 2
        assert "systems.sandbox.connection: cannot use sandbox: AuthenticationError" in result.output
        assert "wrong-token" not in result.output
    result = check(str(write(tmp_path, VALID.format(url=sandbox.api, token="t0ken-value"))), "--online")
    assert result.exit_code == 2 and "TransientError" in result.output


# --------------------------------------------------------------------------- status, run --once, classify


@pytest.fixture
def restore_logging():
    import logging

    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_helpdesk_connector", False):
            root.removeHandler(handler)


def test_run_once_status_and_classify_commands(tmp_path: Path, restore_logging) -> None:
    from tests.support.tiny_model import build_tiny_model

    q = build_tiny_model(tmp_path / "mq", ["it", "hr"], version="q7", field="queue")
    p = build_tiny_model(tmp_path / "mp", ["low", "normal", "high"], version="p7", field="priority")
    with running_sandbox(None, token="t0ken-value") as sandbox:
        ids = [sandbox.db.create_ticket(f"t{i}", "printer broken").id for i in range(3)]
        text = VALID.format(url=sandbox.api, token="t0ken-value").replace("threshold: 0.6", "threshold: 0.0")
        text += f"model:\n  device: cpu\n  paths:\n    queue: {q}\n    priority: {p}\n"
        path = write(tmp_path, text)
        result = runner.invoke(app, ["run", "--once", "--config", str(path)])
        assert result.exit_code == 0, result.output
        assert all(sandbox.db.get_ticket(i).queue in ("Hardware", "HR") for i in ids)

    result = runner.invoke(app, ["status", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows[0]["system"] == "sandbox" and rows[0]["routed"] == 3 and rows[0]["failed"] == 0
    assert rows[0]["last_success"] is not None
    result = runner.invoke(app, ["status", "--config", str(path)])
    assert result.exit_code == 0 and "sandbox" in result.output
    assert "daemons running: 0" in result.output  # run --once released its lease
    from connector.store.db import Store
    from connector.store.leases import LeaseStore

    store = Store(load_config(path).store_url)
    try:
        lease = LeaseStore(store, "router-7", ttl=60)
        lease.acquire()
        result = runner.invoke(app, ["status", "--config", str(path)])
        assert "daemons running: 1" in result.output and f"router-7  pid {lease.pid} on host" in result.output
        lease.release()
    finally:
        store.dispose()
    result = runner.invoke(app, ["status", "--check", "--config", str(path)])
    assert result.exit_code == 0 and "healthy" in result.output
    result = runner.invoke(app, ["status", "--check", "--max-age", "0", "--config", str(path)])
    assert result.exit_code == 1 and "unhealthy: sandbox: last poll" in result.output

    result = runner.invoke(app, ["classify", "my printer is broken", "--json", "--config", str(path)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["fields"]["queue"]["label"] in ("it", "hr")
    assert out["model_version"] == "queue=q7,priority=p7"
    assert out["systems"]["sandbox"]["outcome"] == "applied"
    body = tmp_path / "ticket.txt"
    body.write_bytes(b"<p>VPN \xff down</p>")
    result = runner.invoke(app, ["classify", "--file", str(body), "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "queue:" in result.output and "sandbox (apply)" in result.output


def test_run_with_an_unusable_state_store_exits_1_with_a_clear_error(tmp_path: Path, restore_logging) -> None:
    text = VALID.format(url="http://127.0.0.1:9/api", token="t0ken-value")
    text += "store:\n  url: postgresql+psycopg://nobody:pw-9876@127.0.0.1:9/none\n"
    result = runner.invoke(app, ["run", "--once", "--config", str(write(tmp_path, text))])
    assert result.exit_code == 1
    assert "state store postgresql+psycopg://nobody:***@127.0.0.1:9/none cannot be used" in result.output
    assert "pw-9876" not in result.output


def test_retry_failed_lets_the_next_poll_route_a_ticket_again(tmp_path: Path, restore_logging) -> None:
    with running_sandbox(None, token="t0ken-value") as sandbox:
        holiday = sandbox.db.create_ticket("holiday", "holiday request").id
        from tests.support.tiny_model import build_tiny_model

        q = build_tiny_model(tmp_path / "mq", ["hr"], version="q1", field="queue")
        text = VALID.format(url=sandbox.api, token="t0ken-value").replace("hr: HR", "hr: Personnel")
        text = text.replace("      priority:\n        map: {\"*\": \"{label}\"}\n        threshold: 0.5\n", "")
        text += f"model:\n  device: cpu\n  fields: [queue]\n  paths:\n    queue: {q}\n"
        path = write(tmp_path, text)
        result = runner.invoke(app, ["run", "--once", "--config", str(path)])
        assert result.exit_code == 0, result.output
        assert "UnknownValueError" in result.output and sandbox.db.get_ticket(holiday).queue == "Inbox"
        path.write_text(path.read_text().replace("hr: Personnel", "hr: HR"))
        result = runner.invoke(app, ["retry-failed", "sandbox", "--config", str(path)])
        assert result.exit_code == 0 and "1 failed ticket(s)" in result.output
        result = runner.invoke(app, ["run", "--once", "--config", str(path)])
        assert result.exit_code == 0, result.output
        assert sandbox.db.get_ticket(holiday).queue == "HR"
        assert runner.invoke(app, ["retry-failed", "nosuch", "--config", str(path)]).exit_code == 2


def test_heartbeat_must_come_within_the_lease_ttl() -> None:
    from connector.config import parse_config

    with pytest.raises(ConfigError) as info:
        parse_config({"daemon": {"lease_ttl": 30, "heartbeat_interval": 30}})
    assert any(p.key == "daemon" and "heartbeat_interval (30 s) must be less than lease_ttl (30 s)" in p.message
               for p in info.value.problems), info.value.problems
    assert parse_config({"daemon": {"lease_ttl": 30, "heartbeat_interval": 10}}).daemon.lease_ttl == 30
