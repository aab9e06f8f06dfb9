"""The generic REST adapter against the real sandbox helpdesk over HTTP on 127.0.0.1 (and a few mock answers)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from adapters.base import (
    AuthenticationError,
    NotFoundError,
    PermanentError,
    ProtocolError,
    Ticket,
    TicketChange,
    TransientError,
    UnknownValueError,
)
from adapters.generic_rest import (
    GenericRestAdapter,
    GenericRestSettings,
    get_path,
    parse_path,
    render_json,
)
from connector.config import ConfigError, load_config, parse_config
from connector.sandbox import running_sandbox
from tests.support.paths import REPO

T = TypeVar("T")


_state: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _event_loop():
    """One event loop per test (an adapter's HTTP client belongs to the loop it first ran on)."""
    loop = asyncio.new_event_loop()
    _state["loop"], _state["adapters"] = loop, []
    yield
    for adapter in _state["adapters"]:
        loop.run_until_complete(adapter.aclose())
    loop.close()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return _state["loop"].run_until_complete(coro)


def make(url: str, *, source_queues: tuple[str, ...] = ("Inbox",), source_states: tuple[str, ...] = ("new",),
         transport: httpx.AsyncBaseTransport | None = None, **settings: Any) -> GenericRestAdapter:  # fmt: skip
    config = GenericRestSettings.model_validate({"base_url": url, **settings})
    adapter = GenericRestAdapter(
        "test", config, source_queues=list(source_queues), source_states=list(source_states), transport=transport
    )
    _state["adapters"].append(adapter)
    return adapter


async def collect(pages: Any) -> tuple[list[list[Ticket]], list[str | None]]:
    tickets, cursors = [], []
    async for page in pages:
        tickets.append(page.tickets)
        cursors.append(page.cursor)
    return tickets, cursors


@pytest.fixture()
def sandbox(tmp_path: Path):
    with running_sandbox(tmp_path) as sb:
        yield sb


# --------------------------------------------------------------------------- helpers


def test_json_paths() -> None:
    data = {"data": {"items": [{"fields": {"subject": "s"}, "tags": ["a", "b"]}]}, "n": 0}
    assert get_path(data, parse_path("data.items[0].fields.subject")) == "s"
    assert get_path(data, parse_path("data.items.0.tags[-1]")) == "b"
    assert get_path(data, parse_path("$.n")) == 0
    assert get_path(data, parse_path("")) is data
    assert get_path(data, parse_path("data.items[5].x"), "dflt") == "dflt"
    assert get_path(data, parse_path("n.x")) is None


def test_body_templates() -> None:
    template = {"ticket": {"group": "{queue}", "priority_id": "{priority:int}"}, "article": {"body": "Note: {note}"}}
    assert render_json(template, {"queue": None, "priority": "3", "note": "x"}) == {
        "ticket": {"priority_id": 3},
        "article": {"body": "Note: x"},
    }
    assert render_json(["{queue}", "{unknown}", 5], {"queue": "HR"}) == ["HR", "{unknown}", 5]


# --------------------------------------------------------------------------- listing and paging


@pytest.mark.parametrize(
    "paging",
    [
        {"style": "page"},
        {"style": "page", "has_more_path": "has_more"},
        {"style": "offset", "offset_param": "offset", "size_param": "limit", "total_path": "total"},
        {"style": "after", "after_param": "after_id"},
        {"style": "cursor", "cursor_param": "after_id", "next_cursor_path": "next_after_id"},
    ],
    ids=["page", "page-has-more", "offset-total", "after", "cursor"],
)
def test_lists_every_new_ticket_once_over_several_pages(sandbox, paging: dict[str, Any]) -> None:
    for i in range(57):
        sandbox.db.create_ticket(f"subject {i}", f"body {i}")
    sandbox.db.create_ticket("elsewhere", "b", queue="Hardware")
    sandbox.db.create_ticket("in progress", "b", state="open")
    adapter = make(sandbox.api, paging=paging)
    pages, cursors = run(collect(adapter.list_new_tickets(None, 20)))
    ids = [t.id for page in pages for t in page]
    assert ids == [str(i) for i in range(1, 58)]
    assert len(pages) >= 3 and all(c is None for c in cursors)
    first = pages[0][0]
    assert (first.subject, first.body, first.queue, first.priority, first.state) == (
        "subject 0", "body 0", "Inbox", "normal", "new",
    )  # fmt: skip
    assert first.updated_at is not None and first.updated_at.tzinfo is not None


def test_filters_here_when_the_system_cannot(sandbox) -> None:
    for q in ("Inbox", "Hardware", "Inbox"):
        sandbox.db.create_ticket("s", "b", queue=q)
    adapter = make(sandbox.api, list_new={"path": "/tickets", "queue_param": None, "state_param": None})
    pages, _ = run(collect(adapter.list_new_tickets(None, 50)))
    assert [t.id for p in pages for t in p] == ["1", "3"]


def test_after_paging_is_stable_while_tickets_leave_the_listing(sandbox) -> None:
    for i in range(30):
        sandbox.db.create_ticket(f"s{i}", "b")
    adapter = make(sandbox.api, paging={"style": "after"})

    async def route_as_listed() -> list[str]:
        seen = []
        async for page in adapter.list_new_tickets(None, 10):
            for t in page.tickets:
                seen.append(t.id)
                await adapter.update_ticket(t.id, TicketChange(queue="Hardware"))
        return seen

    assert run(route_as_listed()) == [str(i) for i in range(1, 31)]


@pytest.mark.parametrize("paging", [{}, {"style": "offset", "offset_param": "offset", "size_param": "limit"}],
                         ids=["default", "offset"])
def test_page_and_offset_paging_lose_nothing_while_routed_tickets_leave(sandbox, paging: dict[str, Any]) -> None:
    for i in range(100):
        sandbox.db.create_ticket(f"s{i}", "b")
    for i in range(7):
        sandbox.db.create_ticket(f"stays {i}", "b")  # left where they are (e.g. below the threshold)
    adapter = make(sandbox.api, paging=paging)

    async def route_as_listed() -> list[str]:
        seen = []
        async for page in adapter.list_new_tickets(None, 20):
            for t in page.tickets:
                seen.append(t.id)
                if not t.subject.startswith("stays"):
                    await adapter.update_ticket(t.id, TicketChange(queue="Hardware"))
        return seen

    listed = run(route_as_listed())
    assert sorted(listed, key=int) == [str(i) for i in range(1, 108)]  # all in one poll, each once
    assert all(sandbox.db.get_ticket(i).queue == "Hardware" for i in range(1, 101))


def test_default_paging_reads_a_steady_listing_to_the_end(sandbox) -> None:
    for i in range(45):
        sandbox.db.create_ticket(f"s{i}", "b")
    pages, _ = run(collect(make(sandbox.api).list_new_tickets(None, 20)))
    assert [t.id for p in pages for t in p] == [str(i) for i in range(1, 46)]


@pytest.mark.parametrize("since_param", [None, "updated_since"])
def test_tickets_moved_into_the_source_queue_later_are_listed(sandbox, since_param: str | None) -> None:
    moved = sandbox.db.create_ticket("elsewhere", "b", queue="Hardware").id
    waiting = sandbox.db.create_ticket("open", "b", state="open").id
    first = sandbox.db.create_ticket("new", "b").id
    adapter = make(sandbox.api, list_new={"path": "/tickets", "queue_param": "queue", "state_param": "state",
                                          "since_param": since_param})  # fmt: skip
    pages, cursors = run(collect(adapter.list_new_tickets(None, 10)))
    assert [t.id for p in pages for t in p] == [str(first)]
    sandbox.db.update_ticket(moved, queue="Inbox")  # a person moves it into the source queue
    sandbox.db.update_ticket(waiting, state="new")  # and sets another back to new
    pages, _ = run(collect(adapter.list_new_tickets(cursors[-1], 10)))
    assert {str(moved), str(waiting)} <= {t.id for p in pages for t in p}


def test_since_cursor_lists_only_changes(sandbox) -> None:
    for i in range(5):
        sandbox.db.create_ticket(f"s{i}", "b")
    adapter = make(sandbox.api, paging={"style": "after"}, list_new={"path": "/tickets", "queue_param": "queue",
                   "state_param": "state", "since_param": "updated_since"})  # fmt: skip
    pages, cursors = run(collect(adapter.list_new_tickets(None, 2)))
    assert sum(len(p) for p in pages) == 5
    assert cursors[:-1] == [None] * (len(cursors) - 1) and pages[-1] == []
    cursor = cursors[-1]
    assert cursor == sandbox.db.get_ticket(5).updated_at  # the newest change seen
    sandbox.db.update_ticket(2, priority="high")
    sandbox.db.create_ticket("new one", "b")
    pages, cursors = run(collect(adapter.list_new_tickets(cursor, 2)))
    assert sorted(t.id for p in pages for t in p) == ["2", "5", "6"]  # >= the cursor: 5 again, harmless


def test_listing_without_body_is_read_one_by_one(sandbox) -> None:
    sandbox.db.create_ticket("s", "the body")
    adapter = make(sandbox.api, fields={"body": None})
    pages, _ = run(collect(adapter.list_new_tickets(None, 10)))
    assert pages[0][0].body is None
    adapter2 = make(sandbox.api, get_ticket={"path": "/tickets/{id}"})
    assert run(adapter2.get_ticket("1")).body == "the body"


# --------------------------------------------------------------------------- reading one, writing


def test_get_ticket_and_not_found(sandbox) -> None:
    sandbox.db.create_ticket("Printer", "Tray jams", queue="Hardware", priority="high", state="open")
    adapter = make(sandbox.api)
    t = run(adapter.get_ticket("1"))
    assert (t.id, t.subject, t.body, t.queue, t.priority, t.state) == ("1", "Printer", "Tray jams", "Hardware", "high", "open")
    calls = adapter.http.calls
    with pytest.raises(NotFoundError, match="404"):
        run(adapter.get_ticket("999"))
    assert adapter.http.calls == calls + 1  # permanent: not retried


def test_update_writes_fields_and_internal_note(sandbox) -> None:
    sandbox.db.create_ticket("s", "b")
    adapter = make(sandbox.api)
    run(adapter.update_ticket("1", TicketChange(queue="Access", priority="high", note="queue Access (0.93)",
                                                note_subject="Automatic routing")))  # fmt: skip
    t = sandbox.db.get_ticket(1)
    assert (t.queue, t.priority, t.version) == ("Access", "high", 2)
    notes = sandbox.db.list_notes(1)
    assert [(n.subject, n.body, n.internal) for n in notes] == [("Automatic routing", "queue Access (0.93)", True)]
    # only the priority: the queue is not sent (a person's queue stays)
    sandbox.db.update_ticket(1, queue="HR")
    run(adapter.update_ticket("1", TicketChange(priority="low")))
    assert (sandbox.db.get_ticket(1).queue, sandbox.db.get_ticket(1).priority) == ("HR", "low")
    assert len(sandbox.db.list_notes(1)) == 1
    # suggest mode: the note alone, no field request
    before = sandbox.db.get_ticket(1).version
    run(adapter.update_ticket("1", TicketChange(note="suggestion")))
    assert sandbox.db.get_ticket(1).version == before and len(sandbox.db.list_notes(1)) == 2


def test_unknown_queue_is_a_permanent_unknown_value(sandbox) -> None:
    sandbox.db.create_ticket("s", "b")
    adapter = make(sandbox.api, update={"unknown_value_pattern": "unknown_value"})
    with pytest.raises(UnknownValueError, match="queue 'Finance'"):
        run(adapter.update_ticket("1", TicketChange(queue="Finance", note="n")))
    assert adapter.http.calls == 1  # not retried, and no note written after the refusal
    assert sandbox.db.list_notes(1) == [] and sandbox.db.get_ticket(1).version == 1
    # a 422 that does not match the pattern stays a plain permanent error
    strict = make(sandbox.api, update={"unknown_value_pattern": "no such group"})
    with pytest.raises(PermanentError) as info:
        run(strict.update_ticket("1", TicketChange(queue="Finance")))
    assert not isinstance(info.value, UnknownValueError)
    # a system that answers 404 for an unknown queue
    fours = make(sandbox.api, update={"unknown_value_status": [404]})
    sandbox.faults.add(path="/api/tickets/1$", method="PATCH", status=404, body='{"message": "no such queue"}')
    with pytest.raises(UnknownValueError):
        run(fours.update_ticket("1", TicketChange(queue="Finance")))


def test_add_note_and_find_note_by_its_marker(sandbox) -> None:
    sandbox.db.create_ticket("s", "b")
    adapter = make(sandbox.api)
    assert not adapter.note_in_update  # the default config: fields and note are two requests
    marker = "[helpdesk-connector decision 7]"
    assert run(adapter.find_note("1", marker)) is False
    run(adapter.add_note("1", f"suggests 'Access'\n\n{marker}", "Automatic routing"))
    assert run(adapter.find_note("1", marker)) is True
    assert run(adapter.find_note("1", "[helpdesk-connector decision 70]")) is False
    assert [(n.subject, n.internal) for n in sandbox.db.list_notes(1)] == [("Automatic routing", True)]
    blind = make(sandbox.api, find_note=None)
    with pytest.raises(PermanentError, match="find_note is not configured"):
        run(blind.find_note("1", marker))
    mute = make(sandbox.api, add_note=None)
    with pytest.raises(PermanentError, match="no request writes notes"):
        run(mute.add_note("1", "n", "s"))


def test_note_in_the_update_body_and_put_method() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    adapter = make(
        "https://helpdesk.example/api/v2",
        transport=httpx.MockTransport(handler),
        update={"method": "put", "path": "/issues/{id}", "body": {"issue": {"group": "{queue}", "prio": "{priority:int}",
                "comment": {"text": "{note}", "title": "{subject}", "private": True}}}},  # fmt: skip
        add_note=None,
    )
    run(adapter.update_ticket("a/b 1", TicketChange(priority="3", note="hello", note_subject="Routing")))
    assert len(seen) == 1
    request = seen[0]
    assert request.method == "PUT" and request.url.raw_path == b"/api/v2/issues/a%2Fb%201"
    assert json.loads(request.content) == {"issue": {"prio": 3, "comment": {"text": "hello", "title": "Routing", "private": True}}}


def test_auth_variants_send_the_right_credentials(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"queues": ["A", "B"]})

    token_file = tmp_path / "token"
    token_file.write_text("from-file\n", encoding="utf-8")
    common = {"queues": {"path": "/q", "items": "queues", "name": ""}, "transport": httpx.MockTransport(handler)}
    cases = [
        ({"type": "bearer", "token_file": str(token_file)}, lambda r: r.headers["Authorization"] == "Bearer from-file"),
        ({"type": "basic", "username": "u", "password": "p"}, lambda r: r.headers["Authorization"] == "Basic dTpw"),
        ({"type": "header", "header": "X-API-Key", "token": "k"}, lambda r: r.headers["X-API-Key"] == "k"),
        ({"type": "header", "header": "Authorization", "prefix": "Token token=", "token": "k"},
         lambda r: r.headers["Authorization"] == "Token token=k"),
        ({"type": "query", "param": "api_key", "token": "k"}, lambda r: r.url.params["api_key"] == "k"),
        ({"type": "none"}, lambda r: "Authorization" not in r.headers),
    ]  # fmt: skip
    for auth, check in cases:
        adapter = make("http://h.example", auth=auth, **common)
        assert run(adapter.list_queues()) == ["A", "B"]
        assert check(seen[-1]), auth


