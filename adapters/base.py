"""The one small interface every ticket-system adapter implements.

An adapter turns one helpdesk's API into :class:`Ticket` values and a handful
of operations.  It never decides anything: listing, reading and writing only.
Errors are typed so callers can tell "try again later" (:class:`TransientError`)
from "fix the configuration" (:class:`PermanentError`).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator


# --------------------------------------------------------------------------- errors


class AdapterError(Exception):
    """Base class of every error an adapter raises.

    Errors raised for an HTTP answer carry its ``status_code`` and the start of
    its text (``response_text``), so adapters can look closer at what the
    system said.
    """

    def __init__(self, message: str, *, system: str | None = None) -> None:
        super().__init__(message)
        self.system = system
        self.status_code: int | None = None
        self.response_text: str | None = None


class TransientError(AdapterError):
    """The helpdesk is unavailable right now (connection refused, timeout, 5xx, 429).

    Retried with backoff; the same call may succeed later.  ``not_applied`` is
    true when the request surely did not take effect (no connection, or an
    answer such as 429 that says it was refused), so even a write that must
    not happen twice may be sent again.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        system: str | None = None,
        not_applied: bool = False,
    ) -> None:
        super().__init__(message, system=system)
        self.retry_after = retry_after
        self.not_applied = not_applied


class PermanentError(AdapterError):
    """Retrying will not help: the configuration or the request must change."""


class AuthenticationError(PermanentError):
    """Credentials were rejected (401) or lack a right (403)."""


class NotFoundError(PermanentError):
    """The ticket (or another object) does not exist."""


class UnknownValueError(PermanentError):
    """A queue, group or priority named in the mapping does not exist in the system."""


class ProtocolError(PermanentError):
    """The helpdesk answered something that is not what its API documents (HTML page, bad JSON)."""


class EndpointNotFoundError(ProtocolError):
    """The configured address leads to no API of the helpdesk (wrong URL, web service name or route).

    Only a change of the configuration helps: the daemon stops polling a
    system whose first poll fails with it, instead of retrying for ever.
    """


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Ticket:
    """A ticket as the daemon sees it, whatever system it comes from.

    ``body`` is ``None`` when the listing call did not include it; the pipeline
    then calls :meth:`Adapter.get_ticket` for the full ticket.
    """

    id: str
    subject: str
    body: str | None
    queue: str | None
    priority: str | None
    state: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    body_is_html: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class TicketPage:
    """One page of a listing, and the cursor to resume after it (``None``: keep the old one)."""

    tickets: list[Ticket]
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class TicketChange:
    """What to write to one ticket.  ``None`` fields are left untouched."""

    queue: str | None = None
    priority: str | None = None
    note: str | None = None
    note_subject: str = "helpdesk-connector"

    @property
    def is_empty(self) -> bool:
        return self.queue is None and self.priority is None and self.note is None


# --------------------------------------------------------------------------- settings


class AdapterSettings(BaseModel):
    """Base of every adapter's ``connection`` settings; unknown keys are errors.

    Any secret field ``X`` may instead be given as ``X_file``: a path whose
    content (stripped) becomes the value, as with Docker or systemd credentials.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in [k for k in data if isinstance(k, str) and k.endswith("_file")]:
            target = key[: -len("_file")]
            if target not in cls.model_fields or data[key] is None:
                continue
            path = Path(str(data.pop(key))).expanduser()
            try:
                data[target] = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"{key}: cannot read secret file {path}: {exc.strerror or exc}") from exc
        return data


# --------------------------------------------------------------------------- interface


class Adapter(abc.ABC):
    """A connection to one ticket system.

    ``source_queues`` and ``source_states`` say which tickets count as new.
    Implementations use one :class:`adapters.http.HttpTransport` so retries,
    timeouts and error mapping behave the same for every system.
    """

    #: the pydantic model of this adapter's ``connection`` settings
    settings_model: ClassVar[type[AdapterSettings]]
    #: whether :meth:`update_ticket` writes the fields and the note in ONE request (applied together);
    #: false: the note is a second request (:meth:`add_note`).  An instance may set it from its settings.
    note_in_update: bool = False

    def __init__(
        self,
        name: str,
        settings: AdapterSettings,
        *,
        source_queues: list[str],
        source_states: list[str],
    ) -> None:
        self.name = name
        self.settings = settings
        self.source_queues = list(source_queues)
        self.source_states = list(source_states)

    @abc.abstractmethod
    def list_new_tickets(self, cursor: str | None, page_size: int) -> AsyncIterator[TicketPage]:
        """Yield pages of tickets that count as new (in a source queue and state)."""

    @abc.abstractmethod
    async def get_ticket(self, ticket_id: str) -> Ticket:
        """Read one ticket with its body (the first customer message)."""

    @abc.abstractmethod
    async def update_ticket(self, ticket_id: str, change: TicketChange) -> None:
        """Set queue/priority and add ``change.note``; raise if the system refused any of it.

        Where :attr:`note_in_update` is true the fields and the note go in one
        request (the system applies both or neither); elsewhere the note follows
        as a separate :meth:`add_note` request.  The pipeline passes a note here
        only to one-request adapters.
        """

    @abc.abstractmethod
    async def add_note(self, ticket_id: str, note: str, subject: str) -> None:
        """Add ``note`` as an internal note (one request, sent once: a note is not idempotent).

        Retrying is the caller's job, which looks for the note with
        :meth:`find_note` before sending it again after an unclear failure.
        """

    @abc.abstractmethod
    async def find_note(self, ticket_id: str, marker: str) -> bool:
        """Whether the ticket's notes (history, articles) hold one containing ``marker``.

        Used by reconciliation only (never on the normal path), to write a note
        that may or may not have been sent exactly once.
        """

    @abc.abstractmethod
    def list_resolved_tickets(self, since: datetime | None, cursor: str | None, page_size: int) -> AsyncIterator[TicketPage]:
        """Yield pages of tickets resolved/closed after ``since``, with body and final labels."""

    @abc.abstractmethod
    async def list_queues(self) -> list[str]:
        """Names of every queue (group) the daemon's user can see."""

    @abc.abstractmethod
    async def list_priorities(self) -> list[str]:
        """Names (or numbers, as text) of every priority the system accepts."""

    async def check_connection(self) -> None:
        """Log in / make one cheap authenticated call; raise an AdapterError on failure."""
        await self.list_queues()

    def is_candidate(self, ticket: Ticket) -> bool:
        """Whether ``ticket`` (re-read just before writing) still counts as new."""
        if self.source_queues and ticket.queue not in self.source_queues:
            return False
        if self.source_states and ticket.state is not None and ticket.state not in self.source_states:
            return False
        return True

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
