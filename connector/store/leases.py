"""Instance leases: which daemons are running, so that none reconciles a live daemon's claims.

Every running daemon holds a lease on its ``instance_id`` in the
``instance_leases`` table: taken at start (:meth:`LeaseStore.acquire`),
renewed by a heartbeat every few seconds (:meth:`LeaseStore.renew`), and
released on a clean stop (:meth:`LeaseStore.release`: the row stays, expired,
so other daemons reconcile at once whatever the stopped one left).  A daemon
that is killed stops renewing; its lease expires ``ttl`` seconds after its last
heartbeat.

A lease is *live* while it has not expired and, when its holder's process id
can be checked from here (same machine boot and same PID namespace, see
:func:`pid_scope`; not merely the same host name, which containers may share),
while that process still exists: a daemon restarted right after a crash need
not wait for the ttl.  Claims of a live lease's instance are never
reconciled by another daemon (:meth:`connector.store.decisions.DecisionStore.unfinished`).

The default identity (:func:`new_instance_id`) is unique per running daemon;
a configured ``daemon.instance_id`` is used as given, and a second daemon
under an identity whose lease is live is refused (:class:`LeaseHeld`).
Expiry compares the clocks of the daemons sharing a database: keep them
synchronised (NTP); the ttl absorbs small skew.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connector.processes import pid_alive
from connector.store.db import Store, as_utc, detach, utcnow
from connector.store.tables import InstanceLease

log = logging.getLogger(__name__)

#: leases expired longer than this are deleted when a daemon starts (their owners' old claims then
#: fall under ``daemon.claim_timeout``, long passed)
PRUNE_AFTER = timedelta(days=7)

#: instance ids whose lease this process holds now (two daemons in one process, e.g. tests)
_held: set[str] = set()
_held_lock = threading.Lock()


class LeaseHeld(Exception):
    """Another running daemon holds this instance id: a configuration error (give each daemon its own id)."""

    def __init__(self, holder: LeaseInfo) -> None:
        self.holder = holder
        super().__init__(
            f"instance id {holder.instance_id!r} is in use by a running daemon ({holder.describe()}); "
            "give each daemon its own daemon.instance_id, or leave it unset for a unique one"
        )


def new_instance_id() -> str:
    """An identity unique per running daemon: host name, process id and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@cache
def pid_scope() -> str:
    """Where this process's id means something: the machine's boot id and the PID namespace.

    Two daemons with equal scopes see each other's processes; empty when unknown
    (not Linux), and then a lease is judged by its expiry alone.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{namespace}"[:100]


    return True


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease row, detached from the session."""

    instance_id: str
    host: str
    pid: int
    pid_scope: str
    started_at: datetime
    heartbeat_at: datetime
    expires_at: datetime

    @classmethod
    def from_row(cls, row: InstanceLease) -> LeaseInfo:
        return detach(cls, row, pid_scope=row.pid_scope or "")

    def is_live(self, now: datetime | None = None) -> bool:
        """Not expired, and (when its process id can be checked from here) its process still exists."""
        if self.expires_at <= (now or utcnow()):
            return False
        if not self.pid_scope or self.pid_scope != pid_scope():
            return True
        if self.pid == os.getpid():
            with _held_lock:
                return self.instance_id in _held
        return pid_alive(self.pid)

    def describe(self) -> str:
        return (f"pid {self.pid} on host {self.host}, started {self.started_at:%Y-%m-%d %H:%M:%S} UTC, "
                f"last heartbeat {self.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC")


def leases_of(session: Session, instance_ids: Iterable[str]) -> dict[str, LeaseInfo]:
    """The lease rows of ``instance_ids`` (ids without a row are absent)."""
    ids = sorted(set(instance_ids))
    if not ids:
        return {}
    rows = session.scalars(select(InstanceLease).where(InstanceLease.instance_id.in_(ids)))
    return {row.instance_id: LeaseInfo.from_row(row) for row in rows}


def live_leases(store: Store) -> list[LeaseInfo]:
    """The leases of the daemons running now, oldest first (``status``)."""
    now = utcnow()
    with store.session() as session:
        rows = session.scalars(
            select(InstanceLease).where(InstanceLease.expires_at > now).order_by(InstanceLease.started_at)
        )
        infos = [LeaseInfo.from_row(row) for row in rows]
    return [info for info in infos if info.is_live(now)]


