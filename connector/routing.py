"""Routing decisions: from a model prediction and a system's configuration to a planned change.

:func:`decide` is pure: it reads the prediction, the system's ``routing``
(mapping, thresholds, low-confidence behaviour), its ``mode`` and ``note``
settings and the ticket as fetched, and returns what to write and why.  The
pipeline does the I/O.

Per field (``queue``, ``priority``):

* confidence >= threshold and the label maps to a value -> ``set`` that value;
* confidence >= threshold but no mapping entry           -> ``leave`` (reason: unmapped);
* confidence <  threshold: ``low_confidence: fallback``  -> ``fallback`` value,
  ``low_confidence: leave``                              -> ``leave``;
* the target equals the ticket's current value           -> ``unchanged``.

Modes: ``apply`` writes the fields and (if enabled) the internal note;
``suggest`` writes only the note; ``dry-run`` writes nothing.  When nothing
would be written the outcome is ``skipped``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from adapters.base import Ticket, TicketChange
from connector.config import NoteSettings, SystemConfig
from connector.model.classifier import Prediction
from connector.store.decisions import DecisionStatus

FieldAction = Literal["set", "fallback", "leave", "unchanged"]
#: what the pipeline should do with the ticket
Outcome = Literal["apply", "suggest", "dry_run", "skip"]

ROUTED_FIELDS = ("queue", "priority")


@dataclass(frozen=True, slots=True)
class FieldDecision:
    field: str
    label: str | None
    confidence: float | None
    threshold: float
    #: the system value chosen (also for ``unchanged``); None for ``leave``
    target: str | None
    action: FieldAction
    reason: str

    @property
    def writes(self) -> bool:
        return self.action in ("set", "fallback")

    def describe(self, mode: str = "apply") -> str:
        """One line: prediction, confidence and what the mode does with it (``set``, ``suggests``, ``would set``)."""
        pred = f"{self.label} ({self.confidence:.2f})" if self.label is not None and self.confidence is not None else "-"
        verb = _VERBS.get(mode, _VERBS["apply"])
        if self.action == "set":
            what = f"{verb} {self.target!r}"
        elif self.action == "fallback":
            what = f"below threshold {self.threshold:.2f}, {verb} fallback {self.target!r}"
        elif self.action == "unchanged":
            what = f"already {self.target!r}"
        else:
            what = f"left unchanged ({self.reason})"
        return f"{self.field}: {pred} -> {what}"


#: how a field line words a write per mode: apply writes, suggest only proposes, dry-run only logs
_VERBS = {"apply": "set to", "suggest": "suggests", "dry-run": "would set"}


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    mode: str
    outcome: Outcome
    fields: dict[str, FieldDecision]
    #: what to write; None when nothing is written (dry-run, skip)
    change: TicketChange | None
    reasons: list[str] = field(default_factory=list)
    #: the change the decision stands for, whatever the mode (for the record and the log)
    would_set: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> DecisionStatus:
        """The decision's final status when the write (if any) succeeds."""
        return _STATUS_OF[self.outcome]

    def planned(self) -> dict[str, Any]:
        """The ``planned`` column: field values to write, and the note (to finish the write after a crash)."""
        change = self.change
        return {
            "queue": change.queue if change else None,
            "priority": change.priority if change else None,
            "note": change.note if change else None,
            "note_subject": change.note_subject if change else None,
            "would_set": dict(self.would_set),
        }

    def reason_text(self) -> str:
        return "; ".join(self.reasons)


#: the final status of each outcome when its write (if any) succeeds
_STATUS_OF = {
    "apply": DecisionStatus.APPLIED,
    "suggest": DecisionStatus.SUGGESTED,
    "dry_run": DecisionStatus.DRY_RUN,
    "skip": DecisionStatus.SKIPPED,
}


