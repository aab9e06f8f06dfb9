"""Benchmark (b): inference throughput, our batched classifier vs ``transformers.pipeline`` per ticket.

Same model directory, same 2,000 texts, one run.  On a CPU our classifier runs in each number format it
offers (``model.cpu_precision``): fp32 (the same arithmetic as the pipeline: the gain is batching alone),
bf16 (what ``auto`` picks on a CPU with AMX) and int8 (dynamic quantisation of the linear layers); on a GPU
in fp16.  Wall and CPU seconds are both reported (CPU time is the steadier figure on a shared machine).
The texts are taken in chunks, and each chunk is classified by all of them in turn, so that a change of
load on a shared machine hits all alike.  Labels are compared with the pipeline's.

    .venv/bin/python bench/model_inference.py [--model DIR] [--texts 2000] [--json OUT] [--device cuda]

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
    precisions = ["fp32", "bf16", "int8"] if args.device == "cpu" else ["fp16"]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or base_model_dir(Path(tmp))
        ours = {
            precision: TransformerClassifier.from_dirs(
                {"queue": model_dir}, device=args.device, batch_size=args.batch_size, max_length=args.max_length,
                cpu_precision=precision if args.device == "cpu" else "auto",
            )
            for precision in precisions
        }
        pipes = {"pipeline": pipeline("text-classification", model=str(model_dir), device=args.device)}
        if args.device == "cpu":  # the pipeline in bf16 too: batching's gain with the same arithmetic as ours in bf16
            pipes["pipeline_bf16"] = pipeline(
                "text-classification", model=str(model_dir), device="cpu", dtype=torch.bfloat16
            )
        result = measure(args, source, texts, pipes, ours, torch)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


def measure(args, source, texts, pipes, ours, torch):  # type: ignore[no-untyped-def]
    """Warm up, then label ``texts`` chunk by chunk with every pipeline and every precision of ours; the summary."""
    for classifier in ours.values():  # warm up
        classifier.classify(texts[:8])
    for pipe in pipes.values():
        for text in texts[:8]:
            pipe(text, truncation=True, max_length=args.max_length)

    wall = {**{name: 0.0 for name in pipes}, **{p: 0.0 for p in ours}}
    cpu = dict(wall)
    labels: dict[str, list[str]] = {name: [] for name in wall}
    size = -(-len(texts) // args.chunks)
    for start in range(0, len(texts), size):
        chunk = texts[start : start + size]
        for name, pipe in pipes.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for text in chunk:  # once per ticket, as a naive integration would
                labels[name].append(pipe(text, truncation=True, max_length=args.max_length)[0]["label"])
            wall[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0
        for precision, classifier in ours.items():
            t0, c0 = time.perf_counter(), time.process_time()
            labels[precision] += [p.fields["queue"].label for p in classifier.classify(chunk)]
            wall[precision] += time.perf_counter() - t0
            cpu[precision] += time.process_time() - c0
        result = summarize(args, source, len(labels["pipeline"]), wall, cpu, labels, torch)
        if args.json and start + size < len(texts):
            result["partial"] = f"{len(labels['pipeline'])} of {len(texts)} texts so far"
            args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def summarize(args, source, n, wall, cpu, labels, torch):  # type: ignore[no-untyped-def]
    from connector.model.classifier import cpu_has_bf16_matrix_unit

    reference = labels["pipeline"]
    result = {
        "texts": n,
        "source": source,
        "model": str(args.model or "all-MiniLM-L6-v2 base + fresh 8-label head"),
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads",
        "cpu_has_amx_bf16": cpu_has_bf16_matrix_unit(),
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "pipeline_per_ticket": {"precision": "fp32 (pipeline default)", "seconds": round(wall["pipeline"], 2),
                                "texts_per_s": round(n / wall["pipeline"], 1), "cpu_seconds": round(cpu["pipeline"], 2)},
        "load_average_at_end": os.getloadavg()[0],
    }
    if "pipeline_bf16" in wall:
        result["pipeline_per_ticket_bf16"] = {
            "precision": "bf16", "seconds": round(wall["pipeline_bf16"], 2),
            "texts_per_s": round(n / wall["pipeline_bf16"], 1), "cpu_seconds": round(cpu["pipeline_bf16"], 2),
        }
    for name in wall:
        if name.startswith("pipeline"):
            continue
        result[f"ours_batched_{name}"] = {
            "seconds": round(wall[name], 2),
            "texts_per_s": round(n / wall[name], 1),
            "speedup": round(wall["pipeline"] / wall[name], 2),
            "cpu_seconds": round(cpu[name], 2),
            "cpu_speedup": round(cpu["pipeline"] / cpu[name], 2),
            "same_label_as_pipeline": round(sum(a == b for a, b in zip(labels[name], reference)) / max(1, n), 4),
        }
        if name == "bf16" and "pipeline_bf16" in wall:
            result[f"ours_batched_{name}"]["speedup_vs_pipeline_bf16"] = round(wall["pipeline_bf16"] / wall[name], 2)
    return result


if __name__ == "__main__":
    main()
