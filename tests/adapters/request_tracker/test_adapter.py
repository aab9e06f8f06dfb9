"""The Request Tracker adapter against a real RT 5 (Debian's packages) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest

from adapters.base import (
    AuthenticationError,
    NotFoundError,
    PermanentError,
    Ticket,
    TicketChange,
    TransientError,
    UnknownValueError,
)
from adapters.http import RetryPolicy
from adapters.request_tracker import RequestTrackerAdapter, RequestTrackerSettings, decode_attachment_content
from tests.support.rt_server import RtServer

pytestmark = pytest.mark.integration

T = TypeVar("T")
FAST_RETRY = RetryPolicy(attempts=2, initial_wait=0.05, max_wait=0.2)


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def make_adapter(rt: RtServer, queues: list[str], *, user: str = "connector", **settings: Any) -> RequestTrackerAdapter:
    conn: dict[str, Any] = {"base_url": rt.base_url, **settings}
    if "token" not in conn and "username" not in conn:
        conn["token"] = rt.tokens[user]
    return RequestTrackerAdapter(
        "rt", RequestTrackerSettings.model_validate(conn), source_queues=queues, source_states=["new"], retry=FAST_RETRY
    )


async def _listed(adapter: RequestTrackerAdapter, page_size: int = 50) -> list[list[Ticket]]:
    pages = []
    async for page in adapter.list_new_tickets(None, page_size):
        pages.append(page.tickets)
    await adapter.aclose()
    return pages


def test_lists_new_tickets_of_the_source_queue_page_by_page(rt: RtServer, source_queue: str) -> None:
    ids = [rt.create_ticket(source_queue, f"new {i}", f"body {i}", priority=10 * i) for i in range(5)]
    resolved = rt.create_ticket(source_queue, "already done", "x")
    rt.update(resolved, Status="resolved")
    rt.create_ticket("General", "elsewhere", "not ours")

    pages = run(_listed(make_adapter(rt, [source_queue]), page_size=2))

    assert [len(p) for p in pages] == [2, 2, 1]
    tickets = [t for p in pages for t in p]
    assert [t.id for t in tickets] == ids
    first = tickets[1]
    assert first.subject == "new 1"
    assert first.queue == source_queue  # a name, not RT's queue reference
    assert first.priority == "10"  # RT's number, as text
    assert first.state == "new"
    assert first.body is None  # the listing has no bodies; the pipeline reads them
    assert first.created_at is not None and first.created_at.tzinfo is not None
    assert first.updated_at is not None
    assert "resolved_at" not in first.extra  # 1970-01-01 means unset


def test_values_in_ticketsql_are_escaped(rt: RtServer) -> None:
    queue = "Kim's \\ queue"
    tid = rt.create_ticket(queue, "quoted", "text")
    tickets = [t for p in run(_listed(make_adapter(rt, [queue]))) for t in p]
    assert tid in [t.id for t in tickets]
    assert all(t.queue == queue for t in tickets)


def test_custom_query_and_bad_ticketsql(rt: RtServer, source_queue: str) -> None:
    a = rt.create_ticket(source_queue, "printer jam", "x", priority=5)
    rt.create_ticket(source_queue, "other", "x", priority=90)
    adapter = make_adapter(rt, [source_queue], query=f"Queue = '{source_queue}' AND Priority < 50")
    assert [t.id for p in run(_listed(adapter)) for t in p] == [a]

    broken = make_adapter(rt, [source_queue], query="Queue = 'x' AND (")
    with pytest.raises(PermanentError, match="400"):
        run(_listed(broken))


def test_first_read_reuses_the_listing_and_rereads_are_one_call(rt: RtServer, source_queue: str) -> None:
    tid = rt.create_ticket(source_queue, "VPN drops", "The VPN drops every hour.")

    async def scenario() -> tuple[Ticket, Ticket, Ticket, list[int]]:
        adapter = make_adapter(rt, [source_queue])
        calls = []
        async for page in adapter.list_new_tickets(None, 10):
            listed = page.tickets[0]
        calls.append(adapter.http.calls)
        first = await adapter.get_ticket(tid)  # body only: listed fields reused
        calls.append(adapter.http.calls)
        rt.update(tid, Priority=77)  # a person changes it
        again = await adapter.get_ticket(tid)  # the re-read: fresh fields, cached body
        calls.append(adapter.http.calls)
        await adapter.aclose()
        return listed, first, again, calls

    listed, first, again, calls = run(scenario())
    assert calls == [1, 2, 3]
    assert first.body == "The VPN drops every hour." and not first.body_is_html
    assert first.priority == listed.priority == "0"
    assert again.priority == "77" and again.body == first.body


def test_bodies_from_the_first_message(rt: RtServer, source_queue: str) -> None:
    html = rt.create_ticket(source_queue, "html", "<p>Screen is <b>black</b></p>", content_type="text/html")
    with_file = rt.create_ticket(
        source_queue, "with file", "See the attached log.",
        Attachments=[{"FileName": "log.txt", "FileType": "text/plain",
                      "FileContent": base64.b64encode(b"ERROR 42 in module").decode()}],
    )
    empty = rt.create_ticket(source_queue, "no text", "")
    # a later message (an agent's reply, here by the connector's user) is not the ticket's body
    httpx.post(f"{rt.api_url}/ticket/{empty}/correspond", json={"Content": "a reply", "ContentType": "text/plain"},
               headers={"Authorization": f"token {rt.tokens['connector']}"}, timeout=60).raise_for_status()
    unicode = rt.create_ticket(source_queue, "Drucker", "Der Drucker im 2. Stock druckt nur „Müll“ ✓")

    async def read(tid: str) -> Ticket:
        adapter = make_adapter(rt, [source_queue])
        try:
            return await adapter.get_ticket(tid)
        finally:
            await adapter.aclose()

    t = run(read(html))
    assert t.body_is_html and "<b>black</b>" in (t.body or "")
    t = run(read(with_file))
    assert t.body == "See the attached log." and not t.body_is_html
    assert run(read(empty)).body == ""
    assert run(read(unicode)).body == "Der Drucker im 2. Stock druckt nur „Müll“ ✓"


def test_update_queue_priority_and_internal_note(rt: RtServer, source_queue: str) -> None:
    tid = rt.create_ticket(source_queue, "disk full", "C: is full")
    adapter = make_adapter(rt, [source_queue])

    async def go() -> int:
        await adapter.update_ticket(tid, TicketChange(queue="Hardware", priority="80", note="model says Hardware (0.93)",
                                                      note_subject="Automatic routing"))
        calls = adapter.http.calls
        await adapter.aclose()
        return calls

    calls = run(go())
    state = rt.ticket(tid)
    assert (state["queue"], state["priority"]) == ("Hardware", "80")
    assert any("model says Hardware (0.93)" in c for c in rt.comments(tid))
    assert calls == 3  # queue list (once per adapter), PUT, comment


def test_add_note_and_find_note_by_its_marker(rt: RtServer, source_queue: str) -> None:
    tid = rt.create_ticket(source_queue, "marker", "the customer's text, Grüße")
    adapter = make_adapter(rt, [source_queue])
    marker = "[helpdesk-connector decision 31]"

    async def go() -> tuple[bool, bool, bool, int]:
        before = await adapter.find_note(tid, marker)
        await adapter.add_note(tid, f"queue: Hardware (0.93) -> suggests 'Hardware'\n\n{marker}", "Automatic routing")
        calls = adapter.http.calls
        found = await adapter.find_note(tid, marker)
        prefix = await adapter.find_note(tid, "[helpdesk-connector decision 3]")
        await adapter.aclose()
        return before, found, prefix, adapter.http.calls - calls

    assert not RequestTrackerAdapter.note_in_update  # RT: the fields and the comment are two requests
    before, found, prefix, calls = run(go())
    assert (before, found, prefix) == (False, True, False)
    assert calls == 2  # one attachments search per look
    assert [c for c in rt.comments(tid) if marker in c]


def test_note_only_and_unchanged_values(rt: RtServer, source_queue: str) -> None:
    tid = rt.create_ticket(source_queue, "note only", "x", priority=20)
    adapter = make_adapter(rt, [source_queue])

    async def go() -> None:
        await adapter.update_ticket(tid, TicketChange(note="suggestion: Network"))
        # RT answers [] when nothing changes; that is not a failure
        await adapter.update_ticket(tid, TicketChange(priority="20"))
        await adapter.aclose()

    run(go())
    state = rt.ticket(tid)
    assert (state["queue"], state["priority"]) == (source_queue, "20")
    assert len([c for c in rt.comments(tid) if "suggestion: Network" in c]) == 1


def test_unknown_queue_is_a_permanent_error_and_changes_nothing(rt: RtServer, source_queue: str) -> None:
    tid = rt.create_ticket(source_queue, "x", "y")
    adapter = make_adapter(rt, [source_queue])

    async def go() -> None:
        with pytest.raises(UnknownValueError, match="Nope"):
            await adapter.update_ticket(tid, TicketChange(queue="Nope", priority="60", note="n"))
        # RT's own answer (HTTP 200 + ["Ticket N: Queue Nope2 does not exist"]) when the
        # queue list is stale: still detected
        await adapter.list_queues()
        assert adapter._queues is not None
        adapter._queues.add("Nope2")
        with pytest.raises(UnknownValueError, match="does not exist"):
            await adapter.update_ticket(tid, TicketChange(queue="Nope2"))
        await adapter.aclose()

    run(go())
    state = rt.ticket(tid)
    assert (state["queue"], state["priority"]) == (source_queue, "0")
    assert rt.comments(tid) == []


def test_priority_must_be_a_number_in_range(rt: RtServer, source_queue: str) -> None:
    tid = rt.create_ticket(source_queue, "x", "y")
    adapter = make_adapter(rt, [source_queue])

    async def go() -> None:
        with pytest.raises(UnknownValueError, match="not a number"):
            await adapter.update_ticket(tid, TicketChange(priority="High"))
        with pytest.raises(UnknownValueError, match="outside"):
            await adapter.update_ticket(tid, TicketChange(priority="300"))
        await adapter.aclose()

    run(go())
    assert rt.ticket(tid)["priority"] == "0"
    assert run(make_adapter(rt, []).list_priorities())[:3] == ["0", "1", "2"]


def test_missing_right_is_reported_not_swallowed(rt: RtServer) -> None:
    tid = rt.create_ticket("Triage", "limited user", "y")
    adapter = make_adapter(rt, ["Triage"], user="limited")

    async def go() -> None:
        with pytest.raises(PermanentError, match="Permission Denied.*CreateTicket"):
            await adapter.update_ticket(tid, TicketChange(queue="Network"))
        await adapter.aclose()

    run(go())
    assert rt.ticket(tid)["queue"] == "Triage"


def test_missing_ticket_and_bad_credentials(rt: RtServer, source_queue: str) -> None:
    async def go() -> None:
        adapter = make_adapter(rt, [source_queue])
        with pytest.raises(NotFoundError):
            await adapter.get_ticket("999999")
        with pytest.raises(NotFoundError):
            await adapter.update_ticket("999999", TicketChange(priority="5"))
        await adapter.aclose()

        bad = make_adapter(rt, [source_queue], token="1-2-notavalidtoken")
        with pytest.raises(AuthenticationError):
            await bad.check_connection()
        await bad.aclose()

        wrong_pw = make_adapter(rt, [source_queue], username="root", password="wrong")
        with pytest.raises(AuthenticationError):
            await wrong_pw.check_connection()
        await wrong_pw.aclose()

        basic = make_adapter(rt, [source_queue], username="root", password=rt.root_password)
        await basic.check_connection()
        assert source_queue in await basic.list_queues()
        await basic.aclose()

    run(go())


def test_unreachable_rt_is_transient(rt: RtServer) -> None:
    from tests.support.rt_server import free_port

    adapter = RequestTrackerAdapter(
        "rt", RequestTrackerSettings(url=f"http://127.0.0.1:{free_port()}", token="x"),
        source_queues=[], source_states=["new"], retry=FAST_RETRY,
    )
    with pytest.raises(TransientError):
        run(adapter.list_queues())


def test_list_queues_shows_the_users_queues(rt: RtServer) -> None:
    queues = run(make_adapter(rt, []).list_queues())
    assert {"Triage", "Network", "Hardware", "Fallback", "General"} <= set(queues)
    limited = run(make_adapter(rt, [], user="limited").list_queues())
    assert set(limited) == {"Triage", "Network"}


def test_resolved_tickets_with_final_queue_priority_and_body(rt: RtServer, source_queue: str) -> None:
    before = datetime.now(UTC) - timedelta(seconds=2)
    done = []
    for i, (queue, prio) in enumerate([("Network", 30), ("Hardware", 90), ("Software", 50)]):
        tid = rt.create_ticket(source_queue, f"resolved {i}", f"problem text {i}")
        rt.update(tid, Queue=queue, Priority=prio)
        rt.update(tid, Status="resolved")
        done.append(tid)
    still_open = rt.create_ticket(source_queue, "open", "x")

    async def export(since: datetime | None, cursor: str | None = None, page_size: int = 2) -> list[tuple[str | None, list[Ticket]]]:
        adapter = make_adapter(rt, [source_queue])
        out = []
        async for page in adapter.list_resolved_tickets(since, cursor, page_size):
            out.append((page.cursor, page.tickets))
        await adapter.aclose()
        return out

    pages = run(export(before))
    tickets = {t.id: t for _, p in pages for t in p}
    assert set(done) <= set(tickets) and still_open not in tickets
    t = tickets[done[1]]
    assert (t.queue, t.priority, t.state) == ("Hardware", "90", "resolved")
    assert t.body == "problem text 1"
    resolved_at = t.extra["resolved_at"]
    assert isinstance(resolved_at, datetime) and resolved_at >= before.replace(microsecond=0)

    # resuming from a page's cursor gives only the later tickets
    first_cursor = pages[0][0]
    assert first_cursor is not None
    resumed = {t.id for _, p in run(export(before, first_cursor)) for t in p}
    assert resumed == set(tickets) - {t.id for t in pages[0][1]}

    # nothing was resolved after now
    assert [t for _, p in run(export(datetime.now(UTC) + timedelta(seconds=5))) for t in p] == []


def test_attachment_endpoint_content_is_base64(rt: RtServer, source_queue: str) -> None:
    tid = rt.create_ticket(source_queue, "b64", "Grüße aus dem Büro")
    with rt.client() as c:
        items = c.get(f"/ticket/{tid}/attachments", params={"fields": "ContentType"}).json()["items"]
        att = c.get(f"/attachment/{items[0]['id']}").json()
    assert att["Content"] != "Grüße aus dem Büro"
    assert decode_attachment_content(att) == "Grüße aus dem Büro"