class _SafeDict(dict[str, Any]):
    """Unknown placeholders stay as they are instead of raising KeyError."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


_FORMATTER = string.Formatter()


def render_note(
    settings: NoteSettings,
    *,
    mode: str,
    model_version: str,
    fields: Mapping[str, FieldDecision],
) -> str:
    """The internal note from ``settings.template``.

    Placeholders: ``{mode}``, ``{model_version}``, ``{lines}`` (one line per
    field with label, confidence and action), ``{queue}``,
    ``{queue_confidence}``, ``{priority}``, ``{priority_confidence}``.
    """
    values: dict[str, Any] = {
        "mode": mode,
        "model_version": model_version,
        "lines": "\n".join(f"- {fd.describe(mode)}" for fd in fields.values()),
    }
    for name in ROUTED_FIELDS:
        fd = fields.get(name)
        values[name] = fd.label if fd is not None and fd.label is not None else ""
        values[f"{name}_confidence"] = f"{fd.confidence:.2f}" if fd is not None and fd.confidence is not None else ""
    try:
        return _FORMATTER.vformat(settings.template, (), _SafeDict(values))
    except (ValueError, IndexError, AttributeError):
        # a malformed template ("{", "{0}", "{queue.x}") must not stop routing
        return settings.template + "\n" + values["lines"]


def note_marker(decision_id: int) -> str:
    """The line every note carries: the decision's id, so reconciliation can find the note in the ticket's history."""
    return f"[helpdesk-connector decision {decision_id}]"


def with_marker(note: str, decision_id: int) -> str:
    """``note`` as written to the ticket: the rendered text and, on its own last line, :func:`note_marker`."""
    return f"{note.rstrip()}\n\n{note_marker(decision_id)}"


def decide_field(name: str, prediction: Prediction, system: SystemConfig, current: str | None) -> FieldDecision:
    routing = system.routing.fields()[name]
    fp = prediction.fields.get(name)
    if fp is None:
        return FieldDecision(name, None, None, routing.threshold, None, "leave", "no model predicts this field")
    if fp.confidence >= routing.threshold:
        target = routing.target_for(fp.label)
        if target is None:
            return FieldDecision(
                name, fp.label, fp.confidence, routing.threshold, None, "leave", f"label {fp.label!r} is not mapped"
            )
        action: FieldAction = "set"
        reason = f"confidence {fp.confidence:.2f} >= {routing.threshold:.2f}"
    elif routing.low_confidence == "fallback" and routing.fallback:
        target = routing.fallback
        action = "fallback"
        reason = f"confidence {fp.confidence:.2f} < {routing.threshold:.2f}, fallback"
    else:
        return FieldDecision(
            name,
            fp.label,
            fp.confidence,
            routing.threshold,
            None,
            "leave",
            f"confidence {fp.confidence:.2f} < {routing.threshold:.2f}",
        )
    if current is not None and target == current:
        return FieldDecision(name, fp.label, fp.confidence, routing.threshold, target, "unchanged", "already set")
    return FieldDecision(name, fp.label, fp.confidence, routing.threshold, target, action, reason)


def decide(prediction: Prediction, system: SystemConfig, ticket: Ticket) -> RoutingDecision:
    """Plan what to write to ``ticket`` for ``prediction`` under ``system``'s routing and mode."""
    current = {"queue": ticket.queue, "priority": ticket.priority}
    fields = {
        name: decide_field(name, prediction, system, current.get(name))
        for name in ROUTED_FIELDS
        if name in system.routing.fields()
    }
    would_set = {name: fd.target for name, fd in fields.items() if fd.writes and fd.target is not None}
    mode = system.mode
    reasons = [fd.describe(mode) for fd in fields.values()]
    if not fields:
        reasons.append("no field is routed for this system")

    if mode == "dry-run":
        return RoutingDecision(mode, "dry_run", fields, None, reasons, would_set)

    note = (
        render_note(system.note, mode=mode, model_version=prediction.model_version, fields=fields)
        if system.note.enabled
        else None
    )
    if mode == "suggest":
        if note is None:
            return RoutingDecision(mode, "skip", fields, None, reasons + ["suggest mode but the note is disabled"], would_set)
        if not fields:
            return RoutingDecision(mode, "skip", fields, None, reasons, would_set)
        return RoutingDecision(
            mode, "suggest", fields, TicketChange(note=note, note_subject=system.note.subject), reasons, would_set
        )

    # apply
    if not would_set:
        return RoutingDecision(mode, "skip", fields, None, reasons + ["nothing to change"], would_set)
    change = TicketChange(
        queue=would_set.get("queue"),
        priority=would_set.get("priority"),
        note=note,
        note_subject=system.note.subject,
    )
    return RoutingDecision(mode, "apply", fields, change, reasons, would_set)


def change_from_planned(planned: Mapping[str, Any]) -> TicketChange:
    """The TicketChange stored in a decision's ``planned`` column."""
    return TicketChange(
        queue=planned.get("queue"),
        priority=planned.get("priority"),
        note=planned.get("note"),
        note_subject=planned.get("note_subject") or "helpdesk-connector",
    )
