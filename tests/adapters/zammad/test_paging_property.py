"""Property: whatever the order in which the lagging index shows tickets, every new ticket is handed out once.

The daemon is modelled as it is: a ticket it suggested for (a note: the ticket is updated and stays) may come
again as a bare ticket (no body), which the daemon drops as decided without reading it.

The adapter talks to the stand-in's ASGI app in-process (no server), so many random histories run fast.
"""

from __future__ import annotations

import asyncio

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.base import TicketChange
from adapters.http import RetryPolicy
from adapters.zammad import ZammadAdapter, ZammadSettings
from tests.support.zammad_standin import ZammadStandin

LAG_ALLOWANCE = 60.0

ticket_strategy = st.tuples(
    st.floats(min_value=0, max_value=20),            # seconds after the previous ticket
    st.floats(min_value=0, max_value=LAG_ALLOWANCE),  # how long the index takes to show it
    st.booleans(),                                     # routed away (apply) or a note only (suggest)
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tickets=st.lists(ticket_strategy, min_size=1, max_size=14),
    poll_gaps=st.lists(st.floats(min_value=0.5, max_value=30), min_size=1, max_size=8),
    page_size=st.integers(min_value=1, max_value=4),
    stop_after_pages=st.integers(min_value=1, max_value=3),
    listing=st.sampled_from(["search", "list"]),
    routed_become_invisible=st.booleans(),
)
def test_every_ticket_handed_out_exactly_once(
    tickets: list[tuple[float, float, bool]], poll_gaps: list[float], page_size: int, stop_after_pages: int,
    listing: str, routed_become_invisible: bool,
) -> None:
    standin = ZammadStandin(index_lag=0)
    if routed_become_invisible:  # the agent cannot read the target group: routed tickets leave every listing
        standin.agent.group_ids.discard(standin.group_id("Sales"))
    settings_ = ZammadSettings.model_validate(
        {"base_url": "http://zammad.test", "token": "agent-token", "search_index_lag": LAG_ALLOWANCE, "listing": listing}
    )
    handed: list[int] = []
    routed_away: dict[int, bool] = {}

    async def poll(cursor: str | None, max_pages: int) -> str | None:
        adapter = ZammadAdapter("z", settings_, source_queues=["Incoming"], source_states=["new"],
                                transport=httpx.ASGITransport(app=standin.app),
                                retry=RetryPolicy(attempts=1))
        try:
            pages = adapter.list_new_tickets(cursor, page_size)
            done = 0
            async for page in pages:
                for ticket in page.tickets:
                    if ticket.body is None and int(ticket.id) in handed:
                        continue  # decided before: the daemon drops it unread
                    handed.append(int(ticket.id))
                    if routed_away[int(ticket.id)]:
                        await adapter.update_ticket(ticket.id, TicketChange(queue="Sales", note="routed"))
                    else:
                        await adapter.update_ticket(ticket.id, TicketChange(note="suggested"))
                cursor = page.cursor if page.cursor is not None else cursor  # committed after the page
                done += 1
                if done >= max_pages:  # the daemon stops early (max_tickets_per_poll, shutdown)
                    break
            await pages.aclose()
        finally:
            await adapter.aclose()
        return cursor

    async def history() -> None:
        cursor: str | None = None
        gaps = iter(poll_gaps)
        for gap, index_delay, routed in tickets:
            standin.advance(gap)
            tid = standin.create_ticket(f"T at +{gap:.1f}", "body")
            routed_away[tid] = routed
            created, doc = standin._index[tid][0]
            standin._index[tid][0] = (created + index_delay, doc)  # shown by the index only later
            gap_to_poll = next(gaps, None)
            if gap_to_poll is not None:
                standin.advance(gap_to_poll)
                cursor = await poll(cursor, stop_after_pages)
        # long after the last ticket: the index has caught up; poll until nothing more comes
        standin.advance(LAG_ALLOWANCE + 1)
        for _ in range(len(tickets) + 2):
            cursor = await poll(cursor, 10_000)

    asyncio.run(history())
    assert sorted(handed) == sorted(routed_away), (handed, routed_away)
