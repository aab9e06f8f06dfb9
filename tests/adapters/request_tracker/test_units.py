"""Pure parts of the Request Tracker adapter (no RT needed); the real proof is tests/rt/."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from adapters import adapter_class
from adapters.request_tracker import (
    RequestTrackerAdapter,
    RequestTrackerSettings,
    _pick_body,
    classify_update_messages,
    parse_rt_date,
    ticketsql_quote,
)


def test_registered_under_its_type_name() -> None:
    assert adapter_class("request_tracker") is RequestTrackerAdapter


@pytest.mark.parametrize(
    ("value", "quoted"),
    [("Triage", "'Triage'"), ("Kim's", "'Kim\\'s'"), ("a\\b", "'a\\\\b'"), ("x' OR id > '0", "'x\\' OR id > \\'0'")],
)
def test_ticketsql_values_are_escaped(value: str, quoted: str) -> None:
    assert ticketsql_quote(value) == quoted


def test_ticketsql_refuses_control_characters() -> None:
    with pytest.raises(ValueError):
        ticketsql_quote("a\nb")


def test_default_query_from_source_settings() -> None:
    settings = RequestTrackerSettings(url="http://rt.test", token="t")
    adapter = RequestTrackerAdapter("rt", settings, source_queues=["Triage", "Kim's"], source_states=["new"])
    assert adapter.new_tickets_query() == "(Queue = 'Triage' OR Queue = 'Kim\\'s') AND Status = 'new'"
    since = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert adapter.resolved_query(since) == "Status = 'resolved' AND Resolved > '2024-04-30 22:00:00'"


def test_rt_dates() -> None:
    assert parse_rt_date("1970-01-01T00:00:00Z") is None
    assert parse_rt_date("") is None and parse_rt_date(None) is None
    assert parse_rt_date("2026-11-28T00:45:36Z") == datetime(2026, 11, 28, 0, 45, 36, tzinfo=UTC)


def test_update_messages_split_into_success_failure_and_unknown() -> None:
    ok, failed, unknown = classify_update_messages([
        "Ticket 2: Priority changed from 'Low' to 'High'",
        "Ticket 2: Queue changed from Triage to Network",
        "Ticket 2: Queue Nope does not exist",
        "Ticket 2: Permission Denied",
        "Ticket 2: Warteschlange geändert",
    ])
    assert ok == ["Priority changed from 'Low' to 'High'", "Queue changed from Triage to Network"]
    assert failed == ["Queue Nope does not exist", "Permission Denied"]
    assert unknown == ["Warteschlange geändert"]
    # a queue whose name looks like an error word is still a success
    assert classify_update_messages(["Ticket 3: Queue changed from Triage to Invalid Requests"])[0]


def test_settings_need_exactly_one_kind_of_credentials(tmp_path) -> None:
    with pytest.raises(ValidationError, match="either token"):
        RequestTrackerSettings(url="http://rt.test")
    with pytest.raises(ValidationError, match="not both"):
        RequestTrackerSettings(url="http://rt.test", token="t", username="u", password="p")
    with pytest.raises(ValidationError, match="without /REST/2.0"):
        RequestTrackerSettings(url="http://rt.test/REST/2.0", token="t")
    secret = tmp_path / "tok"
    secret.write_text("1-2-abc\n")
    s = RequestTrackerSettings.model_validate({"base_url": "http://rt.test/rt", "token_file": str(secret)})
    assert s.token is not None and s.token.get_secret_value() == "1-2-abc"
    assert s.api_url == "http://rt.test/rt/REST/2.0/"
    assert "1-2-abc" not in repr(s)


def test_body_prefers_plain_text_then_html() -> None:
    parts = [{"ContentType": "text/html", "Content": "<p>x</p>"}, {"ContentType": "text/plain", "Content": "x"}]
    assert _pick_body(parts) == ("x", False)
    assert _pick_body(parts[:1]) == ("<p>x</p>", True)
