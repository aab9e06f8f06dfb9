"""Contract tests of the Zammad adapter against the local Zammad stand-in (tests/zammad_standin.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters import adapter_class
from adapters.base import (
    AuthenticationError,
    NotFoundError,
    PermanentError,
    ProtocolError,
    TicketChange,
    TicketPage,
    TransientError,
    UnknownValueError,
)
from adapters.http import RetryPolicy
from adapters.zammad import ZammadAdapter, ZammadSettings, build_query, http_status
from tests.support.paths import REPO
from tests.support.zammad_standin import RunningStandin, ZammadStandin, parse_query, running_standin

TOKEN = "agent-token"
FAST_RETRY = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05, max_retry_after=2.0)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def make(url: str, *, queues: list[str] | None = None, states: list[str] | None = None,
         retry: RetryPolicy | None = FAST_RETRY, **connection: Any) -> ZammadAdapter:
    conn: dict[str, Any] = {"base_url": url, "search_index_lag": 60}
    if "username" not in connection:
        conn["token"] = TOKEN
    conn.update(connection)
    settings = ZammadSettings.model_validate(conn)
    return ZammadAdapter("zammad", settings, source_queues=["Incoming"] if queues is None else queues,
                         source_states=["new"] if states is None else states, retry=retry)


async def collect(adapter: ZammadAdapter, cursor: str | None = None, page_size: int = 50) -> list[TicketPage]:
    try:
        return [page async for page in adapter.list_new_tickets(cursor, page_size)]
    finally:
        await adapter.aclose()


def ids(pages: list[TicketPage]) -> list[str]:
    return [t.id for p in pages for t in p.tickets]


def last_cursor(pages: list[TicketPage], default: str | None = None) -> str | None:
    cursors = [p.cursor for p in pages if p.cursor is not None]
    return cursors[-1] if cursors else default


# --------------------------------------------------------------------------- settings


def test_registered_under_type_zammad() -> None:
    assert adapter_class("zammad") is ZammadAdapter
    assert ZammadAdapter.settings_model is ZammadSettings


def test_settings_token_file_and_secrecy(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-token-value\n", encoding="utf-8")
    settings = ZammadSettings.model_validate({"base_url": "https://helpdesk.example.com/api/v1/", "token_file": str(secret)})
    assert settings.token is not None and settings.token.get_secret_value() == "s3cr3t-token-value"
    assert settings.base_url == "https://helpdesk.example.com"
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings.model_dump())


@pytest.mark.parametrize(
    "conn, message",
    [
        ({"base_url": "https://z.example"}, "give token"),
        ({"base_url": "https://z.example", "token": "t", "username": "u", "password": "p"}, "not both"),
        ({"base_url": "https://z.example", "username": "u"}, "needs both"),
        ({"base_url": "z.example", "token": "t"}, "http://"),
        ({"base_url": "https://z.example", "token": "t", "tokn": "x"}, "Extra inputs"),
    ],
)
def test_settings_rejects_bad_connections(conn: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ZammadSettings.model_validate(conn)


def test_config_file_section_validates() -> None:
    from connector.config import ConfigError, parse_config

    config = parse_config({"systems": {"zammad": {"type": "zammad", "connection": {
        "base_url": "https://helpdesk.example.com", "token": "abc"}, "source": {"queues": ["Incoming"]}}}})
    assert isinstance(config.adapter_settings("zammad"), ZammadSettings)
    with pytest.raises(ConfigError) as err:
        parse_config({"systems": {"zammad": {"type": "zammad", "connection": {"base_url": "https://x", "tokn": "a"}}}})
    keys = [p.key for p in err.value.problems]
    assert "systems.zammad.connection.tokn" in keys


def test_default_query_quotes_and_escapes_values() -> None:
    query = build_query(['Sales "EU" \\ Nord', "Incoming"], ["new", "pending reminder"])
    assert query == ('(state.name:"new" OR state.name:"pending reminder") AND '
                     '(group.name:"Sales \\"EU\\" \\\\ Nord" OR group.name:"Incoming")')
    assert build_query([], []) == "*"
    parse_query(query)  # well formed for the query language


def test_group_names_with_quotes_and_backslashes_are_found(standin: ZammadStandin) -> None:
    odd = 'Sales "EU" \\ Nord (2nd)'
    standin.add_group(odd)
    standin.agent.group_ids.add(standin.group_id(odd))
    in_odd = standin.create_ticket("Invoice wrong", "please fix", group=odd)
    standin.create_ticket("Other group", "not me", group="Sales")
    standin.refresh_index()
    with running_standin(standin) as server:
        pages = run(collect(make(server.url, queues=[odd])))
    assert ids(pages) == [str(in_odd)]


# --------------------------------------------------------------------------- auth


def test_token_auth_header_form(server: RunningStandin, standin: ZammadStandin) -> None:
    run(make(server.url).check_connection())
    assert standin.requests[-1].authorization == f"Token token={TOKEN}"


def test_bearer_and_basic_auth(server: RunningStandin, standin: ZammadStandin) -> None:
    standin.add_token("oauth-abc", standin.agent, oauth=True)
    run(make(server.url, token="oauth-abc", token_type="bearer").check_connection())
    assert standin.requests[-1].authorization == "Bearer oauth-abc"
    run(make(server.url, username="router@example.com", password="agentpw").check_connection())
    assert standin.requests[-1].authorization.startswith("Basic ")


def test_bad_token_is_an_authentication_error_without_retry_or_leak(
    server: RunningStandin, standin: ZammadStandin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    adapter = make(server.url, token="wrong-secret-123")
    with pytest.raises(AuthenticationError) as err:
        run(adapter.check_connection())
    assert http_status(err.value) == 401
    assert "Can't find User for Token" in str(err.value)
    assert len(standin.requests) == 1  # permanent: not retried
    assert "wrong-secret-123" not in str(err.value)
    assert all("wrong-secret-123" not in r.getMessage() for r in caplog.records)


def test_expired_token(server: RunningStandin, standin: ZammadStandin) -> None:
    standin.expired_tokens.add(TOKEN)
    with pytest.raises(AuthenticationError, match="token expired"):
        run(make(server.url).list_priorities())
    assert len(standin.requests) == 1


def test_bad_basic_credentials(server: RunningStandin) -> None:
    with pytest.raises(AuthenticationError, match="Invalid BasicAuth credentials"):
        run(make(server.url, username="router@example.com", password="nope").check_connection())


def test_missing_right_is_403(server: RunningStandin, standin: ZammadStandin) -> None:
    hidden = standin.create_ticket("Secret", "board only", group="2nd Level")
    standin.agent.group_ids.discard(standin.group_id("2nd Level"))
    with pytest.raises(AuthenticationError) as err:
        run(make(server.url).get_ticket(str(hidden)))
    assert http_status(err.value) == 403 and "Not authorized" in str(err.value)


# --------------------------------------------------------------------------- reading


def test_listing_shapes_ids_and_html_body(server: RunningStandin, standin: ZammadStandin) -> None:
    html = standin.create_ticket("VPN down", "<div>The <b>VPN</b> drops<br>every hour</div>", content_type="text/html")
    plain = standin.create_ticket("Printer", "Printer on floor 3 jams", priority="3 high")
    standin.create_ticket("Already open", "x", state="open")
    standin.create_ticket("Elsewhere", "x", group="Sales")
    standin.refresh_index()
    pages = run(collect(make(server.url)))
    tickets = {t.id: t for p in pages for t in p.tickets}
    assert set(tickets) == {str(html), str(plain)}
    first = tickets[str(html)]
    assert first.subject == "VPN down" and first.queue == "Incoming" and first.priority == "2 normal"
    assert first.state == "new" and first.body_is_html and "<b>VPN</b>" in (first.body or "")
    assert isinstance(first.created_at, datetime) and first.created_at.tzinfo is not None
    assert first.extra["number"] == str(31000 + html)
    second = tickets[str(plain)]
    assert second.priority == "3 high" and not second.body_is_html and second.body == "Printer on floor 3 jams"
    search = [r for r in standin.requests if r.path == "/api/v1/tickets/search"]
    assert search and search[0].query["expand"] == "true" and search[0].query["sort_by"] == "updated_at"
    assert search[0].query["query"] == 'state.name:"new" AND group.name:"Incoming"'


def test_body_is_the_first_customer_article(server: RunningStandin, standin: ZammadStandin) -> None:
    tid = standin.create_ticket("Call", "Agent wrote this phone note", article_type="phone", first_sender="Agent")
    standin.add_article(tid, "Customer explains the problem", sender="Customer", internal=False, article_type="email")
    standin.add_article(tid, "internal chatter", sender="Agent", internal=True)
    ticket = run(make(server.url).get_ticket(str(tid)))
    assert ticket.body == "Customer explains the problem"


def test_get_ticket_unknown_is_not_found(server: RunningStandin) -> None:
    with pytest.raises(NotFoundError, match="Couldn't find Ticket"):
        run(make(server.url).get_ticket("999"))
    with pytest.raises(NotFoundError):
        run(make(server.url).get_ticket("abc"))


def test_non_json_answer_is_a_protocol_error() -> None:
    def login_page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>Zammad login</html>", headers={"Content-Type": "text/html"})

    settings = ZammadSettings.model_validate({"base_url": "https://z.example", "token": "t"})
    adapter = ZammadAdapter("zammad", settings, source_queues=[], source_states=["new"],
                            transport=httpx.MockTransport(login_page))
    with pytest.raises(ProtocolError, match="not JSON"):
        run(adapter.list_priorities())


# --------------------------------------------------------------------------- index lag and cursors


def test_index_lag_never_loses_a_ticket(standin: ZammadStandin) -> None:
    """A ticket indexed after a newer one is still listed on a later poll, once."""
    standin.index_lag = 30
    late = standin.create_ticket("Created first, indexed late", "a")
    standin.advance(10)
    early = standin.create_ticket("Created second", "b")
    standin._index[early][0] = (float("-inf"), standin._index[early][0][1])  # indexed at once
    with running_standin(standin) as server:
        first = run(collect(make(server.url)))
        assert ids(first) == [str(early)]
        cursor = last_cursor(first)
        standin.advance(25)  # now the late one is indexed too
        second = run(collect(make(server.url), cursor))  # a new adapter: the cursor survives restarts
        assert ids(second) == [str(late)]
        third = run(collect(make(server.url), last_cursor(second, cursor)))
        assert ids(third) == []


def test_without_lag_allowance_the_late_ticket_would_be_lost(standin: ZammadStandin) -> None:
    """The same scenario with search_index_lag 0 loses the ticket: the allowance is what saves it."""
    standin.index_lag = 30
    late = standin.create_ticket("Created first, indexed late", "a")
    standin.advance(10)
    early = standin.create_ticket("Created second", "b")
    standin._index[early][0] = (float("-inf"), standin._index[early][0][1])
    with running_standin(standin) as server:
        first = run(collect(make(server.url, search_index_lag=0)))
        standin.advance(25)
        second = run(collect(make(server.url, search_index_lag=0), last_cursor(first)))
    assert ids(first) == [str(early)] and str(late) not in ids(second)


def test_tickets_are_handed_out_once_across_polls(server: RunningStandin, standin: ZammadStandin) -> None:
    a = standin.create_ticket("One", "x")
    b = standin.create_ticket("Two", "y")
    standin.refresh_index()
    first = run(collect(make(server.url)))
    assert ids(first) == [str(a), str(b)]
    second = run(collect(make(server.url), last_cursor(first)))
    assert ids(second) == []  # still in the lag window (asked again), but not handed out again
    standin.advance(3600)
    c = standin.create_ticket("Three", "z")
    standin.refresh_index()
    cursor = last_cursor(second, last_cursor(first))
    third = run(collect(make(server.url), cursor))
    assert ids(third) == [str(c)]
    state = json.loads(last_cursor(third) or "{}")
    assert state["v"] == 1 and [row[0] for row in state["seen"]] == [c]  # old ids pruned: the cursor stays small


def test_tickets_that_enter_the_source_group_later_are_listed(server: RunningStandin, standin: ZammadStandin) -> None:
    elsewhere = standin.create_ticket("Created in Sales", "x", group="Sales")
    waiting = standin.create_ticket("Was open", "y", state="open")
    standin.advance(3600)
    first = standin.create_ticket("New one", "z")
    standin.advance(3600)
    standin.refresh_index()
    pages = run(collect(make(server.url)))
    assert ids(pages) == [str(first)]
    standin.human_update(elsewhere, group="Incoming")  # a person (or a trigger) moves it into the source group
    standin.human_update(waiting, state="new")  # and sets another back to new
    standin.refresh_index()
    standin.requests.clear()
    later = run(collect(make(server.url), last_cursor(pages)))
    # listed whatever their creation time; as bare tickets (the daemon drops decided ids unread, reads the rest)
    assert sorted(ids(later), key=int) == [str(elsewhere), str(waiting)]
    assert all(t.body is None for p in later for t in p.tickets)
    assert not any("/ticket_articles/" in r.path for r in standin.requests)
    assert ids(run(collect(make(server.url), last_cursor(later, last_cursor(pages))))) == []


def test_stale_index_hit_that_moved_is_not_listed(standin: ZammadStandin) -> None:
    tid = standin.create_ticket("Moved meanwhile", "x")
    standin.refresh_index()
    standin.index_lag = 30
    standin.human_update(tid, group="Sales")  # the index still says Incoming for 30 s
    with running_standin(standin) as server:
        pages = run(collect(make(server.url)))
        assert standin.requests[0].path == "/api/v1/tickets/search"
    assert ids(pages) == []


def test_unreadable_cursor_restarts_the_listing(server: RunningStandin, standin: ZammadStandin) -> None:
    tid = standin.create_ticket("One", "x")
    standin.refresh_index()
    assert ids(run(collect(make(server.url), "not json"))) == [str(tid)]


# --------------------------------------------------------------------------- paging


def test_paging_beyond_one_page_while_tickets_drop_out(server: RunningStandin, standin: ZammadStandin) -> None:
    created = []
    for i in range(25):
        created.append(standin.create_ticket(f"Ticket {i}", f"body {i}"))
        standin.advance(1)
    standin.refresh_index()
    standin.advance(120)

    async def route_each_page() -> list[list[str]]:
        adapter = make(server.url)
        seen: list[list[str]] = []
        try:
            async for page in adapter.list_new_tickets(None, 10):
                seen.append([t.id for t in page.tickets])
                for t in page.tickets:  # routed away: they leave the search result, offsets shift
                    await adapter.update_ticket(t.id, TicketChange(queue="Sales"))
                standin.refresh_index()
        finally:
            await adapter.aclose()
        return seen

    pages = run(route_each_page())
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [int(i) for p in pages for i in p] == created
    per_page = {r.query.get("per_page") for r in standin.requests if r.path == "/api/v1/tickets/search"}
    assert per_page == {"10"}


def test_many_tickets_with_one_timestamp(server: RunningStandin, standin: ZammadStandin) -> None:
    standin.freeze()
    created = [standin.create_ticket(f"Bulk {i}", "imported") for i in range(23)]
    standin.freeze(False)
    standin.refresh_index()
    pages = run(collect(make(server.url), page_size=5))
    assert sorted(int(i) for i in ids(pages)) == created and len(ids(pages)) == 23


def test_tickets_with_one_timestamp_routed_page_by_page(server: RunningStandin, standin: ZammadStandin) -> None:
    """Routed tickets leave the result while the listing steps through one timestamp: none is skipped."""
    standin.freeze()
    created = [standin.create_ticket(f"Bulk {i}", "imported") for i in range(7)]
    standin.freeze(False)
    standin.refresh_index()
    standin.advance(3600)  # long indexed: the cursor may move up to the horizon

    async def route_each_page(cursor: str | None) -> tuple[list[int], str | None]:
        adapter = make(server.url)
        seen: list[int] = []
        try:
            async for page in adapter.list_new_tickets(cursor, 2):
                for t in page.tickets:
                    seen.append(int(t.id))
                    if int(t.id) % 2:  # some routed away, some left in place
                        await adapter.update_ticket(t.id, TicketChange(queue="Sales"))
                cursor = page.cursor or cursor
        finally:
            await adapter.aclose()
        return seen, cursor

    first, cursor = run(route_each_page(None))
    assert sorted(first) == created and len(first) == 7
    again, _ = run(route_each_page(cursor))
    assert again == []


def test_page_size_is_capped_at_zammads_limit(server: RunningStandin, standin: ZammadStandin) -> None:
    standin.create_ticket("One", "x")
    standin.refresh_index()
    run(collect(make(server.url), page_size=1000))
    assert standin.requests[0].query["per_page"] == "200"


# --------------------------------------------------------------------------- writing


def test_update_sets_group_priority_and_one_internal_note(server: RunningStandin, standin: ZammadStandin) -> None:
    tid = standin.create_ticket("Printer", "jams")
    standin.advance(5)
    before = standin.ticket_view(tid)["updated_at"]
    adapter = make(server.url)
    run(adapter.update_ticket(str(tid), TicketChange(queue="Sales", priority="3 high", note="routed by model")))
    view = standin.ticket_view(tid)
    assert (view["group"], view["priority"], view["state"]) == ("Sales", "3 high", "new")
    assert view["updated_at"] != before
    notes = standin.notes(tid)
    assert len(notes) == 1 and notes[0]["body"] == "routed by model" and notes[0]["content_type"] == "text/plain"
    assert notes[0]["internal"] is True and notes[0]["subject"] == "helpdesk-connector"
    puts = [r for r in standin.requests if r.method == "PUT"]
    assert len(puts) == 1 and puts[0].body["group"] == "Sales" and puts[0].body["article"]["internal"] is True


def test_note_alone_is_a_ticket_article(server: RunningStandin, standin: ZammadStandin) -> None:
    tid = standin.create_ticket("Printer", "jams")
    run(make(server.url).update_ticket(str(tid), TicketChange(note="suggest: Sales")))
    assert standin.ticket_view(tid)["group"] == "Incoming"
    post = [r for r in standin.requests if r.method == "POST"]
    assert post[0].path == "/api/v1/ticket_articles"
    assert post[0].body == {"ticket_id": tid, "subject": "helpdesk-connector", "body": "suggest: Sales",
                            "content_type": "text/plain", "type": "note", "internal": True}
    assert len(standin.notes(tid)) == 1


def test_add_note_and_find_note_by_its_marker(server: RunningStandin, standin: ZammadStandin) -> None:
    tid = standin.create_ticket("Printer", "jams")
    adapter = make(server.url)
    assert ZammadAdapter.note_in_update  # fields and note in one PUT: the pipeline sends them together

    async def go() -> tuple[bool, bool, bool]:
        before = await adapter.find_note(str(tid), "[helpdesk-connector decision 12]")
        await adapter.add_note(str(tid), "suggests 'Sales'\n\n[helpdesk-connector decision 12]", "Automatic routing")
        found = await adapter.find_note(str(tid), "[helpdesk-connector decision 12]")
        other = await adapter.find_note(str(tid), "[helpdesk-connector decision 1]")  # a prefix is not a match
        await adapter.aclose()
        return before, found, other

    assert run(go()) == (False, True, False)
    assert [n["subject"] for n in standin.notes(tid)] == ["Automatic routing"] and standin.notes(tid)[0]["internal"]


@pytest.mark.parametrize("change", [TicketChange(queue="No Such Group", note="n"),
                                    TicketChange(priority="9 cosmic", note="n")])
def test_unknown_group_or_priority_writes_nothing(
    server: RunningStandin, standin: ZammadStandin, change: TicketChange
) -> None:
    tid = standin.create_ticket("Printer", "jams")
    before = standin.ticket_view(tid)
    with pytest.raises(UnknownValueError, match="No lookup value found"):
        run(make(server.url).update_ticket(str(tid), change))
    after = standin.ticket_view(tid)
    assert after["updated_at"] == before["updated_at"] and after["group"] == "Incoming"
    assert standin.notes(tid) == []


def test_other_422_is_permanent_not_unknown_value(server: RunningStandin, standin: ZammadStandin) -> None:
    tid = standin.create_ticket("Printer", "jams")
    with pytest.raises(PermanentError) as err:
        run(make(server.url).update_ticket(str(tid), TicketChange(queue="Sales", note="   ")))
    assert not isinstance(err.value, UnknownValueError) and http_status(err.value) == 422


def test_update_of_missing_ticket_is_not_found(server: RunningStandin) -> None:
    with pytest.raises(NotFoundError):
        run(make(server.url).update_ticket("4242", TicketChange(queue="Sales")))


def test_write_is_not_repeated_after_a_server_error(server: RunningStandin, standin: ZammadStandin) -> None:
    tid = standin.create_ticket("Printer", "jams")
    standin.fail_next(1, 500, path_prefix="/api/v1/tickets/")
    with pytest.raises(TransientError):
        run(make(server.url).update_ticket(str(tid), TicketChange(queue="Sales", note="n")))
    assert len([r for r in standin.requests if r.method == "PUT"]) == 1


def test_write_is_retried_after_429(server: RunningStandin, standin: ZammadStandin) -> None:
    tid = standin.create_ticket("Printer", "jams")
    standin.fail_next(1, 429, retry_after="0", path_prefix="/api/v1/tickets/")
    run(make(server.url).update_ticket(str(tid), TicketChange(queue="Sales", note="n")))
    assert [r.status for r in standin.requests if r.method == "PUT"] == [429, 200]
    assert len(standin.notes(tid)) == 1


# --------------------------------------------------------------------------- transient errors


def test_429_with_retry_after_is_retried(server: RunningStandin, standin: ZammadStandin) -> None:
    standin.fail_next(2, 429, retry_after="1")
    names, seconds = run(_timed(make(server.url).list_priorities()))
    assert names == ["1 low", "2 normal", "3 high"]
    assert [r.status for r in standin.requests] == [429, 429, 200]
    assert seconds >= 1.9  # waited what Retry-After asked for, twice


def test_429_without_retry_after_backs_off(server: RunningStandin, standin: ZammadStandin) -> None:
    standin.fail_next(1, 429)
    assert run(make(server.url).list_priorities()) == ["1 low", "2 normal", "3 high"]
    assert [r.status for r in standin.requests] == [429, 200]


def test_persistent_429_gives_a_transient_error(server: RunningStandin, standin: ZammadStandin) -> None:
    standin.fail_next(5, 429, retry_after="0")
    with pytest.raises(TransientError) as err:
        run(make(server.url).list_priorities())
    assert err.value.retry_after == 0 and http_status(err.value) == 429
    assert len(standin.requests) == FAST_RETRY.attempts


def test_outage_then_recovery(server: RunningStandin, standin: ZammadStandin) -> None:
    standin.create_ticket("One", "x")
    standin.refresh_index()
    standin.down = True
    with pytest.raises(TransientError, match="502"):
        run(collect(make(server.url)))
    standin.down = False
    assert len(ids(run(collect(make(server.url))))) == 1


def test_connection_refused_is_transient() -> None:
    with running_standin() as server:
        url = server.url
    with pytest.raises(TransientError, match="cannot connect"):
        run(make(url, retry=RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.01)).check_connection())


async def _timed(coro: Any) -> tuple[Any, float]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await coro
    return result, loop.time() - start


# --------------------------------------------------------------------------- lists and limits


def test_list_queues_as_agent_and_as_group_admin(standin: ZammadStandin) -> None:
    standin.agent.group_ids = {standin.group_id("Incoming"), standin.group_id("Sales")}
    standin.add_group("Archive", active=False)
    with running_standin(standin) as server:
        assert run(make(server.url).list_queues()) == ["Incoming", "Sales"]
        assert [r.status for r in standin.requests] == [403, 200]  # /groups needs admin.group
        standin.agent.permissions.add("admin.group")
        assert run(make(server.url).list_queues()) == ["Users", "Incoming", "Sales", "2nd Level", "Service Desk"]
        assert run(make(server.url).list_priorities()) == ["1 low", "2 normal", "3 high"]
        assert "closed" in run(make(server.url).list_states())


def test_concurrency_is_bounded(standin: ZammadStandin) -> None:
    standin.request_delay = 0.05
    for i in range(8):
        standin.create_ticket(f"T{i}", "x")
    standin.refresh_index()
    with running_standin(standin) as server:
        assert len(ids(run(collect(make(server.url, max_concurrent_requests=2))))) == 8
        assert standin.max_in_flight == 2
        standin.max_in_flight = 0
        assert len(ids(run(collect(make(server.url, max_concurrent_requests=8))))) == 8
        assert standin.max_in_flight > 2  # the bound, not the server, limited the first run


# --------------------------------------------------------------------------- resolved tickets


def test_resolved_tickets_since_with_final_labels(server: RunningStandin, standin: ZammadStandin) -> None:
    old = standin.create_ticket("Old", "old body", group="Sales", state="closed")
    standin.advance(3600)
    since = datetime.fromtimestamp(standin.now(), tz=timezone.utc) - timedelta(seconds=10)
    new = standin.create_ticket("Laptop", "<p>screen broken</p>", content_type="text/html")
    standin.human_update(new, group="2nd Level", priority="3 high", state="closed")
    standin.create_ticket("Still open", "x", state="open")
    standin.refresh_index()

    async def resolved(cursor: str | None) -> list[TicketPage]:
        adapter = make(server.url)
        try:
            return [p async for p in adapter.list_resolved_tickets(since, cursor, 10)]
        finally:
            await adapter.aclose()

    pages = run(resolved(None))
    tickets = [t for p in pages for t in p.tickets]
    assert [t.id for t in tickets] == [str(new)] and str(old) not in ids(pages)
    t = tickets[0]
    assert (t.queue, t.priority, t.state, t.body_is_html) == ("2nd Level", "3 high", "closed", True)
    assert "screen broken" in (t.body or "")
    assert ids(run(resolved(last_cursor(pages)))) == []


def test_documented_config_example_is_valid() -> None:
    import yaml

    from connector.config import parse_config

    data = yaml.safe_load((REPO / "docs" / "zammad.config.yaml").read_text(encoding="utf-8"))
    conn = data["systems"]["zammad"]["connection"]
    conn.pop("token_file")
    conn["token"] = "example"
    config = parse_config(data)
    settings = config.adapter_settings("zammad")
    assert isinstance(settings, ZammadSettings) and settings.search_index_lag == 300
    adapter = ZammadAdapter("zammad", settings, source_queues=["Incoming"], source_states=["new"])
    assert adapter.new_query == 'state.name:"new" AND group.name:"Incoming"'
    assert adapter.resolved_query == 'state.name:"closed"'
    run(adapter.aclose())


# --------------------------------------------------------------------------- listing: list (no Elasticsearch)


def test_list_mode_pages_filters_and_resumes(server: RunningStandin, standin: ZammadStandin) -> None:
    wanted = []
    for i in range(11):
        wanted.append(standin.create_ticket(f"T{i}", "x"))
        standin.create_ticket(f"Closed {i}", "x", state="closed")
    pages = run(collect(make(server.url, listing="list"), page_size=4))
    assert [int(i) for i in ids(pages)] == wanted
    assert not any(r.path == "/api/v1/tickets/search" for r in standin.requests)
    assert all(r.query.get("expand") == "true" for r in standin.requests if r.path == "/api/v1/tickets")
    cursor = last_cursor(pages)
    assert ids(run(collect(make(server.url, listing="list"), cursor, page_size=4))) == []
    newer = standin.create_ticket("Newer", "x")
    standin.requests.clear()
    assert ids(run(collect(make(server.url, listing="list"), cursor, page_size=4))) == [str(newer)]
    first_page = min(int(r.query["page"]) for r in standin.requests if r.path == "/api/v1/tickets")
    assert first_page >= 4  # resumed near the end, not from page 1 of the whole history


def test_list_mode_routed_tickets_leaving_the_list_shift_nothing_out(server: RunningStandin,
                                                                     standin: ZammadStandin) -> None:
    standin.agent.group_ids.discard(standin.group_id("Sales"))  # routed tickets become invisible
    created = [standin.create_ticket(f"T{i}", "x") for i in range(10)]

    async def route_each_page() -> list[str]:
        adapter = make(server.url, listing="list")
        seen: list[str] = []
        try:
            async for page in adapter.list_new_tickets(None, 4):
                for t in page.tickets:
                    seen.append(t.id)
                    await adapter.update_ticket(t.id, TicketChange(queue="Sales"))
        finally:
            await adapter.aclose()
        return seen

    assert [int(i) for i in run(route_each_page())] == created


def test_documented_config_example_mentions_every_connection_key() -> None:
    import re

    text = (REPO / "docs" / "zammad.config.yaml").read_text(encoding="utf-8")
    mentioned = set(re.findall(r"^[ \t]*(?:#[ \t]*)?([A-Za-z_]\w*):", text, re.MULTILINE))
    missing = [k for k in ZammadSettings.model_fields if k not in mentioned]
    assert not missing, f"docs/zammad.config.yaml does not mention: {missing}"
