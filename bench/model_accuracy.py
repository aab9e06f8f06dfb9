"""Benchmark (a) and (c): accuracy / macro-F1 of the fine-tuned transformer and of the linear baseline,
plus training throughput, wall time and peak memory.

Data: ../shared/data/it_service_tickets_train.csv (``Document`` -> ``Topic_group``), split 80/20 stratified
with seed 42 (``connector.model.data.split``).  Both models are trained on the 80 % part and scored on the
20 % part.  A TF-IDF + LinearSVC reference (the figure in the data's PROVENANCE, 0.865) is measured in the
same run for comparison.

    .venv/bin/python bench/model_accuracy.py --part linear
    nice -n 10 .venv/bin/python bench/model_accuracy.py --part transformer --epochs 3 --out /tmp/bench_accuracy.json

The transformer part writes the JSON after every epoch (scores on the 20 % part), so a long run can be read
while it goes on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connector.model.data import load_labeled_file, split  # noqa: E402
from connector.model.settings import TrainingSettings  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "it_service_tickets_train.csv"


def _write(path: Path, result: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def run_linear(train, test, result: dict) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.svm import LinearSVC

    from connector.model.baseline import train_baseline

    started = time.perf_counter()
    res = train_baseline(train, "queue", validation=test)
    result["linear"] = {
        "model": "TF-IDF word 1-2 + char_wb 2-5 -> LogisticRegression (ours, with confidences)",
        "accuracy": round(res.evaluation.accuracy, 4),
        "macro_f1": round(res.evaluation.macro_f1, 4),
        "train_seconds": round(res.train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "recommended_threshold": res.evaluation.recommended_threshold,
        "recommended_coverage": res.evaluation.recommended_coverage,
    }
    xt, yt = train.for_field("queue")
    xe, ye = test.for_field("queue")
    started = time.perf_counter()
    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    svc = LinearSVC(class_weight="balanced").fit(vec.fit_transform(xt), yt)
    pred = svc.predict(vec.transform(xe))
    result["linear_svc_reference"] = {
        "model": "TF-IDF word 1-2 -> LinearSVC (class-balanced), the PROVENANCE reference",
        "accuracy": round(float(accuracy_score(ye, pred)), 4),
        "macro_f1": round(float(f1_score(ye, pred, average="macro")), 4),
        "train_seconds": round(time.perf_counter() - started, 1),
    }


def run_transformer(train, test, result: dict, out: Path, args: argparse.Namespace) -> None:
    from connector.model.train import train_field

    settings = TrainingSettings(
        epochs=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=42,
        class_weights=True,
    )
    result["transformer"] = {"settings": settings.model_dump(mode="json"), "epochs": [], "state": "running"}
    _write(out, result)

    def on_epoch(info: dict) -> None:
        result["transformer"]["epochs"].append(info)
        _write(out, result)

    with tempfile.TemporaryDirectory() as tmp:
        model = train_field(
            train,
            "queue",
            output_dir=args.model_out or tmp,
            settings=settings,
            validation=test,
            select_best=False,
            base_model=args.base_model,
            device=args.device,
            on_epoch=on_epoch,
            show_progress=args.progress,
        )
    result["transformer"].update(
        {
            "state": "done",
            "accuracy": model.metrics["accuracy"],
            "macro_f1": model.metrics["macro_f1"],
            "recommended_threshold": model.metrics["recommended_threshold"],
            "recommended_coverage": model.metrics["recommended_coverage"],
            "training": {k: v for k, v in model.training.items() if k != "settings"},
            "path": str(model.path) if args.model_out else None,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--part", choices=["linear", "transformer", "both"], default="both")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=8e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--limit", type=int, default=0, help="train the transformer on about this many rows (stratified)")
    parser.add_argument("--test-limit", type=int, default=0, help="score on about this many test rows (stratified)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_accuracy.json"))
    parser.add_argument("--model-out", type=Path, default=None, help="keep the trained model under this directory")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--base-model", type=Path, default=None, help="base model directory (default: the shipped all-MiniLM-L6-v2)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    data = load_labeled_file(args.data, text_column="Document", label_columns={"queue": "Topic_group"})
    train, test = split(data, 0.2, 42)
    full_train = train
    if args.limit and args.limit < len(train):
        train, _ = split(train, 1 - args.limit / len(train), 42)
    if args.test_limit and args.test_limit < len(test):
        test, _ = split(test, 1 - args.test_limit / len(test), 42)
    result: dict = {
        "data": str(args.data),
        "examples": len(data),
        "train_examples": len(train),
        "train_part_examples": len(full_train),
        "test_examples": len(test),
        "split": "stratified 80/20, seed 42 (connector.model.data.split)",
        "cpu_threads": os.cpu_count(),
    }
    if args.out.exists():
        try:
            previous = json.loads(args.out.read_text())
            result = {**previous, **result}
        except json.JSONDecodeError:
            pass
    if args.part in ("linear", "both"):
        run_linear(full_train, test, result)
        if len(train) < len(full_train):
            sub: dict = {}
            run_linear(train, test, sub)
            result["linear_same_subset"] = sub["linear"]
            result["linear_svc_same_subset"] = sub["linear_svc_reference"]
        _write(args.out, result)
        print(json.dumps({k: v for k, v in result.items() if k.startswith("linear")}, indent=2))
    if args.part in ("transformer", "both"):
        run_transformer(train, test, result, args.out, args)
        _write(args.out, result)
        print(json.dumps(result["transformer"], indent=2))


if __name__ == "__main__":
    main()