def test_bearer_auth_against_the_sandbox(tmp_path: Path) -> None:
    with running_sandbox(tmp_path, token="s3cret") as sb:
        sb.db.create_ticket("s", "b")
        good = make(sb.api, auth={"type": "bearer", "token": "s3cret"})
        assert run(good.list_queues())[:2] == ["Inbox", "Triage"]
        wrong = make(sb.api, auth={"type": "bearer", "token": "nope"})
        with pytest.raises(AuthenticationError, match="401"):
            run(wrong.get_ticket("1"))
        assert wrong.http.calls == 1  # permanent: not retried
        with pytest.raises(AuthenticationError):
            run(make(sb.api).check_connection())


# --------------------------------------------------------------------------- resolved, value lists


def test_resolved_listing_with_since(sandbox) -> None:
    for i in range(4):
        sandbox.db.create_ticket(f"s{i}", f"b{i}")
    sandbox.db.resolve_ticket(1, queue="Hardware", priority="high")
    mark = sandbox.db.resolve_ticket(3, queue="HR").resolved_at
    sandbox.db.resolve_ticket(4, queue="Access", state="closed")
    adapter = make(sandbox.api)
    pages, _ = run(collect(adapter.list_resolved_tickets(None, None, 2)))
    resolved = [t for p in pages for t in p]
    assert [(t.id, t.queue, t.priority, t.state) for t in resolved] == [
        ("1", "Hardware", "high", "resolved"), ("3", "HR", "normal", "resolved"), ("4", "Access", "normal", "closed"),
    ]  # fmt: skip
    from connector.sandbox.db import parse_time

    pages, _ = run(collect(adapter.list_resolved_tickets(parse_time(mark), None, 50)))
    assert [t.id for p in pages for t in p] == ["3", "4"]
    none = make(sandbox.api, list_resolved=None)
    with pytest.raises(PermanentError, match="list_resolved is not configured"):
        run(collect(none.list_resolved_tickets(None, None, 50)))


