"""The pieces every adapter shares: one time parser, one body cache, one HTTP adapter base."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from adapters import common, generic_rest, request_tracker, zammad
from adapters.common import BodyCache, parse_time
from adapters.http import HttpAdapter
from adapters.otobo_znuny import OtoboZnunyAdapter
from adapters.registry import ADAPTER_TYPES, adapter_class
from adapters.request_tracker import RequestTrackerAdapter, parse_rt_date
from adapters.zammad import ZammadAdapter

WHEN = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    ["2024-05-01T10:00:00Z", "2024-05-01T12:00:00+02:00", "2024-05-01 10:00:00", "2024-05-01 10:00:00 UTC",
     "2024-05-01T10:00:00.000Z", 1714557600, 1714557600000, "1714557600"],
)
def test_one_parser_reads_every_helpdesk_form(value: object) -> None:
    assert parse_time(value) == WHEN


def test_a_time_without_zone_is_in_the_system_zone() -> None:
    assert parse_time("2024-05-01 12:00:00", ZoneInfo("Europe/Berlin")) == WHEN


@pytest.mark.parametrize("junk", [None, "", "yesterday", True, [], {}])
def test_unreadable_times_are_none(junk: object) -> None:
    assert parse_time(junk) is None


def test_every_adapter_uses_the_one_parser() -> None:
    assert zammad.parse_time is common.parse_time
    assert generic_rest.parse_time is common.parse_time
    assert request_tracker.parse_time is common.parse_time
    assert parse_rt_date("1970-01-01T00:00:00Z") is None  # RT's "not set"
    assert parse_rt_date("2024-05-01T10:00:00Z") == WHEN


def test_body_cache_keeps_the_most_recently_used() -> None:
    cache = BodyCache(2)
    cache.put(1, ("one", False))
    cache.put(2, ("two", True))
    assert cache.get(1) == ("one", False)  # 1 is now the most recent
    cache.put(3, ("three", False))
    assert cache.get(2) is None and cache.get(1) == ("one", False) and cache.get(3) == ("three", False)
    assert len(cache) == 2
    empty = BodyCache(0)
    empty.put(1, ("one", False))
    assert empty.get(1) is None


def test_adapters_share_the_body_cache_and_the_http_base() -> None:
    rt = RequestTrackerAdapter("rt", {"base_url": "http://rt.example", "token": "t"}, source_queues=[], source_states=[])
    zd = ZammadAdapter("z", {"base_url": "http://z.example", "token": "t"}, source_queues=[], source_states=[])
    assert isinstance(rt._bodies, BodyCache) and isinstance(zd._bodies, BodyCache)
    for type_name in ADAPTER_TYPES:
        assert issubclass(adapter_class(type_name), HttpAdapter)
    assert OtoboZnunyAdapter.transport_class is not None
