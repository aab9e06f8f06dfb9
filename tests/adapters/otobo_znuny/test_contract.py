"""The OTOBO/Znuny adapter against the GenericInterface stand-in: every documented quirk.

HTTP 200 errors, ids as strings or numbers, ``{}`` for an empty search, expired
sessions, query-string-only GETs, batched TicketGet with several ids, keyset
paging beyond one search, cursors across restarts, 429/5xx retries, unknown
routes, permanent errors, and the resolved-ticket export search.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from adapters import adapter_class
from adapters.base import (
    AuthenticationError,
    NotFoundError,
    PermanentError,
    ProtocolError,
    TicketChange,
    TransientError,
    UnknownValueError,
)
from adapters.otobo_znuny import DEFAULT_PRIORITIES, OtoboZnunyAdapter, OtoboZnunySettings
from tests.support.otobo_standin import OtoboStandin
from tests.support.paths import REPO

PASSWORD = "s3cret-Pa55"


@pytest.fixture
def otobo() -> Iterator[OtoboStandin]:
    with OtoboStandin(users={"connector": PASSWORD}) as standin:
        yield standin


Factory = Callable[..., OtoboZnunyAdapter]


@pytest.fixture
def make_adapter(otobo: OtoboStandin) -> Factory:
    def make(
        *, source_queues: list[str] | None = None, source_states: list[str] | None = None, **overrides: Any
    ) -> OtoboZnunyAdapter:
        settings: dict[str, Any] = {
            "base_url": otobo.base_url,
            "user_login": "connector",
            "password": PASSWORD,
            "retry_initial_wait": 0.01,
            "retry_max_wait": 0.05,
            "retry_attempts": 3,
        }
        settings.update(overrides)
        return OtoboZnunyAdapter(
            "otobo",
            OtoboZnunySettings.model_validate(settings),
            source_queues=["Raw"] if source_queues is None else source_queues,
            source_states=["new"] if source_states is None else source_states,
        )

    return make


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def collect(pages: Any) -> list[Any]:
    return [page async for page in pages]


async def new_ids(adapter: OtoboZnunyAdapter, cursor: str | None = None, page_size: int = 50) -> tuple[list[str], str | None]:
    ids: list[str] = []
    last = cursor
    async for page in adapter.list_new_tickets(cursor, page_size):
        ids.extend(t.id for t in page.tickets)
        last = page.cursor or last
    return ids, last


# --------------------------------------------------------------------------- registration and settings


def test_registered_for_otobo_and_znuny() -> None:
    assert adapter_class("otobo") is OtoboZnunyAdapter
    assert adapter_class("znuny") is OtoboZnunyAdapter
    assert OtoboZnunyAdapter.settings_model is OtoboZnunySettings


def test_shipped_web_service_definition_matches_the_adapter(tmp_path: Path) -> None:
    import yaml

    from tests.support.otobo_standin import STANDARD_ROUTES, routes_from_webservice

    path = REPO / "deploy" / "otobo" / "helpdesk-connector-webservice.yml"
    definition = yaml.safe_load(path.read_text(encoding="utf-8"))
    operations = definition["Provider"]["Operation"]
    assert {name: op["Type"] for name, op in operations.items()} == {
        "SessionCreate": "Session::SessionCreate",
        "TicketSearch": "Ticket::TicketSearch",
        "TicketGet": "Ticket::TicketGet",
        "TicketUpdate": "Ticket::TicketUpdate",
    }
    assert definition["Provider"]["Transport"]["Type"] == "HTTP::REST"
    assert definition["Debugger"]["DebugThreshold"] != "debug"  # would log the login password
    routes = routes_from_webservice(definition)
    assert routes == STANDARD_ROUTES
    defaults = OtoboZnunySettings.model_fields["routes"].default_factory()  # type: ignore[misc]
    assert (defaults.session_create, defaults.ticket_search, defaults.ticket_get, defaults.ticket_update) == (
        routes["SessionCreate"][1], routes["TicketSearch"][1], routes["TicketGet"][1], routes["TicketUpdate"][1]
    )

    # and the adapter works against a system serving exactly this definition
    with OtoboStandin(users={"connector": PASSWORD}, routes=routes) as served:
        served.add_ticket("a", "b")

        async def go() -> None:
            adapter = OtoboZnunyAdapter(
                "otobo",
                OtoboZnunySettings(base_url=served.base_url, user_login="connector", password=PASSWORD),  # type: ignore[arg-type]
                source_queues=["Raw"],
                source_states=["new"],
            )
            assert [t.id for p in await collect(adapter.list_new_tickets(None, 5)) for t in p.tickets] == ["1"]
            await adapter.update_ticket("1", TicketChange(queue="Misc", note="n"))
            await adapter.aclose()

        run(go())
        assert served.tickets[1].queue == "Misc"


def test_documented_config_section_is_valid() -> None:
    import yaml

    from connector.config import parse_config

    path = REPO / "docs" / "otobo_znuny.config.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    connection = data["systems"]["otobo"]["connection"]
    connection["password"] = "x"  # the documented password_file does not exist here
    del connection["password_file"]
    config = parse_config(data)
    settings = config.adapter_settings("otobo")
    assert isinstance(settings, OtoboZnunySettings)
    assert settings.base_url.endswith("/Webservice/HelpdeskConnector")
    targets = config.systems["otobo"].routing.queue.system_values()  # type: ignore[union-attr]
    assert targets <= set(settings.queues or [])  # the example's map only names queues it lists
    assert config.systems["otobo"].routing.priority.system_values() <= set(settings.priorities)  # type: ignore[union-attr]


def test_password_file_and_secret_not_in_repr(tmp_path: Path) -> None:
    secret = tmp_path / "otobo-password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    settings = OtoboZnunySettings.model_validate(
        {"base_url": "https://helpdesk.example/otobo/nph-genericinterface.pl/Webservice/X/", "user_login": "c", "password_file": str(secret)}
    )
    assert settings.password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())
    assert settings.base_url.endswith("/Webservice/X")
    assert settings.routes.ticket_get == "/Ticket/:TicketID"


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown key|extra"):
        OtoboZnunySettings.model_validate({"base_url": "http://x", "user_login": "u", "password": "p", "pasword": "typo"})
    with pytest.raises(ValueError, match="http"):
        OtoboZnunySettings.model_validate({"base_url": "x", "user_login": "u", "password": "p"})
    with pytest.raises(ValueError, match="TicketID"):
        OtoboZnunySettings.model_validate({"base_url": "http://x", "user_login": "u", "password": "p", "routes": {"ticket_get": "/T"}})
    with pytest.raises(ValueError, match="time zone"):
        OtoboZnunySettings.model_validate({"base_url": "http://x", "user_login": "u", "password": "p", "time_zone": "Mars/Base"})


def test_config_file_section_validates(tmp_path: Path) -> None:
    from connector.config import parse_config

    (tmp_path / "pw").write_text("x", encoding="utf-8")
    config = parse_config(
        {
            "systems": {
                "znuny": {
                    "type": "znuny",
                    "connection": {
                        "base_url": "https://znuny.example/otrs/nph-genericinterface.pl/Webservice/HelpdeskConnector",
                        "user_login": "helpdesk-connector",
                        "password_file": str(tmp_path / "pw"),
                        "queues": ["Raw", "Misc", "IT::Hardware"],
                    },
                    "source": {"queues": ["Raw"], "states": ["new"]},
                }
            }
        }
    )
    settings = config.adapter_settings("znuny")
    assert isinstance(settings, OtoboZnunySettings)
    assert settings.queues == ["Raw", "Misc", "IT::Hardware"]


# --------------------------------------------------------------------------- sessions and auth


def test_one_login_then_session_id_in_the_query_string(otobo: OtoboStandin, make_adapter: Factory) -> None:
    for i in range(3):
        otobo.add_ticket(f"t{i}", "body")

    async def go() -> None:
        adapter = make_adapter()
        await adapter.check_connection()
        ids, _ = await new_ids(adapter)
        assert ids == ["1", "2", "3"]
        await adapter.get_ticket("2")
        assert adapter.logins == 1
        await adapter.aclose()

    run(go())
    assert len(otobo.calls("SessionCreate")) == 1
    for call in otobo.calls("TicketSearch") + otobo.calls("TicketGet"):
        assert call["method"] == "GET"
        assert "SessionID=" in call["query"]
        assert "body" not in call  # GET carries everything in the query string
        assert PASSWORD not in call["query"]


def test_json_body_on_get_is_not_read_by_the_system(otobo: OtoboStandin) -> None:
    """The quirk the adapter works around: OTOBO ignores the body of a GET request."""
    import httpx

    otobo.add_ticket("x", "y")
    with httpx.Client(base_url=otobo.base_url) as client:
        session = client.post("/Session", json={"UserLogin": "connector", "Password": PASSWORD}).json()["SessionID"]
        in_body = client.request("GET", "/Ticket", json={"SessionID": session, "Queues": ["Raw"]})
        in_query = client.get("/Ticket", params={"SessionID": session, "Queues": "Raw"})
    assert in_body.status_code == 200
    assert in_body.json()["Error"]["ErrorCode"] == "TicketSearch.AuthFail"
    assert in_query.json() == {"TicketID": ["1"]}


def test_wrong_password_is_an_authentication_error_without_the_secret(
    otobo: OtoboStandin, make_adapter: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def go() -> None:
        adapter = make_adapter(password="wrong-" + PASSWORD)
        with pytest.raises(AuthenticationError, match="SessionCreate.AuthFail") as info:
            await adapter.check_connection()
        assert PASSWORD not in str(info.value)
        await adapter.aclose()

    run(go())
    assert len(otobo.calls("SessionCreate")) == 1  # a refused login is not retried
    assert PASSWORD not in caplog.text


def test_expired_session_logs_in_again_once(otobo: OtoboStandin, make_adapter: Factory) -> None:
    otobo.add_ticket("a", "b")

    async def go() -> None:
        adapter = make_adapter()
        await adapter.check_connection()
        otobo.expire_sessions()
        ticket = await adapter.get_ticket("1")
        assert ticket.subject == "a"
        assert adapter.logins == 2
        otobo.expire_sessions()
        await adapter.update_ticket("1", TicketChange(note="n"))  # PATCH re-logs in as well
        assert adapter.logins == 3
        await adapter.aclose()

    run(go())
    assert len(otobo.notes(1)) == 1


def test_session_refused_again_after_relogin_fails(otobo: OtoboStandin, make_adapter: Factory) -> None:
    otobo.session_max_idle = -1.0  # every session is already expired when used

    async def go() -> None:
        adapter = make_adapter()
        with pytest.raises(AuthenticationError, match="TicketSearch.AuthFail"):
            await adapter.check_connection()
        assert adapter.logins == 2  # the first login and exactly one more
        await adapter.aclose()

    run(go())
    assert len(otobo.calls("TicketSearch")) == 2


def test_password_changed_while_running(otobo: OtoboStandin, make_adapter: Factory) -> None:
    async def go() -> None:
        adapter = make_adapter()
        await adapter.check_connection()
        otobo.users["connector"] = "rotated"
        otobo.expire_sessions()
        with pytest.raises(AuthenticationError, match="SessionCreate.AuthFail"):
            await adapter.check_connection()
        await adapter.aclose()

    run(go())


def test_login_per_request_mode_and_redacted_http_logs(
    otobo: OtoboStandin, make_adapter: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="httpx")  # the daemon's logging set-up quiets httpx; undo for this test
    otobo.add_ticket("a", "b")

    async def go() -> None:
        adapter = make_adapter(auth="per_request")
        ids, _ = await new_ids(adapter)
        assert ids == ["1"]
        await adapter.update_ticket("1", TicketChange(priority="4 high"))
        await adapter.aclose()

    run(go())
    assert otobo.calls("SessionCreate") == []
    assert otobo.tickets[1].priority == "4 high"
    assert otobo.calls("TicketUpdate")[0]["body"]["UserLogin"] == "connector"
    assert any("UserLogin=" in c["query"] for c in otobo.calls("TicketSearch"))
    assert "HTTP Request" in caplog.text  # httpx did log the URLs ...
    assert PASSWORD not in caplog.text  # ... with the credentials masked


def test_concurrent_calls_share_one_relogin(otobo: OtoboStandin, make_adapter: Factory) -> None:
    for i in range(6):
        otobo.add_ticket(f"t{i}", "b")

    async def go() -> None:
        adapter = make_adapter()
        await adapter.check_connection()
        otobo.expire_sessions()
        tickets = await asyncio.gather(*(adapter.get_ticket(str(i)) for i in range(1, 7)))
        assert [t.id for t in tickets] == [str(i) for i in range(1, 7)]
        assert adapter.logins == 2
        await adapter.aclose()

    run(go())


# --------------------------------------------------------------------------- search, get and paging


def test_empty_search_answers_empty_object(otobo: OtoboStandin, make_adapter: Factory) -> None:
    otobo.add_ticket("elsewhere", "b", queue="Misc")

    async def go() -> None:
        adapter = make_adapter()
        assert await collect(adapter.list_new_tickets(None, 10)) == []
        await adapter.aclose()

    run(go())
    assert otobo.calls("TicketGet") == []


@pytest.mark.parametrize("id_style", ["real", "numbers", "strings"])
def test_ids_as_numbers_or_strings(otobo: OtoboStandin, make_adapter: Factory, id_style: str) -> None:
    otobo.id_style = id_style
    otobo.add_ticket("first", "hello")
    otobo.add_ticket("second", "world")

    async def go() -> None:
        adapter = make_adapter()
        ids, cursor = await new_ids(adapter)
        assert ids == ["1", "2"]
        ticket = await adapter.get_ticket(2)  # type: ignore[arg-type]  # an int id is accepted too
        assert ticket.id == "2" and ticket.body == "world"
        await adapter.update_ticket("2", TicketChange(queue="Misc", note="x"))
        again, _ = await new_ids(adapter, cursor)
        assert again == []
        await adapter.aclose()

    run(go())
    assert otobo.tickets[2].queue == "Misc"


def test_ticket_fields_and_first_customer_article(otobo: OtoboStandin, make_adapter: Factory) -> None:
    ticket_id = otobo.add_ticket("Printer broken", "The printer on floor 2 is jammed.", priority="2 low")
    otobo.tickets[ticket_id].articles.insert(
        0, otobo.tickets[ticket_id].articles[0].__class__(99, "auto", "automatic reply", sender_type="system")
    )
    html_id = otobo.add_ticket("HTML mail", "<p>Hello <b>there</b></p>", content_type="text/html; charset=utf-8")

    async def go() -> None:
        adapter = make_adapter()
        ticket = await adapter.get_ticket(str(ticket_id))
        assert ticket.subject == "Printer broken"
        assert ticket.body == "The printer on floor 2 is jammed."  # the customer's, not the system's
        assert (ticket.queue, ticket.priority, ticket.state) == ("Raw", "2 low", "new")
        assert ticket.created_at is not None and ticket.created_at.tzinfo is not None
        assert ticket.extra["queue_id"] == otobo.queues["Raw"]
        assert not ticket.body_is_html
        html = await adapter.get_ticket(str(html_id))
        assert html.body_is_html
        await adapter.aclose()

    run(go())
    query = otobo.calls("TicketGet")[0]["query"]
    assert "AllArticles=1" in query


def test_batched_ticket_get_with_several_ids(otobo: OtoboStandin, make_adapter: Factory) -> None:
    for i in range(10):
        otobo.add_ticket(f"t{i}", f"b{i}")

    async def go() -> None:
        adapter = make_adapter(get_batch_size=4)
        pages = await collect(adapter.list_new_tickets(None, 10))
        assert [t.body for t in pages[0].tickets] == [f"b{i}" for i in range(10)]
        await adapter.aclose()

    run(go())
    gets = otobo.calls("TicketGet")
    assert len(gets) == 3  # 4 + 4 + 2 ids
    batches = [g["path"].rsplit("/", 1)[1].split(",") for g in gets]
    assert sorted(int(i) for b in batches for i in b) == list(range(1, 11)) and len(batches[0]) == 4


def test_paging_beyond_one_search_and_one_page(otobo: OtoboStandin, make_adapter: Factory) -> None:
    for i in range(23):
        otobo.add_ticket(f"t{i}", "b")
        if i % 4 == 3:
            otobo.advance(1)  # several creation seconds, several tickets per second
    otobo.add_ticket("not new", "b", state="open")
    otobo.add_ticket("other queue", "b", queue="Junk")

    async def go() -> None:
        adapter = make_adapter(search_limit=5, get_batch_size=3)
        pages = await collect(adapter.list_new_tickets(None, 4))
        ids = [int(t.id) for p in pages for t in p.tickets]
        assert sorted(ids) == list(range(1, 24)) and len(ids) == 23  # one second's tickets come in any order
        assert all(len(p.tickets) <= 4 for p in pages)
        await adapter.aclose()

    run(go())
    assert len(otobo.calls("TicketSearch")) >= 5
    assert all("Limit=5" in c["query"] for c in otobo.calls("TicketSearch"))


def test_many_tickets_in_the_same_second_still_progress(otobo: OtoboStandin, make_adapter: Factory) -> None:
    stamp = otobo.now()
    for i in range(12):
        otobo.add_ticket(f"t{i}", "b", created=stamp)

    async def go() -> None:
        adapter = make_adapter(search_limit=5)
        ids, _ = await new_ids(adapter, page_size=3)
        assert sorted(map(int, ids)) == list(range(1, 13)) and len(ids) == 12
        await adapter.aclose()

    run(go())


def test_cursor_survives_a_restart(otobo: OtoboStandin, make_adapter: Factory) -> None:
    for i in range(9):
        otobo.add_ticket(f"t{i}", "b")

    handed: list[str] = []

    async def first_run() -> str:
        adapter = make_adapter(search_limit=4)
        async for page in adapter.list_new_tickets(None, 3):
            cursor = page.cursor
            handed.extend(t.id for t in page.tickets)
            break  # the daemon stops after one page (max_tickets_per_poll, or a restart)
        await adapter.aclose()
        assert cursor is not None
        return cursor

    stored = run(first_run())
    assert len(handed) == 3
    otobo.advance(2)
    otobo.add_ticket("arrived later", "b")

    async def second_run() -> tuple[list[str], str | None]:
        adapter = make_adapter(search_limit=4)  # a new process: a new adapter, the stored cursor
        result = await new_ids(adapter, stored, page_size=3)
        await adapter.aclose()
        return result

    ids, final = run(second_run())
    assert sorted(ids + handed, key=int) == [str(i) for i in range(1, 11)]

    async def third_run() -> list[Any]:
        adapter = make_adapter()
        pages = await collect(adapter.list_new_tickets(final, 50))
        await adapter.aclose()
        return [t for p in pages for t in p.tickets]

    # nothing new; the older tickets still in the source queue come as bare ids (the daemon decided them)
    again = run(third_run())
    assert all(t.body is None for t in again) and {t.id for t in again} <= set(ids + handed)


def test_tickets_that_enter_the_source_queue_later_are_listed(otobo: OtoboStandin, make_adapter: Factory) -> None:
    moved = otobo.add_ticket("created elsewhere", "b", queue="Junk")
    reset = otobo.add_ticket("was open", "b", state="open")
    otobo.advance(5)
    first = otobo.add_ticket("new one", "b")

    async def go() -> None:
        adapter = make_adapter()
        ids, cursor = await new_ids(adapter)
        assert ids == [str(first)]
        otobo.advance(5)
        otobo.move_into_queue(moved, "Raw")  # a person (or a rule) moves it into the source queue
        otobo.human_update(reset, state="new")  # set back to a new state
        pages = await collect(adapter.list_new_tickets(cursor, 50))
        listed = [t.id for p in pages for t in p.tickets]
        # every ticket in the source queue and state, whatever its creation time, as a bare id:
        # the daemon drops the ids it decided already without reading them, and reads the others
        assert sorted(listed, key=int) == [str(moved), str(reset)]
        assert all(t.body is None for p in pages for t in p.tickets)
        assert all(p.cursor is None for p in pages)  # the creation-time position stays
        await adapter.aclose()

    run(go())
    searches = otobo.calls("TicketSearch")
    assert searches[-1]["data"]["TicketCreateTimeOlderDate"] < otobo.tickets[first].created
    assert len(otobo.calls("TicketGet")) == 1  # the older tickets were not read


def test_older_candidates_page_beyond_one_search_while_they_leave(otobo: OtoboStandin, make_adapter: Factory) -> None:
    old = []
    for i in range(13):
        old.append(otobo.add_ticket(f"old{i}", "b", queue="Junk"))
        if i % 3 == 2:
            otobo.advance(1)
    otobo.advance(5)
    otobo.add_ticket("newest", "b")

    async def go() -> None:
        adapter = make_adapter(search_limit=4)
        _, cursor = await new_ids(adapter)
        for ticket_id in old:
            otobo.move_into_queue(ticket_id, "Raw")
        listed: list[int] = []
        async for page in adapter.list_new_tickets(cursor, 3):
            for ticket in page.tickets:
                listed.append(int(ticket.id))
                otobo.human_update(int(ticket.id), queue="Misc")  # routed: it leaves the listing
        assert sorted(set(listed) - {14}) == old
        await adapter.aclose()

    run(go())


def test_unreadable_cursor_restarts_the_listing(otobo: OtoboStandin, make_adapter: Factory) -> None:
    otobo.add_ticket("a", "b")

    async def go() -> None:
        adapter = make_adapter()
        for junk in ("not json", '{"time": 5}', "[1, 2]"):
            ids, cursor = await new_ids(adapter, junk)
            assert ids == ["1"] and cursor is not None and cursor != junk
        legacy, _ = await new_ids(adapter, "1")  # a bare id: the ticket handed out already
        assert legacy == []
        await adapter.aclose()

    run(go())


def test_ticket_without_articles_has_an_empty_body(otobo: OtoboStandin, make_adapter: Factory) -> None:
    ticket_id = otobo.add_ticket("Only a title", "x")
    otobo.tickets[ticket_id].articles.clear()

    async def go() -> None:
        adapter = make_adapter()
        ticket = await adapter.get_ticket(str(ticket_id))
        assert (ticket.subject, ticket.body) == ("Only a title", "")
        await adapter.aclose()

    run(go())


def test_new_ticket_search_parameters(otobo: OtoboStandin, make_adapter: Factory) -> None:
    otobo.add_ticket("a", "b", queue="Support::Hardware")

    async def go() -> None:
        adapter = make_adapter(source_queues=["Raw", "Support::Hardware"], source_states=["new", "open"])
        ids, cursor = await new_ids(adapter)
        assert ids == ["1"]
        await new_ids(adapter, cursor)
        await adapter.aclose()

    run(go())
    first, second, *older = otobo.calls("TicketSearch")
    data = first["data"]
    assert data["Queues"] == ["Raw", "Support::Hardware"]
    assert data["States"] == ["new", "open"]
    assert (data["SortBy"], data["OrderBy"]) == ("Age", "Up")
    assert "TicketCreateTimeNewerDate" in second["data"]


def test_ticket_gone_between_search_and_get_is_skipped(otobo: OtoboStandin, make_adapter: Factory) -> None:
    for i in range(4):
        otobo.add_ticket(f"t{i}", "b")
    otobo.permissions["connector"] = {"Secret": set()}

    async def go() -> None:
        adapter = make_adapter(get_batch_size=4)
        search = adapter._search

        async def search_then_hide(params: Any) -> list[int]:
            ids = await search(params)
            otobo.tickets[2].queue = "Secret"  # moved out of reach right after the search
            return ids

        adapter._search = search_then_hide  # type: ignore[method-assign]
        ids, _ = await new_ids(adapter)
        assert ids == ["1", "3", "4"]
        await adapter.aclose()

    run(go())


def test_get_missing_ticket_is_not_found(make_adapter: Factory) -> None:
    async def go() -> None:
        adapter = make_adapter()
        with pytest.raises(NotFoundError, match="TicketGet.AccessDenied"):
            await adapter.get_ticket("404")
        with pytest.raises(NotFoundError, match="TicketUpdate.AccessDenied"):
            await adapter.update_ticket("404", TicketChange(note="n"))
        await adapter.aclose()

    run(go())


def test_changed_timestamp_tells_a_person_changed_the_ticket(otobo: OtoboStandin, make_adapter: Factory) -> None:
    otobo.add_ticket("a", "b")

    async def go() -> None:
        adapter = make_adapter()
        before = await adapter.get_ticket("1")
        assert adapter.is_candidate(before)
        otobo.advance(5)
        otobo.human_update(1, queue="Misc")
        after = await adapter.get_ticket("1")
        assert after.updated_at is not None and before.updated_at is not None
        assert after.updated_at > before.updated_at
        assert not adapter.is_candidate(after)
        await adapter.aclose()

    run(go())


def test_time_zone_of_the_system_is_applied(otobo: OtoboStandin, make_adapter: Factory) -> None:
    otobo.add_ticket("a", "b", created="2026-06-01 12:00:00")

    async def go() -> None:
        adapter = make_adapter(time_zone="Europe/Berlin")
        ticket = await adapter.get_ticket("1")
        assert ticket.created_at == datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)
        await adapter.aclose()

    run(go())


# --------------------------------------------------------------------------- updates


def test_update_sends_queue_priority_and_internal_note(otobo: OtoboStandin, make_adapter: Factory) -> None:
    otobo.add_ticket("a", "b")

    async def go() -> None:
        adapter = make_adapter()
        await adapter.update_ticket(
            "1", TicketChange(queue="Support::Hardware", priority="4 high", note="routed by model v1", note_subject="Automatic routing")
        )
        await adapter.aclose()

    run(go())
    call = otobo.calls("TicketUpdate")[0]
    assert call["method"] == "PATCH" and call["path"].endswith("/Ticket/1")
    assert call["body"]["Ticket"] == {"Queue": "Support::Hardware", "Priority": "4 high"}
    article = call["body"]["Article"]
    assert article["CommunicationChannel"] == "Internal"
    assert call["answer"]["TicketNumber"] == otobo.tickets[1].number  # the answer names the ticket number too
    assert article["IsVisibleForCustomer"] == 0
    assert article["SenderType"] == "agent"
    ticket = otobo.tickets[1]
    assert (ticket.queue, ticket.priority) == ("Support::Hardware", "4 high")
    (note,) = otobo.notes(1)
    assert (note.subject, note.body, note.visible) == ("Automatic routing", "routed by model v1", 0)


def test_add_note_and_find_note_by_its_marker(otobo: OtoboStandin, make_adapter: Factory) -> None:
    otobo.add_ticket("a", "customer text")
    marker = "[helpdesk-connector decision 5]"

    async def go() -> tuple[bool, bool, bool]:
        adapter = make_adapter()
        before = await adapter.find_note("1", marker)
        await adapter.add_note("1", f"suggests 'Misc'\n\n{marker}", "Automatic routing")
        found = await adapter.find_note("1", marker)
        prefix = await adapter.find_note("1", "[helpdesk-connector decision 50]")
        await adapter.aclose()
        return before, found, prefix

    assert OtoboZnunyAdapter.note_in_update  # TicketUpdate takes the fields and the Article in one request
    assert run(go()) == (False, True, False)
    (note,) = otobo.notes(1)
    assert note.subject == "Automatic routing" and note.visible == 0
    update = otobo.calls("TicketUpdate")[0]
    assert "Ticket" not in update["body"] and update["body"]["Article"]["CommunicationChannel"] == "Internal"
    gets = otobo.calls("TicketGet")  # find_note: TicketGet of the ticket with its articles, newest first
    assert len(gets) == 3 and all("AllArticles=1" in g["query"] and "ArticleOrder=DESC" in g["query"] for g in gets)


def test_update_by_ids_and_note_only(otobo: OtoboStandin, make_adapter: Factory) -> None:
    otobo.add_ticket("a", "b")

    async def go() -> None:
        adapter = make_adapter()
        await adapter.update_ticket("1", TicketChange(queue=str(otobo.queues["Misc"]), priority="5"))
        await adapter.update_ticket("1", TicketChange(note="suggestion only"))
        await adapter.update_ticket("1", TicketChange())  # nothing to write: no call
        await adapter.aclose()

    run(go())
    first, second = otobo.calls("TicketUpdate")
    assert first["body"]["Ticket"] == {"QueueID": otobo.queues["Misc"], "PriorityID": 5}
    assert "Ticket" not in second["body"]
    assert (otobo.tickets[1].queue, otobo.tickets[1].priority) == ("Misc", "5 very high")
    assert len(otobo.notes(1)) == 1


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (TicketChange(queue="No Such Queue", note="x"), "Queue"),
        (TicketChange(priority="9 apocalyptic", note="x"), "Priority"),
    ],
)
def test_unknown_queue_or_priority_is_a_permanent_unknown_value(
    otobo: OtoboStandin, make_adapter: Factory, change: TicketChange, match: str
) -> None:
    otobo.add_ticket("a", "b")

    async def go() -> None:
        adapter = make_adapter()
        with pytest.raises(UnknownValueError, match=match) as info:
            await adapter.update_ticket("1", change)
        assert "TicketUpdate.InvalidParameter" in str(info.value)
        await adapter.aclose()

    run(go())
    assert len(otobo.calls("TicketUpdate")) == 1  # permanent: not retried
    assert otobo.notes(1) == []  # the system changed nothing, not even the note
    assert (otobo.tickets[1].queue, otobo.tickets[1].priority) == ("Raw", "3 normal")


@pytest.mark.parametrize(
    ("rights", "change", "message"),
    [
        ({"ro", "note", "priority", "move_into"}, TicketChange(queue="Billing"), "update queue"),
        ({"ro", "move_into", "priority"}, TicketChange(note="n"), "create new articles"),
        ({"ro", "note"}, TicketChange(priority="5 very high"), "update priority"),
    ],
)
def test_missing_rights_are_authentication_errors(
    otobo: OtoboStandin, make_adapter: Factory, rights: set[str], change: TicketChange, message: str
) -> None:
    otobo.add_ticket("a", "b")
    otobo.permissions["connector"] = {"Raw": rights}

    async def go() -> None:
        adapter = make_adapter()
        with pytest.raises(AuthenticationError, match=message) as info:
            await adapter.update_ticket("1", change)
        assert "rw" in str(info.value)  # the hint names the rights to grant
        await adapter.aclose()

    run(go())
    assert (otobo.tickets[1].queue, otobo.tickets[1].priority, otobo.notes(1)) == ("Raw", "3 normal", [])


def test_missing_move_into_on_the_target_queue_fails_that_ticket_with_a_hint(
    otobo: OtoboStandin, make_adapter: Factory
) -> None:
    otobo.add_ticket("a", "b")
    otobo.permissions["connector"] = {"Raw": {"rw"}, "Billing": {"ro"}}

    async def go() -> None:
        adapter = make_adapter()
        with pytest.raises(PermanentError) as info:
            await adapter.update_ticket("1", TicketChange(queue="Billing", priority="4 high", note="n"))
        assert not isinstance(info.value, (AuthenticationError, TransientError))  # this ticket only: the poll goes on
        assert "move_into" in str(info.value) and "'Billing'" in str(info.value)
        assert "Ticket queue could not be updated" in str(info.value)
        await adapter.aclose()

    run(go())
    assert len(otobo.calls("TicketUpdate")) == 1  # not retried
    assert (otobo.tickets[1].queue, otobo.tickets[1].priority, otobo.notes(1)) == ("Raw", "3 normal", [])


def test_other_http_500_faults_stay_transient(otobo: OtoboStandin, make_adapter: Factory) -> None:
    otobo.add_ticket("a", "b")

    async def go() -> None:
        adapter = make_adapter(retry_attempts=2)
        await adapter.check_connection()
        otobo.fail_next(2, status=500, body='{"faultcode":"Server","faultstring":"Internal Server Error"}')
        with pytest.raises(TransientError):
            await adapter.get_ticket("1")
        await adapter.aclose()

    run(go())


def test_rw_on_the_source_queue_is_enough(otobo: OtoboStandin, make_adapter: Factory) -> None:
    otobo.add_ticket("a", "b")
    otobo.permissions["connector"] = {"Raw": {"rw"}, "Billing": {"ro", "move_into"}}

    async def go() -> None:
        adapter = make_adapter()
        await adapter.update_ticket("1", TicketChange(queue="Billing", priority="4 high", note="n"))
        await adapter.aclose()

    run(go())
    assert otobo.tickets[1].queue == "Billing"


# --------------------------------------------------------------------------- transient and permanent failures


def test_429_with_retry_after_and_503_are_retried(otobo: OtoboStandin, make_adapter: Factory) -> None:
    otobo.add_ticket("a", "b")

    async def go() -> None:
        adapter = make_adapter()
        await adapter.check_connection()
        otobo.fail_next(1, status=429, retry_after=0)
        otobo.fail_next(1, status=503)
        ticket = await adapter.get_ticket("1")
        assert ticket.id == "1"
        await adapter.aclose()

    run(go())
    assert len(otobo.calls("TicketGet")) == 1  # the failures never reached an operation
    assert len([r for r in otobo.requests if r["path"].endswith("/Ticket/1")]) == 3


def test_generic_500_on_a_read_is_retried_then_transient(otobo: OtoboStandin, make_adapter: Factory) -> None:
    async def go() -> None:
        adapter = make_adapter(retry_attempts=3)
        otobo.fail_next(3, status=500, body="Internal Server Error")
        with pytest.raises(TransientError):
            await adapter.check_connection()
        await adapter.aclose()

    run(go())
    assert len(otobo.requests) == 3


def test_write_is_retried_only_when_surely_not_applied(otobo: OtoboStandin, make_adapter: Factory) -> None:
    otobo.add_ticket("a", "b")

    async def go() -> None:
        adapter = make_adapter()
        await adapter.check_connection()
        otobo.fail_next(1, status=429, retry_after=0)
        await adapter.update_ticket("1", TicketChange(note="first"))  # 429: not applied, retried
        otobo.fail_next(1, status=502, body="Bad Gateway")
        with pytest.raises(TransientError):
            await adapter.update_ticket("1", TicketChange(note="second"))  # may have been applied: no retry
        await adapter.aclose()

    run(go())
    patches = [r for r in otobo.requests if r["method"] == "PATCH"]
    assert len(patches) == 3  # 429 + retry, then the single 502
    assert [n.body for n in otobo.notes(1)] == ["first"]


def test_unknown_route_is_a_permanent_protocol_error(otobo: OtoboStandin, make_adapter: Factory) -> None:
    async def go() -> None:
        adapter = make_adapter(routes={"ticket_search": "/Tickets"})
        with pytest.raises(ProtocolError, match="RouteOperationMapping"):
            await adapter.check_connection()
        await adapter.aclose()

    run(go())
    unknown = [r for r in otobo.requests if r["path"].endswith("/Tickets")]
    assert len(unknown) == 1  # not retried


def test_standin_articles_carry_the_channel_id_only(otobo: OtoboStandin) -> None:
    import httpx

    otobo.add_ticket("a", "b")
    answer = httpx.patch(
        otobo.base_url + "/Ticket/1",
        json={"UserLogin": "connector", "Password": PASSWORD, "Article": {
            "CommunicationChannel": "Internal", "Subject": "s", "Body": "n", "ContentType": "text/plain; charset=utf8"}},
    ).json()
    assert set(answer) == {"TicketID", "TicketNumber", "ArticleID"}
    got = httpx.get(otobo.base_url + "/Ticket/1", params={"UserLogin": "connector", "Password": PASSWORD, "AllArticles": 1})
    articles = got.json()["Ticket"][0]["Article"]
    assert [a["CommunicationChannelID"] for a in articles] == [1, 3]  # email, then the internal note
    assert all("CommunicationChannel" not in a for a in articles)


def test_standin_sort_by_age_leaves_ties_unordered(otobo: OtoboStandin) -> None:
    import httpx

    stamp = otobo.now()
    for i in range(8):
        otobo.add_ticket(f"t{i}", "b", created=stamp)
    params = {"UserLogin": "connector", "Password": PASSWORD, "SortBy": "Age", "OrderBy": "Up"}
    orders = {tuple(httpx.get(otobo.base_url + "/Ticket", params=params).json()["TicketID"]) for _ in range(5)}
    assert len(orders) > 1  # one second, no second sort key: the order is not the ticket id


def test_unknown_route_answers_http_500_text(otobo: OtoboStandin) -> None:
    import httpx

    response = httpx.delete(otobo.base_url + "/Ticket/1")
    assert response.status_code == 500
    assert "Error while determine Operation" in response.text


def test_custom_routes_from_the_settings(make_adapter: Factory) -> None:
    routes = {
        "SessionCreate": (("POST",), "/Login"),
        "TicketGet": (("GET",), "/Tickets/:TicketID"),
        "TicketSearch": (("GET",), "/Tickets"),
        "TicketUpdate": (("PATCH",), "/Tickets/:TicketID"),
    }
    with OtoboStandin(product="otrs", users={"connector": PASSWORD}, routes=routes) as znuny:
        znuny.add_ticket("a", "b")

        async def go() -> None:
            adapter = OtoboZnunyAdapter(
                "znuny",
                OtoboZnunySettings(
                    base_url=znuny.base_url,
                    user_login="connector",
                    password=PASSWORD,  # type: ignore[arg-type]
                    routes={"session_create": "/Login", "ticket_search": "/Tickets", "ticket_get": "/Tickets/:TicketID", "ticket_update": "/Tickets/{TicketID}"},  # type: ignore[arg-type]
                ),
                source_queues=["Raw"],
                source_states=["new"],
            )
            ids, _ = await new_ids(adapter)
            assert ids == ["1"]
            await adapter.update_ticket("1", TicketChange(queue="Misc"))
            await adapter.aclose()

        run(go())
        assert "/otrs/nph-genericinterface.pl/" in znuny.base_url
        assert znuny.tickets[1].queue == "Misc"


def test_wrong_web_service_name_answers_an_empty_500(otobo: OtoboStandin) -> None:
    import httpx

    response = httpx.get(otobo.base_url.replace("HelpdeskConnector", "helpdeskconnector") + "/Ticket")
    assert (response.status_code, response.content) == (500, b"")


@pytest.mark.parametrize("auth", ["session", "per_request"])
def test_wrong_web_service_name_is_permanent_and_named(otobo: OtoboStandin, make_adapter: Factory, auth: str) -> None:
    wrong = otobo.base_url.replace("HelpdeskConnector", "helpdeskconnector")  # names are case-sensitive

    async def go() -> None:
        adapter = make_adapter(base_url=wrong, auth=auth)
        with pytest.raises(ProtocolError) as info:
            await adapter.check_connection()
        assert f"web service 'helpdeskconnector' not found at {wrong}" in str(info.value)
        await adapter.aclose()

    run(go())
    assert len(otobo.requests) == 1  # not retried


def test_empty_500_from_a_web_service_that_answered_before_is_transient(
    otobo: OtoboStandin, make_adapter: Factory
) -> None:
    async def go() -> None:
        adapter = make_adapter(retry_attempts=2)
        await adapter.check_connection()
        otobo.fail_next(2, status=500, body="")  # e.g. a crashed worker process
        with pytest.raises(TransientError):
            await adapter.check_connection()
        await adapter.check_connection()  # and it recovers
        await adapter.aclose()

    run(go())


def test_html_page_instead_of_json_is_a_protocol_error(otobo: OtoboStandin, make_adapter: Factory) -> None:
    async def go() -> None:
        adapter = make_adapter()
        otobo.fail_next(1, status=200, body="<html><body>Login</body></html>")
        with pytest.raises(ProtocolError, match="not JSON"):
            await adapter.check_connection()
        await adapter.aclose()

    run(go())


def test_other_operation_errors_are_permanent(otobo: OtoboStandin, make_adapter: Factory) -> None:
    otobo.add_ticket("a", "b")

    async def go() -> None:
        adapter = make_adapter()
        with pytest.raises(PermanentError, match="TicketUpdate.MissingParameter"):
            await adapter.update_ticket("1", TicketChange(note="   "))
        await adapter.aclose()

    run(go())


def test_system_down_then_back(otobo: OtoboStandin, make_adapter: Factory) -> None:
    otobo.add_ticket("a", "b")

    async def go() -> None:
        adapter = make_adapter(retry_attempts=2)
        await adapter.check_connection()
        otobo.down = True
        with pytest.raises(TransientError):
            await new_ids(adapter)
        otobo.down = False
        ids, _ = await new_ids(adapter)
        assert ids == ["1"]
        assert adapter.logins == 1  # the session outlived the outage
        await adapter.aclose()

    run(go())


def test_connection_refused_is_transient(make_adapter: Factory, otobo: OtoboStandin) -> None:
    otobo.stop()

    async def go() -> None:
        adapter = make_adapter(retry_attempts=2)
        with pytest.raises(TransientError, match="connect"):
            await adapter.check_connection()
        await adapter.aclose()

    run(go())


def test_server_process_down_then_back_on_the_same_port(otobo: OtoboStandin, make_adapter: Factory) -> None:
    otobo.add_ticket("a", "b")

    async def go() -> None:
        adapter = make_adapter(retry_attempts=2)
        await adapter.check_connection()
        otobo.stop()  # connection refused from now on
        with pytest.raises(TransientError, match="connect"):
            await adapter.get_ticket("1")
        otobo.start()  # same port, same data, same sessions
        assert (await adapter.get_ticket("1")).subject == "a"
        await adapter.aclose()

    run(go())


def test_concurrency_is_bounded(otobo: OtoboStandin, make_adapter: Factory) -> None:
    for i in range(12):
        otobo.add_ticket(f"t{i}", "b")

    async def go() -> None:
        adapter = make_adapter(max_concurrent_requests=2, get_batch_size=1)
        await adapter.check_connection()
        otobo.delay = 0.02
        ids, _ = await new_ids(adapter)
        assert len(ids) == 12
        await asyncio.gather(*(adapter.get_ticket(str(i)) for i in range(1, 13)))
        await adapter.aclose()

    run(go())
    assert otobo.max_in_flight == 2


# --------------------------------------------------------------------------- lists and resolved tickets


def test_queue_and_priority_lists(otobo: OtoboStandin, make_adapter: Factory, caplog: pytest.LogCaptureFixture) -> None:
    otobo.add_ticket("a", "b", queue="Support::Hardware", state="closed successful")
    otobo.add_ticket("c", "d", queue="Misc")
    otobo.add_ticket("e", "f", queue="Raw")
    otobo.advance(10)
    for i in range(3):
        otobo.add_ticket(f"recent {i}", "g", queue="Junk")

    async def go() -> None:
        configured = make_adapter(queues=["Raw", "Misc", "Support::Hardware"])
        assert await configured.list_queues() == ["Raw", "Misc", "Support::Hardware"]
        assert await configured.list_priorities() == list(DEFAULT_PRIORITIES)
        discovered = make_adapter(source_queues=["Raw", "Postmaster"])
        assert await discovered.list_queues() == ["Junk", "Misc", "Raw", "Support::Hardware"]
        # with a small discovery window, a source queue still counts once it holds a ticket;
        # an empty queue (Postmaster here) cannot be told from a missing one
        narrow = make_adapter(source_queues=["Raw", "Postmaster"], queue_discovery_limit=3)
        assert await narrow.list_queues() == ["Junk", "Raw"]
        for adapter in (configured, discovered, narrow):
            await adapter.aclose()

    run(go())
    assert "connection.queues is not set" in caplog.text


def test_check_config_online_uses_the_lists(otobo: OtoboStandin, tmp_path: Path) -> None:
    from connector.config import parse_config
    from connector.cli.daemon import online_problems

    def cfg(queue_map: dict[str, str], priority_map: dict[str, str]) -> Any:
        return parse_config(
            {
                "state_dir": str(tmp_path),
                "systems": {
                    "otobo": {
                        "type": "otobo",
                        "connection": {
                            "base_url": otobo.base_url,
                            "user_login": "connector",
                            "password": PASSWORD,
                            "queues": list(otobo.queues),
                        },
                        "source": {"queues": ["Raw"]},
                        "routing": {"queue": {"map": queue_map}, "priority": {"map": priority_map}},
                    }
                },
            }
        )

    good = cfg({"it": "Support::Hardware", "hr": "Misc"}, {"low": "2 low", "high": "4 high"})
    assert run(online_problems(good)) == []
    bad = cfg({"it": "Support::Hardwar"}, {"high": "4 urgent"})
    problems = [str(p) for p in run(online_problems(bad))]
    assert any("'Support::Hardwar' does not exist" in p for p in problems)
    assert any("'4 urgent' does not exist" in p for p in problems)
    otobo.users["connector"] = "changed"
    assert "AuthenticationError" in str(run(online_problems(good)))


def test_check_config_online_names_a_missing_web_service(otobo: OtoboStandin, tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from connector.cli import app

    wrong = otobo.base_url.replace("HelpdeskConnector", "HelpDeskConnector")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path),
        "systems": {"otobo": {
            "type": "otobo",
            "connection": {"base_url": wrong, "user_login": "connector", "password": PASSWORD, "queues": ["Raw"],
                           "retry_initial_wait": 0.01},
            "source": {"queues": ["Raw"]},
            "routing": {"queue": {"map": {"it": "Raw"}}},
        }},
    }), encoding="utf-8")
    result = CliRunner().invoke(app, ["check-config", "--online", str(path)])
    assert result.exit_code == 2
    assert f"web service 'HelpDeskConnector' not found at {wrong}" in result.output
    assert len(otobo.requests) == 1  # said at once, not after retries


def test_resolved_tickets_with_change_time_bound_and_cursor(otobo: OtoboStandin, make_adapter: Factory) -> None:
    old = otobo.add_ticket("old", "b", state="closed successful", queue="Billing")
    otobo.advance(3600)
    since = datetime.now(timezone.utc) + timedelta(seconds=1800)
    done = [otobo.add_ticket(f"done{i}", f"text {i}", state="closed successful", queue="Support", priority="4 high") for i in range(5)]
    otobo.add_ticket("still open", "b", state="open")
    otobo.add_ticket("failed", "b", state="closed unsuccessful", queue="Misc")

    async def go() -> tuple[list[str], str | None]:
        adapter = make_adapter(search_limit=3)
        pages = await collect(adapter.list_resolved_tickets(since, None, 2))
        tickets = [t for p in pages for t in p.tickets]
        assert str(old) not in [t.id for t in tickets]
        first = next(t for t in tickets if t.id == str(done[0]))
        assert (first.queue, first.priority, first.body) == ("Support", "4 high", "text 0")
        await adapter.aclose()
        return [t.id for t in tickets], pages[-1].cursor

    ids, cursor = run(go())
    assert sorted(ids, key=int) == [str(i) for i in done] + ["8"] and len(set(ids)) == len(ids)
    search = otobo.calls("TicketSearch")[0]["data"]
    assert search["StateType"] == "closed" and search["SortBy"] == "Changed"
    assert "TicketLastChangeTimeNewerDate" in search

    # a ticket reopened and closed again later comes back; nothing else does
    otobo.advance(60)
    otobo.human_update(done[1], state="open")
    otobo.advance(60)
    otobo.human_update(done[1], state="closed successful", queue="Billing")

    async def again() -> list[str]:
        adapter = make_adapter()
        pages = await collect(adapter.list_resolved_tickets(since, cursor, 10))
        await adapter.aclose()
        return [t.id for p in pages for t in p.tickets]

    assert run(again()) == [str(done[1])]