@pytest.mark.parametrize("style", ["page", "offset", "after"])
def test_resolved_listing_resumes_from_its_page_cursor(sandbox, style: str) -> None:
    for i in range(7):
        sandbox.db.create_ticket(f"s{i}", "b")
        sandbox.db.resolve_ticket(i + 1, queue="HR")
    adapter = make(sandbox.api, paging={"style": style})

    async def first_page() -> tuple[list[str], str | None]:
        pages = adapter.list_resolved_tickets(None, None, 3)
        page = await pages.__anext__()
        await pages.aclose()  # the export was interrupted here
        return [t.id for t in page.tickets], page.cursor

    ids, cursor = run(first_page())
    assert ids == ["1", "2", "3"] and cursor is not None
    pages, cursors = run(collect(adapter.list_resolved_tickets(None, cursor, 3)))
    assert [t.id for p in pages for t in p] == ["4", "5", "6", "7"]
    assert cursors[-1] is None  # the end
    # an unreadable cursor starts over rather than failing
    pages, _ = run(collect(adapter.list_resolved_tickets(None, "garbage", 3)))
    assert [t.id for p in pages for t in p] == [str(i) for i in range(1, 8)]


def test_update_carrying_the_note_is_not_retried_after_a_500() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500, text="oops")

    adapter = make("http://h.example", transport=httpx.MockTransport(handler), retry_attempts=3, add_note=None,
                   update={"method": "PATCH", "body": {"queue": "{queue}", "comment": "{note}"}})  # fmt: skip
    with pytest.raises(TransientError):
        run(adapter.update_ticket("1", TicketChange(queue="HR", note="n")))
    assert len(calls) == 1
    plain = make("http://h.example", transport=httpx.MockTransport(handler), retry_attempts=2)
    with pytest.raises(TransientError):
        run(plain.update_ticket("1", TicketChange(queue="HR")))  # PATCH without a note: idempotent, retried
    assert len(calls) == 3


