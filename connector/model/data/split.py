"""The stratified train/validation split."""

from __future__ import annotations

import random

from connector.model.data.records import LabeledData


def split(
    data: LabeledData, fraction: float = 0.2, seed: int = 42, *, stratify: str | None = None
) -> tuple[LabeledData, LabeledData]:
    """Stratified ``(train, validation)`` split; ``fraction`` of each class goes to validation.

    Stratified on the field ``stratify`` (default: the first field).  A class
    with a single example stays in training; every class with two or more has
    at least one example on each side.  Deterministic for a given seed.
    """
    if not 0 < fraction < 1:
        raise ValueError("fraction must be between 0 and 1")
    key_field = stratify or (data.fields[0] if data.fields else None)
    groups: dict[str | None, list[int]] = {}
    for i in range(len(data)):
        label = data.labels[key_field][i] if key_field else None
        groups.setdefault(label, []).append(i)
    rng = random.Random(seed)
    train_idx: list[int] = []
    valid_idx: list[int] = []
    for label in sorted(groups, key=lambda x: (x is None, x or "")):
        idx = groups[label]
        rng.shuffle(idx)
        n_valid = int(round(len(idx) * fraction))
        if len(idx) >= 2:
            n_valid = min(max(n_valid, 1), len(idx) - 1)
        else:
            n_valid = 0
        valid_idx.extend(idx[:n_valid])
        train_idx.extend(idx[n_valid:])
    train_idx.sort()
    valid_idx.sort()
    return data.subset(train_idx), data.subset(valid_idx)
