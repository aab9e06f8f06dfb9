"""Paging of listings: page numbers, offsets, "after the last id" and server cursors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from adapters.base import Ticket
from adapters.generic_rest.paths import get_path, json_text, parse_path
from adapters.generic_rest.settings import PagingSettings

@dataclass(frozen=True, slots=True)
class Position:
    """Where the next page of a listing starts, in every paging style (serialised as a resumable cursor)."""

    page: int
    offset: int = 0
    after: str | None = None
    token: str | None = None

    def dump(self) -> str:
        return json.dumps({"page": self.page, "offset": self.offset, "after": self.after, "token": self.token})

    @classmethod
    def load(cls, text: str) -> Position:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("page"), int):
            raise ValueError("not a paging position")
        return cls(int(data["page"]), int(data.get("offset") or 0), data.get("after"), data.get("token"))


def paging_params(paging: PagingSettings, position: Position, page_size: int) -> list[tuple[str, str]]:
    """The query parameters that ask for the page at ``position``."""
    if paging.style == "none":
        return []
    params = [(paging.size_param, str(page_size))] if paging.size_param else []
    if paging.style == "page":
        params.append((paging.page_param, str(position.page)))
    elif paging.style == "offset":
        params.append((paging.offset_param, str(position.offset)))
    elif paging.style == "after" and position.after is not None:
        params.append((paging.after_param, position.after))
    elif paging.style == "cursor" and position.token is not None:
        params.append((paging.cursor_param, position.token))
    return params


def next_position(
    paging: PagingSettings, position: Position, data: Any, tickets: list[Ticket], page_size: int
) -> Position | None:
    """Where the page after ``tickets`` (decoded answer ``data``) starts; None when there is none."""
    if not tickets or paging.style == "none":
        return None
    seen = position.offset + len(tickets)
    if paging.has_more_path is not None:
        if not get_path(data, parse_path(paging.has_more_path)):
            return None
    elif paging.total_path is not None:
        total = get_path(data, parse_path(paging.total_path))
        if isinstance(total, int | float) and not isinstance(total, bool) and seen >= total:
            return None
    elif paging.style != "cursor" and len(tickets) < page_size:
        return None
    token = None
    if paging.style == "cursor":
        token = json_text(get_path(data, parse_path(paging.next_cursor_path or "")))
        if not token or token == position.token:
            return None
    return Position(page=position.page + 1, offset=seen, after=tickets[-1].id, token=token)