def test_queues_and_priorities_from_api_or_static(sandbox) -> None:
    adapter = make(sandbox.api)
    assert "Hardware" in run(adapter.list_queues())
    assert run(adapter.list_priorities()) == ["low", "normal", "high"]
    static = make(sandbox.api, queues={"values": ["X", "Y"]}, priorities={"values": ["1", "2"]})
    assert run(static.list_queues()) == ["X", "Y"] and run(static.list_priorities()) == ["1", "2"]
    run(static.check_connection())  # with static lists it reads the listing instead


# --------------------------------------------------------------------------- bad answers


def test_transient_500_is_retried_then_succeeds(sandbox) -> None:
    sandbox.db.create_ticket("s", "b")
    sandbox.faults.add(path="/api/tickets/1$", status=500, times=1)
    adapter = make(sandbox.api, retry_attempts=3)
    assert run(adapter.get_ticket("1")).subject == "s"
    assert adapter.http.calls == 2


def test_lasting_500_and_html_error_page_are_transient(sandbox) -> None:
    sandbox.db.create_ticket("s", "b")
    sandbox.faults.add(path="/api/tickets", status=502, times=-1, content_type="text/html",
                       body="<html><body><h1>502 Bad Gateway</h1></body></html>")  # fmt: skip
    adapter = make(sandbox.api, retry_attempts=2)
    with pytest.raises(TransientError, match="502.*Bad Gateway"):
        run(collect(adapter.list_new_tickets(None, 10)))
    assert adapter.http.calls == 2


