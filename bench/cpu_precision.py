"""What each CPU number format (``model.cpu_precision``) does to a fine-tuned model: quality and speed.

For one model directory, classifies the test part of a labelled file (the 80/20 split with seed 42 that
``bench/model_accuracy.py`` trains on) in fp32, bf16 and int8, and prints per format: accuracy,
macro-F1, labels equal to fp32's, the largest and mean change of confidence against fp32, the coverage
at the model's recommended threshold, and texts per second (batched, this process's threads).

    .venv/bin/python bench/model_accuracy.py --part transformer --limit 4000 --test-limit 2000 --model-out /tmp/m
    .venv/bin/python bench/cpu_precision.py /tmp/m/queue/VERSION --test-limit 2000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from connector.model.classifier import FieldModel, cpu_has_bf16_matrix_unit, read_model_meta  # noqa: E402
from connector.model.data import load_labeled_file, split  # noqa: E402
from connector.model.evaluate import evaluate_predictions  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "it_service_tickets_train.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--text-column", default="Document")
    parser.add_argument("--label-column", default="Topic_group")
    parser.add_argument("--test-limit", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    data = load_labeled_file(args.data, text_column=args.text_column, label_columns={"queue": args.label_column})
    _, test = split(data, 0.2, 42)
    if args.test_limit and args.test_limit < len(test):
        test, _ = split(test, 1 - args.test_limit / len(test), 42)
    texts, truth = test.for_field("queue")
    threshold = float(read_model_meta(args.model).get("metrics", {}).get("recommended_threshold") or 0.5)

    result: dict = {
        "model": str(args.model),
        "test_examples": len(texts),
        "cpu_has_amx_bf16": cpu_has_bf16_matrix_unit(),
        "torch_threads": torch.get_num_threads(),
        "recommended_threshold": threshold,
        "formats": {},
    }
    reference = None
    for precision in ("fp32", "bf16", "int8"):
        model = FieldModel(args.model, device=torch.device("cpu"), max_length=args.max_length, cpu_precision=precision)
        model.predict(texts[:16])
        started = time.perf_counter()
        preds = model.predict(texts)
        seconds = time.perf_counter() - started
        ev = evaluate_predictions("queue", truth, [p.label for p in preds])
        entry = {
            "accuracy": round(ev.accuracy, 4),
            "macro_f1": round(ev.macro_f1, 4),
            "texts_per_s": round(len(texts) / seconds, 1),
            "coverage_at_threshold": round(sum(p.confidence >= threshold for p in preds) / len(preds), 4),
        }
        if reference is None:
            reference = preds
        else:
            deltas = [abs(a.confidence - b.confidence) for a, b in zip(reference, preds)]
            entry["same_label_as_fp32"] = round(sum(a.label == b.label for a, b in zip(reference, preds)) / len(preds), 4)
            entry["max_confidence_change"] = round(max(deltas), 4)
            entry["mean_confidence_change"] = round(sum(deltas) / len(deltas), 5)
            entry["speedup_vs_fp32"] = round(entry["texts_per_s"] / result["formats"]["fp32"]["texts_per_s"], 2)
        result["formats"][precision] = entry
        del model
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
