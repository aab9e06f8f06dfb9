"""From a system's queue/priority value back to the model's label.

Routing maps model labels to system values (``FieldRouting.map``); training
needs the reverse.  Exact entries are inverted (when exactly one label maps to
the value), templates such as ``"Support/{label}"`` are matched, and anything
else is taken as the label itself (the common ``"*": "{label}"`` set-up).
The fallback queue is not a label: tickets still in it teach nothing.
"""

from __future__ import annotations

import re

from connector.config import FieldRouting


def label_for_value(routing: FieldRouting | None, value: str | None) -> str | None:
    """The model label a system value stands for, or None when it is not a label."""
    if value is None or value == "":
        return None
    value = str(value)
    if routing is None:
        return value
    if routing.fallback is not None and value == routing.fallback and not any(
        v == value for v in routing.map.values()
    ):
        return None
    exact = [label for label, target in routing.map.items() if target == value and not any(c in label for c in "*?[")]
    if len(exact) == 1:
        return exact[0]
    for pattern, target in routing.map.items():
        if "{label}" not in target:
            continue
        regex = "^" + re.escape(target).replace(re.escape("{label}"), "(?P<label>.+)") + "$"
        match = re.match(regex, value)
        if match:
            return match.group("label")
    return value