def test_note_post_is_not_retried_after_a_500(sandbox) -> None:
    sandbox.db.create_ticket("s", "b")
    sandbox.faults.add(path="/notes$", method="POST", status=500, times=1)
    adapter = make(sandbox.api, retry_attempts=3)
    with pytest.raises(TransientError):
        run(adapter.update_ticket("1", TicketChange(note="once")))
    assert adapter.http.calls == 1  # the note may have been stored: never sent twice
    sandbox.faults.add(path="/notes$", method="POST", status=503, headers={"Retry-After": "0"}, times=1)
    run(adapter.update_ticket("1", TicketChange(note="once")))  # 503: surely not applied, retried
    assert [n.body for n in sandbox.db.list_notes(1)] == ["once"]


def test_malformed_json_and_html_200_are_protocol_errors(sandbox) -> None:
    sandbox.db.create_ticket("s", "b")
    adapter = make(sandbox.api)
    sandbox.faults.add(path="/api/tickets/1$", status=200, body='{"id": 1, "subject": ')
    with pytest.raises(ProtocolError, match="not JSON"):
        run(adapter.get_ticket("1"))
    sandbox.faults.add(path="/api/tickets$", status=200, content_type="text/html", body="<html>Login</html>")
    with pytest.raises(ProtocolError, match="text/html"):
        run(collect(adapter.list_new_tickets(None, 10)))


def test_answers_of_the_wrong_shape_name_the_path(sandbox) -> None:
    sandbox.db.create_ticket("s", "b")
    wrong_items = make(sandbox.api, list_new={"path": "/tickets", "items": "data.tickets"})
    with pytest.raises(ProtocolError, match="items='data.tickets'"):
        run(collect(wrong_items.list_new_tickets(None, 10)))
    wrong_id = make(sandbox.api, fields={"id": "ticket_id"})
    with pytest.raises(ProtocolError, match="fields.id='ticket_id'"):
        run(wrong_id.get_ticket("1"))
    wrong_wrap = make(sandbox.api, get_ticket={"ticket": "data"})
    with pytest.raises(ProtocolError, match="ticket='data'"):
        run(wrong_wrap.get_ticket("1"))


def test_timeout_is_transient(sandbox) -> None:
    sandbox.db.create_ticket("s", "b")
    sandbox.faults.add(path="/api/tickets/1$", status=0, delay=1.0)
    adapter = make(sandbox.api, timeout=0.2, retry_attempts=1)
    with pytest.raises(TransientError, match="timed out"):
        run(adapter.get_ticket("1"))


def test_unreachable_helpdesk_is_transient() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    adapter = make(f"http://127.0.0.1:{port}/api", retry_attempts=1)
    with pytest.raises(TransientError, match="cannot connect"):
        run(adapter.list_queues())


# --------------------------------------------------------------------------- configuration


def _problems(connection: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"systems": {"home": {"type": "generic_rest", "connection": connection}}}, "test.yaml")
    return {p.key: p.message for p in info.value.problems}


