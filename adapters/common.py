"""Small pieces every adapter shares: the one helpdesk time parser and the one cache of ticket bodies."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from datetime import UTC, datetime, tzinfo
from typing import Any

#: (text, is_html) of a ticket's first customer message
Body = tuple[str, bool]


def parse_time(value: Any, zone: tzinfo = UTC) -> datetime | None:
    """A helpdesk timestamp as an aware UTC datetime; None when absent or unreadable.

    Reads ISO 8601 text (``2024-05-01T10:00:00Z``, ``2024-05-01 10:00:00``, ``.. UTC``),
    and epoch seconds or milliseconds (numbers, or numeric text).  A time without a
    zone is in ``zone`` (the system's time zone; UTC by default).
    """
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (ValueError, OverflowError, OSError):
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return parse_time(number)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" UTC", "+00:00"))
    except ValueError:
        return None
    return when.replace(tzinfo=zone).astimezone(UTC) if when.tzinfo is None else when.astimezone(UTC)


class BodyCache:
    """The bodies of the last ``size`` tickets read (least recently used go first); ``size`` 0 keeps none.

    A ticket's first customer message does not change, so the re-read just before
    a write costs one call instead of two.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Hashable, Body] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable) -> Body | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Body) -> None:
        if self.size <= 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)
