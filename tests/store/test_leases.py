"""Instance leases on SQLite and on PostgreSQL: acquire, refuse a live id, take over a dead one, renew, release."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import update

from connector.store.db import Store, utcnow
from connector.store.leases import LeaseHeld, LeaseInfo, LeaseStore, new_instance_id, pid_scope
from connector.store.tables import InstanceLease


def row(store: Store, instance_id: str) -> LeaseInfo | None:
    with store.session() as s:
        found = s.get(InstanceLease, instance_id)
        return LeaseInfo.from_row(found) if found is not None else None


def expire(store: Store, instance_id: str) -> None:
    """Stands for the holder having missed its heartbeats for longer than the ttl."""
    with store.session() as s:
        s.execute(update(InstanceLease).where(InstanceLease.instance_id == instance_id)
                  .values(expires_at=utcnow() - timedelta(seconds=1)))


def exited_pid() -> int:
    """The id of a process of this host that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_default_ids_are_unique_per_daemon() -> None:
    ids = {new_instance_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith(socket.gethostname() + "-") for i in ids)


def test_a_live_explicit_id_is_refused_naming_the_holder(store: Store) -> None:
    first = LeaseStore(store, "router", ttl=60)
    first.acquire()
    second = LeaseStore(store, "router", ttl=60)
    with pytest.raises(LeaseHeld) as err:
        second.acquire()
    message = str(err.value)
    assert "'router'" in message and f"pid {first.pid}" in message and socket.gethostname() in message
    second.release()  # never acquired: must not end the first one's lease
    assert row(store, "router").is_live()
    assert first.renew()


def test_an_expired_lease_is_taken_over_and_its_old_holder_learns_it(store: Store) -> None:
    first = LeaseStore(store, "router", ttl=60)
    first.acquire()
    expire(store, "router")
    assert not row(store, "router").is_live()
    second = LeaseStore(store, "router", ttl=60)
    second.acquire()
    assert row(store, "router").is_live()
    assert not first.renew()  # the first daemon has lost its identity
    assert second.renew()


def test_renew_extends_and_release_ends_the_lease(store: Store) -> None:
    lease = LeaseStore(store, "router", ttl=30)
    lease.acquire()
    before = row(store, "router")
    assert before.expires_at - before.heartbeat_at == timedelta(seconds=30)
    assert lease.renew()
    after = row(store, "router")
    assert after.heartbeat_at >= before.heartbeat_at and after.expires_at >= before.expires_at
    lease.release()
    released = row(store, "router")
    assert released is not None and not released.is_live()
    LeaseStore(store, "router", ttl=30).acquire()  # the next start under this id is accepted at once


def test_a_lease_of_an_exited_process_on_this_host_is_dead_before_its_ttl(store: Store) -> None:
    now = utcnow()
    assert pid_scope()  # Linux: boot id and PID namespace
    with store.session() as s:
        s.add(InstanceLease(instance_id="router", host=socket.gethostname(), pid=exited_pid(), pid_scope=pid_scope(),
                            started_at=now, heartbeat_at=now, expires_at=now + timedelta(hours=1)))
    assert not row(store, "router").is_live()
    LeaseStore(store, "router", ttl=60).acquire()  # a restart after SIGKILL need not wait for the ttl
    assert row(store, "router").is_live()


@pytest.mark.parametrize(
    ("host", "scope"),
    [("some-other-host", "another-boot/pid:[4026531836]"),
     # a container with this host's name (e.g. host networking) in its own PID namespace: its pids mean nothing here
     (socket.gethostname(), "this-boot/pid:[4026532999]"),
     ("some-other-host", None)],  # no scope known: expiry alone
)
def test_a_lease_whose_pid_cannot_be_checked_from_here_is_live_until_it_expires(
    store: Store, host: str, scope: str | None
) -> None:
    now = utcnow()
    with store.session() as s:
        s.add(InstanceLease(instance_id="router", host=host, pid=exited_pid(), pid_scope=scope, started_at=now,
                            heartbeat_at=now, expires_at=now + timedelta(seconds=60)))
    with pytest.raises(LeaseHeld, match=f"on host {host}"):
        LeaseStore(store, "router", ttl=60).acquire()
    expire(store, "router")
    LeaseStore(store, "router", ttl=60).acquire()


def test_leases_expired_long_ago_are_pruned(store: Store) -> None:
    old = utcnow() - timedelta(days=30)
    with store.session() as s:
        s.add(InstanceLease(instance_id="gone", host="h", pid=1, started_at=old, heartbeat_at=old, expires_at=old))
    LeaseStore(store, new_instance_id(), ttl=60).acquire()
    assert row(store, "gone") is None