def test_config_errors_name_their_key_paths(tmp_path: Path) -> None:
    base = "systems.home.connection"
    assert _problems({}) == {f"{base}.base_url": "required key is missing"}
    assert "http:// or https://" in _problems({"base_url": "ftp://x"})[f"{base}.base_url"]
    problems = _problems({"base_url": "http://x", "fields": {"subjct": "title"}, "paging": {"style": "pages"}})
    assert problems[f"{base}.fields.subjct"] == "unknown key"
    assert f"{base}.paging.style" in problems
    auth = _problems({"base_url": "http://x", "auth": {"type": "bearer"}})
    assert "token (or token_file)" in auth[f"{base}.auth"]
    assert "header" in _problems({"base_url": "http://x", "auth": {"type": "header", "token": "t"}})[f"{base}.auth"]
    missing_file = _problems({"base_url": "http://x", "auth": {"type": "bearer", "token_file": str(tmp_path / "nope")}})
    assert "cannot read secret file" in missing_file[f"{base}.auth"]
    cursor = _problems({"base_url": "http://x", "paging": {"style": "cursor"}})
    assert "next_cursor_path" in cursor[f"{base}.paging"]
    path = _problems({"base_url": "http://x", "fields": {"subject": "a..b[x"}})
    assert "invalid JSON path" in path[f"{base}.fields"]
    both = _problems({"base_url": "http://x", "queues": {"values": ["A"], "path": "/q"}})
    assert "either 'values'" in both[f"{base}.queues"]
    regex = _problems({"base_url": "http://x", "update": {"unknown_value_pattern": "("}})
    assert "regular expression" in regex[f"{base}.update.unknown_value_pattern"]
    method = _problems({"base_url": "http://x", "update": {"method": "FETCH"}})
    assert f"{base}.update.method" in method


def test_secrets_from_files_and_never_in_repr(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n", encoding="utf-8")
    config = parse_config(
        {"systems": {"home": {"type": "generic_rest", "connection": {
            "base_url": "http://x", "auth": {"type": "basic", "username": "u", "password_file": str(secret)}}}}}
    )  # fmt: skip
    settings = config.adapter_settings("home")
    assert isinstance(settings, GenericRestSettings)
    assert settings.auth.password is not None and settings.auth.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())


