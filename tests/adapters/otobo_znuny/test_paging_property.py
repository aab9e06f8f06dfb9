"""Property: keyset paging over TicketSearch (ids only, no offset) hands out every new ticket, and reads each once.

Whatever the creation times (many tickets in one second included), the search limit, the page and batch
sizes, and wherever the daemon stops and resumes from its stored cursor, with tickets arriving in between
and older tickets moved into the source queue in between.  The daemon is modelled as it is: it drops the
ids it decided already (bare ids of older candidates come again each poll) and reads the others.
The stand-in runs in-process through httpx's ASGI transport (no server thread) to keep this fast.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


from tests.support.otobo_standin import OtoboStandin

from adapters.otobo_znuny import OtoboZnunyAdapter, OtoboZnunySettings

BASE = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)


def stamp(offset: int) -> str:
    return (BASE + timedelta(seconds=offset)).strftime("%Y-%m-%d %H:%M:%S")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(st.lists(st.integers(0, 3), min_size=0, max_size=12), min_size=1, max_size=4),
    search_limit=st.integers(1, 6),
    page_size=st.integers(1, 5),
    get_batch_size=st.integers(1, 4),
    stop_after=st.lists(st.integers(1, 4), min_size=4, max_size=4),
    other_states=st.lists(st.booleans(), min_size=40, max_size=40),
    moved_later=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_every_candidate_handed_out_and_read_once_across_restarts(
    batches: list[list[int]],
    search_limit: int,
    page_size: int,
    get_batch_size: int,
    stop_after: list[int],
    other_states: list[bool],
    moved_later: list[bool],
) -> None:
    standin = OtoboStandin(users={"u": "p"})
    standin.port = 1  # only for base_url; requests go through the ASGI transport
    expected: list[int] = []
    handed: list[int] = []  # decided by the daemon (each once)
    read: list[int] = []  # handed out with their text (batched TicketGet)
    elsewhere: list[int] = []  # created in another queue, moved into the source queue at the next run
    cursor: str | None = None
    second = 0

    async def one_run(cursor: str | None, pages: int) -> str | None:
        adapter = OtoboZnunyAdapter(
            "otobo",
            OtoboZnunySettings(
                base_url=standin.base_url,
                user_login="u",
                password="p",  # type: ignore[arg-type]
                search_limit=search_limit,
                get_batch_size=get_batch_size,
            ),
            source_queues=["Raw"],
            source_states=["new"],
            transport=httpx.ASGITransport(app=standin.app),
        )
        seen = 0
        async for page in adapter.list_new_tickets(cursor, page_size):
            read.extend(int(t.id) for t in page.tickets if t.body is not None)
            handed.extend(int(t.id) for t in page.tickets if int(t.id) not in handed)
            cursor = page.cursor or cursor
            seen += 1
            if seen >= pages:  # the daemon stops here (budget, shutdown) and keeps this cursor
                break
        await adapter.aclose()
        return cursor

    k = 0
    for run_index, batch in enumerate(batches):
        for ticket_id in elsewhere:  # a person moves them into the source queue
            standin.move_into_queue(ticket_id, "Raw")
            expected.append(ticket_id)
        elsewhere.clear()
        for gap in batch:  # tickets arrive between runs; gap 0 = same second as the previous one
            second += gap
            ticket_id = standin.add_ticket("t", "b", created=stamp(second))
            if other_states[k % len(other_states)] and k % 5 == 4:
                standin.tickets[ticket_id].state = "open"  # not new: never listed
            elif moved_later[k % len(moved_later)] and k % 3 == 1:
                standin.tickets[ticket_id].queue = "Junk"  # not in the source queue yet
                elsewhere.append(ticket_id)
            else:
                expected.append(ticket_id)
            k += 1
        cursor = asyncio.run(asyncio.wait_for(one_run(cursor, stop_after[run_index % len(stop_after)]), 30))
    # then the daemon runs until nothing is left
    for _ in range(len(expected) + 2):
        before = len(handed)
        cursor = asyncio.run(asyncio.wait_for(one_run(cursor, 10_000), 30))  # a listing that never ends fails
        if len(handed) == before:
            break
    for ticket_id in elsewhere:  # moved in after the last arrivals
        standin.move_into_queue(ticket_id, "Raw")
        expected.append(ticket_id)
    cursor = asyncio.run(asyncio.wait_for(one_run(cursor, 10_000), 30))
    assert sorted(handed) == sorted(expected)
    assert len(read) == len(set(read)), "a ticket was read twice"
