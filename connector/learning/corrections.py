"""People's corrections of the daemon's routing.

For a ticket the daemon routed (a decision with status ``applied``), the
final value of each field it wrote is compared with what it wrote.  A
difference is a correction by a person: stored with both values (the system
values, as written and as found) once per (system, ticket, field).  If a later
export finds the field back at the daemon's value, the correction is removed.

The override rate of a (system, field, value) is the share of the daemon's
writes of that value that people changed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connector.store.tables import Correction, Decision

#: decision statuses in which the daemon wrote labels to the ticket
APPLIED_STATUSES = ("applied",)


@dataclass(frozen=True, slots=True)
class CorrectionFound:
    system: str
    ticket_id: str
    field: str
    predicted: str
    final: str
    is_new: bool


def _written_values(applied: dict[str, Any] | None) -> dict[str, str]:
    """The label values a decision wrote, from ``Decision.applied``."""
    out = {}
    for name, value in (applied or {}).items():
        if name in ("note", "note_subject") or isinstance(value, bool) or value is None:
            continue
        if isinstance(value, dict):  # tolerate {"queue": {"value": ...}} shapes
            value = value.get("value")
            if value is None:
                continue
        out[name] = str(value)
    return out


def detect_corrections(
    session: Session, system: str, ticket_id: str, final: dict[str, str | None], *, now: datetime
) -> list[CorrectionFound]:
    """Record (and return) the fields people changed after the daemon wrote them."""
    decision = session.scalar(select(Decision).where(Decision.system == system, Decision.ticket_id == ticket_id))
    if decision is None or decision.status not in APPLIED_STATUSES:
        return []
    existing = {
        row.field: row
        for row in session.scalars(
            select(Correction).where(Correction.system == system, Correction.ticket_id == ticket_id)
        )
    }
    found = []
    for field, written in _written_values(decision.applied).items():
        if field not in final:
            continue
        final_value = final[field]
        row = existing.get(field)
        if final_value is None or final_value == written:
            if row is not None:
                session.delete(row)
            continue
        if row is None:
            session.add(
                Correction(
                    system=system, ticket_id=ticket_id, field=field, predicted=written, final=final_value, detected_at=now
                )
            )
            found.append(CorrectionFound(system, ticket_id, field, written, final_value, True))
        else:
            is_new = row.final != final_value or row.predicted != written
            row.predicted, row.final = written, final_value
            found.append(CorrectionFound(system, ticket_id, field, written, final_value, is_new))
    return found


@dataclass(frozen=True, slots=True)
class OverrideRate:
    system: str
    field: str
    value: str
    applied: int
    corrected: int

    @property
    def rate(self) -> float:
        return self.corrected / self.applied if self.applied else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": round(self.rate, 4)}


def override_rates(session: Session, *, since: datetime | None = None) -> list[OverrideRate]:
    """Per system, field and written value: how often people changed what the daemon wrote."""
    applied: dict[tuple[str, str, str], int] = defaultdict(int)
    query = select(Decision.system, Decision.ticket_id, Decision.applied).where(Decision.status.in_(APPLIED_STATUSES))
    if since is not None:
        query = query.where(Decision.decided_at >= since)
    routed: set[tuple[str, str]] = set()
    for system, ticket_id, values in session.execute(query):
        routed.add((system, ticket_id))
        for field, value in _written_values(values).items():
            applied[(system, field, value)] += 1
    corrected: dict[tuple[str, str, str], int] = defaultdict(int)
    for row in session.scalars(select(Correction)):
        if (row.system, row.ticket_id) in routed and row.predicted is not None:
            corrected[(row.system, row.field, row.predicted)] += 1
    return [
        OverrideRate(system, field, value, count, corrected.get((system, field, value), 0))
        for (system, field, value), count in sorted(applied.items())
    ]


def automatic_share(session: Session, *, since: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Per system: decided tickets, those routed automatically (applied), and the share."""
    query = select(Decision.system, Decision.status, func.count()).where(Decision.status != "claimed")
    if since is not None:
        query = query.where(Decision.decided_at >= since)
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for system, status, count in session.execute(query.group_by(Decision.system, Decision.status)):
        totals[system][status] += count
    out = {}
    for system, statuses in sorted(totals.items()):
        decided = sum(statuses.values())
        auto = sum(statuses.get(s, 0) for s in APPLIED_STATUSES)
        out[system] = {"decided": decided, "automatic": auto, "share": round(auto / decided, 4) if decided else 0.0}
    return out