def test_example_config_routes_against_the_sandbox(sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """config.example.yaml is valid and its connection works against a running sandbox as written."""
    config = load_config(REPO / "config.example.yaml")
    system = config.systems["sandbox"]
    settings = config.adapter_settings("sandbox")
    assert settings.base_url == "http://127.0.0.1:8099/api"
    moved = settings.model_copy(update={"base_url": sandbox.api})
    adapter = GenericRestAdapter("sandbox", moved, source_queues=system.source.queues, source_states=system.source.states)
    _state["adapters"].append(adapter)
    for i in range(7):
        sandbox.db.create_ticket(f"s{i}", "b")
    pages, _ = run(collect(adapter.list_new_tickets(None, 3)))
    assert [t.id for p in pages for t in p] == [str(i) for i in range(1, 8)]
    values = run(adapter.list_queues())
    for label in ("Hardware", "Access", "HR"):
        assert system.routing.queue is not None
        target = system.routing.queue.target_for(label)
        assert target in values
        run(adapter.update_ticket("1", TicketChange(queue=target, note="n")))
    assert system.routing.queue.fallback in values
    assert set(run(adapter.list_priorities())) >= {system.routing.priority.target_for(p) for p in ("low", "normal", "high")}  # type: ignore[union-attr]


# --------------------------------------------------------------------------- the documented example


class AcmeDesk:
    """The invented helpdesk of docs/generic_rest.config.yaml, as an httpx mock (shapes differ from the sandbox)."""

    TEAMS = ("Inbox", "Hardware", "Access", "Dispatch")

    def __init__(self, count: int) -> None:
        self.issues = {
            i: {"title": f"Issue {i}", "description": f"<p>Text {i}</p>", "team": {"name": "Inbox"}, "urgency": 2,
                "status": "open", "created": 1732752000 + i, "modified": "2024-11-28T00:00:00+01:00", "closed": None}
            for i in range(1, count + 1)
        }  # fmt: skip
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.requests: list[httpx.Request] = []

    def _issue(self, i: int) -> dict[str, Any]:
        return {"id": i, "attributes": {k: v for k, v in self.issues[i].items() if k != "closed"}}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("X-Acme-Token") != "acme-token":
            return httpx.Response(401, json={"errors": [{"code": "unauthenticated"}]})
        path = request.url.path.removeprefix("/api/v2")
        q = request.url.params
        if path == "/teams":
            return httpx.Response(200, json={"data": [{"id": n, "name": t} for n, t in enumerate(self.TEAMS)]})
        if path == "/issues" and request.method == "GET":
            ids = sorted(self.issues)
            if q.get("status") == "closed":
                after = int(q.get("closed_after", "0"))
                ids = [i for i in ids if (self.issues[i]["closed"] or 0) >= after and self.issues[i]["closed"]]
            else:
                teams, states = q.get_list("team"), q.get_list("status")
                ids = [i for i in ids if self.issues[i]["team"]["name"] in teams and self.issues[i]["status"] in states]
            start = int(q["cursor"]) if "cursor" in q else 0
            limit = int(q["limit"])
            chunk = ids[start : start + limit]
            more = start + limit < len(ids)
            return httpx.Response(
                200, json={"data": [self._issue(i) for i in chunk], "meta": {"next_cursor": str(start + limit) if more else None}}
            )
        parts = path.strip("/").split("/")
        i = int(parts[1])
        if i not in self.issues:
            return httpx.Response(404, json={"errors": [{"code": "not_found"}]})
        if len(parts) == 2 and request.method == "GET":
            return httpx.Response(200, json={"data": self._issue(i)})
        if len(parts) == 2 and request.method == "PUT":
            change = json.loads(request.content)["issue"]
            if "team" in change and change["team"] not in self.TEAMS:
                return httpx.Response(400, json={"errors": [{"code": "invalid_team", "detail": change["team"]}]})
            if "team" in change:
                self.issues[i]["team"] = {"name": change["team"]}
            if "urgency" in change:
                self.issues[i]["urgency"] = change["urgency"]
            return httpx.Response(200, json={"data": self._issue(i)})
        if parts[2:] == ["comments"] and request.method == "POST":
            self.comments.setdefault(i, []).append(json.loads(request.content)["comment"])
            return httpx.Response(201, json={"data": {"id": 1}})
        return httpx.Response(405)


def test_documented_home_grown_example_works(tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load((REPO / "docs" / "generic_rest.config.yaml").read_text(encoding="utf-8"))
    token_file = tmp_path / "acme-token"
    token_file.write_text("acme-token\n", encoding="utf-8")
    data["systems"]["acme"]["connection"]["auth"]["token_file"] = str(token_file)
    config = parse_config(data, "docs/generic_rest.config.yaml")
    system = config.systems["acme"]
    desk = AcmeDesk(45)
    adapter = GenericRestAdapter("acme", config.adapter_settings("acme"), source_queues=system.source.queues,
                                 source_states=system.source.states, transport=httpx.MockTransport(desk))  # fmt: skip
    _state["adapters"].append(adapter)

    pages, _ = run(collect(adapter.list_new_tickets(None, 20)))
    tickets = [t for p in pages for t in p]
    assert [t.id for t in tickets] == [str(i) for i in range(1, 46)] and len(pages) == 3
    first = tickets[0]
    assert (first.subject, first.queue, first.priority, first.state, first.body_is_html) == (
        "Issue 1", "Inbox", "2", "open", True,
    )  # fmt: skip
    assert first.created_at is not None and first.created_at.timestamp() == 1732752001
    assert first.updated_at is not None and first.updated_at.hour == 23  # +01:00 converted to UTC

    assert run(adapter.list_queues()) == list(AcmeDesk.TEAMS)
    assert run(adapter.list_priorities()) == ["1", "2", "3"]
    target = system.routing.priority.target_for("high")  # type: ignore[union-attr]
    run(adapter.update_ticket("3", TicketChange(queue="Hardware", priority=target, note="routed", note_subject="Auto")))
    assert desk.issues[3]["team"] == {"name": "Hardware"} and desk.issues[3]["urgency"] == 3
    assert desk.comments[3] == [{"title": "Auto", "text": "routed", "visibility": "staff"}]
    with pytest.raises(UnknownValueError, match="Finance"):
        run(adapter.update_ticket("4", TicketChange(queue="Finance")))

    desk.issues[5].update(status="closed", closed=1732800000)
    desk.issues[6].update(status="closed", closed=1732700000)
    from datetime import UTC, datetime

    pages, _ = run(collect(adapter.list_resolved_tickets(datetime.fromtimestamp(1732750000, UTC), None, 10)))
    assert [t.id for p in pages for t in p] == ["5"]
    assert desk.requests[-1].url.params["closed_after"] == "1732750000"  # time_format: epoch


def test_bad_tickets_do_not_break_the_listing(sandbox) -> None:
    sandbox.db.create_ticket("empty", "")
    sandbox.db.create_ticket("huge", "x" * 1_000_000)
    sandbox.db.create_ticket("html only", "<html><body><p>Printer <b>broken</b></p></body></html>")
    adapter = make(sandbox.api)
    pages, _ = run(collect(adapter.list_new_tickets(None, 50)))
    empty, huge, html = pages[0]
    assert empty.body == "" and len(huge.body or "") == 1_000_000 and (html.body or "").startswith("<html>")
    # invalid UTF-8 inside one ticket of an otherwise fine answer: replaced, the page still arrives
    raw = (b'{"items": [{"id": 1, "subject": "caf\xe9", "body": "ok", "queue": "Inbox", "state": "new"},'
           b' {"id": 2, "subject": "fine", "body": "b", "queue": "Inbox", "state": "new"}]}')
    sandbox.faults.add(path="/api/tickets$", status=200, body=raw)
    pages, _ = run(collect(adapter.list_new_tickets(None, 50)))
    assert [t.id for t in pages[0]] == ["1", "2"] and pages[0][0].subject == "caf\ufffd"


def test_unreadable_times_are_left_empty(sandbox) -> None:
    from adapters.generic_rest import parse_time

    assert parse_time("2024-11-28T00:00:00+01:00").isoformat() == "2024-11-27T23:00:00+00:00"  # type: ignore[union-attr]
    assert parse_time(1700000000000) == parse_time(1700000000)  # milliseconds
    for junk in ("yesterday", "inf", "nan", 1e400, True, {"a": 1}, ""):
        assert parse_time(junk) is None
    sandbox.faults.add(path="/api/tickets/1$", status=200, body='{"id": 1, "subject": "s", "updated_at": "soon"}')
    assert run(make(sandbox.api).get_ticket("1")).updated_at is None


def test_error_reported_in_a_200_answer() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"error": None, "ticket": {"id": 1, "subject": "s"}})
        change = json.loads(request.content)
        if change.get("queue") == "Nope":
            return httpx.Response(200, json={"error": {"code": "E_QUEUE_UNKNOWN", "msg": "no such queue"}})
        return httpx.Response(200, json={"error": {"code": "E_LOCKED", "msg": "ticket is locked"}})

    adapter = make("http://h.example", transport=httpx.MockTransport(handler), error_path="error",
                   get_ticket={"ticket": "ticket"}, add_note=None,
                   update={"unknown_value_pattern": "E_QUEUE_UNKNOWN"})  # fmt: skip
    assert run(adapter.get_ticket("1")).subject == "s"  # a null error is no error
    with pytest.raises(UnknownValueError, match="E_QUEUE_UNKNOWN"):
        run(adapter.update_ticket("1", TicketChange(queue="Nope")))
    with pytest.raises(PermanentError, match="error_path='error'.*ticket is locked") as info:
        run(adapter.update_ticket("1", TicketChange(queue="HR")))
    assert not isinstance(info.value, UnknownValueError)


