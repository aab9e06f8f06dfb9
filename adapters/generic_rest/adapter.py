"""The generic REST adapter: a helpdesk with a JSON REST API, described entirely by its settings."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import httpx

from adapters.base import AdapterSettings, PermanentError, ProtocolError, Ticket, TicketChange, TicketPage
from adapters.base import UnknownValueError
from adapters.common import parse_time
from adapters.generic_rest.paging import Position, next_position, paging_params
from adapters.generic_rest.paths import MISSING, get_path, json_text, parse_path
from adapters.generic_rest.settings import GenericRestSettings, ListRequest, RequestTemplate, ValueList
from adapters.generic_rest.templates import format_since, render_json, render_params, render_text, uses_placeholder
from adapters.http import HttpAdapter, decode_json

log = logging.getLogger(__name__)


class GenericRestAdapter(HttpAdapter):
    """A helpdesk with a JSON REST API, described entirely by :class:`GenericRestSettings`."""

    settings_model = GenericRestSettings
    settings: GenericRestSettings

    def __init__(self, name: str, settings: AdapterSettings | Mapping[str, Any], **options: Any) -> None:
        """``options``: those of :class:`HttpAdapter` (source queues and states, transport, retry)."""
        self._auth_params: dict[str, str] = {}
        super().__init__(name, settings, **options)
        s = self.settings
        f = s.fields
        self._p_id = parse_path(f.id)
        self._p_subject = parse_path(f.subject)
        self._p = {
            name: parse_path(path)
            for name, path in (
                ("body", f.body),
                ("queue", f.queue),
                ("priority", f.priority),
                ("state", f.state),
                ("created", f.created),
                ("updated", f.updated),
            )
            if path is not None
        }
        self._p_extra = {name: parse_path(path) for name, path in f.extra.items()}
        self._p_error = parse_path(s.error_path) if s.error_path is not None else None
        self.note_in_update = uses_placeholder(s.update.body, "note")

    def credentials(self, settings: GenericRestSettings) -> tuple[dict[str, str], tuple[str, str] | None]:
        headers = dict(settings.headers)
        auth: tuple[str, str] | None = None
        spec = settings.auth
        token = spec.token.get_secret_value() if spec.token else ""
        if spec.type == "bearer":
            headers["Authorization"] = f"Bearer {token}"
        elif spec.type == "header":
            headers[spec.header or "Authorization"] = f"{spec.prefix}{token}"
        elif spec.type == "basic":
            auth = (spec.username or "", spec.password.get_secret_value() if spec.password else "")
        elif spec.type == "query":
            self._auth_params[spec.param or "token"] = token
        return headers, auth

    # ------------------------------------------------------------------ helpers

    def _url(self, template: str, values: Mapping[str, Any]) -> str:
        return render_text(template, values, encode=True)

    def _params(self, template: Mapping[str, Any], values: Mapping[str, Any]) -> list[tuple[str, str]]:
        return render_params(template, values) + list(self._auth_params.items())

    async def _call(
        self,
        spec: RequestTemplate,
        values: Mapping[str, Any],
        *,
        extra_params: list[tuple[str, str]] | None = None,
        write: bool = False,
    ) -> Any:
        url = self._url(spec.path, values)
        kwargs: dict[str, Any] = {"params": self._params(spec.params, values) + (extra_params or [])}
        if spec.body is not None and spec.method != "GET":
            kwargs["json"] = render_json(spec.body, values)
        if spec.headers:
            kwargs["headers"] = {k: render_text(v, values) for k, v in spec.headers.items()}
        if write and (spec.method == "POST" or uses_placeholder(spec.body, "note")):
            response = await self.http.request_write(spec.method, url, **kwargs)
        else:
            response = await self.http.request(spec.method, url, **kwargs)
        data = self._decode(response)
        if self._p_error is not None:
            error = get_path(data, self._p_error)
            if error not in (None, "", [], {}, False):
                text = error if isinstance(error, str) else json.dumps(error, ensure_ascii=False)
                exc = PermanentError(
                    f"{spec.method} {url} answered HTTP {response.status_code} with an error at "
                    f"error_path={self.settings.error_path!r}: {text[:300]}",
                    system=self.name,
                )
                exc.status_code = response.status_code
                exc.response_text = text[:4000]
                exc.at_error_path = True  # type: ignore[attr-defined]
                raise exc
        return data

    def _decode(self, response: httpx.Response) -> Any:
        """The answer's JSON; invalid UTF-8 inside it (one bad ticket) is replaced, not fatal for the page."""
        try:
            return decode_json(response, self.name)
        except ProtocolError as exc:
            if not isinstance(exc.__cause__, UnicodeDecodeError):
                raise
            try:
                data = json.loads(response.content.decode("utf-8", errors="replace"))
            except json.JSONDecodeError:
                raise exc from None
            log.debug("%s: answer of %s held invalid UTF-8; decoded with replacement", self.name, response.request.url.path)
            return data

    def _protocol(self, message: str) -> ProtocolError:
        return ProtocolError(message, system=self.name)

    def _ticket(self, item: Any, where: str) -> Ticket:
        if not isinstance(item, dict):
            raise self._protocol(f"{where}: expected a JSON object for a ticket, got {type(item).__name__}")
        ticket_id = json_text(get_path(item, self._p_id))
        if not ticket_id:
            raise self._protocol(
                f"{where}: ticket has no id at fields.id={self.settings.fields.id!r} (keys: {', '.join(list(item)[:12])})"
            )
        p = self._p
        body = json_text(get_path(item, p["body"])) if "body" in p else None
        return Ticket(
            id=ticket_id,
            subject=json_text(get_path(item, self._p_subject)) or "",
            body=body,
            queue=json_text(get_path(item, p["queue"])) if "queue" in p else None,
            priority=json_text(get_path(item, p["priority"])) if "priority" in p else None,
            state=json_text(get_path(item, p["state"])) if "state" in p else None,
            created_at=parse_time(get_path(item, p["created"])) if "created" in p else None,
            updated_at=parse_time(get_path(item, p["updated"])) if "updated" in p else None,
            body_is_html=self.settings.fields.body_is_html,
            extra={name: get_path(item, path) for name, path in self._p_extra.items()},
        )

    def _items(self, data: Any, spec: ListRequest, where: str) -> list[Any]:
        items = get_path(data, parse_path(spec.items), MISSING)
        if items is MISSING or not isinstance(items, list):
            found = type(items).__name__ if items is not MISSING else "nothing"
            raise self._protocol(f"{where}: expected a list at items={spec.items!r}, found {found}")
        return items

    async def _pages(
        self,
        spec: ListRequest,
        values: dict[str, Any],
        filters: list[tuple[str, str]],
        page_size: int,
        where: str,
        start: Position | None = None,
        *,
        shrinking: bool = False,
    ) -> AsyncIterator[tuple[list[Ticket], Position | None]]:
        """Each page's tickets with the position of the next page (None after the last).

        ``shrinking``: the listing loses the tickets handed out (routed ones leave it)
        while it is read.  With ``page`` or ``offset`` paging, the later tickets then
        move forward by as many places; so after a page that brought tickets not seen
        before, the same page is asked again, and each page yields only tickets not
        seen before in this listing.  Nothing is skipped, whether tickets leave or not
        (a steady listing costs one more request per page).
        """
        paging = self.settings.paging
        position = start or Position(page=paging.first_page)
        seen: set[str] = set()
        for _ in range(paging.max_pages):
            params = list(filters)
            page_values = {
                **values,
                "size": page_size,
                "page": position.page,
                "offset": position.offset,
                "after": position.after,
                "cursor": position.token,
            }
            if paging.send == "query":
                params += paging_params(paging, position, page_size)
            data = await self._call(spec, page_values, extra_params=params)
            tickets = [self._ticket(item, where) for item in self._items(data, spec, where)]
            following = next_position(self.settings.paging, position, data, tickets, page_size)
            if shrinking:
                fresh = [t for t in tickets if t.id not in seen]
                seen.update(t.id for t in tickets)
                if fresh and following is not None and paging.style in ("page", "offset"):
                    following = position  # the same page again: handed-out tickets may have left it
                tickets = fresh
            yield tickets, following
            if following is None:
                return
            position = following
        log.warning("%s: %s stopped after paging.max_pages=%d pages", self.name, where, paging.max_pages)

    # ------------------------------------------------------------------ Adapter API

    async def list_new_tickets(self, cursor: str | None, page_size: int) -> AsyncIterator[TicketPage]:
        spec = self.settings.list_new
        since = parse_time(cursor) if cursor else None
        since_text = format_since(since, self.settings.time_format) if since else None
        filters: list[tuple[str, str]] = []
        if spec.queue_param:
            filters += [(spec.queue_param, q) for q in self.source_queues]
        if spec.state_param:
            filters += [(spec.state_param, s) for s in self.source_states]
        if spec.since_param and since_text:
            filters.append((spec.since_param, since_text))
        newest = since
        values = {
            "since": since_text,
            "queues": ",".join(self.source_queues) or None,
            "states": ",".join(self.source_states) or None,
        }
        async for tickets, _next in self._pages(spec, values, filters, page_size, "list_new", shrinking=True):
            for t in tickets:
                if t.updated_at is not None and (newest is None or t.updated_at > newest):
                    newest = t.updated_at
            yield TicketPage([t for t in tickets if self.is_candidate(t)])
        track = spec.since_param or uses_placeholder(spec.path, "since") or uses_placeholder(spec.params, "since")
        if track and newest is not None and newest != since:
            # the whole listing was handled: resume from the newest change seen
            yield TicketPage([], cursor=format_since(newest, "iso"))

    async def get_ticket(self, ticket_id: str) -> Ticket:
        spec = self.settings.get_ticket
        data = await self._call(spec, {"id": ticket_id})
        item = get_path(data, parse_path(spec.ticket), MISSING)
        if item is MISSING or item is None:
            raise self._protocol(f"get_ticket {ticket_id}: no ticket at ticket={spec.ticket!r} in the answer")
        return self._ticket(item, f"get_ticket {ticket_id}")

    async def update_ticket(self, ticket_id: str, change: TicketChange) -> None:
        """The ``update`` request (with the note where its body uses ``{note}``), else the note by :meth:`add_note`."""
        values = {
            "id": ticket_id,
            "queue": change.queue,
            "priority": change.priority,
            "note": change.note,
            "subject": change.note_subject if change.note is not None else None,
        }
        if change.queue is not None or change.priority is not None or (change.note and self.note_in_update):
            try:
                await self._call(self.settings.update, values, write=True)
            except PermanentError as exc:
                raise self._classify_write_error(exc, change) from exc
        if change.note is not None and not self.note_in_update:
            await self.add_note(ticket_id, change.note, change.note_subject)

    async def add_note(self, ticket_id: str, note: str, subject: str) -> None:
        """The note alone: the ``update`` request where its body takes ``{note}`` (no fields), else ``add_note``."""
        s = self.settings
        values = {"id": ticket_id, "queue": None, "priority": None, "note": note, "subject": subject}
        if self.note_in_update:
            await self._call(s.update, values, write=True)
        elif s.add_note is not None:
            await self._call(s.add_note, values, write=True)
        else:
            raise PermanentError(
                f"{self.name}: no request writes notes: set connection.add_note, use {{note}} in connection.update.body, "
                "or turn the note off (note.enabled: false)",
                system=self.name,
            )

    async def find_note(self, ticket_id: str, marker: str) -> bool:
        spec = self.settings.find_note
        if spec is None:
            raise PermanentError(
                f"{self.name}: connection.find_note is not configured: cannot tell whether the note was written",
                system=self.name,
            )
        data = await self._call(spec, {"id": ticket_id})
        items = get_path(data, parse_path(spec.items), MISSING)
        if not isinstance(items, list):
            raise self._protocol(f"find_note {ticket_id}: expected a list at items={spec.items!r}")
        text = parse_path(spec.text)
        return any(marker in str(get_path(item, text) or "") for item in items)

    def _classify_write_error(self, exc: PermanentError, change: TicketChange) -> PermanentError:
        status = getattr(exc, "status_code", None)
        text = getattr(exc, "response_text", "") or ""
        spec = self.settings.update
        pattern_ok = spec.unknown_value_pattern is None or re.search(spec.unknown_value_pattern, text) is not None
        if getattr(exc, "at_error_path", False):
            # an error reported in the answer's body: unknown value only when the pattern says so
            is_unknown = spec.unknown_value_pattern is not None and pattern_ok
        else:
            is_unknown = status in spec.unknown_value_status and pattern_ok
        if is_unknown:
            wanted = ", ".join(
                f"{k} {v!r}" for k, v in (("queue", change.queue), ("priority", change.priority)) if v is not None
            )
            return UnknownValueError(f"the helpdesk refused {wanted} as unknown: {exc}", system=self.name)
        return exc

    async def list_resolved_tickets(
        self, since: datetime | None, cursor: str | None, page_size: int
    ) -> AsyncIterator[TicketPage]:
        spec = self.settings.list_resolved
        if spec is None:
            raise PermanentError(
                f"{self.name}: connection.list_resolved is not configured; this system cannot list resolved tickets",
                system=self.name,
            )
        since_text = format_since(since, self.settings.time_format) if since else None
        filters: list[tuple[str, str]] = []
        if spec.since_param and since_text:
            filters.append((spec.since_param, since_text))
        start: Position | None = None
        if cursor:
            try:
                start = Position.load(cursor)
            except (ValueError, TypeError):
                log.warning("%s: unreadable resolved-listing cursor, listing from the start", self.name)
        pages = self._pages(spec, {"since": since_text}, filters, page_size, "list_resolved", start)
        async for tickets, following in pages:
            if spec.fetch_missing_body and self.settings.fields.body is not None:
                tickets = [t if t.body is not None else await self.get_ticket(t.id) for t in tickets]
            yield TicketPage(tickets, cursor=following.dump() if following is not None else None)

    async def _value_list(self, spec: ValueList, what: str) -> list[str]:
        if spec.values is not None:
            return list(spec.values)
        assert spec.path is not None
        data = await self._call(RequestTemplate(path=spec.path, params=spec.params), {})
        items = get_path(data, parse_path(spec.items), MISSING)
        if not isinstance(items, list):
            raise self._protocol(f"{what}: expected a list at items={spec.items!r}")
        name_path = parse_path(spec.name)
        names = [json_text(get_path(item, name_path)) for item in items]
        return [n for n in names if n]

    async def list_queues(self) -> list[str]:
        return await self._value_list(self.settings.queues, "queues")

    async def list_priorities(self) -> list[str]:
        return await self._value_list(self.settings.priorities, "priorities")

    async def check_connection(self) -> None:
        spec = self.settings.queues
        if spec.values is None:
            await self.list_queues()
        else:  # nothing to list: read one page of the new-ticket listing instead
            async for _ in self.list_new_tickets(None, 1):
                break



__all__ = ["GenericRestAdapter"]
