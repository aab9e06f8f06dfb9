"""Tiny randomly initialised BERT classifiers for fast tests (no download, built in the test)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

_WORDS = (
    "printer laptop screen password vpn access invoice purchase order salary holiday hr contract "
    "disk storage backup server network email login account broken slow urgent error help please "
    "drucker passwort rechnung urlaub imprimante mot de passe facture congé the a is not my on in"
).split()


def build_tiny_model(
    path: Path,
    labels: Sequence[str],
    *,
    version: str = "tiny-1",
    field: str = "queue",
    seed: int = 0,
) -> Path:
    """Save a 2-layer, 32-wide BERT classifier with a WordPiece tokenizer to ``path``."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS]
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5 takes the vocabulary file as `vocab` (`vocab_file` is silently ignored: every token became [UNK])
    tokenizer = BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True, model_max_length=64)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=len(labels),
        id2label={i: label for i, label in enumerate(labels)},
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = BertForSequenceClassification(config)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    (path / "helpdesk_connector.json").write_text(
        json.dumps({"version": version, "field": field, "labels": list(labels)}), encoding="utf-8"
    )
    return path


def build_tiny_classifier(root: Path, queues: Sequence[str], priorities: Sequence[str], *, versions: tuple[str, str]) -> Any:
    """A :class:`TransformerClassifier` over tiny queue and priority models (``versions``: theirs) built under ``root``."""
    from connector.model.classifier import TransformerClassifier

    q = build_tiny_model(root / "queue", queues, version=versions[0], field="queue")
    p = build_tiny_model(root / "priority", priorities, version=versions[1], field="priority", seed=1)
    return TransformerClassifier.from_dirs({"queue": q, "priority": p}, device="cpu")


#: two queues told apart by their key words, with filler words around them: a task a tiny model learns
EASY_KEYS = {"it": ("printer", "laptop", "vpn", "password"), "finance": ("invoice", "purchase", "order", "salary")}
_FILLER = "the a is not my on in please help urgent slow".split()


def write_easy_tickets(path: Path, rows: int = 180, seed: int = 0) -> Path:
    """Write a ``text,queue`` CSV that a tiny model learns to near-perfect accuracy in a few epochs."""
    import csv
    import random

    rng = random.Random(seed)
    queues = list(EASY_KEYS)
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "queue"])
        for i in range(rows):
            queue = queues[i % len(queues)]
            words = rng.sample(_FILLER, 4) + rng.sample(EASY_KEYS[queue], 2)
            rng.shuffle(words)
            writer.writerow([f"{' '.join(words)} {i}", queue])
    return Path(path)
