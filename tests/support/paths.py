"""Paths of the repository that tests read (sample data, docs, config examples)."""

from __future__ import annotations

from pathlib import Path

#: the repository's root folder
REPO = Path(__file__).resolve().parents[2]
#: the sample tickets shipped with the connector
SAMPLE_TICKETS = REPO / "connector" / "sample_data" / "tickets.csv"
