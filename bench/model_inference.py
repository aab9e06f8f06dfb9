"""Benchmark (b): CPU inference throughput, our batched classifier vs ``transformers.pipeline`` per ticket.

Same model directory, same 2,000 texts, one run; also our classifier with ``cpu_int8`` (int8 dynamic
quantisation of the linear layers).  Wall and CPU seconds are both reported (CPU time is the steadier
figure on a shared machine).  The texts are taken in
chunks, and each chunk is classified by both in turn, so that a change of
load on a shared machine hits both alike.  Predictions are compared too.

    .venv/bin/python bench/model_inference.py [--model DIR] [--texts 2000] [--json OUT]

Without ``--model`` the base all-MiniLM-L6-v2 with a fresh 8-label head is
used (the compute is the same as for a fine-tuned model).  Texts come from
../shared/data/it_service_tickets_train.csv when present, else from the
sample tickets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from connector.model.data import load_labeled_file  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "it_service_tickets_train.csv"
SAMPLE = ROOT / "connector" / "sample_data" / "tickets.csv"


def load_texts(n: int, shared: Path = SHARED) -> tuple[list[str], str]:
    if shared.is_file():
        data = load_labeled_file(shared, text_column="Document", label_columns={"queue": "Topic_group"}, validate=False)
        source = str(shared)
    else:
        data = load_labeled_file(SAMPLE, validate=False)
        source = str(SAMPLE)
    texts = list(data.texts)
    while len(texts) < n:
        texts += [f"{t} ({len(texts)})" for t in data.texts]
    step = max(1, len(texts) // n)
    return texts[::step][:n], source


def base_model_dir(tmp: Path) -> Path:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from connector.model.train import default_base_model

    base = default_base_model()
    labels = [f"L{i}" for i in range(8)]
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=8, id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)},
        local_files_only=True, use_safetensors=True,
    )
    out = tmp / "model"
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base, local_files_only=True).save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--data", type=Path, default=SHARED, help="the shared ticket CSV (else the sample tickets)")
    parser.add_argument("--device", default="cpu", help="cpu (the benchmark of the issue) or cuda (fp16 for ours)")
    args = parser.parse_args()

    import torch
    from transformers import pipeline

    from connector.model.classifier import TransformerClassifier

    texts, source = load_texts(args.texts, args.data)
    on_cpu = args.device == "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or base_model_dir(Path(tmp))
        ours = TransformerClassifier.from_dirs(
            {"queue": model_dir}, device=args.device, batch_size=args.batch_size, max_length=args.max_length
        )
        # int8 dynamic quantisation is a CPU feature; on a GPU ours runs in fp16 instead
        int8 = (
            TransformerClassifier.from_dirs(
                {"queue": model_dir}, device="cpu", batch_size=args.batch_size, max_length=args.max_length, cpu_int8=True
            )
            if on_cpu
            else None
        )
        pipe = pipeline("text-classification", model=str(model_dir), device=args.device)
        # warm up all of them
        ours.classify(texts[:8])
        if int8 is not None:
            int8.classify(texts[:8])
        for t in texts[:8]:
            pipe(t, truncation=True, max_length=args.max_length)

        ours_s = pipe_s = int8_s = 0.0
        cpu = {"pipeline": 0.0, "ours": 0.0, "int8": 0.0}
        ours_labels: list[str] = []
        pipe_labels: list[str] = []
        int8_labels: list[str] = []
        size = -(-len(texts) // args.chunks)
        for start in range(0, len(texts), size):
            chunk = texts[start : start + size]
            t0, c0 = time.perf_counter(), time.process_time()
            for text in chunk:  # once per ticket, as a naive integration would
                pipe_labels.append(pipe(text, truncation=True, max_length=args.max_length)[0]["label"])
            pipe_s += time.perf_counter() - t0
            cpu["pipeline"] += time.process_time() - c0
            t0, c0 = time.perf_counter(), time.process_time()
            ours_labels += [p.fields["queue"].label for p in ours.classify(chunk)]
            ours_s += time.perf_counter() - t0
            cpu["ours"] += time.process_time() - c0
            if int8 is not None:
                t0, c0 = time.perf_counter(), time.process_time()
                int8_labels += [p.fields["queue"].label for p in int8.classify(chunk)]
                int8_s += time.perf_counter() - t0
                cpu["int8"] += time.process_time() - c0
            extra = {"int8_seconds": int8_s, "int8_labels": int8_labels, "cpu": cpu}
            if args.json and start + size < len(texts):
                partial = summarize(args, source, len(ours_labels), pipe_s, ours_s, ours_labels, pipe_labels, torch, extra)
                partial["partial"] = f"{len(ours_labels)} of {len(texts)} texts so far"
                args.json.write_text(json.dumps(partial, indent=2), encoding="utf-8")
    result = summarize(args, source, len(texts), pipe_s, ours_s, ours_labels, pipe_labels, torch, extra)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


def summarize(args, source, n, pipe_s, ours_s, ours_labels, pipe_labels, torch, extra):  # type: ignore[no-untyped-def]
    agree = sum(a == b for a, b in zip(ours_labels, pipe_labels)) / max(1, n)
    cpu = extra["cpu"]
    result = {
        "texts": n,
        "source": source,
        "model": str(args.model or "all-MiniLM-L6-v2 base + fresh 8-label head"),
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "pipeline_per_ticket_seconds": round(pipe_s, 2),
        "pipeline_per_ticket_texts_per_s": round(n / pipe_s, 1),
        "ours_batched_seconds": round(ours_s, 2),
        "ours_batched_texts_per_s": round(n / ours_s, 1),
        "speedup": round(pipe_s / ours_s, 2),
        "same_label": round(agree, 4),
        "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_speedup": round(cpu["pipeline"] / cpu["ours"], 2),
        "load_average_at_end": os.getloadavg()[0],
    }
    if args.device == "cpu":
        int8_agree = sum(a == b for a, b in zip(extra["int8_labels"], pipe_labels)) / max(1, n)
        result.update(
            {
                "ours_int8_seconds": round(extra["int8_seconds"], 2),
                "ours_int8_texts_per_s": round(n / extra["int8_seconds"], 1),
                "speedup_int8": round(pipe_s / extra["int8_seconds"], 2),
                "int8_same_label": round(int8_agree, 4),
                "cpu_speedup_int8": round(cpu["pipeline"] / cpu["int8"], 2),
            }
        )
    else:
        result["device"] = str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else args.device
        result["ours_precision"] = "fp16"
        result["pipeline_precision"] = "fp32 (pipeline default)"
    return result


if __name__ == "__main__":
    main()