def test_comma_joined_source_filters() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[{"id": 1, "subject": "s", "queue": "Triage", "state": "new"}])

    adapter = make("http://h.example", transport=httpx.MockTransport(handler), source_queues=("Inbox", "Triage"),
                   paging={"style": "none"},
                   list_new={"path": "/search", "items": "", "queue_param": None, "state_param": None,
                             "params": {"q": "queue IN ({queues}) AND state IN ({states})"}})  # fmt: skip
    pages, _ = run(collect(adapter.list_new_tickets(None, 50)))
    assert [t.id for p in pages for t in p] == ["1"] and len(seen) == 1
    assert seen[0].url.params["q"] == "queue IN (Inbox,Triage) AND state IN (new)"
    assert "per_page" not in seen[0].url.params  # paging style none


def test_429_honours_retry_after_and_403_is_an_authentication_error(sandbox) -> None:
    import time

    sandbox.db.create_ticket("s", "b")
    sandbox.faults.add(path="/api/tickets/1$", status=429, headers={"Retry-After": "1"}, body='{"error": "slow down"}')
    adapter = make(sandbox.api, retry_attempts=2)
    started = time.monotonic()
    assert run(adapter.get_ticket("1")).subject == "s"
    assert adapter.http.calls == 2 and time.monotonic() - started >= 0.9
    sandbox.faults.add(path="/api/queues", status=403, body='{"error": "no right to list queues"}')
    with pytest.raises(AuthenticationError, match="403"):
        run(adapter.list_queues())


def test_paging_placed_by_the_template_in_a_post_search() -> None:
    bodies: list[dict[str, Any]] = []
    tickets = [{"key": f"T-{i}", "fields": {"summary": f"s{i}", "queue": "Inbox"}} for i in range(1, 8)]

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        start, size = body["page"]["from"], body["page"]["size"]
        assert not request.url.params  # nothing added to the query
        return httpx.Response(200, json={"hits": tickets[start : start + size], "total": len(tickets)})

    adapter = make("http://h.example", transport=httpx.MockTransport(handler), source_states=(),
                   paging={"style": "offset", "send": "template", "total_path": "total"},
                   fields={"id": "key", "subject": "fields.summary", "queue": "fields.queue", "body": None},
                   list_new={"method": "POST", "path": "/search", "items": "hits", "queue_param": None, "state_param": None,
                             "body": {"query": "queue = {queues}", "page": {"from": "{offset:int}", "size": "{size:int}"}}})  # fmt: skip
    pages, _ = run(collect(adapter.list_new_tickets(None, 3)))
    assert [t.id for p in pages for t in p] == [f"T-{i}" for i in range(1, 8)]
    # each page that brought new tickets is asked again (routed tickets would have left it; here none did)
    assert [b["page"]["from"] for b in bodies] == [0, 0, 3, 3, 6] and all(b["page"]["size"] == 3 for b in bodies)
    assert bodies[0]["query"] == "queue = Inbox"
