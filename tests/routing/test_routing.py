"""Routing decisions: mapping with wildcards, thresholds, low-confidence behaviour, modes, the note."""

from __future__ import annotations

from adapters.base import Ticket
from connector.config import FieldRouting
from connector.model.classifier import FieldPrediction, LabelScore, Prediction
from connector.routing import decide, render_note
from connector.store.decisions import FINAL_STATUSES, DecisionStatus
from tests.support.fakes import system_config

TICKET = Ticket(id="1", subject="s", body="b", queue="Inbox", priority="normal", state="new")


def prediction(queue: str = "Hardware/Printer", qc: float = 0.9, priority: str = "high", pc: float = 0.8) -> Prediction:
    return Prediction(
        {
            "queue": FieldPrediction(queue, qc, (LabelScore(queue, qc), LabelScore("Other", 1 - qc))),
            "priority": FieldPrediction(priority, pc, (LabelScore(priority, pc),)),
        },
        "queue=v3,priority=v2",
    )


ROUTING = {
    "queue": {
        "map": {"Hardware/*": "IT-Hardware", "Hardware/Printer": "Printers", "Access*": "IAM", "HR": "Personnel",
                "*": "Triage"},
        "threshold": 0.7,
        "low_confidence": "fallback",
        "fallback": "Triage",
    },
    "priority": {"map": {"high": "3 high", "*": "{label}"}, "threshold": 0.6},
}


def test_mapping_exact_beats_wildcard_beats_default() -> None:
    r = FieldRouting.model_validate(ROUTING["queue"])
    assert r.target_for("Hardware/Printer") == "Printers"
    assert r.target_for("Hardware/Laptop") == "IT-Hardware"
    assert r.target_for("AccessRequest") == "IAM"
    assert r.target_for("Something") == "Triage"
    assert FieldRouting(map={"a*": "X", "ab*": "Y"}).target_for("abc") == "Y"  # most specific wildcard
    assert FieldRouting(map={"a": "A"}).target_for("b") is None
    assert FieldRouting(map={"*": "Q-{label}"}).target_for("b") == "Q-b"
    assert r.system_values() == {"IT-Hardware", "Printers", "IAM", "Personnel", "Triage"}


def test_apply_above_thresholds_sets_both_fields_and_a_note() -> None:
    d = decide(prediction(), system_config(routing=ROUTING), TICKET)
    assert d.outcome == "apply" and d.status == "applied"
    assert d.status is DecisionStatus.APPLIED and d.status in FINAL_STATUSES  # the typed status the store records
    assert (d.change.queue, d.change.priority) == ("Printers", "3 high")
    assert "model queue=v3,priority=v2" in d.change.note
    assert "queue: Hardware/Printer (0.90) -> set to 'Printers'" in d.change.note
    assert d.change.note_subject == "Automatic routing"
    assert d.planned()["queue"] == "Printers" and d.planned()["note"] == d.change.note


def test_low_confidence_fallback_and_leave() -> None:
    d = decide(prediction(qc=0.5, pc=0.5), system_config(routing=ROUTING), TICKET)
    assert d.fields["queue"].action == "fallback" and d.change.queue == "Triage"
    assert d.fields["priority"].action == "leave" and d.change.priority is None
    assert "below threshold 0.70, set to fallback 'Triage'" in d.change.note


def test_nothing_to_change_is_skipped() -> None:
    routing = {"queue": {"map": {"x": "X"}, "threshold": 0.7}}
    d = decide(prediction(qc=0.4), system_config(routing=routing), TICKET)
    assert d.outcome == "skip" and d.change is None
    # the ticket is already where the model would send it
    d = decide(prediction(queue="x"), system_config(routing={"queue": {"map": {"x": "Inbox"}}}), TICKET)
    assert d.outcome == "skip" and d.fields["queue"].action == "unchanged"


def test_unmapped_label_is_left_alone() -> None:
    d = decide(prediction(queue="Zzz"), system_config(routing={"queue": {"map": {"x": "X"}, "threshold": 0.1}}), TICKET)
    assert d.outcome == "skip" and "not mapped" in d.fields["queue"].reason


def test_suggest_writes_only_the_note_and_dry_run_nothing() -> None:
    d = decide(prediction(), system_config(routing=ROUTING, mode="suggest"), TICKET)
    assert d.outcome == "suggest" and d.change.queue is None and d.change.priority is None
    assert "'Printers'" in d.change.note and d.would_set == {"queue": "Printers", "priority": "3 high"}
    d = decide(prediction(), system_config(routing=ROUTING, mode="dry-run"), TICKET)
    assert d.outcome == "dry_run" and d.change is None and d.would_set["queue"] == "Printers"
    d = decide(prediction(), system_config(routing=ROUTING, mode="suggest", note={"enabled": False}), TICKET)
    assert d.outcome == "skip"


def test_note_disabled_in_apply_mode_writes_fields_only() -> None:
    d = decide(prediction(), system_config(routing=ROUTING, note={"enabled": False}), TICKET)
    assert d.change.note is None and d.change.queue == "Printers"


def test_note_template_placeholders_and_bad_templates() -> None:
    cfg = system_config(
        routing=ROUTING,
        note={"subject": "AI", "template": "{queue} {queue_confidence} / {priority} {priority_confidence} ({mode}) {unknown}"},
    )
    d = decide(prediction(), cfg, TICKET)
    assert d.change.note == "Hardware/Printer 0.90 / high 0.80 (apply) {unknown}"
    fields = d.fields
    from connector.config import NoteSettings

    broken = render_note(NoteSettings(template="{queue"), mode="apply", model_version="v", fields=fields)
    assert broken.startswith("{queue") and "Printers" in broken


def test_field_without_a_model_is_left_alone() -> None:
    p = Prediction({"queue": prediction().fields["queue"]}, "queue=v3")
    d = decide(p, system_config(routing=ROUTING), TICKET)
    assert d.fields["priority"].action == "leave" and d.change.priority is None and d.change.queue == "Printers"


def test_suggest_note_suggests_and_apply_note_says_what_was_set() -> None:
    """Issue #11 item 4: in suggest mode nothing is set, so the note must not say "set to"."""
    suggest = decide(prediction(qc=0.5), system_config(routing=ROUTING, mode="suggest"), TICKET).change.note
    assert "set to" not in suggest
    assert "queue: Hardware/Printer (0.50) -> below threshold 0.70, suggests fallback 'Triage'" in suggest
    assert "priority: high (0.80) -> suggests '3 high'" in suggest
    assert "model queue=v3,priority=v2" in suggest and "(suggest)" in suggest
    applied = decide(prediction(qc=0.5), system_config(routing=ROUTING), TICKET).change.note
    assert "suggests" not in applied
    assert "queue: Hardware/Printer (0.50) -> below threshold 0.70, set to fallback 'Triage'" in applied
    assert "priority: high (0.80) -> set to '3 high'" in applied
    assert "model queue=v3,priority=v2" in applied
    dry = decide(prediction(), system_config(routing=ROUTING, mode="dry-run"), TICKET)
    assert "queue: Hardware/Printer (0.90) -> would set 'Printers'" in dry.reasons