class LeaseStore:
    """The lease of one daemon's ``instance_id``: acquire, renew, release."""

    def __init__(self, store: Store, instance_id: str, ttl: float) -> None:
        self.store = store
        self.instance_id = instance_id
        self.ttl = timedelta(seconds=ttl)
        self.host = socket.gethostname()
        self.pid_scope = pid_scope()
        self.pid = os.getpid()
        self.started_at: datetime | None = None

    def _ours(self) -> list[ColumnElement[bool]]:
        return [
            InstanceLease.instance_id == self.instance_id,
            InstanceLease.host == self.host,
            InstanceLease.pid == self.pid,
            InstanceLease.started_at == self.started_at,
        ]

    def acquire(self) -> LeaseInfo:
        """Take the lease; raises :class:`LeaseHeld` when a live daemon holds this instance id."""
        now = utcnow()
        self._prune(now)
        values = {"host": self.host, "pid": self.pid, "pid_scope": self.pid_scope, "started_at": now, "heartbeat_at": now,
                  "expires_at": now + self.ttl}
        try:
            with self.store.session() as session:
                session.add(InstanceLease(instance_id=self.instance_id, **values))
        except IntegrityError:
            self._take_dead(values)
        self.started_at = now
        with _held_lock:
            _held.add(self.instance_id)
        log.info("instance %s: lease taken (ttl %.0f s)", self.instance_id, self.ttl.total_seconds())
        return LeaseInfo(self.instance_id, **values)

    def _take_dead(self, values: dict[str, object]) -> None:
        """Take over the existing row if its holder is gone; else raise :class:`LeaseHeld`."""
        holder = self._holder()
        if holder is None:  # pruned since the insert failed: insert again
            try:
                with self.store.session() as session:
                    session.add(InstanceLease(instance_id=self.instance_id, **values))
                return
            except IntegrityError:
                holder = self._holder()
                if holder is None:
                    raise
        if holder.is_live():
            raise LeaseHeld(holder)
        with self.store.session() as session:
            result = session.execute(
                update(InstanceLease)
                .where(InstanceLease.instance_id == self.instance_id, InstanceLease.started_at == holder.started_at,
                       InstanceLease.heartbeat_at == holder.heartbeat_at)
                .values(**values)
            )
        if result.rowcount != 1:  # another daemon took it in between
            raise LeaseHeld(self._holder() or holder)
        log.info("instance %s: took over the lease of a stopped daemon (%s)", self.instance_id, holder.describe())

    def _holder(self) -> LeaseInfo | None:
        with self.store.session() as session:
            row = session.get(InstanceLease, self.instance_id)
            return LeaseInfo.from_row(row) if row is not None else None

    def _prune(self, now: datetime) -> None:
        with self.store.session() as session:
            session.execute(delete(InstanceLease).where(InstanceLease.expires_at < now - PRUNE_AFTER))

    def renew(self) -> bool:
        """Heartbeat: extend the lease by the ttl.  False when another daemon has taken it over."""
        now = utcnow()
        with self.store.session() as session:
            row = session.get(InstanceLease, self.instance_id)
            late = row is not None and as_utc(row.expires_at) <= now  # type: ignore[operator]
            result = session.execute(
                update(InstanceLease).where(*self._ours()).values(heartbeat_at=now, expires_at=now + self.ttl)
            )
        if result.rowcount != 1:
            return False
        if late:
            log.warning("instance %s: the heartbeat came after the lease had expired; other daemons may have "
                        "reconciled this daemon's claims meanwhile", self.instance_id)
        return True

    def release(self) -> None:
        """Clean stop: expire the lease now, so other daemons may reconcile what this one left."""
        if self.started_at is None:
            return
        with _held_lock:
            _held.discard(self.instance_id)
        now = utcnow()
        with self.store.session() as session:
            session.execute(update(InstanceLease).where(*self._ours()).values(heartbeat_at=now, expires_at=now))
        self.started_at = None
        log.debug("instance %s: lease released", self.instance_id)
