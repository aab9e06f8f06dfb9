"""HTTP transport shared by every adapter: timeouts, typed errors, retries with backoff.

One place decides what is transient (connection errors, timeouts, 5xx, 429)
and what is permanent (other 4xx, answers that are not JSON), so every adapter
behaves the same when its helpdesk is down.  Retries use tenacity with
exponential backoff and jitter and honour ``Retry-After``.  Retries are logged
at DEBUG only: the pipeline logs the transition to failing once.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import httpx
from pydantic import Field, field_validator, model_validator
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential_jitter

from adapters.base import (
    Adapter,
    AdapterError,
    AdapterSettings,
    AuthenticationError,
    NotFoundError,
    PermanentError,
    ProtocolError,
    TransientError,
)

log = logging.getLogger(__name__)

USER_AGENT = "helpdesk-connector"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry transient failures of one call."""

    attempts: int = 4
    initial_wait: float = 0.5
    max_wait: float = 30.0
    max_retry_after: float = 120.0


class HttpSettings(AdapterSettings):
    """The connection settings every HTTP adapter shares, under one name each.

    A subclass lists the names it used before in ``renamed_keys`` (old -> new):
    they are still accepted, and :func:`renamed_keys_in` tells the
    configuration loader which ones a configuration uses, so it can warn.
    """

    #: old key of this adapter's ``connection`` -> the common key it stands for
    renamed_keys: ClassVar[Mapping[str, str]] = {}

    #: the system's address (http:// or https://)
    base_url: str
    #: seconds one request may take
    timeout: float = Field(30.0, gt=0)
    #: verify TLS certificates; or the path of a CA bundle
    verify_tls: bool | str = True
    #: requests in flight at most towards this system (listing, reading bodies, writing)
    max_concurrent_requests: int = Field(4, ge=1, le=64)
    #: attempts per call for transient failures (connection errors, timeouts, 429, 5xx)
    retry_attempts: int = Field(4, ge=1, le=20)
    #: first wait between attempts (seconds; grows exponentially, with jitter)
    retry_initial_wait: float = Field(0.5, ge=0)
    #: longest wait between attempts (seconds)
    retry_max_wait: float = Field(30.0, ge=0)
    #: longest Retry-After honoured (seconds)
    max_retry_after: float = Field(120.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _accept_renamed_keys(cls, data: Any) -> Any:
        used = renamed_keys_in(cls, data)
        if not used:
            return data
        data = dict(data)
        for old, new in used:
            if new in data:
                raise ValueError(f"{old} is the old name of {new}; give only {new}")
            data[new] = data.pop(old)
        return data

    @field_validator("base_url", mode="before")
    @classmethod
    def _http_url(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        value = value.strip()
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.retry_attempts,
            initial_wait=self.retry_initial_wait,
            max_wait=self.retry_max_wait,
            max_retry_after=self.max_retry_after,
        )


def renamed_keys_in(model: type[AdapterSettings], data: Any) -> list[tuple[str, str]]:
    """(old, new) for each old key name that the raw ``connection`` mapping ``data`` uses."""
    renamed: Mapping[str, str] = getattr(model, "renamed_keys", {})
    if not isinstance(data, Mapping):
        return []
    return [(old, new) for old, new in renamed.items() if old in data]


class WaitRetryAfter(wait_base):
    """Wait what the server asked for in Retry-After, else exponential backoff with jitter."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._fallback = wait_exponential_jitter(initial=policy.initial_wait, max=policy.max_wait)
        self._cap = policy.max_retry_after

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), self._cap)
        return self._fallback(retry_state)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def error_for_status(response: httpx.Response, system: str | None = None) -> None:
    """Raise the typed error for a non-2xx response; return for 2xx."""
    status = response.status_code
    if status < 400:
        return
    detail = _short(response.text) if response.content else ""
    where = f"{response.request.method} {response.request.url.copy_with(query=None)}"
    message = f"{where} answered HTTP {status}" + (f": {detail}" if detail else "")
    if status == 429 or status >= 500 or status == 408:
        raise TransientError(message, retry_after=parse_retry_after(response.headers.get("Retry-After")), system=system)
    if status in (401, 403):
        raise AuthenticationError(message, system=system)
    if status == 404:
        raise NotFoundError(message, system=system)
    raise PermanentError(message, system=system)


def decode_json(response: httpx.Response, system: str | None = None) -> Any:
    """The JSON body of a response, or a ProtocolError naming what came instead."""
    if not response.content:
        return None
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        ctype = response.headers.get("Content-Type", "?")
        raise ProtocolError(
            f"{response.request.method} {response.request.url.copy_with(query=None)} answered "
            f"{ctype} that is not JSON ({exc.__class__.__name__}): {_short(response.text, 120)}",
            system=system,
        ) from exc


class HttpTransport:
    """An httpx.AsyncClient with the project's error mapping and retry policy."""

    def __init__(
        self,
        base_url: str,
        *,
        system: str | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        timeout: float = 30.0,
        verify: bool | str = True,
        retry: RetryPolicy | None = None,
        max_connections: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.system = system
        self.retry = retry or RetryPolicy()
        all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        all_headers.update(headers or {})
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers=all_headers,
            auth=auth,
            timeout=httpx.Timeout(timeout),
            verify=verify,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
            follow_redirects=False,
        )
        self.calls = 0

    @classmethod
    def from_settings(
        cls,
        settings: HttpSettings,
        *,
        system: str | None,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        verify: bool | str | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Self:
        """The transport of one system from its common settings (``url``, ``verify``, ``retry`` override them)."""
        return cls(
            url or str(settings.base_url),
            system=system,
            headers=headers,
            auth=auth,
            timeout=settings.timeout,
            verify=settings.verify_tls if verify is None else verify,
            retry=retry or settings.retry_policy(),
            max_connections=settings.max_concurrent_requests,
            transport=transport,
        )

    #: answers that prove a request was refused before it took effect (a write may be sent again)
    not_applied_statuses: frozenset[int] = frozenset({429, 503})

    def raise_for_response(self, response: httpx.Response) -> None:
        """Raise the typed error for an answer with status >= 400; systems with their own error forms override it."""
        error_for_status(response, self.system)

    async def _send_once(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        self.calls += 1
        try:
            response = await self.client.request(method, url, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise TransientError(
                f"{method} {url}: cannot connect ({exc.__class__.__name__}: {exc})", system=self.system, not_applied=True
            ) from exc
        except httpx.TimeoutException as exc:
            raise TransientError(f"{method} {url}: timed out ({exc.__class__.__name__})", system=self.system) from exc
        except httpx.TransportError as exc:
            raise TransientError(f"{method} {url}: {exc.__class__.__name__}: {exc}", system=self.system) from exc
        if response.status_code >= 400:
            try:
                self.raise_for_response(response)
            except AdapterError as exc:
                exc.status_code = response.status_code
                exc.response_text = response.text[:4000]
                if isinstance(exc, TransientError) and response.status_code in self.not_applied_statuses:
                    exc.not_applied = True
                raise
        return response

    async def request(
        self, method: str, url: str, *, retry: bool = True, idempotent: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """Send one request, retrying transient failures; raise a typed AdapterError.

        A request that is not ``idempotent`` (adding a note, a write that also
        adds one) is retried only when the failure proves it was not applied.
        """
        if not retry:
            return await self._send_once(method, url, **kwargs)
        if idempotent:
            should_retry = retry_if_exception_type(TransientError)
        else:
            should_retry = retry_if_exception(lambda e: isinstance(e, TransientError) and e.not_applied)
        retrying = AsyncRetrying(
            retry=should_retry,
            stop=stop_after_attempt(self.retry.attempts),
            wait=WaitRetryAfter(self.retry),
            reraise=True,
            before_sleep=lambda state: log.debug(
                "%s: %s %s failed (%s), retry %d", self.system, method, url, state.outcome.exception(), state.attempt_number
            ),
        )
        async for attempt in retrying:
            with attempt:
                return await self._send_once(method, url, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    async def request_write(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A request that must not take effect twice: retried only when it surely was not applied."""
        return await self.request(method, url, idempotent=False, **kwargs)

    async def json(self, method: str, url: str, **kwargs: Any) -> Any:
        """Send a request and decode its JSON answer."""
        response = await self.request(method, url, **kwargs)
        return decode_json(response, self.system)

    async def aclose(self) -> None:
        await self.client.aclose()


# --------------------------------------------------------------------------- adapter base


class HttpAdapter(Adapter):
    """An adapter that talks HTTP: :class:`HttpSettings`, one transport built from them, bounded concurrency.

    A subclass names its ``settings_model`` (and ``transport_class`` where the
    system has its own error forms) and says how it authenticates
    (:meth:`credentials`); ``self.http`` and ``self.slots`` are then ready.
    """

    transport_class: ClassVar[type[HttpTransport]] = HttpTransport

    def __init__(
        self,
        name: str,
        settings: AdapterSettings | Mapping[str, Any],
        *,
        source_queues: list[str],
        source_states: list[str],
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        settings = self._own_settings(settings)
        super().__init__(name, settings, source_queues=source_queues, source_states=source_states)
        headers, auth = self.credentials(settings)
        self.http = self.transport_class.from_settings(
            settings,
            system=name,
            url=self.api_url(settings),
            headers=headers,
            auth=auth,
            verify=self.tls_verify(settings),
            retry=retry,
            transport=transport,
        )
        #: requests in flight at most towards this system
        self.slots = asyncio.Semaphore(settings.max_concurrent_requests)

    @classmethod
    def _own_settings(cls, settings: Any) -> Any:
        """``settings`` as this adapter's settings model (validated from a mapping or another model)."""
        model = cls.settings_model
        if isinstance(settings, model):
            return settings
        if isinstance(settings, AdapterSettings):
            settings = settings.model_dump()
        if not isinstance(settings, Mapping):
            raise TypeError(f"{cls.__name__} needs {model.__name__}, not {type(settings).__name__}")
        return model.model_validate(settings)

    def credentials(self, settings: Any) -> tuple[dict[str, str], httpx.Auth | tuple[str, str] | None]:
        """(headers, auth) that authenticate every request; none by default."""
        return {}, None

    def api_url(self, settings: Any) -> str | None:
        """The URL requests are relative to; None: ``base_url``."""
        return None

    def tls_verify(self, settings: Any) -> bool | str | None:
        """What verifies TLS; None: ``verify_tls``."""
        return None

    async def aclose(self) -> None:
        await self.http.aclose()


def token_or_basic(settings: Any, authorization: str | None) -> tuple[dict[str, str], tuple[str, str] | None]:
    """The ``Authorization`` header when a token is set (``authorization``), else HTTP basic from username/password."""
    if authorization is not None:
        return {"Authorization": authorization}, None
    assert settings.username is not None and settings.password is not None
    return {}, (settings.username, settings.password.get_secret_value())

