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

from adapters.otobo_znuny import OtoboZnunyAdapter, OtoboZnunySettings
from tests.support.otobo_standin import OtoboStandin

BASE = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)


def stamp(offset: int) -> str:
    return (BASE + timedelta(seconds=offset)).strftime("%Y-%m-%d %H:%M:%S")


class _Helpdesk:
    """The stand-in and the tickets that arrive in it: which ones the daemon must see (``expected``)."""

    def __init__(self, other_states: list[bool], moved_later: list[bool]) -> None:
        self.standin = OtoboStandin(users={"u": "p"})
        self.standin.port = 1  # only for base_url; requests go through the ASGI transport
        self.other_states, self.moved_later = other_states, moved_later
        self.expected: list[int] = []
        self.elsewhere: list[int] = []  # created in another queue, moved into the source queue at the next run
        self.second = 0
        self.k = 0

    def move_elsewhere_in(self) -> None:
        for ticket_id in self.elsewhere:  # a person moves them into the source queue
            self.standin.move_into_queue(ticket_id, "Raw")
            self.expected.append(ticket_id)
        self.elsewhere.clear()

    def arrive(self, batch: list[int]) -> None:
        for gap in batch:  # tickets arrive between runs; gap 0 = same second as the previous one
            self.second += gap
            ticket_id = self.standin.add_ticket("t", "b", created=stamp(self.second))
            k = self.k
            if self.other_states[k % len(self.other_states)] and k % 5 == 4:
                self.standin.tickets[ticket_id].state = "open"  # not new: never listed
            elif self.moved_later[k % len(self.moved_later)] and k % 3 == 1:
                self.standin.tickets[ticket_id].queue = "Junk"  # not in the source queue yet
                self.elsewhere.append(ticket_id)
            else:
                self.expected.append(ticket_id)
            self.k += 1


class _Daemon:
    """The daemon as it is: it keeps its cursor between runs, drops the ids it decided already and reads the others."""

    def __init__(self, standin: OtoboStandin, search_limit: int, get_batch_size: int, page_size: int) -> None:
        self.standin = standin
        self.settings = OtoboZnunySettings(
            base_url=standin.base_url,
            user_login="u",
            password="p",  # type: ignore[arg-type]
            search_limit=search_limit,
            get_batch_size=get_batch_size,
        )
        self.page_size = page_size
        self.cursor: str | None = None
        self.handed: list[int] = []  # decided by the daemon (each once)
        self.read: list[int] = []  # handed out with their text (batched TicketGet)

    def run(self, pages: int) -> None:
        """One run that stops after ``pages`` pages (budget, shutdown); a listing that never ends fails."""
        self.cursor = asyncio.run(asyncio.wait_for(self._one_run(pages), 30))

    async def _one_run(self, pages: int) -> str | None:
        adapter = OtoboZnunyAdapter(
            "otobo", self.settings, source_queues=["Raw"], source_states=["new"],
            transport=httpx.ASGITransport(app=self.standin.app),
        )
        cursor, seen = self.cursor, 0
        async for page in adapter.list_new_tickets(cursor, self.page_size):
            self.read.extend(int(t.id) for t in page.tickets if t.body is not None)
            self.handed.extend(int(t.id) for t in page.tickets if int(t.id) not in self.handed)
            cursor = page.cursor or cursor
            seen += 1
            if seen >= pages:  # the daemon stops here and keeps this cursor
                break
        await adapter.aclose()
        return cursor


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
    helpdesk = _Helpdesk(other_states, moved_later)
    daemon = _Daemon(helpdesk.standin, search_limit, get_batch_size, page_size)
    for run_index, batch in enumerate(batches):
        helpdesk.move_elsewhere_in()
        helpdesk.arrive(batch)
        daemon.run(stop_after[run_index % len(stop_after)])
    # then the daemon runs until nothing is left
    for _ in range(len(helpdesk.expected) + 2):
        before = len(daemon.handed)
        daemon.run(10_000)
        if len(daemon.handed) == before:
            break
    helpdesk.move_elsewhere_in()  # moved in after the last arrivals
    daemon.run(10_000)
    assert sorted(daemon.handed) == sorted(helpdesk.expected)
    assert len(daemon.read) == len(set(daemon.read)), "a ticket was read twice"
